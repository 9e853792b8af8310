//! `mailtls serve` end to end: the real binary as a child process, with its
//! own TOML config and data directory, against a DNSSEC-signed world
//! (private root on hickory-server) and real receiving SMTP servers on
//! loopback addresses, port 25. Mail goes in as a user would send it: over
//! SMTP submission with STARTTLS (or implicit TLS) and AUTH PLAIN, by swaks
//! (Debian package `swaks`; CI installs it). The operator's view is the
//! real CLI on the same data directory: `user add`, `queue list|retry`,
//! `memory show|alerts|forget`, `check --no-probe`.
//!
//! What is proven, by the rule each test pins:
//!
//! * RFC 7672 §3.1.1 (SPEC §2 rule 1, §3): a domain with a secure DANE-EE
//!   TLSA record gets submitted mail over TLS; the TLS memory then says
//!   `DANE ok`, and `mailtls check --no-probe` answers it from the memory.
//! * SPEC §2 rule 2, §3 (RFC 3207 §6, the STARTTLS-stripping attack): an MX
//!   once seen with TLS that stops offering STARTTLS gets nothing in
//!   plaintext; the message waits in the queue with `4.7.4`, an alert is
//!   raised, and only the operator's `memory forget` lets it go in
//!   plaintext (RFC 7435: opportunistic again).
//! * SPEC §5, RFC 6409 §5, RFC 4954 §4: never an open relay (`554 5.7.1`
//!   without AUTH, on the STARTTLS and the implicit-TLS listener), and AUTH
//!   only over TLS (`538 5.7.11`).
//! * RFC 5321 §5.1, RFC 3464: a recipient domain that does not exist (a
//!   secure NXDOMAIN) fails at once, and the DSN reaches the sender's MX from
//!   `<>` as `multipart/report` with the reason.
//! * SPEC §6: the queue survives `kill -9` of `mailtls serve`; after a
//!   restart on the same data directory every accepted message is delivered
//!   (at least once).
//!
//! Every wait is a bounded poll with a deadline; nothing asserts on timing.
//! A missing tool (swaks) fails the test, it never skips.

mod common;

use common::*;

// --- RFC 7672 §3.1.1, SPEC §2 rule 1 and §3: DANE-EE --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ee_domain_receives_submitted_mail_over_tls_and_check_answers_dane_from_memory()
-> TestResult {
    let cred = pki::self_signed("mx.dane-ee.example");
    let server = start(Behaviour::accept_mail(&cred))?;
    let mut dns = DnsWorld::new();
    let zone = signed_domain(&mut dns, "dane-ee.example", server.ip());
    let tlsa = pki::dane_ee(&cred);
    zone.tlsa(
        "_25._tcp.mx.dane-ee.example.",
        tlsa.usage,
        tlsa.selector,
        tlsa.matching,
        &tlsa.data,
    );
    let world = dns.start().await?;
    let mut mailtls = Mailtls::install(&world).await?;
    mailtls.serve().await?;

    // Before any delivery the memory knows nothing: `SSL ?`.
    let before: Value = serde_json::from_str(
        &mailtls
            .cli(&["check", "--no-probe", "--json", "bob@dane-ee.example"])
            .await?,
    )?;
    assert_eq!(before[0]["status"], "SSL ?", "{before}");

    // Submission on 587 (STARTTLS) and on 465 (implicit TLS, RFC 8314).
    let starttls_id = mailtls
        .submit(false, "bob@dane-ee.example", "dane-587@sender.example")
        .await?;
    let implicit_id = mailtls
        .submit(true, "bob@dane-ee.example", "dane-465@sender.example")
        .await?;
    let received = mailtls.received(&server, 2).await?;
    let mut ids: Vec<String> = received
        .iter()
        .filter_map(|m| header(m, "Message-Id"))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["<dane-465@sender.example>", "<dane-587@sender.example>"]
    );
    for mail in &received {
        assert!(mail.tls, "DANE delivery is over TLS");
        assert_eq!(mail.mail_from, USER);
        assert_eq!(mail.rcpt_to, ["bob@dane-ee.example"]);
        // SPEC §2: our trace header carries the submission's TLS facts.
        let trace = header(mail, "Received").ok_or("a Received: header")?;
        assert!(
            trace.contains("by relay.sender.example (mailtls) with ESMTPSA")
                && trace.contains("(using TLSv1."),
            "{trace}"
        );
    }

    for id in [&starttls_id, &implicit_id] {
        mailtls
            .eventually("recorded as delivered", DELIVERY, async || {
                let r = mailtls.recipient(id, "bob@dane-ee.example").await?;
                Ok(if r["state"] == "delivered" {
                    Poll::Ready(())
                } else {
                    Poll::Pending(r.to_string())
                })
            })
            .await?;
    }

    let memory = mailtls.cli(&["memory", "show", "dane-ee.example"]).await?;
    assert!(
        memory.contains("domain dane-ee.example: best DANE ok"),
        "{memory}"
    );
    let memory = mailtls
        .cli(&["memory", "show", "mx.dane-ee.example"])
        .await?;
    assert!(
        memory.contains("host mx.dane-ee.example: best DANE ok"),
        "{memory}"
    );

    // SPEC §1: the check answers from the memory the relay wrote.
    let after: Value = serde_json::from_str(
        &mailtls
            .cli(&["check", "--no-probe", "--json", "bob@dane-ee.example"])
            .await?,
    )?;
    assert_eq!(
        (after[0]["status"].as_str(), after[0]["source"].as_str()),
        (Some("DANE ok"), Some("memory")),
        "{after}"
    );
    Ok(())
}

// --- SPEC §2 rule 2, §3; RFC 3207 §6: once TLS, never plaintext again ----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_starttls_after_tls_holds_mail_with_alert_until_operator_forgets() -> TestResult {
    let cred = pki::self_signed("mx.strip.example");
    let server = start(Behaviour::accept_mail(&cred))?;
    let proxy = StrippingProxy::start(server.addr())?;
    proxy.set_stripping(false);
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "strip.example", proxy.ip());
    let world = dns.start().await?;
    let mut mailtls = Mailtls::install(&world).await?;
    mailtls.serve().await?;
    let to = "dave@strip.example";

    // An honest path: the relay learns that the MX does TLS.
    let first = mailtls.submit(false, to, "strip-1@sender.example").await?;
    let received = mailtls.received(&server, 1).await?;
    assert!(received[0].tls, "the first message went over TLS");
    mailtls
        .eventually("first message recorded", DELIVERY, async || {
            let r = mailtls.recipient(&first, to).await?;
            Ok(if r["state"] == "delivered" {
                Poll::Ready(())
            } else {
                Poll::Pending(r.to_string())
            })
        })
        .await?;
    let memory = mailtls.cli(&["memory", "show", "strip.example"]).await?;
    assert!(
        memory.contains("domain strip.example: best SSL ok"),
        "{memory}"
    );

    // An attacker strips STARTTLS: the next message is held, not sent.
    proxy.set_stripping(true);
    let second = mailtls.submit(false, to, "strip-2@sender.example").await?;
    let held = mailtls
        .eventually(
            "the second message deferred with 4.7.4",
            DELIVERY,
            async || {
                let r = mailtls.recipient(&second, to).await?;
                Ok(if r["last_status"] == "451 4.7.4" {
                    Poll::Ready(r)
                } else {
                    Poll::Pending(r.to_string())
                })
            },
        )
        .await?;
    assert_eq!(held["state"], "pending", "{held}");
    assert!(proxy.stripped() > 0, "the proxy did strip STARTTLS");
    let received = server.received();
    assert_eq!(received.len(), 1, "nothing more arrived: {received:?}");
    assert!(received.iter().all(|m| m.tls), "never in plaintext");

    let listing = mailtls.cli(&["queue", "list"]).await?;
    assert!(
        listing.contains(&second) && listing.contains(&format!("{to} pending 451 4.7.4")),
        "{listing}"
    );
    let alerts = mailtls.cli(&["memory", "alerts"]).await?;
    assert!(
        alerts.contains("host mx.strip.example: ") && alerts.contains("domain strip.example: "),
        "an alert for the host and the domain:\n{alerts}"
    );

    // The operator decides the MX really lost TLS: reset, and retry now.
    let forgot = mailtls
        .cli(&["memory", "forget", "mx.strip.example"])
        .await?;
    assert!(forgot.contains("forgot host mx.strip.example"), "{forgot}");
    let forgot = mailtls.cli(&["memory", "forget", "strip.example"]).await?;
    assert!(forgot.contains("forgot domain strip.example"), "{forgot}");
    mailtls.cli(&["queue", "retry", &second]).await?;

    // RFC 7435: opportunistic again, and the server offers no STARTTLS.
    let received = mailtls.received(&server, 2).await?;
    let late = &received[1];
    assert!(!late.tls, "delivered in plaintext after the reset");
    assert_eq!(
        header(late, "Message-Id").as_deref(),
        Some("<strip-2@sender.example>")
    );
    Ok(())
}

// --- SPEC §5, RFC 6409 §5, RFC 4954 §4: no open relay, AUTH only over TLS ------------

/// Standard base64 (RFC 4648 §4), for an AUTH PLAIN initial response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_refuses_relaying_without_auth_and_auth_before_starttls() -> TestResult {
    let server = start(Behaviour::accept_mail_plaintext())?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "remote.example", server.ip());
    let world = dns.start().await?;
    let mut mailtls = Mailtls::install(&world).await?;
    mailtls.serve().await?;
    let to = "bob@remote.example";

    // Plaintext on 587: AUTH is not offered, and refused when tried anyway
    // with the right password (RFC 4954 §4: 538 encryption required).
    let (mut client, banner) = PlainClient::connect(mailtls.submission).await?;
    assert!(banner.starts_with("220 "), "{banner}");
    let ehlo = client.command("EHLO client.sender.example").await?;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let credentials = base64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let auth = client.command(&format!("AUTH PLAIN {credentials}")).await?;
    assert!(auth.starts_with("538 5.7.11"), "{auth}");
    // And without AUTH, no relaying (RFC 6409 §5).
    let mail = client.command(&format!("MAIL FROM:<{USER}>")).await?;
    assert!(mail.starts_with("250"), "{mail}");
    let rcpt = client.command(&format!("RCPT TO:<{to}>")).await?;
    assert!(rcpt.starts_with("554 5.7.1"), "{rcpt}");
    client.command("QUIT").await?;

    // After STARTTLS (587) and on implicit TLS (465): still no relaying
    // without AUTH.
    for implicit_tls in [false, true] {
        let output = mailtls
            .swaks(implicit_tls, &["--from", USER, "--to", to])
            .await?;
        let text = transcript(&output);
        assert!(!output.status.success(), "{text}");
        assert!(
            text.contains("554 5.7.1"),
            "implicit TLS {implicit_tls}:\n{text}"
        );
    }
    let queue = mailtls.queue().await?;
    assert!(queue.is_empty(), "nothing was queued: {queue:?}");

    // The control: the same message with AUTH is relayed.
    mailtls.submit(false, to, "authed@sender.example").await?;
    let received = mailtls.received(&server, 1).await?;
    assert_eq!(
        header(&received[0], "Message-Id").as_deref(),
        Some("<authed@sender.example>")
    );
    Ok(())
}

// --- RFC 5321 §5.1, RFC 3464: a domain that does not exist bounces at once -----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_recipient_fails_at_once_and_the_dsn_reaches_the_sender_from_null_path()
-> TestResult {
    let sender_mx = start(Behaviour::accept_mail(&pki::self_signed(
        "mx.sender.example",
    )))?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "sender.example", sender_mx.ip());
    let world = dns.start().await?;
    let mut mailtls = Mailtls::install(&world).await?;
    mailtls.serve().await?;
    let to = "nobody@does-not-exist.example";

    let id = mailtls.submit(false, to, "nx@sender.example").await?;
    // "At once": neither the failure nor its DSN waits for a retry or for
    // the runner's idle poll.
    let at_once = mailtls_relay::queue::MAX_IDLE * 2 / 3;
    let received = mailtls.received_within(&sender_mx, 1, at_once).await?;
    let dsn = &received[0];
    assert_eq!(dsn.mail_from, "", "a DSN is sent from <> (RFC 5321 §4.5.5)");
    assert_eq!(dsn.rcpt_to, [USER]);
    let text = flat_text(dsn);
    assert!(
        text.contains("Content-Type: multipart/report; report-type=delivery-status"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Final-Recipient: rfc822; {to}")),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.2"), "{text}");
    assert!(
        text.contains("The recipient's domain does not exist"),
        "{text}"
    );
    assert!(
        text.contains("<nx@sender.example>"),
        "the original is quoted"
    );

    let recipient = mailtls.recipient(&id, to).await?;
    assert_eq!(recipient["state"], "failed", "{recipient}");
    assert_eq!(recipient["last_status"], "550 5.1.2", "{recipient}");
    assert_eq!(recipient["attempts"], 1, "failed at once: {recipient}");
    Ok(())
}

// --- SPEC §6: the queue survives kill -9 -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_queued_message_arrives_after_kill_9_and_restart() -> TestResult {
    const BATCH: usize = 20;
    let later_mx = fresh_loopback_ip(); // nothing listens there yet
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "later.example", later_mx);
    let world = dns.start().await?;
    let mut mailtls = Mailtls::install(&world).await?;
    mailtls.serve().await?;
    let to = "erin@later.example";

    let mut ids = Vec::new();
    for n in 0..BATCH {
        ids.push(
            mailtls
                .submit(false, to, &format!("kill9-{n}@sender.example"))
                .await?,
        );
    }
    // The runner works the queue: connections are refused, so it defers.
    mailtls
        .eventually(
            "a deferral for the refused connection",
            DELIVERY,
            async || {
                let queue = mailtls.queue().await?;
                let deferred = queue
                    .iter()
                    .flat_map(|m| m["recipients"].as_array().cloned().unwrap_or_default())
                    .filter(|r| r["last_status"] == "451 4.4.1")
                    .count();
                Ok(if deferred > 0 {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{queue:?}"))
                })
            },
        )
        .await?;

    mailtls.kill9()?;
    let queue = mailtls.queue().await?;
    let pending = queue
        .iter()
        .filter(|m| ids.iter().any(|id| m["id"] == id.as_str()))
        .filter(|m| m["recipients"][0]["state"] == "pending")
        .count();
    assert_eq!(pending, BATCH, "all on disk after kill -9: {queue:?}");
    // Restart once every retry is due, so that the first pass after the
    // restart finds them all (a pass that finds nothing due sleeps for the
    // runner's idle poll, `MAX_IDLE`, before it looks again).
    let last_due = queue
        .iter()
        .flat_map(|m| m["recipients"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["next_attempt_at"].as_i64())
        .max()
        .unwrap_or_default();
    mailtls
        .eventually("every retry due", STARTUP, async || {
            let now = unix_now();
            Ok(if now > last_due {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("now {now}, last retry due at {last_due}"))
            })
        })
        .await?;

    let server = SmtpServer::start(
        later_mx,
        Behaviour::accept_mail(&pki::self_signed("mx.later.example")),
    )?;
    mailtls.serve().await?;

    let expected: Vec<String> = (0..BATCH)
        .map(|n| format!("<kill9-{n}@sender.example>"))
        .collect();
    let received = mailtls
        .eventually("every message after the restart", DELIVERY, async || {
            let received = server.received();
            let missing: Vec<&String> = expected
                .iter()
                .filter(|id| {
                    !received
                        .iter()
                        .any(|m| header(m, "Message-Id").as_ref() == Some(id))
                })
                .collect();
            Ok(if missing.is_empty() {
                Poll::Ready(received)
            } else {
                Poll::Pending(format!("missing {missing:?}"))
            })
        })
        .await?;
    // At least once (SPEC §6); a message delivered twice (a crash between
    // the delivery and its record) is allowed, and reported here.
    let duplicates = received.len() - BATCH;
    if duplicates > 0 {
        eprintln!("kill -9: {duplicates} duplicate deliveries of {BATCH} messages");
    }
    assert!(
        received.iter().all(|m| m.rcpt_to == [to]),
        "{duplicates} duplicate(s); {received:?}"
    );
    Ok(())
}

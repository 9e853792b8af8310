//! The inbound MX, local mailboxes and the secure alias (SPEC §4, §5;
//! issue #4), end to end: the real `mailtls serve` with its own config and
//! data directory, mail sent by swaks (Debian package `swaks`) to the
//! inbound listener as another provider's MTA would, and submitted by a
//! user over 587 as a mail client would; receiving SMTP servers and a
//! DNSSEC-signed world on loopback for the outbound side.
//!
//! What is proven, by the rule each test pins:
//!
//! * SPEC §4, receiving at the alias: `RCPT TO:<me@secure.example.org>` in
//!   plaintext is refused with `550 5.7.10` whose text says encryption is
//!   required; after STARTTLS it is accepted and lands in me's Maildir
//!   with a `Received:` header naming the TLS version and cipher; the
//!   other recipients of a plaintext transaction are unaffected; a user
//!   whose setting is off has no alias (`5.1.1`), at once, without a
//!   restart; expert `--inbound-min-tls 1.3` refuses a TLS 1.2 session.
//! * SPEC §5: unknown local users get `550 5.1.1`, other domains
//!   `554 5.7.1` (the MX relays nothing).
//! * SPEC §4, sending from the alias: to a provider the memory knows as
//!   `no SSL` the RCPT is refused at submission (nothing is sent); to a
//!   never-seen provider without STARTTLS the message is accepted, not
//!   sent, and the bounce that explains it lands in the sender's Maildir;
//!   to a `DANE ok` provider it is delivered over TLS; with expert
//!   `--min-level dane`, an `SSL ok` provider is refused at RCPT.

mod common;

use common::*;

/// The local user who owns the secure alias.
const ME: &str = "me@example.org";
const ME_PASSWORD: &str = "tr0ub4dor&3 but longer";
const ALIAS: &str = "me@secure.example.org";

/// Installs mailtls with the account [`ME`] (besides the harness's
/// [`USER`]) and the given Encrypted Sending arguments, then serves.
async fn install_me(world: &RunningWorld, setting: &[&str]) -> Result<Mailtls, Box<dyn Error>> {
    let mut mailtls = Mailtls::install(world).await?;
    let added = mailtls
        .run(&["user", "add", ME], Some(format!("{ME_PASSWORD}\n")))
        .await?;
    assert!(added.status.success(), "{}", transcript(&added));
    let mut args = vec!["settings", "set", ME, "encrypted-sending"];
    args.extend_from_slice(setting);
    let shown = mailtls.cli(&args).await?;
    if setting != ["off"] {
        assert!(shown.contains(&format!("secure alias {ALIAS}")), "{shown}");
    }
    mailtls.serve().await?;
    Ok(mailtls)
}

/// swaks' transcript, asserting whether it succeeded.
fn expect(output: &Output, success: bool) -> String {
    let text = transcript(output);
    assert_eq!(output.status.success(), success, "{text}");
    text
}

/// Mail from another provider to the inbound MX.
async fn mx_send(
    mailtls: &Mailtls,
    tls: bool,
    to: &str,
    subject: &str,
    extra: &[&str],
) -> Result<Output, Box<dyn Error>> {
    let subject = format!("Subject: {subject}");
    let mut args = vec![
        "--from",
        "friend@elsewhere.example",
        "--to",
        to,
        "--header",
        &subject,
        "--body",
        "Hello from another provider.",
    ];
    args.extend_from_slice(extra);
    mailtls.swaks_mx(tls, &args).await
}

/// A message that `me` submits over 587 (STARTTLS, AUTH PLAIN).
async fn me_submits(mailtls: &Mailtls, from: &str, to: &str) -> Result<Output, Box<dyn Error>> {
    mailtls
        .swaks(
            false,
            &[
                "--auth",
                "PLAIN",
                "--auth-user",
                ME,
                "--auth-password",
                ME_PASSWORD,
                "--from",
                from,
                "--to",
                to,
                "--header",
                "Subject: from the secure alias",
                "--body",
                "Only encrypted, please.",
            ],
        )
        .await
}

fn queue_id(text: &str) -> Result<String, Box<dyn Error>> {
    Ok(text
        .split("queued as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("no queue id in the 250 reply:\n{text}"))?
        .to_owned())
}

// --- SPEC §4, receiving at the alias; SPEC §5, the inbound MX ----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_alias_takes_mail_only_over_tls_and_it_lands_in_the_owners_maildir() -> TestResult
{
    let world = DnsWorld::new().start().await?;
    let mailtls = install_me(&world, &["on"]).await?;

    // Plaintext to the alias: a permanent refusal that says why.
    let text = expect(&mx_send(&mailtls, false, ALIAS, "plain", &[]).await?, false);
    assert!(
        text.contains("550 5.7.10") && text.contains("encryption required"),
        "{text}"
    );
    // Plaintext to the normal address: accepted.
    expect(
        &mx_send(&mailtls, false, ME, "plain to me", &[]).await?,
        true,
    );
    // STARTTLS to the alias: accepted.
    expect(
        &mx_send(&mailtls, true, ALIAS, "secure to me", &[]).await?,
        true,
    );

    // Unknown users and other domains.
    let text = expect(
        &mx_send(&mailtls, true, "nobody@example.org", "x", &[]).await?,
        false,
    );
    assert!(text.contains("550 5.1.1"), "{text}");
    let text = expect(
        &mx_send(&mailtls, true, "bob@elsewhere.example", "x", &[]).await?,
        false,
    );
    assert!(text.contains("554 5.7.1"), "{text}");

    // One plaintext transaction, two recipients: only the alias is refused.
    let (mut client, banner) = PlainClient::connect(mailtls.inbound).await?;
    assert!(banner.starts_with("220 "), "{banner}");
    let ehlo = client.command("EHLO mx.elsewhere.example").await?;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let mail = client
        .command("MAIL FROM:<friend@elsewhere.example>")
        .await?;
    assert!(mail.starts_with("250"), "{mail}");
    let alias = client.command(&format!("RCPT TO:<{ALIAS}>")).await?;
    assert!(alias.starts_with("550 5.7.10"), "{alias}");
    let me = client.command(&format!("RCPT TO:<{ME}>")).await?;
    assert!(me.starts_with("250"), "{me}");
    let data = client.command("DATA").await?;
    assert!(data.starts_with("354"), "{data}");
    let end = client
        .command("Subject: mixed\r\n\r\nTo both, in plaintext.\r\n.")
        .await?;
    assert!(end.starts_with("250"), "{end}");
    client.command("QUIT").await?;

    let messages = mailtls.maildir_holds(ME, 3).await?;
    assert_eq!(messages.len(), 3, "{messages:#?}");
    let secure = messages
        .iter()
        .find(|m| m.contains("Subject: secure to me"))
        .ok_or("the alias's message is in me's Maildir")?;
    assert!(
        secure.contains(&format!("Delivered-To: {ALIAS}"))
            && secure.contains("with ESMTPS")
            && secure.contains("(using TLSv1."),
        "{secure}"
    );
    let plain = messages
        .iter()
        .find(|m| m.contains("Subject: plain to me"))
        .ok_or("the plaintext message is in me's Maildir")?;
    assert!(
        plain.contains("with ESMTP id") && !plain.contains("(using TLS"),
        "{plain}"
    );
    assert!(messages.iter().any(|m| m.contains("Subject: mixed")));

    // Expert: inbound mail at TLS 1.3 only.
    mailtls
        .cli(&[
            "settings",
            "set",
            ME,
            "encrypted-sending",
            "expert",
            "--inbound-min-tls",
            "1.3",
        ])
        .await?;
    let text = expect(
        &mx_send(
            &mailtls,
            true,
            ALIAS,
            "old tls",
            &["--tls-protocol", "tlsv1_2"],
        )
        .await?,
        false,
    );
    assert!(
        text.contains("550 5.7.10") && text.contains("TLS 1.3"),
        "{text}"
    );
    expect(&mx_send(&mailtls, true, ALIAS, "new tls", &[]).await?, true);

    // Off: the alias no longer exists, at once (no restart).
    let shown = mailtls
        .cli(&["settings", "set", ME, "encrypted-sending", "off"])
        .await?;
    assert!(shown.contains("no secure alias"), "{shown}");
    let text = expect(&mx_send(&mailtls, true, ALIAS, "gone", &[]).await?, false);
    assert!(text.contains("550 5.1.1"), "{text}");
    Ok(())
}

// --- SPEC §4, sending from the alias -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_the_secure_alias_leaves_only_encrypted_or_not_at_all() -> TestResult {
    let dane_cred = pki::self_signed("mx.dane.example");
    let dane = start(Behaviour::accept_mail(&dane_cred))?;
    let tls = start(Behaviour::accept_mail(&pki::self_signed("mx.tls.example")))?;
    let plain = start(Behaviour::accept_mail_plaintext())?;
    let quiet = start(Behaviour::accept_mail_plaintext())?;
    let mut dns = DnsWorld::new();
    let tlsa = pki::dane_ee(&dane_cred);
    signed_domain(&mut dns, "dane.example", dane.ip()).tlsa(
        "_25._tcp.mx.dane.example.",
        tlsa.usage,
        tlsa.selector,
        tlsa.matching,
        &tlsa.data,
    );
    signed_domain(&mut dns, "tls.example", tls.ip());
    signed_domain(&mut dns, "plain.example", plain.ip());
    signed_domain(&mut dns, "quiet.example", quiet.ip());
    let world = dns.start().await?;
    let mailtls = install_me(&world, &["on"]).await?;

    // The check learns two providers (and records them in the memory).
    for (address, status) in [
        ("bob@plain.example", "no SSL"),
        ("bob@tls.example", "SSL ok"),
    ] {
        let report: Value =
            serde_json::from_str(&mailtls.cli(&["check", "--json", address]).await?)?;
        assert_eq!(report[0]["status"], status, "{report}");
    }

    // Known `no SSL`: refused at RCPT, nothing sent to anyone.
    let text = expect(
        &me_submits(&mailtls, ALIAS, "bob@plain.example").await?,
        false,
    );
    assert!(
        text.contains("550 5.7.10") && text.contains("no SSL"),
        "{text}"
    );

    // `DANE ok` (not known yet): delivered, over TLS.
    expect(
        &me_submits(&mailtls, ALIAS, "bob@dane.example").await?,
        true,
    );
    let received = mailtls.received(&dane, 1).await?;
    assert!(received[0].tls, "over TLS");
    assert_eq!(received[0].mail_from, ALIAS);

    // Never seen, and it turns out to offer no STARTTLS: accepted, not
    // sent, and the bounce says why — in the sender's own Maildir.
    let text = expect(
        &me_submits(&mailtls, ALIAS, "bob@quiet.example").await?,
        true,
    );
    let bounced = queue_id(&text)?;
    let failed = mailtls
        .eventually("the message fails with 5.7.10", DELIVERY, async || {
            let r = mailtls.recipient(&bounced, "bob@quiet.example").await;
            Ok(match r {
                Ok(r) if r["state"] == "failed" => Poll::Ready(r),
                Ok(r) => Poll::Pending(r.to_string()),
                // Final everywhere: the message has left the queue.
                Err(e) => Poll::Pending(e.to_string()),
            })
        })
        .await;
    // The message may already have left the queue (all final, spool
    // removed); the bounce is the proof either way.
    if let Ok(r) = &failed {
        assert_eq!(r["last_status"], "550 5.7.10", "{r}");
    }
    let mailbox = mailtls.maildir_holds(ME, 1).await?;
    let dsn = mailbox
        .iter()
        .find(|m| m.contains("bob@quiet.example"))
        .ok_or_else(|| format!("the bounce is in me's Maildir: {mailbox:#?}"))?;
    let flat = dsn.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("no STARTTLS") && flat.contains("5.7.10"),
        "{dsn}"
    );
    assert!(quiet.received().is_empty(), "nothing went in plaintext");
    assert!(plain.received().is_empty(), "nothing went in plaintext");

    // Expert `dane`: an `SSL ok` provider is refused at RCPT.
    mailtls
        .cli(&[
            "settings",
            "set",
            ME,
            "encrypted-sending",
            "expert",
            "--min-level",
            "dane",
        ])
        .await?;
    let text = expect(
        &me_submits(&mailtls, ALIAS, "bob@tls.example").await?,
        false,
    );
    assert!(
        text.contains("550 5.7.10") && text.contains("not DANE ok"),
        "{text}"
    );
    assert!(tls.received().is_empty());

    // Someone else cannot send as the alias.
    let text = expect(
        &mailtls
            .swaks(
                false,
                &[
                    "--auth",
                    "PLAIN",
                    "--auth-user",
                    USER,
                    "--auth-password",
                    PASSWORD,
                    "--from",
                    ALIAS,
                    "--to",
                    "bob@dane.example",
                ],
            )
            .await?,
        false,
    );
    assert!(text.contains("553 5.7.1"), "{text}");
    Ok(())
}

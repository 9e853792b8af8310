//! Delivery end to end: the queue runner against a DNSSEC-signed world
//! (private root on hickory-server) and real receiving SMTP servers on
//! loopback addresses, with a SQLite store and a spool in a temporary
//! directory. Messages are put in the spool and the store as the submission
//! server would, and the runner is driven pass by pass with an explicit
//! clock, so retries and the queue lifetime need no waiting.
//!
//! Grouped by the rule each case pins: RFC 7672 (DANE), RFC 4035 (bogus
//! DNSSEC), SPEC §3 (the TLS memory against a STARTTLS-stripping attacker),
//! RFC 7435 (opportunistic), RFC 7505 / RFC 5321 §5.1 (null MX, NXDOMAIN,
//! MX fallback), RFC 5321 §4.5.4.1 (retries, lifetime), RFC 3464 (DSNs).

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mailtls_core::level::TlsLevel;
use mailtls_core::memory::MemoryKey;
use mailtls_core::sending::{MinLevel, SenderRequirement};
use mailtls_core::{SmtpStatus, TlsaRecord};
use mailtls_dns::{DnsConfig, DnsMode, MailResolver};
use mailtls_e2e::dns_world::{DnsWorld, RunningWorld, Signing, Zone};
use mailtls_e2e::pki::{self, TestCa};
use mailtls_e2e::smtp_world::{
    Behaviour, RunningServer, SmtpServer, StrippingProxy, fresh_loopback_ip,
};
use mailtls_relay::RelayConfig;
use mailtls_relay::config::TlsIdentity;
use mailtls_relay::queue::{PassReport, QueueRunner, Runner};
use mailtls_relay::spool::Spool;
use mailtls_store::{NewMessage, Queue, QueuedMessage, RecipientState, SqlStore, TlsMemory};
use mailtls_tls::TlsClient;
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn Error>>;

const SENDER: &str = "alice@sender.example";
const RETRY_BASE: u64 = 60;
const LIFETIME: u64 = 86_400;

/// A relay without listeners: store, spool, runner.
struct Relay {
    config: Arc<RelayConfig>,
    resolver: MailResolver,
    store: SqlStore,
    spool: Spool,
    runner: Runner<SqlStore>,
    _dir: TempDir,
    _dns: RunningWorld,
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("the SMTP test world uses IPv4 loopback"),
    }
}

fn tlsa(zone: &mut Zone, owner: &str, record: &TlsaRecord) {
    zone.tlsa(
        owner,
        record.usage,
        record.selector,
        record.matching,
        &record.data,
    );
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Relay {
    async fn start(dns: DnsWorld) -> Result<Relay, Box<dyn Error>> {
        let dns = dns.start().await?;
        let dir = tempfile::tempdir()?;
        let config = RelayConfig {
            inbound_listen: Vec::new(),
            local_domains: Vec::new(),
            secure_domain: None,
            mail_store: mailtls_relay::local::MailStore::Maildir {
                root: std::env::temp_dir().join("mailtls-unused-maildir"),
            },
            hostname: "relay.sender.example".into(),
            data_dir: dir.path().to_owned(),
            submission_listen: Vec::new(),
            submission_tls_listen: Vec::new(),
            trusted_networks: Vec::new(),
            tls: TlsIdentity {
                cert_pem: Vec::new(),
                key_pem: Vec::new(),
            },
            max_message_size: 1 << 20,
            max_recipients: 100,
            max_connections: 10,
            idle_timeout: Duration::from_secs(60),
            queue_lifetime: Duration::from_secs(LIFETIME),
            retry_base: Duration::from_secs(RETRY_BASE),
            retry_max: Duration::from_secs(3600),
            delivery_concurrency: 4,
            dns: DnsConfig {
                resolver: Some(dns.addr()),
                mode: DnsMode::Validate,
                trust_anchor: Some(dns.trust_anchor_path()),
                timeout: Duration::from_secs(3),
            },
            allow_private: true,
            smtp_port: 25,
            smtp_timeout: Duration::from_secs(10),
        };
        let store = SqlStore::open_sqlite(&dir.path().join("mailtls.db")).await?;
        let spool = Spool::open(dir.path())?;
        let resolver = MailResolver::new(&config.dns)?;
        let config = Arc::new(config);
        let runner = Runner::new(
            Arc::clone(&config),
            store.clone(),
            spool.clone(),
            resolver.clone(),
            TlsClient::new()?,
        );
        Ok(Relay {
            config,
            resolver,
            store,
            spool,
            runner,
            _dir: dir,
            _dns: dns,
        })
    }

    /// Spools and queues a message as the submission server does.
    async fn submit(
        &self,
        recipients: &[&str],
        received_at: i64,
    ) -> Result<String, Box<dyn Error>> {
        self.submit_with(recipients, received_at, None).await
    }

    /// [`Relay::submit`] with the sender's Encrypted Sending setting.
    async fn submit_with(
        &self,
        recipients: &[&str],
        received_at: i64,
        sender_requirement: Option<SenderRequirement>,
    ) -> Result<String, Box<dyn Error>> {
        let id = Spool::new_id();
        let body = format!(
            "Received: from client by relay.sender.example\r\n\
             From: <{SENDER}>\r\n\
             To: <{to}>\r\n\
             Subject: test {id}\r\n\
             Message-ID: <{id}@sender.example>\r\n\
             \r\n\
             Hello.\r\n\
             .a line that starts with a dot\r\n",
            to = recipients.join(">, <"),
        );
        let mut writer = self.spool.create(&id).await?;
        writer.write_all(body.as_bytes()).await?;
        writer.commit().await?;
        self.store
            .enqueue(&NewMessage {
                id: id.clone(),
                sender: SENDER.into(),
                recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
                size: body.len() as u64,
                received_at,
                auth_user: Some(SENDER.into()),
                client: "127.0.0.1".into(),
                sender_requirement,
            })
            .await?;
        Ok(id)
    }

    async fn pass(&self, at: i64) -> Result<PassReport, Box<dyn Error>> {
        Ok(self.runner.run_pass(at).await?)
    }

    async fn message(&self, id: &str) -> Result<QueuedMessage, Box<dyn Error>> {
        Ok(self.store.message(id).await?.ok_or("message not queued")?)
    }

    /// The DSNs queued (sender `<>`), with their spooled text.
    async fn bounces(&self) -> Result<Vec<(QueuedMessage, String)>, Box<dyn Error>> {
        let mut out = Vec::new();
        for msg in self.store.list().await? {
            if msg.sender.is_empty() {
                let text = String::from_utf8(self.spool.read(&msg.id).await?)?;
                out.push((msg, text));
            }
        }
        Ok(out)
    }

    fn spool_file(&self, id: &str) -> PathBuf {
        self.spool.path(id)
    }
}

fn start(behaviour: Behaviour) -> Result<RunningServer, Box<dyn Error>> {
    Ok(SmtpServer::start_on_fresh_ip(behaviour)?)
}

fn state(msg: &QueuedMessage, address: &str) -> (RecipientState, Option<String>) {
    msg.recipients
        .iter()
        .find(|r| r.address == address)
        .map(|r| (r.state, r.last_status.clone()))
        .unwrap_or((RecipientState::Pending, None))
}

/// A signed domain whose single MX is `mx.<domain>` at `ip`.
fn signed_domain<'a>(dns: &'a mut DnsWorld, domain: &str, ip: IpAddr) -> &'a mut Zone {
    let zone = dns.zone(&format!("{domain}."), Signing::Signed);
    zone.mx(10, &format!("mx.{domain}."))
        .a(&format!("mx.{domain}."), v4(ip));
    zone
}

// --- RFC 7672 §3.1: DANE-authenticated delivery ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ee_delivery_arrives_over_tls_and_is_remembered_as_dane() -> TestResult {
    let cred = pki::self_signed("mx.dane-ee.example");
    let server = start(Behaviour::accept_mail(&cred))?;
    let mut dns = DnsWorld::new();
    let zone = signed_domain(&mut dns, "dane-ee.example", server.ip());
    tlsa(zone, "_25._tcp.mx.dane-ee.example.", &pki::dane_ee(&cred));
    let relay = Relay::start(dns).await?;

    let id = relay.submit(&["bob@dane-ee.example"], now()).await?;
    let pass = relay.pass(now()).await?;
    assert_eq!((pass.delivered, pass.deferred, pass.failed), (1, 0, 0));

    let received = server.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert!(mail.tls, "arrived over TLS");
    assert_eq!(mail.mail_from, SENDER);
    assert_eq!(mail.rcpt_to, ["bob@dane-ee.example"]);
    // RFC 5321 §4.5.2: dot-stuffed on the wire, restored by the server.
    let data = String::from_utf8_lossy(&mail.data);
    assert!(
        data.contains("\r\n.a line that starts with a dot\r\n"),
        "{data}"
    );
    assert!(String::from_utf8_lossy(&mail.raw_data).contains("\r\n..a line"));

    assert_eq!(
        state(&relay.message(&id).await?, "bob@dane-ee.example").0,
        RecipientState::Delivered
    );
    assert!(
        !relay.spool_file(&id).exists(),
        "spool file removed once final"
    );
    let host = relay
        .store
        .entry(&MemoryKey::host("mx.dane-ee.example"))
        .await?
        .ok_or("host entry")?;
    assert_eq!(host.best_level, TlsLevel::Dane);
    let domain = relay
        .store
        .entry(&MemoryKey::domain("dane-ee.example"))
        .await?
        .ok_or("domain entry")?;
    assert_eq!(domain.best_level, TlsLevel::Dane);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ta_delivery_checks_the_chain_and_arrives_over_tls() -> TestResult {
    let ca = TestCa::new("mailtls delivery TA");
    let server = start(Behaviour::accept_mail(&ca.issue("mx.dane-ta.example")))?;
    let mut dns = DnsWorld::new();
    let zone = signed_domain(&mut dns, "dane-ta.example", server.ip());
    tlsa(zone, "_25._tcp.mx.dane-ta.example.", &pki::dane_ta(&ca));
    let relay = Relay::start(dns).await?;

    relay.submit(&["carol@dane-ta.example"], now()).await?;
    let pass = relay.pass(now()).await?;
    assert_eq!(pass.delivered, 1, "{pass:?}");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].tls);
    Ok(())
}

// RFC 7672 §2.2: a secure, usable TLSA RRset must match; never plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlsa_mismatch_defers_and_nothing_arrives() -> TestResult {
    let cred = pki::self_signed("mx.tlsa-mismatch.example");
    let server = start(Behaviour::accept_mail(&cred))?;
    let mut dns = DnsWorld::new();
    let zone = signed_domain(&mut dns, "tlsa-mismatch.example", server.ip());
    zone.tlsa("_25._tcp.mx.tlsa-mismatch.example.", 3, 1, 1, &[0x42; 32]);
    let relay = Relay::start(dns).await?;

    let id = relay.submit(&["erin@tlsa-mismatch.example"], now()).await?;
    let pass = relay.pass(now()).await?;
    assert_eq!((pass.delivered, pass.deferred), (0, 1));
    assert!(server.received().is_empty(), "nothing delivered");
    assert!(
        server.saw_handshake(),
        "the handshake happened, the message did not"
    );
    let (state, status) = state(&relay.message(&id).await?, "erin@tlsa-mismatch.example");
    assert_eq!(state, RecipientState::Pending);
    assert_eq!(status.as_deref(), Some("451 4.7.5"));
    assert!(relay.spool_file(&id).exists(), "kept for the retry");
    Ok(())
}

// --- RFC 4035 §5.5: bogus answers hold mail -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_dnssec_defers_without_connecting() -> TestResult {
    let server = start(Behaviour::accept_mail_plaintext())?;
    let mut dns = DnsWorld::new();
    dns.zone("bogus.example.", Signing::Bogus)
        .mx(10, "mx.bogus.example.")
        .a("mx.bogus.example.", v4(server.ip()));
    let relay = Relay::start(dns).await?;

    let id = relay.submit(&["heidi@bogus.example"], now()).await?;
    let pass = relay.pass(now()).await?;
    assert_eq!((pass.delivered, pass.deferred), (0, 1));
    assert_eq!(server.connections(), 0, "a bogus MX is never contacted");
    let (_, status) = state(&relay.message(&id).await?, "heidi@bogus.example");
    assert!(status.is_some_and(|s| s.starts_with("451 4.")));
    Ok(())
}

// --- SPEC §2 rule 2, §3: once TLS, never plaintext again -------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_starttls_after_tls_defers_alerts_and_bounces_with_the_reason() -> TestResult {
    let cred = pki::self_signed("mx.strip.example");
    let server = start(Behaviour::accept_mail(&cred))?;
    let proxy = StrippingProxy::start(server.addr())?;
    proxy.set_stripping(false);
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "strip.example", proxy.ip());
    let sender_mx = start(Behaviour::accept_mail_plaintext())?;
    signed_domain(&mut dns, "sender.example", sender_mx.ip());
    let relay = Relay::start(dns).await?;

    // First delivery: TLS through the (still honest) path.
    relay.submit(&["dave@strip.example"], now()).await?;
    assert_eq!(relay.pass(now()).await?.delivered, 1);
    assert_eq!(server.received().len(), 1);
    assert!(server.received()[0].tls);

    // Now an attacker strips STARTTLS.
    proxy.set_stripping(true);
    let received_at = now();
    let id = relay.submit(&["dave@strip.example"], received_at).await?;
    let pass = relay.pass(now()).await?;
    assert_eq!((pass.delivered, pass.deferred), (0, 1), "{pass:?}");
    assert!(proxy.stripped() > 0, "the proxy did strip");
    assert_eq!(server.received().len(), 1, "nothing more arrived");
    assert!(
        server.received().iter().all(|m| m.tls),
        "never in plaintext"
    );
    let (_, status) = state(&relay.message(&id).await?, "dave@strip.example");
    assert_eq!(status.as_deref(), Some("451 4.7.4"));

    let alerts = relay.store.alerts(10).await?;
    assert!(
        alerts
            .iter()
            .any(|a| a.alert.key == MemoryKey::host("mx.strip.example")
                && a.alert.best_level == TlsLevel::Tls
                && a.alert.observed == TlsLevel::None),
        "{alerts:?}"
    );
    assert!(
        alerts
            .iter()
            .any(|a| a.alert.key == MemoryKey::domain("strip.example"))
    );

    // After the queue lifetime: a DSN that says why.
    let late = received_at + LIFETIME as i64 + 1;
    let pass = relay.pass(late).await?;
    assert_eq!((pass.failed, pass.bounces), (1, 1), "{pass:?}");
    let (_, status) = state(&relay.message(&id).await?, "dave@strip.example");
    assert_eq!(status.as_deref(), Some("550 5.4.7"));
    let bounces = relay.bounces().await?;
    assert_eq!(bounces.len(), 1);
    let text = bounces[0].1.replace("\r\n", " ");
    assert!(text.contains("did TLS before and now refuses it"), "{text}");
    assert!(text.contains("Status: 5.4.7"));
    assert_eq!(server.received().len(), 1, "still nothing in plaintext");
    assert!(!relay.spool_file(&id).exists());
    Ok(())
}

// --- RFC 7435: opportunistic -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_tls_gets_plaintext_and_it_is_recorded() -> TestResult {
    let server = start(Behaviour::accept_mail_plaintext())?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "plain.example", server.ip());
    let relay = Relay::start(dns).await?;

    relay.submit(&["frank@plain.example"], now()).await?;
    assert_eq!(relay.pass(now()).await?.delivered, 1);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert!(!received[0].tls);
    let entry = relay
        .store
        .entry(&MemoryKey::host("mx.plain.example"))
        .await?
        .ok_or("recorded")?;
    assert_eq!(entry.best_level, TlsLevel::None);
    assert_eq!(entry.last_failure.as_deref(), Some("STARTTLS not offered"));
    Ok(())
}

// RFC 7435 §3: after a failed handshake on a host never seen with TLS, a new
// connection without STARTTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_opportunistic_handshake_retries_in_plaintext_on_a_new_connection() -> TestResult {
    let server = start(Behaviour::accept_mail_with_broken_tls())?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "broken-tls.example", server.ip());
    let relay = Relay::start(dns).await?;

    relay.submit(&["mia@broken-tls.example"], now()).await?;
    assert_eq!(relay.pass(now()).await?.delivered, 1);
    assert_eq!(server.connections(), 2, "STARTTLS, then plaintext");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert!(!received[0].tls);
    let entry = relay
        .store
        .entry(&MemoryKey::host("mx.broken-tls.example"))
        .await?
        .ok_or("recorded")?;
    assert_eq!(entry.best_level, TlsLevel::None);
    assert!(
        entry
            .last_failure
            .as_deref()
            .is_some_and(|f| f.starts_with("TLS handshake failed")),
        "{entry:?}"
    );
    Ok(())
}

// SPEC §2 rule 3 / §4: Encrypted Sending never falls back to plaintext; a
// provider without STARTTLS fails the message at once (5.7.10) so that the
// sender learns it from the bounce, not after the queue lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_sending_fails_rather_than_send_in_plaintext() -> TestResult {
    let server = start(Behaviour::accept_mail_plaintext())?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "plain-only.example", server.ip());
    let relay = Relay::start(dns).await?;

    let id = relay
        .submit_with(
            &["nina@plain-only.example"],
            now(),
            Some(SenderRequirement::default()),
        )
        .await?;
    let pass = relay.pass(now()).await?;
    assert_eq!(
        (pass.delivered, pass.failed, pass.bounces),
        (0, 1, 1),
        "{pass:?}"
    );
    assert!(server.received().is_empty());
    let msg = relay.message(&id).await?;
    assert_eq!(msg.recipients[0].last_status.as_deref(), Some("550 5.7.10"));
    assert!(
        msg.recipients[0]
            .last_reason
            .as_deref()
            .is_some_and(|r| r.contains("no STARTTLS") && r.contains("sender requires")),
        "{:?}",
        msg.recipients[0].last_reason
    );
    Ok(())
}

// SPEC §4, expert settings: `dane` is not met by a TLS-only provider (no
// connection is even made), `verified` not by a certificate outside the Web
// PKI; both fail permanently with 5.7.10 and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expert_sender_levels_are_enforced_at_delivery() -> TestResult {
    let server = start(Behaviour::accept_mail(&pki::self_signed(
        "mx.tls-only.example",
    )))?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "tls-only.example", server.ip());
    let relay = Relay::start(dns).await?;

    for (level, says) in [
        (MinLevel::Dane, "no usable DNSSEC-signed TLSA records"),
        (
            MinLevel::Verified,
            "neither DANE-authenticated nor valid in the Web PKI",
        ),
    ] {
        let requirement = SenderRequirement {
            min_level: level,
            min_tls: None,
        };
        let id = relay
            .submit_with(&["olga@tls-only.example"], now(), Some(requirement))
            .await?;
        let pass = relay.pass(now()).await?;
        // (Failed counts the earlier DSN too, which has nowhere to go.)
        assert_eq!(pass.delivered, 0, "{level:?}: {pass:?}");
        let msg = relay.message(&id).await?;
        let r = &msg.recipients[0];
        assert_eq!(r.last_status.as_deref(), Some("550 5.7.10"), "{level:?}");
        assert!(
            r.last_reason.as_deref().is_some_and(|t| t.contains(says)),
            "{level:?}: {:?}",
            r.last_reason
        );
    }
    assert!(server.received().is_empty(), "nothing was sent");

    // The control: plain `tls` is met by the same provider.
    relay
        .submit_with(
            &["olga@tls-only.example"],
            now(),
            Some(SenderRequirement::default()),
        )
        .await?;
    let pass = relay.pass(now()).await?;
    assert_eq!(pass.delivered, 1, "{pass:?}");
    assert!(server.received()[0].tls);
    Ok(())
}

// Issue #6, fail safe: an envelope held on local disk while the store was
// down is queued by the next pass and delivered; the held file is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_envelopes_are_queued_and_delivered_when_the_store_answers() -> TestResult {
    let server = start(Behaviour::accept_mail_plaintext())?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "held.example", server.ip());
    let relay = Relay::start(dns).await?;

    let id = Spool::new_id();
    let body = "Subject: held\r\n\r\nKept on local disk.\r\n";
    let mut writer = relay.spool.create(&id).await?;
    writer.write_all(body.as_bytes()).await?;
    writer.commit().await?;
    relay
        .spool
        .hold(&NewMessage {
            id: id.clone(),
            sender: SENDER.into(),
            recipients: vec!["hal@held.example".into()],
            size: body.len() as u64,
            received_at: now(),
            auth_user: None,
            client: "127.0.0.1".into(),
            sender_requirement: None,
        })
        .await?;
    assert!(relay.spool.has_held());
    assert!(relay.store.list().await?.is_empty(), "not in the store yet");

    let pass = relay.pass(now()).await?;
    assert_eq!(pass.delivered, 1, "{pass:?}");
    assert_eq!(server.received().len(), 1);
    assert!(!relay.spool.has_held());
    assert!(relay.spool.held().await?.is_empty());
    Ok(())
}

// --- RFC 7505, RFC 5321 §5.1: where mail cannot go --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_mx_fails_at_once_and_the_dsn_reaches_the_sender() -> TestResult {
    let sender_mx = start(Behaviour::accept_mail_plaintext())?;
    let mut dns = DnsWorld::new();
    dns.zone("null-mx.example.", Signing::Signed).null_mx();
    signed_domain(&mut dns, "sender.example", sender_mx.ip());
    let relay = Relay::start(dns).await?;

    let id = relay.submit(&["grace@null-mx.example"], now()).await?;
    let pass = relay.pass(now()).await?;
    assert_eq!((pass.failed, pass.bounces), (1, 1), "{pass:?}");
    assert_eq!(
        state(&relay.message(&id).await?, "grace@null-mx.example")
            .1
            .as_deref(),
        Some("550 5.1.10")
    );
    assert!(!relay.spool_file(&id).exists());
    let bounces = relay.bounces().await?;
    assert_eq!(bounces.len(), 1);
    let (dsn, text) = &bounces[0];
    assert_eq!(dsn.recipients[0].address, SENDER);
    assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status"));
    assert!(text.contains("Final-Recipient: rfc822; grace@null-mx.example"));
    assert!(text.contains("Status: 5.1.10"));
    assert!(
        text.contains(&format!("Subject: test {id}")),
        "original headers"
    );

    // The DSN is delivered like any message, from <>.
    let pass = relay.pass(now()).await?;
    assert_eq!(pass.delivered, 1, "{pass:?}");
    let received = sender_mx.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].mail_from, "", "MAIL FROM:<>");
    assert_eq!(received[0].rcpt_to, [SENDER]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_fails_with_5_1_2_and_bounces() -> TestResult {
    let mut dns = DnsWorld::new();
    dns.zone("exists.example.", Signing::Signed);
    let relay = Relay::start(dns).await?;

    let id = relay
        .submit(&["ivan@does-not-exist.example"], now())
        .await?;
    let pass = relay.pass(now()).await?;
    assert_eq!((pass.failed, pass.bounces), (1, 1), "{pass:?}");
    assert_eq!(
        state(&relay.message(&id).await?, "ivan@does-not-exist.example").1,
        Some(SmtpStatus::NO_SUCH_DOMAIN.to_string())
    );
    let bounces = relay.bounces().await?;
    assert!(bounces[0].1.contains("Status: 5.1.2"));
    assert!(bounces[0].1.contains("does not exist"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_fallback_skips_a_host_that_refuses_connections() -> TestResult {
    let backup = start(Behaviour::accept_mail_plaintext())?;
    let dead = fresh_loopback_ip(); // nothing listens there
    let mut dns = DnsWorld::new();
    dns.zone("fallback.example.", Signing::Signed)
        .mx(10, "mx1.fallback.example.")
        .mx(20, "mx2.fallback.example.")
        .a("mx1.fallback.example.", v4(dead))
        .a("mx2.fallback.example.", v4(backup.ip()));
    let relay = Relay::start(dns).await?;

    relay.submit(&["judy@fallback.example"], now()).await?;
    let pass = relay.pass(now()).await?;
    assert_eq!(pass.delivered, 1, "{pass:?}");
    assert_eq!(backup.received().len(), 1);
    Ok(())
}

// --- RFC 5321 §4.5.4.1: retries with backoff, then the queue lifetime ---------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferrals_back_off_and_expire_with_5_4_7() -> TestResult {
    let dead = fresh_loopback_ip();
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "down.example", dead);
    let relay = Relay::start(dns).await?;

    let t0 = now();
    let id = relay.submit(&["kim@down.example"], t0).await?;
    let first = relay.pass(t0).await?;
    assert_eq!(first.deferred, 1);
    assert_eq!(first.next_due, Some(t0 + RETRY_BASE as i64));
    let msg = relay.message(&id).await?;
    assert_eq!(msg.recipients[0].next_attempt_at, t0 + RETRY_BASE as i64);
    assert_eq!(msg.recipients[0].last_status.as_deref(), Some("451 4.4.1"));

    // Not due yet: nothing claimed.
    assert_eq!(relay.pass(t0 + 1).await?.claimed, 0);

    // Due: tried again, the delay doubles.
    let t1 = t0 + RETRY_BASE as i64;
    let second = relay.pass(t1).await?;
    assert_eq!(second.deferred, 1);
    assert_eq!(second.next_due, Some(t1 + 2 * RETRY_BASE as i64));
    assert_eq!(relay.message(&id).await?.recipients[0].attempts, 2);

    // Past the lifetime: failed with 5.4.7 and the last reason, and a DSN.
    let late = t0 + LIFETIME as i64;
    let last = relay.pass(late).await?;
    assert_eq!((last.failed, last.bounces), (1, 1), "{last:?}");
    let msg = relay.message(&id).await?;
    assert_eq!(msg.recipients[0].state, RecipientState::Failed);
    assert_eq!(msg.recipients[0].last_status.as_deref(), Some("550 5.4.7"));
    assert!(
        msg.recipients[0]
            .last_reason
            .as_deref()
            .is_some_and(|r| r.contains("1 day") && r.contains("cannot connect"))
    );
    let bounces = relay.bounces().await?;
    assert!(bounces[0].1.contains("Status: 5.4.7"));
    Ok(())
}

// --- RFC 5321 §4.1.1.3: each recipient has its own reply ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_recipient_replies_deliver_defer_and_bounce_separately() -> TestResult {
    let server = start(
        Behaviour::accept_mail_plaintext()
            .rejecting("nobody@mixed.example", "550 5.1.1 no such user")
            .rejecting("full@mixed.example", "452 4.2.2 mailbox full"),
    )?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "mixed.example", server.ip());
    let relay = Relay::start(dns).await?;

    let id = relay
        .submit(
            &[
                "ok@mixed.example",
                "nobody@mixed.example",
                "full@mixed.example",
            ],
            now(),
        )
        .await?;
    let pass = relay.pass(now()).await?;
    assert_eq!(
        (pass.delivered, pass.failed, pass.deferred, pass.bounces),
        (1, 1, 1, 1)
    );
    assert_eq!(server.received()[0].rcpt_to, ["ok@mixed.example"]);
    let msg = relay.message(&id).await?;
    assert_eq!(state(&msg, "ok@mixed.example").0, RecipientState::Delivered);
    assert_eq!(
        state(&msg, "nobody@mixed.example").1.as_deref(),
        Some("550 5.1.1")
    );
    assert_eq!(
        state(&msg, "full@mixed.example").1.as_deref(),
        Some("452 4.2.2")
    );
    assert!(
        relay.spool_file(&id).exists(),
        "one recipient still pending"
    );
    let bounces = relay.bounces().await?;
    let text = &bounces[0].1;
    assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
    assert!(text.contains("Remote-MTA: dns; mx.mixed.example"));
    assert!(
        !text.contains("Final-Recipient: rfc822; full@mixed.example"),
        "a deferral is not bounced"
    );
    Ok(())
}

// --- the runner as `mailtls serve` runs it ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_queue_delivers_when_woken_and_stops_on_shutdown() -> TestResult {
    let server = start(Behaviour::accept_mail_plaintext())?;
    let mut dns = DnsWorld::new();
    signed_domain(&mut dns, "woken.example", server.ip());
    let relay = Relay::start(dns).await?;
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let handle = QueueRunner::start(
        Arc::clone(&relay.config),
        relay.store.clone(),
        relay.spool.clone(),
        relay.resolver.clone(),
        TlsClient::new()?,
        Arc::clone(&wake),
        shutdown.clone(),
    );
    // Let the first (empty) pass run, so that only the wake can start the next.
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.submit(&["lee@woken.example"], now()).await?;
    wake.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.received().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server.received().len(),
        1,
        "delivered well before the idle timeout"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle.join()).await?;
    Ok(())
}

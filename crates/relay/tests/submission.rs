//! The submission listeners over real sockets (127.0.0.1, port 0), with a
//! real SQLite store and spool in a temporary data directory: each test is
//! one scenario of SPEC §5 (submission) and §7 (the security floor).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailtls_core::memory::{Alert, MemoryEntry, MemoryKey, Observation};
use mailtls_core::sending::EncryptedSending;
use mailtls_relay::RelayConfig;
use mailtls_relay::config::{Network, TlsIdentity};
use mailtls_relay::server::{Listeners, RunningListeners};
use mailtls_relay::spool::Spool;
use mailtls_store::{
    NewMessage, Queue, QueuedMessage, RecipientOutcome, Settings, SqlStore, StoreError,
    StoredAlert, TlsMemory, UserSettings, Users,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

const USER: &str = "alice@example.org";
const PASSWORD: &str = "correct horse battery staple";
/// No single step of a test waits longer than this.
const STEP: Duration = Duration::from_secs(10);

/// A running submission server and what it writes to.
struct World {
    dir: tempfile::TempDir,
    store: SqlStore,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    running: Option<RunningListeners>,
    ca: CertificateDer<'static>,
}

impl World {
    async fn start(tweak: impl FnOnce(&mut RelayConfig)) -> World {
        World::start_with(tweak, false).await
    }

    /// With `broken_queue`, every enqueue fails (a full disk, a lost
    /// database).
    async fn start_with(tweak: impl FnOnce(&mut RelayConfig), broken_queue: bool) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqlStore::open_sqlite(&dir.path().join("mailtls.sqlite"))
            .await
            .expect("store");
        store.add_user(USER, PASSWORD).await.expect("add user");
        let (identity, ca) = test_identity();
        let mut config = RelayConfig {
            inbound_listen: Vec::new(),
            local_domains: Vec::new(),
            secure_domain: None,
            mail_store: mailtls_relay::local::MailStore::Maildir {
                root: std::env::temp_dir().join("mailtls-unused-maildir"),
            },
            hostname: "mx.test".into(),
            data_dir: dir.path().to_owned(),
            submission_listen: vec!["127.0.0.1:0".parse().expect("addr")],
            submission_tls_listen: vec!["127.0.0.1:0".parse().expect("addr")],
            trusted_networks: Vec::new(),
            tls: identity,
            max_message_size: 10_000,
            max_recipients: 3,
            max_connections: 20,
            idle_timeout: Duration::from_secs(30),
            queue_lifetime: Duration::from_secs(5 * 86_400),
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            delivery_concurrency: 1,
            dns: mailtls_dns::DnsConfig::default(),
            allow_private: true,
            smtp_port: 25,
            smtp_timeout: Duration::from_secs(30),
        };
        tweak(&mut config);
        let spool = Spool::open(dir.path()).expect("spool");
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let running = if broken_queue {
            let broken = BrokenQueue(store.clone());
            Listeners::start(&config, broken, spool, wake.clone(), shutdown.clone()).await
        } else {
            Listeners::start(
                &config,
                store.clone(),
                spool,
                wake.clone(),
                shutdown.clone(),
            )
            .await
        }
        .expect("listeners");
        World {
            dir,
            store,
            wake,
            shutdown,
            running: Some(running),
            ca,
        }
    }

    fn starttls_addr(&self) -> SocketAddr {
        self.running.as_ref().expect("running").submission_addrs()[0]
    }

    fn tls_addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .expect("running")
            .submission_tls_addrs()[0]
    }

    /// A plaintext connection to the STARTTLS port, greeting read.
    async fn connect(&self) -> Client<TcpStream> {
        let tcp = TcpStream::connect(self.starttls_addr())
            .await
            .expect("connect");
        let mut client = Client::new(tcp);
        assert!(client.reply().await.starts_with("220 mx.test ESMTP"));
        client
    }

    /// Connected, EHLO, STARTTLS, handshake, EHLO again.
    async fn connect_starttls(&self) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut client = self.connect().await;
        assert!(client.cmd("EHLO client.test").await.contains("STARTTLS"));
        assert_eq!(client.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
        let mut client = client.upgrade(&self.ca).await;
        let ehlo = client.cmd("EHLO client.test").await;
        assert!(
            ehlo.contains("250 AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
        client
    }

    async fn queued_ids(&self) -> Vec<String> {
        self.store
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.id)
            .collect()
    }

    fn spool_files(&self) -> Vec<String> {
        files_in(&self.dir.path().join("spool"))
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(STEP, running.wait())
                .await
                .expect("listeners stop");
        }
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The real store, except that queueing always fails.
#[derive(Clone)]
struct BrokenQueue(SqlStore);

impl Users for BrokenQueue {
    async fn add_user(&self, address: &str, password: &str) -> mailtls_store::Result<()> {
        self.0.add_user(address, password).await
    }
    async fn verify_password(&self, address: &str, password: &str) -> mailtls_store::Result<bool> {
        self.0.verify_password(address, password).await
    }
    async fn user_exists(&self, address: &str) -> mailtls_store::Result<bool> {
        self.0.user_exists(address).await
    }
}

impl Queue for BrokenQueue {
    async fn enqueue(&self, _msg: &NewMessage) -> mailtls_store::Result<()> {
        Err(StoreError::Task("the test broke the queue".into()))
    }
    async fn claim_due(
        &self,
        now: i64,
        lease_secs: i64,
        limit: usize,
    ) -> mailtls_store::Result<Vec<QueuedMessage>> {
        self.0.claim_due(now, lease_secs, limit).await
    }
    async fn record_outcome(
        &self,
        id: &str,
        recipient: &str,
        outcome: &RecipientOutcome,
        now: i64,
    ) -> mailtls_store::Result<()> {
        self.0.record_outcome(id, recipient, outcome, now).await
    }
    async fn release(&self, id: &str) -> mailtls_store::Result<()> {
        self.0.release(id).await
    }
    async fn list(&self) -> mailtls_store::Result<Vec<QueuedMessage>> {
        self.0.list().await
    }
    async fn message(&self, id: &str) -> mailtls_store::Result<Option<QueuedMessage>> {
        self.0.message(id).await
    }
    async fn retry_now(&self, id: &str) -> mailtls_store::Result<bool> {
        self.0.retry_now(id).await
    }
    async fn delete(&self, id: &str) -> mailtls_store::Result<bool> {
        self.0.delete(id).await
    }
    async fn reset_leases(&self) -> mailtls_store::Result<u64> {
        self.0.reset_leases().await
    }

    async fn next_due(&self) -> mailtls_store::Result<Option<i64>> {
        self.0.next_due().await
    }
}

impl Settings for BrokenQueue {
    async fn settings(&self, user: &str) -> mailtls_store::Result<UserSettings> {
        self.0.settings(user).await
    }
    async fn set_encrypted_sending(
        &self,
        user: &str,
        setting: EncryptedSending,
    ) -> mailtls_store::Result<UserSettings> {
        self.0.set_encrypted_sending(user, setting).await
    }
    async fn alias_owner(&self, alias_local: &str) -> mailtls_store::Result<Option<UserSettings>> {
        self.0.alias_owner(alias_local).await
    }
}

impl TlsMemory for BrokenQueue {
    async fn record(
        &self,
        key: &MemoryKey,
        obs: &Observation,
    ) -> mailtls_store::Result<Option<Alert>> {
        self.0.record(key, obs).await
    }
    async fn entry(&self, key: &MemoryKey) -> mailtls_store::Result<Option<MemoryEntry>> {
        self.0.entry(key).await
    }
    async fn alerts(&self, limit: usize) -> mailtls_store::Result<Vec<StoredAlert>> {
        self.0.alerts(limit).await
    }
    async fn forget(&self, key: &MemoryKey, reason: &str) -> mailtls_store::Result<bool> {
        self.0.forget(key, reason).await
    }
}

/// A CA and a leaf for `localhost` signed by it, made for this test run.
fn test_identity() -> (TlsIdentity, CertificateDer<'static>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mailtls test CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let identity = TlsIdentity {
        cert_pem: leaf.pem().into_bytes(),
        key_pem: leaf_key.serialize_pem().into_bytes(),
    };
    (identity, ca.der().clone())
}

fn connector(ca: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A line-oriented SMTP test client.
struct Client<IO> {
    io: BufReader<IO>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Client<IO> {
    fn new(io: IO) -> Client<IO> {
        Client {
            io: BufReader::new(io),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    /// One whole reply, lines joined with `\n`, without CRLFs.
    async fn reply(&mut self) -> String {
        tokio::time::timeout(STEP, self.read_reply())
            .await
            .expect("reply in time")
            .expect("reply")
    }

    /// A reply, or `None` on EOF.
    async fn read_reply(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            assert!(
                line.ends_with("\r\n"),
                "reply line ends with CRLF: {line:?}"
            );
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(lines.join("\n"));
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Whether the server sends nothing (or closes) within `wait`.
    async fn silent_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.read_reply()).await.is_err()
    }

    /// The server closed the connection.
    async fn closed(&mut self) -> bool {
        matches!(
            tokio::time::timeout(STEP, self.read_reply()).await,
            Ok(None)
        )
    }

    /// AUTH PLAIN with the test user's credentials.
    async fn auth_plain(&mut self) -> String {
        let token = base64(format!("\0{USER}\0{PASSWORD}").as_bytes());
        self.cmd(&format!("AUTH PLAIN {token}")).await
    }

    /// MAIL, RCPT, DATA, the body (already dot-stuffed, ending CRLF) and the
    /// end: the reply to the end of data.
    async fn submit(&mut self, from: &str, to: &str, body: &str) -> String {
        assert_eq!(
            self.cmd(&format!("MAIL FROM:<{from}>")).await,
            "250 2.1.0 Ok"
        );
        assert_eq!(self.cmd(&format!("RCPT TO:<{to}>")).await, "250 2.1.5 Ok");
        assert!(self.cmd("DATA").await.starts_with("354 "));
        self.send(body.as_bytes()).await;
        self.cmd(".").await
    }
}

impl Client<TcpStream> {
    async fn upgrade(
        self,
        ca: &CertificateDer<'static>,
    ) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
        assert!(
            self.io.buffer().is_empty(),
            "nothing after the 220 before TLS"
        );
        let tcp = self.io.into_inner();
        let tls = tokio::time::timeout(
            STEP,
            connector(ca).connect(ServerName::try_from("localhost").expect("name"), tcp),
        )
        .await
        .expect("handshake in time")
        .expect("handshake");
        Client::new(tls)
    }
}

fn base64(input: &[u8]) -> String {
    mailtls_relay::server::sasl::encode_base64(input)
}

fn queued_id(reply: &str) -> String {
    reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {reply}"))
        .to_owned()
}

const BODY: &str = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nHi Bob,\r\n..a line that starts with a dot\r\n";

#[tokio::test]
async fn authenticated_submission_over_starttls_is_spooled_and_queued_with_the_tls_facts() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect_starttls().await;
    assert_eq!(
        client.auth_plain().await,
        "235 2.7.0 Authentication successful"
    );
    let id = queued_id(&client.submit(USER, "bob@example.net", BODY).await);
    assert_eq!(client.cmd("QUIT").await, "221 2.0.0 Bye");

    tokio::time::timeout(STEP, world.wake.notified())
        .await
        .expect("queue runner woken");
    let queued = world
        .store
        .message(&id)
        .await
        .expect("store")
        .expect("queued");
    assert_eq!(queued.sender, USER);
    assert_eq!(queued.recipients.len(), 1);
    assert_eq!(queued.recipients[0].address, "bob@example.net");

    let spooled = String::from_utf8(
        std::fs::read(world.dir.path().join(format!("spool/{id}.eml"))).expect("spool"),
    )
    .expect("utf8");
    let expected_start = format!(
        "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (mailtls) with ESMTPSA id {id}\r\n\
         \t(using TLSv1.3 with cipher TLS_"
    );
    assert!(spooled.starts_with(&expected_start), "{spooled}");
    assert!(
        spooled.contains(&format!("\r\n\t(authenticated sender: {USER});\r\n\t")),
        "{spooled}"
    );
    // Dot-unstuffed, CRLF kept, nothing after the body.
    assert!(
        spooled.ends_with("Hi Bob,\r\n.a line that starts with a dot\r\n"),
        "{spooled}"
    );
    assert_eq!(queued.size, spooled.len() as u64);
    world.stop().await;
}

/// Fail safe (issue #6): when the store cannot queue a message (a fleet's
/// database unreachable), the envelope is held on local disk beside the
/// body and the message is accepted; nothing is lost, and the queue runner
/// moves it into the store later (tested in `delivery.rs`).
#[tokio::test]
async fn a_queue_failure_holds_the_envelope_on_local_disk() {
    let world = World::start_with(|_| {}, true).await;
    let mut client = world.connect_starttls().await;
    assert_eq!(
        client.auth_plain().await,
        "235 2.7.0 Authentication successful"
    );
    let reply = client.submit(USER, "bob@example.net", BODY).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let id = reply.rsplit(' ').next().expect("id").to_owned();
    let mut files = world.spool_files();
    files.sort();
    assert_eq!(files, [format!("{id}.eml"), format!("{id}.held.json")]);
    let held = Spool::open(world.dir.path())
        .expect("spool")
        .held()
        .await
        .expect("held");
    let [Ok(envelope)] = held.as_slice() else {
        panic!("one readable envelope: {held:?}")
    };
    assert_eq!(
        (envelope.id.as_str(), envelope.recipients.as_slice()),
        (id.as_str(), ["bob@example.net".to_owned()].as_slice())
    );
    // Nothing reached the store.
    assert!(world.store.list().await.expect("list").is_empty());
    // The session goes on.
    assert_eq!(client.cmd("NOOP").await, "250 2.0.0 Ok");
    world.stop().await;
}

/// RFC 4954 §4 and RFC 6409: no AUTH without TLS.
#[tokio::test]
async fn auth_before_starttls_is_refused() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect().await;
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let token = base64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert_eq!(
        client.cmd(&format!("AUTH PLAIN {token}")).await,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
    world.stop().await;
}

#[tokio::test]
async fn wrong_password_is_535() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect_starttls().await;
    let token = base64(format!("\0{USER}\0wrong").as_bytes());
    assert_eq!(
        client.cmd(&format!("AUTH PLAIN {token}")).await,
        "535 5.7.8 authentication credentials invalid"
    );
    assert_eq!(client.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(
        client.cmd(&base64(USER.as_bytes())).await,
        "334 UGFzc3dvcmQ6"
    );
    assert_eq!(
        client.cmd(&base64(PASSWORD.as_bytes())).await,
        "235 2.7.0 Authentication successful"
    );
    world.stop().await;
}

/// SPEC §5: never an open relay, on every listener.
#[tokio::test]
async fn relaying_without_auth_from_an_untrusted_client_is_refused() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect().await;
    client.cmd("EHLO client.test").await;
    assert_eq!(
        client.cmd("MAIL FROM:<x@example.org>").await,
        "250 2.1.0 Ok"
    );
    assert_eq!(
        client.cmd("RCPT TO:<bob@example.net>").await,
        "554 5.7.1 Relay access denied"
    );
    // Over TLS without AUTH: still refused.
    let mut client = world.connect_starttls().await;
    assert_eq!(
        client.cmd("MAIL FROM:<x@example.org>").await,
        "250 2.1.0 Ok"
    );
    assert_eq!(
        client.cmd("RCPT TO:<bob@example.net>").await,
        "554 5.7.1 Relay access denied"
    );
    assert!(world.queued_ids().await.is_empty());
    world.stop().await;
}

/// `relay.trusted_networks`: an MTA using mailtls as its smart host.
#[tokio::test]
async fn a_trusted_network_may_relay_without_auth() {
    let world = World::start(|c| {
        c.trusted_networks = vec![Network {
            addr: "127.0.0.0".parse().expect("ip"),
            prefix: 8,
        }];
    })
    .await;
    let mut client = world.connect().await;
    client.cmd("EHLO postfix.test").await;
    let id = queued_id(
        &client
            .submit("root@postfix.test", "bob@example.net", BODY)
            .await,
    );
    let spooled =
        std::fs::read_to_string(world.dir.path().join(format!("spool/{id}.eml"))).expect("spool");
    assert!(spooled.starts_with(&format!("Received: from postfix.test ([127.0.0.1])\r\n\tby mx.test (mailtls) with ESMTP id {id};")), "{spooled}");
    world.stop().await;
}

/// RFC 8314 §3.3: implicit TLS (465).
#[tokio::test]
async fn implicit_tls_submission_works() {
    let world = World::start(|_| {}).await;
    let tcp = TcpStream::connect(world.tls_addr()).await.expect("connect");
    let tls = connector(&world.ca)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let mut client = Client::new(tls);
    assert!(client.reply().await.starts_with("220 mx.test ESMTP"));
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(
        client.auth_plain().await,
        "235 2.7.0 Authentication successful"
    );
    let id = queued_id(&client.submit(USER, "bob@example.net", BODY).await);
    assert!(world.store.message(&id).await.expect("store").is_some());
    world.stop().await;
}

/// SPEC §7, SMTP smuggling: a bare LF in DATA refuses the message, and
/// `<LF>.<LF>` does not end it.
#[tokio::test]
async fn bare_lf_in_data_is_refused_and_lf_dot_lf_does_not_end_data() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect_starttls().await;
    client.auth_plain().await;
    client.cmd("MAIL FROM:<alice@example.org>").await;
    client.cmd("RCPT TO:<bob@example.net>").await;
    assert!(client.cmd("DATA").await.starts_with("354"));
    client
        .send(b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n")
        .await;
    assert!(
        client.silent_for(Duration::from_millis(500)).await,
        "<LF>.<LF> must not end DATA"
    );
    assert_eq!(
        client.cmd(".").await,
        "554 5.6.0 bare CR or LF in message; lines end with CRLF"
    );
    assert_eq!(client.cmd("NOOP").await, "250 2.0.0 Ok");
    assert!(world.queued_ids().await.is_empty(), "nothing queued");
    assert!(world.spool_files().is_empty(), "nothing spooled");
    assert!(files_in(&world.dir.path().join("spool/tmp")).is_empty());
    world.stop().await;
}

/// CVE-2011-0411: commands pipelined after STARTTLS, before the handshake,
/// are discarded, never executed.
#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect().await;
    client.cmd("EHLO client.test").await;
    client.send(b"STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(client.reply().await, "220 2.0.0 Ready to start TLS");
    let mut client = client.upgrade(&world.ca).await;
    // The first reply over TLS answers our EHLO, not the NOOP.
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250-mx.test Hello client.test"), "{ehlo}");
    assert_eq!(client.cmd("QUIT").await, "221 2.0.0 Bye");
    assert!(client.closed().await, "and nothing else was ever answered");
    world.stop().await;
}

/// RFC 1870: SIZE declared and actual.
#[tokio::test]
async fn size_limit_declared_and_actual() {
    let world = World::start(|c| c.max_message_size = 2000).await;
    let mut client = world.connect_starttls().await;
    client.auth_plain().await;
    let ehlo = client.cmd("EHLO client.test").await;
    assert!(ehlo.contains("250-SIZE 2000"), "{ehlo}");
    assert_eq!(
        client.cmd("MAIL FROM:<alice@example.org> SIZE=2001").await,
        "552 5.3.4 message size exceeds fixed maximum message size"
    );
    let big = "0123456789012345678901234567890123456789\r\n".repeat(100);
    assert_eq!(
        client.submit(USER, "bob@example.net", &big).await,
        "552 5.3.4 message size exceeds fixed maximum message size"
    );
    assert!(world.queued_ids().await.is_empty());
    world.stop().await;
}

/// RFC 5321 §4.5.3.1.8 and §4.5.3.1.10: 452 for one recipient too many.
#[tokio::test]
async fn recipient_limit() {
    let world = World::start(|c| c.max_recipients = 2).await;
    let mut client = world.connect_starttls().await;
    client.auth_plain().await;
    client.cmd("MAIL FROM:<alice@example.org>").await;
    assert_eq!(client.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    assert_eq!(client.cmd("RCPT TO:<b@example.net>").await, "250 2.1.5 Ok");
    assert_eq!(
        client.cmd("RCPT TO:<c@example.net>").await,
        "452 4.5.3 too many recipients"
    );
    assert!(client.cmd("DATA").await.starts_with("354"));
    let id = queued_id(&client.cmd("Subject: x\r\n\r\nhi\r\n.").await);
    assert_eq!(
        world
            .store
            .message(&id)
            .await
            .expect("store")
            .expect("queued")
            .recipients
            .len(),
        2
    );
    world.stop().await;
}

/// RFC 5321 §4.5.3.1.4: 512 octets per command line.
#[tokio::test]
async fn command_line_too_long() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect().await;
    let long = format!("NOOP {}", "x".repeat(600));
    assert_eq!(client.cmd(&long).await, "500 5.5.6 line too long");
    assert_eq!(client.cmd("NOOP").await, "250 2.0.0 Ok");
    world.stop().await;
}

#[tokio::test]
async fn bare_lf_in_a_command_is_refused() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect().await;
    client.send(b"NOOP\n").await;
    assert_eq!(
        client.reply().await,
        "500 5.5.2 bare CR or LF not allowed; lines end with CRLF"
    );
    world.stop().await;
}

#[tokio::test]
async fn connection_limit_refuses_with_421() {
    let world = World::start(|c| c.max_connections = 1).await;
    let mut first = world.connect().await;
    let tcp = TcpStream::connect(world.starttls_addr())
        .await
        .expect("connect");
    let mut second = Client::new(tcp);
    assert_eq!(
        second.reply().await,
        "421 4.7.0 too many connections, try again later"
    );
    assert!(second.closed().await);
    assert_eq!(first.cmd("QUIT").await, "221 2.0.0 Bye");
    assert!(first.closed().await);
    // The slot is free again (once the server has finished the session,
    // which may be a moment after the client saw the close).
    for attempt in 0.. {
        let tcp = TcpStream::connect(world.starttls_addr())
            .await
            .expect("connect");
        let mut third = Client::new(tcp);
        if third.reply().await.starts_with("220 ") {
            assert_eq!(third.cmd("NOOP").await, "250 2.0.0 Ok");
            break;
        }
        assert!(attempt < 50, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.stop().await;
}

/// RFC 5321 §4.5.3.2.7 (short here).
#[tokio::test]
async fn idle_timeout_closes_with_421() {
    let world = World::start(|c| c.idle_timeout = Duration::from_millis(300)).await;
    let mut client = world.connect().await;
    assert_eq!(
        client.reply().await,
        "421 4.4.2 mx.test idle timeout, closing connection"
    );
    assert!(client.closed().await);
    world.stop().await;
}

#[tokio::test]
async fn shutdown_closes_open_sessions_with_421() {
    let world = World::start(|_| {}).await;
    let mut client = world.connect().await;
    world.shutdown.cancel();
    assert_eq!(client.reply().await, "421 4.3.2 mx.test shutting down");
    assert!(client.closed().await);
    world.stop().await;
}

/// A real client: swaks (Debian package `swaks`; CI installs it) submits
/// over STARTTLS with AUTH PLAIN.
#[tokio::test]
async fn swaks_submits_over_starttls_with_auth_plain() {
    let world = World::start(|_| {}).await;
    let addr = world.starttls_addr();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &addr.port().to_string()])
            .args([
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                USER,
                "--auth-password",
                PASSWORD,
            ])
            .args([
                "--ehlo",
                "swaks.test",
                "--from",
                USER,
                "--to",
                "bob@example.net",
            ])
            .args([
                "--header",
                "Subject: from swaks",
                "--body",
                "hello from swaks",
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("swaks must be installed (apt-get install swaks)");
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "swaks failed:\n{transcript}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids = world.queued_ids().await;
    assert_eq!(ids.len(), 1, "{transcript}");
    assert!(
        transcript.contains(&format!("queued as {}", ids[0])),
        "{transcript}"
    );
    let spooled = std::fs::read_to_string(world.dir.path().join(format!("spool/{}.eml", ids[0])))
        .expect("spool");
    assert!(
        spooled.starts_with("Received: from swaks.test ([127.0.0.1])"),
        "{spooled}"
    );
    assert!(
        spooled.contains("with ESMTPSA") && spooled.contains("Subject: from swaks"),
        "{spooled}"
    );
    world.stop().await;
}

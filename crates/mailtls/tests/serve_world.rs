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

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mailtls_e2e::dns_world::{DnsWorld, RunningWorld, Signing, Zone};
use mailtls_e2e::pki;
use mailtls_e2e::smtp_world::{
    Behaviour, ReceivedMessage, RunningServer, SmtpServer, StrippingProxy, fresh_loopback_ip,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

type TestResult = Result<(), Box<dyn Error>>;

/// The account that submits, in the world domain `sender.example`.
const USER: &str = "alice@sender.example";
const PASSWORD: &str = "correct horse battery staple";
/// `mailtls serve` must accept connections within this.
const STARTUP: Duration = Duration::from_secs(30);
/// A message must reach its destination (or its final state) within this.
const DELIVERY: Duration = Duration::from_secs(60);
/// Between two looks at a condition.
const POLL: Duration = Duration::from_millis(200);

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("the SMTP test world uses IPv4 loopback"),
    }
}

/// A signed domain whose single MX is `mx.<domain>` at `ip`.
fn signed_domain<'a>(dns: &'a mut DnsWorld, domain: &str, ip: IpAddr) -> &'a mut Zone {
    let zone = dns.zone(&format!("{domain}."), Signing::Signed);
    zone.mx(10, &format!("mx.{domain}."))
        .a(&format!("mx.{domain}."), v4(ip));
    zone
}

fn start(behaviour: Behaviour) -> Result<RunningServer, Box<dyn Error>> {
    Ok(SmtpServer::start_on_fresh_ip(behaviour)?)
}

/// The value of the first header field `name` (case-insensitive), unfolded.
fn header(message: &ReceivedMessage, name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(&message.data);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line),
            Some(_) => break,
            None => {
                if let Some((field, rest)) = line.split_once(':')
                    && field.eq_ignore_ascii_case(name)
                {
                    value = Some(rest.trim().to_owned());
                }
            }
        }
    }
    value
}

/// A message's text with lines unfolded and whitespace runs collapsed, so
/// that phrases can be found wherever the generator wrapped them.
fn flat_text(message: &ReceivedMessage) -> String {
    String::from_utf8_lossy(&message.data)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a bounded poll saw this time.
enum Poll<T> {
    Ready(T),
    /// Not yet, and what was seen instead (for the failure message).
    Pending(String),
}

/// A `mailtls serve` that is killed (SIGKILL) and reaped when dropped, so
/// that a failing test leaves no relay behind.
struct Serve {
    child: Child,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One mailtls installation: a config file and a data directory (in the
/// world's scratch directory), the admin CLI on them, and `serve`.
struct Mailtls {
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    /// STARTTLS submission (port 587 of a fresh loopback address).
    submission: SocketAddr,
    /// Implicit-TLS submission (port 465 of the same address).
    submission_tls: SocketAddr,
    resolver: SocketAddr,
    trust_anchor: PathBuf,
    serve: Option<Serve>,
}

impl Mailtls {
    /// Writes the config, creates the data directory and the account
    /// [`USER`] with `mailtls user add` (password on stdin). Retries come
    /// after 1 s, then every 2 s.
    async fn install(world: &RunningWorld) -> Result<Mailtls, Box<dyn Error>> {
        let dir = world.scratch_dir().join("mailtls");
        std::fs::create_dir_all(&dir)?;
        let ip = fresh_loopback_ip();
        let mailtls = Mailtls {
            config: dir.join("mailtls.toml"),
            data_dir: dir.join("data"),
            log: dir.join("serve.log"),
            submission: SocketAddr::new(ip, 587),
            submission_tls: SocketAddr::new(ip, 465),
            resolver: world.addr(),
            trust_anchor: world.trust_anchor_path(),
            serve: None,
        };
        let output = mailtls
            .run(&["user", "add", USER], Some(format!("{PASSWORD}\n")))
            .await?;
        if !output.status.success() {
            return Err(format!("mailtls user add: {}", transcript(&output)).into());
        }
        Ok(mailtls)
    }

    /// Picks another fresh loopback address for the listeners (the config
    /// file is written before every command).
    fn move_listeners(&mut self) {
        let ip = fresh_loopback_ip();
        self.submission = SocketAddr::new(ip, 587);
        self.submission_tls = SocketAddr::new(ip, 465);
    }

    fn write_config(&self) -> Result<(), Box<dyn Error>> {
        let text = format!(
            r#"hostname = "relay.sender.example"

[dns]
resolver = "{resolver}"
trust_anchor = "{anchor}"

[probe]
allow_private = true
smtp_port = 25
timeout_secs = 10

[smtp.submission]
listen = ["{submission}"]
listen_tls = ["{submission_tls}"]

[relay]
retry_base_secs = 1
retry_max_secs = 2
"#,
            resolver = self.resolver,
            anchor = self.trust_anchor.display(),
            submission = self.submission,
            submission_tls = self.submission_tls,
        );
        std::fs::write(&self.config, text)?;
        Ok(())
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailtls"));
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("NO_COLOR", "1");
        command
    }

    /// Runs one CLI command to completion (off the async runtime, which
    /// serves the DNS), with `stdin` as its standard input.
    async fn run(&self, args: &[&str], stdin: Option<String>) -> Result<Output, Box<dyn Error>> {
        self.write_config()?;
        let mut command = self.command();
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = tokio::task::spawn_blocking(move || -> std::io::Result<Output> {
            let mut child = command.spawn()?;
            if let Some(mut input) = child.stdin.take() {
                use std::io::Write;
                input.write_all(stdin.unwrap_or_default().as_bytes())?;
            }
            child.wait_with_output()
        })
        .await??;
        Ok(output)
    }

    /// Runs a CLI command that must succeed; its standard output.
    async fn cli(&self, args: &[&str]) -> Result<String, Box<dyn Error>> {
        let output = self.run(args, None).await?;
        if !output.status.success() {
            return Err(format!("mailtls {}: {}", args.join(" "), transcript(&output)).into());
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// `mailtls queue list --json`.
    async fn queue(&self) -> Result<Vec<Value>, Box<dyn Error>> {
        Ok(serde_json::from_str(
            &self.cli(&["queue", "list", "--json"]).await?,
        )?)
    }

    /// The queue entry of recipient `address` of message `id`.
    async fn recipient(&self, id: &str, address: &str) -> Result<Value, Box<dyn Error>> {
        let queue = self.queue().await?;
        let message = queue
            .iter()
            .find(|m| m["id"] == id)
            .ok_or_else(|| format!("message {id} is not in the queue: {queue:?}"))?;
        let recipients = message["recipients"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(recipients
            .into_iter()
            .find(|r| r["address"] == address)
            .ok_or_else(|| format!("{address} is not a recipient of {id}: {message}"))?)
    }

    /// Starts `mailtls serve` and waits until its submission port accepts
    /// connections. On the first start a taken address (another test
    /// process) moves the listeners elsewhere; a restart keeps them.
    async fn serve(&mut self) -> TestResult {
        let first_start = !self.log.exists();
        for _ in 0..5 {
            self.write_config()?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)?;
            let child = self
                .command()
                .arg("serve")
                .env("MAILTLS_LOG", "info,hickory_net=error,hickory_proto=error")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| format!("cannot run mailtls serve: {e}"))?;
            self.serve = Some(Serve { child });
            match self.wait_ready().await? {
                None => return Ok(()),
                Some(log) if first_start && log.contains("in use") => {
                    self.serve = None;
                    self.move_listeners();
                }
                Some(log) => return Err(format!("mailtls serve exited:\n{log}").into()),
            }
        }
        Err(format!("mailtls serve found no free address:\n{}", self.log_text()).into())
    }

    /// `None` once the submission port answers; the log if serve exited.
    async fn wait_ready(&mut self) -> Result<Option<String>, Box<dyn Error>> {
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            let serve = self.serve.as_mut().ok_or("serve is not running")?;
            if let Some(status) = serve.child.try_wait()? {
                return Ok(Some(format!("{status}\n{}", self.log_text())));
            }
            if tokio::net::TcpStream::connect(self.submission)
                .await
                .is_ok()
            {
                return Ok(None);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "mailtls serve did not listen on {} within {STARTUP:?}:\n{}",
                    self.submission,
                    self.log_text()
                )
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `kill -9` (what `Child::kill` sends on Unix), then reaps it.
    fn kill9(&mut self) -> TestResult {
        let mut serve = self.serve.take().ok_or("serve is not running")?;
        serve.child.kill()?;
        let status = serve.child.wait()?;
        assert!(!status.success(), "killed, not exited: {status}");
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs swaks against the STARTTLS listener (`--tls`) or the
    /// implicit-TLS one (`--tlsc`), with `args` added.
    async fn swaks(&self, implicit_tls: bool, args: &[&str]) -> Result<Output, Box<dyn Error>> {
        let server = if implicit_tls {
            self.submission_tls
        } else {
            self.submission
        };
        let mut command = Command::new("swaks");
        command
            .args(["--server", &server.ip().to_string()])
            .args(["--port", &server.port().to_string()])
            .arg(if implicit_tls { "--tlsc" } else { "--tls" })
            .args(["--ehlo", "client.sender.example", "--timeout", "30"])
            .args(args);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await?
            .map_err(|e| format!("swaks must be installed (apt-get install swaks): {e}"))?;
        Ok(output)
    }

    /// Submits a message from [`USER`] to `to` with AUTH PLAIN; its queue id.
    async fn submit(
        &self,
        implicit_tls: bool,
        to: &str,
        message_id: &str,
    ) -> Result<String, Box<dyn Error>> {
        let message_id = format!("Message-Id: <{message_id}>");
        let output = self
            .swaks(
                implicit_tls,
                &[
                    "--auth",
                    "PLAIN",
                    "--auth-user",
                    USER,
                    "--auth-password",
                    PASSWORD,
                    "--from",
                    USER,
                    "--to",
                    to,
                    "--header",
                    &message_id,
                    "--header",
                    "Subject: serve_world",
                    "--body",
                    "Hello from the test world.",
                ],
            )
            .await?;
        let text = transcript(&output);
        if !output.status.success() {
            return Err(format!("swaks could not submit:\n{text}").into());
        }
        let id = text
            .split("queued as ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("no queue id in the 250 reply:\n{text}"))?;
        Ok(id.to_owned())
    }

    /// Polls `probe` until it is ready, for at most `limit`; on timeout the
    /// error says what was seen last, with the serve log.
    async fn eventually<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl AsyncFnMut() -> Result<Poll<T>, Box<dyn Error>>,
    ) -> Result<T, Box<dyn Error>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let seen = match probe().await? {
                Poll::Ready(value) => return Ok(value),
                Poll::Pending(seen) => seen,
            };
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{what}: not within {limit:?}; last seen: {seen}\nserve log:\n{}",
                    self.log_text()
                )
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `server` holds `count` messages.
    async fn received(
        &self,
        server: &RunningServer,
        count: usize,
    ) -> Result<Vec<ReceivedMessage>, Box<dyn Error>> {
        self.received_within(server, count, DELIVERY).await
    }

    /// [`Mailtls::received`] with a deadline of its own.
    async fn received_within(
        &self,
        server: &RunningServer,
        count: usize,
        limit: Duration,
    ) -> Result<Vec<ReceivedMessage>, Box<dyn Error>> {
        self.eventually(
            &format!("{count} message(s) at {}", server.ip()),
            limit,
            async || {
                let received = server.received();
                Ok(if received.len() >= count {
                    Poll::Ready(received)
                } else {
                    Poll::Pending(format!("{} received", received.len()))
                })
            },
        )
        .await
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn transcript(output: &Output) -> String {
    format!(
        "{}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

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
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A plaintext SMTP client for what swaks will not do (AUTH that the server
/// does not advertise).
struct PlainClient {
    reader: BufReader<tokio::net::TcpStream>,
}

impl PlainClient {
    async fn connect(addr: SocketAddr) -> Result<(PlainClient, String), Box<dyn Error>> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let mut client = PlainClient {
            reader: BufReader::new(stream),
        };
        let banner = client.reply().await?;
        Ok((client, banner))
    }

    /// One reply, every line, joined with `\n`.
    async fn reply(&mut self) -> Result<String, Box<dyn Error>> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(STARTUP, self.reader.read_line(&mut line)).await??;
            if n == 0 {
                return Err(format!("connection closed after {lines:?}").into());
            }
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Ok(lines.join("\n"));
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<String, Box<dyn Error>> {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.reply().await
    }
}

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

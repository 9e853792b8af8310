//! The harness of the `mailtls serve` end-to-end tests: one mailtls
//! installation (config file, data directory, the real binary as a child
//! process), swaks and a raw SMTP client, bounded polls. Shared by
//! `serve_world.rs` (the relay, issue #3) and `secure_alias.rs` (the
//! inbound MX and the secure alias, issue #4).

#![allow(dead_code, unreachable_pub, unused_imports)]

pub use std::error::Error;
pub use std::net::{IpAddr, Ipv4Addr, SocketAddr};
pub use std::path::PathBuf;
pub use std::process::{Child, Command, Output, Stdio};
pub use std::time::Duration;

pub use mailtls_e2e::dns_world::{DnsWorld, RunningWorld, Signing, Zone};
pub use mailtls_e2e::pki;
pub use mailtls_e2e::smtp_world::{
    Behaviour, ReceivedMessage, RunningServer, SmtpServer, StrippingProxy, fresh_loopback_ip,
};
pub use serde_json::Value;
pub use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub type TestResult = Result<(), Box<dyn Error>>;

/// The local domain of the installation (its users' mailboxes are here).
pub const LOCAL_DOMAIN: &str = "example.org";
/// The secure domain (SPEC §4).
pub const SECURE_DOMAIN: &str = "secure.example.org";

/// The account that submits, in the world domain `sender.example`.
pub const USER: &str = "alice@sender.example";
pub const PASSWORD: &str = "correct horse battery staple";
/// `mailtls serve` must accept connections within this.
pub const STARTUP: Duration = Duration::from_secs(30);
/// A message must reach its destination (or its final state) within this.
pub const DELIVERY: Duration = Duration::from_secs(60);
/// Between two looks at a condition.
pub const POLL: Duration = Duration::from_millis(200);

pub fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("the SMTP test world uses IPv4 loopback"),
    }
}

/// A signed domain whose single MX is `mx.<domain>` at `ip`.
pub fn signed_domain<'a>(dns: &'a mut DnsWorld, domain: &str, ip: IpAddr) -> &'a mut Zone {
    let zone = dns.zone(&format!("{domain}."), Signing::Signed);
    zone.mx(10, &format!("mx.{domain}."))
        .a(&format!("mx.{domain}."), v4(ip));
    zone
}

pub fn start(behaviour: Behaviour) -> Result<RunningServer, Box<dyn Error>> {
    Ok(SmtpServer::start_on_fresh_ip(behaviour)?)
}

/// The value of the first header field `name` (case-insensitive), unfolded.
pub fn header(message: &ReceivedMessage, name: &str) -> Option<String> {
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
pub fn flat_text(message: &ReceivedMessage) -> String {
    String::from_utf8_lossy(&message.data)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a bounded poll saw this time.
pub enum Poll<T> {
    Ready(T),
    /// Not yet, and what was seen instead (for the failure message).
    Pending(String),
}

/// A `mailtls serve` that is killed (SIGKILL) and reaped when dropped, so
/// that a failing test leaves no relay behind.
pub struct Serve {
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
pub struct Mailtls {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// STARTTLS submission (port 587 of a fresh loopback address).
    pub submission: SocketAddr,
    /// Implicit-TLS submission (port 465 of the same address).
    pub submission_tls: SocketAddr,
    /// The inbound MX (port 25 of the same address).
    pub inbound: SocketAddr,
    pub resolver: SocketAddr,
    pub trust_anchor: PathBuf,
    pub serve: Option<Serve>,
    /// The EHLO name and `Received:` name (`<dir>.sender.example`).
    pub hostname: String,
    /// Appended to the config file.
    pub extra: String,
}

impl Mailtls {
    /// Writes the config, creates the data directory and the account
    /// [`USER`] with `mailtls user add` (password on stdin). Retries come
    /// after 1 s, then every 2 s.
    pub async fn install(world: &RunningWorld) -> Result<Mailtls, Box<dyn Error>> {
        let mut mailtls = Mailtls::install_in(world, "mailtls", "", true).await?;
        mailtls.hostname = "relay.sender.example".into();
        Ok(mailtls)
    }

    /// An installation in its own directory `name` of the world's scratch
    /// directory, with `extra` appended to its config (e.g. a `[store]`
    /// section); the account [`USER`] is created only with `add_user` (a
    /// fleet's nodes share one store).
    pub async fn install_in(
        world: &RunningWorld,
        name: &str,
        extra: &str,
        add_user: bool,
    ) -> Result<Mailtls, Box<dyn Error>> {
        let dir = world.scratch_dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let ip = fresh_loopback_ip();
        let mailtls = Mailtls {
            config: dir.join("mailtls.toml"),
            data_dir: dir.join("data"),
            log: dir.join("serve.log"),
            submission: SocketAddr::new(ip, 587),
            submission_tls: SocketAddr::new(ip, 465),
            inbound: SocketAddr::new(ip, 25),
            resolver: world.addr(),
            trust_anchor: world.trust_anchor_path(),
            serve: None,
            hostname: format!("{name}.sender.example"),
            extra: extra.to_owned(),
        };
        if add_user {
            let output = mailtls
                .run(&["user", "add", USER], Some(format!("{PASSWORD}\n")))
                .await?;
            if !output.status.success() {
                return Err(format!("mailtls user add: {}", transcript(&output)).into());
            }
        }
        Ok(mailtls)
    }

    /// Picks another fresh loopback address for the listeners (the config
    /// file is written before every command).
    pub fn move_listeners(&mut self) {
        let ip = fresh_loopback_ip();
        self.submission = SocketAddr::new(ip, 587);
        self.submission_tls = SocketAddr::new(ip, 465);
        self.inbound = SocketAddr::new(ip, 25);
    }

    pub fn write_config(&self) -> Result<(), Box<dyn Error>> {
        let text = format!(
            r#"hostname = "{hostname}"

[dns]
resolver = "{resolver}"
trust_anchor = "{anchor}"

[probe]
allow_private = true
smtp_port = 25
timeout_secs = 10

[smtp.inbound]
listen = ["{inbound}"]
local_domains = ["{LOCAL_DOMAIN}"]
secure_domain = "{SECURE_DOMAIN}"

[smtp.submission]
listen = ["{submission}"]
listen_tls = ["{submission_tls}"]

[relay]
retry_base_secs = 1
retry_max_secs = 2
{extra}
"#,
            hostname = self.hostname,
            extra = self.extra,
            resolver = self.resolver,
            anchor = self.trust_anchor.display(),
            submission = self.submission,
            submission_tls = self.submission_tls,
            inbound = self.inbound,
        );
        std::fs::write(&self.config, text)?;
        Ok(())
    }

    pub fn command(&self) -> Command {
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
    pub async fn run(
        &self,
        args: &[&str],
        stdin: Option<String>,
    ) -> Result<Output, Box<dyn Error>> {
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
    pub async fn cli(&self, args: &[&str]) -> Result<String, Box<dyn Error>> {
        let output = self.run(args, None).await?;
        if !output.status.success() {
            return Err(format!("mailtls {}: {}", args.join(" "), transcript(&output)).into());
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// `mailtls queue list --json`.
    pub async fn queue(&self) -> Result<Vec<Value>, Box<dyn Error>> {
        Ok(serde_json::from_str(
            &self.cli(&["queue", "list", "--json"]).await?,
        )?)
    }

    /// The queue entry of recipient `address` of message `id`.
    pub async fn recipient(&self, id: &str, address: &str) -> Result<Value, Box<dyn Error>> {
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
    pub async fn serve(&mut self) -> TestResult {
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
    pub async fn wait_ready(&mut self) -> Result<Option<String>, Box<dyn Error>> {
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
    pub fn kill9(&mut self) -> TestResult {
        let mut serve = self.serve.take().ok_or("serve is not running")?;
        serve.child.kill()?;
        let status = serve.child.wait()?;
        assert!(!status.success(), "killed, not exited: {status}");
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs swaks against the STARTTLS listener (`--tls`) or the
    /// implicit-TLS one (`--tlsc`), with `args` added.
    pub async fn swaks(&self, implicit_tls: bool, args: &[&str]) -> Result<Output, Box<dyn Error>> {
        let (server, tls) = if implicit_tls {
            (self.submission_tls, "--tlsc")
        } else {
            (self.submission, "--tls")
        };
        swaks_at(server, Some(tls), args).await
    }

    /// Runs swaks against the inbound MX, with STARTTLS (`--tls`) or in
    /// plaintext, as another provider's MTA would send.
    pub async fn swaks_mx(&self, tls: bool, args: &[&str]) -> Result<Output, Box<dyn Error>> {
        swaks_at(self.inbound, tls.then_some("--tls"), args).await
    }

    /// The messages in a local user's Maildir (`new/`), oldest first.
    pub fn maildir(&self, mailbox: &str) -> Vec<String> {
        let dir = self.data_dir.join("mail").join(mailbox).join("Maildir/new");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }

    /// Waits until the Maildir of `mailbox` holds `count` messages.
    pub async fn maildir_holds(
        &self,
        mailbox: &str,
        count: usize,
    ) -> Result<Vec<String>, Box<dyn Error>> {
        self.eventually(
            &format!("{count} message(s) in the Maildir of {mailbox}"),
            DELIVERY,
            async || {
                let messages = self.maildir(mailbox);
                Ok(if messages.len() >= count {
                    Poll::Ready(messages)
                } else {
                    Poll::Pending(format!("{} there", messages.len()))
                })
            },
        )
        .await
    }
}

impl Mailtls {
    /// Submits a message from [`USER`] to `to` with AUTH PLAIN; its queue id.
    pub async fn submit(
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
    pub async fn eventually<T>(
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
    pub async fn received(
        &self,
        server: &RunningServer,
        count: usize,
    ) -> Result<Vec<ReceivedMessage>, Box<dyn Error>> {
        self.received_within(server, count, DELIVERY).await
    }

    /// [`Mailtls::received`] with a deadline of its own.
    pub async fn received_within(
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

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

pub fn transcript(output: &Output) -> String {
    format!(
        "{}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn base64(bytes: &[u8]) -> String {
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
pub struct PlainClient {
    reader: BufReader<tokio::net::TcpStream>,
}

impl PlainClient {
    pub async fn connect(addr: SocketAddr) -> Result<(PlainClient, String), Box<dyn Error>> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let mut client = PlainClient {
            reader: BufReader::new(stream),
        };
        let banner = client.reply().await?;
        Ok((client, banner))
    }

    /// One reply, every line, joined with `\n`.
    pub async fn reply(&mut self) -> Result<String, Box<dyn Error>> {
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

    pub async fn command(&mut self, line: &str) -> Result<String, Box<dyn Error>> {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.reply().await
    }
}

/// Runs swaks against `server`, with a TLS flag (`--tls`, `--tlsc`) or in
/// plaintext, with `args` added.
pub async fn swaks_at(
    server: SocketAddr,
    tls: Option<&str>,
    args: &[&str],
) -> Result<Output, Box<dyn Error>> {
    let mut command = Command::new("swaks");
    command
        .args(["--server", &server.ip().to_string()])
        .args(["--port", &server.port().to_string()])
        .args(tls)
        .args(["--ehlo", "client.sender.example", "--timeout", "30"])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .map_err(|e| format!("swaks must be installed (apt-get install swaks): {e}"))?;
    Ok(output)
}

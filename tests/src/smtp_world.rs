//! SMTP servers for the test world, one per STARTTLS behaviour the check must
//! judge.
//!
//! Each [`SmtpServer`] listens on port 25 of its own loopback address
//! (Linux routes all of 127.0.0.0/8 to `lo`, and the tests run as root), so
//! a test can put several MX hosts side by side and the probe connects to
//! them exactly as to a real MX. [`fresh_loopback_ip`] hands out addresses
//! unlikely to be taken by a parallel test or another test process.
//!
//! The server speaks just enough SMTP (RFC 5321) for a probe: the banner,
//! EHLO/HELO, STARTTLS (RFC 3207), RSET, NOOP, QUIT. Only
//! [`Behaviour::AcceptMail`] also takes mail (MAIL, RCPT, DATA) and keeps
//! every message for the test to inspect ([`RunningServer::received`]).
//! [`StrippingProxy`] sits in front of a server and removes STARTTLS, as an
//! active attacker on the path would. Its TLS side is
//! OpenSSL through tokio-openssl. It runs on a thread and a runtime of its
//! own, so tests may block (e.g. wait for a `mailtls` child process) without
//! starving it, and it stops when the [`RunningServer`] is dropped. Nothing a
//! client sends can make it panic; a client that misbehaves is disconnected.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslContext, SslMethod, SslVersion};
use openssl::x509::X509;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::pki::{self, Credential};

/// The port every server listens on: SMTP relay (RFC 5321 §4.5.4.2).
pub const SMTP_PORT: u16 = 25;

/// The name the servers give in their banner and EHLO reply.
pub const SERVER_NAME: &str = "mx.test";

/// What a client sends is read in lines of at most this many octets.
const MAX_COMMAND_LINE: usize = 4096;

/// A client idle this long is disconnected.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The plaintext [`Behaviour::PipelineAfterStarttls`] sends right after
/// its `220` to STARTTLS, in the same write.
pub const INJECTED: &[u8] = b"250 injected\r\n";

/// How a server behaves, in particular towards STARTTLS.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Behaviour {
    /// Offers STARTTLS and completes the handshake with TLS 1.2 or 1.3.
    Starttls {
        /// DER certificates, leaf first.
        chain: Vec<Vec<u8>>,
        /// The leaf's key, PKCS#8 DER.
        key: Vec<u8>,
    },
    /// Offers STARTTLS but speaks only TLS 1.0 with RSA key transport
    /// (`AES128-SHA`, OpenSSL security level 0), with a fresh self-signed
    /// RSA certificate for [`SERVER_NAME`]: an old server.
    Legacy,
    /// EHLO without STARTTLS; STARTTLS is answered `502`.
    NoStarttls,
    /// Offers STARTTLS, answers it `454 4.7.0 TLS not available`.
    RefuseStarttls,
    /// Like [`Behaviour::Starttls`], but the `220` to STARTTLS is followed,
    /// in the same write, by the plaintext [`INJECTED`] (the CVE-2011-0411
    /// attack), then the handshake proceeds normally.
    PipelineAfterStarttls {
        /// DER certificates, leaf first.
        chain: Vec<Vec<u8>>,
        /// The leaf's key, PKCS#8 DER.
        key: Vec<u8>,
    },
    /// Like [`Behaviour::Starttls`], but closes the connection right after
    /// the handshake, before reading anything over TLS.
    CloseAfterHandshake {
        /// DER certificates, leaf first.
        chain: Vec<Vec<u8>>,
        /// The leaf's key, PKCS#8 DER.
        key: Vec<u8>,
    },
    /// Offers STARTTLS, answers it `220`, then never speaks TLS (a
    /// handshake that hangs).
    StallAfterStarttls,
    /// Accepts the connection and never sends a banner.
    Silent,
    /// Sends a banner line that never ends (until the client hangs up, or
    /// 16 MiB).
    EndlessLine,
    /// Not an SMTP server: answers the connection with an HTTP error.
    NotSmtp,
    /// Greets with `554 5.3.2 no service` (RFC 5321 §3.1).
    RefuseService,
    /// An RFC 821 server: EHLO is `502`, HELO works, no STARTTLS.
    HeloOnly,
    /// A receiving MX: takes mail (MAIL, RCPT, DATA) and keeps it, with
    /// STARTTLS when it has a credential, plaintext only otherwise.
    AcceptMail(MailOptions),
}

/// How a [`Behaviour::AcceptMail`] server receives.
#[derive(Debug, Clone, Default)]
pub struct MailOptions {
    /// DER chain (leaf first) and PKCS#8 key: STARTTLS is offered. `None`:
    /// a server that never offers TLS.
    pub tls: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// Recipients refused at RCPT, with the reply line to send
    /// (e.g. `550 5.1.1 no such user`).
    pub rejections: Vec<(String, String)>,
    /// Offers STARTTLS, answers it `220`, then sends bytes that are not TLS
    /// and hangs up: a broken TLS stack. Mail is still taken in plaintext
    /// (RFC 7435: the client may come back without STARTTLS).
    pub broken_tls: bool,
}

/// A message a [`Behaviour::AcceptMail`] server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The reverse-path of MAIL FROM, without brackets (`""` for `<>`).
    pub mail_from: String,
    /// The accepted forward-paths, without brackets.
    pub rcpt_to: Vec<String>,
    /// The message with dot-stuffing undone, CRLF lines.
    pub data: Vec<u8>,
    /// The octets between the `354` and the end of data, as on the wire
    /// (dot-stuffed, terminating `.` line included).
    pub raw_data: Vec<u8>,
    /// Whether the transaction happened inside TLS.
    pub tls: bool,
}

impl Behaviour {
    /// [`Behaviour::Starttls`] with this credential.
    pub fn starttls(credential: &Credential) -> Behaviour {
        Behaviour::Starttls {
            chain: credential.chain.clone(),
            key: credential.key.clone(),
        }
    }

    /// [`Behaviour::PipelineAfterStarttls`] with this credential.
    pub fn pipeline_after_starttls(credential: &Credential) -> Behaviour {
        Behaviour::PipelineAfterStarttls {
            chain: credential.chain.clone(),
            key: credential.key.clone(),
        }
    }

    /// [`Behaviour::AcceptMail`] with STARTTLS and this credential.
    pub fn accept_mail(credential: &Credential) -> Behaviour {
        Behaviour::AcceptMail(MailOptions {
            tls: Some((credential.chain.clone(), credential.key.clone())),
            rejections: Vec::new(),
            broken_tls: false,
        })
    }

    /// [`Behaviour::AcceptMail`] without STARTTLS.
    pub fn accept_mail_plaintext() -> Behaviour {
        Behaviour::AcceptMail(MailOptions::default())
    }

    /// [`Behaviour::AcceptMail`] whose STARTTLS is broken
    /// ([`MailOptions::broken_tls`]).
    pub fn accept_mail_with_broken_tls() -> Behaviour {
        Behaviour::AcceptMail(MailOptions {
            broken_tls: true,
            ..MailOptions::default()
        })
    }

    /// For [`Behaviour::AcceptMail`]: refuse `recipient` at RCPT with
    /// `reply` (a full reply line such as `450 4.2.1 try later`). Other
    /// behaviours are returned unchanged.
    pub fn rejecting(mut self, recipient: &str, reply: &str) -> Behaviour {
        if let Behaviour::AcceptMail(options) = &mut self {
            options
                .rejections
                .push((recipient.to_owned(), reply.to_owned()));
        }
        self
    }

    /// [`Behaviour::CloseAfterHandshake`] with this credential.
    pub fn close_after_handshake(credential: &Credential) -> Behaviour {
        Behaviour::CloseAfterHandshake {
            chain: credential.chain.clone(),
            key: credential.key.clone(),
        }
    }

    fn offers_starttls(&self) -> bool {
        matches!(
            self,
            Behaviour::Starttls { .. }
                | Behaviour::Legacy
                | Behaviour::RefuseStarttls
                | Behaviour::PipelineAfterStarttls { .. }
                | Behaviour::CloseAfterHandshake { .. }
                | Behaviour::StallAfterStarttls
                | Behaviour::AcceptMail(MailOptions { tls: Some(_), .. })
                | Behaviour::AcceptMail(MailOptions {
                    broken_tls: true,
                    ..
                })
        )
    }
}

/// A loopback address for one server: `127.a.b.c` with `a` never 0 (so
/// `127.0.0.1` and `127.0.0.53` stay free), mixed from the process id, a
/// per-process counter and the time of the first call, so that parallel
/// tests and concurrent test processes rarely pick the same one. Callers
/// still retry on `AddrInUse`, as [`SmtpServer::start_on_fresh_ip`] does.
pub fn fresh_loopback_ip() -> IpAddr {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        (u64::from(std::process::id()) << 32) ^ nanos
    });
    let n = splitmix64(seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)));
    let a = 1 + (n % 254) as u8;
    let b = (n >> 8) as u8;
    let c = 1 + ((n >> 16) % 254) as u8;
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// A well-mixing bijection on u64 (Steele, Lea, Flood: SplitMix64).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Starts SMTP servers.
#[derive(Debug)]
pub struct SmtpServer;

impl SmtpServer {
    /// Listens on `ip`, port 25, and serves every connection with
    /// `behaviour` until the returned handle is dropped. Fails if the port is
    /// taken (`AddrInUse`) or the TLS material is unusable.
    pub fn start(ip: IpAddr, behaviour: Behaviour) -> io::Result<RunningServer> {
        let tls = tls_context(&behaviour)?;
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, SMTP_PORT))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let log = Arc::new(Log::default());
        let (stop, stopped) = oneshot::channel();
        let ctx = Arc::new(Ctx {
            behaviour,
            tls,
            log: Arc::clone(&log),
        });
        let thread = std::thread::Builder::new()
            .name(format!("smtp-{ip}"))
            .spawn(move || runtime.block_on(serve(listener, ctx, stopped)))?;
        Ok(RunningServer {
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// [`SmtpServer::start`] on a [`fresh_loopback_ip`], trying another
    /// address when one is taken.
    pub fn start_on_fresh_ip(behaviour: Behaviour) -> io::Result<RunningServer> {
        let mut last = None;
        for _ in 0..32 {
            match SmtpServer::start(fresh_loopback_ip(), behaviour.clone()) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free loopback address")))
    }
}

/// A server that runs until dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    log: Arc<Log>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// The address clients connect to (port 25).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The IP address it listens on.
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.log.handshakes.load(Ordering::SeqCst)
    }

    /// Whether any TLS handshake completed.
    pub fn saw_handshake(&self) -> bool {
        self.handshakes() > 0
    }

    /// The messages accepted so far ([`Behaviour::AcceptMail`]), in order.
    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.log
            .messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Every command line received, in order, across connections.
    pub fn commands(&self) -> Vec<Command> {
        self.log
            .commands
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One command line a server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Whether it came inside TLS.
    pub tls: bool,
    /// The line without its line end.
    pub line: String,
}

#[derive(Debug, Default)]
struct Log {
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    commands: Mutex<Vec<Command>>,
    messages: Mutex<Vec<ReceivedMessage>>,
}

impl Log {
    fn command(&self, tls: bool, line: &str) {
        if let Ok(mut commands) = self.commands.lock() {
            commands.push(Command {
                tls,
                line: line.to_owned(),
            });
        }
    }
}

struct Ctx {
    behaviour: Behaviour,
    tls: Option<SslContext>,
    log: Arc<Log>,
}

fn tls_context(behaviour: &Behaviour) -> io::Result<Option<SslContext>> {
    let build = |chain: &[Vec<u8>],
                 key: &[u8],
                 legacy: bool|
     -> Result<SslContext, openssl::error::ErrorStack> {
        let mut ctx = SslContext::builder(SslMethod::tls_server())?;
        let mut certs = chain.iter();
        if let Some(leaf) = certs.next() {
            let leaf = X509::from_der(leaf)?;
            ctx.set_certificate(&leaf)?;
        }
        for cert in certs {
            ctx.add_extra_chain_cert(X509::from_der(cert)?)?;
        }
        let key = PKey::private_key_from_pkcs8(key)?;
        ctx.set_private_key(&key)?;
        ctx.check_private_key()?;
        if legacy {
            ctx.set_min_proto_version(Some(SslVersion::TLS1))?;
            ctx.set_max_proto_version(Some(SslVersion::TLS1))?;
            ctx.set_cipher_list("AES128-SHA:@SECLEVEL=0")?;
        } else {
            ctx.set_min_proto_version(Some(SslVersion::TLS1_2))?;
            ctx.set_max_proto_version(Some(SslVersion::TLS1_3))?;
        }
        Ok(ctx.build())
    };
    let ctx = match behaviour {
        Behaviour::Starttls { chain, key }
        | Behaviour::PipelineAfterStarttls { chain, key }
        | Behaviour::CloseAfterHandshake { chain, key }
        | Behaviour::AcceptMail(MailOptions {
            tls: Some((chain, key)),
            ..
        }) => Some(build(chain, key, false)),
        Behaviour::Legacy => {
            let cred = pki::rsa_self_signed(SERVER_NAME);
            Some(build(&cred.chain, &cred.key, true))
        }
        _ => None,
    };
    ctx.transpose().map_err(io::Error::other)
}

async fn serve(listener: std::net::TcpListener, ctx: Arc<Ctx>, mut stopped: oneshot::Receiver<()>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "SMTP test server cannot listen");
            return;
        }
    };
    // Dropping the set when the loop ends aborts every open session.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    ctx.log.connections.fetch_add(1, Ordering::SeqCst);
                    sessions.spawn(session(tcp, Arc::clone(&ctx)));
                }
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// How a plaintext or TLS part of a session ended.
enum Next {
    Close,
    StartTls,
}

async fn session(tcp: TcpStream, ctx: Arc<Ctx>) {
    let mut plain = Lines::new(tcp);
    match &ctx.behaviour {
        Behaviour::Silent => {
            // Hold the connection open, say nothing, until stopped.
            std::future::pending::<()>().await;
        }
        Behaviour::EndlessLine => {
            let _ = plain.send(b"220 ").await;
            let chunk = [b'x'; 4096];
            for _ in 0..4096 {
                if plain.send(&chunk).await.is_err() {
                    break;
                }
            }
            return;
        }
        Behaviour::NotSmtp => {
            let _ = plain
                .send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
        Behaviour::RefuseService => {
            let _ = plain.send(b"554 5.3.2 mx.test no service here\r\n").await;
            let _ = dialogue(&mut plain, &ctx, false).await;
            return;
        }
        _ => {}
    }
    if plain
        .send(format!("220 {SERVER_NAME} ESMTP mailtls test server\r\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let Ok(Next::StartTls) = dialogue(&mut plain, &ctx, false).await else {
        return;
    };
    if matches!(ctx.behaviour, Behaviour::StallAfterStarttls) {
        std::future::pending::<()>().await;
    }
    if let Behaviour::AcceptMail(MailOptions {
        broken_tls: true, ..
    }) = ctx.behaviour
    {
        let _ = plain.send(b"this is not TLS\r\n").await;
        return;
    }
    // What the client sent after STARTTLS, before the handshake, is
    // discarded here too (CVE-2011-0411, server side).
    let tcp = plain.stream;
    let Some(tls) = &ctx.tls else {
        return;
    };
    let Ok(ssl) = Ssl::new(tls) else {
        return;
    };
    let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, tcp) else {
        return;
    };
    match tokio::time::timeout(IDLE_LIMIT, Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => {
            ctx.log.handshakes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_elapsed) => return,
    }
    if matches!(ctx.behaviour, Behaviour::CloseAfterHandshake { .. }) {
        return;
    }
    let mut secure = Lines::new(stream);
    let _ = dialogue(&mut secure, &ctx, true).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), secure.stream.shutdown()).await;
}

/// Answers commands until QUIT, STARTTLS accepted, or the client misbehaves.
async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Lines<S>,
    ctx: &Ctx,
    tls: bool,
) -> io::Result<Next> {
    // RFC 5321 §3.3: the transaction in progress (AcceptMail only).
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    loop {
        let Some(line) = conn.read_line().await? else {
            return Ok(Next::Close);
        };
        ctx.log.command(tls, &line);
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" if matches!(ctx.behaviour, Behaviour::HeloOnly) => {
                conn.send(b"502 5.5.2 EHLO not supported\r\n").await?;
            }
            "EHLO" => {
                let mut reply =
                    format!("250-{SERVER_NAME} greets you\r\n250-PIPELINING\r\n250-8BITMIME\r\n");
                if let Behaviour::AcceptMail(_) = ctx.behaviour {
                    reply.push_str("250-SIZE 10485760\r\n");
                }
                if ctx.behaviour.offers_starttls() && !tls {
                    reply.push_str("250-STARTTLS\r\n");
                }
                reply.push_str("250 ENHANCEDSTATUSCODES\r\n");
                conn.send(reply.as_bytes()).await?;
            }
            "HELO" => {
                conn.send(format!("250 {SERVER_NAME}\r\n").as_bytes())
                    .await?
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                conn.send(b"250 2.0.0 OK\r\n").await?
            }
            "NOOP" => conn.send(b"250 2.0.0 OK\r\n").await?,
            "MAIL" | "RCPT" | "DATA" if !matches!(ctx.behaviour, Behaviour::AcceptMail(_)) => {
                conn.send(b"502 5.5.1 command not implemented\r\n").await?
            }
            "MAIL" => match path_of(&line, "MAIL FROM:") {
                Some(path) if mail_from.is_none() => {
                    mail_from = Some(path);
                    conn.send(b"250 2.1.0 OK\r\n").await?
                }
                Some(_) => conn.send(b"503 5.5.1 nested MAIL\r\n").await?,
                None => conn.send(b"501 5.5.4 syntax: MAIL FROM:<path>\r\n").await?,
            },
            "RCPT" => match (path_of(&line, "RCPT TO:"), &mail_from) {
                (_, None) => conn.send(b"503 5.5.1 MAIL first\r\n").await?,
                (None, _) => conn.send(b"501 5.5.4 syntax: RCPT TO:<path>\r\n").await?,
                (Some(path), Some(_)) => {
                    let rejection = match &ctx.behaviour {
                        Behaviour::AcceptMail(options) => options
                            .rejections
                            .iter()
                            .find(|(r, _)| r.eq_ignore_ascii_case(&path))
                            .map(|(_, reply)| reply.clone()),
                        _ => None,
                    };
                    match rejection {
                        Some(reply) => conn.send(format!("{reply}\r\n").as_bytes()).await?,
                        None => {
                            rcpt_to.push(path);
                            conn.send(b"250 2.1.5 OK\r\n").await?
                        }
                    }
                }
            },
            "DATA" => {
                let Some(sender) = mail_from.take().filter(|_| !rcpt_to.is_empty()) else {
                    conn.send(b"503 5.5.1 no valid recipients\r\n").await?;
                    continue;
                };
                conn.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let (raw_data, data) = conn.read_data().await?;
                if let Ok(mut messages) = ctx.log.messages.lock() {
                    messages.push(ReceivedMessage {
                        mail_from: sender,
                        rcpt_to: std::mem::take(&mut rcpt_to),
                        data,
                        raw_data,
                        tls,
                    });
                }
                conn.send(b"250 2.0.0 OK: queued\r\n").await?
            }
            "QUIT" => {
                conn.send(b"221 2.0.0 Bye\r\n").await?;
                return Ok(Next::Close);
            }
            "STARTTLS" if tls || !ctx.behaviour.offers_starttls() => {
                conn.send(b"502 5.5.1 STARTTLS not available\r\n").await?;
            }
            "STARTTLS" => match ctx.behaviour {
                Behaviour::RefuseStarttls => conn.send(b"454 4.7.0 TLS not available\r\n").await?,
                Behaviour::PipelineAfterStarttls { .. } => {
                    let mut write = b"220 2.0.0 Ready\r\n".to_vec();
                    write.extend_from_slice(INJECTED);
                    conn.send(&write).await?;
                    return Ok(Next::StartTls);
                }
                _ => {
                    conn.send(b"220 2.0.0 Ready to start TLS\r\n").await?;
                    return Ok(Next::StartTls);
                }
            },
            _ => conn.send(b"502 5.5.1 command not implemented\r\n").await?,
        }
    }
}

/// The path of `MAIL FROM:<path> ...` or `RCPT TO:<path> ...`
/// (case-insensitive prefix), without brackets; parameters are ignored.
fn path_of(line: &str, prefix: &str) -> Option<String> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

/// Largest message a test server keeps.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Command lines from a client, within [`MAX_COMMAND_LINE`] and
/// [`IDLE_LIMIT`].
struct Lines<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Lines<S> {
    fn new(stream: S) -> Lines<S> {
        Lines {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next line with its line end as received, `None` at EOF.
    async fn read_raw_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(Some(self.buf.drain(..=lf).collect()));
            }
            if self.buf.len() > MAX_COMMAND_LINE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout(IDLE_LIMIT, self.stream.read(&mut chunk)).await {
                Ok(read) => read?,
                Err(_elapsed) => return Err(io::ErrorKind::TimedOut.into()),
            };
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lines<S> {
    /// The next line without its line end (CRLF or LF), `None` at EOF.
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=lf).collect();
                let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(Some(String::from_utf8_lossy(line).into_owned()));
            }
            if self.buf.len() > MAX_COMMAND_LINE {
                let _ = self.send(b"500 5.5.2 line too long\r\n").await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            let mut chunk = [0u8; 1024];
            let n = match tokio::time::timeout(IDLE_LIMIT, self.stream.read(&mut chunk)).await {
                Ok(read) => read?,
                Err(_elapsed) => return Err(io::ErrorKind::TimedOut.into()),
            };
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Message data up to the `.` line (RFC 5321 §4.1.1.4): the wire
    /// octets, and the message with the transparency dots removed
    /// (§4.5.2). Only `CRLF.CRLF` ends it.
    async fn read_data(&mut self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut raw = Vec::new();
        let mut data = Vec::new();
        loop {
            let Some(line) = self.read_raw_line().await? else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            raw.extend_from_slice(&line);
            if raw.len() > MAX_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "message too big",
                ));
            }
            if line == b".\r\n" {
                return Ok((raw, data));
            }
            data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}

/// Starts STARTTLS-stripping proxies: the downgrade attack of RFC 3207 §6
/// ("a man-in-the-middle attack can be launched by deleting the 250
/// STARTTLS response from the server"), done on purpose.
#[derive(Debug)]
pub struct StrippingProxy;

impl StrippingProxy {
    /// Listens on a [`fresh_loopback_ip`], port 25, and forwards every
    /// connection to `upstream`. While stripping (the default) it removes
    /// `STARTTLS` from the server's replies and answers a client's
    /// `STARTTLS` itself with `454 4.7.0 TLS not available`, never passing
    /// it on; with [`RunningProxy::set_stripping`]`(false)` it copies bytes
    /// untouched (TLS passes through), so a test can let a client see TLS
    /// first and strip it later.
    pub fn start(upstream: SocketAddr) -> io::Result<RunningProxy> {
        let mut last = None;
        for _ in 0..32 {
            match std::net::TcpListener::bind(SocketAddr::new(fresh_loopback_ip(), SMTP_PORT)) {
                Ok(listener) => return RunningProxy::spawn(listener, upstream),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free loopback address")))
    }
}

/// A proxy that runs until dropped.
#[derive(Debug)]
pub struct RunningProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct ProxyState {
    upstream: SocketAddr,
    stripping: std::sync::atomic::AtomicBool,
    connections: AtomicUsize,
    stripped: AtomicUsize,
}

impl RunningProxy {
    fn spawn(listener: std::net::TcpListener, upstream: SocketAddr) -> io::Result<RunningProxy> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let state = Arc::new(ProxyState {
            upstream,
            stripping: std::sync::atomic::AtomicBool::new(true),
            connections: AtomicUsize::new(0),
            stripped: AtomicUsize::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("strip-{}", addr.ip()))
            .spawn(move || runtime.block_on(proxy_serve(listener, shared, stopped)))?;
        Ok(RunningProxy {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address clients connect to (port 25).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The IP address it listens on.
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    /// Strip STARTTLS from new connections (`true`) or pass them through
    /// untouched (`false`).
    pub fn set_stripping(&self, on: bool) {
        self.state.stripping.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How often STARTTLS was removed from a reply or refused.
    pub fn stripped(&self) -> usize {
        self.state.stripped.load(Ordering::SeqCst)
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn proxy_serve(
    listener: std::net::TcpListener,
    state: Arc<ProxyState>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "stripping proxy cannot listen");
            return;
        }
    };
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _peer)) => {
                    state.connections.fetch_add(1, Ordering::SeqCst);
                    sessions.spawn(proxy_session(client, Arc::clone(&state)));
                }
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

async fn proxy_session(mut client: TcpStream, state: Arc<ProxyState>) {
    let Ok(mut server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    if !state.stripping.load(Ordering::SeqCst) {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Both directions write to the client: replies from the server, and
    // the proxy's own answer to STARTTLS.
    let (to_client, mut outbox) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = async move {
        let mut client_write = client_write;
        while let Some(bytes) = outbox.recv().await {
            if client_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    let upward = strip_commands(client_read, server_write, to_client.clone(), &state);
    let downward = strip_replies(server_read, to_client, &state);
    tokio::join!(writer, upward, downward);
}

/// Client → server: everything but STARTTLS, which the proxy refuses
/// itself. Message data (between `DATA` and the `.` line) passes as is.
async fn strip_commands(
    client: tokio::net::tcp::OwnedReadHalf,
    mut server: tokio::net::tcp::OwnedWriteHalf,
    to_client: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    state: &ProxyState,
) {
    let mut lines = Lines::new(client);
    let mut in_data = false;
    while let Ok(Some(line)) = lines.read_raw_line().await {
        if in_data {
            in_data = line != b".\r\n";
        } else {
            let verb = line
                .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            if verb == b"STARTTLS" {
                state.stripped.fetch_add(1, Ordering::SeqCst);
                let _ = to_client.send(b"454 4.7.0 TLS not available\r\n".to_vec());
                continue;
            }
            in_data = verb == b"DATA";
        }
        if server.write_all(&line).await.is_err() {
            break;
        }
    }
    let _ = server.shutdown().await;
}

/// Server → client: whole replies, with any `STARTTLS` line of a
/// multi-line reply removed and the continuation marks fixed.
async fn strip_replies(
    server: tokio::net::tcp::OwnedReadHalf,
    to_client: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    state: &ProxyState,
) {
    let mut lines = Lines::new(server);
    let mut reply: Vec<Vec<u8>> = Vec::new();
    while let Ok(Some(line)) = lines.read_raw_line().await {
        let last = line.get(3) != Some(&b'-');
        reply.push(line);
        if !last {
            continue;
        }
        let before = reply.len();
        let mut kept: Vec<Vec<u8>> = std::mem::take(&mut reply)
            .into_iter()
            .filter(|l| {
                let text = l.get(4..).unwrap_or_default();
                !text.to_ascii_uppercase().starts_with(b"STARTTLS")
            })
            .collect();
        if kept.len() < before {
            state.stripped.fetch_add(1, Ordering::SeqCst);
        }
        let count = kept.len();
        for (i, l) in kept.iter_mut().enumerate() {
            if l.len() > 3 {
                l[3] = if i + 1 == count { b' ' } else { b'-' };
            }
        }
        if to_client.send(kept.concat()).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_addresses_are_loopback_and_spread() {
        let ips: std::collections::HashSet<IpAddr> =
            (0..1000).map(|_| fresh_loopback_ip()).collect();
        assert!(ips.len() > 990, "{} distinct of 1000", ips.len());
        for ip in ips {
            let IpAddr::V4(v4) = ip else { panic!("v4") };
            let o = v4.octets();
            assert_eq!(o[0], 127);
            assert_ne!(o[1], 0);
            assert!(o[3] != 0 && o[3] != 255);
        }
    }

    #[test]
    fn paths_are_read_without_brackets_and_parameters() {
        assert_eq!(
            path_of("MAIL FROM:<a@b> SIZE=10", "MAIL FROM:").as_deref(),
            Some("a@b")
        );
        assert_eq!(path_of("mail from:<>", "MAIL FROM:").as_deref(), Some(""));
        assert_eq!(
            path_of("RCPT TO: <c@d>", "RCPT TO:").as_deref(),
            Some("c@d")
        );
        assert_eq!(path_of("RCPT TO:c@d", "RCPT TO:"), None);
        assert_eq!(path_of("RC", "RCPT TO:"), None);
    }
}

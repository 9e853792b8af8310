//! The SMTP listeners (SPEC §5): submission on 587 with STARTTLS (RFC 3207,
//! RFC 6409) and 465 with implicit TLS (RFC 8314), SMTP AUTH only over TLS
//! (RFC 4954); the inbound MX on 25 with STARTTLS, for the local domains
//! and the secure domain (SPEC §4); never an open relay, and the security
//! floor of SPEC §7 on every one of them.
//!
//! The shape is mini-redis's: one accept loop per bound address, a
//! semaphore for the connection limit, a shutdown signal passed down to
//! every session. Each connection is a [`Session`] (a state machine without
//! I/O, where every SMTP rule lives) run by a thin driver (`conn.rs`).
//! Accepted mail is written to the [`Spool`] and fsynced, then queued in the
//! store, and only then answered with `250` (`docs/relay-interfaces.md`).
//!
//! Parts, each with its own tests:
//! * [`framing`]: CRLF lines, bare CR/LF flagged, line limits;
//! * [`command`]: [`parse_command`] (pure, for fuzzing);
//! * [`sasl`]: base64 and AUTH PLAIN;
//! * [`session`]: the dialogue;
//! * [`reply`]: replies and [`Refusal`], the typed "no" with its SMTP code;
//! * [`trace`]: our `Received:` header with the TLS facts;
//! * [`tls`]: the rustls configuration and the generated default identity.
//!
//! ```no_run
//! # async fn run(config: mailtls_relay::RelayConfig, store: mailtls_store::SqlStore) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use mailtls_relay::server::Listeners;
//! use mailtls_relay::spool::Spool;
//! let spool = Spool::open(&config.data_dir)?;
//! let wake = Arc::new(tokio::sync::Notify::new());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let running = Listeners::start(&config, store, spool, wake, shutdown.clone()).await?;
//! println!("submission on {:?}", running.submission_addrs());
//! shutdown.cancel();
//! running.wait().await;
//! # Ok(()) }
//! ```

pub mod command;
mod conn;
pub mod framing;
pub mod headers;
pub mod reply;
pub mod sasl;
pub mod session;
pub mod tls;
pub mod trace;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailtls_store::{Queue, Settings, TlsMemory, Users};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use command::{Command, parse_command};
pub use reply::{Refusal, Reply};
pub use session::{Role, Session, SessionConfig};
pub use tls::{TlsSetupError, generate_self_signed, server_tls_config};

use crate::config::RelayConfig;
use crate::spool::Spool;
use conn::Shared;

/// Client errors in one session before `421` and close (Postfix's
/// `smtpd_hard_error_limit` is 20; submission clients are not that lost).
pub const MAX_ERRORS: usize = 10;
/// Failed AUTH attempts in one session before `421` and close.
pub const MAX_AUTH_FAILURES: usize = 3;
/// Pause before a `535` (slows password guessing).
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// What the listeners need of the store: accounts, the queue, the
/// Encrypted Sending settings and the TLS memory (SPEC §4's checks).
pub trait ServerStore:
    Users + Queue + Settings + TlsMemory + Clone + Send + Sync + 'static
{
}

impl<S> ServerStore for S where
    S: Users + Queue + Settings + TlsMemory + Clone + Send + Sync + 'static
{
}

/// The SMTP listeners; see [`Listeners::start`].
#[derive(Debug)]
pub struct Listeners;

impl Listeners {
    /// Binds every `submission_listen` (plaintext, STARTTLS offered),
    /// `submission_tls_listen` (implicit TLS) and `inbound_listen` (the MX,
    /// STARTTLS offered) address and starts serving.
    /// Returns once all are bound; fails if one cannot be bound or the TLS
    /// identity does not load. Serving stops when `shutdown` is cancelled:
    /// no new connections, and open sessions get `421 4.3.2` at their next
    /// read. `wake` is notified after each queued message.
    pub async fn start<S>(
        config: &RelayConfig,
        store: S,
        spool: Spool,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> io::Result<RunningListeners>
    where
        S: ServerStore,
    {
        let tls = server_tls_config(&config.tls).map_err(io::Error::other)?;
        let acceptor = TlsAcceptor::from(tls);
        let shared = |role: Role| {
            Arc::new(Shared {
                session: Arc::new(SessionConfig {
                    hostname: config.hostname.clone(),
                    max_message_size: config.max_message_size,
                    max_recipients: config.max_recipients,
                    max_errors: MAX_ERRORS,
                    max_auth_failures: MAX_AUTH_FAILURES,
                    auth_failure_delay: AUTH_FAILURE_DELAY,
                    role,
                    local_domains: config.local_domains.clone(),
                    secure_domain: config.secure_domain.clone(),
                }),
                store: store.clone(),
                spool: spool.clone(),
                wake: wake.clone(),
                acceptor: acceptor.clone(),
                idle_timeout: config.idle_timeout,
                // The MX takes mail for us from anyone; trust only matters
                // for relaying, which is submission's job.
                trusted: match role {
                    Role::Submission => config.trusted_networks.clone(),
                    Role::Inbound => Vec::new(),
                },
                shutdown: shutdown.clone(),
            })
        };
        let submission = shared(Role::Submission);
        let inbound = shared(Role::Inbound);
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let tracker = TaskTracker::new();
        let mut running = RunningListeners {
            plain: Vec::new(),
            implicit: Vec::new(),
            inbound: Vec::new(),
            tracker: tracker.clone(),
        };
        let mut bound = Vec::new();
        for (addrs, implicit_tls, shared) in [
            (&config.submission_listen, false, &submission),
            (&config.submission_tls_listen, true, &submission),
            (&config.inbound_listen, false, &inbound),
        ] {
            for addr in addrs {
                let listener = TcpListener::bind(addr).await?;
                let local = listener.local_addr()?;
                let role = shared.session.role;
                info!(addr = %local, implicit_tls, ?role, "SMTP listening");
                match (role, implicit_tls) {
                    (Role::Inbound, _) => running.inbound.push(local),
                    (Role::Submission, true) => running.implicit.push(local),
                    (Role::Submission, false) => running.plain.push(local),
                }
                bound.push((listener, implicit_tls, shared.clone()));
            }
        }
        for (listener, implicit_tls, shared) in bound {
            tracker.spawn(accept_loop(
                listener,
                implicit_tls,
                shared,
                limit.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        tracker.close();
        Ok(running)
    }
}

/// Listeners that are serving.
#[derive(Debug)]
pub struct RunningListeners {
    plain: Vec<SocketAddr>,
    implicit: Vec<SocketAddr>,
    inbound: Vec<SocketAddr>,
    tracker: TaskTracker,
}

impl RunningListeners {
    /// The bound STARTTLS submission addresses (real ports when configured
    /// with port 0), in configuration order.
    pub fn submission_addrs(&self) -> &[SocketAddr] {
        &self.plain
    }

    /// The bound implicit-TLS submission addresses.
    pub fn submission_tls_addrs(&self) -> &[SocketAddr] {
        &self.implicit
    }

    /// The bound inbound MX addresses.
    pub fn inbound_addrs(&self) -> &[SocketAddr] {
        &self.inbound
    }

    /// Every bound address: submission STARTTLS, implicit TLS, inbound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.plain
            .iter()
            .chain(&self.implicit)
            .chain(&self.inbound)
            .copied()
            .collect()
    }

    /// Waits until the listeners and all their sessions have ended (after
    /// the shutdown signal).
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}

async fn accept_loop<S>(
    listener: TcpListener,
    implicit_tls: bool,
    shared: Arc<Shared<S>>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) where
    S: ServerStore,
{
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refuse_busy(&tcp, peer, implicit_tls);
            continue;
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            conn::serve(shared, tcp, peer, implicit_tls).await;
            drop(permit);
        });
    }
}

/// Over the connection limit: one `421` line without waiting, then close.
/// On implicit TLS there is no cleartext to say it in; just close.
fn refuse_busy(tcp: &TcpStream, peer: SocketAddr, implicit_tls: bool) {
    warn!(%peer, "connection limit reached; refusing");
    if !implicit_tls {
        let _ = tcp.try_write(&Refusal::TooManyConnections.reply().to_wire());
    }
}

//! # mailtls-relay: the outbound relay
//!
//! Mail that users submit leaves through here, and the relay decides per
//! recipient domain, before a byte of the message is sent, how secure the
//! connection must be (SPEC §2, decided by `mailtls_core::policy`), and keeps
//! that promise. Like Postfix, it is small parts that each own one job:
//!
//! * [`server`]: the SMTP listeners — submission (587 STARTTLS, 465
//!   implicit TLS) and the inbound MX (25): SMTP sessions, AUTH, the secure
//!   alias's rules (SPEC §4), limits, the security floor of SPEC §7;
//!   accepted mail goes to the [`spool`] and the queue before the `250`.
//! * [`spool`]: message bodies on disk, fsynced (a `250` is a promise).
//! * [`queue`]: the scheduler: which messages are due, leases, retries with
//!   backoff, the queue lifetime.
//! * [`delivery`]: one delivery attempt to one recipient domain: MX, TLSA,
//!   the TLS memory, the requirement, STARTTLS, the decision, the SMTP
//!   transaction, what is recorded.
//! * [`bounce`]: delivery status notifications (RFC 3464).
//! * [`local`]: inbound mail for our own users into their mail store: a
//!   Maildir per user under the data directory, or LMTP (RFC 2033).
//! * [`config`]: what the relay needs, validated.

pub mod bounce;
pub mod config;
pub mod date;
pub mod delivery;
pub mod local;
pub mod queue;
pub mod server;
pub mod spool;

pub use config::RelayConfig;

use std::net::SocketAddr;
use std::sync::Arc;

use mailtls_dns::MailResolver;
use mailtls_tls::TlsClient;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A running relay: the listeners and the queue runner, sharing one spool,
/// one store and one wake-up signal (the server wakes the runner after
/// queueing a message).
pub struct Relay {
    listeners: server::RunningListeners,
    runner: queue::QueueHandle,
    shutdown: CancellationToken,
}

impl Relay {
    /// Opens the spool, binds every listener, and starts the queue runner.
    /// Returns once every address is bound.
    pub async fn start<S>(
        config: RelayConfig,
        store: S,
        resolver: MailResolver,
        tls: TlsClient,
    ) -> std::io::Result<Relay>
    where
        S: server::ServerStore,
    {
        let spool = spool::Spool::open(&config.data_dir)?;
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let listeners = server::Listeners::start(
            &config,
            store.clone(),
            spool.clone(),
            wake.clone(),
            shutdown.clone(),
        )
        .await?;
        let runner = queue::QueueRunner::start(
            Arc::new(config),
            store,
            spool,
            resolver,
            tls,
            wake,
            shutdown.clone(),
        );
        Ok(Relay {
            listeners,
            runner,
            shutdown,
        })
    }

    /// The bound STARTTLS submission addresses.
    pub fn submission_addrs(&self) -> &[SocketAddr] {
        self.listeners.submission_addrs()
    }

    /// The bound implicit-TLS submission addresses.
    pub fn submission_tls_addrs(&self) -> &[SocketAddr] {
        self.listeners.submission_tls_addrs()
    }

    /// The bound inbound MX addresses.
    pub fn inbound_addrs(&self) -> &[SocketAddr] {
        self.listeners.inbound_addrs()
    }

    /// Stops accepting, tells open sessions `421`, lets deliveries in
    /// progress finish their step, and waits for everything to end.
    /// Nothing accepted is lost: the queue is on disk.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.listeners.wait().await;
        self.runner.join().await;
    }
}

//! # mailtls-web: the check page, the compose view, the settings, the JSON API
//!
//! SPEC §1 and §5 (issue #5): a person sees the transport security of each
//! recipient while they write, and a user switches "Encrypted Sending"
//! (SPEC §4) on in a signed-in settings page. Webmail systems use the same
//! answers through the JSON API under `/api/v1/`, described by the OpenAPI
//! document in this crate (`openapi.json`, served at
//! `/api/v1/openapi.json`).
//!
//! This crate decides nothing about transport security itself: verdicts
//! come from `mailtls_check` (and the TLS memory it records into, SPEC §3),
//! sending rules from `mailtls_core::sending`. It only answers quickly
//! (memory first, [`answer`]), learns in the background ([`probes`]), and
//! keeps the public side safe (SPEC §7): per-client rate limits
//! ([`limit`]), size and time limits on every input, escaped HTML
//! ([`html`]), sessions with CSRF tokens ([`session`]).
//!
//! * [`routes`] — the router, the middleware (limits, headers), [`serve`].
//! * [`api`] — `/api/v1/…` handlers.
//! * [`pages`] — `/`, `/compose`, `/settings`, and the embedded assets.

pub mod answer;
pub mod api;
pub mod html;
pub mod limit;
pub mod pages;
pub mod probes;
pub mod routes;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use mailtls_check::Checker;
use mailtls_store::SqlStore;
use tokio::sync::watch;

pub use routes::{WebServer, router, serve};

/// What the web side needs to know from the operator (`[web]` in the
/// configuration file; the defaults are those of [`WebConfig::default`]).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The secure alias domain (`[smtp.inbound] secure_domain`), shown on
    /// the settings page; `None`: the alias cannot be shown.
    pub secure_domain: Option<String>,
    /// Addresses per minute one client may have checked (the public check,
    /// SPEC §7); a burst of this many is allowed. Default 60.
    pub check_rate_per_minute: u32,
    /// Failed sign-ins per minute one client may make. Default 5.
    pub signin_failures_per_minute: u32,
    /// Live probes running at once (each may take up to the probe time
    /// limit). Default 8.
    pub probe_concurrency: usize,
    /// Addresses in one `GET /api/v1/check` or event stream. Default 20.
    pub max_addresses: usize,
    /// How long a handler may take before it is answered `503`. Default 30 s.
    pub handler_timeout: Duration,
    /// How long the check page waits for a live probe before it shows
    /// `SSL ?` and refreshes itself. Default 20 s.
    pub page_probe_wait: Duration,
    /// How long an event stream stays open. Default 120 s.
    pub event_stream_lifetime: Duration,
    /// Connections open at once; more wait in the kernel's backlog.
    /// Default 1024.
    pub max_connections: usize,
    /// Mark cookies `Secure`: set this when the pages are served over
    /// HTTPS (by a TLS-terminating proxy in front). The default listener is
    /// loopback HTTP, where browsers would drop `Secure` cookies. Default
    /// false.
    pub secure_cookies: bool,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            secure_domain: None,
            check_rate_per_minute: 60,
            signin_failures_per_minute: 5,
            probe_concurrency: 8,
            max_addresses: 20,
            handler_timeout: Duration::from_secs(30),
            page_probe_wait: Duration::from_secs(20),
            event_stream_lifetime: Duration::from_secs(120),
            max_connections: 1024,
            secure_cookies: false,
        }
    }
}

/// The shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
    /// Becomes true when the server shuts down (event streams end then).
    shutdown: watch::Receiver<bool>,
}

struct AppInner {
    config: WebConfig,
    store: SqlStore,
    probes: probes::Probes,
    check_limit: limit::RateLimiter,
    signin_limit: limit::RateLimiter,
    sessions: session::Sessions,
    /// Keeps the default shutdown channel open: an App that no server
    /// owns never shuts down.
    _never: watch::Sender<bool>,
}

impl App {
    /// The state for a checker (whose configuration says whether private
    /// addresses may be probed) and a store.
    pub fn new(checker: Checker, store: SqlStore, config: WebConfig) -> App {
        let (never, shutdown) = watch::channel(false);
        App {
            shutdown,
            inner: Arc::new(AppInner {
                probes: probes::Probes::new(checker, store.clone(), config.probe_concurrency),
                check_limit: limit::RateLimiter::per_minute(config.check_rate_per_minute),
                signin_limit: limit::RateLimiter::per_minute(config.signin_failures_per_minute),
                sessions: session::Sessions::default(),
                store,
                config,
                _never: never,
            }),
        }
    }

    /// The same state, shutting down when `shutdown` becomes true.
    pub(crate) fn with_shutdown(&self, shutdown: watch::Receiver<bool>) -> App {
        App {
            inner: Arc::clone(&self.inner),
            shutdown,
        }
    }

    /// Resolves when the server shuts down.
    pub(crate) fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        routes::until_true(self.shutdown.clone())
    }

    /// The operator's settings.
    pub fn config(&self) -> &WebConfig {
        &self.inner.config
    }

    pub(crate) fn store(&self) -> &SqlStore {
        &self.inner.store
    }

    pub(crate) fn probes(&self) -> &probes::Probes {
        &self.inner.probes
    }

    pub(crate) fn check_limit(&self) -> &limit::RateLimiter {
        &self.inner.check_limit
    }

    pub(crate) fn signin_limit(&self) -> &limit::RateLimiter {
        &self.inner.signin_limit
    }

    pub(crate) fn sessions(&self) -> &session::Sessions {
        &self.inner.sessions
    }
}

//! One delivery attempt of one message to one recipient domain: where the
//! mail goes, what the connection must be, and whether the message may be
//! sent on the connection we got (SPEC §2).
//!
//! The order of events, each step a small function:
//!
//! 1. The route: the MX RRset (RFC 5321 §5.1). NXDOMAIN fails
//!    with `5.1.2`; a null MX (RFC 7505 §4.1) with `550 5.1.10`; a DNS
//!    failure or a bogus answer defers; no MX at all means the implicit MX
//!    (the domain itself).
//! 2. For each MX host in preference order: its addresses, its TLSA state
//!    (RFC 7672 §2.2), what the TLS memory holds for the host and for the
//!    domain, and `mailtls_core::policy::requirement`. A host the policy
//!    refuses is skipped (MX fallback).
//! 3. For each address: connect, banner, EHLO, STARTTLS when offered (it
//!    is always tried), the TLS handshake (with the TLSA records when DANE
//!    applies), EHLO again, then `mailtls_core::policy::decide`, and the
//!    observation recorded for the host and the domain
//!    (`mailtls_core::policy::observation`; a drop raises an alert).
//! 4. Only on `Decision::Send` does the SMTP transaction start
//!    (`mailtls_smtp::transaction`): no byte of the message goes out
//!    before. `RetryPlaintext` (opportunistic only, RFC 7435 §3) opens a new
//!    connection without STARTTLS; `Defer` moves on to the next address or
//!    host.
//!
//! The outcome for the recipients is that of the last host tried. Nothing
//! about TLS is decided here: this module gathers facts and acts on the
//! core's decisions (the counter-example is a delivery function that decides
//! between network reads).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailtls_core::SmtpStatus;
use mailtls_core::dns::{Lookup, MAX_ADDRESSES_PER_HOST};
use mailtls_core::level::TlsLevel;
use mailtls_core::memory::{MemoryEntry, MemoryKey, Observation, REFRESH_WINDOW, is_refresh_only};
use mailtls_core::policy::{
    self, Decision, Deferral, HostPolicyFacts, Requirement, Route, TlsOutcome,
};
use mailtls_core::probe::{DaneCheck, TlsFacts, is_restricted_address};
use mailtls_core::sending::SenderRequirement;
use mailtls_dns::MailResolver;
use mailtls_smtp::transaction::{Envelope, RecipientResult, StepTimes, send_mail};
use mailtls_smtp::{Extensions, ReplyCode, SmtpClient, SmtpError, Starttls, Timeouts};
use mailtls_store::TlsMemory;
use mailtls_store::sql::bounded;
use mailtls_tls::{DaneParams, HandshakeParams, TlsClient};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::config::RelayConfig;

/// RFC 5321 §4.5.3.2.1: the client waits 5 minutes for the greeting.
const BANNER_TIME: Duration = Duration::from_secs(5 * 60);
/// Longest wait for the reply to QUIT.
const QUIT_TIME: Duration = Duration::from_secs(5);
/// RFC 3463 X.4.2 "Bad connection".
const BAD_CONNECTION: SmtpStatus = SmtpStatus::new(451, 4, 4, 2);
/// RFC 3463 X.3.0: a local problem (the store).
const LOCAL_TEMP: SmtpStatus = SmtpStatus::new(451, 4, 3, 0);

/// How deliveries talk to remote servers. Built from [`RelayConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// EHLO name.
    pub helo_name: String,
    /// Port of MX hosts (25).
    pub port: u16,
    /// Whether private, loopback and link-local addresses may be used.
    pub allow_private: bool,
    /// Longest wait for one step (connect, each reply, the handshake); the
    /// RFC 5321 §4.5.3.2 times are capped by it.
    pub step_limit: Duration,
}

impl DeliverySettings {
    /// The settings the relay's configuration implies.
    pub fn from_config(config: &RelayConfig) -> DeliverySettings {
        DeliverySettings {
            helo_name: config.hostname.clone(),
            port: config.smtp_port,
            allow_private: config.allow_private,
            step_limit: config.smtp_timeout,
        }
    }
}

/// What one domain's share of a message is.
#[derive(Debug, Clone, Copy)]
pub struct DomainJob<'a> {
    /// Queue id, for the log.
    pub message_id: &'a str,
    /// The recipient domain (lower case).
    pub domain: &'a str,
    /// Envelope sender; `""` for `<>`.
    pub sender: &'a str,
    /// The pending recipients at this domain.
    pub recipients: &'a [String],
    /// What the sender's Encrypted Sending requires (SPEC §4).
    pub sender_requirement: Option<SenderRequirement>,
    /// The message as spooled.
    pub message: &'a [u8],
}

/// What became of one recipient in this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The address.
    pub recipient: String,
    /// Delivered, deferred or failed.
    pub outcome: Outcome,
    /// The MX host that gave the outcome, when one was reached.
    pub remote_mta: Option<String>,
}

/// The outcome of an attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server accepted it.
    Delivered {
        /// Host, address, TLS facts and the server's reply.
        detail: String,
    },
    /// Try again later.
    Deferred {
        /// A 4xx status.
        status: SmtpStatus,
        /// Why, in words.
        reason: String,
    },
    /// Give up: the sender gets a DSN.
    Failed {
        /// A 5xx status.
        status: SmtpStatus,
        /// Why, in words, or the server's reply.
        reason: String,
        /// `reason` is a remote server's reply.
        remote_reply: bool,
    },
}

impl Outcome {
    fn from_deferral(deferral: Deferral) -> Outcome {
        if deferral.status.is_temporary() {
            Outcome::Deferred {
                status: deferral.status,
                reason: deferral.reason,
            }
        } else {
            Outcome::Failed {
                status: deferral.status,
                reason: deferral.reason,
                remote_reply: false,
            }
        }
    }
}

/// Delivers messages. Cheap to clone when `M` is.
#[derive(Clone)]
pub struct Deliverer<M> {
    resolver: MailResolver,
    tls: TlsClient,
    memory: M,
    settings: DeliverySettings,
    /// The last observation written per key (without an alert), so that a
    /// busy relay does not rewrite an unchanged one every message
    /// (`core::memory::is_refresh_only`).
    written: Arc<Mutex<HashMap<MemoryKey, Observation>>>,
}

/// Keys remembered in [`Deliverer`]'s write cache before it starts afresh.
const WRITTEN_CACHE_LIMIT: usize = 10_000;

/// How trying one host ended.
enum HostEnd {
    /// A transaction happened: these are the recipients' outcomes.
    Done(Vec<RecipientReport>),
    /// Nothing sent; the next host may be tried.
    Skipped(Deferral),
}

/// How one connection ended.
enum SessionEnd {
    Done(Vec<RecipientReport>),
    RetryPlaintext,
    Failed(Deferral),
}

/// A session after EHLO (and STARTTLS, if it worked), ready for the decision.
enum Session {
    Plain(SmtpClient<TcpStream>, Extensions),
    Tls(SmtpClient<SslStream<TcpStream>>, Extensions, TlsFacts),
    /// The handshake failed; nothing to send on.
    Broken,
}

impl<M: TlsMemory + Sync> Deliverer<M> {
    /// A deliverer over the shared resolver, TLS client and TLS memory.
    pub fn new(
        resolver: MailResolver,
        tls: TlsClient,
        memory: M,
        settings: DeliverySettings,
    ) -> Deliverer<M> {
        Deliverer {
            resolver,
            tls,
            memory,
            settings,
            written: Arc::default(),
        }
    }

    /// One attempt for one domain's pending recipients: one report per
    /// recipient, in order.
    pub async fn deliver_domain(&self, job: &DomainJob<'_>) -> Vec<RecipientReport> {
        let route = match self.route(job.domain).await {
            Ok(route) => route,
            Err(deferral) => {
                tracing::info!(message = job.message_id, domain = job.domain, status = %deferral.status, reason = %deferral.reason, "no route");
                return reports(job, &Outcome::from_deferral(deferral), None);
            }
        };
        let mut last = Deferral {
            status: SmtpStatus::UNREACHABLE_TEMP,
            reason: "no MX host could be tried".into(),
        };
        let mut last_host = None;
        for host in &route.hosts {
            match self.try_host(job, host, &route).await {
                HostEnd::Done(reports) => return reports,
                HostEnd::Skipped(deferral) => {
                    last = deferral;
                    last_host = Some(host.clone());
                }
            }
        }
        reports(job, &Outcome::from_deferral(last), last_host)
    }

    /// Step 1: the MX look-up, judged by `core::policy::route`.
    async fn route(&self, domain: &str) -> Result<Route, Deferral> {
        policy::route(domain, &self.resolver.mx(domain).await)
    }

    /// Step 2 and 3 for one host.
    async fn try_host(&self, job: &DomainJob<'_>, host: &str, route: &Route) -> HostEnd {
        let addresses = self.resolver.addresses(host).await;
        if route.mx_dnssec.is_none() && matches!(addresses, Lookup::NoRecords { .. }) {
            // RFC 5321 §5.1: no MX and no address: the domain takes no mail.
            return HostEnd::Skipped(Deferral {
                status: SmtpStatus::NO_ROUTE,
                reason: format!("{host} has neither MX nor address records"),
            });
        }
        let requirement = match self.requirement(job, host, route, &addresses).await {
            Ok(requirement) => requirement,
            Err(deferral) => {
                tracing::info!(message = job.message_id, domain = job.domain, host, status = %deferral.status, reason = %deferral.reason, "host not usable");
                return HostEnd::Skipped(deferral);
            }
        };
        let mut last = Deferral {
            status: SmtpStatus::UNREACHABLE_TEMP,
            reason: format!("{host}: no address could be tried"),
        };
        for &ip in addresses.records().iter().take(MAX_ADDRESSES_PER_HOST) {
            if is_restricted_address(ip) && !self.settings.allow_private {
                last = Deferral {
                    status: SmtpStatus::UNREACHABLE_TEMP,
                    reason: format!("{host} [{ip}]: private address, not allowed (SPEC §7)"),
                };
                continue;
            }
            let end = match self.session(job, host, ip, &requirement, true).await {
                SessionEnd::RetryPlaintext => {
                    self.session(job, host, ip, &requirement, false).await
                }
                end => end,
            };
            match end {
                SessionEnd::Done(reports) => return HostEnd::Done(reports),
                SessionEnd::Failed(deferral) => last = deferral,
                // Invariant: the plaintext retry never asks for another one
                // (it does not try STARTTLS); treat it as a failure anyway.
                SessionEnd::RetryPlaintext => {
                    last = Deferral {
                        status: BAD_CONNECTION,
                        reason: format!("{host} [{ip}]: plaintext retry failed"),
                    }
                }
            }
        }
        HostEnd::Skipped(last)
    }

    /// The SPEC §2 requirement for a host, from the facts (core decides).
    async fn requirement(
        &self,
        job: &DomainJob<'_>,
        host: &str,
        route: &Route,
        addresses: &Lookup<IpAddr>,
    ) -> Result<Requirement, Deferral> {
        let tlsa = self
            .resolver
            .host_tlsa(host, route.mx_dnssec, addresses)
            .await;
        let host_memory = self.memory_entry(&MemoryKey::host(host)).await?;
        let domain_memory = self.memory_entry(&MemoryKey::domain(job.domain)).await?;
        policy::requirement(&HostPolicyFacts {
            addresses,
            tlsa: &tlsa,
            host_memory: host_memory.as_ref(),
            domain_memory: domain_memory.as_ref(),
            sender: job.sender_requirement.as_ref(),
        })
    }

    /// A memory entry; an unreadable memory defers (fail closed: it might
    /// say TLS is mandatory).
    async fn memory_entry(&self, key: &MemoryKey) -> Result<Option<MemoryEntry>, Deferral> {
        bounded(self.memory.entry(key)).await.map_err(|e| Deferral {
            status: LOCAL_TEMP,
            reason: format!("the TLS memory for {key} cannot be read: {e}"),
        })
    }

    /// Step 3 and 4 on one connection. With `try_tls` false (the RFC 7435
    /// plaintext retry) STARTTLS is not sent and nothing is recorded.
    async fn session(
        &self,
        job: &DomainJob<'_>,
        host: &str,
        ip: IpAddr,
        requirement: &Requirement,
        try_tls: bool,
    ) -> SessionEnd {
        let mut client = match self.open(ip).await {
            Ok(client) => client,
            Err(deferral) => {
                log_attempt(job, host, ip, None, "not connected", &deferral.reason);
                return SessionEnd::Failed(deferral);
            }
        };
        let extensions = match self.greet(&mut client, host, ip).await {
            Ok(extensions) => extensions,
            Err(deferral) => {
                log_attempt(job, host, ip, None, "no session", &deferral.reason);
                quit(client).await;
                return SessionEnd::Failed(deferral);
            }
        };
        let (session, tls_outcome) = if try_tls {
            self.starttls(client, extensions, host, requirement).await
        } else {
            // The RFC 7435 retry: the policy already allowed plaintext for
            // this (opportunistic) host; asking it again with "no STARTTLS"
            // keeps the decision in core.
            (Session::Plain(client, extensions), TlsExchange::NoStarttls)
        };
        let outcome = tls_outcome.as_policy(&session);
        let decision = policy::decide(requirement, job.sender_requirement.as_ref(), outcome);
        if try_tls {
            self.remember(job, host, outcome).await;
        }
        let facts = match &session {
            Session::Tls(_, _, facts) => Some(facts),
            _ => None,
        };
        match decision {
            Decision::Send(level) => {
                log_attempt(
                    job,
                    host,
                    ip,
                    facts,
                    &format!("send ({})", level_name(level)),
                    "",
                );
                self.transaction(job, host, ip, session, level).await
            }
            Decision::RetryPlaintext => {
                log_attempt(
                    job,
                    host,
                    ip,
                    facts,
                    "retry in plaintext (RFC 7435)",
                    &tls_outcome.text(),
                );
                close(session).await;
                SessionEnd::RetryPlaintext
            }
            Decision::Defer(deferral) => {
                log_attempt(job, host, ip, facts, "defer", &deferral.reason);
                close(session).await;
                SessionEnd::Failed(Deferral {
                    status: deferral.status,
                    reason: format!("{host} [{ip}]: {}", deferral.reason),
                })
            }
        }
    }

    /// TCP connect within the step limit.
    async fn open(&self, ip: IpAddr) -> Result<SmtpClient<TcpStream>, Deferral> {
        let target = SocketAddr::new(ip, self.settings.port);
        let limit = self.settings.step_limit;
        match tokio::time::timeout(limit, TcpStream::connect(target)).await {
            Ok(Ok(tcp)) => Ok(SmtpClient::new(
                tcp,
                Timeouts {
                    step: limit,
                    deadline: None,
                },
            )),
            Ok(Err(e)) => Err(Deferral {
                status: SmtpStatus::UNREACHABLE_TEMP,
                reason: format!("cannot connect to {target}: {e}"),
            }),
            Err(_elapsed) => Err(Deferral {
                status: SmtpStatus::UNREACHABLE_TEMP,
                reason: format!("connecting to {target} timed out after {limit:?}"),
            }),
        }
    }

    /// Banner and EHLO (HELO when EHLO is not understood, RFC 5321 §3.2).
    async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut SmtpClient<S>,
        host: &str,
        ip: IpAddr,
    ) -> Result<Extensions, Deferral> {
        let failed = |what: &str, e: &SmtpError| Deferral {
            status: BAD_CONNECTION,
            reason: format!("{host} [{ip}]: {what}: {e}"),
        };
        let step = client.timeouts();
        client.set_timeouts(Timeouts {
            step: BANNER_TIME.min(self.settings.step_limit),
            ..step
        });
        let banner = client
            .read_reply()
            .await
            .map_err(|e| failed("banner", &e))?;
        client.set_timeouts(step);
        if banner.code() != ReplyCode::SERVICE_READY {
            return Err(Deferral {
                status: SmtpStatus::UNREACHABLE_TEMP,
                reason: format!("{host} [{ip}] refuses service: {banner}"),
            });
        }
        self.ehlo(client, host, ip).await
    }

    async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut SmtpClient<S>,
        host: &str,
        ip: IpAddr,
    ) -> Result<Extensions, Deferral> {
        let failed = |what: &str, e: &SmtpError| Deferral {
            status: BAD_CONNECTION,
            reason: format!("{host} [{ip}]: {what}: {e}"),
        };
        let name = &self.settings.helo_name;
        let reply = client
            .command(&format!("EHLO {name}"))
            .await
            .map_err(|e| failed("EHLO", &e))?;
        if reply.code() == ReplyCode::OK {
            return Ok(Extensions::from_reply(&reply));
        }
        if !reply.code().is_permanent() {
            return Err(Deferral {
                status: BAD_CONNECTION,
                reason: format!("{host} [{ip}] refused EHLO: {reply}"),
            });
        }
        let helo = client
            .command(&format!("HELO {name}"))
            .await
            .map_err(|e| failed("HELO", &e))?;
        if helo.code() == ReplyCode::OK {
            Ok(Extensions::default())
        } else {
            Err(Deferral {
                status: BAD_CONNECTION,
                reason: format!("{host} [{ip}] refused EHLO ({reply}) and HELO ({helo})"),
            })
        }
    }

    /// STARTTLS when offered (RFC 3207), the handshake, EHLO inside TLS.
    async fn starttls(
        &self,
        client: SmtpClient<TcpStream>,
        extensions: Extensions,
        host: &str,
        requirement: &Requirement,
    ) -> (Session, TlsExchange) {
        if !extensions.starttls() {
            return (Session::Plain(client, extensions), TlsExchange::NoStarttls);
        }
        let (stream, timeouts) = match client.starttls().await {
            Err(e) => {
                return (
                    Session::Broken,
                    TlsExchange::HandshakeFailed(format!("STARTTLS: {e}")),
                );
            }
            Ok(Starttls::Refused { reply, client }) => {
                return (
                    Session::Plain(client, extensions),
                    TlsExchange::StarttlsRefused(reply.to_string()),
                );
            }
            Ok(Starttls::Ready {
                stream,
                discarded,
                timeouts,
            }) => {
                if discarded > 0 {
                    tracing::warn!(
                        host,
                        octets = discarded,
                        "discarded plaintext pipelined after STARTTLS (CVE-2011-0411)"
                    );
                }
                (stream, timeouts)
            }
        };
        let dane = match requirement {
            Requirement::Dane {
                records,
                reference_names,
            } => Some(DaneParams {
                records: records.clone(),
                reference_names: reference_names.clone(),
            }),
            _ => None,
        };
        // RFC 7672 §8.1: SNI is the TLSA base domain with DANE.
        let server_name = dane
            .as_ref()
            .and_then(|d| d.reference_names.first().cloned())
            .unwrap_or_else(|| host.to_owned());
        let params = HandshakeParams { server_name, dane };
        let handshake = self.tls.handshake(stream, &params);
        let (tls_stream, facts) = match tokio::time::timeout(self.settings.step_limit, handshake)
            .await
        {
            Err(_elapsed) => {
                return (
                    Session::Broken,
                    TlsExchange::HandshakeFailed("TLS handshake timed out".into()),
                );
            }
            Ok(Err(e)) => return (Session::Broken, TlsExchange::HandshakeFailed(e.to_string())),
            Ok(Ok(done)) => done,
        };
        let mut client = SmtpClient::new(tls_stream, timeouts);
        // RFC 3207 §4.2: forget what was learned before TLS; EHLO again. No
        // answer means the session does not work (TLS 1.3 servers may reject
        // the client only after the handshake).
        match client
            .command(&format!("EHLO {}", self.settings.helo_name))
            .await
        {
            Ok(reply) if reply.code() == ReplyCode::OK => {
                let extensions = Extensions::from_reply(&reply);
                (Session::Tls(client, extensions, facts), TlsExchange::Tls)
            }
            Ok(reply) => (
                Session::Broken,
                TlsExchange::HandshakeFailed(format!("EHLO inside TLS refused: {reply}")),
            ),
            Err(e) => (
                Session::Broken,
                TlsExchange::HandshakeFailed(format!(
                    "TLS handshake completed ({}, {}) but EHLO inside TLS failed: {e}",
                    facts.version, facts.cipher
                )),
            ),
        }
    }

    /// SPEC §3: the observation for the host and the domain. A drop is an
    /// alert (kept by the store) and logged for the operator.
    async fn remember(&self, job: &DomainJob<'_>, host: &str, outcome: TlsOutcome<'_>) {
        let observation: Observation = policy::observation(outcome, unix_now());
        for key in [MemoryKey::host(host), MemoryKey::domain(job.domain)] {
            if self.written_recently(&key, &observation) {
                continue;
            }
            match self.memory.record(&key, &observation).await {
                Ok(Some(alert)) => tracing::warn!(
                    key = %alert.key,
                    best = ?alert.best_level,
                    observed = ?alert.observed,
                    detail = %alert.detail,
                    "TLS memory alert: possible downgrade attack"
                ),
                Ok(None) => self.note_written(key, observation.clone()),
                Err(e) => tracing::error!(%key, error = %e, "cannot record the TLS observation"),
            }
        }
    }

    fn written_recently(&self, key: &MemoryKey, observation: &Observation) -> bool {
        // A poisoned lock only loses the cache: write, as without it.
        self.written.lock().is_ok_and(|written| {
            written
                .get(key)
                .is_some_and(|previous| is_refresh_only(previous, observation, REFRESH_WINDOW))
        })
    }

    fn note_written(&self, key: MemoryKey, observation: Observation) {
        if let Ok(mut written) = self.written.lock() {
            if written.len() >= WRITTEN_CACHE_LIMIT {
                written.clear();
            }
            written.insert(key, observation);
        }
    }

    /// Step 4: the transaction, on a session the policy cleared.
    async fn transaction(
        &self,
        job: &DomainJob<'_>,
        host: &str,
        ip: IpAddr,
        session: Session,
        level: TlsLevel,
    ) -> SessionEnd {
        match session {
            Session::Plain(client, extensions) => {
                self.send(job, host, ip, client, &extensions, level, None)
                    .await
            }
            Session::Tls(client, extensions, facts) => {
                self.send(job, host, ip, client, &extensions, level, Some(&facts))
                    .await
            }
            // Invariant: the policy never says Send after a failed
            // handshake; should it, nothing is sent.
            Session::Broken => SessionEnd::Failed(Deferral {
                status: SmtpStatus::CRYPTO_FAILURE_TEMP,
                reason: format!("{host} [{ip}]: no usable session"),
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        job: &DomainJob<'_>,
        host: &str,
        ip: IpAddr,
        mut client: SmtpClient<S>,
        extensions: &Extensions,
        level: TlsLevel,
        facts: Option<&TlsFacts>,
    ) -> SessionEnd {
        let times = StepTimes::RFC5321.capped(self.settings.step_limit);
        let envelope = Envelope {
            sender: job.sender,
            recipients: job.recipients,
        };
        let results = send_mail(&mut client, extensions, &envelope, job.message, &times).await;
        let results = match results {
            Ok(results) => {
                quit(client).await;
                results
            }
            Err(e) => {
                log_attempt(job, host, ip, facts, "transaction failed", &e.to_string());
                return SessionEnd::Failed(Deferral {
                    status: e.status(),
                    reason: format!("{host} [{ip}]: {e}"),
                });
            }
        };
        let via = via(host, ip, level, facts);
        let reports = job
            .recipients
            .iter()
            .zip(results)
            .map(|(recipient, result)| {
                let outcome = match result {
                    RecipientResult::Delivered { reply } => Outcome::Delivered {
                        detail: format!("{via}: {reply}"),
                    },
                    RecipientResult::Temporary { status, reply } => Outcome::Deferred {
                        status,
                        reason: format!("{host} [{ip}] said: {reply}"),
                    },
                    RecipientResult::Permanent { status, reply } => Outcome::Failed {
                        status,
                        reason: reply,
                        remote_reply: true,
                    },
                };
                tracing::info!(message = job.message_id, recipient = %recipient, outcome = ?outcome, "recipient");
                RecipientReport {
                    recipient: recipient.clone(),
                    outcome,
                    remote_mta: Some(host.to_owned()),
                }
            })
            .collect();
        SessionEnd::Done(reports)
    }
}

/// What the STARTTLS exchange gave, owning its text (the policy's
/// [`TlsOutcome`] borrows).
enum TlsExchange {
    NoStarttls,
    StarttlsRefused(String),
    HandshakeFailed(String),
    Tls,
}

impl TlsExchange {
    fn as_policy<'a>(&'a self, session: &'a Session) -> TlsOutcome<'a> {
        match (self, session) {
            (TlsExchange::Tls, Session::Tls(_, _, facts)) => TlsOutcome::Tls(facts),
            (TlsExchange::NoStarttls, _) => TlsOutcome::NoStarttls,
            (TlsExchange::StarttlsRefused(reply), _) => TlsOutcome::StarttlsRefused(reply),
            (TlsExchange::HandshakeFailed(error), _) => TlsOutcome::HandshakeFailed(error),
            // Invariant: `Tls` is only paired with `Session::Tls`.
            (TlsExchange::Tls, _) => TlsOutcome::HandshakeFailed("no TLS session"),
        }
    }

    fn text(&self) -> String {
        match self {
            TlsExchange::NoStarttls => "STARTTLS not offered".into(),
            TlsExchange::StarttlsRefused(reply) => format!("STARTTLS refused: {reply}"),
            TlsExchange::HandshakeFailed(error) => error.clone(),
            TlsExchange::Tls => "TLS".into(),
        }
    }
}

/// One report per recipient of `job`, all with the same outcome.
fn reports(job: &DomainJob<'_>, outcome: &Outcome, host: Option<String>) -> Vec<RecipientReport> {
    job.recipients
        .iter()
        .map(|recipient| RecipientReport {
            recipient: recipient.clone(),
            outcome: outcome.clone(),
            remote_mta: host.clone(),
        })
        .collect()
}

/// Closes a session politely (QUIT) or, if broken, just drops it.
async fn close(session: Session) {
    match session {
        Session::Plain(client, _) => quit(client).await,
        Session::Tls(client, _, _) => quit(client).await,
        Session::Broken => {}
    }
}

async fn quit<S: AsyncRead + AsyncWrite + Unpin>(mut client: SmtpClient<S>) {
    client.set_timeouts(Timeouts {
        step: QUIT_TIME,
        deadline: None,
    });
    client.quit().await;
}

/// `mx.example [192.0.2.1] over TLSv1.3 (cipher), DANE` for the record.
fn via(host: &str, ip: IpAddr, level: TlsLevel, facts: Option<&TlsFacts>) -> String {
    match facts {
        Some(f) => format!(
            "{host} [{ip}] over {} ({}){}",
            f.version,
            f.cipher,
            if level == TlsLevel::Dane {
                ", DANE-authenticated"
            } else {
                ""
            }
        ),
        None => format!("{host} [{ip}] in plaintext"),
    }
}

fn level_name(level: TlsLevel) -> &'static str {
    match level {
        TlsLevel::None => "plaintext",
        TlsLevel::Tls => "TLS",
        TlsLevel::Dane => "DANE",
    }
}

/// One log line per attempt with the TLS facts (SPEC §2: every delivery
/// logs protocol and cipher).
fn log_attempt(
    job: &DomainJob<'_>,
    host: &str,
    ip: IpAddr,
    facts: Option<&TlsFacts>,
    decision: &str,
    detail: &str,
) {
    let dane = match facts.map(|f| &f.dane) {
        Some(DaneCheck::Matched { record, depth }) => {
            format!("matched record {record} at depth {depth}")
        }
        Some(DaneCheck::Mismatch { reason }) => format!("mismatch: {reason}"),
        Some(DaneCheck::NotAttempted) | None => "not attempted".to_owned(),
    };
    tracing::info!(
        message = job.message_id,
        domain = job.domain,
        host,
        address = %ip,
        protocol = facts.map_or("none", |f| f.version.as_str()),
        cipher = facts.map_or("none", |f| f.cipher.as_str()),
        dane = %dane,
        decision,
        detail,
        "delivery attempt"
    );
}

pub(crate) use mailtls_core::clock::unix_now;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_deferrals_become_failures() {
        let failed = Outcome::from_deferral(Deferral {
            status: SmtpStatus::NULL_MX,
            reason: "x".into(),
        });
        assert!(matches!(failed, Outcome::Failed { status, .. } if status == SmtpStatus::NULL_MX));
        let deferred = Outcome::from_deferral(Deferral {
            status: SmtpStatus::TLS_REQUIRED_TEMP,
            reason: "x".into(),
        });
        assert!(matches!(deferred, Outcome::Deferred { .. }));
    }
}

//! # mailtls-check: the TLS check
//!
//! Gathers the facts about a recipient domain (SPEC §1) at the edges: the MX
//! RRset, each host's addresses and TLSA records with their DNSSEC status
//! (`mailtls-dns`), and a STARTTLS probe of every address (`mailtls-smtp` on
//! `mailtls-tls`, the same client the relay uses, as Postfix's
//! posttls-finger reuses its smtp client). The verdict itself is
//! `mailtls_core::verdict`: this crate decides nothing.
//!
//! The TLS memory comes first (SPEC §1): [`Checker::check_remembering`]
//! answers from it when it knows the domain, and records every probe it
//! makes into it (SPEC §3: the memory is "recorded from every delivery and
//! every check probe").
//!
//! Limits: at most [`MAX_MX_HOSTS`] MX hosts and [`MAX_ADDRESSES_PER_HOST`]
//! addresses per host are probed, so a hostile MX RRset cannot turn a check
//! into a scan of someone else's network.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::join_all;
use mailtls_core::clock::unix_seconds;
use mailtls_core::dane::TlsaState;
use mailtls_core::dns::{DnssecStatus, Lookup, mx_hosts};
use mailtls_core::memory::{MemoryKey, Observation};
use mailtls_core::policy::probe_observation;
use mailtls_core::probe::AddressProbe;
use mailtls_core::{Address, CheckReport, Domain, DomainFacts, HostFacts, Target};
use mailtls_core::{Level, TlsLevel};
use mailtls_dns::{DnsConfig, MailResolver};
use mailtls_smtp::ProbeConfig;
use mailtls_store::TlsMemory;
use mailtls_tls::{DaneParams, TlsClient};
use tracing::warn;

pub use mailtls_core::dns::{MAX_ADDRESSES_PER_HOST, MAX_MX_HOSTS};

/// What the check needs to run.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// DNS resolver and validation mode.
    pub dns: DnsConfig,
    /// SMTP probe settings (EHLO name, time limit, port, private addresses).
    pub probe: ProbeConfig,
}

/// Why the check could not be set up. One line for a person.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckSetupError {
    /// The DNS side could not be set up.
    #[error("DNS: {0}")]
    Dns(#[from] mailtls_dns::DnsSetupError),
    /// The TLS client could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] mailtls_tls::TlsSetupError),
}

/// Runs checks. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: MailResolver,
    tls: TlsClient,
    probe: ProbeConfig,
}

impl Checker {
    /// Builds the resolver and the TLS client.
    pub fn new(config: &CheckConfig) -> Result<Checker, CheckSetupError> {
        Ok(Checker {
            inner: Arc::new(Inner {
                resolver: MailResolver::new(&config.dns)?,
                tls: TlsClient::new()?,
                probe: config.probe.clone(),
            }),
        })
    }

    /// Checks what a person typed: an address (`check`) or, with
    /// `accept_domains`, also a bare domain (`scan`). Invalid input gives a
    /// report with the `invalid_address` problem, never an error.
    pub async fn check_input(&self, input: &str, accept_domains: bool) -> CheckReport {
        let parsed = if accept_domains {
            Target::parse_address_or_domain(input)
        } else {
            Address::parse(input).map(Target::Address)
        };
        match parsed {
            Ok(target) => self.check(&target).await,
            Err(error) => CheckReport::invalid(input.trim(), &error, SystemTime::now()),
        }
    }

    /// Gathers the facts for the target's domain and judges them.
    pub async fn check(&self, target: &Target) -> CheckReport {
        let facts = self.gather(target.domain()).await;
        mailtls_core::verdict(target, &facts, SystemTime::now())
    }

    /// Answers from the TLS memory and/or a live probe, as `mode` says, and
    /// records what a probe learned. A store error is logged and the check
    /// goes on without the memory (the check must answer; the relay, not
    /// the check, fails closed).
    pub async fn check_remembering<M: TlsMemory + Sync>(
        &self,
        target: &Target,
        memory: &M,
        mode: MemoryUse,
    ) -> CheckReport {
        let key = MemoryKey::domain(target.domain().as_str());
        if mode != MemoryUse::Bypass {
            let entry = memory.entry(&key).await.unwrap_or_else(|e| {
                warn!(%key, error = %e, "TLS memory unavailable; answering without it");
                None
            });
            if entry.is_some() || mode == MemoryUse::Only {
                return CheckReport::from_memory(target, entry.as_ref(), SystemTime::now());
            }
        }
        let facts = self.gather(target.domain()).await;
        let now = SystemTime::now();
        let report = mailtls_core::verdict(target, &facts, now);
        record(memory, &facts, &report, unix_seconds(now)).await;
        report
    }

    /// Gathers DNS facts and probes every address of every MX host,
    /// concurrently.
    pub async fn gather(&self, domain: &Domain) -> DomainFacts {
        let resolver = &self.inner.resolver;
        let mx = resolver.mx(domain.as_str()).await;
        let (hosts, mx_dnssec, implicit_mx): (Vec<(String, u16)>, Option<DnssecStatus>, bool) =
            match &mx {
                Lookup::Found(answer) => (mx_hosts(&answer.records), Some(answer.dnssec), false),
                // RFC 5321 §5.1: "If an empty list of MXs is returned, the
                // address is treated as if it was associated with an implicit MX
                // RR, with a preference of 0, pointing to that host."
                Lookup::NoRecords {
                    nxdomain: false, ..
                } => (vec![(domain.as_str().to_owned(), 0)], None, true),
                _ => (Vec::new(), None, false),
            };
        let hosts = join_all(
            hosts
                .into_iter()
                .map(|(host, preference)| self.gather_host(host, preference, mx_dnssec)),
        )
        .await;
        DomainFacts {
            mx,
            implicit_mx,
            hosts,
        }
    }

    async fn gather_host(
        &self,
        host: String,
        preference: u16,
        mx_dnssec: Option<DnssecStatus>,
    ) -> HostFacts {
        let resolver = &self.inner.resolver;
        let addresses = resolver.addresses(&host).await;
        let tlsa = resolver.host_tlsa(&host, mx_dnssec, &addresses).await;
        let probes = match (&addresses, &tlsa) {
            // Bogus addresses are never contacted.
            (Lookup::Found(answer), _) if answer.dnssec != DnssecStatus::Bogus => {
                self.probe_all(&host, &answer.records, &tlsa).await
            }
            _ => Vec::new(),
        };
        HostFacts {
            host,
            preference,
            addresses,
            tlsa,
            probes,
        }
    }

    async fn probe_all(
        &self,
        host: &str,
        addresses: &[IpAddr],
        tlsa: &TlsaState,
    ) -> Vec<AddressProbe> {
        let dane = match tlsa {
            TlsaState::Published {
                reference_names, ..
            } if tlsa.requires_match() => Some(DaneParams {
                records: tlsa.usable_records(),
                reference_names: reference_names.clone(),
            }),
            _ => None,
        };
        let inner = &self.inner;
        join_all(
            addresses
                .iter()
                .take(MAX_ADDRESSES_PER_HOST)
                .map(|&address| {
                    mailtls_smtp::probe_address(
                        &inner.tls,
                        &inner.probe,
                        address,
                        host,
                        dane.as_ref(),
                    )
                }),
        )
        .await
    }
}

/// How the check uses the TLS memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryUse {
    /// The memory's answer if it knows the domain, else a live probe (the
    /// default, SPEC §1).
    First,
    /// Only the memory: `SSL ?` for a domain never contacted nor probed.
    Only,
    /// Always probe live (the result is still recorded).
    Bypass,
}

/// Records what a probe learned: each probed host, and the domain's level.
async fn record<M: TlsMemory + Sync>(
    memory: &M,
    facts: &DomainFacts,
    report: &CheckReport,
    now: i64,
) {
    let mut observations: Vec<(MemoryKey, Observation)> = Vec::new();
    for host in &facts.hosts {
        for probe in &host.probes {
            if let Some(obs) = probe_observation(&probe.outcome, now) {
                observations.push((MemoryKey::host(&host.host), obs));
            }
        }
    }
    if let Level::Known(level) = report.level {
        let tls = report.mx.iter().find(|m| m.tls_version.is_some());
        observations.push((
            MemoryKey::domain(&report.domain),
            Observation {
                at: now,
                level,
                protocol: tls.and_then(|m| m.tls_version.clone()),
                cipher: tls.and_then(|m| m.cipher.clone()),
                cert_sha256: tls.and_then(|m| m.certificate.as_ref().map(|c| c.sha256.clone())),
                failure: (level == TlsLevel::None).then(|| report.detail.clone()),
            },
        ));
    }
    for (key, obs) in observations {
        match memory.record(&key, &obs).await {
            Ok(Some(alert)) => {
                warn!(%key, detail = %alert.detail, "TLS memory alert: a drop below the best level seen")
            }
            Ok(None) => {}
            Err(e) => warn!(%key, error = %e, "could not record the probe in the TLS memory"),
        }
    }
}

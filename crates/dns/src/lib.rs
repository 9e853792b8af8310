//! # mailtls-dns: the DNS facts mail delivery needs, each with its DNSSEC status
//!
//! Where mail for a domain goes (MX, RFC 5321 §5.1; null MX, RFC 7505), which
//! addresses those hosts have, and whether they publish TLSA records (DANE for
//! SMTP, RFC 7672) are all DNS questions. DANE is only as strong as the proof
//! that the answers are genuine, so every answer here comes back as a
//! [`Lookup`] that carries its DNSSEC state (RFC 4035 §4.3): secure,
//! insecure, bogus, a (proven or unproven) denial, or a failure. Nothing here
//! decides what the facts mean: `mailtls_core` does (`dane::tlsa_plan`,
//! `dane::tlsa_state`), and both the check and the relay call it.
//!
//! Two ways to learn the DNSSEC state, chosen by [`DnsMode`]:
//!
//! * [`DnsMode::Validate`]: hickory-resolver validates in-process from a
//!   trust anchor (the IANA root by default, or an operator's file of DNSKEY
//!   or DS records, see [`DnsConfig::trust_anchor`]). The upstream resolver
//!   only needs to pass DNSSEC records through.
//! * [`DnsMode::TrustAd`]: a validating resolver on a loopback address does
//!   the work and we trust its AD bit (RFC 6840 §5.7), like Postfix and maddy.
//!
//! Both default to the system's resolver from `/etc/resolv.conf`.
//!
//! Failures are never read as "no records": a SERVFAIL, a time-out or a
//! malformed reply is [`Lookup::Failed`], and the policy defers on it.

mod anchor;
mod records;
mod trust_ad;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use mailtls_core::dane::{self, TlsaPlan};

pub use mailtls_core::dane::{TlsaRecord, TlsaState};
pub use mailtls_core::dns::{Answer, DnssecStatus, Lookup, MxRecord};

/// How the DNSSEC status of answers is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsMode {
    /// Validate signatures in-process from the trust anchor (the default).
    #[default]
    Validate,
    /// Trust the AD bit of a validating resolver on a loopback address.
    TrustAd,
}

/// Settings for [`MailResolver::new`]. The defaults: system resolver,
/// validate mode, IANA root anchor, 5 seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The resolver to ask; `None` uses the first `nameserver` of
    /// `/etc/resolv.conf` (all of them in validate mode).
    pub resolver: Option<SocketAddr>,
    /// How DNSSEC status is established.
    pub mode: DnsMode,
    /// A zone-file of DNSKEY and/or DS records (unbound's `trust-anchor-file`
    /// format, e.g. `/usr/share/dns/root.key`). `None` uses the IANA root keys
    /// built into hickory. Only used in [`DnsMode::Validate`]: in trust-AD mode
    /// the resolver's own anchor counts.
    pub trust_anchor: Option<PathBuf>,
    /// How long one DNS exchange may take. Validation can turn one look-up
    /// into a dozen exchanges, so a whole look-up is given at most four times
    /// this before it is reported as failed.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            resolver: None,
            mode: DnsMode::Validate,
            trust_anchor: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a [`MailResolver`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsSetupError {
    /// The trust-anchor file could not be read.
    #[error("cannot read trust anchor file {path}: {source}")]
    TrustAnchorUnreadable {
        /// The configured file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The trust-anchor file holds something other than DNSKEY/DS records.
    #[error("invalid trust anchor file {path}: {reason}")]
    TrustAnchorInvalid {
        /// The configured file.
        path: PathBuf,
        /// Which line and what is wrong with it.
        reason: String,
    },
    /// Trust-AD mode with a resolver that is not on a loopback address: the
    /// AD bit is only worth something on a channel nobody can tamper with
    /// (RFC 6840 §5.7).
    #[error("trust-ad mode needs a validating resolver on a loopback address, not {resolver}")]
    TrustAdNotLoopback {
        /// The refused resolver.
        resolver: SocketAddr,
    },
    /// No resolver configured and none usable in `/etc/resolv.conf`.
    #[error("no usable resolver in /etc/resolv.conf: {reason}")]
    NoSystemResolver {
        /// What was wrong.
        reason: String,
    },
}

/// The DNS client of the check and the relay. Cheap to clone; clones share
/// one cache.
#[derive(Clone)]
pub struct MailResolver {
    backend: Arc<Backend>,
    lookup_limit: Duration,
}

enum Backend {
    Validate(Box<validate::Validator>),
    TrustAd(trust_ad::AdClient),
}

impl std::fmt::Debug for MailResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match *self.backend {
            Backend::Validate(_) => "validate",
            Backend::TrustAd(_) => "trust-ad",
        };
        f.debug_struct("MailResolver")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl MailResolver {
    /// Checks the configuration and prepares the resolver. Reads the trust
    /// anchor file and `/etc/resolv.conf` if needed; sends nothing (a DS
    /// trust anchor is turned into keys on the first look-up). Needs no
    /// tokio runtime.
    pub fn new(config: &DnsConfig) -> Result<MailResolver, DnsSetupError> {
        let lookup_limit = config.timeout.saturating_mul(4);
        let backend = match config.mode {
            DnsMode::Validate => {
                let servers = match config.resolver {
                    Some(address) => single_server(address),
                    None => system_servers()?,
                };
                let anchors = match &config.trust_anchor {
                    None => validate::Anchors::IanaRoot,
                    Some(path) => validate::Anchors::File(read_anchor_file(path)?),
                };
                Backend::Validate(Box::new(validate::Validator::new(
                    servers,
                    anchors,
                    config.timeout,
                )))
            }
            DnsMode::TrustAd => {
                let server = match config.resolver {
                    Some(address) => address,
                    None => first_system_server()?,
                };
                if !server.ip().is_loopback() {
                    return Err(DnsSetupError::TrustAdNotLoopback { resolver: server });
                }
                if let Some(path) = &config.trust_anchor {
                    tracing::warn!(path = %path.display(), "trust anchor file ignored in trust-ad mode: the resolver's own anchor counts");
                }
                Backend::TrustAd(trust_ad::AdClient::new(server, config.timeout))
            }
        };
        Ok(MailResolver {
            backend: Arc::new(backend),
            lookup_limit,
        })
    }

    /// The MX records of `domain` (RFC 5321 §5.1), sorted by preference.
    /// The null MX of RFC 7505 comes back as a record with exchange `""`;
    /// no MX at all is a `NoRecords` (the caller then uses the implicit MX).
    pub async fn mx(&self, domain: &str) -> Lookup<MxRecord> {
        let mut lookup = records::typed(self.raw(domain, RecordType::MX).await, records::mx_record);
        if let Lookup::Found(answer) = &mut lookup {
            answer.records.sort_by_key(|mx| mx.preference);
        }
        lookup
    }

    /// The A and AAAA records of `host`, asked together. `canonical_name` is
    /// the end of the CNAME chain, if any; `dnssec` combines the CNAME links,
    /// the A and the AAAA answers (RFC 7672 §2.2.2). If one half fails and the
    /// other finds addresses, those addresses are returned (the failed half's
    /// addresses are unknown and will not be tried).
    pub async fn addresses(&self, host: &str) -> Lookup<IpAddr> {
        let (v4, v6) = tokio::join!(
            self.raw(host, RecordType::A),
            self.raw(host, RecordType::AAAA)
        );
        records::combine_addresses(
            records::typed(v4, records::ip_address),
            records::typed(v6, records::ip_address),
        )
    }

    /// The TLSA records at `owner`, e.g. `_25._tcp.mx.example` (RFC 6698
    /// §3, RFC 7672 §2.2.3).
    pub async fn tlsa(&self, owner: &str) -> Lookup<TlsaRecord> {
        records::typed(
            self.raw(owner, RecordType::TLSA).await,
            records::tlsa_record,
        )
    }

    /// What DANE means for one MX host (RFC 7672 §2.2): runs
    /// `mailtls_core::dane::tlsa_plan`, looks TLSA up at the planned names in
    /// order (CNAME-expanded name first) until one outcome decides, then
    /// folds the outcomes with `tlsa_state`.
    ///
    /// `mx_dnssec` is the status of the MX RRset that named the host, `None`
    /// for the implicit MX; `addresses` is [`MailResolver::addresses`] of the
    /// host.
    pub async fn host_tlsa(
        &self,
        host: &str,
        mx_dnssec: Option<DnssecStatus>,
        addresses: &Lookup<IpAddr>,
    ) -> TlsaState {
        let plan = dane::tlsa_plan(host, mx_dnssec, addresses);
        let mut outcomes = Vec::new();
        if let TlsaPlan::LookUp { query_names, .. } = &plan {
            for owner in query_names {
                let outcome = self.tlsa(owner).await;
                let decides = dane::tlsa_outcome_decides(&outcome);
                outcomes.push((owner.clone(), outcome));
                if decides {
                    break;
                }
            }
        }
        dane::tlsa_state(&plan, &outcomes)
    }

    /// One question to the back end, within the look-up time limit.
    async fn raw(&self, name: &str, rtype: RecordType) -> Lookup<RData> {
        let name = match records::absolute_name(name) {
            Ok(name) => name,
            Err(reason) => return Lookup::Failed { reason },
        };
        let query = self.ask(&name, rtype);
        match tokio::time::timeout(self.lookup_limit, query).await {
            Ok(lookup) => lookup,
            Err(_) => Lookup::Failed {
                reason: format!(
                    "{rtype} look-up of {name} took longer than {:?}",
                    self.lookup_limit
                ),
            },
        }
    }

    async fn ask(&self, name: &Name, rtype: RecordType) -> Lookup<RData> {
        match &*self.backend {
            Backend::Validate(validator) => validator.lookup(name, rtype).await,
            Backend::TrustAd(client) => client.lookup(name, rtype).await,
        }
    }
}

fn read_anchor_file(path: &PathBuf) -> Result<anchor::AnchorFile, DnsSetupError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| DnsSetupError::TrustAnchorUnreadable {
            path: path.clone(),
            source,
        })?;
    anchor::parse_anchor_file(&text).map_err(|reason| DnsSetupError::TrustAnchorInvalid {
        path: path.clone(),
        reason,
    })
}

/// A resolver config for one server at any port, UDP with TCP fallback.
fn single_server(address: SocketAddr) -> ResolverConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = address.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = address.port();
    ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        address.ip(),
        true,
        vec![udp, tcp],
    )])
}

fn system_servers() -> Result<ResolverConfig, DnsSetupError> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
        DnsSetupError::NoSystemResolver {
            reason: e.to_string(),
        }
    })?;
    if config.name_servers().is_empty() {
        return Err(DnsSetupError::NoSystemResolver {
            reason: "no nameserver lines".to_owned(),
        });
    }
    // Only the servers: search domains must not apply to mail names.
    Ok(ResolverConfig::from_name_servers(
        config.name_servers().to_vec(),
    ))
}

fn first_system_server() -> Result<SocketAddr, DnsSetupError> {
    let config = system_servers()?;
    let server = config
        .name_servers()
        .first()
        .ok_or_else(|| DnsSetupError::NoSystemResolver {
            reason: "no nameserver lines".to_owned(),
        })?;
    let port = server.connections.first().map_or(53, |c| c.port);
    Ok(SocketAddr::new(server.ip, port))
}

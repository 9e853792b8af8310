//! The report of one check, as the CLI (`--json`), `scan` and the JSON API
//! print it. Field names are an interface other tools rely on (issue #2):
//! add fields freely, never rename or remove one.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::address::AddressError;
use crate::dane::{TlsaRecord, TlsaState};
use crate::dns::DnssecStatus;
use crate::level::{Level, TlsLevel};
use crate::probe::{AddressProbe, CertificateInfo, DaneCheck, ProbeOutcome, TlsFacts};
use crate::verdict::{HostFacts, Problem, RouteState, host_dnssec, host_routes};

/// The answer for one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The address (or domain) as checked, domain in A-label form; for an
    /// invalid input, the input as typed.
    pub address: String,
    /// The domain whose servers were checked (empty for an invalid input).
    pub domain: String,
    /// `dane`, `tls`, `none` or `unknown`.
    pub level: Level,
    /// `DANE ok`, `SSL ok`, `no SSL` or `SSL ?`.
    pub status: String,
    /// Why mail would not be delivered, if it would not.
    pub problem: Option<Problem>,
    /// One line for a person.
    pub detail: String,
    /// Per MX host, in preference order.
    pub mx: Vec<MxReport>,
    /// When the facts were gathered, RFC 3339.
    pub checked_at: String,
    /// Where the answer comes from: `probe` (a live STARTTLS probe now) or
    /// `memory` (the TLS memory, SPEC §3; `mx` is then empty).
    #[serde(default)]
    pub source: Source,
}

/// Where a report's answer comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A live probe of the domain's mail servers.
    #[default]
    Probe,
    /// The TLS memory.
    Memory,
    /// Nothing was looked up (invalid input).
    None,
}

impl CheckReport {
    /// The report for an input that is not a valid address.
    pub fn invalid(input: &str, error: &AddressError, now: std::time::SystemTime) -> CheckReport {
        CheckReport {
            address: input.to_owned(),
            domain: String::new(),
            level: Level::Unknown,
            status: Level::Unknown.status_text().to_owned(),
            problem: Some(Problem::InvalidAddress),
            detail: error.to_string(),
            mx: Vec::new(),
            checked_at: humantime::format_rfc3339_seconds(now).to_string(),
            source: Source::None,
        }
    }

    /// The answer the TLS memory gives for a target (SPEC §1: "the TLS
    /// memory first"): the best level ever seen for the domain, or `SSL ?`
    /// when the domain was never contacted nor probed.
    pub fn from_memory(
        target: &crate::Target,
        entry: Option<&crate::memory::MemoryEntry>,
        now: std::time::SystemTime,
    ) -> CheckReport {
        let stamp = |t: i64| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0).unsigned_abs()),
            )
            .to_string()
        };
        let (level, detail) = match entry {
            None => (
                Level::Unknown,
                "never contacted and not probed yet".to_owned(),
            ),
            Some(e) => {
                let mut detail = match (e.first_tls_at, e.last_tls_at) {
                    (Some(first), Some(last)) => format!(
                        "from the TLS memory: TLS since {}, last {}",
                        stamp(first),
                        stamp(last)
                    ),
                    _ => format!(
                        "from the TLS memory: no TLS seen; last contact {}",
                        stamp(e.last_seen_at)
                    ),
                };
                if let (Some(protocol), Some(cipher)) = (&e.protocol, &e.cipher) {
                    detail.push_str(&format!(" ({protocol}, {cipher})"));
                }
                if e.last_level < e.best_level {
                    detail.push_str(&format!(
                        "; the last contact showed less ({}): see `mailtls memory alerts`",
                        Level::Known(e.last_level).status_text()
                    ));
                }
                (Level::Known(e.best_level), detail)
            }
        };
        CheckReport {
            address: target.to_string(),
            domain: target.domain().as_str().to_owned(),
            level,
            status: level.status_text().to_owned(),
            problem: None,
            detail,
            mx: Vec::new(),
            checked_at: humantime::format_rfc3339_seconds(now).to_string(),
            source: Source::Memory,
        }
    }

    /// The text shown beside the symbol: the problem's state if there is
    /// one, else the status.
    pub fn headline(&self) -> &str {
        match self.problem {
            Some(problem) => problem.status_text(),
            None => &self.status,
        }
    }
}

/// What one MX host showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MxReport {
    /// Host name.
    pub host: String,
    /// MX preference (0 for implicit MX).
    pub preference: u16,
    /// The weakest DNSSEC status of the MX and address look-ups; `null` when
    /// a look-up failed.
    pub dnssec: Option<DnssecStatus>,
    /// The DNSSEC status of each look-up.
    pub dnssec_lookups: DnssecLookups,
    /// Addresses found (and probed, see `probes`).
    pub addresses: Vec<IpAddr>,
    /// Whether EHLO offered STARTTLS; `null` if no server answered.
    pub starttls: Option<bool>,
    /// TLS protocol version of the first successful handshake.
    pub tls_version: Option<String>,
    /// Cipher suite.
    pub cipher: Option<String>,
    /// Key-exchange group.
    pub key_exchange: Option<String>,
    /// Pre-TLS 1.2 protocol or legacy cipher (interoperable, but weak).
    pub legacy_tls: bool,
    /// The server's own certificate.
    pub certificate: Option<CertificateInfo>,
    /// The rest of the chain as sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<CertificateInfo>,
    /// Whether the chain is valid for the public Web PKI (informational).
    pub pkix_valid: bool,
    /// The TLSA records published for the host (secure RRsets only).
    pub tlsa: Vec<TlsaReport>,
    /// Where the TLSA records were found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlsa_owner: Option<String>,
    /// `ok`, `mismatch`, `unusable` (secure TLSA, none usable: TLS
    /// mandatory, unauthenticated) or `none`.
    pub dane: DaneSummary,
    /// Why DANE does or does not apply, for a person.
    pub dane_detail: String,
    /// This host's level, if mail could be delivered to it.
    pub level: Level,
    /// The first error met with this host, for a person.
    pub error: Option<String>,
    /// Every address probed and what happened.
    pub probes: Vec<AddressProbe>,
}

/// DNSSEC status per look-up (SPEC §1: "the DNSSEC status of the MX,
/// address and TLSA look-ups").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnssecLookups {
    /// The MX RRset (`null` for implicit MX).
    pub mx: Option<DnssecStatus>,
    /// The host's A/AAAA records.
    pub addresses: Option<DnssecStatus>,
    /// The TLSA RRset (`null` when not looked up or failed).
    pub tlsa: Option<DnssecStatus>,
}

/// The DANE outcome for a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaneSummary {
    /// A usable TLSA record matched.
    Ok,
    /// Usable TLSA records exist and the server did not match (or no TLS).
    Mismatch,
    /// A secure TLSA RRset without usable records.
    Unusable,
    /// DANE does not apply.
    None,
}

/// One TLSA record and whether it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsaReport {
    /// Certificate usage.
    pub usage: u8,
    /// Selector.
    pub selector: u8,
    /// Matching type.
    pub matching: u8,
    /// Association data, hex.
    pub data: String,
    /// Whether this record authenticated the server.
    pub matched: bool,
    /// Whether RFC 7672 lets this record be used.
    pub usable: bool,
}

impl MxReport {
    /// Lays out one host's facts.
    pub fn from_facts(host: &HostFacts, mx_dnssec: Option<DnssecStatus>) -> MxReport {
        let tls: Option<&TlsFacts> = host.probes.iter().find_map(|p| match &p.outcome {
            ProbeOutcome::Tls(facts) => Some(facts),
            _ => None,
        });
        let starttls = host
            .probes
            .iter()
            .find_map(|p| p.outcome.starttls_offered());
        let routes = host_routes(host);
        let level = routes
            .iter()
            .filter_map(|r| match r {
                RouteState::Deliverable(l) => Some(*l),
                _ => None,
            })
            .min()
            .map_or(Level::Unknown, Level::Known);
        let error = routes.iter().find_map(|r| match r {
            RouteState::Held(_, why) | RouteState::Unreachable(why) => Some(why.clone()),
            RouteState::Deliverable(_) => None,
        });

        let (records, owner, tlsa_dnssec): (&[TlsaRecord], Option<String>, Option<DnssecStatus>) =
            match &host.tlsa {
                TlsaState::Published { owner, records, .. } => {
                    (records, Some(owner.clone()), Some(DnssecStatus::Secure))
                }
                TlsaState::NotApplicable {
                    reason: crate::dane::NotApplicable::NoTlsa,
                } => (&[], None, Some(DnssecStatus::Secure)),
                TlsaState::NotApplicable {
                    reason: crate::dane::NotApplicable::InsecureTlsa,
                } => (&[], None, Some(DnssecStatus::Insecure)),
                _ => (&[], None, None),
            };
        let matched_index = tls.and_then(|t| match t.dane {
            DaneCheck::Matched { record, .. } => Some(record),
            _ => None,
        });
        // DaneCheck::Matched indexes the *usable* records given to OpenSSL.
        let mut usable_seen = 0usize;
        let tlsa = records
            .iter()
            .map(|r| {
                let usable = r.is_usable();
                let matched = usable && matched_index == Some(usable_seen);
                if usable {
                    usable_seen += 1;
                }
                TlsaReport {
                    usage: r.usage,
                    selector: r.selector,
                    matching: r.matching,
                    data: r.data_hex(),
                    matched,
                    usable,
                }
            })
            .collect();

        let dane = if host.tlsa.requires_match() {
            if level == Level::Known(TlsLevel::Dane) {
                DaneSummary::Ok
            } else {
                DaneSummary::Mismatch
            }
        } else if host.tlsa.requires_tls() {
            DaneSummary::Unusable
        } else {
            DaneSummary::None
        };
        let dane_detail = match &host.tlsa {
            TlsaState::NotApplicable { reason } => reason.describe().to_owned(),
            TlsaState::Published { .. } if dane == DaneSummary::Unusable => {
                "secure TLSA records, none usable (RFC 7672 §3.1.3): TLS is mandatory, the server is not authenticated".to_owned()
            }
            TlsaState::Published { owner, .. } => match dane {
                DaneSummary::Ok => format!("authenticated by TLSA at {owner}"),
                _ => format!("TLSA at {owner} did not authenticate the server: mail is held"),
            },
            TlsaState::LookupFailed { reason } => reason.clone(),
        };

        MxReport {
            host: host.host.clone(),
            preference: host.preference,
            dnssec: host_dnssec(mx_dnssec, &host.addresses),
            dnssec_lookups: DnssecLookups {
                mx: mx_dnssec,
                addresses: host.addresses.dnssec(),
                tlsa: tlsa_dnssec,
            },
            addresses: host.addresses.records().to_vec(),
            starttls,
            tls_version: tls.map(|t| t.version.clone()),
            cipher: tls.map(|t| t.cipher.clone()),
            key_exchange: tls.and_then(|t| t.key_exchange.clone()),
            legacy_tls: tls.is_some_and(|t| t.legacy),
            certificate: tls.and_then(|t| t.chain.first().cloned()),
            chain: tls
                .map(|t| t.chain.iter().skip(1).cloned().collect())
                .unwrap_or_default(),
            pkix_valid: tls.is_some_and(|t| t.pkix_valid),
            tlsa,
            tlsa_owner: owner,
            dane,
            dane_detail,
            level,
            error,
            probes: host.probes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::memory::{MemoryKey, Observation, remember};
    use crate::{Target, TlsLevel};

    fn target() -> Target {
        Target::parse_address_or_domain("a@example.org").expect("valid")
    }

    // SPEC §1: "If the memory has nothing, the answer is unknown".
    #[test]
    fn memory_without_entry_is_ssl_unknown() {
        let r = CheckReport::from_memory(&target(), None, UNIX_EPOCH);
        assert_eq!(
            (r.level, r.status.as_str(), r.source),
            (Level::Unknown, "SSL ?", Source::Memory)
        );
    }

    #[test]
    fn memory_answers_with_the_best_level_and_flags_a_drop() {
        let key = MemoryKey::domain("example.org");
        let tls = Observation {
            at: 86_400,
            level: TlsLevel::Tls,
            protocol: Some("TLSv1.3".into()),
            cipher: Some("TLS_AES_128_GCM_SHA256".into()),
            cert_sha256: None,
            failure: None,
        };
        let (e1, _) = remember(None, &key, &tls);
        let r = CheckReport::from_memory(
            &target(),
            Some(&e1),
            UNIX_EPOCH + Duration::from_secs(90_000),
        );
        assert_eq!(r.status, "SSL ok");
        assert!(
            r.detail.contains("TLS since 1970-01-02T00:00:00Z") && r.detail.contains("TLSv1.3"),
            "{}",
            r.detail
        );
        let drop = Observation {
            at: 90_000,
            level: TlsLevel::None,
            protocol: None,
            cipher: None,
            cert_sha256: None,
            failure: Some("no STARTTLS".into()),
        };
        let (e2, _) = remember(Some(&e1), &key, &drop);
        let r = CheckReport::from_memory(&target(), Some(&e2), UNIX_EPOCH);
        assert_eq!(r.status, "SSL ok", "the memory never downgrades by itself");
        assert!(r.detail.contains("memory alerts"), "{}", r.detail);
    }
}

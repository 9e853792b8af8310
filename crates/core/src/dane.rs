//! DANE for SMTP: TLSA records and when they apply (RFC 7672, RFC 7671).
//!
//! Two pure decisions live here:
//!
//! * [`tlsa_plan`]: may TLSA records be used for an MX host at all, and at
//!   which names must they be looked up (RFC 7672 §2.2.1 and §2.2.2)?
//! * [`tlsa_state`]: what do the look-ups' outcomes mean for delivery: DANE
//!   enforced, TLS merely mandatory, not applicable, or defer?
//!
//! Matching a certificate against the records is OpenSSL's job (the
//! `mailtls-tls` crate); this module only decides what OpenSSL is given.

use serde::{Deserialize, Serialize};

use crate::dns::{DnssecStatus, Lookup};

/// One TLSA record (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TlsaRecord {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 full certificate, 1 SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA2-256, 2 SHA2-512.
    pub matching: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

/// Whether one TLSA record can authenticate an SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsaUsability {
    /// DANE-TA(2) or DANE-EE(3) with known selector and matching type.
    Usable,
    /// The record must be ignored; the text says why.
    Unusable(&'static str),
}

/// DANE-TA: a trust anchor (RFC 7671 §5.2).
pub const USAGE_DANE_TA: u8 = 2;
/// DANE-EE: the server's own certificate or key (RFC 7671 §5.1).
pub const USAGE_DANE_EE: u8 = 3;

impl TlsaRecord {
    /// RFC 7672 §3.1.3: "SMTP client treatment of TLSA RRs with certificate
    /// usages PKIX-TA(0) or PKIX-EE(1) [is] undefined … SMTP clients SHOULD
    /// treat them as unusable". RFC 6698 §7.2–7.4 and RFC 7671 §4: unknown
    /// parameters, or digests of the wrong length, are unusable.
    pub fn usability(&self) -> TlsaUsability {
        use TlsaUsability::*;
        match self.usage {
            0 | 1 => return Unusable("PKIX usages are unusable for SMTP (RFC 7672 §3.1.3)"),
            USAGE_DANE_TA | USAGE_DANE_EE => {}
            _ => return Unusable("unknown certificate usage"),
        }
        if self.selector > 1 {
            return Unusable("unknown selector");
        }
        match (self.matching, self.data.len()) {
            (0, 0) => Unusable("empty certificate association data"),
            (0, _) => Usable,
            (1, 32) | (2, 64) => Usable,
            (1 | 2, _) => Unusable("digest of the wrong length"),
            _ => Unusable("unknown matching type"),
        }
    }

    /// Whether [`TlsaRecord::usability`] is `Usable`.
    pub fn is_usable(&self) -> bool {
        self.usability() == TlsaUsability::Usable
    }

    /// The association data in lower-case hex, as in zone files.
    pub fn data_hex(&self) -> String {
        hex(&self.data)
    }
}

/// Lower-case hex of `bytes` (fingerprints, TLSA data).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Why DANE does not apply to a host (mail to it is opportunistic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotApplicable {
    /// RFC 7672 §2.2.1: an insecure MX RRset means the MX host names are not
    /// authenticated, so their TLSA records prove nothing.
    InsecureMx,
    /// RFC 7672 §2.2.2: the host's address records (or a CNAME on the way)
    /// are insecure: "the SMTP client MUST NOT" look TLSA up.
    InsecureAddresses,
    /// The host's address look-up did not succeed, so there is nothing to
    /// connect to and no TLSA question to ask.
    NoAddresses,
    /// TLSA records exist only in an unsigned zone (RFC 7672 §2.2: only
    /// secure TLSA RRsets are used).
    InsecureTlsa,
    /// A secure denial: the host publishes no TLSA records.
    NoTlsa,
}

impl NotApplicable {
    /// One line for a person.
    pub fn describe(self) -> &'static str {
        match self {
            NotApplicable::InsecureMx => "MX records are not DNSSEC-signed",
            NotApplicable::InsecureAddresses => "the host's address records are not DNSSEC-signed",
            NotApplicable::NoAddresses => "the host has no usable address records",
            NotApplicable::InsecureTlsa => "TLSA records are not DNSSEC-signed and are ignored",
            NotApplicable::NoTlsa => "no TLSA records (proven by DNSSEC)",
        }
    }
}

/// Where to look TLSA records up for one MX host (RFC 7672 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsaPlan {
    /// No TLSA look-up: DANE does not apply.
    Skip(NotApplicable),
    /// Look up `_25._tcp.<name>` for each name in order; the first answer that
    /// is not a denial decides.
    LookUp {
        /// TLSA owner names, the CNAME-expanded one first.
        query_names: Vec<String>,
        /// The names a DANE-TA(2) certificate must carry (RFC 7672 §3.2.2):
        /// the MX host name and, if different, its CNAME-expanded name.
        reference_names: Vec<String>,
    },
}

/// The TLSA owner name for SMTP on port 25 (RFC 7672 §2.2.3 / RFC 6698 §3).
pub fn tlsa_owner(host: &str) -> String {
    format!("_25._tcp.{}", host.trim_end_matches('.'))
}

/// Decides whether and where TLSA is looked up for `host`.
///
/// `mx_dnssec` is the status of the MX RRset that named the host, or `None`
/// for a non-MX destination (RFC 5321 §5.1 implicit MX: the host is the
/// domain the user typed, so its name needs no authentication).
pub fn tlsa_plan(
    host: &str,
    mx_dnssec: Option<DnssecStatus>,
    addresses: &Lookup<std::net::IpAddr>,
) -> TlsaPlan {
    // RFC 7672 §2.2.1: "If the MX RRset (or any CNAME leading to it) is
    // insecure, DANE does not apply". Bogus MX never gets this far.
    if mx_dnssec.is_some_and(|status| status != DnssecStatus::Secure) {
        return TlsaPlan::Skip(NotApplicable::InsecureMx);
    }
    let answer = match addresses {
        Lookup::Found(answer) => answer,
        _ => return TlsaPlan::Skip(NotApplicable::NoAddresses),
    };
    // RFC 7672 §2.2.2: TLSA is only looked up when the address records, and
    // every CNAME that led to them, are secure.
    if answer.dnssec != DnssecStatus::Secure {
        return TlsaPlan::Skip(NotApplicable::InsecureAddresses);
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let mut query_names = Vec::with_capacity(2);
    let mut reference_names = vec![host.clone()];
    // RFC 7672 §2.2.2: "If the A and/or AAAA records … involve CNAMEs, the
    // TLSA lookup is first performed at the fully CNAME-expanded name; if
    // none are found there, at the initial name".
    if let Some(canonical) = &answer.canonical_name {
        let canonical = canonical.trim_end_matches('.').to_ascii_lowercase();
        if canonical != host {
            query_names.push(tlsa_owner(&canonical));
            reference_names.push(canonical);
        }
    }
    query_names.push(tlsa_owner(&host));
    TlsaPlan::LookUp {
        query_names,
        reference_names,
    }
}

/// What the TLSA look-ups mean for a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TlsaState {
    /// DANE does not apply; opportunistic TLS.
    NotApplicable {
        /// Why not.
        reason: NotApplicable,
    },
    /// A secure TLSA RRset exists: STARTTLS is mandatory (RFC 7672 §2.2).
    /// With at least one usable record the server must also match one;
    /// with none, TLS is mandatory but unauthenticated (RFC 7672 §2.2:
    /// "... if none are usable, the SMTP client MUST use TLS but need not
    /// authenticate").
    Published {
        /// The owner name the records were found at.
        owner: String,
        /// All records of the RRset, usable or not.
        records: Vec<TlsaRecord>,
        /// Names a DANE-TA(2) chain's leaf must match (RFC 7672 §3.2.2),
        /// the TLSA base domain first (the SNI name, RFC 7672 §8.1).
        reference_names: Vec<String>,
    },
    /// The look-up failed (SERVFAIL, time-out, bogus): delivery to this host
    /// is deferred, never downgraded (RFC 7672 §2.2: "… the SMTP client MUST
    /// treat the server as unreachable").
    LookupFailed {
        /// For a person.
        reason: String,
    },
}

impl TlsaState {
    /// True when a usable TLSA record must match the server's certificate.
    pub fn requires_match(&self) -> bool {
        matches!(self, TlsaState::Published { records, .. } if records.iter().any(TlsaRecord::is_usable))
    }

    /// True when STARTTLS is mandatory because of DANE.
    pub fn requires_tls(&self) -> bool {
        matches!(self, TlsaState::Published { .. })
    }

    /// The usable records, to hand to the TLS engine.
    pub fn usable_records(&self) -> Vec<TlsaRecord> {
        match self {
            TlsaState::Published { records, .. } => {
                records.iter().filter(|r| r.is_usable()).cloned().collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Folds the outcomes of the look-ups planned by [`tlsa_plan`] (in the same
/// order, possibly fewer: the caller stops after the first that decides).
pub fn tlsa_state(plan: &TlsaPlan, outcomes: &[(String, Lookup<TlsaRecord>)]) -> TlsaState {
    let reference_names = match plan {
        TlsaPlan::Skip(reason) => return TlsaState::NotApplicable { reason: *reason },
        TlsaPlan::LookUp {
            reference_names, ..
        } => reference_names,
    };
    let mut reason = NotApplicable::NoTlsa;
    for (owner, outcome) in outcomes {
        match outcome {
            Lookup::Found(answer) if answer.dnssec == DnssecStatus::Secure => {
                // RFC 7672 §2.2.3 / §8.1: the name the records were found
                // at is the "TLSA base domain"; it goes first, because the
                // TLS client sends it as SNI and hands it to OpenSSL as
                // the DANE base name.
                let base = owner.strip_prefix("_25._tcp.").unwrap_or(owner).to_owned();
                let mut names = vec![base.clone()];
                names.extend(reference_names.iter().filter(|n| **n != base).cloned());
                return TlsaState::Published {
                    owner: owner.clone(),
                    records: answer.records.clone(),
                    reference_names: names,
                };
            }
            // RFC 7672 §2.2: TLSA records that are not secure are ignored.
            Lookup::Found(_) => reason = NotApplicable::InsecureTlsa,
            Lookup::NoRecords {
                dnssec: DnssecStatus::Secure,
                ..
            } => {}
            // An unsigned denial below a secure address answer should not
            // happen (the names share a zone or a signed delegation); it
            // proves nothing about DANE, so DANE does not apply.
            Lookup::NoRecords { .. } => reason = NotApplicable::InsecureTlsa,
            Lookup::Bogus { reason } => {
                return TlsaState::LookupFailed {
                    reason: format!("TLSA look-up at {owner} is DNSSEC-bogus: {reason}"),
                };
            }
            Lookup::Failed { reason } => {
                return TlsaState::LookupFailed {
                    reason: format!("TLSA look-up at {owner} failed: {reason}"),
                };
            }
        }
    }
    TlsaState::NotApplicable { reason }
}

/// Whether the caller should stop looking TLSA up after this outcome
/// (everything except a secure or insecure denial decides).
pub fn tlsa_outcome_decides(outcome: &Lookup<TlsaRecord>) -> bool {
    !matches!(outcome, Lookup::NoRecords { .. })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::dns::Answer;

    fn rec(usage: u8, selector: u8, matching: u8, len: usize) -> TlsaRecord {
        TlsaRecord {
            usage,
            selector,
            matching,
            data: vec![0xab; len],
        }
    }

    fn addrs(dnssec: DnssecStatus, canonical: Option<&str>) -> Lookup<IpAddr> {
        Lookup::Found(Answer {
            records: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            dnssec,
            canonical_name: canonical.map(str::to_owned),
        })
    }

    fn secure_tlsa(records: Vec<TlsaRecord>) -> Lookup<TlsaRecord> {
        Lookup::Found(Answer {
            records,
            dnssec: DnssecStatus::Secure,
            canonical_name: None,
        })
    }

    fn secure_denial() -> Lookup<TlsaRecord> {
        Lookup::NoRecords {
            nxdomain: false,
            dnssec: DnssecStatus::Secure,
        }
    }

    // RFC 7672 §3.1: usable records are DANE-TA(2) and DANE-EE(3).
    #[test]
    fn dane_usages_are_usable() {
        assert!(rec(3, 1, 1, 32).is_usable());
        assert!(rec(2, 0, 2, 64).is_usable());
        assert!(rec(3, 0, 0, 700).is_usable());
    }

    // RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) SHOULD be treated as unusable.
    #[test]
    fn pkix_usages_are_unusable() {
        assert!(!rec(0, 0, 1, 32).is_usable());
        assert!(!rec(1, 1, 1, 32).is_usable());
    }

    // RFC 6698 §7 / RFC 7671 §4: unknown parameters and bad digests are unusable.
    #[test]
    fn malformed_records_are_unusable() {
        assert!(!rec(4, 1, 1, 32).is_usable());
        assert!(!rec(3, 2, 1, 32).is_usable());
        assert!(!rec(3, 1, 3, 32).is_usable());
        assert!(!rec(3, 1, 1, 31).is_usable());
        assert!(!rec(3, 1, 2, 32).is_usable());
        assert!(!rec(3, 0, 0, 0).is_usable());
    }

    // RFC 7672 §2.2.1: an insecure MX RRset disables DANE for its hosts.
    #[test]
    fn insecure_mx_skips_tlsa() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Insecure),
            &addrs(DnssecStatus::Secure, None),
        );
        assert_eq!(plan, TlsaPlan::Skip(NotApplicable::InsecureMx));
    }

    // RFC 7672 §2.2.2: insecure address records (or CNAMEs) disable DANE.
    #[test]
    fn insecure_addresses_skip_tlsa() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Insecure, None),
        );
        assert_eq!(plan, TlsaPlan::Skip(NotApplicable::InsecureAddresses));
    }

    #[test]
    fn secure_host_looks_up_its_own_tlsa() {
        let plan = tlsa_plan(
            "MX.Example.",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, None),
        );
        assert_eq!(
            plan,
            TlsaPlan::LookUp {
                query_names: vec!["_25._tcp.mx.example".into()],
                reference_names: vec!["mx.example".into()],
            }
        );
    }

    // RFC 7672 §2.2.2: CNAME-expanded name first, then the initial name; both
    // are reference identifiers for DANE-TA(2).
    #[test]
    fn cname_expanded_name_is_tried_first() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, Some("real.example.net.")),
        );
        assert_eq!(
            plan,
            TlsaPlan::LookUp {
                query_names: vec![
                    "_25._tcp.real.example.net".into(),
                    "_25._tcp.mx.example".into()
                ],
                reference_names: vec!["mx.example".into(), "real.example.net".into()],
            }
        );
    }

    // RFC 5321 §5.1 implicit MX: no MX RRset to authenticate.
    #[test]
    fn implicit_mx_needs_only_secure_addresses() {
        let plan = tlsa_plan("example.org", None, &addrs(DnssecStatus::Secure, None));
        assert!(matches!(plan, TlsaPlan::LookUp { .. }));
    }

    // RFC 7672 §2.2.3 / §8.1: records found at the expanded name make it the
    // TLSA base domain, named first (SNI, DANE base name).
    #[test]
    fn tlsa_base_domain_comes_first() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, Some("real.example.net")),
        );
        let state = tlsa_state(
            &plan,
            &[(
                "_25._tcp.real.example.net".into(),
                secure_tlsa(vec![rec(3, 1, 1, 32)]),
            )],
        );
        let TlsaState::Published {
            reference_names, ..
        } = state
        else {
            panic!("published")
        };
        assert_eq!(
            reference_names,
            vec!["real.example.net".to_owned(), "mx.example".to_owned()]
        );
    }

    #[test]
    fn tlsa_servfail_defers_never_plaintext() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, None),
        );
        let state = tlsa_state(
            &plan,
            &[(
                "_25._tcp.mx.example".into(),
                Lookup::Failed {
                    reason: "SERVFAIL".into(),
                },
            )],
        );
        assert!(matches!(state, TlsaState::LookupFailed { .. }));
        let state = tlsa_state(
            &plan,
            &[(
                "_25._tcp.mx.example".into(),
                Lookup::Bogus {
                    reason: "bad sig".into(),
                },
            )],
        );
        assert!(matches!(state, TlsaState::LookupFailed { .. }));
    }

    #[test]
    fn secure_denial_means_no_dane() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, None),
        );
        let state = tlsa_state(&plan, &[("_25._tcp.mx.example".into(), secure_denial())]);
        assert_eq!(
            state,
            TlsaState::NotApplicable {
                reason: NotApplicable::NoTlsa
            }
        );
        assert!(!state.requires_tls());
    }

    // RFC 7672 §2.2: only secure TLSA RRsets count.
    #[test]
    fn insecure_tlsa_is_ignored() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, None),
        );
        let insecure = Lookup::Found(Answer {
            records: vec![rec(3, 1, 1, 32)],
            dnssec: DnssecStatus::Insecure,
            canonical_name: None,
        });
        let state = tlsa_state(&plan, &[("_25._tcp.mx.example".into(), insecure)]);
        assert_eq!(
            state,
            TlsaState::NotApplicable {
                reason: NotApplicable::InsecureTlsa
            }
        );
    }

    // RFC 7672 §2.2: a secure RRset with no usable record still makes TLS mandatory.
    #[test]
    fn pkix_only_rrset_makes_tls_mandatory_without_authentication() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, None),
        );
        let state = tlsa_state(
            &plan,
            &[(
                "_25._tcp.mx.example".into(),
                secure_tlsa(vec![rec(1, 1, 1, 32)]),
            )],
        );
        assert!(state.requires_tls());
        assert!(!state.requires_match());
        assert!(state.usable_records().is_empty());
    }

    #[test]
    fn usable_rrset_requires_a_match() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, None),
        );
        let state = tlsa_state(
            &plan,
            &[(
                "_25._tcp.mx.example".into(),
                secure_tlsa(vec![rec(0, 0, 1, 32), rec(3, 1, 1, 32)]),
            )],
        );
        assert!(state.requires_match());
        assert_eq!(state.usable_records(), vec![rec(3, 1, 1, 32)]);
    }

    // RFC 7672 §2.2.2: the expanded name's denial falls back to the initial name.
    #[test]
    fn expanded_name_denial_falls_back_to_initial_name() {
        let plan = tlsa_plan(
            "mx.example",
            Some(DnssecStatus::Secure),
            &addrs(DnssecStatus::Secure, Some("real.example.net")),
        );
        let state = tlsa_state(
            &plan,
            &[
                ("_25._tcp.real.example.net".into(), secure_denial()),
                (
                    "_25._tcp.mx.example".into(),
                    secure_tlsa(vec![rec(3, 1, 1, 32)]),
                ),
            ],
        );
        assert!(
            matches!(&state, TlsaState::Published { owner, .. } if owner == "_25._tcp.mx.example")
        );
        assert!(!tlsa_outcome_decides(&secure_denial()));
    }
}

//! The outbound delivery policy (SPEC §2): what a delivery to one MX host
//! requires, and what to do with what the server offered.
//!
//! Like Postfix's TLS security levels, the requirement is one ordered choice
//! derived before a byte of the message is sent, from facts only: the DNS
//! answers with their DNSSEC status, the TLSA state, the TLS memory and the
//! sender's setting, in this order:
//!
//! 1. DANE (RFC 7672 §2.2): a secure TLSA RRset makes STARTTLS mandatory; a
//!    usable record must match. A failed TLSA look-up defers.
//! 2. The TLS memory (SPEC §3): a host or domain that did TLS before must
//!    do TLS again; a drop defers (and the memory raises the alert).
//! 3. The sender's setting (SPEC §4): Encrypted Sending needs TLS, and
//!    its expert level may need DANE (a host without usable TLSA records
//!    then fails permanently, `5.7.10`) or a valid certificate and a
//!    minimum TLS version (judged after the handshake by
//!    `sending::check_delivery`).
//! 4. Opportunistic TLS (RFC 7435): always try STARTTLS; plaintext only to
//!    a server that offers none (or, on a host never seen with TLS, after a
//!    failed handshake, on a new connection: RFC 7435 §3 lets the client
//!    fall back to cleartext).
//!
//! The relay calls [`requirement`] before connecting and [`decide`] after
//! the STARTTLS exchange; nothing about TLS is decided inline in I/O code.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::dane::{TlsaRecord, TlsaState};
use crate::dns::{DnssecStatus, Lookup, MxRecord, mx_hosts};
use crate::level::TlsLevel;
use crate::memory::{MemoryEntry, Observation};
use crate::probe::{DaneCheck, ProbeOutcome, TlsFacts};
use crate::sending::{MinLevel, SenderRequirement, check_delivery};
use crate::status::SmtpStatus;

/// Why TLS is mandatory without DANE authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TlsReason {
    /// RFC 7672 §2.2: a secure TLSA RRset with no usable record.
    UnusableTlsa,
    /// SPEC §3: the MX host did TLS before (Unix time of the first time).
    HostMemory {
        /// First TLS seen.
        since: i64,
    },
    /// SPEC §3: the recipient domain did TLS before.
    DomainMemory {
        /// First TLS seen.
        since: i64,
    },
    /// SPEC §4: the sender's Encrypted Sending setting.
    Sender,
}

/// What a delivery to one host requires. Ordered like Postfix's levels:
/// `Opportunistic < Tls < Dane`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Requirement {
    /// RFC 7435: try STARTTLS; plaintext if the server offers none.
    Opportunistic,
    /// STARTTLS mandatory, any certificate.
    Tls(TlsReason),
    /// RFC 7672: STARTTLS mandatory and a usable TLSA record must match.
    Dane {
        /// The usable records, for the TLS engine.
        records: Vec<TlsaRecord>,
        /// Reference names, TLSA base domain first (SNI).
        reference_names: Vec<String>,
    },
}

impl Requirement {
    /// Whether plaintext delivery is forbidden.
    pub fn requires_tls(&self) -> bool {
        !matches!(self, Requirement::Opportunistic)
    }
}

/// Why a host cannot be delivered to now, with its SMTP meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferral {
    /// 4xx: retry later; 5xx: give up.
    pub status: SmtpStatus,
    /// For the log, the queue and the bounce.
    pub reason: String,
}

/// Where a domain's mail goes: its MX hosts, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Host names, most preferred first (at most [`crate::dns::MAX_MX_HOSTS`]).
    pub hosts: Vec<String>,
    /// The MX RRset's DNSSEC status; `None` for the implicit MX.
    pub mx_dnssec: Option<DnssecStatus>,
}

/// The route for a recipient domain from its MX look-up, or why there is
/// none: NXDOMAIN and null MX fail permanently, a bogus or failed look-up
/// defers, no MX RRset means the implicit MX.
pub fn route(domain: &str, mx: &Lookup<MxRecord>) -> Result<Route, Deferral> {
    match mx {
        Lookup::Found(answer) if answer.dnssec == DnssecStatus::Bogus => Err(Deferral {
            status: SmtpStatus::CRYPTO_FAILURE_TEMP,
            reason: format!("the MX records of {domain} are DNSSEC-bogus"),
        }),
        Lookup::Found(answer) => {
            let hosts: Vec<String> = mx_hosts(&answer.records)
                .into_iter()
                .map(|(host, _)| host)
                .collect();
            if hosts.is_empty() {
                // RFC 7505 §4.1: "550 5.1.10 Recipient address has null MX".
                return Err(Deferral {
                    status: SmtpStatus::NULL_MX,
                    reason: format!("{domain} accepts no mail: it publishes a null MX (RFC 7505)"),
                });
            }
            Ok(Route {
                hosts,
                mx_dnssec: Some(answer.dnssec),
            })
        }
        Lookup::NoRecords { nxdomain: true, .. } => Err(Deferral {
            status: SmtpStatus::NO_SUCH_DOMAIN,
            reason: format!("the domain {domain} does not exist (NXDOMAIN)"),
        }),
        // RFC 5321 §5.1: no MX RRs: the domain itself is the implicit MX.
        Lookup::NoRecords {
            nxdomain: false, ..
        } => Ok(Route {
            hosts: vec![domain.trim_end_matches('.').to_ascii_lowercase()],
            mx_dnssec: None,
        }),
        Lookup::Bogus { reason } => Err(Deferral {
            status: SmtpStatus::CRYPTO_FAILURE_TEMP,
            reason: format!("the MX look-up of {domain} is DNSSEC-bogus: {reason}"),
        }),
        Lookup::Failed { reason } => Err(Deferral {
            status: SmtpStatus::DNS_FAILURE_TEMP,
            reason: format!("the MX look-up of {domain} failed: {reason}"),
        }),
    }
}

/// The facts about one host that the requirement depends on.
#[derive(Debug, Clone, Copy)]
pub struct HostPolicyFacts<'a> {
    /// The host's A/AAAA look-up.
    pub addresses: &'a Lookup<IpAddr>,
    /// Its TLSA state (RFC 7672 §2.2).
    pub tlsa: &'a TlsaState,
    /// What the memory holds for the host.
    pub host_memory: Option<&'a MemoryEntry>,
    /// What the memory holds for the recipient domain.
    pub domain_memory: Option<&'a MemoryEntry>,
    /// What the sender's Encrypted Sending setting requires (SPEC §4).
    pub sender: Option<&'a SenderRequirement>,
}

/// SPEC §2, rules 1–4 in order: the requirement for one host, or why it
/// must be deferred without even connecting. A sender who requires DANE
/// (SPEC §4, expert) cannot be served by a host without usable TLSA
/// records: that fails permanently with `5.7.10`.
pub fn requirement(facts: &HostPolicyFacts<'_>) -> Result<Requirement, Deferral> {
    let requirement = host_requirement(facts)?;
    if let Some(sender) = facts.sender
        && sender.min_level == MinLevel::Dane
        && !matches!(requirement, Requirement::Dane { .. })
    {
        return Err(Deferral {
            status: SmtpStatus::ENCRYPTION_NEEDED,
            reason: format!(
                "the server has no usable DNSSEC-signed TLSA records (not DANE ok); the sender requires {sender}"
            ),
        });
    }
    Ok(requirement)
}

fn host_requirement(facts: &HostPolicyFacts<'_>) -> Result<Requirement, Deferral> {
    match facts.addresses {
        Lookup::Found(_) => {}
        Lookup::Bogus { reason } => {
            return Err(Deferral {
                status: SmtpStatus::CRYPTO_FAILURE_TEMP,
                reason: format!("address records are DNSSEC-bogus: {reason}"),
            });
        }
        Lookup::Failed { reason } => {
            return Err(Deferral {
                status: SmtpStatus::DNS_FAILURE_TEMP,
                reason: format!("address look-up failed: {reason}"),
            });
        }
        Lookup::NoRecords { .. } => {
            return Err(Deferral {
                status: SmtpStatus::UNREACHABLE_TEMP,
                reason: "the host has no address records".into(),
            });
        }
    }
    // Rule 1: DANE.
    match facts.tlsa {
        TlsaState::LookupFailed { reason } => {
            // RFC 7672 §2.2: a failed TLSA look-up makes the host unusable.
            return Err(Deferral {
                status: SmtpStatus::DNS_FAILURE_TEMP,
                reason: reason.clone(),
            });
        }
        TlsaState::Published {
            reference_names, ..
        } if facts.tlsa.requires_match() => {
            return Ok(Requirement::Dane {
                records: facts.tlsa.usable_records(),
                reference_names: reference_names.clone(),
            });
        }
        TlsaState::Published { .. } => return Ok(Requirement::Tls(TlsReason::UnusableTlsa)),
        TlsaState::NotApplicable { .. } => {}
    }
    // Rule 2: the memory.
    let since = |m: Option<&MemoryEntry>| {
        m.filter(|e| e.requires_tls())
            .map(|e| e.first_tls_at.unwrap_or(e.last_seen_at))
    };
    if let Some(since) = since(facts.host_memory) {
        return Ok(Requirement::Tls(TlsReason::HostMemory { since }));
    }
    if let Some(since) = since(facts.domain_memory) {
        return Ok(Requirement::Tls(TlsReason::DomainMemory { since }));
    }
    // Rule 3: the sender's setting.
    if facts.sender.is_some() {
        return Ok(Requirement::Tls(TlsReason::Sender));
    }
    // Rule 4.
    Ok(Requirement::Opportunistic)
}

/// What the STARTTLS exchange with the server gave.
#[derive(Debug, Clone, Copy)]
pub enum TlsOutcome<'a> {
    /// EHLO did not offer STARTTLS.
    NoStarttls,
    /// STARTTLS was answered with an error (e.g. 454).
    StarttlsRefused(&'a str),
    /// The handshake failed.
    HandshakeFailed(&'a str),
    /// TLS is up.
    Tls(&'a TlsFacts),
}

/// What to do on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Send the message on this connection, at this level.
    Send(TlsLevel),
    /// Close, reconnect, and send without trying STARTTLS (opportunistic
    /// only, after a failed handshake).
    RetryPlaintext,
    /// Do not send; the message stays queued.
    Defer(Deferral),
}

/// SPEC §2 applied to what the server did, then SPEC §4: a message whose
/// sender requires encryption is sent only on a connection that meets the
/// requirement; a server that offers no STARTTLS or does not meet it fails
/// the message permanently there (`5.7.10`: the sender learns it at once
/// instead of after the queue lifetime), while transient TLS failures defer.
pub fn decide(
    requirement: &Requirement,
    sender: Option<&SenderRequirement>,
    outcome: TlsOutcome<'_>,
) -> Decision {
    let decision = decide_transport(requirement, outcome);
    let Some(sender) = sender else {
        return decision;
    };
    match (decision, outcome) {
        (Decision::Send(level), outcome) => {
            let facts = match outcome {
                TlsOutcome::Tls(facts) => Some(facts),
                _ => None,
            };
            match check_delivery(sender, level, facts) {
                Ok(()) => Decision::Send(level),
                Err(reason) => Decision::Defer(Deferral {
                    status: SmtpStatus::ENCRYPTION_NEEDED,
                    reason,
                }),
            }
        }
        (Decision::Defer(_), TlsOutcome::NoStarttls)
            if *requirement == Requirement::Tls(TlsReason::Sender) =>
        {
            Decision::Defer(Deferral {
                status: SmtpStatus::ENCRYPTION_NEEDED,
                reason: format!(
                    "the server offers no STARTTLS (no SSL); the sender requires {sender}"
                ),
            })
        }
        (decision, _) => decision,
    }
}

/// SPEC §2 alone: what the transport allows.
fn decide_transport(requirement: &Requirement, outcome: TlsOutcome<'_>) -> Decision {
    let refused_tls = |what: String| {
        let why = match requirement {
            Requirement::Dane { .. } => "DANE TLSA records are published (RFC 7672)".to_owned(),
            Requirement::Tls(TlsReason::UnusableTlsa) => "TLSA records are published (RFC 7672)".to_owned(),
            Requirement::Tls(TlsReason::HostMemory { .. }) => {
                "this server did TLS before; not sent in plaintext (possible downgrade attack)".to_owned()
            }
            Requirement::Tls(TlsReason::DomainMemory { .. }) => {
                "the recipient's provider did TLS before; not sent in plaintext (possible downgrade attack)".to_owned()
            }
            Requirement::Tls(TlsReason::Sender) => "the sender requires encrypted delivery".to_owned(),
            Requirement::Opportunistic => String::new(),
        };
        format!("{what}, but TLS is required: {why}")
    };
    match (requirement, outcome) {
        (Requirement::Dane { .. }, TlsOutcome::Tls(facts)) => match &facts.dane {
            DaneCheck::Matched { .. } => Decision::Send(TlsLevel::Dane),
            DaneCheck::Mismatch { reason } => Decision::Defer(Deferral {
                status: SmtpStatus::CRYPTO_FAILURE_TEMP,
                reason: format!(
                    "the server's certificate matches no TLSA record (RFC 7672 §3): {reason}"
                ),
            }),
            DaneCheck::NotAttempted => Decision::Defer(Deferral {
                status: SmtpStatus::CRYPTO_FAILURE_TEMP,
                reason: "TLSA records were not checked against the certificate".into(),
            }),
        },
        (Requirement::Tls(_) | Requirement::Opportunistic, TlsOutcome::Tls(_)) => {
            Decision::Send(TlsLevel::Tls)
        }
        (Requirement::Opportunistic, TlsOutcome::NoStarttls | TlsOutcome::StarttlsRefused(_)) => {
            // RFC 3207 §4.1 / RFC 7435: continue in cleartext.
            Decision::Send(TlsLevel::None)
        }
        (Requirement::Opportunistic, TlsOutcome::HandshakeFailed(_)) => Decision::RetryPlaintext,
        (_, TlsOutcome::NoStarttls) => Decision::Defer(Deferral {
            status: SmtpStatus::TLS_REQUIRED_TEMP,
            reason: refused_tls("the server offers no STARTTLS".into()),
        }),
        (_, TlsOutcome::StarttlsRefused(reply)) => Decision::Defer(Deferral {
            status: SmtpStatus::TLS_REQUIRED_TEMP,
            reason: refused_tls(format!("the server refused STARTTLS ({reply})")),
        }),
        (_, TlsOutcome::HandshakeFailed(error)) => Decision::Defer(Deferral {
            status: SmtpStatus::CRYPTO_FAILURE_TEMP,
            reason: refused_tls(format!("the TLS handshake failed ({error})")),
        }),
    }
}

/// What to record in the memory after a STARTTLS exchange (SPEC §3).
pub fn observation(outcome: TlsOutcome<'_>, now: i64) -> Observation {
    match outcome {
        TlsOutcome::Tls(facts) => Observation {
            at: now,
            level: if matches!(facts.dane, DaneCheck::Matched { .. }) {
                TlsLevel::Dane
            } else {
                TlsLevel::Tls
            },
            protocol: Some(facts.version.clone()),
            cipher: Some(facts.cipher.clone()),
            cert_sha256: facts.chain.first().map(|c| c.sha256.clone()),
            failure: match &facts.dane {
                DaneCheck::Mismatch { reason } => Some(format!("DANE mismatch: {reason}")),
                _ => None,
            },
        },
        TlsOutcome::NoStarttls => plain(now, "STARTTLS not offered".into()),
        TlsOutcome::StarttlsRefused(reply) => plain(now, format!("STARTTLS refused: {reply}")),
        TlsOutcome::HandshakeFailed(error) => plain(now, format!("TLS handshake failed: {error}")),
    }
}

/// The observation a check probe made of one address (SPEC §3: the memory
/// is "recorded from every delivery and every check probe"); `None` when
/// the server was not reached far enough to learn anything about TLS.
pub fn probe_observation(outcome: &ProbeOutcome, now: i64) -> Option<Observation> {
    let tls_outcome = match outcome {
        ProbeOutcome::NotAllowed
        | ProbeOutcome::ConnectFailed { .. }
        | ProbeOutcome::SmtpFailed { .. } => return None,
        ProbeOutcome::NoStarttls => TlsOutcome::NoStarttls,
        ProbeOutcome::StarttlsRefused { reply } => TlsOutcome::StarttlsRefused(reply),
        ProbeOutcome::HandshakeFailed { reason } => TlsOutcome::HandshakeFailed(reason),
        ProbeOutcome::Tls(facts) => TlsOutcome::Tls(facts),
    };
    Some(observation(tls_outcome, now))
}

fn plain(at: i64, failure: String) -> Observation {
    Observation {
        at,
        level: TlsLevel::None,
        protocol: None,
        cipher: None,
        cert_sha256: None,
        failure: Some(failure),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::dane::NotApplicable;
    use crate::dns::{Answer, DnssecStatus};
    use crate::memory::{MemoryKey, remember};
    use crate::probe::CertificateInfo;

    fn addrs() -> Lookup<IpAddr> {
        Lookup::Found(Answer {
            records: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            dnssec: DnssecStatus::Secure,
            canonical_name: None,
        })
    }

    fn no_dane() -> TlsaState {
        TlsaState::NotApplicable {
            reason: NotApplicable::NoTlsa,
        }
    }

    fn published(usage: u8) -> TlsaState {
        TlsaState::Published {
            owner: "_25._tcp.mx".into(),
            records: vec![TlsaRecord {
                usage,
                selector: 1,
                matching: 1,
                data: vec![1; 32],
            }],
            reference_names: vec!["mx".into()],
        }
    }

    fn facts<'a>(
        addresses: &'a Lookup<IpAddr>,
        tlsa: &'a TlsaState,
        host: Option<&'a MemoryEntry>,
    ) -> HostPolicyFacts<'a> {
        HostPolicyFacts {
            addresses,
            tlsa,
            host_memory: host,
            domain_memory: None,
            sender: None,
        }
    }

    fn tls_facts(dane: DaneCheck) -> TlsFacts {
        TlsFacts {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            key_exchange: None,
            legacy: false,
            chain: vec![CertificateInfo {
                subject: "CN=mx".into(),
                issuer: "CN=mx".into(),
                not_after: String::new(),
                sha256: "ab".into(),
                dns_names: vec![],
            }],
            pkix_valid: false,
            dane,
        }
    }

    fn seen_with_tls() -> MemoryEntry {
        let key = MemoryKey::host("mx");
        let obs = Observation {
            at: 100,
            level: TlsLevel::Tls,
            protocol: None,
            cipher: None,
            cert_sha256: None,
            failure: None,
        };
        remember(None, &key, &obs).0
    }

    fn defers(d: &Decision) -> bool {
        matches!(d, Decision::Defer(deferral) if deferral.status.is_temporary())
    }

    // --- RFC 5321 §5.1 and RFC 7505: the route -----------------------------------

    #[test]
    fn route_follows_the_mx_rrset() {
        let mx = |records: Vec<MxRecord>| {
            Lookup::Found(Answer {
                records,
                dnssec: DnssecStatus::Secure,
                canonical_name: None,
            })
        };
        let two = mx(vec![
            MxRecord {
                preference: 20,
                exchange: "b.example.".into(),
            },
            MxRecord {
                preference: 10,
                exchange: "a.example".into(),
            },
        ]);
        assert_eq!(
            route("example.org", &two),
            Ok(Route {
                hosts: vec!["a.example".into(), "b.example".into()],
                mx_dnssec: Some(DnssecStatus::Secure)
            })
        );
        let implicit = Lookup::NoRecords {
            nxdomain: false,
            dnssec: DnssecStatus::Secure,
        };
        assert_eq!(
            route("Example.ORG.", &implicit),
            Ok(Route {
                hosts: vec!["example.org".into()],
                mx_dnssec: None
            })
        );
    }

    #[test]
    fn null_mx_and_nxdomain_fail_permanently() {
        let null = Lookup::Found(Answer {
            records: vec![MxRecord {
                preference: 0,
                exchange: String::new(),
            }],
            dnssec: DnssecStatus::Secure,
            canonical_name: None,
        });
        assert_eq!(
            route("example.org", &null).map_err(|d| d.status),
            Err(SmtpStatus::NULL_MX)
        );
        let nx = Lookup::NoRecords {
            nxdomain: true,
            dnssec: DnssecStatus::Secure,
        };
        assert_eq!(
            route("example.org", &nx).map_err(|d| d.status),
            Err(SmtpStatus::NO_SUCH_DOMAIN)
        );
    }

    #[test]
    fn bogus_or_failed_mx_defers() {
        for mx in [
            Lookup::Bogus {
                reason: "sig".into(),
            },
            Lookup::Failed {
                reason: "SERVFAIL".into(),
            },
        ] {
            assert!(route("example.org", &mx).is_err_and(|d| d.status.is_temporary()));
        }
    }

    // --- RFC 7672 §2.2: DANE comes first -------------------------------------

    #[test]
    fn usable_tlsa_requires_dane() {
        let (a, t) = (addrs(), published(3));
        assert!(matches!(
            requirement(&facts(&a, &t, None)),
            Ok(Requirement::Dane { .. })
        ));
    }

    #[test]
    fn unusable_tlsa_still_requires_tls() {
        let (a, t) = (addrs(), published(0));
        assert_eq!(
            requirement(&facts(&a, &t, None)),
            Ok(Requirement::Tls(TlsReason::UnusableTlsa))
        );
    }

    #[test]
    fn tlsa_servfail_defers_never_plaintext() {
        let (a, t) = (
            addrs(),
            TlsaState::LookupFailed {
                reason: "SERVFAIL".into(),
            },
        );
        let err = requirement(&facts(&a, &t, None)).expect_err("defers");
        assert!(err.status.is_temporary());
    }

    #[test]
    fn bogus_addresses_defer() {
        let (a, t) = (
            Lookup::Bogus {
                reason: "sig".into(),
            },
            no_dane(),
        );
        assert!(requirement(&facts(&a, &t, None)).is_err_and(|d| d.status.is_temporary()));
    }

    #[test]
    fn dane_mismatch_defers() {
        let req = Requirement::Dane {
            records: vec![],
            reference_names: vec![],
        };
        assert!(defers(&decide(
            &req,
            None,
            TlsOutcome::Tls(&tls_facts(DaneCheck::Mismatch { reason: "x".into() }))
        )));
        assert_eq!(
            decide(
                &req,
                None,
                TlsOutcome::Tls(&tls_facts(DaneCheck::Matched {
                    record: 0,
                    depth: 0
                }))
            ),
            Decision::Send(TlsLevel::Dane)
        );
    }

    #[test]
    fn dane_without_starttls_defers_never_plaintext() {
        let req = Requirement::Dane {
            records: vec![],
            reference_names: vec![],
        };
        for outcome in [
            TlsOutcome::NoStarttls,
            TlsOutcome::StarttlsRefused("454"),
            TlsOutcome::HandshakeFailed("x"),
        ] {
            assert!(defers(&decide(&req, None, outcome)));
        }
    }

    // --- SPEC §2 rule 2 / §3: the memory ---------------------------------------

    #[test]
    fn host_seen_with_tls_requires_tls() {
        let (a, t, m) = (addrs(), no_dane(), seen_with_tls());
        assert_eq!(
            requirement(&facts(&a, &t, Some(&m))),
            Ok(Requirement::Tls(TlsReason::HostMemory { since: 100 }))
        );
    }

    #[test]
    fn domain_seen_with_tls_requires_tls() {
        let (a, t, m) = (addrs(), no_dane(), seen_with_tls());
        let f = HostPolicyFacts {
            domain_memory: Some(&m),
            ..facts(&a, &t, None)
        };
        assert_eq!(
            requirement(&f),
            Ok(Requirement::Tls(TlsReason::DomainMemory { since: 100 }))
        );
    }

    #[test]
    fn stripped_starttls_after_tls_defers_as_possible_downgrade() {
        let req = Requirement::Tls(TlsReason::HostMemory { since: 100 });
        let Decision::Defer(d) = decide(&req, None, TlsOutcome::NoStarttls) else {
            panic!("defers")
        };
        assert_eq!(d.status, SmtpStatus::TLS_REQUIRED_TEMP);
        assert!(
            d.reason.contains("did TLS before") && d.reason.contains("downgrade"),
            "{}",
            d.reason
        );
    }

    // --- SPEC §2 rule 3: the sender -----------------------------------------------

    #[test]
    fn sender_setting_requires_tls() {
        let (a, t) = (addrs(), no_dane());
        let sender = SenderRequirement::default();
        let f = HostPolicyFacts {
            sender: Some(&sender),
            ..facts(&a, &t, None)
        };
        assert_eq!(requirement(&f), Ok(Requirement::Tls(TlsReason::Sender)));
        // A server without STARTTLS fails the message for this sender
        // (permanently: the provider cannot take it encrypted).
        let Decision::Defer(d) = decide(
            &Requirement::Tls(TlsReason::Sender),
            Some(&sender),
            TlsOutcome::NoStarttls,
        ) else {
            panic!("not sent")
        };
        assert_eq!(d.status, SmtpStatus::ENCRYPTION_NEEDED);
        assert!(d.reason.contains("no STARTTLS"), "{}", d.reason);
        // A failed handshake may be transient: it defers.
        assert!(matches!(
            decide(&Requirement::Tls(TlsReason::Sender), Some(&sender), TlsOutcome::HandshakeFailed("x")),
            Decision::Defer(d) if d.status.is_temporary()
        ));
    }

    #[test]
    fn sender_requiring_dane_fails_hosts_without_tlsa() {
        let sender = SenderRequirement {
            min_level: MinLevel::Dane,
            min_tls: None,
        };
        let (a, t) = (addrs(), no_dane());
        let f = HostPolicyFacts {
            sender: Some(&sender),
            ..facts(&a, &t, None)
        };
        let err = requirement(&f).expect_err("no DANE, no delivery");
        assert_eq!(err.status, SmtpStatus::ENCRYPTION_NEEDED);
        // With a usable TLSA record the requirement is DANE, and a match sends.
        let t = published(3);
        let f = HostPolicyFacts {
            sender: Some(&sender),
            ..facts(&a, &t, None)
        };
        let req = requirement(&f).expect("DANE");
        assert!(matches!(req, Requirement::Dane { .. }));
        let matched = tls_facts(DaneCheck::Matched {
            record: 0,
            depth: 0,
        });
        assert_eq!(
            decide(&req, Some(&sender), TlsOutcome::Tls(&matched)),
            Decision::Send(TlsLevel::Dane)
        );
    }

    #[test]
    fn sender_minimum_tls_version_is_judged_after_the_handshake() {
        let sender = SenderRequirement {
            min_level: MinLevel::Tls,
            min_tls: Some(crate::sending::TlsVersion::Tls13),
        };
        let mut old = tls_facts(DaneCheck::NotAttempted);
        old.version = "TLSv1.2".into();
        let req = Requirement::Tls(TlsReason::Sender);
        assert!(matches!(
            decide(&req, Some(&sender), TlsOutcome::Tls(&old)),
            Decision::Defer(d) if d.status == SmtpStatus::ENCRYPTION_NEEDED
        ));
        assert_eq!(
            decide(
                &req,
                Some(&sender),
                TlsOutcome::Tls(&tls_facts(DaneCheck::NotAttempted))
            ),
            Decision::Send(TlsLevel::Tls)
        );
    }

    // --- RFC 7435: opportunistic --------------------------------------------------

    #[test]
    fn never_seen_host_is_opportunistic() {
        let (a, t) = (addrs(), no_dane());
        assert_eq!(
            requirement(&facts(&a, &t, None)),
            Ok(Requirement::Opportunistic)
        );
        let (a, t) = (
            addrs(),
            TlsaState::NotApplicable {
                reason: NotApplicable::InsecureMx,
            },
        );
        assert_eq!(
            requirement(&facts(&a, &t, None)),
            Ok(Requirement::Opportunistic)
        );
    }

    #[test]
    fn opportunistic_sends_plaintext_only_without_starttls() {
        let req = Requirement::Opportunistic;
        assert_eq!(
            decide(&req, None, TlsOutcome::NoStarttls),
            Decision::Send(TlsLevel::None)
        );
        assert_eq!(
            decide(&req, None, TlsOutcome::StarttlsRefused("454 4.7.0")),
            Decision::Send(TlsLevel::None)
        );
        assert_eq!(
            decide(
                &req,
                None,
                TlsOutcome::Tls(&tls_facts(DaneCheck::NotAttempted))
            ),
            Decision::Send(TlsLevel::Tls)
        );
    }

    #[test]
    fn failed_opportunistic_handshake_retries_in_plaintext() {
        assert_eq!(
            decide(
                &Requirement::Opportunistic,
                None,
                TlsOutcome::HandshakeFailed("alert")
            ),
            Decision::RetryPlaintext
        );
    }

    // --- SPEC §3: what is recorded ---------------------------------------------

    #[test]
    fn probes_that_reached_a_server_are_observations() {
        assert_eq!(
            probe_observation(&ProbeOutcome::NoStarttls, 1).map(|o| o.level),
            Some(TlsLevel::None)
        );
        assert!(
            probe_observation(
                &ProbeOutcome::ConnectFailed {
                    reason: "refused".into()
                },
                1
            )
            .is_none()
        );
        assert!(probe_observation(&ProbeOutcome::NotAllowed, 1).is_none());
        let tls = ProbeOutcome::Tls(tls_facts(DaneCheck::NotAttempted));
        assert_eq!(
            probe_observation(&tls, 1).map(|o| o.level),
            Some(TlsLevel::Tls)
        );
    }

    #[test]
    fn observations_carry_the_level_and_details() {
        let o = observation(
            TlsOutcome::Tls(&tls_facts(DaneCheck::Matched {
                record: 0,
                depth: 0,
            })),
            5,
        );
        assert_eq!(
            (o.level, o.protocol.as_deref(), o.cert_sha256.as_deref()),
            (TlsLevel::Dane, Some("TLSv1.3"), Some("ab"))
        );
        let o = observation(TlsOutcome::NoStarttls, 6);
        assert_eq!(o.level, TlsLevel::None);
        assert!(o.failure.is_some());
    }
}

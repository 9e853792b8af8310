//! Facts about a domain → its verdict (SPEC §1).
//!
//! [`verdict`] is the one place that turns what DNS and the probes observed
//! into `DANE ok` / `SSL ok` / `no SSL` / `SSL ?` or a non-delivery state. It
//! follows the delivery rules a sending MTA applies (SPEC §2), so that the
//! check predicts what the relay will do:
//!
//! * RFC 5321 §5.1: MX hosts in preference order; no MX → the domain itself
//!   (implicit MX); RFC 7505: a null MX means the domain accepts no mail.
//! * RFC 7672 §2.2: a secure TLSA RRset makes STARTTLS mandatory; with usable
//!   records the server must match one, else mail to it is held; a failed
//!   TLSA look-up holds mail (never a downgrade).
//! * RFC 7435: otherwise TLS is opportunistic, and a server without STARTTLS
//!   gets plaintext.
//!
//! A route (one address of one MX host) is *deliverable* at some level,
//! *held* for a reason, or *unreachable*. The domain's level is the weakest
//! among deliverable routes, because mail may go to any of them. When no
//! route is deliverable, the domain's problem is the reason of the most
//! preferred held route, else `unreachable` / `no_mail_servers`.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::address::Target;
use crate::dane::TlsaState;
use crate::dns::{DnssecStatus, Lookup, MxRecord};
use crate::level::{Level, TlsLevel};
use crate::probe::{AddressProbe, DaneCheck, ProbeOutcome};
use crate::report::{CheckReport, MxReport};

/// Everything learned about one MX host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The host name (for implicit MX: the domain itself).
    pub host: String,
    /// MX preference (0 for implicit MX).
    pub preference: u16,
    /// Its A/AAAA look-up.
    pub addresses: Lookup<IpAddr>,
    /// What the TLSA look-ups mean (RFC 7672 §2.2).
    pub tlsa: TlsaState,
    /// One probe per address, in the order of `addresses`.
    pub probes: Vec<AddressProbe>,
}

/// Everything learned about a domain's mail servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainFacts {
    /// The MX look-up.
    pub mx: Lookup<MxRecord>,
    /// True when there was no MX RRset and the domain itself is the host.
    pub implicit_mx: bool,
    /// The hosts mail could go to, most preferred first (empty for null MX,
    /// NXDOMAIN, and failed MX look-ups).
    pub hosts: Vec<HostFacts>,
}

/// Why mail to a domain would not be delivered (SPEC §1), or why the check
/// could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The input is not a mail address or domain.
    InvalidAddress,
    /// The domain does not exist.
    Nxdomain,
    /// RFC 7505: the domain accepts no mail.
    NullMx,
    /// Neither MX hosts nor address records to deliver to.
    NoMailServers,
    /// DANE is published but the server does not satisfy it: mail is held.
    DaneMismatch,
    /// DNSSEC validation failed: mail is held.
    DnssecBogus,
    /// A TLSA look-up failed for a DNSSEC-signed host: mail is held.
    TlsaLookupFailed,
    /// No mail server could be reached.
    Unreachable,
    /// DNS gave no usable answer (SERVFAIL, time-out): try again later.
    DnsError,
}

impl Problem {
    /// The state as a person reads it beside the symbol.
    pub fn status_text(self) -> &'static str {
        match self {
            Problem::InvalidAddress => "invalid address",
            Problem::Nxdomain => "no such domain",
            Problem::NullMx => "accepts no mail",
            Problem::NoMailServers => "no mail servers",
            Problem::DaneMismatch => "DANE mismatch: mail held",
            Problem::DnssecBogus => "DNSSEC bogus: mail held",
            Problem::TlsaLookupFailed => "TLSA look-up failed: mail held",
            Problem::Unreachable => "unreachable",
            Problem::DnsError => "DNS error",
        }
    }

    /// Whether the state may change by itself soon (temporary, RFC 5321 4xx),
    /// as opposed to a published fact (permanent).
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            Problem::DaneMismatch
                | Problem::DnssecBogus
                | Problem::TlsaLookupFailed
                | Problem::Unreachable
                | Problem::DnsError
        )
    }
}

/// What a route (one address of one host) means for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    /// Mail could be delivered at this level.
    Deliverable(TlsLevel),
    /// Mail to this route is held (deferred) for this reason.
    Held(Problem, String),
    /// Not reached (or not allowed to be probed).
    Unreachable(String),
}

/// Judges one probed address of a host under the host's TLSA state.
pub fn route_state(tlsa: &TlsaState, probe: &AddressProbe) -> RouteState {
    if let TlsaState::LookupFailed { reason } = tlsa {
        return RouteState::Held(Problem::TlsaLookupFailed, reason.clone());
    }
    let dane_required = tlsa.requires_tls();
    let plaintext = |why: String| {
        if dane_required {
            // RFC 7672 §2.2: with a secure TLSA RRset "the SMTP client MUST
            // NOT deliver mail via an insecure channel".
            RouteState::Held(Problem::DaneMismatch, format!("TLSA published, but {why}"))
        } else {
            RouteState::Deliverable(TlsLevel::None)
        }
    };
    match &probe.outcome {
        ProbeOutcome::NotAllowed => RouteState::Unreachable(format!(
            "{} is a private, loopback or link-local address; not probed (allow with --allow-private)",
            probe.address
        )),
        ProbeOutcome::ConnectFailed { reason } => {
            RouteState::Unreachable(format!("connect to {} failed: {reason}", probe.address))
        }
        ProbeOutcome::SmtpFailed { reason } => {
            RouteState::Unreachable(format!("SMTP with {} failed: {reason}", probe.address))
        }
        ProbeOutcome::NoStarttls => plaintext("the server offers no STARTTLS".into()),
        ProbeOutcome::StarttlsRefused { reply } => {
            plaintext(format!("STARTTLS was refused: {reply}"))
        }
        ProbeOutcome::HandshakeFailed { reason } => {
            plaintext(format!("the TLS handshake failed: {reason}"))
        }
        ProbeOutcome::Tls(facts) => {
            if !tlsa.requires_match() {
                return RouteState::Deliverable(TlsLevel::Tls);
            }
            match &facts.dane {
                DaneCheck::Matched { .. } => RouteState::Deliverable(TlsLevel::Dane),
                DaneCheck::Mismatch { reason } => RouteState::Held(
                    Problem::DaneMismatch,
                    format!("the certificate matches no usable TLSA record: {reason}"),
                ),
                DaneCheck::NotAttempted => RouteState::Held(
                    Problem::DaneMismatch,
                    "usable TLSA records exist but the certificate was not checked against them"
                        .into(),
                ),
            }
        }
    }
}

/// The routes of one host, or why it has none.
pub fn host_routes(host: &HostFacts) -> Vec<RouteState> {
    match &host.addresses {
        Lookup::Bogus { reason } => {
            return vec![RouteState::Held(
                Problem::DnssecBogus,
                format!(
                    "address records of {} are DNSSEC-bogus: {reason}",
                    host.host
                ),
            )];
        }
        Lookup::Failed { reason } => {
            return vec![RouteState::Unreachable(format!(
                "address look-up of {} failed: {reason}",
                host.host
            ))];
        }
        Lookup::NoRecords { .. } => return Vec::new(),
        Lookup::Found(_) => {}
    }
    if host.probes.is_empty() {
        if let TlsaState::LookupFailed { reason } = &host.tlsa {
            return vec![RouteState::Held(Problem::TlsaLookupFailed, reason.clone())];
        }
        return vec![RouteState::Unreachable(format!(
            "{} was not probed",
            host.host
        ))];
    }
    host.probes
        .iter()
        .map(|p| route_state(&host.tlsa, p))
        .collect()
}

/// The verdict for a domain: level, problem, and a line for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The domain's level: the weakest deliverable route.
    pub level: Level,
    /// Why mail would not be delivered, if it would not.
    pub problem: Option<Problem>,
    /// One line for a person.
    pub detail: String,
}

/// Judges a domain from its facts (pure; see the module docs for the rules).
pub fn judge(facts: &DomainFacts) -> Verdict {
    let fail = |problem: Problem, detail: String| Verdict {
        level: Level::Unknown,
        problem: Some(problem),
        detail,
    };
    match &facts.mx {
        Lookup::Failed { reason } => {
            return fail(Problem::DnsError, format!("MX look-up failed: {reason}"));
        }
        Lookup::Bogus { reason } => {
            return fail(
                Problem::DnssecBogus,
                format!(
                    "MX records are DNSSEC-bogus: {reason} (if every domain shows this, the resolver may be stripping DNSSEC records: use a DNSSEC-aware --resolver)"
                ),
            );
        }
        Lookup::NoRecords { nxdomain: true, .. } => {
            return fail(Problem::Nxdomain, "the domain does not exist".into());
        }
        Lookup::Found(answer) if answer.records.iter().all(MxRecord::is_null) => {
            // RFC 7505 §3: "MX 0 ." declares that the domain accepts no mail.
            return fail(
                Problem::NullMx,
                "the domain declares that it accepts no mail (null MX, RFC 7505)".into(),
            );
        }
        _ => {}
    }

    let mut weakest: Option<TlsLevel> = None;
    let mut first_held: Option<(Problem, String)> = None;
    let mut first_unreachable: Option<String> = None;
    let mut notes: Vec<String> = Vec::new();
    let mut routes_total = 0;
    for host in &facts.hosts {
        for route in host_routes(host) {
            routes_total += 1;
            match route {
                RouteState::Deliverable(level) => {
                    weakest = Some(weakest.map_or(level, |w| w.min(level)))
                }
                RouteState::Held(problem, why) => {
                    notes.push(format!("{}: {}", host.host, problem.status_text()));
                    first_held.get_or_insert((problem, format!("{}: {why}", host.host)));
                }
                RouteState::Unreachable(why) => {
                    first_unreachable.get_or_insert(why);
                }
            }
        }
    }

    if let Some(level) = weakest {
        let mut detail = match level {
            TlsLevel::Dane => {
                "every reachable mail server is authenticated by DNSSEC-signed TLSA records (DANE)"
                    .to_owned()
            }
            TlsLevel::Tls => {
                "STARTTLS works on every reachable mail server: mail travels encrypted".to_owned()
            }
            TlsLevel::None => {
                let hosts = plaintext_hosts(facts);
                format!("{hosts} offers no working STARTTLS: mail travels unencrypted")
            }
        };
        if level == TlsLevel::Tls && dane_partial(facts) {
            detail.push_str(" (DANE on some servers only)");
        }
        if !notes.is_empty() {
            detail.push_str(&format!("; skipped: {}", notes.join(", ")));
        }
        return Verdict {
            level: Level::Known(level),
            problem: None,
            detail,
        };
    }
    if let Some((problem, why)) = first_held {
        return fail(problem, why);
    }
    if routes_total == 0 {
        let what = if facts.implicit_mx {
            "no MX records and no address records for the domain"
        } else {
            "the MX hosts have no address records"
        };
        return fail(Problem::NoMailServers, what.into());
    }
    fail(
        Problem::Unreachable,
        first_unreachable.unwrap_or_else(|| "no mail server could be reached".into()),
    )
}

fn plaintext_hosts(facts: &DomainFacts) -> String {
    let names: Vec<&str> = facts
        .hosts
        .iter()
        .filter(|h| host_routes(h).contains(&RouteState::Deliverable(TlsLevel::None)))
        .map(|h| h.host.as_str())
        .collect();
    match names.as_slice() {
        [one] => (*one).to_owned(),
        _ => names.join(", "),
    }
}

fn dane_partial(facts: &DomainFacts) -> bool {
    facts
        .hosts
        .iter()
        .any(|h| host_routes(h).contains(&RouteState::Deliverable(TlsLevel::Dane)))
}

/// Judges the facts and lays them out as the report the CLI and the API
/// print (SPEC §1 details). `now` is when the facts were gathered.
pub fn verdict(target: &Target, facts: &DomainFacts, now: SystemTime) -> CheckReport {
    let v = judge(facts);
    let mx_dnssec = facts.mx.dnssec();
    CheckReport {
        address: target.to_string(),
        domain: target.domain().as_str().to_owned(),
        level: v.level,
        status: v.level.status_text().to_owned(),
        problem: v.problem,
        detail: v.detail,
        mx: facts
            .hosts
            .iter()
            .map(|h| MxReport::from_facts(h, if facts.implicit_mx { None } else { mx_dnssec }))
            .collect(),
        checked_at: humantime::format_rfc3339_seconds(now).to_string(),
        source: crate::report::Source::Probe,
    }
}

/// The DNSSEC status shown for a host: the weakest of its MX and address
/// look-ups (a failed look-up shows nothing).
pub fn host_dnssec(mx: Option<DnssecStatus>, addresses: &Lookup<IpAddr>) -> Option<DnssecStatus> {
    let addr = addresses.dnssec()?;
    Some(mx.map_or(addr, |m| m.and(addr)))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::dane::{NotApplicable, TlsaRecord};
    use crate::dns::Answer;
    use crate::probe::{CertificateInfo, TlsFacts};

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 25));

    fn secure<T>(records: Vec<T>) -> Lookup<T> {
        Lookup::Found(Answer {
            records,
            dnssec: DnssecStatus::Secure,
            canonical_name: None,
        })
    }

    fn insecure<T>(records: Vec<T>) -> Lookup<T> {
        Lookup::Found(Answer {
            records,
            dnssec: DnssecStatus::Insecure,
            canonical_name: None,
        })
    }

    fn mx(names: &[&str]) -> Lookup<MxRecord> {
        secure(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| MxRecord {
                    preference: 10 * (i as u16 + 1),
                    exchange: (*n).into(),
                })
                .collect(),
        )
    }

    fn tls(dane: DaneCheck) -> ProbeOutcome {
        ProbeOutcome::Tls(TlsFacts {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            key_exchange: Some("X25519".into()),
            legacy: false,
            chain: vec![CertificateInfo {
                subject: "CN=mx".into(),
                issuer: "CN=mx".into(),
                not_after: "2030-01-01T00:00:00Z".into(),
                sha256: "00".into(),
                dns_names: vec![],
            }],
            pkix_valid: false,
            dane,
        })
    }

    fn no_dane() -> TlsaState {
        TlsaState::NotApplicable {
            reason: NotApplicable::NoTlsa,
        }
    }

    fn dane(usage: u8) -> TlsaState {
        TlsaState::Published {
            owner: "_25._tcp.mx".into(),
            records: vec![TlsaRecord {
                usage,
                selector: 1,
                matching: 1,
                data: vec![7; 32],
            }],
            reference_names: vec!["mx".into()],
        }
    }

    fn host(name: &str, tlsa: TlsaState, outcome: ProbeOutcome) -> HostFacts {
        HostFacts {
            host: name.into(),
            preference: 10,
            addresses: secure(vec![IP]),
            tlsa,
            probes: vec![AddressProbe {
                address: IP,
                outcome,
                discarded_pipelined: false,
            }],
        }
    }

    fn domain(hosts: Vec<HostFacts>) -> DomainFacts {
        let names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
        DomainFacts {
            mx: mx(&names),
            implicit_mx: false,
            hosts,
        }
    }

    fn judged(facts: DomainFacts) -> (Level, Option<Problem>) {
        let v = judge(&facts);
        assert!(!v.detail.is_empty() && !v.detail.contains('\n'));
        (v.level, v.problem)
    }

    const DANE: Level = Level::Known(TlsLevel::Dane);
    const TLS: Level = Level::Known(TlsLevel::Tls);
    const NONE: Level = Level::Known(TlsLevel::None);

    // --- RFC 5321 §5.1 (MX, implicit MX) and RFC 7505 (null MX) -----------

    #[test]
    fn nxdomain_is_its_own_state() {
        let facts = DomainFacts {
            mx: Lookup::NoRecords {
                nxdomain: true,
                dnssec: DnssecStatus::Secure,
            },
            implicit_mx: false,
            hosts: vec![],
        };
        assert_eq!(judged(facts), (Level::Unknown, Some(Problem::Nxdomain)));
    }

    #[test]
    fn null_mx_accepts_no_mail() {
        let facts = DomainFacts {
            mx: mx(&[""]),
            implicit_mx: false,
            hosts: vec![],
        };
        assert_eq!(judged(facts), (Level::Unknown, Some(Problem::NullMx)));
    }

    #[test]
    fn implicit_mx_uses_the_domain_itself() {
        let facts = DomainFacts {
            mx: Lookup::NoRecords {
                nxdomain: false,
                dnssec: DnssecStatus::Secure,
            },
            implicit_mx: true,
            hosts: vec![host("example.org", no_dane(), tls(DaneCheck::NotAttempted))],
        };
        assert_eq!(judged(facts), (TLS, None));
    }

    #[test]
    fn implicit_mx_without_addresses_has_no_mail_servers() {
        let mut h = host("example.org", no_dane(), ProbeOutcome::NoStarttls);
        h.addresses = Lookup::NoRecords {
            nxdomain: false,
            dnssec: DnssecStatus::Secure,
        };
        h.probes.clear();
        let facts = DomainFacts {
            mx: Lookup::NoRecords {
                nxdomain: false,
                dnssec: DnssecStatus::Secure,
            },
            implicit_mx: true,
            hosts: vec![h],
        };
        assert_eq!(
            judged(facts),
            (Level::Unknown, Some(Problem::NoMailServers))
        );
    }

    #[test]
    fn mx_lookup_failure_is_a_dns_error_not_a_verdict() {
        let facts = DomainFacts {
            mx: Lookup::Failed {
                reason: "SERVFAIL".into(),
            },
            implicit_mx: false,
            hosts: vec![],
        };
        assert_eq!(judged(facts), (Level::Unknown, Some(Problem::DnsError)));
    }

    #[test]
    fn bogus_mx_holds_mail() {
        let facts = DomainFacts {
            mx: Lookup::Bogus {
                reason: "bad RRSIG".into(),
            },
            implicit_mx: false,
            hosts: vec![],
        };
        assert_eq!(judged(facts), (Level::Unknown, Some(Problem::DnssecBogus)));
    }

    #[test]
    fn first_mx_refusing_connections_falls_back_to_the_second() {
        let down = host(
            "mx1",
            no_dane(),
            ProbeOutcome::ConnectFailed {
                reason: "refused".into(),
            },
        );
        let up = host("mx2", no_dane(), tls(DaneCheck::NotAttempted));
        assert_eq!(judged(domain(vec![down, up])), (TLS, None));
    }

    #[test]
    fn all_mx_unreachable_is_unreachable() {
        let down = host(
            "mx1",
            no_dane(),
            ProbeOutcome::ConnectFailed {
                reason: "refused".into(),
            },
        );
        assert_eq!(
            judged(domain(vec![down])),
            (Level::Unknown, Some(Problem::Unreachable))
        );
    }

    #[test]
    fn private_addresses_not_probed_are_unreachable_with_a_hint() {
        let h = host("mx1", no_dane(), ProbeOutcome::NotAllowed);
        let v = judge(&domain(vec![h]));
        assert_eq!(v.problem, Some(Problem::Unreachable));
        assert!(v.detail.contains("--allow-private"), "{}", v.detail);
    }

    // --- SPEC §1: the domain's level is the weakest deliverable MX -------

    #[test]
    fn weakest_mx_decides() {
        let a = host(
            "mx1",
            dane(3),
            tls(DaneCheck::Matched {
                record: 0,
                depth: 0,
            }),
        );
        let b = host("mx2", no_dane(), ProbeOutcome::NoStarttls);
        assert_eq!(judged(domain(vec![a.clone(), b])), (NONE, None));
        let c = host("mx2", no_dane(), tls(DaneCheck::NotAttempted));
        assert_eq!(judged(domain(vec![a, c])), (TLS, None));
    }

    // --- RFC 7435: opportunistic TLS ----------------------------------------

    #[test]
    fn no_starttls_is_no_ssl() {
        assert_eq!(
            judged(domain(vec![host(
                "mx",
                no_dane(),
                ProbeOutcome::NoStarttls
            )])),
            (NONE, None)
        );
    }

    #[test]
    fn starttls_454_is_no_ssl() {
        let h = host(
            "mx",
            no_dane(),
            ProbeOutcome::StarttlsRefused {
                reply: "454 4.7.0 TLS not available".into(),
            },
        );
        assert_eq!(judged(domain(vec![h])), (NONE, None));
    }

    #[test]
    fn failed_opportunistic_handshake_is_no_ssl() {
        let h = host(
            "mx",
            no_dane(),
            ProbeOutcome::HandshakeFailed {
                reason: "alert".into(),
            },
        );
        assert_eq!(judged(domain(vec![h])), (NONE, None));
    }

    #[test]
    fn insecure_mx_with_tls_is_ssl_ok() {
        let mut facts = domain(vec![host(
            "mx",
            TlsaState::NotApplicable {
                reason: NotApplicable::InsecureMx,
            },
            tls(DaneCheck::NotAttempted),
        )]);
        facts.mx = insecure(vec![MxRecord {
            preference: 10,
            exchange: "mx".into(),
        }]);
        assert_eq!(judged(facts), (TLS, None));
    }

    // --- RFC 7672 §2.2: TLSA look-up and usability ----------------------------

    #[test]
    fn dane_ee_match_is_dane_ok() {
        assert_eq!(
            judged(domain(vec![host(
                "mx",
                dane(3),
                tls(DaneCheck::Matched {
                    record: 0,
                    depth: 0
                })
            )])),
            (DANE, None)
        );
    }

    #[test]
    fn dane_mismatch_holds_mail() {
        let h = host(
            "mx",
            dane(3),
            tls(DaneCheck::Mismatch {
                reason: "no match".into(),
            }),
        );
        assert_eq!(
            judged(domain(vec![h])),
            (Level::Unknown, Some(Problem::DaneMismatch))
        );
    }

    #[test]
    fn dane_without_starttls_holds_mail_never_plaintext() {
        for outcome in [
            ProbeOutcome::NoStarttls,
            ProbeOutcome::StarttlsRefused {
                reply: "454".into(),
            },
            ProbeOutcome::HandshakeFailed { reason: "x".into() },
        ] {
            let h = host("mx", dane(3), outcome);
            assert_eq!(
                judged(domain(vec![h])),
                (Level::Unknown, Some(Problem::DaneMismatch))
            );
        }
    }

    #[test]
    fn pkix_only_tlsa_makes_tls_mandatory_but_not_dane_ok() {
        assert_eq!(
            judged(domain(vec![host(
                "mx",
                dane(1),
                tls(DaneCheck::NotAttempted)
            )])),
            (TLS, None)
        );
        assert_eq!(
            judged(domain(vec![host("mx", dane(1), ProbeOutcome::NoStarttls)])),
            (Level::Unknown, Some(Problem::DaneMismatch))
        );
    }

    #[test]
    fn tlsa_servfail_defers_never_plaintext() {
        let h = host(
            "mx",
            TlsaState::LookupFailed {
                reason: "SERVFAIL".into(),
            },
            ProbeOutcome::NoStarttls,
        );
        assert_eq!(
            judged(domain(vec![h])),
            (Level::Unknown, Some(Problem::TlsaLookupFailed))
        );
    }

    #[test]
    fn bogus_address_records_hold_mail() {
        let mut h = host("mx", no_dane(), tls(DaneCheck::NotAttempted));
        h.addresses = Lookup::Bogus {
            reason: "bad sig".into(),
        };
        h.probes.clear();
        assert_eq!(
            judged(domain(vec![h])),
            (Level::Unknown, Some(Problem::DnssecBogus))
        );
    }

    #[test]
    fn held_mx_is_skipped_when_another_delivers() {
        let held = host(
            "mx1",
            dane(3),
            tls(DaneCheck::Mismatch { reason: "x".into() }),
        );
        let ok = host(
            "mx2",
            dane(3),
            tls(DaneCheck::Matched {
                record: 0,
                depth: 0,
            }),
        );
        let v = judge(&domain(vec![held, ok]));
        assert_eq!((v.level, v.problem), (DANE, None));
        assert!(v.detail.contains("skipped"), "{}", v.detail);
    }

    // --- The report ----------------------------------------------------------

    #[test]
    fn report_marks_the_matched_tlsa_record() {
        let mut state = dane(3);
        if let TlsaState::Published { records, .. } = &mut state {
            records.insert(
                0,
                TlsaRecord {
                    usage: 1,
                    selector: 1,
                    matching: 1,
                    data: vec![1; 32],
                },
            );
            records.push(TlsaRecord {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![9; 32],
            });
        }
        // Record 1 of the usable ones (the third in the RRset) matched.
        let facts = domain(vec![host(
            "mx",
            state,
            tls(DaneCheck::Matched {
                record: 1,
                depth: 0,
            }),
        )]);
        let target = Target::parse_address_or_domain("a@example.org").expect("valid");
        let report = verdict(&target, &facts, SystemTime::UNIX_EPOCH);
        let matched: Vec<bool> = report.mx[0].tlsa.iter().map(|t| t.matched).collect();
        assert_eq!(matched, vec![false, false, true]);
        assert_eq!(report.mx[0].dane, crate::report::DaneSummary::Ok);
        assert_eq!(report.status, "DANE ok");
        assert_eq!(report.checked_at, "1970-01-01T00:00:00Z");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["level"], "dane");
        assert_eq!(json["mx"][0]["dnssec"], "secure");
        assert_eq!(json["mx"][0]["tls_version"], "TLSv1.3");
        assert_eq!(json["problem"], serde_json::Value::Null);
    }
}

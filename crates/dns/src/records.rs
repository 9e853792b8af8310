//! Pure helpers shared by both modes: walking a CNAME chain in an answer
//! section, turning RDATA into mailtls-core records, and combining the A and
//! AAAA look-ups of one host.

use std::net::IpAddr;

use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use mailtls_core::dane::TlsaRecord;
use mailtls_core::dns::{Answer, DnssecStatus, Lookup, MxRecord};

/// Longest CNAME chain we follow (RFC 1034 §3.6.2 sets no limit; resolvers
/// such as unbound stop at 8–12).
pub(crate) const MAX_CNAME_CHAIN: usize = 12;

/// What an answer section says about one question.
#[derive(Debug)]
pub(crate) struct Chain<'a> {
    /// The CNAME records followed from the query name, in order.
    pub(crate) links: Vec<&'a Record>,
    /// The records of the asked type at the end of the chain (no RRSIGs).
    pub(crate) records: Vec<&'a Record>,
    /// The end of the chain, when at least one CNAME was followed.
    pub(crate) canonical: Option<Name>,
}

impl Chain<'_> {
    /// Every record the conclusion depends on: links, then records.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Record> {
        self.links.iter().chain(self.records.iter()).copied()
    }
}

/// Follows CNAMEs from `qname` through `answers` (RFC 1034 §3.6.2, RFC 2181
/// §10.1) and collects the records of type `rtype` at the end. RRSIGs and
/// records of other names are ignored. A chain longer than
/// [`MAX_CNAME_CHAIN`] (or a loop) is an error.
pub(crate) fn follow_cnames<'a>(
    qname: &Name,
    rtype: RecordType,
    answers: &'a [Record],
) -> Result<Chain<'a>, String> {
    let mut current = qname.clone();
    let mut links: Vec<&Record> = Vec::new();
    loop {
        let records: Vec<&Record> = answers
            .iter()
            .filter(|r| r.record_type() == rtype && r.name == current)
            .collect();
        if !records.is_empty() || rtype == RecordType::CNAME {
            break Ok(Chain {
                canonical: (!links.is_empty()).then_some(current),
                links,
                records,
            });
        }
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(CNAME(target)) if r.name == current => Some((r, target)),
            _ => None,
        });
        let Some((link, target)) = next else {
            break Ok(Chain {
                canonical: (!links.is_empty()).then_some(current),
                links,
                records,
            });
        };
        if links.len() >= MAX_CNAME_CHAIN {
            break Err(format!(
                "CNAME chain from {qname} is longer than {MAX_CNAME_CHAIN} links or loops"
            ));
        }
        links.push(link);
        current = target.clone();
    }
}

/// A name as mailtls-core wants it: lower case, no trailing dot; the root
/// is `""`.
pub(crate) fn name_text(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    text.trim_end_matches('.').to_owned()
}

/// Parses a host or domain name typed by a caller as an absolute name.
pub(crate) fn absolute_name(text: &str) -> Result<Name, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.len() > 254 {
        return Err(format!("{text:?} is not a valid domain name"));
    }
    let mut name = Name::from_ascii(trimmed)
        .map_err(|e| format!("{text:?} is not a valid domain name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// An MX record (RFC 5321 §5.1). The null MX `0 .` of RFC 7505 keeps the
/// exchange `""`.
pub(crate) fn mx_record(data: &RData) -> Option<MxRecord> {
    match data {
        RData::MX(mx) => Some(MxRecord {
            preference: mx.preference,
            exchange: name_text(&mx.exchange),
        }),
        _ => None,
    }
}

/// An A or AAAA record's address.
pub(crate) fn ip_address(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// A TLSA record (RFC 6698 §2.1), parameters as numbers.
pub(crate) fn tlsa_record(data: &RData) -> Option<TlsaRecord> {
    match data {
        RData::TLSA(tlsa) => Some(TlsaRecord {
            usage: u8::from(tlsa.cert_usage),
            selector: u8::from(tlsa.selector),
            matching: u8::from(tlsa.matching),
            data: tlsa.cert_data.clone(),
        }),
        _ => None,
    }
}

/// Types a raw look-up: converts each RDATA, keeping the status.
pub(crate) fn typed<T>(raw: Lookup<RData>, convert: impl Fn(&RData) -> Option<T>) -> Lookup<T> {
    match raw {
        Lookup::Found(answer) => {
            let records: Vec<T> = answer.records.iter().filter_map(convert).collect();
            if records.is_empty() {
                // The answer held only records of another type; treat it as
                // NODATA rather than inventing an empty RRset.
                return Lookup::NoRecords {
                    nxdomain: false,
                    dnssec: answer.dnssec,
                };
            }
            Lookup::Found(Answer {
                records,
                dnssec: answer.dnssec,
                canonical_name: answer.canonical_name,
            })
        }
        Lookup::NoRecords { nxdomain, dnssec } => Lookup::NoRecords { nxdomain, dnssec },
        Lookup::Bogus { reason } => Lookup::Bogus { reason },
        Lookup::Failed { reason } => Lookup::Failed { reason },
    }
}

/// Combines a host's A and AAAA look-ups into one address look-up.
///
/// * Either bogus → bogus: a forged answer taints the host.
/// * Addresses found → all of them, with the status of everything that was
///   answered (found or denied) combined by [`DnssecStatus::and`]. A failed
///   half (e.g. SERVFAIL for AAAA) is left out: its addresses are unknown and
///   will not be tried, so it does not weaken the status of those that are.
/// * Nothing found → failed if either half failed (fail closed), else a
///   denial that is NXDOMAIN only if both said so.
pub(crate) fn combine_addresses(v4: Lookup<IpAddr>, v6: Lookup<IpAddr>) -> Lookup<IpAddr> {
    for half in [&v4, &v6] {
        if let Lookup::Bogus { reason } = half {
            return Lookup::Bogus {
                reason: reason.clone(),
            };
        }
    }
    let found = matches!(v4, Lookup::Found(_)) || matches!(v6, Lookup::Found(_));
    if !found {
        return match (v4, v6) {
            (Lookup::Failed { reason }, _) | (_, Lookup::Failed { reason }) => {
                Lookup::Failed { reason }
            }
            (
                Lookup::NoRecords {
                    nxdomain: nx4,
                    dnssec: s4,
                },
                Lookup::NoRecords {
                    nxdomain: nx6,
                    dnssec: s6,
                },
            ) => Lookup::NoRecords {
                nxdomain: nx4 && nx6,
                dnssec: s4.and(s6),
            },
            _ => Lookup::Failed {
                reason: "inconsistent address look-ups".to_owned(),
            },
        };
    }
    let mut records = Vec::new();
    let mut dnssec: Option<DnssecStatus> = None;
    let mut canonical_name = None;
    for half in [v4, v6] {
        let status = match half {
            Lookup::Found(answer) => {
                records.extend(answer.records);
                canonical_name = canonical_name.or(answer.canonical_name);
                answer.dnssec
            }
            Lookup::NoRecords { dnssec, .. } => dnssec,
            Lookup::Bogus { .. } | Lookup::Failed { .. } => continue,
        };
        dnssec = Some(dnssec.map_or(status, |d| d.and(status)));
    }
    Lookup::Found(Answer {
        records,
        dnssec: dnssec.unwrap_or(DnssecStatus::Insecure),
        canonical_name,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;

    use hickory_proto::rr::rdata::{A, MX};

    use super::*;
    use DnssecStatus::*;

    fn name(text: &str) -> Name {
        Name::from_str(text).expect("test name")
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target))))
    }

    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(
            name(owner),
            300,
            RData::A(A(Ipv4Addr::new(192, 0, 2, last))),
        )
    }

    fn found(ips: &[IpAddr], dnssec: DnssecStatus, canonical: Option<&str>) -> Lookup<IpAddr> {
        Lookup::Found(Answer {
            records: ips.to_vec(),
            dnssec,
            canonical_name: canonical.map(str::to_owned),
        })
    }

    #[test]
    fn direct_answer_has_no_canonical_name() {
        let answers = [a("mx.example.", 1), a("other.example.", 2)];
        let chain = follow_cnames(&name("MX.example."), RecordType::A, &answers).expect("chain");
        assert_eq!(chain.records.len(), 1);
        assert!(chain.links.is_empty());
        assert_eq!(chain.canonical, None);
    }

    // RFC 7672 §2.2.2 needs the fully CNAME-expanded name.
    #[test]
    fn cname_chain_is_followed_in_any_order() {
        let answers = [
            a("c.example.net.", 7),
            cname("b.example.", "c.example.net."),
            cname("a.example.", "b.example."),
        ];
        let chain = follow_cnames(&name("a.example."), RecordType::A, &answers).expect("chain");
        assert_eq!(chain.links.len(), 2);
        assert_eq!(chain.records.len(), 1);
        assert_eq!(
            chain.canonical.map(|n| name_text(&n)),
            Some("c.example.net".to_owned())
        );
    }

    #[test]
    fn cname_to_nothing_is_an_empty_chain_end() {
        let answers = [cname("a.example.", "b.example.")];
        let chain = follow_cnames(&name("a.example."), RecordType::A, &answers).expect("chain");
        assert!(chain.records.is_empty());
        assert_eq!(chain.canonical, Some(name("b.example.")));
    }

    #[test]
    fn cname_loop_is_an_error() {
        let answers = [
            cname("a.example.", "b.example."),
            cname("b.example.", "a.example."),
        ];
        assert!(follow_cnames(&name("a.example."), RecordType::A, &answers).is_err());
    }

    // RFC 7505 §3: the null MX's exchange is the root.
    #[test]
    fn null_mx_exchange_is_empty() {
        let mx = mx_record(&RData::MX(MX::new(0, Name::root()))).expect("mx");
        assert_eq!(mx.exchange, "");
        assert!(mx.is_null());
        let mx = mx_record(&RData::MX(MX::new(10, name("MX1.Example.")))).expect("mx");
        assert_eq!(mx.exchange, "mx1.example");
    }

    #[test]
    fn names_are_parsed_as_absolute() {
        assert_eq!(
            absolute_name("example.org").expect("name"),
            name("example.org.")
        );
        assert!(absolute_name("").is_err());
        assert!(absolute_name("a..b").is_err());
    }

    #[test]
    fn secure_a_and_secure_nodata_aaaa_are_secure() {
        let v4 = found(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], Secure, None);
        let v6 = Lookup::NoRecords {
            nxdomain: false,
            dnssec: Secure,
        };
        let both = combine_addresses(v4, v6);
        assert_eq!(both.dnssec(), Some(Secure));
        assert_eq!(both.records().len(), 1);
    }

    // RFC 7672 §2.2.2: every address RRset must be secure.
    #[test]
    fn one_insecure_half_makes_the_host_insecure() {
        let v4 = found(
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Secure,
            Some("real.example"),
        );
        let v6 = found(&[IpAddr::V6(Ipv6Addr::LOCALHOST)], Insecure, None);
        let both = combine_addresses(v4, v6);
        assert_eq!(both.dnssec(), Some(Insecure));
        assert_eq!(both.records().len(), 2);
        assert!(matches!(
            both,
            Lookup::Found(Answer {
                canonical_name: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn a_bogus_half_makes_the_host_bogus() {
        let v4 = found(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], Secure, None);
        let v6 = Lookup::Bogus {
            reason: "bad signature".into(),
        };
        assert!(matches!(combine_addresses(v4, v6), Lookup::Bogus { .. }));
    }

    #[test]
    fn failure_without_addresses_fails_closed() {
        let v4 = Lookup::Failed {
            reason: "SERVFAIL".into(),
        };
        let v6 = Lookup::NoRecords {
            nxdomain: false,
            dnssec: Secure,
        };
        assert!(matches!(combine_addresses(v4, v6), Lookup::Failed { .. }));
    }

    #[test]
    fn failed_half_is_left_out_when_the_other_found_addresses() {
        let v4 = found(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], Secure, None);
        let v6 = Lookup::Failed {
            reason: "SERVFAIL".into(),
        };
        assert_eq!(combine_addresses(v4, v6).dnssec(), Some(Secure));
    }

    #[test]
    fn nxdomain_needs_both_halves() {
        let nx = || Lookup::<IpAddr>::NoRecords {
            nxdomain: true,
            dnssec: Secure,
        };
        assert_eq!(
            combine_addresses(nx(), nx()),
            Lookup::NoRecords {
                nxdomain: true,
                dnssec: Secure
            }
        );
    }
}

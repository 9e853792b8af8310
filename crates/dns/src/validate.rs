//! Validate mode: hickory-resolver checks every signature in-process
//! (RFC 4035 §5) from our trust anchor, whatever the upstream resolver does.
//!
//! hickory 0.26.3 reports its verdict in three places, and this module maps
//! each to a [`Lookup`]:
//!
//! * `Ok(lookup)`: every answer record carries a `Proof`. The records that
//!   the conclusion rests on (the CNAME links and the final RRset) decide:
//!   all secure → Secure, any insecure → Insecure; `Indeterminate` (the
//!   validator could not fetch what it needed) is a failure, never "insecure".
//! * `Err(NoRecordsFound)`: a denial. It is a *secure* denial only when the
//!   authority section holds an NSEC or NSEC3 record whose proof is Secure
//!   (hickory only lets such a response through when the denial proof as a
//!   whole verified, RFC 4035 §5.4).
//! * `Err(DnssecBogus)` or an `Nsec` error with a Bogus proof: bogus.
//!
//! Everything else (SERVFAIL, REFUSED, time-outs, malformed replies) is
//! `Lookup::Failed`.

use std::sync::Arc;
use std::time::Duration;

use hickory_net::{DnsError, NetError, NoRecords};
use hickory_proto::dnssec::rdata::{DNSSECRData, DS};
use hickory_proto::dnssec::{Proof, TrustAnchors};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use mailtls_core::dns::{Answer, DnssecStatus, Lookup};
use tokio::sync::OnceCell;
use tracing::debug;

use crate::anchor::AnchorFile;
use crate::records::follow_cnames;

/// Where the trust comes from.
#[derive(Clone)]
pub(crate) enum Anchors {
    /// The IANA root keys compiled into hickory.
    IanaRoot,
    /// Keys and DS records from an operator's file.
    File(AnchorFile),
}

/// The validating back end. The hickory resolver is built on first use,
/// because a DS anchor needs a network round trip to become a key and
/// because building it wants a running tokio runtime.
pub(crate) struct Validator {
    servers: ResolverConfig,
    anchors: Anchors,
    timeout: Duration,
    resolver: OnceCell<TokioResolver>,
}

/// Why the resolver could not be built; it is retried on the next look-up.
enum SetupFailure {
    /// The DS anchor matches none of the owner's DNSKEYs: nothing can ever
    /// validate, which is what a validator calls bogus.
    Bogus(String),
    /// The DNSKEY RRset could not be fetched, or hickory refused the config.
    Failed(String),
}

impl Validator {
    pub(crate) fn new(servers: ResolverConfig, anchors: Anchors, timeout: Duration) -> Validator {
        Validator {
            servers,
            anchors,
            timeout,
            resolver: OnceCell::new(),
        }
    }

    /// Looks `name`/`rtype` up and validates the answer.
    pub(crate) async fn lookup(&self, name: &Name, rtype: RecordType) -> Lookup<RData> {
        let resolver = match self.resolver.get_or_try_init(|| self.build()).await {
            Ok(resolver) => resolver,
            Err(SetupFailure::Bogus(reason)) => return Lookup::Bogus { reason },
            Err(SetupFailure::Failed(reason)) => return Lookup::Failed { reason },
        };
        match resolver.lookup(name.clone(), rtype).await {
            Ok(lookup) => positive(name, rtype, lookup.answers()),
            Err(error) => negative(error),
        }
    }

    fn options(&self) -> ResolverOpts {
        let mut options = ResolverOpts::default();
        options.timeout = self.timeout;
        options.attempts = 2;
        // /etc/hosts has no DNSSEC status: never let it answer.
        options.use_hosts_file = ResolveHosts::Never;
        // The CNAME links must stay in the answer: their proofs count too.
        options.preserve_intermediates = true;
        options.edns0 = true;
        options.try_tcp_on_error = true;
        options
    }

    async fn build(&self) -> Result<TokioResolver, SetupFailure> {
        let anchors = match &self.anchors {
            Anchors::IanaRoot => TrustAnchors::default(),
            Anchors::File(file) => self.keys_from_file(file).await?,
        };
        Resolver::builder_with_config(self.servers.clone(), TokioRuntimeProvider::default())
            .with_options(self.options())
            .with_trust_anchor(Arc::new(anchors))
            .build()
            .map_err(|e| {
                SetupFailure::Failed(format!("cannot set up the validating resolver: {e}"))
            })
    }

    /// The file's DNSKEYs, plus for each DS the owner's DNSKEYs whose digest
    /// matches it (RFC 4035 §5.2 applied to a configured DS). The DNSKEY
    /// RRset is fetched without validation: the digest comparison is what
    /// authenticates it, and the validator later checks its self-signature.
    async fn keys_from_file(&self, file: &AnchorFile) -> Result<TrustAnchors, SetupFailure> {
        let mut anchors = file.keys.clone();
        if file.ds.is_empty() {
            return Ok(anchors);
        }
        let mut options = self.options();
        options.validate = false;
        let plain =
            Resolver::builder_with_config(self.servers.clone(), TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| SetupFailure::Failed(format!("cannot set up a resolver: {e}")))?;
        let mut owners: Vec<&Name> = file.ds.iter().map(|(owner, _)| owner).collect();
        owners.dedup();
        for owner in owners {
            let ds: Vec<&DS> = file
                .ds
                .iter()
                .filter(|(o, _)| o == owner)
                .map(|(_, ds)| ds)
                .collect();
            let lookup = plain
                .lookup(owner.clone(), RecordType::DNSKEY)
                .await
                .map_err(|e| {
                    SetupFailure::Failed(format!(
                        "cannot fetch the DNSKEY RRset of trust anchor {owner}: {e}"
                    ))
                })?;
            let mut matched = 0;
            for record in lookup.answers().iter().filter(|r| &r.name == owner) {
                let RData::DNSSEC(DNSSECRData::DNSKEY(key)) = &record.data else {
                    continue;
                };
                if key.revoke() || !ds.iter().any(|ds| ds.covers(owner, key).unwrap_or(false)) {
                    continue;
                }
                anchors.insert_with_name(key.public_key(), owner.into());
                matched += 1;
            }
            if matched == 0 {
                return Err(SetupFailure::Bogus(format!(
                    "no DNSKEY of {owner} matches the configured DS trust anchor"
                )));
            }
            debug!(%owner, matched, "DS trust anchor matched DNSKEYs");
        }
        Ok(anchors)
    }
}

/// The DNSSEC status of one validated record. `Err` carries the lookup to
/// return instead (bogus or indeterminate).
fn record_status(record: &Record) -> Result<DnssecStatus, Lookup<RData>> {
    match record.proof {
        Proof::Secure => Ok(DnssecStatus::Secure),
        Proof::Insecure => Ok(DnssecStatus::Insecure),
        Proof::Bogus => Err(Lookup::Bogus {
            reason: format!(
                "{} {} failed DNSSEC validation",
                record.name,
                record.record_type()
            ),
        }),
        Proof::Indeterminate => Err(Lookup::Failed {
            reason: format!(
                "the DNSSEC status of {} {} could not be determined",
                record.name,
                record.record_type()
            ),
        }),
    }
}

/// Maps a successful hickory answer.
pub(crate) fn positive(qname: &Name, rtype: RecordType, answers: &[Record]) -> Lookup<RData> {
    let chain = match follow_cnames(qname, rtype, answers) {
        Ok(chain) => chain,
        Err(reason) => return Lookup::Failed { reason },
    };
    let mut dnssec = DnssecStatus::Secure;
    for record in chain.all() {
        match record_status(record) {
            Ok(status) => dnssec = dnssec.and(status),
            Err(lookup) => return lookup,
        }
    }
    if chain.records.is_empty() {
        return Lookup::NoRecords {
            nxdomain: false,
            dnssec,
        };
    }
    Lookup::Found(Answer {
        records: chain.records.iter().map(|r| r.data.clone()).collect(),
        dnssec,
        canonical_name: chain.canonical.as_ref().map(crate::records::name_text),
    })
}

/// Maps a hickory error.
pub(crate) fn negative(error: NetError) -> Lookup<RData> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => denial(&no_records),
        NetError::Dns(DnsError::DnssecBogus) => Lookup::Bogus {
            reason: "the answer failed DNSSEC validation".to_owned(),
        },
        NetError::Dns(DnsError::Nsec {
            query,
            response,
            proof,
            ..
        }) => match proof {
            Proof::Bogus => Lookup::Bogus {
                reason: format!("the denial of {query} failed DNSSEC validation"),
            },
            Proof::Insecure => Lookup::NoRecords {
                nxdomain: response.response_code == ResponseCode::NXDomain,
                dnssec: DnssecStatus::Insecure,
            },
            Proof::Secure | Proof::Indeterminate => Lookup::Failed {
                reason: format!("the denial of {query} could not be proven"),
            },
        },
        NetError::Dns(DnsError::ResponseCode(code)) => Lookup::Failed {
            reason: format!("server answered {code}"),
        },
        NetError::Timeout => Lookup::Failed {
            reason: "timed out".to_owned(),
        },
        other => Lookup::Failed {
            reason: other.to_string(),
        },
    }
}

/// RFC 4035 §5.4: a denial is secure when its NSEC/NSEC3 proof verified.
fn denial(no_records: &NoRecords) -> Lookup<RData> {
    let nxdomain = no_records.response_code == ResponseCode::NXDomain;
    let authorities = no_records.authorities.as_deref().unwrap_or_default();
    let relevant = authorities
        .iter()
        .filter(|r| r.record_type() != RecordType::RRSIG);
    let mut proven = false;
    for record in relevant {
        match record.proof {
            Proof::Bogus => {
                return Lookup::Bogus {
                    reason: format!(
                        "the denial of {} failed DNSSEC validation",
                        no_records.query
                    ),
                };
            }
            Proof::Secure
                if matches!(record.record_type(), RecordType::NSEC | RecordType::NSEC3) =>
            {
                proven = true
            }
            _ => {}
        }
    }
    let dnssec = if proven {
        DnssecStatus::Secure
    } else {
        DnssecStatus::Insecure
    };
    Lookup::NoRecords { nxdomain, dnssec }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, CNAME, SOA};

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_str(text).expect("test name")
    }

    fn with_proof(mut record: Record, proof: Proof) -> Record {
        record.proof = proof;
        record
    }

    fn a(owner: &str, proof: Proof) -> Record {
        with_proof(
            Record::from_rdata(name(owner), 300, RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))),
            proof,
        )
    }

    fn cname(owner: &str, target: &str, proof: Proof) -> Record {
        with_proof(
            Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target)))),
            proof,
        )
    }

    fn soa(proof: Proof) -> Record {
        let soa = SOA::new(
            name("ns.example."),
            name("hostmaster.example."),
            1,
            1,
            1,
            1,
            1,
        );
        with_proof(
            Record::from_rdata(name("example."), 300, RData::SOA(soa)),
            proof,
        )
    }

    #[test]
    fn secure_records_are_secure() {
        let got = positive(
            &name("mx.example."),
            RecordType::A,
            &[a("mx.example.", Proof::Secure)],
        );
        assert_eq!(got.dnssec(), Some(DnssecStatus::Secure));
    }

    // RFC 7672 §2.2.2: the CNAME links count as much as the final RRset.
    #[test]
    fn insecure_cname_link_makes_the_answer_insecure() {
        let answers = [
            cname("mx.example.", "real.example.net.", Proof::Insecure),
            a("real.example.net.", Proof::Secure),
        ];
        let got = positive(&name("mx.example."), RecordType::A, &answers);
        assert_eq!(got.dnssec(), Some(DnssecStatus::Insecure));
        assert!(
            matches!(got, Lookup::Found(Answer { canonical_name: Some(ref c), .. }) if c == "real.example.net")
        );
    }

    #[test]
    fn bogus_record_is_bogus_and_indeterminate_fails() {
        let got = positive(
            &name("mx.example."),
            RecordType::A,
            &[a("mx.example.", Proof::Bogus)],
        );
        assert!(matches!(got, Lookup::Bogus { .. }));
        let got = positive(
            &name("mx.example."),
            RecordType::A,
            &[a("mx.example.", Proof::Indeterminate)],
        );
        assert!(matches!(got, Lookup::Failed { .. }));
    }

    fn no_records(code: ResponseCode, authorities: Vec<Record>) -> NetError {
        let mut no_records =
            NoRecords::new(Query::query(name("x.example."), RecordType::TLSA), code);
        no_records.authorities = Some(authorities.into());
        NetError::from(no_records)
    }

    // RFC 4035 §5.4: a verified NSEC proof is a secure denial.
    #[test]
    fn denial_with_secure_nsec_is_secure() {
        let nsec = with_proof(
            Record::from_rdata(
                name("x.example."),
                300,
                RData::DNSSEC(DNSSECRData::NSEC(hickory_proto::dnssec::rdata::NSEC::new(
                    name("y.example."),
                    [RecordType::A],
                ))),
            ),
            Proof::Secure,
        );
        let got = negative(no_records(
            ResponseCode::NXDomain,
            vec![soa(Proof::Secure), nsec],
        ));
        assert_eq!(
            got,
            Lookup::NoRecords {
                nxdomain: true,
                dnssec: DnssecStatus::Secure
            }
        );
    }

    #[test]
    fn denial_without_nsec_is_insecure() {
        let got = negative(no_records(
            ResponseCode::NoError,
            vec![soa(Proof::Insecure)],
        ));
        assert_eq!(
            got,
            Lookup::NoRecords {
                nxdomain: false,
                dnssec: DnssecStatus::Insecure
            }
        );
    }

    #[test]
    fn errors_map_to_bogus_or_failed() {
        assert!(matches!(
            negative(NetError::Dns(DnsError::DnssecBogus)),
            Lookup::Bogus { .. }
        ));
        assert!(matches!(negative(NetError::Timeout), Lookup::Failed { .. }));
        assert!(matches!(
            negative(NetError::Dns(DnsError::ResponseCode(
                ResponseCode::ServFail
            ))),
            Lookup::Failed { .. }
        ));
        assert!(matches!(
            negative(no_records(ResponseCode::NoError, vec![soa(Proof::Bogus)])),
            Lookup::Bogus { .. }
        ));
    }
}

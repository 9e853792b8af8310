//! DNS answers as facts, each with its DNSSEC status.
//!
//! RFC 4035 §4.3 gives every validated answer one of four states: secure,
//! insecure, bogus or indeterminate. We never let an answer travel without
//! its state: a [`Lookup`] is either records with a [`DnssecStatus`], a
//! denial (NXDOMAIN or NODATA) that says whether it was proven, or a failure.
//! A failure is never read as "no records": the policy defers on it
//! (fail closed).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The DNSSEC state of an answer (RFC 4035 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[must_use]
pub enum DnssecStatus {
    /// Validated along an unbroken chain of trust from the anchor.
    Secure,
    /// Provably unsigned (no DS at a delegation on the way), or not validated
    /// at all. Usable as plain DNS, never for DANE.
    Insecure,
    /// Signatures failed validation. Must not be used.
    Bogus,
}

impl DnssecStatus {
    /// Combines the statuses of several answers that were all needed for one
    /// conclusion (a CNAME chain, A and AAAA): bogus wins, then insecure.
    pub fn and(self, other: DnssecStatus) -> DnssecStatus {
        use DnssecStatus::*;
        match (self, other) {
            (Bogus, _) | (_, Bogus) => Bogus,
            (Insecure, _) | (_, Insecure) => Insecure,
            (Secure, Secure) => Secure,
        }
    }
}

/// Records found for a name, with the DNSSEC status of the whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer<T> {
    /// The records of the queried type (never RRSIGs).
    pub records: Vec<T>,
    /// Secure only if every RRset involved, CNAMEs included, was secure.
    pub dnssec: DnssecStatus,
    /// Where CNAMEs led, if the name was an alias (RFC 7672 §2.2.2 needs it).
    pub canonical_name: Option<String>,
}

/// The outcome of one DNS look-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Lookup<T> {
    /// At least one record of the type was found.
    Found(Answer<T>),
    /// The name or the type does not exist.
    NoRecords {
        /// NXDOMAIN (the name does not exist) rather than NODATA.
        nxdomain: bool,
        /// `Secure` when the denial was proven by NSEC/NSEC3 (a "secure
        /// denial"); `Insecure` when unsigned. Never `Bogus` (that is
        /// [`Lookup::Bogus`]).
        dnssec: DnssecStatus,
    },
    /// The answer failed DNSSEC validation.
    Bogus {
        /// What the validator said, for a person.
        reason: String,
    },
    /// No usable answer: SERVFAIL, REFUSED, time-out, malformed reply.
    Failed {
        /// What went wrong, for a person.
        reason: String,
    },
}

impl<T> Lookup<T> {
    /// The DNSSEC status, as reported per look-up in the details (SPEC §1).
    /// A failed look-up has none.
    pub fn dnssec(&self) -> Option<DnssecStatus> {
        match self {
            Lookup::Found(a) => Some(a.dnssec),
            Lookup::NoRecords { dnssec, .. } => Some(*dnssec),
            Lookup::Bogus { .. } => Some(DnssecStatus::Bogus),
            Lookup::Failed { .. } => None,
        }
    }

    /// The records, if any were found.
    pub fn records(&self) -> &[T] {
        match self {
            Lookup::Found(a) => &a.records,
            _ => &[],
        }
    }
}

/// One MX record (RFC 5321 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MxRecord {
    /// Lower value = more preferred.
    pub preference: u16,
    /// The exchange host name, lower case, without the trailing dot. The
    /// null MX of RFC 7505 has the name `""` (the root, `.`).
    pub exchange: String,
}

impl MxRecord {
    /// RFC 7505 §3: a single MX with preference 0 and exchange `.` means the
    /// domain accepts no mail.
    pub fn is_null(&self) -> bool {
        self.exchange.is_empty() || self.exchange == "."
    }
}

/// MX hosts mail may go to, at most this many (Postfix tries 5 addresses by
/// default; the check must see every host mail could go to, but a hostile
/// MX RRset must not turn one delivery or check into a scan).
pub const MAX_MX_HOSTS: usize = 10;

/// Addresses tried (or probed) per MX host.
pub const MAX_ADDRESSES_PER_HOST: usize = 4;

/// The MX hosts to try, with their preference: null MX entries dropped
/// (RFC 7505 §3 says a null MX stands alone; if it does not, the real hosts
/// are still tried), names lower-cased without the trailing dot and
/// de-duplicated, most preferred first (RFC 5321 §5.1), at most
/// [`MAX_MX_HOSTS`]. Empty for a null MX alone.
pub fn mx_hosts(records: &[MxRecord]) -> Vec<(String, u16)> {
    let mut sorted: Vec<&MxRecord> = records.iter().filter(|r| !r.is_null()).collect();
    sorted.sort_by_key(|r| r.preference);
    let mut hosts: Vec<(String, u16)> = Vec::new();
    for record in sorted {
        let name = record.exchange.trim_end_matches('.').to_ascii_lowercase();
        if !hosts.iter().any(|(h, _)| *h == name) {
            hosts.push((name, record.preference));
        }
        if hosts.len() == MAX_MX_HOSTS {
            break;
        }
    }
    hosts
}

/// The addresses of one host (A and AAAA together).
pub type AddressLookup = Lookup<IpAddr>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_status_is_as_weak_as_its_weakest_part() {
        use DnssecStatus::*;
        assert_eq!(Secure.and(Secure), Secure);
        assert_eq!(Secure.and(Insecure), Insecure);
        assert_eq!(Insecure.and(Bogus), Bogus);
        assert_eq!(Bogus.and(Secure), Bogus);
    }

    // RFC 5321 §5.1: preference order; RFC 7505: null MX.
    #[test]
    fn mx_hosts_are_sorted_deduplicated_and_bounded() {
        let rec = |preference, exchange: &str| MxRecord {
            preference,
            exchange: exchange.into(),
        };
        let records = vec![
            rec(20, "b.example."),
            rec(10, "A.example"),
            rec(30, "a.example."),
            rec(0, ""),
        ];
        assert_eq!(
            mx_hosts(&records),
            vec![("a.example".to_owned(), 10), ("b.example".to_owned(), 20)]
        );
        assert!(mx_hosts(&[rec(0, "")]).is_empty());
        let many: Vec<MxRecord> = (0..50).map(|i| rec(i, &format!("mx{i}.example"))).collect();
        assert_eq!(mx_hosts(&many).len(), MAX_MX_HOSTS);
    }

    #[test]
    fn null_mx_is_the_root_name() {
        assert!(
            MxRecord {
                preference: 0,
                exchange: String::new()
            }
            .is_null()
        );
        assert!(
            MxRecord {
                preference: 0,
                exchange: ".".into()
            }
            .is_null()
        );
        assert!(
            !MxRecord {
                preference: 0,
                exchange: "mx.example".into()
            }
            .is_null()
        );
    }
}

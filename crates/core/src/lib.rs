//! # mailtls-core
//!
//! The domain model and the pure policy of mailtls. Everything here is a
//! function from facts to a decision: no sockets, no DNS, no clock (time is
//! passed in). The check, and later the relay, gather facts at their edges
//! (the `mailtls-dns`, `mailtls-tls` and `mailtls-smtp` crates) and ask this
//! crate what those facts mean, so that both always agree.
//!
//! * [`level`]: the ordered transport-security scale (SPEC §1, §3).
//! * [`address`]: parsing and IDNA normalisation of what a user types.
//! * [`clock`]: time as the policy and the store count it (Unix seconds).
//! * [`dns`]: DNS answers together with their DNSSEC status (RFC 4035).
//! * [`dane`]: TLSA records and the RFC 7672 §2.2 rules for when they apply.
//! * [`probe`]: what one STARTTLS probe of one address observed.
//! * [`verdict`]: facts about a domain → the four verdicts of SPEC §1.
//! * [`report`]: the JSON shape of a verdict, shared by CLI and API.
//! * [`memory`]: the TLS memory's ratchet (SPEC §3).
//! * [`policy`]: the outbound delivery requirement (SPEC §2).
//! * [`sending`]: the secure alias and Encrypted Sending (SPEC §4).
//! * [`status`]: SMTP reply and enhanced status codes (RFC 5321, RFC 3463).

pub mod address;
pub mod clock;
pub mod dane;
pub mod dns;
pub mod level;
pub mod memory;
pub mod policy;
pub mod probe;
pub mod report;
pub mod sending;
pub mod status;
pub mod verdict;

pub use address::{Address, AddressError, Domain, Target};
pub use dane::{TlsaRecord, TlsaUsability};
pub use dns::{Answer, DnssecStatus, Lookup};
pub use level::{Level, TlsLevel};

pub use report::CheckReport;
pub use status::SmtpStatus;
pub use verdict::{DomainFacts, HostFacts, Problem, verdict};

//! # mailtls-e2e: the test world
//!
//! End-to-end scenarios (under `tests/tests/`) run `mailtls` against real
//! peers on loopback addresses. This library builds those peers:
//!
//! * [`dns_world`]: DNSSEC-signed zones under a private root, served by
//!   hickory-server over UDP and TCP, plus (for the `trust-ad` mode) Debian's
//!   unbound validating against the same private root.
//! * [`smtp_world`]: SMTP servers with every STARTTLS behaviour the check must
//!   judge, with certificates made by [`pki`] at test time.
//!
//! Nothing here is a fixture blob: zones, keys and certificates are generated
//! when a test runs.

pub mod dns_world;
pub mod pki;
pub mod smtp_world;

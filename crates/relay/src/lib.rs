//! # mailtls-relay: the outbound relay
//!
//! Mail that users submit leaves through here, and the relay decides per
//! recipient domain, before a byte of the message is sent, how secure the
//! connection must be (SPEC §2, decided by `mailtls_core::policy`), and keeps
//! that promise. Like Postfix, it is small parts that each own one job:
//!
//! * [`server`]: the submission listeners (587 STARTTLS, 465 implicit TLS):
//!   SMTP sessions, AUTH, limits, the security floor of SPEC §7; accepted
//!   mail goes to the [`spool`] and the queue before the `250`.
//! * [`spool`]: message bodies on disk, fsynced (a `250` is a promise).
//! * [`queue`]: the scheduler: which messages are due, leases, retries with
//!   backoff, the queue lifetime.
//! * [`delivery`]: one delivery attempt to one recipient domain: MX, TLSA,
//!   the TLS memory, the requirement, STARTTLS, the decision, the SMTP
//!   transaction, what is recorded.
//! * [`bounce`]: delivery status notifications (RFC 3464).
//! * [`config`]: what the relay needs, validated.

pub mod bounce;
pub mod config;
pub mod delivery;
pub mod queue;
pub mod server;
pub mod spool;

pub use config::RelayConfig;

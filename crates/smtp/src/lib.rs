//! # mailtls-smtp: the SMTP client side
//!
//! mailtls learns whether mail to a server travels encrypted by asking the
//! server itself: connect, read the banner, EHLO, STARTTLS, handshake, QUIT,
//! without sending mail ([`probe_address`]). The relay will deliver over the
//! same client code, so that the check and the relay never disagree about a
//! server (the lesson of Postfix's `posttls-finger`).
//!
//! * [`reply`]: reply parsing as a pure function over bytes, with the
//!   limits of RFC 5321 §4.5.3.1; the entry point for a fuzz target.
//! * [`ehlo`]: service extensions from an EHLO reply (RFC 5321 §4.1.1.1).
//! * [`client`]: one connection, command by command, and the STARTTLS
//!   upgrade that discards pipelined plaintext (RFC 3207, CVE-2011-0411).
//! * [`probe`]: the probe dialogue and its outcomes
//!   ([`mailtls_core::probe::ProbeOutcome`]).
//! * [`transaction`]: one mail transaction (MAIL, RCPT, DATA) for the
//!   relay, after its policy said the session may carry the message.
//!
//! TLS itself (OpenSSL, DANE) is `mailtls-tls`'s job.

pub mod client;
pub mod ehlo;
pub mod probe;
pub mod reply;
pub mod transaction;

pub use client::{SmtpClient, SmtpError, Starttls, Timeouts};
pub use ehlo::{Extension, Extensions};
pub use probe::{ProbeConfig, probe_address};
pub use reply::{Reply, ReplyCode, ReplyError, parse_reply};
pub use transaction::{Envelope, RecipientResult, StepTimes, TransactionError, send_mail};

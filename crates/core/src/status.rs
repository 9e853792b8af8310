//! SMTP status: the reply code (RFC 5321 §4.2) with its enhanced status code
//! (RFC 3463), so that every error that reaches a peer or a bounce carries
//! its SMTP meaning: temporary or permanent, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A reply code and its enhanced status code, e.g. `451 4.7.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SmtpStatus {
    /// Three-digit reply code (RFC 5321 §4.2.1).
    pub code: u16,
    /// Enhanced status code class: 2 success, 4 temporary, 5 permanent.
    pub class: u8,
    /// Subject (RFC 3463 §3): 7 = security or policy status, 4 = network …
    pub subject: u16,
    /// Detail within the subject.
    pub detail: u16,
}

impl SmtpStatus {
    /// Builds a status.
    pub const fn new(code: u16, class: u8, subject: u16, detail: u16) -> SmtpStatus {
        SmtpStatus {
            code,
            class,
            subject,
            detail,
        }
    }

    /// Whether a later retry may succeed (4xx).
    pub fn is_temporary(self) -> bool {
        self.class == 4
    }

    /// The enhanced code alone, `4.7.5`.
    pub fn enhanced(self) -> String {
        format!("{}.{}.{}", self.class, self.subject, self.detail)
    }

    /// RFC 3463 / RFC 7672 §3: X.7.4 "Security features not supported":
    /// TLS was required and the server offered none.
    pub const TLS_REQUIRED_TEMP: SmtpStatus = SmtpStatus::new(451, 4, 7, 4);
    /// RFC 3463: X.7.5 "Cryptographic failure": handshake or DANE failure.
    pub const CRYPTO_FAILURE_TEMP: SmtpStatus = SmtpStatus::new(451, 4, 7, 5);
    /// RFC 3463: X.4.3 "Directory server failure": DNS failed.
    pub const DNS_FAILURE_TEMP: SmtpStatus = SmtpStatus::new(451, 4, 4, 3);
    /// RFC 3463: X.4.4 "Unable to route": no mail servers, null MX
    /// (RFC 7505 §4.1 uses 5.1.10 for null MX, see [`SmtpStatus::NULL_MX`]).
    pub const NO_ROUTE: SmtpStatus = SmtpStatus::new(550, 5, 4, 4);
    /// RFC 7505 §4.1: "550 5.1.10 Recipient address has null MX".
    pub const NULL_MX: SmtpStatus = SmtpStatus::new(550, 5, 1, 10);
    /// RFC 3463: X.1.2 "Bad destination system address": no such domain.
    pub const NO_SUCH_DOMAIN: SmtpStatus = SmtpStatus::new(550, 5, 1, 2);
    /// RFC 3463: X.4.1 "No answer from host" / connection failures.
    pub const UNREACHABLE_TEMP: SmtpStatus = SmtpStatus::new(451, 4, 4, 1);
    /// RFC 3463: X.4.7 "Delivery time expired".
    pub const EXPIRED: SmtpStatus = SmtpStatus::new(550, 5, 4, 7);
    /// RFC 5248 (registered X.7.10) "Encryption Needed", permanent: the
    /// sender's Encrypted Sending setting, or a secure alias reached
    /// without TLS (SPEC §4).
    pub const ENCRYPTION_NEEDED: SmtpStatus = SmtpStatus::new(550, 5, 7, 10);
}

impl fmt::Display for SmtpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}.{}.{}",
            self.code, self.class, self.subject, self.detail
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_print_as_on_the_wire() {
        assert_eq!(SmtpStatus::CRYPTO_FAILURE_TEMP.to_string(), "451 4.7.5");
        assert_eq!(SmtpStatus::NULL_MX.enhanced(), "5.1.10");
        assert!(SmtpStatus::TLS_REQUIRED_TEMP.is_temporary());
        assert!(!SmtpStatus::NO_SUCH_DOMAIN.is_temporary());
    }
}

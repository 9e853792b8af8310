//! The transport-security scale.
//!
//! SPEC §1 names four verdicts; three of them form an ordered scale
//! (`none < tls < dane`, SPEC §3: "the best level observed") and the fourth
//! is the absence of knowledge. Keeping "unknown" out of the ordered enum means
//! no comparison can ever treat "we do not know" as weaker or stronger than a
//! fact.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An observed transport-security level, ordered from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsLevel {
    /// No STARTTLS, or no TLS handshake succeeded: mail travels in plaintext.
    None,
    /// STARTTLS and a TLS handshake work; the peer is not authenticated by DANE.
    Tls,
    /// TLS with the peer authenticated by DNSSEC-signed TLSA records (RFC 7672).
    Dane,
}

/// A verdict level: an observed [`TlsLevel`] or no knowledge at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Nothing is known yet (`SSL ?`).
    Unknown,
    /// The level observed.
    Known(TlsLevel),
}

impl Level {
    /// The level's name in the JSON interface: `unknown`, `none`, `tls`, `dane`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::Known(TlsLevel::None) => "none",
            Level::Known(TlsLevel::Tls) => "tls",
            Level::Known(TlsLevel::Dane) => "dane",
        }
    }

    /// The short status text a user sees (SPEC §1).
    pub fn status_text(self) -> &'static str {
        match self {
            Level::Unknown => "SSL ?",
            Level::Known(TlsLevel::None) => "no SSL",
            Level::Known(TlsLevel::Tls) => "SSL ok",
            Level::Known(TlsLevel::Dane) => "DANE ok",
        }
    }

    /// Parses the JSON name back (see [`Level::as_str`]).
    pub fn from_name(name: &str) -> Option<Level> {
        Some(match name {
            "unknown" => Level::Unknown,
            "none" => Level::Known(TlsLevel::None),
            "tls" => Level::Known(TlsLevel::Tls),
            "dane" => Level::Known(TlsLevel::Dane),
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.status_text())
    }
}

impl Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Level::from_name(&name).ok_or_else(|| {
            serde::de::Error::unknown_variant(&name, &["unknown", "none", "tls", "dane"])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_ordered_weakest_first() {
        assert!(TlsLevel::None < TlsLevel::Tls);
        assert!(TlsLevel::Tls < TlsLevel::Dane);
    }

    #[test]
    fn names_and_texts_round_trip() {
        for level in [
            Level::Unknown,
            Level::Known(TlsLevel::None),
            Level::Known(TlsLevel::Tls),
            Level::Known(TlsLevel::Dane),
        ] {
            assert_eq!(Level::from_name(level.as_str()), Some(level));
            let json = serde_json::to_string(&level).expect("serialises");
            assert_eq!(serde_json::from_str::<Level>(&json).expect("parses"), level);
        }
        assert_eq!(Level::Known(TlsLevel::Dane).status_text(), "DANE ok");
        assert_eq!(Level::Unknown.status_text(), "SSL ?");
    }
}

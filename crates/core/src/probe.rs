//! What one STARTTLS probe of one server address observed.
//!
//! The probe itself (sockets, SMTP, OpenSSL) lives in `mailtls-smtp` and
//! `mailtls-tls`; they fill in these types, and [`crate::verdict`] reads them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One certificate of the chain the server presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Subject distinguished name, one line (`CN=mx.example, O=…`).
    pub subject: String,
    /// Issuer distinguished name, one line.
    pub issuer: String,
    /// Expiry, RFC 3339 in UTC.
    pub not_after: String,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256: String,
    /// DNS names of the subjectAltName extension.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
}

/// The result of DANE authentication in one handshake (RFC 7671, RFC 7672).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DaneCheck {
    /// No usable TLSA records were given to the TLS engine.
    NotAttempted,
    /// A TLSA record authenticated the peer.
    Matched {
        /// Index into the usable records handed to the TLS engine.
        record: usize,
        /// Chain depth of the matched certificate (0 = the server's own).
        depth: u32,
    },
    /// Usable TLSA records existed and none authenticated the peer.
    Mismatch {
        /// OpenSSL's verification error, for a person.
        reason: String,
    },
}

/// What a completed TLS handshake showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// Protocol version as OpenSSL names it: `TLSv1.3`, `TLSv1.2`, `TLSv1`.
    pub version: String,
    /// Cipher suite, IANA/OpenSSL name.
    pub cipher: String,
    /// Key-exchange group (`X25519`, `secp256r1`, `ffdhe2048`); `None` for
    /// RSA key transport.
    pub key_exchange: Option<String>,
    /// Protocol older than TLS 1.2, or a CBC/RSA-key-transport suite: it works
    /// for opportunistic delivery but is reported as legacy.
    pub legacy: bool,
    /// The server's chain as sent, leaf first.
    pub chain: Vec<CertificateInfo>,
    /// Whether the chain verifies for the host name against the public Web
    /// PKI (the system's trust store). Informational only.
    pub pkix_valid: bool,
    /// The DANE result.
    pub dane: DaneCheck,
}

/// How the SMTP dialogue with one address ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// Not contacted: the address is private, loopback or link-local and the
    /// operator did not allow such addresses (SPEC §7).
    NotAllowed,
    /// TCP connect failed or timed out.
    ConnectFailed {
        /// For a person.
        reason: String,
    },
    /// The server answered, but not usefully (5xx banner, EHLO refused,
    /// garbage, time-out, overlong lines).
    SmtpFailed {
        /// For a person, with the server's reply where there was one.
        reason: String,
    },
    /// EHLO did not list STARTTLS.
    NoStarttls,
    /// STARTTLS was offered but refused (e.g. `454 4.7.0 TLS not available`).
    StarttlsRefused {
        /// The server's reply.
        reply: String,
    },
    /// The TLS handshake failed.
    HandshakeFailed {
        /// OpenSSL's error, for a person.
        reason: String,
    },
    /// TLS was established.
    Tls(TlsFacts),
}

impl ProbeOutcome {
    /// Whether the server was reached and spoke SMTP far enough to judge.
    pub fn reached(&self) -> bool {
        !matches!(
            self,
            ProbeOutcome::NotAllowed
                | ProbeOutcome::ConnectFailed { .. }
                | ProbeOutcome::SmtpFailed { .. }
        )
    }

    /// Whether EHLO offered STARTTLS; `None` when the dialogue did not get
    /// that far.
    pub fn starttls_offered(&self) -> Option<bool> {
        match self {
            ProbeOutcome::NotAllowed
            | ProbeOutcome::ConnectFailed { .. }
            | ProbeOutcome::SmtpFailed { .. } => None,
            ProbeOutcome::NoStarttls => Some(false),
            _ => Some(true),
        }
    }
}

/// One probed address of an MX host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressProbe {
    /// The address contacted.
    pub address: IpAddr,
    /// What happened.
    pub outcome: ProbeOutcome,
    /// The server sent bytes after its STARTTLS reply and before the
    /// handshake; they were discarded (CVE-2011-0411 / SPEC §7).
    #[serde(default)]
    pub discarded_pipelined: bool,
}

/// Whether an address is one the check must not probe without permission
/// (SPEC §7): loopback, private (RFC 1918, RFC 4193), link-local, unspecified,
/// shared (RFC 6598), documentation and other special-purpose ranges.
pub fn is_restricted_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // RFC 6598 shared
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // RFC 2544 benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_restricted_address(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // RFC 4193 unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link-local
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_restricted() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(is_restricted_address(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2a00:1450::1"] {
            assert!(!is_restricted_address(ip.parse().expect("ip")), "{ip}");
        }
    }
}

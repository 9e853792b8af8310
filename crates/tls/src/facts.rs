//! What a completed handshake shows: protocol, cipher, key exchange, the
//! certificates sent, reduced to the plain data of
//! [`mailtls_core::probe::TlsFacts`] so that nothing above this crate needs
//! OpenSSL types.
//!
//! Every value here comes from the peer: nothing may panic, whatever the
//! certificates contain.

use mailtls_core::dane::hex;
use mailtls_core::probe::CertificateInfo;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::ssl::{SslRef, SslVersion};
use openssl::x509::{X509NameRef, X509Ref};

use crate::ffi;

/// Protocol, cipher and key exchange of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) version: String,
    pub(crate) cipher: String,
    pub(crate) key_exchange: Option<String>,
    pub(crate) legacy: bool,
}

/// Reads protocol, cipher and key exchange off a completed handshake.
pub(crate) fn session(ssl: &SslRef) -> Session {
    let version = ssl.version_str().to_owned();
    let old_protocol = matches!(ssl.version2(), Some(v) if v == SslVersion::SSL3 || v == SslVersion::TLS1 || v == SslVersion::TLS1_1);
    let Some(cipher) = ssl.current_cipher() else {
        // Not reachable after a completed handshake; report what is known.
        return Session {
            version,
            cipher: String::from("(none)"),
            key_exchange: None,
            legacy: true,
        };
    };
    let kx = ffi::cipher_kx_nid(cipher);
    let rsa_key_transport = kx == ffi::NID_KX_RSA;
    let key_exchange = if rsa_key_transport {
        None
    } else {
        ffi::negotiated_group(ssl).or_else(|| {
            // TLS 1.2 DHE uses server-chosen parameters, not a named group
            // (RFC 7919 is not negotiated by OpenSSL 3.0 for TLS 1.2): report
            // the size of the server's key.
            (kx == ffi::NID_KX_DHE)
                .then(|| {
                    ssl.peer_tmp_key()
                        .map(|k| format!("DHE {}-bit", k.bits()))
                        .ok()
                })
                .flatten()
        })
    };
    // Legacy (reported, still used opportunistically, RFC 7435): protocols
    // before TLS 1.2, RSA key transport (no forward secrecy) and every
    // non-AEAD suite (CBC MAC-then-encrypt, RC4, NULL).
    let legacy = old_protocol || rsa_key_transport || !ffi::cipher_is_aead(cipher);
    Session {
        version,
        cipher: cipher.name().to_owned(),
        key_exchange,
        legacy,
    }
}

/// The certificates the peer sent, leaf first.
pub(crate) fn chain(ssl: &SslRef) -> Vec<CertificateInfo> {
    // On the client side OpenSSL's peer chain includes the leaf.
    match ssl.peer_cert_chain() {
        Some(chain) => chain.iter().map(certificate_info).collect(),
        None => ssl
            .peer_certificate()
            .map(|c| vec![certificate_info(&c)])
            .unwrap_or_default(),
    }
}

/// One certificate as [`CertificateInfo`].
pub(crate) fn certificate_info(cert: &X509Ref) -> CertificateInfo {
    let sha256 = cert
        .digest(MessageDigest::sha256())
        .map(|d| hex(&d))
        .unwrap_or_default();
    let dns_names = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.dnsname().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    CertificateInfo {
        subject: one_line_dn(cert.subject_name()),
        issuer: one_line_dn(cert.issuer_name()),
        not_after: rfc3339(cert.not_after()).unwrap_or_else(|| cert.not_after().to_string()),
        sha256,
        dns_names,
    }
}

/// A distinguished name on one line, most specific attribute first as in
/// RFC 4514 (`CN=mx.example, O=Example, C=DE`), with RFC 4514 escaping of
/// the special characters.
pub(crate) fn one_line_dn(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|entry| {
            let key = entry
                .object()
                .nid()
                .short_name()
                .map(str::to_owned)
                .unwrap_or_else(|_| entry.object().to_string());
            let value = match entry.data().to_string() {
                Ok(s) => escape_dn_value(&s),
                // Not decodable as text: RFC 4514 §2.4 hex form.
                Err(_) => format!("#{}", hex(entry.data().as_slice())),
            };
            format!("{key}={value}")
        })
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(", ")
}

/// RFC 4514 §2.4 escaping of an attribute value, plus control characters,
/// so that a peer cannot forge a line break in our output.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// An ASN.1 time as RFC 3339 UTC (`2030-01-31T12:00:00Z`), via its distance
/// from the Unix epoch (OpenSSL has no accessor for the broken-down time).
pub(crate) fn rfc3339(time: &Asn1TimeRef) -> Option<String> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(time).ok()?;
    let seconds = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    Some(format_unix_utc(seconds))
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC.
fn format_unix_utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Proleptic Gregorian date of a day count from 1970-01-01, computed in
/// 400-year eras (146 097 days each) counted from 0000-03-01, so that the
/// leap day is the last day of each shifted year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    const DAYS_0000_03_01_TO_EPOCH: i64 = 719_468;
    let z = days + DAYS_0000_03_01_TO_EPOCH;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use openssl::x509::X509Name;

    use super::*;

    #[test]
    fn unix_times_format_as_rfc3339() {
        assert_eq!(format_unix_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix_utc(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(format_unix_utc(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(format_unix_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_unix_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn asn1_times_convert_through_the_epoch_distance() {
        let t = Asn1Time::from_str("20300131120000Z").expect("valid time");
        assert_eq!(rfc3339(&t).as_deref(), Some("2030-01-31T12:00:00Z"));
        let t = Asn1Time::from_str("19500101000000Z").expect("valid time");
        assert_eq!(rfc3339(&t).as_deref(), Some("1950-01-01T00:00:00Z"));
    }

    #[test]
    fn names_print_most_specific_first_and_escaped() {
        let mut b = X509Name::builder().expect("builder");
        b.append_entry_by_text("C", "DE").expect("C");
        b.append_entry_by_text("O", "Example, Inc.").expect("O");
        b.append_entry_by_text("CN", "mx.example\nX=evil")
            .expect("CN");
        let name = b.build();
        assert_eq!(
            one_line_dn(&name),
            "CN=mx.example\\0AX=evil, O=Example\\, Inc., C=DE"
        );
    }
}

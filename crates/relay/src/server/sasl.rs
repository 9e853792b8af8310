//! SASL for SMTP AUTH (RFC 4954): base64 (RFC 4648 §4) and the PLAIN
//! message (RFC 4616 §2). Pure functions over client input, for the fuzz
//! target.

use std::fmt;

/// A password from the client. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Decodes strict base64 (RFC 4648 §4: the standard alphabet, padding
/// required, no whitespace). `=` alone is the empty response (RFC 4954 §4).
pub fn decode_base64(input: &str) -> Option<Vec<u8>> {
    if input == "=" {
        return Some(Vec::new());
    }
    let bytes = input.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (n, chunk) in bytes.chunks_exact(4).enumerate() {
        let last = n + 1 == chunks;
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut acc = 0u32;
        for &b in &chunk[..4 - pad] {
            acc = (acc << 6) | u32::from(sextet(b)?);
        }
        acc <<= 6 * pad as u32;
        let triple = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&triple[..3 - pad]);
    }
    Some(out)
}

/// Encodes base64 (for the `334` challenges).
pub fn encode_base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let acc = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(acc >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn sextet(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// The PLAIN message `[authzid] NUL authcid NUL passwd` (RFC 4616 §2).
/// An authorization identity other than the user's own is refused: we do not
/// let one user submit as another.
pub fn parse_plain(message: &[u8]) -> Option<(String, Password)> {
    let mut parts = message.split(|&b| b == 0);
    let (authzid, authcid, passwd) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || authcid.is_empty() || passwd.is_empty() {
        return None;
    }
    if !authzid.is_empty() && authzid != authcid {
        return None;
    }
    let user = String::from_utf8(authcid.to_vec()).ok()?;
    let password = String::from_utf8(passwd.to_vec()).ok()?;
    Some((user, Password(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for input in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            b"\0alice\0s3cret",
        ] {
            let encoded = encode_base64(input);
            assert_eq!(decode_base64(&encoded).as_deref(), Some(input), "{encoded}");
        }
        assert_eq!(encode_base64(b"Username:"), "VXNlcm5hbWU6");
        assert_eq!(decode_base64("="), Some(Vec::new()));
    }

    #[test]
    fn sloppy_base64_is_refused() {
        for bad in [
            "Zm9v\r\n", "Zm9", "Zm=v", "Zg==Zm9v", "Z===", "Zm9v!A==", "Zm 9",
        ] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
    }

    /// RFC 4616 §2.
    #[test]
    fn plain_messages() {
        let (user, password) = parse_plain(b"\0alice@example.org\0s3cret").expect("plain");
        assert_eq!(
            (user.as_str(), password.0.as_str()),
            ("alice@example.org", "s3cret")
        );
        assert!(parse_plain(b"alice\0alice\0pw").is_some());
        assert!(
            parse_plain(b"bob\0alice\0pw").is_none(),
            "acting as another user"
        );
        assert!(parse_plain(b"\0alice\0").is_none());
        assert!(parse_plain(b"\0alice").is_none());
        assert!(parse_plain(b"\0alice\0pw\0x").is_none());
        assert_eq!(format!("{:?}", Password("s3cret".into())), "Password(..)");
    }
}

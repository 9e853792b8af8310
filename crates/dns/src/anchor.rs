//! Trust-anchor files: DNSKEY and DS records in zone-file format.
//!
//! The file is the same as unbound's `trust-anchor-file` (or Debian's
//! `/usr/share/dns/root.key`): one record per logical line, `;` comments,
//! parentheses joining lines, owner names absolute. RFC 4035 §4.4 lets a
//! resolver be configured with either form.
//!
//! hickory 0.26.3's `TrustAnchors::from_file` reads DNSKEY records only (its
//! parser rejects DS). So this module splits the file into its records
//! itself: DNSKEY lines go to hickory's parser unchanged, DS lines are parsed
//! here and kept aside. A DS anchor cannot become a key without the network:
//! the validator fetches the anchor owner's DNSKEY RRset and keeps the keys
//! whose digest matches (see `validate`).

use std::str::FromStr;

use hickory_proto::dnssec::rdata::DS;
use hickory_proto::dnssec::{Algorithm, DigestType, TrustAnchors};
use hickory_proto::rr::Name;

/// The trust anchors read from a file.
#[derive(Clone)]
pub(crate) struct AnchorFile {
    /// Every DNSKEY of the file, ready for the validator.
    pub(crate) keys: TrustAnchors,
    /// DS records, to be matched against the owner's DNSKEY RRset.
    pub(crate) ds: Vec<(Name, DS)>,
}

/// Parses a trust-anchor file's text. The error is one line for a person.
pub(crate) fn parse_anchor_file(text: &str) -> Result<AnchorFile, String> {
    let mut dnskey_lines = Vec::new();
    let mut ds = Vec::new();
    for (line_no, line) in logical_lines(text)? {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some((owner_text, rest)) = tokens.split_first() else {
            continue;
        };
        if owner_text.starts_with('$') {
            if owner_text.eq_ignore_ascii_case("$TTL") {
                continue;
            }
            return Err(format!(
                "line {line_no}: directive {owner_text} is not supported"
            ));
        }
        if !owner_text.ends_with('.') {
            return Err(format!(
                "line {line_no}: owner name {owner_text:?} must be absolute (end with a dot)"
            ));
        }
        let owner = Name::from_ascii(owner_text)
            .map_err(|e| format!("line {line_no}: invalid owner name {owner_text:?}: {e}"))?;
        let (rtype, rdata) =
            split_type(rest).ok_or_else(|| format!("line {line_no}: no record type"))?;
        match rtype.to_ascii_uppercase().as_str() {
            "DNSKEY" => {
                let normalised = format!("{owner} 3600 IN DNSKEY {}", rdata.join(" "));
                // Parse alone first so that an error names its line.
                TrustAnchors::from_str(&normalised)
                    .map_err(|e| format!("line {line_no}: invalid DNSKEY: {e}"))?;
                dnskey_lines.push(normalised);
            }
            "DS" => ds.push((
                owner,
                parse_ds(rdata).map_err(|e| format!("line {line_no}: invalid DS: {e}"))?,
            )),
            other => {
                return Err(format!(
                    "line {line_no}: record type {other} is not a trust anchor (DNSKEY or DS)"
                ));
            }
        }
    }
    if dnskey_lines.is_empty() && ds.is_empty() {
        return Err("no DNSKEY or DS records".to_owned());
    }
    let keys = if dnskey_lines.is_empty() {
        TrustAnchors::empty()
    } else {
        TrustAnchors::from_str(&dnskey_lines.join("\n"))
            .map_err(|e| format!("invalid DNSKEY: {e}"))?
    };
    Ok(AnchorFile { keys, ds })
}

/// Skips the optional TTL and class after the owner name; returns the type
/// and the RDATA tokens.
fn split_type<'a>(tokens: &'a [&'a str]) -> Option<(&'a str, &'a [&'a str])> {
    let mut index = 0;
    while index < 2 {
        let token = tokens.get(index)?;
        let is_ttl = token.bytes().all(|b| b.is_ascii_digit());
        let is_class = token.eq_ignore_ascii_case("IN");
        if !(is_ttl || is_class) {
            break;
        }
        index += 1;
    }
    let rtype = tokens.get(index)?;
    Some((rtype, &tokens[index + 1..]))
}

/// RFC 4034 §5.3: key tag, algorithm, digest type, digest in hex (which may
/// contain white space).
fn parse_ds(rdata: &[&str]) -> Result<DS, String> {
    let [tag, algorithm, digest_type, digest @ ..] = rdata else {
        return Err("expected: key-tag algorithm digest-type digest".to_owned());
    };
    let tag: u16 = tag
        .parse()
        .map_err(|_| format!("key tag {tag:?} is not a number"))?;
    let algorithm = Algorithm::from_u8(
        algorithm
            .parse()
            .map_err(|_| format!("algorithm {algorithm:?} is not a number"))?,
    );
    if !algorithm.is_supported() {
        return Err(format!("algorithm {algorithm} is not supported"));
    }
    let digest_type = DigestType::from(
        digest_type
            .parse::<u8>()
            .map_err(|_| format!("digest type {digest_type:?} is not a number"))?,
    );
    if !digest_type.is_supported() {
        return Err(format!(
            "digest type {} is not supported",
            u8::from(digest_type)
        ));
    }
    let digest = decode_hex(&digest.concat()).ok_or("digest is not hexadecimal")?;
    if digest.is_empty() {
        return Err("digest is missing".to_owned());
    }
    Ok(DS::new(tag, algorithm, digest_type, digest))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// Splits zone-file text into logical records (RFC 1035 §5.1): comments
/// removed, parenthesised groups joined. Returns each with its first line
/// number.
fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut depth = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        if depth == 0 {
            start_line = line_no;
        }
        let content = raw.split(';').next().unwrap_or_default();
        for c in content.chars() {
            match c {
                '(' => {
                    depth += 1;
                    current.push(' ');
                }
                ')' => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| format!("line {line_no}: unbalanced ')'"))?;
                    current.push(' ');
                }
                c => current.push(c),
            }
        }
        if depth == 0 {
            if !current.trim().is_empty() {
                lines.push((start_line, std::mem::take(&mut current)));
            }
            current.clear();
        } else {
            current.push(' ');
        }
    }
    if depth != 0 {
        return Err(format!("line {start_line}: unbalanced '('"));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The 2017 IANA root KSK (key tag 20326) as unbound-anchor writes it.
    const ROOT_KEY: &str = ". 172800 IN DNSKEY 257 3 8 AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU= ;{id = 20326 (ksk), size = 2048b}";
    const ROOT_DS: &str =
        ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

    #[test]
    fn dnskey_line_with_trailing_comment_is_a_key() {
        let file = parse_anchor_file(ROOT_KEY).expect("parses");
        assert_eq!(file.keys.len(), 1);
        assert!(file.ds.is_empty());
    }

    #[test]
    fn ds_line_is_kept_for_matching() {
        let file = parse_anchor_file(ROOT_DS).expect("parses");
        assert!(file.keys.is_empty());
        let (owner, ds) = &file.ds[0];
        assert!(owner.is_root());
        assert_eq!(ds.key_tag(), 20326);
        assert_eq!(ds.digest().len(), 32);
    }

    #[test]
    fn mixed_file_with_comments_and_parentheses() {
        let text = format!(
            "; a comment\n$TTL 3600\n{ROOT_KEY}\n. IN DS 20326 8 2 (\n  E06D44B80B8F1D39A95C0B0D7C65D084\n  58E880409BBC683457104237C7F8EC8D ) ; split\n"
        );
        let file = parse_anchor_file(&text).expect("parses");
        assert_eq!(file.keys.len(), 1);
        assert_eq!(file.ds.len(), 1);
        assert_eq!(file.ds[0].1.digest().len(), 32);
    }

    #[test]
    fn a_ds_anchor_matches_the_key_it_was_made_from() {
        let keys = parse_anchor_file(ROOT_KEY).expect("parses").keys;
        let key = keys.get(0).expect("one key");
        let dnskey = hickory_proto::dnssec::rdata::DNSKEY::new(true, true, false, key.clone());
        let ds = parse_anchor_file(ROOT_DS).expect("parses").ds.remove(0).1;
        assert!(ds.covers(&Name::root(), &dnskey).expect("digest"));
    }

    #[test]
    fn wrong_contents_are_refused_with_the_line() {
        for (text, needle) in [
            ("", "no DNSKEY or DS"),
            (". IN A 127.0.0.1", "line 1: record type A"),
            ("\nexample IN DS 1 8 2 00", "line 2: owner name"),
            (". IN DS 1 8 2 zz", "not hexadecimal"),
            (". IN DS 1 8 99 00", "digest type 99"),
            (". IN DNSKEY 257 3 8 !!!", "invalid DNSKEY"),
            (". IN DS 1 8 2 ( 00", "unbalanced"),
            ("$ORIGIN example.", "not supported"),
        ] {
            let err = parse_anchor_file(text).err().unwrap_or_default();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }
}

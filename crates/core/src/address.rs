//! What a user types: mail addresses and domains.
//!
//! Parse, don't validate: an [`Address`] or [`Domain`] that exists is valid,
//! and its domain is in A-label form (IDNA, RFC 5890/5891, via UTS #46 with
//! STD3 rules), lower case, without the trailing dot. The limits are those
//! of DNS (RFC 1035 §2.3.4: 63-octet labels, 253-octet names in text form)
//! and of SMTP (RFC 5321 §4.5.3.1.1: a 64-octet local part).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest input accepted before any parsing (RFC 5321 §4.5.3.1.3 limits a
/// path to 256 octets; a typed address with spaces trimmed is no longer).
pub const MAX_INPUT_LEN: usize = 320;
/// RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// RFC 1035 §2.3.4 (63 octets per label).
pub const MAX_LABEL_LEN: usize = 63;
/// RFC 1035 §2.3.4 (255 octets on the wire is 253 characters in text form).
pub const MAX_DOMAIN_LEN: usize = 253;

/// Why a typed address or domain was refused. The `Display` text is one line
/// meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Nothing was typed.
    #[error("empty address")]
    Empty,
    /// The input is longer than [`MAX_INPUT_LEN`].
    #[error("longer than {MAX_INPUT_LEN} characters")]
    TooLong,
    /// An address without `@`.
    #[error("no '@' in the address (expected local-part@domain)")]
    MissingAt,
    /// Nothing before the `@`.
    #[error("nothing before the '@'")]
    EmptyLocalPart,
    /// The local part is over [`MAX_LOCAL_PART_LEN`] octets.
    #[error("the part before the '@' is longer than {MAX_LOCAL_PART_LEN} octets")]
    LocalPartTooLong,
    /// The local part contains a space or control character.
    #[error("the part before the '@' contains a space or control character")]
    BadLocalPart,
    /// Nothing after the `@`.
    #[error("nothing after the '@'")]
    EmptyDomain,
    /// A label of the domain is longer than 63 octets.
    #[error("domain label '{0}…' is longer than {MAX_LABEL_LEN} octets")]
    LabelTooLong(String),
    /// The domain is longer than 253 octets.
    #[error("domain is longer than {MAX_DOMAIN_LEN} octets")]
    DomainTooLong,
    /// An empty label (`a..b`, a leading dot).
    #[error("domain has an empty label")]
    EmptyLabel,
    /// A label starts or ends with a hyphen.
    #[error("domain label '{0}' starts or ends with a hyphen")]
    HyphenAtEdge(String),
    /// A character that host names cannot hold.
    #[error("domain '{0}' contains a character not allowed in host names")]
    BadCharacter(String),
    /// A single-label name such as `localhost` (mail to it has no MX meaning).
    #[error("domain '{0}' has a single label; a mail domain needs at least two")]
    SingleLabel(String),
    /// An address literal (`user@[192.0.2.1]`) is not a domain with MX hosts.
    #[error("address literals like '[{0}]' are not checked; use a domain")]
    AddressLiteral(String),
}

/// A mail domain in A-label form: lower case, no trailing dot, valid for DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    /// Parses a domain typed by a person; U-labels become A-labels.
    pub fn parse(input: &str) -> Result<Domain, AddressError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        if input.len() > MAX_INPUT_LEN {
            return Err(AddressError::TooLong);
        }
        if let Some(literal) = input.strip_prefix('[') {
            return Err(AddressError::AddressLiteral(shown(
                literal.trim_end_matches(']'),
            )));
        }
        let input = input.strip_suffix('.').unwrap_or(input);
        // Label checks on the text as typed give the clearest message for
        // ASCII input; IDNA then handles (and re-checks) the rest.
        check_labels(input)?;
        let ascii = if input.is_ascii() {
            input.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii_strict(input)
                .map_err(|_| AddressError::BadCharacter(shown(input)))?
        };
        check_labels(&ascii)?;
        if !ascii
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(AddressError::BadCharacter(shown(input)));
        }
        if !ascii.contains('.') {
            return Err(AddressError::SingleLabel(shown(&ascii)));
        }
        Ok(Domain(ascii))
    }

    /// The A-label form, e.g. `xn--bcher-kva.example`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Input echoed in an error: control characters escaped and length bounded,
/// so that the message stays one harmless line.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}

fn check_labels(name: &str) -> Result<(), AddressError> {
    for label in name.split('.') {
        if label.is_empty() {
            return Err(AddressError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            let head: String = shown(&label.chars().take(16).collect::<String>());
            return Err(AddressError::LabelTooLong(head));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::HyphenAtEdge(shown(label)));
        }
    }
    if name.len() > MAX_DOMAIN_LEN {
        return Err(AddressError::DomainTooLong);
    }
    Ok(())
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Domain::parse(&s)
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

/// A mail address: a local part (kept as typed) and a [`Domain`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: Domain,
}

impl Address {
    /// Parses `local@domain`. The split is at the last `@`, so a quoted local
    /// part that holds an `@` still works.
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        if input.len() > MAX_INPUT_LEN {
            return Err(AddressError::TooLong);
        }
        let (local, domain) = input.rsplit_once('@').ok_or(AddressError::MissingAt)?;
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if local.len() > MAX_LOCAL_PART_LEN {
            return Err(AddressError::LocalPartTooLong);
        }
        if local.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::BadLocalPart);
        }
        if domain.is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        Ok(Address {
            local: local.to_owned(),
            domain: Domain::parse(domain)?,
        })
    }

    /// The part before the `@`, as typed.
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain, in A-label form.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// What a check is asked about: an address, or (in bulk scans) a bare domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A full mail address.
    Address(Address),
    /// A bare mail domain.
    Domain(Domain),
}

impl Target {
    /// Parses a line of a scan file: an address if it holds `@`, else a domain.
    pub fn parse_address_or_domain(input: &str) -> Result<Target, AddressError> {
        if input.contains('@') {
            Address::parse(input).map(Target::Address)
        } else {
            Domain::parse(input).map(Target::Domain)
        }
    }

    /// The domain whose mail servers are checked.
    pub fn domain(&self) -> &Domain {
        match self {
            Target::Address(a) => a.domain(),
            Target::Domain(d) => d,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Address(a) => a.fmt(f),
            Target::Domain(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_address_is_lower_cased_in_the_domain_only() {
        let a = Address::parse(" Alice@Example.ORG ").expect("valid");
        assert_eq!(a.local_part(), "Alice");
        assert_eq!(a.domain().as_str(), "example.org");
        assert_eq!(a.to_string(), "Alice@example.org");
    }

    #[test]
    fn internationalised_domain_becomes_a_labels() {
        let a = Address::parse("jörg@bücher.example").expect("valid");
        assert_eq!(a.domain().as_str(), "xn--bcher-kva.example");
        let d = Domain::parse("ÄÖÜ.example.").expect("valid");
        assert_eq!(d.as_str(), "xn--4ca0bs.example");
    }

    #[test]
    fn invalid_inputs_get_a_reason() {
        let cases: &[(&str, AddressError)] = &[
            ("", AddressError::Empty),
            ("foo", AddressError::MissingAt),
            ("a@", AddressError::EmptyDomain),
            ("@example.org", AddressError::EmptyLocalPart),
            ("a@-x-.org", AddressError::HyphenAtEdge("-x-".into())),
            ("a@x..org", AddressError::EmptyLabel),
            ("a b@example.org", AddressError::BadLocalPart),
            (
                "a@exa mple.org",
                AddressError::BadCharacter("exa mple.org".into()),
            ),
            (
                "a@under_score.org",
                AddressError::BadCharacter("under_score.org".into()),
            ),
            ("a@localhost", AddressError::SingleLabel("localhost".into())),
            (
                "a@[192.0.2.1]",
                AddressError::AddressLiteral("192.0.2.1".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                Address::parse(input).as_ref().err(),
                Some(want),
                "{input:?}"
            );
        }
        for label in [64, 300] {
            let input = format!("a@{}.org", "x".repeat(label));
            assert!(
                matches!(Address::parse(&input), Err(AddressError::LabelTooLong(_))),
                "{label}"
            );
        }
        let too_long = format!("a@{}.org", "x".repeat(400));
        assert_eq!(Address::parse(&too_long).err(), Some(AddressError::TooLong));
        let name = format!("a@{}org", "abcdefghi.".repeat(26));
        assert_eq!(
            Address::parse(&name).err(),
            Some(AddressError::DomainTooLong)
        );
    }

    #[test]
    fn every_error_is_one_line() {
        // "I\n/" was found by the `address` fuzz target.
        for input in [
            "foo",
            "a@",
            "a@-x-.org",
            "a@x..org",
            "\u{7}@example.org",
            "I\n/",
            "a@b\r\nc.org",
            "a@[1\n]",
        ] {
            let msg = Address::parse(input).expect_err("invalid").to_string();
            assert!(!msg.contains('\n') && !msg.is_empty(), "{msg:?}");
            let msg = Target::parse_address_or_domain(input)
                .expect_err("invalid")
                .to_string();
            assert!(
                !msg.contains('\n') && !msg.contains('\r') && !msg.is_empty(),
                "{msg:?}"
            );
        }
    }

    #[test]
    fn scan_lines_accept_domains_and_addresses() {
        assert_eq!(
            Target::parse_address_or_domain("Example.org")
                .expect("domain")
                .domain()
                .as_str(),
            "example.org"
        );
        assert!(matches!(
            Target::parse_address_or_domain("b@example.org"),
            Ok(Target::Address(_))
        ));
    }
}

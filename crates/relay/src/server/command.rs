//! Parsing SMTP commands (RFC 5321 §4.1) as a pure function over one line.
//!
//! We parse ourselves rather than with `smtp-proto`: the submission server
//! needs only a dozen commands, and owning the parser keeps every rule of
//! SPEC §7 in one reviewed place (no CR, LF or other control octet in a
//! command; lengths bounded; unknown parameters refused, RFC 5321
//! §4.1.1.11) and gives [`parse_command`] a fuzz target with our own
//! invariants. Parameters we support: `SIZE` (RFC 1870) and `BODY`
//! (RFC 6152) on MAIL; none on RCPT.

use super::reply::Refusal;

/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// Longest domain (RFC 5321 §4.5.3.1.2).
const MAX_DOMAIN: usize = 255;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `EHLO domain` (RFC 5321 §4.1.1.1).
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<reverse-path> [params]` (RFC 5321 §4.1.1.2).
    Mail {
        /// The sender's mailbox; empty for the null reverse-path `<>`.
        from: String,
        /// The declared size (RFC 1870 §6), if any.
        size: Option<u64>,
    },
    /// `RCPT TO:<forward-path>` (RFC 5321 §4.1.1.3).
    Rcpt {
        /// The recipient's mailbox.
        to: String,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string` (answered with 252).
    Vrfy,
    /// `HELP [string]`.
    Help,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    Auth {
        /// The SASL mechanism.
        mechanism: Mechanism,
        /// The initial response, still base64 (`=` for an empty one).
        initial_response: Option<String>,
    },
}

/// SASL mechanisms we offer (only over TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The de-facto `LOGIN` mechanism (draft-murchison-sasl-login).
    Login,
}

/// Parses one command line (without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, Refusal> {
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(Refusal::BareLineEnding);
    }
    // No SMTPUTF8 is offered: commands are printable ASCII, spaces and tabs.
    if !line
        .iter()
        .all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(Refusal::Syntax(
            "only printable ASCII is allowed in commands",
        ));
    }
    // Checked above: all ASCII, so valid UTF-8.
    let line = std::str::from_utf8(line).map_err(|_| Refusal::Syntax("not ASCII"))?;
    let (verb, rest) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    let no_args = |command: Command| {
        if rest.is_empty() {
            Ok(command)
        } else {
            Err(Refusal::Syntax("no arguments expected"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => parse_helo_name(rest).map(Command::Ehlo),
        "HELO" => parse_helo_name(rest).map(Command::Helo),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if !rest.is_empty() => Ok(Command::Vrfy),
        "VRFY" => Err(Refusal::Syntax("VRFY needs an argument")),
        "AUTH" => parse_auth(rest),
        _ => Err(Refusal::UnknownCommand),
    }
}

/// The EHLO/HELO argument: a domain or an address literal. It ends up in
/// our `Received:` header, so only characters of those forms are allowed.
fn parse_helo_name(arg: &str) -> Result<String, Refusal> {
    if arg.is_empty() {
        return Err(Refusal::Syntax(
            "EHLO/HELO needs a domain or address literal",
        ));
    }
    if arg.len() > MAX_DOMAIN
        || !arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
    {
        return Err(Refusal::Syntax("invalid EHLO/HELO name"));
    }
    Ok(arg.to_owned())
}

fn parse_mail(rest: &str) -> Result<Command, Refusal> {
    let after = strip_prefix_ignore_case(rest, "FROM:")
        .ok_or(Refusal::Syntax("expected MAIL FROM:<address>"))?;
    let (path, params) = split_path(after)?;
    let from = if path.is_empty() {
        String::new()
    } else {
        parse_mailbox(path)?
    };
    let mut size = None;
    let mut body = false;
    for param in params.split_ascii_whitespace() {
        let (keyword, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        match (keyword.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) if size.is_none() => {
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Refusal::Syntax("SIZE needs a number"));
                }
                // Twenty digits may not fit: anything that large is too big.
                size = Some(v.parse::<u64>().unwrap_or(u64::MAX));
            }
            ("BODY", Some(v)) if !body => {
                if !v.eq_ignore_ascii_case("7BIT") && !v.eq_ignore_ascii_case("8BITMIME") {
                    return Err(Refusal::UnsupportedParameter(format!("BODY={v}")));
                }
                body = true;
            }
            ("SIZE" | "BODY", _) => return Err(Refusal::Syntax("bad or repeated SIZE/BODY")),
            _ => return Err(Refusal::UnsupportedParameter(keyword.to_owned())),
        }
    }
    Ok(Command::Mail { from, size })
}

fn parse_rcpt(rest: &str) -> Result<Command, Refusal> {
    let after = strip_prefix_ignore_case(rest, "TO:")
        .ok_or(Refusal::Syntax("expected RCPT TO:<address>"))?;
    let (path, params) = split_path(after)?;
    if let Some(param) = params.split_ascii_whitespace().next() {
        return Err(Refusal::UnsupportedParameter(param.to_owned()));
    }
    if path.is_empty() {
        return Err(Refusal::BadAddress("empty recipient"));
    }
    Ok(Command::Rcpt {
        to: parse_mailbox(path)?,
    })
}

fn parse_auth(rest: &str) -> Result<Command, Refusal> {
    let mut words = rest.split_ascii_whitespace();
    let mechanism = match words.next() {
        Some(m) if m.eq_ignore_ascii_case("PLAIN") => Mechanism::Plain,
        Some(m) if m.eq_ignore_ascii_case("LOGIN") => Mechanism::Login,
        Some(_) => return Err(Refusal::UnknownMechanism),
        None => return Err(Refusal::Syntax("AUTH needs a mechanism")),
    };
    let initial_response = words.next().map(str::to_owned);
    if words.next().is_some() {
        return Err(Refusal::Syntax("too many AUTH arguments"));
    }
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s[prefix.len()..].trim_start())
}

/// Splits `<path> params` into the text between the angle brackets and the
/// rest. A `>` inside a quoted local part does not end the path.
fn split_path(s: &str) -> Result<(&str, &str), Refusal> {
    let inner = s
        .strip_prefix('<')
        .ok_or(Refusal::BadAddress("address must be in <>"))?;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let rest = &inner[i + 1..];
                if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
                    return Err(Refusal::Syntax("space expected after the address"));
                }
                return Ok((&inner[..i], rest.trim()));
            }
            _ => {}
        }
    }
    Err(Refusal::BadAddress("missing >"))
}

/// A mailbox (RFC 5321 §4.1.2): `local@domain`, after dropping an obsolete
/// source route (`@a,@b:`, which RFC 5321 §4.1.1.3 says to ignore).
fn parse_mailbox(path: &str) -> Result<String, Refusal> {
    let mailbox = if path.starts_with('@') {
        path.split_once(':')
            .map(|(_, m)| m)
            .ok_or(Refusal::BadAddress("bad source route"))?
    } else {
        path
    };
    let at = mailbox
        .rfind('@')
        .ok_or(Refusal::BadAddress("address needs a domain"))?;
    let (local, domain) = (&mailbox[..at], &mailbox[at + 1..]);
    if local.is_empty() || local.len() > MAX_LOCAL_PART {
        return Err(Refusal::BadAddress("bad local part length"));
    }
    let local_ok = if local.starts_with('"') {
        local.len() >= 2 && local.ends_with('"')
    } else {
        local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
    };
    if !local_ok {
        return Err(Refusal::BadAddress("bad local part"));
    }
    let domain_ok = if let Some(literal) = domain.strip_prefix('[') {
        literal.ends_with(']') && literal.len() > 1
    } else {
        domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    };
    if domain.is_empty() || domain.len() > MAX_DOMAIN || !domain_ok {
        return Err(Refusal::BadAddress("bad domain"));
    }
    Ok(mailbox.to_owned())
}

/// RFC 5322 §3.2.3 atext.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse_command(line.as_bytes()).expect(line)
    }

    fn err(line: &[u8]) -> Refusal {
        parse_command(line).expect_err(&String::from_utf8_lossy(line))
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            ok("ehlo client.example"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(ok("Helo [192.0.2.1]"), Command::Helo("[192.0.2.1]".into()));
        assert_eq!(ok("quit"), Command::Quit);
        assert_eq!(ok("StartTLS"), Command::StartTls);
        assert_eq!(err(b"XYZZY"), Refusal::UnknownCommand);
        assert_eq!(err(b"BDAT 10 LAST"), Refusal::UnknownCommand);
    }

    /// RFC 5321 §4.1.1.2 and RFC 1870 §6.
    #[test]
    fn mail_from_with_size_and_null_sender() {
        assert_eq!(
            ok("MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME"),
            Command::Mail {
                from: "a@example.org".into(),
                size: Some(1000)
            }
        );
        assert_eq!(
            ok("mail from: <>"),
            Command::Mail {
                from: String::new(),
                size: None
            }
        );
        assert_eq!(
            ok("MAIL FROM:<a@b.example> SIZE=99999999999999999999"),
            Command::Mail {
                from: "a@b.example".into(),
                size: Some(u64::MAX)
            }
        );
        assert!(matches!(
            err(b"MAIL FROM:<a@b.example> FOO=1"),
            Refusal::UnsupportedParameter(_)
        ));
        assert!(matches!(
            err(b"MAIL FROM:<a@b.example> SIZE=x"),
            Refusal::Syntax(_)
        ));
        assert!(matches!(
            err(b"MAIL FROM:a@b.example"),
            Refusal::BadAddress(_)
        ));
        assert!(matches!(err(b"MAIL TO:<a@b.example>"), Refusal::Syntax(_)));
    }

    #[test]
    fn rcpt_to_needs_a_mailbox() {
        assert_eq!(
            ok("RCPT TO:<bob@example.net>"),
            Command::Rcpt {
                to: "bob@example.net".into()
            }
        );
        assert_eq!(
            ok("RCPT TO:<@relay.example:bob@example.net>"),
            Command::Rcpt {
                to: "bob@example.net".into()
            }
        );
        assert_eq!(
            ok("RCPT TO:<\"odd >name\"@example.net>"),
            Command::Rcpt {
                to: "\"odd >name\"@example.net".into()
            }
        );
        for bad in [
            "RCPT TO:<>",
            "RCPT TO:<bob>",
            "RCPT TO:<bob@>",
            "RCPT TO:<a..b@x.example>",
            "RCPT TO:<bob@-x.example>",
            "RCPT TO:<bob@x.example",
        ] {
            assert!(
                matches!(err(bad.as_bytes()), Refusal::BadAddress(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            err(b"RCPT TO:<b@x.example> NOTIFY=NEVER"),
            Refusal::UnsupportedParameter(_)
        ));
    }

    #[test]
    fn auth_mechanisms() {
        assert_eq!(
            ok("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
            Command::Auth {
                mechanism: Mechanism::Plain,
                initial_response: Some("AGFsaWNlAHNlY3JldA==".into())
            }
        );
        assert_eq!(
            ok("auth login"),
            Command::Auth {
                mechanism: Mechanism::Login,
                initial_response: None
            }
        );
        assert_eq!(err(b"AUTH CRAM-MD5"), Refusal::UnknownMechanism);
    }

    /// SPEC §7: control octets never pass as part of a command.
    #[test]
    fn control_octets_are_refused() {
        assert_eq!(err(b"NOOP\r"), Refusal::BareLineEnding);
        assert_eq!(err(b"NO\nOP"), Refusal::BareLineEnding);
        assert!(matches!(err(b"EHLO a\x00b"), Refusal::Syntax(_)));
        assert!(matches!(err("EHLO ä".as_bytes()), Refusal::Syntax(_)));
        assert!(matches!(err(b"EHLO a(b)"), Refusal::Syntax(_)));
    }
}

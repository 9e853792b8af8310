//! Server replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034,
//! RFC 3463), and [`Refusal`], the typed reasons a session says no.
//!
//! RFC 2034 §3: with ENHANCEDSTATUSCODES advertised, every reply except the
//! greeting, EHLO/HELO and the intermediate `334`/`354` carries an enhanced
//! code after the reply code, on every line.

use mailtls_core::status::SmtpStatus;

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code, printed on every line when present.
    pub status: Option<SmtpStatus>,
    /// The text lines (at least one). Never contain CR or LF.
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply with an enhanced status code; the code is the status's.
    pub fn new(status: SmtpStatus, text: impl Into<String>) -> Reply {
        Reply {
            code: status.code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greeting, EHLO, `334`, `354`).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            status: None,
            lines,
        }
    }

    /// Whether the reply is a permanent or transient failure (4xx/5xx).
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// The reply in wire form, each line ended by CRLF.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Appends the reply in wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let enhanced = self.status.map(|s| s.enhanced());
        let last = self.lines.len().saturating_sub(1);
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(enhanced) = &enhanced {
                out.extend_from_slice(enhanced.as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            // Defence in depth: text never carries a line break onto the wire.
            out.extend(line.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Why the server refuses a command or a message. Each reason knows its
/// reply ([`Refusal::status`], and the text from `Display`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A command line over 512 octets (RFC 5321 §4.5.3.1.4).
    #[error("line too long")]
    LineTooLong,
    /// A bare CR or LF in a command (SMTP smuggling, SPEC §7).
    #[error("bare CR or LF not allowed; lines end with CRLF")]
    BareLineEnding,
    /// A command that is not SMTP, or not implemented here.
    #[error("command not recognized")]
    UnknownCommand,
    /// A command whose arguments do not parse.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// A MAIL or RCPT parameter we do not support (RFC 5321 §4.1.1.11).
    #[error("parameter not supported: {0}")]
    UnsupportedParameter(String),
    /// A reverse-path or forward-path that is not a mailbox.
    #[error("bad address syntax: {0}")]
    BadAddress(&'static str),
    /// A command out of order (MAIL before EHLO, RCPT before MAIL, …).
    #[error("{0}")]
    BadSequence(&'static str),
    /// AUTH on a connection without TLS (RFC 4954 §4, RFC 6409).
    #[error("Encryption required for requested authentication mechanism")]
    EncryptionRequired,
    /// An AUTH mechanism we do not offer.
    #[error("unrecognized authentication mechanism")]
    UnknownMechanism,
    /// Wrong user name or password (RFC 4954 §6).
    #[error("authentication credentials invalid")]
    AuthFailed,
    /// The client cancelled AUTH with `*` (RFC 4954 §4).
    #[error("authentication cancelled")]
    AuthCancelled,
    /// A recipient that is not ours to relay to, without AUTH or a trusted
    /// network: mailtls is never an open relay.
    #[error("Relay access denied")]
    RelayDenied,
    /// A local recipient, or a secure alias, that does not exist.
    #[error("<{0}>: Recipient address rejected: no such user here")]
    NoSuchUser(String),
    /// SPEC §4: the secure alias needs TLS, or a secure sender's recipient
    /// cannot take the mail encrypted as required. The text says why.
    #[error("{0}")]
    EncryptionNeeded(String),
    /// SPEC §4: a sender at the secure domain that is not the login's own
    /// active alias.
    #[error("<{0}>: Sender address rejected: not your active secure alias")]
    NotYourAlias(String),
    /// More recipients than `max_recipients` (RFC 5321 §4.5.3.1.8).
    #[error("too many recipients")]
    TooManyRecipients,
    /// The declared or actual size is over the limit (RFC 1870 §6).
    #[error("message size exceeds fixed maximum message size")]
    MessageTooBig,
    /// A DATA line over 1000 octets (RFC 5321 §4.5.3.1.6).
    #[error("message line too long")]
    DataLineTooLong,
    /// A bare CR or LF inside DATA (SMTP smuggling, SPEC §7).
    #[error("bare CR or LF in message; lines end with CRLF")]
    BareLineEndingInData,
    /// Spool or queue failed: nothing was queued, try again later.
    #[error("local error in processing; message not queued")]
    LocalError,
    /// Too many connections at once.
    #[error("too many connections, try again later")]
    TooManyConnections,
    /// Too many errors in one session.
    #[error("too many errors")]
    TooManyErrors,
    /// Too many failed AUTH attempts in one session.
    #[error("too many authentication failures")]
    TooManyAuthFailures,
    /// No command within the idle timeout (RFC 5321 §4.5.3.2.7).
    #[error("idle timeout, closing connection")]
    IdleTimeout,
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl Refusal {
    /// Reply code and enhanced status code (RFC 5321 §4.2.3, RFC 3463).
    pub fn status(&self) -> SmtpStatus {
        match self {
            Refusal::LineTooLong => SmtpStatus::new(500, 5, 5, 6),
            Refusal::BareLineEnding => SmtpStatus::new(500, 5, 5, 2),
            Refusal::UnknownCommand => SmtpStatus::new(500, 5, 5, 1),
            Refusal::Syntax(_) => SmtpStatus::new(501, 5, 5, 4),
            Refusal::UnsupportedParameter(_) => SmtpStatus::new(555, 5, 5, 4),
            Refusal::BadAddress(_) => SmtpStatus::new(501, 5, 1, 3),
            Refusal::BadSequence(_) => SmtpStatus::new(503, 5, 5, 1),
            Refusal::EncryptionRequired => SmtpStatus::new(538, 5, 7, 11),
            Refusal::UnknownMechanism => SmtpStatus::new(504, 5, 5, 4),
            Refusal::AuthFailed => SmtpStatus::new(535, 5, 7, 8),
            Refusal::AuthCancelled => SmtpStatus::new(501, 5, 0, 0),
            Refusal::RelayDenied => SmtpStatus::new(554, 5, 7, 1),
            Refusal::NoSuchUser(_) => SmtpStatus::new(550, 5, 1, 1),
            Refusal::EncryptionNeeded(_) => SmtpStatus::ENCRYPTION_NEEDED,
            Refusal::NotYourAlias(_) => SmtpStatus::new(553, 5, 7, 1),
            Refusal::TooManyRecipients => SmtpStatus::new(452, 4, 5, 3),
            Refusal::MessageTooBig => SmtpStatus::new(552, 5, 3, 4),
            Refusal::DataLineTooLong => SmtpStatus::new(500, 5, 5, 6),
            Refusal::BareLineEndingInData => SmtpStatus::new(554, 5, 6, 0),
            Refusal::LocalError => SmtpStatus::new(451, 4, 3, 0),
            Refusal::TooManyConnections => SmtpStatus::new(421, 4, 7, 0),
            Refusal::TooManyErrors => SmtpStatus::new(421, 4, 7, 0),
            Refusal::TooManyAuthFailures => SmtpStatus::new(421, 4, 7, 0),
            Refusal::IdleTimeout => SmtpStatus::new(421, 4, 4, 2),
            Refusal::ShuttingDown => SmtpStatus::new(421, 4, 3, 2),
        }
    }

    /// The reply that tells the client.
    pub fn reply(&self) -> Reply {
        Reply::new(self.status(), self.to_string())
    }

    /// Whether the client caused it (counts toward the session's error
    /// limit); a local failure or a limit of ours does not.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Refusal::LocalError
                | Refusal::TooManyConnections
                | Refusal::IdleTimeout
                | Refusal::ShuttingDown
                | Refusal::TooManyRecipients
                // A policy answer, not a confused client: a message to ten
                // recipients without TLS must not end the session.
                | Refusal::EncryptionNeeded(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_use_hyphens_and_enhanced_codes_on_every_line() {
        let reply = Reply {
            code: 250,
            status: Some(SmtpStatus::new(250, 2, 0, 0)),
            lines: vec!["one".into(), "two".into()],
        };
        assert_eq!(reply.to_wire(), b"250-2.0.0 one\r\n250 2.0.0 two\r\n");
        assert_eq!(
            Reply::plain(354, vec!["go".into()]).to_wire(),
            b"354 go\r\n"
        );
    }

    #[test]
    fn reply_text_cannot_break_lines() {
        let reply = Reply::plain(250, vec!["a\r\n250 b".into()]);
        assert_eq!(reply.to_wire(), b"250 a250 b\r\n");
    }

    #[test]
    fn refusals_carry_their_smtp_codes() {
        assert_eq!(
            Refusal::RelayDenied.reply().to_wire(),
            b"554 5.7.1 Relay access denied\r\n"
        );
        assert_eq!(
            Refusal::EncryptionRequired.status().to_string(),
            "538 5.7.11"
        );
        assert_eq!(Refusal::MessageTooBig.status().to_string(), "552 5.3.4");
        assert!(Refusal::TooManyRecipients.status().is_temporary());
    }
}

//! Delivery status notifications: telling a sender that mail failed, and why
//! (RFC 3464, RFC 3462/6522 `multipart/report`).
//!
//! SPEC §2 promises that a message held for its own protection (DANE
//! mismatch, a server that did TLS before and now refuses it) bounces with
//! words a person understands, so the first part leads with a plain
//! explanation per recipient; the machine-readable `message/delivery-status`
//! part and the original headers (`text/rfc822-headers`) follow.
//!
//! Building a DSN is a pure function ([`build_dsn`]); queueing it is the
//! queue runner's job. A DSN is sent from the null reverse-path `<>`
//! (RFC 5321 §4.5.5), so a DSN that fails is never answered with another.
//!
//! Everything in the report is US-ASCII, lines well under 998 octets
//! (RFC 5322 §2.1.1): text from remote servers is reduced to printable
//! ASCII and shortened before it goes in.

use std::fmt::Write as _;

use mailtls_core::SmtpStatus;

use crate::date::rfc5322_date;

/// Longest piece of server or reason text copied into a DSN.
const MAX_TEXT: usize = 900;
/// Most octets of the original message's header copied into part 3.
const MAX_HEADERS: usize = 64 * 1024;

/// One recipient the DSN reports as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The address, as in the envelope.
    pub address: String,
    /// The final status (`5.x.x`).
    pub status: SmtpStatus,
    /// What happened, for `Diagnostic-Code` and the human text: the remote
    /// server's reply, or our own reason.
    pub reason: String,
    /// The MX host that answered, when one did.
    pub remote_mta: Option<String>,
    /// Whether `reason` is a remote server's reply (`smtp;` diagnostic) or
    /// our own words (`X-mailtls;`).
    pub remote_reply: bool,
}

/// What a DSN is about.
#[derive(Debug, Clone)]
pub struct DsnInput<'a> {
    /// Our host name: `Reporting-MTA` and the `MAILER-DAEMON@` domain.
    pub hostname: &'a str,
    /// The queue id of the failed message.
    pub message_id: &'a str,
    /// The id of the DSN itself, for its `Message-ID`.
    pub dsn_id: &'a str,
    /// The envelope sender of the failed message; the DSN goes there.
    pub original_sender: &'a str,
    /// When the failed message was received (Unix seconds).
    pub arrival: i64,
    /// Now (Unix seconds), for `Date`.
    pub now: i64,
    /// The recipients that failed.
    pub failed: &'a [FailedRecipient],
    /// The failed message as spooled (only its header is copied).
    pub original: &'a [u8],
}

/// The DSN as a complete message (CRLF lines), ready for the spool.
pub fn build_dsn(input: &DsnInput<'_>) -> Vec<u8> {
    let boundary = format!("=_mailtls_dsn_{}", ascii(input.dsn_id, 64));
    let hostname = ascii(input.hostname, 255);
    let mut m = String::new();
    let date = rfc5322_date(input.now);
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{to}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated delivery status notification.\r\n\
         \r\n",
        to = ascii(input.original_sender, 320),
        id = ascii(input.dsn_id, 64),
    );

    // Part 1: the explanation, first (RFC 3464 §2: human-readable part).
    let _ = write!(
        m,
        "--{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Description: Notification\r\n\
         \r\n"
    );
    for line in human_text(input) {
        m.push_str(&line);
        m.push_str("\r\n");
    }
    m.push_str("\r\n");

    // Part 2: RFC 3464 §2.2 per-message fields, §2.3 per-recipient fields.
    let _ = write!(
        m,
        "--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n\
         X-mailtls-Queue-ID: {id}\r\n\
         Arrival-Date: {arrival}\r\n",
        id = ascii(input.message_id, 64),
        arrival = rfc5322_date(input.arrival),
    );
    for r in input.failed {
        let diagnostic = if r.remote_reply { "smtp" } else { "X-mailtls" };
        let _ = write!(
            m,
            "\r\n\
             Final-Recipient: rfc822; {address}\r\n\
             Action: failed\r\n\
             Status: {status}\r\n",
            address = ascii(&r.address, 320),
            status = r.status.enhanced(),
        );
        if let Some(mta) = &r.remote_mta {
            let _ = write!(m, "Remote-MTA: dns; {}\r\n", ascii(mta, 255));
        }
        let _ = write!(
            m,
            "Diagnostic-Code: {diagnostic}; {}\r\n",
            ascii(&r.reason, MAX_TEXT)
        );
    }
    m.push_str("\r\n");

    // Part 3: the original header (RFC 6522 §3: text/rfc822-headers).
    let _ = write!(
        m,
        "--{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         Content-Description: Undelivered message headers\r\n\
         \r\n"
    );
    for line in header_lines(input.original) {
        m.push_str(&line);
        m.push_str("\r\n");
    }
    let _ = write!(m, "\r\n--{boundary}--\r\n");
    m.into_bytes()
}

/// The words a person reads: what failed and why, one paragraph per
/// recipient, wrapped at 76 columns.
fn human_text(input: &DsnInput<'_>) -> Vec<String> {
    let mut lines = wrap(&format!(
        "This is the mail system at {}. Your message could not be delivered to \
         the recipients below. It was not sent, and it will not be retried.",
        ascii(input.hostname, 255)
    ));
    for r in input.failed {
        lines.push(String::new());
        lines.push(format!("<{}>:", ascii(&r.address, 320)));
        lines.extend(wrap(&explain(r)));
        let detail = match &r.remote_mta {
            Some(mta) => format!(
                "Details: {} said: {}",
                ascii(mta, 255),
                ascii(&r.reason, MAX_TEXT)
            ),
            None => format!("Details: {}", ascii(&r.reason, MAX_TEXT)),
        };
        lines.extend(wrap(&detail).into_iter().map(|l| format!("    {l}")));
    }
    lines
}

/// Why, in plain words, from the status and our reason text.
fn explain(r: &FailedRecipient) -> String {
    let status = r.status;
    let reason = r.reason.to_ascii_lowercase();
    if status == SmtpStatus::NULL_MX {
        return "The recipient's domain says it accepts no mail at all (it publishes a \
                \"null MX\" record, RFC 7505)."
            .into();
    }
    if status == SmtpStatus::NO_SUCH_DOMAIN {
        return "The recipient's domain does not exist. Please check the address for typos.".into();
    }
    let expired = (status.subject, status.detail) == (4, 7);
    let prefix = if expired {
        "We kept trying to deliver this message for as long as we keep mail and gave up. "
    } else {
        ""
    };
    let why = if reason.contains("did tls before") {
        "The recipient's server did TLS before and now refuses it; the message was not \
         sent in plaintext to protect you (this can be an attack that strips encryption)."
    } else if reason.contains("tlsa") || reason.contains("dane") {
        "The recipient's domain publishes DANE records (RFC 7672) that its server's \
         certificate does not match, so the server could not be authenticated; the \
         message was not sent, to protect it from interception."
    } else if reason.contains("dnssec") || reason.contains("bogus") {
        "The recipient's DNS answers failed their DNSSEC signature checks, so we could \
         not tell where the mail may safely go; it was held rather than risk sending it \
         to the wrong server."
    } else if reason.contains("encrypted delivery") || reason.contains("sender requires") {
        "Your account requires encrypted delivery, and the recipient's server could not \
         provide it, so the message was not sent."
    } else if reason.contains("tls") {
        "An encrypted connection to the recipient's server was required and could not be \
         established, so the message was not sent in plaintext."
    } else if r.remote_reply {
        "The recipient's mail server refused the message."
    } else if expired {
        "The recipient's mail servers could not be reached."
    } else {
        "The message could not be delivered."
    };
    format!("{prefix}{why}")
}

/// The original's header block, as lines, bounded.
fn header_lines(original: &[u8]) -> Vec<String> {
    let end = original
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(original.len())
        .min(MAX_HEADERS);
    String::from_utf8_lossy(&original[..end])
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .map(|line| ascii(line, MAX_TEXT))
        .collect()
}

/// Printable US-ASCII only (others become `?`), at most `max` characters.
fn ascii(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c == '\t' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect()
}

/// Greedy word wrap at 76 columns (a longer word gets its own line).
fn wrap(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_ascii_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 76 {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(failed: &[FailedRecipient]) -> String {
        let input = DsnInput {
            hostname: "relay.example.org",
            message_id: "Q1",
            dsn_id: "D1",
            original_sender: "alice@example.org",
            arrival: 1_796_010_981,
            now: 1_796_011_000,
            failed,
            original: b"Received: from x\r\nSubject: Hello\r\nFrom: alice@example.org\r\n\r\nsecret body\r\n",
        };
        String::from_utf8(build_dsn(&input)).expect("ascii")
    }

    fn downgrade() -> FailedRecipient {
        FailedRecipient {
            address: "bob@example.net".into(),
            status: SmtpStatus::EXPIRED,
            reason: "delivery time expired; last error: the server offers no STARTTLS, but TLS \
                     is required: this server did TLS before; not sent in plaintext (possible \
                     downgrade attack)"
                .into(),
            remote_mta: None,
            remote_reply: false,
        }
    }

    /// The MIME parts of a DSN: (headers, body) per part.
    fn parts(dsn: &str) -> Vec<(String, String)> {
        let boundary = dsn
            .split("boundary=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("boundary");
        let mut parts: Vec<&str> = dsn.split(&format!("--{boundary}")).collect();
        assert_eq!(parts.pop().map(str::trim), Some("--"), "closing delimiter");
        parts
            .into_iter()
            .skip(1)
            .map(|p| {
                let p = p.strip_prefix("\r\n").expect("CRLF after delimiter");
                let (h, b) = p.split_once("\r\n\r\n").expect("header/body");
                (h.to_owned(), b.to_owned())
            })
            .collect()
    }

    // --- RFC 3464 §2 / RFC 6522: the report's structure -------------------------

    #[test]
    fn dsn_is_a_three_part_report_from_the_mailer_daemon() {
        let dsn = sample(&[downgrade()]);
        let (head, _) = dsn.split_once("\r\n\r\n").expect("header");
        assert!(head.contains("From: Mail Delivery System <MAILER-DAEMON@relay.example.org>"));
        assert!(head.contains("To: <alice@example.org>"));
        assert!(head.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(head.contains("Auto-Submitted: auto-replied"));
        let parts = parts(&dsn);
        assert_eq!(parts.len(), 3);
        assert!(parts[0].0.starts_with("Content-Type: text/plain"));
        assert!(
            parts[1]
                .0
                .starts_with("Content-Type: message/delivery-status")
        );
        assert!(parts[2].0.starts_with("Content-Type: text/rfc822-headers"));
        assert!(dsn.lines().all(|l| l.len() < 998), "RFC 5322 §2.1.1");
        assert!(!dsn.replace("\r\n", "").contains('\n'), "CRLF only");
        assert!(dsn.is_ascii());
    }

    #[test]
    fn delivery_status_has_per_message_and_per_recipient_fields() {
        let mut refused = downgrade();
        refused.address = "carol@example.net".into();
        refused.status = SmtpStatus::new(550, 5, 1, 1);
        refused.reason = "550 5.1.1 no such user".into();
        refused.remote_mta = Some("mx.example.net".into());
        refused.remote_reply = true;
        let dsn = sample(&[downgrade(), refused]);
        let status = &parts(&dsn)[1].1;
        let groups: Vec<&str> = status.trim_end().split("\r\n\r\n").collect();
        assert_eq!(groups.len(), 3, "{status}");
        assert!(groups[0].contains("Reporting-MTA: dns; relay.example.org"));
        assert!(groups[0].contains("Arrival-Date: "));
        assert!(groups[1].contains("Final-Recipient: rfc822; bob@example.net"));
        assert!(groups[1].contains("Action: failed"));
        assert!(groups[1].contains("Status: 5.4.7"));
        assert!(groups[1].contains("Diagnostic-Code: X-mailtls; delivery time expired"));
        assert!(!groups[1].contains("Remote-MTA"));
        assert!(groups[2].contains("Status: 5.1.1"));
        assert!(groups[2].contains("Remote-MTA: dns; mx.example.net"));
        assert!(groups[2].contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
    }

    #[test]
    fn human_text_comes_first_and_says_why() {
        let dsn = sample(&[downgrade()]);
        let text = parts(&dsn)[0].1.replace("\r\n", " ");
        assert!(
            text.contains("did TLS before and now refuses it; the message was not sent in plaintext to protect you"),
            "{text}"
        );
        let mut null = downgrade();
        null.status = SmtpStatus::NULL_MX;
        let text = parts(&sample(&[null]))[0].1.replace("\r\n", " ");
        assert!(text.contains("accepts no mail"), "{text}");
    }

    #[test]
    fn only_the_original_header_is_returned() {
        let dsn = sample(&[downgrade()]);
        let headers = &parts(&dsn)[2].1;
        assert!(headers.contains("Subject: Hello"));
        assert!(!dsn.contains("secret body"));
    }

    #[test]
    fn remote_text_is_reduced_to_printable_ascii() {
        let mut odd = downgrade();
        odd.reason = "550 caf\u{e9}\r\nInjected: header".into();
        let dsn = sample(&[odd]);
        assert!(dsn.contains("Diagnostic-Code: X-mailtls; 550 caf???Injected: header"));
    }
}

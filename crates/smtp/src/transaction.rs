//! One mail transaction on an established SMTP session: `MAIL FROM`, one
//! `RCPT TO` per recipient, `DATA`, the message, the final reply
//! (RFC 5321 §3.3, §4.1.1.2–§4.1.1.4).
//!
//! The relay calls [`send_mail`] only after `mailtls_core::policy::decide`
//! said `Send` for the session: this module knows nothing about TLS, it
//! moves one message and reports, per recipient, what the server said.
//!
//! Decisions:
//!
//! * **No pipelining** (RFC 2920 is optional): one command, one reply, so
//!   each recipient's reply is unambiguous and the client never has unread
//!   server bytes when it sends.
//! * **Wire form is guaranteed here** ([`data_block`]): every line ends in
//!   CRLF (a bare CR or LF in the spool becomes CRLF, so nothing we send can
//!   be read as a different end of data by the next hop: SMTP smuggling,
//!   SPEC §7), lines starting with `.` get another `.` (RFC 5321 §4.5.2), and
//!   the block ends in `CRLF.CRLF`.
//! * **SIZE** (RFC 1870): announced when the server lists the extension; a
//!   message above the server's stated limit is failed permanently for every
//!   recipient without sending it (RFC 1870 §6: 552 5.3.4).
//! * **8BITMIME** (RFC 6152): `BODY=8BITMIME` when the message has octets
//!   above 127 and the server offers it.
//! * **Time limits** are RFC 5321 §4.5.3.2's client timeouts, each capped by
//!   the operator's limit ([`StepTimes::capped`]).
//! * **Outcomes**: a recipient refused at `RCPT` keeps that reply; the
//!   recipients accepted share the reply to `DATA` (if it is not `354`) or
//!   the final reply. A `MAIL FROM` refusal applies to every recipient. A
//!   connection lost mid-transaction is an error ([`TransactionError`]),
//!   always temporary: the caller cannot know whether the server kept the
//!   message, and re-delivering is the safe side (at least once).

use std::fmt;
use std::time::Duration;

use mailtls_core::SmtpStatus;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::{SmtpClient, SmtpError, Timeouts};
use crate::ehlo::Extensions;
use crate::reply::Reply;

/// The client time limits of RFC 5321 §4.5.3.2, per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTimes {
    /// Reply to `MAIL FROM` (§4.5.3.2.2: 5 minutes).
    pub mail: Duration,
    /// Reply to each `RCPT TO` (§4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// The `354` to `DATA` (§4.5.3.2.4: 2 minutes).
    pub data_initiation: Duration,
    /// Each send of message data (§4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// The final reply after `CRLF.CRLF` (§4.5.3.2.6: 10 minutes).
    pub data_termination: Duration,
}

impl StepTimes {
    /// The values RFC 5321 §4.5.3.2 recommends.
    pub const RFC5321: StepTimes = StepTimes {
        mail: Duration::from_secs(5 * 60),
        rcpt: Duration::from_secs(5 * 60),
        data_initiation: Duration::from_secs(2 * 60),
        data_block: Duration::from_secs(3 * 60),
        data_termination: Duration::from_secs(10 * 60),
    };

    /// These times, none longer than `max` (the operator's step limit).
    pub fn capped(self, max: Duration) -> StepTimes {
        StepTimes {
            mail: self.mail.min(max),
            rcpt: self.rcpt.min(max),
            data_initiation: self.data_initiation.min(max),
            data_block: self.data_block.min(max),
            data_termination: self.data_termination.min(max),
        }
    }
}

/// Who the message is from and for.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The reverse-path without brackets; `""` is the null sender `<>` of
    /// bounces (RFC 5321 §4.5.5).
    pub sender: &'a str,
    /// Forward-paths without brackets, in order.
    pub recipients: &'a [String],
}

/// What the server said about one recipient, with its reply as a person
/// reads it (`550 5.1.1 no such user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientResult {
    /// The final reply was positive: the server took responsibility.
    Delivered {
        /// The server's reply.
        reply: String,
    },
    /// A 4xx reply: try again later.
    Temporary {
        /// Code and enhanced code ([`reply_status`]).
        status: SmtpStatus,
        /// The server's reply.
        reply: String,
    },
    /// A 5xx reply: give up and tell the sender.
    Permanent {
        /// Code and enhanced code ([`reply_status`]).
        status: SmtpStatus,
        /// The server's reply.
        reply: String,
    },
}

impl RecipientResult {
    fn from_reply(reply: &Reply) -> RecipientResult {
        let code = reply.code();
        let text = reply.to_string();
        if code.is_positive() {
            RecipientResult::Delivered { reply: text }
        } else if code.is_permanent() {
            RecipientResult::Permanent {
                status: reply_status(reply),
                reply: text,
            }
        } else {
            // 4yz, and a 3yz where a final reply was due: not done, not final.
            let status = match reply_status(reply) {
                s if s.class == 4 => s,
                s => SmtpStatus::new(s.code, 4, 0, 0),
            };
            RecipientResult::Temporary {
                status,
                reply: text,
            }
        }
    }

    /// The server's reply.
    pub fn reply(&self) -> &str {
        match self {
            RecipientResult::Delivered { reply }
            | RecipientResult::Temporary { reply, .. }
            | RecipientResult::Permanent { reply, .. } => reply,
        }
    }
}

/// The step of the transaction that broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `MAIL FROM`.
    Mail,
    /// A `RCPT TO`.
    Rcpt,
    /// `DATA` and its `354`.
    Data,
    /// Sending the message.
    Message,
    /// Waiting for the final reply: the server may have the message.
    FinalReply,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Mail => "MAIL FROM",
            Step::Rcpt => "RCPT TO",
            Step::Data => "DATA",
            Step::Message => "sending the message",
            Step::FinalReply => "waiting for the reply to the end of data",
        })
    }
}

/// The session broke during the transaction; every recipient not yet
/// refused is undelivered as far as we know.
#[derive(Debug, Error)]
#[error("{step}: {source}")]
pub struct TransactionError {
    /// Where it broke.
    pub step: Step,
    /// What broke.
    #[source]
    pub source: SmtpError,
}

impl TransactionError {
    /// Always temporary: RFC 3463 X.4.2 "bad connection".
    pub fn status(&self) -> SmtpStatus {
        SmtpStatus::new(451, 4, 4, 2)
    }
}

/// Runs one transaction and returns one result per recipient, in the
/// order of `envelope.recipients`.
///
/// `extensions` is the server's (last) EHLO reply; `message` is the message
/// as spooled (it is put in wire form here). The session is left after the
/// transaction (the caller sends QUIT or RSET); after an error it is
/// unusable.
pub async fn send_mail<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<S>,
    extensions: &Extensions,
    envelope: &Envelope<'_>,
    message: &[u8],
    times: &StepTimes,
) -> Result<Vec<RecipientResult>, TransactionError> {
    let wire = data_block(message);
    let size = wire.len() as u64;
    if let Some(limit) = size_limit(extensions)
        && size > limit
    {
        let result = RecipientResult::Permanent {
            status: SmtpStatus::new(552, 5, 3, 4),
            reply: format!(
                "message of {size} octets exceeds the server's limit of {limit} (RFC 1870), not sent"
            ),
        };
        return Ok(vec![result; envelope.recipients.len()]);
    }
    let fail = |step| move |source| TransactionError { step, source };

    let mail = mail_command(envelope.sender, extensions, size, message);
    let reply = step(client, times.mail, &mail)
        .await
        .map_err(fail(Step::Mail))?;
    if !reply.code().is_positive() {
        let result = RecipientResult::from_reply(&reply);
        return Ok(vec![result; envelope.recipients.len()]);
    }

    let mut results: Vec<Option<RecipientResult>> = Vec::with_capacity(envelope.recipients.len());
    for recipient in envelope.recipients {
        let reply = step(client, times.rcpt, &format!("RCPT TO:<{recipient}>"))
            .await
            .map_err(fail(Step::Rcpt))?;
        results.push((!reply.code().is_positive()).then(|| RecipientResult::from_reply(&reply)));
    }
    if results.iter().all(Option::is_some) {
        // RFC 5321 §3.3: no valid recipient, no DATA.
        return Ok(results.into_iter().flatten().collect());
    }

    let reply = step(client, times.data_initiation, "DATA")
        .await
        .map_err(fail(Step::Data))?;
    let accepted = if reply.code().get() == 354 {
        client
            .send_data(&wire, times.data_block)
            .await
            .map_err(fail(Step::Message))?;
        with_step_time(client, times.data_termination);
        let reply = client.read_reply().await.map_err(fail(Step::FinalReply))?;
        RecipientResult::from_reply(&reply)
    } else {
        RecipientResult::from_reply(&reply)
    };
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| accepted.clone()))
        .collect())
}

/// One command with its own step time.
async fn step<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<S>,
    time: Duration,
    command: &str,
) -> Result<Reply, SmtpError> {
    with_step_time(client, time);
    client.command(command).await
}

fn with_step_time<S: AsyncRead + AsyncWrite + Unpin>(client: &mut SmtpClient<S>, time: Duration) {
    let deadline = client.timeouts().deadline;
    client.set_timeouts(Timeouts {
        step: time,
        deadline,
    });
}

/// `MAIL FROM:<sender>` with `SIZE=` (RFC 1870) and `BODY=8BITMIME`
/// (RFC 6152) where the server offers them.
fn mail_command(sender: &str, extensions: &Extensions, size: u64, message: &[u8]) -> String {
    let mut mail = format!("MAIL FROM:<{sender}>");
    if extensions.get("SIZE").is_some() {
        mail.push_str(&format!(" SIZE={size}"));
    }
    if extensions.get("8BITMIME").is_some() && message.iter().any(|b| !b.is_ascii()) {
        mail.push_str(" BODY=8BITMIME");
    }
    mail
}

/// The server's declared maximum message size, if it declared one
/// (RFC 1870 §4: `SIZE 0` or no parameter means no fixed limit).
fn size_limit(extensions: &Extensions) -> Option<u64> {
    extensions
        .get("SIZE")?
        .params
        .first()?
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
}

/// The status a reply carries: its code, and the enhanced status code
/// (RFC 3463, RFC 2034) at the start of its text when present and of the
/// same class, else `X.0.0`.
pub fn reply_status(reply: &Reply) -> SmtpStatus {
    let code = reply.code().get();
    let class = (code / 100) as u8;
    let enhanced = reply
        .lines()
        .first()
        .and_then(|line| line.split_ascii_whitespace().next())
        .and_then(parse_enhanced)
        .filter(|&(c, _, _)| c == class);
    match enhanced {
        Some((c, subject, detail)) => SmtpStatus::new(code, c, subject, detail),
        None => SmtpStatus::new(code, class, 0, 0),
    }
}

/// `class "." subject "." detail` (RFC 3463 §2): class 2, 4 or 5, subject
/// and detail up to three digits.
fn parse_enhanced(word: &str) -> Option<(u8, u16, u16)> {
    let mut parts = word.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    if class.len() != 1 || !digits(class) || !digits(subject) || !digits(detail) {
        return None;
    }
    let class: u8 = class.parse().ok()?;
    matches!(class, 2 | 4 | 5).then_some(())?;
    Some((class, subject.parse().ok()?, detail.parse().ok()?))
}

/// The message in DATA wire form (RFC 5321 §4.5.2, §2.3.8): every line
/// ending in CRLF (bare CR and bare LF become CRLF), a leading `.` doubled,
/// and the end-of-data `.` line appended.
pub fn data_block(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 5);
    let mut at_line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                // CRLF is one line end; a lone CR or LF is one too.
                if b == b'\r' && message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                at_line_start = true;
            }
            _ => {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::parse_reply;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, duplex};

    fn reply(text: &str) -> Reply {
        parse_reply(format!("{text}\r\n").as_bytes())
            .expect("valid")
            .expect("complete")
            .0
    }

    // --- RFC 5321 §4.5.2: transparency ----------------------------------------

    #[test]
    fn leading_dots_are_doubled_and_data_ends_with_a_dot_line() {
        assert_eq!(
            data_block(b"Subject: x\r\n\r\n.\r\n..two\r\na.b\r\n"),
            b"Subject: x\r\n\r\n..\r\n...two\r\na.b\r\n.\r\n"
        );
        assert_eq!(data_block(b".first line"), b"..first line\r\n.\r\n");
    }

    #[test]
    fn bare_cr_and_lf_become_crlf_so_nothing_can_end_data_early() {
        // SPEC §7 / SMTP smuggling: "\n.\n" must not reach the wire as is.
        let wire = data_block(b"a\n.\nMAIL FROM:<x>\rb\r\n");
        assert_eq!(wire, b"a\r\n..\r\nMAIL FROM:<x>\r\nb\r\n.\r\n");
        assert_eq!(
            wire.windows(5).filter(|w| w == b"\r\n.\r\n").count(),
            1,
            "exactly one end of data"
        );
    }

    #[test]
    fn empty_message_is_just_the_end_of_data() {
        assert_eq!(data_block(b""), b".\r\n");
    }

    // --- RFC 3463: enhanced status codes --------------------------------------

    #[test]
    fn reply_status_reads_the_enhanced_code_when_present() {
        assert_eq!(
            reply_status(&reply("550 5.1.1 no such user")),
            SmtpStatus::new(550, 5, 1, 1)
        );
        assert_eq!(
            reply_status(&reply("451 try later")),
            SmtpStatus::new(451, 4, 0, 0)
        );
        // A class that contradicts the code is ignored.
        assert_eq!(
            reply_status(&reply("550 4.1.1 odd")),
            SmtpStatus::new(550, 5, 0, 0)
        );
        assert_eq!(
            reply_status(&reply("552 5.3.4.1 odd")),
            SmtpStatus::new(552, 5, 0, 0)
        );
    }

    #[test]
    fn results_follow_the_reply_class() {
        assert!(matches!(
            RecipientResult::from_reply(&reply("250 ok")),
            RecipientResult::Delivered { .. }
        ));
        assert!(matches!(
            RecipientResult::from_reply(&reply("452 4.2.2 full")),
            RecipientResult::Temporary { status, .. } if status.enhanced() == "4.2.2"
        ));
        assert!(matches!(
            RecipientResult::from_reply(&reply("550 5.1.1 unknown")),
            RecipientResult::Permanent { status, .. } if status.enhanced() == "5.1.1"
        ));
        assert!(matches!(
            RecipientResult::from_reply(&reply("354 go on")),
            RecipientResult::Temporary { status, .. } if status.is_temporary()
        ));
    }

    #[test]
    fn size_and_body_parameters_follow_the_extensions() {
        let ext = Extensions::from_reply(&reply("250-mx\r\n250-SIZE 1000\r\n250 8BITMIME"));
        assert_eq!(size_limit(&ext), Some(1000));
        assert_eq!(
            mail_command("a@b", &ext, 10, "é".as_bytes()),
            "MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME"
        );
        let bare = Extensions::from_reply(&reply("250 mx"));
        assert_eq!(mail_command("", &bare, 10, b"x"), "MAIL FROM:<>");
        let unlimited = Extensions::from_reply(&reply("250-mx\r\n250 SIZE 0"));
        assert_eq!(size_limit(&unlimited), None);
    }

    #[test]
    fn step_times_are_capped_by_the_operator() {
        let t = StepTimes::RFC5321.capped(Duration::from_secs(30));
        assert_eq!(t.data_termination, Duration::from_secs(30));
        assert_eq!(
            StepTimes::RFC5321.capped(Duration::from_secs(600)),
            StepTimes::RFC5321
        );
    }

    // --- the dialogue against a scripted server --------------------------------

    async fn scripted(
        answers: &'static [(&'static str, &'static str)],
        recipients: &[&str],
    ) -> (Result<Vec<RecipientResult>, TransactionError>, Vec<u8>) {
        let (client, server) = duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut server = BufReader::new(server);
            let mut seen = Vec::new();
            for (expect, answer) in answers {
                if *expect == "<hangup>" {
                    return seen;
                }
                if *expect == "<data>" {
                    // Read up to and including the end-of-data line.
                    loop {
                        let mut line = Vec::new();
                        if server.read_until(b'\n', &mut line).await.expect("read") == 0 {
                            return seen;
                        }
                        seen.extend_from_slice(&line);
                        if line == b".\r\n" {
                            break;
                        }
                    }
                } else {
                    let mut line = String::new();
                    server.read_line(&mut line).await.expect("read");
                    assert!(line.starts_with(expect), "{line:?} vs {expect:?}");
                }
                server
                    .get_mut()
                    .write_all(format!("{answer}\r\n").as_bytes())
                    .await
                    .expect("write");
            }
            let mut rest = Vec::new();
            let _ = server.read_to_end(&mut rest).await;
            seen
        });
        let mut client = SmtpClient::new(
            client,
            Timeouts {
                step: Duration::from_secs(5),
                deadline: None,
            },
        );
        let ext = Extensions::from_reply(&reply("250-mx\r\n250 SIZE 100000"));
        let recipients: Vec<String> = recipients.iter().map(|r| (*r).to_owned()).collect();
        let envelope = Envelope {
            sender: "alice@example.org",
            recipients: &recipients,
        };
        let result = send_mail(
            &mut client,
            &ext,
            &envelope,
            b"Subject: hi\r\n\r\n.dot\r\n",
            &StepTimes::RFC5321,
        )
        .await;
        drop(client);
        (result, server.await.expect("join"))
    }

    #[tokio::test]
    async fn each_recipient_gets_its_own_reply_or_the_final_one() {
        let (result, data) = scripted(
            &[
                ("MAIL FROM:<alice@example.org> SIZE=", "250 2.1.0 ok"),
                ("RCPT TO:<a@x>", "250 2.1.5 ok"),
                ("RCPT TO:<b@x>", "550 5.1.1 no such user"),
                ("RCPT TO:<c@x>", "452 4.2.2 mailbox full"),
                ("DATA", "354 go ahead"),
                ("<data>", "250 2.0.0 queued as 1"),
            ],
            &["a@x", "b@x", "c@x"],
        )
        .await;
        let results = result.expect("transaction");
        assert_eq!(
            results[0],
            RecipientResult::Delivered {
                reply: "250 2.0.0 queued as 1".into()
            }
        );
        assert_eq!(
            results[1],
            RecipientResult::Permanent {
                status: SmtpStatus::new(550, 5, 1, 1),
                reply: "550 5.1.1 no such user".into()
            }
        );
        assert!(matches!(&results[2], RecipientResult::Temporary { .. }));
        assert_eq!(data, b"Subject: hi\r\n\r\n..dot\r\n.\r\n");
    }

    // RFC 1870 §6: a message over the server's limit is not sent at all.
    #[tokio::test]
    async fn a_message_over_the_declared_size_is_failed_without_sending() {
        let (client, mut server) = duplex(1024);
        let mut client = SmtpClient::new(
            client,
            Timeouts {
                step: Duration::from_secs(5),
                deadline: None,
            },
        );
        let ext = Extensions::from_reply(&reply("250-mx\r\n250 SIZE 10"));
        let recipients = vec!["a@x".to_owned()];
        let envelope = Envelope {
            sender: "s@y",
            recipients: &recipients,
        };
        let results = send_mail(
            &mut client,
            &ext,
            &envelope,
            b"far more than ten octets",
            &StepTimes::RFC5321,
        )
        .await
        .expect("decided locally");
        assert!(matches!(
            &results[0],
            RecipientResult::Permanent { status, .. } if status.enhanced() == "5.3.4"
        ));
        drop(client);
        let mut sent = Vec::new();
        server.read_to_end(&mut sent).await.expect("read");
        assert!(sent.is_empty(), "not even MAIL FROM");
    }

    #[tokio::test]
    async fn no_accepted_recipient_means_no_data() {
        let (result, data) = scripted(
            &[
                ("MAIL FROM:", "250 ok"),
                ("RCPT TO:<a@x>", "550 5.1.1 unknown"),
            ],
            &["a@x"],
        )
        .await;
        assert!(matches!(
            &result.expect("transaction")[0],
            RecipientResult::Permanent { .. }
        ));
        assert!(data.is_empty());
    }

    #[tokio::test]
    async fn a_refused_sender_refuses_every_recipient() {
        let (result, _) = scripted(
            &[("MAIL FROM:", "421 4.3.2 shutting down")],
            &["a@x", "b@x"],
        )
        .await;
        let results = result.expect("transaction");
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| matches!(
            r,
            RecipientResult::Temporary { status, .. } if status.enhanced() == "4.3.2"
        )));
    }

    #[tokio::test]
    async fn a_lost_connection_after_the_data_is_a_temporary_error() {
        let (result, _) = scripted(
            &[
                ("MAIL FROM:", "250 ok"),
                ("RCPT TO:<a@x>", "250 ok"),
                ("DATA", "354 go"),
                ("<hangup>", ""),
            ],
            &["a@x"],
        )
        .await;
        let err = result.expect_err("connection lost");
        assert!(
            matches!(err.step, Step::Message | Step::FinalReply),
            "{err}"
        );
        assert!(err.status().is_temporary());
    }
}

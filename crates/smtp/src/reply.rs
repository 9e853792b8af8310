//! SMTP replies as a client reads them (RFC 5321 §4.2), parsed without I/O.
//!
//! [`parse_reply`] is a pure function from the bytes received so far to
//! "a complete reply and how many bytes it used", "need more bytes", or an
//! error. The socket loop in [`crate::client`] feeds it; the fuzz target feeds
//! it directly (once written). Everything a server sends passes through here first, so the
//! limits live here too.
//!
//! # Why not `smtp-proto`
//!
//! `smtp-proto`'s `ResponseReceiver` keeps state between calls instead of
//! being a function over a buffer, bounds only the whole reply (4096 octets)
//! rather than each line and the number of lines, takes the code of a
//! multi-line reply from its first line without checking the others, and
//! splits off the enhanced status code so that the text shown to a person is
//! no longer what the server said. Its EHLO parser refuses anything but 250 and
//! maps keywords to bit flags, dropping those it does not know. The grammar we
//! need is twenty lines; owning it keeps the limits and the error messages
//! ours.
//!
//! # Decisions
//!
//! * **Line length.** RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets
//!   including CRLF, but real servers exceed it (long EHLO `AUTH` lines, long
//!   banners). We accept lines up to [`MAX_LINE_LEN`] octets and refuse
//!   anything longer as soon as that many octets arrive without a line end,
//!   so an endless line costs a bounded buffer.
//! * **Number of lines.** At most [`MAX_LINES`] lines per reply.
//! * **Bare LF.** A line ending in LF without CR is accepted, as Postfix's
//!   client does: the client only interprets the reply code and EHLO keywords,
//!   so tolerating it cannot smuggle anything, and refusing it would only make
//!   broken-but-working servers look unreachable. (The server side, where bare
//!   LF enables SMTP smuggling, is strict; SPEC §7.)
//! * **Codes.** Each line starts with three digits, the first one 2 to 5
//!   (RFC 5321 §4.2: `%x32-35 %x30-35 %x30-39`; the second digit is not
//!   checked, some servers use 6–9). Every line of a multi-line reply must
//!   carry the same code (RFC 5321 §4.2.1: "the reply code on each of the
//!   lines MUST be the same").
//! * **Text.** The text after the code is kept for people to read: invalid
//!   UTF-8 and control characters (a stray CR, escape sequences that could
//!   paint a terminal) are replaced with U+FFFD.

use std::fmt;

use thiserror::Error;

/// Longest reply line accepted, in octets including the line end. Eight
/// times the RFC 5321 §4.5.3.1.5 minimum of 512, for servers that exceed it.
pub const MAX_LINE_LEN: usize = 4096;

/// Most lines accepted in one reply.
pub const MAX_LINES: usize = 100;

/// A three-digit SMTP reply code (RFC 5321 §4.2), first digit 2 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// `220`: service ready, also "go ahead with TLS" (RFC 3207 §4).
    pub const SERVICE_READY: ReplyCode = ReplyCode(220);
    /// `250`: requested action completed.
    pub const OK: ReplyCode = ReplyCode(250);

    /// The code as a number, `200..=599`.
    pub fn get(self) -> u16 {
        self.0
    }

    /// 2yz: positive completion.
    pub fn is_positive(self) -> bool {
        self.0 / 100 == 2
    }

    /// 4yz: transient negative completion; the same command may work later.
    pub fn is_transient(self) -> bool {
        self.0 / 100 == 4
    }

    /// 5yz: permanent negative completion.
    pub fn is_permanent(self) -> bool {
        self.0 / 100 == 5
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One complete reply: its code and the text of each line, code stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: ReplyCode,
    lines: Vec<String>,
}

impl Reply {
    /// The reply code, the same on every line.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The text of each line without code, separator or line end; never
    /// empty (a reply has at least one line, whose text may be `""`).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}

/// The reply for a person on one line: `454 4.7.0 TLS not available`, with
/// the lines of a multi-line reply joined by `" / "`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == 0 { " " } else { " / " };
            if !line.is_empty() {
                write!(f, "{sep}{line}")?;
            }
        }
        Ok(())
    }
}

/// Why bytes from a server are not an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE_LEN`] octets (RFC 5321 §4.5.3.1.5).
    #[error("reply line longer than {MAX_LINE_LEN} octets")]
    LineTooLong,
    /// More than [`MAX_LINES`] lines in one reply.
    #[error("reply of more than {MAX_LINES} lines")]
    TooManyLines,
    /// A line that does not start with a reply code and a separator.
    #[error("not an SMTP reply line: {0:?}")]
    Malformed(String),
    /// A multi-line reply whose lines carry different codes (RFC 5321 §4.2.1).
    #[error("multi-line reply changes its code from {first} to {later}")]
    InconsistentCode {
        /// The code of the first line.
        first: u16,
        /// The first code that differed.
        later: u16,
    },
}

/// Parses one reply from the start of `buf`.
///
/// Returns `Ok(Some((reply, used)))` when `buf` starts with a complete reply
/// of `used` octets, `Ok(None)` when more bytes are needed, and an error as
/// soon as the bytes cannot become a valid reply within the limits (in
/// particular a line of more than [`MAX_LINE_LEN`] octets is refused without
/// waiting for its end). Never panics, for any input.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut code: Option<ReplyCode> = None;
    let mut lines = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() >= MAX_LINE_LEN {
                return Err(ReplyError::LineTooLong);
            }
            // An incomplete line can already be known to be garbage; say so
            // now rather than waiting for a line end that may never come.
            check_prefix(rest)?;
            return Ok(None);
        };
        if lf + 1 > MAX_LINE_LEN {
            return Err(ReplyError::LineTooLong);
        }
        if lines.len() == MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let raw = &rest[..lf];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let (line_code, last, text) = parse_line(line)?;
        match code {
            None => code = Some(line_code),
            Some(first) if first != line_code => {
                return Err(ReplyError::InconsistentCode {
                    first: first.get(),
                    later: line_code.get(),
                });
            }
            Some(_) => {}
        }
        lines.push(text);
        pos += lf + 1;
        if last {
            // `code` was set on the first line, and `last` is only true after
            // at least one line has been parsed.
            let code = code.unwrap_or(line_code);
            return Ok(Some((Reply { code, lines }, pos)));
        }
    }
}

/// Splits one line (without its line end) into code, "is the last line", and
/// text. RFC 5321 §4.2: `Reply-code [ SP textstring ] CRLF` for the last line,
/// `Reply-code "-" [ textstring ] CRLF` for the others.
fn parse_line(line: &[u8]) -> Result<(ReplyCode, bool, String), ReplyError> {
    let code = parse_code(line).ok_or_else(|| malformed(line))?;
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(malformed(line)),
    };
    Ok((code, last, printable(text)))
}

/// The reply code at the start of a line, if it is one.
fn parse_code(line: &[u8]) -> Option<ReplyCode> {
    match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
            let digit = |d: &u8| u16::from(d - b'0');
            Some(ReplyCode(digit(a) * 100 + digit(b) * 10 + digit(c)))
        }
        _ => None,
    }
}

/// Refuses an incomplete line whose first octets already cannot start a reply.
fn check_prefix(partial: &[u8]) -> Result<(), ReplyError> {
    let ok = partial.iter().take(4).enumerate().all(|(i, &b)| match i {
        0 => (b'2'..=b'5').contains(&b),
        1 | 2 => b.is_ascii_digit(),
        _ => matches!(b, b' ' | b'-' | b'\r'),
    });
    if ok { Ok(()) } else { Err(malformed(partial)) }
}

fn malformed(line: &[u8]) -> ReplyError {
    const SHOWN: usize = 40;
    let shown = &line[..line.len().min(SHOWN)];
    ReplyError::Malformed(printable(shown))
}

/// Text for a person: lossy UTF-8, control characters replaced.
fn printable(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> (Reply, usize) {
        parse_reply(input).expect("valid").expect("complete")
    }

    // RFC 5321 §4.2: Reply-code [ SP textstring ] CRLF

    #[test]
    fn single_line_reply() {
        let (reply, used) = parse_all(b"220 mx.example ESMTP ready\r\n");
        assert_eq!(reply.code().get(), 220);
        assert_eq!(reply.lines(), ["mx.example ESMTP ready"]);
        assert_eq!(used, 28);
    }

    #[test]
    fn code_without_text_is_a_complete_reply() {
        let (reply, used) = parse_all(b"250\r\n");
        assert_eq!(reply.code(), ReplyCode::OK);
        assert_eq!(reply.lines(), [""]);
        assert_eq!(used, 5);
        assert_eq!(reply.to_string(), "250");
    }

    #[test]
    fn used_stops_at_the_end_of_the_reply() {
        let input = b"220 ready\r\n250 injected\r\n";
        let (reply, used) = parse_all(input);
        assert_eq!(reply.code(), ReplyCode::SERVICE_READY);
        assert_eq!(&input[used..], b"250 injected\r\n");
    }

    #[test]
    fn display_is_one_line_for_a_person() {
        let (reply, _) = parse_all(b"454 4.7.0 TLS not available\r\n");
        assert_eq!(reply.to_string(), "454 4.7.0 TLS not available");
        assert!(reply.code().is_transient());
        let (reply, _) = parse_all(b"550-first\r\n550 second\r\n");
        assert_eq!(reply.to_string(), "550 first / second");
        assert!(reply.code().is_permanent());
    }

    // RFC 5321 §4.2.1: multi-line replies

    #[test]
    fn multi_line_reply_keeps_each_line() {
        let input = b"250-mx.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n";
        let (reply, used) = parse_all(input);
        assert_eq!(reply.code(), ReplyCode::OK);
        assert_eq!(
            reply.lines(),
            ["mx.example", "PIPELINING", "STARTTLS", "8BITMIME"]
        );
        assert_eq!(used, input.len());
    }

    #[test]
    fn multi_line_reply_with_empty_continuation_text() {
        let (reply, _) = parse_all(b"250-\r\n250 done\r\n");
        assert_eq!(reply.lines(), ["", "done"]);
    }

    #[test]
    fn multi_line_reply_must_keep_its_code() {
        assert_eq!(
            parse_reply(b"250-mx.example\r\n220 STARTTLS\r\n"),
            Err(ReplyError::InconsistentCode {
                first: 250,
                later: 220
            })
        );
    }

    #[test]
    fn incomplete_input_needs_more() {
        for input in [
            &b""[..],
            b"2",
            b"25",
            b"250",
            b"250 ",
            b"250 partial text",
            b"250 partial text\r",
            b"250-first\r\n",
            b"250-first\r\n250",
            b"250-first\r\n250 second",
        ] {
            assert_eq!(parse_reply(input), Ok(None), "{input:?}");
        }
    }

    #[test]
    fn every_split_point_of_a_reply_needs_more_until_the_end() {
        let input = b"250-mx.example\r\n250-SIZE 1000\r\n250 STARTTLS\r\n";
        for cut in 0..input.len() {
            assert_eq!(parse_reply(&input[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_all(input).1, input.len());
    }

    // Decision: bare LF ends a reply line (see the module documentation).

    #[test]
    fn bare_lf_ends_a_line() {
        let (reply, used) = parse_all(b"250-a\n250 b\n");
        assert_eq!(reply.lines(), ["a", "b"]);
        assert_eq!(used, 12);
    }

    #[test]
    fn stray_cr_and_escapes_are_not_passed_on() {
        let (reply, _) = parse_all(b"220 a\rb\x1b[31m\xff\r\n");
        assert_eq!(reply.lines(), ["a\u{fffd}b\u{fffd}[31m\u{fffd}"]);
    }

    // RFC 5321 §4.5.3.1.5 line length, and our own limits.

    #[test]
    fn line_at_the_limit_is_accepted() {
        let mut line = b"250 ".to_vec();
        line.resize(MAX_LINE_LEN - 2, b'x');
        line.extend_from_slice(b"\r\n");
        let (reply, used) = parse_all(&line);
        assert_eq!(used, MAX_LINE_LEN);
        assert_eq!(reply.lines()[0].len(), MAX_LINE_LEN - 6);
    }

    #[test]
    fn line_over_the_limit_is_refused() {
        let mut line = b"250 ".to_vec();
        line.resize(MAX_LINE_LEN - 1, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse_reply(&line), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn endless_line_is_refused_before_it_ends() {
        let mut line = b"220 ".to_vec();
        line.resize(MAX_LINE_LEN - 1, b'x');
        assert_eq!(parse_reply(&line), Ok(None));
        line.push(b'x');
        assert_eq!(parse_reply(&line), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn long_continuation_line_is_refused() {
        let mut input = b"250-ok\r\n250-".to_vec();
        input.resize(input.len() + MAX_LINE_LEN, b'x');
        assert_eq!(parse_reply(&input), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn reply_at_the_line_limit_is_accepted() {
        let mut input = b"250-x\r\n".repeat(MAX_LINES - 1);
        input.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse_all(&input).0.lines().len(), MAX_LINES);
    }

    #[test]
    fn reply_over_the_line_limit_is_refused() {
        let input = b"250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse_reply(&input), Err(ReplyError::TooManyLines));
    }

    // Garbage.

    #[test]
    fn garbage_is_refused() {
        for input in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b"hello\r\n",
            b"\r\n",
            b"\n",
            b"25\r\n",
            b"2500 x\r\n",
            b"250x\r\n",
            b"250\tx\r\n",
            b"150 not smtp\r\n",
            b"650 not smtp\r\n",
            b"2a0 x\r\n",
            b"\x16\x03\x01\x00\x05",
        ] {
            assert!(
                matches!(parse_reply(input), Err(ReplyError::Malformed(_))),
                "{input:?} gave {:?}",
                parse_reply(input)
            );
        }
    }

    #[test]
    fn garbage_is_refused_before_its_line_ends() {
        for input in [&b"H"[..], b"HTTP/1.1", b"2x", b"250x", b"250-ok\r\nx"] {
            assert!(
                matches!(parse_reply(input), Err(ReplyError::Malformed(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn error_text_of_garbage_is_short_and_printable() {
        let mut input = b"\x1b[2J".to_vec();
        input.resize(2000, b'A');
        input.push(b'\n');
        let Err(ReplyError::Malformed(shown)) = parse_reply(&input) else {
            panic!("expected Malformed");
        };
        assert!(shown.chars().count() <= 40);
        assert!(!shown.contains('\x1b'));
    }

    #[test]
    fn no_input_panics() {
        // A small exhaustive sweep over short inputs made of the bytes that
        // matter to the grammar; a fuzz target is to cover the rest.
        let alphabet = [b'2', b'5', b'0', b' ', b'-', b'\r', b'\n', b'x', 0xff];
        let mut input = Vec::new();
        for n in 0..=5u32 {
            for i in 0..alphabet.len().pow(n) {
                input.clear();
                let mut k = i;
                for _ in 0..n {
                    input.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                if let Ok(Some((_, used))) = parse_reply(&input) {
                    assert!(used <= input.len());
                }
            }
        }
    }
}

//! Splitting the byte stream into lines, strictly (SPEC §7, SMTP smuggling).
//!
//! RFC 5321 §2.3.8: lines end with CRLF, and a bare CR or LF is not a line
//! ending. Receivers that disagree about this are how a second message is
//! smuggled inside the first (the 2023 "SMTP smuggling" attacks), so the
//! framer splits at every LF, but tells the session whether the line really
//! ended with CRLF and whether a bare CR hides inside it: the session refuses
//! such a command, and a message that holds such a line.
//!
//! Lines are limited (RFC 5321 §4.5.3.1.4: 512 octets for a command line,
//! §4.5.3.1.6: 1000 for a text line, both counting the CRLF). A longer line
//! is discarded as it arrives, so memory stays bounded, and reported once
//! when it ends. Pure, for the fuzz target.

/// One line, without its line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line within the limit.
    Line {
        /// The octets before the line ending.
        text: &'a [u8],
        /// Whether it ended with CRLF (false: a bare LF).
        crlf: bool,
        /// Whether the text holds a CR that is not part of the line ending.
        bare_cr: bool,
    },
    /// A line over the limit, now ended and discarded.
    TooLong {
        /// Whether it ended with CRLF (false: a bare LF).
        crlf: bool,
    },
}

impl Frame<'_> {
    /// Whether the line ended with CRLF.
    pub fn ends_with_crlf(&self) -> bool {
        match self {
            Frame::Line { crlf, .. } | Frame::TooLong { crlf } => *crlf,
        }
    }
}

/// What [`LineFramer::next`] found in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A line; the first `consumed` octets of the buffer are used up.
    Frame(Frame<'a>, usize),
    /// No complete line; the first `consumed` octets (of an overlong line)
    /// are used up and may be dropped. Read more input.
    NeedMore(usize),
}

/// Finds lines in a buffer. Keeps the state of an overlong line across
/// reads.
#[derive(Debug, Clone, Default)]
pub struct LineFramer {
    /// Inside an overlong line: drop octets until its LF.
    discarding: bool,
    /// The last octet dropped while discarding was a CR.
    last_was_cr: bool,
}

impl LineFramer {
    /// The next line in `buf`, whose length with its line ending must not
    /// exceed `limit` octets.
    pub fn next<'a>(&mut self, buf: &'a [u8], limit: usize) -> Step<'a> {
        if self.discarding {
            return match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let crlf = if i == 0 {
                        self.last_was_cr
                    } else {
                        buf[i - 1] == b'\r'
                    };
                    self.discarding = false;
                    self.last_was_cr = false;
                    Step::Frame(Frame::TooLong { crlf }, i + 1)
                }
                None => {
                    if let Some(&last) = buf.last() {
                        self.last_was_cr = last == b'\r';
                    }
                    Step::NeedMore(buf.len())
                }
            };
        }
        let window = &buf[..buf.len().min(limit)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let crlf = i > 0 && buf[i - 1] == b'\r';
                let text = &buf[..if crlf { i - 1 } else { i }];
                let bare_cr = text.contains(&b'\r');
                Step::Frame(
                    Frame::Line {
                        text,
                        crlf,
                        bare_cr,
                    },
                    i + 1,
                )
            }
            None if buf.len() >= limit => {
                // The first `limit` octets are not a line: drop them, and go
                // on looking for the LF that ends the overlong line.
                self.discarding = true;
                self.last_was_cr = window.last() == Some(&b'\r');
                match self.next(&buf[limit..], limit) {
                    Step::Frame(frame, n) => Step::Frame(frame, n + limit),
                    Step::NeedMore(n) => Step::NeedMore(n + limit),
                }
            }
            None => Step::NeedMore(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], limit: usize, chunk: usize) -> Vec<String> {
        let mut framer = LineFramer::default();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match framer.next(&buf[pos..], limit) {
                    Step::Frame(
                        Frame::Line {
                            text,
                            crlf,
                            bare_cr,
                        },
                        n,
                    ) => {
                        out.push(format!(
                            "{}{}{}",
                            String::from_utf8_lossy(text).replace('\r', "<CR>"),
                            if crlf { "" } else { "<LF>" },
                            if bare_cr { "!" } else { "" }
                        ));
                        pos += n;
                    }
                    Step::Frame(Frame::TooLong { crlf }, n) => {
                        out.push(format!("TOOLONG{}", if crlf { "" } else { "<LF>" }));
                        pos += n;
                    }
                    Step::NeedMore(n) => {
                        pos += n;
                        break;
                    }
                }
            }
            buf.drain(..pos);
        }
        out
    }

    #[test]
    fn crlf_lines_are_lines() {
        assert_eq!(frames(b"EHLO a\r\nNOOP\r\n", 512, 100), ["EHLO a", "NOOP"]);
        assert_eq!(frames(b"EHLO a\r\nNOOP\r\n", 512, 1), ["EHLO a", "NOOP"]);
    }

    /// RFC 5321 §2.3.8 and SPEC §7: a bare LF or CR is flagged, never
    /// silently taken as a line ending.
    #[test]
    fn bare_lf_and_bare_cr_are_flagged() {
        assert_eq!(frames(b"a\nb\rc\r\n", 512, 100), ["a<LF>", "b<CR>c!"]);
        assert_eq!(frames(b"a\r\r\n", 512, 100), ["a<CR>!"]);
    }

    /// RFC 5321 §4.5.3.1.4: 512 octets including the CRLF.
    #[test]
    fn the_limit_counts_the_line_ending() {
        let ok = [vec![b'x'; 510], b"\r\n".to_vec()].concat();
        assert_eq!(frames(&ok, 512, 7)[0].len(), 510);
        let long = [vec![b'x'; 511], b"\r\nNOOP\r\n".to_vec()].concat();
        assert_eq!(frames(&long, 512, 7), ["TOOLONG", "NOOP"]);
        assert_eq!(frames(&long, 512, 1000), ["TOOLONG", "NOOP"]);
    }

    #[test]
    fn overlong_lines_keep_their_line_ending_across_reads() {
        let long = [vec![b'x'; 2000], b"\r\n.\r\n".to_vec()].concat();
        for chunk in [1, 3, 511, 2001, 4096] {
            assert_eq!(
                frames(&long, 1000, chunk),
                ["TOOLONG", "."],
                "chunk {chunk}"
            );
        }
        let bare = [vec![b'x'; 2000], b"\n".to_vec()].concat();
        assert_eq!(frames(&bare, 1000, 2000), ["TOOLONG<LF>"]);
    }
}

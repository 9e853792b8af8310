//! One SMTP client connection: send a command, read its reply, upgrade with
//! STARTTLS (RFC 5321 §4.1, RFC 3207).
//!
//! [`SmtpClient`] is generic over the byte stream, so the same code speaks
//! over plain TCP before STARTTLS and over TLS after it, and the relay can
//! reuse it for delivery. It does not pipeline: one command, one reply. That
//! makes two rules easy to enforce:
//!
//! * Bytes the server sends before we ask for anything are a protocol
//!   violation, and [`SmtpClient::command`] refuses to send while any are
//!   buffered, instead of taking them as the reply to the next command.
//! * **CVE-2011-0411.** After the `220` reply to STARTTLS, whatever else the
//!   server sent in plaintext is thrown away unread; [`SmtpClient::starttls`]
//!   hands back the bare stream together with the number of octets dropped.
//!   Interpreting them as replies to commands sent inside TLS is the STARTTLS
//!   command-injection flaw. RFC 3207 §4.2 then requires the client to forget
//!   everything it learned before TLS and issue EHLO again.
//!
//! Every wait is bounded by [`Timeouts`]: a time per step and an optional
//! deadline for the whole dialogue, whichever comes first.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::reply::{MAX_LINE_LEN, Reply, ReplyCode, ReplyError, parse_reply};

/// Octets written per send while transmitting message data.
const DATA_CHUNK: usize = 64 * 1024;

/// How long the client waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for one step: sending a command, or its reply.
    pub step: Duration,
    /// No step waits past this instant, if set.
    pub deadline: Option<Instant>,
}

impl Timeouts {
    /// When the step starting now must end.
    fn step_deadline(&self) -> Instant {
        let step_end = Instant::now() + self.step;
        match self.deadline {
            Some(deadline) => deadline.min(step_end),
            None => step_end,
        }
    }
}

/// Why a dialogue step failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SmtpError {
    /// Reading or writing the socket failed (for TLS streams, this includes
    /// TLS alerts and record errors).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The step did not finish in time.
    #[error("timed out")]
    Timeout,
    /// The server's bytes were not a valid reply within the limits.
    #[error("{0}")]
    Reply(#[from] ReplyError),
    /// The server sent bytes before the client asked for anything.
    #[error("server sent {octets} octets that no command asked for")]
    Unsolicited {
        /// How many octets were waiting.
        octets: usize,
    },
    /// The command would not be one line of printable text: refused before
    /// sending, so that nothing can be smuggled into the dialogue.
    #[error("refusing to send a command containing control characters")]
    InvalidCommand,
}

/// What the server answered to STARTTLS.
#[derive(Debug)]
pub enum Starttls<S> {
    /// `220`: the next bytes on `stream` must be the TLS handshake.
    Ready {
        /// The connection, with nothing buffered.
        stream: S,
        /// Octets the server sent after its `220` reply, discarded unread
        /// (CVE-2011-0411). Non-zero means the server, or someone in the
        /// path, tried to inject plaintext.
        discarded: usize,
        /// The timeouts of the client that was upgraded, for the next one.
        timeouts: Timeouts,
    },
    /// Any other reply; the client is still usable in plaintext (e.g. to
    /// send QUIT).
    Refused {
        /// The server's reply, e.g. `454 4.7.0 TLS not available`.
        reply: Reply,
        /// The connection, still in plaintext.
        client: SmtpClient<S>,
    },
}

/// An SMTP client connection over any byte stream.
#[derive(Debug)]
pub struct SmtpClient<S> {
    stream: S,
    /// Received, not yet consumed octets.
    buf: Vec<u8>,
    timeouts: Timeouts,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<S> {
    /// Wraps a connected stream. Nothing is sent or read yet; the first call
    /// is usually [`SmtpClient::read_reply`] for the greeting.
    pub fn new(stream: S, timeouts: Timeouts) -> SmtpClient<S> {
        SmtpClient {
            stream,
            buf: Vec::new(),
            timeouts,
        }
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Replaces the timeouts, e.g. to give a step a shorter bound.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// Reads one reply: the greeting, or the answer to a command.
    pub async fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        let deadline = self.timeouts.step_deadline();
        // `parse_reply` starts from the first octet each time. To keep a
        // server that sends one octet per segment from costing quadratic
        // time, parse again only when a line ended, when a new line's first
        // octets can be checked, or when the current line reached the limit.
        let mut parse = true;
        let mut partial_line = 0usize;
        loop {
            if parse {
                if let Some((reply, used)) = parse_reply(&self.buf)? {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                partial_line = self.buf.iter().rev().take_while(|&&b| b != b'\n').count();
            }
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_elapsed) => return Err(SmtpError::Timeout),
                Ok(Err(e)) => return Err(SmtpError::Io(e)),
                Ok(Ok(0)) => return Err(SmtpError::Closed),
                Ok(Ok(n)) => n,
            };
            let new = &chunk[..n];
            self.buf.extend_from_slice(new);
            match new.iter().rposition(|&b| b == b'\n') {
                Some(lf) => {
                    parse = true;
                    partial_line = n - lf - 1;
                }
                None => {
                    partial_line += n;
                    parse = partial_line <= 4 || partial_line >= MAX_LINE_LEN;
                }
            }
        }
    }

    /// Sends one command line (without CRLF) and reads its reply.
    ///
    /// Refuses to send when the command contains control characters, or when
    /// the server has sent bytes that no command asked for.
    pub async fn command(&mut self, command: &str) -> Result<Reply, SmtpError> {
        if command.chars().any(char::is_control) {
            return Err(SmtpError::InvalidCommand);
        }
        if !self.buf.is_empty() {
            return Err(SmtpError::Unsolicited {
                octets: self.buf.len(),
            });
        }
        let line = format!("{command}\r\n");
        let deadline = self.timeouts.step_deadline();
        let write = async {
            self.stream.write_all(line.as_bytes()).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Err(_elapsed) => return Err(SmtpError::Timeout),
            Ok(Err(e)) => return Err(SmtpError::Io(e)),
            Ok(Ok(())) => {}
        }
        self.read_reply().await
    }

    /// Sends a message body that is already in wire form (CRLF lines,
    /// dot-stuffed, ending in `CRLF.CRLF`, see
    /// [`crate::transaction::data_block`]) in chunks, each within
    /// `chunk_time` (and the deadline), and flushes. The caller then reads
    /// the final reply with [`SmtpClient::read_reply`].
    ///
    /// Refuses to send while the server has sent bytes that no command asked
    /// for, as [`SmtpClient::command`] does.
    pub async fn send_data(&mut self, wire: &[u8], chunk_time: Duration) -> Result<(), SmtpError> {
        if !self.buf.is_empty() {
            return Err(SmtpError::Unsolicited {
                octets: self.buf.len(),
            });
        }
        // RFC 5321 §4.5.3.2.5: the time limit applies to each TCP SEND, so
        // a large message is not limited as a whole.
        for chunk in wire.chunks(DATA_CHUNK) {
            let step = Timeouts {
                step: chunk_time,
                deadline: self.timeouts.deadline,
            };
            let write = self.stream.write_all(chunk);
            match tokio::time::timeout_at(step.step_deadline(), write).await {
                Err(_elapsed) => return Err(SmtpError::Timeout),
                Ok(Err(e)) => return Err(SmtpError::Io(e)),
                Ok(Ok(())) => {}
            }
        }
        let deadline = Timeouts {
            step: chunk_time,
            deadline: self.timeouts.deadline,
        }
        .step_deadline();
        match tokio::time::timeout_at(deadline, self.stream.flush()).await {
            Err(_elapsed) => Err(SmtpError::Timeout),
            Ok(Err(e)) => Err(SmtpError::Io(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends STARTTLS (RFC 3207 §4) and, on `220`, gives back the stream to
    /// run the TLS handshake on, with any pipelined plaintext discarded.
    pub async fn starttls(mut self) -> Result<Starttls<S>, SmtpError> {
        let reply = self.command("STARTTLS").await?;
        if reply.code() != ReplyCode::SERVICE_READY {
            return Ok(Starttls::Refused {
                reply,
                client: self,
            });
        }
        // CVE-2011-0411: never interpret what came after the 220.
        let discarded = self.buf.len();
        self.buf.clear();
        Ok(Starttls::Ready {
            stream: self.stream,
            discarded,
            timeouts: self.timeouts,
        })
    }

    /// Sends QUIT, waits for its reply and shuts the stream down (for TLS,
    /// with a close_notify), all bounded by the timeouts; whatever happens is
    /// ignored, since the dialogue is over either way.
    pub async fn quit(mut self) {
        if let Err(e) = self.command("QUIT").await {
            tracing::debug!(error = %e, "QUIT failed");
            return;
        }
        let deadline = self.timeouts.step_deadline();
        let _ignored = tokio::time::timeout_at(deadline, self.stream.shutdown()).await;
    }

    /// The stream, for callers that need the connection back. Buffered,
    /// unconsumed octets are dropped.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream, duplex};

    fn timeouts() -> Timeouts {
        Timeouts {
            step: Duration::from_secs(5),
            deadline: None,
        }
    }

    fn pair() -> (SmtpClient<DuplexStream>, DuplexStream) {
        let (client, server) = duplex(64 * 1024);
        (SmtpClient::new(client, timeouts()), server)
    }

    #[tokio::test]
    async fn reply_split_over_many_reads_is_assembled() {
        let (mut client, mut server) = pair();
        let reply = tokio::spawn(async move { client.read_reply().await });
        for b in b"250-mx.example\r\n250 STARTTLS\r\n" {
            server.write_all(&[*b]).await.expect("write");
            tokio::task::yield_now().await;
        }
        let reply = reply.await.expect("join").expect("reply");
        assert_eq!(reply.lines(), ["mx.example", "STARTTLS"]);
    }

    #[tokio::test]
    async fn endless_line_is_refused_without_waiting_for_its_end() {
        let (mut client, mut server) = pair();
        let reader = tokio::spawn(async move { client.read_reply().await });
        server.write_all(b"220 ").await.expect("write");
        let err = loop {
            if reader.is_finished() {
                break reader.await.expect("join").expect_err("endless line");
            }
            let _ = server.write_all(&[b'x'; 100]).await;
            tokio::task::yield_now().await;
        };
        assert!(
            matches!(err, SmtpError::Reply(ReplyError::LineTooLong)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn silence_times_out() {
        let (client, _server) = duplex(1024);
        let mut client = SmtpClient::new(
            client,
            Timeouts {
                step: Duration::from_millis(50),
                deadline: None,
            },
        );
        assert!(matches!(client.read_reply().await, Err(SmtpError::Timeout)));
    }

    #[tokio::test]
    async fn deadline_bounds_a_longer_step() {
        let (client, _server) = duplex(1024);
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut client = SmtpClient::new(
            client,
            Timeouts {
                step: Duration::from_secs(60),
                deadline: Some(deadline),
            },
        );
        let started = Instant::now();
        assert!(matches!(client.read_reply().await, Err(SmtpError::Timeout)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn closed_connection_is_reported() {
        let (mut client, mut server) = pair();
        server.write_all(b"220 partial").await.expect("write");
        drop(server);
        assert!(matches!(client.read_reply().await, Err(SmtpError::Closed)));
    }

    #[tokio::test]
    async fn commands_with_line_breaks_are_not_sent() {
        let (mut client, _server) = pair();
        for bad in ["EHLO a\r\nMAIL FROM:<x>", "EHLO a\n", "EHLO \0"] {
            assert!(
                matches!(client.command(bad).await, Err(SmtpError::InvalidCommand)),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn unsolicited_reply_is_not_taken_as_the_answer() {
        let (mut client, mut server) = pair();
        server
            .write_all(b"220 hello\r\n220 go ahead\r\n")
            .await
            .expect("write");
        assert_eq!(
            client.read_reply().await.expect("greeting").lines(),
            ["hello"]
        );
        let err = client.command("STARTTLS").await.expect_err("unsolicited");
        assert!(
            matches!(err, SmtpError::Unsolicited { octets: 14 }),
            "{err}"
        );
    }

    // RFC 3207 §4, CVE-2011-0411.

    #[tokio::test]
    async fn plaintext_after_starttls_ready_is_discarded() {
        let (client, server) = pair();
        let server = tokio::spawn(async move {
            let mut server = BufReader::new(server);
            let mut line = String::new();
            server.read_line(&mut line).await.expect("read");
            assert_eq!(line, "STARTTLS\r\n");
            server
                .write_all(b"220 2.0.0 Ready\r\n250 injected\r\n")
                .await
                .expect("write");
            server
        });
        let outcome = client.starttls().await.expect("starttls");
        let Starttls::Ready { discarded, .. } = outcome else {
            panic!("expected Ready");
        };
        assert_eq!(discarded, "250 injected\r\n".len());
        drop(server.await.expect("join"));
    }

    #[tokio::test]
    async fn refused_starttls_keeps_the_plaintext_client() {
        let (client, server) = pair();
        let server = tokio::spawn(async move {
            let mut server = BufReader::new(server);
            let mut line = String::new();
            server.read_line(&mut line).await.expect("read");
            server
                .write_all(b"454 4.7.0 TLS not available\r\n")
                .await
                .expect("write");
            line.clear();
            server.read_line(&mut line).await.expect("read");
            assert_eq!(line, "QUIT\r\n");
            server.write_all(b"221 bye\r\n").await.expect("write");
        });
        let Starttls::Refused { reply, client } = client.starttls().await.expect("starttls") else {
            panic!("expected Refused");
        };
        assert_eq!(reply.to_string(), "454 4.7.0 TLS not available");
        client.quit().await;
        server.await.expect("join");
    }
}

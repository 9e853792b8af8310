//! The STARTTLS probe of one server address: connect, banner, EHLO,
//! STARTTLS, TLS handshake, EHLO again, QUIT — no mail is sent.
//!
//! This is what `mailtls check` learns about an MX host when the TLS memory
//! has nothing (SPEC §1). The dialogue follows RFC 5321 §3.1–§3.2 and
//! RFC 3207 §4; every way it can end is one [`ProbeOutcome`].
//!
//! Decisions:
//!
//! * Addresses that [`is_restricted_address`] calls private are not contacted
//!   unless the operator allows it (SPEC §7).
//! * One deadline, [`ProbeConfig::timeout`], bounds the whole dialogue, and
//!   every wait (connect, each reply, the handshake, QUIT) ends at it, so a
//!   step that times out is named in the outcome. QUIT is further limited to
//!   [`QUIT_LIMIT`].
//! * EHLO answered with 5yz: fall back to HELO (RFC 5321 §3.2). A server that
//!   only speaks HELO cannot offer STARTTLS, so that is `NoStarttls`. A 4yz
//!   answer is a temporary refusal and says nothing about TLS: `SmtpFailed`.
//! * Any reply to STARTTLS other than `220` is `StarttlsRefused`.
//! * Plaintext after the `220` to STARTTLS is discarded and flagged
//!   (CVE-2011-0411), see [`crate::client`].
//! * After the handshake, EHLO is sent again inside TLS (RFC 3207 §4.2). Its
//!   answer is not interpreted, but if no answer arrives at all (alert,
//!   closed connection, time-out) the TLS session does not work, and the
//!   outcome is `HandshakeFailed`: with TLS 1.3 a server can reject the
//!   client only after the client considers the handshake complete.
//! * QUIT is sent whenever the dialogue is still in step (after TLS, after
//!   `NoStarttls`, a refused STARTTLS, or a refusing banner) and its outcome
//!   ignored; after garbage, time-outs and failed handshakes the connection
//!   is just closed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mailtls_core::probe::{AddressProbe, ProbeOutcome, TlsFacts, is_restricted_address};
use mailtls_tls::{DaneParams, HandshakeParams, TlsClient};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::client::{SmtpClient, SmtpError, Starttls, Timeouts};
use crate::ehlo::Extensions;
use crate::reply::{Reply, ReplyCode};

/// Longest wait for the reply to QUIT, within the overall deadline.
pub const QUIT_LIMIT: Duration = Duration::from_secs(5);

/// How to probe. Built by the caller from the `[probe]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The name sent with EHLO/HELO: a domain, or an address literal such as
    /// `[192.0.2.1]` (RFC 5321 §4.1.1.1). Must be printable ASCII without
    /// spaces, otherwise the probe ends with `SmtpFailed` before connecting.
    pub helo_name: String,
    /// The whole dialogue with one address, connect to QUIT.
    pub timeout: Duration,
    /// The server port; SMTP relay is 25 (RFC 5321 §4.5.4.2).
    pub port: u16,
    /// Whether private, loopback and link-local addresses may be probed
    /// (SPEC §7; tests set it for their loopback servers).
    pub allow_private: bool,
}

impl ProbeConfig {
    /// The defaults of the `[probe]` section: 30 seconds, port 25, public
    /// addresses only.
    pub fn new(helo_name: impl Into<String>) -> ProbeConfig {
        ProbeConfig {
            helo_name: helo_name.into(),
            timeout: Duration::from_secs(30),
            port: 25,
            allow_private: false,
        }
    }
}

/// Probes one address of the MX host `host` and reports what it saw.
///
/// `host` is the MX host name (for SNI and certificate name checks); `dane`
/// carries the usable TLSA records when DANE applies to this host. Never
/// panics, and returns within `config.timeout` (plus scheduling jitter).
pub async fn probe_address(
    tls: &TlsClient,
    config: &ProbeConfig,
    address: IpAddr,
    host: &str,
    dane: Option<&DaneParams>,
) -> AddressProbe {
    let mut probe = AddressProbe {
        address,
        outcome: ProbeOutcome::NotAllowed,
        discarded_pipelined: false,
    };
    if is_restricted_address(address) && !config.allow_private {
        return probe;
    }
    if !valid_helo_name(&config.helo_name) {
        probe.outcome = ProbeOutcome::SmtpFailed {
            reason: format!("invalid EHLO name {:?} configured", config.helo_name),
        };
        return probe;
    }
    let deadline = Instant::now() + config.timeout;
    let dialogue = Dialogue {
        tls,
        config,
        address,
        host,
        dane,
        deadline,
        discarded_pipelined: &mut probe.discarded_pipelined,
    };
    // Every wait inside ends at `deadline` already; this outer bound is a
    // safety net that should never fire first.
    probe.outcome = match timeout_at(deadline + Duration::from_millis(200), dialogue.run()).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => ProbeOutcome::SmtpFailed {
            reason: format!("timed out after {:?}", config.timeout),
        },
    };
    probe
}

/// Whether a name may follow `EHLO `: non-empty printable ASCII, no spaces.
fn valid_helo_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic())
}

/// One run of the dialogue; each method is one stage.
struct Dialogue<'a> {
    tls: &'a TlsClient,
    config: &'a ProbeConfig,
    address: IpAddr,
    host: &'a str,
    dane: Option<&'a DaneParams>,
    deadline: Instant,
    discarded_pipelined: &'a mut bool,
}

impl Dialogue<'_> {
    async fn run(self) -> ProbeOutcome {
        let target = SocketAddr::new(self.address, self.config.port);
        let tcp = match timeout_at(self.deadline, TcpStream::connect(target)).await {
            Err(_elapsed) => {
                return ProbeOutcome::ConnectFailed {
                    reason: format!("connect timed out after {:?}", self.config.timeout),
                };
            }
            Ok(Err(e)) => {
                return ProbeOutcome::ConnectFailed {
                    reason: e.to_string(),
                };
            }
            Ok(Ok(tcp)) => tcp,
        };
        let timeouts = Timeouts {
            step: self.config.timeout,
            deadline: Some(self.deadline),
        };
        let mut client = SmtpClient::new(tcp, timeouts);

        // RFC 5321 §3.1: the greeting. 554 means "no service here"; the client
        // should QUIT.
        let banner = match client.read_reply().await {
            Ok(reply) => reply,
            Err(e) => return smtp_failed("waiting for the banner", &e),
        };
        if banner.code() != ReplyCode::SERVICE_READY {
            quit(client, self.deadline).await;
            return ProbeOutcome::SmtpFailed {
                reason: format!("banner refuses service: {banner}"),
            };
        }

        let ehlo = format!("EHLO {}", self.config.helo_name);
        let reply = match client.command(&ehlo).await {
            Ok(reply) => reply,
            Err(e) => return smtp_failed("EHLO", &e),
        };
        if reply.code() != ReplyCode::OK {
            return self.helo_fallback(client, reply).await;
        }
        if !Extensions::from_reply(&reply).starttls() {
            quit(client, self.deadline).await;
            return ProbeOutcome::NoStarttls;
        }

        let (stream, discarded) = match client.starttls().await {
            Err(e) => return smtp_failed("STARTTLS", &e),
            Ok(Starttls::Refused { reply, client }) => {
                quit(client, self.deadline).await;
                return ProbeOutcome::StarttlsRefused {
                    reply: reply.to_string(),
                };
            }
            Ok(Starttls::Ready {
                stream, discarded, ..
            }) => (stream, discarded),
        };
        if discarded > 0 {
            *self.discarded_pipelined = true;
            tracing::warn!(address = %self.address, octets = discarded, "discarded plaintext pipelined after STARTTLS (CVE-2011-0411)");
        }
        self.tls_session(stream, timeouts).await
    }

    /// RFC 5321 §3.2: "the client SHOULD fall back to HELO" when EHLO is not
    /// understood.
    async fn helo_fallback(
        &self,
        mut client: SmtpClient<TcpStream>,
        ehlo_reply: Reply,
    ) -> ProbeOutcome {
        if !ehlo_reply.code().is_permanent() {
            quit(client, self.deadline).await;
            return ProbeOutcome::SmtpFailed {
                reason: format!("EHLO refused: {ehlo_reply}"),
            };
        }
        let helo = format!("HELO {}", self.config.helo_name);
        match client.command(&helo).await {
            Err(e) => smtp_failed("HELO after EHLO was refused", &e),
            Ok(reply) if reply.code() == ReplyCode::OK => {
                quit(client, self.deadline).await;
                ProbeOutcome::NoStarttls
            }
            Ok(reply) => {
                quit(client, self.deadline).await;
                ProbeOutcome::SmtpFailed {
                    reason: format!("EHLO refused: {ehlo_reply}; HELO refused: {reply}"),
                }
            }
        }
    }

    /// The handshake, EHLO inside TLS, QUIT.
    async fn tls_session(&self, stream: TcpStream, timeouts: Timeouts) -> ProbeOutcome {
        // RFC 7672 §8.1: with DANE, SNI carries the TLSA base domain, which
        // core puts first among the reference names; else the MX host name.
        let server_name = self
            .dane
            .and_then(|d| d.reference_names.first())
            .map_or(self.host, String::as_str);
        let params = HandshakeParams {
            server_name: server_name.to_owned(),
            dane: self.dane.cloned(),
        };
        let (tls_stream, facts) =
            match timeout_at(self.deadline, self.tls.handshake(stream, &params)).await {
                Err(_elapsed) => {
                    return ProbeOutcome::HandshakeFailed {
                        reason: "TLS handshake timed out".to_owned(),
                    };
                }
                Ok(Err(e)) => {
                    return ProbeOutcome::HandshakeFailed {
                        reason: e.to_string(),
                    };
                }
                Ok(Ok(done)) => done,
            };
        let mut client = SmtpClient::new(tls_stream, timeouts);
        // RFC 3207 §4.2: the client MUST discard what it learned before TLS
        // and SHOULD send EHLO again. The answer is not needed; that one
        // arrives shows the session works.
        let ehlo = format!("EHLO {}", self.config.helo_name);
        match client.command(&ehlo).await {
            Ok(_) | Err(SmtpError::Reply(_)) => {}
            Err(e) => return session_failed(&facts, &e),
        }
        quit(client, self.deadline).await;
        ProbeOutcome::Tls(facts)
    }
}

/// Sends QUIT within [`QUIT_LIMIT`] and the deadline, ignoring the outcome.
async fn quit<S: AsyncRead + AsyncWrite + Unpin>(mut client: SmtpClient<S>, deadline: Instant) {
    client.set_timeouts(Timeouts {
        step: QUIT_LIMIT,
        deadline: Some(deadline),
    });
    client.quit().await;
}

fn smtp_failed(step: &str, error: &SmtpError) -> ProbeOutcome {
    ProbeOutcome::SmtpFailed {
        reason: format!("{step}: {error}"),
    }
}

fn session_failed(facts: &TlsFacts, error: &SmtpError) -> ProbeOutcome {
    ProbeOutcome::HandshakeFailed {
        reason: format!(
            "TLS handshake completed ({}, {}) but EHLO inside TLS got no reply: {error}",
            facts.version, facts.cipher
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helo_names_are_one_printable_word() {
        for good in [
            "mailtls.example",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "localhost",
        ] {
            assert!(valid_helo_name(good), "{good}");
        }
        for bad in ["", "a b", "a\r\nMAIL FROM:<>", "é.example", "a\t"] {
            assert!(!valid_helo_name(bad), "{bad:?}");
        }
    }
}

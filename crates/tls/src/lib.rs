//! Outbound TLS for SMTP on OpenSSL: opportunistic with legacy interop, and
//! DANE (RFC 7671, RFC 7672).
//!
//! One [`TlsClient`] serves both the check (`mailtls check`, like Postfix's
//! `posttls-finger`) and the relay, so that what the check reports is what
//! delivery would do. It runs the client side of a handshake on a stream the
//! SMTP layer has already taken through `STARTTLS`, and returns the stream and
//! the [`TlsFacts`] the policy in `mailtls-core` decides on.
//!
//! Why OpenSSL (through the system libssl 3.0):
//!
//! * **Opportunistic TLS (RFC 7435)** must talk to whatever listens on
//!   port 25, including TLS 1.0/1.1, RSA key transport and CBC suites: some
//!   encryption beats plaintext. The one client context therefore allows TLS
//!   1.0 and up at security level 0 (Debian's `openssl.cnf` would otherwise
//!   impose level 2), and such sessions are reported as `legacy`.
//! * **DANE (RFC 7672 §3, RFC 7671)** is done by OpenSSL's own DANE engine,
//!   as in Postfix and Exim, rather than by a matcher of our own: DANE-EE(3)
//!   authenticates the server's key or certificate ignoring names and dates
//!   (RFC 7672 §3.1.1); DANE-TA(2) builds the chain to the matched trust
//!   anchor, which may be a bare public key the server does not send
//!   (RFC 7671 §5.2.3), and checks the MX host name and its CNAME-expanded
//!   name as reference identifiers (RFC 7672 §3.2.2), without partial-label
//!   wildcards (RFC 7672 §3.2.3). The `openssl` crate has no binding for
//!   this; the small `ffi` module declares it.
//!
//! The handshake always completes, even when DANE does not match or the
//! certificate is self-signed: the check reports mismatching servers in
//! detail, and refusing to send on [`DaneCheck::Mismatch`] is the relay's
//! policy decision, not this crate's (see [`is_dane_authenticated`]).
//! Connection time limits are the caller's: wrap [`TlsClient::handshake`] in
//! `tokio::time::timeout`.

mod facts;
mod ffi;
mod pkix;

use std::ffi::CString;
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use mailtls_core::dane::TlsaRecord;
use mailtls_core::probe::{DaneCheck, TlsFacts};
use openssl::error::ErrorStack;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef, SslVerifyMode,
    SslVersion,
};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509StoreContextRef, X509VerifyResult};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

/// The cipher list of the opportunistic context: everything OpenSSL has
/// except NULL encryption and anonymous (certificate-less) suites, at
/// security level 0 so that TLS 1.0/1.1, SHA-1 signatures and small RSA or
/// DH keys still work (RFC 7435: any encryption beats plaintext). Anonymous
/// suites are left out because without a certificate there is nothing to
/// report or to match against TLSA records (RFC 7672 §3 needs one).
const OPPORTUNISTIC_CIPHERS: &str = "ALL:!aNULL:!eNULL:@SECLEVEL=0";

/// The outbound TLS client: built once per process, cheap to clone, shared
/// by all connections of the check and of the relay.
///
/// Holds the one opportunistic, DANE-enabled OpenSSL client context and the
/// system trust store (loaded once) for the informational Web PKI check.
#[derive(Clone)]
pub struct TlsClient {
    inner: Arc<Inner>,
}

struct Inner {
    context: SslContext,
    web_pki: pkix::WebPki,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

/// What one handshake is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeParams {
    /// The MX host name: sent as SNI (not when it is an IP address literal)
    /// and the name the informational Web PKI check verifies.
    pub server_name: String,
    /// DANE authentication, when a secure TLSA RRset with usable records
    /// applies to this host (decided by `mailtls_core::dane`); `None` or an
    /// empty record list gives [`DaneCheck::NotAttempted`].
    pub dane: Option<DaneParams>,
}

/// The TLSA records and names DANE authenticates against (RFC 7672 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneParams {
    /// The usable records only (DANE-TA(2), DANE-EE(3); see
    /// `TlsaRecord::is_usable`). [`DaneCheck::Matched::record`] indexes this
    /// list.
    pub records: Vec<TlsaRecord>,
    /// The reference identifiers for DANE-TA(2) (RFC 7672 §3.2.2): the first
    /// is the TLSA base domain handed to `SSL_dane_enable`, the others are
    /// accepted as well. Empty means `[server_name]`.
    pub reference_names: Vec<String>,
}

/// Why [`TlsClient::new`] failed: OpenSSL refused the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The client context could not be built.
    #[error("cannot build the OpenSSL client context: {reason}")]
    Context {
        /// OpenSSL's reason.
        reason: String,
    },
    /// The trust store could not be loaded.
    #[error("cannot load the trust store: {reason}")]
    TrustStore {
        /// OpenSSL's reason.
        reason: String,
    },
}

/// Why a handshake failed. A DANE mismatch or an unverifiable certificate is
/// not an error: the handshake completes and [`TlsFacts`] says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The connection could not be prepared (before any byte was sent).
    #[error("cannot prepare the TLS connection: {reason}")]
    Setup {
        /// OpenSSL's reason, or which input was wrong.
        reason: String,
    },
    /// The TLS protocol failed: an alert from the peer, no common protocol
    /// version or cipher, or bytes that are not TLS.
    #[error("TLS handshake failed: {reason}")]
    Protocol {
        /// OpenSSL's reason.
        reason: String,
    },
    /// The connection broke during the handshake.
    #[error("connection failed during the TLS handshake: {0}")]
    Io(#[source] std::io::Error),
}

impl TlsClient {
    /// Builds the client context and loads the system trust store.
    pub fn new() -> Result<TlsClient, TlsSetupError> {
        let context = opportunistic_context().map_err(|e| TlsSetupError::Context {
            reason: reasons(&e),
        })?;
        let web_pki = pkix::system_store().map_err(|e| TlsSetupError::TrustStore {
            reason: reasons(&e),
        })?;
        Ok(TlsClient {
            inner: Arc::new(Inner { context, web_pki }),
        })
    }

    /// Like [`TlsClient::new`], but the informational Web PKI check trusts
    /// exactly the PEM certificates in `roots` instead of the system store:
    /// for a private PKI, and for tests. DANE is unaffected.
    pub fn with_web_pki_roots(roots: &[u8]) -> Result<TlsClient, TlsSetupError> {
        let context = opportunistic_context().map_err(|e| TlsSetupError::Context {
            reason: reasons(&e),
        })?;
        let web_pki = pkix::store_from_pem(roots).map_err(|e| TlsSetupError::TrustStore {
            reason: reasons(&e),
        })?;
        Ok(TlsClient {
            inner: Arc::new(Inner { context, web_pki }),
        })
    }

    /// Runs the TLS client handshake on an already-connected stream (after
    /// the server's `220` reply to `STARTTLS`), returning the encrypted
    /// stream and what the handshake showed.
    ///
    /// Completes even when DANE does not match and for any certificate; only
    /// protocol and connection failures are errors. Never panics on peer
    /// input. Not time-limited: wrap it in `tokio::time::timeout`.
    ///
    /// `stream` must start exactly at the first TLS byte: the caller discards
    /// anything the server pipelined after its `STARTTLS` reply before
    /// calling this (CVE-2011-0411, SPEC §7), so pass the socket itself, not a
    /// buffered reader that may hold such bytes.
    pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        stream: S,
        params: &HandshakeParams,
    ) -> Result<(SslStream<S>, TlsFacts), HandshakeError> {
        let server_name = params.server_name.trim_end_matches('.');
        let mut ssl = Ssl::new(&self.inner.context).map_err(setup_error)?;
        if !server_name.is_empty() && server_name.parse::<IpAddr>().is_err() {
            // SNI (RFC 6066 §3 forbids IP literals). RFC 7672 §8.1 asks for
            // SNI under DANE too; servers with one certificate ignore it.
            ssl.set_hostname(server_name).map_err(setup_error)?;
        }
        let dane = match &params.dane {
            Some(dane) if !dane.records.is_empty() => {
                Some(enable_dane(&mut ssl, dane, server_name)?)
            }
            _ => None,
        };

        // Verification runs (it is what DANE matching happens in) but never
        // aborts the handshake: the callback notes the first failure and
        // accepts. The outcome is read afterwards from SSL_get_verify_result.
        let first_failure: Arc<OnceLock<VerifyFailure>> = Arc::new(OnceLock::new());
        let recorder = Arc::clone(&first_failure);
        ssl.set_verify_callback(
            SslVerifyMode::PEER,
            move |ok, ctx: &mut X509StoreContextRef| {
                if !ok {
                    let _ = recorder.set(VerifyFailure {
                        result: ctx.error(),
                        depth: ctx.error_depth(),
                    });
                }
                true
            },
        );

        let mut tls = SslStream::new(ssl, stream).map_err(setup_error)?;
        if let Err(e) = Pin::new(&mut tls).connect().await {
            drain_error_queue();
            return Err(handshake_error(e));
        }
        let facts = self.facts(tls.ssl(), server_name, dane.as_ref(), first_failure.get());
        drain_error_queue();
        Ok((tls, facts))
    }

    fn facts(
        &self,
        ssl: &SslRef,
        server_name: &str,
        dane: Option<&DaneSetup>,
        first_failure: Option<&VerifyFailure>,
    ) -> TlsFacts {
        let session = facts::session(ssl);
        TlsFacts {
            version: session.version,
            cipher: session.cipher,
            key_exchange: session.key_exchange,
            legacy: session.legacy,
            chain: facts::chain(ssl),
            pkix_valid: pkix::chain_is_valid(&self.inner.web_pki, ssl, server_name),
            dane: match dane {
                None => DaneCheck::NotAttempted,
                Some(setup) => dane_outcome(ssl, setup, first_failure),
            },
        }
    }
}

/// Whether the handshake authenticated the server by DANE
/// ([`DaneCheck::Matched`]): what a relay enforcing RFC 7672 requires before
/// sending mail to a host with usable TLSA records.
pub fn is_dane_authenticated(facts: &TlsFacts) -> bool {
    matches!(facts.dane, DaneCheck::Matched { .. })
}

/// The opportunistic client context, DANE-enabled (see the crate docs).
fn opportunistic_context() -> Result<SslContext, ErrorStack> {
    let mut builder = SslContextBuilder::new(SslMethod::tls_client())?;
    builder.set_min_proto_version(Some(SslVersion::TLS1))?;
    builder.set_max_proto_version(None)?;
    builder.set_security_level(0);
    builder.set_cipher_list(OPPORTUNISTIC_CIPHERS)?;
    // SSL_OP_ALL: the interoperability workarounds. LEGACY_SERVER_CONNECT:
    // OpenSSL 3.0 no longer connects to servers without RFC 5746 secure
    // renegotiation by default, and old MTAs lack it; we never renegotiate,
    // so the attack it guards against does not apply to this client.
    builder.set_options(
        SslOptions::ALL | SslOptions::from_bits_retain(openssl_sys::SSL_OP_LEGACY_SERVER_CONNECT),
    );
    // No trust anchors in this context on purpose: the only way a peer
    // verifies here is a DANE match. The Web PKI check is separate.
    ffi::ctx_dane_enable(&mut builder)?;
    Ok(builder.build())
}

/// What was handed to OpenSSL's DANE engine for one connection.
struct DaneSetup {
    records: Vec<TlsaRecord>,
    /// How many records OpenSSL accepted (`SSL_dane_tlsa_add` returned 1).
    accepted: usize,
}

/// Enables DANE on `ssl` with `dane`'s records and names.
fn enable_dane(
    ssl: &mut SslRef,
    dane: &DaneParams,
    server_name: &str,
) -> Result<DaneSetup, HandshakeError> {
    let mut names = Vec::with_capacity(dane.reference_names.len().max(1));
    let given: Vec<&str> = if dane.reference_names.is_empty() {
        vec![server_name]
    } else {
        dane.reference_names.iter().map(String::as_str).collect()
    };
    for name in given {
        let name = name.trim_end_matches('.');
        if name.is_empty() {
            return Err(HandshakeError::Setup {
                reason: "empty DANE reference name".into(),
            });
        }
        names.push(CString::new(name).map_err(|_| HandshakeError::Setup {
            reason: format!("DANE reference name with a NUL byte: {name:?}"),
        })?);
    }
    let (base, extra) = names.split_first().ok_or_else(|| HandshakeError::Setup {
        reason: "no DANE reference name".into(),
    })?;
    let extra: Vec<_> = extra.iter().map(CString::as_c_str).collect();
    ffi::ssl_dane_enable(ssl, base, &extra).map_err(setup_error)?;
    // RFC 7672 §3.2.3: a wildcard matches only a whole left-most label.
    ssl.param_mut()
        .set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);

    let mut accepted = 0;
    for record in &dane.records {
        match ffi::ssl_dane_tlsa_add(
            ssl,
            record.usage,
            record.selector,
            record.matching,
            &record.data,
        )
        .map_err(setup_error)?
        {
            ffi::TlsaAdd::Added => accepted += 1,
            ffi::TlsaAdd::Unusable => {}
        }
    }
    Ok(DaneSetup {
        records: dane.records.clone(),
        accepted,
    })
}

/// The first verification failure the callback saw.
#[derive(Debug, Clone, Copy)]
struct VerifyFailure {
    result: X509VerifyResult,
    depth: u32,
}

/// Reads the DANE outcome off a completed handshake.
fn dane_outcome(
    ssl: &SslRef,
    setup: &DaneSetup,
    first_failure: Option<&VerifyFailure>,
) -> DaneCheck {
    if setup.accepted == 0 {
        // OpenSSL would fall back to PKIX with no usable record; there are no
        // anchors in the context, but say plainly what happened.
        return DaneCheck::Mismatch {
            reason:
                "OpenSSL could not use any of the TLSA records (malformed certificate or key data)"
                    .into(),
        };
    }
    if let Some(m) = ffi::ssl_dane_match(ssl) {
        let index = setup.records.iter().position(|r| {
            r.usage == m.usage
                && r.selector == m.selector
                && r.matching == m.matching
                && r.data == m.data
        });
        return match index {
            Some(record) => DaneCheck::Matched {
                record,
                depth: m.depth,
            },
            None => DaneCheck::Mismatch {
                reason: "OpenSSL reported a match on a TLSA record it was not given".into(),
            },
        };
    }
    // The first failure names the cause ("no matching DANE TLSA records");
    // the final verify result may be a later consequence ("hostname
    // mismatch" on the unanchored chain), so it is only added when it differs.
    let last = ssl.verify_result();
    let reason = match first_failure {
        Some(first) => {
            let mut reason = format!(
                "{} (certificate at depth {})",
                first.result.error_string(),
                first.depth
            );
            if last != first.result && last != X509VerifyResult::OK {
                reason.push_str("; then: ");
                reason.push_str(last.error_string());
            }
            reason
        }
        None if last != X509VerifyResult::OK => last.error_string().to_owned(),
        None => String::from("no TLSA record matched"),
    };
    DaneCheck::Mismatch { reason }
}

/// OpenSSL's reasons on one line, without its file and line noise.
fn reasons(stack: &ErrorStack) -> String {
    let mut parts: Vec<String> = Vec::new();
    for error in stack.errors() {
        let mut part = error.reason().unwrap_or("unknown error").to_owned();
        if let Some(data) = error.data().filter(|d| !d.is_empty()) {
            part.push_str(" (");
            part.push_str(data);
            part.push(')');
        }
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    if parts.is_empty() {
        String::from("unknown OpenSSL error")
    } else {
        parts.join("; ")
    }
}

fn setup_error(stack: ErrorStack) -> HandshakeError {
    HandshakeError::Setup {
        reason: reasons(&stack),
    }
}

fn handshake_error(error: openssl::ssl::Error) -> HandshakeError {
    if let Some(stack) = error.ssl_error() {
        return HandshakeError::Protocol {
            reason: reasons(stack),
        };
    }
    let code = error.code();
    match error.into_io_error() {
        Ok(io) => HandshakeError::Io(io),
        Err(_) if code == ErrorCode::SYSCALL => HandshakeError::Protocol {
            reason: "the server closed the connection during the handshake".into(),
        },
        Err(other) => HandshakeError::Protocol {
            reason: other.to_string(),
        },
    }
}

/// Empties this thread's OpenSSL error queue. Stale entries would make a
/// later `SSL_get_error` on the same (tokio worker) thread report a fatal
/// error for a mere "want read" of an unrelated connection.
fn drain_error_queue() {
    let _ = ErrorStack::get();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: T) {}

    // The relay and the check share one client across tokio tasks, and spawn
    // the handshake future.
    #[test]
    fn client_and_handshake_future_are_shareable() {
        let client = TlsClient::new().expect("client");
        assert_send_sync(&client);
        let params = HandshakeParams {
            server_name: "mx.example".into(),
            dane: None,
        };
        let (a, _b) = tokio::io::duplex(64);
        assert_send(client.handshake(a, &params));
    }

    #[test]
    fn empty_error_stack_still_reads_as_a_reason() {
        assert_eq!(reasons(&ErrorStack::get()), "unknown OpenSSL error");
    }
}

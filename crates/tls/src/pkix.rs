//! The informational Web PKI check: would the chain the server sent verify
//! for its MX host name against the system's trust store?
//!
//! SMTP delivery does not rely on it (RFC 7672 §1.3: MX host names are not
//! authenticated without DNSSEC, so PKIX alone proves little for SMTP), but
//! the check shows it, and it is what MTA-STS (RFC 8461) would require.
//! It is kept apart from the handshake's own verification, whose context
//! deliberately has no trust anchors (only DANE may authenticate there).

use std::net::IpAddr;

use openssl::error::ErrorStack;
use openssl::ssl::SslRef;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509, X509PurposeId, X509StoreContext};

use crate::ffi;

/// Where the system's CA bundle is looked for, after `SSL_CERT_FILE`:
/// Debian's bundle, and OpenSSL's default file on Debian.
const CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/usr/lib/ssl/cert.pem",
];

/// The system trust store, loaded into memory once per process.
///
/// The CA bundle file is read whole (honouring `SSL_CERT_FILE`), rather
/// than `X509_STORE_set_default_paths`: with OpenSSL 3.0 the latter adds a
/// directory look-up that reads `/etc/ssl/certs` for every issuer not in
/// memory, i.e. for every self-signed or private-CA certificate, common on
/// port 25 (measured: ~0.3 ms of CPU per check, docs/benchmarks.md). Without
/// a readable bundle, OpenSSL's default paths are used.
pub(crate) fn system_store() -> Result<X509Store, ErrorStack> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let bundle = from_env
        .into_iter()
        .chain(CA_BUNDLES.iter().map(std::path::PathBuf::from))
        .find_map(|path| std::fs::read(path).ok());
    if let Some(store) = bundle.and_then(|pem| store_from_pem(&pem).ok()) {
        return Ok(store);
    }
    let mut builder = X509StoreBuilder::new()?;
    builder.set_default_paths()?;
    Ok(builder.build())
}

/// A store trusting exactly the PEM certificates in `pem`.
pub(crate) fn store_from_pem(pem: &[u8]) -> Result<X509Store, ErrorStack> {
    let mut builder = X509StoreBuilder::new()?;
    for cert in X509::stack_from_pem(pem)? {
        builder.add_cert(cert)?;
    }
    Ok(builder.build())
}

/// Whether the peer's chain verifies for `server_name` (a host name, or an
/// IP address literal) as a TLS server certificate, now. False when there is
/// no certificate, no name, or on any OpenSSL failure.
pub(crate) fn chain_is_valid(store: &X509Store, ssl: &SslRef, server_name: &str) -> bool {
    if server_name.is_empty() {
        // An empty host would switch the name check off.
        return false;
    }
    let Some(leaf) = ssl.peer_certificate() else {
        return false;
    };
    let Ok(empty) = Stack::new() else {
        return false;
    };
    let untrusted = ssl.peer_cert_chain().unwrap_or(&empty);
    let Ok(mut context) = X509StoreContext::new() else {
        return false;
    };
    let verified = context.init(store, &leaf, untrusted, |ctx| {
        let Some(param) = ffi::store_ctx_param_mut(ctx) else {
            return Ok(false);
        };
        param.set_purpose(X509PurposeId::SSL_SERVER)?;
        match server_name.parse::<IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            Err(_) => {
                param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
                param.set_host(server_name)?;
            }
        }
        ctx.verify_cert()
    });
    verified.unwrap_or(false)
}

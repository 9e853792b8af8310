//! The listeners' TLS: a rustls server configuration (ring provider only,
//! CRATES.md) from the configured PEM files, a generated self-signed
//! identity for the local default (SPEC §7: "or are generated self-signed
//! for the local default"), and the facts of a finished handshake for the
//! trace header.

use std::io::BufReader;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ServerConnection;

use super::trace::TlsInfo;
use crate::config::TlsIdentity;

/// Why the listeners' TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The certificate PEM holds no certificate, or does not parse.
    #[error("no certificate in the PEM data: {0}")]
    Certificate(String),
    /// The key PEM holds no private key, or does not parse.
    #[error("no private key in the PEM data: {0}")]
    Key(String),
    /// rustls refused the pair (key does not match, unsupported algorithm).
    #[error("certificate and key refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Builds the server configuration for the listeners: TLS 1.2 and 1.3
/// (rustls' safe defaults), no client certificates.
pub fn server_tls_config(identity: &TlsIdentity) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(identity.cert_pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Certificate("empty".into()));
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(identity.key_pem.as_slice()))
        .map_err(|e| TlsSetupError::Key(e.to_string()))?
        .ok_or_else(|| TlsSetupError::Key("empty".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A self-signed certificate for `hostname` with a fresh key (ECDSA P-256),
/// for the embedded default when no `[tls]` files are configured.
pub fn generate_self_signed(hostname: &str) -> Result<TlsIdentity, TlsSetupError> {
    let certified = rcgen::generate_simple_self_signed(vec![hostname.to_owned()])?;
    Ok(TlsIdentity {
        cert_pem: certified.cert.pem().into_bytes(),
        key_pem: certified.signing_key.serialize_pem().into_bytes(),
    })
}

/// Protocol version and cipher suite of a finished handshake, with the IANA
/// suite name (`TLS_AES_256_GCM_SHA384`; rustls calls TLS 1.3 suites
/// `TLS13_…`).
pub fn tls_info(conn: &ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|suite| {
            let name = suite
                .suite()
                .as_str()
                .map_or_else(|| format!("{:?}", suite.suite()), str::to_owned);
            match name.strip_prefix("TLS13_") {
                Some(rest) => format!("TLS_{rest}"),
                None => name,
            }
        })
        .unwrap_or_else(|| "unknown".to_owned());
    TlsInfo { version, cipher }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_loads() {
        let identity = generate_self_signed("mail.example.org").expect("generate");
        server_tls_config(&identity).expect("config");
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let identity = TlsIdentity {
            cert_pem: b"nothing".to_vec(),
            key_pem: b"nothing".to_vec(),
        };
        assert!(matches!(
            server_tls_config(&identity),
            Err(TlsSetupError::Certificate(_))
        ));
        let mut half = generate_self_signed("a.example").expect("generate");
        half.key_pem = b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n".to_vec();
        assert!(server_tls_config(&half).is_err());
    }
}

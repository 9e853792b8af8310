//! Test fixtures: certificates made with rcgen in the test, and loopback TLS
//! servers built on the `openssl` crate's `SslAcceptor`, each on its own std
//! thread.

#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::thread;

use mailtls_core::dane::TlsaRecord;
use mailtls_core::probe::TlsFacts;
use mailtls_tls::{DaneParams, HandshakeError, HandshakeParams, TlsClient};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sha::sha256;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslMethod};
use openssl::x509::X509;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// A certificate with its private key, in OpenSSL's types for the server.
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// A CA that signs leaves.
pub struct Ca {
    pub cert: X509,
    issuer: Issuer<'static, KeyPair>,
}

fn params(cn: &str, names: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("valid names");
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "mailtls tests");
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

fn identity(cert: &rcgen::Certificate, key: &KeyPair) -> Identity {
    Identity {
        cert: X509::from_der(cert.der()).expect("rcgen DER parses"),
        key: PKey::private_key_from_pem(key.serialize_pem().as_bytes()).expect("rcgen key parses"),
    }
}

/// A self-signed ECDSA P-256 certificate for `names` (the first is the CN).
pub fn self_signed(names: &[&str]) -> Identity {
    let key = KeyPair::generate().expect("key");
    let cert = params(names[0], names)
        .self_signed(&key)
        .expect("self-signed");
    identity(&cert, &key)
}

/// A self-signed certificate that expired in 2021.
pub fn expired_self_signed(names: &[&str]) -> Identity {
    let key = KeyPair::generate().expect("key");
    let mut p = params(names[0], names);
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2021, 1, 1);
    let cert = p.self_signed(&key).expect("self-signed");
    identity(&cert, &key)
}

/// A self-signed certificate on a 2048-bit RSA key made by OpenSSL (needed
/// for RSA key transport).
pub fn rsa_self_signed(names: &[&str]) -> Identity {
    let rsa = Rsa::generate(2048).expect("RSA key");
    let pem = PKey::from_rsa(rsa)
        .expect("pkey")
        .private_key_to_pem_pkcs8()
        .expect("PKCS#8");
    let key = KeyPair::from_pem(std::str::from_utf8(&pem).expect("PEM is ASCII"))
        .expect("rcgen reads RSA");
    let cert = params(names[0], names)
        .self_signed(&key)
        .expect("self-signed");
    identity(&cert, &key)
}

impl Ca {
    /// A new self-signed CA.
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut p = params(cn, &[]);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("CA");
        Ca {
            cert: X509::from_der(cert.der()).expect("DER"),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf for `names` (the first is the CN).
    pub fn issue(&self, names: &[&str]) -> Identity {
        let key = KeyPair::generate().expect("key");
        let cert = params(names[0], names)
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        identity(&cert, &key)
    }

    /// A leaf for `names` on an RSA key of `bits` made by OpenSSL (ring, which
    /// rcgen signs with, cannot sign with RSA keys under 2048 bits, but the CA
    /// can certify one).
    pub fn issue_rsa(&self, names: &[&str], bits: u32) -> Identity {
        let rsa = Rsa::generate(bits).expect("RSA key");
        let public = RsaPublic(rsa.public_key_to_der_pkcs1().expect("PKCS#1"));
        let cert = params(names[0], names)
            .signed_by(&public, &self.issuer)
            .expect("leaf");
        Identity {
            cert: X509::from_der(cert.der()).expect("DER"),
            key: PKey::from_rsa(rsa).expect("pkey"),
        }
    }

    /// A leaf for `names` that expired in 2021.
    pub fn issue_expired(&self, names: &[&str]) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut p = params(names[0], names);
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
        let cert = p.signed_by(&key, &self.issuer).expect("leaf");
        identity(&cert, &key)
    }

    pub fn pem(&self) -> Vec<u8> {
        self.cert.to_pem().expect("PEM")
    }
}

/// An RSA public key (PKCS#1 DER) for rcgen to certify.
struct RsaPublic(Vec<u8>);

impl rcgen::PublicKeyData for RsaPublic {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

/// SHA2-256 of the certificate's SubjectPublicKeyInfo (TLSA selector 1).
pub fn spki_sha256(cert: &X509) -> Vec<u8> {
    sha256(&spki(cert)).to_vec()
}

/// The DER SubjectPublicKeyInfo (TLSA x 1 0).
pub fn spki(cert: &X509) -> Vec<u8> {
    cert.public_key()
        .expect("key")
        .public_key_to_der()
        .expect("SPKI DER")
}

/// SHA2-256 of the whole DER certificate (TLSA selector 0).
pub fn cert_sha256(cert: &X509) -> Vec<u8> {
    sha256(&cert.to_der().expect("DER")).to_vec()
}

pub fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> TlsaRecord {
    TlsaRecord {
        usage,
        selector,
        matching,
        data,
    }
}

/// An acceptor with `identity` and a modern default configuration.
pub fn acceptor(identity: &Identity) -> SslAcceptorBuilder {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
    b.set_private_key(&identity.key).expect("key");
    b.set_certificate(&identity.cert).expect("cert");
    b
}

/// An acceptor at security level 0, so that it takes small keys and old
/// protocols as legacy servers do.
pub fn legacy_acceptor(identity: &Identity) -> SslAcceptorBuilder {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
    b.set_security_level(0);
    b.set_private_key(&identity.key).expect("key");
    b.set_certificate(&identity.cert).expect("cert");
    b
}

/// Serves TLS on a loopback port from a std thread: each connection is
/// handshaken and then read until the client goes away.
pub fn serve(builder: SslAcceptorBuilder) -> SocketAddr {
    let acceptor = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let acceptor = acceptor.clone();
            thread::spawn(move || {
                if let Ok(mut tls) = acceptor.accept(stream) {
                    let mut sink = [0u8; 512];
                    while matches!(tls.read(&mut sink), Ok(n) if n > 0) {}
                }
            });
        }
    });
    addr
}

/// Serves raw bytes (not TLS) to every connection, then closes it.
pub fn serve_raw(bytes: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            use std::io::Write;
            let _ = stream.write_all(bytes);
            let mut sink = [0u8; 512];
            let _ = stream.read(&mut sink);
        }
    });
    addr
}

/// Connects to `addr` and runs the client handshake.
pub async fn handshake(
    client: &TlsClient,
    addr: SocketAddr,
    params: &HandshakeParams,
) -> Result<TlsFacts, HandshakeError> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let fut = client.handshake(tcp, params);
    let (_stream, facts) = tokio::time::timeout(std::time::Duration::from_secs(10), fut)
        .await
        .expect("no hang")?;
    Ok(facts)
}

pub fn opportunistic(server_name: &str) -> HandshakeParams {
    HandshakeParams {
        server_name: server_name.into(),
        dane: None,
    }
}

pub fn dane(
    server_name: &str,
    records: Vec<TlsaRecord>,
    reference_names: &[&str],
) -> HandshakeParams {
    HandshakeParams {
        server_name: server_name.into(),
        dane: Some(DaneParams {
            records,
            reference_names: reference_names.iter().map(|n| n.to_string()).collect(),
        }),
    }
}

pub fn client() -> TlsClient {
    TlsClient::new().expect("client")
}

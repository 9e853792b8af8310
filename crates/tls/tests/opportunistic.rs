//! Opportunistic TLS (RFC 7435) against real loopback servers: any
//! certificate is accepted, legacy servers still get encryption and are
//! reported as legacy, and what the handshake showed is reported.

mod common;

use common::*;
use mailtls_core::probe::DaneCheck;
use mailtls_tls::{HandshakeError, TlsClient};
use openssl::ssl::{SslAcceptorBuilder, SslOptions, SslVersion};

const MX: &str = "mx.example.com";

// RFC 7435 §3: without DANE, no certificate failure aborts the handshake.
#[tokio::test]
async fn self_signed_completes_without_dane() {
    let id = self_signed(&[MX, "mail.example.com"]);
    let addr = serve(acceptor(&id));
    let facts = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect("handshake");
    assert_eq!(facts.dane, DaneCheck::NotAttempted);
    assert!(!facts.pkix_valid);
    assert_eq!(facts.chain.len(), 1);
    let leaf = &facts.chain[0];
    assert_eq!(leaf.subject, "CN=mx.example.com, O=mailtls tests");
    assert_eq!(leaf.issuer, leaf.subject);
    assert_eq!(
        leaf.dns_names,
        vec![MX.to_string(), "mail.example.com".to_string()]
    );
    assert_eq!(leaf.sha256, mailtls_core::dane::hex(&cert_sha256(&id.cert)));
    assert!(
        leaf.not_after.ends_with('Z') && leaf.not_after.len() == 20,
        "{}",
        leaf.not_after
    );
}

#[tokio::test]
async fn tls13_reports_version_group_and_is_not_legacy() {
    let id = self_signed(&[MX]);
    let mut server = acceptor(&id);
    server
        .set_min_proto_version(Some(SslVersion::TLS1_3))
        .expect("min");
    server.set_groups_list("X25519").expect("groups");
    let addr = serve(server);
    let facts = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect("handshake");
    assert_eq!(facts.version, "TLSv1.3");
    assert_eq!(facts.key_exchange.as_deref(), Some("X25519"));
    assert!(facts.cipher.starts_with("TLS_"), "{}", facts.cipher);
    assert!(!facts.legacy);
}

#[tokio::test]
async fn tls12_ecdhe_gcm_is_not_legacy() {
    let id = self_signed(&[MX]);
    let mut server = acceptor(&id);
    server
        .set_max_proto_version(Some(SslVersion::TLS1_2))
        .expect("max");
    server.set_groups_list("P-256").expect("groups");
    server
        .set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256")
        .expect("cipher");
    let addr = serve(server);
    let facts = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect("handshake");
    assert_eq!(facts.version, "TLSv1.2");
    assert_eq!(facts.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_eq!(facts.key_exchange.as_deref(), Some("secp256r1"));
    assert!(!facts.legacy);
}

// A CBC suite is legacy even on TLS 1.2 with forward secrecy.
#[tokio::test]
async fn tls12_cbc_suite_is_legacy() {
    let id = self_signed(&[MX]);
    let mut server = acceptor(&id);
    server
        .set_max_proto_version(Some(SslVersion::TLS1_2))
        .expect("max");
    server
        .set_cipher_list("ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")
        .expect("cipher");
    let addr = serve(server);
    let facts = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect("handshake");
    assert_eq!(facts.cipher, "ECDHE-ECDSA-AES128-SHA");
    assert!(facts.key_exchange.is_some());
    assert!(facts.legacy);
}

/// A server as found on old MTAs: TLS 1.0 only, RSA key transport, CBC.
fn tls10_rsa_server(id: &Identity) -> SslAcceptorBuilder {
    tls10_server(id, "AES128-SHA")
}

/// A TLS 1.0-only server with the given cipher list, at security level 0.
fn tls10_server(id: &Identity, ciphers: &str) -> SslAcceptorBuilder {
    let mut server = legacy_acceptor(id);
    // The Mozilla profile also disables TLS 1.0/1.1 through options, which
    // the version range does not override.
    server.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
    server
        .set_min_proto_version(Some(SslVersion::TLS1))
        .expect("min");
    server
        .set_max_proto_version(Some(SslVersion::TLS1))
        .expect("max");
    server
        .set_cipher_list(&format!("{ciphers}:@SECLEVEL=0"))
        .expect("cipher");
    server
}

// Legacy interop: a TLS 1.0-only server with RSA key transport and a CBC
// suite still gets an encrypted session, reported as legacy.
#[tokio::test]
async fn tls10_rsa_key_transport_works_and_is_legacy() {
    let id = rsa_self_signed(&[MX]);
    let addr = serve(tls10_rsa_server(&id));
    let facts = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect("handshake");
    assert_eq!(facts.version, "TLSv1");
    assert_eq!(facts.cipher, "AES128-SHA");
    assert_eq!(facts.key_exchange, None);
    assert!(facts.legacy);
}

// TLS 1.0 with ECDHE signs the key exchange with MD5+SHA-1, which OpenSSL 3
// refuses above security level 0: the opportunistic context must allow it.
#[tokio::test]
async fn tls10_ecdhe_md5_sha1_signature_works_and_is_legacy() {
    let id = rsa_self_signed(&[MX]);
    let addr = serve(tls10_server(&id, "ECDHE-RSA-AES128-SHA"));
    let facts = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect("handshake");
    assert_eq!(facts.version, "TLSv1");
    assert_eq!(facts.cipher, "ECDHE-RSA-AES128-SHA");
    assert!(facts.key_exchange.is_some());
    assert!(facts.legacy);
}

// A 1024-bit RSA server key is below Debian's default security level 2.
#[tokio::test]
async fn rsa_1024_server_key_still_works() {
    let id = Ca::new("Old CA").issue_rsa(&[MX], 1024);
    let addr = serve(legacy_acceptor(&id));
    let facts = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect("handshake");
    assert_eq!(facts.version, "TLSv1.3");
}

// DANE-EE(3) still authenticates a legacy session: RFC 7672 does not set a
// protocol floor.
#[tokio::test]
async fn dane_ee_works_on_tls10() {
    let id = rsa_self_signed(&[MX]);
    let addr = serve(tls10_rsa_server(&id));
    let params = dane(MX, vec![tlsa(3, 1, 1, spki_sha256(&id.cert))], &[MX]);
    let facts = handshake(&client(), addr, &params)
        .await
        .expect("handshake");
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 0
        }
    );
    assert!(facts.legacy);
}

// The Web PKI check is informational: valid for the right name under a
// trusted root, invalid for a wrong name, and never affects the handshake.
#[tokio::test]
async fn pkix_validity_follows_trust_and_name() {
    let ca = Ca::new("Example Root");
    let client = TlsClient::with_web_pki_roots(&ca.pem()).expect("client");
    let leaf = ca.issue(&[MX]);
    let addr = serve(acceptor(&leaf));
    assert!(
        handshake(&client, addr, &opportunistic(MX))
            .await
            .expect("right name")
            .pkix_valid
    );
    assert!(
        handshake(&client, addr, &opportunistic("mx.example.com."))
            .await
            .expect("dot")
            .pkix_valid
    );
    assert!(
        !handshake(&client, addr, &opportunistic("other.example.com"))
            .await
            .expect("wrong name")
            .pkix_valid
    );
    assert!(
        !handshake(&client, addr, &opportunistic(""))
            .await
            .expect("no name")
            .pkix_valid
    );
    let expired = ca.issue_expired(&[MX]);
    let addr = serve(acceptor(&expired));
    assert!(
        !handshake(&client, addr, &opportunistic(MX))
            .await
            .expect("expired")
            .pkix_valid
    );
}

// SPEC §7: peer input never panics; a non-TLS peer is a handshake error.
#[tokio::test]
async fn garbage_peer_is_a_handshake_error() {
    let addr = serve_raw(
        b"220 mx.example.com ESMTP not TLS at all\r\n\x00\xff\xfe garbage \x16\x03\x01\x00",
    );
    let err = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect_err("not TLS");
    assert!(
        matches!(err, HandshakeError::Protocol { .. } | HandshakeError::Io(_)),
        "{err:?}"
    );
    assert!(!err.to_string().contains('\n'), "{err}");
}

#[tokio::test]
async fn peer_closing_at_once_is_a_handshake_error() {
    let addr = serve_raw(b"");
    let err = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect_err("closed");
    assert!(
        matches!(err, HandshakeError::Protocol { .. } | HandshakeError::Io(_)),
        "{err:?}"
    );
}

// A truncated TLS record header claiming a huge length is rejected cleanly.
#[tokio::test]
async fn bogus_tls_record_is_a_handshake_error() {
    let addr = serve_raw(b"\x16\x03\x03\xff\xff\x02\x00\x00");
    let err = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect_err("bogus");
    assert!(
        matches!(err, HandshakeError::Protocol { .. } | HandshakeError::Io(_)),
        "{err:?}"
    );
}

// A server that only speaks protocols we do not offer fails cleanly.
#[tokio::test]
async fn no_common_cipher_is_a_protocol_error() {
    let id = self_signed(&[MX]);
    let mut server = acceptor(&id);
    server
        .set_max_proto_version(Some(SslVersion::TLS1_2))
        .expect("max");
    server.set_cipher_list("aNULL:@SECLEVEL=0").expect("cipher");
    let addr = serve(server);
    let err = handshake(&client(), addr, &opportunistic(MX))
        .await
        .expect_err("no cipher");
    assert!(matches!(err, HandshakeError::Protocol { .. }), "{err:?}");
}

// An IP literal is not sent as SNI (RFC 6066 §3) but still works.
#[tokio::test]
async fn ip_literal_server_name_works() {
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let facts = handshake(&client(), addr, &opportunistic("127.0.0.1"))
        .await
        .expect("handshake");
    assert!(!facts.pkix_valid);
}

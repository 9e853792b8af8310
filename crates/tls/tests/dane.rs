//! DANE authentication through OpenSSL's DANE engine, against real loopback
//! TLS servers (RFC 7672 §3, RFC 7671). Each handshake completes; the facts
//! say whether a TLSA record authenticated the server.

mod common;

use common::*;
use mailtls_core::probe::DaneCheck;
use mailtls_tls::is_dane_authenticated;

const MX: &str = "mx.example.com";

fn mismatch_reason(check: &DaneCheck) -> &str {
    match check {
        DaneCheck::Mismatch { reason } => reason,
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

// RFC 7672 §3.1.1 / RFC 7671 §5.1: DANE-EE(3) matches the server's key.
#[tokio::test]
async fn dane_ee_spki_sha256_matches() {
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let records = vec![
        tlsa(3, 1, 1, vec![0x11; 32]),
        tlsa(3, 1, 1, spki_sha256(&id.cert)),
    ];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 1,
            depth: 0
        }
    );
    assert!(is_dane_authenticated(&facts));
}

// RFC 7672 §3.1.1: "the SMTP client MUST NOT check the certificate's
// validity period or names" for DANE-EE(3).
#[tokio::test]
async fn dane_ee_ignores_expiry_and_names() {
    let id = expired_self_signed(&["wrong.example.net"]);
    let addr = serve(acceptor(&id));
    let records = vec![tlsa(3, 1, 1, spki_sha256(&id.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 0
        }
    );
    assert!(!facts.pkix_valid);
    assert_eq!(facts.chain[0].not_after, "2021-01-01T00:00:00Z");
}

// RFC 7671 §5.1: DANE-EE(3) with selector 0 matches the whole certificate.
#[tokio::test]
async fn dane_ee_full_certificate_sha256_matches() {
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let records = vec![tlsa(3, 0, 1, cert_sha256(&id.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 0
        }
    );
}

// RFC 7671 §4: matching type 0 compares the full SubjectPublicKeyInfo.
#[tokio::test]
async fn dane_ee_exact_spki_matches() {
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let records = vec![tlsa(3, 1, 0, spki(&id.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 0
        }
    );
}

// RFC 7672 §3.2.2 / RFC 7671 §5.2: DANE-TA(2) builds the chain to the
// matched anchor and checks the host name.
#[tokio::test]
async fn dane_ta_matches_ca_certificate_in_the_chain() {
    let ca = Ca::new("Example Mail CA");
    let leaf = ca.issue(&[MX]);
    let mut server = acceptor(&leaf);
    server.add_extra_chain_cert(ca.cert.clone()).expect("chain");
    let addr = serve(server);
    let records = vec![tlsa(2, 0, 1, cert_sha256(&ca.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 1
        }
    );
    assert_eq!(facts.chain.len(), 2);
    assert_eq!(
        facts.chain[1].subject,
        "CN=Example Mail CA, O=mailtls tests"
    );
}

// RFC 7671 §5.2.3: a DANE-TA(2) key (2 1 0) that the server does not send
// is a trust anchor all the same.
#[tokio::test]
async fn dane_ta_bare_public_key_not_sent_by_the_server() {
    let ca = Ca::new("Example Mail CA");
    let leaf = ca.issue(&[MX]);
    let addr = serve(acceptor(&leaf));
    let records = vec![tlsa(2, 1, 0, spki(&ca.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    assert_eq!(facts.chain.len(), 1);
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 1
        }
    );
}

// RFC 7671 §5.2.2: a full DANE-TA(2) certificate (2 0 0) from DNS completes
// a chain the server sent without its CA.
#[tokio::test]
async fn dane_ta_full_certificate_not_sent_by_the_server() {
    let ca = Ca::new("Example Mail CA");
    let leaf = ca.issue(&[MX]);
    let addr = serve(acceptor(&leaf));
    let records = vec![tlsa(2, 0, 0, ca.cert.to_der().expect("DER"))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    assert_eq!(facts.chain.len(), 1);
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 1
        }
    );
}

// RFC 7671 §5.2: 2 1 1 matches the digest of the CA key in the chain sent.
#[tokio::test]
async fn dane_ta_spki_digest_matches_sent_ca() {
    let ca = Ca::new("Example Mail CA");
    let leaf = ca.issue(&[MX]);
    let mut server = acceptor(&leaf);
    server.add_extra_chain_cert(ca.cert.clone()).expect("chain");
    let addr = serve(server);
    let records = vec![tlsa(2, 1, 1, spki_sha256(&ca.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 1
        }
    );
}

// RFC 7672 §3.2.2: with DANE-TA(2) the leaf must carry a reference name.
#[tokio::test]
async fn dane_ta_with_wrong_leaf_name_mismatches() {
    let ca = Ca::new("Example Mail CA");
    let leaf = ca.issue(&["other.example.net"]);
    let mut server = acceptor(&leaf);
    server.add_extra_chain_cert(ca.cert.clone()).expect("chain");
    let addr = serve(server);
    let records = vec![tlsa(2, 0, 1, cert_sha256(&ca.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake completes");
    let reason = mismatch_reason(&facts.dane);
    assert!(reason.contains("hostname mismatch"), "{reason}");
    assert!(!is_dane_authenticated(&facts));
}

// RFC 7672 §3.2.2: the CNAME-expanded name is a reference identifier too.
#[tokio::test]
async fn dane_ta_accepts_the_cname_expanded_name() {
    let ca = Ca::new("Example Mail CA");
    let leaf = ca.issue(&["real.example.net"]);
    let mut server = acceptor(&leaf);
    server.add_extra_chain_cert(ca.cert.clone()).expect("chain");
    let addr = serve(server);
    let records = vec![tlsa(2, 0, 1, cert_sha256(&ca.cert))];
    let params = dane(MX, records, &[MX, "real.example.net"]);
    let facts = handshake(&client(), addr, &params)
        .await
        .expect("handshake");
    assert_eq!(
        facts.dane,
        DaneCheck::Matched {
            record: 0,
            depth: 1
        }
    );
}

// RFC 7672 §3.2.3: a wildcard stands for one whole left-most label only.
#[tokio::test]
async fn dane_ta_accepts_whole_label_wildcard_rejects_partial() {
    let ca = Ca::new("Example Mail CA");
    let records = vec![tlsa(2, 0, 1, cert_sha256(&ca.cert))];
    for (name, ok) in [
        ("*.example.com", true),
        ("mx*.example.com", false),
        ("*.com", false),
    ] {
        let leaf = ca.issue(&[name]);
        let mut server = acceptor(&leaf);
        server.add_extra_chain_cert(ca.cert.clone()).expect("chain");
        let addr = serve(server);
        let facts = handshake(&client(), addr, &dane(MX, records.clone(), &[MX]))
            .await
            .expect("handshake");
        assert_eq!(
            is_dane_authenticated(&facts),
            ok,
            "{name}: {:?}",
            facts.dane
        );
    }
}

// RFC 7672 §3.2.2: a DANE-TA(2) anchor does not excuse an expired leaf
// (only DANE-EE(3) ignores dates).
#[tokio::test]
async fn dane_ta_rejects_expired_leaf() {
    let ca = Ca::new("Example Mail CA");
    let leaf = ca.issue_expired(&[MX]);
    let mut server = acceptor(&leaf);
    server.add_extra_chain_cert(ca.cert.clone()).expect("chain");
    let addr = serve(server);
    let records = vec![tlsa(2, 0, 1, cert_sha256(&ca.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    let reason = mismatch_reason(&facts.dane);
    assert!(reason.contains("expired"), "{reason}");
}

// RFC 7672 §3: usable records that match nothing: the peer is not
// authenticated, yet the handshake completes so the check can report it.
#[tokio::test]
async fn tlsa_matching_nothing_mismatches() {
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let records = vec![tlsa(3, 1, 1, vec![0xab; 32]), tlsa(2, 0, 1, vec![0xcd; 32])];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake completes");
    let reason = mismatch_reason(&facts.dane);
    assert!(
        reason.starts_with("no matching DANE TLSA records"),
        "{reason}"
    );
    assert_eq!(facts.version, "TLSv1.3");
    assert_eq!(facts.chain.len(), 1);
}

// A DANE-TA(2) record for another CA does not authenticate the chain.
#[tokio::test]
async fn dane_ta_of_another_ca_mismatches() {
    let ca = Ca::new("Example Mail CA");
    let other = Ca::new("Someone Else");
    let leaf = ca.issue(&[MX]);
    let mut server = acceptor(&leaf);
    server.add_extra_chain_cert(ca.cert.clone()).expect("chain");
    let addr = serve(server);
    let records = vec![tlsa(2, 0, 1, cert_sha256(&other.cert))];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    let reason = mismatch_reason(&facts.dane);
    assert!(
        reason.starts_with("no matching DANE TLSA records"),
        "{reason}"
    );
}

// Records that OpenSSL cannot use (full data that does not parse) never
// authenticate: fail closed.
#[tokio::test]
async fn unparseable_full_record_mismatches() {
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let records = vec![tlsa(3, 1, 0, b"not a key".to_vec())];
    let facts = handshake(&client(), addr, &dane(MX, records, &[MX]))
        .await
        .expect("handshake");
    let reason = mismatch_reason(&facts.dane);
    assert!(reason.contains("could not use"), "{reason}");
}

// No DANE parameters, or an empty record list: DANE is not attempted.
#[tokio::test]
async fn empty_record_list_is_not_attempted() {
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let facts = handshake(&client(), addr, &dane(MX, vec![], &[MX]))
        .await
        .expect("handshake");
    assert_eq!(facts.dane, DaneCheck::NotAttempted);
}

// One client serves many connections; per-connection DANE state must not
// leak from one to the next.
#[tokio::test]
async fn dane_state_is_per_connection() {
    let client = client();
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let good = dane(MX, vec![tlsa(3, 1, 1, spki_sha256(&id.cert))], &[MX]);
    let bad = dane(MX, vec![tlsa(3, 1, 1, vec![0; 32])], &[MX]);
    assert!(is_dane_authenticated(
        &handshake(&client, addr, &good).await.expect("1")
    ));
    assert!(!is_dane_authenticated(
        &handshake(&client, addr, &bad).await.expect("2")
    ));
    assert_eq!(
        handshake(&client, addr, &opportunistic(MX))
            .await
            .expect("3")
            .dane,
        DaneCheck::NotAttempted
    );
    assert!(is_dane_authenticated(
        &handshake(&client, addr, &good).await.expect("4")
    ));
}

// Many concurrent handshakes on a multi-threaded runtime, good, bad and
// broken interleaved: each gets its own verdict (no state or OpenSSL error
// queue leaks between connections sharing worker threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handshakes_keep_their_own_outcome() {
    let client = client();
    let id = self_signed(&[MX]);
    let addr = serve(acceptor(&id));
    let garbage = serve_raw(b"220 not tls\r\n");
    let good = dane(MX, vec![tlsa(3, 1, 1, spki_sha256(&id.cert))], &[MX]);
    let bad = dane(MX, vec![tlsa(3, 1, 1, vec![7; 32])], &[MX]);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (client, good, bad) = (client.clone(), good.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => assert!(is_dane_authenticated(
                    &handshake(&client, addr, &good).await.expect("good")
                )),
                1 => assert!(!is_dane_authenticated(
                    &handshake(&client, addr, &bad).await.expect("bad")
                )),
                _ => assert!(handshake(&client, garbage, &good).await.is_err()),
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

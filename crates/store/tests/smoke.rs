//! First smoke test: every part of the store answers on a fresh file.

mod common;

use mailtls_core::TlsLevel;
use mailtls_core::memory::{MemoryKey, Observation};
use mailtls_store::{NewMessage, Queue, RecipientOutcome, RecipientState, TlsMemory, Users};

#[tokio::test]
async fn every_part_answers_on_a_fresh_file() {
    let t = common::fresh().await;
    let s = &t.store;
    s.add_user("alice@Example.ORG", "secret")
        .await
        .expect("add");
    assert!(
        s.verify_password("alice@example.org", "secret")
            .await
            .expect("verify")
    );
    let key = MemoryKey::host("mx.example.org");
    let obs = Observation {
        at: 10,
        level: TlsLevel::Tls,
        protocol: Some("TLSv1.3".into()),
        cipher: None,
        cert_sha256: None,
        failure: None,
    };
    assert!(s.record(&key, &obs).await.expect("record").is_none());
    assert_eq!(
        s.entry(&key).await.expect("entry").map(|e| e.best_level),
        Some(TlsLevel::Tls)
    );
    s.enqueue(&NewMessage {
        id: "m1".into(),
        sender: "alice@example.org".into(),
        recipients: vec!["bob@example.net".into()],
        size: 100,
        received_at: 5,
        auth_user: Some("alice@example.org".into()),
        client: "127.0.0.1".into(),
        require_tls: true,
    })
    .await
    .expect("enqueue");
    let claimed = s.claim_due(10, 60, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(claimed[0].require_tls);
    s.record_outcome(
        "m1",
        "bob@example.net",
        &RecipientOutcome::Delivered {
            detail: "250 ok".into(),
        },
        11,
    )
    .await
    .expect("outcome");
    let m = s.message("m1").await.expect("message").expect("exists");
    assert_eq!(m.recipients[0].state, RecipientState::Delivered);
}

//! `mailtls store export|import` (issue #6): an operator moves a store
//! SQLite → PostgreSQL and back without losing the TLS memory, its alerts,
//! the forget audit, accounts, settings or queue metadata.

mod common;

use common::{TestStore, both_backends, message, obs};
use mailtls_core::SmtpStatus;
use mailtls_core::TlsLevel;
use mailtls_core::memory::MemoryKey;
use mailtls_core::sending::{EncryptedSending, ExpertSettings, MinLevel, SenderRequirement};
use mailtls_store::{
    DumpSummary, Queue, RecipientOutcome, Settings, SqlStore, StoreError, TlsMemory, Users,
};

/// Something of every kind, with the awkward cases: NULLs, a forgotten
/// entry, a lease, a final and a deferred recipient, non-ASCII text.
async fn populate(s: &SqlStore) {
    s.add_user("alice@example.org", "alice's password")
        .await
        .expect("add");
    s.add_user("Bob@example.org", "bob's password")
        .await
        .expect("add");
    s.set_encrypted_sending(
        "alice@example.org",
        EncryptedSending::Expert(ExpertSettings {
            min_level: MinLevel::Dane,
            min_tls: None,
            inbound_min_tls: Some(mailtls_core::sending::TlsVersion::Tls13),
        }),
    )
    .await
    .expect("settings");
    s.set_encrypted_sending("Bob@example.org", EncryptedSending::Off)
        .await
        .expect("settings");
    let host = MemoryKey::host("mx.example.net");
    s.record(&host, &obs(10, TlsLevel::Dane))
        .await
        .expect("record");
    s.record(&host, &obs(20, TlsLevel::None))
        .await
        .expect("record");
    s.record(
        &MemoryKey::domain("bücher.example"),
        &obs(30, TlsLevel::Tls),
    )
    .await
    .expect("record");
    s.record(
        &MemoryKey::domain("plain.example"),
        &obs(40, TlsLevel::None),
    )
    .await
    .expect("record");
    s.record(&MemoryKey::domain("gone.example"), &obs(50, TlsLevel::Tls))
        .await
        .expect("record");
    s.forget(
        &MemoryKey::domain("gone.example"),
        "moved provider — ticket «42»",
    )
    .await
    .expect("forget");
    let mut m = message("m1", &["a@example.net", "b@example.net"], 100);
    m.sender_requirement = Some(SenderRequirement {
        min_level: MinLevel::Tls,
        min_tls: None,
    });
    // m1 was accepted by the node "mx1" (its body is in that node's spool):
    // the dump keeps that, so that only mx1 claims it after an import.
    s.clone()
        .with_node("mx1")
        .enqueue(&m)
        .await
        .expect("enqueue");
    s.enqueue(&message("m2", &["c@example.com"], 200))
        .await
        .expect("enqueue");
    s.claim_due(300, 600, 1).await.expect("claim");
    s.record_outcome(
        "m1",
        "a@example.net",
        &RecipientOutcome::Delivered {
            detail: "250 ok".into(),
        },
        301,
    )
    .await
    .expect("outcome");
    s.record_outcome(
        "m1",
        "b@example.net",
        &RecipientOutcome::Deferred {
            status: SmtpStatus::TLS_REQUIRED_TEMP,
            reason: "no STARTTLS".into(),
            next_attempt_at: 900,
        },
        301,
    )
    .await
    .expect("outcome");
}

async fn export(s: &SqlStore) -> (Vec<u8>, DumpSummary) {
    let mut out = Vec::new();
    let summary = s.export(&mut out).await.expect("export");
    (out, summary)
}

async fn import(s: &SqlStore, dump: &[u8]) -> Result<DumpSummary, StoreError> {
    s.import(&mut std::io::Cursor::new(dump)).await
}

/// The dump without its header line (which names the time and backend).
fn body(dump: &[u8]) -> Vec<String> {
    String::from_utf8(dump.to_vec())
        .expect("UTF-8")
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// Imports `dump` into `to`, exports `to` again, and checks that nothing
/// changed; then that the store works as the original did.
async fn moves_intact(dump: &[u8], summary: DumpSummary, to: &SqlStore) {
    assert_eq!(import(to, dump).await.expect("import"), summary);
    let (again, again_summary) = export(to).await;
    assert_eq!(again_summary, summary);
    assert_eq!(body(&again), body(dump), "export ∘ import is the identity");

    assert!(
        to.verify_password("alice@example.org", "alice's password")
            .await
            .expect("verify"),
        "password hashes moved, usable"
    );
    let alias = to
        .alias_owner("alice")
        .await
        .expect("owner")
        .expect("alias");
    assert_eq!(alias.address, "alice@example.org");
    let e = to
        .entry(&MemoryKey::host("mx.example.net"))
        .await
        .expect("entry")
        .expect("remembered");
    assert_eq!(
        (e.best_level, e.last_level),
        (TlsLevel::Dane, TlsLevel::None)
    );
    // The ratchet goes on where it stood: a new drop alerts, next id.
    let next = to
        .record(&MemoryKey::host("mx.example.net"), &obs(60, TlsLevel::Tls))
        .await
        .expect("record");
    assert!(next.is_some());
    let alerts = to.alerts(10).await.expect("alerts");
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].id, alerts[1].id + 1);
    assert_eq!(to.forget_log(10).await.expect("log").len(), 1);
    // Leases are not carried over: m1 is claimable at once.
    let claimed = to.claim_due(900, 60, 10).await.expect("claim");
    let ids: Vec<_> = claimed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert!(claimed[0].sender_requirement.is_some());
}

#[tokio::test]
async fn sqlite_to_sqlite_keeps_everything() {
    let from = common::fresh().await;
    populate(&from.store).await;
    let (dump, summary) = export(&from.store).await;
    assert_eq!(
        summary,
        DumpSummary {
            users: 2,
            settings: 2,
            memory: 3,
            alerts: 1,
            forgotten: 1,
            messages: 2,
            recipients: 3,
        }
    );
    let text = String::from_utf8(dump.clone()).expect("UTF-8");
    assert!(text.starts_with(r#"{"type":"header","format":"mailtls-store-dump","version":1,"#));
    assert!(text.ends_with("{\"type\":\"end\",\"records\":14}\n"));
    assert!(
        !text.contains("alice's password"),
        "hashes, never passwords"
    );
    let to = common::fresh().await;
    moves_intact(&dump, summary, &to.store).await;
}

// Issue #6: SQLite → PostgreSQL → SQLite, nothing lost either way.
#[tokio::test]
async fn sqlite_to_postgres_and_back_keeps_everything() {
    let Some((url, _database)) =
        common::create_postgres_database("sqlite_to_postgres_and_back_keeps_everything").await
    else {
        return;
    };
    let from = common::fresh().await;
    populate(&from.store).await;
    let (dump, summary) = export(&from.store).await;

    let postgres = SqlStore::open(&url).await.expect("open PostgreSQL");
    moves_intact(&dump, summary, &postgres).await;

    // And back, from a fresh PostgreSQL copy (before the extra record).
    let Some((url2, _database2)) =
        common::create_postgres_database("sqlite_to_postgres_and_back_keeps_everything").await
    else {
        return;
    };
    let postgres2 = SqlStore::open(&url2).await.expect("open PostgreSQL");
    import(&postgres2, &dump).await.expect("import");
    let (from_postgres, _) = export(&postgres2).await;
    assert!(String::from_utf8_lossy(&from_postgres).contains(r#""backend":"postgres""#));
    let back = common::fresh().await;
    moves_intact(&from_postgres, summary, &back.store).await;
    postgres.close().await;
    postgres2.close().await;
}

// An import is all or nothing, into an empty store only.
async fn import_refuses_a_used_store_and_a_bad_or_truncated_dump(t: TestStore) {
    let source = common::fresh().await;
    populate(&source.store).await;
    let (dump, _) = export(&source.store).await;
    let text = String::from_utf8(dump.clone()).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    let s = &t.store;

    let truncated = lines[..lines.len() - 1].join("\n");
    let err = import(s, truncated.as_bytes())
        .await
        .expect_err("truncated");
    assert!(err.to_string().contains("truncated"), "{err}");
    let miscounted = text.replace(r#""records":14"#, r#""records":15"#);
    assert!(import(s, miscounted.as_bytes()).await.is_err());
    let future = text.replacen(r#""version":1"#, r#""version":2"#, 1);
    let err = import(s, future.as_bytes()).await.expect_err("version 2");
    assert!(err.to_string().contains("version 2"), "{err}");
    let headless = lines[1..].join("\n");
    assert!(import(s, headless.as_bytes()).await.is_err());
    // Nothing of the failed attempts stayed.
    assert!(s.list().await.expect("list").is_empty());
    assert!(!s.user_exists("alice@example.org").await.expect("exists"));

    import(s, &dump).await.expect("import into the empty store");
    let err = import(s, &dump).await.expect_err("not empty any more");
    assert!(err.to_string().contains("not empty"), "{err}");
}
both_backends!(import_refuses_a_used_store_and_a_bad_or_truncated_dump);

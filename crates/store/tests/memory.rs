//! The TLS memory on disk (SPEC §3): the ratchet applied atomically, alerts
//! stored, operator resets audited.

mod common;

use common::obs;
use mailtls_core::TlsLevel;
use mailtls_core::memory::MemoryKey;
use mailtls_store::TlsMemory;

// SPEC §3: "It only ratchets up by itself: a drop is an alert, never a
// silent downgrade."
#[tokio::test]
async fn the_level_ratchets_up_and_a_drop_is_a_stored_alert() {
    let t = common::fresh().await;
    let s = &t.store;
    let key = MemoryKey::host("mx.example.org");
    assert_eq!(s.entry(&key).await.expect("entry"), None);

    assert!(
        s.record(&key, &obs(10, TlsLevel::None))
            .await
            .expect("record")
            .is_none()
    );
    assert!(
        s.record(&key, &obs(20, TlsLevel::Tls))
            .await
            .expect("record")
            .is_none()
    );
    let e = s.entry(&key).await.expect("entry").expect("exists");
    assert_eq!(e.best_level, TlsLevel::Tls);
    assert!(e.requires_tls());
    assert_eq!(
        (e.first_tls_at, e.last_tls_at, e.last_seen_at),
        (Some(20), Some(20), 20)
    );
    assert_eq!(e.protocol.as_deref(), Some("TLSv1.3"));
    assert_eq!(e.last_failure.as_deref(), Some("STARTTLS not offered"));
    assert_eq!(e.last_failure_at, Some(10));

    let alert = s
        .record(&key, &obs(30, TlsLevel::None))
        .await
        .expect("record")
        .expect("a drop alerts");
    assert_eq!(
        (alert.best_level, alert.observed, alert.at),
        (TlsLevel::Tls, TlsLevel::None, 30)
    );
    assert_eq!(alert.key, key);
    let e = s.entry(&key).await.expect("entry").expect("exists");
    assert_eq!(e.best_level, TlsLevel::Tls, "never lowered");
    assert_eq!(e.last_level, TlsLevel::None);
    assert_eq!(e.last_tls_at, Some(20));
    assert_eq!(
        e.cert_sha256,
        Some(format!("{:064x}", 20)),
        "the last TLS session's"
    );

    let stored = s.alerts(10).await.expect("alerts");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].alert, alert);
}

#[tokio::test]
async fn alerts_are_listed_newest_first_within_the_limit() {
    let t = common::fresh().await;
    let s = &t.store;
    let host = MemoryKey::host("mx.example.org");
    let domain = MemoryKey::domain("example.org");
    s.record(&host, &obs(1, TlsLevel::Dane))
        .await
        .expect("record");
    s.record(&domain, &obs(1, TlsLevel::Tls))
        .await
        .expect("record");
    s.record(&host, &obs(2, TlsLevel::Tls))
        .await
        .expect("record");
    s.record(&domain, &obs(3, TlsLevel::None))
        .await
        .expect("record");
    s.record(&host, &obs(4, TlsLevel::None))
        .await
        .expect("record");

    let all = s.alerts(100).await.expect("alerts");
    let seen: Vec<_> = all
        .iter()
        .map(|a| (a.alert.key.clone(), a.alert.at, a.alert.observed))
        .collect();
    assert_eq!(
        seen,
        vec![
            (host.clone(), 4, TlsLevel::None),
            (domain.clone(), 3, TlsLevel::None),
            (host.clone(), 2, TlsLevel::Tls),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    let latest = s.alerts(1).await.expect("alerts");
    assert_eq!(latest, all[..1]);
    assert!(s.alerts(0).await.expect("alerts").is_empty());
}

#[tokio::test]
async fn hosts_and_domains_are_separate_and_keys_are_normalised() {
    let t = common::fresh().await;
    let s = &t.store;
    s.record(
        &MemoryKey::Host("MX.Example.ORG.".into()),
        &obs(5, TlsLevel::Dane),
    )
    .await
    .expect("record");
    let e = s
        .entry(&MemoryKey::host("mx.example.org"))
        .await
        .expect("entry")
        .expect("found under the normal form");
    assert_eq!(e.key, MemoryKey::Host("mx.example.org".into()));
    assert_eq!(e.best_level, TlsLevel::Dane);
    assert_eq!(
        s.entry(&MemoryKey::domain("mx.example.org"))
            .await
            .expect("entry"),
        None
    );
}

// SPEC §3 (every node must see the same memory) and issue #6: two writers at
// once never lose the higher level. Many tasks on two independent pools (as
// two processes would be) record different levels for one host at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_never_lose_the_higher_level_or_an_update() {
    let t = common::fresh().await;
    let a = t.store.clone();
    let b = t.other().await;
    let key = MemoryKey::host("mx.example.org");
    const N: i64 = 60;
    // Exactly one DANE observation, in the middle; TLS on every third.
    let level = |i: i64| match i {
        30 => TlsLevel::Dane,
        i if i % 3 == 0 => TlsLevel::Tls,
        _ => TlsLevel::None,
    };
    let mut tasks = Vec::new();
    for i in 1..=N {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            store.record(&key, &obs(1000 + i, level(i))).await
        }));
    }
    let mut alerts = Vec::new();
    for task in tasks {
        if let Some(alert) = task.await.expect("task").expect("record") {
            alerts.push(alert);
        }
    }
    let e = a.entry(&key).await.expect("entry").expect("exists");
    assert_eq!(e.best_level, TlsLevel::Dane, "the highest level survives");
    // Each observation contributes to min/max timestamps; a lost
    // read-modify-write would show here.
    let tls_ats: Vec<i64> = (1..=N)
        .filter(|&i| level(i) >= TlsLevel::Tls)
        .map(|i| 1000 + i)
        .collect();
    assert_eq!(e.last_seen_at, 1000 + N);
    assert_eq!(e.first_tls_at, tls_ats.iter().min().copied());
    assert_eq!(e.last_tls_at, tls_ats.iter().max().copied());
    // Every alert returned is stored, and each is a real drop.
    let stored = a.alerts(1000).await.expect("alerts");
    assert_eq!(stored.len(), alerts.len());
    assert!(stored.iter().all(|s| s.alert.observed < s.alert.best_level));
    let mut ids: Vec<i64> = stored.iter().map(|s| s.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), stored.len(), "alert ids unique");
}

// SPEC §3: "An operator can review alerts and reset an entry by command."
#[tokio::test]
async fn forget_deletes_the_entry_and_logs_the_decision() {
    let t = common::fresh().await;
    let s = &t.store;
    let key = MemoryKey::domain("example.org");
    s.record(&key, &obs(10, TlsLevel::Tls))
        .await
        .expect("record");
    s.record(&key, &obs(20, TlsLevel::None))
        .await
        .expect("record");

    assert!(
        s.forget(&key, "moved to a provider without TLS, ticket 42")
            .await
            .expect("forget")
    );
    assert_eq!(s.entry(&key).await.expect("entry"), None);
    assert!(!s.forget(&key, "again").await.expect("forget"));

    let log = s.forget_log(10).await.expect("log");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].reason, "again");
    assert_eq!(log[0].best_level, None, "nothing was there");
    assert_eq!(log[1].key, key);
    assert_eq!(log[1].reason, "moved to a provider without TLS, ticket 42");
    assert_eq!(log[1].best_level, Some(TlsLevel::Tls));
    assert!(log[1].at > 1_700_000_000, "stamped with the clock");

    // The alert stays as history; the memory starts afresh, without alert.
    assert_eq!(s.alerts(10).await.expect("alerts").len(), 1);
    assert!(
        s.record(&key, &obs(30, TlsLevel::None))
            .await
            .expect("record")
            .is_none()
    );
    let e = s.entry(&key).await.expect("entry").expect("exists");
    assert_eq!(e.best_level, TlsLevel::None);
    assert!(!e.requires_tls());
}

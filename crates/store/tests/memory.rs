//! The TLS memory on disk (SPEC §3): the ratchet applied atomically, alerts
//! stored, operator resets audited.

mod common;

use common::{TestStore, both_backends, obs};
use mailtls_core::TlsLevel;
use mailtls_core::memory::{Alert, MemoryKey};
use mailtls_store::{SqlStore, TlsMemory};

// SPEC §3: "It only ratchets up by itself: a drop is an alert, never a
// silent downgrade."
async fn the_level_ratchets_up_and_a_drop_is_a_stored_alert(t: TestStore) {
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
both_backends!(the_level_ratchets_up_and_a_drop_is_a_stored_alert);

async fn alerts_are_listed_newest_first_within_the_limit(t: TestStore) {
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
both_backends!(alerts_are_listed_newest_first_within_the_limit);

async fn hosts_and_domains_are_separate_and_keys_are_normalised(t: TestStore) {
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
both_backends!(hosts_and_domains_are_separate_and_keys_are_normalised);

// SPEC §3 (every node must see the same memory) and issue #6: two writers at
// once never lose the higher level. Many tasks on two independent pools (as
// two processes would be) record different levels for one host at once.
async fn concurrent_records_never_lose_the_higher_level_or_an_update(t: TestStore) {
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
both_backends!(multi_thread: concurrent_records_never_lose_the_higher_level_or_an_update);

// SPEC §3: "An operator can review alerts and reset an entry by command."
async fn forget_deletes_the_entry_and_logs_the_decision(t: TestStore) {
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
both_backends!(forget_deletes_the_entry_and_logs_the_decision);

/// Records, all at once, an observation at `1000 + i` of `level(i)` for
/// every `i` in `range`, alternating between the two nodes; the alerts by
/// `i`.
async fn race(
    nodes: &[SqlStore; 2],
    key: &MemoryKey,
    range: std::ops::RangeInclusive<i64>,
    level: fn(i64) -> TlsLevel,
) -> Vec<(i64, Option<Alert>)> {
    let mut tasks = Vec::new();
    for i in range {
        let store = nodes[usize::from(i % 2 == 0)].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            (i, store.record(&key, &obs(1000 + i, level(i))).await)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        let (i, alert) = task.await.expect("task");
        results.push((i, alert.expect("record")));
    }
    results
}

// Issue #6: two nodes (two pools) recording observations for one host at
// once, mixed levels, from an empty memory: the best level is never lost,
// no update is lost, and every alert is one the ratchet would raise.
// Then, on the settled entry, every drop alerts: exactly one alert each.
async fn two_nodes_racing_on_one_host_keep_the_best_level_and_count_alerts(t: TestStore) {
    let nodes = [t.store.clone(), t.other().await];
    let key = MemoryKey::host("mx.example.net");
    const N: i64 = 200;
    fn mixed(i: i64) -> TlsLevel {
        match i % 10 {
            7 => TlsLevel::Dane,
            0 | 3 | 5 => TlsLevel::Tls,
            _ => TlsLevel::None,
        }
    }
    let mut raised = 0;
    for (i, alert) in race(&nodes, &key, 1..=N, mixed).await {
        if let Some(alert) = alert {
            assert_eq!((alert.at, alert.observed), (1000 + i, mixed(i)));
            assert_ne!(mixed(i), TlsLevel::Dane, "the best level never alerts");
            assert!(alert.observed < alert.best_level);
            raised += 1;
        }
    }
    let e = nodes[0].entry(&key).await.expect("entry").expect("exists");
    assert_eq!(e.best_level, TlsLevel::Dane, "the highest level survives");
    let tls_ats: Vec<i64> = (1..=N)
        .filter(|&i| mixed(i) >= TlsLevel::Tls)
        .map(|i| 1000 + i)
        .collect();
    assert_eq!(e.last_seen_at, 1000 + N);
    assert_eq!(e.first_tls_at, tls_ats.iter().min().copied());
    assert_eq!(e.last_tls_at, tls_ats.iter().max().copied());
    let stored = nodes[1].alerts(10_000).await.expect("alerts");
    assert_eq!(stored.len(), raised, "every alert raised is stored, once");

    // Settled at DANE: each of the next observations is a drop.
    fn below_dane(i: i64) -> TlsLevel {
        if i % 2 == 0 {
            TlsLevel::Tls
        } else {
            TlsLevel::None
        }
    }
    for (_, alert) in race(&nodes, &key, N + 1..=2 * N, below_dane).await {
        let alert = alert.expect("a drop below DANE alerts");
        assert_eq!(alert.best_level, TlsLevel::Dane);
    }
    let stored = nodes[0].alerts(10_000).await.expect("alerts");
    assert_eq!(stored.len(), raised + N as usize);
    let e = nodes[0].entry(&key).await.expect("entry").expect("exists");
    assert_eq!(
        (e.best_level, e.last_seen_at),
        (TlsLevel::Dane, 1000 + 2 * N)
    );
    nodes[1].close().await;
}
both_backends!(multi_thread: two_nodes_racing_on_one_host_keep_the_best_level_and_count_alerts);

// Issue #6: alerts and audit records written at once by two nodes for many
// different keys get unique ids, without gaps, increasing in commit order
// (on PostgreSQL the loser of an id is retried).
async fn concurrent_alerts_and_forgets_get_unique_ids(t: TestStore) {
    let a = t.store.clone();
    let b = t.other().await;
    const KEYS: usize = 60;
    let keys: Vec<MemoryKey> = (0..KEYS)
        .map(|i| MemoryKey::domain(&format!("d{i}.example")))
        .collect();
    for key in &keys {
        a.record(key, &obs(10, TlsLevel::Tls))
            .await
            .expect("record");
    }
    let mut tasks = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let alert = store.record(&key, &obs(20, TlsLevel::None)).await;
            let forgot = store.forget(&key, "ticket 7").await;
            (alert.expect("record"), forgot.expect("forget"))
        }));
    }
    for task in tasks {
        let (alert, forgot) = task.await.expect("task");
        assert!(alert.is_some(), "each drop alerts");
        assert!(forgot, "each entry existed");
    }
    let mut alert_ids: Vec<i64> = a
        .alerts(1000)
        .await
        .expect("alerts")
        .iter()
        .map(|s| s.id)
        .collect();
    alert_ids.sort_unstable();
    assert_eq!(alert_ids, (1..=KEYS as i64).collect::<Vec<_>>());
    let log = a.forget_log(1000).await.expect("log");
    let mut forget_ids: Vec<i64> = log.iter().map(|r| r.id).collect();
    forget_ids.sort_unstable();
    assert_eq!(forget_ids, (1..=KEYS as i64).collect::<Vec<_>>());
    assert!(log.iter().all(|r| r.best_level == Some(TlsLevel::Tls)));
    b.close().await;
}
both_backends!(multi_thread: concurrent_alerts_and_forgets_get_unique_ids);

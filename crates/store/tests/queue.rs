//! Queue metadata (issue #3): per-recipient state, leases, retries.

mod common;

use std::collections::HashSet;

use common::{Kind, TestStore, both_backends, message};
use mailtls_core::SmtpStatus;
use mailtls_core::sending::{MinLevel, SenderRequirement, TlsVersion};
use mailtls_store::{Queue, RecipientOutcome, RecipientState, StoreError};

fn deferred(until: i64) -> RecipientOutcome {
    RecipientOutcome::Deferred {
        status: SmtpStatus::TLS_REQUIRED_TEMP,
        reason: "mx.example.net did TLS before and offers no STARTTLS now".into(),
        next_attempt_at: until,
    }
}

fn delivered() -> RecipientOutcome {
    RecipientOutcome::Delivered {
        detail: "250 2.0.0 ok (TLSv1.3, DANE)".into(),
    }
}

fn failed() -> RecipientOutcome {
    RecipientOutcome::Failed {
        status: SmtpStatus::NULL_MX,
        reason: "null MX".into(),
    }
}

async fn an_enqueued_message_is_due_at_once_with_every_recipient_pending(t: TestStore) {
    let s = &t.store;
    let mut m = message(
        "m1",
        &["b@example.net", "c@example.com", "b@example.net"],
        100,
    );
    m.sender_requirement = Some(SenderRequirement {
        min_level: MinLevel::Dane,
        min_tls: Some(TlsVersion::Tls13),
    });
    s.enqueue(&m).await.expect("enqueue");

    let q = s.message("m1").await.expect("message").expect("queued");
    assert_eq!(
        (q.id.as_str(), q.sender.as_str()),
        ("m1", "alice@example.org")
    );
    assert_eq!(
        (q.received_at, q.size, q.sender_requirement),
        (100, 1234, m.sender_requirement)
    );
    let rcpts: Vec<_> = q.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        rcpts,
        ["b@example.net", "c@example.com"],
        "RCPT order, duplicates once"
    );
    for r in &q.recipients {
        assert_eq!(
            (r.state, r.attempts, r.next_attempt_at),
            (RecipientState::Pending, 0, 100)
        );
        assert_eq!(
            (r.last_status.as_deref(), r.last_reason.as_deref()),
            (None, None)
        );
    }
    assert_eq!(q.due(100).count(), 2);
    assert_eq!(q.due(99).count(), 0);
    assert_eq!(s.message("nope").await.expect("message"), None);
}
both_backends!(an_enqueued_message_is_due_at_once_with_every_recipient_pending);

async fn enqueue_refuses_a_taken_id_and_an_empty_envelope_without_writing(t: TestStore) {
    let s = &t.store;
    s.enqueue(&message("m1", &["b@example.net"], 1))
        .await
        .expect("enqueue");
    assert!(matches!(
        s.enqueue(&message("m1", &["other@example.net"], 2)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.enqueue(&message("m2", &[], 2)).await,
        Err(StoreError::InvalidMessage(_))
    ));
    let all = s.list().await.expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].recipients.len(),
        1,
        "the failed enqueue added nothing"
    );
    assert_eq!(all[0].received_at, 1);
}
both_backends!(enqueue_refuses_a_taken_id_and_an_empty_envelope_without_writing);

// A runner owns a claimed message until its lease ends or it releases it;
// a runner that dies leaves a lease that expires (at-least-once delivery).
async fn a_claim_leases_the_message_until_release_or_expiry(t: TestStore) {
    let s = &t.store;
    s.enqueue(&message("m1", &["b@example.net"], 100))
        .await
        .expect("enqueue");

    assert!(
        s.claim_due(99, 60, 10).await.expect("claim").is_empty(),
        "not yet due"
    );
    let claimed = s.claim_due(100, 60, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].recipients.len(), 1);
    assert!(
        s.claim_due(159, 60, 10).await.expect("claim").is_empty(),
        "leased"
    );
    // The lease expired: a new runner takes over.
    assert_eq!(s.claim_due(160, 60, 10).await.expect("claim").len(), 1);
    s.release("m1").await.expect("release");
    assert_eq!(
        s.claim_due(161, 60, 10).await.expect("claim").len(),
        1,
        "released"
    );
    assert_eq!(s.reset_leases().await.expect("reset"), 1);
    assert_eq!(s.reset_leases().await.expect("reset"), 0);
    assert_eq!(
        s.claim_due(162, 60, 10).await.expect("claim").len(),
        1,
        "after reset"
    );
}
both_backends!(a_claim_leases_the_message_until_release_or_expiry);

async fn claims_take_the_oldest_first_within_the_limit(t: TestStore) {
    let s = &t.store;
    for (id, at) in [("c", 30), ("a", 10), ("b", 20)] {
        s.enqueue(&message(id, &["r@example.net"], at))
            .await
            .expect("enqueue");
    }
    let first: Vec<_> = s
        .claim_due(100, 60, 2)
        .await
        .expect("claim")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(first, ["a", "b"]);
    let rest: Vec<_> = s
        .claim_due(100, 60, 2)
        .await
        .expect("claim")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(rest, ["c"]);
    assert!(s.claim_due(100, 60, 0).await.expect("claim").is_empty());
}
both_backends!(claims_take_the_oldest_first_within_the_limit);

async fn outcomes_count_attempts_and_only_pending_recipients_are_due(t: TestStore) {
    let s = &t.store;
    s.enqueue(&message(
        "m1",
        &["ok@example.net", "later@example.net", "bad@example.com"],
        100,
    ))
    .await
    .expect("enqueue");
    let m = &s.claim_due(100, 60, 10).await.expect("claim")[0];
    assert_eq!(m.due(100).count(), 3);
    s.record_outcome("m1", "ok@example.net", &delivered(), 101)
        .await
        .expect("outcome");
    s.record_outcome("m1", "later@example.net", &deferred(500), 101)
        .await
        .expect("outcome");
    s.record_outcome("m1", "bad@example.com", &failed(), 101)
        .await
        .expect("outcome");
    s.release("m1").await.expect("release");

    let m = s.message("m1").await.expect("message").expect("queued");
    let [ok, later, bad] = &m.recipients[..] else {
        panic!("3 recipients")
    };
    assert_eq!((ok.state, ok.attempts), (RecipientState::Delivered, 1));
    assert_eq!(
        ok.last_reason.as_deref(),
        Some("250 2.0.0 ok (TLSv1.3, DANE)")
    );
    assert_eq!(
        (later.state, later.attempts, later.next_attempt_at),
        (RecipientState::Pending, 1, 500)
    );
    assert_eq!(later.last_status.as_deref(), Some("451 4.7.4"));
    assert!(
        later
            .last_reason
            .as_deref()
            .is_some_and(|r| r.contains("did TLS before"))
    );
    assert_eq!((bad.state, bad.attempts), (RecipientState::Failed, 1));
    assert_eq!(bad.last_status.as_deref(), Some("550 5.1.10"));

    // Only the deferred one keeps the message in play, from its time on.
    assert!(s.claim_due(499, 60, 10).await.expect("claim").is_empty());
    let again = s.claim_due(500, 60, 10).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].recipients.len(), 3, "all recipients come back");
    let due: Vec<_> = again[0].due(500).map(|r| r.address.as_str()).collect();
    assert_eq!(due, ["later@example.net"]);

    // Final is final: a late outcome changes nothing.
    s.record_outcome("m1", "ok@example.net", &failed(), 502)
        .await
        .expect("ignored");
    let m = s.message("m1").await.expect("message").expect("queued");
    assert_eq!(
        (m.recipients[0].state, m.recipients[0].attempts),
        (RecipientState::Delivered, 1)
    );

    s.record_outcome("m1", "later@example.net", &delivered(), 503)
        .await
        .expect("outcome");
    s.release("m1").await.expect("release");
    // All final: history, never claimed again.
    assert!(s.claim_due(10_000, 60, 10).await.expect("claim").is_empty());
    assert_eq!(s.list().await.expect("list").len(), 1);
    let m = s.message("m1").await.expect("message").expect("queued");
    assert_eq!(m.recipients[1].attempts, 2);

    assert!(matches!(
        s.record_outcome("m1", "stranger@example.net", &delivered(), 504)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.record_outcome("nope", "ok@example.net", &delivered(), 504)
            .await,
        Err(StoreError::NotFound(_))
    ));
}
both_backends!(outcomes_count_attempts_and_only_pending_recipients_are_due);

async fn retry_now_makes_deferred_recipients_due(t: TestStore) {
    let s = &t.store;
    s.enqueue(&message("m1", &["a@example.net", "b@example.net"], 100))
        .await
        .expect("enqueue");
    s.claim_due(100, 60, 10).await.expect("claim");
    s.record_outcome("m1", "a@example.net", &delivered(), 101)
        .await
        .expect("outcome");
    s.record_outcome("m1", "b@example.net", &deferred(10_000), 101)
        .await
        .expect("outcome");
    s.release("m1").await.expect("release");
    assert!(s.claim_due(200, 60, 10).await.expect("claim").is_empty());

    assert!(s.retry_now("m1").await.expect("retry"));
    let m = s.message("m1").await.expect("message").expect("queued");
    assert_eq!(
        m.recipients[0].next_attempt_at, 100,
        "final recipients untouched"
    );
    assert_eq!(m.recipients[1].next_attempt_at, 0);
    assert_eq!(s.claim_due(200, 60, 10).await.expect("claim").len(), 1);
    assert!(!s.retry_now("nope").await.expect("retry"));
}
both_backends!(retry_now_makes_deferred_recipients_due);

async fn delete_removes_the_message_and_its_recipients(t: TestStore) {
    let s = &t.store;
    s.enqueue(&message("m1", &["a@example.net", "b@example.net"], 100))
        .await
        .expect("enqueue");
    s.enqueue(&message("m2", &["a@example.net"], 101))
        .await
        .expect("enqueue");
    assert!(s.delete("m1").await.expect("delete"));
    assert!(!s.delete("m1").await.expect("delete"));
    assert_eq!(s.message("m1").await.expect("message"), None);
    let ids: Vec<_> = s
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["m2"]);
    // No recipient row was left behind: the id can be queued afresh.
    s.enqueue(&message("m1", &["a@example.net"], 102))
        .await
        .expect("enqueue again");
    let m = s.message("m1").await.expect("message").expect("queued");
    assert_eq!(m.recipients.len(), 1);
}
both_backends!(delete_removes_the_message_and_its_recipients);

async fn list_returns_every_message_with_its_own_recipients_oldest_first(t: TestStore) {
    let s = &t.store;
    s.enqueue(&message("late", &["x@example.net"], 200))
        .await
        .expect("enqueue");
    s.enqueue(&message("early", &["y@example.net", "z@example.net"], 100))
        .await
        .expect("enqueue");
    let all = s.list().await.expect("list");
    let shape: Vec<_> = all
        .iter()
        .map(|m| {
            (
                m.id.as_str(),
                m.recipients
                    .iter()
                    .map(|r| r.address.as_str())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("early", vec!["y@example.net", "z@example.net"]),
            ("late", vec!["x@example.net"])
        ]
    );
}
both_backends!(list_returns_every_message_with_its_own_recipients_oldest_first);

async fn prune_finished_drops_only_old_history(t: TestStore) {
    let s = &t.store;
    s.enqueue(&message("done", &["a@example.net"], 100))
        .await
        .expect("enqueue");
    s.enqueue(&message("done-recent", &["a@example.net"], 300))
        .await
        .expect("enqueue");
    s.enqueue(&message("pending", &["a@example.net"], 100))
        .await
        .expect("enqueue");
    s.record_outcome("done", "a@example.net", &delivered(), 150)
        .await
        .expect("outcome");
    s.record_outcome("done-recent", "a@example.net", &failed(), 350)
        .await
        .expect("outcome");
    assert_eq!(s.prune_finished(200).await.expect("prune"), 1);
    let ids: HashSet<_> = s
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids,
        HashSet::from(["done-recent".to_owned(), "pending".to_owned()])
    );
}
both_backends!(prune_finished_drops_only_old_history);

// Several runners (here on two independent pools, as two processes) claim
// at once: each message goes to exactly one of them.
async fn concurrent_claims_hand_each_message_to_one_runner(t: TestStore) {
    const MESSAGES: usize = 40;
    for i in 0..MESSAGES {
        t.store
            .enqueue(&message(&format!("m{i:02}"), &["r@example.net"], 100))
            .await
            .expect("enqueue");
    }
    let other = t.other().await;
    let mut runners = Vec::new();
    for r in 0..8 {
        let store = if r % 2 == 0 {
            t.store.clone()
        } else {
            other.clone()
        };
        runners.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(100, 600, 3).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut all = Vec::new();
    for runner in runners {
        all.extend(runner.await.expect("runner"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), MESSAGES, "no message claimed twice");
    assert_eq!(unique.len(), MESSAGES, "every message claimed");
}
both_backends!(multi_thread: concurrent_claims_hand_each_message_to_one_runner);

async fn next_due_is_the_earliest_pending_retry(t: TestStore) {
    let s = &t.store;
    assert_eq!(s.next_due().await.expect("next_due"), None, "empty queue");
    s.enqueue(&message("m1", &["a@example.net", "b@example.net"], 100))
        .await
        .expect("enqueue");
    s.enqueue(&message("m2", &["c@example.net"], 100))
        .await
        .expect("enqueue");
    s.record_outcome("m1", "a@example.net", &deferred(500), 100)
        .await
        .expect("outcome");
    s.record_outcome("m1", "b@example.net", &delivered(), 100)
        .await
        .expect("outcome");
    s.record_outcome("m2", "c@example.net", &deferred(300), 100)
        .await
        .expect("outcome");
    assert_eq!(s.next_due().await.expect("next_due"), Some(300));
    s.record_outcome("m2", "c@example.net", &failed(), 300)
        .await
        .expect("outcome");
    assert_eq!(
        s.next_due().await.expect("next_due"),
        Some(500),
        "final recipients do not count"
    );
}
both_backends!(next_due_is_the_earliest_pending_retry);

// Issue #6: a node that dies mid-delivery loses its lease when it expires,
// and another node (another pool) takes the message over then, not before.
async fn another_node_takes_over_when_a_lease_expires(t: TestStore) {
    let a = &t.store;
    let b = t.other().await;
    a.enqueue(&message("m1", &["r@example.net"], 100))
        .await
        .expect("enqueue");
    assert_eq!(a.claim_due(100, 300, 10).await.expect("claim").len(), 1);
    // Node a "dies": no outcome, no release.
    assert!(b.claim_due(399, 300, 10).await.expect("claim").is_empty());
    let taken = b.claim_due(400, 300, 10).await.expect("claim");
    assert_eq!(taken.len(), 1, "expired: node b takes over");
    assert!(a.claim_due(401, 300, 10).await.expect("claim").is_empty());
    b.close().await;
}
both_backends!(another_node_takes_over_when_a_lease_expires);

// Issue #6: a message's body is in the spool of the node that accepted it,
// so on PostgreSQL (a fleet) only that node claims it. On SQLite (one node)
// the name is recorded only.
async fn a_node_claims_only_its_own_messages(t: TestStore) {
    let a = t.store.clone().with_node("node-a");
    let b = t.other().await.with_node("node-b");
    a.enqueue(&message("from-a", &["r@example.net"], 100))
        .await
        .expect("enqueue");
    b.enqueue(&message("from-b", &["r@example.net"], 100))
        .await
        .expect("enqueue");
    let ids = |claimed: Vec<mailtls_store::QueuedMessage>| -> Vec<String> {
        claimed.into_iter().map(|m| m.id).collect()
    };
    let by_b = ids(b.claim_due(100, 300, 10).await.expect("claim"));
    match t.kind {
        Kind::Sqlite => assert_eq!(by_b, ["from-a", "from-b"]),
        Kind::Postgres => {
            assert_eq!(by_b, ["from-b"], "node b never gets node a's message");
            let by_a = ids(a.claim_due(100, 300, 10).await.expect("claim"));
            assert_eq!(by_a, ["from-a"]);
            // Node b waits only for its own retries.
            let retry = |at| RecipientOutcome::Deferred {
                status: mailtls_core::SmtpStatus::TLS_REQUIRED_TEMP,
                reason: "later".into(),
                next_attempt_at: at,
            };
            a.record_outcome("from-a", "r@example.net", &retry(500), 100)
                .await
                .expect("record");
            b.record_outcome("from-b", "r@example.net", &retry(900), 100)
                .await
                .expect("record");
            assert_eq!(b.next_due().await.expect("due"), Some(900));
            assert_eq!(a.next_due().await.expect("due"), Some(500));
        }
    }
    b.close().await;
}
both_backends!(a_node_claims_only_its_own_messages);

// Issue #6: a runner whose lease expired and was taken over cannot end the
// new owner's lease by releasing (which would let a third runner in).
async fn a_taken_over_lease_is_not_released_by_the_old_runner(t: TestStore) {
    let old = &t.store;
    let new = t.other().await;
    old.enqueue(&message("m1", &["r@example.net"], 100))
        .await
        .expect("enqueue");
    assert_eq!(old.claim_due(100, 300, 10).await.expect("claim").len(), 1);
    assert_eq!(new.claim_due(400, 300, 10).await.expect("claim").len(), 1);
    old.release("m1").await.expect("release");
    let third = t.other().await;
    assert!(
        third
            .claim_due(401, 300, 10)
            .await
            .expect("claim")
            .is_empty(),
        "the new owner's lease holds"
    );
    new.release("m1").await.expect("release");
    assert_eq!(third.claim_due(401, 300, 10).await.expect("claim").len(), 1);
    new.close().await;
    third.close().await;
}
both_backends!(a_taken_over_lease_is_not_released_by_the_old_runner);

// `reset_leases` at a node's start: on SQLite (one node) every lease is the
// previous process's and is freed; on PostgreSQL (a fleet) live leases are
// other nodes' deliveries and stay, only expired ones are tidied.
async fn reset_leases_never_takes_a_live_lease_from_a_fleet(t: TestStore) {
    let s = &t.store;
    let now = mailtls_core::clock::unix_now();
    // "live" is leased until an hour from now; "expired" was leased long ago.
    s.enqueue(&message("live", &["r@example.net"], now - 1000))
        .await
        .expect("enqueue");
    let live = s.claim_due(now, 3600, 10).await.expect("claim");
    assert_eq!(live.len(), 1);
    s.enqueue(&message("expired", &["r@example.net"], now - 1000))
        .await
        .expect("enqueue");
    let old = s.claim_due(now - 1000, 10, 10).await.expect("claim");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].id, "expired");
    let restarted = t.other().await;
    match t.kind {
        Kind::Sqlite => {
            assert_eq!(restarted.reset_leases().await.expect("reset"), 2);
            assert_eq!(
                restarted.claim_due(now, 60, 10).await.expect("claim").len(),
                2
            );
        }
        Kind::Postgres => {
            assert_eq!(restarted.reset_leases().await.expect("reset"), 1);
            let claimed: Vec<_> = restarted
                .claim_due(now, 60, 10)
                .await
                .expect("claim")
                .into_iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(claimed, ["expired"], "the live lease stays its owner's");
        }
    }
    restarted.close().await;
}
both_backends!(reset_leases_never_takes_a_live_lease_from_a_fleet);

// Issue #6: two nodes, each with several runners, claim at once from one
// large queue: every message is claimed exactly once.
async fn two_nodes_claiming_at_once_never_share_a_message(t: TestStore) {
    const MESSAGES: usize = 300;
    for i in 0..MESSAGES {
        t.store
            .enqueue(&message(&format!("m{i:03}"), &["r@example.net"], 100))
            .await
            .expect("enqueue");
    }
    let nodes = [t.store.clone(), t.other().await];
    let mut runners = Vec::new();
    for r in 0..12 {
        let store = nodes[r % 2].clone();
        runners.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(100, 600, 5).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut per_node = [0; 2];
    let mut all = Vec::new();
    for (r, runner) in runners.into_iter().enumerate() {
        let mine = runner.await.expect("runner");
        per_node[r % 2] += mine.len();
        all.extend(mine);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), MESSAGES, "no message claimed twice");
    assert_eq!(unique.len(), MESSAGES, "every message claimed");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "both nodes worked: {per_node:?}"
    );
    nodes[1].close().await;
}
both_backends!(multi_thread: two_nodes_claiming_at_once_never_share_a_message);

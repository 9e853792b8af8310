//! Accounts for SMTP AUTH (issue #3; SPEC §7: memory-hard password hashes).

mod common;

use common::{TestStore, both_backends};
use mailtls_store::{MAX_PASSWORD_LEN, StoreError, Users};

async fn the_right_password_verifies_and_a_wrong_one_does_not(t: TestStore) {
    let s = &t.store;
    s.add_user("alice@example.org", "correct horse battery staple")
        .await
        .expect("add");
    assert!(
        s.verify_password("alice@example.org", "correct horse battery staple")
            .await
            .expect("verify")
    );
    assert!(
        !s.verify_password("alice@example.org", "correct horse battery stapler")
            .await
            .expect("verify")
    );
    assert!(
        !s.verify_password("alice@example.org", "")
            .await
            .expect("verify")
    );
}
both_backends!(the_right_password_verifies_and_a_wrong_one_does_not);

async fn an_unknown_user_or_address_is_simply_refused(t: TestStore) {
    let s = &t.store;
    assert!(
        !s.verify_password("nobody@example.org", "x")
            .await
            .expect("verify")
    );
    assert!(
        !s.verify_password("not an address", "x")
            .await
            .expect("verify")
    );
    assert!(!s.user_exists("nobody@example.org").await.expect("exists"));
    assert!(!s.user_exists("not an address").await.expect("exists"));
}
both_backends!(an_unknown_user_or_address_is_simply_refused);

// The domain is normalised (lower case, A-labels); the local part is the
// receiving host's business (RFC 5321 §2.4) and kept as typed.
async fn domains_are_normalised_and_local_parts_kept(t: TestStore) {
    let s = &t.store;
    s.add_user("Alice@Example.ORG.", "pw").await.expect("add");
    assert!(s.user_exists("Alice@example.org").await.expect("exists"));
    assert!(
        s.verify_password("Alice@EXAMPLE.org", "pw")
            .await
            .expect("verify")
    );
    assert!(!s.user_exists("alice@example.org").await.expect("exists"));
    match s.add_user("Alice@example.org", "other").await {
        Err(StoreError::AlreadyExists(who)) => assert_eq!(who, "Alice@example.org"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // The first password still holds.
    assert!(
        s.verify_password("Alice@example.org", "pw")
            .await
            .expect("verify")
    );
    s.add_user("bob@bücher.example", "pw")
        .await
        .expect("add IDN");
    assert!(
        s.user_exists("bob@xn--bcher-kva.example")
            .await
            .expect("exists")
    );
}
both_backends!(domains_are_normalised_and_local_parts_kept);

async fn oversized_empty_and_addressless_input_is_refused_before_hashing(t: TestStore) {
    let s = &t.store;
    let long = "x".repeat(MAX_PASSWORD_LEN + 1);
    assert!(matches!(
        s.add_user("alice@example.org", &long).await,
        Err(StoreError::PasswordTooLong)
    ));
    assert!(matches!(
        s.add_user("alice@example.org", "").await,
        Err(StoreError::EmptyPassword)
    ));
    assert!(matches!(
        s.add_user("alice", "pw").await,
        Err(StoreError::InvalidAddress(_))
    ));
    assert!(!s.user_exists("alice@example.org").await.expect("exists"));

    // The limit itself is allowed; one byte more never verifies.
    let max = "y".repeat(MAX_PASSWORD_LEN);
    s.add_user("alice@example.org", &max).await.expect("add");
    assert!(
        s.verify_password("alice@example.org", &max)
            .await
            .expect("verify")
    );
    let started = std::time::Instant::now();
    assert!(
        !s.verify_password("alice@example.org", &long)
            .await
            .expect("verify")
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "no hashing of oversized input"
    );
}
both_backends!(oversized_empty_and_addressless_input_is_refused_before_hashing);

#[tokio::test]
async fn errors_are_temporary_for_an_smtp_peer_and_print_on_one_line() {
    let e = StoreError::PasswordTooLong;
    assert_eq!(e.smtp_status().to_string(), "451 4.3.0");
    assert!(e.smtp_status().is_temporary());
    let e = StoreError::AlreadyExists("alice@example.org".into());
    assert!(!e.to_string().contains('\n'));
}

// A burst of logins queues for the hash slots and every answer is right.
async fn a_burst_of_concurrent_logins_gets_the_right_answers(t: TestStore) {
    t.store
        .add_user("alice@example.org", "pw")
        .await
        .expect("add");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = t.store.clone();
        tasks.push(tokio::spawn(async move {
            let (user, password, expected) = match i % 3 {
                0 => ("alice@example.org", "pw", true),
                1 => ("alice@example.org", "wrong", false),
                _ => ("mallory@example.org", "pw", false),
            };
            let got = s.verify_password(user, password).await.expect("verify");
            (got, expected)
        }));
    }
    for task in tasks {
        let (got, expected) = task.await.expect("task");
        assert_eq!(got, expected);
    }
}
both_backends!(multi_thread: a_burst_of_concurrent_logins_gets_the_right_answers);

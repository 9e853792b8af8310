//! What is committed stays committed (SPEC §6): across a clean reopen, and
//! across `kill -9` of the process that wrote it.

mod common;

use std::process::Command;

use common::{TestStore, both_backends, message, obs};
use mailtls_core::TlsLevel;
use mailtls_core::memory::MemoryKey;
use mailtls_store::{Queue, SqlStore, StoreError, TlsMemory, Users};

async fn everything_is_there_after_close_and_reopen(t: TestStore) {
    let s = &t.store;
    s.add_user("alice@example.org", "pw").await.expect("add");
    let key = MemoryKey::host("mx.example.net");
    s.record(&key, &obs(10, TlsLevel::Dane))
        .await
        .expect("record");
    s.record(&key, &obs(20, TlsLevel::Tls))
        .await
        .expect("record");
    s.forget(&MemoryKey::domain("example.com"), "test")
        .await
        .expect("forget");
    s.enqueue(&message("m1", &["b@example.net"], 5))
        .await
        .expect("enqueue");
    s.claim_due(5, 600, 10).await.expect("claim");
    s.close().await;
    assert!(
        s.list().await.is_err(),
        "a closed store fails, it does not panic"
    );

    let s = SqlStore::open(&t.url).await.expect("reopen");
    assert!(
        s.verify_password("alice@example.org", "pw")
            .await
            .expect("verify")
    );
    let e = s.entry(&key).await.expect("entry").expect("remembered");
    assert_eq!(
        (e.best_level, e.last_level),
        (TlsLevel::Dane, TlsLevel::Tls)
    );
    assert_eq!(s.alerts(10).await.expect("alerts").len(), 1);
    assert_eq!(s.forget_log(10).await.expect("log").len(), 1);
    let m = s.message("m1").await.expect("message").expect("queued");
    assert_eq!(m.recipients.len(), 1);
    // The lease survived too: a restarted single node frees it.
    assert!(s.claim_due(6, 600, 10).await.expect("claim").is_empty());
    assert_eq!(s.reset_leases().await.expect("reset"), 1);
    assert_eq!(s.claim_due(6, 600, 10).await.expect("claim").len(), 1);
}
both_backends!(everything_is_there_after_close_and_reopen);

const CHILD_DB: &str = "MAILTLS_STORE_TEST_CRASH_DB";
const CRASH_MESSAGES: usize = 25;

/// The child half of `kill_9_loses_nothing_that_was_committed`: writes,
/// then has itself killed with SIGKILL (no destructor, no checkpoint, no
/// close). Does nothing when run on its own.
#[tokio::test]
#[ignore = "run by kill_9_loses_nothing_that_was_committed"]
async fn crash_child() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let s = SqlStore::open_sqlite(path.as_ref()).await.expect("open");
    for i in 0..CRASH_MESSAGES {
        s.enqueue(&message(&format!("m{i:02}"), &["b@example.net"], 100))
            .await
            .expect("enqueue");
    }
    s.record(&MemoryKey::host("mx.example.net"), &obs(10, TlsLevel::Tls))
        .await
        .expect("record");
    let status = Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_secs(60));
    unreachable!("SIGKILL did not arrive");
}

// SPEC §6: "The spool/queue must survive a crash (kill -9) without losing
// an accepted message." Every commit the child made before it died is there.
#[cfg(unix)]
#[tokio::test]
async fn kill_9_loses_nothing_that_was_committed() {
    use std::os::unix::process::ExitStatusExt as _;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.db");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "crash_child", "--test-threads=1"])
        .env(CHILD_DB, &path)
        .output()
        .expect("run child");
    assert_eq!(
        child.status.signal(),
        Some(9),
        "the child was killed: {:?}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(
        dir.path().join("crash.db-wal").exists(),
        "the commits are still in the WAL, not checkpointed"
    );

    let s = SqlStore::open_sqlite(&path).await.expect("reopen");
    assert_eq!(s.list().await.expect("list").len(), CRASH_MESSAGES);
    let e = s
        .entry(&MemoryKey::host("mx.example.net"))
        .await
        .expect("entry")
        .expect("remembered");
    assert_eq!(e.best_level, TlsLevel::Tls);
}

#[tokio::test]
async fn urls_name_sqlite_files_and_other_schemes_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let abs = dir.path().join("x").join("a.db");
    SqlStore::open(&format!("sqlite://{}", abs.display()))
        .await
        .expect("sqlite:// with an absolute path");
    assert!(abs.exists());

    for url in [
        "mysql://x/y",
        "sqlite::memory:",
        "sqlite:",
        "/var/lib/mailtls.db",
        "sqlite:/var/lib/mailtls.db?mode=ro",
        "postgres//x/y",
    ] {
        assert!(
            matches!(
                SqlStore::open(url).await,
                Err(StoreError::UnsupportedUrl(_))
            ),
            "{url}"
        );
    }
}

// Issue #6: a PostgreSQL server that is down is a clear, prompt error (not a
// hang), which names the server but not the password.
#[tokio::test]
async fn an_unreachable_postgres_is_a_prompt_clear_error() {
    // Nothing listens on a port we just bound and closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("postgres://mailtls:s3cret@127.0.0.1:{port}/mailtls");
    let started = std::time::Instant::now();
    match SqlStore::open(&url).await {
        Err(e @ StoreError::Unavailable(_)) => {
            let text = e.to_string();
            assert!(e.is_unavailable());
            assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3));

    // A server that accepts and then says nothing: the connect timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let got = SqlStore::open(&format!("postgresql://mailtls@127.0.0.1:{port}/mailtls")).await;
    assert!(
        matches!(&got, Err(StoreError::Unavailable(m)) if m.contains("no answer")),
        "{got:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= mailtls_store::sql::CONNECT_TIMEOUT
            && waited < mailtls_store::sql::CONNECT_TIMEOUT * 2,
        "{waited:?}"
    );
    hold.abort();
}

//! Shared helpers: a fresh store on each backend — an SQLite file in a
//! temporary directory, or a new PostgreSQL database on the server named by
//! `MAILTLS_TEST_POSTGRES_URL` — and small builders for observations and
//! messages.
//!
//! [`both_backends!`] turns one test body into two tests, `NAME::sqlite`
//! and `NAME::postgres` (issue #6: the same suite runs against both). The
//! PostgreSQL half needs a server URL whose user may create databases
//! (`scripts/postgres.sh` starts one); without it, the half prints
//! `SKIPPED (PostgreSQL): MAILTLS_TEST_POSTGRES_URL is not set` on the
//! terminal and passes — unless `MAILTLS_TEST_REQUIRE_POSTGRES=1`
//! (`scripts/test` sets it), then it fails.

#![allow(dead_code, unreachable_pub, unused_macros, unused_imports)]

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use mailtls_core::TlsLevel;
use mailtls_core::memory::Observation;
use mailtls_store::{NewMessage, SqlStore};
use sqlx::{Connection as _, Executor as _};
use tempfile::TempDir;

/// The server (any database on it) for the PostgreSQL half.
pub const POSTGRES_URL_VAR: &str = "MAILTLS_TEST_POSTGRES_URL";
/// When `1`, a missing server fails the PostgreSQL half instead of skipping.
pub const REQUIRE_POSTGRES_VAR: &str = "MAILTLS_TEST_REQUIRE_POSTGRES";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A store and what holds its data: a temporary directory (removed on
/// drop) or a PostgreSQL database (dropped on drop, best effort).
pub struct TestStore {
    pub store: SqlStore,
    pub kind: Kind,
    /// The URL the store was opened with.
    pub url: String,
    pub dir: TempDir,
    database: Option<TestDatabase>,
}

impl TestStore {
    /// The SQLite database file (meaningless on PostgreSQL).
    pub fn path(&self) -> PathBuf {
        db_path(&self.dir)
    }

    /// A second, independent store (its own pool) on the same database,
    /// as another process — or another node of a fleet — would have.
    pub async fn other(&self) -> SqlStore {
        SqlStore::open(&self.url).await.expect("open again")
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("mailtls.db")
}

/// Opens a new SQLite store in `data/mailtls.db` under a fresh temporary
/// directory (`data` does not exist before).
pub async fn fresh() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    let store = SqlStore::open_sqlite(&path).await.expect("open store");
    TestStore {
        store,
        kind: Kind::Sqlite,
        url: format!("sqlite:{}", path.display()),
        dir,
        database: None,
    }
}

/// A fresh store on `kind`; `None` when PostgreSQL is not configured (and
/// not required), after saying so on the terminal.
pub async fn fresh_on(kind: Kind, test: &str) -> Option<TestStore> {
    match kind {
        Kind::Sqlite => Some(fresh().await),
        Kind::Postgres => fresh_postgres(test).await,
    }
}

/// The PostgreSQL server's URL, or `None` after printing the SKIPPED line
/// (straight to the terminal: the test harness captures `eprintln!`).
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var(REQUIRE_POSTGRES_VAR).as_deref() != Ok("1"),
                "{REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is not set"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (PostgreSQL): {POSTGRES_URL_VAR} is not set — {test}"
            );
            None
        }
    }
}

/// Creates a new, empty database on the configured server; its URL.
/// Dropped again when the returned guard goes.
pub async fn create_postgres_database(test: &str) -> Option<(String, TestDatabase)> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let server = postgres_url(test)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "mailtls_t_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("connect to MAILTLS_TEST_POSTGRES_URL");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("CREATE DATABASE (the user needs CREATEDB)");
    let _ = admin.close().await;
    let url = with_database(&server, &name);
    Some((url, TestDatabase { server, name }))
}

async fn fresh_postgres(test: &str) -> Option<TestStore> {
    let (url, database) = create_postgres_database(test).await?;
    let store = SqlStore::open(&url).await.expect("open PostgreSQL store");
    Some(TestStore {
        store,
        kind: Kind::Postgres,
        url,
        dir: tempfile::tempdir().expect("temp dir"),
        database: Some(database),
    })
}

/// `server` with its database replaced by `name` (query kept).
pub fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A test database, dropped (with any connection still open on it) when
/// the guard goes, whether the test passed or panicked.
pub struct TestDatabase {
    server: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop may run inside the test's runtime: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                    let _ = admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// `both_backends!(name)` after `async fn name(t: TestStore)` defines the
/// tests `name::sqlite` and `name::postgres`;
/// `both_backends!(multi_thread: name)` runs them on a 4-thread runtime.
macro_rules! both_backends {
    ($name:ident) => {
        both_backends!(@tests $name, #[tokio::test]);
    };
    (multi_thread: $name:ident) => {
        both_backends!(@tests $name, #[tokio::test(flavor = "multi_thread", worker_threads = 4)]);
    };
    (@tests $name:ident, #[$runtime:meta]) => {
        mod $name {
            #[$runtime]
            async fn sqlite() {
                let t = crate::common::fresh_on(crate::common::Kind::Sqlite, "")
                    .await
                    .expect("SQLite store");
                super::$name(t).await;
            }

            #[$runtime]
            async fn postgres() {
                let test = concat!(module_path!(), "::postgres");
                if let Some(t) = crate::common::fresh_on(crate::common::Kind::Postgres, test).await
                {
                    super::$name(t).await;
                }
            }
        }
    };
}
pub(crate) use both_backends;

/// An observation at `at` of `level`, with TLS details when there was TLS
/// and a failure when there was none.
pub fn obs(at: i64, level: TlsLevel) -> Observation {
    let tls = level >= TlsLevel::Tls;
    Observation {
        at,
        level,
        protocol: tls.then(|| "TLSv1.3".to_owned()),
        cipher: tls.then(|| "TLS_AES_256_GCM_SHA384".to_owned()),
        cert_sha256: tls.then(|| format!("{at:064x}")),
        failure: (!tls).then(|| "STARTTLS not offered".to_owned()),
    }
}

/// A message from alice with the given recipients, received at `at`.
pub fn message(id: &str, recipients: &[&str], at: i64) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        sender: "alice@example.org".to_owned(),
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        size: 1234,
        received_at: at,
        auth_user: Some("alice@example.org".to_owned()),
        client: "[127.0.0.1] client.example".to_owned(),
        sender_requirement: None,
    }
}

//! Opening the database: [`SqlStore`].
//!
//! SQLite is the embedded default (SPEC §6). A `250` to DATA promises that
//! the message survives a crash, so the queue's metadata commit must be on
//! disk before the reply: WAL journal with `synchronous = FULL` (with WAL,
//! `NORMAL` could lose the last commits on power loss). The schema comes
//! from `crates/store/migrations/`, embedded at compile time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::Semaphore;

use crate::error::{Result, StoreError};

/// How long a statement waits for another writer before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool. SQLite has one writer at a time anyway; a few
/// connections let readers (the check, `queue list`) run beside it.
const MAX_CONNECTIONS: u32 = 8;

/// The store: users, the TLS memory and queue metadata in one SQL database.
///
/// Cheap to clone (a connection pool inside); `Send + Sync`. It implements
/// [`crate::Users`], [`crate::TlsMemory`] and [`crate::Queue`].
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: SqlitePool,
    /// Password hashes computed at once: each takes ~19 MiB and a core, so
    /// a burst of AUTH attempts queues here instead of exhausting memory.
    pub(crate) hash_slots: Arc<Semaphore>,
}

impl SqlStore {
    /// Opens (creating the file and its parent directories if missing) the
    /// SQLite database at `path` and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<SqlStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(SqlStore {
            pool,
            hash_slots: Arc::new(Semaphore::new(cores.max(2))),
        })
    }

    /// Opens a store by URL: `sqlite:PATH` (also `sqlite://PATH`).
    /// `postgres://` is refused until issue #6 adds it.
    pub async fn open(url: &str) -> Result<SqlStore> {
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        // `sqlite://relative` and `sqlite:///absolute` are common spellings.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        // No query parameters (`?mode=…`): the store sets its own options
        // (WAL, synchronous = FULL …), which durability depends on.
        if path.is_empty() || path == ":memory:" || path.contains('?') {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        SqlStore::open_sqlite(Path::new(path)).await
    }

    /// Closes every connection (waiting for those in use). Later calls on
    /// any clone fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction that will write. On SQLite, `BEGIN IMMEDIATE`
    /// takes the write lock at once: a transaction that reads and then
    /// writes (the ratchet, claiming) cannot be overtaken between the two,
    /// and waits for the busy timeout instead of failing on a stale
    /// snapshot. (PostgreSQL, issue #6, will need row locks instead.)
    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Creates the database file, if missing, readable by its owner only: it
/// holds password hashes. SQLite gives its `-wal` and `-shm` files the
/// database file's permissions.
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Seconds since the Unix epoch, for rows the caller gives no time for.
pub(crate) use mailtls_core::clock::unix_now;

#[cfg(test)]
mod tests {
    use super::*;

    async fn pragma(store: &SqlStore, name: &'static str) -> String {
        // The value's column is named after the pragma, except this one.
        let column = if name == "busy_timeout" {
            "timeout"
        } else {
            name
        };
        let row: (String,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT CAST({column} AS TEXT) FROM pragma_{name}"
        )))
        .fetch_one(&store.pool)
        .await
        .expect("pragma");
        row.0
    }

    // SPEC §6: a 250 to DATA is a promise; the commit must be durable.
    #[tokio::test]
    async fn every_connection_is_durable_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqlStore::open_sqlite(&dir.path().join("a/b/store.db"))
            .await
            .expect("open");
        assert_eq!(pragma(&store, "journal_mode").await, "wal");
        assert_eq!(pragma(&store, "synchronous").await, "2", "FULL");
        assert_eq!(pragma(&store, "foreign_keys").await, "1");
        assert_eq!(pragma(&store, "busy_timeout").await, "10000");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        let _store = SqlStore::open_sqlite(&path).await.expect("open");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

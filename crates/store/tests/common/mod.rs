//! Shared helpers: a store on a fresh SQLite file in a temporary directory,
//! and small builders for observations and messages.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use mailtls_core::TlsLevel;
use mailtls_core::memory::Observation;
use mailtls_store::{NewMessage, SqlStore};
use tempfile::TempDir;

/// A store and the directory that holds its file (removed on drop).
pub struct TestStore {
    pub store: SqlStore,
    pub dir: TempDir,
}

impl TestStore {
    /// The database file.
    pub fn path(&self) -> PathBuf {
        db_path(&self.dir)
    }

    /// A second, independent store (its own pool) on the same file, as
    /// another process would have.
    pub async fn other(&self) -> SqlStore {
        SqlStore::open_sqlite(&self.path())
            .await
            .expect("open again")
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("mailtls.db")
}

/// Opens a new store in `data/mailtls.db` under a fresh temporary
/// directory (`data` does not exist before).
pub async fn fresh() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqlStore::open_sqlite(&db_path(&dir))
        .await
        .expect("open store");
    TestStore { store, dir }
}

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

//! Shared helpers: a store on a fresh SQLite file in a temporary directory.

#![allow(dead_code, unreachable_pub)]

use mailtls_store::SqlStore;
use tempfile::TempDir;

/// A store and the directory that holds its file (removed on drop).
pub struct TestStore {
    pub store: SqlStore,
    pub dir: TempDir,
}

impl TestStore {
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("mailtls.db")
    }
}

/// Opens a new store in `data/mailtls.db` under a fresh temporary
/// directory (the `data` directory does not exist before).
pub async fn fresh() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data").join("mailtls.db");
    let store = SqlStore::open_sqlite(&path).await.expect("open store");
    TestStore { store, dir }
}

//! `mailtls store …`: the store itself (issue #6). `migrate` brings the
//! configured store's schema up to date; `export` and `import` move its
//! contents between SQLite and PostgreSQL (or to a new file), so that an
//! operator can grow from one machine to a fleet without losing the TLS
//! memory. The store is the one every command uses: `[store] url`, else
//! SQLite in the data directory.
//!
//! Moving to PostgreSQL: `mailtls store export dump.jsonl` with the old
//! configuration, set `[store] url = "postgres://…"`, then
//! `mailtls store import dump.jsonl`. Message bodies stay in the spool of
//! the node that accepted them (`<data_dir>/spool/`); only their queue
//! metadata travels in the dump.

use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mailtls_store::SqlStore;

use crate::config::{self, FileConfig};

/// `mailtls store …`.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Bring the store's schema up to date (every command does so when it
    /// opens the store; this says what it did).
    Migrate,
    /// Write users (with their password hashes), settings, the TLS memory,
    /// its alerts and forget audit, and the queue's metadata to FILE as
    /// versioned JSON lines (`-`: standard output).
    Export {
        /// The dump to write; an existing file is not overwritten.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Read a dump made by `store export` into the store, which must be
    /// empty; all or nothing.
    Import {
        /// The dump to read (`-`: standard input).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs a `store` command on the configured store.
pub async fn run(file: &FileConfig, data_dir: &Path, command: StoreCommand) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(data_dir) {
        return crate::usage_error(&format!("cannot create {}: {e}", data_dir.display()));
    }
    let url = config::store_url(file, data_dir);
    let shown = shown_url(&url);
    let (store, report) = match SqlStore::open_and_migrate(&url).await {
        Ok(opened) => opened,
        Err(e) => return crate::usage_error(&format!("store {shown}: {e}")),
    };
    let code = match command {
        StoreCommand::Migrate => {
            for (version, description) in &report.applied {
                println!("applied migration {version}: {description}");
            }
            println!(
                "store {shown} ({}): schema up to date at version {} ({} applied now)",
                store.backend().as_str(),
                report.version,
                report.applied.len()
            );
            ExitCode::SUCCESS
        }
        StoreCommand::Export { file: path } => export(&store, &path).await,
        StoreCommand::Import { file: path } => import(&store, &path, &shown).await,
    };
    store.close().await;
    code
}

async fn export(store: &SqlStore, path: &Path) -> ExitCode {
    let result = if path == Path::new("-") {
        let mut out = BufWriter::new(std::io::stdout());
        store.export(&mut out).await.map_err(|e| e.to_string())
    } else {
        // Never over an existing dump; readable by its owner only: it
        // holds password hashes.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let opened = options
            .open(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()));
        match opened {
            Ok(out) => {
                let mut out = BufWriter::new(out);
                let exported = store.export(&mut out).await.map_err(|e| e.to_string());
                let synced = out
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()));
                exported.and_then(|summary| synced.map(|()| summary))
            }
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(summary) => {
            eprintln!(
                "exported {summary} to {}; message bodies stay in this node's spool",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn import(store: &SqlStore, path: &Path, shown: &str) -> ExitCode {
    let result = if path == Path::new("-") {
        let mut input = BufReader::new(std::io::stdin());
        store.import(&mut input).await
    } else {
        match std::fs::File::open(path) {
            Ok(f) => store.import(&mut BufReader::new(f)).await,
            Err(e) => return fail(&format!("cannot open {}: {e}", path.display())),
        }
    };
    match result {
        Ok(summary) => {
            println!("imported {summary} into {shown}");
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("{}: {e}", path.display())),
    }
}

fn fail(message: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("mailtls: error: {message}");
    ExitCode::FAILURE
}

/// The store URL for messages: without a password.
fn shown_url(url: &str) -> String {
    mailtls_store::sql::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_for(data_dir: &Path, url: Option<&str>) -> FileConfig {
        let text = match url {
            Some(url) => format!("data_dir = {data_dir:?}\n[store]\nurl = {url:?}\n"),
            None => format!("data_dir = {data_dir:?}\n"),
        };
        let path = data_dir.join("mailtls.toml");
        std::fs::create_dir_all(data_dir).expect("mkdir");
        std::fs::write(&path, text).expect("write config");
        FileConfig::load(&path).expect("config")
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown_url("postgres://mailtls:pw@db:5432/mailtls"),
            "postgres://mailtls@db:5432/mailtls"
        );
        assert_eq!(shown_url("sqlite:/x/a.db"), "sqlite:/x/a.db");
    }

    // The operator's round trip: migrate, export from one data directory,
    // import into another (the same as into PostgreSQL, with its URL).
    #[tokio::test]
    async fn migrate_export_and_import_move_a_store() {
        use mailtls_store::{TlsMemory as _, Users as _};
        let dir = tempfile_dir();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let from = config_for(&a, None);
        assert_eq!(
            run(&from, &a, StoreCommand::Migrate).await,
            ExitCode::SUCCESS
        );
        {
            let store = SqlStore::open(&config::store_url(&from, &a))
                .await
                .expect("open");
            store
                .add_user("alice@example.org", "pw")
                .await
                .expect("add");
            let key = mailtls_core::memory::MemoryKey::host("mx.example.net");
            let seen = mailtls_core::memory::Observation {
                at: 10,
                level: mailtls_core::TlsLevel::Tls,
                protocol: Some("TLSv1.3".into()),
                cipher: None,
                cert_sha256: None,
                failure: None,
            };
            store.record(&key, &seen).await.expect("record");
            store.close().await;
        }
        let dump = dir.join("dump.jsonl");
        let export = StoreCommand::Export { file: dump.clone() };
        assert_eq!(run(&from, &a, export).await, ExitCode::SUCCESS);
        let again = StoreCommand::Export { file: dump.clone() };
        assert_eq!(
            run(&from, &a, again).await,
            ExitCode::FAILURE,
            "an existing dump is never overwritten"
        );

        let target = format!("sqlite:{}", b.join("moved.sqlite").display());
        let to = config_for(&b, Some(&target));
        let import = StoreCommand::Import { file: dump.clone() };
        assert_eq!(run(&to, &b, import).await, ExitCode::SUCCESS);
        let store = SqlStore::open(&target).await.expect("open");
        assert!(
            store
                .verify_password("alice@example.org", "pw")
                .await
                .expect("verify")
        );
        let e = store
            .entry(&mailtls_core::memory::MemoryKey::host("mx.example.net"))
            .await
            .expect("entry")
            .expect("moved");
        assert!(e.requires_tls());
        store.close().await;
        let twice = StoreCommand::Import { file: dump };
        assert_eq!(run(&to, &b, twice).await, ExitCode::FAILURE, "not empty");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fresh directory under the system's temporary directory.
    fn tempfile_dir() -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("mailtls-store-cmd-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}

//! TLS memory look-ups and records per second, on SQLite and PostgreSQL
//! (issue #6; numbers in `docs/store.md`).
//!
//! `cargo bench -p mailtls-store --bench memory` — SQLite always (a file in
//! a temporary directory: WAL, synchronous = FULL, as in production);
//! PostgreSQL when `MAILTLS_TEST_POSTGRES_URL` names a server whose user
//! may create databases (`scripts/postgres.sh`; note that the throwaway
//! test cluster runs with fsync off). Each figure is a time-boxed run
//! (`MAILTLS_BENCH_SECS`, default 2 s) over 1,000 remembered hosts:
//!
//! * `entry` — look-ups of random hosts (what the check and every
//!   delivery ask first);
//! * `record` — observations of random hosts at their remembered level
//!   (a delivery's write; no alert);
//! * `record, one host` — every writer on the same host (the ratchet's
//!   row lock, or SQLite's write lock, serialises them);
//!
//! each by one task, and by 16 tasks at once (a busy node).

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mailtls_core::TlsLevel;
use mailtls_core::memory::{MemoryKey, Observation};
use mailtls_store::{SqlStore, TlsMemory};
use sqlx::{Connection as _, Executor as _};

const HOSTS: u64 = 1000;
const TASKS: usize = 16;

fn host(i: u64) -> MemoryKey {
    MemoryKey::host(&format!("mx{i}.example.net"))
}

fn tls_at(at: i64) -> Observation {
    Observation {
        at,
        level: TlsLevel::Tls,
        protocol: Some("TLSv1.3".into()),
        cipher: Some("TLS_AES_256_GCM_SHA384".into()),
        cert_sha256: Some(format!("{:064x}", 1)),
        failure: None,
    }
}

#[derive(Clone, Copy)]
enum Op {
    Entry,
    Record,
    RecordOneHost,
}

/// Operations per second of `op` by `tasks` tasks for `secs`.
async fn measure(store: &SqlStore, op: Op, tasks: usize, secs: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let done = done.clone();
        handles.push(tokio::spawn(async move {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (t as u64);
            while start.elapsed() < secs {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let i = (x >> 33) % HOSTS;
                let n = done.fetch_add(1, Ordering::Relaxed) as i64;
                match op {
                    Op::Entry => {
                        store.entry(&host(i)).await.unwrap().unwrap();
                    }
                    Op::Record => {
                        assert!(
                            store
                                .record(&host(i), &tls_at(10 + n))
                                .await
                                .unwrap()
                                .is_none()
                        );
                    }
                    Op::RecordOneHost => {
                        assert!(
                            store
                                .record(&host(0), &tls_at(10 + n))
                                .await
                                .unwrap()
                                .is_none()
                        );
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn run(name: &str, store: &SqlStore, secs: Duration) {
    for i in 0..HOSTS {
        store.record(&host(i), &tls_at(1)).await.unwrap();
    }
    let mut row = format!("| {name:<10} |");
    for (op, tasks) in [
        (Op::Entry, 1),
        (Op::Entry, TASKS),
        (Op::Record, 1),
        (Op::Record, TASKS),
        (Op::RecordOneHost, TASKS),
    ] {
        let rate = measure(store, op, tasks, secs).await;
        row.push_str(&format!(" {rate:>9.0} |"));
    }
    println!("{row}");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs = Duration::from_secs_f64(
        std::env::var("MAILTLS_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    println!(
        "TLS memory, operations per second ({} s each, {HOSTS} hosts, {} cores)",
        secs.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| backend    | entry ×1  | entry ×{TASKS} | record ×1 | record ×{TASKS} | record 1 host ×{TASKS} |"
    );
    println!("|------------|-----------|-----------|-----------|-----------|-----------|");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqlStore::open_sqlite(&dir.path().join("bench.sqlite"))
        .await
        .unwrap();
    run("SQLite", &sqlite, secs).await;
    sqlite.close().await;

    match std::env::var("MAILTLS_TEST_POSTGRES_URL") {
        Ok(server) if !server.is_empty() => {
            let name = format!("mailtls_bench_{}", std::process::id());
            let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .unwrap();
            let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
            let store = SqlStore::open(&format!("{base}/{name}")).await.unwrap();
            run("PostgreSQL", &store, secs).await;
            store.close().await;
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE {name} WITH (FORCE)"
                )))
                .await
                .unwrap();
        }
        _ => println!("SKIPPED (PostgreSQL): MAILTLS_TEST_POSTGRES_URL is not set"),
    }
}

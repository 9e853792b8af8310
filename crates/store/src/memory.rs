//! The TLS memory on disk (SPEC §3): one row per MX host and per recipient
//! domain, the alerts raised when an observation falls below the best level
//! seen, and the audit log of operator resets.
//!
//! The rule is `mailtls_core::memory::remember`; this module only applies it
//! atomically. Read, ratchet and write happen in one write transaction that
//! holds the key's row: on SQLite the database's write lock
//! (`BEGIN IMMEDIATE`), on PostgreSQL the row lock of `SELECT … FOR UPDATE`
//! (a key seen for the first time is created with `INSERT … ON CONFLICT DO
//! NOTHING`, which waits for a concurrent creator and then yields to it).
//! So two deliveries — on one node or on two nodes of a fleet — recording
//! the same host at once cannot lose the higher level, and an alert is
//! raised exactly when the ratchet, applied in some serial order, says so.
//! The upsert also refuses to lower `best_level` on its own, as a second
//! line of defence.
//!
//! Alert and audit ids are `MAX(id) + 1` within that transaction; on
//! PostgreSQL writers of one series take turns for it (an advisory lock,
//! see `SqlStore::next_id`), so ids are unique and increase in the order
//! the alerts were committed. A transaction that loses a race anyway
//! (a deadlock or serialization failure the server reports, an entry
//! forgotten under its feet) is run again ([`SqlStore::retrying`]).

use std::future::Future;

use mailtls_core::TlsLevel;
use mailtls_core::memory::{Alert, MemoryEntry, MemoryKey, Observation, remember};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use crate::error::{Result, StoreError};
use crate::sql::{Backend, SqlStore, unix_now};

/// The TLS memory.
pub trait TlsMemory {
    /// Applies an observation to the key's entry (creating it) by the
    /// ratchet rule, atomically per key. A drop below the best level seen is
    /// stored as an alert and returned.
    fn record(
        &self,
        key: &MemoryKey,
        obs: &Observation,
    ) -> impl Future<Output = Result<Option<Alert>>> + Send;

    /// The entry for a key, if anything was ever recorded (and not forgotten).
    fn entry(&self, key: &MemoryKey) -> impl Future<Output = Result<Option<MemoryEntry>>> + Send;

    /// The latest `limit` alerts, newest first.
    fn alerts(&self, limit: usize) -> impl Future<Output = Result<Vec<StoredAlert>>> + Send;

    /// An operator's reset: deletes the entry and logs the decision with its
    /// reason (logged even when there was no entry). Whether an entry existed.
    fn forget(&self, key: &MemoryKey, reason: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// An alert as stored, with its id (increasing in the order raised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAlert {
    /// Row id; a later alert has a larger one.
    pub id: i64,
    /// The alert.
    pub alert: Alert,
}

/// One operator reset from the audit log ([`SqlStore::forget_log`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRecord {
    /// Row id, increasing.
    pub id: i64,
    /// What was forgotten.
    pub key: MemoryKey,
    /// The operator's reason.
    pub reason: String,
    /// When (Unix seconds).
    pub at: i64,
    /// The best level the entry had; `None` when there was no entry.
    pub best_level: Option<TlsLevel>,
}

/// Keys are compared in their normal form whoever built them.
fn normal(key: &MemoryKey) -> MemoryKey {
    match key {
        MemoryKey::Host(n) => MemoryKey::host(n),
        MemoryKey::Domain(n) => MemoryKey::domain(n),
    }
}

/// A level's rank in the database: order means strength.
pub(crate) fn rank(level: TlsLevel) -> i64 {
    match level {
        TlsLevel::None => 0,
        TlsLevel::Tls => 1,
        TlsLevel::Dane => 2,
    }
}

pub(crate) fn level(rank: i64) -> Result<TlsLevel> {
    Ok(match rank {
        0 => TlsLevel::None,
        1 => TlsLevel::Tls,
        2 => TlsLevel::Dane,
        other => return Err(StoreError::Corrupt(format!("TLS level rank {other}"))),
    })
}

pub(crate) fn key_of(kind: &str, name: String) -> Result<MemoryKey> {
    match kind {
        "host" => Ok(MemoryKey::Host(name)),
        "domain" => Ok(MemoryKey::Domain(name)),
        other => Err(StoreError::Corrupt(format!("memory key kind '{other}'"))),
    }
}

const SELECT_ENTRY: &str = "SELECT first_tls_at, last_tls_at, last_seen_at, best_level, \
     last_level, protocol, cipher, cert_sha256, last_failure, last_failure_at \
     FROM tls_memory WHERE kind = $1 AND name = $2";

pub(crate) fn entry_from_row(row: &AnyRow, key: MemoryKey) -> Result<MemoryEntry> {
    Ok(MemoryEntry {
        key,
        first_tls_at: row.try_get("first_tls_at")?,
        last_tls_at: row.try_get("last_tls_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        best_level: level(row.try_get("best_level")?)?,
        last_level: level(row.try_get("last_level")?)?,
        protocol: row.try_get("protocol")?,
        cipher: row.try_get("cipher")?,
        cert_sha256: row.try_get("cert_sha256")?,
        last_failure: row.try_get("last_failure")?,
        last_failure_at: row.try_get("last_failure_at")?,
    })
}

/// Writes an entry over the key's row, or creates it.
const UPSERT_ENTRY: &str = "INSERT INTO tls_memory (kind, name, first_tls_at, last_tls_at, \
       last_seen_at, best_level, last_level, protocol, cipher, cert_sha256, last_failure, \
       last_failure_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (kind, name) DO UPDATE SET \
       first_tls_at = excluded.first_tls_at, \
       last_tls_at = excluded.last_tls_at, \
       last_seen_at = excluded.last_seen_at, \
       best_level = CASE WHEN excluded.best_level > tls_memory.best_level \
         THEN excluded.best_level ELSE tls_memory.best_level END, \
       last_level = excluded.last_level, \
       protocol = excluded.protocol, \
       cipher = excluded.cipher, \
       cert_sha256 = excluded.cert_sha256, \
       last_failure = excluded.last_failure, \
       last_failure_at = excluded.last_failure_at";

/// Creates the key's row unless it exists (or is being created).
const INSERT_ENTRY_IF_ABSENT: &str = "INSERT INTO tls_memory (kind, name, first_tls_at, \
       last_tls_at, last_seen_at, best_level, last_level, protocol, cipher, cert_sha256, \
       last_failure, last_failure_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (kind, name) DO NOTHING";

/// Runs [`UPSERT_ENTRY`] or [`INSERT_ENTRY_IF_ABSENT`] for `entry`; how
/// many rows it wrote.
async fn write_entry(
    tx: &mut Transaction<'static, Any>,
    statement: &'static str,
    entry: &MemoryEntry,
) -> Result<u64> {
    let written = sqlx::query(statement)
        .bind(entry.key.kind())
        .bind(entry.key.name())
        .bind(entry.first_tls_at)
        .bind(entry.last_tls_at)
        .bind(entry.last_seen_at)
        .bind(rank(entry.best_level))
        .bind(rank(entry.last_level))
        .bind(entry.protocol.as_deref())
        .bind(entry.cipher.as_deref())
        .bind(entry.cert_sha256.as_deref())
        .bind(entry.last_failure.as_deref())
        .bind(entry.last_failure_at)
        .execute(&mut **tx)
        .await?;
    Ok(written.rows_affected())
}

/// The tables whose ids the store chooses itself.
#[derive(Debug, Clone, Copy)]
enum IdSeries {
    Alerts,
    Forgotten,
}

impl SqlStore {
    /// The next id of `series`, for a row inserted in the same write
    /// transaction: `MAX(id) + 1`. On SQLite the write transaction excludes
    /// every other writer. On PostgreSQL a transaction-scoped advisory lock
    /// per series makes writers of that series take turns from here to
    /// their commit, so ids are unique, without gaps and increasing in
    /// commit order, and no writer fails on a taken id. (The lock is taken
    /// after the memory row's: every writer locks in that order, so there
    /// is no deadlock.)
    async fn next_id(&self, tx: &mut Transaction<'static, Any>, series: IdSeries) -> Result<i64> {
        let (table, lock_key): (&str, i64) = match series {
            // Arbitrary, fixed keys in PostgreSQL's one advisory-lock space.
            IdSeries::Alerts => ("tls_alerts", 0x6d61_696c_746c_7301),
            IdSeries::Forgotten => ("tls_memory_forgotten", 0x6d61_696c_746c_7302),
        };
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
                .bind(lock_key)
                .execute(&mut **tx)
                .await?;
        }
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"
        )))
        .fetch_one(&mut **tx)
        .await?)
    }

    /// The key's entry, its row locked for the rest of the transaction
    /// (see [`SqlStore::for_update`]).
    async fn locked_entry(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &MemoryKey,
    ) -> Result<Option<MemoryEntry>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_ENTRY}{}",
            self.for_update()
        )))
        .bind(key.kind())
        .bind(key.name())
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| entry_from_row(&row, key.clone()))
        .transpose()
    }

    /// One attempt of [`TlsMemory::record`]; `key` is normalised.
    async fn record_once(&self, key: &MemoryKey, obs: &Observation) -> Result<Option<Alert>> {
        let mut tx = self.write_tx().await?;
        let mut existing = self.locked_entry(&mut tx, key).await?;
        if existing.is_none() {
            // First sight of the key. Created from this observation alone
            // (no alert: nothing to drop from) unless another writer
            // created it meanwhile; then its row is locked and ratcheted.
            let (entry, alert) = remember(None, key, obs);
            if write_entry(&mut tx, INSERT_ENTRY_IF_ABSENT, &entry).await? == 1 {
                tx.commit().await?;
                return Ok(alert);
            }
            existing = self.locked_entry(&mut tx, key).await?;
            if existing.is_none() {
                // Created and forgotten again between the two statements.
                return Err(StoreError::Contention("TLS memory record"));
            }
        }
        let (entry, alert) = remember(existing.as_ref(), key, obs);
        write_entry(&mut tx, UPSERT_ENTRY, &entry).await?;
        if let Some(alert) = &alert {
            let id = self.next_id(&mut tx, IdSeries::Alerts).await?;
            sqlx::query(
                "INSERT INTO tls_alerts (id, kind, name, at, best_level, observed, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(key.kind())
            .bind(key.name())
            .bind(alert.at)
            .bind(rank(alert.best_level))
            .bind(rank(alert.observed))
            .bind(&alert.detail)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(alert)
    }

    /// One attempt of [`TlsMemory::forget`]: the entry's best level, if
    /// there was an entry.
    async fn forget_once(&self, key: &MemoryKey, reason: &str) -> Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let best: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT best_level FROM tls_memory WHERE kind = $1 AND name = $2{}",
            self.for_update()
        )))
        .bind(key.kind())
        .bind(key.name())
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM tls_memory WHERE kind = $1 AND name = $2")
            .bind(key.kind())
            .bind(key.name())
            .execute(&mut *tx)
            .await?;
        let id = self.next_id(&mut tx, IdSeries::Forgotten).await?;
        sqlx::query(
            "INSERT INTO tls_memory_forgotten (id, kind, name, reason, at, best_level) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(key.kind())
        .bind(key.name())
        .bind(reason)
        .bind(unix_now())
        .bind(best)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(best)
    }
}

impl TlsMemory for SqlStore {
    async fn record(&self, key: &MemoryKey, obs: &Observation) -> Result<Option<Alert>> {
        let key = normal(key);
        let alert = self
            .retrying("TLS memory record", || self.record_once(&key, obs))
            .await?;
        if let Some(alert) = &alert {
            tracing::warn!(key = %key, alert = %alert.detail, "TLS memory alert");
        }
        Ok(alert)
    }

    async fn entry(&self, key: &MemoryKey) -> Result<Option<MemoryEntry>> {
        let key = normal(key);
        sqlx::query(SELECT_ENTRY)
            .bind(key.kind())
            .bind(key.name())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| entry_from_row(&row, key.clone()))
            .transpose()
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<StoredAlert>> {
        let rows = sqlx::query(
            "SELECT id, kind, name, at, best_level, observed, detail FROM tls_alerts \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredAlert {
                    id: row.try_get("id")?,
                    alert: Alert {
                        key: key_of(row.try_get("kind")?, row.try_get("name")?)?,
                        at: row.try_get("at")?,
                        best_level: level(row.try_get("best_level")?)?,
                        observed: level(row.try_get("observed")?)?,
                        detail: row.try_get("detail")?,
                    },
                })
            })
            .collect()
    }

    async fn forget(&self, key: &MemoryKey, reason: &str) -> Result<bool> {
        let key = normal(key);
        let best = self
            .retrying("TLS memory forget", || self.forget_once(&key, reason))
            .await?;
        tracing::info!(key = %key, reason, existed = best.is_some(), "TLS memory entry forgotten");
        Ok(best.is_some())
    }
}

impl SqlStore {
    /// The latest `limit` operator resets ([`TlsMemory::forget`]), newest
    /// first.
    pub async fn forget_log(&self, limit: usize) -> Result<Vec<ForgetRecord>> {
        let rows = sqlx::query(
            "SELECT id, kind, name, reason, at, best_level FROM tls_memory_forgotten \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(forget_record_from_row).collect()
    }
}

/// One row of `tls_memory_forgotten`.
pub(crate) fn forget_record_from_row(row: &AnyRow) -> Result<ForgetRecord> {
    Ok(ForgetRecord {
        id: row.try_get("id")?,
        key: key_of(row.try_get("kind")?, row.try_get("name")?)?,
        reason: row.try_get("reason")?,
        at: row.try_get("at")?,
        best_level: row
            .try_get::<Option<i64>, _>("best_level")?
            .map(level)
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_round_trip_in_order() {
        for l in [TlsLevel::None, TlsLevel::Tls, TlsLevel::Dane] {
            assert_eq!(level(rank(l)).ok(), Some(l));
        }
        assert!(rank(TlsLevel::None) < rank(TlsLevel::Tls));
        assert!(rank(TlsLevel::Tls) < rank(TlsLevel::Dane));
        assert!(level(3).is_err());
    }

    #[test]
    fn keys_are_normalised() {
        assert_eq!(
            normal(&MemoryKey::Host("MX.Example.".into())),
            MemoryKey::Host("mx.example".into())
        );
    }
}

//! The TLS memory on disk (SPEC §3): one row per MX host and per recipient
//! domain, the alerts raised when an observation falls below the best level
//! seen, and the audit log of operator resets.
//!
//! The rule is `mailtls_core::memory::remember`; this module only applies it
//! atomically. Read, ratchet and write happen in one write transaction, so
//! two deliveries recording the same host at once cannot lose the higher
//! level; the upsert also refuses to lower `best_level` on its own, as a
//! second line of defence.

use std::future::Future;

use mailtls_core::TlsLevel;
use mailtls_core::memory::{Alert, MemoryEntry, MemoryKey, Observation, remember};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use crate::error::{Result, StoreError};
use crate::sql::{SqlStore, unix_now};

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
fn rank(level: TlsLevel) -> i64 {
    match level {
        TlsLevel::None => 0,
        TlsLevel::Tls => 1,
        TlsLevel::Dane => 2,
    }
}

fn level(rank: i64) -> Result<TlsLevel> {
    Ok(match rank {
        0 => TlsLevel::None,
        1 => TlsLevel::Tls,
        2 => TlsLevel::Dane,
        other => return Err(StoreError::Corrupt(format!("TLS level rank {other}"))),
    })
}

fn key_of(kind: &str, name: String) -> Result<MemoryKey> {
    match kind {
        "host" => Ok(MemoryKey::Host(name)),
        "domain" => Ok(MemoryKey::Domain(name)),
        other => Err(StoreError::Corrupt(format!("memory key kind '{other}'"))),
    }
}

const SELECT_ENTRY: &str = "SELECT first_tls_at, last_tls_at, last_seen_at, best_level, \
     last_level, protocol, cipher, cert_sha256, last_failure, last_failure_at \
     FROM tls_memory WHERE kind = $1 AND name = $2";

fn entry_from_row(row: &SqliteRow, key: MemoryKey) -> Result<MemoryEntry> {
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

impl TlsMemory for SqlStore {
    async fn record(&self, key: &MemoryKey, obs: &Observation) -> Result<Option<Alert>> {
        let key = normal(key);
        let mut tx = self.write_tx().await?;
        let existing = sqlx::query(SELECT_ENTRY)
            .bind(key.kind())
            .bind(key.name())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| entry_from_row(&row, key.clone()))
            .transpose()?;
        let (entry, alert) = remember(existing.as_ref(), &key, obs);
        sqlx::query(
            "INSERT INTO tls_memory (kind, name, first_tls_at, last_tls_at, last_seen_at, \
               best_level, last_level, protocol, cipher, cert_sha256, last_failure, last_failure_at) \
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
               last_failure_at = excluded.last_failure_at",
        )
        .bind(key.kind())
        .bind(key.name())
        .bind(entry.first_tls_at)
        .bind(entry.last_tls_at)
        .bind(entry.last_seen_at)
        .bind(rank(entry.best_level))
        .bind(rank(entry.last_level))
        .bind(entry.protocol)
        .bind(entry.cipher)
        .bind(entry.cert_sha256)
        .bind(entry.last_failure)
        .bind(entry.last_failure_at)
        .execute(&mut *tx)
        .await?;
        if let Some(alert) = &alert {
            let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM tls_alerts")
                .fetch_one(&mut *tx)
                .await?;
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
            tracing::warn!(key = %key, alert = %alert.detail, "TLS memory alert");
        }
        tx.commit().await?;
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
        let mut tx = self.write_tx().await?;
        let best: Option<i64> =
            sqlx::query_scalar("SELECT best_level FROM tls_memory WHERE kind = $1 AND name = $2")
                .bind(key.kind())
                .bind(key.name())
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM tls_memory WHERE kind = $1 AND name = $2")
            .bind(key.kind())
            .bind(key.name())
            .execute(&mut *tx)
            .await?;
        let id: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM tls_memory_forgotten")
                .fetch_one(&mut *tx)
                .await?;
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
        rows.iter()
            .map(|row| {
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
            })
            .collect()
    }
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

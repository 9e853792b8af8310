//! Moving a store between databases: `mailtls store export` and `import`
//! (issue #6), so that an operator can grow from one SQLite node to a
//! PostgreSQL fleet, or back, without losing the TLS memory.
//!
//! The dump is JSON lines, one record per line, each with a `"type"`:
//!
//! 1. `header` — `"format": "mailtls-store-dump"`, `"version": 1`, when,
//!    and from which backend;
//! 2. `user` (with its argon2id PHC hash, never a password), `settings`,
//!    `memory`, `alert`, `forgotten` (the forget audit), `message` and
//!    `recipient` (queue metadata), in that order, each table in key order;
//! 3. `end` — how many records came before it, so that a truncated file
//!    is refused rather than half imported.
//!
//! Values are the stored ones (ids, times, ranks as level names), so a
//! dump imported and exported again is the same file but for its header.
//! Leases are not exported: they belong to a running delivery on the old
//! database. Message bodies are not in the store: they stay in the spool
//! of the node that accepted them (`<data_dir>/spool/<id>.eml`), which
//! must deliver them or have them copied along.
//!
//! Export reads one snapshot; import writes one transaction, into an empty
//! store only (merging two memories is a decision for an operator, not for
//! an import), and is all or nothing.

use std::io::{BufRead, Write};

use futures_util::TryStreamExt as _;
use mailtls_core::TlsLevel;
use mailtls_core::memory::{Alert, MemoryEntry, MemoryKey};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::error::{Result, StoreError};
use crate::memory::{
    ForgetRecord, StoredAlert, entry_from_row, forget_record_from_row, key_of, level, rank,
};
use crate::sql::{SqlStore, unix_now};

/// The `format` of a dump's header.
pub const DUMP_FORMAT: &str = "mailtls-store-dump";
/// The dump version this build writes and reads.
pub const DUMP_VERSION: u32 = 1;

/// How many rows of each kind a dump held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DumpSummary {
    /// Accounts.
    pub users: u64,
    /// Users' settings rows (Encrypted Sending, the alias).
    pub settings: u64,
    /// TLS memory entries.
    pub memory: u64,
    /// Stored alerts.
    pub alerts: u64,
    /// Forget audit records.
    pub forgotten: u64,
    /// Queued messages (metadata).
    pub messages: u64,
    /// Their recipients.
    pub recipients: u64,
}

impl DumpSummary {
    fn total(&self) -> u64 {
        self.users
            + self.settings
            + self.memory
            + self.alerts
            + self.forgotten
            + self.messages
            + self.recipients
    }
}

impl std::fmt::Display for DumpSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} users, {} settings, {} TLS memory entries, {} alerts, {} forget records, \
             {} queued messages with {} recipients",
            self.users,
            self.settings,
            self.memory,
            self.alerts,
            self.forgotten,
            self.messages,
            self.recipients
        )
    }
}

/// One line of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    Header {
        format: String,
        version: u32,
        exported_at: i64,
        backend: String,
    },
    User {
        address: String,
        password_hash: String,
        created_at: i64,
    },
    Settings {
        address: String,
        encrypted_sending: String,
        min_level: Option<String>,
        min_tls: Option<String>,
        inbound_min_tls: Option<String>,
        alias_local: Option<String>,
        updated_at: i64,
    },
    Memory(MemoryEntry),
    Alert(StoredAlert),
    Forgotten(ForgetRecord),
    Message {
        id: String,
        sender: String,
        size: i64,
        received_at: i64,
        auth_user: Option<String>,
        client: String,
        require_tls: bool,
        sender_min_level: Option<String>,
        sender_min_tls: Option<String>,
        /// The node whose spool holds the body (absent in older dumps).
        #[serde(default)]
        node: Option<String>,
    },
    Recipient {
        message_id: String,
        position: i64,
        address: String,
        state: String,
        attempts: i64,
        next_attempt_at: i64,
        last_status: Option<String>,
        last_reason: Option<String>,
        last_attempt_at: Option<i64>,
    },
    End {
        records: u64,
    },
}

fn write_record(out: &mut dyn Write, record: &Record) -> Result<()> {
    let io = |e: std::io::Error| StoreError::Dump(format!("cannot write: {e}"));
    serde_json::to_writer(&mut *out, record).map_err(|e| StoreError::Dump(e.to_string()))?;
    out.write_all(b"\n").map_err(io)
}

fn user_record(row: &AnyRow) -> Result<Record> {
    Ok(Record::User {
        address: row.try_get("address")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

fn settings_record(row: &AnyRow) -> Result<Record> {
    Ok(Record::Settings {
        address: row.try_get("address")?,
        encrypted_sending: row.try_get("encrypted_sending")?,
        min_level: row.try_get("min_level")?,
        min_tls: row.try_get("min_tls")?,
        inbound_min_tls: row.try_get("inbound_min_tls")?,
        alias_local: row.try_get("alias_local")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn memory_record(row: &AnyRow) -> Result<Record> {
    let key = key_of(row.try_get("kind")?, row.try_get("name")?)?;
    Ok(Record::Memory(entry_from_row(row, key)?))
}

fn alert_record(row: &AnyRow) -> Result<Record> {
    Ok(Record::Alert(StoredAlert {
        id: row.try_get("id")?,
        alert: Alert {
            key: key_of(row.try_get("kind")?, row.try_get("name")?)?,
            at: row.try_get("at")?,
            best_level: level(row.try_get("best_level")?)?,
            observed: level(row.try_get("observed")?)?,
            detail: row.try_get("detail")?,
        },
    }))
}

fn forgotten_record(row: &AnyRow) -> Result<Record> {
    forget_record_from_row(row).map(Record::Forgotten)
}

fn message_record(row: &AnyRow) -> Result<Record> {
    Ok(Record::Message {
        id: row.try_get("id")?,
        sender: row.try_get("sender")?,
        size: row.try_get("size")?,
        received_at: row.try_get("received_at")?,
        auth_user: row.try_get("auth_user")?,
        client: row.try_get("client")?,
        require_tls: row.try_get::<i64, _>("require_tls")? != 0,
        sender_min_level: row.try_get("sender_min_level")?,
        sender_min_tls: row.try_get("sender_min_tls")?,
        node: row.try_get("node")?,
    })
}

fn recipient_record(row: &AnyRow) -> Result<Record> {
    Ok(Record::Recipient {
        message_id: row.try_get("message_id")?,
        position: row.try_get("position")?,
        address: row.try_get("address")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: row.try_get("last_status")?,
        last_reason: row.try_get("last_reason")?,
        last_attempt_at: row.try_get("last_attempt_at")?,
    })
}

/// What is exported, in order: the query and how a row becomes a record.
/// Parents before children (users before settings, messages before
/// recipients), so that an import satisfies the foreign keys as it goes.
type ToRecord = fn(&AnyRow) -> Result<Record>;
const TABLES: [(&str, ToRecord); 7] = [
    (
        "SELECT address, password_hash, created_at FROM users ORDER BY address",
        user_record,
    ),
    (
        "SELECT address, encrypted_sending, min_level, min_tls, inbound_min_tls, alias_local, \
         updated_at FROM user_settings ORDER BY address",
        settings_record,
    ),
    (
        "SELECT kind, name, first_tls_at, last_tls_at, last_seen_at, best_level, last_level, \
         protocol, cipher, cert_sha256, last_failure, last_failure_at FROM tls_memory \
         ORDER BY kind, name",
        memory_record,
    ),
    (
        "SELECT id, kind, name, at, best_level, observed, detail FROM tls_alerts ORDER BY id",
        alert_record,
    ),
    (
        "SELECT id, kind, name, reason, at, best_level FROM tls_memory_forgotten ORDER BY id",
        forgotten_record,
    ),
    (
        "SELECT id, sender, size, received_at, auth_user, client, \
         CASE WHEN require_tls THEN 1 ELSE 0 END AS require_tls, sender_min_level, \
         sender_min_tls, node FROM queue_messages ORDER BY id",
        message_record,
    ),
    (
        "SELECT message_id, position, address, state, attempts, next_attempt_at, last_status, \
         last_reason, last_attempt_at FROM queue_recipients ORDER BY message_id, position",
        recipient_record,
    ),
];

impl SqlStore {
    /// Writes the whole store as a dump (see the module docs) to `out`,
    /// from one consistent snapshot. `out` is written synchronously: meant
    /// for the command line, not for a server's runtime.
    pub async fn export(&self, out: &mut (dyn Write + Send)) -> Result<DumpSummary> {
        let mut summary = DumpSummary::default();
        write_record(
            out,
            &Record::Header {
                format: DUMP_FORMAT.to_owned(),
                version: DUMP_VERSION,
                exported_at: unix_now(),
                backend: self.backend().as_str().to_owned(),
            },
        )?;
        let mut tx = self.read_tx().await?;
        for (query, to_record) in TABLES {
            let mut rows = sqlx::query(query).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let record = to_record(&row)?;
                count(&mut summary, &record);
                write_record(out, &record)?;
            }
        }
        tx.commit().await?;
        write_record(
            out,
            &Record::End {
                records: summary.total(),
            },
        )?;
        out.flush()
            .map_err(|e| StoreError::Dump(format!("cannot write: {e}")))?;
        Ok(summary)
    }

    /// Reads a dump made by [`SqlStore::export`] (of this or the other
    /// backend) into this store, which must be empty, in one transaction:
    /// a dump that is not version 1, malformed or truncated (no `end`
    /// record, or a wrong count) changes nothing.
    pub async fn import(&self, input: &mut (dyn BufRead + Send)) -> Result<DumpSummary> {
        let mut tx = self.write_tx().await?;
        let mut existing = Vec::new();
        for table in [
            "users",
            "user_settings",
            "tls_memory",
            "tls_alerts",
            "tls_memory_forgotten",
            "queue_messages",
        ] {
            let rows: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut *tx)
                    .await?;
            if rows > 0 {
                existing.push(format!("{rows} in {table}"));
            }
        }
        if !existing.is_empty() {
            return Err(StoreError::Dump(format!(
                "the target store is not empty ({}); import only into a new store",
                existing.join(", ")
            )));
        }
        let mut summary = DumpSummary::default();
        let mut line = String::new();
        let mut number = 0_u64;
        let mut ended = false;
        loop {
            line.clear();
            let read = input
                .read_line(&mut line)
                .map_err(|e| StoreError::Dump(format!("cannot read line {}: {e}", number + 1)))?;
            if read == 0 {
                break;
            }
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            if ended {
                return Err(StoreError::Dump(format!(
                    "line {number}: data after the end record"
                )));
            }
            let record: Record = serde_json::from_str(&line)
                .map_err(|e| StoreError::Dump(format!("line {number}: {e}")))?;
            match (&record, number) {
                (
                    Record::Header {
                        format, version, ..
                    },
                    1,
                ) => {
                    if format != DUMP_FORMAT || *version != DUMP_VERSION {
                        return Err(StoreError::Dump(format!(
                            "{format} version {version}: this mailtls reads {DUMP_FORMAT} \
                             version {DUMP_VERSION}"
                        )));
                    }
                    continue;
                }
                (_, 1) => {
                    return Err(StoreError::Dump(format!(
                        "line 1: not a {DUMP_FORMAT} header"
                    )));
                }
                (Record::Header { .. }, _) => {
                    return Err(StoreError::Dump(format!("line {number}: a second header")));
                }
                (Record::End { records }, _) => {
                    if *records != summary.total() {
                        return Err(StoreError::Dump(format!(
                            "the end record counts {records} records, the file has {}",
                            summary.total()
                        )));
                    }
                    ended = true;
                    continue;
                }
                _ => {}
            }
            insert(&mut tx, &record)
                .await
                .map_err(|e| StoreError::Dump(format!("line {number}: {e}")))?;
            count(&mut summary, &record);
        }
        if !ended {
            return Err(StoreError::Dump(
                "no end record: the dump is truncated; nothing imported".to_owned(),
            ));
        }
        tx.commit().await?;
        Ok(summary)
    }
}

fn count(summary: &mut DumpSummary, record: &Record) {
    let counter = match record {
        Record::User { .. } => &mut summary.users,
        Record::Settings { .. } => &mut summary.settings,
        Record::Memory(_) => &mut summary.memory,
        Record::Alert(_) => &mut summary.alerts,
        Record::Forgotten(_) => &mut summary.forgotten,
        Record::Message { .. } => &mut summary.messages,
        Record::Recipient { .. } => &mut summary.recipients,
        Record::Header { .. } | Record::End { .. } => return,
    };
    *counter += 1;
}

fn key_parts(key: &MemoryKey) -> (&'static str, &str) {
    (key.kind(), key.name())
}

fn rank_of(level: Option<TlsLevel>) -> Option<i64> {
    level.map(rank)
}

/// Inserts one record's row.
async fn insert(tx: &mut sqlx::Transaction<'static, sqlx::Any>, record: &Record) -> Result<()> {
    let query = match record {
        Record::User {
            address,
            password_hash,
            created_at,
        } => sqlx::query(
            "INSERT INTO users (address, password_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(address)
        .bind(password_hash)
        .bind(*created_at),
        Record::Settings {
            address,
            encrypted_sending,
            min_level,
            min_tls,
            inbound_min_tls,
            alias_local,
            updated_at,
        } => sqlx::query(
            "INSERT INTO user_settings (address, encrypted_sending, min_level, min_tls, \
               inbound_min_tls, alias_local, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(address)
        .bind(encrypted_sending)
        .bind(min_level)
        .bind(min_tls)
        .bind(inbound_min_tls)
        .bind(alias_local)
        .bind(*updated_at),
        Record::Memory(e) => {
            let (kind, name) = key_parts(&e.key);
            sqlx::query(
                "INSERT INTO tls_memory (kind, name, first_tls_at, last_tls_at, last_seen_at, \
                   best_level, last_level, protocol, cipher, cert_sha256, last_failure, \
                   last_failure_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(kind)
            .bind(name)
            .bind(e.first_tls_at)
            .bind(e.last_tls_at)
            .bind(e.last_seen_at)
            .bind(rank(e.best_level))
            .bind(rank(e.last_level))
            .bind(&e.protocol)
            .bind(&e.cipher)
            .bind(&e.cert_sha256)
            .bind(&e.last_failure)
            .bind(e.last_failure_at)
        }
        Record::Alert(a) => {
            let (kind, name) = key_parts(&a.alert.key);
            sqlx::query(
                "INSERT INTO tls_alerts (id, kind, name, at, best_level, observed, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(a.id)
            .bind(kind)
            .bind(name)
            .bind(a.alert.at)
            .bind(rank(a.alert.best_level))
            .bind(rank(a.alert.observed))
            .bind(&a.alert.detail)
        }
        Record::Forgotten(f) => {
            let (kind, name) = key_parts(&f.key);
            sqlx::query(
                "INSERT INTO tls_memory_forgotten (id, kind, name, reason, at, best_level) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(f.id)
            .bind(kind)
            .bind(name)
            .bind(&f.reason)
            .bind(f.at)
            .bind(rank_of(f.best_level))
        }
        Record::Message {
            id,
            sender,
            size,
            received_at,
            auth_user,
            client,
            require_tls,
            sender_min_level,
            sender_min_tls,
            node,
        } => sqlx::query(
            "INSERT INTO queue_messages (id, sender, size, received_at, auth_user, client, \
               require_tls, sender_min_level, sender_min_tls, lease_until, node) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)",
        )
        .bind(id)
        .bind(sender)
        .bind(*size)
        .bind(*received_at)
        .bind(auth_user)
        .bind(client)
        .bind(*require_tls)
        .bind(sender_min_level)
        .bind(sender_min_tls)
        .bind(node),
        Record::Recipient {
            message_id,
            position,
            address,
            state,
            attempts,
            next_attempt_at,
            last_status,
            last_reason,
            last_attempt_at,
        } => sqlx::query(
            "INSERT INTO queue_recipients (message_id, position, address, state, attempts, \
               next_attempt_at, last_status, last_reason, last_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(message_id)
        .bind(*position)
        .bind(address)
        .bind(state)
        .bind(*attempts)
        .bind(*next_attempt_at)
        .bind(last_status)
        .bind(last_reason)
        .bind(*last_attempt_at),
        Record::Header { .. } | Record::End { .. } => return Ok(()),
    };
    query.execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_tagged_json_lines() {
        let line = serde_json::to_string(&Record::End { records: 3 }).expect("json");
        assert_eq!(line, r#"{"type":"end","records":3}"#);
        let alert = Record::Alert(StoredAlert {
            id: 7,
            alert: Alert {
                key: MemoryKey::host("mx.example"),
                at: 5,
                best_level: TlsLevel::Tls,
                observed: TlsLevel::None,
                detail: "d".into(),
            },
        });
        let json = serde_json::to_string(&alert).expect("json");
        assert!(json.starts_with(r#"{"type":"alert","id":7,"#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).expect("parse"), alert);
        assert!(serde_json::from_str::<Record>(r#"{"type":"end","records":1,"x":2}"#).is_err());
    }
}

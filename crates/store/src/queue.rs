//! Queue metadata (issue #3; SPEC §6: nothing accepted is lost).
//!
//! The relay writes a message's body to its spool, then [`Queue::enqueue`]s
//! the envelope here, and only then answers `250` to DATA; the commit is
//! durable (`synchronous = FULL`) before that reply. Each recipient has its
//! own state: pending until delivered or failed for good, with its attempts,
//! next attempt time and the last reply.
//!
//! A delivery attempt takes a lease on the message ([`Queue::claim_due`]):
//! while the lease lives no other runner claims it; a runner that dies
//! leaves a lease that simply expires, so the message is retried (delivery
//! is at least once). On a single node (SQLite), [`Queue::reset_leases`] at
//! start frees what the previous process held; on PostgreSQL, shared by a
//! fleet, it leaves live leases alone. A message whose recipients are all
//! final stays as history and is never claimed again.
//!
//! On PostgreSQL several nodes claim at once: `FOR UPDATE SKIP LOCKED`
//! hands each message to one of them. Lease times are the callers' `now`:
//! the nodes' clocks must agree to well within a lease (NTP).

use std::collections::HashSet;
use std::future::Future;

use mailtls_core::SmtpStatus;
use mailtls_core::sending::{MinLevel, SenderRequirement, TlsVersion};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use crate::error::{Result, StoreError};
use crate::sql::{Backend, SqlStore, unix_now};
use crate::users::is_unique_violation;

/// The queue's metadata.
pub trait Queue {
    /// Queues a message with all its recipients pending and due at
    /// `received_at`, in one transaction. Duplicate recipients are kept
    /// once. [`StoreError::AlreadyExists`] if the id is taken.
    fn enqueue(&self, msg: &NewMessage) -> impl Future<Output = Result<()>> + Send;

    /// Claims up to `limit` messages that have a pending recipient due at
    /// `now` and no live lease, leasing each until `now + lease_secs`.
    /// Returns them with all their recipients, final ones included:
    /// deliver only the pending ones that are due.
    fn claim_due(
        &self,
        now: i64,
        lease_secs: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<QueuedMessage>>> + Send;

    /// Records one attempt's outcome for one pending recipient (attempts +1).
    /// `Deferred` keeps it pending until `next_attempt_at`; `Delivered` and
    /// `Failed` are final, and an outcome for a recipient already final is
    /// ignored. [`StoreError::NotFound`] if there is no such recipient.
    fn record_outcome(
        &self,
        id: &str,
        recipient: &str,
        outcome: &RecipientOutcome,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Gives the lease up after an attempt: only a lease this process holds
    /// (one taken over after it expired is the new owner's).
    fn release(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Every message with its recipients, oldest first (`mailtls queue list`).
    fn list(&self) -> impl Future<Output = Result<Vec<QueuedMessage>>> + Send;

    /// One message with its recipients.
    fn message(&self, id: &str) -> impl Future<Output = Result<Option<QueuedMessage>>> + Send;

    /// Makes the pending recipients due at once. Whether there were any.
    /// A message leased right now stays with its runner until the lease ends.
    fn retry_now(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Removes the message and its recipients (the caller removes the body).
    /// Whether it existed. A runner still holding it gets
    /// [`StoreError::NotFound`] for its outcomes.
    fn delete(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Called by a node at start; how many leases it freed. On SQLite
    /// (one node) it frees every lease: no runner can hold one. On
    /// PostgreSQL, shared by a fleet, it frees leases that have expired by
    /// this node's clock and those on this node's own messages (left from
    /// its previous run: only it delivers them); live leases on other
    /// nodes' messages stay theirs.
    fn reset_leases(&self) -> impl Future<Output = Result<u64>> + Send;

    /// The earliest time a pending recipient is due (`None`: nothing
    /// pending), so that a runner sleeps exactly until then — also after a
    /// restart, and after `mailtls queue retry` from another process.
    fn next_due(&self) -> impl Future<Output = Result<Option<i64>>> + Send;
}

/// A message accepted by the relay, to be queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Queue id, also the spool file's name.
    pub id: String,
    /// Envelope sender (`MAIL FROM`); `""` is the null reverse-path.
    pub sender: String,
    /// Envelope recipients (`RCPT TO`), in order.
    pub recipients: Vec<String>,
    /// Size of the spooled body in bytes.
    pub size: u64,
    /// When the message was accepted (Unix seconds).
    pub received_at: i64,
    /// The authenticated user who submitted it, if any.
    pub auth_user: Option<String>,
    /// The client, for the record (address, HELO name).
    pub client: String,
    /// What the sender's Encrypted Sending requires of every recipient's
    /// provider (SPEC §2 rule 3, §4); `None`: the relay's normal policy.
    pub sender_requirement: Option<SenderRequirement>,
}

/// A queued message and the state of each recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Queue id.
    pub id: String,
    /// Envelope sender; `""` is the null reverse-path.
    pub sender: String,
    /// When accepted (Unix seconds).
    pub received_at: i64,
    /// Body size in bytes.
    pub size: u64,
    /// What the sender requires of every recipient's provider (SPEC §4).
    pub sender_requirement: Option<SenderRequirement>,
    /// Recipients in `RCPT TO` order.
    pub recipients: Vec<QueuedRecipient>,
}

impl QueuedMessage {
    /// The recipients still to deliver that are due at `now`.
    pub fn due(&self, now: i64) -> impl Iterator<Item = &QueuedRecipient> {
        self.recipients
            .iter()
            .filter(move |r| r.state == RecipientState::Pending && r.next_attempt_at <= now)
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    /// The address as given in `RCPT TO`.
    pub address: String,
    /// Where its delivery stands.
    pub state: RecipientState,
    /// Attempts recorded so far.
    pub attempts: u32,
    /// Not to be tried before then (Unix seconds).
    pub next_attempt_at: i64,
    /// The last status, e.g. `451 4.7.5`; none after a delivery.
    pub last_status: Option<String>,
    /// The last reason or, once delivered, the delivery's detail.
    pub last_reason: Option<String>,
}

/// Where a recipient's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    /// Still to deliver (new or deferred).
    Pending,
    /// Delivered: final.
    Delivered,
    /// Failed permanently or expired (a bounce is due): final.
    Failed,
}

impl RecipientState {
    /// The name stored and shown: `pending`, `delivered`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<RecipientState> {
        Ok(match s {
            "pending" => RecipientState::Pending,
            "delivered" => RecipientState::Delivered,
            "failed" => RecipientState::Failed,
            other => return Err(StoreError::Corrupt(format!("recipient state '{other}'"))),
        })
    }
}

/// What one delivery attempt to one recipient came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientOutcome {
    /// Accepted by the recipient's server.
    Delivered {
        /// For the record: host, TLS facts, the server's reply.
        detail: String,
    },
    /// A temporary failure: try again at `next_attempt_at`.
    Deferred {
        /// The status, e.g. `451 4.7.4`.
        status: SmtpStatus,
        /// Why, for the operator and a later bounce.
        reason: String,
        /// Next try (Unix seconds).
        next_attempt_at: i64,
    },
    /// A permanent failure, or the queue lifetime ran out.
    Failed {
        /// The status, e.g. `550 5.1.10`.
        status: SmtpStatus,
        /// Why, for the bounce.
        reason: String,
    },
}

/// `require_tls` is read as an integer: `sqlx::Any` cannot decode SQLite's
/// `BOOLEAN` (see [`crate::sql`]).
const MESSAGE_COLUMNS: &str = "id, sender, received_at, size, \
     CASE WHEN require_tls THEN 1 ELSE 0 END AS require_tls, sender_min_level, sender_min_tls";
const RECIPIENT_COLUMNS: &str =
    "message_id, address, state, attempts, next_attempt_at, last_status, last_reason";

fn message_from_row(row: &AnyRow) -> Result<QueuedMessage> {
    let size: i64 = row.try_get("size")?;
    Ok(QueuedMessage {
        id: row.try_get("id")?,
        sender: row.try_get("sender")?,
        received_at: row.try_get("received_at")?,
        size: u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("size {size}")))?,
        sender_requirement: sender_requirement_from_row(row)?,
        recipients: Vec::new(),
    })
}

fn sender_requirement_from_row(row: &AnyRow) -> Result<Option<SenderRequirement>> {
    let require_tls = row.try_get::<i64, _>("require_tls")? != 0;
    let level: Option<String> = row.try_get("sender_min_level")?;
    let version: Option<String> = row.try_get("sender_min_tls")?;
    if !require_tls {
        return Ok(None);
    }
    let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("{what} '{v}'"));
    Ok(Some(SenderRequirement {
        // Rows from before the column existed required plain TLS.
        min_level: match level {
            Some(l) => l.parse().map_err(|_| corrupt("sender_min_level", &l))?,
            None => MinLevel::Tls,
        },
        min_tls: version
            .map(|v| v.parse().map_err(|_| corrupt("sender_min_tls", &v)))
            .transpose()?,
    }))
}

fn recipient_from_row(row: &AnyRow) -> Result<QueuedRecipient> {
    let attempts: i64 = row.try_get("attempts")?;
    Ok(QueuedRecipient {
        address: row.try_get("address")?,
        state: RecipientState::parse(row.try_get("state")?)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: row.try_get("last_status")?,
        last_reason: row.try_get("last_reason")?,
    })
}

/// One message with its recipients, read on `conn`.
async fn load_message(conn: &mut AnyConnection, id: &str) -> Result<Option<QueuedMessage>> {
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM queue_messages WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let mut msg = message_from_row(&row)?;
    msg.recipients = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RECIPIENT_COLUMNS} FROM queue_recipients WHERE message_id = $1 ORDER BY position"
    )))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(recipient_from_row)
    .collect::<Result<_>>()?;
    Ok(Some(msg))
}

impl Queue for SqlStore {
    async fn enqueue(&self, msg: &NewMessage) -> Result<()> {
        if msg.recipients.is_empty() {
            return Err(StoreError::InvalidMessage("no recipients"));
        }
        let size = i64::try_from(msg.size).map_err(|_| StoreError::InvalidMessage("size"))?;
        let mut seen = HashSet::new();
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO queue_messages (id, sender, size, received_at, auth_user, client, \
               require_tls, sender_min_level, sender_min_tls, lease_until, node) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)",
        )
        .bind(&msg.id)
        .bind(&msg.sender)
        .bind(size)
        .bind(msg.received_at)
        .bind(&msg.auth_user)
        .bind(&msg.client)
        .bind(msg.sender_requirement.is_some())
        .bind(msg.sender_requirement.map(|r| r.min_level.as_str()))
        .bind(
            msg.sender_requirement
                .and_then(|r| r.min_tls)
                .map(TlsVersion::as_str),
        )
        .bind(self.node.as_deref())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists(format!("message {}", msg.id)));
            }
            Err(e) => return Err(e.into()),
        }
        let unique = msg.recipients.iter().filter(|r| seen.insert(r.as_str()));
        for (position, rcpt) in (0_i64..).zip(unique) {
            sqlx::query(
                "INSERT INTO queue_recipients (message_id, position, address, state, attempts, \
                   next_attempt_at, last_status, last_reason) \
                 VALUES ($1, $2, $3, 'pending', 0, $4, NULL, NULL)",
            )
            .bind(&msg.id)
            .bind(position)
            .bind(rcpt)
            .bind(msg.received_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due(
        &self,
        now: i64,
        lease_secs: i64,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>> {
        // Driven by the due recipients (index `queue_recipients_due`): the
        // work is proportional to what is due, not to the history of
        // delivered messages (a correlated EXISTS per message made every
        // claim scan the whole table: quadratic under load).
        // On PostgreSQL (a fleet) a node claims only its own messages and
        // those of no node: the bodies are in its local spool.
        const DUE: &str = "SELECT m.id FROM queue_messages m \
             WHERE m.id IN (SELECT r.message_id FROM queue_recipients r \
                            WHERE r.state = 'pending' AND r.next_attempt_at <= $1) \
               AND (m.lease_until IS NULL OR m.lease_until <= $1)";
        const ORDER: &str = " ORDER BY m.received_at, m.id LIMIT $2";
        // SQLite: the write transaction excludes every other claimer.
        // PostgreSQL: claimers run at once; each locks the rows it picks
        // and passes over rows another has locked (SKIP LOCKED), and a row
        // whose lease another claimer committed meanwhile is re-checked
        // against the WHERE clause after the lock and dropped.
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE OF m SKIP LOCKED",
        };
        let mut tx = self.write_tx().await?;
        let node = match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => self.node.as_deref(),
        };
        let own = if node.is_some() {
            " AND (m.node IS NULL OR m.node = $3)"
        } else {
            ""
        };
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{DUE}{own}{ORDER}{lock}")))
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        if let Some(node) = node {
            query = query.bind(node);
        }
        let ids: Vec<String> = query.fetch_all(&mut *tx).await?;
        let until = now.saturating_add(lease_secs);
        let mut claimed = Vec::with_capacity(ids.len());
        for id in &ids {
            sqlx::query(
                "UPDATE queue_messages SET lease_until = $1, lease_owner = $2 WHERE id = $3",
            )
            .bind(until)
            .bind(&*self.instance)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if let Some(msg) = load_message(&mut tx, id).await? {
                claimed.push(msg);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn record_outcome(
        &self,
        id: &str,
        recipient: &str,
        outcome: &RecipientOutcome,
        now: i64,
    ) -> Result<()> {
        let (state, next, status, reason) = match outcome {
            RecipientOutcome::Delivered { detail } => {
                (RecipientState::Delivered, None, None, detail)
            }
            RecipientOutcome::Deferred {
                status,
                reason,
                next_attempt_at,
            } => (
                RecipientState::Pending,
                Some(*next_attempt_at),
                Some(status.to_string()),
                reason,
            ),
            RecipientOutcome::Failed { status, reason } => (
                RecipientState::Failed,
                None,
                Some(status.to_string()),
                reason,
            ),
        };
        let updated = sqlx::query(
            "UPDATE queue_recipients SET state = $3, attempts = attempts + 1, \
               next_attempt_at = COALESCE($4, next_attempt_at), last_status = $5, \
               last_reason = $6, last_attempt_at = $7 \
             WHERE message_id = $1 AND address = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(recipient)
        .bind(state.as_str())
        .bind(next)
        .bind(status)
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() > 0 {
            return Ok(());
        }
        let current: Option<String> = sqlx::query_scalar(
            "SELECT state FROM queue_recipients WHERE message_id = $1 AND address = $2",
        )
        .bind(id)
        .bind(recipient)
        .fetch_optional(&self.pool)
        .await?;
        match current {
            Some(state) => {
                tracing::debug!(
                    id,
                    recipient,
                    state,
                    "outcome for a final recipient ignored"
                );
                Ok(())
            }
            None => Err(StoreError::NotFound(format!("{id} <{recipient}>"))),
        }
    }

    async fn release(&self, id: &str) -> Result<()> {
        // Only our own lease: after it expired another runner may have
        // taken the message, and its lease is not ours to end.
        sqlx::query(
            "UPDATE queue_messages SET lease_until = NULL, lease_owner = NULL \
             WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2)",
        )
        .bind(id)
        .bind(&*self.instance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<QueuedMessage>> {
        // One read transaction: a consistent snapshot of both tables.
        let mut tx = self.read_tx().await?;
        let mut messages = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM queue_messages ORDER BY received_at, id"
        )))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>>>()?;
        let index: std::collections::HashMap<String, usize> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECIPIENT_COLUMNS} FROM queue_recipients ORDER BY message_id, position"
        )))
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let message_id: String = row.try_get("message_id")?;
            if let Some(&i) = index.get(&message_id) {
                messages[i].recipients.push(recipient_from_row(row)?);
            }
        }
        tx.commit().await?;
        Ok(messages)
    }

    async fn message(&self, id: &str) -> Result<Option<QueuedMessage>> {
        let mut tx = self.read_tx().await?;
        let msg = load_message(&mut tx, id).await?;
        tx.commit().await?;
        Ok(msg)
    }

    async fn retry_now(&self, id: &str) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE queue_recipients SET next_attempt_at = 0 \
             WHERE message_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() > 0)
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        // Explicit, not only ON DELETE CASCADE: correct even where foreign
        // keys are not enforced.
        sqlx::query("DELETE FROM queue_recipients WHERE message_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM queue_messages WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn reset_leases(&self) -> Result<u64> {
        let updated =
            match self.backend {
                // One node: whatever is leased, the previous process leased.
                Backend::Sqlite => sqlx::query(
                    "UPDATE queue_messages SET lease_until = NULL WHERE lease_until IS NOT NULL",
                )
                .execute(&self.pool)
                .await?,
                // A fleet: live leases may be other nodes' running deliveries
                // and stay theirs; expired ones are tidied (claiming would
                // take those anyway), and so are this node's own: only this
                // node delivers its messages, so a lease on one is left
                // from its previous run (one process per node name).
                Backend::Postgres => {
                    sqlx::query(
                        "UPDATE queue_messages SET lease_until = NULL, lease_owner = NULL \
                     WHERE lease_until IS NOT NULL AND (lease_until <= $1 OR node = $2)",
                    )
                    .bind(unix_now())
                    .bind(self.node.as_deref().unwrap_or(""))
                    .execute(&self.pool)
                    .await?
                }
            };
        Ok(updated.rows_affected())
    }

    async fn next_due(&self) -> Result<Option<i64>> {
        // As claiming: on PostgreSQL a node waits only for its own messages
        // (and those of no node), or it would wake for others' retries.
        let (due,): (Option<i64>,) = match (self.backend, self.node.as_deref()) {
            (Backend::Postgres, Some(node)) => {
                sqlx::query_as(
                    "SELECT MIN(r.next_attempt_at) FROM queue_recipients r \
                     JOIN queue_messages m ON m.id = r.message_id \
                     WHERE r.state = 'pending' AND (m.node IS NULL OR m.node = $1)",
                )
                .bind(node)
                .fetch_one(&self.pool)
                .await?
            }
            _ => {
                sqlx::query_as(
                    "SELECT MIN(next_attempt_at) FROM queue_recipients WHERE state = 'pending'",
                )
                .fetch_one(&self.pool)
                .await?
            }
        };
        Ok(due)
    }
}

impl SqlStore {
    /// Removes the history of messages received before `before` whose
    /// recipients are all final; how many messages went.
    pub async fn prune_finished(&self, before: i64) -> Result<u64> {
        const FINISHED: &str = "SELECT m.id FROM queue_messages m WHERE m.received_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM queue_recipients r \
                             WHERE r.message_id = m.id AND r.state = 'pending')";
        let mut tx = self.write_tx().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM queue_recipients WHERE message_id IN ({FINISHED})"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM queue_messages WHERE id IN ({FINISHED})"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted.rows_affected())
    }
}

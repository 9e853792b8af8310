//! # mailtls-store
//!
//! The durable state of mailtls (SPEC §3, §6, §7; issue #3): user accounts
//! for SMTP AUTH and their Encrypted Sending settings, the TLS memory with its alerts and audit log, and the
//! queue's metadata (message bodies live in the relay's spool).
//!
//! One SQL schema, written to run unchanged on SQLite (the embedded
//! default) and PostgreSQL (fleets, issue #6): portable types, `$N`
//! parameters, `ON CONFLICT … DO UPDATE` upserts, no backend-only
//! functions in the migrations, runtime queries only. Callers use the
//! [`Users`], [`Settings`], [`TlsMemory`] and [`Queue`] traits, implemented
//! by [`SqlStore`]; the contract is in `docs/relay-interfaces.md`, the
//! operator's view in `docs/store.md`.
//!
//! ## SQLite and PostgreSQL
//!
//! [`SqlStore::open`] takes `sqlite:PATH` or `postgres://…`. Both run
//! through `sqlx::Any` with the same queries; where they must differ the
//! code matches on [`Backend`] ([`sql`] explains the choice):
//!
//! * write transactions: SQLite `BEGIN IMMEDIATE` (one writer at a time);
//!   PostgreSQL READ COMMITTED with row locks — the memory's ratchet locks
//!   the key's row (`INSERT … ON CONFLICT DO NOTHING`, `SELECT … FOR
//!   UPDATE`), so concurrent nodes never lose the higher level and alerts
//!   are raised exactly as `mailtls_core::memory::remember` says;
//! * alert and audit ids: `MAX(id) + 1` in the transaction; on PostgreSQL
//!   under a transaction-scoped advisory lock per series, so ids stay
//!   unique and increasing in commit order;
//! * claiming: PostgreSQL adds `FOR UPDATE SKIP LOCKED`, so nodes claiming
//!   at once never get the same message; leases expire by the callers'
//!   clocks;
//! * [`Queue::reset_leases`]: all leases on SQLite (one node), only expired
//!   ones on PostgreSQL (other nodes' leases are live deliveries);
//! * reaching the database: a PostgreSQL server that is down or silent is
//!   [`StoreError::Unavailable`] within [`sql::CONNECT_TIMEOUT`], never a
//!   hang; [`SqlStore::ping`] is the health probe.
//!
//! [`dump`] moves everything between the two (`mailtls store export` /
//! `import`).
//!
//! * [`sql`] — opening the database, durability settings, migrations.
//! * [`users`] — accounts, argon2id password hashes.
//! * [`memory`] — the TLS memory, applying `mailtls_core::memory::remember`.
//! * [`queue`] — messages, recipients, leases.
//! * [`settings`] — Encrypted Sending and the secure alias (SPEC §4).
//! * [`dump`] — export and import as versioned JSON lines.
//! * [`error`] — [`StoreError`].

pub mod dump;
pub mod error;
pub mod memory;
pub mod queue;
pub mod settings;
pub mod sql;
pub mod users;

pub use dump::{DUMP_FORMAT, DUMP_VERSION, DumpSummary};
pub use error::{Result, StoreError};
pub use memory::{ForgetRecord, StoredAlert, TlsMemory};
pub use queue::{
    NewMessage, Queue, QueuedMessage, QueuedRecipient, RecipientOutcome, RecipientState,
};
pub use settings::{Settings, UserSettings};
pub use sql::{Backend, MigrationReport, SqlStore};
pub use users::{MAX_PASSWORD_LEN, Users};

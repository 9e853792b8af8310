//! # mailtls-store
//!
//! The durable state of mailtls (SPEC §3, §6, §7; issue #3): user accounts
//! for SMTP AUTH and their Encrypted Sending settings, the TLS memory with its alerts and audit log, and the
//! queue's metadata (message bodies live in the relay's spool).
//!
//! One SQL schema, written to run unchanged on SQLite (the embedded
//! default) and PostgreSQL (fleets, issue #6): portable types, `$N`
//! parameters, `ON CONFLICT … DO UPDATE` upserts, no backend-only
//! functions, runtime queries only. Callers use the [`Users`],
//! [`TlsMemory`] and [`Queue`] traits, implemented by [`SqlStore`]; the
//! contract is in `docs/relay-interfaces.md`.
//!
//! ## Towards PostgreSQL (issue #6)
//!
//! What stays SQLite-specific is small and in known places:
//! `SqlStore::write_tx` relies on `BEGIN IMMEDIATE` (one writer at a time);
//! on PostgreSQL the ratchet needs the row locked (`INSERT … ON CONFLICT DO
//! NOTHING`, then `SELECT … FOR UPDATE`) and claiming needs `FOR UPDATE SKIP
//! LOCKED`. Alert and audit ids are `MAX(id) + 1` inside the write
//! transaction, which PostgreSQL's concurrent writers must retry on a
//! unique violation. Row decoding uses `SqliteRow`.
//!
//! * [`sql`] — opening the database, durability settings, migrations.
//! * [`users`] — accounts, argon2id password hashes.
//! * [`memory`] — the TLS memory, applying `mailtls_core::memory::remember`.
//! * [`queue`] — messages, recipients, leases.
//! * [`settings`] — Encrypted Sending and the secure alias (SPEC §4).
//! * [`error`] — [`StoreError`].

pub mod error;
pub mod memory;
pub mod queue;
pub mod settings;
pub mod sql;
pub mod users;

pub use error::{Result, StoreError};
pub use memory::{ForgetRecord, StoredAlert, TlsMemory};
pub use queue::{
    NewMessage, Queue, QueuedMessage, QueuedRecipient, RecipientOutcome, RecipientState,
};
pub use settings::{Settings, UserSettings};
pub use sql::SqlStore;
pub use users::{MAX_PASSWORD_LEN, Users};

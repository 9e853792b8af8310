//! # mailtls-store
//!
//! The durable state of mailtls (SPEC §3, §6, §7; issue #3): user accounts
//! for SMTP AUTH, the TLS memory with its alerts and audit log, and the
//! queue's metadata (message bodies live in the relay's spool).
//!
//! One SQL schema, written to run unchanged on SQLite (the embedded
//! default) and PostgreSQL (fleets, issue #6): portable types, `$N`
//! parameters, `ON CONFLICT … DO UPDATE` upserts, no backend-only
//! functions, runtime queries only. Callers use the [`Users`],
//! [`TlsMemory`] and [`Queue`] traits, implemented by [`SqlStore`]; the
//! contract is in `docs/relay-interfaces.md`.
//!
//! * [`sql`] — opening the database, durability settings, migrations.
//! * [`users`] — accounts, argon2id password hashes.
//! * [`memory`] — the TLS memory, applying `mailtls_core::memory::remember`.
//! * [`queue`] — messages, recipients, leases.
//! * [`error`] — [`StoreError`].

pub mod error;
pub mod memory;
pub mod queue;
pub mod sql;
pub mod users;

pub use error::{Result, StoreError};
pub use memory::{ForgetRecord, StoredAlert, TlsMemory};
pub use queue::{
    NewMessage, Queue, QueuedMessage, QueuedRecipient, RecipientOutcome, RecipientState,
};
pub use sql::SqlStore;
pub use users::{MAX_PASSWORD_LEN, Users};

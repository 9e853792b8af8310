//! The store's one error type.
//!
//! Every variant prints as one line for a log or an operator. Seen from an
//! SMTP peer, any failure of the store is a local problem that a later try
//! may not have ([`StoreError::smtp_status`]): mail is never refused
//! permanently because a database was busy or a disk was full.

use mailtls_core::{AddressError, SmtpStatus};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed (I/O, lock timeout, constraint).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The database file's directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be created.
    #[error("cannot create {path}: {source}")]
    CreateFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A store URL this build cannot open.
    #[error("unsupported store URL '{0}': use sqlite:PATH (postgres:// comes with issue #6)")]
    UnsupportedUrl(String),
    /// A user, or a queued message, with that name or id exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// An address that is not `local@domain`.
    #[error("invalid address: {0}")]
    InvalidAddress(#[from] AddressError),
    /// A password longer than [`crate::MAX_PASSWORD_LEN`] bytes.
    #[error("password longer than {} bytes", crate::MAX_PASSWORD_LEN)]
    PasswordTooLong,
    /// An empty password.
    #[error("empty password")]
    EmptyPassword,
    /// Hashing a password failed (should not happen with default parameters).
    #[error("password hashing: {0}")]
    PasswordHash(String),
    /// A message that cannot be queued as given.
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    /// No such queued message or recipient.
    #[error("not queued: {0}")]
    NotFound(String),
    /// No account with that address.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// Another user owns the secure alias with this local part.
    #[error("the secure alias '{0}' belongs to another user")]
    AliasTaken(String),
    /// A row holds a value this version does not understand.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A blocking task (password hashing) panicked or was cancelled.
    #[error("background task: {0}")]
    Task(String),
}

impl StoreError {
    /// The reply for an SMTP peer whose command needed the store:
    /// `451 4.3.0` (RFC 3463 X.3.0, "other or undefined mail system
    /// status"), temporary, whatever the cause.
    pub fn smtp_status(&self) -> SmtpStatus {
        SmtpStatus::new(451, 4, 3, 0)
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

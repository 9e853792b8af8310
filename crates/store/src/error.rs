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
    /// The database refused or failed (lock timeout, constraint, a closed
    /// store).
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// The database cannot be reached now: a PostgreSQL server that does
    /// not answer or refuses connections, or no pooled connection within
    /// the acquire timeout. Temporary by nature ([`StoreError::is_unavailable`]):
    /// a caller defers rather than guesses.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Writers kept colliding (PostgreSQL: unique ids taken by concurrent
    /// writers, serialization failures) and the store gave up retrying.
    #[error("database contention: {0}")]
    Contention(&'static str),
    /// A dump for `mailtls store import` that cannot be read, or a store
    /// that cannot take it (not empty).
    #[error("dump: {0}")]
    Dump(String),
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
    #[error(
        "unsupported store URL '{0}': use sqlite:PATH or postgres://USER:PASSWORD@HOST/DATABASE"
    )]
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

    /// Whether the database could not be reached at all (as opposed to a
    /// query that failed): the case for failing safe, e.g. deferring a
    /// delivery that needs the TLS memory, or a health check saying so.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Whether a write transaction lost a race that a new attempt can win:
    /// a unique id taken by a concurrent writer (PostgreSQL SQLSTATE 23505),
    /// a serialization failure (40001) or a deadlock (40P01). Only retried
    /// where the sole unique key written is such an id.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => e.as_database_error().is_some_and(|d| {
                d.is_unique_violation() || matches!(d.code().as_deref(), Some("40001" | "40P01"))
            }),
            StoreError::Contention(_) => true,
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    /// Failures to reach the server become [`StoreError::Unavailable`];
    /// everything else is [`StoreError::Database`].
    fn from(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::PoolTimedOut => StoreError::Unavailable(
                "no database connection within the acquire timeout".to_owned(),
            ),
            sqlx::Error::Io(io) => StoreError::Unavailable(io.to_string()),
            sqlx::Error::Tls(tls) => StoreError::Unavailable(format!("TLS: {tls}")),
            other => StoreError::Database(other),
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

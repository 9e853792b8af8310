//! Accounts for SMTP AUTH on the submission listeners (issue #3).
//!
//! SPEC §7: passwords are stored with a memory-hard hash: argon2id with the
//! crate's default parameters and a random salt, kept as a PHC string (so
//! the parameters travel with the hash and can be raised later). Hashing
//! runs on tokio's blocking pool: it takes tens of milliseconds of CPU and
//! about 19 MiB of memory, which must not stall the SMTP sessions.
//!
//! Logging in must not tell an attacker which accounts exist: an unknown
//! user costs the same hash verification as a known one.

use std::future::Future;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use mailtls_core::Address;

use crate::error::{Result, StoreError};
use crate::sql::{SqlStore, unix_now};

/// Longest password accepted, in bytes. Longer input is refused before
/// any hashing, so that a peer cannot make us hash megabytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// User accounts.
pub trait Users {
    /// Creates the account `address` (domain normalised, local part kept as
    /// typed) with an argon2id hash of `password`.
    /// [`StoreError::AlreadyExists`] if it exists;
    /// [`StoreError::PasswordTooLong`] or [`StoreError::EmptyPassword`]
    /// for a refused password.
    fn add_user(&self, address: &str, password: &str) -> impl Future<Output = Result<()>> + Send;

    /// Whether `password` is the account's. An unknown user, an invalid
    /// address or a password longer than [`MAX_PASSWORD_LEN`] is `false`;
    /// unknown users cost the same as known ones.
    fn verify_password(
        &self,
        address: &str,
        password: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Whether the account exists (an invalid address does not).
    fn user_exists(&self, address: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// The stored form of an address: the domain in lower-case A-labels, the
/// local part as typed (RFC 5321 §2.4: only the receiving host may
/// interpret it).
pub(crate) fn normalise(address: &str) -> Result<String> {
    Ok(Address::parse(address)?.to_string())
}

impl Users for SqlStore {
    async fn add_user(&self, address: &str, password: &str) -> Result<()> {
        let address = normalise(address)?;
        if password.is_empty() {
            return Err(StoreError::EmptyPassword);
        }
        if password.len() > MAX_PASSWORD_LEN {
            return Err(StoreError::PasswordTooLong);
        }
        let password = password.to_owned();
        let hash = self.blocking(move || hash_password(&password)).await??;
        let inserted = sqlx::query(
            "INSERT INTO users (address, password_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&address)
        .bind(hash)
        .bind(unix_now())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists(address)),
            Err(e) => Err(e.into()),
        }
    }

    async fn verify_password(&self, address: &str, password: &str) -> Result<bool> {
        if password.len() > MAX_PASSWORD_LEN {
            // No such password can have been stored; refusing it unhashed
            // tells nothing about the account.
            return Ok(false);
        }
        let stored: Option<String> = match normalise(address) {
            Ok(address) => {
                sqlx::query_scalar("SELECT password_hash FROM users WHERE address = $1")
                    .bind(address)
                    .fetch_optional(&self.pool)
                    .await?
            }
            Err(_) => None,
        };
        let password = password.to_owned();
        self.blocking(move || match stored {
            Some(hash) => check_password(&password, &hash),
            None => {
                // Same work as for a real account, result thrown away.
                let _ = check_password(&password, DUMMY_HASH);
                Ok(false)
            }
        })
        .await?
    }

    async fn user_exists(&self, address: &str) -> Result<bool> {
        let Ok(address) = normalise(address) else {
            return Ok(false);
        };
        let found: Option<String> =
            sqlx::query_scalar("SELECT address FROM users WHERE address = $1")
                .bind(address)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }
}

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::PasswordHash(e.to_string()))
}

/// Verifies against a PHC string; the parameters are the string's own.
fn check_password(password: &str, phc: &str) -> Result<bool> {
    let parsed =
        PasswordHash::new(phc).map_err(|e| StoreError::Corrupt(format!("password hash: {e}")))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// What unknown users are verified against: the argon2id hash of a random,
/// forgotten password, made with the default parameters (a unit test keeps
/// them equal to `argon2::Params::default()`, so both paths cost the same).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$zQTvh0MWdZAzdn1vT90dyw$taC3f/Tx6KVOxvBQ3IlJg3ySRr6wM1NtMOhnbHu2w7A";

impl SqlStore {
    /// Runs a password hash or verification on the blocking pool, at most
    /// as many at once as there are hash slots.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _slot = self
            .hash_slots
            .acquire()
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_costs_what_a_new_hash_costs() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("valid PHC string");
        let fresh_phc = hash_password("x").expect("hash");
        let fresh = PasswordHash::new(&fresh_phc).expect("valid PHC string");
        assert_eq!(dummy.algorithm, fresh.algorithm);
        assert_eq!(dummy.version, fresh.version);
        assert_eq!(dummy.params, fresh.params);
        let default = argon2::Params::default();
        assert_eq!(
            dummy.params.get_decimal("m"),
            Some(default.m_cost()),
            "memory cost"
        );
        assert_eq!(dummy.params.get_decimal("t"), Some(default.t_cost()));
    }

    #[test]
    fn hashes_are_salted_argon2id_and_verify() {
        let a = hash_password("correct horse").expect("hash");
        let b = hash_password("correct horse").expect("hash");
        assert_ne!(a, b, "random salt");
        assert!(a.starts_with("$argon2id$"));
        assert!(check_password("correct horse", &a).expect("verify"));
        assert!(!check_password("correct horsf", &a).expect("verify"));
    }

    #[test]
    fn addresses_keep_the_local_part_and_lower_the_domain() {
        assert_eq!(
            normalise(" Alice@EXAMPLE.org ").expect("valid"),
            "Alice@example.org"
        );
        assert!(normalise("no-at-sign").is_err());
    }
}

//! Per-user settings: "Encrypted Sending" and the secure alias it brings
//! (SPEC §4; issue #4).
//!
//! The setting is a `mailtls_core::sending::EncryptedSending`; the store
//! keeps it in `user_settings` with the alias's local part, which is set
//! exactly while the setting is not off (the alias exists exactly then) and
//! unique, so each alias has one owner. The alias's local part is the
//! user's own, lower-cased: `Me@example.org` owns `me@<secure-domain>`. Two
//! users with the same local part in different local domains cannot both
//! have the alias; the second gets [`StoreError::AliasTaken`].

use std::future::Future;

use mailtls_core::Address;
use mailtls_core::sending::{EncryptedSending, ExpertSettings, MinLevel, TlsVersion};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StoreError};
use crate::sql::{SqlStore, unix_now};
use crate::users::{is_unique_violation, normalise};

/// A user's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSettings {
    /// The account (`local@domain`, as stored).
    pub address: String,
    /// "Encrypted Sending".
    pub encrypted_sending: EncryptedSending,
    /// The secure alias's local part, while the setting is not off.
    pub alias_local: Option<String>,
    /// When the setting last changed (Unix seconds); `None`: never.
    pub updated_at: Option<i64>,
}

impl UserSettings {
    /// The secure alias at `secure_domain`, while it exists.
    pub fn secure_alias(&self, secure_domain: &str) -> Option<String> {
        self.alias_local
            .as_ref()
            .map(|local| format!("{local}@{secure_domain}"))
    }
}

/// Per-user settings.
pub trait Settings {
    /// The user's settings ([`StoreError::NoSuchUser`] for an unknown
    /// account); a user who never changed them has Encrypted Sending off.
    fn settings(&self, user: &str) -> impl Future<Output = Result<UserSettings>> + Send;

    /// Sets "Encrypted Sending" and, with it, creates or removes the
    /// secure alias. [`StoreError::AliasTaken`] if another user owns the
    /// alias's local part.
    fn set_encrypted_sending(
        &self,
        user: &str,
        setting: EncryptedSending,
    ) -> impl Future<Output = Result<UserSettings>> + Send;

    /// The owner of the secure alias with this local part (any case), with
    /// their settings; `None` when no such alias exists (no owner, or the
    /// owner's setting is off).
    fn alias_owner(
        &self,
        alias_local: &str,
    ) -> impl Future<Output = Result<Option<UserSettings>>> + Send;
}

const COLUMNS: &str =
    "address, encrypted_sending, min_level, min_tls, inbound_min_tls, alias_local, updated_at";

fn from_row(row: &AnyRow) -> Result<UserSettings> {
    let corrupt = |what: &str, value: &str| StoreError::Corrupt(format!("{what} '{value}'"));
    let mode: String = row.try_get("encrypted_sending")?;
    let level: Option<String> = row.try_get("min_level")?;
    let version = |column: &str| -> Result<Option<TlsVersion>> {
        let value: Option<String> = row.try_get(column)?;
        value
            .map(|v| v.parse().map_err(|_| corrupt(column, &v)))
            .transpose()
    };
    let encrypted_sending = match mode.as_str() {
        "off" => EncryptedSending::Off,
        "on" => EncryptedSending::On,
        "expert" => EncryptedSending::Expert(ExpertSettings {
            min_level: level
                .as_deref()
                .map(|l| l.parse::<MinLevel>().map_err(|_| corrupt("min_level", l)))
                .transpose()?
                .unwrap_or(MinLevel::Tls),
            min_tls: version("min_tls")?,
            inbound_min_tls: version("inbound_min_tls")?,
        }),
        other => return Err(corrupt("encrypted_sending", other)),
    };
    Ok(UserSettings {
        address: row.try_get("address")?,
        encrypted_sending,
        alias_local: row.try_get("alias_local")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Settings for SqlStore {
    async fn settings(&self, user: &str) -> Result<UserSettings> {
        let address = normalise(user)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM user_settings WHERE address = $1"
        )))
        .bind(&address)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return from_row(&row);
        }
        let exists: Option<String> =
            sqlx::query_scalar("SELECT address FROM users WHERE address = $1")
                .bind(&address)
                .fetch_optional(&self.pool)
                .await?;
        match exists {
            Some(address) => Ok(UserSettings {
                address,
                encrypted_sending: EncryptedSending::Off,
                alias_local: None,
                updated_at: None,
            }),
            None => Err(StoreError::NoSuchUser(address)),
        }
    }

    async fn set_encrypted_sending(
        &self,
        user: &str,
        setting: EncryptedSending,
    ) -> Result<UserSettings> {
        let parsed = Address::parse(user)?;
        let address = parsed.to_string();
        let alias_local = setting
            .alias_enabled()
            .then(|| parsed.local_part().to_lowercase());
        let (min_level, min_tls, inbound_min_tls) = match &setting {
            EncryptedSending::Expert(e) => (
                Some(e.min_level.as_str()),
                e.min_tls.map(TlsVersion::as_str),
                e.inbound_min_tls.map(TlsVersion::as_str),
            ),
            _ => (None, None, None),
        };
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT address FROM users WHERE address = $1")
                .bind(&address)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NoSuchUser(address));
        }
        let written = sqlx::query(
            "INSERT INTO user_settings (address, encrypted_sending, min_level, min_tls, \
               inbound_min_tls, alias_local, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (address) DO UPDATE SET encrypted_sending = excluded.encrypted_sending, \
               min_level = excluded.min_level, min_tls = excluded.min_tls, \
               inbound_min_tls = excluded.inbound_min_tls, alias_local = excluded.alias_local, \
               updated_at = excluded.updated_at",
        )
        .bind(&address)
        .bind(setting.mode())
        .bind(min_level)
        .bind(min_tls)
        .bind(inbound_min_tls)
        .bind(&alias_local)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match written {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AliasTaken(alias_local.unwrap_or_default()));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(UserSettings {
            address,
            encrypted_sending: setting,
            alias_local,
            updated_at: Some(now),
        })
    }

    async fn alias_owner(&self, alias_local: &str) -> Result<Option<UserSettings>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM user_settings WHERE alias_local = $1"
        )))
        .bind(alias_local.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(from_row)
            .transpose()
            .map(|s| s.filter(|s| s.encrypted_sending.alias_enabled()))
    }
}

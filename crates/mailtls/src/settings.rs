//! `mailtls settings`: a user's "Encrypted Sending" (SPEC §4; issue #4),
//! for operators and scripts. The web page for the same setting is the
//! other way in (issue #5); both write the same store row, so a change is
//! enforced by every listener at its next look-up.

use std::process::ExitCode;

use mailtls_core::sending::{EncryptedSending, MinLevel, TlsVersion};
use mailtls_store::{Settings, SqlStore, UserSettings};
use serde::Serialize;

/// `mailtls settings …`.
#[derive(Debug, clap::Subcommand)]
pub enum SettingsCommand {
    /// Show a user's settings and secure alias.
    Show {
        /// The account, e.g. me@example.org.
        user: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a setting: `set USER encrypted-sending off|on|expert`.
    Set {
        /// The account, e.g. me@example.org.
        user: String,
        /// The setting's name (only `encrypted-sending` so far).
        #[arg(value_parser = ["encrypted-sending"])]
        setting: String,
        /// `off` (no secure alias), `on` (TLS to every recipient) or
        /// `expert` (with the options below).
        #[arg(value_parser = ["off", "on", "expert"])]
        value: String,
        /// Expert: the level every recipient's provider must meet.
        #[arg(long, value_name = "tls|verified|dane")]
        min_level: Option<MinLevel>,
        /// Expert: the minimum TLS version for outbound mail.
        #[arg(long, value_name = "1.2|1.3")]
        min_tls: Option<TlsVersion>,
        /// Expert: the minimum TLS version for mail to the secure alias.
        #[arg(long, value_name = "1.2|1.3")]
        inbound_min_tls: Option<TlsVersion>,
    },
}

/// What `show --json` prints.
#[derive(Serialize)]
struct Shown<'a> {
    user: &'a str,
    encrypted_sending: &'a EncryptedSending,
    secure_alias: Option<String>,
    updated_at: Option<i64>,
}

/// Runs a settings command against the store; `secure_domain` names the
/// alias (SPEC §4: `local@<secure-domain>`).
pub async fn run(
    store: &SqlStore,
    secure_domain: Option<&str>,
    command: SettingsCommand,
) -> ExitCode {
    match command {
        SettingsCommand::Show { user, json } => match store.settings(&user).await {
            Ok(settings) => {
                print(&settings, secure_domain, json);
                ExitCode::SUCCESS
            }
            Err(e) => failed(&e),
        },
        SettingsCommand::Set {
            user,
            setting: _,
            value,
            min_level,
            min_tls,
            inbound_min_tls,
        } => {
            let setting =
                match EncryptedSending::from_parts(&value, min_level, min_tls, inbound_min_tls) {
                    Ok(setting) => setting,
                    Err(e) => return crate::usage_error(&e),
                };
            match store.set_encrypted_sending(&user, setting).await {
                Ok(settings) => {
                    print(&settings, secure_domain, false);
                    ExitCode::SUCCESS
                }
                Err(e) => failed(&e),
            }
        }
    }
}

fn failed(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("mailtls settings: {e}");
    ExitCode::FAILURE
}

fn print(settings: &UserSettings, secure_domain: Option<&str>, json: bool) {
    let alias = secure_domain.and_then(|d| settings.secure_alias(d));
    if json {
        let shown = Shown {
            user: &settings.address,
            encrypted_sending: &settings.encrypted_sending,
            secure_alias: alias,
            updated_at: settings.updated_at,
        };
        match serde_json::to_string_pretty(&shown) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("mailtls settings: {e}"),
        }
        return;
    }
    let mut line = format!(
        "{}: encrypted-sending {}",
        settings.address,
        settings.encrypted_sending.mode()
    );
    if let EncryptedSending::Expert(expert) = &settings.encrypted_sending {
        line.push_str(&format!(" (min-level {}", expert.min_level));
        if let Some(v) = expert.min_tls {
            line.push_str(&format!(", min-tls {}", v.as_str()));
        }
        if let Some(v) = expert.inbound_min_tls {
            line.push_str(&format!(", inbound-min-tls {}", v.as_str()));
        }
        line.push(')');
    }
    match (&alias, settings.encrypted_sending.alias_enabled()) {
        (Some(alias), true) => line.push_str(&format!("; secure alias {alias}")),
        (None, true) => {
            line.push_str("; no secure domain is configured ([smtp.inbound] secure_domain)")
        }
        _ => line.push_str("; no secure alias"),
    }
    println!("{line}");
}

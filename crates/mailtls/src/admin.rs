//! Operator commands on the durable state (SPEC §5 "admin commands for
//! users, aliases, settings, the memory, the queue"): `user`, `memory`,
//! `queue`. Each opens the store in the data directory, does one thing, and
//! says what it did in one line (or JSON with `--json`).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use mailtls_core::memory::{MemoryEntry, MemoryKey};
use mailtls_core::{Address, Level};
use mailtls_store::{Queue, QueuedMessage, RecipientState, SqlStore, TlsMemory, Users};
use serde::Serialize;

/// `mailtls user …`.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create an account (the password is read from a prompt, or from the
    /// first line of standard input when it is not a terminal).
    Add {
        /// The account's address, e.g. alice@example.org.
        address: String,
    },
}

/// `mailtls memory …`.
#[derive(Debug, clap::Subcommand)]
pub enum MemoryCommand {
    /// List the alerts: hosts and domains that did TLS before and did less
    /// later (possible downgrade attacks), newest first.
    Alerts {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what the memory holds for a domain or MX host.
    Show {
        /// A recipient domain or an MX host name.
        name: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Forget a domain or host (an operator's decision, logged): TLS is no
    /// longer required for it until it is seen with TLS again.
    Forget {
        /// A recipient domain or an MX host name.
        name: String,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "operator reset")]
        reason: String,
    },
}

/// `mailtls queue …`.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// List queued messages and the state of each recipient.
    List {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one message.
    Show {
        /// Queue id.
        id: String,
    },
    /// Make a message's pending recipients due now (`serve` picks them up).
    Retry {
        /// Queue id.
        id: String,
    },
    /// Delete a message from the queue (no bounce is sent).
    Delete {
        /// Queue id.
        id: String,
    },
}

fn fail(message: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("mailtls: error: {message}");
    ExitCode::FAILURE
}

fn print_json<T: Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn stamp(t: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.max(0).unsigned_abs()))
        .to_string()
}

/// Runs `user …`.
pub async fn user(store: &SqlStore, command: UserCommand) -> ExitCode {
    match command {
        UserCommand::Add { address } => {
            let address = match Address::parse(&address) {
                Ok(a) => a.to_string(),
                Err(e) => return crate::usage_error(&format!("'{address}': {e}")),
            };
            let password = match read_password(&address) {
                Ok(p) => p,
                Err(e) => return fail(&format!("cannot read the password: {e}")),
            };
            if password.is_empty() {
                return crate::usage_error(&"empty password");
            }
            match store.add_user(&address, &password).await {
                Ok(()) => {
                    println!("user {address} created");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// A prompt without echo on a terminal; else the first line of stdin.
fn read_password(address: &str) -> std::io::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {address}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            return Err(std::io::Error::other("the passwords differ"));
        }
        return Ok(first);
    }
    let mut line = String::new();
    // Bounded read: a password longer than this is refused by the store.
    std::io::BufReader::new(std::io::stdin().lock().take(4096)).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Runs `memory …`.
pub async fn memory(store: &SqlStore, command: MemoryCommand) -> ExitCode {
    match command {
        MemoryCommand::Alerts { limit, json } => match store.alerts(limit).await {
            Ok(alerts) if json => print_json(&alerts),
            Ok(alerts) => {
                if alerts.is_empty() {
                    println!("no alerts");
                }
                for a in alerts {
                    println!(
                        "#{} {} {}: {}",
                        a.id,
                        stamp(a.alert.at),
                        a.alert.key,
                        a.alert.detail
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        MemoryCommand::Show { name, json } => {
            let mut entries: Vec<MemoryEntry> = Vec::new();
            for key in [MemoryKey::domain(&name), MemoryKey::host(&name)] {
                match store.entry(&key).await {
                    Ok(Some(entry)) => entries.push(entry),
                    Ok(None) => {}
                    Err(e) => return fail(&e),
                }
            }
            if json {
                return print_json(&entries);
            }
            if entries.is_empty() {
                println!("{name}: nothing in the TLS memory (SSL ?)");
            }
            for e in entries {
                println!(
                    "{}: best {} (last {})",
                    e.key,
                    Level::Known(e.best_level).status_text(),
                    Level::Known(e.last_level).status_text()
                );
                if let (Some(first), Some(last)) = (e.first_tls_at, e.last_tls_at) {
                    println!(
                        "  TLS first seen {}, last seen {}",
                        stamp(first),
                        stamp(last)
                    );
                }
                if let (Some(p), Some(c)) = (&e.protocol, &e.cipher) {
                    println!("  last TLS session: {p}, {c}");
                }
                if let Some(fp) = &e.cert_sha256 {
                    println!("  certificate sha256: {fp}");
                }
                if let (Some(f), Some(at)) = (&e.last_failure, e.last_failure_at) {
                    println!("  last failure {}: {f}", stamp(at));
                }
            }
            ExitCode::SUCCESS
        }
        MemoryCommand::Forget { name, reason } => {
            let mut forgotten = Vec::new();
            for key in [MemoryKey::domain(&name), MemoryKey::host(&name)] {
                match store.forget(&key, &reason).await {
                    Ok(true) => forgotten.push(key.to_string()),
                    Ok(false) => {}
                    Err(e) => return fail(&e),
                }
            }
            tracing::info!(name, reason, ?forgotten, "TLS memory reset by an operator");
            if forgotten.is_empty() {
                println!("{name}: nothing to forget");
            } else {
                println!("forgot {} (reason: {reason})", forgotten.join(" and "));
            }
            ExitCode::SUCCESS
        }
    }
}

fn describe(message: &QueuedMessage, out: &mut impl Write) -> std::io::Result<()> {
    let sender = if message.sender.is_empty() {
        "<>"
    } else {
        &message.sender
    };
    writeln!(
        out,
        "{}  {} bytes  from {sender}  received {}{}",
        message.id,
        message.size,
        stamp(message.received_at),
        match message.sender_requirement {
            Some(r) => format!("  (the sender requires {r})"),
            None => String::new(),
        }
    )?;
    for r in &message.recipients {
        let reason = r
            .last_reason
            .as_deref()
            .map(|why| format!(": {why}"))
            .unwrap_or_default();
        let status = r
            .last_status
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        let next = if r.state == RecipientState::Pending {
            format!(", next {}", stamp(r.next_attempt_at))
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {} {}{status} after {} attempt(s){next}{reason}",
            r.address,
            r.state.as_str(),
            r.attempts,
        )?;
    }
    Ok(())
}

/// Runs `queue …`; `data_dir` holds the spool whose files `delete` removes.
pub async fn queue(
    store: &SqlStore,
    data_dir: &std::path::Path,
    command: QueueCommand,
) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match command {
        QueueCommand::List { json } => match store.list().await {
            Ok(messages) if json => print_json(&messages),
            Ok(messages) => {
                if messages.is_empty() {
                    println!("the queue is empty");
                }
                for m in &messages {
                    if let Err(e) = describe(m, &mut stdout) {
                        return fail(&e);
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        QueueCommand::Show { id } => match store.message(&id).await {
            Ok(Some(m)) => {
                describe(&m, &mut stdout).map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS)
            }
            Ok(None) => fail(&format!("no message {id} in the queue")),
            Err(e) => fail(&e),
        },
        QueueCommand::Retry { id } => match store.retry_now(&id).await {
            Ok(true) => {
                println!("{id}: pending recipients are due now");
                ExitCode::SUCCESS
            }
            Ok(false) => fail(&format!("no pending recipients for {id}")),
            Err(e) => fail(&e),
        },
        QueueCommand::Delete { id } => match store.delete(&id).await {
            Ok(true) => {
                tracing::info!(id, "queued message deleted by an operator");
                let spool = mailtls_relay::spool::Spool::open(data_dir);
                match async { spool?.remove(&id).await }.await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        eprintln!(
                            "mailtls: warning: {id}: the spool file could not be removed: {e}"
                        );
                    }
                    _ => {}
                }
                println!("{id}: deleted");
                ExitCode::SUCCESS
            }
            Ok(false) => fail(&format!("no message {id} in the queue")),
            Err(e) => fail(&e),
        },
    }
}

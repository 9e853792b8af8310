//! # mailtls
//!
//! The command line (SPEC §5): `check` answers, per address, whether mail to
//! that recipient's provider travels encrypted (`DANE ok`, `SSL ok`,
//! `no SSL`, `SSL ?`, or why it would not be delivered); `scan` does the same
//! for a file of domains, concurrently.
//!
//! Exit status: 0 when every input was checked, 1 when any input was not a
//! valid address, 2 on a usage or configuration error.
//!
//! `serve` runs the relay and the inbound MX (issues #3, #4); `user`,
//! `settings`, `memory` and `queue` manage its state. The binary (`src/main.rs`) only calls [`run`].

pub mod admin;
pub mod config;
pub mod output;
pub mod scan;
pub mod settings;
pub mod store_cmd;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use mailtls_check::{Checker, MemoryUse};
use mailtls_core::{Address, CheckReport, Problem, Target};
use mailtls_store::SqlStore;

use crate::config::{CheckFlags, FileConfig};
use crate::output::Colour;

/// Exit status: a usage or configuration error (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: at least one input was not a valid address.
pub const EXIT_INVALID_INPUT: u8 = 1;
/// Addresses given on the command line checked at once.
const CHECK_CONCURRENCY: usize = 64;

/// Know before you press send whether mail to a recipient travels encrypted.
#[derive(Debug, Parser)]
#[command(name = "mailtls", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (SPEC §5); without it, built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (SQLite store, spool); overrides `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the transport security to each address's mail provider.
    Check(CheckArgs),
    /// Check every domain or address in a file (one per line), concurrently.
    Scan(scan::ScanArgs),
    /// Run mailtls: the inbound MX (25), submission (587 STARTTLS, 465
    /// implicit TLS), the durable queue, delivery (SPEC §2) and local
    /// delivery (Maildir or LMTP). Without a config file: SQLite in the
    /// data directory, listeners on loopback.
    Serve,
    /// Manage accounts.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Inspect and manage the TLS memory (SPEC §3).
    #[command(subcommand)]
    Memory(admin::MemoryCommand),
    /// Inspect and manage the outbound queue.
    #[command(subcommand)]
    Queue(admin::QueueCommand),
    /// Show and change a user's settings: Encrypted Sending and the secure
    /// alias (SPEC §4).
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// The store itself: migrate its schema, export and import its
    /// contents (SQLite ⇄ PostgreSQL, issue #6).
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Print one JSON document (an array with one object per address).
    #[arg(long)]
    json: bool,
    /// Show the details per MX host.
    #[arg(long, short)]
    verbose: bool,
    /// Answer only from the TLS memory: `SSL ?` for domains never contacted.
    #[arg(long, conflicts_with = "probe")]
    no_probe: bool,
    /// Probe live even when the TLS memory knows the domain.
    #[arg(long)]
    probe: bool,
    #[command(flatten)]
    flags: CheckFlags,
    /// The addresses to check.
    #[arg(required = true, value_name = "ADDRESS")]
    addresses: Vec<String>,
}

/// Parses the command line, runs the command, and returns the exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let file = match &cli.config {
        Some(path) => match FileConfig::load(path) {
            Ok(file) => file,
            Err(e) => return usage_error(&e),
        },
        None => FileConfig::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage_error(&format!("cannot start the async runtime: {e}")),
    };
    let data_dir = config::data_dir(&file, cli.data_dir.as_deref());
    match cli.command {
        Command::Check(args) => runtime.block_on(check(&file, &data_dir, args)),
        Command::Scan(args) => runtime.block_on(scan::run(&file, args)),
        Command::Serve => runtime.block_on(serve(&file, &data_dir)),
        Command::User(command) => runtime.block_on(with_store(&file, &data_dir, |s| async move {
            admin::user(&s, command).await
        })),
        Command::Memory(command) => {
            runtime.block_on(with_store(&file, &data_dir, |s| async move {
                admin::memory(&s, command).await
            }))
        }
        Command::Settings(command) => {
            let hostname = match config::check_config(&file, &CheckFlags::default()) {
                Ok(check) => check.probe.helo_name,
                Err(e) => return usage_error(&e),
            };
            let (_, secure_domain) = config::mail_domains(&file, &hostname);
            runtime.block_on(with_store(&file, &data_dir, |s| async move {
                settings::run(&s, secure_domain.as_deref(), command).await
            }))
        }
        Command::Queue(command) => {
            let dir = data_dir.clone();
            runtime.block_on(with_store(&file, &data_dir, |s| async move {
                admin::queue(&s, &dir, command).await
            }))
        }
        Command::Store(command) => runtime.block_on(store_cmd::run(&file, &data_dir, command)),
    }
}

/// `mailtls serve`: runs until SIGINT or SIGTERM, then shuts down cleanly
/// (the queue is on disk, so even `kill -9` loses no accepted message).
async fn serve(file: &FileConfig, data_dir: &std::path::Path) -> ExitCode {
    let config = match config::relay_config(file, data_dir) {
        Ok(config) => config,
        Err(e) => return usage_error(&e),
    };
    let resolver = match mailtls_dns::MailResolver::new(&config.dns) {
        Ok(resolver) => resolver,
        Err(e) => return usage_error(&format!("DNS: {e}")),
    };
    let tls = match mailtls_tls::TlsClient::new() {
        Ok(tls) => tls,
        Err(e) => return usage_error(&format!("TLS: {e}")),
    };
    let store = match open_store(file, data_dir).await {
        Ok(store) => store,
        Err(e) => return usage_error(&e),
    };
    let relay = match mailtls_relay::Relay::start(config, store.clone(), resolver, tls).await {
        Ok(relay) => relay,
        Err(e) => return usage_error(&format!("cannot start the relay: {e}")),
    };
    let show = |addrs: &[std::net::SocketAddr]| {
        if addrs.is_empty() {
            return "(none)".to_owned();
        }
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    tracing::info!(
        inbound = %show(relay.inbound_addrs()),
        submission = %show(relay.submission_addrs()),
        submission_tls = %show(relay.submission_tls_addrs()),
        data_dir = %data_dir.display(),
        "mailtls serve: ready"
    );
    eprintln!(
        "mailtls serve: inbound MX on {}, submission (STARTTLS) on {}, implicit TLS on {}, data in {}",
        show(relay.inbound_addrs()),
        show(relay.submission_addrs()),
        show(relay.submission_tls_addrs()),
        data_dir.display()
    );
    // The web pages and the JSON API (issue #5), beside the relay.
    let mut web = None;
    if let Some((listen, web_config)) = config::web_config(file) {
        let app = config::check_config(file, &config::CheckFlags::default())
            .map_err(|e| e.to_string())
            .and_then(|c| Checker::new(&c).map_err(|e| e.to_string()))
            .map(|checker| mailtls_web::App::new(checker, store.clone(), web_config));
        let started = match app {
            Ok(app) => mailtls_web::serve(listen.addr, app)
                .await
                .map_err(|e| format!("[web] listen {}: {e}", listen.addr)),
            Err(e) => Err(e),
        };
        match started {
            Ok(server) => {
                eprintln!("mailtls serve: web on http://{}", server.addr());
                web = Some(server);
            }
            Err(e) if listen.explicit => {
                relay.shutdown().await;
                return usage_error(&e);
            }
            Err(e) => {
                eprintln!("mailtls serve: warning: web pages not started ({e}); set [web] listen")
            }
        }
    }
    wait_for_signal().await;
    eprintln!("mailtls serve: shutting down");
    if let Some(web) = web {
        web.shutdown().await;
    }
    relay.shutdown().await;
    store.close().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Opens the store: `[store] url`, else SQLite in the data directory.
pub(crate) async fn open_store(
    file: &FileConfig,
    data_dir: &std::path::Path,
) -> Result<SqlStore, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    SqlStore::open(&config::store_url(file, data_dir))
        .await
        .map(|store| store.with_node(&config::node_name(file)))
        .map_err(|e| e.to_string())
}

async fn with_store<F, Fut>(file: &FileConfig, data_dir: &std::path::Path, run: F) -> ExitCode
where
    F: FnOnce(SqlStore) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    match open_store(file, data_dir).await {
        Ok(store) => {
            let code = run(store.clone()).await;
            store.close().await;
            code
        }
        Err(e) => usage_error(&e),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILTLS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,hickory_net=error,hickory_proto=error,hickory_resolver=error",
        )
    });
    // Colour only on a terminal (a log file gets plain text), and never
    // with NO_COLOR set (no-color.org).
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Prints `error: …` to stderr and returns exit status 2.
pub(crate) fn usage_error(message: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("mailtls: error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Builds the checker from the file and flags, or explains why not.
pub(crate) fn checker(file: &FileConfig, flags: &CheckFlags) -> Result<Checker, ExitCode> {
    let config = config::check_config(file, flags).map_err(|e| usage_error(&e))?;
    Checker::new(&config).map_err(|e| usage_error(&e))
}

async fn check(file: &FileConfig, data_dir: &std::path::Path, args: CheckArgs) -> ExitCode {
    let checker = match checker(file, &args.flags) {
        Ok(checker) => checker,
        Err(code) => return code,
    };
    // The memory is a help, not a precondition: without it the check still
    // answers from live probes (and says so).
    let store = open_store(file, data_dir)
        .await
        .map_err(|e| eprintln!("mailtls: warning: the TLS memory is unavailable ({e}); answering from live probes only"))
        .ok();
    let mode = if args.no_probe {
        MemoryUse::Only
    } else if args.probe {
        MemoryUse::Bypass
    } else {
        MemoryUse::First
    };
    let reports: Vec<CheckReport> = futures_util::stream::iter(&args.addresses)
        .map(|input| check_one(&checker, store.as_ref(), mode, input))
        .buffered(CHECK_CONCURRENCY)
        .collect()
        .await;
    if let Some(store) = store {
        store.close().await;
    }

    let mut stdout = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut stdout, &reports)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        let colour = Colour::detect(std::io::stdout().is_terminal());
        reports
            .iter()
            .try_for_each(|r| stdout.write_all(output::human(r, args.verbose, colour).as_bytes()))
    };
    match written.and_then(|()| stdout.flush()) {
        // A closed pipe (`mailtls check … | head`) is the reader's choice.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            usage_error(&format!("cannot write the output: {e}"))
        }
        _ => exit_status(&reports),
    }
}

/// One address: the memory and/or a probe, as `mode` says.
async fn check_one(
    checker: &Checker,
    store: Option<&SqlStore>,
    mode: MemoryUse,
    input: &str,
) -> CheckReport {
    let target = match Address::parse(input) {
        Ok(address) => Target::Address(address),
        Err(error) => {
            return CheckReport::invalid(input.trim(), &error, std::time::SystemTime::now());
        }
    };
    match store {
        Some(store) => checker.check_remembering(&target, store, mode).await,
        None if mode == MemoryUse::Only => {
            CheckReport::from_memory(&target, None, std::time::SystemTime::now())
        }
        None => checker.check(&target).await,
    }
}

/// 1 if any input was invalid, else 0.
fn exit_status(reports: &[CheckReport]) -> ExitCode {
    if reports
        .iter()
        .any(|r| r.problem == Some(Problem::InvalidAddress))
    {
        ExitCode::from(EXIT_INVALID_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}

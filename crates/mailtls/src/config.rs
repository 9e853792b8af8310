//! The TOML configuration file (SPEC §5), in two stages (STYLE.md):
//!
//! 1. [`FileConfig::parse`] reads and validates the text without touching the
//!    system. Unknown keys are errors, so a typo never silently falls back
//!    to a default.
//! 2. [`check_config`] builds what the check needs from the validated value
//!    and the command-line flags (a flag wins over the file).
//!
//! Every key of SPEC §5 is accepted now, so one file serves every command;
//! keys for listeners, the store and the relay are validated here and used by
//! `mailtls serve` once it exists. Each default is documented where it is
//! defined.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailtls_check::CheckConfig;
use mailtls_core::Domain;
use mailtls_dns::{DnsConfig, DnsMode};
use mailtls_relay::RelayConfig;
use mailtls_relay::config::{Network, TlsIdentity};
use mailtls_relay::local::{LmtpTarget, MailStore};
use mailtls_smtp::ProbeConfig;
use serde::Deserialize;

/// Largest configuration file read (a config is a few KiB; this bounds a
/// mistaken `--config /dev/zero`).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why the configuration is unusable. Exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any sane configuration.
    #[error("{0}: larger than {MAX_CONFIG_BYTES} bytes; is this a configuration file?")]
    TooLarge(PathBuf),
    /// TOML syntax, an unknown key or a wrongly typed value.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key and line).
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// The whole file (SPEC §5). Absent keys take the documented defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where SQLite, the spool, Maildirs and generated keys live.
    /// Default: `/var/lib/mailtls` for root, else `./mailtls-data`.
    pub data_dir: Option<PathBuf>,
    /// EHLO name and banner. Default: the machine's host name.
    pub hostname: Option<String>,
    /// `[dns]`.
    #[serde(default)]
    pub dns: DnsSection,
    /// `[probe]`.
    #[serde(default)]
    pub probe: ProbeSection,
    /// `[tls]` (listeners; used by `serve`).
    #[serde(default)]
    pub tls: TlsSection,
    /// `[smtp]` (listeners; used by `serve`).
    #[serde(default)]
    pub smtp: SmtpSection,
    /// `[relay]` (used by `serve`).
    #[serde(default)]
    pub relay: RelaySection,
    /// `[delivery]` (used by `serve`).
    #[serde(default)]
    pub delivery: DeliverySection,
    /// `[web]` (used by `serve`).
    #[serde(default)]
    pub web: WebSection,
    /// `[store]` (used by `serve`).
    #[serde(default)]
    pub store: StoreSection,
}

/// `[dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// `IP:PORT` of the upstream resolver. Default: the system's resolvers
    /// (`/etc/resolv.conf`).
    pub resolver: Option<String>,
    /// `validate` (default: DNSSEC validated in-process) or `trust-ad` (trust
    /// the AD bit of a validating resolver on a loopback address).
    pub mode: Option<String>,
    /// DNSKEY or DS records in zone-file format. Default: the IANA root
    /// trust anchor built into hickory.
    pub trust_anchor: Option<PathBuf>,
}

/// `[probe]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    /// Probe private, loopback and link-local addresses? Default: false
    /// (SPEC §7).
    pub allow_private: Option<bool>,
    /// Time limit for the SMTP dialogue with one address, seconds. Default: 30.
    pub timeout_secs: Option<u64>,
    /// The SMTP port probed. Default: 25, the only port MX delivery uses;
    /// other values exist for test worlds.
    pub smtp_port: Option<u16>,
}

/// `[tls]`: the listeners' certificate (used by `serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain. Default: a generated self-signed certificate.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[smtp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// `[smtp.inbound]`.
    #[serde(default)]
    pub inbound: InboundSection,
    /// `[smtp.submission]`.
    #[serde(default)]
    pub submission: SubmissionSection,
}

/// `[smtp.inbound]` (used by `serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSection {
    /// Listen addresses. Default: loopback only.
    pub listen: Option<Vec<String>>,
    /// Domains whose mail is accepted.
    pub local_domains: Option<Vec<String>>,
    /// The secure alias domain (SPEC §4).
    pub secure_domain: Option<String>,
}

/// `[smtp.submission]` (used by `serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionSection {
    /// STARTTLS submission listeners.
    pub listen: Option<Vec<String>>,
    /// Implicit-TLS submission listeners.
    pub listen_tls: Option<Vec<String>>,
}

/// `[relay]` (used by `serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// CIDRs allowed to relay without AUTH. Default: none.
    pub trusted_networks: Option<Vec<String>>,
    /// Queue lifetime, seconds. Default: 432000 (5 days).
    pub queue_lifetime_secs: Option<u64>,
    /// First retry delay, seconds; doubles per attempt. Default: 300
    /// (Postfix's `minimal_backoff_time`).
    pub retry_base_secs: Option<u64>,
    /// Longest retry delay, seconds. Default: 4000 (Postfix's
    /// `maximal_backoff_time`).
    pub retry_max_secs: Option<u64>,
    /// Largest message accepted, bytes (RFC 1870 SIZE). Default: 26214400.
    pub max_message_size: Option<usize>,
    /// Most recipients per message. Default: 100 (RFC 5321 §4.5.3.1.8).
    pub max_recipients: Option<usize>,
}

/// `[delivery]` (used by `serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    /// `host:port` or a socket path; empty: Maildir.
    pub lmtp: Option<String>,
}

/// `[web]` (used by `serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// `IP:PORT` of the web pages and the JSON API (plain HTTP; put a
    /// TLS-terminating proxy in front for anything but loopback). Default:
    /// `127.0.0.1:8080`; `""` turns the web side off.
    pub listen: Option<String>,
    /// Addresses one client (IP address, IPv6 /64) may have checked per
    /// minute, on the check page and the API together (SPEC §7). Default: 60.
    pub check_rate_per_minute: Option<u32>,
    /// Failed sign-ins one client may make per minute. Default: 5.
    pub signin_failures_per_minute: Option<u32>,
    /// Live probes the web side runs at once. Default: 8.
    pub probe_concurrency: Option<usize>,
    /// Mark the session cookie `Secure`: set it when a proxy serves the
    /// pages over HTTPS. Default: false (the default listener is loopback
    /// HTTP, where a `Secure` cookie would never be sent back).
    pub secure_cookies: Option<bool>,
}

/// `[store]` (used by `serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Empty: SQLite in `data_dir`; or `postgres://…`.
    pub url: Option<String>,
    /// This node's name in a fleet sharing one PostgreSQL (default: the
    /// host name). Each node delivers the messages it accepted (their
    /// bodies are in its spool); names must be unique in the fleet.
    pub node: Option<String>,
}

impl FileConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(path.to_owned()));
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        FileConfig::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text and validates every value; the error names the
    /// offending key.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?;
        file.validate()?;
        Ok(file)
    }

    /// Checks values that parse as TOML but cannot be used, without touching
    /// the system (no file is opened, no socket bound).
    fn validate(&self) -> Result<(), String> {
        if self
            .data_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err("data_dir: must not be empty".into());
        }
        if let Some(name) = &self.hostname {
            Domain::parse(name).map_err(|e| format!("hostname '{name}': {e}"))?;
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(
                "[tls]: give both cert and key, or neither (a self-signed pair is generated)"
                    .into(),
            );
        }
        let listeners = [
            ("[smtp.inbound] listen", &self.smtp.inbound.listen),
            ("[smtp.submission] listen", &self.smtp.submission.listen),
            (
                "[smtp.submission] listen_tls",
                &self.smtp.submission.listen_tls,
            ),
        ];
        for (key, list) in listeners {
            for addr in list.iter().flatten() {
                addr.parse::<SocketAddr>()
                    .map_err(|_| format!("{key}: '{addr}' is not IP:PORT"))?;
            }
        }
        if let Some(addr) = self.web.listen.as_ref().filter(|a| !a.is_empty()) {
            addr.parse::<SocketAddr>()
                .map_err(|_| format!("[web] listen: '{addr}' is not IP:PORT (or \"\" for none)"))?;
        }
        if self.web.check_rate_per_minute == Some(0)
            || self.web.signin_failures_per_minute == Some(0)
            || self
                .web
                .probe_concurrency
                .is_some_and(|n| !(1..=256).contains(&n))
        {
            return Err("[web] check_rate_per_minute and signin_failures_per_minute must be positive, probe_concurrency 1 to 256".into());
        }
        let inbound = &self.smtp.inbound;
        for domain in inbound
            .local_domains
            .iter()
            .flatten()
            // An empty secure_domain switches the secure alias off.
            .chain(inbound.secure_domain.iter().filter(|d| !d.is_empty()))
        {
            Domain::parse(domain).map_err(|e| format!("[smtp.inbound]: domain '{domain}': {e}"))?;
        }
        for net in self.relay.trusted_networks.iter().flatten() {
            parse_cidr(net).ok_or_else(|| {
                format!("[relay] trusted_networks: '{net}' is not a CIDR such as 192.0.2.0/24")
            })?;
        }
        let relay = &self.relay;
        for (key, value) in [
            ("queue_lifetime_secs", relay.queue_lifetime_secs),
            ("retry_base_secs", relay.retry_base_secs),
            ("retry_max_secs", relay.retry_max_secs),
        ] {
            if value == Some(0) {
                return Err(format!("[relay] {key}: must be positive"));
            }
        }
        if relay.max_message_size.is_some_and(|n| n < 1024) || relay.max_recipients == Some(0) {
            return Err(
                "[relay] max_message_size must be at least 1024 and max_recipients positive".into(),
            );
        }
        let lmtp = self.delivery.lmtp.as_deref().unwrap_or("");
        if !lmtp.is_empty() {
            LmtpTarget::parse(lmtp).map_err(|e| format!("[delivery] lmtp: {e}"))?;
        }
        let url = self.store.url.as_deref().unwrap_or("");
        let known_scheme = ["postgres://", "postgresql://", "sqlite:"]
            .iter()
            .any(|p| url.starts_with(p));
        if !url.is_empty() && !known_scheme {
            return Err(format!(
                "[store] url: '{url}' must be empty, postgres://… or sqlite:…"
            ));
        }
        Ok(())
    }
}

/// `192.0.2.0/24` or `2001:db8::/32`; a bare address is a host route.
fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = text.split_once('/').unwrap_or((text, ""));
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse().ok()?
    };
    (len <= max).then_some((ip, len))
}

/// The DNS and probe flags shared by `check` and `scan`; each overrides the
/// file's key of the same meaning.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct CheckFlags {
    /// Upstream DNS resolver, IP:PORT (default: the system's).
    #[arg(long, value_name = "IP:PORT")]
    pub resolver: Option<String>,
    /// Trust anchor file: DNSKEY or DS records in zone-file format
    /// (default: the IANA root anchor).
    #[arg(long, value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
    /// `validate` (in-process DNSSEC) or `trust-ad` (trust the AD bit of a
    /// validating resolver on a loopback address).
    #[arg(long, value_name = "MODE")]
    pub dns_mode: Option<String>,
    /// Also probe private, loopback and link-local addresses.
    #[arg(long)]
    pub allow_private: bool,
    /// Time limit for the SMTP dialogue with one server, seconds (default 30).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// SMTP port to probe (default 25; other ports are for test set-ups).
    #[arg(long, value_name = "PORT", hide = true)]
    pub smtp_port: Option<u16>,
}

/// The data directory: the flag, else `data_dir` from the file, else
/// `/var/lib/mailtls` for root and `$HOME/.local/share/mailtls` for others
/// (the embedded default needs no configuration at all).
pub fn data_dir(file: &FileConfig, flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag
        .map(Path::to_path_buf)
        .or_else(|| file.data_dir.clone())
    {
        return dir;
    }
    // Root runs a service; anyone else gets a per-user directory.
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    match std::env::var_os("HOME") {
        Some(home) if !is_root => PathBuf::from(home).join(".local/share/mailtls"),
        _ => PathBuf::from("/var/lib/mailtls"),
    }
}

/// Stage 2 for `serve`: the relay's configuration. This reads the
/// listeners' certificate and key (or generates a self-signed pair once, in
/// `<data_dir>/tls/`, for the embedded default).
pub fn relay_config(file: &FileConfig, data_dir: &Path) -> Result<RelayConfig, ConfigError> {
    let check = check_config(file, &CheckFlags::default())?;
    let listen = |list: &Option<Vec<String>>, default: &str| -> Vec<SocketAddr> {
        let list = list.clone().unwrap_or_else(|| vec![default.to_owned()]);
        // Validated in stage 1.
        list.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let trusted_networks = file
        .relay
        .trusted_networks
        .iter()
        .flatten()
        .filter_map(|n| parse_cidr(n))
        .map(|(addr, prefix)| Network { addr, prefix })
        .collect();
    let relay = &file.relay;
    let (local_domains, secure_domain) = mail_domains(file, &check.probe.helo_name);
    Ok(RelayConfig {
        hostname: check.probe.helo_name.clone(),
        data_dir: data_dir.to_owned(),
        inbound_listen: listen(&file.smtp.inbound.listen, DEFAULT_INBOUND),
        local_domains,
        secure_domain,
        mail_store: MailStore::from_setting(data_dir, file.delivery.lmtp.as_deref().unwrap_or(""))
            .map_err(|e| ConfigError::Invalid(format!("[delivery] lmtp: {e}")))?,
        submission_listen: listen(&file.smtp.submission.listen, DEFAULT_SUBMISSION),
        submission_tls_listen: listen(&file.smtp.submission.listen_tls, DEFAULT_SUBMISSION_TLS),
        trusted_networks,
        tls: tls_identity(file, data_dir, &check.probe.helo_name)?,
        max_message_size: relay.max_message_size.unwrap_or(25 * 1024 * 1024),
        max_recipients: relay.max_recipients.unwrap_or(100),
        max_connections: 100,
        idle_timeout: Duration::from_secs(300),
        queue_lifetime: Duration::from_secs(relay.queue_lifetime_secs.unwrap_or(432_000)),
        retry_base: Duration::from_secs(relay.retry_base_secs.unwrap_or(300)),
        retry_max: Duration::from_secs(relay.retry_max_secs.unwrap_or(4000)),
        delivery_concurrency: 20,
        dns: check.dns,
        allow_private: check.probe.allow_private,
        smtp_port: check.probe.port,
        smtp_timeout: Duration::from_secs(300),
    })
}

/// The local domains (lower-case A-labels; default: the hostname) and the
/// secure domain (default: `secure.` + the first local domain; SPEC §4).
/// Stage 1 validated each name.
pub fn mail_domains(file: &FileConfig, hostname: &str) -> (Vec<String>, Option<String>) {
    let a_label = |name: &str| {
        Domain::parse(name)
            .map(|d| d.as_str().trim_end_matches('.').to_ascii_lowercase())
            .unwrap_or_else(|_| name.to_ascii_lowercase())
    };
    let inbound = &file.smtp.inbound;
    let local: Vec<String> = match &inbound.local_domains {
        Some(list) => list.iter().map(|d| a_label(d)).collect(),
        None => vec![a_label(hostname)],
    };
    let secure = match &inbound.secure_domain {
        Some(name) if name.is_empty() => None,
        Some(name) => Some(a_label(name)),
        None => local.first().map(|d| format!("secure.{d}")),
    };
    (local, secure)
}

/// SPEC §5 embedded default: the inbound MX on loopback only.
const DEFAULT_INBOUND: &str = "127.0.0.1:25";
/// SPEC §5 embedded default: submission on loopback only.
const DEFAULT_SUBMISSION: &str = "127.0.0.1:587";
/// SPEC §5 embedded default: implicit-TLS submission on loopback only.
const DEFAULT_SUBMISSION_TLS: &str = "127.0.0.1:465";

/// The listeners' certificate: `[tls] cert`/`key`, else a self-signed pair
/// generated on first use and kept in `<data_dir>/tls/` (key mode 0600).
fn tls_identity(
    file: &FileConfig,
    data_dir: &Path,
    hostname: &str,
) -> Result<TlsIdentity, ConfigError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
    };
    if let (Some(cert), Some(key)) = (&file.tls.cert, &file.tls.key) {
        return Ok(TlsIdentity {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        });
    }
    let dir = data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok(TlsIdentity {
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
        });
    }
    let identity = mailtls_relay::server::generate_self_signed(hostname)
        .map_err(|e| ConfigError::Invalid(format!("cannot generate a certificate: {e}")))?;
    let write = |path: &Path, bytes: &[u8], mode: u32| -> Result<(), ConfigError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(err)?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
    };
    std::fs::create_dir_all(&dir).map_err(|source| ConfigError::Read {
        path: dir.clone(),
        source,
    })?;
    write(&key, &identity.key_pem, 0o600)?;
    write(&cert, &identity.cert_pem, 0o644)?;
    Ok(identity)
}

/// SPEC §5 embedded default: the web pages on loopback only.
const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8080";

/// Where the web side listens, from `[web] listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebListen {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Whether the operator chose it (a bind failure is then fatal); the
    /// embedded default only warns, so that several instances and test
    /// runs on one machine do not fight over port 8080.
    pub explicit: bool,
}

/// Stage 2 for `serve`: the web side's listener and settings (issue #5);
/// `None` when `[web] listen = ""` turns it off.
pub fn web_config(file: &FileConfig) -> Option<(WebListen, mailtls_web::WebConfig)> {
    let listen = match file.web.listen.as_deref() {
        Some("") => return None,
        // Validated in stage 1.
        Some(addr) => WebListen {
            addr: addr.parse().ok()?,
            explicit: true,
        },
        None => WebListen {
            addr: DEFAULT_WEB_LISTEN.parse().ok()?,
            explicit: false,
        },
    };
    let defaults = mailtls_web::WebConfig::default();
    let web = &file.web;
    Some((
        listen,
        mailtls_web::WebConfig {
            secure_domain: file.smtp.inbound.secure_domain.clone(),
            check_rate_per_minute: web
                .check_rate_per_minute
                .unwrap_or(defaults.check_rate_per_minute),
            signin_failures_per_minute: web
                .signin_failures_per_minute
                .unwrap_or(defaults.signin_failures_per_minute),
            probe_concurrency: web.probe_concurrency.unwrap_or(defaults.probe_concurrency),
            secure_cookies: web.secure_cookies.unwrap_or(defaults.secure_cookies),
            ..defaults
        },
    ))
}

/// This node's name in a fleet: `[store] node`, else the host name.
pub fn node_name(file: &FileConfig) -> String {
    file.store
        .node
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| file.hostname.clone())
        .unwrap_or_else(system_hostname)
}

/// The store's location: `[store] url`, else SQLite in the data directory.
pub fn store_url(file: &FileConfig, data_dir: &Path) -> String {
    match file.store.url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => url.to_owned(),
        None => format!("sqlite:{}", data_dir.join("mailtls.sqlite").display()),
    }
}

/// DNS queries never wait longer than this, whatever the probe timeout.
const MAX_DNS_TIMEOUT: Duration = Duration::from_secs(10);
/// SPEC §5: `[probe] timeout_secs = 30`.
const DEFAULT_PROBE_TIMEOUT_SECS: u64 = 30;

/// Stage 2: the check's configuration from the file and the flags.
pub fn check_config(file: &FileConfig, flags: &CheckFlags) -> Result<CheckConfig, ConfigError> {
    let resolver = match flags.resolver.as_deref().or(file.dns.resolver.as_deref()) {
        None => None,
        Some(text) => Some(parse_resolver(text)?),
    };
    let mode = match flags
        .dns_mode
        .as_deref()
        .or(file.dns.mode.as_deref())
        .unwrap_or("validate")
    {
        "validate" => DnsMode::Validate,
        "trust-ad" => DnsMode::TrustAd,
        other => {
            return Err(ConfigError::Invalid(format!(
                "DNS mode '{other}' is unknown: use 'validate' or 'trust-ad'"
            )));
        }
    };
    let timeout_secs = flags
        .timeout
        .or(file.probe.timeout_secs)
        .unwrap_or(DEFAULT_PROBE_TIMEOUT_SECS);
    if !(1..=600).contains(&timeout_secs) {
        return Err(ConfigError::Invalid(format!(
            "timeout {timeout_secs}s: use 1 to 600 seconds"
        )));
    }
    let timeout = Duration::from_secs(timeout_secs);
    let helo_name = match &file.hostname {
        Some(name) => name.clone(),
        None => system_hostname(),
    };
    Ok(CheckConfig {
        dns: DnsConfig {
            resolver,
            mode,
            trust_anchor: flags
                .trust_anchor
                .clone()
                .or_else(|| file.dns.trust_anchor.clone()),
            timeout: timeout.min(MAX_DNS_TIMEOUT),
        },
        probe: ProbeConfig {
            helo_name,
            timeout,
            port: flags.smtp_port.or(file.probe.smtp_port).unwrap_or(25),
            allow_private: flags.allow_private || file.probe.allow_private.unwrap_or(false),
        },
    })
}

fn parse_resolver(text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // A bare address means port 53.
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            ConfigError::Invalid(format!(
                "resolver '{text}' is not IP:PORT (e.g. 127.0.0.1:53 or [::1]:53)"
            ))
        })
}

/// The EHLO name when `hostname` is not configured: the kernel's host name,
/// else a name under `.invalid` (RFC 2606) rather than a made-up real one.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= 253)
        .unwrap_or_else(|| "mailtls.invalid".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_takes_the_defaults() {
        let file = FileConfig::parse("").expect("empty is valid");
        let config = check_config(&file, &CheckFlags::default()).expect("valid");
        assert_eq!(config.dns.resolver, None);
        assert!(matches!(config.dns.mode, DnsMode::Validate));
        assert_eq!(config.probe.timeout, Duration::from_secs(30));
        assert_eq!(config.probe.port, 25);
        assert!(!config.probe.allow_private);
    }

    #[test]
    fn the_spec_example_parses() {
        let text = r#"
data_dir = "/var/lib/mailtls"
hostname = "mail.example.org"
[dns]
resolver = "127.0.0.53:53"
mode = "validate"
trust_anchor = "/etc/mailtls/root.key"
[probe]
allow_private = false
timeout_secs = 30
[tls]
cert = "/etc/mailtls/cert.pem"
key = "/etc/mailtls/key.pem"
[smtp.inbound]
listen = ["0.0.0.0:25"]
local_domains = ["example.org"]
secure_domain = "secure.example.org"
[smtp.submission]
listen = ["0.0.0.0:587"]
listen_tls = ["0.0.0.0:465"]
[relay]
trusted_networks = []
queue_lifetime_secs = 432000
[delivery]
lmtp = ""
[web]
listen = "127.0.0.1:8080"
[store]
url = ""
"#;
        let file = FileConfig::parse(text).expect("SPEC §5 example is valid");
        let config = check_config(&file, &CheckFlags::default()).expect("valid");
        assert_eq!(
            config.dns.resolver,
            Some("127.0.0.53:53".parse().expect("addr"))
        );
        assert_eq!(config.probe.helo_name, "mail.example.org");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = FileConfig::parse("[dns]\nresolvr = \"1.2.3.4:53\"\n").expect_err("typo");
        assert!(err.contains("resolvr"), "{err}");
        assert!(FileConfig::parse("colour = true").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig::parse(
            "[dns]\nmode = \"trust-ad\"\nresolver = \"127.0.0.1:53\"\n[probe]\ntimeout_secs = 5\n",
        )
        .expect("valid");
        let flags = CheckFlags {
            dns_mode: Some("validate".into()),
            timeout: Some(7),
            allow_private: true,
            ..CheckFlags::default()
        };
        let config = check_config(&file, &flags).expect("valid");
        assert!(matches!(config.dns.mode, DnsMode::Validate));
        assert_eq!(config.probe.timeout, Duration::from_secs(7));
        assert!(config.probe.allow_private);
    }

    #[test]
    fn unusable_values_in_later_sections_are_refused_now() {
        for text in [
            "[smtp.inbound]\nlisten = [\"0.0.0.0\"]",
            "[relay]\ntrusted_networks = [\"10.0.0.0/33\"]",
            "[tls]\ncert = \"/c.pem\"",
            "[store]\nurl = \"mysql://x\"",
            "[delivery]\nlmtp = \"dovecot\"",
            "hostname = \"-bad-.example\"",
        ] {
            assert!(FileConfig::parse(text).is_err(), "{text}");
        }
        assert!(
            FileConfig::parse("[relay]\ntrusted_networks = [\"192.0.2.0/24\", \"::1\"]").is_ok()
        );
    }

    #[test]
    fn web_section_builds_the_web_config() {
        let file = FileConfig::default();
        let (listen, web) = web_config(&file).expect("on by default");
        assert_eq!(listen.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert!(!listen.explicit);
        assert_eq!(web.check_rate_per_minute, 60);
        let file = FileConfig::parse(
            "[smtp.inbound]\nsecure_domain = \"secure.example.org\"\n[web]\nlisten = \"127.0.0.1:0\"\ncheck_rate_per_minute = 1000000\nsecure_cookies = true\n",
        )
        .expect("valid");
        let (listen, web) = web_config(&file).expect("on");
        assert!(listen.explicit);
        assert_eq!(web.check_rate_per_minute, 1_000_000);
        assert!(web.secure_cookies);
        assert_eq!(web.secure_domain.as_deref(), Some("secure.example.org"));
        let off = FileConfig::parse("[web]\nlisten = \"\"").expect("valid");
        assert!(web_config(&off).is_none());
        for bad in [
            "[web]\ncheck_rate_per_minute = 0",
            "[web]\nprobe_concurrency = 0",
            "[web]\nlisten = \"localhost\"",
            "[web]\nrate = 5",
        ] {
            assert!(FileConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        let file = FileConfig::default();
        for flags in [
            CheckFlags {
                resolver: Some("nonsense".into()),
                ..CheckFlags::default()
            },
            CheckFlags {
                dns_mode: Some("yolo".into()),
                ..CheckFlags::default()
            },
            CheckFlags {
                timeout: Some(0),
                ..CheckFlags::default()
            },
        ] {
            assert!(check_config(&file, &flags).is_err(), "{flags:?}");
        }
        let bare = CheckFlags {
            resolver: Some("::1".into()),
            ..CheckFlags::default()
        };
        assert_eq!(
            check_config(&file, &bare).expect("valid").dns.resolver,
            Some("[::1]:53".parse().expect("addr"))
        );
    }
}

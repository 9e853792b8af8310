//! Local delivery: mail accepted for our own users leaves the queue into a
//! mail store on this host (SPEC §5 "Mail store").
//!
//! The relay accepts inbound mail for its local domains and the secure alias
//! (SPEC §4), and somebody has to put it where the user's mail client reads
//! it. Two stores are supported, chosen by `[delivery] lmtp`:
//!
//! * **Maildir** (the default, no set-up): one Maildir per mailbox under
//!   `<data_dir>/mail`, written by the Maildir protocol
//!   (<https://cr.yp.to/proto/maildir.html>): write `tmp/<unique>`, fsync,
//!   rename into `new/`. A reader never sees a partial message and a crash
//!   never loses an acknowledged one.
//! * **LMTP** (RFC 2033): hand the message to an existing store (Dovecot,
//!   Cyrus) over TCP or a unix socket. LMTP is SMTP with one difference that
//!   matters here: after the message, the server answers once *per accepted
//!   recipient* (RFC 2033 §4.2), so one mailbox can be full while another
//!   takes the message.
//!
//! [`MailStore::deliver`] returns one [`LocalOutcome`] per recipient, with the
//! SMTP status the queue needs: delivered, deferred (retry later) or failed
//! (bounce).
//!
//! Decisions:
//!
//! * **At least once.** Whenever we cannot know whether the store kept the
//!   message (a timeout while writing, a connection lost after the data), the
//!   recipient is deferred and the queue delivers again. A duplicate is
//!   better than a loss.
//! * **Maildir directory names are derived, never trusted**
//!   ([`mailbox_dir_name`]): an address may contain `/`, `..` or a leading
//!   dot, and none of them may leave the Maildir root.
//! * **Maildir files use LF line ends.** The spool holds the message in wire
//!   form (CRLF); Maildir readers (Dovecot, Courier, mutt) expect the Unix
//!   convention of one LF per line, the same that Postfix's `virtual` and
//!   Dovecot itself write. Every CRLF becomes LF; anything else is kept
//!   byte for byte.
//! * **No pipelining in LMTP**: one command, one reply, through the same
//!   [`SmtpClient`] the relay delivers with, so replies are parsed once,
//!   with its limits, and every wait is bounded.
//! * **A store that does not speak LMTP defers.** A refused greeting or
//!   `LHLO` is the operator's configuration, not the sender's fault: the
//!   mail waits in the queue until it is fixed. Replies to `MAIL`, `RCPT` and
//!   the message follow their class (4xx defers, 5xx fails).

use std::fmt;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::net::Ipv6Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailtls_core::SmtpStatus;
use mailtls_smtp::transaction::{data_block, reply_status};
use mailtls_smtp::{Extensions, Reply, ReplyCode, SmtpClient, SmtpError, Timeouts};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// The directory under the data directory that holds the Maildirs.
pub const MAILDIR_ROOT: &str = "mail";

/// Longest file name most file systems accept, in octets.
const MAX_NAME_LEN: usize = 255;

/// RFC 3463 X.3.0 "other or undefined mail system status": the Maildir
/// could not be written (disk full, permissions); the queue retries.
const MAILDIR_FAILURE: SmtpStatus = SmtpStatus::new(451, 4, 3, 0);
/// RFC 3463 X.3.5 "system incorrectly configured": the LMTP server refused
/// the session itself (greeting or `LHLO`).
const STORE_MISCONFIGURED: SmtpStatus = SmtpStatus::new(451, 4, 3, 5);
/// RFC 3463 X.4.2 "bad connection": the LMTP session broke.
const CONNECTION_BROKEN: SmtpStatus = SmtpStatus::new(451, 4, 4, 2);
/// RFC 3463 X.5.0 "other or undefined protocol status": a reply that makes
/// no sense at that step (a `250` where `354` was due).
const PROTOCOL_CONFUSION: SmtpStatus = SmtpStatus::new(451, 4, 5, 0);
/// RFC 3463 X.1.3 "bad destination mailbox address syntax".
const BAD_MAILBOX: SmtpStatus = SmtpStatus::new(550, 5, 1, 3);
/// RFC 3463 X.1.7 "bad sender's mailbox address syntax".
const BAD_SENDER: SmtpStatus = SmtpStatus::new(550, 5, 1, 7);

/// Where local mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailStore {
    /// One Maildir per mailbox: `<root>/<mailbox_dir_name>/Maildir`.
    Maildir {
        /// The directory holding the mailboxes; created when missing.
        root: PathBuf,
    },
    /// An existing mail store, reached over LMTP (RFC 2033).
    Lmtp(LmtpTarget),
}

/// Where an LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpTarget {
    /// `host:port`, the host a name, an IPv4 address or a bracketed IPv6
    /// address (`[::1]:24`).
    Tcp(String),
    /// A unix-domain socket, e.g. Dovecot's `/run/dovecot/lmtp`.
    Unix(PathBuf),
}

/// Why a `[delivery] lmtp` value names no LMTP server.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LmtpTargetError {
    /// The value is empty (which, in the configuration, means Maildir).
    #[error("no LMTP server given")]
    Empty,
    /// Neither `host:port` nor an absolute path.
    #[error("'{0}' is neither host:port nor an absolute socket path")]
    Syntax(String),
    /// The port is not a number from 1 to 65535.
    #[error("'{0}': the port must be a number from 1 to 65535")]
    Port(String),
}

/// One recipient of a local delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecipient {
    /// The mailbox owner: the user account's address, e.g. `me@example.org`.
    /// It names the Maildir and is the LMTP `RCPT TO`.
    pub mailbox: String,
    /// The address the mail was sent to, e.g. the secure alias
    /// `me@secure.example.org`; recorded in the Maildir's `Delivered-To:`.
    pub original: String,
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalOutcome {
    /// The store has the message.
    Delivered {
        /// For the log: the Maildir file, or the LMTP server's reply.
        detail: String,
    },
    /// Not delivered yet; the queue should try again later.
    Deferred {
        /// A 4xx status.
        status: SmtpStatus,
        /// Why, for the log and a delay notice.
        reason: String,
    },
    /// Never deliverable; the sender gets a bounce.
    Failed {
        /// A 5xx status.
        status: SmtpStatus,
        /// Why, for the log and the bounce.
        reason: String,
    },
}

impl MailStore {
    /// The store a `[delivery] lmtp` setting selects: empty means a Maildir
    /// per user under `<data_dir>/mail` ([`MAILDIR_ROOT`]), anything else
    /// an LMTP server ([`LmtpTarget::parse`]). Touches nothing on disk.
    pub fn from_setting(data_dir: &Path, lmtp: &str) -> Result<MailStore, LmtpTargetError> {
        if lmtp.is_empty() {
            Ok(MailStore::Maildir {
                root: data_dir.join(MAILDIR_ROOT),
            })
        } else {
            LmtpTarget::parse(lmtp).map(MailStore::Lmtp)
        }
    }

    /// Delivers `message` to every recipient and returns one outcome per
    /// recipient, in the order given.
    ///
    /// `message` is the message as spooled: CRLF lines, not dot-stuffed,
    /// starting with our `Received:` header. `sender` is the reverse-path
    /// without brackets (`""` for a bounce). `hostname` is our name, used in
    /// `LHLO` and in Maildir file names. `timeout` bounds every step: the
    /// connection, each reply and each chunk of the message for LMTP, each
    /// recipient's file for a Maildir. Never fails as a whole: what goes
    /// wrong is in the outcomes, deferred when a retry may help.
    pub async fn deliver(
        &self,
        message_id: &str,
        sender: &str,
        recipients: &[LocalRecipient],
        message: &[u8],
        hostname: &str,
        timeout: Duration,
    ) -> Vec<LocalOutcome> {
        let mut outcomes: Vec<Option<LocalOutcome>> = vec![None; recipients.len()];
        // Addresses end up in headers and commands: refuse what could inject
        // a line before anything is written or sent.
        if !is_safe_address(sender) {
            let failed = LocalOutcome::Failed {
                status: BAD_SENDER,
                reason: "the sender address contains control characters or brackets".to_owned(),
            };
            outcomes.fill(Some(failed));
        }
        for (outcome, r) in outcomes.iter_mut().zip(recipients) {
            if outcome.is_none()
                && (r.mailbox.is_empty()
                    || !is_safe_address(&r.mailbox)
                    || !is_safe_address(&r.original))
            {
                *outcome = Some(LocalOutcome::Failed {
                    status: BAD_MAILBOX,
                    reason:
                        "the recipient address is empty or contains control characters or brackets"
                            .to_owned(),
                });
            }
        }
        let pending: Vec<usize> = (0..recipients.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        if !pending.is_empty() {
            let to: Vec<&LocalRecipient> = pending.iter().map(|&i| &recipients[i]).collect();
            let results = match self {
                MailStore::Maildir { root } => {
                    deliver_maildir(root, sender, &to, message, hostname, timeout).await
                }
                MailStore::Lmtp(target) => {
                    deliver_lmtp_per_original(target, sender, &to, message, hostname, timeout).await
                }
            };
            for (&i, result) in pending.iter().zip(results) {
                outcomes[i] = Some(result);
            }
        }
        recipients
            .iter()
            .zip(outcomes)
            .map(|(r, outcome)| {
                let outcome = outcome.unwrap_or_else(|| LocalOutcome::Deferred {
                    status: MAILDIR_FAILURE,
                    reason: "no outcome recorded".to_owned(),
                });
                tracing::info!(
                    message_id,
                    mailbox = %r.mailbox,
                    original = %r.original,
                    %outcome,
                    "local delivery"
                );
                outcome
            })
            .collect()
    }
}

/// LMTP delivery, one transaction per address the mail was sent to when
/// that is not the mailbox itself (a secure alias): that copy begins with
/// `X-Original-To: <address>` (what Postfix's local delivery writes), so
/// the store's filters (Sieve) can tell alias mail apart — the store
/// writes its own `Delivered-To:` with the mailbox. Mail to the mailbox
/// itself goes in one transaction, unchanged. (Maildir copies name the
/// original address in their `Delivered-To:`.)
async fn deliver_lmtp_per_original(
    target: &LmtpTarget,
    sender: &str,
    to: &[&LocalRecipient],
    message: &[u8],
    hostname: &str,
    timeout: Duration,
) -> Vec<LocalOutcome> {
    let mut groups: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
    for (i, r) in to.iter().enumerate() {
        let key = (!r.original.eq_ignore_ascii_case(&r.mailbox)).then_some(r.original.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut outcomes: Vec<Option<LocalOutcome>> = vec![None; to.len()];
    for (original, members) in groups {
        let batch: Vec<&LocalRecipient> = members.iter().map(|&i| to[i]).collect();
        let copy;
        let body = match original {
            Some(original) => {
                copy = [format!("X-Original-To: {original}\r\n").as_bytes(), message].concat();
                copy.as_slice()
            }
            None => message,
        };
        let results = deliver_lmtp(target, sender, &batch, body, hostname, timeout).await;
        for (i, result) in members.into_iter().zip(results) {
            outcomes[i] = Some(result);
        }
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| LocalOutcome::Deferred {
                status: CONNECTION_BROKEN,
                reason: "the LMTP session gave no answer for this recipient".to_owned(),
            })
        })
        .collect()
}

impl fmt::Display for MailStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailStore::Maildir { root } => write!(f, "Maildirs under {}", root.display()),
            MailStore::Lmtp(target) => write!(f, "LMTP to {target}"),
        }
    }
}

impl LmtpTarget {
    /// Reads a `[delivery] lmtp` value: an absolute path (starting with `/`)
    /// is a unix socket; anything else must be `host:port` or
    /// `[ipv6]:port`. Resolves nothing.
    pub fn parse(s: &str) -> Result<LmtpTarget, LmtpTargetError> {
        let syntax = || LmtpTargetError::Syntax(s.to_owned());
        if s.is_empty() {
            return Err(LmtpTargetError::Empty);
        }
        if s.chars().any(char::is_control) {
            return Err(syntax());
        }
        if s.starts_with('/') {
            return Ok(LmtpTarget::Unix(PathBuf::from(s)));
        }
        let port = if let Some(rest) = s.strip_prefix('[') {
            let (address, port) = rest.split_once("]:").ok_or_else(syntax)?;
            address.parse::<Ipv6Addr>().map_err(|_| syntax())?;
            port
        } else {
            let (host, port) = s.rsplit_once(':').ok_or_else(syntax)?;
            // A bare IPv6 address has colons left in `host`: it needs brackets.
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
            if !host_ok {
                return Err(syntax());
            }
            port
        };
        let port_ok = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !port_ok {
            return Err(LmtpTargetError::Port(s.to_owned()));
        }
        Ok(LmtpTarget::Tcp(s.to_owned()))
    }
}

impl fmt::Display for LmtpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpTarget::Tcp(address) => f.write_str(address),
            LmtpTarget::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `delivered: …`, `deferred: 451 4.3.0 …`, `failed: 550 5.1.1 …`.
impl fmt::Display for LocalOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalOutcome::Delivered { detail } => write!(f, "delivered: {detail}"),
            LocalOutcome::Deferred { status, reason } => write!(f, "deferred: {status} {reason}"),
            LocalOutcome::Failed { status, reason } => write!(f, "failed: {status} {reason}"),
        }
    }
}

/// The directory name of a mailbox's Maildir under the root: one path
/// component, whatever the address holds.
///
/// The domain is lower-cased (domains are case-insensitive; local parts are
/// not, RFC 5321 §2.4). Then every octet outside `[A-Za-z0-9._+@-]` becomes
/// `%XX`, and so does a leading `.` (no hidden directories, no `.` or `..`).
/// `%` itself is encoded, so two addresses never share a directory.
/// `None` for an empty address, or when the name would be longer than a
/// file system allows (255 octets).
pub fn mailbox_dir_name(mailbox: &str) -> Option<String> {
    if mailbox.is_empty() {
        return None;
    }
    let normalized = match mailbox.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => mailbox.to_owned(),
    };
    let mut name = String::with_capacity(normalized.len());
    for (i, b) in normalized.bytes().enumerate() {
        let keep = (b.is_ascii_alphanumeric() || b"._+@-".contains(&b)) && !(i == 0 && b == b'.');
        if keep {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    (name.len() <= MAX_NAME_LEN).then_some(name)
}

/// No control characters (a CR or LF would start a new header line or
/// command) and no angle brackets (which would end the path early).
fn is_safe_address(address: &str) -> bool {
    !address
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>')
}

// --- Maildir -------------------------------------------------------------------

/// Writes one file per recipient (each has its own `Delivered-To:`), each on
/// the blocking pool within `timeout`.
async fn deliver_maildir(
    root: &Path,
    sender: &str,
    recipients: &[&LocalRecipient],
    message: &[u8],
    hostname: &str,
    timeout: Duration,
) -> Vec<LocalOutcome> {
    let message: Arc<[u8]> = Arc::from(message);
    let host = Arc::<str>::from(maildir_hostname(hostname));
    let mut outcomes = Vec::with_capacity(recipients.len());
    let mut stuck = false;
    for r in recipients {
        let Some(dir_name) = mailbox_dir_name(&r.mailbox) else {
            outcomes.push(LocalOutcome::Failed {
                status: BAD_MAILBOX,
                reason: format!("'{}' cannot be a Maildir directory name", r.mailbox),
            });
            continue;
        };
        if stuck {
            // The last write is still hanging; this one would too.
            outcomes.push(LocalOutcome::Deferred {
                status: MAILDIR_FAILURE,
                reason: "the Maildir store is not responding".to_owned(),
            });
            continue;
        }
        // Mail delivered by an MTA begins with these two (qmail's and
        // Postfix's convention): the envelope sender, and the address this
        // copy was delivered for, so loops can be detected.
        let headers = format!("Return-Path: <{sender}>\nDelivered-To: {}\n", r.original);
        let maildir = root.join(dir_name).join("Maildir");
        let write = {
            let (root, message, host) = (root.to_owned(), message.clone(), host.clone());
            move || write_to_maildir(&root, &maildir, headers.as_bytes(), &message, &host)
        };
        let outcome = match tokio::time::timeout(timeout, tokio::task::spawn_blocking(write)).await
        {
            Ok(Ok(Ok(path))) => LocalOutcome::Delivered {
                detail: format!("saved as {}", path.display()),
            },
            Ok(Ok(Err(e))) => LocalOutcome::Deferred {
                status: MAILDIR_FAILURE,
                reason: format!("cannot write to the Maildir of {}: {e}", r.mailbox),
            },
            Ok(Err(e)) => LocalOutcome::Deferred {
                status: MAILDIR_FAILURE,
                reason: format!("the Maildir writer failed: {e}"),
            },
            Err(_elapsed) => {
                // The write may still complete; deferring may then deliver
                // twice, which is the safe side (module docs: at least once).
                stuck = true;
                LocalOutcome::Deferred {
                    status: MAILDIR_FAILURE,
                    reason: format!(
                        "writing to the Maildir of {} took longer than {timeout:?}",
                        r.mailbox
                    ),
                }
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// The Maildir protocol: create `tmp/<unique>` (0600), write, fsync, rename
/// into `new/`, fsync `new/`. Returns the final path. On any error nothing is
/// left behind: not the temporary file, and not a file in `new/` whose name
/// may not be durable (the queue will deliver again).
fn write_to_maildir(
    root: &Path,
    maildir: &Path,
    headers: &[u8],
    message: &[u8],
    host: &str,
) -> io::Result<PathBuf> {
    create_maildir(root, maildir)?;
    let name = unique_name(host);
    let tmp = maildir.join("tmp").join(&name);
    let new_dir = maildir.join("new");
    let new = new_dir.join(&name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = write_message(file, headers, message).and_then(|()| fs::rename(&tmp, &new));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = sync_dir(&new_dir) {
        let _ = fs::remove_file(&new);
        return Err(e);
    }
    Ok(new)
}

/// Writes the headers and the message (in LF form) and fsyncs the file.
fn write_message(file: fs::File, headers: &[u8], message: &[u8]) -> io::Result<()> {
    let mut out = BufWriter::new(file);
    out.write_all(headers)?;
    write_with_lf(&mut out, message)?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

/// Creates `root` and `maildir/{tmp,new,cur}` as needed (mode 0700),
/// fsyncing the parent of every directory created so that it survives a
/// crash together with the first message in it.
fn create_maildir(root: &Path, maildir: &Path) -> io::Result<()> {
    if !root.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        if let Some(parent) = root.parent() {
            sync_dir(parent)?;
        }
    }
    if let Some(mailbox) = maildir.parent() {
        create_private_dir(mailbox)?;
    }
    create_private_dir(maildir)?;
    for sub in ["tmp", "new", "cur"] {
        create_private_dir(&maildir.join(sub))?;
    }
    Ok(())
}

/// Creates one directory (mode 0700) unless it exists.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync a directory, so that a rename or a new entry in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The message with every CRLF turned into LF (module docs).
fn write_with_lf(out: &mut impl Write, message: &[u8]) -> io::Result<()> {
    for line in message.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\r\n") {
            Some(text) => {
                out.write_all(text)?;
                out.write_all(b"\n")?;
            }
            None => out.write_all(line)?,
        }
    }
    Ok(())
}

/// A file name no other delivery uses: `<secs>.M<micros>P<pid>Q<n>.<host>`
/// (the Maildir spec's recommendation: time, process, a per-process
/// counter for deliveries within the same microsecond, and the host for
/// Maildirs shared over a network file system).
fn unique_name(host: &str) -> String {
    static DELIVERIES: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{n}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
    )
}

/// The host name as the Maildir spec wants it in file names: `/` and `:`
/// (and anything else outside `[A-Za-z0-9.-_]`) written as `\ooo` in octal,
/// so a hostile or odd name can add neither a path separator nor the
/// `:2,` flags separator.
fn maildir_hostname(hostname: &str) -> String {
    if hostname.is_empty() {
        return "localhost".to_owned();
    }
    let mut host = String::with_capacity(hostname.len());
    for b in hostname.bytes() {
        if b.is_ascii_alphanumeric() || b".-_".contains(&b) {
            host.push(char::from(b));
        } else {
            host.push_str(&format!("\\{b:03o}"));
        }
    }
    host.truncate(64);
    host
}

// --- LMTP ----------------------------------------------------------------------

/// Why an LMTP session ended before every recipient had its answer. Every
/// recipient still open is deferred with [`SessionError::status`].
#[derive(Debug, Error)]
enum SessionError {
    #[error("cannot connect to the LMTP server: {0}")]
    Connect(String),
    #[error("LMTP server, {step}: {source}")]
    Dialogue {
        step: &'static str,
        #[source]
        source: SmtpError,
    },
    #[error("LMTP server refused the {step}: {reply}")]
    Refused { step: &'static str, reply: Reply },
    #[error("LMTP server, {step}: {source}; it may have delivered the message")]
    AfterData {
        step: &'static str,
        #[source]
        source: SmtpError,
    },
}

impl SessionError {
    fn status(&self) -> SmtpStatus {
        match self {
            SessionError::Connect(_) => SmtpStatus::UNREACHABLE_TEMP,
            SessionError::Dialogue { .. } | SessionError::AfterData { .. } => CONNECTION_BROKEN,
            SessionError::Refused { reply, .. } => match reply_status(reply) {
                status if status.is_temporary() => status,
                _ => STORE_MISCONFIGURED,
            },
        }
    }
}

async fn deliver_lmtp(
    target: &LmtpTarget,
    sender: &str,
    recipients: &[&LocalRecipient],
    message: &[u8],
    hostname: &str,
    timeout: Duration,
) -> Vec<LocalOutcome> {
    let timeouts = Timeouts {
        step: timeout,
        deadline: None,
    };
    let session = Session {
        sender,
        recipients,
        message,
        hostname: if hostname.is_empty() {
            "localhost"
        } else {
            hostname
        },
        timeout,
    };
    let mut outcomes: Vec<Option<LocalOutcome>> = vec![None; recipients.len()];
    let connect_failed = |e: String| Err(SessionError::Connect(format!("{target}: {e}")));
    let result = match target {
        LmtpTarget::Tcp(address) => {
            match tokio::time::timeout(timeout, TcpStream::connect(address.as_str())).await {
                Ok(Ok(stream)) => {
                    session
                        .run(SmtpClient::new(stream, timeouts), &mut outcomes)
                        .await
                }
                Ok(Err(e)) => connect_failed(e.to_string()),
                Err(_elapsed) => connect_failed(format!("timed out after {timeout:?}")),
            }
        }
        LmtpTarget::Unix(path) => {
            match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
                Ok(Ok(stream)) => {
                    session
                        .run(SmtpClient::new(stream, timeouts), &mut outcomes)
                        .await
                }
                Ok(Err(e)) => connect_failed(e.to_string()),
                Err(_elapsed) => connect_failed(format!("timed out after {timeout:?}")),
            }
        }
    };
    let broken = result.err();
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| match &broken {
                Some(e) => LocalOutcome::Deferred {
                    status: e.status(),
                    reason: e.to_string(),
                },
                None => LocalOutcome::Deferred {
                    status: PROTOCOL_CONFUSION,
                    reason: "the LMTP session ended without an answer".to_owned(),
                },
            })
        })
        .collect()
}

/// One LMTP transaction's inputs.
struct Session<'a> {
    sender: &'a str,
    recipients: &'a [&'a LocalRecipient],
    message: &'a [u8],
    hostname: &'a str,
    timeout: Duration,
}

impl Session<'_> {
    /// The dialogue of RFC 2033 §4. Decided recipients are written into
    /// `outcomes` as soon as their answer arrives; on an error, the ones
    /// still `None` are left to the caller.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut client: SmtpClient<S>,
        outcomes: &mut [Option<LocalOutcome>],
    ) -> Result<(), SessionError> {
        let dialogue = |step| move |source| SessionError::Dialogue { step, source };
        let greeting = client.read_reply().await.map_err(dialogue("greeting"))?;
        if greeting.code() != ReplyCode::SERVICE_READY {
            return Err(SessionError::Refused {
                step: "greeting",
                reply: greeting,
            });
        }
        // RFC 2033 §4.1: LHLO, never HELO or EHLO.
        let lhlo = client
            .command(&format!("LHLO {}", self.hostname))
            .await
            .map_err(dialogue("LHLO"))?;
        if !lhlo.code().is_positive() {
            return Err(SessionError::Refused {
                step: "LHLO",
                reply: lhlo,
            });
        }
        let extensions = Extensions::from_reply(&lhlo);

        let mail = client
            .command(&mail_command(self.sender, &extensions, self.message))
            .await
            .map_err(dialogue("MAIL FROM"))?;
        if !mail.code().is_positive() {
            outcomes.fill(Some(refusal(&mail)));
            client.quit().await;
            return Ok(());
        }

        let mut accepted = Vec::with_capacity(self.recipients.len());
        for (i, r) in self.recipients.iter().enumerate() {
            let reply = client
                .command(&format!("RCPT TO:<{}>", r.mailbox))
                .await
                .map_err(dialogue("RCPT TO"))?;
            if reply.code().is_positive() {
                accepted.push(i);
            } else {
                outcomes[i] = Some(refusal(&reply));
            }
        }
        if accepted.is_empty() {
            client.quit().await;
            return Ok(());
        }

        let data = client.command("DATA").await.map_err(dialogue("DATA"))?;
        if data.code().get() != 354 {
            let outcome = refusal(&data);
            for &i in &accepted {
                outcomes[i] = Some(outcome.clone());
            }
            client.quit().await;
            return Ok(());
        }
        client
            .send_data(&data_block(self.message), self.timeout)
            .await
            .map_err(|source| SessionError::AfterData {
                step: "sending the message",
                source,
            })?;
        // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
        for &i in &accepted {
            let reply = client
                .read_reply()
                .await
                .map_err(|source| SessionError::AfterData {
                    step: "waiting for the reply to the message",
                    source,
                })?;
            outcomes[i] = Some(if reply.code().is_positive() {
                LocalOutcome::Delivered {
                    detail: reply.to_string(),
                }
            } else {
                refusal(&reply)
            });
        }
        client.quit().await;
        Ok(())
    }
}

/// `MAIL FROM:<sender>`, with `BODY=8BITMIME` (RFC 6152) when the server
/// offers it and the message needs it.
fn mail_command(sender: &str, extensions: &Extensions, message: &[u8]) -> String {
    let mut mail = format!("MAIL FROM:<{sender}>");
    if extensions.get("8BITMIME").is_some() && !message.is_ascii() {
        mail.push_str(" BODY=8BITMIME");
    }
    mail
}

/// The outcome of a reply that did not accept: 5xx fails, 4xx defers, and a
/// reply out of place (a `250` where `354` was due) defers as a protocol
/// error. The reason is the server's reply as it said it.
fn refusal(reply: &Reply) -> LocalOutcome {
    let code = reply.code();
    let reason = reply.to_string();
    if code.is_permanent() {
        LocalOutcome::Failed {
            status: reply_status(reply),
            reason,
        }
    } else if code.is_transient() {
        LocalOutcome::Deferred {
            status: reply_status(reply),
            reason,
        }
    } else {
        LocalOutcome::Deferred {
            status: PROTOCOL_CONFUSION,
            reason: format!("unexpected reply {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, UnixListener};

    const TIMEOUT: Duration = Duration::from_secs(5);
    const MESSAGE: &[u8] =
        b"Received: from a.example by mx.example.org\r\nSubject: hi\r\n\r\n.dot line\r\nbody\r\n";

    fn rcpt(mailbox: &str, original: &str) -> LocalRecipient {
        LocalRecipient {
            mailbox: mailbox.to_owned(),
            original: original.to_owned(),
        }
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        match fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    // --- configuration -----------------------------------------------------------

    #[test]
    fn lmtp_targets_are_host_port_or_absolute_paths() {
        let tcp = |s: &str| Ok(LmtpTarget::Tcp(s.to_owned()));
        assert_eq!(LmtpTarget::parse("127.0.0.1:24"), tcp("127.0.0.1:24"));
        assert_eq!(LmtpTarget::parse("[::1]:24"), tcp("[::1]:24"));
        assert_eq!(
            LmtpTarget::parse("imap.internal:2424"),
            tcp("imap.internal:2424")
        );
        assert_eq!(
            LmtpTarget::parse("/run/dovecot/lmtp"),
            Ok(LmtpTarget::Unix(PathBuf::from("/run/dovecot/lmtp")))
        );
        assert_eq!(LmtpTarget::parse(""), Err(LmtpTargetError::Empty));
        for bad in [
            "dovecot",
            "run/dovecot/lmtp",
            "::1:24",
            "[::1]",
            "[nonsense]:24",
            ":24",
            "host name:24",
            "/run/x\n",
        ] {
            assert!(
                matches!(LmtpTarget::parse(bad), Err(LmtpTargetError::Syntax(_))),
                "{bad:?}"
            );
        }
        for bad in ["host:0", "host:65536", "host:", "host:+24", "[::1]:x"] {
            assert!(
                matches!(LmtpTarget::parse(bad), Err(LmtpTargetError::Port(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_empty_setting_means_maildirs_under_the_data_directory() {
        assert_eq!(
            MailStore::from_setting(Path::new("/var/lib/mailtls"), ""),
            Ok(MailStore::Maildir {
                root: PathBuf::from("/var/lib/mailtls/mail")
            })
        );
        assert!(matches!(
            MailStore::from_setting(Path::new("/d"), "[::1]:24"),
            Ok(MailStore::Lmtp(LmtpTarget::Tcp(_)))
        ));
    }

    // --- Maildir directory names -----------------------------------------------

    #[test]
    fn mailbox_dir_names_are_one_safe_path_component() {
        let table = [
            ("me@example.org", "me@example.org"),
            ("Me@EXAMPLE.Org", "Me@example.org"),
            ("../x@example.org", "%2E.%2Fx@example.org"),
            ("..", "%2E."),
            (".", "%2E"),
            ("a/b@", "a%2Fb@"),
            (".hidden@example.org", "%2Ehidden@example.org"),
            ("first.last+tag@example.org", "first.last+tag@example.org"),
            ("100%@example.org", "100%25@example.org"),
            ("\"a b\"@example.org", "%22a%20b%22@example.org"),
            ("é@example.org", "%C3%A9@example.org"),
            ("x@a/../b", "x@a%2F..%2Fb"),
        ];
        for (mailbox, expected) in table {
            assert_eq!(
                mailbox_dir_name(mailbox).as_deref(),
                Some(expected),
                "{mailbox:?}"
            );
        }
        assert_eq!(mailbox_dir_name(""), None);
        assert_eq!(mailbox_dir_name(&"/".repeat(100)), None, "too long");
    }

    #[test]
    fn maildir_host_names_cannot_add_separators() {
        assert_eq!(maildir_hostname("mx.example.org"), "mx.example.org");
        assert_eq!(maildir_hostname("a/b:c"), "a\\057b\\072c");
        assert_eq!(maildir_hostname(""), "localhost");
    }

    // --- Maildir delivery ----------------------------------------------------------

    #[tokio::test]
    async fn maildir_delivery_lands_in_new_with_envelope_headers_and_lf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("mail");
        let store = MailStore::Maildir { root: root.clone() };
        let outcomes = store
            .deliver(
                "M1",
                "alice@example.net",
                &[
                    rcpt("me@example.org", "me@secure.example.org"),
                    rcpt("me@example.org", "me@example.org"),
                ],
                MESSAGE,
                "mx.example.org",
                TIMEOUT,
            )
            .await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, LocalOutcome::Delivered { .. })),
            "{outcomes:?}"
        );
        let maildir = root.join("me@example.org/Maildir");
        assert!(files_in(&maildir.join("tmp")).is_empty());
        assert!(files_in(&maildir.join("cur")).is_empty());
        let mut contents: Vec<String> = files_in(&maildir.join("new"))
            .iter()
            .map(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).expect("name");
                assert!(name.ends_with(".mx.example.org"), "{name}");
                let mode = fs::metadata(p).expect("stat").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{name}");
                String::from_utf8(fs::read(p).expect("read")).expect("utf-8")
            })
            .collect();
        contents.sort();
        let body = "Received: from a.example by mx.example.org\nSubject: hi\n\n.dot line\nbody\n";
        assert_eq!(
            contents,
            [
                format!("Return-Path: <alice@example.net>\nDelivered-To: me@example.org\n{body}"),
                format!(
                    "Return-Path: <alice@example.net>\nDelivered-To: me@secure.example.org\n{body}"
                ),
            ]
        );
        for sub in ["", "tmp", "new", "cur"] {
            let mode = fs::metadata(maildir.join(sub))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
    }

    #[tokio::test]
    async fn a_null_sender_is_recorded_as_empty_brackets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MailStore::Maildir {
            root: dir.path().to_owned(),
        };
        let outcomes = store
            .deliver(
                "M2",
                "",
                &[rcpt("me@example.org", "me@example.org")],
                MESSAGE,
                "mx",
                TIMEOUT,
            )
            .await;
        assert!(matches!(&outcomes[0], LocalOutcome::Delivered { .. }));
        let new = files_in(&dir.path().join("me@example.org/Maildir/new"));
        let content = fs::read(&new[0]).expect("read");
        assert!(content.starts_with(b"Return-Path: <>\n"));
    }

    #[tokio::test]
    async fn a_write_failure_defers_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("me@example.org/Maildir");
        fs::create_dir_all(maildir.join("tmp")).expect("mkdir");
        fs::create_dir_all(maildir.join("cur")).expect("mkdir");
        // `new` is a file: the rename into it fails.
        fs::write(maildir.join("new"), b"").expect("write");
        let store = MailStore::Maildir {
            root: dir.path().to_owned(),
        };
        let outcomes = store
            .deliver(
                "M3",
                "a@example.net",
                &[rcpt("me@example.org", "me@example.org")],
                MESSAGE,
                "mx",
                TIMEOUT,
            )
            .await;
        assert!(
            matches!(
                &outcomes[0],
                LocalOutcome::Deferred { status, .. } if *status == SmtpStatus::new(451, 4, 3, 0)
            ),
            "{outcomes:?}"
        );
        assert!(files_in(&maildir.join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn addresses_that_could_inject_headers_fail_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MailStore::Maildir {
            root: dir.path().to_owned(),
        };
        let outcomes = store
            .deliver(
                "M4",
                "a@example.net",
                &[
                    rcpt("me@example.org", "me@example.org\r\nBcc: x@evil.example"),
                    rcpt("", "x@example.org"),
                    rcpt("you@example.org", "you@example.org"),
                ],
                MESSAGE,
                "mx",
                TIMEOUT,
            )
            .await;
        assert!(
            matches!(&outcomes[0], LocalOutcome::Failed { status, .. } if status.enhanced() == "5.1.3")
        );
        assert!(
            matches!(&outcomes[1], LocalOutcome::Failed { status, .. } if status.enhanced() == "5.1.3")
        );
        assert!(matches!(&outcomes[2], LocalOutcome::Delivered { .. }));
        assert!(!dir.path().join("me@example.org").exists());

        let outcomes = store
            .deliver(
                "M5",
                "a@example.net>\r\nX: y",
                &[rcpt("you@example.org", "you@example.org")],
                MESSAGE,
                "mx",
                TIMEOUT,
            )
            .await;
        assert!(
            matches!(&outcomes[0], LocalOutcome::Failed { status, .. } if status.enhanced() == "5.1.7")
        );
    }

    // --- LMTP against a scripted server --------------------------------------------

    /// What the fake server does at one step.
    enum Step {
        /// Read one command line starting with this, then answer.
        Command(&'static str, &'static str),
        /// Read the message through its `.` line, then answer.
        Data(&'static str),
        /// Read the message, then close the connection.
        DataThenHangUp,
    }

    /// Plays `script` (after a `220` greeting) and returns every line the
    /// client sent, commands and message.
    async fn fake_lmtp<S: AsyncRead + AsyncWrite + Unpin>(
        stream: S,
        script: Vec<Step>,
    ) -> Vec<String> {
        let mut stream = BufReader::new(stream);
        let mut seen = Vec::new();
        stream
            .get_mut()
            .write_all(b"220 fake LMTP ready\r\n")
            .await
            .expect("greet");
        for step in script {
            let answer = match step {
                Step::Command(expect, answer) => {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.expect("read");
                    assert!(line.starts_with(expect), "{line:?} vs {expect:?}");
                    seen.push(line);
                    answer
                }
                Step::Data(answer) => {
                    read_message(&mut stream, &mut seen).await;
                    answer
                }
                Step::DataThenHangUp => {
                    read_message(&mut stream, &mut seen).await;
                    return seen;
                }
            };
            stream
                .get_mut()
                .write_all(format!("{answer}\r\n").as_bytes())
                .await
                .expect("write");
        }
        let mut rest = String::new();
        let _ = stream.read_to_string(&mut rest).await;
        assert!(rest.is_empty(), "unexpected {rest:?}");
        seen
    }

    async fn read_message<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut BufReader<S>,
        seen: &mut Vec<String>,
    ) {
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.expect("read") == 0 {
                return;
            }
            let end = line == ".\r\n";
            seen.push(line);
            if end {
                return;
            }
        }
    }

    /// Delivers MESSAGE to `mailboxes` over TCP to a fake server playing
    /// `script`; returns the outcomes and what the server saw.
    async fn lmtp_tcp(script: Vec<Step>, mailboxes: &[&str]) -> (Vec<LocalOutcome>, Vec<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            fake_lmtp(stream, script).await
        });
        let store = MailStore::Lmtp(LmtpTarget::Tcp(address));
        let recipients: Vec<LocalRecipient> = mailboxes.iter().map(|m| rcpt(m, m)).collect();
        let outcomes = store
            .deliver(
                "M",
                "alice@example.net",
                &recipients,
                MESSAGE,
                "mx.example.org",
                TIMEOUT,
            )
            .await;
        (outcomes, server.await.expect("server"))
    }

    fn status_of(outcome: &LocalOutcome) -> Option<SmtpStatus> {
        match outcome {
            LocalOutcome::Delivered { .. } => None,
            LocalOutcome::Deferred { status, .. } | LocalOutcome::Failed { status, .. } => {
                Some(*status)
            }
        }
    }

    fn head(recipients: usize) -> Vec<Step> {
        let mut steps = vec![
            Step::Command("LHLO mx.example.org\r\n", "250-fake\r\n250 PIPELINING"),
            Step::Command("MAIL FROM:<alice@example.net>\r\n", "250 2.1.0 OK"),
        ];
        steps.extend((0..recipients).map(|_| Step::Command("RCPT TO:<", "250 2.1.5 OK")));
        steps.push(Step::Command("DATA\r\n", "354 go ahead"));
        steps
    }

    #[tokio::test]
    async fn lmtp_all_recipients_accepted() {
        let mut script = head(2);
        script.push(Step::Data("250 2.0.0 <a@x> Saved\r\n250 2.0.0 <b@x> Saved"));
        script.push(Step::Command("QUIT", "221 2.0.0 Bye"));
        let (outcomes, seen) = lmtp_tcp(script, &["a@x", "b@x"]).await;
        assert_eq!(
            outcomes,
            [
                LocalOutcome::Delivered {
                    detail: "250 2.0.0 <a@x> Saved".into()
                },
                LocalOutcome::Delivered {
                    detail: "250 2.0.0 <b@x> Saved".into()
                },
            ]
        );
        assert!(seen.contains(&"RCPT TO:<a@x>\r\n".to_owned()));
        assert!(seen.contains(&"RCPT TO:<b@x>\r\n".to_owned()));
        // The message is sent dot-stuffed, in CRLF, ending with the dot line.
        assert!(seen.contains(&"..dot line\r\n".to_owned()), "{seen:?}");
        assert_eq!(seen.iter().rev().nth(1).map(String::as_str), Some(".\r\n"));
    }

    #[tokio::test]
    async fn lmtp_8bit_message_is_declared_when_the_server_offers_8bitmime() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            fake_lmtp(
                stream,
                vec![
                    Step::Command("LHLO", "250-fake\r\n250 8BITMIME"),
                    Step::Command("MAIL FROM:<> BODY=8BITMIME\r\n", "250 OK"),
                    Step::Command("RCPT TO:<a@x>", "250 OK"),
                    Step::Command("DATA", "354 go"),
                    Step::Data("250 Saved"),
                    Step::Command("QUIT", "221 Bye"),
                ],
            )
            .await
        });
        let outcomes = MailStore::Lmtp(LmtpTarget::Tcp(address))
            .deliver(
                "M",
                "",
                &[rcpt("a@x", "a@x")],
                "Subject: caf\u{e9}\r\n\r\n\r\n".as_bytes(),
                "mx",
                TIMEOUT,
            )
            .await;
        assert!(matches!(&outcomes[0], LocalOutcome::Delivered { .. }));
        server.await.expect("server");
    }

    #[tokio::test]
    async fn lmtp_refused_recipient_fails_and_only_the_accepted_one_gets_a_data_reply() {
        let script = vec![
            Step::Command("LHLO", "250 fake"),
            Step::Command("MAIL FROM:", "250 OK"),
            Step::Command(
                "RCPT TO:<nobody@x>",
                "550 5.1.1 <nobody@x> User doesn't exist",
            ),
            Step::Command("RCPT TO:<a@x>", "250 2.1.5 OK"),
            Step::Command("DATA", "354 go"),
            Step::Data("250 2.0.0 <a@x> Saved"),
            Step::Command("QUIT", "221 Bye"),
        ];
        let (outcomes, _) = lmtp_tcp(script, &["nobody@x", "a@x"]).await;
        assert_eq!(
            outcomes[0],
            LocalOutcome::Failed {
                status: SmtpStatus::new(550, 5, 1, 1),
                reason: "550 5.1.1 <nobody@x> User doesn't exist".into()
            }
        );
        assert!(matches!(&outcomes[1], LocalOutcome::Delivered { .. }));
    }

    // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
    #[tokio::test]
    async fn lmtp_per_recipient_data_replies_are_matched_in_rcpt_order() {
        let mut script = head(3);
        script.push(Step::Data(
            "250 2.0.0 <a@x> Saved\r\n452 4.2.2 <b@x> Quota exceeded\r\n550 5.2.1 <c@x> Mailbox disabled",
        ));
        script.push(Step::Command("QUIT", "221 Bye"));
        let (outcomes, _) = lmtp_tcp(script, &["a@x", "b@x", "c@x"]).await;
        assert!(matches!(&outcomes[0], LocalOutcome::Delivered { .. }));
        assert_eq!(
            outcomes[1],
            LocalOutcome::Deferred {
                status: SmtpStatus::new(452, 4, 2, 2),
                reason: "452 4.2.2 <b@x> Quota exceeded".into()
            }
        );
        assert_eq!(
            outcomes[2],
            LocalOutcome::Failed {
                status: SmtpStatus::new(550, 5, 2, 1),
                reason: "550 5.2.1 <c@x> Mailbox disabled".into()
            }
        );
    }

    #[tokio::test]
    async fn lmtp_connection_lost_after_the_message_defers_the_undecided() {
        let mut script = head(2);
        script.push(Step::DataThenHangUp);
        let (outcomes, _) = lmtp_tcp(script, &["a@x", "b@x"]).await;
        for outcome in &outcomes {
            assert!(
                matches!(outcome, LocalOutcome::Deferred { status, reason }
                    if *status == SmtpStatus::new(451, 4, 4, 2)
                        && reason.contains("may have delivered")),
                "{outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn lmtp_refused_sender_applies_to_every_recipient() {
        let script = vec![
            Step::Command("LHLO", "250 fake"),
            Step::Command("MAIL FROM:", "451 4.3.0 try later"),
            Step::Command("QUIT", "221 Bye"),
        ];
        let (outcomes, _) = lmtp_tcp(script, &["a@x", "b@x"]).await;
        assert!(
            outcomes
                .iter()
                .all(|o| status_of(o) == Some(SmtpStatus::new(451, 4, 3, 0))),
            "{outcomes:?}"
        );
    }

    #[tokio::test]
    async fn lmtp_server_refusing_lhlo_defers_as_misconfiguration() {
        let script = vec![Step::Command("LHLO", "500 5.5.1 Unknown command")];
        let (outcomes, _) = lmtp_tcp(script, &["a@x"]).await;
        assert_eq!(status_of(&outcomes[0]), Some(SmtpStatus::new(451, 4, 3, 5)));
    }

    #[tokio::test]
    async fn lmtp_garbage_greeting_defers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream
                .write_all(b"HTTP/1.1 400 Bad\r\n")
                .await
                .expect("write");
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        });
        let outcomes = MailStore::Lmtp(LmtpTarget::Tcp(address))
            .deliver("M", "a@x", &[rcpt("b@x", "b@x")], MESSAGE, "mx", TIMEOUT)
            .await;
        assert_eq!(status_of(&outcomes[0]), Some(SmtpStatus::new(451, 4, 4, 2)));
        server.await.expect("server");
    }

    #[tokio::test]
    async fn lmtp_unreachable_server_defers_with_4_4_1() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        let outcomes = MailStore::Lmtp(LmtpTarget::Tcp(address))
            .deliver("M", "a@x", &[rcpt("b@x", "b@x")], MESSAGE, "mx", TIMEOUT)
            .await;
        assert_eq!(status_of(&outcomes[0]), Some(SmtpStatus::UNREACHABLE_TEMP));
    }

    #[tokio::test]
    async fn lmtp_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(stream);
        });
        let outcomes = MailStore::Lmtp(LmtpTarget::Tcp(address))
            .deliver(
                "M",
                "a@x",
                &[rcpt("b@x", "b@x")],
                MESSAGE,
                "mx",
                Duration::from_millis(100),
            )
            .await;
        assert!(
            matches!(&outcomes[0], LocalOutcome::Deferred { reason, .. } if reason.contains("timed out")),
            "{outcomes:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn lmtp_over_a_unix_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lmtp");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut script = head(1);
            script.push(Step::Data("250 2.0.0 <a@x> Saved"));
            script.push(Step::Command("QUIT", "221 Bye"));
            fake_lmtp(stream, script).await
        });
        let store = MailStore::from_setting(dir.path(), path.to_str().expect("utf-8"))
            .expect("unix target");
        let outcomes = store
            .deliver(
                "M",
                "alice@example.net",
                &[rcpt("a@x", "a@x")],
                MESSAGE,
                "mx.example.org",
                TIMEOUT,
            )
            .await;
        assert!(
            matches!(&outcomes[0], LocalOutcome::Delivered { .. }),
            "{outcomes:?}"
        );
        server.await.expect("server");
    }
}

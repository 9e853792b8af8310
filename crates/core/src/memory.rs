//! The TLS memory (SPEC §3): what we have seen of each MX host and each
//! recipient domain, and the rule that it only ratchets up.
//!
//! Once a host or a domain completed a TLS handshake with us, TLS becomes
//! mandatory for it (SPEC §2 rule 2). A later observation below the best
//! level seen is never a silent downgrade: [`remember`] returns an [`Alert`]
//! (a possible STARTTLS-stripping attack, or a broken server) for an
//! operator, who alone may reset the entry (`mailtls memory forget`).
//!
//! This module is the rule; the store applies it (atomically per key).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::level::TlsLevel;

/// What an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum MemoryKey {
    /// An MX host name (lower case, no trailing dot).
    Host(String),
    /// A recipient domain (A-labels, lower case).
    Domain(String),
}

impl MemoryKey {
    /// A host key, normalised.
    pub fn host(name: &str) -> MemoryKey {
        MemoryKey::Host(normalise(name))
    }

    /// A domain key, normalised.
    pub fn domain(name: &str) -> MemoryKey {
        MemoryKey::Domain(normalise(name))
    }

    /// `host` or `domain`.
    pub fn kind(&self) -> &'static str {
        match self {
            MemoryKey::Host(_) => "host",
            MemoryKey::Domain(_) => "domain",
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        match self {
            MemoryKey::Host(n) | MemoryKey::Domain(n) => n,
        }
    }
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl fmt::Display for MemoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// One observation: a delivery attempt or a check probe that got far
/// enough to learn the level (or failed where TLS was expected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// When, seconds since the Unix epoch.
    pub at: i64,
    /// The level seen: `none` for plaintext, no STARTTLS, or a failed
    /// handshake.
    pub level: TlsLevel,
    /// TLS protocol version, when TLS was established.
    pub protocol: Option<String>,
    /// Cipher suite.
    pub cipher: Option<String>,
    /// SHA-256 of the server's certificate, hex.
    pub cert_sha256: Option<String>,
    /// What went wrong, if something did.
    pub failure: Option<String>,
}

/// What the memory holds for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// The host or domain.
    pub key: MemoryKey,
    /// First time TLS was seen (Unix seconds).
    pub first_tls_at: Option<i64>,
    /// Last time TLS was seen.
    pub last_tls_at: Option<i64>,
    /// Last observation of any kind.
    pub last_seen_at: i64,
    /// The best level ever observed: only ratchets up.
    pub best_level: TlsLevel,
    /// The level of the last observation.
    pub last_level: TlsLevel,
    /// Protocol of the last TLS session.
    pub protocol: Option<String>,
    /// Cipher of the last TLS session.
    pub cipher: Option<String>,
    /// Certificate fingerprint of the last TLS session.
    pub cert_sha256: Option<String>,
    /// The last failure, and when.
    pub last_failure: Option<String>,
    /// When the last failure happened.
    pub last_failure_at: Option<i64>,
}

impl MemoryEntry {
    /// SPEC §2 rule 2: TLS is mandatory for this key.
    pub fn requires_tls(&self) -> bool {
        self.best_level >= TlsLevel::Tls
    }
}

/// A drop below the best level ever seen (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The host or domain.
    pub key: MemoryKey,
    /// When.
    pub at: i64,
    /// What it used to do.
    pub best_level: TlsLevel,
    /// What it did now.
    pub observed: TlsLevel,
    /// For an operator.
    pub detail: String,
}

/// Applies an observation to an entry (or creates it): the ratchet.
///
/// * `best_level` = max(best, observed) — never lowered here;
/// * TLS details are the latest TLS session's;
/// * an observation below `best_level` yields an [`Alert`].
pub fn remember(
    existing: Option<&MemoryEntry>,
    key: &MemoryKey,
    obs: &Observation,
) -> (MemoryEntry, Option<Alert>) {
    let tls = obs.level >= TlsLevel::Tls;
    let mut entry = existing.cloned().unwrap_or_else(|| MemoryEntry {
        key: key.clone(),
        first_tls_at: None,
        last_tls_at: None,
        last_seen_at: obs.at,
        best_level: obs.level,
        last_level: obs.level,
        protocol: None,
        cipher: None,
        cert_sha256: None,
        last_failure: None,
        last_failure_at: None,
    });
    let alert = (obs.level < entry.best_level).then(|| Alert {
        key: key.clone(),
        at: obs.at,
        best_level: entry.best_level,
        observed: obs.level,
        detail: format!(
            "{key} did {} before and {} now{}",
            describe(entry.best_level),
            describe(obs.level),
            obs.failure
                .as_deref()
                .map(|f| format!(": {f}"))
                .unwrap_or_default()
        ),
    });
    entry.best_level = entry.best_level.max(obs.level);
    entry.last_level = obs.level;
    entry.last_seen_at = entry.last_seen_at.max(obs.at);
    if tls {
        entry.first_tls_at = Some(entry.first_tls_at.map_or(obs.at, |t| t.min(obs.at)));
        entry.last_tls_at = Some(entry.last_tls_at.map_or(obs.at, |t| t.max(obs.at)));
        entry.protocol = obs.protocol.clone().or(entry.protocol);
        entry.cipher = obs.cipher.clone().or(entry.cipher);
        entry.cert_sha256 = obs.cert_sha256.clone().or(entry.cert_sha256);
    }
    if let Some(failure) = &obs.failure {
        entry.last_failure = Some(failure.clone());
        entry.last_failure_at = Some(obs.at);
    }
    (entry, alert)
}

/// How long a repeated, unchanged successful observation may go unwritten
/// (seconds): the memory's `last_tls_at` is then at most this stale.
pub const REFRESH_WINDOW: i64 = 60;

/// Whether writing `next` after `previous` (written without an alert) would
/// only refresh timestamps: same level, same TLS details, no failure, within
/// `window` seconds. A busy relay skips such writes; any change (a new
/// certificate, a drop, a failure) is always written, so alerts and the
/// ratchet are never delayed on this node.
pub fn is_refresh_only(previous: &Observation, next: &Observation, window: i64) -> bool {
    previous.failure.is_none()
        && next.failure.is_none()
        && previous.level == next.level
        && previous.protocol == next.protocol
        && previous.cipher == next.cipher
        && previous.cert_sha256 == next.cert_sha256
        && (0..window).contains(&(next.at - previous.at))
}

fn describe(level: TlsLevel) -> &'static str {
    match level {
        TlsLevel::None => "no TLS",
        TlsLevel::Tls => "TLS",
        TlsLevel::Dane => "DANE-authenticated TLS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(at: i64, level: TlsLevel) -> Observation {
        Observation {
            at,
            level,
            protocol: (level >= TlsLevel::Tls).then(|| "TLSv1.3".to_owned()),
            cipher: None,
            cert_sha256: None,
            failure: (level == TlsLevel::None).then(|| "STARTTLS not offered".to_owned()),
        }
    }

    #[test]
    fn first_observation_creates_the_entry_without_alert() {
        let key = MemoryKey::host("MX.Example.");
        assert_eq!(key, MemoryKey::Host("mx.example".into()));
        let (entry, alert) = remember(None, &key, &obs(10, TlsLevel::None));
        assert!(alert.is_none());
        assert_eq!(entry.best_level, TlsLevel::None);
        assert!(!entry.requires_tls());
        assert_eq!(entry.first_tls_at, None);
    }

    // SPEC §3: "It only ratchets up by itself".
    #[test]
    fn level_ratchets_up_and_a_drop_alerts() {
        let key = MemoryKey::domain("example.org");
        let (e1, _) = remember(None, &key, &obs(10, TlsLevel::None));
        let (e2, a2) = remember(Some(&e1), &key, &obs(20, TlsLevel::Tls));
        assert!(a2.is_none());
        assert_eq!(
            (e2.best_level, e2.first_tls_at, e2.last_tls_at),
            (TlsLevel::Tls, Some(20), Some(20))
        );
        assert!(e2.requires_tls());
        let (e3, a3) = remember(Some(&e2), &key, &obs(30, TlsLevel::None));
        assert_eq!(e3.best_level, TlsLevel::Tls, "never lowered");
        assert_eq!(e3.last_level, TlsLevel::None);
        assert_eq!(e3.last_tls_at, Some(20));
        assert_eq!(e3.last_failure.as_deref(), Some("STARTTLS not offered"));
        let alert = a3.expect("a drop alerts");
        assert_eq!(
            (alert.best_level, alert.observed),
            (TlsLevel::Tls, TlsLevel::None)
        );
        assert!(
            alert.detail.contains("did TLS before and no TLS now"),
            "{}",
            alert.detail
        );
    }

    #[test]
    fn dane_to_tls_is_a_drop_too() {
        let key = MemoryKey::host("mx.example");
        let (e1, _) = remember(None, &key, &obs(10, TlsLevel::Dane));
        let (_, alert) = remember(Some(&e1), &key, &obs(20, TlsLevel::Tls));
        assert!(alert.is_some());
    }

    #[test]
    fn only_unchanged_successes_within_the_window_are_refreshes() {
        let a = obs(100, TlsLevel::Tls);
        assert!(is_refresh_only(
            &a,
            &obs(159, TlsLevel::Tls),
            REFRESH_WINDOW
        ));
        assert!(
            !is_refresh_only(&a, &obs(160, TlsLevel::Tls), REFRESH_WINDOW),
            "window over"
        );
        assert!(
            !is_refresh_only(&a, &obs(99, TlsLevel::Tls), REFRESH_WINDOW),
            "older"
        );
        assert!(
            !is_refresh_only(&a, &obs(110, TlsLevel::Dane), REFRESH_WINDOW),
            "level changed"
        );
        assert!(
            !is_refresh_only(&a, &obs(110, TlsLevel::None), REFRESH_WINDOW),
            "a drop is always written"
        );
        let mut new_cert = obs(110, TlsLevel::Tls);
        new_cert.cert_sha256 = Some("ff".into());
        assert!(
            !is_refresh_only(&a, &new_cert, REFRESH_WINDOW),
            "new certificate"
        );
    }

    #[test]
    fn out_of_order_observations_keep_first_and_last() {
        let key = MemoryKey::host("mx.example");
        let (e1, _) = remember(None, &key, &obs(50, TlsLevel::Tls));
        let (e2, _) = remember(Some(&e1), &key, &obs(40, TlsLevel::Tls));
        assert_eq!(
            (e2.first_tls_at, e2.last_tls_at, e2.last_seen_at),
            (Some(40), Some(50), 50)
        );
    }
}

//! The answer for one recipient, as the API, the event stream and the pages
//! show it: SPEC §1 "the TLS memory first", without waiting for a probe.
//!
//! The object is the report of `mailtls check --json` (the same fields,
//! issue #2's interface) with a few added fields:
//!
//! * `details`: what the chip's tooltip shows (TLS version, cipher, DANE,
//!   when last seen), taken from the probe report or the memory entry, so
//!   that the browser does not interpret the report;
//! * `pending`: a background probe is running, an update will follow;
//! * `stale`: present (true) when the shared TLS memory could not be read
//!   (a fleet's PostgreSQL unreachable, issue #6) and the answer comes from
//!   the entry this node read last: possibly stale, and said so;
//! * `sendable` / `blocked_reason`: only when the signed-in sender must
//!   send encrypted (SPEC §4: a secure alias or Encrypted Sending on),
//!   judged by `mailtls_core::sending::precheck` from the memory entry.
//!   The rule lives there, not here and not in JavaScript.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailtls_core::memory::{MemoryEntry, MemoryKey};
use mailtls_core::report::DaneSummary;
use mailtls_core::sending::{Precheck, SenderRequirement, precheck};
use mailtls_core::{Address, CheckReport, Level, Problem, Target, TlsLevel};
use mailtls_store::TlsMemory;
use serde::Serialize;
use tracing::warn;

use crate::App;

/// One recipient's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The report, as `mailtls check --json` prints it.
    #[serde(flatten)]
    pub report: CheckReport,
    /// The text beside the symbol: the status, or the state that says why
    /// mail would not be delivered (`no such domain`, …).
    pub headline: String,
    /// What a person sees on mouse-over.
    pub details: Details,
    /// Whether a background probe is running for the domain (an event
    /// will follow).
    pub pending: bool,
    /// Present when the signed-in sender requires encrypted delivery:
    /// whether this recipient can be sent to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sendable: Option<bool>,
    /// Why not, when `sendable` is false; a note when it is not known yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<String>,
    /// The store could not be read: the answer is from this node's cache.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

/// The facts a tooltip shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Details {
    /// TLS protocol version (`TLSv1.3`), when TLS was seen.
    pub tls_version: Option<String>,
    /// Cipher suite.
    pub cipher: Option<String>,
    /// `ok` when DANE authenticated the server, `mismatch`, `unusable`,
    /// or `none`; `null` when not known.
    pub dane: Option<String>,
    /// When the provider was last observed, RFC 3339.
    pub last_seen: Option<String>,
}

impl App {
    /// The answer for what a person typed: a recent probe's report, else
    /// the memory's, else `SSL ?` and a background probe. Never waits for
    /// a probe. `requirement` is the signed-in sender's, if any.
    pub async fn answer(&self, input: &str, requirement: Option<&SenderRequirement>) -> Answer {
        let target = match Address::parse(input) {
            Ok(address) => Target::Address(address),
            Err(error) => {
                let report = CheckReport::invalid(input.trim(), &error, SystemTime::now());
                return finish(report, Details::default(), false, None, requirement);
            }
        };
        let (entry, stale) = self.memory_entry(&target).await;
        let domain = target.domain().as_str();
        if let Some(recent) = self.probes().recent(domain) {
            let mut report = (*recent).clone();
            report.address = target.to_string();
            let details = details_of_probe(&report);
            return finish(report, details, false, entry.as_ref(), requirement);
        }
        match entry {
            Some(entry) => {
                let mut report = CheckReport::from_memory(&target, Some(&entry), SystemTime::now());
                if stale {
                    report.detail = format!(
                        "{} (the shared TLS memory cannot be reached: this node's last copy, possibly stale)",
                        report.detail
                    );
                }
                let details = details_of_memory(&entry);
                let mut answer = finish(report, details, false, Some(&entry), requirement);
                answer.stale = stale;
                answer
            }
            None => {
                let report = CheckReport::from_memory(&target, None, SystemTime::now());
                let pending = self.probes().start(&target);
                finish(report, Details::default(), pending, None, requirement)
            }
        }
    }

    /// The answer for `address` from a probe report of its domain (for the
    /// event stream).
    pub async fn answer_from_probe(
        &self,
        address: &Address,
        probed: &CheckReport,
        requirement: Option<&SenderRequirement>,
    ) -> Answer {
        let target = Target::Address(address.clone());
        let (entry, _) = self.memory_entry(&target).await;
        let mut report = probed.clone();
        report.address = target.to_string();
        let details = details_of_probe(&report);
        finish(report, details, false, entry.as_ref(), requirement)
    }

    /// The domain's memory entry, and whether it is this node's last copy
    /// because the store cannot be read (issue #6: the check answers from
    /// a local cache marked as possibly stale).
    async fn memory_entry(&self, target: &Target) -> (Option<MemoryEntry>, bool) {
        let domain = target.domain().as_str();
        if let Some(entry) = self.probes().cached_entry(domain) {
            return (entry, false);
        }
        let key = MemoryKey::domain(domain);
        match mailtls_store::sql::bounded(self.store().entry(&key)).await {
            Ok(entry) => {
                self.probes().cache_entry(domain, entry.clone());
                (entry, false)
            }
            Err(e) => match self.probes().last_known_entry(domain) {
                Some(entry) => {
                    warn!(%key, error = %e, "TLS memory unavailable; answering from this node's last copy (possibly stale)");
                    (entry, true)
                }
                None => {
                    warn!(%key, error = %e, "TLS memory unavailable and nothing cached; answering without it");
                    (None, false)
                }
            },
        }
    }
}

fn finish(
    report: CheckReport,
    details: Details,
    pending: bool,
    entry: Option<&MemoryEntry>,
    requirement: Option<&SenderRequirement>,
) -> Answer {
    let (sendable, blocked_reason) = match requirement {
        None => (None, None),
        Some(_) if report.problem == Some(Problem::InvalidAddress) => (
            Some(false),
            Some(format!("{}: {}", report.address, report.detail)),
        ),
        Some(requirement) => match precheck(requirement, entry) {
            Precheck::Meets => (Some(true), None),
            Precheck::Fails(reason) => (Some(false), Some(reason)),
            Precheck::Unknown => (
                Some(true),
                Some(format!(
                    "not known yet whether {} meets {requirement}: the relay checks before delivery and returns the message if it does not",
                    report.domain
                )),
            ),
        },
    };
    Answer {
        headline: report.headline().to_owned(),
        report,
        details,
        pending,
        sendable,
        blocked_reason,
        stale: false,
    }
}

/// Details from a live probe: the first MX host that did TLS, else the
/// first.
fn details_of_probe(report: &CheckReport) -> Details {
    let mx = report
        .mx
        .iter()
        .find(|m| m.tls_version.is_some())
        .or_else(|| report.mx.first());
    Details {
        tls_version: mx.and_then(|m| m.tls_version.clone()),
        cipher: mx.and_then(|m| m.cipher.clone()),
        dane: mx.map(|m| {
            match m.dane {
                DaneSummary::Ok => "ok",
                DaneSummary::Mismatch => "mismatch",
                DaneSummary::Unusable => "unusable",
                DaneSummary::None => "none",
            }
            .to_owned()
        }),
        last_seen: Some(report.checked_at.clone()),
    }
}

/// Details from the memory entry of the domain.
fn details_of_memory(entry: &MemoryEntry) -> Details {
    Details {
        tls_version: entry.protocol.clone(),
        cipher: entry.cipher.clone(),
        dane: Some(
            if entry.best_level == TlsLevel::Dane {
                "ok"
            } else {
                "none"
            }
            .to_owned(),
        ),
        last_seen: Some(rfc3339(entry.last_seen_at)),
    }
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0).unsigned_abs()))
        .to_string()
}

/// Whether an answer is final for a chip: a known level or a problem.
pub fn is_settled(answer: &Answer) -> bool {
    answer.report.level != Level::Unknown || answer.report.problem.is_some() || !answer.pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(86_400 * 365 + 3661), "1971-01-01T01:01:01Z");
    }
}

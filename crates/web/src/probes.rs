//! Background probes: SPEC §1, "If the memory has nothing, the answer is
//! `unknown`, and the check may probe the MX hosts live … the result is
//! stored and the web UI updates in place."
//!
//! A web answer never waits for a probe: a domain the TLS memory does not
//! know is answered `SSL ?` at once and probed here. Probes are
//! deduplicated per domain (ten people typing the same recipient cause one
//! probe), bounded in number (at most `concurrency` run at once, and at
//! most [`MAX_QUEUED`] wait), and their results are broadcast to the event
//! streams and kept for a while ([`RECENT_TTL`]) so that an answer the
//! memory does not keep (a domain that does not exist, an unreachable
//! server) is not probed again on every keystroke. The probe itself is
//! `Checker::check_remembering`, which records what it learns in the
//! memory. Whether private addresses may be probed is the checker's
//! configuration (SPEC §7).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mailtls_check::{Checker, MemoryUse};
use mailtls_core::memory::MemoryEntry;
use mailtls_core::{CheckReport, Target};
use mailtls_store::SqlStore;
use tokio::sync::{Semaphore, broadcast};

/// Probes waiting or running at most; more are not started (the answer
/// stays `SSL ?` and a later request tries again).
pub const MAX_QUEUED: usize = 256;
/// How long a probe's report is reused.
pub const RECENT_TTL: Duration = Duration::from_secs(300);
/// Reports kept at most.
const MAX_RECENT: usize = 4096;
/// How long a TLS-memory entry read from the store is reused. Short: the
/// store is the truth (shared by a fleet, SPEC §6), this only spares it
/// the same read for every keystroke and every client of a busy page; a
/// probe finishing here drops its domain's entry at once.
pub const ENTRY_TTL: Duration = Duration::from_secs(2);
/// Entries kept at most (the cache is emptied when full).
const MAX_ENTRIES: usize = 16_384;

/// The probe coordinator.
pub struct Probes {
    inner: Arc<Inner>,
}

struct Inner {
    checker: Checker,
    store: SqlStore,
    permits: Semaphore,
    state: Mutex<State>,
    done: broadcast::Sender<Arc<CheckReport>>,
}

#[derive(Default)]
struct State {
    in_flight: HashSet<String>,
    recent: HashMap<String, (Instant, Arc<CheckReport>)>,
    entries: HashMap<String, (Instant, Option<MemoryEntry>)>,
}

impl Probes {
    /// A coordinator running at most `concurrency` probes at once.
    pub fn new(checker: Checker, store: SqlStore, concurrency: usize) -> Probes {
        let (done, _) = broadcast::channel(1024);
        Probes {
            inner: Arc::new(Inner {
                checker,
                store,
                permits: Semaphore::new(concurrency.max(1)),
                state: Mutex::new(State::default()),
                done,
            }),
        }
    }

    /// Starts a background probe of the target's domain unless one is
    /// running or waiting, or too many are. Whether a probe is now running
    /// for the domain.
    pub fn start(&self, target: &Target) -> bool {
        let domain = target.domain().as_str().to_owned();
        {
            let mut state = self.inner.lock();
            if state.in_flight.contains(&domain) {
                return true;
            }
            if state.in_flight.len() >= MAX_QUEUED {
                return false;
            }
            state.in_flight.insert(domain.clone());
        }
        let inner = Arc::clone(&self.inner);
        let target = target.clone();
        tokio::spawn(async move {
            let report = match inner.permits.acquire().await {
                Ok(_permit) => {
                    inner
                        .checker
                        .check_remembering(&target, &inner.store, MemoryUse::Bypass)
                        .await
                }
                // The semaphore is never closed; without a permit there is
                // nothing to report.
                Err(_) => {
                    inner.lock().in_flight.remove(&domain);
                    return;
                }
            };
            let report = Arc::new(report);
            {
                let mut state = inner.lock();
                state.in_flight.remove(&domain);
                state.entries.remove(&domain);
                if state.recent.len() >= MAX_RECENT {
                    let now = Instant::now();
                    state
                        .recent
                        .retain(|_, (at, _)| now.duration_since(*at) < RECENT_TTL);
                    if state.recent.len() >= MAX_RECENT {
                        state.recent.clear();
                    }
                }
                state
                    .recent
                    .insert(domain, (Instant::now(), Arc::clone(&report)));
            }
            // Nobody listening is fine.
            let _ = inner.done.send(report);
        });
        true
    }

    /// Whether a probe of `domain` is running or waiting.
    pub fn in_flight(&self, domain: &str) -> bool {
        self.inner.lock().in_flight.contains(domain)
    }

    /// The report of a probe of `domain` finished less than
    /// [`RECENT_TTL`] ago.
    pub fn recent(&self, domain: &str) -> Option<Arc<CheckReport>> {
        let state = self.inner.lock();
        state
            .recent
            .get(domain)
            .filter(|(at, _)| at.elapsed() < RECENT_TTL)
            .map(|(_, report)| Arc::clone(report))
    }

    /// The memory entry of `domain` read less than [`ENTRY_TTL`] ago
    /// (`Some(None)`: known to be absent then).
    pub fn cached_entry(&self, domain: &str) -> Option<Option<MemoryEntry>> {
        let state = self.inner.lock();
        state
            .entries
            .get(domain)
            .filter(|(at, _)| at.elapsed() < ENTRY_TTL)
            .map(|(_, entry)| entry.clone())
    }

    /// The memory entry of `domain` last read from the store, however old
    /// (for answering while the store cannot be reached; issue #6).
    pub fn last_known_entry(&self, domain: &str) -> Option<Option<MemoryEntry>> {
        let state = self.inner.lock();
        state.entries.get(domain).map(|(_, entry)| entry.clone())
    }

    /// Keeps what the store said about `domain` for [`ENTRY_TTL`].
    pub fn cache_entry(&self, domain: &str, entry: Option<MemoryEntry>) {
        let mut state = self.inner.lock();
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state
            .entries
            .insert(domain.to_owned(), (Instant::now(), entry));
    }

    /// Every probe report from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CheckReport>> {
        self.inner.done.subscribe()
    }

    /// Probes the target (deduplicated with the background probes) and
    /// waits up to `wait` for the report. Unless `fresh`, a recent report
    /// is taken as it is.
    pub async fn probe_and_wait(
        &self,
        target: &Target,
        wait: Duration,
        fresh: bool,
    ) -> Option<Arc<CheckReport>> {
        let domain = target.domain().as_str();
        let mut done = self.subscribe();
        if !fresh && let Some(report) = self.recent(domain) {
            return Some(report);
        }
        if !self.start(target) {
            return None;
        }
        let wait_for = async {
            loop {
                match done.recv().await {
                    Ok(report) if report.domain == domain => return Some(report),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(report) =
                            self.recent(domain).filter(|_| !self.in_flight(domain))
                        {
                            return Some(report);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(wait, wait_for).await.ok().flatten()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere
        // does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

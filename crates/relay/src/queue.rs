//! The queue runner: which messages are due, who delivers them, what is
//! recorded, when to try again, and when to give up (Postfix's `qmgr`).
//!
//! A pass ([`Runner::run_pass`]) claims due messages from the store (a
//! lease, so that a message is worked on once at a time), delivers each
//! one's due recipients grouped by domain — remote domains over SMTP
//! ([`crate::delivery`]), the local domains and the secure domain to the
//! mail store ([`crate::local`]: Maildir or LMTP; a secure alias is the
//! mailbox of its owner) — at most `delivery_concurrency` domain deliveries
//! at once, and records one outcome per recipient:
//!
//! * a deferral is retried after `retry_base`, doubling per attempt up to
//!   `retry_max` (RFC 5321 §4.5.4.1: retry, with the interval the sender's
//!   choice; at least 30 minutes is its suggestion for the Internet);
//! * a deferral after `queue_lifetime` since arrival becomes a failure,
//!   `5.4.7` "delivery time expired" (RFC 3463), with the last reason (RFC
//!   5321 §4.5.4.1: give up after at least 4–5 days);
//! * failures are reported to the sender in one DSN per message and pass
//!   ([`crate::bounce`]), unless the sender is `<>` (RFC 5321 §4.5.5: never
//!   bounce a bounce).
//!
//! At least once, never lost: the DSN is queued before the failures are
//! recorded, the outcomes are recorded after the delivery, and the spool
//! file is removed only when every recipient is final. A crash in between
//! repeats work (a second delivery, a second DSN); it never drops any.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use mailtls_core::Address;
use mailtls_core::SmtpStatus;
use mailtls_dns::MailResolver;
use mailtls_store::{
    NewMessage, QueuedMessage, QueuedRecipient, RecipientOutcome, RecipientState, StoreError,
};
use mailtls_tls::TlsClient;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::bounce::{self, DsnInput, FailedRecipient};
use crate::config::RelayConfig;
use crate::delivery::{Deliverer, DeliverySettings, DomainJob, Outcome, RecipientReport, unix_now};
use crate::local::{LocalOutcome, LocalRecipient};
use crate::server::ServerStore;
use crate::spool::Spool;
use mailtls_store::sql::bounded;

/// How long a claimed message stays leased: longer than any one attempt
/// (ten hosts, four addresses each, bounded steps) is expected to take. A
/// crash leaves the lease; a single node resets them at start.
pub const LEASE: Duration = Duration::from_secs(60 * 60);
/// The runner looks at the queue at least this often, even without a wake.
pub const MAX_IDLE: Duration = Duration::from_secs(30);
/// A pass after a store failure waits this long.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// RFC 3463 X.3.0, for local problems (spool, store).
const LOCAL_TEMP: SmtpStatus = SmtpStatus::new(451, 4, 3, 0);

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Messages claimed.
    pub claimed: usize,
    /// Recipients delivered.
    pub delivered: usize,
    /// Recipients deferred.
    pub deferred: usize,
    /// Recipients failed (bounced, or dropped for a `<>` sender).
    pub failed: usize,
    /// DSNs queued.
    pub bounces: usize,
    /// The earliest retry time set in this pass (`now` when a DSN was
    /// queued: it is due at once).
    pub next_due: Option<i64>,
}

/// Delivers what the queue holds. Cheap to clone.
#[derive(Clone)]
pub struct Runner<S> {
    config: Arc<RelayConfig>,
    store: S,
    spool: Spool,
    deliverer: Deliverer<S>,
    slots: Arc<Semaphore>,
}

impl<S> Runner<S>
where
    S: ServerStore,
{
    /// A runner over the shared store (queue and TLS memory), spool,
    /// resolver and TLS client.
    pub fn new(
        config: Arc<RelayConfig>,
        store: S,
        spool: Spool,
        resolver: MailResolver,
        tls: TlsClient,
    ) -> Runner<S> {
        let deliverer = Deliverer::new(
            resolver,
            tls,
            store.clone(),
            DeliverySettings::from_config(&config),
        );
        let slots = Arc::new(Semaphore::new(config.delivery_concurrency.max(1)));
        Runner {
            config,
            store,
            spool,
            deliverer,
            slots,
        }
    }

    /// One pass at time `now` (Unix seconds): queue envelopes held on local
    /// disk, claim the due messages (up to a batch), deliver, record,
    /// bounce, release. Only store failures to
    /// claim are errors; everything else is recorded per recipient.
    pub async fn run_pass(&self, now: i64) -> Result<PassReport, StoreError> {
        if self.spool.has_held() {
            self.requeue_held().await;
        }
        let batch = batch_size(&self.config);
        let lease = i64::try_from(LEASE.as_secs()).unwrap_or(i64::MAX);
        let claimed = self.store.claim_due(now, lease, batch).await?;
        let mut report = PassReport {
            claimed: claimed.len(),
            ..PassReport::default()
        };
        let passes = join_all(claimed.iter().map(|msg| self.process(msg, now))).await;
        for one in passes {
            report.delivered += one.delivered;
            report.deferred += one.deferred;
            report.failed += one.failed;
            report.bounces += one.bounces;
            report.next_due = min_opt(report.next_due, one.next_due);
        }
        Ok(report)
    }

    /// One claimed message: deliver its due recipients, record, release.
    async fn process(&self, msg: &QueuedMessage, now: i64) -> PassReport {
        let due: Vec<&QueuedRecipient> = msg.due(now).collect();
        if due.is_empty() {
            self.release(msg).await;
            return PassReport::default();
        }
        let (reports, body) = match self.spool.read(&msg.id).await {
            Ok(body) => (self.deliver(msg, &due, &body).await, body),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::error!(message = %msg.id, "spool file missing: the message cannot be delivered");
                let lost = Outcome::Failed {
                    status: SmtpStatus::new(550, 5, 3, 0),
                    reason: "the message was lost from the spool of the sending system".into(),
                    remote_reply: false,
                };
                (same_for_all(&due, lost), Vec::new())
            }
            Err(e) => {
                let unreadable = Outcome::Deferred {
                    status: LOCAL_TEMP,
                    reason: format!("cannot read the spooled message: {e}"),
                };
                (same_for_all(&due, unreadable), Vec::new())
            }
        };
        let report = self.record(msg, &due, reports, now, &body).await;
        self.release(msg).await;
        report
    }

    async fn release(&self, msg: &QueuedMessage) {
        if let Err(e) = self.store.release(&msg.id).await {
            tracing::error!(message = %msg.id, error = %e, "cannot release the lease");
        }
    }

    /// Delivers the due recipients, one delivery per domain, concurrently
    /// within the runner's slots.
    async fn deliver(
        &self,
        msg: &QueuedMessage,
        due: &[&QueuedRecipient],
        body: &[u8],
    ) -> Vec<RecipientReport> {
        let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut reports = Vec::new();
        for r in due {
            match domain_of(&r.address) {
                Some(domain) => by_domain.entry(domain).or_default().push(r.address.clone()),
                None => reports.push(RecipientReport {
                    recipient: r.address.clone(),
                    outcome: Outcome::Failed {
                        status: SmtpStatus::new(550, 5, 1, 3),
                        reason: format!("'{}' is not a valid address", r.address),
                        remote_reply: false,
                    },
                    remote_mta: None,
                }),
            }
        }
        let deliveries = by_domain.iter().map(|(domain, recipients)| async move {
            // Invariant: the semaphore is never closed, so acquire succeeds;
            // were it closed, delivering without a slot is still correct.
            let _slot = self.slots.acquire().await.ok();
            if self.is_local(domain) {
                return self.deliver_local(msg, domain, recipients, body).await;
            }
            let job = DomainJob {
                message_id: &msg.id,
                domain,
                sender: &msg.sender,
                recipients: recipients.as_slice(),
                sender_requirement: msg.sender_requirement,
                message: body,
            };
            self.deliverer.deliver_domain(&job).await
        });
        for domain_reports in join_all(deliveries).await {
            reports.extend(domain_reports);
        }
        reports
    }

    /// Moves envelopes held on local disk while the store was unavailable
    /// into the store's queue (see [`crate::spool`]); whether all went.
    async fn requeue_held(&self) -> bool {
        let held = match self.spool.held().await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "cannot list held envelopes");
                return false;
            }
        };
        for entry in held {
            let message = match entry {
                Ok(message) => message,
                Err((name, e)) => {
                    tracing::error!(file = %name, error = %e, "a held envelope cannot be read; left for the operator");
                    continue;
                }
            };
            match bounded(self.store.enqueue(&message)).await {
                Ok(()) | Err(StoreError::AlreadyExists(_)) => {
                    tracing::info!(message = %message.id, "held envelope queued: the store answers again");
                    if let Err(e) = self.spool.release_held(&message.id).await {
                        tracing::warn!(message = %message.id, error = %e, "cannot remove the held envelope");
                    }
                }
                Err(e) => {
                    tracing::warn!(message = %message.id, error = %e, "the store still cannot queue held mail");
                    return false;
                }
            }
        }
        true
    }

    /// Whether mail for `domain` is ours: a local domain or the secure one.
    fn is_local(&self, domain: &str) -> bool {
        self.config.local_domains.iter().any(|d| d == domain)
            || self.config.secure_domain.as_deref() == Some(domain)
    }

    /// Local delivery of one domain's recipients to the mail store. A
    /// secure alias's mail goes to its owner's mailbox; an alias switched
    /// off since the mail was accepted fails with `5.1.1`.
    async fn deliver_local(
        &self,
        msg: &QueuedMessage,
        domain: &str,
        recipients: &[String],
        body: &[u8],
    ) -> Vec<RecipientReport> {
        let secure = self.config.secure_domain.as_deref() == Some(domain);
        let mut reports: Vec<Option<RecipientReport>> = vec![None; recipients.len()];
        let mut local = Vec::new();
        let mut positions = Vec::new();
        for (i, rcpt) in recipients.iter().enumerate() {
            let mailbox = match Address::parse(rcpt) {
                Err(_) => Err(Outcome::Failed {
                    status: SmtpStatus::new(550, 5, 1, 3),
                    reason: format!("'{rcpt}' is not a valid address"),
                    remote_reply: false,
                }),
                Ok(address) if secure => match self.store.alias_owner(address.local_part()).await {
                    Ok(Some(owner)) => Ok(owner.address),
                    Ok(None) => Err(Outcome::Failed {
                        status: SmtpStatus::new(550, 5, 1, 1),
                        reason: format!("the secure alias {rcpt} does not exist (any more)"),
                        remote_reply: false,
                    }),
                    Err(e) => Err(Outcome::Deferred {
                        status: LOCAL_TEMP,
                        reason: format!("the secure alias cannot be looked up: {e}"),
                    }),
                },
                Ok(address) => Ok(address.to_string()),
            };
            match mailbox {
                Ok(mailbox) => {
                    local.push(LocalRecipient {
                        mailbox,
                        original: rcpt.clone(),
                    });
                    positions.push(i);
                }
                Err(outcome) => {
                    reports[i] = Some(RecipientReport {
                        recipient: rcpt.clone(),
                        outcome,
                        remote_mta: None,
                    })
                }
            }
        }
        if !local.is_empty() {
            let outcomes = self
                .config
                .mail_store
                .deliver(
                    &msg.id,
                    &msg.sender,
                    &local,
                    body,
                    &self.config.hostname,
                    self.config.smtp_timeout,
                )
                .await;
            for ((i, r), outcome) in positions.into_iter().zip(&local).zip(outcomes) {
                let outcome = match outcome {
                    LocalOutcome::Delivered { detail } => Outcome::Delivered { detail },
                    LocalOutcome::Deferred { status, reason } => {
                        Outcome::Deferred { status, reason }
                    }
                    LocalOutcome::Failed { status, reason } => Outcome::Failed {
                        status,
                        reason,
                        remote_reply: false,
                    },
                };
                tracing::info!(message = %msg.id, recipient = %r.original, mailbox = %r.mailbox, ?outcome, "local delivery");
                reports[i] = Some(RecipientReport {
                    recipient: r.original.clone(),
                    outcome,
                    remote_mta: None,
                });
            }
        }
        reports
            .into_iter()
            .zip(recipients)
            .map(|(report, rcpt)| {
                report.unwrap_or_else(|| RecipientReport {
                    recipient: rcpt.clone(),
                    outcome: Outcome::Deferred {
                        status: LOCAL_TEMP,
                        reason: "the mail store gave no answer for this recipient".into(),
                    },
                    remote_mta: None,
                })
            })
            .collect()
    }

    /// Turns reports into stored outcomes (backoff, lifetime), queues the
    /// DSN first, then records, then removes the spool file if all is final.
    async fn record(
        &self,
        msg: &QueuedMessage,
        due: &[&QueuedRecipient],
        reports: Vec<RecipientReport>,
        now: i64,
        body: &[u8],
    ) -> PassReport {
        let mut pass = PassReport::default();
        let mut outcomes: Vec<(String, RecipientOutcome)> = Vec::new();
        let mut failed: Vec<FailedRecipient> = Vec::new();
        for report in reports {
            let attempts = due
                .iter()
                .find(|r| r.address == report.recipient)
                .map_or(0, |r| r.attempts);
            let outcome = self.stored_outcome(msg, &report, attempts, now);
            match &outcome {
                RecipientOutcome::Delivered { .. } => pass.delivered += 1,
                RecipientOutcome::Deferred {
                    next_attempt_at, ..
                } => {
                    pass.deferred += 1;
                    pass.next_due = min_opt(pass.next_due, Some(*next_attempt_at));
                }
                RecipientOutcome::Failed { status, reason } => {
                    pass.failed += 1;
                    failed.push(FailedRecipient {
                        address: report.recipient.clone(),
                        status: *status,
                        reason: reason.clone(),
                        remote_mta: report.remote_mta.clone(),
                        remote_reply: matches!(
                            report.outcome,
                            Outcome::Failed {
                                remote_reply: true,
                                ..
                            }
                        ),
                    });
                }
            }
            outcomes.push((report.recipient, outcome));
        }

        if !failed.is_empty() && !msg.sender.is_empty() {
            match self.queue_bounce(msg, &failed, body, now).await {
                Ok(()) => {
                    pass.bounces += 1;
                    // The DSN is due now: the runner must not idle before
                    // sending it (nothing else wakes it for its own mail).
                    pass.next_due = min_opt(pass.next_due, Some(now));
                }
                Err(e) => {
                    // Not recorded as failed without its DSN: try again soon.
                    tracing::error!(message = %msg.id, error = %e, "cannot queue the DSN; failures kept pending");
                    let retry = now.saturating_add(secs(self.config.retry_base));
                    for (_, outcome) in &mut outcomes {
                        if let RecipientOutcome::Failed { status, reason } = outcome {
                            *outcome = RecipientOutcome::Deferred {
                                status: *status,
                                reason: reason.clone(),
                                next_attempt_at: retry,
                            };
                        }
                    }
                    pass.failed = 0;
                }
            }
        } else if !failed.is_empty() {
            tracing::info!(message = %msg.id, count = failed.len(), "failures of a message from <> are not bounced (RFC 5321 §4.5.5)");
        }

        let mut all_recorded = true;
        for (recipient, outcome) in &outcomes {
            if let Err(e) = self
                .store
                .record_outcome(&msg.id, recipient, outcome, now)
                .await
            {
                all_recorded = false;
                tracing::error!(message = %msg.id, recipient = %recipient, error = %e, "cannot record the outcome");
            }
        }
        let still_pending = msg.recipients.iter().any(|r| {
            r.state == RecipientState::Pending
                && !outcomes.iter().any(|(address, outcome)| {
                    *address == r.address && !matches!(outcome, RecipientOutcome::Deferred { .. })
                })
        });
        if all_recorded
            && !still_pending
            && let Err(e) = self.spool.remove(&msg.id).await
        {
            tracing::warn!(message = %msg.id, error = %e, "cannot remove the spool file");
        }
        pass
    }

    /// The outcome to store: a deferral gets its next attempt time, or
    /// becomes `5.4.7` once the queue lifetime is over.
    fn stored_outcome(
        &self,
        msg: &QueuedMessage,
        report: &RecipientReport,
        attempts: u32,
        now: i64,
    ) -> RecipientOutcome {
        match &report.outcome {
            Outcome::Delivered { detail } => RecipientOutcome::Delivered {
                detail: detail.clone(),
            },
            Outcome::Failed { status, reason, .. } => RecipientOutcome::Failed {
                status: *status,
                reason: reason.clone(),
            },
            Outcome::Deferred { status, reason } => {
                let age = now.saturating_sub(msg.received_at);
                if age >= secs(self.config.queue_lifetime) {
                    RecipientOutcome::Failed {
                        status: SmtpStatus::EXPIRED,
                        reason: format!(
                            "delivery time expired: not delivered within {}; last error: {status} {reason}",
                            human_duration(self.config.queue_lifetime)
                        ),
                    }
                } else {
                    let delay = backoff(self.config.retry_base, self.config.retry_max, attempts);
                    RecipientOutcome::Deferred {
                        status: *status,
                        reason: reason.clone(),
                        next_attempt_at: now.saturating_add(secs(delay)),
                    }
                }
            }
        }
    }

    /// Builds the DSN, spools it and queues it to the original sender from
    /// `<>`.
    async fn queue_bounce(
        &self,
        msg: &QueuedMessage,
        failed: &[FailedRecipient],
        original: &[u8],
        now: i64,
    ) -> Result<(), BounceError> {
        let id = Spool::new_id();
        let dsn = bounce::build_dsn(&DsnInput {
            hostname: &self.config.hostname,
            message_id: &msg.id,
            dsn_id: &id,
            original_sender: &msg.sender,
            arrival: msg.received_at,
            now,
            failed,
            original,
        });
        let mut writer = self.spool.create(&id).await?;
        writer.write_all(&dsn).await?;
        writer.commit().await?;
        self.store
            .enqueue(&NewMessage {
                id: id.clone(),
                sender: String::new(),
                recipients: vec![msg.sender.clone()],
                size: dsn.len() as u64,
                received_at: now,
                auth_user: None,
                client: format!("DSN for {}", msg.id),
                sender_requirement: None,
            })
            .await?;
        tracing::info!(message = %msg.id, dsn = %id, to = %msg.sender, failed = failed.len(), "DSN queued");
        Ok(())
    }
}

/// Why a DSN could not be queued.
#[derive(Debug, thiserror::Error)]
enum BounceError {
    #[error("spool: {0}")]
    Spool(#[from] io::Error),
    #[error("queue: {0}")]
    Store(#[from] StoreError),
}

/// Starts the queue runner on the current tokio runtime.
#[derive(Debug)]
pub struct QueueRunner;

/// The running queue runner.
#[derive(Debug)]
pub struct QueueHandle {
    task: JoinHandle<()>,
}

impl QueueHandle {
    /// Waits until the runner stopped (after `shutdown` was cancelled).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "queue runner ended abnormally");
        }
    }
}

impl QueueRunner {
    /// Resets leases left by a previous run (single node), then runs passes
    /// until `shutdown` is cancelled: after each pass it sleeps until the
    /// earliest retry it set, [`MAX_IDLE`], or a `wake` (the submission
    /// server notifies after queueing a message), whichever comes first.
    /// A pass cut short by shutdown loses nothing: its leases are reset at
    /// the next start and its deliveries repeated.
    pub fn start<S>(
        config: Arc<RelayConfig>,
        store: S,
        spool: Spool,
        resolver: MailResolver,
        tls: TlsClient,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> QueueHandle
    where
        S: ServerStore,
    {
        let runner = Runner::new(config, store, spool, resolver, tls);
        let task = tokio::spawn(async move {
            match runner.store.reset_leases().await {
                Ok(n) if n > 0 => tracing::info!(count = n, "leases of an earlier run reset"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot reset leases"),
            }
            runner.run(wake, shutdown).await;
        });
        QueueHandle { task }
    }
}

impl<S> Runner<S>
where
    S: ServerStore,
{
    /// The continuous scheduler: keeps up to a batch of messages in
    /// progress, and claims more as soon as one finishes, a message is
    /// queued (`wake`), or a retry falls due — so one slow delivery never
    /// holds back the others (as waiting for a whole pass would).
    async fn run(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let batch = batch_size(&self.config);
        let lease = i64::try_from(LEASE.as_secs()).unwrap_or(i64::MAX);
        let mut in_progress: JoinSet<PassReport> = JoinSet::new();
        let mut next_due: Option<i64> = None;
        let mut held_tried: Option<tokio::time::Instant> = None;
        loop {
            // Registered before claiming, so a wake meanwhile is not lost.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = unix_now();
            if next_due.is_some_and(|t| t <= now) {
                next_due = None;
            }
            let mut wait = secs(MAX_IDLE);
            if self.spool.has_held() && held_tried.is_none_or(|t| t.elapsed() >= STORE_RETRY) {
                held_tried = Some(tokio::time::Instant::now());
                if !self.requeue_held().await {
                    // The store still refuses: try again soon.
                    wait = secs(STORE_RETRY);
                }
            }
            let free = batch.saturating_sub(in_progress.len());
            let mut claimed = 0;
            if free > 0 {
                match bounded(self.store.claim_due(now, lease, free)).await {
                    Ok(messages) => {
                        claimed = messages.len();
                        for msg in messages {
                            let runner = self.clone();
                            in_progress.spawn(async move { runner.process(&msg, now).await });
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim due messages");
                        wait = secs(STORE_RETRY);
                    }
                }
            }
            if claimed > 0 && claimed == free {
                continue; // more may be due: claim again while slots are free
            }
            // The store knows retries set elsewhere: by an earlier run, or by
            // `mailtls queue retry` from a shell.
            match bounded(self.store.next_due()).await {
                Ok(due) => next_due = min_opt(next_due, due),
                Err(e) => tracing::warn!(error = %e, "cannot read the next due time"),
            }
            // A due recipient that could not be claimed (leased, or no free
            // slot) must not make the loop spin: wait at least a second,
            // unless a delivery in progress finishes first.
            let until = next_due.map_or(wait, |t| t.saturating_sub(unix_now()).clamp(1, wait));
            let sleep = tokio::time::sleep(Duration::from_secs(u64::try_from(until).unwrap_or(1)));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut notified => {}
                _ = sleep => {}
                Some(done) = in_progress.join_next(), if !in_progress.is_empty() => {
                    match done {
                        Ok(report) => next_due = min_opt(next_due, report.next_due),
                        Err(e) => tracing::error!(error = %e, "a delivery task ended abnormally"),
                    }
                }
            }
        }
        // Deliveries cut short lose nothing: their leases are reset at the
        // next start and the attempts repeated (at least once).
        in_progress.shutdown().await;
        tracing::info!("queue runner stopped");
    }
}

/// Messages in progress at once (and claimed per pass): twice the delivery
/// slots, so that slots stay busy while bounding the message bodies held in
/// memory at once.
fn batch_size(config: &RelayConfig) -> usize {
    config.delivery_concurrency.max(1) * 2
}

/// `retry_base · 2^attempts`, at most `retry_max`.
pub fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// The domain of an address (after the last `@`), lower case; `None` when
/// there is none.
fn domain_of(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.');
    (!local.is_empty() && !domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

fn same_for_all(due: &[&QueuedRecipient], outcome: Outcome) -> Vec<RecipientReport> {
    due.iter()
        .map(|r| RecipientReport {
            recipient: r.address.clone(),
            outcome: outcome.clone(),
            remote_mta: None,
        })
        .collect()
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `5 days`, `3 hours`, `90 seconds`: for people.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => plural(s / 3_600, "hour"),
        s if s >= 60 && s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let (base, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(backoff(base, max, 0), Duration::from_secs(60));
        assert_eq!(backoff(base, max, 1), Duration::from_secs(120));
        assert_eq!(backoff(base, max, 5), Duration::from_secs(1920));
        assert_eq!(backoff(base, max, 6), max);
        assert_eq!(backoff(base, max, 1000), max);
    }

    #[test]
    fn domains_are_taken_after_the_last_at() {
        assert_eq!(domain_of("a@B.example.").as_deref(), Some("b.example"));
        assert_eq!(domain_of("\"a@b\"@c.example").as_deref(), Some("c.example"));
        assert_eq!(domain_of("nobody"), None);
        assert_eq!(domain_of("@x"), None);
        assert_eq!(domain_of("x@"), None);
    }

    #[test]
    fn lifetimes_read_as_words() {
        assert_eq!(human_duration(Duration::from_secs(432_000)), "5 days");
        assert_eq!(human_duration(Duration::from_secs(3_600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
    }
}

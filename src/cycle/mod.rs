//! The purge cycle: list, decide, record, purge, follow jobs, settle.
//!
//! `run_cycle` is one plain function that the scheduler, `once`, the demo
//! and the tests call. It talks to Zendesk only through the client and to
//! SQLite only through the audit store, and it writes ahead: the decisions
//! and a batch are committed before the batch's `destroy_many` is sent, and
//! the job id as soon as the answer arrives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audit::{
    AuditStore, DecisionKind, DecisionRecord, JobRowId, JobRowStatus, LedgerEntry, LedgerState,
    ListingMarks, Outcome, RequestKind, RunCounts, RunId, Sighting, Unsettled, parse_ids,
};
pub use crate::audit::{RunStatus, Trigger};
use crate::config::Config;
use crate::listing::PageOrder;
use crate::rules::{Decision, Policy};
use crate::zendesk::{
    ClientStatsSnapshot, DeletedTicket, IdBatch, JobId, JobState, JobStatus, ListOptions, SortBy,
    SortOrder, TicketId, ZendeskClient, ZendeskError,
};

/// The knobs of a cycle, from the config or set by tests.
#[derive(Debug, Clone)]
pub struct CycleSettings {
    pub dry_run: bool,
    pub max_purges_per_run: u64,
    /// Send batches while the scan goes on; `max_purges_per_run` then stops
    /// sending at the limit instead of purging nothing.
    pub purge_while_scanning: bool,
    pub max_jobs_in_flight: usize,
    pub job_poll_interval: Duration,
    /// A job not finished after this long counts as unknown.
    pub job_timeout: Duration,
    /// After cancellation, how long open jobs are still followed.
    pub shutdown_grace: Duration,
    pub record_subjects: bool,
    /// Unsettled outcomes older than this are no longer checked (Zendesk
    /// scrubs deleted tickets after about 30 days).
    pub settle_window: Duration,
    /// A run walks the whole view when the last such walk started longer
    /// ago than this; otherwise it reads only the newest deletions.
    pub reconcile_every: Duration,
    /// Details of tickets settled longer ago are pruned after each run.
    pub keep_details: Option<Duration>,
    /// How far Zendesk's `deleted_at` and this host's clock may disagree:
    /// the refresh reads this far below the high-water mark, and every
    /// freshness read this far before the listing it checks.
    pub clock_skew: Duration,
}

impl CycleSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            dry_run: config.safety.dry_run,
            max_purges_per_run: config.safety.max_purges_per_run,
            purge_while_scanning: config.safety.purge_while_scanning,
            max_jobs_in_flight: config.zendesk.max_jobs_in_flight,
            job_poll_interval: config.zendesk.job_poll_interval,
            job_timeout: config.zendesk.job_timeout,
            shutdown_grace: config.schedule.shutdown_grace,
            record_subjects: config.audit.record_subjects,
            settle_window: Duration::from_secs(31 * 86_400),
            reconcile_every: config.schedule.reconcile,
            keep_details: config.audit.keep_details,
            clock_skew: config.zendesk.clock_skew,
        }
    }
}

/// Everything a cycle needs.
#[derive(Clone)]
pub struct CycleContext {
    pub policy: Arc<Policy>,
    pub settings: CycleSettings,
    pub config_hash: String,
    pub client: ZendeskClient,
    pub store: AuditStore,
    /// Cancelled on shutdown: no new batch is sent, open jobs are followed
    /// for `shutdown_grace`.
    pub cancel: CancellationToken,
}

impl CycleContext {
    pub fn new(
        config: &Config,
        client: ZendeskClient,
        store: AuditStore,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            policy: Arc::new(config.policy.clone()),
            settings: CycleSettings::from_config(config),
            config_hash: config.hash.clone(),
            client,
            store,
            cancel,
        }
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub run_id: RunId,
    pub status: RunStatus,
    pub dry_run: bool,
    pub counts: RunCounts,
    /// Tickets selected per purge rule.
    pub matched_by_rule: BTreeMap<String, u64>,
    /// Tickets kept per reason (`keep_rule`, `keep_no_rule`, ...).
    pub kept: BTreeMap<String, u64>,
    pub purge_batches: u64,
    /// Reported purged earlier but listed again.
    pub not_effective: u64,
    /// Earlier purges or unknown outcomes proven gone: absent from the view
    /// and not among the active tickets.
    pub confirmed_gone: u64,
    /// Absent from the view but found among active tickets: restored by
    /// someone, not purged.
    pub restored_elsewhere: u64,
    /// Unknown outcomes of tickets deleted more than 30 days ago and gone:
    /// Zendesk's own scrub cannot be told from our purge.
    pub scrubbed_by_zendesk: u64,
    /// Absent tickets whose lookup failed: left for a later run.
    pub unsettled_lookup_failed: u64,
    /// Listings of a ticket already listed in this scan.
    pub relisted: u64,
    /// Selected, but already in a purge job an earlier (killed) process
    /// sent: that job is followed, and they are not sent again.
    pub already_in_flight: u64,
    /// Tickets not purged because they changed during the scan (listed
    /// twice with different data, or deleted again).
    pub changed_during_scan: u64,
    /// The longest time between a purged ticket's last listing and its
    /// `destroy_many`.
    #[serde(with = "option_seconds")]
    pub max_listing_age: Option<Duration>,
    /// Listing requests beyond the scan's pages: the order proof, the
    /// freshness reads before purging, the newest-first read that settles
    /// absent tickets.
    pub safety_list_requests: SafetyRequests,
    /// Selected but never sent (limit, failure or shutdown).
    pub not_sent: u64,
    pub requests: ClientStatsSnapshot,
    /// `refresh` (the newest deletions) or `full` (a whole walk), and why.
    pub scan: String,
    pub scan_reason: String,
    /// `refresh` or `reconcile`.
    pub step: String,
    /// Live ledger rows decided again without a listing.
    pub decided_from_ledger: u64,
    /// Decision rows written: first sightings and changed decisions only.
    pub decisions_recorded: u64,
    /// Kept tickets a whole walk no longer found, and not active.
    pub left_view: u64,
    /// Audit rows pruned by `audit.keep_details`.
    pub pruned: u64,
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    pub error: Option<String>,
}

mod option_seconds {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Listing requests made for safety rather than for the scan itself.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SafetyRequests {
    pub order_proof: u64,
    pub freshness: u64,
    pub settle: u64,
}

/// Outcome tallies of the purge worker.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub purged: u64,
    pub failed: u64,
    pub unknown: u64,
    pub not_sent: u64,
    pub batches: u64,
    /// The longest time between a sent ticket's last listing and its
    /// `destroy_many`.
    pub max_listing_age: Option<Duration>,
    /// Tickets the freshness read found deleted again: not sent.
    pub changed: u64,
    /// Listing requests of the freshness reads.
    pub freshness_requests: u64,
    /// Why batches were not sent: the freshness read failed.
    pub freshness_failed: Option<String>,
    /// An error that ended the purging (credentials refused, store failed).
    pub fatal: Option<String>,
}

/// Sends batches whose decisions are already recorded, and follows their
/// jobs to the end: the write path that manual purges share with the cycle.
pub(crate) async fn send_and_follow(
    ctx: &CycleContext,
    run: RunId,
    releases: Vec<Release>,
) -> Tally {
    let (sender, receiver) = mpsc::channel::<Release>(8);
    let worker = PurgeWorker::new(
        ctx,
        run,
        ListingGate::default(),
        Vec::new(),
        Tally::default(),
    );
    let worker = tokio::spawn(worker.run(receiver));
    for release in releases {
        if sender.send(release).await.is_err() {
            break;
        }
    }
    drop(sender);
    worker.await.unwrap_or_else(|e| Tally {
        fatal: Some(format!("the purge worker stopped: {e}")),
        ..Tally::default()
    })
}

/// A job sent and not yet finished.
#[derive(Debug, Clone)]
struct OpenJob {
    row: JobRowId,
    id: JobId,
    tickets: Vec<TicketId>,
    since: Instant,
    /// Consecutive polls that did not find it.
    misses: u32,
    last_status: String,
}

/// Runs one cycle to its end and records it. `Err` only when the audit
/// store itself fails; a failed run is an `Ok` report with status `failed`.
pub async fn run_cycle(ctx: &CycleContext, trigger: Trigger) -> anyhow::Result<CycleReport> {
    let started = Instant::now();
    let stats_before = ctx.client.stats();
    let store = &ctx.store;
    let settings = &ctx.settings;
    let now = Utc::now();

    // never build on rows changed outside (a daemon runs for months)
    store.check_states().await?;
    let interrupted = store.close_interrupted_runs(now).await?;
    if !interrupted.is_empty() {
        tracing::warn!(runs = ?interrupted, "earlier runs did not finish; recorded as interrupted");
    }
    let run = store
        .start_run(trigger, settings.dry_run, &ctx.config_hash, now)
        .await?;
    tracing::info!(
        run,
        trigger = trigger.as_str(),
        dry_run = settings.dry_run,
        "run started"
    );

    // Jobs an earlier process sent and did not see end.
    let mut recovered = Vec::new();
    let mut recovered_unknown = 0u64;
    // Ids in jobs an earlier process sent that are still open: this run
    // follows those jobs and does not ask Zendesk to purge them again.
    let mut in_flight = IdSet::default();
    for job in store.open_jobs().await? {
        let tickets = parse_ids(&job.ticket_ids);
        if job.kind != RequestKind::DestroyMany {
            settle_lost_restore(ctx, run, job.id, &tickets).await?;
            continue;
        }
        match job.zendesk_job_id {
            Some(id) => {
                in_flight.extend(tickets.iter().copied());
                recovered.push(OpenJob {
                    row: job.id,
                    id: JobId(id),
                    tickets,
                    since: Instant::now(),
                    misses: 0,
                    last_status: job.status.to_string(),
                })
            }
            _ => {
                recovered_unknown += tickets.len() as u64;
                store
                    .record_job_end(run, job.id, JobRowStatus::Unknown, Some("the process stopped before Zendesk's answer was recorded; the next scan settles it"), Outcome::Unknown, &tickets)
                    .await?;
            }
        }
    }
    if !recovered.is_empty() {
        tracing::info!(
            jobs = recovered.len(),
            "following jobs left open by an earlier process"
        );
    }

    let mut ledger = store.ledger_live().await?;
    let patterns = if settings.record_subjects {
        Vec::new()
    } else {
        ctx.policy.subject_fingerprints()
    };
    let marks = store.listing_marks(&patterns).await?;

    // The purge worker: sends batches and follows jobs.
    let (batches, receiver) = mpsc::channel::<Release>(8);
    let gate = ListingGate::default();
    let worker = PurgeWorker::new(
        ctx,
        run,
        gate.clone(),
        recovered,
        Tally {
            unknown: recovered_unknown,
            ..Tally::default()
        },
    );
    let worker = tokio::spawn(worker.run(receiver));

    let scan = scan(ctx, run, &mut ledger, &marks, &batches, &gate, in_flight).await;
    drop(batches);
    let tally = match worker.await {
        Ok(t) => t,
        Err(e) => Tally {
            fatal: Some(format!("the purge worker stopped: {e}")),
            ..Tally::default()
        },
    };
    let scan = scan?;

    // A whole walk (a reconcile) settles the live ledger rows it did not
    // list: absent from the view is not yet proof of anything, so each is
    // looked up among the active tickets and read for newest-first.
    let mut settled = Settled::default();
    let mut settle_requests = 0;
    if scan.finished() && scan.step == Step::Reconcile {
        let mut absent: Vec<(TicketId, Unsettled)> = scan
            .absent
            .iter()
            .filter(|e| e.state != LedgerState::PurgeRequested)
            .map(|e| {
                let since = match e.state {
                    // a deletion again after the purge request carries a later time
                    LedgerState::Purged | LedgerState::Unknown => {
                        e.requested_at.or(e.last_seen).unwrap_or(scan.walk_started)
                    }
                    // known in the view when the walk began, or the refreshes
                    // since its last sighting would have found it deleted again
                    _ => scan.walk_started,
                };
                (
                    e.ticket_id,
                    Unsettled {
                        outcome: e.state.as_str().to_string(),
                        deleted_at: e.deleted_at,
                        decided_at: Some(since),
                    },
                )
            })
            .collect();
        absent.sort_by_key(|(id, _)| *id);
        let before = ctx.client.stats().sent("list");
        settled =
            settle_absent(ctx, run, absent, scan.cursor_proven, !scan.incomplete_walk).await?;
        settle_requests = ctx.client.stats().sent("list") - before;
    }

    let mut pruned = 0;
    if let Some(keep) = settings.keep_details {
        let now = Utc::now();
        // a period longer than the calendar prunes nothing
        if let Some(before) = chrono::Duration::from_std(keep)
            .ok()
            .and_then(|keep| now.checked_sub_signed(keep))
        {
            pruned = store.prune_details(before, now).await?;
        }
        if pruned > 0 {
            tracing::info!(
                rows = pruned,
                "pruned the details of tickets settled long ago"
            );
        }
    }

    let mut errors = Vec::new();
    if let Some(e) = &scan.error {
        errors.push(e.clone());
    }
    if let Some(e) = &tally.fatal {
        errors.push(e.clone());
    }
    if let Some(e) = &tally.freshness_failed {
        errors.push(e.clone());
    }
    if tally.failed > 0 {
        errors.push(format!(
            "{} tickets could not be purged (zd-retention audit run {run} shows why)",
            tally.failed
        ));
    }
    let status = if ctx.cancel.is_cancelled() {
        RunStatus::Interrupted
    } else if errors.is_empty() {
        RunStatus::Completed
    } else {
        RunStatus::Failed
    };
    let counts = RunCounts {
        scanned: scan.scanned,
        matched: scan.matched,
        purged: tally.purged,
        failed: tally.failed,
        unknown: tally.unknown,
        list_requests: ctx.client.stats().since(&stats_before).sent("list"),
        early_stop: scan.early_stop,
        scan: Some(scan.scan.to_string()),
        scan_reason: Some(scan.scan_reason.clone()),
        max_listing_age_ms: tally.max_listing_age.map(|d| d.as_millis() as u64),
        step: Some(scan.step.as_str().to_string()),
        high_water: scan.high_water,
        decisions_recorded: Some(scan.decisions_recorded),
    };
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    store
        .finish_run(run, status, &counts, error.as_deref(), Utc::now())
        .await?;
    // noted elsewhere (the log), the head lets `audit verify --expect-head`
    // find a tail removed later
    let (entry, head) = store.chain_head().await?;
    tracing::info!(run, entry, head = %head, "audit chain head");
    let report = CycleReport {
        run_id: run,
        status,
        dry_run: settings.dry_run,
        counts,
        matched_by_rule: scan.matched_by_rule,
        kept: scan.kept,
        purge_batches: tally.batches,
        not_effective: scan.not_effective + settled.not_effective,
        confirmed_gone: settled.confirmed_gone,
        restored_elsewhere: settled.restored_elsewhere,
        scrubbed_by_zendesk: settled.scrubbed,
        unsettled_lookup_failed: settled.lookup_failed,
        relisted: scan.relisted,
        already_in_flight: scan.in_flight,
        changed_during_scan: scan.changed_during_scan + tally.changed,
        max_listing_age: tally.max_listing_age,
        safety_list_requests: SafetyRequests {
            order_proof: scan.proof_requests,
            freshness: tally.freshness_requests,
            settle: settle_requests,
        },
        not_sent: tally.not_sent + scan.not_sent,
        requests: ctx.client.stats().since(&stats_before),
        scan: scan.scan.to_string(),
        scan_reason: scan.scan_reason.clone(),
        step: scan.step.as_str().to_string(),
        decided_from_ledger: scan.decided_from_ledger,
        decisions_recorded: scan.decisions_recorded,
        left_view: settled.left_view,
        pruned,
        duration: started.elapsed(),
        error,
    };
    metrics::counter!("zd_retention_runs_total", "status" => status.as_str()).increment(1);
    metrics::counter!("zd_retention_tickets_scanned_total").increment(report.counts.scanned);
    for (rule, n) in &report.matched_by_rule {
        metrics::counter!("zd_retention_tickets_matched_total", "rule" => rule.clone())
            .increment(*n);
    }
    metrics::histogram!("zd_retention_run_duration_seconds").record(report.duration.as_secs_f64());
    metrics::counter!("zd_retention_decisions_recorded_total").increment(report.decisions_recorded);
    for (state, n) in store.ledger_counts().await.unwrap_or_default() {
        metrics::gauge!("zd_retention_ledger_tickets", "state" => state).set(n as f64);
    }
    if status == RunStatus::Completed {
        metrics::gauge!("zd_retention_last_success_timestamp_seconds")
            .set(Utc::now().timestamp() as f64);
    }
    match status {
        RunStatus::Completed => tracing::info!(
            run,
            scanned = report.counts.scanned,
            matched = report.counts.matched,
            purged = report.counts.purged,
            "run completed"
        ),
        RunStatus::Interrupted => tracing::warn!(
            run,
            scanned = report.counts.scanned,
            purged = report.counts.purged,
            "run interrupted by shutdown"
        ),
        RunStatus::Failed | RunStatus::Running => tracing::error!(
            run,
            error = report.error.as_deref().unwrap_or(""),
            "run failed"
        ),
    }
    Ok(report)
}

/// What the scan found.
#[derive(Debug)]
struct ScanResult {
    /// Distinct tickets listed and decided.
    scanned: u64,
    /// Tickets whose latest listing a purge rule selected.
    matched: u64,
    matched_by_rule: BTreeMap<String, u64>,
    kept: BTreeMap<String, u64>,
    early_stop: bool,
    /// `sorted` or `full`, and why.
    scan: &'static str,
    scan_reason: String,
    /// The cursor listing's order was proven this run.
    cursor_proven: bool,
    /// Listing requests of the order proof.
    proof_requests: u64,
    cancelled: bool,
    not_effective: u64,
    not_sent: u64,
    /// Listings of a ticket already listed in this scan.
    relisted: u64,
    /// The walk may have missed tickets (its order broke after it began
    /// sorted): absence proves nothing this run.
    incomplete_walk: bool,
    /// Empty pages in a row that still said there was more.
    empty_pages: u32,
    /// Selected, but already in a purge job an earlier process sent (that
    /// job is followed instead).
    in_flight: u64,
    /// Tickets not purged because their listings disagreed or the freshness
    /// read found them deleted again.
    changed_during_scan: u64,
    error: Option<String>,
    /// Which listing the run made.
    step: Step,
    /// When the listing began: the ledger is current as of then.
    walk_started: DateTime<Utc>,
    /// The newest deletion known once the listing finished whole.
    high_water: Option<DateTime<Utc>>,
    /// Live ledger rows a whole walk did not list: settled after it.
    absent: Vec<LedgerEntry>,
    /// Decision rows written (first sightings and changes only).
    decisions_recorded: u64,
    /// Live ledger rows decided again without a listing.
    decided_from_ledger: u64,
}

impl ScanResult {
    fn finished(&self) -> bool {
        !self.cancelled && self.error.is_none()
    }
}

/// A batch on its way to the purge worker: the ids, each one's deletion
/// time as last listed, and when the oldest of them was listed.
#[derive(Debug)]
pub(crate) struct Release {
    pub batch: IdBatch,
    /// Each ticket as listed, parallel to `batch.ids()` (`None`: not
    /// listed, as with `purge --force`).
    pub listed: Vec<Option<ListedAs>>,
    pub listed_at: DateTime<Utc>,
    /// Whether the freshness read applies (not for `purge --force`, where
    /// the operator names the ids without a listing).
    pub check_freshness: bool,
}

/// Shared by the scan and the purge worker of one cycle: listing requests
/// and each freshness read with the sends it clears take turns, so that no
/// page of the scan falls between a freshness read and its `destroy_many`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListingGate {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Whether the cursor listing's order was proven this cycle (the
    /// freshness read then uses it; otherwise offset pagination).
    cursor_proven: Arc<std::sync::atomic::AtomicBool>,
}

/// A purge answered 429 this many times in a row is given up for this run.
const MAX_RATE_LIMITED_ROUNDS: u32 = 10;

/// A freshness read is reused for further sends while no listing request
/// was made since and it is younger than this.
const FRESHNESS_REUSE: Duration = Duration::from_secs(2);

/// The last freshness read: every ticket deleted since `since`, as listed.
struct FreshRead {
    since: DateTime<Utc>,
    at: Instant,
    /// The client's listing requests counted right after the read.
    lists_after: u64,
    tickets: HashMap<TicketId, DeletedTicket>,
}

/// A ticket as a listing showed it, in what decides a purge: compared with
/// a later listing to tell a deletion again (even within the same second,
/// by another actor) from the same deletion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListedAs {
    pub deleted_at: Option<DateTime<Utc>>,
    pub actor_id: Option<u64>,
    pub previous_state: Option<String>,
}

impl ListedAs {
    pub(crate) fn of(t: &DeletedTicket) -> Self {
        Self {
            deleted_at: t.deleted_at,
            actor_id: t.actor.as_ref().and_then(|a| a.id),
            previous_state: t.previous_state.clone(),
        }
    }
}

/// A ticket whose latest listing a purge rule selected.
#[derive(Debug, Clone)]
struct Chosen {
    rule: String,
    listed: ListedAs,
    listed_at: DateTime<Utc>,
}

/// Ids in a set with a fast hash.
type IdSet = std::collections::HashSet<TicketId, foldhash::fast::RandomState>;

/// Every id a scan listed: a full scan of a million tickets keeps them all,
/// in 4 bytes each while they fit (Zendesk's ids do, in practice), 8 after.
#[derive(Debug)]
enum SeenIds {
    Narrow(std::collections::HashSet<u32, foldhash::fast::RandomState>),
    Wide(IdSet),
}

impl Default for SeenIds {
    fn default() -> Self {
        Self::Narrow(Default::default())
    }
}

impl SeenIds {
    /// `true` when the id was not listed before.
    fn insert(&mut self, id: TicketId) -> bool {
        match self {
            Self::Narrow(narrow) => match u32::try_from(id) {
                Ok(small) => narrow.insert(small),
                Err(_) => {
                    let mut wide: IdSet = narrow.drain().map(TicketId::from).collect();
                    let new = wide.insert(id);
                    *self = Self::Wide(wide);
                    new
                }
            },
            Self::Wide(wide) => wide.insert(id),
        }
    }
}

/// The scan's view of the selection: latest listing wins, disagreeing
/// listings are never purged in this run.
#[derive(Debug, Default)]
struct Selection {
    /// Every id listed (4 or 8 bytes each); what a purge rule chose is in
    /// `chosen` with its listing.
    seen: SeenIds,
    chosen: HashMap<TicketId, Chosen>,
    /// Selected by a purge rule in one listing and not in another, or
    /// selected twice with different deletion data: not purged this run.
    disagreed_selected: IdSet,
    /// Ids already handed to the purge worker (pipelining only).
    released: IdSet,
    /// Chosen ids in the order first chosen (may repeat; filtered on use).
    order: Vec<TicketId>,
}

impl Selection {
    /// The ids to send now: chosen by their latest listing, never disagreed,
    /// not sent before, each once, in listing order.
    fn take_sendable(&mut self) -> Vec<TicketId> {
        let order = std::mem::take(&mut self.order);
        let mut out = Vec::new();
        for id in order {
            if self.chosen.contains_key(&id)
                && !self.disagreed_selected.contains(&id)
                && self.released.insert(id)
            {
                out.push(id);
            }
        }
        out
    }

    /// Like `take_sendable`, but only whole batches of 100: the rest waits
    /// for the next release, so that no batch is sent half full mid-scan.
    fn take_whole_batches(&mut self) -> Vec<TicketId> {
        let mut out = self.take_sendable();
        let keep = out.len() % crate::zendesk::MAX_IDS_PER_BATCH;
        let rest = out.split_off(out.len() - keep);
        for id in &rest {
            self.released.remove(id);
        }
        let later = std::mem::take(&mut self.order);
        self.order = rest;
        self.order.extend(later);
        out
    }
}

/// Which listing a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A first run whose purge rules all have an age: oldest first, up to
    /// the youngest purgeable age (the backlog), provided the order is
    /// proven. The next run walks the whole view and builds the ledger.
    Backlog { horizon: Duration },
    /// The newest deletions, newest first, down to the high-water mark of
    /// the last listing less an overlap; the rest is decided from the ledger.
    Refresh { down_to: DateTime<Utc> },
    /// The whole view, in any order; live ledger rows it does not list are
    /// settled.
    Reconcile,
}

impl Step {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Backlog { .. } => "backlog",
            Self::Refresh { .. } => "refresh",
            Self::Reconcile => "reconcile",
        }
    }

    /// Read in deletion order (proven first, checked on every page).
    fn sorted(self) -> Option<SortOrder> {
        match self {
            Self::Backlog { .. } => Some(SortOrder::Asc),
            Self::Refresh { .. } => Some(SortOrder::Desc),
            Self::Reconcile => None,
        }
    }

    fn list_options(self) -> ListOptions {
        match self {
            Self::Backlog { .. } => ListOptions {
                sort: Some((SortBy::DeletedAt, SortOrder::Asc)),
                ..ListOptions::default()
            },
            Self::Refresh { .. } => ListOptions {
                sort: Some((SortBy::DeletedAt, SortOrder::Desc)),
                ..ListOptions::default()
            },
            Self::Reconcile => ListOptions::default(),
        }
    }
}

/// The listing a run makes, and why.
pub(crate) fn choose_step(
    policy: &Policy,
    settings: &CycleSettings,
    marks: &ListingMarks,
    now: DateTime<Utc>,
) -> (Step, String) {
    if marks.high_water.is_none()
        && marks.listings == 0
        && let (crate::listing::ScanPlan::Sorted { horizon }, _) =
            crate::listing::ScanPlan::for_policy(policy)
    {
        return (
            Step::Backlog { horizon },
            "a first run: the oldest deletions up to the youngest purgeable age; the next run walks the whole view into the ledger".into(),
        );
    }
    if marks.untagged > 0 {
        return (
            Step::Reconcile,
            format!(
                "{} tickets in the ledger were listed before a subject pattern now in force (subjects are not kept): the whole view is walked",
                marks.untagged
            ),
        );
    }
    let (Some(high_water), Some(last)) = (marks.high_water, marks.last_reconcile) else {
        return (
            Step::Reconcile,
            "the ledger has no whole walk of the view yet".into(),
        );
    };
    let every =
        chrono::Duration::from_std(settings.reconcile_every).unwrap_or(chrono::TimeDelta::MAX);
    if now - last >= every {
        return (
            Step::Reconcile,
            format!(
                "the last whole walk began {} ago (schedule.reconcile = {})",
                humantime::format_duration(Duration::from_secs(
                    (now - last).num_seconds().max(0) as u64
                )),
                humantime::format_duration(settings.reconcile_every)
            ),
        );
    }
    // tickets deleted in the same second, and clock skew
    let overlap = chrono::Duration::from_std(settings.clock_skew).unwrap_or_default();
    (
        Step::Refresh {
            down_to: high_water - overlap,
        },
        "the newest deletions, down to the last listing's high-water mark; the rest decided from the ledger".into(),
    )
}

async fn scan(
    ctx: &CycleContext,
    run: RunId,
    ledger: &mut HashMap<TicketId, LedgerEntry>,
    marks: &ListingMarks,
    batches: &mpsc::Sender<Release>,
    gate: &ListingGate,
    in_flight: IdSet,
) -> anyhow::Result<ScanResult> {
    let settings = &ctx.settings;
    let store = &ctx.store;
    let no_purge_rules = ctx.policy.purge_rules().next().is_none();
    let walk_started = Utc::now();
    let (mut step, reason) = choose_step(&ctx.policy, settings, marks, walk_started);
    let mut result = ScanResult {
        scanned: 0,
        matched: 0,
        matched_by_rule: BTreeMap::new(),
        kept: BTreeMap::new(),
        early_stop: false,
        scan: match step {
            Step::Backlog { .. } => "sorted",
            Step::Refresh { .. } => "refresh",
            Step::Reconcile => "full",
        },
        scan_reason: reason,
        cursor_proven: false,
        proof_requests: 0,
        cancelled: false,
        not_effective: 0,
        not_sent: 0,
        relisted: 0,
        incomplete_walk: false,
        empty_pages: 0,
        in_flight: 0,
        changed_during_scan: 0,
        error: None,
        step,
        walk_started,
        high_water: None,
        absent: Vec::new(),
        decisions_recorded: 0,
        decided_from_ledger: 0,
    };
    let mut order = match step {
        Step::Refresh { .. } => PageOrder::newest_first(),
        _ => PageOrder::default(),
    };
    let mut pages = ctx.client.list_deleted(step.list_options());
    let mut selection = Selection::default();
    let pipelining = settings.purge_while_scanning && !settings.dry_run && !no_purge_rules;
    let mut sending_stopped = false;
    let mut queued: u64 = 0;
    let mut pages_since_release = 0u32;
    let limit = settings.max_purges_per_run;
    // Decisions are written in transactions of up to fifty pages or two
    // seconds (fewer fsyncs), and always before any of their ids is handed
    // on for sending.
    let mut unflushed: Vec<DecisionRecord> = Vec::new();
    let mut touched: Vec<Sighting> = Vec::new();
    let mut last_flush = Instant::now();
    let mut first_page = true;
    let mut newest: Option<DateTime<Utc>> = None;

    loop {
        let page = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                result.cancelled = true;
                break;
            }
            page = async {
                let _turn = gate.turn.lock().await;
                pages.next().await
            } => page,
        };
        let page = match page {
            None => break,
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                tracing::error!(error = %e, "listing failed; the scan stops here");
                result.error = Some(format!("listing deleted tickets failed: {e}"));
                break;
            }
        };
        if let Some(direction) = step.sorted() {
            let mut fall_back: Option<String> = None;
            if std::mem::take(&mut first_page) {
                if !page.has_more {
                    // the whole view on one page: read whole, a reconcile
                    step = Step::Reconcile;
                    result.step = step;
                    result.scan = "full";
                    result.scan_reason = "the whole view fits on one page: it is read whole".into();
                } else {
                    let proof = {
                        let _turn = gate.turn.lock().await;
                        let before = ctx.client.stats().sent("list");
                        let proof =
                            crate::listing::prove_sorted(&ctx.client, &page, direction).await;
                        result.proof_requests = ctx.client.stats().sent("list") - before;
                        proof
                    };
                    match proof {
                        Ok(why) => {
                            result.cursor_proven = true;
                            gate.cursor_proven
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            result.scan_reason = format!("{}; {why}", result.scan_reason);
                        }
                        Err(why) => fall_back = Some(format!("no proven order ({why})")),
                    }
                }
            }
            if fall_back.is_none()
                && step != Step::Reconcile
                && let Err(why) = order.check(&page)
            {
                fall_back = Some(format!("the order broke ({why})"));
            }
            if let Some(why) = fall_back {
                tracing::warn!(reason = %why, "the newest deletions cannot be read in order: walking the whole view");
                step = Step::Reconcile;
                result.step = step;
                result.scan = "full";
                result.scan_reason = format!("{why}: the whole view is walked");
                pages = ctx.client.list_deleted(step.list_options());
                continue;
            }
        }
        if page.tickets.is_empty() && page.has_more {
            result.empty_pages += 1;
            if result.empty_pages > 3 {
                let message = "the listing keeps answering empty pages that say there is more: the walk stops".to_string();
                tracing::error!("{message}");
                result.error = Some(message);
                break;
            }
        } else {
            result.empty_pages = 0;
        }
        let now = Utc::now();
        let mut not_effective = Vec::new();
        for ticket in &page.tickets {
            if ticket.id > crate::audit::MAX_TICKET_ID {
                // kept, logged, and never stored wrapped
                tracing::warn!(
                    ticket = ticket.id,
                    "a listed ticket id is above 2^63-1: kept, not recorded"
                );
                *result
                    .kept
                    .entry("keep_id_out_of_range".into())
                    .or_default() += 1;
                continue;
            }
            if ticket.deleted_at > newest {
                newest = ticket.deleted_at;
            }
            let decision = ctx.policy.decide(ticket, now);
            let first_listing = selection.seen.insert(ticket.id);
            let mut counted = true;
            if first_listing {
                result.scanned += 1;
            } else {
                // decided by its latest listing
                result.relisted += 1;
                let earlier = selection.chosen.remove(&ticket.id);
                let agrees = match (&earlier, &decision) {
                    (Some(c), Decision::Purge { rule }) => {
                        c.listed == ListedAs::of(ticket) && c.rule == *rule
                    }
                    (Some(_), _) | (None, Decision::Purge { .. }) => false,
                    // kept both times: its first listing stays in the counts
                    (None, _) => {
                        counted = false;
                        true
                    }
                };
                if let Some(c) = &earlier
                    && let Some(n) = result.matched_by_rule.get_mut(&c.rule)
                {
                    *n = n.saturating_sub(1);
                }
                if !agrees {
                    // counted as kept if it is kept now, in no purge count
                    counted = !matches!(decision, Decision::Purge { .. });
                    tracing::warn!(
                        ticket = ticket.id,
                        "listed twice in one scan with different deletion data or decisions: not purged in this run"
                    );
                    selection.disagreed_selected.insert(ticket.id);
                    if selection.released.contains(&ticket.id) {
                        tracing::error!(
                            ticket = ticket.id,
                            "listed again after its purge request was sent (purge_while_scanning)"
                        );
                    }
                }
            }
            // The ledger: a first sighting, a deletion again or a changed
            // decision is recorded; an unchanged ticket is only seen again.
            let prior = if first_listing {
                ledger.remove(&ticket.id)
            } else {
                None
            };
            if let Some(p) = &prior
                && matches!(p.state, LedgerState::Purged | LedgerState::Unknown)
            {
                not_effective.push((ticket.id, p.state));
            }
            let kind = recorded_kind(&decision, settings);
            let tags = if settings.record_subjects {
                None
            } else {
                ctx.policy.subject_tags(ticket)
            };
            let unchanged = prior.as_ref().is_some_and(|p| {
                p.deleted_at == ticket.deleted_at
                    && p.decision.as_deref() == Some(kind)
                    && p.rule.as_deref() == decision.rule()
                    && p.actor_id == ticket.actor.as_ref().and_then(|a| a.id)
                    && p.actor_name == ticket.actor.as_ref().and_then(|a| a.name.clone())
                    && p.previous_state == ticket.previous_state
                    && p.subject_tags == tags
                    && (!settings.record_subjects || p.subject == ticket.subject)
                    && !p.state.awaits_settling()
            });
            if unchanged {
                touched.push(Sighting {
                    ticket_id: ticket.id,
                    deleted_at: ticket.deleted_at,
                    subject_tags: tags,
                });
            } else {
                let mut record = decision_record(ticket, &decision, settings, now);
                record.subject_tags = tags;
                unflushed.push(record);
            }
            if matches!(decision, Decision::Purge { .. }) && in_flight.contains(&ticket.id) {
                // its purge job, sent by an earlier process, is followed
                // by this run: not sent again
                if first_listing {
                    result.in_flight += 1;
                }
                counted = false;
            }
            match &decision {
                Decision::Purge { .. } if !counted => {}
                Decision::Purge { rule } if !selection.disagreed_selected.contains(&ticket.id) => {
                    *result.matched_by_rule.entry(rule.clone()).or_default() += 1;
                    selection.chosen.insert(
                        ticket.id,
                        Chosen {
                            rule: rule.clone(),
                            listed: ListedAs::of(ticket),
                            listed_at: now,
                        },
                    );
                    selection.order.push(ticket.id);
                }
                Decision::Purge { .. } => {}
                keep if counted => *result.kept.entry(keep.kind().to_string()).or_default() += 1,
                _ => {}
            }
        }
        pages_since_release += 1;
        let stop = match step {
            Step::Backlog { horizon } => crate::listing::reaches_horizon(&page, horizon, now),
            Step::Refresh { down_to } => page
                .tickets
                .last()
                .and_then(|t| t.deleted_at)
                .is_some_and(|d| d < down_to),
            Step::Reconcile => false,
        };
        let release = pipelining
            && !sending_stopped
            && pages_since_release >= RELEASE_EVERY_PAGES
            && selection.order.len() >= crate::zendesk::MAX_IDS_PER_BATCH;
        if release || unflushed.len() >= 5000 || last_flush.elapsed() >= Duration::from_secs(2) {
            // Write-ahead: the decisions are on disk before any of these ids
            // can be sent.
            result.decisions_recorded += unflushed.len() as u64;
            store.record_decisions(run, &unflushed).await?;
            unflushed.clear();
            store.ledger_touch(&touched, now).await?;
            touched.clear();
            last_flush = Instant::now();
        }
        for (id, prior) in not_effective {
            let (outcome, detail) = if prior == LedgerState::Purged {
                (
                    Outcome::NotEffective,
                    "reported purged earlier but listed again; decided again",
                )
            } else {
                (
                    Outcome::StillPresent,
                    "outcome was unknown; listed again and decided again",
                )
            };
            if prior == LedgerState::Purged {
                result.not_effective += 1;
                tracing::warn!(
                    ticket = id,
                    "a ticket reported purged is still listed; it is decided and purged again"
                );
            }
            // its decision first: the outcome then finds its row
            result.decisions_recorded += unflushed.len() as u64;
            store.record_decisions(run, &unflushed).await?;
            unflushed.clear();
            store
                .record_outcomes(run, None, &[id], outcome, Some(detail), now)
                .await?;
        }
        if release {
            pages_since_release = 0;
            if !pipeline_release(
                ctx,
                run,
                &mut selection,
                &mut result,
                batches,
                &mut queued,
                &mut sending_stopped,
                false,
            )
            .await?
            {
                // the purge worker is gone (an error or a shutdown): the
                // walk did not finish, and the rest is not sent
                result
                    .error
                    .get_or_insert_with(|| "purging stopped before the scan finished".to_string());
                let rest = selection.take_sendable();
                record_not_sent(
                    store,
                    run,
                    &mut result,
                    &rest,
                    "purging stopped after an error",
                )
                .await?;
                break;
            }
        }
        if stop {
            result.early_stop = true;
            break;
        }
    }
    drop(pages);
    result.decisions_recorded += unflushed.len() as u64;
    store.record_decisions(run, &unflushed).await?;
    store.ledger_touch(&touched, Utc::now()).await?;
    drop(touched);

    if step.sorted().is_some() && !result.early_stop && result.step != Step::Reconcile {
        // a sorted walk read to its end saw the whole view
        step = Step::Reconcile;
        result.step = step;
    }
    if !result.cancelled && result.error.is_none() {
        result.high_water = match step {
            // the ledger is not whole yet: the next run walks everything
            Step::Backlog { .. } => None,
            Step::Refresh { .. } => newest.max(marks.high_water),
            // a ticket deleted while the walk went on may have been passed:
            // the next refresh reads down to the walk's start
            Step::Reconcile => Some(newest.map_or(walk_started, |n| n.min(walk_started))),
        };
        match step {
            Step::Refresh { .. } => {
                decide_from_ledger(ctx, run, ledger, &in_flight, &mut selection, &mut result)
                    .await?
            }
            Step::Reconcile => {
                result.absent = ledger.drain().map(|(_, e)| e).collect();
            }
            // rows it did not list are neither decided nor settled
            Step::Backlog { .. } => {}
        }
    }
    result.matched = selection.chosen.len() as u64;
    result.matched_by_rule.retain(|_, n| *n > 0);
    result.kept.retain(|_, n| *n > 0);

    // selected by one of its listings, but listed with different data in
    // another: not purged in this run, and the audit says why
    let mut disagreed: Vec<TicketId> = selection
        .disagreed_selected
        .iter()
        .filter(|id| !selection.released.contains(id))
        .copied()
        .collect();
    disagreed.sort_unstable();
    result.changed_during_scan += disagreed.len() as u64;
    if !disagreed.is_empty() && !settings.dry_run {
        record_not_sent(store, run, &mut result, &disagreed, "listed more than once in this scan with different deletion times or decisions: not purged in this run").await?;
    }

    if settings.dry_run || no_purge_rules {
        return Ok(result);
    }
    let stopped_reason = if result.cancelled {
        Some("the daemon was stopping")
    } else if result.error.is_some() {
        Some("the scan failed before it finished")
    } else if !settings.purge_while_scanning && result.matched > limit {
        Some("safety.max_purges_per_run exceeded: nothing was purged")
    } else {
        None
    };
    if !settings.purge_while_scanning && result.matched > limit {
        let message = format!(
            "{} tickets matched, more than safety.max_purges_per_run = {limit}: nothing was purged; check the rules (zd-retention plan) or raise the limit",
            result.matched
        );
        tracing::error!("{message}");
        result.error.get_or_insert(message);
    } else if settings.purge_while_scanning && result.matched > limit {
        result.error.get_or_insert(format!(
            "{} tickets matched, more than safety.max_purges_per_run = {limit}: purging stopped at the limit",
            result.matched
        ));
    }
    if let Some(reason) = stopped_reason {
        let rest = selection.take_sendable();
        record_not_sent(store, run, &mut result, &rest, reason).await?;
        return Ok(result);
    }
    if pipelining {
        pipeline_release(
            ctx,
            run,
            &mut selection,
            &mut result,
            batches,
            &mut queued,
            &mut sending_stopped,
            true,
        )
        .await?;
        return Ok(result);
    }
    let to_send = selection.take_sendable();
    let unsent = release(&selection, &to_send, batches).await;
    if !unsent.is_empty() {
        record_not_sent(
            store,
            run,
            &mut result,
            &unsent,
            "purging stopped after an error",
        )
        .await?;
    }
    Ok(result)
}

/// Decides again, at the run's time and without a listing, every live
/// ledger row the refresh did not list: a ticket ages into a purge rule, or
/// the rules changed. A changed decision is recorded; a purge joins the
/// selection as the ledger knows it, current as of the refresh's start (the
/// freshness read before sending looks back to then).
async fn decide_from_ledger(
    ctx: &CycleContext,
    run: RunId,
    ledger: &HashMap<TicketId, LedgerEntry>,
    in_flight: &IdSet,
    selection: &mut Selection,
    result: &mut ScanResult,
) -> anyhow::Result<()> {
    let settings = &ctx.settings;
    let now = Utc::now();
    let mut entries: Vec<&LedgerEntry> = ledger
        .values()
        .filter(|e| !e.state.awaits_settling() && !in_flight.contains(&e.ticket_id))
        .collect();
    entries.sort_unstable_by_key(|e| (e.deleted_at, e.ticket_id));
    let mut records = Vec::new();
    for entry in entries {
        let ticket = entry.as_ticket();
        let decision = if settings.record_subjects {
            ctx.policy.decide(&ticket, now)
        } else {
            match ctx
                .policy
                .decide_tagged(&ticket, now, entry.subject_tags.as_deref())
            {
                Some(d) => d,
                // listed before a subject pattern now in force: the next
                // reconcile lists it (the run's start counted none)
                None => continue,
            }
        };
        let kind = recorded_kind(&decision, settings);
        result.decided_from_ledger += 1;
        if entry.decision.as_deref() != Some(kind) || entry.rule.as_deref() != decision.rule() {
            let mut record = decision_record(&ticket, &decision, settings, now);
            record.listed = false;
            // the subject is what the ledger holds (recorded subjects only)
            record.subject = entry.subject.clone();
            record.subject_tags = entry.subject_tags.clone();
            records.push(record);
        }
        match &decision {
            Decision::Purge { rule } => {
                *result.matched_by_rule.entry(rule.clone()).or_default() += 1;
                selection.chosen.insert(
                    ticket.id,
                    Chosen {
                        rule: rule.clone(),
                        listed: ListedAs::of(&ticket),
                        listed_at: result.walk_started,
                    },
                );
                selection.order.push(ticket.id);
            }
            keep => *result.kept.entry(keep.kind().to_string()).or_default() += 1,
        }
    }
    result.decisions_recorded += records.len() as u64;
    for chunk in records.chunks(5000) {
        ctx.store.record_decisions(run, chunk).await?;
    }
    Ok(())
}

/// Hands chosen ids to the purge worker in batches of 100, each with the
/// tickets as listed; returns the ids it could not hand over (the worker is
/// gone), for their `not_sent` outcome.
async fn release(
    selection: &Selection,
    ids: &[TicketId],
    batches: &mpsc::Sender<Release>,
) -> Vec<TicketId> {
    for batch in IdBatch::chunk(ids) {
        let chosen: Vec<Option<&Chosen>> = batch
            .ids()
            .iter()
            .map(|id| selection.chosen.get(id))
            .collect();
        let release = Release {
            listed: chosen.iter().map(|c| c.map(|c| c.listed.clone())).collect(),
            listed_at: chosen
                .iter()
                .filter_map(|c| c.map(|c| c.listed_at))
                .min()
                .unwrap_or_else(Utc::now),
            check_freshness: true,
            batch,
        };
        if let Err(refused) = batches.send(release).await {
            let at = ids
                .iter()
                .position(|id| Some(id) == refused.0.batch.ids().first())
                .unwrap_or(0);
            return ids[at..].to_vec();
        }
    }
    Vec::new()
}

/// Records the scan's selected tickets that are not sent, and counts them.
async fn record_not_sent(
    store: &AuditStore,
    run: RunId,
    result: &mut ScanResult,
    ids: &[TicketId],
    reason: &str,
) -> anyhow::Result<()> {
    result.not_sent += ids.len() as u64;
    store
        .record_outcomes(run, None, ids, Outcome::NotSent, Some(reason), Utc::now())
        .await
}

/// Under `purge_while_scanning`, chosen tickets are sent every this many
/// pages, each time after a freshness read (one list request, usually).
const RELEASE_EVERY_PAGES: u32 = 20;

/// Pipelining (`purge_while_scanning`) sends what the scan chose so far, after
/// a freshness read, up to `max_purges_per_run`. `false` when the worker is
/// gone and the scan should stop.
#[allow(clippy::too_many_arguments)]
async fn pipeline_release(
    ctx: &CycleContext,
    run: RunId,
    selection: &mut Selection,
    result: &mut ScanResult,
    batches: &mpsc::Sender<Release>,
    queued: &mut u64,
    sending_stopped: &mut bool,
    last: bool,
) -> anyhow::Result<bool> {
    let limit = ctx.settings.max_purges_per_run;
    let mut ids = if last {
        selection.take_sendable()
    } else {
        selection.take_whole_batches()
    };
    if ids.is_empty() {
        return Ok(true);
    }
    let mut over: Vec<TicketId> = Vec::new();
    if *sending_stopped {
        over = std::mem::take(&mut ids);
    } else {
        let room = limit.saturating_sub(*queued) as usize;
        if ids.len() > room {
            over = ids.split_off(room);
            *sending_stopped = true;
            tracing::error!(
                limit,
                "max_purges_per_run reached: no further batch is sent this run"
            );
        }
    }
    if !over.is_empty() {
        record_not_sent(
            &ctx.store,
            run,
            result,
            &over,
            "safety.max_purges_per_run reached",
        )
        .await?;
    }
    if ids.is_empty() {
        return Ok(true);
    }
    *queued += ids.len() as u64;
    let unsent = release(selection, &ids, batches).await;
    if unsent.is_empty() {
        return Ok(true);
    }
    record_not_sent(
        &ctx.store,
        run,
        result,
        &unsent,
        "purging stopped after an error",
    )
    .await?;
    Ok(false)
}

pub(crate) fn decision_record(
    ticket: &DeletedTicket,
    decision: &Decision,
    settings: &CycleSettings,
    now: DateTime<Utc>,
) -> DecisionRecord {
    DecisionRecord {
        ticket_id: ticket.id,
        deleted_at: ticket.deleted_at,
        actor_id: ticket.actor.as_ref().and_then(|a| a.id),
        actor_name: ticket.actor.as_ref().and_then(|a| a.name.clone()),
        previous_state: ticket.previous_state.clone(),
        subject: if settings.record_subjects {
            ticket.subject.clone()
        } else {
            None
        },
        rule: decision.rule().map(str::to_string),
        decision: DecisionKind::of(decision, settings.dry_run),
        decided_at: now,
        listed: true,
        subject_tags: None,
    }
}

/// The kind a decision is recorded as.
fn recorded_kind(decision: &Decision, settings: &CycleSettings) -> &'static str {
    match decision {
        Decision::Purge { .. } if settings.dry_run => "would_purge",
        other => other.kind(),
    }
}

/// Sends purge batches (at most `max_jobs_in_flight` jobs open) and follows
/// the jobs with `show_many` to their end.
struct PurgeWorker {
    client: ZendeskClient,
    store: AuditStore,
    run: RunId,
    settings: CycleSettings,
    /// To decide again a ticket the freshness read finds deleted again.
    policy: Arc<Policy>,
    cancel: CancellationToken,
    open: Vec<OpenJob>,
    tally: Tally,
    gate: ListingGate,
    fresh: Option<FreshRead>,
}

impl PurgeWorker {
    fn new(
        ctx: &CycleContext,
        run: RunId,
        gate: ListingGate,
        open: Vec<OpenJob>,
        tally: Tally,
    ) -> Self {
        Self {
            client: ctx.client.clone(),
            store: ctx.store.clone(),
            run,
            settings: ctx.settings.clone(),
            policy: ctx.policy.clone(),
            cancel: ctx.cancel.clone(),
            open,
            tally,
            gate,
            fresh: None,
        }
    }

    async fn send_group(&mut self, releases: Vec<Release>) -> anyhow::Result<()> {
        // Restored since its listing: not soft-deleted now. Looked up before
        // the gate is taken (a restore after the lookup is caught by the
        // freshness read if the ticket is deleted again, and otherwise is
        // not purged by Zendesk, whose job then reports a partial success).
        let mut pending = std::collections::VecDeque::with_capacity(releases.len());
        for release in releases {
            let active: IdSet = if release.check_freshness {
                match self.client.active_tickets(&release.batch).await {
                    Ok(a) => a.into_iter().collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look up restored tickets before purging; the freshness read still applies");
                        IdSet::default()
                    }
                }
            } else {
                IdSet::default()
            };
            pending.push_back((release, active));
        }
        // The whole group under one turn of the gate: the scan lists no page
        // between the freshness read and these sends.
        let gate = self.gate.clone();
        let _turn = gate.turn.lock().await;
        while let Some((release, active)) = pending.pop_front() {
            if let Err(e) = self.send_checked(release, &active).await {
                // what was taken off the channel with it gets its outcome
                for (rest, _) in pending.drain(..) {
                    self.not_sent(&rest.batch, "purging stopped after an error")
                        .await;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends one batch right after a freshness read (or one reused while no
    /// listing request came between and it is younger than
    /// `FRESHNESS_REUSE`), holding the listing gate so that no page of the
    /// scan comes between the read and the send. A ticket the read shows
    /// deleted again since its listing is decided again on its new deletion
    /// and not sent; one found among active tickets (restored) is left out.
    /// Sends a release after its freshness read; when Zendesk answers 429
    /// (the request was not carried out), waits Retry-After and goes again,
    /// with a new freshness read: the wait can be long, and the view moves.
    async fn send_checked(&mut self, release: Release, active: &IdSet) -> anyhow::Result<()> {
        let mut release = release;
        let mut rounds = 0;
        loop {
            let Some((wait, sent)) = self.send_checked_once(&release, active).await? else {
                return Ok(());
            };
            rounds += 1;
            if rounds > MAX_RATE_LIMITED_ROUNDS {
                let why = "Zendesk kept answering 429 (rate limited) to this purge";
                tracing::error!(ids = sent.len(), "{why}; not sent");
                self.not_sent(&sent, why).await;
                return Ok(());
            }
            tracing::warn!(
                ids = sent.len(),
                wait = %humantime::format_duration(wait),
                "purge rate limited (429, not carried out): waiting, then reading the newest deletions again"
            );
            tokio::time::sleep(wait).await;
            self.fresh = None;
            let listed: HashMap<TicketId, Option<ListedAs>> = release
                .batch
                .ids()
                .iter()
                .copied()
                .zip(release.listed.iter().cloned())
                .collect();
            release = Release {
                listed: sent
                    .ids()
                    .iter()
                    .map(|id| listed.get(id).cloned().flatten())
                    .collect(),
                listed_at: release.listed_at,
                check_freshness: release.check_freshness,
                batch: sent,
            };
        }
    }

    /// One round of `send_checked`: `Some` with Retry-After and the batch
    /// sent when Zendesk answered 429.
    async fn send_checked_once(
        &mut self,
        release: &Release,
        active: &IdSet,
    ) -> anyhow::Result<Option<(Duration, IdBatch)>> {
        if !release.check_freshness {
            let batch = release.batch.clone();
            return Ok(self
                .send_timed(batch.clone(), release.listed_at)
                .await?
                .map(|wait| (wait, batch)));
        }
        let gate = &self.gate;
        let since = release.listed_at
            - chrono::Duration::from_std(self.settings.clock_skew).unwrap_or_default();
        let lists_now = self.client.stats().sent("list");
        let reusable = self.fresh.as_ref().is_some_and(|f| {
            f.since <= since && f.lists_after == lists_now && f.at.elapsed() < FRESHNESS_REUSE
        });
        if !reusable {
            let proven = gate
                .cursor_proven
                .load(std::sync::atomic::Ordering::Relaxed);
            let before = self.client.stats().sent("list");
            let read = crate::listing::deleted_since(&self.client, since, proven).await;
            self.tally.freshness_requests += self.client.stats().sent("list") - before;
            let failure = match read {
                Ok(r) if r.complete => {
                    self.fresh = Some(FreshRead {
                        since,
                        at: Instant::now(),
                        lists_after: self.client.stats().sent("list"),
                        tickets: r.tickets.into_iter().map(|t| (t.id, t)).collect(),
                    });
                    None
                }
                Ok(r) => Some(format!(
                    "more than {} pages were deleted since {} (read back to {})",
                    crate::listing::FRESHNESS_MAX_PAGES,
                    crate::audit::timestamp(since),
                    crate::audit::timestamp(r.covered_from)
                )),
                Err(why) => Some(why),
            };
            if let Some(why) = failure {
                self.fresh = None;
                let message = format!("the freshness read before purging failed ({why}): not sent");
                tracing::error!("{message}");
                self.tally.freshness_failed = Some(message);
                self.not_sent(&release.batch, "the freshness read before purging failed")
                    .await;
                return Ok(None);
            }
        }
        let mut ids = Vec::with_capacity(release.batch.len());
        let mut changed = Vec::new();
        let mut restored = Vec::new();
        let mut records = Vec::new();
        let now = Utc::now();
        for (id, listed) in release.batch.ids().iter().zip(&release.listed) {
            if active.contains(id) {
                restored.push(*id);
                continue;
            }
            let again = self
                .fresh
                .as_ref()
                .and_then(|f| f.tickets.get(id))
                .filter(|t| listed.as_ref() != Some(&ListedAs::of(t)));
            match again {
                Some(t) => {
                    tracing::warn!(
                        ticket = t.id,
                        "deleted again since its listing: decided on its new deletion, not purged in this run"
                    );
                    let decision = self.policy.decide(t, now);
                    records.push(decision_record(t, &decision, &self.settings, now));
                    changed.push(*id);
                }
                None => ids.push(*id),
            }
        }
        if !restored.is_empty() {
            tracing::warn!(
                tickets = restored.len(),
                "restored since their listing: not purged"
            );
            self.store
                .record_outcomes(
                    self.run,
                    None,
                    &restored,
                    Outcome::NotSent,
                    Some("restored since its listing (found among active tickets just before purging): not purged"),
                    now,
                )
                .await?;
            self.tally.changed += restored.len() as u64;
            self.tally.not_sent += restored.len() as u64;
        }
        if !changed.is_empty() {
            self.store.record_decisions(self.run, &records).await?;
            self.store
                .record_outcomes(
                    self.run,
                    None,
                    &changed,
                    Outcome::NotSent,
                    Some("deleted again since its listing (the freshness read just before purging showed it with other deletion data): decided on its new deletion, not purged in this run"),
                    now,
                )
                .await?;
            self.tally.changed += changed.len() as u64;
            self.tally.not_sent += changed.len() as u64;
        }
        match IdBatch::new(ids) {
            Ok(batch) => Ok(self
                .send_timed(batch.clone(), release.listed_at)
                .await?
                .map(|wait| (wait, batch))),
            Err(_) => Ok(None),
        }
    }

    /// Sends a batch and notes the time from its oldest listing to Zendesk's
    /// answer (an upper bound of listing-to-purge).
    async fn send_timed(
        &mut self,
        batch: IdBatch,
        listed_at: DateTime<Utc>,
    ) -> anyhow::Result<Option<Duration>> {
        let result = self.send(batch).await;
        let age = (Utc::now() - listed_at).to_std().unwrap_or_default();
        self.tally.max_listing_age = Some(self.tally.max_listing_age.map_or(age, |m| m.max(age)));
        result
    }

    async fn run(mut self, mut batches: mpsc::Receiver<Release>) -> Tally {
        if let Err(e) = self.work(&mut batches).await {
            tracing::error!(error = %format!("{e:#}"), "purging stopped");
            self.tally.fatal = Some(format!("{e:#}"));
            // Record what was never sent, so that nothing is left unexplained.
            batches.close();
            while let Some(release) = batches.recv().await {
                self.not_sent(&release.batch, "purging stopped after an error")
                    .await;
            }
            let open = std::mem::take(&mut self.open);
            for job in open {
                self.tally.unknown += job.tickets.len() as u64;
                let _ = self
                    .store
                    .record_job_end(
                        self.run,
                        job.row,
                        JobRowStatus::Unknown,
                        Some("no longer followed: purging stopped after an error"),
                        Outcome::Unknown,
                        &job.tickets,
                    )
                    .await;
            }
        }
        self.tally
    }

    async fn not_sent(&mut self, batch: &IdBatch, reason: &str) {
        self.tally.not_sent += batch.len() as u64;
        if let Err(e) = self
            .store
            .record_outcomes(
                self.run,
                None,
                batch.ids(),
                Outcome::NotSent,
                Some(reason),
                Utc::now(),
            )
            .await
        {
            tracing::error!(error = %format!("{e:#}"), "cannot record tickets not sent");
        }
    }

    async fn work(&mut self, batches: &mut mpsc::Receiver<Release>) -> anyhow::Result<()> {
        let mut closed = false;
        let mut deadline: Option<Instant> = None;
        let mut poll = tokio::time::interval(self.settings.job_poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if closed && self.open.is_empty() {
                metrics::gauge!("zd_retention_jobs_in_flight").set(0.0);
                return Ok(());
            }
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                let open = std::mem::take(&mut self.open);
                for job in open {
                    self.tally.unknown += job.tickets.len() as u64;
                    self.store
                        .record_job_end(self.run, job.row, JobRowStatus::Unknown, Some("still open when the daemon stopped following jobs at shutdown; the next run settles it"), Outcome::Unknown, &job.tickets)
                        .await?;
                }
                return Ok(());
            }
            metrics::gauge!("zd_retention_jobs_in_flight").set(self.open.len() as f64);
            let can_send =
                !closed && deadline.is_none() && self.open.len() < self.settings.max_jobs_in_flight;
            tokio::select! {
                biased;
                _ = self.cancel.cancelled(), if deadline.is_none() => {
                    tracing::info!(open_jobs = self.open.len(), "shutdown: no new batch is sent; following open jobs");
                    deadline = Some(Instant::now() + self.settings.shutdown_grace);
                    batches.close();
                    while let Some(release) = batches.recv().await {
                        self.not_sent(&release.batch, "the daemon was stopping").await;
                    }
                    closed = true;
                }
                release = batches.recv(), if can_send => match release {
                    Some(first) => {
                        // as many as there are job slots, cleared by one read
                        let mut group = vec![first];
                        while self.open.len() + group.len() < self.settings.max_jobs_in_flight {
                            match batches.try_recv() {
                                Ok(r) => group.push(r),
                                Err(_) => break,
                            }
                        }
                        self.send_group(group).await?
                    }
                    None => closed = true,
                },
                _ = poll.tick(), if !self.open.is_empty() => self.poll().await?,
                _ = tokio::time::sleep(Duration::from_millis(50)), if deadline.is_some() => {}
            }
        }
    }

    /// Sends a batch, each attempt recorded before it leaves: when an
    /// answer is lost (a timeout, a dropped connection, a 5xx, a body that
    /// does not decode), the attempt may have created a job whose id is never
    /// learnt, so it ends `unknown` and the next attempt is a new row.
    async fn send(&mut self, batch: IdBatch) -> anyhow::Result<Option<Duration>> {
        let retry = self.client.retry_policy();
        let mut waits = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(retry.min_delay)
                .with_max_delay(retry.max_delay)
                .with_max_times(retry.max_retries)
                .with_jitter(),
        );
        self.tally.batches += 1;
        let mut attempt = 1u32;
        loop {
            let row = self
                .store
                .record_request(self.run, RequestKind::DestroyMany, &batch, Utc::now())
                .await?;
            tracing::debug!(ids = batch.len(), row, attempt, "sending destroy_many");
            let answer = self.client.destroy_many(&batch).await;
            if let Err(e @ ZendeskError::RateLimited { wait, .. }) = &answer {
                // not carried out: the caller waits, reads again, re-sends
                self.store
                    .record_job_end(
                        self.run,
                        row,
                        JobRowStatus::RateLimited,
                        Some(&format!(
                            "{e}; sent again after the wait and a new freshness read"
                        )),
                        Outcome::Unknown,
                        &[],
                    )
                    .await?;
                return Ok(Some(*wait));
            }
            if let Err(e @ (ZendeskError::Transient { .. } | ZendeskError::Decode { .. })) = &answer
                && let Some(wait) = waits.next()
            {
                let message = format!(
                    "{e}; the answer was lost and the request may have been carried out (a job whose id is unknown); sent again as attempt {}",
                    attempt + 1
                );
                tracing::warn!(error = %e, attempt, "purge answer lost; sending again as a new recorded attempt");
                self.store
                    .record_job_end(
                        self.run,
                        row,
                        JobRowStatus::Unknown,
                        Some(&message),
                        Outcome::Unknown,
                        batch.ids(),
                    )
                    .await?;
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            return self.settle_answer(&batch, row, answer).await.map(|()| None);
        }
    }

    /// Records what Zendesk answered to one purge attempt.
    async fn settle_answer(
        &mut self,
        batch: &IdBatch,
        row: JobRowId,
        answer: Result<JobStatus, ZendeskError>,
    ) -> anyhow::Result<()> {
        let batch = batch.clone();
        match answer {
            Ok(job) => {
                self.store
                    .record_answer(
                        row,
                        Some(&job.id.0),
                        JobRowStatus::of(&job.status),
                        job.message.as_deref(),
                        Utc::now(),
                    )
                    .await?;
                let open = OpenJob {
                    row,
                    id: job.id.clone(),
                    tickets: batch.ids().to_vec(),
                    since: Instant::now(),
                    misses: 0,
                    last_status: job.status.to_string(),
                };
                if job.status.is_terminal() {
                    self.finish(open, &job).await?;
                } else {
                    self.open.push(open);
                }
                Ok(())
            }
            Err(e) => {
                let ids = batch.ids();
                let (status, outcome) = match &e {
                    // Credentials refused: nothing else will work this run.
                    ZendeskError::Unauthorized { .. } | ZendeskError::Forbidden { .. } => {
                        self.store
                            .record_job_end(
                                self.run,
                                row,
                                JobRowStatus::Refused,
                                Some(&e.to_string()),
                                Outcome::Failed,
                                ids,
                            )
                            .await?;
                        self.tally.failed += ids.len() as u64;
                        return Err(
                            anyhow::Error::new(e).context("Zendesk refused the purge request")
                        );
                    }
                    ZendeskError::InvalidRequest { .. } => (JobRowStatus::Refused, Outcome::Failed),
                    // 404: none of the ids is soft-deleted any more. Those
                    // active again were restored; the rest the next scan
                    // settles.
                    ZendeskError::NotFound { .. } => {
                        let active: IdSet = match self.client.active_tickets(&batch).await {
                            Ok(a) => a.into_iter().collect(),
                            Err(_) => IdSet::default(),
                        };
                        let (restored, rest): (Vec<TicketId>, Vec<TicketId>) =
                            ids.iter().partition(|id| active.contains(id));
                        let message = e.to_string();
                        self.store
                            .record_job_end(
                                self.run,
                                row,
                                JobRowStatus::Refused,
                                Some(&message),
                                Outcome::Unknown,
                                &rest,
                            )
                            .await?;
                        self.store
                            .record_outcomes(
                                self.run,
                                Some(row),
                                &restored,
                                Outcome::RestoredElsewhere,
                                Some("the purge was answered 404 and the ticket is among active tickets: restored, not purged"),
                                Utc::now(),
                            )
                            .await?;
                        tracing::error!(error = %e, ids = ids.len(), restored = restored.len(), "purge request refused: not soft-deleted");
                        self.tally.unknown += rest.len() as u64;
                        return Ok(());
                    }
                    // The request may have been carried out (a dropped answer,
                    // a broken body): only a later scan can tell.
                    ZendeskError::Transient { .. }
                    | ZendeskError::Decode { .. }
                    | ZendeskError::RateLimited { .. }
                    | ZendeskError::Refused { .. } => (JobRowStatus::Unknown, Outcome::Unknown),
                };
                tracing::error!(error = %e, ids = ids.len(), %outcome, "purge request failed");
                if outcome == Outcome::Failed {
                    self.tally.failed += ids.len() as u64;
                } else {
                    self.tally.unknown += ids.len() as u64;
                }
                self.store
                    .record_job_end(self.run, row, status, Some(&e.to_string()), outcome, ids)
                    .await?;
                Ok(())
            }
        }
    }

    async fn poll(&mut self) -> anyhow::Result<()> {
        let ids: Vec<JobId> = self.open.iter().map(|j| j.id.clone()).collect();
        // Jobs whose status could not be asked this time (not a sign that
        // they vanished); only their timeout applies.
        let mut unasked: std::collections::HashSet<JobId> = std::collections::HashSet::new();
        let statuses = match self.client.job_statuses(&ids).await {
            Ok(s) => s,
            Err(e @ (ZendeskError::Unauthorized { .. } | ZendeskError::Forbidden { .. })) => {
                return Err(anyhow::Error::new(e).context("Zendesk refused the job status request"));
            }
            Err(e @ (ZendeskError::NotFound { .. } | ZendeskError::InvalidRequest { .. })) => {
                // One unknown or expired id can fail the whole call: ask
                // for each job on its own.
                tracing::warn!(error = %e, "show_many refused the job ids; asking job by job");
                let mut out = Vec::new();
                for id in &ids {
                    match self.client.job_status(id).await {
                        Ok(s) => out.push(s),
                        Err(ZendeskError::NotFound { .. }) => {}
                        Err(
                            e
                            @ (ZendeskError::Unauthorized { .. } | ZendeskError::Forbidden { .. }),
                        ) => {
                            return Err(anyhow::Error::new(e)
                                .context("Zendesk refused the job status request"));
                        }
                        Err(e) => {
                            tracing::warn!(job = %id, error = %e, "asking for a job's status failed");
                            unasked.insert(id.clone());
                        }
                    }
                }
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "polling jobs failed; trying again at the next tick");
                unasked.extend(ids.iter().cloned());
                Vec::new()
            }
        };
        let by_id: HashMap<&JobId, &JobStatus> = statuses.iter().map(|s| (&s.id, s)).collect();
        let open = std::mem::take(&mut self.open);
        for mut job in open {
            if unasked.contains(&job.id) {
                if job.since.elapsed() > self.settings.job_timeout {
                    let why = format!(
                        "no status could be read for {}; the next scan settles the outcome",
                        humantime::format_duration(self.settings.job_timeout)
                    );
                    self.give_up(job, &why).await?;
                } else {
                    self.open.push(job);
                }
                continue;
            }
            match by_id.get(&job.id) {
                Some(status) if status.status.is_terminal() => self.finish(job, status).await?,
                Some(status) => {
                    job.misses = 0;
                    if job.since.elapsed() > self.settings.job_timeout {
                        self.give_up(
                            job,
                            &format!(
                                "still {} after {}",
                                status.status,
                                humantime::format_duration(self.settings.job_timeout)
                            ),
                        )
                        .await?;
                        continue;
                    }
                    if status.status.as_str() != job.last_status {
                        job.last_status = status.status.to_string();
                        self.store
                            .record_answer(
                                job.row,
                                Some(&job.id.0),
                                JobRowStatus::of(&status.status),
                                status.message.as_deref(),
                                Utc::now(),
                            )
                            .await?;
                    }
                    self.open.push(job);
                }
                None => {
                    // A job just created can be missing for a moment.
                    job.misses += 1;
                    if job.misses >= 3 {
                        tracing::warn!(job = %job.id, "job status vanished; outcome unknown until the next scan");
                        self.give_up(job, "the job status vanished from Zendesk; the next scan settles the outcome").await?;
                    } else {
                        self.open.push(job);
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a request's tickets per rule into a metric.
    async fn count_by_rule(&self, row: JobRowId, tickets: &[TicketId], metric: &'static str) {
        match self.store.rules_of_request(row, tickets).await {
            Ok(rules) => {
                for (rule, n) in rules {
                    metrics::counter!(metric, "rule" => rule).increment(n as u64);
                }
            }
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "cannot count tickets per rule"),
        }
    }

    async fn give_up(&mut self, job: OpenJob, why: &str) -> anyhow::Result<()> {
        self.tally.unknown += job.tickets.len() as u64;
        self.store
            .record_job_end(
                self.run,
                job.row,
                JobRowStatus::Unknown,
                Some(why),
                Outcome::Unknown,
                &job.tickets,
            )
            .await
    }

    async fn finish(&mut self, job: OpenJob, status: &JobStatus) -> anyhow::Result<()> {
        let message = status.message.clone();
        let (outcome, detail) = match (&status.status, status.results.succeeded()) {
            (JobState::Completed, Some(true)) => (Outcome::Purged, message.clone()),
            (JobState::Completed, _) => (
                Outcome::Unknown,
                Some(format!(
                    "the job completed without full success ({}); which tickets are gone is settled by the next scan",
                    message.as_deref().unwrap_or("no message")
                )),
            ),
            _ => (
                Outcome::Failed,
                Some(
                    message
                        .clone()
                        .unwrap_or_else(|| format!("job {}", status.status)),
                ),
            ),
        };
        match outcome {
            Outcome::Purged => {
                self.tally.purged += job.tickets.len() as u64;
                self.count_by_rule(job.row, &job.tickets, "zd_retention_tickets_purged_total")
                    .await;
            }
            Outcome::Failed => {
                tracing::error!(job = %job.id, status = %status.status, message = detail.as_deref().unwrap_or(""), "purge job did not succeed");
                self.tally.failed += job.tickets.len() as u64;
                self.count_by_rule(job.row, &job.tickets, "zd_retention_tickets_failed_total")
                    .await;
            }
            _ => self.tally.unknown += job.tickets.len() as u64,
        }
        self.store
            .record_job_end(
                self.run,
                job.row,
                JobRowStatus::of(&status.status),
                detail.as_deref(),
                outcome,
                &job.tickets,
            )
            .await
            .context("cannot record a job's end")
    }
}

/// What the settling of absent tickets found.
#[derive(Debug, Default)]
struct Settled {
    confirmed_gone: u64,
    /// Kept tickets gone from the view, not by this tool.
    left_view: u64,
    restored_elsewhere: u64,
    scrubbed: u64,
    lookup_failed: u64,
    not_effective: u64,
}

/// Zendesk scrubs soft-deleted tickets by itself about this long after
/// their deletion.
const ZENDESK_SCRUB_AGE: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// Settles tickets with an open outcome (`purged` or `unknown`) that the scan
/// did not list. Absence alone proves nothing:
/// 1. each is looked up among the active tickets: active is
///    `restored_elsewhere`;
/// 2. the others are looked for newest-first, back to their listing (a
///    ticket restored and deleted again since sits at the young end of the
///    view, which an early stop never read and a full walk may have passed
///    before it came back): found is `not_effective` / `still_present`;
/// 3. what is still unexplained is looked up once more (it may have been
///    restored meanwhile), and only then is it `confirmed_gone`, or
///    `scrubbed_by_zendesk` for an unknown outcome of a ticket deleted more
///    than 30 days ago (Zendesk's scrub cannot be told from our purge).
///
/// A failed lookup or read leaves the outcome open for a later run; so does
/// a walk that may have missed tickets (`may_call_gone` false).
async fn settle_absent(
    ctx: &CycleContext,
    run: RunId,
    absent: Vec<(TicketId, Unsettled)>,
    cursor_proven: bool,
    may_call_gone: bool,
) -> anyhow::Result<Settled> {
    let mut settled = Settled::default();
    let now = Utc::now();
    if absent.is_empty() {
        return Ok(settled);
    }
    let ids: Vec<TicketId> = absent.iter().map(|(id, _)| *id).collect();
    let Some(active) = active_among(ctx, &ids).await else {
        settled.lookup_failed += ids.len() as u64;
        return Ok(settled);
    };
    let (restored, rest): (Vec<_>, Vec<_>) =
        absent.into_iter().partition(|(id, _)| active.contains(id));
    let restored_ids: Vec<TicketId> = restored.iter().map(|(id, _)| *id).collect();
    if !restored_ids.is_empty() {
        tracing::warn!(
            tickets = restored_ids.len(),
            "tickets gone from the deleted view are active again: restored by someone, not purged"
        );
        ctx.store
            .record_outcomes(run, None, &restored_ids, Outcome::RestoredElsewhere, Some("not in the deleted view and found among active tickets: restored by someone, not purged"), now)
            .await?;
        settled.restored_elsewhere += restored_ids.len() as u64;
    }
    if rest.is_empty() {
        return Ok(settled);
    }
    if !may_call_gone {
        tracing::warn!(
            tickets = rest.len(),
            "the walk may have missed tickets (its order broke): tickets missing from it stay open"
        );
        settled.lookup_failed += rest.len() as u64;
        return Ok(settled);
    }
    let margin = chrono::Duration::from_std(ctx.settings.clock_skew).unwrap_or_default();
    let since = rest
        .iter()
        .filter_map(|(_, u)| u.decided_at)
        .min()
        .unwrap_or(now)
        - margin;
    let recent = match crate::listing::deleted_since(&ctx.client, since, cursor_proven).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the newest deletions: tickets missing from this scan stay open");
            settled.lookup_failed += rest.len() as u64;
            return Ok(settled);
        }
    };
    let listed: std::collections::HashSet<TicketId> = recent.tickets.iter().map(|t| t.id).collect();
    let mut unexplained = Vec::new();
    for (id, u) in rest {
        let ours = matches!(u.outcome.as_str(), "purged" | "unknown");
        if listed.contains(&id) && !ours {
            // deleted again: the next refresh reads its new deletion
            settled.lookup_failed += 1;
        } else if listed.contains(&id) {
            let (outcome, detail) = if u.outcome == "purged" {
                settled.not_effective += 1;
                (
                    Outcome::NotEffective,
                    "reported purged earlier but deleted again since (found newest-first); decided again when reached",
                )
            } else {
                (
                    Outcome::StillPresent,
                    "deleted again since its listing (found newest-first); decided again when reached",
                )
            };
            ctx.store
                .record_outcomes(run, None, &[id], outcome, Some(detail), now)
                .await?;
        } else if u
            .decided_at
            .is_none_or(|d| d - margin < recent.covered_from)
        {
            // listed before what the read could cover: a later run settles it
            settled.lookup_failed += 1;
        } else {
            unexplained.push((id, u));
        }
    }
    let ids: Vec<TicketId> = unexplained.iter().map(|(id, _)| *id).collect();
    let Some(active) = active_among(ctx, &ids).await else {
        settled.lookup_failed += ids.len() as u64;
        return Ok(settled);
    };
    let (mut restored, mut gone, mut scrubbed, mut left) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, u) in unexplained {
        if active.contains(&id) {
            restored.push(id);
        } else if !matches!(u.outcome.as_str(), "purged" | "unknown") {
            left.push(id);
        } else if u.outcome == "unknown"
            && u.deleted_at.is_some_and(|d| now - d > ZENDESK_SCRUB_AGE)
        {
            scrubbed.push(id);
        } else {
            gone.push(id);
        }
    }
    for (ids, outcome, detail) in [
        (
            &restored,
            Outcome::RestoredElsewhere,
            "not in the deleted view and found among active tickets: restored by someone, not purged",
        ),
        (
            &gone,
            Outcome::ConfirmedGone,
            "neither in the deleted view (read newest-first back to its listing) nor among active tickets",
        ),
        (
            &left,
            Outcome::LeftView,
            "kept, and now neither in the deleted view nor among active tickets: deleted for good by someone else, or scrubbed by Zendesk",
        ),
        (
            &scrubbed,
            Outcome::ScrubbedByZendesk,
            "gone from the deleted view and from the active tickets, deleted more than 30 days ago: Zendesk's own scrub cannot be told from our unconfirmed purge",
        ),
    ] {
        ctx.store
            .record_outcomes(run, None, ids, outcome, Some(detail), now)
            .await?;
    }
    settled.restored_elsewhere += restored.len() as u64;
    settled.confirmed_gone += gone.len() as u64;
    settled.scrubbed += scrubbed.len() as u64;
    settled.left_view += left.len() as u64;
    Ok(settled)
}

/// The active tickets among `ids` (in calls of 100), or `None` when a
/// lookup failed.
async fn active_among(ctx: &CycleContext, ids: &[TicketId]) -> Option<IdSet> {
    match ctx.client.active_among(ids).await {
        Ok(active) => Some(active.into_iter().collect()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up tickets among the active ones; their outcome stays open");
            None
        }
    }
}

/// A restore whose answer an earlier process never recorded: settled by
/// looking the tickets up among the active ones, never as if purged.
async fn settle_lost_restore(
    ctx: &CycleContext,
    run: RunId,
    row: JobRowId,
    tickets: &[TicketId],
) -> anyhow::Result<()> {
    let active = match ctx.client.active_among(tickets).await {
        Ok(active) => active,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up the tickets of a restore left open by an earlier process");
            return ctx
            .store
            .record_job_end(
                run,
                row,
                JobRowStatus::Unknown,
                Some("the process stopped before the restore's answer was recorded, and the lookup failed: see audit ticket"),
                Outcome::RestoreUnknown,
                tickets,
            )
            .await;
        }
    };
    let (done, not): (Vec<TicketId>, Vec<TicketId>) =
        tickets.iter().partition(|id| active.contains(id));
    let message = "the process stopped before the restore's answer was recorded; settled by looking the tickets up among active tickets";
    ctx.store
        .record_job_end(
            run,
            row,
            JobRowStatus::Unknown,
            Some(message),
            Outcome::Restored,
            &done,
        )
        .await?;
    ctx.store
        .record_outcomes(
            run,
            Some(row),
            &not,
            Outcome::NotRestored,
            Some("not among active tickets after the restore's answer was lost"),
            Utc::now(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_widen_without_forgetting() {
        let mut seen = SeenIds::default();
        assert!(seen.insert(7));
        assert!(!seen.insert(7));
        assert!(seen.insert(u64::from(u32::MAX)));
        assert!(seen.insert(u64::from(u32::MAX) + 1), "a wide id");
        assert!(matches!(seen, SeenIds::Wide(_)));
        assert!(!seen.insert(7), "narrow ids kept when widening");
        assert!(!seen.insert(u64::from(u32::MAX) + 1));
        assert!(seen.insert(u64::MAX));
    }
}

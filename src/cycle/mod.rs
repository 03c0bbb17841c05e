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
mod check;
mod scan;
mod send;
mod settle;
mod worker;

use crate::audit::RunOrigin;
pub use crate::audit::{RunStatus, Trigger};
use crate::config::Config;
use crate::listing::PageOrder;
use crate::rules::{Decision, Policy};
use crate::zendesk::{
    ClientStatsSnapshot, DeletedTicket, IdBatch, JobId, JobState, JobStatus, ListOptions, SortBy,
    SortOrder, TicketId, ZendeskClient, ZendeskError,
};
pub use check::CheckProgress;
use check::*;
pub(crate) use scan::decision_record;
use scan::*;
use settle::*;
use worker::*;
pub(crate) use worker::{ListedAs, Release, send_and_follow};

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
    /// The share of the listing quota (over `check_interval`) a whole-view
    /// check may take in one run; the check spans runs. Not used while
    /// `reconcile_every` is zero (every run walks the whole view itself).
    pub check_share: f64,
    /// The time between two scheduled runs: what a run's share of the
    /// listing quota is reckoned over.
    pub check_interval: Duration,
    /// The purge latency the alert holds the 95th percentile to (exported
    /// as `zd_retention_purge_latency_bound_seconds`).
    pub latency_bound: Duration,
    /// How far Zendesk's `deleted_at` and this host's clock may disagree:
    /// the refresh reads this far below the high-water mark, and every
    /// freshness read this far before the listing it checks.
    pub clock_skew: Duration,
}

impl CycleSettings {
    pub fn from_config(config: &Config) -> Self {
        let interval = config
            .schedule
            .interval(Utc::now())
            .unwrap_or(Duration::from_secs(15 * 60));
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
            check_share: config.schedule.check_share,
            check_interval: interval,
            latency_bound: config.schedule.latency_bound.unwrap_or(2 * interval),
        }
    }
}

/// Everything a cycle needs.
#[derive(Clone)]
pub struct CycleContext {
    pub policy: Arc<Policy>,
    pub settings: CycleSettings,
    /// The config version and what runs it, recorded with every run.
    pub origin: RunOrigin,
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
            origin: RunOrigin::here(&config.hash, Some(config.version_settings())),
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
    /// The longest time from a freshness read's answer to a purge request it
    /// cleared leaving (a ticket deleted again inside it is purged on its new
    /// deletion: no client can prevent that).
    #[serde(with = "option_seconds")]
    pub max_send_window: Option<Duration>,
    /// Purged tickets a read after their request showed deleted again:
    /// recorded `unknown`, not as purged by their rule.
    pub in_doubt: u64,
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
    /// This run's part of the whole-view check, when it walked one.
    pub check: Option<CheckProgress>,
    /// From each purged ticket becoming purgeable to its request leaving.
    pub latency: Option<crate::audit::LatencySummary>,
    /// A dry run: the tickets the ledger holds as would-purge after it,
    /// from every run (`matched` counts this run's decisions only).
    pub would_purge_in_ledger: Option<u64>,
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

/// Whether this host's clock agrees with Zendesk's (the latest answer's
/// `Date` header) within `clock_skew` and the header's one-second grain.
/// Ages, and so `min_age`, are read off this host's clock.
pub(crate) fn clock_trusted(client: &ZendeskClient, clock_skew: Duration) -> Result<(), String> {
    let Some(offset) = client.clock_offset() else {
        // no answer yet, or none with a readable Date: nothing vouches for
        // this host's clock, so nothing is purged on it
        return Err(
            "Zendesk's answers carry no readable Date header, so this host's clock cannot be checked against Zendesk's: nothing is purged (a proxy that strips Date?)"
                .into(),
        );
    };
    let allowed =
        chrono::Duration::from_std(clock_skew).unwrap_or_default() + chrono::Duration::seconds(2);
    if offset.abs() <= allowed {
        return Ok(());
    }
    Err(format!(
        "this host's clock is {} {} Zendesk's (its Date header), more than zendesk.clock_skew = {} allows: ages cannot be trusted, nothing is purged; set the clock right (NTP) or raise zendesk.clock_skew",
        crate::human::duration(Duration::from_secs(offset.num_seconds().unsigned_abs())),
        if offset < chrono::Duration::zero() {
            "ahead of"
        } else {
            "behind"
        },
        crate::human::duration(clock_skew),
    ))
}

/// The jobs an earlier process sent and did not see end: purge jobs with a
/// Zendesk id are followed by this run (their tickets are not sent again),
/// the others recorded unknown, lost restores looked up.
async fn recover_open_jobs(
    ctx: &CycleContext,
    run: RunId,
) -> anyhow::Result<(Vec<OpenJob>, u64, IdSet)> {
    let store = &ctx.store;
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
                // as decided when sent: a read before the job is seen to end
                // may show a ticket deleted again since (in doubt)
                let decided = store.decided_as(job.id, &tickets).await?;
                let sent_as = tickets
                    .iter()
                    .map(|t| {
                        decided
                            .get(t)
                            .map(|(deleted_at, actor_id, previous_state)| ListedAs {
                                deleted_at: *deleted_at,
                                actor_id: *actor_id,
                                previous_state: previous_state.clone(),
                            })
                    })
                    .collect();
                recovered.push(OpenJob {
                    row: job.id,
                    id: JobId(id),
                    tickets,
                    since: Instant::now(),
                    misses: 0,
                    last_status: job.status.to_string(),
                    sent_as,
                    in_doubt: Vec::new(),
                    answered: None,
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

    Ok((recovered, recovered_unknown, in_flight))
}

/// A whole walk (a reconcile) settles the live ledger rows it did not
/// list: absent from the view is not yet proof of anything, so each is
/// looked up among the active tickets and read for newest-first. The rows
/// are those no listing saw since the walk began, read by index in chunks.
/// Returns what was settled and the listing requests it took.
async fn settle_walk(
    ctx: &CycleContext,
    run: RunId,
    scan: &ScanResult,
) -> anyhow::Result<(Settled, u64)> {
    if !(scan.finished() && scan.step == Step::Reconcile) {
        return Ok((Settled::default(), 0));
    }
    let source = format!(
        "the whole walk of run {run} (begun {})",
        crate::audit::timestamp(scan.walk_started)
    );
    settle_unseen(
        ctx,
        run,
        (scan.walk_started, None),
        (scan.cursor_proven, !scan.incomplete_walk),
        &source,
    )
    .await
}

/// Settles, in chunks, the live rows no listing saw since `since` (each
/// read back no further than `read_back_to`, when given). Returns what was
/// settled and the listing requests it took.
async fn settle_unseen(
    ctx: &CycleContext,
    run: RunId,
    (since, read_back_to): (DateTime<Utc>, Option<DateTime<Utc>>),
    proofs: (bool, bool),
    source: &str,
) -> anyhow::Result<(Settled, u64)> {
    let mut settled = Settled::default();
    let before = ctx.client.stats().sent("list");
    let unseen = ctx.store.ledger_unseen_since(since).await?;
    for chunk in unseen.chunks(SETTLE_CHUNK) {
        let absent = absent_rows(ctx, chunk, since, read_back_to).await?;
        let part = settle_absent(ctx, run, absent, proofs, source).await?;
        settled.add(&part);
    }
    Ok((settled, ctx.client.stats().sent("list") - before))
}

/// Absent tickets settled at a time: each chunk costs one newest-first read.
const SETTLE_CHUNK: usize = 10_000;

/// The ledger rows of `tickets` a whole walk that began at `walk_started`
/// did not list, each with the time it must be read back to (never before
/// `read_back_to`, when the refreshes since listed every deletion before).
async fn absent_rows(
    ctx: &CycleContext,
    tickets: &[TicketId],
    walk_started: DateTime<Utc>,
    read_back_to: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<(TicketId, Unsettled)>> {
    let rows = ctx.store.ledger_rows(tickets).await?;
    let mut absent: Vec<(TicketId, Unsettled)> = rows
        .into_values()
        .filter(|e| e.state != LedgerState::PurgeRequested)
        .filter(|e| e.last_seen.is_none_or(|seen| seen < walk_started))
        .map(|e| {
            let since = match e.state {
                // a deletion again after the purge request carries a later time
                LedgerState::Purged | LedgerState::Unknown => {
                    e.requested_at.or(e.last_seen).unwrap_or(walk_started)
                }
                // known in the view when the walk began, or the refreshes
                // since its last sighting would have found it deleted again
                _ => walk_started,
            };
            let since = read_back_to.map_or(since, |r| since.max(r));
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
    Ok(absent)
}

/// Pruning reads "long ago" off this host's clock: only after a clean run
/// on a clock Zendesk's agrees with. A failure joins the run's errors.
async fn prune_if_clean(ctx: &CycleContext, errors: &mut Vec<String>) -> u64 {
    let (settings, store) = (&ctx.settings, &ctx.store);
    let mut pruned = 0;
    if let Some(keep) = settings.keep_details
        && errors.is_empty()
        && !ctx.cancel.is_cancelled()
        && clock_trusted(&ctx.client, settings.clock_skew).is_ok()
    {
        let now = Utc::now();
        // a period longer than the calendar prunes nothing
        if let Some(before) = chrono::Duration::from_std(keep)
            .ok()
            .and_then(|keep| now.checked_sub_signed(keep))
        {
            match store.prune_details(before, now).await {
                Ok(n) => pruned = n,
                Err(e) => errors.push(format!("pruning the audit's details failed: {e:#}")),
            }
        }
        if pruned > 0 {
            tracing::info!(
                rows = pruned,
                "pruned the details of tickets settled long ago"
            );
        }
    }
    pruned
}

/// The run's metrics and its closing log line.
async fn announce(store: &AuditStore, report: &CycleReport, latency_bound: Duration) {
    let (run, status) = (report.run_id, report.status);
    metrics::counter!("zd_retention_runs_total", "status" => status.as_str()).increment(1);
    metrics::counter!("zd_retention_tickets_scanned_total").increment(report.counts.scanned);
    for (rule, n) in &report.matched_by_rule {
        metrics::counter!("zd_retention_tickets_matched_total", "rule" => rule.clone())
            .increment(*n);
    }
    metrics::histogram!("zd_retention_run_duration_seconds").record(report.duration.as_secs_f64());
    metrics::gauge!("zd_retention_purge_latency_bound_seconds").set(latency_bound.as_secs_f64());
    metrics::counter!("zd_retention_decisions_recorded_total").increment(report.decisions_recorded);
    // every state, 0 when none: a state that empties must not keep its
    // last count (an alert on `unknown` would never resolve)
    if let Ok(counts) = store.ledger_counts().await {
        for state in crate::audit::LedgerState::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| s == state.as_str())
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("zd_retention_ledger_tickets", "state" => state.as_str()).set(n as f64);
        }
    }
    // outside the database, Prometheus keeps this series: a chain that
    // shrinks (a tail cut off whole, an older copy put back) shows there
    if let Ok((entries, _)) = store.chain_head().await {
        metrics::gauge!("zd_retention_audit_chain_entries").set(entries as f64);
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
}

/// A run's figures, as recorded.
fn counts_of(scan: &ScanResult, tally: &Tally, list_requests: u64) -> RunCounts {
    RunCounts {
        scanned: scan.scanned,
        matched: scan.matched,
        purged: tally.purged,
        failed: tally.failed,
        unknown: tally.unknown,
        list_requests,
        early_stop: scan.early_stop,
        scan: Some(scan.scan.to_string()),
        scan_reason: Some(scan.scan_reason.clone()),
        max_listing_age_ms: tally.max_listing_age.map(|d| d.as_millis() as u64),
        step: Some(scan.step.as_str().to_string()),
        high_water: scan.high_water,
        decisions_recorded: Some(scan.decisions_recorded),
    }
}

/// The report of a finished run.
fn report_of(
    (run, status, dry_run): (RunId, RunStatus, bool),
    counts: RunCounts,
    scan: ScanResult,
    tally: &Tally,
    (settled, settle_requests, pruned): (&Settled, u64, u64),
    requests: ClientStatsSnapshot,
    (duration, error): (Duration, Option<String>),
) -> CycleReport {
    CycleReport {
        run_id: run,
        status,
        dry_run,
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
        max_send_window: tally.max_send_window,
        in_doubt: tally.in_doubt,
        safety_list_requests: SafetyRequests {
            order_proof: scan.proof_requests,
            freshness: tally.freshness_requests,
            settle: settle_requests,
        },
        not_sent: tally.not_sent + scan.not_sent,
        requests,
        scan: scan.scan.to_string(),
        scan_reason: scan.scan_reason.clone(),
        step: scan.step.as_str().to_string(),
        decided_from_ledger: scan.decided_from_ledger,
        decisions_recorded: scan.decisions_recorded,
        left_view: settled.left_view,
        pruned,
        check: None,
        latency: None,
        would_purge_in_ledger: None,
        duration,
        error,
    }
}

/// What went wrong in a run, each in a sentence: a run with none completed.
fn errors_of(run: RunId, scan: &ScanResult, tally: &Tally) -> Vec<String> {
    let mut errors: Vec<String> = [&scan.error, &tally.fatal, &tally.freshness_failed]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if tally.failed > 0 {
        errors.push(format!(
            "{} tickets could not be purged (zd-retention audit run {run} shows why)",
            tally.failed
        ));
    }
    errors
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
        .start_run(trigger, settings.dry_run, &ctx.origin, now)
        .await?;
    tracing::info!(
        run,
        trigger = trigger.as_str(),
        dry_run = settings.dry_run,
        "run started"
    );
    match run_started(ctx, run, (started, stats_before)).await {
        Ok(report) => Ok(report),
        Err(e) => {
            // the run ends here, and says why (a ledger row edited outside,
            // found when a page or a re-decision read it, among others)
            let message = format!("{e:#}");
            tracing::error!(run, error = %message, "run failed");
            if let Err(also) = store.fail_run(run, &message).await {
                tracing::error!(run, error = %also, "the run's failure could not be recorded");
            }
            Err(e)
        }
    }
}

/// A started run, to its end.
async fn run_started(
    ctx: &CycleContext,
    run: RunId,
    (started, stats_before): (Instant, ClientStatsSnapshot),
) -> anyhow::Result<CycleReport> {
    let store = &ctx.store;
    let settings = &ctx.settings;
    let (recovered, recovered_unknown, in_flight) = recover_open_jobs(ctx, run).await?;

    // rows without their subject and without a tag for a pattern in force
    // (subjects kept or not) cannot be decided without a listing
    let marks = store
        .listing_marks(&ctx.policy.subject_fingerprints())
        .await?;

    // The purge worker: sends batches and follows jobs.
    let (batches, receiver) = mpsc::channel::<Release>(RELEASES_QUEUED);
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

    let scan = scan(ctx, run, &marks, &batches, &gate, in_flight.clone()).await;
    // the whole-view check walks on while the refresh's purges go out
    let check = match &scan {
        Ok(scan) => walk_check(ctx, run, scan, &marks, &gate, &in_flight).await,
        Err(_) => Ok((None, None, None)),
    };
    drop(batches);
    let tally = match worker.await {
        Ok(t) => t,
        Err(e) => Tally {
            fatal: Some(format!("the purge worker stopped: {e}")),
            ..Tally::default()
        },
    };
    let scan = scan?;
    let (check, to_settle, check_error) = check?;

    let (mut settled, mut settle_requests) = settle_walk(ctx, run, &scan).await?;
    if let Some(finished) = to_settle
        && !ctx.cancel.is_cancelled()
    {
        let (part, requests) = settle_check(ctx, run, &scan, &finished).await?;
        settled.add(&part);
        settle_requests += requests;
    }

    let mut errors = errors_of(run, &scan, &tally);
    errors.extend(check_error);
    let pruned = prune_if_clean(ctx, &mut errors).await;
    let status = if ctx.cancel.is_cancelled() {
        RunStatus::Interrupted
    } else if errors.is_empty() {
        RunStatus::Completed
    } else {
        RunStatus::Failed
    };
    let counts = counts_of(
        &scan,
        &tally,
        ctx.client.stats().since(&stats_before).sent("list"),
    );
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    store
        .finish_run(run, status, &counts, error.as_deref(), Utc::now())
        .await?;
    // noted elsewhere (the log), the head lets `audit verify --expect-head`
    // find a tail removed later
    match store.chain_head().await {
        Ok((entry, head)) => tracing::info!(run, entry, head = %head, "audit chain head"),
        Err(e) => tracing::error!(run, error = %e, "cannot read the audit chain's head"),
    }
    let mut report = report_of(
        (run, status, settings.dry_run),
        counts,
        scan,
        &tally,
        (&settled, settle_requests, pruned),
        ctx.client.stats().since(&stats_before),
        (started.elapsed(), error),
    );
    report.check = check;
    report.latency = store.latency_summary(None, None, Some(run)).await.ok();
    if settings.dry_run {
        report.would_purge_in_ledger = store.ledger_counts().await.ok().map(|counts| {
            counts
                .iter()
                .filter(|(state, _)| state == "selected")
                .map(|(_, n)| *n as u64)
                .sum()
        });
    }
    announce(store, &report, settings.latency_bound).await;
    Ok(report)
}

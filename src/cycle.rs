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

use crate::audit::{AuditStore, DecisionRecord, JobRowId, RunCounts, RunId, Unsettled, parse_ids};
use crate::config::Config;
use crate::rules::{Decision, Policy};
use crate::zendesk::{
    ClientStatsSnapshot, DeletedTicket, IdBatch, JobId, JobState, JobStatus, ListOptions, SortBy,
    SortOrder, TicketId, ZendeskClient, ZendeskError,
};

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Cron,
    Manual,
    Demo,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cron => "cron",
            Self::Manual => "manual",
            Self::Demo => "demo",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

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
    /// Earlier purges or unknown outcomes this scan proved gone.
    pub confirmed_gone: u64,
    /// Selected but never sent (limit, failure or shutdown).
    pub not_sent: u64,
    pub requests: ClientStatsSnapshot,
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    pub error: Option<String>,
}

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Outcome tallies of the purge worker.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub purged: u64,
    pub failed: u64,
    pub unknown: u64,
    pub not_sent: u64,
    pub batches: u64,
    /// An error that ended the purging (credentials refused, store failed).
    pub fatal: Option<String>,
}

/// Sends batches whose decisions are already recorded, and follows their
/// jobs to the end: the write path that manual purges share with the cycle.
pub(crate) async fn send_and_follow(
    ctx: &CycleContext,
    run: RunId,
    batches: Vec<IdBatch>,
) -> Tally {
    let (sender, receiver) = mpsc::channel::<IdBatch>(8);
    let worker = PurgeWorker {
        client: ctx.client.clone(),
        store: ctx.store.clone(),
        run,
        settings: ctx.settings.clone(),
        cancel: ctx.cancel.clone(),
        open: Vec::new(),
        tally: Tally::default(),
    };
    let worker = tokio::spawn(worker.run(receiver));
    for batch in batches {
        if sender.send(batch).await.is_err() {
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

    let interrupted = store.close_interrupted_runs(now).await?;
    if !interrupted.is_empty() {
        tracing::warn!(runs = ?interrupted, "earlier runs did not finish; recorded as interrupted");
    }
    let run = store
        .start_run(trigger.as_str(), settings.dry_run, &ctx.config_hash, now)
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
    for job in store.open_jobs().await? {
        let tickets = parse_ids(&job.ticket_ids);
        match job.zendesk_job_id {
            Some(id) if job.kind == "destroy_many" => recovered.push(OpenJob {
                row: job.id,
                id: JobId(id),
                tickets,
                since: Instant::now(),
                misses: 0,
                last_status: job.status,
            }),
            _ => {
                recovered_unknown += tickets.len() as u64;
                store
                    .record_job_end(run, job.id, "unknown", Some("the process stopped before Zendesk's answer was recorded; the next scan settles it"), "unknown", &tickets)
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

    let mut unsettled = store
        .unsettled(now - chrono::Duration::from_std(settings.settle_window).unwrap_or_default())
        .await?;

    // The purge worker: sends batches and follows jobs.
    let (batches, receiver) = mpsc::channel::<IdBatch>(8);
    let worker = PurgeWorker {
        client: ctx.client.clone(),
        store: store.clone(),
        run,
        settings: settings.clone(),
        cancel: ctx.cancel.clone(),
        open: recovered,
        tally: Tally {
            unknown: recovered_unknown,
            ..Tally::default()
        },
    };
    let worker = tokio::spawn(worker.run(receiver));

    let scan = scan(ctx, run, &mut unsettled, &batches).await;
    drop(batches);
    let tally = match worker.await {
        Ok(t) => t,
        Err(e) => Tally {
            fatal: Some(format!("the purge worker stopped: {e}")),
            ..Tally::default()
        },
    };
    let scan = scan?;

    // Settle earlier outcomes the scan could see.
    let mut confirmed_gone = 0;
    if scan.finished() {
        let gone: Vec<TicketId> = unsettled
            .iter()
            .filter(|(_, u)| match (scan.covered_until, u.deleted_at) {
                (None, _) => true,
                (Some(limit), Some(deleted)) => deleted < limit,
                (Some(_), None) => false,
            })
            .map(|(id, _)| *id)
            .collect();
        confirmed_gone = gone.len() as u64;
        store
            .record_outcomes(
                run,
                None,
                &gone,
                "confirmed_gone",
                Some("not listed by a later scan that covered its deletion time"),
                Utc::now(),
            )
            .await?;
    }

    let mut errors = Vec::new();
    if let Some(e) = &scan.error {
        errors.push(e.clone());
    }
    if let Some(e) = &tally.fatal {
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
    };
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    store
        .finish_run(run, status.as_str(), &counts, error.as_deref(), Utc::now())
        .await?;
    let report = CycleReport {
        run_id: run,
        status,
        dry_run: settings.dry_run,
        counts,
        matched_by_rule: scan.matched_by_rule,
        kept: scan.kept,
        purge_batches: tally.batches,
        not_effective: scan.not_effective,
        confirmed_gone,
        not_sent: tally.not_sent + scan.not_sent,
        requests: ctx.client.stats().since(&stats_before),
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
        RunStatus::Failed => tracing::error!(
            run,
            error = report.error.as_deref().unwrap_or(""),
            "run failed"
        ),
    }
    Ok(report)
}

/// What the scan found.
#[derive(Debug, Default)]
struct ScanResult {
    scanned: u64,
    matched: u64,
    matched_by_rule: BTreeMap<String, u64>,
    kept: BTreeMap<String, u64>,
    early_stop: bool,
    /// With an early stop: the deletion time the scan reached.
    covered_until: Option<DateTime<Utc>>,
    cancelled: bool,
    not_effective: u64,
    not_sent: u64,
    error: Option<String>,
}

impl ScanResult {
    fn finished(&self) -> bool {
        !self.cancelled && self.error.is_none()
    }
}

async fn scan(
    ctx: &CycleContext,
    run: RunId,
    unsettled: &mut HashMap<TicketId, Unsettled>,
    batches: &mpsc::Sender<IdBatch>,
) -> anyhow::Result<ScanResult> {
    let settings = &ctx.settings;
    let store = &ctx.store;
    let horizon = ctx
        .policy
        .purge_horizon()
        .filter(|h| *h < Duration::MAX / 2);
    let no_purge_rules = ctx.policy.purge_rules().next().is_none();
    let mut sorted = horizon.is_some();
    let options = ListOptions {
        sort: sorted.then_some((SortBy::DeletedAt, SortOrder::Asc)),
        ..ListOptions::default()
    };
    let mut result = ScanResult::default();
    let mut pages = ctx.client.list_deleted(options);
    let mut last_deleted: Option<DateTime<Utc>> = None;
    let mut held: Vec<TicketId> = Vec::new();
    let mut pending: Vec<TicketId> = Vec::new();
    let mut sending_stopped = false;
    let mut queued: u64 = 0;
    let limit = settings.max_purges_per_run;
    // Decisions are written in transactions of up to fifty pages or two
    // seconds (fewer fsyncs), and always before any of their ids is handed
    // on for sending.
    let mut unflushed: Vec<DecisionRecord> = Vec::new();
    let mut last_flush = Instant::now();

    'pages: loop {
        let page = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                result.cancelled = true;
                break;
            }
            page = pages.next() => page,
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
        let now = Utc::now();
        let mut records = Vec::with_capacity(page.tickets.len());
        let mut selected = Vec::new();
        let mut not_effective = Vec::new();
        let mut stop = false;
        for ticket in &page.tickets {
            if sorted {
                let in_order = match (last_deleted, ticket.deleted_at) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(prev), Some(t)) => t >= prev,
                };
                if !in_order {
                    tracing::warn!(
                        page = page.number,
                        ticket = ticket.id,
                        "Zendesk did not sort by deleted_at; scanning everything instead of stopping early"
                    );
                    sorted = false;
                } else {
                    last_deleted = ticket.deleted_at;
                }
            }
            if let (true, Some(h), Some(age)) = (sorted, horizon, crate::rules::age_of(ticket, now))
                && age < h
            {
                result.early_stop = true;
                result.covered_until = ticket.deleted_at;
                stop = true;
                break;
            }
            let decision = ctx.policy.decide(ticket, now);
            if let Some(prior) = unsettled.remove(&ticket.id) {
                not_effective.push((ticket.id, prior.outcome));
            }
            result.scanned += 1;
            match &decision {
                Decision::Purge { rule } => {
                    result.matched += 1;
                    *result.matched_by_rule.entry(rule.clone()).or_default() += 1;
                    selected.push(ticket.id);
                }
                keep => *result.kept.entry(keep.kind().to_string()).or_default() += 1,
            }
            records.push(decision_record(ticket, &decision, settings, now));
        }
        unflushed.extend(records);
        let will_send = settings.purge_while_scanning
            && !settings.dry_run
            && pending.len() + selected.len() >= crate::zendesk::MAX_IDS_PER_BATCH;
        if will_send || unflushed.len() >= 5000 || last_flush.elapsed() >= Duration::from_secs(2) {
            // Write-ahead: the decisions are on disk before any of these ids
            // can be sent.
            store.record_decisions(run, &unflushed).await?;
            unflushed.clear();
            last_flush = Instant::now();
        }
        for (id, prior) in not_effective {
            let (outcome, detail) = if prior == "purged" {
                (
                    "not_effective",
                    "reported purged earlier but listed again; decided again",
                )
            } else {
                (
                    "still_present",
                    "outcome was unknown; listed again and decided again",
                )
            };
            if prior == "purged" {
                result.not_effective += 1;
                tracing::warn!(
                    ticket = id,
                    "a ticket reported purged is still listed; it is decided and purged again"
                );
            }
            store
                .record_outcomes(run, None, &[id], outcome, Some(detail), now)
                .await?;
        }
        if !settings.dry_run && !selected.is_empty() {
            if settings.purge_while_scanning {
                for id in selected {
                    if queued >= limit && !sending_stopped {
                        sending_stopped = true;
                        tracing::error!(
                            limit,
                            "max_purges_per_run reached: no further batch is sent this run"
                        );
                    }
                    if sending_stopped {
                        result.not_sent += 1;
                        store
                            .record_outcomes(
                                run,
                                None,
                                &[id],
                                "not_sent",
                                Some("safety.max_purges_per_run reached"),
                                now,
                            )
                            .await?;
                        continue;
                    }
                    pending.push(id);
                    queued += 1;
                    if pending.len() == crate::zendesk::MAX_IDS_PER_BATCH {
                        let batch = IdBatch::new(std::mem::take(&mut pending))
                            .expect("100 distinct ids make a batch");
                        if batches.send(batch).await.is_err() {
                            break 'pages;
                        }
                    }
                }
            } else {
                // all of them, past the limit too: each gets its not_sent
                // outcome when the limit refuses the run (8 bytes an id)
                held.extend(selected);
            }
        }
        if stop {
            break;
        }
    }
    drop(pages);
    store.record_decisions(run, &unflushed).await?;

    if settings.dry_run || no_purge_rules {
        return Ok(result);
    }
    let to_send = if settings.purge_while_scanning {
        pending
    } else {
        held
    };
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
        result.error = Some(message);
    } else if settings.purge_while_scanning && result.matched > limit {
        result.error = Some(format!(
            "{} tickets matched, more than safety.max_purges_per_run = {limit}: purging stopped at the limit",
            result.matched
        ));
    }
    match stopped_reason {
        Some(reason) => {
            result.not_sent += to_send.len() as u64;
            store
                .record_outcomes(run, None, &to_send, "not_sent", Some(reason), Utc::now())
                .await?;
        }
        None => {
            for batch in IdBatch::chunk(&to_send) {
                if batches.send(batch).await.is_err() {
                    break;
                }
            }
        }
    }
    Ok(result)
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
        previous_state: ticket.previous_state.clone(),
        subject: if settings.record_subjects {
            ticket.subject.clone()
        } else {
            None
        },
        rule: decision.rule().map(str::to_string),
        decision: match decision {
            Decision::Purge { .. } if settings.dry_run => "would_purge",
            other => other.kind(),
        },
        decided_at: now,
    }
}

/// Sends purge batches (at most `max_jobs_in_flight` jobs open) and follows
/// the jobs with `show_many` to their end.
struct PurgeWorker {
    client: ZendeskClient,
    store: AuditStore,
    run: RunId,
    settings: CycleSettings,
    cancel: CancellationToken,
    open: Vec<OpenJob>,
    tally: Tally,
}

impl PurgeWorker {
    async fn run(mut self, mut batches: mpsc::Receiver<IdBatch>) -> Tally {
        if let Err(e) = self.work(&mut batches).await {
            tracing::error!(error = %format!("{e:#}"), "purging stopped");
            self.tally.fatal = Some(format!("{e:#}"));
            // Record what was never sent, so that nothing is left unexplained.
            batches.close();
            while let Some(batch) = batches.recv().await {
                self.not_sent(&batch, "purging stopped after an error")
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
                        "unknown",
                        Some("no longer followed: purging stopped after an error"),
                        "unknown",
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
                "not_sent",
                Some(reason),
                Utc::now(),
            )
            .await
        {
            tracing::error!(error = %format!("{e:#}"), "cannot record tickets not sent");
        }
    }

    async fn work(&mut self, batches: &mut mpsc::Receiver<IdBatch>) -> anyhow::Result<()> {
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
                        .record_job_end(self.run, job.row, "unknown", Some("still open when the daemon stopped following jobs at shutdown; the next run settles it"), "unknown", &job.tickets)
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
                    while let Some(batch) = batches.recv().await {
                        self.not_sent(&batch, "the daemon was stopping").await;
                    }
                    closed = true;
                }
                batch = batches.recv(), if can_send => match batch {
                    Some(batch) => self.send(batch).await?,
                    None => closed = true,
                },
                _ = poll.tick(), if !self.open.is_empty() => self.poll().await?,
                _ = tokio::time::sleep(Duration::from_millis(50)), if deadline.is_some() => {}
            }
        }
    }

    async fn send(&mut self, batch: IdBatch) -> anyhow::Result<()> {
        let row = self
            .store
            .record_request(self.run, "destroy_many", &batch, Utc::now())
            .await?;
        self.tally.batches += 1;
        tracing::debug!(ids = batch.len(), row, "sending destroy_many");
        match self.client.destroy_many(&batch).await {
            Ok(job) => {
                self.store
                    .record_answer(
                        row,
                        Some(&job.id.0),
                        job.status.as_str(),
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
                                "refused",
                                Some(&e.to_string()),
                                "failed",
                                ids,
                            )
                            .await?;
                        self.tally.failed += ids.len() as u64;
                        return Err(
                            anyhow::Error::new(e).context("Zendesk refused the purge request")
                        );
                    }
                    ZendeskError::InvalidRequest { .. } => ("refused", "failed"),
                    // 404: none of the ids is soft-deleted any more; the next
                    // scan shows whether they are gone.
                    ZendeskError::NotFound { .. } => ("refused", "unknown"),
                    // The request may have been carried out (a dropped answer,
                    // a broken body): only a later scan can tell.
                    ZendeskError::Transient { .. }
                    | ZendeskError::Decode { .. }
                    | ZendeskError::RateLimited { .. }
                    | ZendeskError::Refused { .. } => ("unknown", "unknown"),
                };
                tracing::error!(error = %e, ids = ids.len(), outcome, "purge request failed");
                if outcome == "failed" {
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
        let statuses = match self.client.job_statuses(&ids).await {
            Ok(s) => s,
            Err(e @ (ZendeskError::Unauthorized { .. } | ZendeskError::Forbidden { .. })) => {
                return Err(anyhow::Error::new(e).context("Zendesk refused the job status request"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "polling jobs failed; trying again at the next tick");
                return Ok(());
            }
        };
        let by_id: HashMap<&JobId, &JobStatus> = statuses.iter().map(|s| (&s.id, s)).collect();
        let open = std::mem::take(&mut self.open);
        for mut job in open {
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
                                status.status.as_str(),
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
                "unknown",
                Some(why),
                "unknown",
                &job.tickets,
            )
            .await
    }

    async fn finish(&mut self, job: OpenJob, status: &JobStatus) -> anyhow::Result<()> {
        let message = status.message.clone();
        let (outcome, detail) = match (&status.status, status.results.succeeded()) {
            (JobState::Completed, Some(true)) => ("purged", message.clone()),
            (JobState::Completed, _) => (
                "unknown",
                Some(format!(
                    "the job completed without full success ({}); which tickets are gone is settled by the next scan",
                    message.as_deref().unwrap_or("no message")
                )),
            ),
            _ => (
                "failed",
                Some(
                    message
                        .clone()
                        .unwrap_or_else(|| format!("job {}", status.status)),
                ),
            ),
        };
        match outcome {
            "purged" => {
                self.tally.purged += job.tickets.len() as u64;
                self.count_by_rule(job.row, &job.tickets, "zd_retention_tickets_purged_total")
                    .await;
            }
            "failed" => {
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
                status.status.as_str(),
                detail.as_deref(),
                outcome,
                &job.tickets,
            )
            .await
            .context("cannot record a job's end")
    }
}

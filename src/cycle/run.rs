//! `run_cycle`: the stages in order, the run recorded before and after.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::check::{settle_check, walk_check};
use super::follow::recover_open_jobs;
use super::handover::{ListingGate, RELEASES_QUEUED};
use super::scan::{ScanResult, scan};
use super::settle::{Settled, settle_walk};
use super::worker::{PurgeWorker, Tally};
use crate::audit::{AuditStore, RunCounts, RunId, RunStatus, Trigger};
use crate::cycle::{CycleContext, CycleReport, Release, SafetyRequests, clock_trusted};
use crate::zendesk::ClientStatsSnapshot;

/// Pruning reads "long ago" off this host's clock: only after a clean run
/// on a clock Zendesk's agrees with. A failure joins the run's errors.
pub(super) async fn prune_if_clean(ctx: &CycleContext, errors: &mut Vec<String>) -> u64 {
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
pub(super) async fn announce(store: &AuditStore, report: &CycleReport, latency_bound: Duration) {
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
            run = run.get(),
            scanned = report.counts.scanned,
            matched = report.counts.matched,
            purged = report.counts.purged,
            "run completed"
        ),
        RunStatus::Interrupted => tracing::warn!(
            run = run.get(),
            scanned = report.counts.scanned,
            purged = report.counts.purged,
            "run interrupted by shutdown"
        ),
        RunStatus::Failed | RunStatus::Running => tracing::error!(
            run = run.get(),
            error = report.error.as_deref().unwrap_or(""),
            "run failed"
        ),
    }
}

/// A run's figures, as recorded.
pub(super) fn counts_of(scan: &ScanResult, tally: &Tally, list_requests: u64) -> RunCounts {
    RunCounts {
        scanned: scan.scanned,
        matched: scan.matched,
        purged: tally.purged,
        failed: tally.failed,
        unknown: tally.unknown,
        list_requests,
        early_stop: scan.early_stop,
        scan: Some(scan.scan),
        scan_reason: Some(scan.scan_reason.clone()),
        max_listing_age_ms: tally.max_listing_age.map(|d| d.as_millis() as u64),
        step: Some(scan.step.kind()),
        high_water: scan.high_water,
        decisions_recorded: Some(scan.decisions_recorded),
    }
}

/// The report of a finished run.
pub(super) fn report_of(
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
        scan: scan.scan,
        scan_reason: scan.scan_reason.clone(),
        step: scan.step.kind(),
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
pub(super) fn errors_of(run: RunId, scan: &ScanResult, tally: &Tally) -> Vec<String> {
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
        run = run.get(),
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
            tracing::error!(run = run.get(), error = %message, "run failed");
            if let Err(also) = store.fail_run(run, &message).await {
                tracing::error!(run = run.get(), error = %also, "the run's failure could not be recorded");
            }
            Err(e)
        }
    }
}

/// A started run, to its end.
pub(super) async fn run_started(
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
        Ok((entry, head)) => {
            tracing::info!(run = run.get(), entry, head = %head, "audit chain head")
        }
        Err(e) => {
            tracing::error!(run = run.get(), error = %e, "cannot read the audit chain's head")
        }
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

//! The whole-view check that spans runs: after its refresh, a run walks on
//! where the last one stopped, for its share of the listing quota, while
//! its purges go out beside it. When the walk reaches the end, the live
//! rows no listing saw since the check began are settled (after the run's
//! purge worker is done), as after a whole walk in one run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::context::IdSet;
use super::handover::ListingGate;
use super::scan::{
    ScanResult, Selection, WalkState, decide_page, flush_decisions, next_page, page_may_be_decided,
    page_rows, policy_fingerprint, record_relisted,
};
use super::settle::{Settled, settle_unseen};
use super::step::Step;
use crate::audit::{ListingMarks, RunId, Sighting, ViewCheck};
use crate::cycle::{CheckProgress, CycleContext, CycleSettings};
use crate::ticket::Ticket;
use crate::zendesk::{ListOptions, Resume};

/// Whether this run walks a part of the check: one is under way, or the
/// last one began `schedule.reconcile` ago or longer. Only after a refresh
/// that finished (its marks cover the deletions since the check began).
fn check_wanted(settings: &CycleSettings, scan: &ScanResult) -> bool {
    !settings.reconcile_every.is_zero()
        && scan.finished()
        && matches!(scan.step, Step::Refresh { .. })
}

fn check_due(settings: &CycleSettings, marks: &ListingMarks, now: DateTime<Utc>) -> bool {
    let every =
        chrono::Duration::from_std(settings.reconcile_every).unwrap_or(chrono::TimeDelta::MAX);
    marks.last_reconcile.is_none_or(|last| now - last >= every)
}

/// The pages a run's part may take: its share of the listing quota over
/// one schedule interval (at least one page, so that a check always goes
/// on), and the time that share takes.
pub(super) fn check_budget(ctx: &CycleContext, next_page: u32) -> (u64, Duration) {
    let settings = &ctx.settings;
    let limits = ctx.client.limits();
    let quota = if next_page > 100 {
        limits.list_deep
    } else {
        limits.list
    };
    let windows = settings.check_interval.as_secs_f64() / quota.window.as_secs_f64();
    let pages = (settings.check_share * f64::from(quota.count.get()) * windows).floor();
    let pages = if pages.is_finite() { pages as u64 } else { 1 };
    (
        pages.max(1),
        settings
            .check_interval
            .mul_f64(settings.check_share.clamp(0.0, 1.0)),
    )
}

/// Walks this run's part of the check. Returns its progress and, when the
/// walk reached the end, the check to settle once the purge worker is done.
pub(super) async fn walk_check(
    ctx: &CycleContext,
    run: RunId,
    scan: &ScanResult,
    marks: &ListingMarks,
    gate: &ListingGate,
    in_flight: &IdSet,
) -> anyhow::Result<(Option<CheckProgress>, Option<ViewCheck>, Option<String>)> {
    let store = &ctx.store;
    if scan.finished() && scan.step == Step::Reconcile {
        store
            .abandon_open_checks(run, Utc::now(), "a whole walk in one run replaced it")
            .await?;
        // every live row was listed (and decided) since the walk began, or
        // is settled now: the next refresh decides again from then on
        store
            .set_ledger_decided(run, scan.walk_started, &policy_fingerprint(ctx))
            .await?;
    }
    if !check_wanted(&ctx.settings, scan) || ctx.cancel.is_cancelled() {
        return Ok((None, None, None));
    }
    let mut check = match store.open_view_check().await? {
        Some(check) => check,
        None if check_due(&ctx.settings, marks, scan.walk_started) => {
            store.start_view_check(run, scan.walk_started).await?
        }
        None => return Ok((None, None, None)),
    };
    if check.walked {
        // walked to its end by an earlier run that did not settle it
        let progress = CheckProgress {
            check: check.id,
            started_at: Some(check.started_at),
            total_pages: check.pages,
            runs: check.runs,
            finished: true,
            stopped: "walked to its end earlier: settled now".into(),
            ..CheckProgress::default()
        };
        return Ok((Some(progress), Some(check), None));
    }
    check.runs += 1;
    let (budget, share_of_time) = check_budget(ctx, check.next_page);
    let deadline = Instant::now() + share_of_time;
    let mut progress = CheckProgress {
        check: check.id,
        started_at: Some(check.started_at),
        budget_pages: budget,
        ..CheckProgress::default()
    };
    let options = ListOptions {
        resume: check.next.clone().map(|next| Resume {
            next,
            number: check.next_page,
        }),
        ..ListOptions::default()
    };
    let mut pages = ctx.client.list_deleted(options);
    let mut walk = WalkState::default();
    let mut result = ScanResult::new(Step::Reconcile, String::new(), scan.walk_started);
    let mut finished = false;
    progress.stopped = loop {
        if progress.pages >= budget {
            break format!("its share of the listing quota ({budget} pages)");
        }
        // at least one page per run: a check always goes on
        if progress.pages > 0 && Instant::now() >= deadline {
            break "its share of the schedule's interval".to_string();
        }
        let Some(page) = next_page(ctx, gate, &mut pages, &mut result).await else {
            break match &result.error {
                Some(e) => e.clone(),
                None => "the daemon was stopping".to_string(),
            };
        };
        if let Err(message) = page_may_be_decided(ctx, &page, &mut result) {
            result.error = Some(message.clone());
            break message;
        }
        if page.has_more && page.next.is_none() {
            // never taken for the end: the walk could not go on
            let message = "the listing said there is more but gave no next page".to_string();
            result.error = Some(message.clone());
            break message;
        }
        check_page(
            ctx,
            run,
            scan,
            gate,
            in_flight,
            (&mut walk, &mut result),
            &page,
        )
        .await?;
        check.pages += 1;
        check.listed += page.tickets.len() as u64;
        check.next = page.next.clone();
        check.next_page = page.number.saturating_add(1);
        check.walked = !page.has_more;
        progress.pages += 1;
        progress.listed += page.tickets.len() as u64;
        {
            let _turn = gate.turn.lock().await;
            store.advance_view_check(&check).await?;
        }
        if !page.has_more {
            finished = true;
            break "the end of the view".to_string();
        }
    };
    drop(pages);
    progress.finished = finished;
    end_part(ctx, run, gate, check, progress, result.error).await
}

/// Records where this run's part of the check ended: the check given up
/// on a listing error (the next starts over), or its place kept.
async fn end_part(
    ctx: &CycleContext,
    run: RunId,
    gate: &ListingGate,
    check: ViewCheck,
    mut progress: CheckProgress,
    failed: Option<String>,
) -> anyhow::Result<(Option<CheckProgress>, Option<ViewCheck>, Option<String>)> {
    let store = &ctx.store;
    progress.total_pages = check.pages;
    progress.runs = check.runs;
    let mut error = None;
    if let Some(e) = failed {
        store
            .end_view_check(check.id, run, Utc::now(), Some(&e))
            .await?;
        error = Some(format!("the whole-view check stopped and starts over: {e}"));
        progress.finished = false;
    } else {
        let _turn = gate.turn.lock().await;
        store.advance_view_check(&check).await?;
    }
    tracing::info!(
        check = check.id,
        pages = progress.pages,
        total = check.pages,
        finished = progress.finished,
        "whole-view check walked on"
    );
    let finished = progress.finished.then_some(check);
    Ok((Some(progress), finished, error))
}

/// Decides one page of the check and writes it (under the listing gate:
/// purges go out beside the check). A ticket this run is purging is only
/// noted as seen: its purge is settled by a later check.
async fn check_page(
    ctx: &CycleContext,
    run: RunId,
    scan: &ScanResult,
    gate: &ListingGate,
    in_flight: &IdSet,
    (walk, result): (&mut WalkState, &mut ScanResult),
    page: &crate::zendesk::DeletedTicketsPage,
) -> anyhow::Result<()> {
    let store = &ctx.store;
    let mut ledger = page_rows(store, page).await?;
    // the purge worker's tickets (this run's selection, the jobs an earlier
    // process left open, requests since this run began) are only noted as
    // seen: their listing here must not race their request or its outcome
    let (sending, tickets): (Vec<&Ticket>, Vec<&Ticket>) = page.tickets.iter().partition(|t| {
        scan.handed.contains(t.id)
            || in_flight.contains(&t.id)
            || ledger.get(&t.id).is_some_and(|e| {
                e.state.awaits_settling() && e.requested_at.is_some_and(|r| r >= scan.walk_started)
            })
    });
    for t in sending {
        walk.touched.push(Sighting {
            ticket_id: t.id,
            deleted_at: t.deleted_at,
            subject_tags: None,
        });
    }
    let tickets: Vec<Ticket> = tickets.into_iter().cloned().collect();
    let now = Utc::now();
    let relisted = decide_page(ctx, &tickets, now, walk, result, &mut ledger, in_flight);
    // the selection waits for the next refresh (the rows stay selected)
    walk.selection = Selection::default();
    let _turn = gate.turn.lock().await;
    flush_decisions(store, run, walk, result, now).await?;
    record_relisted(store, run, walk, result, relisted, now).await
}

/// Settles a finished check: the live rows no listing saw since it began.
/// The refreshes since listed every deletion down to this run's refresh,
/// so the newest-first read goes back only to that refresh's start (or a
/// purge request after it).
pub(super) async fn settle_check(
    ctx: &CycleContext,
    run: RunId,
    scan: &ScanResult,
    check: &ViewCheck,
) -> anyhow::Result<(Settled, u64)> {
    let source = format!(
        "whole-view check {} (begun {}, walked in {} pages over {} runs, ended in run {run})",
        check.id,
        crate::audit::timestamp(check.started_at),
        check.pages,
        check.runs
    );
    let settled = settle_unseen(
        ctx,
        run,
        (check.started_at, Some(scan.walk_started)),
        (scan.cursor_proven, true),
        &source,
    )
    .await?;
    ctx.store
        .end_view_check(check.id, run, Utc::now(), None)
        .await?;
    Ok(settled)
}

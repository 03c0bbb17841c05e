//! Settling what a whole walk did not list: lookups among active tickets and
//! a newest-first read before anything is called gone.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::context::IdSet;
use super::scan::ScanResult;
use super::step::Step;
use crate::audit::{JobRowId, JobRowStatus, LedgerState, Outcome, RunId, Unsettled};
use crate::cycle::CycleContext;
use crate::zendesk::TicketId;

/// What the settling of absent tickets found.
#[derive(Debug, Default)]
pub(super) struct Settled {
    pub(super) confirmed_gone: u64,
    /// Kept tickets gone from the view, not by this tool.
    pub(super) left_view: u64,
    pub(super) restored_elsewhere: u64,
    pub(super) scrubbed: u64,
    pub(super) lookup_failed: u64,
    pub(super) not_effective: u64,
}

impl Settled {
    /// Adds what another part of the settling found.
    pub(super) fn add(&mut self, other: &Settled) {
        self.confirmed_gone += other.confirmed_gone;
        self.left_view += other.left_view;
        self.restored_elsewhere += other.restored_elsewhere;
        self.scrubbed += other.scrubbed;
        self.lookup_failed += other.lookup_failed;
        self.not_effective += other.not_effective;
    }
}

/// Zendesk scrubs soft-deleted tickets by itself about this long after
/// their deletion.
pub(super) const ZENDESK_SCRUB_AGE: chrono::TimeDelta = chrono::TimeDelta::days(30);

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
pub(super) async fn settle_absent(
    ctx: &CycleContext,
    run: RunId,
    absent: Vec<(TicketId, Unsettled)>,
    (cursor_proven, may_call_gone): (bool, bool),
    source: &str,
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
            .record_outcomes(run, None, &restored_ids, Outcome::RestoredElsewhere, Some(&vouched("not in the deleted view and found among active tickets: restored by someone, not purged", source)), now)
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
        let ours = matches!(u.state, LedgerState::Purged | LedgerState::Unknown);
        if listed.contains(&id) && !ours {
            // deleted again: the next refresh reads its new deletion
            settled.lookup_failed += 1;
        } else if listed.contains(&id) {
            let (outcome, detail) = if u.state == LedgerState::Purged {
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
                .record_outcomes(
                    run,
                    None,
                    &[id],
                    outcome,
                    Some(&vouched(detail, source)),
                    now,
                )
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
    let mut verdicts: BTreeMap<Outcome, Vec<TicketId>> = BTreeMap::new();
    for (id, u) in unexplained {
        let verdict = settle_verdict(&u, active.contains(&id), now);
        verdicts.entry(verdict).or_default().push(id);
    }
    record_verdicts(ctx, run, &verdicts, source, now, &mut settled).await?;
    Ok(settled)
}

/// A settlement's detail with the walk that did not list the ticket,
/// beside the lookup and the read that vouch for it.
fn vouched(detail: &str, source: &str) -> String {
    format!("{detail}; not listed by {source}")
}

/// Records each verdict of the settling, with what vouched for it.
async fn record_verdicts(
    ctx: &CycleContext,
    run: RunId,
    verdicts: &BTreeMap<Outcome, Vec<TicketId>>,
    source: &str,
    now: DateTime<Utc>,
    settled: &mut Settled,
) -> anyhow::Result<()> {
    for (outcome, ids) in verdicts {
        let detail = vouched(settle_detail(*outcome), source);
        ctx.store
            .record_outcomes(run, None, ids, *outcome, Some(&detail), now)
            .await?;
        let n = ids.len() as u64;
        match outcome {
            Outcome::RestoredElsewhere => settled.restored_elsewhere += n,
            Outcome::LeftView => settled.left_view += n,
            Outcome::ScrubbedByZendesk => settled.scrubbed += n,
            _ => settled.confirmed_gone += n,
        }
    }
    Ok(())
}

/// What a ticket missing from a whole walk, not deleted again since, and
/// looked up a second time, was: active is restored by someone; a kept
/// ticket gone left the view (not by us); an unknown outcome of a ticket
/// deleted more than 30 days ago cannot be told from Zendesk's scrub; the
/// rest is our purge, confirmed.
pub(super) fn settle_verdict(u: &Unsettled, active: bool, now: DateTime<Utc>) -> Outcome {
    if active {
        Outcome::RestoredElsewhere
    } else if !matches!(u.state, LedgerState::Purged | LedgerState::Unknown) {
        Outcome::LeftView
    } else if u.state == LedgerState::Unknown
        && u.deleted_at.is_some_and(|d| now - d > ZENDESK_SCRUB_AGE)
    {
        Outcome::ScrubbedByZendesk
    } else {
        Outcome::ConfirmedGone
    }
}

/// The detail recorded with each verdict.
fn settle_detail(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::RestoredElsewhere => {
            "not in the deleted view and found among active tickets: restored by someone, not purged"
        }
        Outcome::LeftView => {
            "kept, and now neither in the deleted view nor among active tickets: deleted for good by someone else, or scrubbed by Zendesk"
        }
        Outcome::ScrubbedByZendesk => {
            "gone from the deleted view and from the active tickets, deleted more than 30 days ago: Zendesk's own scrub cannot be told from our unconfirmed purge"
        }
        _ => {
            "neither in the deleted view (read newest-first back to its listing) nor among active tickets"
        }
    }
}

/// The active tickets among `ids` (in calls of 100), or `None` when a
/// lookup failed.
pub(super) async fn active_among(ctx: &CycleContext, ids: &[TicketId]) -> Option<IdSet> {
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
pub(super) async fn settle_lost_restore(
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

/// A whole walk (a reconcile) settles the live ledger rows it did not
/// list: absent from the view is not yet proof of anything, so each is
/// looked up among the active tickets and read for newest-first. The rows
/// are those no listing saw since the walk began, read by index in chunks.
/// Returns what was settled and the listing requests it took.
pub(super) async fn settle_walk(
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
pub(super) async fn settle_unseen(
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
pub(super) const SETTLE_CHUNK: usize = 10_000;

/// The ledger rows of `tickets` a whole walk that began at `walk_started`
/// did not list, each with the time it must be read back to (never before
/// `read_back_to`, when the refreshes since listed every deletion before).
pub(super) async fn absent_rows(
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
                    state: e.state,
                    deleted_at: e.deleted_at,
                    decided_at: Some(since),
                },
            )
        })
        .collect();
    absent.sort_by_key(|(id, _)| *id);
    Ok(absent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsettled(state: &str, days_ago: i64, now: DateTime<Utc>) -> Unsettled {
        Unsettled {
            state: LedgerState::ALL
                .iter()
                .copied()
                .find(|s| s.as_str() == state)
                .unwrap(),
            deleted_at: Some(now - chrono::Duration::days(days_ago)),
            decided_at: None,
        }
    }

    #[test]
    fn the_settle_verdict_never_calls_a_restored_or_kept_ticket_purged() {
        let now = Utc::now();
        let v = |o, days, active| settle_verdict(&unsettled(o, days, now), active, now);
        // active wins over everything
        for o in ["purged", "unknown", "kept", "selected"] {
            assert_eq!(v(o, 40, true), Outcome::RestoredElsewhere, "{o}");
        }
        // a kept ticket that left is not our purge
        assert_eq!(v("kept", 3, false), Outcome::LeftView);
        assert_eq!(v("selected", 40, false), Outcome::LeftView);
        // a reported purge is confirmed whatever its age
        assert_eq!(v("purged", 3, false), Outcome::ConfirmedGone);
        assert_eq!(v("purged", 40, false), Outcome::ConfirmedGone);
        // an unknown outcome: confirmed young, Zendesk's scrub when old
        assert_eq!(v("unknown", 3, false), Outcome::ConfirmedGone);
        assert_eq!(v("unknown", 31, false), Outcome::ScrubbedByZendesk);
    }
}

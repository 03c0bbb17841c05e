//! What an operator does by hand: `plan` (a dry run that writes nothing),
//! `restore` and `purge`. Restores and purges go through the same audited
//! path as the cycle: a run, each request recorded before it is sent and
//! answered after, an outcome per ticket.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::audit::{
    AuditStore, DecisionRecord, JobRowStatus, Outcome, RequestKind, RunCounts, RunStatus, Trigger,
};
use crate::cycle::{
    CycleContext, CycleSettings, ListedAs, Release, decision_record, send_and_follow,
};
use crate::ids::RunId;
use crate::listing::{PageOrder, ScanPlan};
use crate::rules::{Decision, KeepReason, Policy, RetentionRule, RuleAction};
use crate::ticket::Ticket;
use crate::zendesk::{IdBatch, ListOptions, TicketId, ZendeskClient, ZendeskError};

/// One ticket a plan would purge.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedPurge {
    pub id: TicketId,
    pub rule: String,
    pub deleted_at: Option<String>,
    pub previous_state: Option<String>,
    pub actor_id: Option<u64>,
}

/// How the rules treat one ticket, condition by condition.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub ticket: TicketId,
    pub found: bool,
    pub decision: String,
    pub rules: Vec<RuleExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleExplanation {
    pub rule: String,
    pub action: &'static str,
    pub matched: bool,
    pub conditions: Vec<(String, bool)>,
}

/// What `plan` found.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub scanned: u64,
    pub early_stop: bool,
    pub would_purge: BTreeMap<String, u64>,
    pub kept: BTreeMap<String, u64>,
    pub tickets: Vec<PlannedPurge>,
    pub explain: Option<Explanation>,
    pub list_requests: u64,
    /// `sorted` or `full`, and why (the same proof as a cycle's).
    pub scan: String,
    pub scan_reason: String,
}

/// A dry run against the account that records nothing.
pub async fn plan(
    client: &ZendeskClient,
    policy: &Policy,
    explain: Option<TicketId>,
) -> Result<Plan, ZendeskError> {
    // An explanation may be asked for a young ticket: then scan everything.
    let (mut scan_plan, mut reason) = ScanPlan::for_policy(policy);
    if explain.is_some() {
        (scan_plan, reason) = (ScanPlan::Full, "a ticket is explained: everything is read");
    }
    let horizon = match scan_plan {
        ScanPlan::Sorted { horizon } => Some(horizon),
        ScanPlan::Full => None,
    };
    let before = client.stats();
    let mut pages = client.list_deleted(scan_plan.list_options());
    let mut plan = Plan {
        scanned: 0,
        early_stop: false,
        would_purge: BTreeMap::new(),
        kept: BTreeMap::new(),
        tickets: Vec::new(),
        explain: None,
        list_requests: 0,
        scan: if horizon.is_some() { "sorted" } else { "full" }.into(),
        scan_reason: reason.into(),
    };
    let mut sorted = horizon.is_some();
    let mut order = PageOrder::default();
    let mut first = true;
    // each ticket by its latest listing (the view can change under a walk)
    let mut latest: HashMap<TicketId, (usize, Result<PlannedPurge, crate::audit::DecisionKind>)> =
        HashMap::new();
    while let Some(page) = pages.next().await {
        let page = page?;
        if std::mem::take(&mut first) && sorted {
            match crate::listing::prove_sorted(client, &page, crate::zendesk::SortOrder::Asc).await
            {
                Ok(why) => plan.scan_reason = why.into(),
                Err(why) => {
                    sorted = false;
                    plan.scan = "full".into();
                    plan.scan_reason = format!("no proven order ({why})");
                }
            }
        }
        if sorted && let Err(why) = order.check(&page) {
            sorted = false;
            plan.scan = "full".into();
            plan.scan_reason = format!("the order broke ({why}); everything was read");
        }
        let now = Utc::now();
        for t in &page.tickets {
            let decision = policy.decide(t, now);
            if explain == Some(t.id) {
                plan.explain = Some(explain_ticket(policy, t, &decision, now));
            }
            let entry = match decision {
                Decision::Purge { rule } => Ok(PlannedPurge {
                    id: t.id,
                    rule,
                    deleted_at: t.deleted_at.map(crate::audit::timestamp),
                    previous_state: t.previous_state.clone(),
                    actor_id: t.actor.as_ref().and_then(|a| a.id),
                }),
                keep => Err(crate::audit::DecisionKind::of(&keep, false)),
            };
            let position = latest.len();
            latest
                .entry(t.id)
                .and_modify(|e| e.1 = entry.clone())
                .or_insert((position, entry));
        }
        if sorted && horizon.is_some_and(|h| crate::listing::reaches_horizon(&page, h, now)) {
            plan.early_stop = true;
            break;
        }
    }
    let mut listed: Vec<(usize, Result<PlannedPurge, crate::audit::DecisionKind>)> =
        latest.into_values().collect();
    listed.sort_by_key(|(position, _)| *position);
    plan.scanned = listed.len() as u64;
    for (_, entry) in listed {
        match entry {
            Ok(purge) => {
                *plan.would_purge.entry(purge.rule.clone()).or_default() += 1;
                plan.tickets.push(purge);
            }
            Err(kind) => *plan.kept.entry(kind.to_string()).or_default() += 1,
        }
    }
    if let (Some(id), None) = (explain, &plan.explain) {
        plan.explain = Some(Explanation { ticket: id, found: false, decision: "not listed: the ticket is not soft-deleted (never deleted, restored, or already purged)".into(), rules: vec![] });
    }
    plan.list_requests = client.stats().since(&before).sent("list");
    Ok(plan)
}

fn explain_ticket(
    policy: &Policy,
    t: &Ticket,
    decision: &Decision,
    now: chrono::DateTime<Utc>,
) -> Explanation {
    Explanation {
        ticket: t.id,
        found: true,
        decision: decision.to_string(),
        rules: policy
            .rules
            .iter()
            .map(|r| RuleExplanation {
                rule: r.name.clone(),
                action: r.action.as_str(),
                matched: r.matches(t, now),
                conditions: r.explain(t, now),
            })
            .collect(),
    }
}

/// One id's fate in a manual command.
#[derive(Debug, Clone, Serialize)]
pub struct IdResult {
    pub id: TicketId,
    pub outcome: String,
    pub detail: Option<String>,
}

/// Restores ids in batches of 100; a batch Zendesk refuses (an id that is no
/// longer soft-deleted) is retried id by id, so that the others are still
/// restored and each refused id is named.
pub async fn restore(
    ctx: &CycleContext,
    ids: &[TicketId],
) -> anyhow::Result<(RunId, Vec<IdResult>)> {
    let store = &ctx.store;
    let run = store
        .start_run(Trigger::Restore, false, &ctx.origin, Utc::now())
        .await?;
    // Which ids are active before anything is sent: a refused restore of one
    // of those is not ours to call restored afterwards. `None` when the
    // lookup fails: then no refused restore is upgraded.
    let active_before = match ctx.client.active_among(ids).await {
        Ok(active) => Some(active),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up the tickets before restoring them");
            None
        }
    };
    let mut results = Vec::new();
    for batch in IdBatch::chunk(ids) {
        results.extend(restore_batch(ctx, run, &batch).await?);
    }
    if let Some(before) = &active_before {
        settle_doubtful_restores(ctx, run, before, &mut results).await?;
    }
    let failed = results.iter().filter(|r| r.outcome != "restored").count() as u64;
    let counts = RunCounts {
        matched: ids.len() as u64,
        failed,
        ..RunCounts::default()
    };
    let status = if failed == 0 {
        RunStatus::Completed
    } else {
        RunStatus::Failed
    };
    let error = (failed > 0).then(|| format!("{failed} of {} tickets not restored", ids.len()));
    store
        .finish_run(run, status, &counts, error.as_deref(), Utc::now())
        .await?;
    Ok((run, results))
}

/// Sends one `restore_many` and records its answer; a batch Zendesk refuses
/// is retried id by id.
async fn restore_batch(
    ctx: &CycleContext,
    run: RunId,
    batch: &IdBatch,
) -> anyhow::Result<Vec<IdResult>> {
    let store = &ctx.store;
    let mut results = Vec::new();
    let row = store
        .record_request(run, RequestKind::RestoreMany, batch, Utc::now())
        .await?;
    store.confirm_lead().await?;
    match ctx.client.restore_many(batch).await {
        Ok(()) => {
            store
                .record_job_end(
                    run,
                    row,
                    JobRowStatus::Completed,
                    None,
                    Outcome::Restored,
                    batch.ids(),
                )
                .await?;
            results.extend(batch.ids().iter().map(|id| IdResult {
                id: *id,
                outcome: "restored".into(),
                detail: None,
            }));
        }
        Err(ZendeskError::NotFound { .. }) => {
            store
                .record_job_end(
                    run,
                    row,
                    JobRowStatus::Refused,
                    Some("an id is not soft-deleted; restoring one by one"),
                    Outcome::NotRestored,
                    &[],
                )
                .await?;
            for id in batch.ids() {
                results.push(restore_one(ctx, run, *id).await?);
            }
        }
        Err(e) => {
            let message = e.to_string();
            store
                .record_job_end(
                    run,
                    row,
                    JobRowStatus::Failed,
                    Some(&message),
                    Outcome::NotRestored,
                    batch.ids(),
                )
                .await?;
            results.extend(batch.ids().iter().map(|id| IdResult {
                id: *id,
                outcome: "not_restored".into(),
                detail: Some(message.clone()),
            }));
        }
    }
    Ok(results)
}

/// A refused or unanswered restore may still have worked (its answer was
/// lost and the retry found nothing left to restore): what is active now is
/// restored, whatever the answers said. An id active before the restore was
/// never deleted and is not ours to call restored.
async fn settle_doubtful_restores(
    ctx: &CycleContext,
    run: RunId,
    before: &std::collections::HashSet<TicketId>,
    results: &mut [IdResult],
) -> anyhow::Result<()> {
    let doubtful: Vec<TicketId> = results
        .iter()
        .filter(|r| r.outcome != "restored" && !before.contains(&r.id))
        .map(|r| r.id)
        .collect();
    for r in results.iter_mut().filter(|r| before.contains(&r.id)) {
        r.detail = Some("already active before the restore: it was not deleted".into());
    }
    match ctx.client.active_among(&doubtful).await {
        Ok(active) if !active.is_empty() => {
            let mut active: Vec<TicketId> = active.into_iter().collect();
            active.sort_unstable();
            ctx.store
                .record_outcomes(
                    run,
                    None,
                    &active,
                    Outcome::Restored,
                    Some("found among active tickets after the restore request was refused or its answer lost"),
                    Utc::now(),
                )
                .await?;
            for r in results.iter_mut().filter(|r| active.contains(&r.id)) {
                r.outcome = "restored".into();
                r.detail = Some(
                    "found among active tickets (the request's answer was lost or refused)".into(),
                );
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up whether refused restores took effect")
        }
    }
    Ok(())
}

async fn restore_one(ctx: &CycleContext, run: RunId, id: TicketId) -> anyhow::Result<IdResult> {
    let store = &ctx.store;
    let batch = IdBatch::new(vec![id]).expect("one id is a batch");
    let row = store
        .record_request(run, RequestKind::Restore, &batch, Utc::now())
        .await?;
    store.confirm_lead().await?;
    let (status, outcome, detail) = match ctx.client.restore(id).await {
        Ok(()) => (JobRowStatus::Completed, Outcome::Restored, None),
        Err(ZendeskError::NotFound { .. }) => (
            JobRowStatus::Refused,
            Outcome::NotRestored,
            Some(
                "not soft-deleted: already purged for good, already restored, or never deleted"
                    .to_string(),
            ),
        ),
        Err(e) => (
            JobRowStatus::Failed,
            Outcome::NotRestored,
            Some(e.to_string()),
        ),
    };
    store
        .record_job_end(run, row, status, detail.as_deref(), outcome, &[id])
        .await?;
    Ok(IdResult {
        id,
        outcome: outcome.as_str().into(),
        detail,
    })
}

/// What a manual purge chose before anything is recorded or sent.
#[derive(Default)]
struct ManualSelection {
    /// one decision row per id asked for that is decided
    records: Vec<DecisionRecord>,
    /// the ids to purge
    selected: Vec<TicketId>,
    /// how each selected id was listed (none when forced)
    listed: HashMap<TicketId, ListedAs>,
    /// the ids refused, with why
    refused: Vec<IdResult>,
}

/// `--force`: every id is selected as named, unlisted. A ticket the ledger
/// knows keeps its deletion there, so the purge and its outcome land on
/// that row.
async fn forced_selection(
    ctx: &CycleContext,
    wanted: &BTreeSet<TicketId>,
    settings: &CycleSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<ManualSelection> {
    let wanted_ids: Vec<TicketId> = wanted.iter().copied().collect();
    let known = ctx.store.ledger_rows(&wanted_ids).await?;
    let mut chosen = ManualSelection::default();
    for id in wanted {
        let entry = known.get(id);
        let ticket = entry.map_or(
            Ticket {
                id: *id,
                subject: None,
                actor: None,
                deleted_at: None,
                previous_state: None,
            },
            crate::audit::LedgerEntry::as_ticket,
        );
        let decision = Decision::Purge {
            rule: "(manual --force)".into(),
        };
        let mut record = decision_record(&ticket, &decision, settings, now);
        record.listed = false;
        record.subject_tags = entry.and_then(|e| e.subject_tags.clone());
        chosen.records.push(record);
        chosen.selected.push(*id);
    }
    Ok(chosen)
}

/// Without `--force`: each id must be listed as soft-deleted now; a keep
/// rule of the config (a legal hold) wins, then the config's safety floor
/// applies with one rule that selects every id asked for.
async fn listed_selection(
    ctx: &CycleContext,
    wanted: &BTreeSet<TicketId>,
    settings: &CycleSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<ManualSelection> {
    let floor = Policy {
        rules: vec![RetentionRule {
            match_all: true,
            ..RetentionRule::new("(manual)", RuleAction::Purge)
        }],
        min_age: ctx.policy.min_age,
        protect_ids: ctx.policy.protect_ids.clone(),
    };
    let mut found: HashMap<TicketId, Ticket> = HashMap::new();
    let mut pages = ctx.client.list_deleted(ListOptions::default());
    while let Some(page) = pages.next().await {
        for t in page?.tickets {
            if wanted.contains(&t.id) {
                found.insert(t.id, t);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    let mut chosen = ManualSelection::default();
    for id in wanted {
        let Some(t) = found.get(id) else {
            chosen.refused.push(IdResult {
                id: *id,
                outcome: "not_sent".into(),
                detail: Some(
                    "not listed as soft-deleted: never deleted, restored, or already purged".into(),
                ),
            });
            continue;
        };
        let decision = match ctx.policy.decide(t, now) {
            keep @ Decision::Keep(KeepReason::Rule(_)) => keep,
            _ => floor.decide(t, now),
        };
        chosen.listed.insert(t.id, ListedAs::of(t));
        chosen
            .records
            .push(decision_record(t, &decision, settings, now));
        match decision {
            Decision::Purge { .. } => chosen.selected.push(*id),
            Decision::Keep(reason) => chosen.refused.push(IdResult {
                id: *id,
                outcome: "not_sent".into(),
                detail: Some(refusal_reason(&reason)),
            }),
        }
    }
    Ok(chosen)
}

/// Why a manual purge did not send a ticket it was asked for.
fn refusal_reason(reason: &KeepReason) -> String {
    match reason {
        KeepReason::Rule(rule) => format!("kept by the config's rule {rule:?} (--force overrides)"),
        KeepReason::Protected => "in safety.protect_ids (--force overrides)".to_string(),
        KeepReason::TooYoung { .. } => {
            "deleted more recently than safety.min_age (--force overrides)".to_string()
        }
        _ => "its deletion time is unknown (--force overrides)".to_string(),
    }
}

/// Purges tickets by id through the audited path: the config's keep rules
/// and safety floor apply unless `force`; a dry-run config stays dry unless
/// `live`. Returns the run id and one result per id asked for.
pub async fn purge(
    ctx: &CycleContext,
    ids: &[TicketId],
    force: bool,
    live: bool,
) -> anyhow::Result<(RunId, Vec<IdResult>)> {
    let store = &ctx.store;
    let dry_run = ctx.settings.dry_run && !live;
    let mut settings = ctx.settings.clone();
    settings.dry_run = dry_run;
    let run = store
        .start_run(Trigger::ManualPurge, dry_run, &ctx.origin, Utc::now())
        .await?;
    let wanted: BTreeSet<TicketId> = ids.iter().copied().collect();
    let now = Utc::now();
    let chosen = if force {
        forced_selection(ctx, &wanted, &settings, now).await?
    } else {
        listed_selection(ctx, &wanted, &settings, now).await?
    };
    let ManualSelection {
        records,
        selected,
        listed,
        refused,
    } = chosen;
    store.record_decisions(run, &records).await?;
    let refused_ids: Vec<TicketId> = refused.iter().map(|r| r.id).collect();
    store
        .record_outcomes(
            run,
            None,
            &refused_ids,
            Outcome::NotSent,
            Some("refused by a keep rule, the safety floor, or not soft-deleted"),
            Utc::now(),
        )
        .await?;
    let mut results = refused;
    let mut counts = RunCounts {
        scanned: records.len() as u64,
        matched: selected.len() as u64,
        ..RunCounts::default()
    };
    if dry_run {
        // recorded as would_purge; nothing is sent
        results.extend(selected.iter().map(|id| IdResult {
            id: *id,
            outcome: "would_purge".into(),
            detail: Some(
                "dry run (safety.dry_run = true): nothing sent; pass --live to purge".into(),
            ),
        }));
        results.sort_by_key(|r| r.id);
        store
            .finish_run(run, RunStatus::Completed, &counts, None, Utc::now())
            .await?;
        return Ok((run, results));
    }
    // ages are read off this host's clock; a forced purge reads no age
    if let (false, Err(message)) = (
        force,
        crate::cycle::clock_trusted(&ctx.client, ctx.settings.clock_skew),
    ) {
        store
            .record_outcomes(
                run,
                None,
                &selected,
                Outcome::NotSent,
                Some(&message),
                Utc::now(),
            )
            .await?;
        store.fail_run(run, &message).await?;
        anyhow::bail!("{message}");
    }
    // each batch with the deletion times as listed, so that the freshness
    // read just before sending catches a ticket deleted again meanwhile;
    // forced ids were not listed and are sent as named
    let releases = IdBatch::chunk(&selected)
        .into_iter()
        .map(|batch| Release {
            listed: batch
                .ids()
                .iter()
                .map(|id| listed.get(id).cloned())
                .collect(),
            listed_at: now,
            purgeable: vec![None; batch.len()],
            check_freshness: !force,
            batch,
        })
        .collect();
    let tally = send_and_follow(ctx, run, releases).await;
    results.extend(outcomes_of(store, run, &selected).await?);
    results.sort_by_key(|r| r.id);
    counts.purged = tally.purged;
    counts.failed = tally.failed;
    counts.unknown = tally.unknown;
    let ok = tally.failed == 0 && tally.fatal.is_none();
    let error = tally
        .fatal
        .clone()
        .or_else(|| (!ok).then(|| format!("{} tickets could not be purged", tally.failed)));
    let status = if ok {
        RunStatus::Completed
    } else {
        RunStatus::Failed
    };
    store
        .finish_run(run, status, &counts, error.as_deref(), Utc::now())
        .await?;
    Ok((run, results))
}

/// Each id's outcome in `run`, read back as recorded.
async fn outcomes_of(
    store: &AuditStore,
    run: RunId,
    ids: &[TicketId],
) -> anyhow::Result<Vec<IdResult>> {
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let history = store.ticket_history(*id).await?;
        let last = history
            .iter()
            .rev()
            .find(|e| e.kind == "outcome" && e.run_id == run);
        results.push(IdResult {
            id: *id,
            outcome: last.map_or("unknown".into(), |e| e.what.clone()),
            detail: last.and_then(|e| e.detail.clone()),
        });
    }
    Ok(results)
}

/// One change a config would make to the ledger's decisions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionChange {
    pub from_decision: String,
    pub from_rule: Option<String>,
    pub to_decision: String,
    pub to_rule: Option<String>,
    pub tickets: u64,
    /// The first ticket ids, lowest first (all of them in JSON).
    pub ticket_ids: Vec<TicketId>,
}

/// What a config would change, decided against the ledger without a
/// listing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LedgerDiff {
    /// Live tickets in the ledger (waiting ones included).
    pub live: u64,
    pub unchanged: u64,
    pub changes: Vec<DecisionChange>,
    /// Tickets listed before a subject pattern of this config (subjects not
    /// kept): their decision needs a listing.
    pub undecidable: u64,
    /// Tickets whose purge is sent or being settled: not decided again.
    pub awaiting_settlement: u64,
    /// What the next run sends for purging out of the ledger.
    pub next_run: NextRunPurges,
}

/// The ledger's tickets the next run purges: every live row not awaiting
/// a purge's settling that a purge rule selects now. These are the rows a
/// refresh decides from the ledger and hands to the purge worker (a
/// reconcile lists them and decides them the same way), whether an earlier
/// run selected them already and sent nothing (refused by
/// `max_purges_per_run`, failed, stopped) or this config newly selects them.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct NextRunPurges {
    pub tickets: u64,
    /// Of them, selected already in the ledger by an earlier run.
    pub already_selected: u64,
    pub by_rule: BTreeMap<String, u64>,
    /// Every id, lowest first.
    pub ticket_ids: Vec<TicketId>,
    /// `false` under `safety.dry_run`: the next run records them as
    /// `would_purge` and sends nothing.
    pub sent: bool,
    pub max_purges_per_run: u64,
    /// More than `max_purges_per_run`: the next run purges none of them
    /// (or, with `purge_while_scanning`, stops at the limit).
    pub over_the_limit: bool,
    pub purge_while_scanning: bool,
}

/// A change of decision: from decision and rule, to decision and rule.
type ChangeKey = (String, Option<String>, String, Option<String>);

/// Decides every live ledger row with `policy` at `now` and compares with
/// the decision the ledger holds, one row at a time: the ledger is read in
/// chunks, never held whole. Pure: the rule engine and the rows.
pub struct LedgerDiffer<'a> {
    policy: &'a Policy,
    safety: &'a crate::config::Safety,
    now: chrono::DateTime<chrono::Utc>,
    groups: BTreeMap<ChangeKey, Vec<TicketId>>,
    diff: LedgerDiff,
}

impl<'a> LedgerDiffer<'a> {
    pub fn new(
        policy: &'a Policy,
        safety: &'a crate::config::Safety,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Self {
            policy,
            safety,
            now,
            groups: BTreeMap::new(),
            diff: LedgerDiff {
                live: 0,
                unchanged: 0,
                changes: Vec::new(),
                undecidable: 0,
                awaiting_settlement: 0,
                next_run: NextRunPurges {
                    sent: !safety.dry_run,
                    max_purges_per_run: safety.max_purges_per_run,
                    purge_while_scanning: safety.purge_while_scanning,
                    ..NextRunPurges::default()
                },
            },
        }
    }

    /// Decides one live row and compares.
    pub fn add(&mut self, entry: &crate::audit::LedgerEntry) {
        let diff = &mut self.diff;
        diff.live += 1;
        if entry.state.awaits_settling() {
            diff.awaiting_settlement += 1;
            return;
        }
        let ticket = entry.as_ticket();
        let decision = if entry.subject.is_some() || !self.policy.uses_subjects() {
            Some(self.policy.decide(&ticket, self.now))
        } else {
            self.policy
                .decide_tagged(&ticket, self.now, entry.subject_tags.as_ref())
        };
        let Some(decision) = decision else {
            diff.undecidable += 1;
            return;
        };
        if let Decision::Purge { rule } = &decision {
            let next = &mut diff.next_run;
            next.tickets += 1;
            next.already_selected += u64::from(entry.state == crate::audit::LedgerState::Selected);
            *next.by_rule.entry(rule.clone()).or_default() += 1;
            next.ticket_ids.push(entry.ticket_id);
        }
        let kind = crate::audit::DecisionKind::of(&decision, self.safety.dry_run);
        let rule = decision.rule().map(str::to_string);
        if entry.decision == Some(kind) && entry.rule == rule {
            diff.unchanged += 1;
            return;
        }
        self.groups
            .entry((
                from_text(entry.decision),
                entry.rule.clone(),
                kind.to_string(),
                rule,
            ))
            .or_default()
            .push(entry.ticket_id);
    }

    /// The comparison, its changes largest first.
    pub fn finish(self) -> LedgerDiff {
        let Self {
            groups,
            mut diff,
            safety,
            ..
        } = self;
        diff.changes = groups
            .into_iter()
            .map(
                |((from_decision, from_rule, to_decision, to_rule), mut ids)| {
                    ids.sort_unstable();
                    DecisionChange {
                        from_decision,
                        from_rule,
                        to_decision,
                        to_rule,
                        tickets: ids.len() as u64,
                        ticket_ids: ids,
                    }
                },
            )
            .collect();
        diff.changes.sort_by_key(|c| std::cmp::Reverse(c.tickets));
        diff.next_run.ticket_ids.sort_unstable();
        diff.next_run.over_the_limit = diff.next_run.tickets > safety.max_purges_per_run;
        diff
    }
}

/// A ledger row's decision as the plan's diff names it: a row recorded
/// before decisions were kept in the ledger has none.
fn from_text(decision: Option<crate::audit::DecisionKind>) -> String {
    decision.map_or_else(|| "none".to_string(), |d| d.to_string())
}

// What a manual purge selects and refuses (with and without `--force`),
// what `plan` reads, and what a config would change in the ledger.
#[cfg(test)]
mod selection_tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::{DecisionKind, LedgerEntry, LedgerState};
    use crate::config::Safety;
    use crate::cycle::test_support;
    use crate::sandbox::{Sandbox, SandboxOptions, SandboxTicket};

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    /// Keeps legal holds, purges what was deleted more than 7 days ago;
    /// min_age 1 h, ticket 4 protected.
    fn policy() -> Policy {
        Policy {
            rules: vec![
                RetentionRule {
                    subject_matches: Some(regex::Regex::new("(?i)legal hold").unwrap()),
                    ..RetentionRule::new("legal-hold", RuleAction::Keep)
                },
                RetentionRule {
                    older_than: Some(7 * DAY),
                    ..RetentionRule::new("week-old", RuleAction::Purge)
                },
            ],
            min_age: HOUR,
            protect_ids: [TicketId::new(4)].into(),
        }
    }

    async fn context(base_url: &str) -> (CycleContext, tempfile::TempDir) {
        test_support::context(base_url, policy(), test_support::settings()).await
    }

    fn sandbox_ticket(id: u64, subject: &str, deleted_ago: Duration) -> SandboxTicket {
        SandboxTicket {
            id,
            subject: Some(subject.into()),
            actor_id: 7,
            actor_name: "Ann".into(),
            deleted_at: Utc::now() - chrono::Duration::from_std(deleted_ago).unwrap(),
            previous_state: "closed".into(),
        }
    }

    /// 1: a week and more old; 2: a legal hold; 3: deleted 10 minutes ago;
    /// 4: protected; 5: two days old (no rule of the config selects it).
    async fn account() -> Sandbox {
        let tickets = vec![
            sandbox_ticket(1, "Refund", 10 * DAY),
            sandbox_ticket(2, "Legal hold: case 9", 10 * DAY),
            sandbox_ticket(3, "Refund", Duration::from_secs(600)),
            sandbox_ticket(4, "Refund", 10 * DAY),
            sandbox_ticket(5, "Refund", 2 * DAY),
        ];
        Sandbox::start_with(
            SandboxOptions::default(),
            tickets,
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap()
    }

    #[test]
    fn each_refusal_says_why_and_that_force_overrides_it() {
        let cases = [
            (
                KeepReason::Rule("legal-hold".into()),
                "kept by the config's rule \"legal-hold\"",
            ),
            (KeepReason::Protected, "safety.protect_ids"),
            (
                KeepReason::TooYoung {
                    rule: "(manual)".into(),
                },
                "safety.min_age",
            ),
            (
                KeepReason::UnknownAge {
                    rule: "(manual)".into(),
                },
                "deletion time is unknown",
            ),
        ];
        for (reason, words) in cases {
            let why = refusal_reason(&reason);
            assert!(why.contains(words), "{why}");
            assert!(why.ends_with("(--force overrides)"), "{why}");
        }
    }

    #[tokio::test]
    async fn a_manual_purge_sends_what_no_keep_rule_or_safety_floor_holds() {
        let sb = account().await;
        let (ctx, _dir) = context(&sb.base_url()).await;
        let wanted: BTreeSet<TicketId> = [1, 2, 3, 4, 5, 6].map(TicketId::new).into();
        let chosen = listed_selection(&ctx, &wanted, &ctx.settings, Utc::now())
            .await
            .unwrap();
        // 5 is kept by no rule of the config: asked for by hand, it goes
        assert_eq!(chosen.selected, vec![1, 5]);
        let refused: Vec<(TicketId, String)> = chosen
            .refused
            .iter()
            .map(|r| (r.id, r.detail.clone().unwrap()))
            .collect();
        assert_eq!(
            refused.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![2, 3, 4, 6]
        );
        assert!(refused[0].1.contains("legal-hold"), "{}", refused[0].1);
        assert!(refused[1].1.contains("min_age"), "{}", refused[1].1);
        assert!(refused[2].1.contains("protect_ids"), "{}", refused[2].1);
        assert!(
            refused[3].1.contains("not listed as soft-deleted"),
            "{}",
            refused[3].1
        );
        assert!(chosen.refused.iter().all(|r| r.outcome == "not_sent"));
        // a decision for every listed id (the unlisted one has none), each
        // selected by the manual rule, every listing kept for the freshness read
        let decided: Vec<(u64, DecisionKind, Option<String>)> = chosen
            .records
            .iter()
            .map(|r| (r.ticket_id.get(), r.decision, r.rule.clone()))
            .collect();
        assert_eq!(
            decided,
            vec![
                (1, DecisionKind::Purge, Some("(manual)".into())),
                (2, DecisionKind::KeepRule, Some("legal-hold".into())),
                (3, DecisionKind::KeepTooYoung, Some("(manual)".into())),
                (4, DecisionKind::KeepProtected, None),
                (5, DecisionKind::Purge, Some("(manual)".into())),
            ]
        );
        assert_eq!(chosen.listed.len(), 5);
        assert!(chosen.records.iter().all(|r| r.listed));
        sb.shutdown().await;
    }

    #[tokio::test]
    async fn a_forced_purge_takes_every_id_as_named_on_its_ledger_row() {
        // nothing is listed: the client points where nothing listens
        let (ctx, _dir) = context("http://127.0.0.1:9").await;
        let known = Ticket {
            id: TicketId::new(4),
            subject: None,
            actor: None,
            // (the store keeps milliseconds)
            deleted_at: DateTime::from_timestamp(1_780_000_000, 0),
            previous_state: Some("solved".into()),
        };
        let run = ctx
            .store
            .start_run(Trigger::Manual, false, &ctx.origin, Utc::now())
            .await
            .unwrap();
        let kept = decision_record(
            &known,
            &Decision::Keep(KeepReason::Protected),
            &ctx.settings,
            Utc::now(),
        );
        ctx.store.record_decisions(run, &[kept]).await.unwrap();
        let wanted: BTreeSet<TicketId> = [99, 4].map(TicketId::new).into();
        let chosen = forced_selection(&ctx, &wanted, &ctx.settings, Utc::now())
            .await
            .unwrap();
        assert_eq!(chosen.selected, vec![4, 99], "protected or not, as named");
        assert!(chosen.refused.is_empty() && chosen.listed.is_empty());
        let records: Vec<_> = chosen
            .records
            .iter()
            .map(|r| (r.ticket_id.get(), r.decision, r.rule.as_deref(), r.listed))
            .collect();
        assert_eq!(
            records,
            vec![
                (4, DecisionKind::Purge, Some("(manual --force)"), false),
                (99, DecisionKind::Purge, Some("(manual --force)"), false),
            ]
        );
        // the known ticket's purge lands on its ledger row's deletion
        assert_eq!(chosen.records[0].deleted_at, known.deleted_at);
        assert_eq!(chosen.records[0].previous_state.as_deref(), Some("solved"));
        assert_eq!(chosen.records[1].deleted_at, None);
    }

    #[tokio::test]
    async fn a_plan_decides_each_listed_ticket_and_explains_one_not_listed() {
        let sb = account().await;
        let c = test_support::client(&sb.base_url());
        let plan = super::plan(&c, &policy(), Some(TicketId::new(77)))
            .await
            .unwrap();
        assert_eq!(plan.scanned, 5);
        assert_eq!(
            plan.tickets.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(plan.would_purge.get("week-old"), Some(&1));
        assert_eq!(plan.kept.get("keep_rule"), Some(&1));
        assert_eq!(plan.kept.get("keep_protected"), Some(&1));
        assert_eq!(plan.kept.get("keep_no_rule"), Some(&2));
        assert_eq!(plan.scan, "full", "an explanation reads everything");
        let explain = plan.explain.unwrap();
        assert!(!explain.found);
        assert!(explain.decision.starts_with("not listed"));
        // a listed ticket is explained rule by rule
        let plan = super::plan(&c, &policy(), Some(TicketId::new(2)))
            .await
            .unwrap();
        let explain = plan.explain.unwrap();
        assert!(explain.found);
        let matched: Vec<(&str, bool)> = explain
            .rules
            .iter()
            .map(|r| (r.rule.as_str(), r.matched))
            .collect();
        assert_eq!(matched, vec![("legal-hold", true), ("week-old", true)]);
        sb.shutdown().await;
    }

    fn entry(
        id: TicketId,
        deleted_days: i64,
        decision: &str,
        rule: Option<&str>,
        state: LedgerState,
    ) -> LedgerEntry {
        LedgerEntry {
            ticket_id: id,
            deleted_at: Some(Utc::now() - chrono::Duration::days(deleted_days)),
            actor_id: None,
            actor_name: None,
            previous_state: None,
            subject: None,
            // listed with a subject that no pattern matches
            subject_tags: policy().subject_tags(&Ticket {
                id,
                subject: Some("Refund".into()),
                actor: None,
                deleted_at: None,
                previous_state: None,
            }),
            decision: Some(crate::audit::DecisionKind::parse(decision).unwrap()),
            rule: rule.map(str::to_string),
            config_hash: None,
            state,
            last_seen: None,
            requested_at: None,
        }
    }

    fn safety(dry_run: bool, max: u64) -> Safety {
        Safety {
            dry_run,
            max_purges_per_run: max,
            purge_while_scanning: false,
        }
    }

    #[test]
    fn a_ledger_diff_groups_the_changes_and_names_the_next_runs_purges() {
        let policy = policy();
        let safety = safety(false, 2);
        let mut differ = LedgerDiffer::new(&policy, &safety, Utc::now());
        for e in [
            // unchanged: still purged by the same rule
            entry(
                TicketId::new(1),
                10,
                "purge",
                Some("week-old"),
                LedgerState::Selected,
            ),
            // grown old enough since: kept by no rule -> purge
            entry(TicketId::new(2), 8, "keep_no_rule", None, LedgerState::Kept),
            entry(TicketId::new(3), 9, "keep_no_rule", None, LedgerState::Kept),
            // a purge sent and not settled: not decided again
            entry(
                TicketId::new(4),
                10,
                "purge",
                Some("week-old"),
                LedgerState::PurgeRequested,
            ),
            // still young
            entry(TicketId::new(5), 2, "keep_no_rule", None, LedgerState::Kept),
        ] {
            differ.add(&e);
        }
        let diff = differ.finish();
        assert_eq!(diff.live, 5);
        assert_eq!(diff.awaiting_settlement, 1);
        assert_eq!(diff.unchanged, 2);
        assert_eq!(diff.undecidable, 0);
        assert_eq!(
            diff.changes,
            vec![DecisionChange {
                from_decision: "keep_no_rule".into(),
                from_rule: None,
                to_decision: "purge".into(),
                to_rule: Some("week-old".into()),
                tickets: 2,
                ticket_ids: vec![TicketId::new(2), TicketId::new(3)],
            }]
        );
        let next = &diff.next_run;
        assert_eq!(next.ticket_ids, vec![1, 2, 3]);
        assert_eq!(next.already_selected, 1);
        assert_eq!(next.by_rule.get("week-old"), Some(&3));
        assert!(next.sent);
        assert!(next.over_the_limit, "3 purges, at most 2 a run");
    }

    #[test]
    fn a_dry_config_would_purge_and_a_row_without_its_subject_tag_is_undecidable() {
        let policy = policy();
        let safety = safety(true, 100);
        let mut differ = LedgerDiffer::new(&policy, &safety, Utc::now());
        // recorded as a purge by a live config: would_purge under a dry one
        differ.add(&entry(
            TicketId::new(1),
            10,
            "purge",
            Some("week-old"),
            LedgerState::Selected,
        ));
        // listed before the legal-hold pattern (no tag, no subject)
        let mut untagged = entry(
            TicketId::new(2),
            10,
            "keep_no_rule",
            None,
            LedgerState::Kept,
        );
        untagged.subject_tags = None;
        differ.add(&untagged);
        // its subject kept: decided from it (a legal hold)
        let mut subject = untagged.clone();
        subject.ticket_id = TicketId::new(3);
        subject.subject = Some("LEGAL HOLD".into());
        differ.add(&subject);
        let diff = differ.finish();
        assert_eq!(diff.undecidable, 1);
        let changes: Vec<(&str, &str, Vec<u64>)> = diff
            .changes
            .iter()
            .map(|c| {
                (
                    c.from_decision.as_str(),
                    c.to_decision.as_str(),
                    c.ticket_ids.iter().map(|id| id.get()).collect(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            vec![
                ("keep_no_rule", "keep_rule", vec![3]),
                ("purge", "would_purge", vec![1])
            ]
        );
        assert!(!diff.next_run.sent);
        assert!(!diff.next_run.over_the_limit);
    }
}

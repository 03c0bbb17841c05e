//! The listing step of a run (backlog, refresh or reconcile), the ledger
//! comparison that records only first sightings and changes, the decisions
//! made from the ledger, and the selection handed to the purge worker.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::context::{IdSet, SeenIds};
use super::handover::ListingGate;
use super::step::{Step, choose_step};
use crate::audit::{
    AuditStore, DecisionKind, DecisionRecord, LedgerEntry, LedgerState, ListingMarks, Outcome,
    RunId, ScanKind, Sighting,
};
use crate::cycle::{CycleContext, CycleSettings, ListedAs, Release, clock_trusted};
use crate::listing::PageOrder;
use crate::rules::{Decision, Policy};
use crate::ticket::Ticket;
use crate::zendesk::{IdBatch, SortOrder, TicketId};

/// What the scan found.
#[derive(Debug)]
pub(super) struct ScanResult {
    /// Distinct tickets listed and decided.
    pub(super) scanned: u64,
    /// Tickets whose latest listing a purge rule selected.
    pub(super) matched: u64,
    pub(super) matched_by_rule: BTreeMap<String, u64>,
    pub(super) kept: BTreeMap<String, u64>,
    pub(super) early_stop: bool,
    /// How the view was walked. Not a function of `step`: a sorted walk
    /// that read to the end counts as a reconcile (it saw the whole view)
    /// but was walked sorted.
    pub(super) scan: ScanKind,
    /// Why the walk is what `scan` says.
    pub(super) scan_reason: String,
    /// The cursor listing's order was proven this run.
    pub(super) cursor_proven: bool,
    /// Listing requests of the order proof.
    pub(super) proof_requests: u64,
    pub(super) cancelled: bool,
    pub(super) not_effective: u64,
    pub(super) not_sent: u64,
    /// Listings of a ticket already listed in this scan.
    pub(super) relisted: u64,
    /// The walk may have missed tickets (its order broke after it began
    /// sorted): absence proves nothing this run.
    pub(super) incomplete_walk: bool,
    /// Empty pages in a row that still said there was more.
    pub(super) empty_pages: u32,
    /// Selected, but already in a purge job an earlier process sent (that
    /// job is followed instead).
    pub(super) in_flight: u64,
    /// Tickets not purged because their listings disagreed or the freshness
    /// read found them deleted again.
    pub(super) changed_during_scan: u64,
    pub(super) error: Option<String>,
    /// Which listing the run made.
    pub(super) step: Step,
    /// When the listing began: the ledger is current as of then.
    pub(super) walk_started: DateTime<Utc>,
    /// The newest deletion known once the listing finished whole.
    pub(super) high_water: Option<DateTime<Utc>>,
    /// Decision rows written (first sightings and changes only).
    pub(super) decisions_recorded: u64,
    /// Live ledger rows decided again without a listing.
    pub(super) decided_from_ledger: u64,
    /// The tickets this run selected: the purge worker's, whatever the
    /// whole-view check beside it lists.
    pub(super) handed: SeenIds,
}

impl ScanResult {
    pub(super) fn finished(&self) -> bool {
        !self.cancelled && self.error.is_none()
    }
}

/// A ticket whose latest listing a purge rule selected.
#[derive(Debug, Clone)]
pub(super) struct Chosen {
    pub(super) rule: String,
    pub(super) listed: ListedAs,
    pub(super) listed_at: DateTime<Utc>,
}

/// The scan's view of the selection: latest listing wins, disagreeing
/// listings are never purged in this run.
#[derive(Debug, Default)]
pub(super) struct Selection {
    /// Every id listed (4 or 8 bytes each); what a purge rule chose is in
    /// `chosen` with its listing.
    pub(super) seen: SeenIds,
    pub(super) chosen: HashMap<TicketId, Chosen>,
    /// Selected by a purge rule in one listing and not in another, or
    /// selected twice with different deletion data: not purged this run.
    pub(super) disagreed_selected: IdSet,
    /// Ids already handed to the purge worker (pipelining only).
    pub(super) released: IdSet,
    /// Chosen ids in the order first chosen (may repeat; filtered on use).
    pub(super) order: Vec<TicketId>,
    /// Selected tickets only counted, nothing of them kept: a dry run's
    /// (nothing is sent), and a live run's beyond `max_purges_per_run`
    /// chosen (none of them can be sent this run). A million selected
    /// tickets cost nothing; their decisions are recorded as any other's.
    /// A dry run counts a ticket listed again by its first listing.
    pub(super) counted_only: u64,
    /// A live run's tickets only counted: listed again, they stay counted
    /// once and only counted, never a disagreement (about 2 bytes an id).
    pub(super) counted_ids: SeenIds,
}

impl Selection {
    /// Counts a selected ticket without holding it.
    fn count_only(&mut self, result: &mut ScanResult, rule: &str, id: TicketId, dry_run: bool) {
        *result.matched_by_rule.entry(rule.to_string()).or_default() += 1;
        self.counted_only += 1;
        if !dry_run {
            self.counted_ids.insert(id);
        }
    }

    /// Whether a ticket a purge rule selects is only counted: a dry run,
    /// or more than `limit` chosen already (a run sends at most `limit`).
    fn counts_only(&self, settings: &CycleSettings, id: TicketId) -> bool {
        settings.dry_run
            || self.counted_ids.contains(id)
            || (self.chosen.len() as u64 > settings.max_purges_per_run
                && !self.chosen.contains_key(&id))
    }

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

/// What one walk keeps from page to page.
#[derive(Default)]
pub(super) struct WalkState {
    /// The listings' view of the selection (latest listing wins).
    pub(super) selection: Selection,
    /// Decisions not yet written (written before any of their ids is sent).
    pub(super) unflushed: Vec<DecisionRecord>,
    /// Tickets seen again unchanged, for the ledger's last sighting.
    pub(super) touched: Vec<Sighting>,
    /// The newest deletion listed.
    pub(super) newest: Option<DateTime<Utc>>,
}

/// A ticket listed again in the same walk is decided by its latest
/// listing; listings that disagree (deletion data, or purge against keep)
/// keep it out of this run's purge. Returns whether this listing counts in
/// the figures.
fn relisted(
    selection: &mut Selection,
    result: &mut ScanResult,
    ticket: &Ticket,
    decision: &Decision,
) -> bool {
    let mut counted = true;
    // decided by its latest listing
    result.relisted += 1;
    let earlier = selection.chosen.remove(&ticket.id);
    let agrees = match (&earlier, decision) {
        (Some(c), Decision::Purge { rule }) => c.listed == ListedAs::of(ticket) && c.rule == *rule,
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
            ticket = ticket.id.get(),
            "listed twice in one scan with different deletion data or decisions: not purged in this run"
        );
        selection.disagreed_selected.insert(ticket.id);
        if selection.released.contains(&ticket.id) {
            tracing::error!(
                ticket = ticket.id.get(),
                "listed again after its purge request was sent (purge_while_scanning)"
            );
        }
    }
    counted
}

/// Decides one page's tickets: latest listing wins, the ledger compared (a
/// first sighting, a deletion again or a changed decision is recorded; the
/// rest only seen again), the selection and the counts kept. Returns the
/// tickets that were purged or unknown and are listed again.
pub(super) fn decide_page(
    ctx: &CycleContext,
    tickets: &[Ticket],
    now: DateTime<Utc>,
    walk: &mut WalkState,
    result: &mut ScanResult,
    ledger: &mut HashMap<TicketId, LedgerEntry>,
    in_flight: &IdSet,
) -> Vec<(TicketId, LedgerState)> {
    let settings = &ctx.settings;
    let WalkState {
        selection,
        unflushed,
        touched,
        newest,
    } = walk;
    let mut not_effective = Vec::new();
    for ticket in tickets {
        if ticket.id > crate::audit::MAX_TICKET_ID {
            // kept, logged, and never stored wrapped
            tracing::warn!(
                ticket = ticket.id.get(),
                "a listed ticket id is above 2^63-1: kept, not recorded"
            );
            *result
                .kept
                .entry("keep_id_out_of_range".into())
                .or_default() += 1;
            continue;
        }
        if ticket.deleted_at > *newest {
            *newest = ticket.deleted_at;
        }
        let decision = ctx.policy.decide(ticket, now);
        let first_listing = selection.seen.insert(ticket.id);
        let mut counted = true;
        if first_listing {
            result.scanned += 1;
        } else if settings.dry_run || selection.counted_ids.contains(ticket.id) {
            // only counted at its first listing: counted once, whatever
            // this listing says (nothing of it can be sent this run)
            result.relisted += 1;
            counted = false;
        } else {
            counted = relisted(selection, result, ticket, &decision);
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
        let kind = DecisionKind::of(&decision, settings.dry_run);
        // the tags whether subjects are kept or not: a row without its
        // subject (not kept, or recorded before subjects were) is decided
        // from them, never as if its subject matched nothing
        let tags = ctx.policy.subject_tags(ticket);
        let unchanged = prior.as_ref().is_some_and(|p| {
            p.deleted_at == ticket.deleted_at
                && p.decision == Some(kind)
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
            Decision::Purge { rule } if selection.counts_only(settings, ticket.id) => {
                selection.count_only(result, rule, ticket.id, settings.dry_run);
            }
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
            keep if counted => {
                let kind = DecisionKind::of(keep, false).as_str().to_string();
                *result.kept.entry(kind).or_default() += 1
            }
            _ => {}
        }
    }
    not_effective
}

impl ScanResult {
    /// A sorted step that cannot prove its order falls back to walking the
    /// whole view.
    fn walk_everything(&mut self, why: &str) {
        tracing::warn!(reason = %why, "the newest deletions cannot be read in order: walking the whole view");
        self.step = Step::Reconcile;
        self.scan = ScanKind::Full;
        self.scan_reason = format!("{why}: the whole view is walked");
    }

    pub(super) fn new(step: Step, reason: String, walk_started: DateTime<Utc>) -> Self {
        ScanResult {
            scanned: 0,
            matched: 0,
            matched_by_rule: BTreeMap::new(),
            kept: BTreeMap::new(),
            early_stop: false,
            scan: step.scan_kind(),
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
            decisions_recorded: 0,
            decided_from_ledger: 0,
            handed: SeenIds::default(),
        }
    }
}

pub(super) async fn scan(
    ctx: &CycleContext,
    run: RunId,
    marks: &ListingMarks,
    batches: &mpsc::Sender<Release>,
    gate: &ListingGate,
    in_flight: IdSet,
) -> anyhow::Result<ScanResult> {
    let settings = &ctx.settings;
    let store = &ctx.store;
    let no_purge_rules = ctx.policy.purge_rules().next().is_none();
    let walk_started = Utc::now();
    let (step, reason) = choose_step(&ctx.policy, settings, marks, walk_started);
    let mut result = ScanResult::new(step, reason, walk_started);
    let mut order = match step {
        Step::Refresh { .. } => PageOrder::newest_first(),
        _ => PageOrder::default(),
    };
    let mut pages = ctx.client.list_deleted(step.list_options());
    let mut walk = WalkState::default();
    let pipelining = settings.purge_while_scanning && !settings.dry_run && !no_purge_rules;
    let mut sending = Sending {
        batches,
        pipelining,
        queued: 0,
        stopped: false,
    };
    let mut pages_since_release = 0u32;
    // Decisions are written in transactions of up to fifty pages or two
    // seconds (fewer fsyncs), and always before any of their ids is handed
    // on for sending.
    let mut last_flush = Instant::now();
    let mut first_page = true;

    loop {
        let Some(page) = next_page(ctx, gate, &mut pages, &mut result).await else {
            break;
        };
        if let Some(direction) = result.step.sorted() {
            let sorted = SortedWalk {
                direction,
                order: &mut order,
                first_page: &mut first_page,
            };
            let fall_back = check_sorted_page(ctx, gate, &page, sorted, &mut result).await;
            if let Some(why) = fall_back {
                result.walk_everything(&why);
                pages = ctx.client.list_deleted(result.step.list_options());
                continue;
            }
        }
        if let Err(message) = page_may_be_decided(ctx, &page, &mut result) {
            tracing::error!("{message}");
            result.error = Some(message);
            break;
        }
        let mut ledger = page_rows(store, &page).await?;
        let now = Utc::now();
        let not_effective = decide_page(
            ctx,
            &page.tickets,
            now,
            &mut walk,
            &mut result,
            &mut ledger,
            &in_flight,
        );
        pages_since_release += 1;
        let stop = result.step.stops_at(&page, now);
        let release = pipelining
            && !sending.stopped
            && pages_since_release >= RELEASE_EVERY_PAGES
            && walk.selection.order.len() >= crate::zendesk::MAX_IDS_PER_BATCH;
        write_page(
            ctx,
            run,
            pipelining.then_some(gate),
            release,
            (&mut walk, &mut result, &mut last_flush),
            not_effective,
            now,
        )
        .await?;
        if release {
            pages_since_release = 0;
            if !release_while_walking(ctx, run, &mut walk, &mut result, &mut sending).await? {
                break;
            }
        }
        // a stop on the last page read everything: no early stop
        if stop && page.has_more {
            result.early_stop = true;
            break;
        }
    }
    drop(pages);
    flush_decisions(store, run, &mut walk, &mut result, Utc::now()).await?;

    close_walk(ctx, run, marks, &in_flight, &mut walk, &mut result).await?;
    let mut result = hand_over(ctx, run, &mut walk, result, &mut sending).await?;
    // what this run selected (sent or not): a check beside the purge worker
    // only notes these as seen
    result.handed = walk
        .selection
        .chosen
        .keys()
        .chain(walk.selection.released.iter())
        .copied()
        .collect();
    Ok(result)
}

/// The ledger rows of a page's tickets: the ledger is never held whole.
pub(super) async fn page_rows(
    store: &AuditStore,
    page: &crate::zendesk::DeletedTicketsPage,
) -> anyhow::Result<HashMap<TicketId, LedgerEntry>> {
    let ids: Vec<TicketId> = page
        .tickets
        .iter()
        .map(|t| t.id)
        .filter(|id| *id <= crate::audit::MAX_TICKET_ID)
        .collect();
    store.ledger_rows(&ids).await
}

/// What a page leaves to write: its decisions when due (write-ahead: on disk
/// before any of their ids can be sent), and the tickets listed again. While
/// sends are pipelined, the scan writes under the listing gate too: no commit
/// of its own falls between a freshness read and the sends it clears (the
/// gate is released before any hand-over, which may wait for the purge
/// worker).
async fn write_page(
    ctx: &CycleContext,
    run: RunId,
    // the gate, while sends are pipelined
    gate: Option<&ListingGate>,
    release: bool,
    (walk, result, last_flush): (&mut WalkState, &mut ScanResult, &mut Instant),
    relisted: Vec<(TicketId, LedgerState)>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let _turn = match gate {
        Some(gate) => Some(gate.turn.lock().await),
        None => None,
    };
    // in transactions of up to fifty pages or two seconds (fewer fsyncs),
    // and always before any of their ids is handed on
    if release || walk.unflushed.len() >= 5000 || last_flush.elapsed() >= Duration::from_secs(2) {
        flush_decisions(&ctx.store, run, walk, result, now).await?;
        *last_flush = Instant::now();
    }
    record_relisted(&ctx.store, run, walk, result, relisted, now).await
}

/// The walk's next page, or `None` when the walk ends: at the listing's
/// end, on a cancel, or on a listing error (both recorded in `result`).
pub(super) async fn next_page(
    ctx: &CycleContext,
    gate: &ListingGate,
    pages: &mut futures::stream::BoxStream<
        'static,
        Result<crate::zendesk::DeletedTicketsPage, crate::zendesk::ZendeskError>,
    >,
    result: &mut ScanResult,
) -> Option<crate::zendesk::DeletedTicketsPage> {
    let page = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            result.cancelled = true;
            return None;
        }
        page = async {
            let _turn = gate.turn.lock().await;
            pages.next().await
        } => page,
    };
    match page? {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %e, "listing failed; the scan stops here");
            result.error = Some(format!("listing deleted tickets failed: {e}"));
            None
        }
    }
}

/// The purge stage as the listing sees it: where releases go, whether they
/// go while the walk goes on, how many ids went, and whether sending
/// stopped (the limit reached, or the purge worker gone).
pub(super) struct Sending<'a> {
    pub(super) batches: &'a mpsc::Sender<Release>,
    pub(super) pipelining: bool,
    pub(super) queued: u64,
    pub(super) stopped: bool,
}

/// Hands the selection so far on for sending while the walk goes on.
/// `false` when the purge worker is gone (an error or a shutdown): the walk
/// did not finish, and the rest is recorded as not sent.
async fn release_while_walking(
    ctx: &CycleContext,
    run: RunId,
    walk: &mut WalkState,
    result: &mut ScanResult,
    sending: &mut Sending<'_>,
) -> anyhow::Result<bool> {
    if pipeline_release(ctx, run, &mut walk.selection, result, sending, false).await? {
        return Ok(true);
    }
    result
        .error
        .get_or_insert_with(|| "purging stopped before the scan finished".to_string());
    let rest = walk.selection.take_sendable();
    let why = "purging stopped after an error";
    record_not_sent(&ctx.store, run, result, &rest, why).await?;
    Ok(false)
}

/// Whether a page may be decided at all: ages are read off this host's
/// clock, and a clock far from Zendesk's (its Date header) would purge
/// tickets younger than `min_age`; a listing that keeps answering empty
/// pages that say there is more never ends.
pub(super) fn page_may_be_decided(
    ctx: &CycleContext,
    page: &crate::zendesk::DeletedTicketsPage,
    result: &mut ScanResult,
) -> Result<(), String> {
    clock_trusted(&ctx.client, ctx.settings.clock_skew)?;
    if page.tickets.is_empty() && page.has_more {
        result.empty_pages += 1;
        if result.empty_pages > 3 {
            return Err(
                "the listing keeps answering empty pages that say there is more: the walk stops"
                    .to_string(),
            );
        }
    } else {
        result.empty_pages = 0;
    }
    Ok(())
}

/// Writes the walk's pending decisions and ledger sightings.
pub(super) async fn flush_decisions(
    store: &AuditStore,
    run: RunId,
    walk: &mut WalkState,
    result: &mut ScanResult,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    result.decisions_recorded += walk.unflushed.len() as u64;
    store.record_decisions(run, &walk.unflushed).await?;
    walk.unflushed.clear();
    store.ledger_touch(&walk.touched, now).await?;
    walk.touched.clear();
    Ok(())
}

/// Tickets listed again after a purge or an unknown outcome: their new
/// decision first, so that the outcome finds its row.
pub(super) async fn record_relisted(
    store: &AuditStore,
    run: RunId,
    walk: &mut WalkState,
    result: &mut ScanResult,
    relisted: Vec<(TicketId, LedgerState)>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    for (id, prior) in relisted {
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
                ticket = id.get(),
                "a ticket reported purged is still listed; it is decided and purged again"
            );
        }
        // its decision first: the outcome then finds its row
        result.decisions_recorded += walk.unflushed.len() as u64;
        store.record_decisions(run, &walk.unflushed).await?;
        walk.unflushed.clear();
        store
            .record_outcomes(run, None, &[id], outcome, Some(detail), now)
            .await?;
    }
    Ok(())
}

/// After the listing: a sorted walk read to its end counts as a whole
/// walk; the high-water mark; the ledger's part (a refresh decides the
/// unlisted rows, a whole walk hands them over for settling); the counts.
async fn close_walk(
    ctx: &CycleContext,
    run: RunId,
    marks: &ListingMarks,
    in_flight: &IdSet,
    walk: &mut WalkState,
    result: &mut ScanResult,
) -> anyhow::Result<()> {
    let mut step = result.step;
    if step.sorted().is_some()
        && !result.early_stop
        && result.step != Step::Reconcile
        && !result.cancelled
        && result.error.is_none()
    {
        // a sorted walk read to its end saw the whole view
        step = Step::Reconcile;
        result.step = step;
        result
            .scan_reason
            .push_str("; it read to the end: the whole view, into the ledger");
    }
    if !result.cancelled && result.error.is_none() {
        result.high_water = match step {
            // the ledger is not whole yet: the next run walks everything
            Step::Backlog { .. } => None,
            Step::Refresh { .. } => walk.newest.max(marks.high_water),
            // a ticket deleted while the walk went on may have been passed:
            // the next refresh reads down to the walk's start
            Step::Reconcile => Some(
                walk.newest
                    .map_or(result.walk_started, |n| n.min(result.walk_started)),
            ),
        };
        match step {
            Step::Refresh { .. } => {
                decide_from_ledger(ctx, run, in_flight, &mut walk.selection, result).await?
            }
            // the rows it did not list are settled after it (their last
            // sighting is older than the walk); a backlog's are neither
            // decided nor settled
            Step::Reconcile | Step::Backlog { .. } => {}
        }
    }
    result.matched = walk.selection.chosen.len() as u64 + walk.selection.counted_only;
    result.matched_by_rule.retain(|_, n| *n > 0);
    result.kept.retain(|_, n| *n > 0);
    Ok(())
}

/// The selection handed to the purge worker, or recorded as not sent:
/// listings that disagreed, `max_purges_per_run` (checked before anything
/// is sent unless purging while scanning), a failed or stopped walk.
async fn hand_over(
    ctx: &CycleContext,
    run: RunId,
    walk: &mut WalkState,
    mut result: ScanResult,
    sending: &mut Sending<'_>,
) -> anyhow::Result<ScanResult> {
    let (batches, pipelining) = (sending.batches, sending.pipelining);
    let (settings, store) = (&ctx.settings, &ctx.store);
    let limit = settings.max_purges_per_run;
    let no_purge_rules = ctx.policy.purge_rules().next().is_none();
    // selected by one of its listings, but listed with different data in
    // another: not purged in this run, and the audit says why
    let mut disagreed: Vec<TicketId> = walk
        .selection
        .disagreed_selected
        .iter()
        .filter(|id| !walk.selection.released.contains(id))
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
            "{} tickets matched, more than safety.max_purges_per_run = {limit}: nothing was purged; check the rules (zd-retention plan) or raise the limit{}",
            result.matched,
            counted_only_note(walk.selection.counted_only)
        );
        tracing::error!("{message}");
        result.error.get_or_insert(message);
    } else if settings.purge_while_scanning && result.matched > limit {
        result.error.get_or_insert(format!(
            "{} tickets matched, more than safety.max_purges_per_run = {limit}: purging stopped at the limit{}",
            result.matched,
            counted_only_note(walk.selection.counted_only)
        ));
    } else if walk.selection.counted_only > 0 {
        // listings that disagreed took chosen tickets out after the cap
        // was reached: the ones only counted wait for a later run
        result.error.get_or_insert(format!(
            "more than safety.max_purges_per_run = {limit} tickets were chosen before some of them were listed again with other data{}; a later run sends them",
            counted_only_note(walk.selection.counted_only)
        ));
    }
    if let Some(reason) = stopped_reason {
        let rest = walk.selection.take_sendable();
        record_not_sent(store, run, &mut result, &rest, reason).await?;
        return Ok(result);
    }
    if pipelining {
        pipeline_release(ctx, run, &mut walk.selection, &mut result, sending, true).await?;
        return Ok(result);
    }
    let to_send = walk.selection.take_sendable();
    let unsent = release(&ctx.policy, &walk.selection, &to_send, batches).await;
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

/// What a refused run says of the selected tickets it only counted.
fn counted_only_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(
            " ({n} of them past the limit were only counted: each has its decision recorded and no outcome of this run)"
        )
    }
}

/// Decides again, at the run's time and without a listing, the live ledger
/// rows whose decision can have moved since they were last decided: those
/// an age threshold of the policy crossed since, and the selected ones (to
/// send). Under another policy than the last pass, every row, in chunks. The
/// ledger is read by index, never whole. A changed decision is recorded; a
/// purge joins the selection as the ledger knows it, current as of the
/// refresh's start (the freshness read before sending looks back to then).
pub(super) async fn decide_from_ledger(
    ctx: &CycleContext,
    run: RunId,
    in_flight: &IdSet,
    selection: &mut Selection,
    result: &mut ScanResult,
) -> anyhow::Result<()> {
    let store = &ctx.store;
    let now = Utc::now();
    let policy = policy_fingerprint(ctx);
    let ids = match store.ledger_decided().await? {
        Some((since, last)) if last == policy && since <= now => {
            store
                .ledger_to_redecide(
                    since,
                    now,
                    &ctx.policy.age_thresholds(),
                    result.walk_started,
                    // a live run sends what is selected; a dry run's
                    // would-purge rows wait, like kept ones, for a threshold
                    !ctx.settings.dry_run,
                )
                .await?
        }
        // another policy (or none recorded): every row, in chunks
        _ => store.ledger_undecided(result.walk_started).await?,
    };
    let mut ids: Vec<TicketId> = ids
        .into_iter()
        .filter(|id| !in_flight.contains(id))
        .collect();
    ids.sort_unstable();
    for chunk in ids.chunks(crate::audit::LEDGER_CHUNK) {
        let rows = store.ledger_rows(chunk).await?;
        let mut entries: Vec<&LedgerEntry> = rows
            .values()
            .filter(|e| matches!(e.state, LedgerState::Kept | LedgerState::Selected))
            .collect();
        entries.sort_unstable_by_key(|e| (e.deleted_at, e.ticket_id));
        let records = decide_entries(ctx, &entries, now, selection, result);
        result.decisions_recorded += records.len() as u64;
        store.record_decisions(run, &records).await?;
    }
    // as of the refresh's start: the rows it listed were decided then, and
    // a threshold they crossed since is found by the next pass
    store
        .set_ledger_decided(run, result.walk_started, &policy)
        .await
}

/// What the decisions of the ledger's rows depend on besides the ticket and
/// the time: the policy, and how a decision is written (dry run, subjects).
pub(super) fn policy_fingerprint(ctx: &CycleContext) -> String {
    format!(
        "{} dry_run={} record_subjects={}",
        ctx.policy.fingerprint(),
        ctx.settings.dry_run,
        ctx.settings.record_subjects
    )
}

/// Decides ledger rows at `now`: the selection and the counts kept, the
/// changed decisions returned for recording.
fn decide_entries(
    ctx: &CycleContext,
    entries: &[&LedgerEntry],
    now: DateTime<Utc>,
    selection: &mut Selection,
    result: &mut ScanResult,
) -> Vec<DecisionRecord> {
    let settings = &ctx.settings;
    let mut records = Vec::new();
    for entry in entries {
        let ticket = entry.as_ticket();
        // a subject the ledger holds (recorded while subjects were kept)
        // answers the patterns itself
        let decision = if entry.subject.is_some() || !ctx.policy.uses_subjects() {
            ctx.policy.decide(&ticket, now)
        } else {
            match ctx
                .policy
                .decide_tagged(&ticket, now, entry.subject_tags.as_ref())
            {
                Some(d) => d,
                // listed before a subject pattern now in force: the next
                // reconcile lists it (the run's start counted none)
                None => continue,
            }
        };
        let kind = DecisionKind::of(&decision, settings.dry_run);
        result.decided_from_ledger += 1;
        if entry.decision != Some(kind) || entry.rule.as_deref() != decision.rule() {
            let mut record = decision_record(&ticket, &decision, settings, now);
            record.listed = false;
            // the subject is what the ledger holds (recorded subjects only)
            record.subject = entry.subject.clone();
            record.subject_tags = entry.subject_tags.clone();
            records.push(record);
        }
        match &decision {
            Decision::Purge { rule } if selection.counts_only(settings, ticket.id) => {
                selection.count_only(result, rule, ticket.id, settings.dry_run);
            }
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
            keep => {
                let kind = DecisionKind::of(keep, false).as_str().to_string();
                *result.kept.entry(kind).or_default() += 1
            }
        }
    }
    records
}

/// Hands chosen ids to the purge worker in batches of 100, each with the
/// tickets as listed; returns the ids it could not hand over (the worker is
/// gone), for their `not_sent` outcome.
pub(super) async fn release(
    policy: &Policy,
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
            purgeable: chosen
                .iter()
                .zip(batch.ids())
                .map(|(c, id)| {
                    c.and_then(|c| {
                        let ticket = Ticket {
                            id: *id,
                            subject: None,
                            actor: None,
                            deleted_at: c.listed.deleted_at,
                            previous_state: None,
                        };
                        policy.purgeable_at(&c.rule, &ticket)
                    })
                })
                .collect(),
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
pub(super) async fn record_not_sent(
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
pub(super) const RELEASE_EVERY_PAGES: u32 = 20;

/// Pipelining (`purge_while_scanning`) sends what the scan chose so far, after
/// a freshness read, up to `max_purges_per_run`. `false` when the worker is
/// gone and the scan should stop.
pub(super) async fn pipeline_release(
    ctx: &CycleContext,
    run: RunId,
    selection: &mut Selection,
    result: &mut ScanResult,
    sending: &mut Sending<'_>,
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
    if sending.stopped {
        over = std::mem::take(&mut ids);
    } else {
        let room = limit.saturating_sub(sending.queued) as usize;
        if ids.len() > room {
            over = ids.split_off(room);
            sending.stopped = true;
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
    sending.queued += ids.len() as u64;
    let unsent = release(&ctx.policy, selection, &ids, sending.batches).await;
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
    ticket: &Ticket,
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

/// A sorted walk's order proof: the direction, the order seen so far and
/// whether the page at hand is the first (its order is proven with extra
/// reads before anything on it is decided).
pub(super) struct SortedWalk<'a> {
    pub(super) direction: SortOrder,
    pub(super) order: &'a mut PageOrder,
    pub(super) first_page: &'a mut bool,
}

/// A page of a sorted walk: the order proven on the first page (a view on
/// one page is read whole), then every page checked whole. `Some(why)` when
/// the walk must fall back to the whole view.
pub(super) async fn check_sorted_page(
    ctx: &CycleContext,
    gate: &ListingGate,
    page: &crate::zendesk::DeletedTicketsPage,
    sorted: SortedWalk<'_>,
    result: &mut ScanResult,
) -> Option<String> {
    let SortedWalk {
        direction,
        order,
        first_page,
    } = sorted;
    let mut fall_back: Option<String> = None;
    if std::mem::take(first_page) {
        if !page.has_more {
            // the whole view on one page: read whole, a reconcile
            result.step = Step::Reconcile;
            result.scan = ScanKind::Full;
            result.scan_reason = "the whole view fits on one page: it is read whole".into();
        } else {
            let proof = {
                let _turn = gate.turn.lock().await;
                let before = ctx.client.stats().sent("list");
                let proof = crate::listing::prove_sorted(&ctx.client, page, direction).await;
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
        && result.step != Step::Reconcile
        && let Err(why) = order.check(page)
    {
        fall_back = Some(format!("the order broke ({why})"));
    }
    fall_back
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_keep_narrow_and_wide_ids() {
        let mut seen = SeenIds::default();
        let id = TicketId::new;
        assert!(seen.insert(id(7)));
        assert!(!seen.insert(id(7)));
        assert!(seen.insert(id(u64::from(u32::MAX))));
        assert!(seen.insert(id(u64::from(u32::MAX) + 1)), "a wide id");
        assert!(!seen.insert(id(7)), "narrow ids kept beside wide ones");
        assert!(!seen.insert(id(u64::from(u32::MAX) + 1)));
        assert!(seen.insert(id(u64::MAX)));
        assert!(seen.contains(id(u64::MAX)) && !seen.contains(id(8)));
    }
}

/// The step a run chooses, the selection's rules, and a page's decisions
/// (latest listing wins, the ledger compared, the limit held).
#[cfg(test)]
mod step_and_page_tests {
    use chrono::TimeZone;

    use super::*;
    use crate::cycle::context::test_support;
    use crate::rules::{RetentionRule, RuleAction};
    use crate::ticket::Actor;
    use crate::zendesk::SortBy;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(h)
    }

    fn settings() -> CycleSettings {
        test_support::settings()
    }

    /// Purges tickets deleted more than 24 h ago whose previous state is
    /// `closed`; keeps everything else.
    fn aged_policy() -> Policy {
        Policy {
            rules: vec![RetentionRule {
                older_than: Some(24 * HOUR),
                previous_state: Some(["closed".to_string()].into()),
                ..RetentionRule::new("old-closed", RuleAction::Purge)
            }],
            min_age: HOUR,
            ..Policy::default()
        }
    }

    fn marks(high_water: Option<i64>, last_reconcile: Option<i64>, listings: u64) -> ListingMarks {
        ListingMarks {
            high_water: high_water.map(at),
            last_reconcile: last_reconcile.map(at),
            untagged: 0,
            listings,
        }
    }

    #[test]
    fn a_first_run_of_aged_rules_reads_the_backlog_up_to_the_youngest_age() {
        let (step, why) = choose_step(&aged_policy(), &settings(), &marks(None, None, 0), at(0));
        assert_eq!(step, Step::Backlog { horizon: 24 * HOUR });
        assert!(why.contains("first run"), "{why}");
        assert_eq!(step.sorted(), Some(SortOrder::Asc));
        assert_eq!(
            step.list_options().sort,
            Some((SortBy::DeletedAt, SortOrder::Asc))
        );
    }

    #[test]
    fn a_first_run_with_an_ageless_purge_rule_walks_the_whole_view() {
        let policy = Policy {
            rules: vec![RetentionRule {
                match_all: true,
                ..RetentionRule::new("all", RuleAction::Purge)
            }],
            ..Policy::default()
        };
        let (step, why) = choose_step(&policy, &settings(), &marks(None, None, 0), at(0));
        assert_eq!(step, Step::Reconcile);
        assert!(why.contains("no whole walk"), "{why}");
        assert_eq!(step.sorted(), None);
        assert_eq!(step.list_options().sort, None);
    }

    #[test]
    fn a_listing_without_a_high_water_mark_is_never_a_backlog_again() {
        // a run listed before, but no step finished whole: no backlog (it
        // would read only the oldest again), a whole walk
        let (step, _) = choose_step(&aged_policy(), &settings(), &marks(None, None, 1), at(0));
        assert_eq!(step, Step::Reconcile);
        // a mark without a whole walk behind it is no ground for a refresh
        let (step, _) = choose_step(
            &aged_policy(),
            &settings(),
            &marks(Some(-1), None, 1),
            at(0),
        );
        assert_eq!(step, Step::Reconcile);
    }

    #[test]
    fn untagged_rows_force_a_whole_walk_whatever_the_marks() {
        let mut m = marks(Some(-1), Some(-2), 5);
        m.untagged = 3;
        let (step, why) = choose_step(&aged_policy(), &settings(), &m, at(0));
        assert_eq!(step, Step::Reconcile);
        assert!(why.starts_with("3 tickets"), "{why}");
    }

    #[test]
    fn a_refresh_reads_down_to_the_mark_less_the_clock_skew() {
        let (step, _) = choose_step(
            &aged_policy(),
            &settings(),
            &marks(Some(-1), Some(-2), 5),
            at(0),
        );
        assert_eq!(
            step,
            Step::Refresh {
                down_to: at(-1) - chrono::Duration::seconds(120)
            }
        );
        assert_eq!(step.kind().as_str(), "refresh");
        assert_eq!(step.sorted(), Some(SortOrder::Desc));
    }

    #[test]
    fn only_a_zero_reconcile_interval_makes_the_run_walk_the_whole_view_itself() {
        let m = marks(Some(-1), Some(-48), 5);
        // a day between whole walks, the last two days ago: still a refresh
        // (the due check walks on beside it, check.rs)
        let (step, _) = choose_step(&aged_policy(), &settings(), &m, at(0));
        assert!(matches!(step, Step::Refresh { .. }), "{step:?}");
        // `0s`: every run walks the whole view
        let zero = CycleSettings {
            reconcile_every: Duration::ZERO,
            ..settings()
        };
        let (step, why) = choose_step(&aged_policy(), &zero, &m, at(0));
        assert_eq!(step, Step::Reconcile);
        assert!(why.contains("the last whole walk began 2d ago"), "{why}");
    }

    fn ticket(id: TicketId, deleted_h: Option<i64>, previous: &str) -> Ticket {
        Ticket {
            id,
            subject: Some(format!("ticket {id}")),
            actor: Some(Actor {
                id: Some(7),
                name: Some("Ann".into()),
            }),
            deleted_at: deleted_h.map(at),
            previous_state: Some(previous.into()),
        }
    }

    fn page(tickets: Vec<Ticket>) -> crate::zendesk::DeletedTicketsPage {
        crate::zendesk::DeletedTicketsPage {
            tickets,
            number: 1,
            has_more: true,
            next: None,
        }
    }

    #[test]
    fn a_refresh_stops_only_after_a_page_ending_below_its_mark() {
        let step = Step::Refresh { down_to: at(-10) };
        let now = at(0);
        assert!(step.stops_at(
            &page(vec![
                ticket(TicketId::new(1), Some(-5), "closed"),
                ticket(TicketId::new(2), Some(-11), "closed")
            ]),
            now
        ));
        // ending at the mark itself: a ticket of that second may follow
        assert!(!step.stops_at(
            &page(vec![ticket(TicketId::new(1), Some(-10), "closed")]),
            now
        ));
        assert!(!step.stops_at(&page(vec![ticket(TicketId::new(1), None, "closed")]), now));
        assert!(!step.stops_at(&page(vec![]), now));
        assert!(!Step::Reconcile.stops_at(
            &page(vec![ticket(TicketId::new(1), Some(-500), "closed")]),
            now
        ));
        // a backlog stops once the page's last ticket is younger than the horizon
        let backlog = Step::Backlog { horizon: 24 * HOUR };
        assert!(!backlog.stops_at(
            &page(vec![ticket(TicketId::new(1), Some(-30), "closed")]),
            now
        ));
        assert!(backlog.stops_at(
            &page(vec![
                ticket(TicketId::new(1), Some(-30), "closed"),
                ticket(TicketId::new(2), Some(-2), "closed")
            ]),
            now
        ));
    }

    fn chosen(selection: &mut Selection, ids: impl IntoIterator<Item = u64>) {
        for id in ids.into_iter().map(TicketId::new) {
            selection.chosen.insert(
                id,
                Chosen {
                    rule: "r".into(),
                    listed: ListedAs::of(&ticket(id, Some(-30), "closed")),
                    listed_at: at(0),
                },
            );
            selection.order.push(id);
        }
    }

    #[test]
    fn the_sendable_ids_are_chosen_agreed_and_new_each_once_in_listing_order() {
        let mut s = Selection::default();
        chosen(&mut s, [5, 3, 9, 3]);
        s.order.push(TicketId::new(42)); // listed, no longer chosen
        s.disagreed_selected.insert(TicketId::new(9));
        assert_eq!(s.take_sendable(), vec![5, 3]);
        assert!(s.order.is_empty());
        // chosen again later: not sent twice
        chosen(&mut s, [3, 11]);
        assert_eq!(s.take_sendable(), vec![11]);
    }

    #[test]
    fn whole_batches_go_mid_scan_and_the_rest_waits_in_its_order() {
        let mut s = Selection::default();
        chosen(&mut s, 1..=250);
        let first = s.take_whole_batches();
        assert_eq!(first, (1..=200).collect::<Vec<_>>());
        assert_eq!(s.order, (201..=250).collect::<Vec<_>>());
        // the rest was not marked released: the end of the scan sends it
        chosen(&mut s, [300]);
        let rest = s.take_sendable();
        assert_eq!(rest, (201..=250).chain([300]).collect::<Vec<_>>());
        assert!(s.take_whole_batches().is_empty());
    }

    #[test]
    fn past_the_limit_new_selections_are_only_counted() {
        let limit = CycleSettings {
            max_purges_per_run: 2,
            ..settings()
        };
        let mut s = Selection::default();
        chosen(&mut s, [1, 2]);
        assert!(
            !s.counts_only(&limit, TicketId::new(3)),
            "the limit + 1st is still held"
        );
        chosen(&mut s, [3]);
        assert!(s.counts_only(&limit, TicketId::new(4)));
        assert!(
            !s.counts_only(&limit, TicketId::new(2)),
            "a held one stays held"
        );
        s.counted_ids.insert(TicketId::new(1));
        assert!(
            s.counts_only(&limit, TicketId::new(1)),
            "a counted one stays counted"
        );
        let dry = CycleSettings {
            dry_run: true,
            ..settings()
        };
        assert!(
            Selection::default().counts_only(&dry, TicketId::new(1)),
            "a dry run holds none"
        );
    }

    async fn context(policy: Policy, settings: CycleSettings) -> (CycleContext, tempfile::TempDir) {
        // nothing here sends a request
        test_support::context("http://127.0.0.1:9", policy, settings).await
    }

    struct Decided {
        walk: WalkState,
        result: ScanResult,
        not_effective: Vec<(TicketId, LedgerState)>,
    }

    fn decide(
        ctx: &CycleContext,
        pages: &[Vec<Ticket>],
        ledger: &mut HashMap<TicketId, LedgerEntry>,
        in_flight: &IdSet,
    ) -> Decided {
        let mut walk = WalkState::default();
        let mut result = ScanResult::new(Step::Reconcile, String::new(), at(0));
        let mut not_effective = Vec::new();
        for p in pages {
            not_effective.extend(decide_page(
                ctx,
                p,
                at(0),
                &mut walk,
                &mut result,
                ledger,
                in_flight,
            ));
        }
        Decided {
            walk,
            result,
            not_effective,
        }
    }

    #[tokio::test]
    async fn a_page_selects_by_the_rules_and_counts_the_kept_by_reason() {
        let (ctx, _dir) = context(aged_policy(), settings()).await;
        let d = decide(
            &ctx,
            &[vec![
                ticket(TicketId::new(1), Some(-30), "closed"),
                ticket(TicketId::new(2), Some(-30), "open"),
                ticket(TicketId::new(3), Some(-2), "closed"),
                ticket(TicketId::new(4), None, "closed"),
            ]],
            &mut HashMap::new(),
            &IdSet::default(),
        );
        assert_eq!(d.result.scanned, 4);
        assert_eq!(d.result.matched_by_rule.get("old-closed"), Some(&1));
        assert_eq!(d.walk.selection.chosen.keys().collect::<Vec<_>>(), vec![&1]);
        // (an unknown deletion time meets no age condition: kept too)
        assert_eq!(
            d.result.kept.get("keep_no_rule"),
            Some(&3),
            "{:?}",
            d.result.kept
        );
        assert_eq!(d.walk.newest, Some(at(-2)));
        // every first sighting is recorded, the purge as a purge
        assert_eq!(d.walk.unflushed.len(), 4);
        assert_eq!(d.walk.unflushed[0].decision, DecisionKind::Purge);
        assert!(d.walk.touched.is_empty());
    }

    #[tokio::test]
    async fn a_ticket_listed_twice_alike_is_sent_once_and_counted_once() {
        let (ctx, _dir) = context(aged_policy(), settings()).await;
        let t = ticket(TicketId::new(1), Some(-30), "closed");
        let mut d = decide(
            &ctx,
            &[vec![t.clone()], vec![t]],
            &mut HashMap::new(),
            &IdSet::default(),
        );
        assert_eq!(d.result.scanned, 1);
        assert_eq!(d.result.relisted, 1);
        assert_eq!(d.result.matched_by_rule.get("old-closed"), Some(&1));
        assert_eq!(d.walk.selection.take_sendable(), vec![1]);
    }

    #[tokio::test]
    async fn listings_that_disagree_keep_a_ticket_out_of_the_purge() {
        let (ctx, _dir) = context(aged_policy(), settings()).await;
        // deleted again between the two listings (another deletion time)
        let mut d = decide(
            &ctx,
            &[
                vec![
                    ticket(TicketId::new(1), Some(-30), "closed"),
                    ticket(TicketId::new(2), Some(-30), "closed"),
                ],
                vec![
                    ticket(TicketId::new(1), Some(-29), "closed"),
                    ticket(TicketId::new(2), Some(-30), "open"),
                ],
            ],
            &mut HashMap::new(),
            &IdSet::default(),
        );
        assert!(
            d.walk
                .selection
                .disagreed_selected
                .contains(&TicketId::new(1))
        );
        assert!(
            d.walk
                .selection
                .disagreed_selected
                .contains(&TicketId::new(2))
        );
        assert!(d.walk.selection.take_sendable().is_empty());
        assert_eq!(d.result.matched_by_rule.get("old-closed"), Some(&0));
        // ticket 2 is kept by its latest listing, and counted as kept once
        assert_eq!(d.result.kept.get("keep_no_rule"), Some(&1));
    }

    #[tokio::test]
    async fn a_dry_run_holds_nothing_and_counts_each_selected_ticket_once() {
        let dry = CycleSettings {
            dry_run: true,
            ..settings()
        };
        let (ctx, _dir) = context(aged_policy(), dry).await;
        let t = ticket(TicketId::new(1), Some(-30), "closed");
        let d = decide(
            &ctx,
            &[
                vec![t.clone(), ticket(TicketId::new(2), Some(-30), "closed")],
                vec![t],
            ],
            &mut HashMap::new(),
            &IdSet::default(),
        );
        assert!(d.walk.selection.chosen.is_empty());
        assert_eq!(d.walk.selection.counted_only, 2);
        assert_eq!(d.result.matched_by_rule.get("old-closed"), Some(&2));
        assert_eq!(d.walk.unflushed[0].decision, DecisionKind::WouldPurge);
    }

    #[tokio::test]
    async fn a_live_run_holds_at_most_one_past_its_limit_and_counts_the_rest() {
        let limited = CycleSettings {
            max_purges_per_run: 2,
            ..settings()
        };
        let (ctx, _dir) = context(aged_policy(), limited).await;
        let tickets: Vec<Ticket> = (1..=6)
            .map(|id| ticket(TicketId::new(id), Some(-30), "closed"))
            .collect();
        let d = decide(
            &ctx,
            &[tickets.clone(), tickets],
            &mut HashMap::new(),
            &IdSet::default(),
        );
        assert_eq!(d.walk.selection.chosen.len(), 3, "max_purges_per_run + 1");
        assert_eq!(d.walk.selection.counted_only, 3);
        assert_eq!(d.result.matched_by_rule.get("old-closed"), Some(&6));
        assert!(d.walk.selection.disagreed_selected.is_empty());
    }

    fn entry_of_listing(
        t: &Ticket,
        decision: &str,
        rule: Option<&str>,
        state: LedgerState,
    ) -> LedgerEntry {
        LedgerEntry {
            ticket_id: t.id,
            deleted_at: t.deleted_at,
            actor_id: t.actor.as_ref().and_then(|a| a.id),
            actor_name: t.actor.as_ref().and_then(|a| a.name.clone()),
            previous_state: t.previous_state.clone(),
            subject: None,
            subject_tags: None,
            decision: Some(crate::audit::DecisionKind::parse(decision).unwrap()),
            rule: rule.map(str::to_string),
            config_hash: None,
            state,
            last_seen: None,
            requested_at: None,
        }
    }

    #[tokio::test]
    async fn the_ledger_records_changes_only_and_names_purges_listed_again() {
        let (ctx, _dir) = context(aged_policy(), settings()).await;
        let same = ticket(TicketId::new(1), Some(-30), "open");
        let moved = ticket(TicketId::new(2), Some(-30), "closed");
        let back = ticket(TicketId::new(3), Some(-30), "closed");
        let mut ledger: HashMap<TicketId, LedgerEntry> = [
            (
                TicketId::new(1),
                entry_of_listing(&same, "keep_no_rule", None, LedgerState::Kept),
            ),
            // kept before (too young then), selected now
            (
                TicketId::new(2),
                entry_of_listing(
                    &moved,
                    "keep_too_young",
                    Some("old-closed"),
                    LedgerState::Kept,
                ),
            ),
            // its job said purged, and it is listed again
            (
                TicketId::new(3),
                entry_of_listing(&back, "purge", Some("old-closed"), LedgerState::Purged),
            ),
        ]
        .into();
        let d = decide(
            &ctx,
            &[vec![same, moved, back]],
            &mut ledger,
            &IdSet::default(),
        );
        assert_eq!(
            d.walk
                .touched
                .iter()
                .map(|s| s.ticket_id)
                .collect::<Vec<_>>(),
            vec![1],
            "unchanged: only seen again"
        );
        let recorded: Vec<TicketId> = d.walk.unflushed.iter().map(|r| r.ticket_id).collect();
        assert_eq!(recorded, vec![2, 3]);
        assert_eq!(
            d.not_effective,
            vec![(TicketId::new(3), LedgerState::Purged)]
        );
        assert!(
            ledger.is_empty(),
            "each row compared is taken out of the map"
        );
    }

    #[tokio::test]
    async fn a_ticket_in_an_earlier_processs_job_is_followed_not_sent_again() {
        let (ctx, _dir) = context(aged_policy(), settings()).await;
        let in_flight: IdSet = [TicketId::new(1)].into_iter().collect();
        let d = decide(
            &ctx,
            &[vec![
                ticket(TicketId::new(1), Some(-30), "closed"),
                ticket(TicketId::new(2), Some(-30), "closed"),
            ]],
            &mut HashMap::new(),
            &in_flight,
        );
        assert_eq!(d.result.in_flight, 1);
        assert!(!d.walk.selection.chosen.contains_key(&TicketId::new(1)));
        assert!(d.walk.selection.chosen.contains_key(&TicketId::new(2)));
        assert_eq!(d.result.matched_by_rule.get("old-closed"), Some(&1));
    }

    #[tokio::test]
    async fn an_id_beyond_the_stores_range_is_kept_and_never_recorded() {
        let (ctx, _dir) = context(aged_policy(), settings()).await;
        let wide = crate::audit::MAX_TICKET_ID.get() + 1;
        let d = decide(
            &ctx,
            &[vec![ticket(TicketId::new(wide), Some(-30), "closed")]],
            &mut HashMap::new(),
            &IdSet::default(),
        );
        assert_eq!(d.result.scanned, 0);
        assert_eq!(d.result.kept.get("keep_id_out_of_range"), Some(&1));
        assert!(d.walk.unflushed.is_empty() && d.walk.selection.chosen.is_empty());
    }
}

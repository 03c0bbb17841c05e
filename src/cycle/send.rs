//! The purge requests of one group, in rounds. Each round takes the
//! account tokens of its requests first; then, under the listing gate, a
//! freshness read; the requests are recorded and sent together the moment it
//! is answered, with nothing awaited in between but their one commit (no
//! rate-limit wait, no lock, no other request); then, still under the gate, a
//! read right after them brackets the sends. A ticket that read shows deleted
//! again is in doubt: Zendesk purges whichever deletion a ticket has when its
//! job runs, so its purge is not claimed for the rule that selected the
//! earlier one. A round that cannot send (a 429, a lost answer, Zendesk's
//! hold-off) hands its batches to the next round, which reads again: no read
//! vouches for a request that waited.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::context::IdSet;
use super::worker::{MAX_RATE_LIMITED_ROUNDS, OpenJob, Pending, PurgeWorker};
use crate::audit::{DecisionRecord, IN_DOUBT_DETAIL, JobRowId, JobRowStatus, Outcome};
use crate::cycle::{ListedAs, Release, decision_record};
use crate::ticket::Ticket;
use crate::zendesk::{IdBatch, JobStatus, TicketId, ZendeskError};

/// Why a request did not leave at shutdown.
const STOPPING: &str = "the daemon was stopping";

/// What a freshness read made of a round's requests: those it cleared
/// whole (with their rows), those it narrowed, and the rows withdrawn.
type Split = (
    Vec<(Pending, IdBatch, JobRowId)>,
    Vec<(Pending, IdBatch)>,
    Vec<JobRowId>,
);

/// What a round leaves for the next one, and how long to wait before it.
#[derive(Default)]
pub(super) struct Again {
    pub(super) pending: Vec<Pending>,
    pub(super) wait: Duration,
}

impl Again {
    fn push(&mut self, pending: Pending, wait: Duration) {
        self.pending.push(pending);
        self.wait = self.wait.max(wait);
    }
}

/// A read of the newest deletions: each ticket deleted since `since`, as
/// listed when it was answered.
pub(super) struct Read {
    pub(super) started: DateTime<Utc>,
    pub(super) answered: Instant,
    pub(super) answered_utc: DateTime<Utc>,
    pub(super) tickets: HashMap<TicketId, Ticket>,
}

/// A request that left, with its answer.
pub(super) struct Sent {
    pending: Pending,
    batch: IdBatch,
    row: JobRowId,
    /// When it was handed to the connection (`None`: it never was).
    sent_at: Option<Instant>,
    answer: Result<JobStatus, ZendeskError>,
    /// When the round's answers were all in.
    answered_at: DateTime<Utc>,
}

/// Tickets a freshness read kept out of a round, recorded after its sends.
#[derive(Default)]
struct Withheld {
    /// Restored since their listing (found among active tickets).
    restored: Vec<TicketId>,
    /// Deleted again since their listing: decided again, not sent.
    changed: Vec<TicketId>,
    records: Vec<DecisionRecord>,
}

/// Why a read's ticket casts doubt on a purge sent for an earlier deletion.
fn doubt_detail(t: &Ticket) -> String {
    format!(
        "{IN_DOUBT_DETAIL}: a read after the request showed a deletion at {}{}; Zendesk purges whichever deletion a ticket has when the job runs, so this purge is not claimed for the rule that selected the earlier deletion",
        t.deleted_at
            .map_or_else(|| "an unknown time".to_string(), crate::audit::timestamp),
        t.actor
            .as_ref()
            .and_then(|a| a.id)
            .map(|id| format!(" by actor {id}"))
            .unwrap_or_default(),
    )
}

impl PurgeWorker {
    /// A release made ready for a round, while earlier rounds' jobs run:
    /// looked up among active tickets (restored since its listing: not
    /// soft-deleted now; a restore after the lookup is caught by the
    /// freshness read if the ticket is deleted again, and otherwise is not
    /// purged by Zendesk, whose job then reports a partial success), and its
    /// request's account token taken.
    pub(super) async fn prepare(&mut self, release: Release) -> Pending {
        let cancel = self.cancel.clone();
        let client = self.client.clone();
        // a stop ends the waits (the worker then records it not sent)
        let (active, reserved) = tokio::select! {
            prepared = async {
                let active: IdSet = if release.check_freshness {
                    match client.active_tickets(&release.batch).await {
                        Ok(a) => a.into_iter().collect(),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot look up restored tickets before purging; the freshness read still applies");
                            IdSet::default()
                        }
                    }
                } else {
                    IdSet::default()
                };
                client.reserve_writes(1).await;
                (active, true)
            } => prepared,
            _ = cancel.cancelled() => (IdSet::default(), false),
        };
        Pending {
            release,
            active,
            lost: 0,
            limited: 0,
            reserved,
        }
    }

    /// Sends a group of prepared releases (as many as there are free job
    /// slots) in rounds until each is sent or given up.
    pub(super) async fn send_group(&mut self, mut pending: Vec<Pending>) -> anyhow::Result<()> {
        while !pending.is_empty() {
            let again = self.send_round(pending).await?;
            if !again.pending.is_empty() && !again.wait.is_zero() {
                tracing::warn!(
                    batches = again.pending.len(),
                    wait = %crate::human::duration(again.wait),
                    "purge requests held back: waiting, then reading the newest deletions again"
                );
                tokio::select! {
                    _ = tokio::time::sleep(again.wait) => {}
                    _ = self.cancel.cancelled() => {}
                }
            }
            if self.cancel.is_cancelled() {
                // no new request once the daemon is stopping
                for p in again.pending {
                    self.not_sent(&p.release.batch, "the daemon was stopping")
                        .await;
                }
                return Ok(());
            }
            pending = again.pending;
        }
        Ok(())
    }

    /// One round: tokens; then under the gate the requests recorded, the
    /// freshness read, the requests it cleared whole sent at once (those it
    /// narrowed recorded anew and sent right after), and the read after
    /// them.
    async fn send_round(&mut self, mut pending: Vec<Pending>) -> anyhow::Result<Again> {
        let Some(turn) = self.take_turn(&mut pending).await else {
            return Ok(Again::default());
        };
        // Write-ahead, before the read: so that only the sends follow it.
        let full: Vec<IdBatch> = pending.iter().map(|p| p.release.batch.clone()).collect();
        let intents = match self
            .store
            .record_requests(self.run, &full, (Utc::now(), &[]))
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                drop(turn);
                for batch in &full {
                    self.not_sent(batch, "the request could not be recorded before sending it")
                        .await;
                }
                return Err(e);
            }
        };
        let read = match self.round_read(&pending, &intents).await {
            Ok(read) => read,
            Err(ended) => return ended,
        };
        let now = Utc::now();
        let mut withheld = Withheld::default();
        let mut exact = Vec::new();
        let mut narrowed = Vec::new();
        let mut withdrawn = Vec::new();
        for (p, row) in pending.into_iter().zip(intents) {
            match self.clear(&p, read.as_ref(), now, &mut withheld) {
                Some(batch) if batch == p.release.batch => exact.push((p, batch, row)),
                Some(batch) => {
                    withdrawn.push(row);
                    narrowed.push((p, batch));
                }
                None => withdrawn.push(row),
            }
        }
        if let Some(wait) = self
            .client
            .write_hold()
            .filter(|_| !exact.is_empty() || !narrowed.is_empty())
        {
            drop(turn);
            return self
                .pause_round(wait, (exact, narrowed, withdrawn), withheld, now)
                .await;
        }
        if self.cancel.is_cancelled() {
            // the daemon began stopping during the read: nothing leaves
            drop(turn);
            return self
                .stop_round((exact, narrowed, withdrawn), withheld, now)
                .await;
        }
        let (sent, failed) = self.send_now(exact, narrowed, &withdrawn).await;
        let windows = self.windows_of(&sent, read.as_ref());
        let latencies = latencies_of(&sent);
        let jobs_made = sent.iter().any(|s| s.answer.is_ok());
        // each answer written as soon as it is in (the job ids first)
        let (again, fatal) = self.answers_of(sent).await;
        // the read after the sends, while their jobs are queued
        let bracket = match &read {
            Some(r) if jobs_made => self.bracket_read(r).await,
            _ => None,
        };
        drop(turn);
        let mut errors: Vec<anyhow::Error> = failed.into_iter().chain(fatal).collect();
        if let Err(e) = self.store.record_latencies(&latencies).await {
            errors.push(e);
        }
        self.after_round((read, bracket), windows, withheld, now, (again, errors))
            .await
    }

    /// The round's tokens, then the listing gate; `None` when a stop came
    /// first (its releases are then recorded not sent).
    async fn take_turn(
        &mut self,
        pending: &mut Vec<Pending>,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let unpaid = pending.iter().filter(|p| !p.reserved).count();
        let (client, gate, cancel) = (
            self.client.clone(),
            self.gate.turn.clone(),
            self.cancel.clone(),
        );
        // the tokens and the gate may be long to come: a stop ends the wait
        let turn = tokio::select! {
            turn = async {
                client.reserve_writes(unpaid).await;
                gate.lock_owned().await
            } => Some(turn),
            _ = cancel.cancelled() => None,
        };
        match turn {
            Some(turn) => {
                for p in pending.iter_mut() {
                    // spent by this round, whatever becomes of its request
                    p.reserved = false;
                }
                Some(turn)
            }
            None => {
                for p in pending.drain(..) {
                    self.not_sent(&p.release.batch, STOPPING).await;
                }
                None
            }
        }
    }

    /// The round's freshness read (none when no release was listed). `Err`
    /// ends the round: the read failed or a stop came during it, the
    /// requests recorded for it are withdrawn and its releases not sent.
    async fn round_read(
        &mut self,
        pending: &[Pending],
        intents: &[JobRowId],
    ) -> Result<Option<Read>, anyhow::Result<Again>> {
        let Some(since) = pending
            .iter()
            .filter(|p| p.release.check_freshness)
            .map(|p| p.release.listed_at)
            .min()
            .map(|at| {
                at - chrono::Duration::from_std(self.settings.clock_skew).unwrap_or_default()
            })
        else {
            return Ok(None);
        };
        let cancel = self.cancel.clone();
        let why = match tokio::select! {
            read = self.read_since(since) => read,
            _ = cancel.cancelled() => Err(STOPPING.to_string()),
        } {
            Ok(read) => {
                // evidence for the jobs of earlier rounds still open
                self.mark_in_doubt(&read);
                return Ok(Some(read));
            }
            Err(_) if cancel.is_cancelled() => STOPPING.to_string(),
            Err(why) => {
                let message = format!("the freshness read before purging failed ({why}): not sent");
                tracing::error!("{message}");
                self.tally.freshness_failed = Some(message);
                "the freshness read before purging failed".to_string()
            }
        };
        let withdrawn = self.withdraw(intents, &format!("{why}: not sent")).await;
        for p in pending {
            self.not_sent(&p.release.batch, &why).await;
        }
        Err(withdrawn.map(|()| Again::default()))
    }

    /// A stop came during the round's read: nothing leaves.
    async fn stop_round(
        &mut self,
        split: Split,
        withheld: Withheld,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Again> {
        let (recorded, batches) = self
            .withdraw_round(split, withheld, now, "the daemon was stopping: not sent")
            .await;
        for (_, batch) in batches {
            self.not_sent(&batch, STOPPING).await;
        }
        recorded.map(|()| Again::default())
    }

    /// Withdraws every request of a round that sends nothing and records
    /// what its read held back; gives back the batches it cleared.
    async fn withdraw_round(
        &mut self,
        (exact, narrowed, mut withdrawn): Split,
        withheld: Withheld,
        now: DateTime<Utc>,
        why: &str,
    ) -> (anyhow::Result<()>, Vec<(Pending, IdBatch)>) {
        withdrawn.extend(exact.iter().map(|(_, _, row)| *row));
        let recorded = self
            .withdraw(&withdrawn, why)
            .await
            .and(self.record_withheld(withheld, now).await);
        let batches = exact
            .into_iter()
            .map(|(p, b, _)| (p, b))
            .chain(narrowed)
            .collect();
        (recorded, batches)
    }

    /// What follows a round's sends: the in-doubt marks of the read after
    /// them, the windows, what the read held back, the jobs already ended;
    /// every error kept, the first returned (the batches due again are then
    /// recorded not sent).
    async fn after_round(
        &mut self,
        (read, bracket): (Option<Read>, Option<Read>),
        windows: Vec<(JobRowId, Option<Duration>)>,
        withheld: Withheld,
        now: DateTime<Utc>,
        (mut again, mut errors): (Again, Vec<anyhow::Error>),
    ) -> anyhow::Result<Again> {
        if let Some(b) = &bracket {
            self.mark_in_doubt(b);
        }
        if let Some(r) = &read {
            let at = (r.answered_utc, bracket.as_ref().map(|b| b.answered_utc));
            if let Err(e) = self.store.record_send_windows(self.run, at, &windows).await {
                errors.push(e);
            }
        }
        if let Err(e) = self.record_withheld(withheld, now).await {
            errors.push(e);
        }
        if let Err(e) = self.finish_answered().await {
            errors.push(e);
        }
        match errors.into_iter().next() {
            Some(e) => {
                for p in again.pending.drain(..) {
                    self.not_sent(&p.release.batch, "purging stopped after an error")
                        .await;
                }
                Err(e)
            }
            None => Ok(again),
        }
    }

    /// Each sent request's window: from the read's answer to its hand-over
    /// to the connection (measured only after a read).
    fn windows_of(
        &mut self,
        sent: &[Sent],
        read: Option<&Read>,
    ) -> Vec<(JobRowId, Option<Duration>)> {
        let windows: Vec<(JobRowId, Option<Duration>)> = sent
            .iter()
            .map(|s| {
                let window = match (read, s.sent_at) {
                    (Some(r), Some(at)) => Some(at.saturating_duration_since(r.answered)),
                    _ => None,
                };
                (s.row, window)
            })
            .collect();
        for (_, window) in &windows {
            if let Some(w) = window {
                metrics::histogram!("zd_retention_freshness_window_seconds")
                    .record(w.as_secs_f64());
                self.tally.max_send_window =
                    Some(self.tally.max_send_window.map_or(*w, |m| m.max(*w)));
            }
        }
        windows
    }

    /// Zendesk asked for a pause (the read's answer said the budget is
    /// spent): nothing leaves on this read; the batches go to the next round
    /// after the wait (a pause counts as a 429).
    async fn pause_round(
        &mut self,
        wait: Duration,
        split: Split,
        withheld: Withheld,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Again> {
        let why = "Zendesk asked for a pause: sent again after it, under a new row and a new freshness read";
        let (recorded, batches) = self.withdraw_round(split, withheld, now, why).await;
        let mut again = Again::default();
        for (mut p, batch) in batches {
            p.limited += 1;
            if recorded.is_err() || p.limited > MAX_RATE_LIMITED_ROUNDS {
                self.not_sent(&batch, "Zendesk kept asking for a pause before this purge")
                    .await;
            } else {
                again.push(p.narrowed(batch), wait);
            }
        }
        recorded.map(|()| again)
    }

    /// Ends requests recorded before their read that were never sent.
    async fn withdraw(&mut self, rows: &[JobRowId], why: &str) -> anyhow::Result<()> {
        for row in rows {
            self.store
                .record_job_end(
                    self.run,
                    *row,
                    JobRowStatus::Withdrawn,
                    Some(why),
                    Outcome::NotSent,
                    &[],
                )
                .await?;
        }
        Ok(())
    }

    /// Sends the requests the read cleared whole at once, then withdraws
    /// the others and records and sends what it cleared of them, in one
    /// commit. An error is that of recording them (they were then not
    /// sent).
    async fn send_now(
        &mut self,
        exact: Vec<(Pending, IdBatch, JobRowId)>,
        narrowed: Vec<(Pending, IdBatch)>,
        withdrawn: &[JobRowId],
    ) -> (Vec<Sent>, Option<anyhow::Error>) {
        let client = self.client.clone();
        let store = self.store.clone();
        let run = self.run;
        // on a PostgreSQL audit, only the holder of the lead writes to
        // Zendesk: a request recorded and not sent is left for the next
        // holder to settle, as after a crash
        if let Err(e) = store.confirm_lead().await {
            return (Vec::new(), Some(e));
        }
        let first =
            futures::future::join_all(exact.iter().map(|(_, b, _)| client.destroy_many_now(b)));
        let narrowed_batches: Vec<IdBatch> = narrowed.iter().map(|(_, b)| b.clone()).collect();
        let second = async {
            if narrowed_batches.is_empty() && withdrawn.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            // the requests the read did not clear whole are withdrawn in the
            // commit that records what it cleared of them
            let rows = store
                .record_requests(run, &narrowed_batches, (Utc::now(), withdrawn))
                .await?;
            store.confirm_lead().await?;
            let answers = futures::future::join_all(
                narrowed_batches.iter().map(|b| client.destroy_many_now(b)),
            )
            .await;
            anyhow::Ok((rows, answers))
        };
        let (first, second) = futures::join!(first, second);
        let answered_at = Utc::now();
        let mut sent: Vec<Sent> = exact
            .into_iter()
            .zip(first)
            .map(|((pending, batch, row), (sent_at, answer))| Sent {
                pending,
                batch,
                row,
                sent_at,
                answer,
                answered_at,
            })
            .collect();
        let failed = match second {
            Ok((rows, answers)) => {
                sent.extend(narrowed.into_iter().zip(rows).zip(answers).map(
                    |(((pending, batch), row), (sent_at, answer))| Sent {
                        pending,
                        batch,
                        row,
                        sent_at,
                        answer,
                        answered_at,
                    },
                ));
                None
            }
            Err(e) => {
                for (_, batch) in &narrowed {
                    self.not_sent(batch, "the request could not be recorded before sending it")
                        .await;
                }
                Some(e)
            }
        };
        (sent, failed)
    }

    /// What each request's answer means, and what goes to the next round.
    async fn answers_of(&mut self, sent: Vec<Sent>) -> (Again, Option<anyhow::Error>) {
        let retry = self.client.retry_policy();
        let mut again = Again::default();
        let mut fatal = None;
        for Sent {
            pending: mut p,
            batch,
            row,
            answer,
            answered_at,
            ..
        } in sent
        {
            if p.lost == 0 && p.limited == 0 {
                self.tally.batches += 1;
            }
            let age = (Utc::now() - p.release.listed_at)
                .to_std()
                .unwrap_or_default();
            self.tally.max_listing_age =
                Some(self.tally.max_listing_age.map_or(age, |m| m.max(age)));
            let sent_as: Vec<Option<ListedAs>> = if p.release.check_freshness {
                p.release.listed.clone()
            } else {
                Vec::new()
            };
            match answer {
                Err(e @ ZendeskError::RateLimited { wait, .. }) => {
                    // not carried out: read again after the wait, then send
                    if let Err(e) = self
                        .store
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
                        .await
                    {
                        fatal.get_or_insert(e);
                    }
                    p.limited += 1;
                    if p.limited > MAX_RATE_LIMITED_ROUNDS {
                        let why = "Zendesk kept answering 429 (rate limited) to this purge";
                        tracing::error!(ids = batch.len(), "{why}; not sent");
                        self.not_sent(&batch, why).await;
                    } else {
                        again.push(p.narrowed(batch), wait);
                    }
                }
                Err(e @ (ZendeskError::Transient { .. } | ZendeskError::Decode { .. }))
                    if (p.lost as usize) < retry.max_retries =>
                {
                    // the answer was lost: this attempt ends unknown, and the
                    // next is a new row after a new freshness read
                    let message = format!(
                        "{e}; the answer was lost and the request may have been carried out (a job whose id is unknown); sent again as attempt {} after a new freshness read",
                        p.lost + 2
                    );
                    tracing::warn!(error = %e, "purge answer lost; sending again as a new recorded attempt");
                    if let Err(e) = self
                        .store
                        .record_job_end(
                            self.run,
                            row,
                            JobRowStatus::Unknown,
                            Some(&message),
                            Outcome::Unknown,
                            batch.ids(),
                        )
                        .await
                    {
                        fatal.get_or_insert(e);
                    }
                    p.lost += 1;
                    let wait = retry
                        .min_delay
                        .saturating_mul(1 << p.lost.min(16))
                        .min(retry.max_delay);
                    again.push(p.narrowed(batch), wait);
                }
                answer => {
                    if let Err(e) = self
                        .settle_answer(&batch, row, answer, sent_as, answered_at)
                        .await
                    {
                        fatal.get_or_insert(e);
                    }
                }
            }
        }
        (again, fatal)
    }

    /// The ids of a release that the freshness read clears: a ticket found
    /// among active ones (restored) is left out, one the read shows deleted
    /// again since its listing is decided again on its new deletion and not
    /// sent. `None` when none is left.
    fn clear(
        &mut self,
        p: &Pending,
        read: Option<&Read>,
        now: DateTime<Utc>,
        withheld: &mut Withheld,
    ) -> Option<IdBatch> {
        if !p.release.check_freshness {
            return Some(p.release.batch.clone());
        }
        let mut ids = Vec::with_capacity(p.release.batch.len());
        for (id, listed) in p.release.batch.ids().iter().zip(&p.release.listed) {
            if p.active.contains(id) {
                withheld.restored.push(*id);
                continue;
            }
            let again = read
                .and_then(|r| r.tickets.get(id))
                .filter(|t| listed.as_ref() != Some(&ListedAs::of(t)));
            match again {
                Some(t) => {
                    tracing::warn!(
                        ticket = t.id.get(),
                        "deleted again since its listing: decided on its new deletion, not purged in this run"
                    );
                    let decision = self.policy.decide(t, now);
                    withheld
                        .records
                        .push(decision_record(t, &decision, &self.settings, now));
                    withheld.changed.push(*id);
                }
                None => ids.push(*id),
            }
        }
        IdBatch::new(ids).ok()
    }

    /// Records what the freshness read kept out of a round.
    async fn record_withheld(&mut self, w: Withheld, now: DateTime<Utc>) -> anyhow::Result<()> {
        if !w.restored.is_empty() {
            tracing::warn!(
                tickets = w.restored.len(),
                "restored since their listing: not purged"
            );
            self.held_back(&w.restored, "restored since its listing (found among active tickets just before purging): not purged", now)
                .await?;
        }
        if !w.changed.is_empty() {
            self.store.record_decisions(self.run, &w.records).await?;
            self.held_back(&w.changed, "deleted again since its listing (the freshness read just before purging showed it with other deletion data): decided on its new deletion, not purged in this run", now)
                .await?;
        }
        Ok(())
    }

    /// Tickets a freshness read kept out: `not_sent`, and counted changed.
    async fn held_back(
        &mut self,
        tickets: &[TicketId],
        why: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.store
            .record_outcomes(self.run, None, tickets, Outcome::NotSent, Some(why), now)
            .await?;
        self.tally.changed += tickets.len() as u64;
        self.tally.not_sent += tickets.len() as u64;
        Ok(())
    }

    /// A freshness read: every ticket deleted since `since`, complete, or
    /// why not.
    async fn read_since(&mut self, since: DateTime<Utc>) -> Result<Read, String> {
        let started = Utc::now();
        let proven = self
            .gate
            .cursor_proven
            .load(std::sync::atomic::Ordering::Relaxed);
        let before = self.client.stats().sent("list");
        let read = crate::listing::deleted_since(&self.client, since, proven).await;
        self.tally.freshness_requests += self.client.stats().sent("list") - before;
        let answered = Instant::now();
        match read {
            Ok(r) if r.complete => Ok(Read {
                started,
                answered,
                answered_utc: Utc::now(),
                tickets: r.tickets.into_iter().map(|t| (t.id, t)).collect(),
            }),
            Ok(r) => Err(format!(
                "more than {} pages were deleted since {} (read back to {})",
                crate::listing::FRESHNESS_MAX_PAGES,
                crate::audit::timestamp(since),
                crate::audit::timestamp(r.covered_from)
            )),
            Err(why) => Err(why),
        }
    }

    /// The read right after a round's sends, back to the start of the read
    /// that cleared them (on Zendesk's clock when its `Date` header told,
    /// less a second of its grain): a ticket deleted again since shows with
    /// its new deletion. `None` when it failed (its tickets' purges then rest
    /// on the job's answer, and the certificate states the window).
    async fn bracket_read(&mut self, cleared_by: &Read) -> Option<Read> {
        let since = match self.client.clock_offset() {
            Some(offset) => cleared_by.started + offset - chrono::Duration::seconds(2),
            None => {
                cleared_by.started
                    - chrono::Duration::from_std(self.settings.clock_skew).unwrap_or_default()
            }
        };
        match self.read_since(since).await {
            Ok(read) => Some(read),
            Err(why) => {
                tracing::warn!(%why, "the read after the purge requests failed: which deletion Zendesk purges rests on the job's answer");
                None
            }
        }
    }

    /// Jobs an earlier process sent and this run follows: one read of the
    /// newest deletions back to the earliest of their requests, before any
    /// of them is seen to end, marks their tickets deleted again since.
    pub(super) async fn read_for_recovered(&mut self) {
        let Ok(Some(since)) = self.store.earliest_open_request().await.map(|at| {
            at.map(|at| {
                at - chrono::Duration::from_std(self.settings.clock_skew).unwrap_or_default()
            })
        }) else {
            return;
        };
        if self
            .open
            .iter()
            .all(|j| j.sent_as.iter().all(Option::is_none))
        {
            return;
        }
        let gate = self.gate.clone();
        let _turn = gate.turn.lock().await;
        match self.read_since(since).await {
            Ok(read) => self.mark_in_doubt(&read),
            Err(why) => {
                tracing::warn!(%why, "cannot read the newest deletions for the jobs an earlier process left open: their outcomes rest on the jobs' answers");
            }
        }
    }

    /// Marks the tickets of open jobs that a read shows deleted again since
    /// they were sent: in doubt.
    pub(super) fn mark_in_doubt(&mut self, read: &Read) {
        for job in &mut self.open {
            for (id, sent) in job.tickets.iter().zip(&job.sent_as) {
                let Some(sent) = sent else { continue };
                if job.in_doubt.iter().any(|(t, _)| t == id) {
                    continue;
                }
                if let Some(t) = read.tickets.get(id)
                    && ListedAs::of(t) != *sent
                {
                    tracing::warn!(
                        ticket = id.get(),
                        job = %job.id,
                        "deleted again after its purge request left: recorded in doubt, not as purged by its rule"
                    );
                    job.in_doubt.push((*id, doubt_detail(t)));
                }
            }
        }
    }

    /// Finishes the jobs whose answer was already terminal, once the read
    /// after the sends has marked their doubtful tickets.
    async fn finish_answered(&mut self) -> anyhow::Result<()> {
        let (done, open): (Vec<OpenJob>, Vec<OpenJob>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|j| j.answered.is_some());
        self.open = open;
        for mut job in done {
            if let Some(status) = job.answered.take() {
                self.finish(job, &status).await?;
            }
        }
        Ok(())
    }
}

/// Each accepted request's purge latency: from each of its tickets becoming
/// purgeable to the request leaving (the histogram, and the rows to record).
fn latencies_of(sent: &[Sent]) -> Vec<crate::audit::RequestLatency> {
    let mut out = Vec::new();
    for s in sent {
        let (Some(at), Ok(_)) = (s.sent_at, &s.answer) else {
            continue;
        };
        let left = Utc::now() - chrono::Duration::from_std(at.elapsed()).unwrap_or_default();
        let release = &s.pending.release;
        let tickets: Vec<(TicketId, DateTime<Utc>)> = release
            .batch
            .ids()
            .iter()
            .zip(&release.purgeable)
            .filter(|(id, _)| s.batch.ids().contains(id))
            .filter_map(|(id, p)| p.map(|p| (*id, p)))
            .collect();
        for (_, purgeable) in &tickets {
            let seconds = (left - *purgeable).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("zd_retention_purge_latency_seconds").record(seconds);
        }
        out.push((s.row, left, tickets));
    }
    out
}

/// The rounds' bookkeeping: a release narrowed to what was sent, the wait
/// before the next round, the doubt's words, each request's window and
/// latency.
#[cfg(test)]
mod round_tests {
    use super::*;
    use crate::cycle::handover::ListingGate;
    use crate::cycle::{context::test_support, worker::Tally};
    use crate::ids::RunId;
    use crate::rules::Policy;
    use crate::ticket::Actor;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn listed(minutes: i64) -> ListedAs {
        ListedAs {
            deleted_at: Some(at(minutes)),
            actor_id: Some(minutes as u64),
            previous_state: None,
        }
    }

    fn pending(ids: &[TicketId]) -> Pending {
        Pending {
            release: Release {
                batch: IdBatch::new(ids.to_vec()).unwrap(),
                listed: ids
                    .iter()
                    .map(|id| Some(listed(i64::try_from(id.get()).unwrap())))
                    .collect(),
                listed_at: at(0),
                purgeable: ids
                    .iter()
                    .map(|id| Some(at(100 + i64::try_from(id.get()).unwrap())))
                    .collect(),
                check_freshness: true,
            },
            active: IdSet::default(),
            lost: 2,
            limited: 1,
            reserved: true,
        }
    }

    #[test]
    fn a_narrowed_release_keeps_each_tickets_listing_and_purgeable_time() {
        let narrowed = pending(&[
            TicketId::new(1),
            TicketId::new(2),
            TicketId::new(3),
            TicketId::new(4),
        ])
        .narrowed(IdBatch::new(vec![TicketId::new(4), TicketId::new(2)]).unwrap());
        assert_eq!(narrowed.release.batch.ids(), &[4, 2]);
        assert_eq!(
            narrowed.release.listed,
            vec![Some(listed(4)), Some(listed(2))]
        );
        assert_eq!(
            narrowed.release.purgeable,
            vec![Some(at(104)), Some(at(102))]
        );
        assert_eq!(narrowed.release.listed_at, at(0));
        assert!(narrowed.release.check_freshness);
        // its rounds so far go with it
        assert_eq!(
            (narrowed.lost, narrowed.limited, narrowed.reserved),
            (2, 1, true)
        );
    }

    #[test]
    fn the_next_round_waits_for_the_longest_wait_asked() {
        let mut again = Again::default();
        assert_eq!(again.wait, Duration::ZERO);
        again.push(pending(&[TicketId::new(1)]), Duration::from_secs(3));
        again.push(pending(&[TicketId::new(2)]), Duration::from_secs(10));
        again.push(pending(&[TicketId::new(3)]), Duration::from_secs(1));
        assert_eq!(again.wait, Duration::from_secs(10));
        assert_eq!(again.pending.len(), 3);
    }

    #[test]
    fn the_doubt_names_the_new_deletion_and_its_actor() {
        let t = Ticket {
            id: TicketId::new(5),
            subject: Some("secret subject".into()),
            actor: Some(Actor {
                id: Some(42),
                name: Some("Bob".into()),
            }),
            deleted_at: Some(at(0)),
            previous_state: None,
        };
        let detail = doubt_detail(&t);
        assert!(
            detail.starts_with(crate::audit::IN_DOUBT_DETAIL),
            "{detail}"
        );
        assert!(detail.contains(&crate::audit::timestamp(at(0))), "{detail}");
        assert!(detail.contains("by actor 42"), "{detail}");
        assert!(!detail.contains("secret subject") && !detail.contains("Bob"));
        let unknown = Ticket {
            actor: None,
            deleted_at: None,
            ..t
        };
        let detail = doubt_detail(&unknown);
        assert!(detail.contains("an unknown time") && !detail.contains("by actor"));
    }

    fn sent(ids: &[TicketId], row: JobRowId, sent_at: Option<Instant>, ok: bool) -> Sent {
        let p = pending(ids);
        let answer = if ok {
            Ok(serde_json::from_value(serde_json::json!({"id": "J", "status": "queued"})).unwrap())
        } else {
            Err(ZendeskError::Transient {
                call: "DELETE deleted_tickets/destroy_many".into(),
                reason: "reset".into(),
                attempts: 1,
            })
        };
        Sent {
            batch: p.release.batch.clone(),
            pending: p,
            row,
            sent_at,
            answer,
            answered_at: at(0),
        }
    }

    #[tokio::test]
    async fn a_window_runs_from_the_reads_answer_to_the_requests_hand_over() {
        let (ctx, _dir) = test_support::context(
            "http://127.0.0.1:9",
            Policy::default(),
            test_support::settings(),
        )
        .await;
        // the store is open: from here on the clock only moves when told
        tokio::time::pause();
        let mut w = PurgeWorker::new(
            &ctx,
            RunId::new(1),
            ListingGate::default(),
            Vec::new(),
            Tally::default(),
        );
        let read = Read {
            started: at(0),
            answered: Instant::now(),
            answered_utc: at(0),
            tickets: HashMap::new(),
        };
        tokio::time::advance(Duration::from_millis(30)).await;
        let first = Instant::now();
        tokio::time::advance(Duration::from_millis(20)).await;
        let second = Instant::now();
        let requests = [
            sent(&[TicketId::new(1)], JobRowId::new(10), Some(first), true),
            sent(&[TicketId::new(2)], JobRowId::new(11), Some(second), true),
            sent(&[TicketId::new(3)], JobRowId::new(12), None, false),
        ];
        let windows = w.windows_of(&requests, Some(&read));
        assert_eq!(
            windows,
            vec![
                (JobRowId::new(10), Some(Duration::from_millis(30))),
                (JobRowId::new(11), Some(Duration::from_millis(50))),
                (JobRowId::new(12), None),
            ]
        );
        assert_eq!(w.tally.max_send_window, Some(Duration::from_millis(50)));
        // without a read, nothing is measured
        let unread = w.windows_of(&requests, None);
        assert!(unread.iter().all(|(_, window)| window.is_none()));
        assert_eq!(w.tally.max_send_window, Some(Duration::from_millis(50)));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_measured_for_accepted_requests_and_the_ids_they_carried() {
        let mut narrowed = sent(
            &[TicketId::new(1), TicketId::new(2), TicketId::new(3)],
            JobRowId::new(10),
            Some(Instant::now()),
            true,
        );
        narrowed.batch = IdBatch::new(vec![TicketId::new(1), TicketId::new(3)]).unwrap();
        let mut unknown_age = sent(
            &[TicketId::new(4)],
            JobRowId::new(11),
            Some(Instant::now()),
            true,
        );
        unknown_age.pending.release.purgeable = vec![None];
        let requests = [
            narrowed,
            unknown_age,
            sent(
                &[TicketId::new(5)],
                JobRowId::new(12),
                Some(Instant::now()),
                false,
            ),
            sent(&[TicketId::new(6)], JobRowId::new(13), None, true),
        ];
        let latencies = latencies_of(&requests);
        let rows: Vec<(JobRowId, Vec<TicketId>)> = latencies
            .iter()
            .map(|(row, _, tickets)| (*row, tickets.iter().map(|(t, _)| *t).collect()))
            .collect();
        let rows: Vec<(i64, Vec<u64>)> = rows
            .into_iter()
            .map(|(r, ids)| (r.get(), ids.into_iter().map(TicketId::get).collect()))
            .collect();
        assert_eq!(rows, vec![(10, vec![1, 3]), (11, vec![])]);
        assert_eq!(
            latencies[0].2,
            vec![(TicketId::new(1), at(101)), (TicketId::new(3), at(103))]
        );
    }
}

//! The purge worker: sends batches whose decisions are recorded, each after
//! a lookup among active tickets and a freshness read under the listing
//! gate, and follows the jobs with `show_many` to their end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::IdSet;
use super::handover::{ListingGate, RELEASES_QUEUED};
use crate::audit::{AuditStore, JobRowId, JobRowStatus, Outcome, RunId};
use crate::cycle::{CycleContext, CycleSettings, ListedAs, Release};
use crate::rules::Policy;
use crate::zendesk::{IdBatch, JobId, JobStatus, TicketId, ZendeskClient, ZendeskError};

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
    /// The longest time from a freshness read's answer to a purge request
    /// it cleared being handed to the connection.
    pub max_send_window: Option<Duration>,
    /// Tickets of completed jobs recorded in doubt (a read after the request
    /// showed them deleted again).
    pub in_doubt: u64,
    /// Tickets the freshness read found deleted again: not sent.
    pub changed: u64,
    /// Listing requests of the freshness reads.
    pub freshness_requests: u64,
    /// Why batches were not sent: the freshness read failed.
    pub freshness_failed: Option<String>,
    /// An error that ended the purging (credentials refused, store failed).
    pub fatal: Option<String>,
}

/// A job sent and not yet finished.
#[derive(Debug, Clone)]
pub(super) struct OpenJob {
    pub(super) row: JobRowId,
    pub(super) id: JobId,
    pub(super) tickets: Vec<TicketId>,
    pub(super) since: Instant,
    /// Consecutive polls that did not find it.
    pub(super) misses: u32,
    pub(super) last_status: String,
    /// Each ticket as the freshness read that cleared it showed it,
    /// parallel to `tickets` (empty for a job recovered from an earlier
    /// process, or sent without a listing).
    pub(super) sent_as: Vec<Option<ListedAs>>,
    /// Tickets a read after the request showed deleted again, with what it
    /// showed: not claimed as purged by their rule.
    pub(super) in_doubt: Vec<(TicketId, String)>,
    /// Zendesk's answer when it was already terminal: finished once the
    /// read after the round has marked the doubtful tickets.
    pub(super) answered: Option<JobStatus>,
}

/// A purge answered 429 this many times in a row is given up for this run.
pub(super) const MAX_RATE_LIMITED_ROUNDS: u32 = 10;

/// Sends purge batches (at most `max_jobs_in_flight` jobs open) and follows
/// the jobs with `show_many` to their end.
pub(super) struct PurgeWorker {
    pub(super) client: ZendeskClient,
    pub(super) store: AuditStore,
    pub(super) run: RunId,
    pub(super) settings: CycleSettings,
    /// To decide again a ticket the freshness read finds deleted again.
    pub(super) policy: Arc<Policy>,
    pub(super) cancel: CancellationToken,
    pub(super) open: Vec<OpenJob>,
    pub(super) tally: Tally,
    pub(super) gate: ListingGate,
    /// Releases prepared (looked up, token taken) while the job slots are
    /// full: the next round goes as soon as slots free.
    pub(super) ready: Vec<Pending>,
}

impl PurgeWorker {
    pub(super) fn new(
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
            ready: Vec::new(),
        }
    }

    pub(super) async fn run(mut self, mut batches: mpsc::Receiver<Release>) -> Tally {
        self.read_for_recovered().await;
        if let Err(e) = self.work(&mut batches).await {
            tracing::error!(error = %format!("{e:#}"), "purging stopped");
            self.tally.fatal = Some(format!("{e:#}"));
            // Record what was never sent, so that nothing is left unexplained.
            for p in std::mem::take(&mut self.ready) {
                self.not_sent(&p.release.batch, "purging stopped after an error")
                    .await;
            }
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

    pub(super) async fn not_sent(&mut self, batch: &IdBatch, reason: &str) {
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
        let slots = self.settings.max_jobs_in_flight;
        loop {
            if closed && self.open.is_empty() && self.ready.is_empty() {
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
            let free = slots.saturating_sub(self.open.len());
            let can_send = deadline.is_none() && free > 0 && !self.ready.is_empty();
            let can_take = !closed && deadline.is_none() && self.ready.len() < slots;
            tokio::select! {
                biased;
                _ = self.cancel.cancelled(), if deadline.is_none() => {
                    tracing::info!(open_jobs = self.open.len(), "shutdown: no new batch is sent; following open jobs");
                    deadline = Some(Instant::now() + self.settings.shutdown_grace);
                    for p in std::mem::take(&mut self.ready) {
                        self.not_sent(&p.release.batch, "the daemon was stopping").await;
                    }
                    batches.close();
                    while let Some(release) = batches.recv().await {
                        self.not_sent(&release.batch, "the daemon was stopping").await;
                    }
                    closed = true;
                }
                // as many as there are free job slots, cleared by one read
                _ = std::future::ready(()), if can_send => {
                    let group: Vec<Pending> = self.ready.drain(..free.min(self.ready.len())).collect();
                    self.send_group(group).await?
                }
                release = batches.recv(), if can_take => match release {
                    Some(first) => {
                        // what the scan is handing over right now joins (it
                        // queues a whole selection at once), up to a group
                        let mut group = vec![first];
                        let mut idle = 0;
                        while self.ready.len() + group.len() < slots && idle < 3 {
                            match batches.try_recv() {
                                Ok(r) => {
                                    group.push(r);
                                    idle = 0;
                                }
                                Err(mpsc::error::TryRecvError::Empty) => {
                                    idle += 1;
                                    tokio::task::yield_now().await;
                                }
                                Err(mpsc::error::TryRecvError::Disconnected) => break,
                            }
                        }
                        for release in group {
                            let prepared = self.prepare(release).await;
                            self.ready.push(prepared);
                        }
                    }
                    None => closed = true,
                },
                _ = poll.tick(), if !self.open.is_empty() => self.poll().await?,
                _ = tokio::time::sleep(Duration::from_millis(50)), if deadline.is_some() => {}
            }
        }
    }
}

/// What a failed purge request means for its tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFailure {
    /// 401/403: nothing else will work this run; the tickets failed.
    CredentialsRefused,
    /// Another 4xx: refused as asked; the tickets failed.
    Invalid,
    /// 404: none of the ids is soft-deleted any more (restored, or gone).
    NotSoftDeleted,
    /// A dropped or broken answer, a 429 after the wait, a refused send: the
    /// request may have been carried out, and only a later walk can tell.
    MaybeCarriedOut,
}

/// The error-to-outcome mapping of a purge request, as a pure function.
pub(super) fn failure_of(e: &ZendeskError) -> RequestFailure {
    match e {
        ZendeskError::Unauthorized { .. } | ZendeskError::Forbidden { .. } => {
            RequestFailure::CredentialsRefused
        }
        ZendeskError::InvalidRequest { .. } => RequestFailure::Invalid,
        ZendeskError::NotFound { .. } => RequestFailure::NotSoftDeleted,
        ZendeskError::Transient { .. }
        | ZendeskError::Decode { .. }
        | ZendeskError::RateLimited { .. }
        | ZendeskError::Refused { .. } => RequestFailure::MaybeCarriedOut,
    }
}

/// A release on its way through the rounds.
pub(super) struct Pending {
    pub(super) release: Release,
    /// Its tickets found among active ones (restored) before the first round.
    pub(super) active: IdSet,
    /// Answers lost so far (each a recorded attempt that ended unknown).
    pub(super) lost: u32,
    /// 429s so far.
    pub(super) limited: u32,
    /// Whether its next request's account token is taken already.
    pub(super) reserved: bool,
}

impl Pending {
    /// The same release with only the ids that were sent (or cleared).
    pub(super) fn narrowed(self, batch: IdBatch) -> Self {
        let listed: HashMap<TicketId, (Option<ListedAs>, Option<DateTime<Utc>>)> = self
            .release
            .batch
            .ids()
            .iter()
            .copied()
            .zip(
                self.release
                    .listed
                    .iter()
                    .cloned()
                    .zip(self.release.purgeable.iter().copied()),
            )
            .collect();
        Self {
            release: Release {
                listed: batch
                    .ids()
                    .iter()
                    .map(|id| listed.get(id).and_then(|(l, _)| l.clone()))
                    .collect(),
                purgeable: batch
                    .ids()
                    .iter()
                    .map(|id| listed.get(id).and_then(|(_, p)| *p))
                    .collect(),
                listed_at: self.release.listed_at,
                check_freshness: self.release.check_freshness,
                batch,
            },
            ..self
        }
    }
}

/// Sends batches whose decisions are already recorded, and follows their
/// jobs to the end: the write path that manual purges share with the cycle.
pub(crate) async fn send_and_follow(
    ctx: &CycleContext,
    run: RunId,
    releases: Vec<Release>,
) -> Tally {
    let (sender, receiver) = mpsc::channel::<Release>(RELEASES_QUEUED);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_request_that_may_have_been_carried_out_is_never_called_failed() {
        let body = || Box::new(crate::zendesk::ApiErrorBody::parse(""));
        let call = || "DELETE deleted_tickets/destroy_many".to_string();
        let cases = [
            (
                ZendeskError::Unauthorized {
                    call: call(),
                    body: body(),
                },
                RequestFailure::CredentialsRefused,
            ),
            (
                ZendeskError::Forbidden {
                    call: call(),
                    body: body(),
                },
                RequestFailure::CredentialsRefused,
            ),
            (
                ZendeskError::InvalidRequest {
                    call: call(),
                    status: 422,
                    body: body(),
                },
                RequestFailure::Invalid,
            ),
            (
                ZendeskError::NotFound {
                    call: call(),
                    body: body(),
                },
                RequestFailure::NotSoftDeleted,
            ),
            (
                ZendeskError::Transient {
                    call: call(),
                    reason: "reset".into(),
                    attempts: 1,
                },
                RequestFailure::MaybeCarriedOut,
            ),
            (
                ZendeskError::RateLimited {
                    call: call(),
                    wait: Duration::from_secs(1),
                    body: body(),
                },
                RequestFailure::MaybeCarriedOut,
            ),
            (
                ZendeskError::Refused {
                    call: call(),
                    reason: "shutdown".into(),
                },
                RequestFailure::MaybeCarriedOut,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(failure_of(&e), want, "{e}");
        }
    }
}

/// A job's end as the worker records it: Zendesk's status mapped to each
/// ticket's outcome, the tickets in doubt, the tallies and the ledger.
#[cfg(test)]
mod job_end_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::audit::{RequestKind, Trigger};
    use crate::cycle::context::test_support;
    use crate::rules::{Decision, RetentionRule, RuleAction};
    use crate::ticket::{Actor, Ticket};

    fn ticket(id: TicketId, deleted_days: i64) -> Ticket {
        Ticket {
            id,
            subject: None,
            actor: Some(Actor {
                id: Some(7),
                name: None,
            }),
            deleted_at: Some(Utc::now() - chrono::Duration::days(deleted_days)),
            previous_state: Some("closed".into()),
        }
    }

    /// A worker of a live run whose purge request for `ids` is recorded
    /// (decided purge, ledger rows `purge_requested`), and that request as
    /// an open job.
    async fn requested(ids: &[TicketId]) -> (PurgeWorker, OpenJob, tempfile::TempDir) {
        let policy = Policy {
            rules: vec![RetentionRule {
                match_all: true,
                ..RetentionRule::new("all", RuleAction::Purge)
            }],
            ..Policy::default()
        };
        let (ctx, dir) =
            test_support::context("http://127.0.0.1:9", policy, test_support::settings()).await;
        let now = Utc::now();
        let run = ctx
            .store
            .start_run(Trigger::Manual, false, &ctx.origin, now)
            .await
            .unwrap();
        let tickets: Vec<Ticket> = ids.iter().map(|id| ticket(*id, 40)).collect();
        let decision = Decision::Purge { rule: "all".into() };
        let records: Vec<_> = tickets
            .iter()
            .map(|t| crate::cycle::decision_record(t, &decision, &ctx.settings, now))
            .collect();
        ctx.store.record_decisions(run, &records).await.unwrap();
        let batch = IdBatch::new(ids.to_vec()).unwrap();
        let row = ctx
            .store
            .record_request(run, RequestKind::DestroyMany, &batch, now)
            .await
            .unwrap();
        let job = OpenJob {
            row,
            id: JobId("J1".into()),
            tickets: ids.to_vec(),
            since: Instant::now(),
            misses: 0,
            last_status: "queued".into(),
            sent_as: tickets.iter().map(|t| Some(ListedAs::of(t))).collect(),
            in_doubt: Vec::new(),
            answered: None,
        };
        let worker = PurgeWorker::new(
            &ctx,
            run,
            ListingGate::default(),
            Vec::new(),
            Tally::default(),
        );
        (worker, job, dir)
    }

    fn status(json: serde_json::Value) -> JobStatus {
        serde_json::from_value(json).unwrap()
    }

    /// Each ticket's last outcome, with its detail.
    async fn outcomes(worker: &PurgeWorker, ids: &[TicketId]) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for id in ids {
            let history = worker.store.ticket_history(*id).await.unwrap();
            let last = history.iter().rev().find(|e| e.kind == "outcome").unwrap();
            out.push((last.what.clone(), last.detail.clone()));
        }
        out
    }

    async fn ledger(worker: &PurgeWorker) -> BTreeMap<String, i64> {
        worker
            .store
            .ledger_counts()
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    #[tokio::test]
    async fn a_job_completed_with_success_purges_every_ticket() {
        let (mut w, job, _dir) =
            requested(&[TicketId::new(1), TicketId::new(2), TicketId::new(3)]).await;
        assert_eq!(ledger(&w).await.get("purge_requested"), Some(&3));
        let done = status(serde_json::json!({
            "id": "J1", "status": "completed", "message": "Completed at now",
            "results": {"success": true}
        }));
        w.finish(job, &done).await.unwrap();
        assert_eq!((w.tally.purged, w.tally.unknown, w.tally.failed), (3, 0, 0));
        for (what, detail) in
            outcomes(&w, &[TicketId::new(1), TicketId::new(2), TicketId::new(3)]).await
        {
            assert_eq!(what, "purged");
            assert_eq!(detail.as_deref(), Some("Completed at now"));
        }
        assert_eq!(ledger(&w).await.get("purged"), Some(&3));
    }

    #[tokio::test]
    async fn a_job_completed_without_full_success_leaves_every_ticket_unknown() {
        let (mut w, job, _dir) = requested(&[TicketId::new(1), TicketId::new(2)]).await;
        let partial = status(serde_json::json!({
            "id": "J1", "status": "completed",
            "results": [{"id": 1, "success": true}, {"id": 2, "success": false}]
        }));
        w.finish(job, &partial).await.unwrap();
        assert_eq!((w.tally.purged, w.tally.unknown, w.tally.failed), (0, 2, 0));
        for (what, detail) in outcomes(&w, &[TicketId::new(1), TicketId::new(2)]).await {
            assert_eq!(what, "unknown");
            assert!(
                detail.unwrap().contains("completed without full success"),
                "the detail says why"
            );
        }
        assert_eq!(ledger(&w).await.get("unknown"), Some(&2));
    }

    #[tokio::test]
    async fn a_failed_or_killed_job_fails_its_tickets_and_they_stay_selected() {
        for (state, message) in [("failed", Some("boom")), ("killed", None)] {
            let (mut w, job, _dir) = requested(&[TicketId::new(1), TicketId::new(2)]).await;
            let mut json = serde_json::json!({"id": "J1", "status": state});
            if let Some(m) = message {
                json["message"] = m.into();
            }
            w.finish(job, &status(json)).await.unwrap();
            assert_eq!((w.tally.purged, w.tally.failed), (0, 2), "{state}");
            let want = message.map_or_else(|| format!("job {state}"), str::to_string);
            for (what, detail) in outcomes(&w, &[TicketId::new(1), TicketId::new(2)]).await {
                assert_eq!(what, "failed", "{state}");
                assert_eq!(detail.as_deref(), Some(want.as_str()), "{state}");
            }
            // sent again by a later run: its decision still selects it
            assert_eq!(ledger(&w).await.get("selected"), Some(&2), "{state}");
        }
    }

    fn read_of(tickets: Vec<Ticket>) -> super::super::send::Read {
        super::super::send::Read {
            started: Utc::now(),
            answered: Instant::now(),
            answered_utc: Utc::now(),
            tickets: tickets.into_iter().map(|t| (t.id, t)).collect(),
        }
    }

    #[tokio::test]
    async fn a_ticket_deleted_again_after_its_request_is_in_doubt_once() {
        let (mut w, job, _dir) =
            requested(&[TicketId::new(1), TicketId::new(2), TicketId::new(3)]).await;
        let mut as_sent = ticket(TicketId::new(2), 40);
        as_sent.deleted_at = job.sent_as[1].as_ref().unwrap().deleted_at;
        as_sent.subject = Some("renamed since".into());
        let mut recovered = job.clone();
        recovered.sent_as = Vec::new(); // an earlier process's job
        recovered.id = JobId("J0".into());
        w.open = vec![job, recovered];
        // 1: deleted again (another time and actor); 2: as it was sent
        // (the same deletion), 3: not in the read
        let mut again = ticket(TicketId::new(1), 0);
        again.actor = Some(Actor {
            id: Some(99),
            name: None,
        });
        let read = read_of(vec![again.clone(), as_sent.clone()]);
        w.mark_in_doubt(&read);
        w.mark_in_doubt(&read);
        let doubts: Vec<TicketId> = w.open[0].in_doubt.iter().map(|(t, _)| *t).collect();
        assert_eq!(doubts, vec![1], "marked once, only the changed one");
        assert!(w.open[0].in_doubt[0].1.contains("by actor 99"));
        assert!(
            w.open[1].in_doubt.is_empty(),
            "a job sent without its listing casts no doubt"
        );
    }

    #[tokio::test]
    async fn a_completed_job_with_tickets_in_doubt_claims_only_the_rest() {
        let (mut w, mut job, _dir) =
            requested(&[TicketId::new(1), TicketId::new(2), TicketId::new(3)]).await;
        job.in_doubt = vec![(TicketId::new(2), "in doubt: deleted again".into())];
        let done = status(serde_json::json!({
            "id": "J1", "status": "completed", "results": {"success": true}
        }));
        w.finish(job, &done).await.unwrap();
        assert_eq!(
            (w.tally.purged, w.tally.unknown, w.tally.in_doubt),
            (2, 1, 1)
        );
        let o = outcomes(&w, &[TicketId::new(1), TicketId::new(2), TicketId::new(3)]).await;
        assert_eq!(o[0].0, "purged");
        assert_eq!(
            o[1],
            (
                "unknown".to_string(),
                Some("in doubt: deleted again".into())
            )
        );
        assert_eq!(o[2].0, "purged");
    }

    #[test]
    fn an_undecodable_answer_to_a_purge_may_have_been_carried_out() {
        let e = ZendeskError::Decode {
            call: "DELETE deleted_tickets/destroy_many".into(),
            reason: "eof".into(),
            shape: "empty".into(),
        };
        assert_eq!(failure_of(&e), RequestFailure::MaybeCarriedOut);
    }

    #[test]
    fn a_listing_compares_by_deletion_actor_and_previous_state_only() {
        let t = ticket(TicketId::new(1), 3);
        let mut renamed = t.clone();
        renamed.subject = Some("another subject".into());
        renamed.actor = Some(Actor {
            id: Some(7),
            name: Some("Ann".into()),
        });
        assert_eq!(ListedAs::of(&t), ListedAs::of(&renamed));
        let mut other_state = t.clone();
        other_state.previous_state = Some("open".into());
        assert_ne!(ListedAs::of(&t), ListedAs::of(&other_state));
        let mut no_actor = t.clone();
        no_actor.actor = None;
        assert_ne!(ListedAs::of(&t), ListedAs::of(&no_actor));
    }
}

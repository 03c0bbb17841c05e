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
pub(crate) struct OpenJob {
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
pub(crate) const MAX_RATE_LIMITED_ROUNDS: u32 = 10;

/// Sends purge batches (at most `max_jobs_in_flight` jobs open) and follows
/// the jobs with `show_many` to their end.
pub(crate) struct PurgeWorker {
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
    pub(crate) fn new(
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

    pub(crate) async fn run(mut self, mut batches: mpsc::Receiver<Release>) -> Tally {
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

    pub(crate) async fn not_sent(&mut self, batch: &IdBatch, reason: &str) {
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
pub(crate) enum RequestFailure {
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
pub(crate) fn failure_of(e: &ZendeskError) -> RequestFailure {
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
pub(crate) struct Pending {
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

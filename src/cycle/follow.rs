//! Following purge jobs to their end: what Zendesk answered to a request,
//! the jobs polled, each job's end and its tickets' outcomes (in-doubt
//! tickets included), and the open jobs an earlier process left.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::context::IdSet;
use super::settle::settle_lost_restore;
use super::worker::{OpenJob, PurgeWorker, RequestFailure, failure_of};
use crate::audit::{JobRowId, JobRowStatus, Outcome, RequestKind, RunId, parse_ids};
use crate::cycle::{CycleContext, ListedAs};
use crate::zendesk::{IdBatch, JobId, JobState, JobStatus, TicketId, ZendeskError};

impl PurgeWorker {
    /// Records what Zendesk answered to one purge attempt.
    pub(super) async fn settle_answer(
        &mut self,
        batch: &IdBatch,
        row: JobRowId,
        answer: Result<JobStatus, ZendeskError>,
        sent_as: Vec<Option<ListedAs>>,
        answered_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let batch = batch.clone();
        match answer {
            Ok(job) => {
                self.store
                    .record_answer(
                        row,
                        Some(&job.id.0),
                        JobRowStatus::of(&job.status),
                        job.message.as_deref(),
                        answered_at,
                    )
                    .await?;
                let open = OpenJob {
                    row,
                    id: job.id.clone(),
                    tickets: batch.ids().to_vec(),
                    since: Instant::now(),
                    misses: 0,
                    last_status: job.status.to_string(),
                    sent_as,
                    in_doubt: Vec::new(),
                    answered: job.status.is_terminal().then(|| job.clone()),
                };
                self.open.push(open);
                Ok(())
            }
            Err(e) => {
                let ids = batch.ids();
                let (status, outcome) = match failure_of(&e) {
                    // Credentials refused: nothing else will work this run.
                    RequestFailure::CredentialsRefused => {
                        self.store
                            .record_job_end(
                                self.run,
                                row,
                                JobRowStatus::Refused,
                                Some(&e.to_string()),
                                Outcome::Failed,
                                ids,
                            )
                            .await?;
                        self.tally.failed += ids.len() as u64;
                        return Err(
                            anyhow::Error::new(e).context("Zendesk refused the purge request")
                        );
                    }
                    RequestFailure::Invalid => (JobRowStatus::Refused, Outcome::Failed),
                    // 404: none of the ids is soft-deleted any more. Those
                    // active again were restored; the rest the next scan
                    // settles.
                    RequestFailure::NotSoftDeleted => {
                        let active: IdSet = match self.client.active_tickets(&batch).await {
                            Ok(a) => a.into_iter().collect(),
                            Err(_) => IdSet::default(),
                        };
                        let (restored, rest): (Vec<TicketId>, Vec<TicketId>) =
                            ids.iter().partition(|id| active.contains(id));
                        let message = e.to_string();
                        self.store
                            .record_job_end(
                                self.run,
                                row,
                                JobRowStatus::Refused,
                                Some(&message),
                                Outcome::Unknown,
                                &rest,
                            )
                            .await?;
                        self.store
                            .record_outcomes(
                                self.run,
                                Some(row),
                                &restored,
                                Outcome::RestoredElsewhere,
                                Some("the purge was answered 404 and the ticket is among active tickets: restored, not purged"),
                                Utc::now(),
                            )
                            .await?;
                        tracing::error!(error = %e, ids = ids.len(), restored = restored.len(), "purge request refused: not soft-deleted");
                        self.tally.unknown += rest.len() as u64;
                        return Ok(());
                    }
                    // The request may have been carried out (a dropped answer,
                    // a broken body): only a later scan can tell.
                    RequestFailure::MaybeCarriedOut => (JobRowStatus::Unknown, Outcome::Unknown),
                };
                tracing::error!(error = %e, ids = ids.len(), %outcome, "purge request failed");
                if outcome == Outcome::Failed {
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

    pub(super) async fn poll(&mut self) -> anyhow::Result<()> {
        let ids: Vec<JobId> = self.open.iter().map(|j| j.id.clone()).collect();
        // Jobs whose status could not be asked this time (not a sign that
        // they vanished); only their timeout applies.
        let mut unasked: std::collections::HashSet<JobId> = std::collections::HashSet::new();
        let statuses = match self.client.job_statuses(&ids).await {
            Ok(s) => s,
            Err(e @ (ZendeskError::Unauthorized { .. } | ZendeskError::Forbidden { .. })) => {
                return Err(anyhow::Error::new(e).context("Zendesk refused the job status request"));
            }
            Err(e @ (ZendeskError::NotFound { .. } | ZendeskError::InvalidRequest { .. })) => {
                // One unknown or expired id can fail the whole call: ask
                // for each job on its own.
                tracing::warn!(error = %e, "show_many refused the job ids; asking job by job");
                let mut out = Vec::new();
                for id in &ids {
                    match self.client.job_status(id).await {
                        Ok(s) => out.push(s),
                        Err(ZendeskError::NotFound { .. }) => {}
                        Err(
                            e
                            @ (ZendeskError::Unauthorized { .. } | ZendeskError::Forbidden { .. }),
                        ) => {
                            return Err(anyhow::Error::new(e)
                                .context("Zendesk refused the job status request"));
                        }
                        Err(e) => {
                            tracing::warn!(job = %id, error = %e, "asking for a job's status failed");
                            unasked.insert(id.clone());
                        }
                    }
                }
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "polling jobs failed; trying again at the next tick");
                unasked.extend(ids.iter().cloned());
                Vec::new()
            }
        };
        let by_id: HashMap<&JobId, &JobStatus> = statuses.iter().map(|s| (&s.id, s)).collect();
        let open = std::mem::take(&mut self.open);
        for mut job in open {
            if unasked.contains(&job.id) {
                if job.since.elapsed() > self.settings.job_timeout {
                    let why = format!(
                        "no status could be read for {}; the next scan settles the outcome",
                        crate::human::duration(self.settings.job_timeout)
                    );
                    self.give_up(job, &why).await?;
                } else {
                    self.open.push(job);
                }
                continue;
            }
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
                                crate::human::duration(self.settings.job_timeout)
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
                                JobRowStatus::of(&status.status),
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
    pub(super) async fn count_by_rule(
        &self,
        row: JobRowId,
        tickets: &[TicketId],
        metric: &'static str,
    ) {
        match self.store.rules_of_request(row, tickets).await {
            Ok(rules) => {
                for (rule, n) in rules {
                    metrics::counter!(metric, "rule" => rule).increment(n as u64);
                }
            }
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "cannot count tickets per rule"),
        }
    }

    pub(super) async fn give_up(&mut self, job: OpenJob, why: &str) -> anyhow::Result<()> {
        self.tally.unknown += job.tickets.len() as u64;
        self.store
            .record_job_end(
                self.run,
                job.row,
                JobRowStatus::Unknown,
                Some(why),
                Outcome::Unknown,
                &job.tickets,
            )
            .await
    }

    pub(super) async fn finish(&mut self, job: OpenJob, status: &JobStatus) -> anyhow::Result<()> {
        let message = status.message.clone();
        let (outcome, detail) = match (&status.status, status.results.succeeded()) {
            (JobState::Completed, Some(true)) => (Outcome::Purged, message.clone()),
            (JobState::Completed, _) => (
                Outcome::Unknown,
                Some(format!(
                    "the job completed without full success ({}); which tickets are gone is settled by the next scan",
                    message.as_deref().unwrap_or("no message")
                )),
            ),
            _ => (
                Outcome::Failed,
                Some(
                    message
                        .clone()
                        .unwrap_or_else(|| format!("job {}", status.status)),
                ),
            ),
        };
        if outcome == Outcome::Purged && !job.in_doubt.is_empty() {
            return self.finish_in_doubt(job, detail.as_deref()).await;
        }
        match outcome {
            Outcome::Purged => {
                self.tally.purged += job.tickets.len() as u64;
                self.count_by_rule(job.row, &job.tickets, "zd_retention_tickets_purged_total")
                    .await;
            }
            Outcome::Failed => {
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
                JobRowStatus::of(&status.status),
                detail.as_deref(),
                outcome,
                &job.tickets,
            )
            .await
            .context("cannot record a job's end")
    }
}

impl PurgeWorker {
    /// A job that completed with success, some of whose tickets a read after
    /// the request showed deleted again: those are `unknown` (the next scan
    /// settles them), the rest purged.
    pub(super) async fn finish_in_doubt(
        &mut self,
        job: OpenJob,
        message: Option<&str>,
    ) -> anyhow::Result<()> {
        let purged: Vec<TicketId> = job
            .tickets
            .iter()
            .copied()
            .filter(|id| !job.in_doubt.iter().any(|(t, _)| t == id))
            .collect();
        tracing::warn!(
            job = %job.id,
            in_doubt = job.in_doubt.len(),
            "purge job completed; tickets deleted again after the request are recorded in doubt"
        );
        self.tally.purged += purged.len() as u64;
        self.tally.unknown += job.in_doubt.len() as u64;
        self.tally.in_doubt += job.in_doubt.len() as u64;
        metrics::counter!("zd_retention_purges_in_doubt_total")
            .increment(job.in_doubt.len() as u64);
        self.count_by_rule(job.row, &purged, "zd_retention_tickets_purged_total")
            .await;
        self.store
            .record_job_end_in_doubt(self.run, job.row, message, &purged, &job.in_doubt)
            .await
            .context("cannot record a job's end")
    }
}

/// The jobs an earlier process sent and did not see end: purge jobs with a
/// Zendesk id are followed by this run (their tickets are not sent again),
/// the others recorded unknown, lost restores looked up.
pub(super) async fn recover_open_jobs(
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

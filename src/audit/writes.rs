//! The writers: a run's start and end, its decisions, each write request
//! before it is sent and Zendesk's answer, outcomes and probes. Each is one
//! transaction that chains what it adds and records the head it leaves;
//! beside them, the reads a run makes between its writes.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Any, QueryBuilder};

use super::chain::{
    Chained, chain_append, chain_append_digests, chain_base, placed_in_order, row_digest,
};
use super::encode::{sql_id, storable};
use super::heads::HeadKind;
use super::kinds::{JobRowStatus, Outcome, RequestKind, RunStatus, Trigger};
use super::ledger;
use super::records::{DecisionRecord, JobRow, RunCounts, RunOrigin, WITHDRAWN_NARROWED};
use super::store::{AuditStore, JobRowId, RunId, numbered, on_pg, timestamp};
use crate::zendesk::{IdBatch, TicketId};

/// Write requests (purges, restores) this process recorded. Each is
/// recorded before it is sent, so while this is 0 no write request was
/// sent: what an error message may then promise.
static REQUESTS_RECORDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many write requests this process recorded (and so may have sent).
pub fn requests_recorded() -> u64 {
    REQUESTS_RECORDED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets a job's end (status, message when given, finish time) and chains
/// its new state, inside the caller's transaction.
async fn end_job(
    tx: &mut sqlx::Transaction<'_, Any>,
    job: JobRowId,
    status: JobRowStatus,
    message: Option<&str>,
    at: &str,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE jobs SET status = $1, message = COALESCE($2, message), finished_at = $3 WHERE id = $4")
        .bind(status.as_str())
        .bind(storable(message))
        .bind(at)
        .bind(job)
    .execute(&mut **tx)
    .await?;
    chain_append(tx, Chained::JobsState, job.get(), job.get()).await
}

/// Ticket ids as a JSON array, for `json_each`.
fn ids_json(tickets: &[TicketId]) -> String {
    format!(
        "[{}]",
        tickets
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

impl AuditStore {
    /// Closes runs left `running` by a crash as `interrupted`; returns them.
    pub async fn close_interrupted_runs(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<RunId>> {
        self.check_file()?;
        // read inside the write transaction: on PostgreSQL a former leader's
        // late call is refused there, never marking a live run
        let mut tx = self.begin_write().await?;
        let ids: Vec<RunId> =
            sqlx::query_scalar(r#"SELECT id AS id FROM runs WHERE status = 'running' ORDER BY id"#)
                .fetch_all(&mut *tx)
                .await?;
        if !ids.is_empty() {
            let at = timestamp(now);
            sqlx::query("UPDATE runs SET status = 'interrupted', finished_at = $1, error = COALESCE(error, 'the process stopped before the run ended') WHERE status = 'running'")
        .bind(&at)
                .execute(&mut *tx)
                .await?;
            // each run's new state, then its end: one head each
            for id in &ids {
                let base = chain_base(&mut tx).await?;
                chain_append(&mut tx, Chained::RunsState, id.get(), id.get()).await?;
                self.seal(&mut tx, base, Some(*id), HeadKind::Interrupted)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Jobs not yet terminal (from any run), oldest first.
    pub async fn open_jobs(&self) -> anyhow::Result<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(r#"SELECT id, run_id, kind AS kind, zendesk_job_id, ticket_ids, ticket_count, recorded_at, answered_at, finished_at, status AS status, message
               FROM jobs WHERE status IN ('pending', 'queued', 'working') ORDER BY id"#)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn start_run(
        &self,
        trigger: Trigger,
        dry_run: bool,
        origin: &RunOrigin,
        now: DateTime<Utc>,
    ) -> anyhow::Result<RunId> {
        self.check_file()?;
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        let started = timestamp(now);
        let id = sqlx::query_scalar::<_, i64>("INSERT INTO runs (trigger, started_at, dry_run, config_hash, status, host, os_user, program_version) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7) RETURNING id")
        .bind(trigger.as_str())
        .bind(&started)
        .bind(i64::from(dry_run))
        .bind(&origin.config_hash)
        .bind(&origin.host)
        .bind(&origin.os_user)
        .bind(&origin.program_version)
            .fetch_one(&mut *tx)
            .await
            .context("cannot record the start of the run")?;
        chain_append(&mut tx, Chained::Runs, id, id).await?;
        chain_append(&mut tx, Chained::RunsState, id, id).await?;
        if let Some(settings) = &origin.config_settings {
            // each distinct config once, chained, with the run that first used it
            let version = sqlx::query_scalar::<_, i64>("INSERT INTO config_versions (hash, first_run, first_used, settings) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING RETURNING id")
        .bind(&origin.config_hash)
        .bind(id)
        .bind(&started)
        .bind(settings)
            .fetch_optional(&mut *tx)
            .await
            .context("cannot record the config version")?;
            if let Some(row) = version {
                chain_append(&mut tx, Chained::ConfigVersions, row, row).await?;
            }
        }
        self.seal(&mut tx, base, Some(RunId::new(id)), HeadKind::Commit)
            .await?;
        tx.commit()
            .await
            .context("cannot record the start of the run")?;
        Ok(RunId::new(id))
    }

    /// Records a run that ended before it could do anything, with why.
    pub async fn fail_run(&self, run: RunId, message: &str) -> anyhow::Result<()> {
        self.finish_run(
            run,
            RunStatus::Failed,
            &RunCounts::default(),
            Some(message),
            Utc::now(),
        )
        .await
    }

    /// Records a run's end, its figures and its decisions per kind and rule.
    pub async fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        counts: &RunCounts,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.check_file()?;
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        let finished = timestamp(now);
        let (scanned, matched, purged) = (
            counts.scanned as i64,
            counts.matched as i64,
            counts.purged as i64,
        );
        let (failed, unknown, list_requests) = (
            counts.failed as i64,
            counts.unknown as i64,
            counts.list_requests as i64,
        );
        let max_listing_age_ms = counts.max_listing_age_ms.map(|m| m as i64);
        let high_water = counts.high_water.map(timestamp);
        let decisions_recorded = counts.decisions_recorded.map(|n| n as i64);
        sqlx::query("UPDATE runs SET status = $1, finished_at = $2, scanned = $3, matched = $4, purged = $5, failed = $6, unknown = $7, list_requests = $8, early_stop = $9, error = $10, scan = $11, scan_reason = $12, max_listing_age_ms = $13, step = $14, high_water = $15, decisions_recorded = $16 WHERE id = $17")
        .bind(status.as_str())
        .bind(finished)
        .bind(scanned)
        .bind(matched)
        .bind(purged)
        .bind(failed)
        .bind(unknown)
        .bind(list_requests)
        .bind(i64::from(counts.early_stop))
        .bind(error)
        .bind(counts.scan)
        .bind(&counts.scan_reason)
        .bind(max_listing_age_ms)
        .bind(counts.step)
        .bind(high_water)
        .bind(decisions_recorded)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        chain_append(&mut tx, Chained::RunsState, run.get(), run.get()).await?;
        sqlx::query("DELETE FROM run_decision_counts WHERE run_id = $1")
            .bind(run)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO run_decision_counts (run_id, decision, rule, count)
             SELECT run_id, decision, rule, COUNT(*) FROM decisions WHERE run_id = $1 GROUP BY run_id, decision, rule")
        .bind(run)
        .execute(&mut *tx)
        .await?;
        // the head the run ends at, signed when a key is set: in the same
        // transaction, so no run ends without it
        self.seal(&mut tx, base, Some(run), HeadKind::End).await?;
        tx.commit()
            .await
            .context("cannot record the end of the run")?;
        Ok(())
    }

    /// Stores decisions in one transaction.
    pub async fn record_decisions(
        &self,
        run: RunId,
        decisions: &[DecisionRecord],
    ) -> anyhow::Result<()> {
        self.check_file()?;
        if decisions.is_empty() {
            return Ok(());
        }
        // Each time as text once, for the insert and the digest; a flush holds
        // a few pages, each decided at one instant.
        let mut last_decided: Option<(DateTime<Utc>, String)> = None;
        let texts: Vec<(Option<String>, String)> = decisions
            .iter()
            .map(|d| {
                let decided = match &last_decided {
                    Some((at, text)) if *at == d.decided_at => text.clone(),
                    _ => {
                        let text = timestamp(d.decided_at);
                        last_decided = Some((d.decided_at, text.clone()));
                        text
                    }
                };
                (d.deleted_at.map(timestamp), decided)
            })
            .collect();
        let run_text = run.to_string();
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        let mut last = 0;
        let mut digests = String::with_capacity(decisions.len() * 16);
        // 11 binds a row keep each statement under SQLite's 32766 variables
        for (chunk, chunk_texts) in decisions.chunks(500).zip(texts.chunks(500)) {
            let ids: Vec<sqlx::any::AnyRow> = if on_pg(&tx) {
                // one statement text, prepared once: the rows as one JSON
                // array bound as text (5,500 binds cost PostgreSQL a parse
                // and a plan each time)
                let rows: Vec<serde_json::Value> = chunk
                    .iter()
                    .zip(chunk_texts)
                    .map(|(d, (deleted, decided))| {
                        serde_json::json!([
                            sql_id(d.ticket_id),
                            deleted,
                            d.actor_id.map(|a| a as i64),
                            d.previous_state,
                            d.subject,
                            d.rule,
                            d.decision.as_str(),
                            decided,
                            d.actor_name,
                            d.subject_tags.as_ref().map(ToString::to_string),
                        ])
                    })
                    .collect();
                sqlx::query(
                    "INSERT INTO decisions (run_id, ticket_id, deleted_at, actor_id, previous_state, subject, rule, decision, decided_at, actor_name, subject_tags)
                     SELECT $1, CAST(e->>0 AS BIGINT), e->>1, CAST(e->>2 AS BIGINT), e->>3, e->>4, e->>5, e->>6, e->>7, e->>8, e->>9
                     FROM json_array_elements(CAST($2 AS JSON)) WITH ORDINALITY AS r (e, n)
                     ORDER BY n
                     RETURNING id, ticket_id",
                )
                .bind(run)
                .bind(serde_json::Value::Array(rows).to_string())
                .fetch_all(&mut *tx)
                .await?
            } else {
                // runtime: one row of binds per decision (a batch, never cached)
                let mut q: QueryBuilder<Any> = QueryBuilder::new(
                    "INSERT INTO decisions (run_id, ticket_id, deleted_at, actor_id, previous_state, subject, rule, decision, decided_at, actor_name, subject_tags) ",
                );
                q.push_values(
                    chunk.iter().zip(chunk_texts),
                    |mut b, (d, (deleted, decided))| {
                        b.push_bind(run)
                            .push_bind(sql_id(d.ticket_id))
                            .push_bind(deleted.as_deref())
                            .push_bind(d.actor_id.map(|a| a as i64))
                            .push_bind(d.previous_state.as_deref())
                            .push_bind(d.subject.as_deref())
                            .push_bind(d.rule.as_deref())
                            .push_bind(d.decision.as_str())
                            .push_bind(decided.as_str())
                            .push_bind(d.actor_name.as_deref())
                            .push_bind(d.subject_tags.clone());
                    },
                );
                q.push(" RETURNING id, ticket_id");
                numbered(&mut q, false)
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await?
            };
            last = placed_in_order(&ids, chunk.iter().map(|d| sql_id(d.ticket_id)), last)?;
            for (d, (deleted, decided)) in chunk.iter().zip(chunk_texts) {
                let (ticket, actor) = (d.ticket_id.to_string(), d.actor_id.map(|a| a.to_string()));
                let tags = d.subject_tags.as_ref().map(ToString::to_string);
                digests.push_str(&row_digest(
                    Chained::Decisions,
                    [
                        Some(run_text.as_str()),
                        Some(ticket.as_str()),
                        deleted.as_deref(),
                        actor.as_deref(),
                        d.previous_state.as_deref(),
                        d.subject.as_deref(),
                        d.rule.as_deref(),
                        Some(d.decision.as_str()),
                        Some(decided.as_str()),
                        d.actor_name.as_deref(),
                        tags.as_deref(),
                    ],
                ));
            }
        }
        // one writer in the transaction: the new rows have consecutive ids
        let first = last - decisions.len() as i64 + 1;
        chain_append_digests(&mut tx, Chained::Decisions, first, last, digests).await?;
        ledger::upsert_decisions(&mut tx, run, decisions).await?;
        self.seal(&mut tx, base, Some(run), HeadKind::Commit)
            .await?;
        tx.commit().await.context("cannot record the decisions")?;
        Ok(())
    }

    /// Records a write request before it is sent; returns its row.
    pub async fn record_request(
        &self,
        run: RunId,
        kind: RequestKind,
        batch: &IdBatch,
        now: DateTime<Utc>,
    ) -> anyhow::Result<JobRowId> {
        self.check_file()?;
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        let (ticket_ids, ticket_count, recorded) =
            (batch.to_query(), batch.len() as i64, timestamp(now));
        let id = sqlx::query_scalar::<_, i64>("INSERT INTO jobs (run_id, kind, ticket_ids, ticket_count, recorded_at, status) VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING id")
        .bind(run)
        .bind(kind.as_str())
        .bind(ticket_ids)
        .bind(ticket_count)
        .bind(recorded)
            .fetch_one(&mut *tx)
            .await
            .context("cannot record the request before sending it")?;
        chain_append(&mut tx, Chained::Jobs, id, id).await?;
        chain_append(&mut tx, Chained::JobsState, id, id).await?;
        if kind == RequestKind::DestroyMany {
            ledger::apply_request(&mut tx, batch.ids(), &timestamp(now)).await?;
        }
        self.seal(&mut tx, base, Some(run), HeadKind::Commit)
            .await?;
        tx.commit()
            .await
            .context("cannot record the request before sending it")?;
        REQUESTS_RECORDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(JobRowId::new(id))
    }

    /// Records purge requests before they are sent together, in one
    /// transaction; returns their rows in the batches' order. `replacing`:
    /// requests recorded before the read that did not clear them whole,
    /// withdrawn in the same transaction (never sent); the new ones carry
    /// what it cleared of them, whose ledger rows say requested already.
    pub async fn record_requests(
        &self,
        run: RunId,
        batches: &[IdBatch],
        (now, replacing): (DateTime<Utc>, &[JobRowId]),
    ) -> anyhow::Result<Vec<JobRowId>> {
        self.check_file()?;
        let at = timestamp(now);
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        for row in replacing {
            end_job(
                &mut tx,
                *row,
                JobRowStatus::Withdrawn,
                Some(WITHDRAWN_NARROWED),
                &at,
            )
            .await?;
        }
        let narrowed = !replacing.is_empty();
        let mut rows = Vec::with_capacity(batches.len());
        for batch in batches {
            let (ticket_ids, ticket_count) = (batch.to_query(), batch.len() as i64);
            let id = sqlx::query_scalar::<_, i64>("INSERT INTO jobs (run_id, kind, ticket_ids, ticket_count, recorded_at, status) VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING id")
        .bind(run)
        .bind(RequestKind::DestroyMany.as_str())
        .bind(ticket_ids)
        .bind(ticket_count)
        .bind(&at)
                .fetch_one(&mut *tx)
                .await
                .context("cannot record the request before sending it")?;
            chain_append(&mut tx, Chained::Jobs, id, id).await?;
            chain_append(&mut tx, Chained::JobsState, id, id).await?;
            if !narrowed {
                // (a narrowed request's tickets were marked by the request
                // it replaces, in an earlier transaction)
                ledger::apply_request(&mut tx, batch.ids(), &at).await?;
            }
            rows.push(id);
        }
        self.seal(&mut tx, base, Some(run), HeadKind::Commit)
            .await?;
        tx.commit()
            .await
            .context("cannot record the requests before sending them")?;
        REQUESTS_RECORDED.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(rows.into_iter().map(JobRowId::new).collect())
    }

    /// Records, once purge requests have left, when the freshness read that
    /// cleared them was answered, each one's window from that answer to its
    /// hand-over to the connection (`None`: it never left), and when the read
    /// after them was answered (`None`: none was made).
    pub async fn record_send_windows(
        &self,
        run: RunId,
        (read_at, after_read_at): (DateTime<Utc>, Option<DateTime<Utc>>),
        windows: &[(JobRowId, Option<std::time::Duration>)],
    ) -> anyhow::Result<()> {
        self.check_file()?;
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        let (read_at, after_read_at) = (timestamp(read_at), after_read_at.map(timestamp));
        for (row, window) in windows {
            let window_us = window.map(|w| i64::try_from(w.as_micros()).unwrap_or(i64::MAX));
            sqlx::query("UPDATE jobs SET fresh_read_at = $1, send_window_us = $2, after_read_at = $3 WHERE id = $4")
        .bind(&read_at)
        .bind(window_us)
        .bind(&after_read_at)
        .bind(row)
                .execute(&mut *tx)
                .await?;
            chain_append(&mut tx, Chained::JobsState, row.get(), row.get()).await?;
        }
        self.seal(&mut tx, base, Some(run), HeadKind::Commit)
            .await?;
        tx.commit()
            .await
            .context("cannot record the purge requests' freshness windows")?;
        Ok(())
    }

    /// Records Zendesk's answer to a write: the job id and its state.
    pub async fn record_answer(
        &self,
        job: JobRowId,
        zendesk_job_id: Option<&str>,
        status: JobRowStatus,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.check_file()?;
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        let answered = timestamp(now);
        sqlx::query("UPDATE jobs SET zendesk_job_id = $1, status = $2, message = $3, answered_at = $4 WHERE id = $5")
        .bind(storable(zendesk_job_id))
        .bind(status.as_str())
        .bind(storable(message))
        .bind(answered)
        .bind(job)
            .execute(&mut *tx)
            .await
            .context("cannot record Zendesk's answer")?;
        chain_append(&mut tx, Chained::JobsState, job.get(), job.get()).await?;
        let run: Option<RunId> =
            sqlx::query_scalar(r#"SELECT run_id AS run_id FROM jobs WHERE id = $1"#)
                .bind(job)
                .fetch_optional(&mut *tx)
                .await?;
        self.seal(&mut tx, base, run, HeadKind::Commit).await?;
        tx.commit()
            .await
            .context("cannot record Zendesk's answer")?;
        Ok(())
    }

    /// Records a job's end and the outcome of each of its tickets, together.
    pub async fn record_job_end(
        &self,
        run: RunId,
        job: JobRowId,
        status: JobRowStatus,
        message: Option<&str>,
        outcome: Outcome,
        tickets: &[TicketId],
    ) -> anyhow::Result<()> {
        self.check_file()?;
        let at = timestamp(Utc::now());
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        end_job(&mut tx, job, status, message, &at).await?;
        insert_outcomes(&mut tx, run, Some(job), tickets, outcome, message, &at).await?;
        self.seal(&mut tx, base, Some(run), HeadKind::Commit)
            .await?;
        tx.commit().await.context("cannot record the job's end")?;
        Ok(())
    }

    /// Records the end of a job that completed with success, whose tickets
    /// are purged but for those a read after the request showed deleted
    /// again: each of those is `unknown` with what the read showed (Zendesk
    /// purged whichever deletion it had when the job ran), all in one
    /// transaction.
    pub async fn record_job_end_in_doubt(
        &self,
        run: RunId,
        job: JobRowId,
        message: Option<&str>,
        purged: &[TicketId],
        in_doubt: &[(TicketId, String)],
    ) -> anyhow::Result<()> {
        self.check_file()?;
        let at = timestamp(Utc::now());
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        end_job(&mut tx, job, JobRowStatus::Completed, message, &at).await?;
        insert_outcomes(
            &mut tx,
            run,
            Some(job),
            purged,
            Outcome::Purged,
            message,
            &at,
        )
        .await?;
        for (ticket, detail) in in_doubt {
            insert_outcomes(
                &mut tx,
                run,
                Some(job),
                &[*ticket],
                Outcome::Unknown,
                Some(detail),
                &at,
            )
            .await?;
        }
        self.seal(&mut tx, base, Some(run), HeadKind::Commit)
            .await?;
        tx.commit().await.context("cannot record the job's end")?;
        Ok(())
    }

    /// Records outcomes that belong to no job (not sent, settled by a scan).
    pub async fn record_outcomes(
        &self,
        run: RunId,
        job: Option<JobRowId>,
        tickets: &[TicketId],
        outcome: Outcome,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.check_file()?;
        if tickets.is_empty() {
            return Ok(());
        }
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        insert_outcomes(&mut tx, run, job, tickets, outcome, detail, &timestamp(now)).await?;
        self.seal(&mut tx, base, Some(run), HeadKind::Commit)
            .await?;
        tx.commit().await.context("cannot record the outcomes")?;
        Ok(())
    }

    /// Stores what `probe` found about an account.
    pub async fn record_probe(
        &self,
        base_url: &str,
        findings: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        self.check_file()?;
        let probed = timestamp(now);
        let mut tx = self.begin_write().await?;
        let id = sqlx::query_scalar::<_, i64>(
            "INSERT INTO probes (probed_at, base_url, findings) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(probed)
        .bind(base_url)
        .bind(findings)
        .fetch_one(&mut *tx)
        .await
        .context("cannot record the probe's findings")?;
        tx.commit()
            .await
            .context("cannot record the probe's findings")?;
        Ok(id)
    }

    /// The newest probe's findings for an account, if any.
    pub async fn latest_probe(&self, base_url: &str) -> anyhow::Result<Option<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT probed_at, findings FROM probes WHERE base_url = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(base_url)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Takes and releases the write lock: fails when the database cannot be
    /// written (read-only file, full disk, held too long by another writer).
    pub async fn check_writable(&self) -> anyhow::Result<()> {
        self.begin_write().await?.rollback().await?;
        Ok(())
    }

    /// Tickets of a purge request per rule that selected them.
    pub async fn rules_of_request(
        &self,
        job: JobRowId,
        tickets: &[TicketId],
    ) -> anyhow::Result<Vec<(String, i64)>> {
        let ids = ids_json(tickets);
        // Each ticket's latest decision up to the job's run: a ticket
        // decided from the ledger has no decision row in the run that sent
        // it (decisions are written on change). The ids outer, each looked
        // up by ticket.
        // (PostgreSQL's planner needs the lookup spelt out as LATERAL, or it
        // walks every decision for each id: measured 0.9 s a request)
        let sql = if self.is_pg() {
            r#"SELECT COALESCE(d.rule, '(manual)') AS rule, COUNT(*) AS n
             FROM json_array_elements_text(CAST($1 AS json)) AS t(value)
             CROSS JOIN LATERAL (SELECT MAX(x.id) AS id FROM decisions AS x
                                 WHERE x.ticket_id = CAST(t.value AS BIGINT)
                                   AND x.run_id <= (SELECT run_id FROM jobs WHERE id = $2)) AS m
             JOIN decisions AS d ON d.id = m.id
             WHERE d.decision = 'purge'
             GROUP BY d.rule"#
        } else {
            r#"SELECT COALESCE(d.rule, '(manual)') AS rule, COUNT(*) AS n
             FROM json_each($1) AS t CROSS JOIN decisions AS d
             WHERE d.id = (SELECT MAX(x.id) FROM decisions AS x INDEXED BY decisions_ticket
                           WHERE x.ticket_id = CAST(t.value AS BIGINT)
                             AND x.run_id <= (SELECT run_id FROM jobs WHERE id = $2))
               AND d.decision = 'purge'
             GROUP BY d.rule"#
        };
        let rows = sqlx::query_as(sql)
            .bind(ids)
            .bind(job)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// When the earliest purge request still open (pending, queued or
    /// working) was recorded.
    pub async fn earliest_open_request(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let at: Option<String> = sqlx::query_scalar(r#"SELECT MIN(recorded_at) AS at FROM jobs WHERE kind = 'destroy_many' AND status IN ('pending', 'queued', 'working')"#)
        .fetch_one(&self.pool)
        .await?;
        Ok(at
            .and_then(|a| DateTime::parse_from_rfc3339(&a).ok())
            .map(|a| a.with_timezone(&Utc)))
    }

    /// Each ticket of a purge request as its latest decision before the
    /// request saw it, when that decision selected it: deletion time, actor
    /// and previous state (what a listing shows).
    #[allow(clippy::type_complexity)]
    pub async fn decided_as(
        &self,
        job: JobRowId,
        tickets: &[TicketId],
    ) -> anyhow::Result<HashMap<TicketId, (Option<DateTime<Utc>>, Option<u64>, Option<String>)>>
    {
        let ids = ids_json(tickets);
        let rows: Vec<(TicketId, Option<String>, Option<i64>, Option<String>)> =
            sqlx::query_as(if self.is_pg() {
                r#"SELECT d.ticket_id AS ticket_id, d.deleted_at AS deleted_at,
                      d.actor_id AS actor_id, d.previous_state AS previous_state
             FROM json_array_elements_text(CAST($1 AS json)) AS t(value)
             CROSS JOIN LATERAL (SELECT MAX(x.id) AS id FROM decisions AS x
                                 WHERE x.ticket_id = CAST(t.value AS BIGINT)
                                   AND x.run_id <= (SELECT run_id FROM jobs WHERE id = $2)
                                   AND x.decided_at <= (SELECT recorded_at FROM jobs WHERE id = $2)) AS m
             JOIN decisions AS d ON d.id = m.id
             WHERE d.decision = 'purge'"#
            } else {
                r#"SELECT d.ticket_id AS ticket_id, d.deleted_at AS deleted_at,
                      d.actor_id AS actor_id, d.previous_state AS previous_state
             FROM json_each($1) AS t CROSS JOIN decisions AS d
             WHERE d.id = (SELECT MAX(x.id) FROM decisions AS x INDEXED BY decisions_ticket
                           WHERE x.ticket_id = CAST(t.value AS BIGINT)
                             AND x.run_id <= (SELECT run_id FROM jobs WHERE id = $2)
                             AND x.decided_at <= (SELECT recorded_at FROM jobs WHERE id = $2))
               AND d.decision = 'purge'"#
            })
            .bind(ids)
            .bind(job)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(ticket, deleted_at, actor_id, previous_state)| {
                let at = deleted_at
                    .and_then(|a| DateTime::parse_from_rfc3339(&a).ok())
                    .map(|a| a.with_timezone(&Utc));
                (ticket, (at, actor_id.map(|a| a as u64), previous_state))
            })
            .collect())
    }

    /// `PRAGMA integrity_check`'s answer (`ok` when sound).
    pub async fn integrity_check(&self) -> anyhow::Result<String> {
        if self.backend == super::store::Backend::Postgres {
            // PostgreSQL checks its own pages (data checksums, WAL)
            return Ok("ok".into());
        }
        // (a pragma's one column is typed as nullable: it never is NULL)
        let answer: Option<String> = sqlx::query_scalar(r#"PRAGMA integrity_check"#)
            .fetch_one(&self.pool)
            .await?;
        answer.context("PRAGMA integrity_check gave no answer")
    }
}

async fn insert_outcomes(
    tx: &mut sqlx::Transaction<'_, Any>,
    run: RunId,
    job: Option<JobRowId>,
    tickets: &[TicketId],
    outcome: Outcome,
    detail: Option<&str>,
    at: &str,
) -> anyhow::Result<()> {
    if tickets.is_empty() {
        return Ok(());
    }
    let detail = storable(detail);
    let detail = detail.as_deref();
    let mut last = 0;
    let (run_text, job_text) = (run.to_string(), job.map(|j| j.to_string()));
    let mut digests = String::with_capacity(tickets.len() * 16);
    for chunk in tickets.chunks(500) {
        // runtime: one row of binds per ticket (a batch, never cached)
        let mut q: QueryBuilder<Any> = QueryBuilder::new(
            "INSERT INTO outcomes (run_id, job_id, ticket_id, outcome, detail, recorded_at) ",
        );
        q.push_values(chunk, |mut b, t| {
            b.push_bind(run)
                .push_bind(job)
                .push_bind(sql_id(*t))
                .push_bind(outcome.as_str())
                .push_bind(detail)
                .push_bind(at);
        });
        q.push(" RETURNING id, ticket_id");
        let ids = numbered(&mut q, on_pg(tx))
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        last = placed_in_order(&ids, chunk.iter().map(|t| sql_id(*t)), last)?;
        for t in chunk {
            let ticket = t.to_string();
            digests.push_str(&row_digest(
                Chained::Outcomes,
                [
                    Some(run_text.as_str()),
                    job_text.as_deref(),
                    Some(ticket.as_str()),
                    Some(outcome.as_str()),
                    detail,
                    Some(at),
                ],
            ));
        }
    }
    ledger::apply_outcome(tx, tickets, outcome, at).await?;
    chain_append_digests(
        tx,
        Chained::Outcomes,
        last - tickets.len() as i64 + 1,
        last,
        digests,
    )
    .await
}

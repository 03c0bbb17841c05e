//! The audit store: runs, decisions, jobs and outcomes in SQLite (WAL).
//!
//! The only module that knows SQL. Writes that precede a request to Zendesk
//! are committed (synchronous = FULL) before the caller sends it: decisions
//! and the batch first, the job id as soon as the answer arrives. Subjects
//! are stored only when the config says so.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
// Column lists are constants of this module; values are always bound.
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};

use crate::zendesk::{IdBatch, TicketId};

mod kinds;
mod ledger;
pub use kinds::{DecisionKind, JobRowStatus, Outcome, RequestKind, RunStatus, Trigger};
pub use ledger::{LedgerEntry, LedgerState, ListingMarks, Sighting};

/// A run's row id.
pub type RunId = i64;
/// A job's row id (ours, not Zendesk's).
pub type JobRowId = i64;

/// The largest ticket id the store keeps: SQLite integers are signed 64-bit,
/// and an id above this would be stored wrapped (negative).
pub const MAX_TICKET_ID: TicketId = i64::MAX as TicketId;

/// Timestamps as stored: RFC 3339, UTC, milliseconds.
/// Reads a stored time back (`None` for NULL, empty or unreadable text).
pub(crate) fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|d| DateTime::parse_from_rfc3339(&d).ok())
        .map(|d| d.with_timezone(&Utc))
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One decision, ready to store.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub ticket_id: TicketId,
    pub deleted_at: Option<DateTime<Utc>>,
    pub actor_id: Option<u64>,
    /// Kept in the ledger (a rule can name actors), not in the decision row.
    pub actor_name: Option<String>,
    pub previous_state: Option<String>,
    /// Already `None` unless subjects are recorded.
    pub subject: Option<String>,
    pub rule: Option<String>,
    pub decision: DecisionKind,
    /// When the rules decided (the time the age conditions were read at).
    pub decided_at: DateTime<Utc>,
    /// Decided from a listing at `decided_at` (not from the ledger alone).
    pub listed: bool,
    /// The ledger's subject-pattern tags (`Policy::subject_tags`).
    pub subject_tags: Option<String>,
}

/// The figures a finished run records.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunCounts {
    pub scanned: u64,
    pub matched: u64,
    pub purged: u64,
    pub failed: u64,
    pub unknown: u64,
    pub list_requests: u64,
    pub early_stop: bool,
    /// `sorted` or `full` (cycles only).
    pub scan: Option<String>,
    pub scan_reason: Option<String>,
    /// The longest time from a ticket's last listing to its `destroy_many`.
    pub max_listing_age_ms: Option<u64>,
    /// `refresh` or `reconcile` (cycles only).
    pub step: Option<String>,
    /// The newest deletion known once the listing step finished whole.
    pub high_water: Option<DateTime<Utc>>,
    /// Decision rows the run wrote (decisions are recorded on change).
    pub decisions_recorded: Option<u64>,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: RunId,
    pub trigger: Trigger,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub dry_run: bool,
    pub config_hash: String,
    pub status: RunStatus,
    pub scanned: i64,
    pub matched: i64,
    pub purged: i64,
    pub failed: i64,
    pub unknown: i64,
    pub list_requests: i64,
    pub early_stop: bool,
    pub error: Option<String>,
    pub scan: Option<String>,
    pub scan_reason: Option<String>,
    pub max_listing_age_ms: Option<i64>,
    /// `refresh` or `reconcile` (cycles since the ledger).
    pub step: Option<String>,
    pub high_water: Option<String>,
    pub decisions_recorded: Option<i64>,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: JobRowId,
    pub run_id: RunId,
    pub kind: RequestKind,
    pub zendesk_job_id: Option<String>,
    pub ticket_ids: String,
    pub ticket_count: i64,
    pub recorded_at: String,
    pub answered_at: Option<String>,
    pub finished_at: Option<String>,
    pub status: JobRowStatus,
    pub message: Option<String>,
}

/// One line of a ticket's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TicketEvent {
    pub at: String,
    pub run_id: RunId,
    /// `decision` or `outcome`.
    pub kind: String,
    /// The decision or the outcome.
    pub what: String,
    pub rule: Option<String>,
    pub job: Option<String>,
    pub detail: Option<String>,
}

/// One line of a statistics table.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StatRow {
    /// The day, the decision or the outcome.
    pub key: String,
    pub rule: Option<String>,
    pub count: i64,
}

/// The runs of one day.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DayRuns {
    pub day: String,
    pub runs: i64,
    pub scanned: i64,
    pub matched: i64,
    pub purged: i64,
    pub failed: i64,
    pub failed_runs: i64,
}

/// Filters of `audit search`; every value is bound as a parameter.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub rule: Option<String>,
    pub outcome: Option<String>,
    pub decision: Option<String>,
    pub actor: Option<i64>,
    pub ticket: Option<i64>,
    pub limit: i64,
}

/// One row of `audit search` and `audit export`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SearchRow {
    pub at: String,
    pub run_id: RunId,
    pub ticket_id: i64,
    pub decision: String,
    pub rule: Option<String>,
    pub actor_id: Option<i64>,
    pub deleted_at: Option<String>,
    pub previous_state: Option<String>,
    /// The ticket's last outcome in that run, if any.
    pub outcome: Option<String>,
    pub outcome_at: Option<String>,
    pub detail: Option<String>,
}

/// A ticket whose fate a later scan must settle.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsettled {
    /// `purged` or `unknown`.
    pub outcome: String,
    pub deleted_at: Option<DateTime<Utc>>,
    /// When its latest decision was made: it was listed then, so a deletion
    /// again would carry a later `deleted_at`.
    pub decided_at: Option<DateTime<Utc>>,
}

/// The store; cheap to clone (a pool).
#[derive(Debug, Clone)]
pub struct AuditStore {
    pool: SqlitePool,
    /// For a writer: the file and its identity when opened. A database
    /// removed or replaced while in use fails the next write loudly:
    /// SQLite would go on writing to the removed file, and the history
    /// would vanish without a word.
    file: Option<(std::path::PathBuf, FileIdentity)>,
    /// The write-ahead log this writer opened: removed with the database's
    /// disappearance, so that SQLite never replays it onto another file
    /// moved into its place.
    wal: Option<FileIdentity>,
}

impl AuditStore {
    /// Opens (creating with mode 0600 if needed) and migrates the database.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        // absolute: a path that begins with `file:` is then never read as
        // an SQLite URI naming another file
        let path = &std::path::absolute(path)
            .with_context(|| format!("bad database path {}", path.display()))?;
        create_private(path)
            .with_context(|| format!("cannot create the audit database {}", path.display()))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the audit database {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .with_context(|| format!("cannot apply the migrations to {}", path.display()))?;
        let identity = FileIdentity::of(path).with_context(|| {
            format!(
                "the audit database {} vanished as it was opened",
                path.display()
            )
        })?;
        let wal = FileIdentity::of(&suffixed(path, "-wal"));
        let store = Self {
            pool,
            file: Some((path.to_path_buf(), identity)),
            wal,
        };
        store
            .seal_states()
            .await
            .with_context(|| format!("cannot record the runs' states in {}", path.display()))?;
        store.check_states().await?;
        Ok(store)
    }

    /// Opens an existing database for queries only; works while the daemon
    /// writes (WAL).
    pub async fn open_read_only(path: &Path) -> anyhow::Result<Self> {
        let path = &std::path::absolute(path)
            .with_context(|| format!("bad database path {}", path.display()))?;
        if !path.exists() {
            anyhow::bail!(
                "the audit database {} does not exist yet: run a cycle first (zd-retention once) or check audit.database",
                path.display()
            );
        }
        // a file name, not a URL: `?` and `%` in a path are just characters
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the audit database {}", path.display()))?;
        Ok(Self {
            pool,
            file: None,
            wal: None,
        })
    }

    /// Fails when the database file a writer opened was removed or replaced
    /// since (device and inode), before anything more is written.
    fn check_file(&self) -> anyhow::Result<()> {
        if let Some((path, identity)) = &self.file
            && FileIdentity::of(path) != Some(*identity)
        {
            // our log belongs to the file that went: left at this path,
            // SQLite would replay it onto whatever file takes the name
            let wal_path = suffixed(path, "-wal");
            if self.wal.is_some() && FileIdentity::of(&wal_path) == self.wal {
                let _ = std::fs::remove_file(&wal_path);
                let _ = std::fs::remove_file(suffixed(path, "-shm"));
            }
            anyhow::bail!(
                "the audit database {} was removed or replaced while in use: what this process writes would be lost with it, so it stops; restore the database (from a backup or the moved file) before running again",
                path.display()
            );
        }
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes runs left `running` by a crash as `interrupted`; returns them.
    pub async fn close_interrupted_runs(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<RunId>> {
        self.check_file()?;
        let ids: Vec<RunId> =
            sqlx::query_scalar("SELECT id FROM runs WHERE status = 'running' ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        if !ids.is_empty() {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE runs SET status = 'interrupted', finished_at = ?, error = COALESCE(error, 'the process stopped before the run ended') WHERE status = 'running'")
                .bind(timestamp(now))
                .execute(&mut *tx)
                .await?;
            for id in &ids {
                chain_append(&mut tx, Chained::RunsState, *id, *id).await?;
            }
            tx.commit().await?;
        }
        Ok(ids)
    }

    /// Jobs not yet terminal (from any run), oldest first.
    pub async fn open_jobs(&self) -> anyhow::Result<Vec<JobRow>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "{JOB_COLUMNS} WHERE status IN ('pending', 'queued', 'working') ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn start_run(
        &self,
        trigger: Trigger,
        dry_run: bool,
        config_hash: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<RunId> {
        self.check_file()?;
        let mut tx = self.pool.begin().await?;
        let id = sqlx::query("INSERT INTO runs (trigger, started_at, dry_run, config_hash, status) VALUES (?, ?, ?, ?, 'running')")
            .bind(trigger.as_str())
            .bind(timestamp(now))
            .bind(dry_run)
            .bind(config_hash)
            .execute(&mut *tx)
            .await
            .context("cannot record the start of the run")?
            .last_insert_rowid();
        chain_append(&mut tx, Chained::Runs, id, id).await?;
        chain_append(&mut tx, Chained::RunsState, id, id).await?;
        tx.commit()
            .await
            .context("cannot record the start of the run")?;
        Ok(id)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE runs SET status = ?, finished_at = ?, scanned = ?, matched = ?, purged = ?, failed = ?, unknown = ?, list_requests = ?, early_stop = ?, error = ?, scan = ?, scan_reason = ?, max_listing_age_ms = ?, step = ?, high_water = ?, decisions_recorded = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(timestamp(now))
        .bind(counts.scanned as i64)
        .bind(counts.matched as i64)
        .bind(counts.purged as i64)
        .bind(counts.failed as i64)
        .bind(counts.unknown as i64)
        .bind(counts.list_requests as i64)
        .bind(counts.early_stop)
        .bind(error)
        .bind(counts.scan.as_deref())
        .bind(counts.scan_reason.as_deref())
        .bind(counts.max_listing_age_ms.map(|m| m as i64))
        .bind(counts.step.as_deref())
        .bind(counts.high_water.map(timestamp))
        .bind(counts.decisions_recorded.map(|n| n as i64))
        .bind(run)
        .execute(&mut *tx)
        .await?;
        chain_append(&mut tx, Chained::RunsState, run, run).await?;
        sqlx::query("DELETE FROM run_decision_counts WHERE run_id = ?")
            .bind(run)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO run_decision_counts (run_id, decision, rule, count)
             SELECT run_id, decision, rule, COUNT(*) FROM decisions WHERE run_id = ? GROUP BY decision, rule",
        )
        .bind(run)
        .execute(&mut *tx)
        .await?;
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
        let mut tx = self.pool.begin().await?;
        let mut last = 0;
        let mut digests = String::with_capacity(decisions.len() * 16);
        // 11 binds a row keep each statement under SQLite's 32766 variables
        for (chunk, chunk_texts) in decisions.chunks(500).zip(texts.chunks(500)) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO decisions (run_id, ticket_id, deleted_at, actor_id, previous_state, subject, rule, decision, decided_at, actor_name, subject_tags) ",
            );
            q.push_values(
                chunk.iter().zip(chunk_texts),
                |mut b, (d, (deleted, decided))| {
                    b.push_bind(run)
                        .push_bind(d.ticket_id as i64)
                        .push_bind(deleted.as_deref())
                        .push_bind(d.actor_id.map(|a| a as i64))
                        .push_bind(d.previous_state.as_deref())
                        .push_bind(d.subject.as_deref())
                        .push_bind(d.rule.as_deref())
                        .push_bind(d.decision.as_str())
                        .push_bind(decided.as_str())
                        .push_bind(d.actor_name.as_deref())
                        .push_bind(d.subject_tags.as_deref());
                },
            );
            last = q.build().execute(&mut *tx).await?.last_insert_rowid();
            for (d, (deleted, decided)) in chunk.iter().zip(chunk_texts) {
                let (ticket, actor) = (d.ticket_id.to_string(), d.actor_id.map(|a| a.to_string()));
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
                        d.subject_tags.as_deref(),
                    ],
                ));
            }
        }
        // one writer in the transaction: the new rows have consecutive ids
        let first = last - decisions.len() as i64 + 1;
        chain_append_digests(&mut tx, Chained::Decisions, first, last, digests).await?;
        ledger::upsert_decisions(&mut tx, run, decisions).await?;
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
        let mut tx = self.pool.begin().await?;
        let id = sqlx::query("INSERT INTO jobs (run_id, kind, ticket_ids, ticket_count, recorded_at, status) VALUES (?, ?, ?, ?, ?, 'pending')")
            .bind(run)
            .bind(kind.as_str())
            .bind(batch.to_query())
            .bind(batch.len() as i64)
            .bind(timestamp(now))
            .execute(&mut *tx)
            .await
            .context("cannot record the request before sending it")?
            .last_insert_rowid();
        chain_append(&mut tx, Chained::Jobs, id, id).await?;
        chain_append(&mut tx, Chained::JobsState, id, id).await?;
        if kind == RequestKind::DestroyMany {
            ledger::apply_request(&mut tx, batch.ids(), &timestamp(now)).await?;
        }
        tx.commit()
            .await
            .context("cannot record the request before sending it")?;
        Ok(id)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE jobs SET zendesk_job_id = ?, status = ?, message = ?, answered_at = ? WHERE id = ?")
            .bind(zendesk_job_id)
            .bind(status.as_str())
            .bind(message)
            .bind(timestamp(now))
            .bind(job)
            .execute(&mut *tx)
            .await
            .context("cannot record Zendesk's answer")?;
        chain_append(&mut tx, Chained::JobsState, job, job).await?;
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE jobs SET status = ?, message = COALESCE(?, message), finished_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(message)
            .bind(&at)
            .bind(job)
            .execute(&mut *tx)
            .await?;
        chain_append(&mut tx, Chained::JobsState, job, job).await?;
        insert_outcomes(&mut tx, run, Some(job), tickets, outcome, message, &at).await?;
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
        let mut tx = self.pool.begin().await?;
        insert_outcomes(&mut tx, run, job, tickets, outcome, detail, &timestamp(now)).await?;
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
        Ok(
            sqlx::query("INSERT INTO probes (probed_at, base_url, findings) VALUES (?, ?, ?)")
                .bind(timestamp(now))
                .bind(base_url)
                .bind(findings)
                .execute(&self.pool)
                .await
                .context("cannot record the probe's findings")?
                .last_insert_rowid(),
        )
    }

    /// The newest probe's findings for an account, if any.
    pub async fn latest_probe(&self, base_url: &str) -> anyhow::Result<Option<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT probed_at, findings FROM probes WHERE base_url = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(base_url)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn run(&self, id: RunId) -> anyhow::Result<Option<RunRow>> {
        Ok(
            sqlx::query_as(AssertSqlSafe(format!("{RUN_COLUMNS} WHERE id = ?")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The latest runs, newest first.
    pub async fn runs(
        &self,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> anyhow::Result<Vec<RunRow>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "{RUN_COLUMNS} WHERE started_at >= ? ORDER BY id DESC LIMIT ?"
        )))
        .bind(since.map(timestamp).unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn jobs_of_run(&self, run: RunId) -> anyhow::Result<Vec<JobRow>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "{JOB_COLUMNS} WHERE run_id = ? ORDER BY id"
        )))
        .bind(run)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Decisions of a run per decision and rule.
    pub async fn decision_counts(
        &self,
        run: RunId,
    ) -> anyhow::Result<Vec<(String, Option<String>, i64)>> {
        let rows = sqlx::query("SELECT decision, rule, COUNT(*) AS n FROM decisions WHERE run_id = ? GROUP BY decision, rule ORDER BY decision, rule")
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("decision")?, r.try_get("rule")?, r.try_get("n")?)))
            .collect()
    }

    /// Everything recorded about one ticket, oldest first.
    pub async fn ticket_history(&self, ticket: TicketId) -> anyhow::Result<Vec<TicketEvent>> {
        let rows: Vec<TicketEvent> = sqlx::query_as(
            "SELECT at, run_id, kind, what, rule, job, detail FROM (
                SELECT d.decided_at AS at, d.run_id, 'decision' AS kind, d.decision AS what, d.rule,
                       NULL AS job, NULL AS detail, 0 AS ord, d.id AS seq
                FROM decisions d WHERE d.ticket_id = ?1
                UNION ALL
                SELECT o.recorded_at, o.run_id, 'outcome', o.outcome, NULL,
                       (SELECT COALESCE(j.zendesk_job_id, 'request ' || j.id) FROM jobs j WHERE j.id = o.job_id),
                       o.detail, 1, o.id
                FROM outcomes o WHERE o.ticket_id = ?1
             ) ORDER BY at, ord, seq",
        )
        .bind(ticket as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Ticket ids a run decided to purge, sorted.
    pub async fn selected_tickets(&self, run: RunId) -> anyhow::Result<Vec<TicketId>> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT ticket_id FROM decisions WHERE run_id = ? AND decision = 'purge' ORDER BY ticket_id")
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().map(|i| i as TicketId).collect())
    }

    /// Ticket ids with a given outcome in a run, sorted.
    pub async fn tickets_with_outcome(
        &self,
        run: RunId,
        outcome: Outcome,
    ) -> anyhow::Result<Vec<TicketId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT ticket_id FROM outcomes WHERE run_id = ? AND outcome = ? ORDER BY ticket_id",
        )
        .bind(run)
        .bind(outcome.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(|i| i as TicketId).collect())
    }

    /// Outcomes of a run per outcome.
    pub async fn outcome_counts(&self, run: RunId) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT outcome, COUNT(*) AS n FROM outcomes WHERE run_id = ? GROUP BY outcome ORDER BY outcome")
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("outcome")?, r.try_get("n")?)))
            .collect()
    }

    /// Purge decisions per day and rule (`selected`), newest day first.
    pub async fn stats_by_day(&self, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<StatRow>> {
        Ok(sqlx::query_as(
            "SELECT substr(decided_at, 1, 10) AS key, rule, COUNT(*) AS count FROM decisions
             WHERE decision IN ('purge', 'would_purge') AND decided_at >= ?
             GROUP BY key, rule ORDER BY key DESC, rule",
        )
        .bind(since.map(timestamp).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Runs and their figures per day, newest first.
    pub async fn runs_by_day(&self, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<DayRuns>> {
        let rows: Vec<DayRuns> = sqlx::query_as(
            "SELECT substr(started_at, 1, 10) AS day, COUNT(*) AS runs, SUM(scanned) AS scanned, SUM(matched) AS matched,
                    SUM(purged) AS purged, SUM(failed) AS failed, SUM(status = 'failed') AS failed_runs
             FROM runs WHERE started_at >= ? GROUP BY day ORDER BY day DESC",
        )
        .bind(since.map(timestamp).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Decisions per rule and kind.
    pub async fn stats_by_rule(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<StatRow>> {
        Ok(sqlx::query_as(
            "SELECT c.decision AS key, c.rule, SUM(c.count) AS count FROM run_decision_counts c JOIN runs r ON r.id = c.run_id
             WHERE r.started_at >= ? GROUP BY c.rule, c.decision ORDER BY c.rule, c.decision",
        )
        .bind(since.map(timestamp).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Outcomes per kind.
    pub async fn stats_by_outcome(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<StatRow>> {
        Ok(sqlx::query_as(
            "SELECT outcome AS key, NULL AS rule, COUNT(*) AS count FROM outcomes WHERE recorded_at >= ? GROUP BY outcome ORDER BY outcome",
        )
        .bind(since.map(timestamp).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Fills an empty database with `runs` synthetic runs of `per_run`
    /// decisions each (a tenth of them purges, each with a job and an
    /// outcome), for timing the audit queries at scale.
    pub async fn generate_synthetic(&self, runs: i64, per_run: i64) -> anyhow::Result<()> {
        let start = "2026-01-01T00:00:00";
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < ?1)
             INSERT INTO runs (id, trigger, started_at, finished_at, dry_run, config_hash, status, scanned, matched, purged, list_requests)
             SELECT n, 'cron', strftime('%Y-%m-%dT%H:%M:%fZ', ?2, '+' || (n * 15) || ' minutes'),
                    strftime('%Y-%m-%dT%H:%M:%fZ', ?2, '+' || (n * 15 + 3) || ' minutes'), 0, 'synthetic', 'completed',
                    ?3, ?3 / 10, ?3 / 10, ?3 / 100 FROM r",
        )
        .bind(runs)
        .bind(start)
        .bind(per_run)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "WITH RECURSIVE i(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM i WHERE k < ?1 - 1)
             INSERT INTO decisions (run_id, ticket_id, deleted_at, actor_id, previous_state, rule, decision, decided_at)
             SELECT runs.id, 1000000 + (runs.id * 37 + k) % 200000, runs.started_at, 1001 + k % 5,
                    CASE k % 3 WHEN 0 THEN 'closed' WHEN 1 THEN 'solved' ELSE 'open' END,
                    CASE WHEN k % 10 = 0 THEN 'closed-after-7-days' WHEN k % 10 = 1 THEN 'legal-hold' ELSE NULL END,
                    CASE WHEN k % 10 = 0 THEN 'purge' WHEN k % 10 = 1 THEN 'keep_rule' ELSE 'keep_no_rule' END,
                    runs.started_at
             FROM runs CROSS JOIN i",
        )
        .bind(per_run)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO jobs (id, run_id, kind, zendesk_job_id, ticket_ids, ticket_count, recorded_at, answered_at, finished_at, status, message)
             SELECT (run_id * 1000) + (ticket_id % 1000 / 100), run_id, 'destroy_many', printf('%032x', run_id * 1000 + ticket_id % 1000 / 100), '', 100,
                    decided_at, decided_at, decided_at, 'completed', 'synthetic'
             FROM decisions WHERE decision = 'purge' GROUP BY run_id, ticket_id % 1000 / 100",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO outcomes (run_id, job_id, ticket_id, outcome, detail, recorded_at)
             SELECT run_id, (run_id * 1000) + (ticket_id % 1000 / 100), ticket_id, 'purged', 'synthetic', decided_at
             FROM decisions WHERE decision = 'purge'",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO run_decision_counts (run_id, decision, rule, count)
             SELECT run_id, decision, rule, COUNT(*) FROM decisions GROUP BY run_id, decision, rule",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        sqlx::query("ANALYZE").execute(&self.pool).await?;
        Ok(())
    }

    /// Decisions matching the filter, newest first, with each ticket's last
    /// outcome in the same run. With an outcome filter the search starts
    /// from the outcomes (indexed by kind and time).
    pub async fn search(&self, f: &SearchFilter) -> anyhow::Result<Vec<SearchRow>> {
        let since = f.since.map(timestamp).unwrap_or_default();
        let until = f.until.map(timestamp).unwrap_or_else(|| "9999".into());
        let sql = if f.outcome.is_some() {
            "SELECT d.decided_at AS at, d.run_id, d.ticket_id, d.decision, d.rule, d.actor_id, d.deleted_at, d.previous_state,
                    o.outcome, o.recorded_at AS outcome_at, o.detail
             FROM outcomes o JOIN decisions d ON d.id = (
                 SELECT MAX(d2.id) FROM decisions d2 WHERE d2.ticket_id = o.ticket_id AND d2.decided_at <= o.recorded_at)
             WHERE o.outcome = ?1 AND o.recorded_at >= ?2 AND o.recorded_at < ?3
               AND (?4 IS NULL OR d.rule = ?4) AND (?5 IS NULL OR d.actor_id = ?5)
               AND (?6 IS NULL OR d.decision = ?6) AND (?7 IS NULL OR d.ticket_id = ?7)
             ORDER BY o.id DESC LIMIT ?8"
        } else {
            "SELECT d.decided_at AS at, d.run_id, d.ticket_id, d.decision, d.rule, d.actor_id, d.deleted_at, d.previous_state,
                    o.outcome, o.recorded_at AS outcome_at, o.detail
             FROM decisions d LEFT JOIN outcomes o ON o.id = (
                 SELECT MAX(o2.id) FROM outcomes o2 WHERE o2.ticket_id = d.ticket_id AND o2.run_id = d.run_id)
             WHERE (?1 IS NULL OR 1) AND d.decided_at >= ?2 AND d.decided_at < ?3
               AND (?4 IS NULL OR d.rule = ?4) AND (?5 IS NULL OR d.actor_id = ?5)
               AND (?6 IS NULL OR d.decision = ?6) AND (?7 IS NULL OR d.ticket_id = ?7)
             ORDER BY d.id DESC LIMIT ?8"
        };
        Ok(sqlx::query_as(sql)
            .bind(f.outcome.as_deref())
            .bind(since)
            .bind(until)
            .bind(f.rule.as_deref())
            .bind(f.actor)
            .bind(f.decision.as_deref())
            .bind(f.ticket)
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every decision since `since`, oldest first, with its outcome in the
    /// same run; streamed to `each` so that millions of rows fit in memory.
    pub async fn export(
        &self,
        since: Option<DateTime<Utc>>,
        mut each: impl FnMut(SearchRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        use futures::TryStreamExt;
        let mut rows = sqlx::query_as::<_, SearchRow>(
            "SELECT d.decided_at AS at, d.run_id, d.ticket_id, d.decision, d.rule, d.actor_id, d.deleted_at, d.previous_state,
                    o.outcome, o.recorded_at AS outcome_at, o.detail
             FROM decisions d LEFT JOIN outcomes o ON o.id = (
                 SELECT MAX(o2.id) FROM outcomes o2 WHERE o2.ticket_id = d.ticket_id AND o2.run_id = d.run_id)
             WHERE d.decided_at >= ? ORDER BY d.id",
        )
        .bind(since.map(timestamp).unwrap_or_default())
        .fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await? {
            each(row)?;
            n += 1;
        }
        Ok(n)
    }

    /// Recomputes the hash chain; names the first row changed or removed,
    /// or added outside the chain.
    pub async fn verify_chain(&self) -> anyhow::Result<ChainReport> {
        use futures::TryStreamExt;
        let mut conn = self.pool.acquire().await?;
        let entries: Vec<(i64, String, i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT seq, tbl, first_id, last_id, digests, prev, hash FROM audit_chain ORDER BY seq",
        )
        .fetch(&mut *conn)
        .try_collect()
        .await?;
        let mut report = ChainReport {
            entries: entries.len() as i64,
            rows: 0,
            pruned: 0,
            head: "genesis".into(),
            problem: None,
        };
        let mut covered: HashMap<&'static str, i64> = HashMap::new();
        // rows that `audit.keep_details` pruned: absent by design (the
        // pruned table is itself chained, below)
        let pruned: std::collections::HashSet<(String, i64)> =
            sqlx::query_as::<_, (String, i64)>("SELECT tbl, row_id FROM pruned")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
        // the row ranges each insert entry covers, per table
        let mut ranges: HashMap<&'static str, Vec<(i64, i64)>> = HashMap::new();
        // the latest recorded state of each run and job: (entry, digest)
        let mut states: HashMap<(&'static str, i64), (i64, String)> = HashMap::new();
        for (seq, tbl, first, last, digests, prev, hash) in &entries {
            if *prev != report.head {
                report.problem = Some(format!(
                    "chain entry {seq} does not follow entry {}: an entry was changed or removed",
                    seq - 1
                ));
                return Ok(report);
            }
            if entry_hash(prev, tbl, *first, *last, digests) != *hash {
                report.problem = Some(format!(
                    "chain entry {seq} ({tbl} rows {first} to {last}) was altered"
                ));
                return Ok(report);
            }
            let Some(table) = Chained::parse(tbl) else {
                report.problem = Some(format!("chain entry {seq} names an unknown table {tbl:?}"));
                return Ok(report);
            };
            if Chained::STATES.contains(&table) {
                // a state is checked against the latest one recorded, below
                for (i, id) in (*first..=*last).enumerate() {
                    let digest = digests.get(i * 16..i * 16 + 16).unwrap_or("").to_string();
                    states.insert((table.entry_name(), id), (*seq, digest));
                }
                report.head = hash.clone();
                continue;
            }
            ranges
                .entry(table.table())
                .or_default()
                .push((*first, *last));
            let current: HashMap<i64, String> = row_digests(&mut conn, table, *first, *last)
                .await?
                .into_iter()
                .collect();
            for (i, id) in (*first..=*last).enumerate() {
                let expected = digests.get(i * 16..i * 16 + 16).unwrap_or("");
                match current.get(&id) {
                    None if pruned.contains(&(tbl.clone(), id)) => report.pruned += 1,
                    None => {
                        report.problem =
                            Some(format!("row {id} of {tbl} was removed (chain entry {seq})"));
                        return Ok(report);
                    }
                    Some(d) if d != expected => {
                        report.problem =
                            Some(format!("row {id} of {tbl} was changed (chain entry {seq})"));
                        return Ok(report);
                    }
                    Some(_) => report.rows += 1,
                }
            }
            let top = covered.entry(table.table()).or_default();
            *top = (*top).max(*last);
            report.head = hash.clone();
        }
        for table in Chained::ALL {
            let unchained: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT MIN(id) FROM {} WHERE id > ?",
                table.table()
            )))
            .bind(covered.get(table.table()).copied().unwrap_or(0))
            .fetch_one(&mut *conn)
            .await?;
            if let Some(id) = unchained {
                report.problem = Some(format!(
                    "row {id} of {} is not in the chain: it was added outside zd-retention",
                    table.table()
                ));
                return Ok(report);
            }
            // ids the chain never gives out (zero, negative) and rows in
            // the gaps between the chained ranges
            let below: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT MIN(id) FROM {} WHERE id < 1",
                table.table()
            )))
            .fetch_one(&mut *conn)
            .await?;
            if let Some(id) = below {
                report.problem = Some(format!(
                    "row {id} of {} has an id the chain never gives out: it was added outside zd-retention",
                    table.table()
                ));
                return Ok(report);
            }
            let mut spans = ranges.remove(table.table()).unwrap_or_default();
            spans.sort_unstable();
            let mut next_expected = 1;
            for (first, last) in spans {
                if first > next_expected {
                    let stray: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT MIN(id) FROM {} WHERE id >= ? AND id < ?",
                        table.table()
                    )))
                    .bind(next_expected)
                    .bind(first)
                    .fetch_one(&mut *conn)
                    .await?;
                    if let Some(id) = stray {
                        report.problem = Some(format!(
                            "row {id} of {} is not in the chain: it was added outside zd-retention",
                            table.table()
                        ));
                        return Ok(report);
                    }
                }
                next_expected = next_expected.max(last + 1);
            }
        }
        // every run's and job's state as last recorded
        for table in Chained::STATES {
            let current = row_digests(&mut conn, table, i64::MIN, i64::MAX).await?;
            for (id, digest) in current {
                match states.get(&(table.entry_name(), id)) {
                    None => {
                        report.problem = Some(format!(
                            "row {id} of {} has no recorded state: it was added outside zd-retention",
                            table.table()
                        ));
                        return Ok(report);
                    }
                    Some((seq, recorded)) if *recorded != digest => {
                        report.problem = Some(format!(
                            "row {id} of {} was changed after its last recorded state (status, figures or job id; chain entry {seq})",
                            table.table()
                        ));
                        return Ok(report);
                    }
                    Some(_) => {}
                }
            }
        }
        // the derived counts that `audit run` and `audit stats` read
        let forged: Option<(i64, String)> = sqlx::query_as(
            "WITH whole AS (SELECT run_id FROM run_decision_counts
                            EXCEPT SELECT run_id FROM pruned WHERE tbl = 'decisions')
             SELECT run_id, decision FROM (
                 SELECT run_id, decision, rule, count FROM run_decision_counts
                 WHERE run_id IN whole
                 EXCEPT
                 SELECT run_id, decision, rule, COUNT(*) FROM decisions
                 WHERE run_id IN whole
                 GROUP BY run_id, decision, rule)
             UNION ALL
             SELECT run_id, decision FROM (
                 SELECT run_id, decision, rule, COUNT(*) FROM decisions
                 WHERE run_id IN whole
                 GROUP BY run_id, decision, rule
                 EXCEPT
                 SELECT run_id, decision, rule, count FROM run_decision_counts
                 WHERE run_id IN whole)
             LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((run, decision)) = forged {
            report.problem = Some(format!(
                "the decision counts of run {run} ({decision}) do not match its decisions: run_decision_counts was changed"
            ));
            return Ok(report);
        }
        Ok(report)
    }

    /// The chain's last entry number and hash (`genesis` before any).
    pub async fn chain_head(&self) -> anyhow::Result<(i64, String)> {
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(head.unwrap_or((0, "genesis".into())))
    }

    /// Whether an entry with this hash is in the chain.
    pub async fn chain_contains(&self, hash: &str) -> anyhow::Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_chain WHERE hash = ?")
                .bind(hash)
                .fetch_one(&self.pool)
                .await?
                > 0,
        )
    }

    /// A database written before the runs' and jobs' states were chained:
    /// their states as they are now are recorded once, so that from here on
    /// every change is covered (earlier changes were not, and cannot be).
    async fn seal_states(&self) -> anyhow::Result<()> {
        let sealed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_chain WHERE tbl IN ('runs.state', 'jobs.state')",
        )
        .fetch_one(&self.pool)
        .await?;
        if sealed > 0 {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (table, state) in [("runs", Chained::RunsState), ("jobs", Chained::JobsState)] {
            let ids: Vec<i64> =
                sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {table} ORDER BY id")))
                    .fetch_all(&mut *tx)
                    .await?;
            for id in ids {
                chain_append(&mut tx, state, id, id).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Checks that every run's and job's state is the one last chained: a
    /// writer never builds on a row changed outside zd-retention (a crash
    /// recovery would otherwise chain the forged values as its own). Cheap:
    /// runs and jobs are few, and an index finds each latest state.
    pub async fn check_states(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        for table in Chained::STATES {
            let latest: HashMap<i64, String> = sqlx::query_as::<_, (i64, String)>(
                "SELECT c.first_id, c.digests FROM audit_chain c
                 WHERE c.tbl = ? AND c.seq = (SELECT MAX(seq) FROM audit_chain WHERE tbl = c.tbl AND first_id = c.first_id)",
            )
            .bind(table.entry_name())
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
            for (id, digest) in row_digests(&mut conn, table, i64::MIN, i64::MAX).await? {
                if latest.get(&id) != Some(&digest) {
                    anyhow::bail!(
                        "row {id} of {} was changed outside zd-retention since its last recorded state: the audit database is not trusted, and nothing more is written to it; run `zd-retention audit verify` and restore the database from a backup",
                        table.table()
                    );
                }
            }
        }
        Ok(())
    }

    /// Takes and releases the write lock: fails when the database cannot be
    /// written (read-only file, full disk, held too long by another writer).
    pub async fn check_writable(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        sqlx::query("ROLLBACK").execute(&mut *conn).await?;
        Ok(())
    }

    /// Tickets of a purge request per rule that selected them.
    pub async fn rules_of_request(
        &self,
        job: JobRowId,
        tickets: &[TicketId],
    ) -> anyhow::Result<Vec<(String, i64)>> {
        let ids = format!(
            "[{}]",
            tickets
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        // the ids outer (CROSS JOIN), each looked up by ticket: the run index
        // would scan every purge decision of the run once per id
        let rows = sqlx::query(
            "SELECT COALESCE(d.rule, '(manual)') AS rule, COUNT(*) AS n
             FROM json_each(?1) AS t CROSS JOIN decisions AS d INDEXED BY decisions_ticket
             WHERE d.ticket_id = t.value AND d.decision = 'purge'
               AND d.run_id = (SELECT run_id FROM jobs WHERE id = ?2)
             GROUP BY d.rule",
        )
        .bind(ids)
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("rule")?, r.try_get("n")?)))
            .collect()
    }

    /// `PRAGMA integrity_check`'s answer (`ok` when sound).
    pub async fn integrity_check(&self) -> anyhow::Result<String> {
        Ok(sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_outcomes(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
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
    let mut last = 0;
    let (run_text, job_text) = (run.to_string(), job.map(|j| j.to_string()));
    let mut digests = String::with_capacity(tickets.len() * 16);
    for chunk in tickets.chunks(500) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO outcomes (run_id, job_id, ticket_id, outcome, detail, recorded_at) ",
        );
        q.push_values(chunk, |mut b, t| {
            b.push_bind(run)
                .push_bind(job)
                .push_bind(*t as i64)
                .push_bind(outcome.as_str())
                .push_bind(detail)
                .push_bind(at);
        });
        last = q.build().execute(&mut **tx).await?.last_insert_rowid();
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

/// The tables the chain covers, with their columns that never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chained {
    Runs,
    Decisions,
    Jobs,
    Outcomes,
    /// Rows pruned by `audit.keep_details`.
    Pruned,
    /// The columns of a run that change (status, figures, error): each
    /// change appends their new values, so an UPDATE outside is seen.
    RunsState,
    /// The columns of a job that change (Zendesk's job id, status, times).
    JobsState,
}

impl Chained {
    /// The tables whose rows are inserted under the chain.
    const ALL: [Chained; 5] = [
        Chained::Runs,
        Chained::Decisions,
        Chained::Jobs,
        Chained::Outcomes,
        Chained::Pruned,
    ];
    /// The mutable states, chained at every change.
    const STATES: [Chained; 2] = [Chained::RunsState, Chained::JobsState];

    fn table(self) -> &'static str {
        match self {
            Self::Runs | Self::RunsState => "runs",
            Self::Decisions => "decisions",
            Self::Jobs | Self::JobsState => "jobs",
            Self::Outcomes => "outcomes",
            Self::Pruned => "pruned",
        }
    }

    /// The name a chain entry carries.
    fn entry_name(self) -> &'static str {
        match self {
            Self::RunsState => "runs.state",
            Self::JobsState => "jobs.state",
            other => other.table(),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::STATES)
            .find(|c| c.entry_name() == name)
    }

    /// How many chained columns the first schema had; later ones follow.
    fn base_columns(self) -> usize {
        match self {
            Self::RunsState => 13,
            Self::Decisions => 9,
            _ => usize::MAX,
        }
    }

    /// Every chained column as text, in a fixed order.
    fn select(self) -> &'static str {
        match self {
            Self::Runs => {
                "SELECT id, CAST(trigger AS TEXT), CAST(started_at AS TEXT), CAST(dry_run AS TEXT), CAST(config_hash AS TEXT) FROM runs WHERE id BETWEEN ? AND ? ORDER BY id"
            }
            Self::Decisions => {
                "SELECT id, CAST(run_id AS TEXT), CAST(ticket_id AS TEXT), CAST(deleted_at AS TEXT), CAST(actor_id AS TEXT), CAST(previous_state AS TEXT), CAST(subject AS TEXT), CAST(rule AS TEXT), CAST(decision AS TEXT), CAST(decided_at AS TEXT), CAST(actor_name AS TEXT), CAST(subject_tags AS TEXT) FROM decisions WHERE id BETWEEN ? AND ? ORDER BY id"
            }
            Self::Jobs => {
                "SELECT id, CAST(run_id AS TEXT), CAST(kind AS TEXT), CAST(ticket_ids AS TEXT), CAST(ticket_count AS TEXT), CAST(recorded_at AS TEXT) FROM jobs WHERE id BETWEEN ? AND ? ORDER BY id"
            }
            Self::Outcomes => {
                "SELECT id, CAST(run_id AS TEXT), CAST(job_id AS TEXT), CAST(ticket_id AS TEXT), CAST(outcome AS TEXT), CAST(detail AS TEXT), CAST(recorded_at AS TEXT) FROM outcomes WHERE id BETWEEN ? AND ? ORDER BY id"
            }
            Self::Pruned => {
                "SELECT id, CAST(tbl AS TEXT), CAST(row_id AS TEXT), CAST(run_id AS TEXT), CAST(what AS TEXT), CAST(pruned_at AS TEXT) FROM pruned WHERE id BETWEEN ? AND ? ORDER BY id"
            }
            Self::RunsState => {
                "SELECT id, CAST(finished_at AS TEXT), CAST(status AS TEXT), CAST(scanned AS TEXT), CAST(matched AS TEXT), CAST(purged AS TEXT), CAST(failed AS TEXT), CAST(unknown AS TEXT), CAST(list_requests AS TEXT), CAST(early_stop AS TEXT), CAST(error AS TEXT), CAST(scan AS TEXT), CAST(scan_reason AS TEXT), CAST(max_listing_age_ms AS TEXT), CAST(step AS TEXT), CAST(high_water AS TEXT), CAST(decisions_recorded AS TEXT) FROM runs WHERE id BETWEEN ? AND ? ORDER BY id"
            }
            Self::JobsState => {
                "SELECT id, CAST(zendesk_job_id AS TEXT), CAST(answered_at AS TEXT), CAST(finished_at AS TEXT), CAST(status AS TEXT), CAST(message AS TEXT) FROM jobs WHERE id BETWEEN ? AND ? ORDER BY id"
            }
        }
    }
}

/// Each row's id and a 16-hex digest of its chained columns.
async fn row_digests(
    conn: &mut sqlx::SqliteConnection,
    table: Chained,
    first: i64,
    last: i64,
) -> anyhow::Result<Vec<(i64, String)>> {
    let rows = sqlx::query(table.select())
        .bind(first)
        .bind(last)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get(0)?;
            let values = (1..r.len())
                .map(|i| r.try_get::<Option<String>, _>(i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((id, row_digest(table, values.iter().map(Option::as_deref))))
        })
        .collect()
}

fn entry_hash(prev: &str, table: &str, first: i64, last: i64, digests: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{prev}\x1e{table}\x1e{first}\x1e{last}\x1e{digests}").as_bytes(),
    ))
}

/// Appends a chain entry for rows `first..=last` just written in `tx`. Called
/// after the rows' insert, which already holds the write lock, so that the
/// chain's head cannot move under it.
/// A row's digest: its chained columns as text (as `CAST(.. AS TEXT)` gives
/// them), NULL distinct from empty. Writers compute it from the values they
/// bind; `audit verify` from the values it reads back.
fn row_digest<'a>(table: Chained, values: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut values: Vec<Option<&str>> = values.into_iter().collect();
    // columns added later count only once set: rows chained before they
    // existed keep their digests
    while values.len() > table.base_columns() && values.last() == Some(&None) {
        values.pop();
    }
    let mut hasher = Sha256::new();
    hasher.update(table.entry_name().as_bytes());
    for value in values {
        hasher.update([0x1f]);
        match value {
            Some(v) => hasher.update(v.as_bytes()),
            None => hasher.update([0]),
        }
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Appends a chain entry for rows `first..=last` whose digests the writer
/// computed from what it inserted.
async fn chain_append_digests(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    table: Chained,
    first: i64,
    last: i64,
    digests: String,
) -> anyhow::Result<()> {
    let prev: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let prev = prev.unwrap_or_else(|| "genesis".into());
    let hash = entry_hash(&prev, table.entry_name(), first, last, &digests);
    sqlx::query("INSERT INTO audit_chain (tbl, first_id, last_id, digests, prev, hash) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(table.entry_name())
        .bind(first)
        .bind(last)
        .bind(digests)
        .bind(prev)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn chain_append(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    table: Chained,
    first: i64,
    last: i64,
) -> anyhow::Result<()> {
    // single rows (runs, jobs): read back rather than restate their columns
    let digests: String = row_digests(&mut *tx, table, first, last)
        .await?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    chain_append_digests(tx, table, first, last, digests).await
}

/// What `audit verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub entries: i64,
    pub rows: i64,
    /// Rows pruned by `audit.keep_details` (their digests checked in the
    /// chain, the rows themselves gone by design).
    pub pruned: i64,
    /// The chain's last hash: note it elsewhere to detect a truncated chain.
    pub head: String,
    /// The first problem, naming the table and row.
    pub problem: Option<String>,
}

const RUN_COLUMNS: &str = "SELECT id, trigger, started_at, finished_at, dry_run, config_hash, status, scanned, matched, purged, failed, unknown, list_requests, early_stop, error, scan, scan_reason, max_listing_age_ms, step, high_water, decisions_recorded FROM runs";
const JOB_COLUMNS: &str = "SELECT id, run_id, kind, zendesk_job_id, ticket_ids, ticket_count, recorded_at, answered_at, finished_at, status, message FROM jobs";

/// Creates the database file readable by its owner only, if it is new.
pub(crate) fn create_private(path: &Path) -> std::io::Result<()> {
    // never through a symbolic link (a dangling one would have SQLite
    // create its target with the default mode, elsewhere)
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            return Err(std::io::Error::other(
                "it is a symbolic link: point audit.database at the file itself",
            ));
        }
        return Ok(());
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // create_new is O_CREAT | O_EXCL: it never follows a link
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `path` with a suffix on its file name (`-wal`, `-shm`).
fn suffixed(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The identity of the database file while a writer uses it: its device
/// and inode, checked at every commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Parses the comma-separated ids of a job row.
pub fn parse_ids(text: &str) -> Vec<TicketId> {
    text.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

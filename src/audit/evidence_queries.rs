//! The queries behind the evidence documents: a run's deletion certificate
//! and a period's report. Read-only; the documents are rendered by
//! `crate::evidence`, which knows no SQL.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyArguments;
use sqlx::{Any, AssertSqlSafe};

use super::kinds::DecisionKind;
use super::records::RunRow;
use super::store::{AuditStore, RunId, timestamp};
use crate::ids::TicketId;

/// A config version as stored when a run first used it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ConfigVersion {
    pub hash: String,
    pub first_run: RunId,
    pub first_used: String,
    /// JSON: account, rules (in words), safety, schedule, audit.
    pub settings: String,
}

/// What ran a run.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct RunOriginRow {
    pub host: Option<String>,
    pub os_user: Option<String>,
    pub program_version: Option<String>,
}

/// How an in-doubt outcome's detail begins (`cycle::send` writes it, the
/// certificate counts it).
pub const IN_DOUBT_DETAIL: &str = "deleted again after the freshness read that cleared its purge";

/// A run's purge requests and their freshness windows: from the answer of
/// the read that cleared each to the request leaving.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct SendWindows {
    /// `destroy_many` requests the run sent.
    pub requests: i64,
    /// Of those, the ones whose window was measured (older runs: none).
    pub measured: i64,
    /// The longest window, in microseconds.
    pub max_us: Option<i64>,
    /// Of the measured ones, those followed by a read after them (the
    /// bracket).
    pub read_after: i64,
    /// Tickets of the run a read after their request showed deleted again:
    /// recorded `unknown`, not purged by their rule.
    pub in_doubt: i64,
}

/// One ticket purged for good, with how it was verified.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PurgedTicket {
    pub ticket_id: TicketId,
    /// The rule of the decision it was purged by.
    pub rule: Option<String>,
    /// The run that recorded the outcome.
    pub run_id: RunId,
    pub zendesk_job_id: Option<String>,
    /// When the `destroy_many` request was recorded, before it was sent.
    pub requested_at: Option<String>,
    /// When Zendesk's job was seen finished.
    pub completed_at: Option<String>,
    /// When the outcome was recorded.
    pub verified_at: String,
    /// How the outcome was established (the job's answer, a lookup, ...).
    pub detail: Option<String>,
    /// Only when `record_subjects` stored it.
    pub subject: Option<String>,
}

/// A failure or unknown outcome of a period, and how it settled since.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OpenOutcome {
    pub ticket_id: TicketId,
    pub run_id: RunId,
    pub outcome: String,
    pub recorded_at: String,
    pub detail: Option<String>,
    /// The ticket's latest outcome after this one, if any.
    pub settled_as: Option<String>,
    pub settled_at: Option<String>,
}

/// Tickets the ledger keeps now, per kind and rule.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeptCount {
    pub decision: DecisionKind,
    pub rule: Option<String>,
    pub tickets: i64,
}

/// Purges of one rule on one day.
#[derive(Debug, Clone, Serialize)]
pub struct DayRuleCount {
    pub day: String,
    pub rule: String,
    pub count: i64,
}

/// Runs of one status on one day.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DayStatusCount {
    pub day: String,
    pub status: String,
    pub count: i64,
}

/// The query that lists every purge outcome of a period: shown in the
/// report so that anyone can run it against the database.
pub const PURGES_OF_PERIOD_SQL: &str = "SELECT COUNT(*) FROM outcomes WHERE outcome = 'purged' AND recorded_at >= :since AND recorded_at < :until";

const PURGED_COLUMNS: &str =
    "SELECT o.ticket_id, o.run_id, j.zendesk_job_id, j.recorded_at AS requested_at,
        j.finished_at AS completed_at, o.recorded_at AS verified_at, o.detail,
        (SELECT d.rule FROM decisions d WHERE d.ticket_id = o.ticket_id
           AND d.run_id <= COALESCE(j.run_id, o.run_id)
           AND d.decision = 'purge' ORDER BY d.id DESC LIMIT 1) AS rule,
        (SELECT d.subject FROM decisions d WHERE d.ticket_id = o.ticket_id
           AND d.run_id <= COALESCE(j.run_id, o.run_id)
           ORDER BY d.id DESC LIMIT 1) AS subject
     FROM outcomes o LEFT JOIN jobs j ON j.id = o.job_id";

/// Which purges a document lists.
#[derive(Debug, Clone, Copy)]
pub enum PurgeScope {
    /// The tickets purged by the requests a run sent, whichever run saw
    /// their jobs end (a later one follows the jobs of a run that stopped),
    /// and those it recorded purged without a request of its own.
    Run(RunId),
    /// Every purge outcome recorded in `[since, until)`.
    Between(DateTime<Utc>, DateTime<Utc>),
}

impl PurgeScope {
    /// The listing's query, in its order, and its arguments.
    fn query(self) -> anyhow::Result<(String, AnyArguments)> {
        use sqlx::Arguments as _;
        let mut args = AnyArguments::default();
        let sql = match self {
            PurgeScope::Run(run) => {
                args.add(run).map_err(anyhow::Error::msg)?;
                format!(
                    "{PURGED_COLUMNS} WHERE COALESCE(j.run_id, o.run_id) = $1 AND o.outcome = 'purged' ORDER BY o.ticket_id"
                )
            }
            PurgeScope::Between(since, until) => {
                args.add(timestamp(since)).map_err(anyhow::Error::msg)?;
                args.add(timestamp(until)).map_err(anyhow::Error::msg)?;
                format!(
                    "{PURGED_COLUMNS} WHERE o.outcome = 'purged' AND o.recorded_at >= $1 AND o.recorded_at < $2 ORDER BY o.recorded_at, o.ticket_id"
                )
            }
        };
        Ok((sql, args))
    }
}

/// The purges a document lists, read from one snapshot of the database
/// (a read transaction): its counts and its rows agree even while a
/// daemon records more. The rows are streamed, never held: a report of a
/// million purges costs the memory of one.
pub struct PurgeListing {
    snapshot: Snapshot,
    scope: PurgeScope,
    /// How many rows the listing has.
    pub listed: i64,
    /// Whether any row has a subject (`record_subjects` stored it).
    pub with_subjects: bool,
}

/// A reader's one connection already holds its snapshot; a writer's
/// listing takes one of its own, rolled back when dropped.
enum Snapshot {
    Held(sqlx::pool::PoolConnection<Any>),
    Own(sqlx::Transaction<'static, Any>),
}

impl Snapshot {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        match self {
            Snapshot::Held(c) => c,
            Snapshot::Own(tx) => tx,
        }
    }
}

impl PurgeListing {
    /// What [`PURGES_OF_PERIOD_SQL`] counts in this snapshot.
    pub async fn count_purges_between(
        &mut self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let (since, until) = (timestamp(since), timestamp(until));
        Ok(sqlx::query_scalar(r#"SELECT COUNT(*) AS n FROM outcomes WHERE outcome = 'purged' AND recorded_at >= $1 AND recorded_at < $2"#)
        .bind(since)
        .bind(until)
        .fetch_one(self.snapshot.conn())
        .await?)
    }

    /// The listing's rows per day (of their outcome) and rule, by day.
    pub async fn by_day_and_rule(&mut self) -> anyhow::Result<Vec<DayRuleCount>> {
        let (sql, args) = self.scope.query()?;
        // runtime: the listing's text is its scope's (`PurgeScope::query`)
        let rows: Vec<(String, String, i64)> = sqlx::query_as_with(
            AssertSqlSafe(format!(
                "SELECT substr(verified_at, 1, 10) AS day, COALESCE(rule, '(no rule recorded)') AS rule, COUNT(*)
                 FROM ({sql}) AS sub GROUP BY day, rule ORDER BY day, rule"
            )),
            args,
        )
        .fetch_all(self.snapshot.conn())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(day, rule, count)| DayRuleCount { day, rule, count })
            .collect())
    }

    /// Hands each row to `each`, in the listing's order; the number of
    /// rows, checked against [`Self::listed`].
    pub async fn for_each(
        &mut self,
        mut each: impl FnMut(&PurgedTicket) -> anyhow::Result<()>,
    ) -> anyhow::Result<i64> {
        use futures::TryStreamExt;
        let (sql, args) = self.scope.query()?;
        // runtime: the listing's text is its scope's (`PurgeScope::query`)
        let mut rows = sqlx::query_as_with::<_, PurgedTicket, _>(AssertSqlSafe(sql), args)
            .fetch(self.snapshot.conn());
        let mut n = 0;
        while let Some(row) = rows.try_next().await? {
            each(&row)?;
            n += 1;
        }
        anyhow::ensure!(
            n == self.listed,
            "the listing of purges gave {n} rows where its count said {}: the database changed under a read transaction; make the document again",
            self.listed
        );
        Ok(n)
    }
}

impl AuditStore {
    /// Opens the listing of `scope`'s purges on a snapshot of its own,
    /// with its count. Take it after every other query of a document: on
    /// a read-only store it holds the one connection until dropped.
    pub async fn purge_listing(&self, scope: PurgeScope) -> anyhow::Result<PurgeListing> {
        let mut snapshot = if self.is_reader() {
            Snapshot::Held(self.pool.acquire().await?)
        } else if self.is_pg() {
            // (a read-committed transaction would read each statement's
            // own snapshot: the count and the rows could disagree)
            Snapshot::Own(
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            )
        } else {
            Snapshot::Own(self.pool.begin().await?)
        };
        let (sql, args) = scope.query()?;
        // runtime: the listing's text is its scope's (`PurgeScope::query`)
        let (listed, with_subjects): (i64, i64) = sqlx::query_as_with(
            AssertSqlSafe(format!(
                "SELECT COUNT(*), COALESCE(MAX(CASE WHEN subject IS NOT NULL THEN 1 ELSE 0 END), 0) FROM ({sql}) AS listing"
            )),
            args,
        )
        .fetch_one(snapshot.conn())
        .await?;
        Ok(PurgeListing {
            snapshot,
            scope,
            listed,
            with_subjects: with_subjects != 0,
        })
    }

    /// The config version with this hash, or the one whose hash begins so
    /// (when exactly one does).
    pub async fn config_version(&self, hash: &str) -> anyhow::Result<Option<ConfigVersion>> {
        let prefix = format!(
            "{}%",
            hash.trim().to_ascii_lowercase().replace(['%', '_'], "")
        );
        let found: Vec<ConfigVersion> = sqlx::query_as::<_, ConfigVersion>("SELECT hash, first_run, first_used, settings FROM config_versions WHERE hash LIKE $1 ORDER BY id LIMIT 2")
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        if found.len() > 1 {
            anyhow::bail!(
                "more than one config version begins with {hash:?}: give more of the hash"
            );
        }
        Ok(found.into_iter().next())
    }

    /// What ran `run` (empty for runs recorded before migration 0009).
    pub async fn run_origin(&self, run: RunId) -> anyhow::Result<RunOriginRow> {
        Ok(sqlx::query_as::<_, RunOriginRow>(
            "SELECT host, os_user, program_version FROM runs WHERE id = $1",
        )
        .bind(run)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or_default())
    }

    /// A run's purge requests and their freshness windows.
    pub async fn send_windows_of_run(&self, run: RunId) -> anyhow::Result<SendWindows> {
        let mut w: SendWindows = sqlx::query_as::<_, SendWindows>(r#"SELECT COUNT(*) AS requests, COUNT(send_window_us) AS measured, MAX(send_window_us) AS max_us, COUNT(after_read_at) AS read_after, 0 AS in_doubt FROM jobs WHERE run_id = $1 AND kind = 'destroy_many' AND status NOT IN ('rate_limited', 'withdrawn')"#)
        .bind(run)
        .fetch_one(&self.pool)
        .await?;
        w.in_doubt = sqlx::query_scalar(r#"SELECT COUNT(*) AS n FROM outcomes o JOIN jobs j ON j.id = o.job_id WHERE j.run_id = $1 AND o.outcome = 'unknown' AND substr(o.detail, 1, length($2)) = $3"#)
        .bind(run)
        .bind(IN_DOUBT_DETAIL)
        .bind(IN_DOUBT_DETAIL)
        .fetch_one(&self.pool)
        .await?;
        Ok(w)
    }

    /// Runs started in `[since, until)`, oldest first.
    pub async fn runs_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RunRow>> {
        let (since, until) = (timestamp(since), timestamp(until));
        Ok(sqlx::query_as::<_, RunRow>(r#"SELECT id, trigger AS trigger, started_at, finished_at, dry_run AS dry_run, config_hash, status AS status, scanned, matched, purged, failed, unknown, list_requests, early_stop AS early_stop, error, scan AS scan, scan_reason, max_listing_age_ms, step AS step, high_water, decisions_recorded
               FROM runs WHERE started_at >= $1 AND started_at < $2 ORDER BY id"#)
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Runs that had not ended normally and overlap `[since, until)`: still
    /// `running` (or stopped without a later start closing them) or
    /// `interrupted`, whenever they started, oldest first.
    pub async fn unfinished_runs_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RunRow>> {
        let (since, until) = (timestamp(since), timestamp(until));
        Ok(sqlx::query_as::<_, RunRow>(r#"SELECT id, trigger AS trigger, started_at, finished_at, dry_run AS dry_run, config_hash, status AS status, scanned, matched, purged, failed, unknown, list_requests, early_stop AS early_stop, error, scan AS scan, scan_reason, max_listing_age_ms, step AS step, high_water, decisions_recorded
               FROM runs WHERE status IN ('running', 'interrupted') AND started_at < $1 AND (finished_at IS NULL OR finished_at >= $2) ORDER BY id"#)
        .bind(until)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the first run recorded here started.
    pub async fn first_run_started(&self) -> anyhow::Result<Option<String>> {
        Ok(
            sqlx::query_scalar(r#"SELECT MIN(started_at) AS at FROM runs"#)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The latest run started before `at`: its config was in force then.
    pub async fn run_before(&self, at: DateTime<Utc>) -> anyhow::Result<Option<RunRow>> {
        let at = timestamp(at);
        Ok(sqlx::query_as::<_, RunRow>(r#"SELECT id, trigger AS trigger, started_at, finished_at, dry_run AS dry_run, config_hash, status AS status, scanned, matched, purged, failed, unknown, list_requests, early_stop AS early_stop, error, scan AS scan, scan_reason, max_listing_age_ms, step AS step, high_water, decisions_recorded
               FROM runs WHERE started_at < $1 ORDER BY id DESC LIMIT 1"#)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Failed and unknown purge outcomes of `[since, until)`, each with the
    /// ticket's latest outcome since.
    pub async fn open_outcomes_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Vec<OpenOutcome>> {
        let (since, until) = (timestamp(since), timestamp(until));
        Ok(sqlx::query_as::<_, OpenOutcome>(r#"SELECT o.ticket_id AS ticket_id, o.run_id, o.outcome, o.recorded_at, o.detail,
                    (SELECT l.outcome FROM outcomes l WHERE l.ticket_id = o.ticket_id AND l.id > o.id ORDER BY l.id DESC LIMIT 1) AS settled_as,
                    (SELECT l.recorded_at FROM outcomes l WHERE l.ticket_id = o.ticket_id AND l.id > o.id ORDER BY l.id DESC LIMIT 1) AS settled_at
             FROM outcomes o
             WHERE o.outcome IN ('failed', 'unknown') AND o.recorded_at >= $1 AND o.recorded_at < $2
             ORDER BY o.recorded_at, o.ticket_id"#)
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Tickets the ledger holds as kept now, by keep reason and rule.
    pub async fn kept_now(&self) -> anyhow::Result<Vec<KeptCount>> {
        Ok(sqlx::query_as::<_, KeptCount>(
            r#"SELECT decision AS decision, rule, COUNT(*) AS tickets FROM ledger
             WHERE state = 'kept' AND decision IN ('keep_rule', 'keep_protected')
             GROUP BY decision, rule ORDER BY decision, rule"#,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Runs per day and status in `[since, until)`.
    pub async fn runs_by_day_and_status(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Vec<DayStatusCount>> {
        let (since, until) = (timestamp(since), timestamp(until));
        Ok(sqlx::query_as::<_, DayStatusCount>(
            r#"SELECT substr(started_at, 1, 10) AS day, status, COUNT(*) AS count FROM runs
             WHERE started_at >= $1 AND started_at < $2 GROUP BY 1, status ORDER BY 1, status"#,
        )
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }
}

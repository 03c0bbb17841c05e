//! The read-only questions `audit` answers: runs, jobs, a ticket's story,
//! statistics, search and export. Every filter is a bound parameter.

use chrono::{DateTime, Utc};

use super::encode::{sql_id, ticket_id};
use super::kinds::{DecisionKind, Outcome};
use super::records::{DayRuns, JobRow, RunRow, SearchFilter, SearchRow, StatRow, TicketEvent};
use super::store::{AuditStore, RunId, timestamp};
use crate::ids::TicketId;

impl AuditStore {
    pub async fn run(&self, id: RunId) -> anyhow::Result<Option<RunRow>> {
        Ok(sqlx::query_as::<_, RunRow>(r#"SELECT id, trigger AS trigger, started_at, finished_at, dry_run AS dry_run, config_hash, status AS status, scanned, matched, purged, failed, unknown, list_requests, early_stop AS early_stop, error, scan AS scan, scan_reason, max_listing_age_ms, step AS step, high_water, decisions_recorded
               FROM runs WHERE id = $1"#)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The latest runs, newest first.
    pub async fn runs(
        &self,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> anyhow::Result<Vec<RunRow>> {
        let since = since.map(timestamp).unwrap_or_default();
        Ok(sqlx::query_as::<_, RunRow>(r#"SELECT id, trigger AS trigger, started_at, finished_at, dry_run AS dry_run, config_hash, status AS status, scanned, matched, purged, failed, unknown, list_requests, early_stop AS early_stop, error, scan AS scan, scan_reason, max_listing_age_ms, step AS step, high_water, decisions_recorded
               FROM runs WHERE started_at >= $1 ORDER BY id DESC LIMIT $2"#)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn jobs_of_run(&self, run: RunId) -> anyhow::Result<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(r#"SELECT id, run_id, kind AS kind, zendesk_job_id, ticket_ids, ticket_count, recorded_at, answered_at, finished_at, status AS status, message
               FROM jobs WHERE run_id = $1 ORDER BY id"#)
        .bind(run)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Decisions of a run per decision and rule.
    pub async fn decision_counts(
        &self,
        run: RunId,
    ) -> anyhow::Result<Vec<(String, Option<String>, i64)>> {
        Ok(sqlx::query_as(r#"SELECT decision, rule, COUNT(*) AS n FROM decisions WHERE run_id = $1 GROUP BY decision, rule ORDER BY decision, rule"#)
        .bind(run)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Everything recorded about one ticket, oldest first.
    pub async fn ticket_history(&self, ticket: TicketId) -> anyhow::Result<Vec<TicketEvent>> {
        let ticket = sql_id(ticket);
        let rows: Vec<TicketEvent> = sqlx::query_as::<_, TicketEvent>(r#"SELECT at AS at, run_id AS run_id, kind AS kind, what AS what,
                      rule AS rule, job AS job, detail AS detail FROM (
                SELECT d.decided_at AS at, d.run_id, 'decision' AS kind, d.decision AS what, d.rule,
                       NULL AS job, NULL AS detail, 0 AS ord, d.id AS seq
                FROM decisions d WHERE d.ticket_id = $1
                UNION ALL
                SELECT o.recorded_at, o.run_id, 'outcome', o.outcome, NULL,
                       (SELECT COALESCE(j.zendesk_job_id, 'request ' || j.id) FROM jobs j WHERE j.id = o.job_id),
                       o.detail, 1, o.id
                FROM outcomes o WHERE o.ticket_id = $1
             ) AS sub ORDER BY 1, ord, seq"#)
        .bind(ticket)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Ticket ids a run decided to purge, sorted.
    pub async fn selected_tickets(&self, run: RunId) -> anyhow::Result<Vec<TicketId>> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT ticket_id FROM decisions WHERE run_id = $1 AND decision = 'purge' ORDER BY ticket_id")
        .bind(run)
        .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().map(ticket_id).collect())
    }

    /// Ticket ids with a given outcome in a run, sorted.
    pub async fn tickets_with_outcome(
        &self,
        run: RunId,
        outcome: Outcome,
    ) -> anyhow::Result<Vec<TicketId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT ticket_id FROM outcomes WHERE run_id = $1 AND outcome = $2 ORDER BY ticket_id",
        )
        .bind(run)
        .bind(outcome.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(ticket_id).collect())
    }

    /// Outcomes of a run per outcome.
    pub async fn outcome_counts(&self, run: RunId) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(r#"SELECT outcome, COUNT(*) AS n FROM outcomes WHERE run_id = $1 GROUP BY outcome ORDER BY outcome"#)
        .bind(run)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Purge decisions per day and rule (`selected`), newest day first.
    pub async fn stats_by_day(&self, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<StatRow>> {
        let since = since.map(timestamp).unwrap_or_default();
        Ok(sqlx::query_as::<_, StatRow>(
            r#"SELECT substr(decided_at, 1, 10) AS key, rule, COUNT(*) AS count FROM decisions
             WHERE decision IN ('purge', 'would_purge') AND decided_at >= $1
             GROUP BY 1, rule ORDER BY 1 DESC, rule"#,
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Runs and their figures per day, newest first.
    pub async fn runs_by_day(&self, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<DayRuns>> {
        let since = since.map(timestamp).unwrap_or_default();
        let rows: Vec<DayRuns> = sqlx::query_as::<_, DayRuns>(r#"SELECT substr(started_at, 1, 10) AS day, COUNT(*) AS runs, CAST(SUM(scanned) AS BIGINT) AS scanned, CAST(SUM(matched) AS BIGINT) AS matched,
                    CAST(SUM(purged) AS BIGINT) AS purged, CAST(SUM(failed) AS BIGINT) AS failed, CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed_runs
             FROM runs WHERE started_at >= $1 GROUP BY 1 ORDER BY 1 DESC"#)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Decisions per rule and kind.
    pub async fn stats_by_rule(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<StatRow>> {
        let since = since.map(timestamp).unwrap_or_default();
        Ok(sqlx::query_as::<_, StatRow>(r#"SELECT c.decision AS key, c.rule, CAST(SUM(c.count) AS BIGINT) AS count FROM run_decision_counts c JOIN runs r ON r.id = c.run_id
             WHERE r.started_at >= $1 GROUP BY c.rule, c.decision ORDER BY c.rule, c.decision"#)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Outcomes per kind.
    pub async fn stats_by_outcome(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<StatRow>> {
        let since = since.map(timestamp).unwrap_or_default();
        Ok(sqlx::query_as::<_, StatRow>(r#"SELECT outcome AS key, NULL AS rule, COUNT(*) AS count FROM outcomes WHERE recorded_at >= $1 GROUP BY outcome ORDER BY outcome"#)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Fills an empty database with `runs` synthetic runs of `per_run`
    /// decisions each (a tenth of them purges, each with a job and an
    /// outcome), for timing the audit queries at scale.
    pub async fn generate_synthetic(&self, runs: i64, per_run: i64) -> anyhow::Result<()> {
        if self.backend == super::store::Backend::Postgres {
            anyhow::bail!("synthetic histories are made on SQLite only");
        }
        let start = "2026-01-01T00:00:00";
        let mut tx = self.pool.begin().await?;
        sqlx::query("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < $1)
             INSERT INTO runs (id, trigger, started_at, finished_at, dry_run, config_hash, status, scanned, matched, purged, list_requests)
             SELECT n, 'cron', strftime('%Y-%m-%dT%H:%M:%fZ', $2, '+' || (n * 15) || ' minutes'),
                    strftime('%Y-%m-%dT%H:%M:%fZ', $2, '+' || (n * 15 + 3) || ' minutes'), 0, 'synthetic', 'completed',
                    $3, $3 / 10, $3 / 10, $3 / 100 FROM r")
        .bind(runs)
        .bind(start)
        .bind(per_run)
        .execute(&mut *tx)
        .await?;
        sqlx::query("WITH RECURSIVE i(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM i WHERE k < $1 - 1)
             INSERT INTO decisions (run_id, ticket_id, deleted_at, actor_id, previous_state, rule, decision, decided_at)
             SELECT runs.id, 1000000 + (runs.id * 37 + k) % 200000, runs.started_at, 1001 + k % 5,
                    CASE k % 3 WHEN 0 THEN 'closed' WHEN 1 THEN 'solved' ELSE 'open' END,
                    CASE WHEN k % 10 = 0 THEN 'closed-after-7-days' WHEN k % 10 = 1 THEN 'legal-hold' ELSE NULL END,
                    CASE WHEN k % 10 = 0 THEN 'purge' WHEN k % 10 = 1 THEN 'keep_rule' ELSE 'keep_no_rule' END,
                    runs.started_at
             FROM runs CROSS JOIN i")
        .bind(per_run)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO jobs (id, run_id, kind, zendesk_job_id, ticket_ids, ticket_count, recorded_at, answered_at, finished_at, status, message)
             SELECT (run_id * 1000) + (ticket_id % 1000 / 100), run_id, 'destroy_many', printf('%032x', run_id * 1000 + ticket_id % 1000 / 100), '', 100,
                    decided_at, decided_at, decided_at, 'completed', 'synthetic'
             FROM decisions WHERE decision = 'purge' GROUP BY run_id, ticket_id % 1000 / 100")
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO outcomes (run_id, job_id, ticket_id, outcome, detail, recorded_at)
             SELECT run_id, (run_id * 1000) + (ticket_id % 1000 / 100), ticket_id, 'purged', 'synthetic', decided_at
             FROM decisions WHERE decision = 'purge'")
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO run_decision_counts (run_id, decision, rule, count)
             SELECT run_id, decision, rule, COUNT(*) FROM decisions GROUP BY run_id, decision, rule")
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
        // two fixed texts: from the outcomes (an outcome filter) or from the decisions
        let text = if f.outcome.is_some() {
            sqlx::AssertSqlSafe(r#"SELECT d.decided_at AS at, d.run_id, d.ticket_id, d.decision, d.rule, d.actor_id, d.deleted_at, d.previous_state,
                    o.outcome AS outcome, o.recorded_at AS outcome_at, o.detail AS detail
             FROM outcomes o JOIN decisions d ON d.id = (
                 SELECT MAX(d2.id) FROM decisions d2 WHERE d2.ticket_id = o.ticket_id AND d2.decided_at <= o.recorded_at)
             WHERE o.outcome = $1 AND o.recorded_at >= $2 AND o.recorded_at < $3
               AND ($4 IS NULL OR d.rule = $4) AND ($5 IS NULL OR d.actor_id = $5)
               AND ($6 IS NULL OR d.decision = $6) AND ($7 IS NULL OR d.ticket_id = $7)
             ORDER BY o.id DESC LIMIT $8"#.to_string())
        } else {
            self.dialect(r#"SELECT d.decided_at AS at, d.run_id, d.ticket_id, d.decision, d.rule, d.actor_id, d.deleted_at, d.previous_state,
                    o.outcome AS outcome, o.recorded_at AS outcome_at, o.detail AS detail
             FROM decisions d LEFT JOIN outcomes o ON o.id = (
                 SELECT MAX(o2.id) FROM outcomes o2 INDEXED BY outcomes_ticket WHERE o2.ticket_id = d.ticket_id AND o2.run_id = d.run_id)
             WHERE ($1 IS NULL OR 1 = 1) AND d.decided_at >= $2 AND d.decided_at < $3
               AND ($4 IS NULL OR d.rule = $4) AND ($5 IS NULL OR d.actor_id = $5)
               AND ($6 IS NULL OR d.decision = $6) AND ($7 IS NULL OR d.ticket_id = $7)
             ORDER BY d.id DESC LIMIT $8"#)
        };
        let rows = sqlx::query_as::<_, SearchRow>(text)
            .bind(f.outcome.map(Outcome::as_str))
            .bind(since)
            .bind(until)
            .bind(&f.rule)
            .bind(f.actor)
            .bind(f.decision.map(DecisionKind::as_str))
            .bind(f.ticket)
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Every decision since `since`, oldest first, with its outcome in the
    /// same run; streamed to `each` so that millions of rows fit in memory.
    pub async fn export(
        &self,
        since: Option<DateTime<Utc>>,
        mut each: impl FnMut(SearchRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        use futures::TryStreamExt;
        let since = since.map(timestamp).unwrap_or_default();
        let mut rows = sqlx::query_as::<_, SearchRow>(self.dialect(r#"SELECT d.decided_at AS at, d.run_id, d.ticket_id, d.decision, d.rule, d.actor_id, d.deleted_at, d.previous_state,
                    o.outcome AS outcome, o.recorded_at AS outcome_at, o.detail AS detail
             FROM decisions d LEFT JOIN outcomes o ON o.id = (
                 SELECT MAX(o2.id) FROM outcomes o2 INDEXED BY outcomes_ticket WHERE o2.ticket_id = d.ticket_id AND o2.run_id = d.run_id)
             WHERE d.decided_at >= $1 ORDER BY d.id"#))
        .bind(since)
        .fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await? {
            each(row)?;
            n += 1;
        }
        Ok(n)
    }
}

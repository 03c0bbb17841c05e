//! Whole-view checks that span runs (`view_checks`) and purge latency
//! (`purge_latency`): operational records beside the chain, never evidence
//! of their own. (The ledger's last decision pass, `ledger_decided`, is
//! kept by `ledger.rs`.)

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::encode::sql_id;
use super::store::{AuditStore, RunId, numbered, on_pg, parse_time, timestamp};
use crate::ids::{JobRowId, TicketId};

/// A whole-view check under way (or the last one).
#[derive(Debug, Clone, PartialEq)]
pub struct ViewCheck {
    pub id: i64,
    /// The start of the refresh of the run that began it: the live rows no
    /// listing saw since are what it settles.
    pub started_at: DateTime<Utc>,
    /// The next page's path and query (`None` before the first page).
    pub next: Option<String>,
    pub next_page: u32,
    pub pages: u64,
    pub listed: u64,
    /// Runs that walked a part of it.
    pub runs: u64,
    /// A page said there is no more: walked to the end, to settle.
    pub walked: bool,
}

/// Purge latency over a period or a run: from a ticket becoming purgeable
/// to its `destroy_many` leaving.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub tickets: u64,
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
}

/// A purge request's row, when it left, and each of its tickets with when
/// it became purgeable.
pub type RequestLatency = (JobRowId, DateTime<Utc>, Vec<(TicketId, DateTime<Utc>)>);

/// A `view_checks` row: id, started_at, next_url, next_page, pages,
/// listed, runs, walked.
type CheckRow = (i64, String, Option<String>, i64, i64, i64, i64, i64);

impl AuditStore {
    /// The check under way: begun, neither finished nor given up.
    pub async fn open_view_check(&self) -> anyhow::Result<Option<ViewCheck>> {
        let row: Option<CheckRow> = sqlx::query_as(r#"SELECT id, started_at, next_url, next_page, pages, listed, runs, walked AS walked FROM view_checks
             WHERE finished_at IS NULL AND abandoned IS NULL ORDER BY id DESC LIMIT 1"#)
        .fetch_optional(self.pool())
        .await
        .context("cannot read the whole-view check")?;
        Ok(row.and_then(
            |(id, started, next, next_page, pages, listed, runs, walked)| {
                Some(ViewCheck {
                    id,
                    started_at: parse_time(Some(started))?,
                    next,
                    next_page: next_page.clamp(1, i64::from(u32::MAX)) as u32,
                    pages: pages.max(0) as u64,
                    listed: listed.max(0) as u64,
                    runs: runs.max(0) as u64,
                    walked: walked != 0,
                })
            },
        ))
    }

    /// Begins a check whose walk starts now; its absences are counted
    /// against `started_at`.
    pub async fn start_view_check(
        &self,
        run: RunId,
        started_at: DateTime<Utc>,
    ) -> anyhow::Result<ViewCheck> {
        self.check_file()?;
        let started = timestamp(started_at);
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO view_checks (started_at, started_run) VALUES ($1, $2) RETURNING id",
        )
        .bind(started)
        .bind(run)
        .fetch_one(&mut *tx)
        .await
        .context("cannot record the whole-view check")?;
        tx.commit()
            .await
            .context("cannot record the whole-view check")?;
        Ok(ViewCheck {
            id,
            started_at,
            next: None,
            next_page: 1,
            pages: 0,
            listed: 0,
            runs: 0,
            walked: false,
        })
    }

    /// Records where the check's walk goes on, once the decisions of the
    /// pages read so far are written.
    pub async fn advance_view_check(&self, check: &ViewCheck) -> anyhow::Result<()> {
        self.check_file()?;
        let (next_page, pages, listed, runs) = (
            i64::from(check.next_page),
            check.pages as i64,
            check.listed as i64,
            check.runs as i64,
        );
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE view_checks SET next_url = $1, next_page = $2, pages = $3, listed = $4, runs = $5, walked = $6 WHERE id = $7")
        .bind(&check.next)
        .bind(next_page)
        .bind(pages)
        .bind(listed)
        .bind(runs)
        .bind(i64::from(check.walked))
        .bind(check.id)
        .execute(&mut *tx)
        .await
        .context("cannot record the whole-view check")?;
        tx.commit()
            .await
            .context("cannot record the whole-view check")?;
        Ok(())
    }

    /// Ends a check: walked to its end and settled, or given up (`why`).
    pub async fn end_view_check(
        &self,
        id: i64,
        run: RunId,
        at: DateTime<Utc>,
        abandoned: Option<&str>,
    ) -> anyhow::Result<()> {
        self.check_file()?;
        let (finished, why) = match abandoned {
            None => (Some(timestamp(at)), None),
            Some(why) => (None, Some(format!("{}: {why}", timestamp(at)))),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE view_checks SET finished_at = $1, finished_run = $2, abandoned = $3 WHERE id = $4")
        .bind(finished)
        .bind(run)
        .bind(why)
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("cannot record the whole-view check")?;
        tx.commit()
            .await
            .context("cannot record the whole-view check")?;
        Ok(())
    }

    /// Gives up any check under way (a whole walk in one run replaced it).
    pub async fn abandon_open_checks(
        &self,
        run: RunId,
        at: DateTime<Utc>,
        why: &str,
    ) -> anyhow::Result<()> {
        if let Some(check) = self.open_view_check().await? {
            self.end_view_check(check.id, run, at, Some(why)).await?;
        }
        Ok(())
    }

    /// Records, for each purge request of a round, when each of its tickets
    /// became purgeable and when the request left: one commit.
    pub async fn record_latencies(&self, requests: &[RequestLatency]) -> anyhow::Result<()> {
        let rows: Vec<_> = requests
            .iter()
            .flat_map(|(job, sent, tickets)| tickets.iter().map(move |t| (*job, sent, t)))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        self.check_file()?;
        let mut tx = self.begin_write().await?;
        for chunk in rows.chunks(400) {
            // runtime: one row of binds per ticket (a batch, never cached)
            let mut q: sqlx::QueryBuilder<sqlx::Any> = sqlx::QueryBuilder::new(
                "INSERT INTO purge_latency (job_id, ticket_id, purgeable_at, sent_at, latency_ms) ",
            );
            q.push_values(chunk, |mut b, (job, sent, (id, purgeable))| {
                let ms = (**sent - *purgeable).num_milliseconds().max(0);
                b.push_bind(*job)
                    .push_bind(sql_id(*id))
                    .push_bind(timestamp(*purgeable))
                    .push_bind(timestamp(**sent))
                    .push_bind(ms);
            });
            numbered(&mut q, on_pg(&tx))
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await.context("cannot record purge latency")?;
        Ok(())
    }

    /// Purge latency of the requests sent in `[from, to)` (`None`: no bound),
    /// or of one run's requests.
    pub async fn latency_summary(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        run: Option<RunId>,
    ) -> anyhow::Result<LatencySummary> {
        // by the run's jobs (indexed), or by the time sent (indexed);
        // runtime: the filter is the caller's choice of the two
        // (PostgreSQL compares a run id with an integer only: the two
        // filters take their own binds)
        let (filter, first, second) = match run {
            Some(run) => (
                "job_id IN (SELECT id FROM jobs WHERE run_id = CAST($1 AS BIGINT)) AND $2 IS NOT NULL",
                run.to_string(),
                String::new(),
            ),
            None => (
                "sent_at >= $1 AND sent_at < $2",
                from.map(timestamp).unwrap_or_default(),
                to.map(timestamp).unwrap_or_else(|| "9999".into()),
            ),
        };
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM purge_latency WHERE {filter}"
        )))
        .bind(&first)
        .bind(&second)
        .fetch_one(self.pool())
        .await?;
        if count == 0 {
            return Ok(LatencySummary::default());
        }
        // the nearest rank: the smallest value with at least p of them at or below it
        let rank = |p: f64| (((count as f64) * p).ceil() as i64 - 1).clamp(0, count - 1);
        let mut at = Vec::new();
        for r in [rank(0.5), rank(0.95), count - 1] {
            let ms: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT latency_ms FROM purge_latency WHERE {filter} ORDER BY latency_ms LIMIT 1 OFFSET $3"
            )))
            .bind(&first)
            .bind(&second)
            .bind(r)
            .fetch_one(self.pool())
            .await?;
            at.push(Some(ms as f64 / 1000.0));
        }
        Ok(LatencySummary {
            tickets: count as u64,
            p50_seconds: at[0],
            p95_seconds: at[1],
            max_seconds: at[2],
        })
    }
}

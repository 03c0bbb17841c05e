//! The ticket ledger: one row per ticket and deletion, kept in step with the
//! chained rows. Every change of a row's state is written in the same
//! transaction as the decision, job or outcome that causes it, so the
//! ledger never says more than the chain does.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Any, QueryBuilder, Row};

use super::chain::{Chained, chain_append_digests, chain_base, placed_in_order, row_digest};
use super::encode::{sql_id, ticket_id};
use super::heads::HeadKind;
use super::kinds::{DecisionKind, Outcome, TextEnum, sql_text};
use super::records::DecisionRecord;
use super::store::{AuditStore, RunId, numbered, numbered_scalar, on_pg, parse_time, timestamp};
use crate::ids::TicketId;
use crate::rules::SubjectTags;

/// Where a ticket's deletion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    /// Decided to keep (by a rule, no rule, too young, protected).
    Kept,
    /// A purge rule selects it; not sent yet (or sent and refused).
    Selected,
    /// In a `destroy_many` whose end is not recorded yet.
    PurgeRequested,
    /// Reported purged by its job; a reconcile confirms it.
    Purged,
    /// Its purge's outcome is unknown; a reconcile settles it.
    Unknown,
    /// Purged and proven gone.
    Gone,
    /// Kept, then gone from the view and not active: deleted for good by
    /// someone else or scrubbed by Zendesk.
    LeftView,
    /// Active again: restored.
    Restored,
    /// Gone after an unknown outcome, deleted more than 30 days ago.
    Scrubbed,
    /// The ticket was deleted again: a newer row stands for it.
    Superseded,
}

sql_text!(LedgerState);

impl TextEnum for LedgerState {
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    fn as_str(self) -> &'static str {
        LedgerState::as_str(self)
    }
}

impl LedgerState {
    /// Every state, in the order of the enum.
    pub const ALL: [LedgerState; 10] = [
        Self::Kept,
        Self::Selected,
        Self::PurgeRequested,
        Self::Purged,
        Self::Unknown,
        Self::Gone,
        Self::LeftView,
        Self::Restored,
        Self::Scrubbed,
        Self::Superseded,
    ];

    pub const LIVE: [LedgerState; 5] = [
        Self::Kept,
        Self::Selected,
        Self::PurgeRequested,
        Self::Purged,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Selected => "selected",
            Self::PurgeRequested => "purge_requested",
            Self::Purged => "purged",
            Self::Unknown => "unknown",
            Self::Gone => "gone",
            Self::LeftView => "left_view",
            Self::Restored => "restored",
            Self::Scrubbed => "scrubbed",
            Self::Superseded => "superseded",
        }
    }

    /// Still expected in the deleted view.
    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }

    /// Waiting for its purge to be settled: not decided again unless listed.
    pub fn awaits_settling(self) -> bool {
        matches!(self, Self::PurgeRequested | Self::Purged | Self::Unknown)
    }

    /// The state a decision puts a row in.
    pub fn of_decision(decision: DecisionKind) -> Self {
        if decision.selects() {
            Self::Selected
        } else {
            Self::Kept
        }
    }
}

/// The live states as an SQL list.
const LIVE_SQL: &str = "('kept', 'selected', 'purge_requested', 'purged', 'unknown')";

/// The states that are not live, as an SQL list: `state NOT IN` this says
/// what `state IN LIVE_SQL` says (the schema's CHECK allows no other
/// state), in words no partial index's predicate matches, so PostgreSQL
/// reaches the rows by ticket id even while its statistics are stale (a
/// first run's ledger: it chose a scan of every live row).
const NOT_LIVE_SQL: &str = "('gone', 'left_view', 'restored', 'scrubbed', 'superseded')";

/// A ledger row's columns as [`entry_of`] reads them, with whether its
/// latest decision row agrees (`l`: the ledger, `d`: that decision).
const LEDGER_ROW_COLUMNS: &str = "l.ticket_id, l.deleted_at, l.actor_id, l.actor_name, l.previous_state, l.subject, l.subject_tags,
    l.decision, l.rule, l.config_hash, l.state, l.last_seen, l.requested_at,
    CASE WHEN (d.id IS NOT NULL
     AND COALESCE(d.deleted_at, '') = l.deleted_at
     AND d.actor_id IS NOT DISTINCT FROM l.actor_id AND d.actor_name IS NOT DISTINCT FROM l.actor_name
     AND d.previous_state IS NOT DISTINCT FROM l.previous_state AND d.subject IS NOT DISTINCT FROM l.subject
     AND d.subject_tags IS NOT DISTINCT FROM l.subject_tags
     AND d.decision IS NOT DISTINCT FROM l.decision AND d.rule IS NOT DISTINCT FROM l.rule) THEN 1 ELSE 0 END AS agrees";

/// Only a ticket's current row (`l`), its newest deletion.
const CURRENT_ROW: &str =
    "AND l.deleted_at = (SELECT MAX(deleted_at) FROM ledger WHERE ticket_id = l.ticket_id)";

/// Ledger rows read at a time where a run walks many of them.
pub const LEDGER_CHUNK: usize = 2000;

/// A live ledger row: what the ticket was listed as and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub ticket_id: TicketId,
    pub deleted_at: Option<DateTime<Utc>>,
    pub actor_id: Option<u64>,
    pub actor_name: Option<String>,
    pub previous_state: Option<String>,
    pub subject: Option<String>,
    pub subject_tags: Option<SubjectTags>,
    pub decision: Option<DecisionKind>,
    pub rule: Option<String>,
    pub config_hash: Option<String>,
    pub state: LedgerState,
    pub last_seen: Option<DateTime<Utc>>,
    pub requested_at: Option<DateTime<Utc>>,
}

impl LedgerEntry {
    /// The row as the ticket the rules read.
    pub fn as_ticket(&self) -> crate::ticket::Ticket {
        crate::ticket::Ticket {
            id: self.ticket_id,
            subject: self.subject.clone(),
            actor: (self.actor_id.is_some() || self.actor_name.is_some()).then(|| {
                crate::ticket::Actor {
                    id: self.actor_id,
                    name: self.actor_name.clone(),
                }
            }),
            deleted_at: self.deleted_at,
            previous_state: self.previous_state.clone(),
        }
    }
}

/// A listed ticket whose ledger row did not change: seen again.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub ticket_id: TicketId,
    pub deleted_at: Option<DateTime<Utc>>,
    pub subject_tags: Option<SubjectTags>,
}

/// What the runs so far established about the listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListingMarks {
    /// The newest deletion a finished listing step saw.
    pub high_water: Option<DateTime<Utc>>,
    /// When the last whole walk of the view (a reconcile) started.
    pub last_reconcile: Option<DateTime<Utc>>,
    /// Live rows without a tag for one of the subject patterns asked about:
    /// they cannot be decided without a listing.
    pub untagged: u64,
    /// Runs that finished a listing step: none before the first run.
    pub listings: u64,
}

impl AuditStore {
    /// Every live ledger row, the newest deletion per ticket, read in
    /// chunks of `LEDGER_CHUNK` (for `plan --ledger`: memory follows the
    /// chunk, not the ledger). `each` sees every chunk in ticket order.
    pub async fn ledger_live_chunks(
        &self,
        mut each: impl FnMut(Vec<LedgerEntry>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        const CHUNK: i64 = LEDGER_CHUNK as i64;
        let mut after: i64 = -1;
        // `NOT IN` the other states: along the primary key from `after`,
        // not the state index (which would sort every live row for each
        // chunk); SQLite's `+state` says so too, but PostgreSQL refuses it
        loop {
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT DISTINCT ticket_id FROM ledger
                 WHERE ticket_id > $1 AND state NOT IN {NOT_LIVE_SQL} ORDER BY ticket_id LIMIT $2"
            )))
            .bind(after)
            .bind(CHUNK)
            .fetch_all(self.pool())
            .await
            .context("cannot read the ticket ledger")?;
            let Some(last) = ids.last() else {
                return Ok(());
            };
            after = *last;
            let ids: Vec<TicketId> = ids.iter().map(|id| ticket_id(*id)).collect();
            let mut rows: Vec<LedgerEntry> = self.ledger_rows(&ids).await?.into_values().collect();
            rows.sort_unstable_by_key(|e| e.ticket_id);
            each(rows)?;
        }
    }

    /// The live ledger rows of `tickets` (their newest deletion), as many
    /// as are live. Each row must say what its latest decision row
    /// (chained) says: a ledger changed outside zd-retention is refused,
    /// never purged from.
    pub async fn ledger_rows(
        &self,
        tickets: &[TicketId],
    ) -> anyhow::Result<HashMap<TicketId, LedgerEntry>> {
        let mut out = HashMap::with_capacity(tickets.len());
        for chunk in tickets.chunks(500) {
            let rows = if self.is_pg() {
                // each ticket's rows by its id, whatever the statistics say
                // (a ledger growing in a first run: PostgreSQL chose to scan
                // it whole for each page)
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {LEDGER_ROW_COLUMNS}
                     FROM unnest(CAST($1 AS BIGINT[])) AS i (id)
                     CROSS JOIN LATERAL (SELECT * FROM ledger WHERE ticket_id = i.id
                                         ORDER BY deleted_at DESC LIMIT 1) AS l
                     LEFT JOIN LATERAL (SELECT * FROM decisions WHERE ticket_id = i.id
                                        ORDER BY id DESC LIMIT 1) AS d ON TRUE
                     WHERE l.state NOT IN {NOT_LIVE_SQL}"
                )))
                .bind(id_array(chunk.iter().copied()))
                .persistent(false)
                .fetch_all(self.pool())
                .await
                .context("cannot read the ticket ledger")?
            } else {
                // runtime: one bind per ticket id (a batch, never cached)
                let mut q: QueryBuilder<Any> = QueryBuilder::new(format!(
                "SELECT {LEDGER_ROW_COLUMNS}
                 FROM ledger l
                 LEFT JOIN decisions d ON d.id = (SELECT MAX(id) FROM decisions WHERE ticket_id = l.ticket_id)
                 WHERE l.state IN {LIVE_SQL} {CURRENT_ROW} AND l.ticket_id IN ("
            ));
                let mut sep = q.separated(", ");
                for t in chunk {
                    sep.push_bind(sql_id(*t));
                }
                q.push(")");
                numbered(&mut q, false)
                    .persistent(false)
                    .fetch_all(self.pool())
                    .await
                    .context("cannot read the ticket ledger")?
            };
            for row in rows {
                let entry = entry_of(&row)?;
                out.insert(entry.ticket_id, entry);
            }
        }
        Ok(out)
    }

    /// The tickets whose live row a refresh decides again: with
    /// `selected_too` (a live run) the selected ones, still to send; and
    /// always the kept or selected ones an age threshold
    /// crossed between `since` and `now` (a row deleted at `d` crosses the
    /// threshold `t` when `d + t` falls between them, a second either side
    /// taken too). Rows listed since `unlisted_since` were decided by their
    /// listing and are left out. Indexed: the ledger is never read whole.
    pub async fn ledger_to_redecide(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        thresholds: &[std::time::Duration],
        unlisted_since: DateTime<Utc>,
        selected_too: bool,
    ) -> anyhow::Result<Vec<TicketId>> {
        let unlisted = timestamp(unlisted_since);
        // runtime: one UNION arm per age threshold (a batch, never cached)
        let mut q: QueryBuilder<Any> = QueryBuilder::new(
            "SELECT ticket_id FROM ledger WHERE state IN ('kept', 'selected', 'purge_requested', 'purged', 'unknown') AND state = 'selected' AND last_seen < ",
        );
        q.push_bind(unlisted.clone());
        if !selected_too {
            q.push(" AND 1 = 0");
        }
        let second = chrono::Duration::seconds(1);
        for t in thresholds {
            let Ok(t) = chrono::Duration::from_std(*t) else {
                continue;
            };
            let (Some(from), Some(to)) = (
                since.checked_sub_signed(t + second),
                now.checked_sub_signed(t - second),
            ) else {
                continue;
            };
            q.push(
                " UNION SELECT ticket_id FROM ledger
                 WHERE state IN ('kept', 'selected') AND deleted_at BETWEEN ",
            );
            q.push_bind(timestamp(from));
            q.push(" AND ");
            q.push_bind(timestamp(to));
            q.push(" AND last_seen < ");
            q.push_bind(unlisted.clone());
        }
        let ids: Vec<i64> = numbered_scalar(&mut q, self.is_pg())
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .context("cannot read the ticket ledger")?;
        Ok(ids.into_iter().map(ticket_id).collect())
    }

    /// Every ticket with a kept or selected row not listed since
    /// `unlisted_since`: what a refresh decides again after the policy
    /// changed (in chunks).
    pub async fn ledger_undecided(
        &self,
        unlisted_since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<TicketId>> {
        let unlisted = timestamp(unlisted_since);
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT ticket_id FROM ledger
             WHERE state IN ('kept', 'selected') AND last_seen < $1 ORDER BY ticket_id",
        )
        .bind(unlisted)
        .fetch_all(self.pool())
        .await
        .context("cannot read the ticket ledger")?;
        Ok(ids.into_iter().map(ticket_id).collect())
    }

    /// The tickets whose live row no listing saw since `since` (a whole
    /// walk that began then did not list them), in ticket order, leaving
    /// out those whose purge is under way.
    pub async fn ledger_unseen_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<TicketId>> {
        let since = timestamp(since);
        // (the live states: `LIVE_SQL`)
        let ids: Vec<i64> = sqlx::query_scalar(self.dialect(r#"SELECT DISTINCT ticket_id AS ticket_id FROM ledger INDEXED BY ledger_by_sighting
             WHERE state IN ('kept', 'selected', 'purge_requested', 'purged', 'unknown') AND state <> 'purge_requested' AND last_seen < $1
             ORDER BY 1"#))
        .bind(since)
        .fetch_all(self.pool())
        .await
        .context("cannot read the ticket ledger")?;
        Ok(ids.into_iter().map(ticket_id).collect())
    }

    /// When the live rows were last all decided, and under which policy.
    pub async fn ledger_decided(&self) -> anyhow::Result<Option<(DateTime<Utc>, String)>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT decided_at, policy FROM ledger_decided ORDER BY run_id DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(row.and_then(|(at, policy)| parse_time(Some(at)).map(|at| (at, policy))))
    }

    /// Notes that run `run` decided every live row that could have moved,
    /// as of `at`, under `policy` (a fingerprint).
    pub async fn set_ledger_decided(
        &self,
        run: RunId,
        at: DateTime<Utc>,
        policy: &str,
    ) -> anyhow::Result<()> {
        self.check_file()?;
        let at = timestamp(at);
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO ledger_decided (run_id, decided_at, policy) VALUES ($1, $2, $3) ON CONFLICT (run_id) DO UPDATE SET decided_at = excluded.decided_at, policy = excluded.policy")
        .bind(run)
        .bind(&at)
        .bind(policy)
        .execute(&mut *tx)
        .await
        .context("cannot update the ticket ledger")?;
        tx.commit()
            .await
            .context("cannot update the ticket ledger")?;
        Ok(())
    }

    /// Notes that listed tickets were seen again unchanged.
    pub async fn ledger_touch(&self, seen: &[Sighting], at: DateTime<Utc>) -> anyhow::Result<()> {
        self.check_file()?;
        if seen.is_empty() {
            return Ok(());
        }
        let at = timestamp(at);
        let mut tx = self.begin_write().await?;
        if on_pg(&tx) {
            // one text prepared once, the sightings as one JSON array
            for chunk in seen.chunks(2000) {
                let rows: Vec<serde_json::Value> = chunk
                    .iter()
                    .map(|s| {
                        serde_json::json!([
                            sql_id(s.ticket_id),
                            s.deleted_at.map(timestamp).unwrap_or_default(),
                            s.subject_tags.as_ref().map(ToString::to_string),
                        ])
                    })
                    .collect();
                sqlx::query(
                    "UPDATE ledger SET last_seen = $1, subject_tags = COALESCE(v.subject_tags, ledger.subject_tags)
                     FROM (SELECT CAST(e->>0 AS BIGINT) AS ticket_id, e->>1 AS deleted_at, e->>2 AS subject_tags
                           FROM json_array_elements(CAST($2 AS JSON)) AS r (e)) AS v
                     WHERE ledger.ticket_id = v.ticket_id AND ledger.deleted_at = v.deleted_at",
                )
                .bind(&at)
                .bind(serde_json::Value::Array(rows).to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit()
                .await
                .context("cannot update the ticket ledger")?;
            return Ok(());
        }
        for chunk in seen.chunks(300) {
            // runtime: one row of binds per sighting (a batch, never cached)
            let mut q: QueryBuilder<Any> = QueryBuilder::new("UPDATE ledger SET last_seen = ");
            q.push_bind(&at);
            q.push(", subject_tags = COALESCE(v.column3, ledger.subject_tags) FROM (VALUES ");
            let mut sep = q.separated(", ");
            for s in chunk {
                sep.push("(")
                    .push_bind_unseparated(sql_id(s.ticket_id))
                    .push_unseparated(", ")
                    .push_bind_unseparated(s.deleted_at.map(timestamp).unwrap_or_default())
                    .push_unseparated(", ")
                    .push_bind_unseparated(s.subject_tags.clone())
                    .push_unseparated(")");
            }
            q.push(") AS v WHERE ledger.ticket_id = v.column1 AND ledger.deleted_at = v.column2");
            numbered(&mut q, on_pg(&tx))
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit()
            .await
            .context("cannot update the ticket ledger")?;
        Ok(())
    }

    /// The high-water mark and the last reconcile, from finished listings;
    /// with the live rows that lack a tag for one of `patterns`.
    pub async fn listing_marks(&self, patterns: &[String]) -> anyhow::Result<ListingMarks> {
        let mut untagged = 0;
        if !patterns.is_empty() {
            // runtime: one LIKE per subject pattern (a batch, never cached)
            let mut q: QueryBuilder<Any> = QueryBuilder::new(format!(
                "SELECT COUNT(*) FROM ledger WHERE state IN {LIVE_SQL} AND subject IS NULL AND ("
            ));
            let mut sep = q.separated(" OR ");
            for fp in patterns {
                sep.push("COALESCE(subject_tags, '') NOT LIKE ")
                    .push_bind_unseparated(format!("%{fp}%"));
            }
            q.push(")");
            let n: i64 = numbered_scalar(&mut q, self.is_pg())
                .persistent(false)
                .fetch_one(self.pool())
                .await?;
            untagged = n as u64;
        }
        let high: Option<String> = sqlx::query_scalar(r#"SELECT high_water AS high_water FROM runs WHERE high_water IS NOT NULL ORDER BY id DESC LIMIT 1"#)
        .fetch_optional(self.pool())
        .await?
        .flatten();
        let reconciled: Option<String> = sqlx::query_scalar(r#"SELECT MAX(t) AS t FROM (
                 SELECT MAX(started_at) AS t FROM runs WHERE step = 'reconcile' AND high_water IS NOT NULL
                 UNION ALL
                 SELECT MAX(started_at) FROM view_checks WHERE finished_at IS NOT NULL) AS sub"#)
        .fetch_one(self.pool())
        .await?;
        let listings: i64 = sqlx::query_scalar(
            r#"SELECT COUNT(*) AS n FROM runs WHERE step IS NOT NULL AND status = 'completed'"#,
        )
        .fetch_one(self.pool())
        .await?;
        Ok(ListingMarks {
            listings: listings as u64,
            high_water: parse_time(high),
            last_reconcile: parse_time(reconciled),
            untagged,
        })
    }

    /// Prunes the details of tickets settled before `settled_before`: their
    /// decisions other than a purge, their `not_sent`, `still_present` and
    /// `left_view` outcomes, and their ledger rows. Each pruned row is
    /// recorded (and chained) in `pruned`, so `audit verify` accepts its
    /// absence; a purge's decision, job and outcomes stay for ever.
    /// Returns the rows pruned.
    pub async fn prune_details(
        &self,
        settled_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<u64> {
        self.check_file()?;
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        // The newest row of each table is never pruned: SQLite gives a new
        // row the highest id plus one, so an id pruned from the top would be
        // given out again, and `verify` would find another row where the
        // chain recorded the pruned one.
        // Settled: tickets with no live row (`LIVE_SQL`), none changed since
        // `settled_before`.
        let settled_before = timestamp(settled_before);
        let doomed: Vec<(String, i64, i64, String)> = sqlx::query_as(r#"SELECT 'decisions' AS tbl, id AS id, run_id AS run_id, decision AS what FROM decisions
             WHERE decision <> 'purge' AND ticket_id IN (SELECT ticket_id FROM ledger GROUP BY ticket_id
                                 HAVING CAST(SUM(CASE WHEN state IN ('kept', 'selected', 'purge_requested', 'purged', 'unknown') THEN 1 ELSE 0 END) AS BIGINT) = 0 AND MAX(state_at) < $1)
               AND id < (SELECT MAX(id) FROM decisions)
             UNION ALL
             SELECT 'outcomes', id, run_id, outcome FROM outcomes
             WHERE outcome IN ('not_sent', 'still_present', 'left_view') AND ticket_id IN (SELECT ticket_id FROM ledger GROUP BY ticket_id
                                 HAVING CAST(SUM(CASE WHEN state IN ('kept', 'selected', 'purge_requested', 'purged', 'unknown') THEN 1 ELSE 0 END) AS BIGINT) = 0 AND MAX(state_at) < $2)
               AND id < (SELECT MAX(id) FROM outcomes)
             UNION ALL
             SELECT 'ledger', ticket_id, 0, 'ledger' FROM ledger
             WHERE ticket_id IN (SELECT ticket_id FROM ledger GROUP BY ticket_id
                                 HAVING CAST(SUM(CASE WHEN state IN ('kept', 'selected', 'purge_requested', 'purged', 'unknown') THEN 1 ELSE 0 END) AS BIGINT) = 0 AND MAX(state_at) < $3) GROUP BY ticket_id
             ORDER BY 1, 2"#)
        .bind(&settled_before)
        .bind(&settled_before)
        .bind(&settled_before)
        .fetch_all(&mut *tx)
        .await
        .context("cannot find the details to prune")?;
        let at = timestamp(now);
        let mut first = None;
        let mut last = 0;
        let mut digests = String::with_capacity(doomed.len() * 16);
        for chunk in doomed.chunks(500) {
            // runtime: one row of binds per pruned row (a batch, never cached)
            let mut q: QueryBuilder<Any> =
                QueryBuilder::new("INSERT INTO pruned (tbl, row_id, run_id, what, pruned_at) ");
            q.push_values(chunk, |mut b, (tbl, id, run_id, what)| {
                b.push_bind(tbl.as_str())
                    .push_bind(*id)
                    .push_bind(*run_id)
                    .push_bind(what.as_str())
                    .push_bind(at.as_str());
            });
            q.push(" RETURNING id, row_id");
            let rows = numbered(&mut q, on_pg(&tx))
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            last = placed_in_order(&rows, chunk.iter().map(|(_, id, _, _)| *id), last)?;
            first.get_or_insert(last - chunk.len() as i64 + 1);
            for (tbl, id, run_id, what) in chunk {
                let (id, run_id) = (id.to_string(), run_id.to_string());
                digests.push_str(&row_digest(
                    Chained::Pruned,
                    [
                        Some(tbl.as_str()),
                        Some(id.as_str()),
                        Some(run_id.as_str()),
                        Some(what.as_str()),
                        Some(at.as_str()),
                    ],
                ));
            }
        }
        if let Some(first) = first {
            chain_append_digests(&mut tx, Chained::Pruned, first, last, digests).await?;
            sqlx::query("DELETE FROM decisions WHERE id IN (SELECT row_id FROM pruned WHERE tbl = 'decisions' AND pruned_at = $1)")
        .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM outcomes WHERE id IN (SELECT row_id FROM pruned WHERE tbl = 'outcomes' AND pruned_at = $1)")
        .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM ledger WHERE ticket_id IN (SELECT ticket_id FROM ledger GROUP BY ticket_id
                                 HAVING CAST(SUM(CASE WHEN state IN ('kept', 'selected', 'purge_requested', 'purged', 'unknown') THEN 1 ELSE 0 END) AS BIGINT) = 0 AND MAX(state_at) < $1)")
        .bind(&settled_before)
        .execute(&mut *tx)
        .await?;
        self.seal(&mut tx, base, None, HeadKind::Commit).await?;
        tx.commit()
            .await
            .context("cannot prune the audit's details")?;
        Ok(doomed.iter().filter(|(tbl, ..)| tbl != "ledger").count() as u64)
    }

    /// Rows per ledger state, for `audit ledger` and the metrics.
    pub async fn ledger_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        // kept by triggers (migration 0011): never a count of the ledger
        Ok(
            sqlx::query_as("SELECT state, n FROM ledger_state_counts WHERE n > 0 ORDER BY state")
                .fetch_all(self.pool())
                .await?,
        )
    }
}

/// A ledger row as read by `ledger_rows`, refused when it disagrees with
/// its ticket's latest decision row.
fn entry_of(row: &sqlx::any::AnyRow) -> anyhow::Result<LedgerEntry> {
    let id: i64 = row.try_get("ticket_id")?;
    if row.try_get::<i64, _>("agrees")? == 0 {
        anyhow::bail!(
            "the ticket ledger was changed outside zd-retention: ticket {id} differs from its latest recorded decision. Nothing is decided from it; run `zd-retention audit verify`, and restore the database from a backup"
        );
    }
    let deleted: String = row.try_get("deleted_at")?;
    Ok(LedgerEntry {
        ticket_id: ticket_id(id),
        deleted_at: parse_time(Some(deleted)),
        actor_id: row.try_get::<Option<i64>, _>("actor_id")?.map(|a| a as u64),
        actor_name: row.try_get("actor_name")?,
        previous_state: row.try_get("previous_state")?,
        subject: row.try_get("subject")?,
        subject_tags: row.try_get("subject_tags")?,
        decision: row.try_get("decision")?,
        rule: row.try_get("rule")?,
        config_hash: row.try_get("config_hash")?,
        state: row.try_get("state")?,
        last_seen: parse_time(row.try_get("last_seen")?),
        requested_at: parse_time(row.try_get("requested_at")?),
    })
}

/// Writes recorded decisions into the ledger: the ticket's other live rows
/// are superseded (it was deleted again), its row for this deletion takes
/// the decision's state.
pub(super) async fn upsert_decisions(
    tx: &mut sqlx::Transaction<'_, Any>,
    run: RunId,
    decisions: &[DecisionRecord],
) -> anyhow::Result<()> {
    let config_hash: Option<String> =
        sqlx::query_scalar("SELECT config_hash FROM runs WHERE id = $1")
            .bind(run)
            .fetch_optional(&mut **tx)
            .await?;
    if on_pg(tx) {
        return upsert_decisions_pg(tx, config_hash, decisions).await;
    }
    for chunk in distinct_tickets(decisions, 400) {
        // runtime: one bind per ticket id (a batch, never cached)
        let mut q: QueryBuilder<Any> =
            QueryBuilder::new("UPDATE ledger SET state = 'superseded', state_at = ");
        q.push_bind(timestamp(chunk[0].decided_at));
        q.push(format!(" WHERE state IN {LIVE_SQL} AND ticket_id IN ("));
        let mut sep = q.separated(", ");
        for d in chunk {
            sep.push_bind(sql_id(d.ticket_id));
        }
        q.push(")");
        numbered(&mut q, on_pg(tx))
            .persistent(false)
            .execute(&mut **tx)
            .await?;

        // runtime: one row of binds per decision (a batch, never cached)
        let mut q: QueryBuilder<Any> = QueryBuilder::new(
            "INSERT INTO ledger (ticket_id, deleted_at, actor_id, actor_name, previous_state, subject, subject_tags, first_seen, last_seen, decision, rule, config_hash, state, state_at) ",
        );
        q.push_values(chunk, |mut b, d| {
            let at = timestamp(d.decided_at);
            b.push_bind(sql_id(d.ticket_id))
                .push_bind(d.deleted_at.map(timestamp).unwrap_or_default())
                .push_bind(d.actor_id.map(|a| a as i64))
                .push_bind(d.actor_name.clone())
                .push_bind(d.previous_state.clone())
                .push_bind(d.subject.clone())
                .push_bind(d.subject_tags.clone())
                .push_bind(at.clone())
                .push_bind(at.clone())
                .push_bind(d.decision.as_str())
                .push_bind(d.rule.clone())
                .push_bind(config_hash.clone())
                .push_bind(LedgerState::of_decision(d.decision).as_str())
                .push_bind(at);
        });
        q.push(LEDGER_UPSERT);
        numbered(&mut q, on_pg(tx))
            .persistent(false)
            .execute(&mut **tx)
            .await
            .context("cannot update the ticket ledger")?;
        let listed: Vec<&DecisionRecord> = chunk.iter().filter(|d| d.listed).collect();
        if !listed.is_empty() {
            // runtime: one pair of binds per listed decision (a batch, never cached)
            let mut q: QueryBuilder<Any> = QueryBuilder::new(
                "UPDATE ledger SET last_seen = state_at WHERE (ticket_id, deleted_at) IN (VALUES ",
            );
            let mut sep = q.separated(", ");
            for d in listed {
                sep.push("(")
                    .push_bind_unseparated(sql_id(d.ticket_id))
                    .push_unseparated(", ")
                    .push_bind_unseparated(d.deleted_at.map(timestamp).unwrap_or_default())
                    .push_unseparated(")");
            }
            q.push(")");
            numbered(&mut q, on_pg(tx))
                .persistent(false)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// [`upsert_decisions`] on PostgreSQL: two statements a batch, each with one
/// text prepared once, the rows bound as one JSON array (thousands of binds
/// cost PostgreSQL a parse and a plan each time: measured 15 ms a batch of
/// 400 against SQLite's 5). A batch holds a ticket once (a statement may
/// not change a row twice).
async fn upsert_decisions_pg(
    tx: &mut sqlx::Transaction<'_, Any>,
    config_hash: Option<String>,
    decisions: &[DecisionRecord],
) -> anyhow::Result<()> {
    for chunk in distinct_tickets(decisions, 1000) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|d| {
                serde_json::json!([
                    sql_id(d.ticket_id),
                    d.deleted_at.map(timestamp).unwrap_or_default(),
                    d.actor_id.map(|a| a as i64),
                    d.actor_name,
                    d.previous_state,
                    d.subject,
                    d.subject_tags.as_ref().map(ToString::to_string),
                    timestamp(d.decided_at),
                    d.decision.as_str(),
                    d.rule,
                    LedgerState::of_decision(d.decision).as_str(),
                    d.listed,
                ])
            })
            .collect();
        let rows = serde_json::Value::Array(rows).to_string();
        // The rows there already, each touched once: a ticket's live rows
        // superseded (the upsert below brings this deletion's back), and
        // this deletion's row, when listed, seen at its decision (what the
        // upsert sets `state_at` to). A ticket is in a batch once.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE ledger SET
                state = CASE WHEN ledger.state NOT IN {NOT_LIVE_SQL} THEN 'superseded' ELSE ledger.state END,
                state_at = CASE WHEN ledger.state NOT IN {NOT_LIVE_SQL} THEN $1 ELSE ledger.state_at END,
                last_seen = CASE WHEN v.listed AND ledger.deleted_at = v.deleted_at THEN v.at ELSE ledger.last_seen END
             FROM (SELECT CAST(e->>0 AS BIGINT) AS ticket_id, e->>1 AS deleted_at, e->>7 AS at,
                          CAST(e->>11 AS BOOLEAN) AS listed
                   FROM json_array_elements(CAST($2 AS JSON)) AS r (e)) AS v
             WHERE ledger.ticket_id = v.ticket_id
               AND (ledger.state NOT IN {NOT_LIVE_SQL} OR (v.listed AND ledger.deleted_at = v.deleted_at))"
        )))
        .bind(timestamp(chunk[0].decided_at))
        .bind(&rows)
        .execute(&mut **tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO ledger (ticket_id, deleted_at, actor_id, actor_name, previous_state, subject, subject_tags, first_seen, last_seen, decision, rule, config_hash, state, state_at)
             SELECT CAST(e->>0 AS BIGINT), e->>1, CAST(e->>2 AS BIGINT), e->>3, e->>4, e->>5, e->>6, e->>7, e->>7, e->>8, e->>9, $2, e->>10, e->>7
             FROM json_array_elements(CAST($1 AS JSON)) AS r (e)
             {LEDGER_UPSERT}"
        )))
        .bind(&rows)
        .bind(config_hash.as_deref())
        .execute(&mut **tx)
        .await
        .context("cannot update the ticket ledger")?;
    }
    Ok(())
}

/// What a decision's ledger row takes when the row is there already: what
/// its latest decision row says; an unlisted re-decision keeps the row's
/// last sighting.
const LEDGER_UPSERT: &str = " ON CONFLICT (ticket_id, deleted_at) DO UPDATE SET
                actor_id = excluded.actor_id,
                actor_name = excluded.actor_name,
                previous_state = excluded.previous_state,
                subject = excluded.subject,
                subject_tags = excluded.subject_tags,
                decision = excluded.decision, rule = excluded.rule,
                config_hash = excluded.config_hash,
                state = excluded.state, state_at = excluded.state_at";

/// `decisions` in order, in batches of at most `max` that each hold a ticket
/// once: a ticket listed twice in a flush (a listing shifting under the
/// walk) starts the next batch, so its decisions apply in their order. In
/// one batch, its second deletion's row was written and then its first
/// one's over the superseding, leaving both live.
fn distinct_tickets(
    decisions: &[DecisionRecord],
    max: usize,
) -> impl Iterator<Item = &[DecisionRecord]> {
    let mut rest = decisions;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut tickets = std::collections::HashSet::with_capacity(max.min(rest.len()));
        let len = rest
            .iter()
            .take(max)
            .take_while(|d| tickets.insert(d.ticket_id))
            .count();
        let (batch, after) = rest.split_at(len);
        rest = after;
        Some(batch)
    })
}

/// Ticket ids as one PostgreSQL array literal (`{1,2,3}`), bound as text
/// and cast: one bind for a whole batch.
pub(super) fn id_array(ids: impl IntoIterator<Item = TicketId>) -> String {
    let mut text = String::from("{");
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&sql_id(id).to_string());
    }
    text.push('}');
    text
}

/// Moves the live rows of `tickets` to the state an outcome implies.
pub(super) async fn apply_outcome(
    tx: &mut sqlx::Transaction<'_, Any>,
    tickets: &[TicketId],
    outcome: Outcome,
    at: &str,
) -> anyhow::Result<()> {
    use Outcome as O;
    let state = match outcome {
        O::Purged => "'purged'",
        O::Unknown => "'unknown'",
        O::ConfirmedGone => "'gone'",
        O::RestoredElsewhere | O::Restored => "'restored'",
        O::ScrubbedByZendesk => "'scrubbed'",
        O::LeftView => "'left_view'",
        // back to what its decision says: sent again when still selected
        O::Failed | O::NotSent | O::NotEffective | O::StillPresent => {
            "CASE WHEN decision IN ('purge', 'would_purge') THEN 'selected' ELSE 'kept' END"
        }
        O::NotRestored | O::RestoreUnknown => return Ok(()),
    };
    // A job's word on a ticket restored beside it (by hand, while the job
    // was queued) reopens it: the next reconcile settles what became of it.
    let states = if matches!(outcome, O::Purged | O::Unknown) {
        "('kept', 'selected', 'purge_requested', 'purged', 'unknown', 'restored')"
    } else {
        LIVE_SQL
    };
    for chunk in tickets.chunks(400) {
        // runtime: the state the outcome implies, one bind per ticket (a batch, never cached)
        let mut q: QueryBuilder<Any> =
            QueryBuilder::new(format!("UPDATE ledger SET state = {state}, state_at = "));
        q.push_bind(at);
        q.push(format!(" WHERE state IN {states} AND "));
        current_rows(&mut q, chunk, on_pg(tx));
        // never prepared: a plan for these ids, not a generic one (which
        // PostgreSQL chose after five runs: a scan of the whole ledger)
        numbered(&mut q, on_pg(tx))
            .persistent(false)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Restricts an UPDATE to each ticket's current row, its newest deletion:
/// an outcome or a request concerns that deletion, never an earlier one.
/// PostgreSQL takes the ids as one array (one bind, one plan).
fn current_rows(q: &mut QueryBuilder<Any>, tickets: &[TicketId], pg: bool) {
    if pg {
        // by ticket id, whatever the statistics say (a first run's are stale)
        q.push("(ticket_id, deleted_at) IN (SELECT i.id, (SELECT MAX(l.deleted_at) FROM ledger AS l WHERE l.ticket_id = i.id) FROM unnest(CAST(");
        q.push_bind(id_array(tickets.iter().copied()));
        q.push(" AS BIGINT[])) AS i (id))");
        return;
    }
    q.push("(ticket_id, deleted_at) IN (SELECT ticket_id, MAX(deleted_at) FROM ledger WHERE ticket_id IN (");
    let mut sep = q.separated(", ");
    for t in tickets {
        sep.push_bind(sql_id(*t));
    }
    q.push(") GROUP BY ticket_id)");
}

/// Marks the live rows of a purge request's tickets as requested.
pub(super) async fn apply_request(
    tx: &mut sqlx::Transaction<'_, Any>,
    tickets: &[TicketId],
    at: &str,
) -> anyhow::Result<()> {
    for chunk in tickets.chunks(400) {
        // runtime: one bind per ticket id (a batch, never cached)
        let mut q: QueryBuilder<Any> =
            QueryBuilder::new("UPDATE ledger SET state = 'purge_requested', state_at = ");
        q.push_bind(at);
        q.push(", requested_at = ");
        q.push_bind(at);
        q.push(format!(" WHERE state IN {LIVE_SQL} AND "));
        current_rows(&mut q, chunk, on_pg(tx));
        // never prepared: a plan for these ids, not a generic one (which
        // PostgreSQL chose after five runs: a scan of the whole ledger)
        numbered(&mut q, on_pg(tx))
            .persistent(false)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The ledger's states and the transitions the chained rows cause: a
/// decision, a purge request, a job's or a settlement's outcome, a ticket
/// deleted again, and a row changed outside.
/// A ticket whose fate a later scan must settle.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsettled {
    /// Its ledger state: `Purged` or `Unknown` for a purge of ours.
    pub state: LedgerState,
    pub deleted_at: Option<DateTime<Utc>>,
    /// When its latest decision was made: it was listed then, so a deletion
    /// again would carry a later `deleted_at`.
    pub decided_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod transition_tests {
    use chrono::TimeZone;

    use super::*;
    use crate::audit::{DecisionKind, Outcome, RequestKind, Trigger};
    use crate::zendesk::IdBatch;

    #[test]
    fn the_states_are_named_as_stored_and_the_live_ones_are_the_waiting_ones_and_more() {
        for state in LedgerState::ALL {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str(), "{state:?}");
            assert_eq!(state.is_live(), LedgerState::LIVE.contains(&state));
            // awaiting a purge's settling is always live
            assert!(!state.awaits_settling() || state.is_live(), "{state:?}");
        }
        let live: Vec<&str> = LedgerState::LIVE.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            LIVE_SQL,
            format!("('{}')", live.join("', '")),
            "the SQL list is the live states"
        );
        assert!(!LedgerState::Selected.awaits_settling());
        assert!(!LedgerState::Kept.awaits_settling());
    }

    #[test]
    fn a_purge_decision_selects_dry_or_live_and_every_keep_keeps() {
        assert_eq!(
            LedgerState::of_decision(DecisionKind::Purge),
            LedgerState::Selected
        );
        assert_eq!(
            LedgerState::of_decision(DecisionKind::WouldPurge),
            LedgerState::Selected
        );
        for keep in [
            DecisionKind::KeepRule,
            DecisionKind::KeepNoRule,
            DecisionKind::KeepProtected,
            DecisionKind::KeepTooYoung,
            DecisionKind::KeepUnknownAge,
        ] {
            assert_eq!(
                LedgerState::of_decision(keep),
                LedgerState::Kept,
                "{keep:?}"
            );
        }
    }

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, d, 12, 0, 0).unwrap()
    }

    fn record(id: TicketId, deleted: u32, decision: DecisionKind) -> DecisionRecord {
        DecisionRecord {
            ticket_id: id,
            deleted_at: Some(day(deleted)),
            actor_id: Some(7),
            actor_name: None,
            previous_state: Some("closed".into()),
            subject: None,
            rule: decision.selects().then(|| "old".to_string()),
            decision,
            decided_at: Utc::now(),
            listed: true,
            subject_tags: None,
        }
    }

    struct Ledger {
        store: AuditStore,
        run: RunId,
        _dir: tempfile::TempDir,
    }

    impl Ledger {
        async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = AuditStore::open(&dir.path().join("audit.db"))
                .await
                .unwrap();
            let run = store
                .start_run(Trigger::Manual, false, &"test".into(), Utc::now())
                .await
                .unwrap();
            Self {
                store,
                run,
                _dir: dir,
            }
        }

        async fn decide(&self, records: &[DecisionRecord]) {
            self.store
                .record_decisions(self.run, records)
                .await
                .unwrap();
        }

        async fn outcome(&self, ids: &[TicketId], outcome: Outcome) {
            self.store
                .record_outcomes(self.run, None, ids, outcome, None, Utc::now())
                .await
                .unwrap();
        }

        /// Every row of a ticket, oldest deletion first: (deleted on day, state).
        async fn rows(&self, id: TicketId) -> Vec<(String, String)> {
            sqlx::query_as(
                "SELECT deleted_at, state FROM ledger WHERE ticket_id = $1 ORDER BY deleted_at",
            )
            .bind(sql_id(id))
            .fetch_all(self.store.pool())
            .await
            .unwrap()
        }

        async fn state(&self, id: TicketId) -> String {
            self.rows(id).await.last().unwrap().1.clone()
        }
    }

    #[tokio::test]
    async fn a_purge_goes_selected_requested_purged_then_gone_and_leaves_the_live_rows() {
        let l = Ledger::new().await;
        l.decide(&[
            record(TicketId::new(1), 1, DecisionKind::Purge),
            record(TicketId::new(2), 1, DecisionKind::KeepNoRule),
        ])
        .await;
        assert_eq!(l.state(TicketId::new(1)).await, "selected");
        assert_eq!(l.state(TicketId::new(2)).await, "kept");
        let batch = IdBatch::new(vec![TicketId::new(1)]).unwrap();
        l.store
            .record_request(l.run, RequestKind::DestroyMany, &batch, Utc::now())
            .await
            .unwrap();
        let rows = l
            .store
            .ledger_rows(&[TicketId::new(1), TicketId::new(2)])
            .await
            .unwrap();
        assert_eq!(rows[&TicketId::new(1)].state, LedgerState::PurgeRequested);
        assert!(rows[&TicketId::new(1)].requested_at.is_some());
        assert_eq!(
            rows[&TicketId::new(2)].state,
            LedgerState::Kept,
            "a request moves only its tickets"
        );
        l.outcome(&[TicketId::new(1)], Outcome::Purged).await;
        assert_eq!(l.state(TicketId::new(1)).await, "purged");
        assert!(
            l.store
                .ledger_rows(&[TicketId::new(1)])
                .await
                .unwrap()
                .contains_key(&TicketId::new(1)),
            "still live"
        );
        l.outcome(&[TicketId::new(1)], Outcome::ConfirmedGone).await;
        assert_eq!(l.state(TicketId::new(1)).await, "gone");
        assert!(
            l.store
                .ledger_rows(&[TicketId::new(1)])
                .await
                .unwrap()
                .is_empty(),
            "settled"
        );
        let counts: HashMap<String, i64> =
            l.store.ledger_counts().await.unwrap().into_iter().collect();
        assert_eq!(counts.get("gone"), Some(&1));
        assert_eq!(counts.get("kept"), Some(&1));
    }

    #[tokio::test]
    async fn a_request_that_did_not_purge_goes_back_to_what_its_decision_says() {
        let l = Ledger::new().await;
        l.decide(&[
            record(TicketId::new(1), 1, DecisionKind::Purge),
            record(TicketId::new(2), 1, DecisionKind::Purge),
        ])
        .await;
        let batch = IdBatch::new(vec![TicketId::new(1), TicketId::new(2)]).unwrap();
        l.store
            .record_request(l.run, RequestKind::DestroyMany, &batch, Utc::now())
            .await
            .unwrap();
        l.outcome(&[TicketId::new(1)], Outcome::Failed).await;
        l.outcome(&[TicketId::new(2)], Outcome::NotSent).await;
        assert_eq!(
            l.state(TicketId::new(1)).await,
            "selected",
            "sent again by a later run"
        );
        assert_eq!(l.state(TicketId::new(2)).await, "selected");
        // a kept ticket still present stays kept
        l.decide(&[record(TicketId::new(3), 1, DecisionKind::KeepRule)])
            .await;
        l.outcome(&[TicketId::new(3)], Outcome::StillPresent).await;
        assert_eq!(l.state(TicketId::new(3)).await, "kept");
        // a restore's non-answers change nothing
        l.outcome(&[TicketId::new(3)], Outcome::NotRestored).await;
        l.outcome(&[TicketId::new(3)], Outcome::RestoreUnknown)
            .await;
        assert_eq!(l.state(TicketId::new(3)).await, "kept");
    }

    #[tokio::test]
    async fn settlements_name_where_a_ticket_went() {
        let l = Ledger::new().await;
        l.decide(&[
            record(TicketId::new(1), 1, DecisionKind::KeepNoRule),
            record(TicketId::new(2), 1, DecisionKind::KeepNoRule),
            record(TicketId::new(3), 1, DecisionKind::Purge),
        ])
        .await;
        l.outcome(&[TicketId::new(1)], Outcome::LeftView).await;
        l.outcome(&[TicketId::new(2)], Outcome::RestoredElsewhere)
            .await;
        l.outcome(&[TicketId::new(3)], Outcome::Unknown).await;
        assert_eq!(l.state(TicketId::new(3)).await, "unknown");
        l.outcome(&[TicketId::new(3)], Outcome::ScrubbedByZendesk)
            .await;
        assert_eq!(l.state(TicketId::new(1)).await, "left_view");
        assert_eq!(l.state(TicketId::new(2)).await, "restored");
        assert_eq!(l.state(TicketId::new(3)).await, "scrubbed");
        // a settled row is not moved by a late outcome of another kind
        l.outcome(&[TicketId::new(1)], Outcome::Failed).await;
        assert_eq!(l.state(TicketId::new(1)).await, "left_view");
    }

    #[tokio::test]
    async fn a_jobs_word_on_a_ticket_restored_beside_it_reopens_the_row() {
        let l = Ledger::new().await;
        l.decide(&[record(TicketId::new(1), 1, DecisionKind::Purge)])
            .await;
        let batch = IdBatch::new(vec![TicketId::new(1)]).unwrap();
        l.store
            .record_request(l.run, RequestKind::DestroyMany, &batch, Utc::now())
            .await
            .unwrap();
        // restored by hand while the job was queued
        l.outcome(&[TicketId::new(1)], Outcome::Restored).await;
        assert_eq!(l.state(TicketId::new(1)).await, "restored");
        l.outcome(&[TicketId::new(1)], Outcome::Purged).await;
        assert_eq!(
            l.state(TicketId::new(1)).await,
            "purged",
            "the next reconcile settles it"
        );
    }

    #[tokio::test]
    async fn a_deletion_again_supersedes_the_old_row_and_outcomes_reach_only_the_new_one() {
        let l = Ledger::new().await;
        l.decide(&[record(TicketId::new(1), 1, DecisionKind::KeepNoRule)])
            .await;
        l.decide(&[record(TicketId::new(1), 3, DecisionKind::Purge)])
            .await;
        let rows = l.rows(TicketId::new(1)).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1, "superseded");
        assert_eq!(rows[1].1, "selected");
        l.outcome(&[TicketId::new(1)], Outcome::NotSent).await;
        let rows = l.rows(TicketId::new(1)).await;
        assert_eq!(
            (rows[0].1.as_str(), rows[1].1.as_str()),
            ("superseded", "selected")
        );
        // the live row is the new deletion's
        let live = l.store.ledger_rows(&[TicketId::new(1)]).await.unwrap();
        assert_eq!(live[&TicketId::new(1)].deleted_at, Some(day(3)));
        // the same deletion decided again updates its row, no new one
        l.decide(&[record(TicketId::new(1), 3, DecisionKind::KeepRule)])
            .await;
        let rows = l.rows(TicketId::new(1)).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].1, "kept");
    }

    #[tokio::test]
    async fn a_row_changed_outside_is_refused_as_it_is_read() {
        let l = Ledger::new().await;
        l.decide(&[
            record(TicketId::new(1), 1, DecisionKind::KeepNoRule),
            record(TicketId::new(2), 1, DecisionKind::KeepNoRule),
        ])
        .await;
        assert_eq!(
            l.store
                .ledger_rows(&[TicketId::new(1), TicketId::new(2)])
                .await
                .unwrap()
                .len(),
            2
        );
        // someone makes a kept ticket purgeable by hand
        sqlx::query("UPDATE ledger SET decision = 'purge', rule = 'old' WHERE ticket_id = 1")
            .execute(l.store.pool())
            .await
            .unwrap();
        let err = l
            .store
            .ledger_rows(&[TicketId::new(1), TicketId::new(2)])
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("changed outside zd-retention: ticket 1"),
            "{err:#}"
        );
        // the other row alone still reads
        assert_eq!(
            l.store
                .ledger_rows(&[TicketId::new(2)])
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

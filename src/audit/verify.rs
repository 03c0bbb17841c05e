//! `audit verify`: the hash chain recomputed, and every run's and job's
//! state checked against the one last chained; what is derived from the
//! chained rows (the ledger, the decision counts) checked against them.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::chain::{Chained, chain_append, chain_base, entry_hash, last_entry, row_digests};
use super::heads::HeadKind;
use super::store::AuditStore;

impl AuditStore {
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
            sqlx::query_as("SELECT tbl, row_id FROM pruned")
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
        let checks = [
            unchained_rows(&mut conn, &covered, ranges).await?,
            changed_states(&mut conn, &states).await?,
            derived_mismatch(&mut conn).await?,
        ];
        report.problem = checks.into_iter().flatten().next();
        Ok(report)
    }

    /// The chain's last entry number and hash (`genesis` before any).
    pub async fn chain_head(&self) -> anyhow::Result<(i64, String)> {
        let mut conn = self.pool.acquire().await?;
        Ok(last_entry(&mut conn)
            .await?
            .unwrap_or((0, "genesis".into())))
    }

    /// Whether an entry with this hash is in the chain.
    pub async fn chain_contains(&self, hash: &str) -> anyhow::Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>(
                r#"SELECT COUNT(*) AS n FROM audit_chain WHERE hash = $1"#,
            )
            .bind(hash)
            .fetch_one(&self.pool)
            .await?
                > 0,
        )
    }

    /// A database written before the runs' and jobs' states were chained:
    /// their states as they are now are recorded once, so that from here on
    /// every change is covered (earlier changes were not, and cannot be).
    pub(super) async fn seal_states(&self) -> anyhow::Result<()> {
        let sealed: i64 = sqlx::query_scalar(
            r#"SELECT COUNT(*) AS n FROM audit_chain WHERE tbl IN ('runs.state', 'jobs.state')"#,
        )
        .fetch_one(&self.pool)
        .await?;
        if sealed > 0 {
            return Ok(());
        }
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.begin_write().await?;
        let base = chain_base(&mut tx).await?;
        for state in [Chained::RunsState, Chained::JobsState] {
            let ids: Vec<i64> = if state == Chained::RunsState {
                sqlx::query_scalar("SELECT id FROM runs ORDER BY id")
                    .fetch_all(&mut *tx)
                    .await?
            } else {
                sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
                    .fetch_all(&mut *tx)
                    .await?
            };
            for id in ids {
                chain_append(&mut tx, state, id, id).await?;
            }
        }
        self.seal(&mut tx, base, None, HeadKind::Commit).await?;
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
            let latest: HashMap<i64, String> = sqlx::query_as("SELECT c.first_id, c.digests FROM audit_chain c
                 WHERE c.tbl = $1 AND c.seq = (SELECT MAX(seq) FROM audit_chain WHERE tbl = c.tbl AND first_id = c.first_id)")
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

/// Rows no chain entry covers: above the chain's last id, below 1, or in a
/// gap between covered ranges.
async fn unchained_rows(
    conn: &mut sqlx::AnyConnection,
    covered: &HashMap<&'static str, i64>,
    mut ranges: HashMap<&'static str, Vec<(i64, i64)>>,
) -> anyhow::Result<Option<String>> {
    // runtime: the table is the loop's (each of `Chained::ALL`)
    for table in Chained::ALL {
        let unchained: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT MIN(id) FROM {} WHERE id > $1",
            table.table()
        )))
        .bind(covered.get(table.table()).copied().unwrap_or(0))
        .fetch_one(&mut *conn)
        .await?;
        if let Some(id) = unchained {
            return Ok(Some(unchained_row(conn, table, id).await?));
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
            return Ok(Some(format!(
                "row {id} of {} has an id the chain never gives out: it was added outside zd-retention",
                table.table()
            )));
        }
        let mut spans = ranges.remove(table.table()).unwrap_or_default();
        spans.sort_unstable();
        let mut next_expected = 1;
        for (first, last) in spans {
            if first > next_expected {
                let stray: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT MIN(id) FROM {} WHERE id >= $1 AND id < $2",
                    table.table()
                )))
                .bind(next_expected)
                .bind(first)
                .fetch_one(&mut *conn)
                .await?;
                if let Some(id) = stray {
                    return Ok(Some(unchained_row(conn, table, id).await?));
                }
            }
            next_expected = next_expected.max(last + 1);
        }
    }
    Ok(None)
}

/// What to say of a row no chain entry covers. A row recorded before
/// migration 0004 brought the chain here (a database of schema 3 or older,
/// upgraded) was never chained: it is named as such, and still a problem,
/// since nothing proves it unchanged. The dates only choose the words: a
/// forged date still fails verification.
async fn unchained_row(
    conn: &mut sqlx::AnyConnection,
    table: Chained,
    id: i64,
) -> anyhow::Result<String> {
    // the tables schema 3 had, and when each row was written
    let at = match table {
        Chained::Runs => Some("started_at"),
        Chained::Decisions => Some("decided_at"),
        Chained::Jobs | Chained::Outcomes => Some("recorded_at"),
        _ => None,
    };
    // runtime: the table and its time column are the row's
    let chain_came: Option<String> = match at {
        // a PostgreSQL audit had the chain from its first row
        Some(_) if conn.backend_name() != "SQLite" => None,
        Some(at) => {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT CAST(m.installed_on AS TEXT) FROM _sqlx_migrations m, {tbl} r
                 WHERE m.version = 4 AND r.id = $1
                   -- the chain came later than the database (a database
                   -- made at schema 4 or newer had both at once)
                   AND julianday((SELECT installed_on FROM _sqlx_migrations WHERE version = 1))
                       < julianday(m.installed_on)
                   -- written before the chain came, below every chained row
                   AND julianday(r.{at}) < julianday(m.installed_on)
                   AND r.id < COALESCE((SELECT MIN(first_id) FROM audit_chain WHERE tbl = $2), r.id + 1)",
                tbl = table.table()
            )))
            .bind(id)
            .bind(table.entry_name())
            .fetch_optional(&mut *conn)
            .await?
        }
        None => None,
    };
    Ok(match chain_came {
        Some(when) => format!(
            "row {id} of {} predates the hash chain: written by a zd-retention of schema 3 or older, before the chain came to this database ({when} UTC), it was never chained and cannot be verified",
            table.table()
        ),
        None => format!(
            "row {id} of {} is not in the chain: it was added outside zd-retention",
            table.table()
        ),
    })
}

/// A run's or job's state that differs from its last recorded one.
async fn changed_states(
    conn: &mut sqlx::AnyConnection,
    states: &HashMap<(&'static str, i64), (i64, String)>,
) -> anyhow::Result<Option<String>> {
    // every run's and job's state as last recorded
    for table in Chained::STATES {
        let current = row_digests(conn, table, i64::MIN, i64::MAX).await?;
        for (id, digest) in current {
            match states.get(&(table.entry_name(), id)) {
                None => {
                    return Ok(Some(format!(
                        "row {id} of {} has no recorded state: it was added outside zd-retention",
                        table.table()
                    )));
                }
                Some((seq, recorded)) if *recorded != digest => {
                    return Ok(Some(format!(
                        "row {id} of {} was changed after its last recorded state (status, figures or job id; chain entry {seq})",
                        table.table()
                    )));
                }
                Some(_) => {}
            }
        }
    }
    Ok(None)
}

/// What is derived from the chained rows and must agree with them: the
/// ledger, and the decision counts `audit run` and `audit stats` read.
async fn derived_mismatch(conn: &mut sqlx::AnyConnection) -> anyhow::Result<Option<String>> {
    // the ledger says what the chained decisions say: no current row
    // (a ticket's newest deletion) whose attributes or decision differ from
    // its ticket's latest decision row
    let forged: Option<i64> = sqlx::query_scalar(r#"SELECT l.ticket_id AS ticket_id FROM ledger l
         LEFT JOIN decisions d ON d.id = (SELECT MAX(id) FROM decisions WHERE ticket_id = l.ticket_id)
         WHERE l.deleted_at = (SELECT MAX(deleted_at) FROM ledger WHERE ticket_id = l.ticket_id)
           AND NOT (d.id IS NOT NULL
                AND COALESCE(d.deleted_at, '') = l.deleted_at
                AND d.actor_id IS NOT DISTINCT FROM l.actor_id AND d.actor_name IS NOT DISTINCT FROM l.actor_name
                AND d.previous_state IS NOT DISTINCT FROM l.previous_state AND d.subject IS NOT DISTINCT FROM l.subject
                AND d.subject_tags IS NOT DISTINCT FROM l.subject_tags
                AND d.decision IS NOT DISTINCT FROM l.decision AND d.rule IS NOT DISTINCT FROM l.rule)
         ORDER BY l.ticket_id LIMIT 1"#)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(ticket) = forged {
        return Ok(Some(format!(
            "the ledger's row of ticket {ticket} differs from its latest recorded decision: the ledger was changed outside zd-retention"
        )));
    }
    // a ticket with decisions and no ledger row that a prune removed, or a
    // current row whose state its latest outcome does not bear out
    let unbacked: Option<i64> = sqlx::query_scalar(r#"SELECT ticket_id AS ticket_id FROM (
         SELECT d.ticket_id FROM decisions d
         WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.ticket_id = d.ticket_id)
           AND NOT EXISTS (SELECT 1 FROM pruned p WHERE p.tbl = 'ledger' AND p.row_id = d.ticket_id)
         UNION ALL
         SELECT l.ticket_id FROM ledger l
         JOIN decisions d ON d.id = (SELECT MAX(id) FROM decisions WHERE ticket_id = l.ticket_id)
         WHERE l.deleted_at = (SELECT MAX(deleted_at) FROM ledger WHERE ticket_id = l.ticket_id)
           AND (l.state = 'superseded'
                OR (l.state IN ('kept', 'selected')
                    AND ((l.state = 'selected') <> (d.decision IN ('purge', 'would_purge'))
                         OR COALESCE((SELECT o.outcome FROM outcomes o
                                      WHERE o.ticket_id = l.ticket_id AND o.recorded_at >= d.decided_at
                                      ORDER BY o.id DESC LIMIT 1), '')
                            IN ('purged', 'unknown', 'confirmed_gone', 'restored', 'restored_elsewhere',
                                'scrubbed_by_zendesk', 'left_view'))))
         UNION ALL
         SELECT l.ticket_id FROM ledger l
         WHERE l.deleted_at = (SELECT MAX(deleted_at) FROM ledger WHERE ticket_id = l.ticket_id)
           AND l.state IN ('purged', 'gone', 'restored', 'scrubbed', 'left_view', 'unknown')
           AND COALESCE((SELECT o.outcome FROM outcomes o WHERE o.ticket_id = l.ticket_id ORDER BY o.id DESC LIMIT 1), '')
               NOT IN (CASE l.state WHEN 'purged' THEN 'purged' WHEN 'gone' THEN 'confirmed_gone'
                                    WHEN 'scrubbed' THEN 'scrubbed_by_zendesk' WHEN 'left_view' THEN 'left_view'
                                    WHEN 'unknown' THEN 'unknown' ELSE 'restored' END,
                       CASE l.state WHEN 'restored' THEN 'restored_elsewhere' ELSE 'none' END)) AS sub
     LIMIT 1"#)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(ticket) = unbacked {
        return Ok(Some(format!(
            "the ledger's row of ticket {ticket} is missing or in a state its recorded outcomes do not bear out: the ledger was changed outside zd-retention"
        )));
    }
    // the derived counts that `audit run` and `audit stats` read
    let forged: Option<(i64, String)> = sqlx::query_as(
        r#"WITH whole AS (SELECT run_id FROM run_decision_counts
                        EXCEPT SELECT run_id FROM pruned WHERE tbl = 'decisions')
         SELECT run_id AS run_id, decision AS decision FROM (
             SELECT run_id, decision, rule, count FROM run_decision_counts
             WHERE run_id IN (SELECT run_id FROM whole)
             EXCEPT
             SELECT run_id, decision, rule, COUNT(*) FROM decisions
             WHERE run_id IN (SELECT run_id FROM whole)
             GROUP BY run_id, decision, rule) AS sub
         UNION ALL
         SELECT run_id, decision FROM (
             SELECT run_id, decision, rule, COUNT(*) FROM decisions
             WHERE run_id IN (SELECT run_id FROM whole)
             GROUP BY run_id, decision, rule
             EXCEPT
             SELECT run_id, decision, rule, count FROM run_decision_counts
             WHERE run_id IN (SELECT run_id FROM whole)) AS sub
         LIMIT 1"#,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((run, decision)) = forged {
        return Ok(Some(format!(
            "the decision counts of run {run} ({decision}) do not match its decisions: run_decision_counts was changed"
        )));
    }
    // the ledger's rows per state, kept by triggers, that `audit ledger`,
    // `audit stats` and the metrics read
    let drifted: Option<String> = sqlx::query_scalar(
        r#"SELECT state FROM (
             SELECT state, n FROM ledger_state_counts WHERE n <> 0
             EXCEPT
             SELECT state, COUNT(*) FROM ledger GROUP BY state) AS sub
         UNION ALL
         SELECT state FROM (
             SELECT state, COUNT(*) FROM ledger GROUP BY state
             EXCEPT
             SELECT state, n FROM ledger_state_counts WHERE n <> 0) AS sub
         LIMIT 1"#,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(state) = drifted {
        return Ok(Some(format!(
            "the ledger's count of {state} rows does not match its rows: ledger_state_counts was changed"
        )));
    }
    Ok(None)
}

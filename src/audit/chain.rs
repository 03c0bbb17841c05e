//! Tamper evidence: every insert into runs, decisions, jobs, outcomes and
//! pruned appends a chain entry hashing the rows it added; every change of a
//! run's or job's state appends their new values. `verify` recomputes it.

use super::*;

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
    pub(super) async fn seal_states(&self) -> anyhow::Result<()> {
        let sealed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_chain WHERE tbl IN ('runs.state', 'jobs.state')",
        )
        .fetch_one(&self.pool)
        .await?;
        if sealed > 0 {
            return Ok(());
        }
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = super::signing::chain_base(&mut tx).await?;
        for (table, state) in [("runs", Chained::RunsState), ("jobs", Chained::JobsState)] {
            let ids: Vec<i64> =
                sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {table} ORDER BY id")))
                    .fetch_all(&mut *tx)
                    .await?;
            for id in ids {
                chain_append(&mut tx, state, id, id).await?;
            }
        }
        self.seal(&mut tx, base, None, super::signing::HeadKind::Commit)
            .await?;
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
}

/// The tables the chain covers, with their columns that never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chained {
    Runs,
    Decisions,
    Jobs,
    Outcomes,
    /// Rows pruned by `audit.keep_details`.
    Pruned,
    /// Each distinct config a run used (migration 0009).
    ConfigVersions,
    /// The columns of a run that change (status, figures, error): each
    /// change appends their new values, so an UPDATE outside is seen.
    RunsState,
    /// The columns of a job that change (Zendesk's job id, status, times).
    JobsState,
}

impl Chained {
    /// The tables whose rows are inserted under the chain.
    pub(super) const ALL: [Chained; 6] = [
        Chained::Runs,
        Chained::Decisions,
        Chained::Jobs,
        Chained::Outcomes,
        Chained::Pruned,
        Chained::ConfigVersions,
    ];
    /// The mutable states, chained at every change.
    pub(super) const STATES: [Chained; 2] = [Chained::RunsState, Chained::JobsState];

    pub(super) fn table(self) -> &'static str {
        match self {
            Self::Runs | Self::RunsState => "runs",
            Self::Decisions => "decisions",
            Self::Jobs | Self::JobsState => "jobs",
            Self::Outcomes => "outcomes",
            Self::Pruned => "pruned",
            Self::ConfigVersions => "config_versions",
        }
    }

    /// The name a chain entry carries.
    pub(super) fn entry_name(self) -> &'static str {
        match self {
            Self::RunsState => "runs.state",
            Self::JobsState => "jobs.state",
            other => other.table(),
        }
    }

    pub(super) fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::STATES)
            .find(|c| c.entry_name() == name)
    }

    /// How many chained columns the first schema had; later ones follow.
    pub(super) fn base_columns(self) -> usize {
        match self {
            Self::RunsState => 13,
            Self::Decisions => 9,
            // host, os_user and program_version came with migration 0009
            Self::Runs => 4,
            // fresh_read_at, send_window_us and after_read_at came with migration 0010
            Self::JobsState => 5,
            _ => usize::MAX,
        }
    }

    /// Every chained column as text, in a fixed order.
    pub(super) fn select(self) -> &'static str {
        match self {
            Self::Runs => {
                "SELECT id, CAST(trigger AS TEXT), CAST(started_at AS TEXT), CAST(dry_run AS TEXT), CAST(config_hash AS TEXT), CAST(host AS TEXT), CAST(os_user AS TEXT), CAST(program_version AS TEXT) FROM runs WHERE id BETWEEN ? AND ? ORDER BY id"
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
            Self::ConfigVersions => {
                "SELECT id, CAST(hash AS TEXT), CAST(first_run AS TEXT), CAST(first_used AS TEXT), CAST(settings AS TEXT) FROM config_versions WHERE id BETWEEN ? AND ? ORDER BY id"
            }
            Self::RunsState => {
                "SELECT id, CAST(finished_at AS TEXT), CAST(status AS TEXT), CAST(scanned AS TEXT), CAST(matched AS TEXT), CAST(purged AS TEXT), CAST(failed AS TEXT), CAST(unknown AS TEXT), CAST(list_requests AS TEXT), CAST(early_stop AS TEXT), CAST(error AS TEXT), CAST(scan AS TEXT), CAST(scan_reason AS TEXT), CAST(max_listing_age_ms AS TEXT), CAST(step AS TEXT), CAST(high_water AS TEXT), CAST(decisions_recorded AS TEXT) FROM runs WHERE id BETWEEN ? AND ? ORDER BY id"
            }
            Self::JobsState => {
                "SELECT id, CAST(zendesk_job_id AS TEXT), CAST(answered_at AS TEXT), CAST(finished_at AS TEXT), CAST(status AS TEXT), CAST(message AS TEXT), CAST(fresh_read_at AS TEXT), CAST(send_window_us AS TEXT), CAST(after_read_at AS TEXT) FROM jobs WHERE id BETWEEN ? AND ? ORDER BY id"
            }
        }
    }
}

/// The chain's last entry: its number and hash (`None` before any).
pub(super) async fn last_entry(
    conn: &mut sqlx::SqliteConnection,
) -> anyhow::Result<Option<(i64, String)>> {
    Ok(
        sqlx::query_as("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// Each row's id and a 16-hex digest of its chained columns.
pub(super) async fn row_digests(
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

pub(super) fn entry_hash(prev: &str, table: &str, first: i64, last: i64, digests: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{prev}\x1e{table}\x1e{first}\x1e{last}\x1e{digests}").as_bytes(),
    ))
}

/// A row's digest: its chained columns as text (as `CAST(.. AS TEXT)` gives
/// them), NULL distinct from empty. Writers compute it from the values they
/// bind; `audit verify` from the values it reads back.
pub(super) fn row_digest<'a>(
    table: Chained,
    values: impl IntoIterator<Item = Option<&'a str>>,
) -> String {
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
pub(super) async fn chain_append_digests(
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

pub(super) async fn chain_append(
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

/// Rows no chain entry covers: above the chain's last id, below 1, or in a
/// gap between covered ranges.
async fn unchained_rows(
    conn: &mut sqlx::SqliteConnection,
    covered: &HashMap<&'static str, i64>,
    mut ranges: HashMap<&'static str, Vec<(i64, i64)>>,
) -> anyhow::Result<Option<String>> {
    for table in Chained::ALL {
        let unchained: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT MIN(id) FROM {} WHERE id > ?",
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
                    "SELECT MIN(id) FROM {} WHERE id >= ? AND id < ?",
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
    conn: &mut sqlx::SqliteConnection,
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
    let chain_came: Option<String> = match at {
        Some(at) => {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT CAST(m.installed_on AS TEXT) FROM _sqlx_migrations m, {tbl} r
                 WHERE m.version = 4 AND r.id = ?1
                   -- the chain came later than the database (a database
                   -- made at schema 4 or newer had both at once)
                   AND julianday((SELECT installed_on FROM _sqlx_migrations WHERE version = 1))
                       < julianday(m.installed_on)
                   -- written before the chain came, below every chained row
                   AND julianday(r.{at}) < julianday(m.installed_on)
                   AND r.id < COALESCE((SELECT MIN(first_id) FROM audit_chain WHERE tbl = ?2), r.id + 1)",
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
    conn: &mut sqlx::SqliteConnection,
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
async fn derived_mismatch(conn: &mut sqlx::SqliteConnection) -> anyhow::Result<Option<String>> {
    // the ledger says what the chained decisions say
    let forged: Option<i64> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(super::ledger::disagreeing_rows_sql()))
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(ticket) = forged {
        return Ok(Some(format!(
            "the ledger's row of ticket {ticket} differs from its latest recorded decision: the ledger was changed outside zd-retention"
        )));
    }
    let unbacked: Option<i64> = sqlx::query_scalar(super::ledger::unbacked_rows_sql())
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(ticket) = unbacked {
        return Ok(Some(format!(
            "the ledger's row of ticket {ticket} is missing or in a state its recorded outcomes do not bear out: the ledger was changed outside zd-retention"
        )));
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
        return Ok(Some(format!(
            "the decision counts of run {run} ({decision}) do not match its decisions: run_decision_counts was changed"
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_hash_changes_with_each_of_its_parts() {
        let base = entry_hash("genesis", "decisions", 1, 3, "aa");
        assert_eq!(base, entry_hash("genesis", "decisions", 1, 3, "aa"));
        assert_eq!(base.len(), 64);
        for other in [
            entry_hash("0f", "decisions", 1, 3, "aa"),
            entry_hash("genesis", "outcomes", 1, 3, "aa"),
            entry_hash("genesis", "decisions", 2, 3, "aa"),
            entry_hash("genesis", "decisions", 1, 4, "aa"),
            entry_hash("genesis", "decisions", 1, 3, "ab"),
            // the separator keeps "1","13" apart from "11","3"
            entry_hash("genesis", "decisions", 11, 3, "a"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_row_digest_tells_null_from_empty_and_ignores_later_columns_unset() {
        let table = Chained::Decisions;
        let base: Vec<Option<&str>> = (0..table.base_columns()).map(|_| Some("x")).collect();
        let digest = row_digest(table, base.clone());
        assert_eq!(digest.len(), 16);
        let mut empty = base.clone();
        empty[0] = Some("");
        let mut null = base.clone();
        null[0] = None;
        assert_ne!(row_digest(table, empty.clone()), row_digest(table, null));
        assert_ne!(row_digest(table, empty), digest);
        // a column added by a later migration, unset: the old digest holds
        let mut later = base.clone();
        later.push(None);
        assert_eq!(row_digest(table, later), digest);
        // once set, it counts
        let mut set = base;
        set.push(Some("tag"));
        assert_ne!(row_digest(table, set), digest);
    }
}

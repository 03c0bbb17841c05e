//! Tamper evidence: every insert into runs, decisions, jobs, outcomes and
//! pruned appends a chain entry hashing the rows it added; every change of a
//! run's or job's state appends their new values. `verify` recomputes it.

use sha2::{Digest, Sha256};
use sqlx::{Any, Row};

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
                "SELECT id, CAST(trigger AS TEXT), CAST(started_at AS TEXT), CAST(dry_run AS TEXT), CAST(config_hash AS TEXT), CAST(host AS TEXT), CAST(os_user AS TEXT), CAST(program_version AS TEXT) FROM runs WHERE id BETWEEN $1 AND $2 ORDER BY id"
            }
            Self::Decisions => {
                "SELECT id, CAST(run_id AS TEXT), CAST(ticket_id AS TEXT), CAST(deleted_at AS TEXT), CAST(actor_id AS TEXT), CAST(previous_state AS TEXT), CAST(subject AS TEXT), CAST(rule AS TEXT), CAST(decision AS TEXT), CAST(decided_at AS TEXT), CAST(actor_name AS TEXT), CAST(subject_tags AS TEXT) FROM decisions WHERE id BETWEEN $1 AND $2 ORDER BY id"
            }
            Self::Jobs => {
                "SELECT id, CAST(run_id AS TEXT), CAST(kind AS TEXT), CAST(ticket_ids AS TEXT), CAST(ticket_count AS TEXT), CAST(recorded_at AS TEXT) FROM jobs WHERE id BETWEEN $1 AND $2 ORDER BY id"
            }
            Self::Outcomes => {
                "SELECT id, CAST(run_id AS TEXT), CAST(job_id AS TEXT), CAST(ticket_id AS TEXT), CAST(outcome AS TEXT), CAST(detail AS TEXT), CAST(recorded_at AS TEXT) FROM outcomes WHERE id BETWEEN $1 AND $2 ORDER BY id"
            }
            Self::Pruned => {
                "SELECT id, CAST(tbl AS TEXT), CAST(row_id AS TEXT), CAST(run_id AS TEXT), CAST(what AS TEXT), CAST(pruned_at AS TEXT) FROM pruned WHERE id BETWEEN $1 AND $2 ORDER BY id"
            }
            Self::ConfigVersions => {
                "SELECT id, CAST(hash AS TEXT), CAST(first_run AS TEXT), CAST(first_used AS TEXT), CAST(settings AS TEXT) FROM config_versions WHERE id BETWEEN $1 AND $2 ORDER BY id"
            }
            Self::RunsState => {
                "SELECT id, CAST(finished_at AS TEXT), CAST(status AS TEXT), CAST(scanned AS TEXT), CAST(matched AS TEXT), CAST(purged AS TEXT), CAST(failed AS TEXT), CAST(unknown AS TEXT), CAST(list_requests AS TEXT), CAST(early_stop AS TEXT), CAST(error AS TEXT), CAST(scan AS TEXT), CAST(scan_reason AS TEXT), CAST(max_listing_age_ms AS TEXT), CAST(step AS TEXT), CAST(high_water AS TEXT), CAST(decisions_recorded AS TEXT) FROM runs WHERE id BETWEEN $1 AND $2 ORDER BY id"
            }
            Self::JobsState => {
                "SELECT id, CAST(zendesk_job_id AS TEXT), CAST(answered_at AS TEXT), CAST(finished_at AS TEXT), CAST(status AS TEXT), CAST(message AS TEXT), CAST(fresh_read_at AS TEXT), CAST(send_window_us AS TEXT), CAST(after_read_at AS TEXT) FROM jobs WHERE id BETWEEN $1 AND $2 ORDER BY id"
            }
        }
    }
}

/// The chain's last entry: its number and hash (`None` before any).
pub(super) async fn last_entry(
    conn: &mut sqlx::AnyConnection,
) -> anyhow::Result<Option<(i64, String)>> {
    Ok(
        sqlx::query_as("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The chain's last entry number before a transaction appends to it.
pub(super) async fn chain_base(tx: &mut sqlx::Transaction<'_, Any>) -> anyhow::Result<i64> {
    Ok(last_entry(tx).await?.map_or(0, |(seq, _)| seq))
}

/// Each row's id and a 16-hex digest of its chained columns.
pub(super) async fn row_digests(
    conn: &mut sqlx::AnyConnection,
    table: Chained,
    first: i64,
    last: i64,
) -> anyhow::Result<Vec<(i64, String)>> {
    // runtime: the text is the table's (one of `Chained::select`), its
    // columns read by position
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
    tx: &mut sqlx::Transaction<'_, Any>,
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
    sqlx::query("INSERT INTO audit_chain (tbl, first_id, last_id, digests, prev, hash) VALUES ($1, $2, $3, $4, $5, $6)")
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
    tx: &mut sqlx::Transaction<'_, Any>,
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

/// The last id of a batch's new rows (`RETURNING id, KEY`: a decision's or
/// an outcome's ticket, a pruned row's id), once the rows are proven to
/// hold consecutive ids in the batch's order (`keys`), right after `last`
/// (0 before the first batch). The chain names a batch's rows
/// by their id range and digests them in order: a gap or rows numbered in
/// another order would leave an honest history that verifies as tampered.
/// Neither backend promises the order of `RETURNING`, so the ids are sorted
/// and the keys compared; a refusal rolls the transaction back.
pub(super) fn placed_in_order(
    rows: &[sqlx::any::AnyRow],
    keys: impl ExactSizeIterator<Item = i64>,
    last: i64,
) -> anyhow::Result<i64> {
    use sqlx::Row as _;
    let mut placed = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()?;
    placed.sort_unstable();
    let first = placed.first().map_or(0, |p| p.0);
    let in_order = placed.len() == keys.len()
        && (last == 0 || first == last + 1)
        && placed
            .iter()
            .zip(keys)
            .enumerate()
            .all(|(i, (&(id, key), want))| id == first + i as i64 && key == want);
    anyhow::ensure!(
        in_order,
        "the database numbered the new rows out of their order (from id {first}): nothing was recorded"
    );
    Ok(placed.last().map_or(last, |p| p.0))
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

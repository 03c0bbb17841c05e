//! `audit migrate --to postgres://…`: a whole SQLite history copied into an
//! empty PostgreSQL database, row for row with its ids, in one transaction
//! (all of it or nothing). The rows' chained text is the same on both
//! backends, so the copy's chain recomputes to the same head; the caller
//! verifies it there. A destination that holds anything is refused.

use anyhow::Context;
use futures::TryStreamExt as _;
use sqlx::{Any, AssertSqlSafe, QueryBuilder, Row as _};

use super::connect::redacted;
use super::store::{AuditStore, Backend, numbered, on_pg};

/// The tables copied, parents first; `ledger_state_counts` follows from the
/// ledger (a trigger), `fence` belongs to the destination's nodes.
const TABLES: [&str; 14] = [
    "runs",
    "config_versions",
    "decisions",
    "jobs",
    "outcomes",
    "run_decision_counts",
    "audit_chain",
    "chain_heads",
    "probes",
    "ledger",
    "pruned",
    "ledger_decided",
    "view_checks",
    "purge_latency",
];

/// The tables whose ids a sequence gives: set past the copied ones.
const IDENTITIES: [&str; 9] = [
    "runs",
    "config_versions",
    "decisions",
    "jobs",
    "outcomes",
    "audit_chain",
    "probes",
    "pruned",
    "view_checks",
];

/// Rows per INSERT: at most 25 columns, under PostgreSQL's 65,535 binds.
const BATCH: usize = 1000;

/// Fails unless the database at `url` is empty: no table at all, or only
/// this program's tables, all without a row.
async fn refuse_unless_empty(url: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let shown = redacted(url);
    let mut conn = sqlx::AnyConnection::connect(&super::connect::named(url))
        .await
        .with_context(|| format!("cannot connect to {shown}"))?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
         WHERE table_schema = current_schema() ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    let ours = |t: &str| {
        TABLES.contains(&t) || matches!(t, "_sqlx_migrations" | "ledger_state_counts" | "fence")
    };
    if let Some(other) = tables.iter().find(|t| !ours(t)) {
        anyhow::bail!(
            "{shown} is not empty: it holds the table {other}, which is not zd-retention's. Give an empty database (CREATE DATABASE ...)"
        );
    }
    // (a `fence` row is a daemon's that started there and wrote nothing)
    for table in tables
        .iter()
        .filter(|t| !matches!(t.as_str(), "_sqlx_migrations" | "fence"))
    {
        // runtime: the table is one of this program's, named above
        let any: Option<i64> =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT 1 FROM {table} LIMIT 1")))
                .fetch_optional(&mut conn)
                .await?;
        if any.is_some() {
            anyhow::bail!(
                "{shown} is not empty: its table {table} holds rows (an audit is there already). Nothing was copied; give an empty database"
            );
        }
    }
    let _ = conn.close().await;
    Ok(())
}

impl AuditStore {
    /// Copies this store's whole history (an SQLite store opened to read:
    /// one snapshot) into the empty PostgreSQL database at `url`, which is
    /// migrated first. Returns the rows copied per table.
    pub async fn copy_into_postgres(&self, url: &str) -> anyhow::Result<Vec<(&'static str, u64)>> {
        anyhow::ensure!(
            self.backend == Backend::Sqlite,
            "the history to copy is read from an SQLite audit database"
        );
        // the lead for the copy's life: no daemon starts on the
        // destination meanwhile, and the check of its emptiness holds
        let lead = match super::lead::Lead::try_take(
            url,
            &super::lead::Lead::holder_name("audit migrate"),
        )
        .await?
        {
            Ok(lead) => lead,
            Err(holder) => anyhow::bail!(
                "{} is in use by a writer ({holder}): it is not empty; nothing was copied",
                redacted(url)
            ),
        };
        refuse_unless_empty(url).await?;
        let dest = AuditStore::open_postgres_leading(url, None, lead).await?;
        let mut tx = dest.pool.begin().await?;
        let mut source = self.pool.acquire().await?;
        let mut copied = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            // the destination's columns, in order, and which hold integers
            let columns: Vec<(String, String)> = sqlx::query_as(
                "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut *tx)
            .await?;
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            let integers: Vec<bool> = columns.iter().map(|(_, t)| t == "bigint").collect();
            let list = names.join(", ");
            // runtime: the table and its columns are the destination's
            // (the ledger has no rowid: its key orders it)
            let order = if table == "ledger" {
                "ticket_id, deleted_at"
            } else {
                "rowid"
            };
            let select = format!("SELECT {list} FROM {table} ORDER BY {order}");
            let mut rows = sqlx::query(AssertSqlSafe(select)).fetch(&mut *source);
            let mut batch: Vec<sqlx::any::AnyRow> = Vec::with_capacity(BATCH);
            let mut count = 0u64;
            loop {
                let row = rows
                    .try_next()
                    .await
                    .with_context(|| format!("cannot read the table {table}"))?;
                let end = row.is_none();
                if let Some(row) = row {
                    batch.push(row);
                }
                if batch.len() == BATCH || (end && !batch.is_empty()) {
                    let mut q: QueryBuilder<Any> =
                        QueryBuilder::new(format!("INSERT INTO {table} ({list}) "));
                    let mut failed = None;
                    q.push_values(batch.iter(), |mut b, row| {
                        for (i, integer) in integers.iter().enumerate() {
                            if *integer {
                                match row.try_get::<Option<i64>, _>(i) {
                                    Ok(v) => b.push_bind(v),
                                    Err(e) => {
                                        failed.get_or_insert(format!("{}: {e}", names[i]));
                                        b.push_bind(None::<i64>)
                                    }
                                };
                            } else {
                                match row.try_get::<Option<String>, _>(i) {
                                    Ok(v) => b.push_bind(v),
                                    Err(e) => {
                                        failed.get_or_insert(format!("{}: {e}", names[i]));
                                        b.push_bind(None::<String>)
                                    }
                                };
                            }
                        }
                    });
                    if let Some(problem) = failed {
                        anyhow::bail!(
                            "a row of {table} holds a value of the wrong type ({problem}): run `zd-retention audit verify` on the SQLite database; nothing was copied"
                        );
                    }
                    numbered(&mut q, on_pg(&tx))
                        .persistent(false)
                        .execute(&mut *tx)
                        .await
                        .with_context(|| format!("cannot copy the table {table}"))?;
                    count += batch.len() as u64;
                    batch.clear();
                }
                if end {
                    break;
                }
            }
            drop(rows);
            copied.push((table, count));
        }
        for table in IDENTITIES {
            // runtime: the table is one of this program's, named above
            let id = if table == "audit_chain" { "seq" } else { "id" };
            sqlx::query(AssertSqlSafe(format!(
                "SELECT CAST(setval(pg_get_serial_sequence('{table}', '{id}'), COALESCE(MAX({id}), 1), MAX({id}) IS NOT NULL) AS TEXT) FROM {table}"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit()
            .await
            .context("cannot commit the copy: nothing was copied")?;
        dest.close().await;
        Ok(copied)
    }
}

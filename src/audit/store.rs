//! The store itself: its pool, the file a writer opened, and the times and
//! ids every table shares. The bottom of the audit module: it imports none
//! of its siblings but the signing key it holds.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::AnyArguments;
use sqlx::query::{Query, QueryScalar};
use sqlx::{Any, AnyPool, AssertSqlSafe, QueryBuilder};

use super::keys::ChainSigner;

pub use crate::ids::{JobRowId, RunId};

/// Reads a stored time back (`None` for NULL, empty or unreadable text).
pub(crate) fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|d| DateTime::parse_from_rfc3339(&d).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// Timestamps as stored: RFC 3339, UTC, milliseconds.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where the audit is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file on this machine (the default).
    Sqlite,
    /// A PostgreSQL database, shared by the nodes of a cluster.
    Postgres,
}

/// The store; cheap to clone (a pool).
#[derive(Debug, Clone)]
pub struct AuditStore {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
    /// Whether this store writes (a reader holds one snapshot instead).
    pub(super) writer: bool,
    /// On PostgreSQL, the lead of the daemon that writes: every write
    /// transaction checks it and its fencing term.
    pub(super) lead: Option<std::sync::Arc<super::lead::Lead>>,
    /// For a writer: the file and its identity when opened. A database
    /// removed or replaced while in use fails the next write loudly:
    /// SQLite would go on writing to the removed file, and the history
    /// would vanish without a word.
    pub(super) file: Option<(std::path::PathBuf, FileIdentity)>,
    /// The write-ahead log this writer opened: removed with the database's
    /// disappearance, so that SQLite never replays it onto another file
    /// moved into its place.
    pub(super) wal: Option<FileIdentity>,
    /// An upgraded private copy of an older database being read: removed
    /// when the last clone of the store goes.
    pub(super) scratch: Option<std::sync::Arc<ScratchFile>>,
    /// Signs the chain's head at each run's end (`[audit] signing_key_file`).
    pub(super) signer: Option<ChainSigner>,
}

/// A temporary file removed on drop.
#[derive(Debug)]
pub(super) struct ScratchFile(pub(super) std::path::PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

impl AuditStore {
    /// Whether this store only reads, on one snapshot held for its life.
    pub(crate) fn is_reader(&self) -> bool {
        !self.writer
    }

    /// A store that only reads.
    pub(super) fn reader(pool: AnyPool, backend: Backend) -> Self {
        Self {
            pool,
            backend,
            writer: false,
            lead: None,
            file: None,
            wal: None,
            scratch: None,
            signer: None,
        }
    }

    /// Fails when the database file a writer opened was removed or replaced
    /// since (device and inode), before anything more is written.
    pub(super) fn check_file(&self) -> anyhow::Result<()> {
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

    /// Whether this store keeps the audit in PostgreSQL.
    pub(super) fn is_pg(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Where this store keeps the audit.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction. SQLite takes its write lock first (a
    /// read before it could not be upgraded once another writer committed,
    /// SQLITE_BUSY_SNAPSHOT); PostgreSQL serialises writers with a
    /// transaction-scoped advisory lock.
    pub(super) async fn begin_write(&self) -> anyhow::Result<sqlx::Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                // every writer of the database, with a lead or without (a
                // probe, an opening's seal), one at a time
                sqlx::query("SELECT CAST(pg_advisory_xact_lock($1) AS TEXT)")
                    .bind(WRITE_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                if let Some(lead) = &self.lead {
                    lead.confirm().await?;
                    // the fence row, locked till the commit: a takeover
                    // waits for this transaction, and a term raised
                    // before it refuses it
                    let held =
                        sqlx::query("UPDATE fence SET term = term WHERE id = 1 AND term = $1")
                            .bind(lead.term())
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    if held != 1 {
                        anyhow::bail!(
                            "another node took over the audit database (fencing term {} is no longer the current one): this daemon writes nothing more",
                            lead.term()
                        );
                    }
                }
                tx
            }
        })
    }

    /// A statement's text for this store's backend: PostgreSQL has no
    /// `INDEXED BY` (SQLite's planner hints). (The two lookups by a JSON
    /// array of ids are written out per backend, in `writes.rs`.)
    pub(super) fn dialect(&self, sql: &'static str) -> AssertSqlSafe<String> {
        AssertSqlSafe(match self.backend {
            Backend::Sqlite => sql.to_string(),
            Backend::Postgres => {
                static INDEXED: std::sync::LazyLock<regex::Regex> =
                    std::sync::LazyLock::new(|| {
                        regex::Regex::new(r"INDEXED BY \w+").expect("a valid pattern")
                    });
                INDEXED.replace_all(sql, "").into_owned()
            }
        })
    }

    /// Gives a PostgreSQL writer the lead it holds, its term raised: from
    /// now on each write transaction checks both.
    pub(super) async fn with_lead(mut self, lead: super::lead::Lead) -> anyhow::Result<Self> {
        let term = lead.raise_term().await?;
        metrics::gauge!("zd_retention_fencing_term").set(term as f64);
        tracing::info!(term, "this daemon holds the lead of the audit database");
        self.lead = Some(std::sync::Arc::new(lead));
        Ok(self)
    }

    /// Fails unless this process may write to Zendesk: on PostgreSQL with a
    /// lead, it still holds it (checked just before each write request).
    pub async fn confirm_lead(&self) -> anyhow::Result<()> {
        match &self.lead {
            Some(lead) => lead.confirm().await,
            None => Ok(()),
        }
    }

    /// Whether this store's lead was found lost (final).
    pub fn lead_lost(&self) -> bool {
        self.lead.as_ref().is_some_and(|l| l.is_lost())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `path` with a suffix on its file name (`-wal`, `-shm`).
pub(super) fn suffixed(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The identity of the database file while a writer uses it: its device
/// and inode, checked at every commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    pub(super) fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// The advisory lock PostgreSQL writers take for each write transaction
/// (`pg_advisory_xact_lock`): any number, the same for every node.
pub(super) const WRITE_LOCK_KEY: i64 = 0x7a64_7265_7465_6e74; // "zdretent"

/// Whether a connection is to PostgreSQL.
pub(super) fn on_pg(conn: &sqlx::AnyConnection) -> bool {
    conn.backend_name() == "PostgreSQL"
}

/// A batch's text and arguments, its `?` placeholders (what `QueryBuilder`
/// writes for the `Any` driver) numbered `$1`, `$2`, … for PostgreSQL. The
/// batches' texts hold no other `?`. SQLite keeps its `?`: it looks a named
/// parameter (`$12`) up among the others, which costs quadratic time in a
/// batch of thousands (measured: 78 ms a batch of 400 decisions).
fn renumbered(q: &mut QueryBuilder<Any>, pg: bool) -> (String, AnyArguments) {
    use sqlx::Execute as _;
    let mut built = q.build();
    // (arguments a builder holds are always taken once: never an error)
    let args = built.take_arguments().ok().flatten().unwrap_or_default();
    let text = built.sql();
    if !pg {
        return (text.as_str().to_string(), args);
    }
    let mut sql = String::with_capacity(text.as_str().len() + 64);
    let mut n = 0;
    for c in text.as_str().chars() {
        if c == '?' {
            n += 1;
            sql.push('$');
            sql.push_str(&n.to_string());
        } else {
            sql.push(c);
        }
    }
    (sql, args)
}

/// A batch built with `QueryBuilder`, ready to run on either backend.
pub(super) fn numbered(q: &mut QueryBuilder<Any>, pg: bool) -> Query<'static, Any, AnyArguments> {
    let (sql, args) = renumbered(q, pg);
    sqlx::query_with(AssertSqlSafe(sql), args)
}

/// [`numbered`], reading one column.
pub(super) fn numbered_scalar<O>(
    q: &mut QueryBuilder<Any>,
    pg: bool,
) -> QueryScalar<'static, Any, O, AnyArguments>
where
    O: Send + Unpin,
    (O,): Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
{
    let (sql, args) = renumbered(q, pg);
    sqlx::query_scalar_with(AssertSqlSafe(sql), args)
}

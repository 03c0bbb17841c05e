//! The audit store: runs, decisions, jobs and outcomes in SQLite (WAL).
//!
//! The only module that knows SQL. Writes that precede a request to Zendesk
//! are committed (synchronous = FULL) before the caller sends it: decisions
//! and the batch first, the job id as soon as the answer arrives. Subjects
//! are stored only when the config says so.

use encode::{sql_id, ticket_id};
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
use sqlx::{AssertSqlSafe, ConnectOptions as _, QueryBuilder, Row, Sqlite};

use crate::zendesk::{IdBatch, TicketId};

mod chain;
mod checks;
mod encode;
mod evidence_queries;
mod kinds;
mod ledger;
mod queries;
mod signing;
pub use chain::ChainReport;
use chain::*;
pub use checks::{LatencySummary, RequestLatency, ViewCheck};
pub use encode::MAX_TICKET_ID;
pub use evidence_queries::{
    ConfigVersion, DayRuleCount, DayStatusCount, IN_DOUBT_DETAIL, KeptCount, OpenOutcome,
    PURGES_OF_PERIOD_SQL, PurgeListing, PurgeScope, PurgedTicket, RunOriginRow, SendWindows,
};
pub use kinds::{
    DecisionKind, JobRowStatus, Outcome, RequestKind, RunStatus, ScanKind, StepKind, Trigger,
};
pub use ledger::{LEDGER_CHUNK, LedgerEntry, LedgerState, ListingMarks, Sighting};
pub use signing::{ChainHead, ChainSigner, ChainVerifier, SignatureReport};

/// A job's row id (ours, not Zendesk's).
pub use crate::ids::JobRowId;
/// A run's row id.
pub use crate::ids::RunId;

/// Timestamps as stored: RFC 3339, UTC, milliseconds.
/// Reads a stored time back (`None` for NULL, empty or unreadable text).
pub(crate) fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|d| DateTime::parse_from_rfc3339(&d).ok())
        .map(|d| d.with_timezone(&Utc))
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Write requests (purges, restores) this process recorded. Each is
/// recorded before it is sent, so while this is 0 no write request was
/// sent: what an error message may then promise.
static REQUESTS_RECORDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many write requests this process recorded (and so may have sent).
pub fn requests_recorded() -> u64 {
    REQUESTS_RECORDED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets a job's end (status, message when given, finish time) and chains
/// its new state, inside the caller's transaction.
async fn end_job(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    job: JobRowId,
    status: JobRowStatus,
    message: Option<&str>,
    at: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE jobs SET status = ?, message = COALESCE(?, message), finished_at = ? WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(message)
    .bind(at)
    .bind(job)
    .execute(&mut **tx)
    .await?;
    chain_append(tx, Chained::JobsState, job.get(), job.get()).await
}

/// Ticket ids as a JSON array, for `json_each`.
fn ids_json(tickets: &[TicketId]) -> String {
    format!(
        "[{}]",
        tickets
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Why a request recorded before its freshness read was withdrawn.
pub const WITHDRAWN_NARROWED: &str = "the freshness read did not clear every ticket of it: not sent; the tickets it cleared went under a new row";

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
    /// An upgraded private copy of an older database being read: removed
    /// when the last clone of the store goes.
    scratch: Option<std::sync::Arc<ScratchFile>>,
    /// Signs the chain's head at each run's end (`[audit] signing_key_file`).
    signer: Option<ChainSigner>,
}

/// What a run starts under: its config version and what ran it.
#[derive(Debug, Clone)]
pub struct RunOrigin {
    /// SHA-256 of the config file's text.
    pub config_hash: String,
    /// The config's settings as JSON, never a credential: stored once per
    /// hash, when a run first uses it (`None`: not stored).
    pub config_settings: Option<String>,
    pub host: Option<String>,
    pub os_user: Option<String>,
    pub program_version: String,
}

impl RunOrigin {
    /// A run on this machine, by this user, with this build.
    pub fn here(config_hash: &str, config_settings: Option<String>) -> Self {
        RunOrigin {
            config_hash: config_hash.to_string(),
            config_settings,
            host: whoami::hostname().ok(),
            os_user: whoami::username().ok(),
            program_version: format!("zd-retention {}", crate::build::VERSION_LINE),
        }
    }
}

impl From<&str> for RunOrigin {
    /// An origin with only a config hash (tests, and runs of old callers).
    fn from(config_hash: &str) -> Self {
        RunOrigin::here(config_hash, None)
    }
}

/// The newest schema this build knows: its last migration's number.
pub fn newest_schema() -> i64 {
    sqlx::migrate!("./migrations")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The schema of an open database: its newest migration applied, or None
/// for a database no zd-retention has migrated (empty, or not ours). An
/// error reading it is an error, never "no schema".
async fn applied_schema(conn: &mut sqlx::SqliteConnection) -> anyhow::Result<Option<i64>> {
    let migrated: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *conn)
    .await
    .context("cannot read the database's schema")?;
    if migrated == 0 {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
        .fetch_one(&mut *conn)
        .await
        .context("cannot read the database's schema")
}

/// One connection that only reads the database file at `path`.
async fn read_only_connection(path: &Path) -> anyhow::Result<sqlx::SqliteConnection> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot open the audit database {}", path.display()))
}

/// The schema of the database file at `path`, read on a read-only
/// connection (the database is not written); refuses a schema newer than
/// this build's.
async fn schema_of(path: &Path) -> anyhow::Result<Option<i64>> {
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(None);
    }
    let mut conn = read_only_connection(path).await?;
    let applied = applied_schema(&mut conn)
        .await
        .with_context(|| format!("cannot open the audit database {}", path.display()));
    use sqlx::Connection as _;
    let _ = conn.close().await;
    let applied = applied?;
    refuse_newer(path, applied)?;
    Ok(applied)
}

/// Fails when a newer zd-retention migrated the database (a rollback to an
/// older binary): naming both schemas, before anything is written.
fn refuse_newer(path: &Path, applied: Option<i64>) -> anyhow::Result<()> {
    let newest = newest_schema();
    match applied {
        Some(version) if version > newest => anyhow::bail!(
            "the audit database {} has schema {version}, written by a newer zd-retention; this one ({}) knows schemas up to {newest}. \
             Nothing was written to it. Run the newer zd-retention again, or to go back to this version restore the copy the upgrade left beside the database ({}.schema-{newest}-*.bak) and accept losing what was recorded since",
            path.display(),
            crate::build::VERSION_LINE,
            path.display(),
        ),
        _ => Ok(()),
    }
}

/// Copies an older database aside (`<path>.schema-<N>-<time>.bak`, mode
/// 0600) before its schema is upgraded: the upgrade is one way, and the
/// copy is what a rollback to the older binary restores. The copy is
/// written as `….bak.partial` (a name no one else holds), flushed to disk,
/// then linked to its final name, which is never overwritten: a copy is
/// whole or absent. Partial copies a killed upgrade left are removed first
/// (the caller holds the writer lock: no one else is writing one).
async fn back_up_before_upgrade(path: &Path, version: i64) -> anyhow::Result<()> {
    let at = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let named = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".schema-{version}-{at}.bak{suffix}"));
        std::path::PathBuf::from(name)
    };
    remove_partial_copies(path);
    let partial = named(".partial");
    let backup = named("");
    let failed = |what: String| {
        format!(
            "{what}: the audit database {} (schema {version}) is not upgraded to schema {} without a copy of it as it was; nothing was changed: free space beside it and start again",
            path.display(),
            newest_schema()
        )
    };
    // made empty and private first: SQLite fills an empty file, and the
    // copy is never readable by others on the way
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&partial)
        .with_context(|| failed(format!("cannot create the copy {}", partial.display())))?;
    let mut conn = read_only_connection(path).await?;
    let copied = sqlx::query("VACUUM INTO ?")
        .bind(partial.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await;
    use sqlx::Connection as _;
    let _ = conn.close().await;
    let kept = copied.map_err(anyhow::Error::from).and_then(|_| {
        std::fs::File::open(&partial)?.sync_all()?;
        // never over an existing copy
        std::fs::hard_link(&partial, &backup)?;
        std::fs::remove_file(&partial)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    });
    if let Err(e) = kept {
        let _ = std::fs::remove_file(&partial);
        return Err(e).with_context(|| failed(format!("cannot copy it to {}", backup.display())));
    }
    tracing::warn!(
        database = %path.display(),
        backup = %backup.display(),
        from = version,
        to = newest_schema(),
        "upgrading the audit database's schema; a copy of it as it was is kept beside it"
    );
    Ok(())
}

/// Removes the `<path>.schema-*.bak.partial` files an upgrade killed
/// midway left beside the database.
fn remove_partial_copies(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.schema-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && file.ends_with(".bak.partial") {
            tracing::warn!(file = %entry.path().display(), "removing a partial copy an interrupted upgrade left");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A temporary file removed on drop.
#[derive(Debug)]
struct ScratchFile(std::path::PathBuf);

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
    /// Opens (creating with mode 0600 if needed) and migrates the database.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_with(path, None).await
    }

    /// [`Self::open`], every commit's chain head signed with `signer`.
    pub async fn open_with(path: &Path, signer: Option<ChainSigner>) -> anyhow::Result<Self> {
        // absolute: a path that begins with `file:` is then never read as
        // an SQLite URI naming another file
        let path = &std::path::absolute(path)
            .with_context(|| format!("bad database path {}", path.display()))?;
        create_private(path)
            .with_context(|| format!("cannot create the audit database {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0) {
                // subjects, actors and the purge history are personal data
                tracing::warn!(database = %path.display(), "the audit database is readable by every user of this machine; consider chmod 600");
            }
        }
        // A newer zd-retention's database is refused before anything is
        // written to it; an older one is copied aside before it is upgraded.
        let applied = schema_of(path).await?;
        if let Some(version) = applied.filter(|v| *v < newest_schema()) {
            // the copy and the migrations of a big database may outlast the
            // unit's start timeout (30 s): systemd is told to wait (a no-op
            // outside systemd)
            let _ = sd_notify::notify(&[
                sd_notify::NotifyState::ExtendTimeoutUsec(15 * 60 * 1_000_000),
                sd_notify::NotifyState::Status("upgrading the audit database's schema"),
            ]);
            back_up_before_upgrade(path, version).await?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // the write-ahead log shrinks back after a checkpoint (a reader
            // holding a snapshot for long lets it grow meanwhile)
            .pragma("journal_size_limit", "16777216")
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A write that failed on a full disk is rolled back by SQLite
            // itself; sqlx's own ROLLBACK then fails and the connection
            // keeps a transaction depth of one, so that every later
            // transaction on it would fail ("begin_with at non-zero
            // transaction depth") after the disk was freed. Such a
            // connection is closed instead of going back to the pool.
            .after_release(|conn, _| {
                use sqlx::Connection as _;
                let clean = !conn.is_in_transaction();
                Box::pin(async move { Ok(clean) })
            })
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
            scratch: None,
            signer,
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
            .busy_timeout(Duration::from_secs(10))
            // a command that checks a million rows takes seconds by its
            // nature: not a warning for the person who asked for it
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        // One connection: every read of a command sees one snapshot (below),
        // kept for the command's life (never closed for its age or idling)
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the audit database {}", path.display()))?;
        // A database an older zd-retention wrote is read through an upgraded
        // copy: reading never writes, and a writer upgrades it in place. A
        // newer one's is refused: its rows may mean what this build cannot
        // know.
        let applied = {
            let mut conn = pool.acquire().await?;
            applied_schema(&mut conn)
                .await
                .with_context(|| format!("cannot open the audit database {}", path.display()))?
        };
        refuse_newer(path, applied)?;
        if applied.is_some_and(|v| v < newest_schema()) {
            let copy = ScratchFile(std::env::temp_dir().join(format!(
                "zd-retention-upgraded-{}-{}.db",
                std::process::id(),
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            )));
            sqlx::query("VACUUM INTO ?")
                .bind(copy.0.to_string_lossy().into_owned())
                .execute(&pool)
                .await
                .with_context(|| format!("cannot copy the older database {}", path.display()))?;
            pool.close().await;
            tracing::warn!(
                database = %path.display(),
                "written by an older zd-retention: read through an upgraded copy; the next writer (once, run) upgrades it in place"
            );
            let mut upgraded = Self::open_upgraded_copy(&copy.0).await?;
            upgraded.scratch = Some(std::sync::Arc::new(copy));
            return Ok(upgraded);
        }
        // A read transaction held for the command's life: a writer may
        // commit meanwhile, and `verify`, a report or a certificate still
        // read one consistent state (the chain, its rows and its heads
        // together), never half of a commit.
        Self::hold_snapshot(&pool).await?;
        Ok(Self::reader(pool))
    }

    /// Begins the read transaction a reader's one connection holds for
    /// the command's life.
    async fn hold_snapshot(pool: &SqlitePool) -> anyhow::Result<()> {
        sqlx::query("BEGIN").execute(pool).await?;
        sqlx::query("SELECT COUNT(*) FROM sqlite_master")
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Whether this store only reads, on one snapshot held for its life.
    pub(crate) fn is_reader(&self) -> bool {
        self.file.is_none()
    }

    /// A store that only reads.
    fn reader(pool: SqlitePool) -> Self {
        Self {
            pool,
            file: None,
            wal: None,
            scratch: None,
            signer: None,
        }
    }

    /// Migrates a private copy of an older database and opens it read-only.
    async fn open_upgraded_copy(copy: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new().filename(copy);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("cannot upgrade a copy of the older database")?;
        // as a writer's upgrade would, so that the copy verifies the same
        let copy_store = Self::reader(pool);
        copy_store
            .seal_states()
            .await
            .context("cannot record the runs' states in the copy")?;
        copy_store.pool.close().await;
        let options = SqliteConnectOptions::new()
            .filename(copy)
            .read_only(true)
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options)
            .await?;
        Self::hold_snapshot(&pool).await?;
        Ok(Self::reader(pool))
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
            // each run's new state, then its end: one head each
            for id in &ids {
                let base = signing::chain_base(&mut tx).await?;
                chain_append(&mut tx, Chained::RunsState, (*id).get(), (*id).get()).await?;
                self.seal(&mut tx, base, Some(*id), signing::HeadKind::Interrupted)
                    .await?;
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
        origin: &RunOrigin,
        now: DateTime<Utc>,
    ) -> anyhow::Result<RunId> {
        self.check_file()?;
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
        let id = sqlx::query("INSERT INTO runs (trigger, started_at, dry_run, config_hash, status, host, os_user, program_version) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)")
            .bind(trigger.as_str())
            .bind(timestamp(now))
            .bind(dry_run)
            .bind(&origin.config_hash)
            .bind(origin.host.as_deref())
            .bind(origin.os_user.as_deref())
            .bind(&origin.program_version)
            .execute(&mut *tx)
            .await
            .context("cannot record the start of the run")?
            .last_insert_rowid();
        chain_append(&mut tx, Chained::Runs, id, id).await?;
        chain_append(&mut tx, Chained::RunsState, id, id).await?;
        if let Some(settings) = &origin.config_settings {
            // each distinct config once, chained, with the run that first used it
            let version = sqlx::query(
                "INSERT INTO config_versions (hash, first_run, first_used, settings) VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
            )
            .bind(&origin.config_hash)
            .bind(id)
            .bind(timestamp(now))
            .bind(settings)
            .execute(&mut *tx)
            .await
            .context("cannot record the config version")?;
            if version.rows_affected() == 1 {
                let row = version.last_insert_rowid();
                chain_append(&mut tx, Chained::ConfigVersions, row, row).await?;
            }
        }
        self.seal(
            &mut tx,
            base,
            Some(RunId::new(id)),
            signing::HeadKind::Commit,
        )
        .await?;
        tx.commit()
            .await
            .context("cannot record the start of the run")?;
        Ok(RunId::new(id))
    }

    /// Records a run that ended before it could do anything, with why.
    pub async fn fail_run(&self, run: RunId, message: &str) -> anyhow::Result<()> {
        self.finish_run(
            run,
            RunStatus::Failed,
            &RunCounts::default(),
            Some(message),
            Utc::now(),
        )
        .await
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
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
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
        chain_append(&mut tx, Chained::RunsState, run.get(), run.get()).await?;
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
        // the head the run ends at, signed when a key is set: in the same
        // transaction, so no run ends without it
        self.seal(&mut tx, base, Some(run), signing::HeadKind::End)
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
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
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
                        .push_bind(sql_id(d.ticket_id))
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
            last = q
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?
                .last_insert_rowid();
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
        self.seal(&mut tx, base, Some(run), signing::HeadKind::Commit)
            .await?;
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
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
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
        self.seal(&mut tx, base, Some(run), signing::HeadKind::Commit)
            .await?;
        tx.commit()
            .await
            .context("cannot record the request before sending it")?;
        REQUESTS_RECORDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(JobRowId::new(id))
    }

    /// Records purge requests before they are sent together, in one
    /// transaction; returns their rows in the batches' order. `replacing`:
    /// requests recorded before the read that did not clear them whole,
    /// withdrawn in the same transaction (never sent); the new ones carry
    /// what it cleared of them, whose ledger rows say requested already.
    pub async fn record_requests(
        &self,
        run: RunId,
        batches: &[IdBatch],
        (now, replacing): (DateTime<Utc>, &[JobRowId]),
    ) -> anyhow::Result<Vec<JobRowId>> {
        self.check_file()?;
        let at = timestamp(now);
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
        for row in replacing {
            end_job(
                &mut tx,
                *row,
                JobRowStatus::Withdrawn,
                Some(WITHDRAWN_NARROWED),
                &at,
            )
            .await?;
        }
        let narrowed = !replacing.is_empty();
        let mut rows = Vec::with_capacity(batches.len());
        for batch in batches {
            let id = sqlx::query("INSERT INTO jobs (run_id, kind, ticket_ids, ticket_count, recorded_at, status) VALUES (?, ?, ?, ?, ?, 'pending')")
                .bind(run)
                .bind(RequestKind::DestroyMany.as_str())
                .bind(batch.to_query())
                .bind(batch.len() as i64)
                .bind(&at)
                .execute(&mut *tx)
                .await
                .context("cannot record the request before sending it")?
                .last_insert_rowid();
            chain_append(&mut tx, Chained::Jobs, id, id).await?;
            chain_append(&mut tx, Chained::JobsState, id, id).await?;
            if !narrowed {
                // (a narrowed request's tickets were marked by the request
                // it replaces, in an earlier transaction)
                ledger::apply_request(&mut tx, batch.ids(), &at).await?;
            }
            rows.push(id);
        }
        self.seal(&mut tx, base, Some(run), signing::HeadKind::Commit)
            .await?;
        tx.commit()
            .await
            .context("cannot record the requests before sending them")?;
        REQUESTS_RECORDED.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(rows.into_iter().map(JobRowId::new).collect())
    }

    /// Records, once purge requests have left, when the freshness read that
    /// cleared them was answered, each one's window from that answer to its
    /// hand-over to the connection (`None`: it never left), and when the read
    /// after them was answered (`None`: none was made).
    pub async fn record_send_windows(
        &self,
        run: RunId,
        (read_at, after_read_at): (DateTime<Utc>, Option<DateTime<Utc>>),
        windows: &[(JobRowId, Option<std::time::Duration>)],
    ) -> anyhow::Result<()> {
        self.check_file()?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
        for (row, window) in windows {
            sqlx::query("UPDATE jobs SET fresh_read_at = ?, send_window_us = ?, after_read_at = ? WHERE id = ?")
                .bind(timestamp(read_at))
                .bind(window.map(|w| i64::try_from(w.as_micros()).unwrap_or(i64::MAX)))
                .bind(after_read_at.map(timestamp))
                .bind(row)
                .execute(&mut *tx)
                .await?;
            chain_append(&mut tx, Chained::JobsState, (*row).get(), (*row).get()).await?;
        }
        self.seal(&mut tx, base, Some(run), signing::HeadKind::Commit)
            .await?;
        tx.commit()
            .await
            .context("cannot record the purge requests' freshness windows")?;
        Ok(())
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
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
        sqlx::query("UPDATE jobs SET zendesk_job_id = ?, status = ?, message = ?, answered_at = ? WHERE id = ?")
            .bind(zendesk_job_id)
            .bind(status.as_str())
            .bind(message)
            .bind(timestamp(now))
            .bind(job)
            .execute(&mut *tx)
            .await
            .context("cannot record Zendesk's answer")?;
        chain_append(&mut tx, Chained::JobsState, job.get(), job.get()).await?;
        let run: Option<RunId> = sqlx::query_scalar("SELECT run_id FROM jobs WHERE id = ?")
            .bind(job)
            .fetch_optional(&mut *tx)
            .await?;
        self.seal(&mut tx, base, run, signing::HeadKind::Commit)
            .await?;
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
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
        end_job(&mut tx, job, status, message, &at).await?;
        insert_outcomes(&mut tx, run, Some(job), tickets, outcome, message, &at).await?;
        self.seal(&mut tx, base, Some(run), signing::HeadKind::Commit)
            .await?;
        tx.commit().await.context("cannot record the job's end")?;
        Ok(())
    }

    /// Records the end of a job that completed with success, whose tickets
    /// are purged but for those a read after the request showed deleted
    /// again: each of those is `unknown` with what the read showed (Zendesk
    /// purged whichever deletion it had when the job ran), all in one
    /// transaction.
    pub async fn record_job_end_in_doubt(
        &self,
        run: RunId,
        job: JobRowId,
        message: Option<&str>,
        purged: &[TicketId],
        in_doubt: &[(TicketId, String)],
    ) -> anyhow::Result<()> {
        self.check_file()?;
        let at = timestamp(Utc::now());
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
        end_job(&mut tx, job, JobRowStatus::Completed, message, &at).await?;
        insert_outcomes(
            &mut tx,
            run,
            Some(job),
            purged,
            Outcome::Purged,
            message,
            &at,
        )
        .await?;
        for (ticket, detail) in in_doubt {
            insert_outcomes(
                &mut tx,
                run,
                Some(job),
                &[*ticket],
                Outcome::Unknown,
                Some(detail),
                &at,
            )
            .await?;
        }
        self.seal(&mut tx, base, Some(run), signing::HeadKind::Commit)
            .await?;
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
        // the write lock first: a read before it could not be upgraded
        // once another writer committed (SQLITE_BUSY_SNAPSHOT)
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let base = signing::chain_base(&mut tx).await?;
        insert_outcomes(&mut tx, run, job, tickets, outcome, detail, &timestamp(now)).await?;
        self.seal(&mut tx, base, Some(run), signing::HeadKind::Commit)
            .await?;
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
        let ids = ids_json(tickets);
        // Each ticket's latest decision up to the job's run: a ticket
        // decided from the ledger has no decision row in the run that sent
        // it (decisions are written on change). The ids outer, each looked
        // up by ticket.
        let rows = sqlx::query(
            "SELECT COALESCE(d.rule, '(manual)') AS rule, COUNT(*) AS n
             FROM json_each(?1) AS t CROSS JOIN decisions AS d
             WHERE d.id = (SELECT MAX(x.id) FROM decisions AS x INDEXED BY decisions_ticket
                           WHERE x.ticket_id = t.value
                             AND x.run_id <= (SELECT run_id FROM jobs WHERE id = ?2))
               AND d.decision = 'purge'
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

    /// When the earliest purge request still open (pending, queued or
    /// working) was recorded.
    pub async fn earliest_open_request(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT MIN(recorded_at) FROM jobs WHERE kind = 'destroy_many' AND status IN ('pending', 'queued', 'working')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(at
            .and_then(|a| DateTime::parse_from_rfc3339(&a).ok())
            .map(|a| a.with_timezone(&Utc)))
    }

    /// Each ticket of a purge request as its latest decision before the
    /// request saw it, when that decision selected it: deletion time, actor
    /// and previous state (what a listing shows).
    #[allow(clippy::type_complexity)]
    pub async fn decided_as(
        &self,
        job: JobRowId,
        tickets: &[TicketId],
    ) -> anyhow::Result<HashMap<TicketId, (Option<DateTime<Utc>>, Option<u64>, Option<String>)>>
    {
        let ids = ids_json(tickets);
        let rows = sqlx::query(
            "SELECT d.ticket_id, d.deleted_at, d.actor_id, d.previous_state
             FROM json_each(?1) AS t CROSS JOIN decisions AS d
             WHERE d.id = (SELECT MAX(x.id) FROM decisions AS x INDEXED BY decisions_ticket
                           WHERE x.ticket_id = t.value
                             AND x.run_id <= (SELECT run_id FROM jobs WHERE id = ?2)
                             AND x.decided_at <= (SELECT recorded_at FROM jobs WHERE id = ?2))
               AND d.decision = 'purge'",
        )
        .bind(ids)
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0)?;
                let at: Option<String> = r.try_get(1)?;
                let actor: Option<i64> = r.try_get(2)?;
                let at = at
                    .and_then(|a| DateTime::parse_from_rfc3339(&a).ok())
                    .map(|a| a.with_timezone(&Utc));
                Ok((ticket_id(id), (at, actor.map(|a| a as u64), r.try_get(3)?)))
            })
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
                .push_bind(sql_id(*t))
                .push_bind(outcome.as_str())
                .push_bind(detail)
                .push_bind(at);
        });
        last = q
            .build()
            .persistent(false)
            .execute(&mut **tx)
            .await?
            .last_insert_rowid();
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

const RUN_COLUMNS: &str = "SELECT id, trigger, started_at, finished_at, dry_run, config_hash, status, scanned, matched, purged, failed, unknown, list_requests, early_stop, error, scan, scan_reason, max_listing_age_ms, step, high_water, decisions_recorded FROM runs";
const JOB_COLUMNS: &str = "SELECT id, run_id, kind, zendesk_job_id, ticket_ids, ticket_count, recorded_at, answered_at, finished_at, status, message FROM jobs";

/// Creates the database file readable by its owner only, if it is new, in
/// a folder that must exist.
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
    // never a folder: a mistyped path (or a URL read as one) would
    // otherwise begin a fresh history somewhere nobody looks
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "its folder {} does not exist: create it first (zd-retention never creates folders)",
                dir.display()
            ),
        ));
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

//! Opening the store: a writer creates, upgrades (after a copy) and
//! migrates the database; a reader holds one snapshot, through an upgraded
//! copy when an older zd-retention wrote it; a newer one's is refused.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use sqlx::ConnectOptions as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AnyPool, Executor as _};

use super::connect::install_drivers;
use super::keys::ChainSigner;
use super::store::{AuditStore, Backend, FileIdentity, ScratchFile, suffixed};

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
    let migrated: i64 = sqlx::query_scalar(r#"SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"#)
    .fetch_one(&mut *conn)
    .await
    .context("cannot read the database's schema")?;
    if migrated == 0 {
        return Ok(None);
    }
    sqlx::query_scalar(r#"SELECT MAX(version) AS version FROM _sqlx_migrations WHERE success = 1"#)
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
    let into = partial.to_string_lossy().into_owned();
    let copied = sqlx::query("VACUUM INTO $1")
        .bind(into)
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
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // the write-ahead log shrinks back after a checkpoint (a
                    // reader holding a snapshot for long lets it grow
                    // meanwhile)
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA journal_size_limit = 16777216; \
                         PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000",
                    )
                    .await?;
                    Ok(())
                })
            })
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
            .connect_with(sqlite_url(path, "rwc")?)
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
            backend: Backend::Sqlite,
            writer: true,
            lead: None,
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
        // a file name: `?` and `%` in a path are just characters (encoded)
        let options = sqlite_url(path, "ro")?
            // a command that checks a million rows takes seconds by its
            // nature: not a warning for the person who asked for it
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        // One connection: every read of a command sees one snapshot (below),
        // kept for the command's life (never closed for its age or idling)
        let pool = reader_pool(options)
            .await
            .with_context(|| format!("cannot open the audit database {}", path.display()))?;
        // A database an older zd-retention wrote is read through an upgraded
        // copy: reading never writes, and a writer upgrades it in place. A
        // newer one's is refused: its rows may mean what this build cannot
        // know.
        let applied = schema_of(path).await?;
        if applied.is_some_and(|v| v < newest_schema()) {
            let copy = ScratchFile(std::env::temp_dir().join(format!(
                "zd-retention-upgraded-{}-{}.db",
                std::process::id(),
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            )));
            let into = copy.0.to_string_lossy().into_owned();
            sqlx::query("VACUUM INTO $1")
                .bind(into)
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
        Ok(Self::reader(pool, Backend::Sqlite))
    }

    /// Begins the read transaction a reader's one connection holds for
    /// the command's life.
    async fn hold_snapshot(pool: &AnyPool) -> anyhow::Result<()> {
        sqlx::query("BEGIN").execute(pool).await?;
        // (read to its end: the snapshot begins with the first read)
        sqlx::query("SELECT COUNT(*) AS n FROM sqlite_master")
            .fetch_all(pool)
            .await?;
        Ok(())
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
        pool.close().await;
        // as a writer's upgrade would, so that the copy verifies the same
        let copy_store = Self::reader(reader_pool(sqlite_url(copy, "rw")?).await?, Backend::Sqlite);
        copy_store
            .seal_states()
            .await
            .context("cannot record the runs' states in the copy")?;
        copy_store.pool.close().await;
        let options = sqlite_url(copy, "ro")?
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = reader_pool(options).await?;
        Self::hold_snapshot(&pool).await?;
        Ok(Self::reader(pool, Backend::Sqlite))
    }
}

/// The options of a connection to the SQLite file at `path` (absolute) in
/// `mode` (`ro`, `rw`, `rwc`): its path percent-encoded, so that no
/// character of a file name is read as part of the URL.
pub(super) fn sqlite_url(path: &Path, mode: &str) -> anyhow::Result<AnyConnectOptions> {
    install_drivers();
    let encoded: String = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|b| match *b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                (*b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let url = format!("sqlite://{encoded}?mode={mode}");
    AnyConnectOptions::from_str(&url)
        .with_context(|| format!("bad database path {}", path.display()))
}

/// A pool of one connection that only reads, kept for the command's life
/// (never closed for its age or idling).
async fn reader_pool(options: AnyConnectOptions) -> anyhow::Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?)
}

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

//! Opening the audit in a PostgreSQL database: a writer migrates it
//! (`migrations/postgres/`), a reader holds one snapshot (a read-only,
//! repeatable-read transaction) for its life. A database a newer
//! zd-retention migrated is refused, as on SQLite.
//!
//! The URL a caller passes holds the password (read from a file or the
//! environment, never from the config's text); every message here names
//! the database by [`redacted`], never by the URL itself.

use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions as _};
use std::str::FromStr as _;

use super::connect::{install_drivers, named, redacted};
use super::keys::ChainSigner;
use super::open::newest_schema;
use super::store::{AuditStore, Backend};

/// The PostgreSQL migrations' folder; its numbers are SQLite's schema
/// numbers for the same tables.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

fn options(url: &str) -> anyhow::Result<AnyConnectOptions> {
    install_drivers();
    Ok(AnyConnectOptions::from_str(&named(url))
        .map_err(|_| anyhow::anyhow!("{} is not a PostgreSQL URL", redacted(url)))?
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1)))
}

/// One connection made and closed, so that a server that refuses (not
/// there, a wrong password, no such database) is named at once: a pool
/// retries until its acquire timeout and then says only that it timed out.
async fn reachable(url: &str) -> anyhow::Result<()> {
    let conn = options(url)?
        .connect()
        .await
        .map_err(|e| super::connect::refused_connection(e, &redacted(url)))?;
    use sqlx::Connection as _;
    let _ = conn.close().await;
    Ok(())
}

/// The schema a zd-retention migrated the database to, or None for an
/// empty one.
async fn applied_schema(pool: &AnyPool) -> anyhow::Result<Option<i64>> {
    let migrated: Option<String> =
        sqlx::query_scalar("SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT)")
            .fetch_one(pool)
            .await?;
    if migrated.is_none() {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(pool)
            .await?,
    )
}

/// The schema of the database at `url` (its pool open), refused when a
/// newer zd-retention migrated it.
async fn checked_schema(pool: &AnyPool, url: &str) -> anyhow::Result<Option<i64>> {
    let applied = applied_schema(pool).await.with_context(|| {
        format!(
            "cannot read the schema of the audit database {}",
            redacted(url)
        )
    })?;
    refuse_newer(url, applied)?;
    Ok(applied)
}

fn refuse_newer(url: &str, applied: Option<i64>) -> anyhow::Result<()> {
    let newest = newest_schema();
    match applied {
        Some(version) if version > newest => anyhow::bail!(
            "the audit database {} has schema {version}, written by a newer zd-retention; this one ({}) knows schemas up to {newest}. Nothing was written to it: run the newer zd-retention again",
            redacted(url),
            crate::build::VERSION_LINE,
        ),
        _ => Ok(()),
    }
}

impl AuditStore {
    /// Opens and migrates the audit in the PostgreSQL database at `url`.
    pub async fn open_postgres(url: &str, signer: Option<ChainSigner>) -> anyhow::Result<Self> {
        Self::open_postgres_as(url, signer, None).await
    }

    /// [`Self::open_postgres`] for the holder of `lead`: its term is raised
    /// once the schema is migrated, before the states are sealed and
    /// checked, so that nothing a former leader commits lands among them.
    pub async fn open_postgres_leading(
        url: &str,
        signer: Option<ChainSigner>,
        lead: super::lead::Lead,
    ) -> anyhow::Result<Self> {
        Self::open_postgres_as(url, signer, Some(lead)).await
    }

    async fn open_postgres_as(
        url: &str,
        signer: Option<ChainSigner>,
        lead: Option<super::lead::Lead>,
    ) -> anyhow::Result<Self> {
        let shown = redacted(url);
        reachable(url).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor as _;
                    conn.execute(super::lead::KEEPALIVES).await?;
                    Ok(())
                })
            })
            .after_release(|conn, _| {
                use sqlx::Connection as _;
                let clean = !conn.is_in_transaction();
                Box::pin(async move { Ok(clean) })
            })
            .connect_with(options(url)?)
            .await
            .map_err(|e| super::connect::refused_connection(e, &shown))?;
        checked_schema(&pool, url).await?;
        MIGRATOR
            .run(&pool)
            .await
            .with_context(|| format!("cannot apply the migrations to {shown}"))?;
        let mut store = Self {
            pool,
            backend: Backend::Postgres,
            file: None,
            wal: None,
            scratch: None,
            signer,
            writer: true,
            lead: None,
        };
        if let Some(lead) = lead {
            store = store.with_lead(lead).await?;
        }
        store
            .seal_states()
            .await
            .with_context(|| format!("cannot record the runs' states in {shown}"))?;
        store.check_states().await?;
        Ok(store)
    }

    /// Opens the audit in the PostgreSQL database at `url` for queries
    /// only: one connection, one snapshot for the command's life.
    pub async fn open_postgres_read_only(url: &str) -> anyhow::Result<Self> {
        let shown = redacted(url);
        reachable(url).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options(url)?)
            .await
            .map_err(|e| super::connect::refused_connection(e, &shown))?;
        let applied = checked_schema(&pool, url).await?;
        if applied.is_none_or(|v| v < newest_schema()) {
            anyhow::bail!(
                "the audit database {shown} holds no audit of this version yet: run a cycle first (zd-retention once), which creates or upgrades it"
            );
        }
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&pool)
            .await?;
        // (the snapshot begins with the first read)
        sqlx::query("SELECT 1").fetch_all(&pool).await?;
        Ok(Self::reader(pool, Backend::Postgres))
    }
}

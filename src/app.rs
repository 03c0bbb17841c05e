//! The daemon assembled from a validated config: its Zendesk client, its
//! audit store, its health and metrics server (bound, so a test can read
//! `/metrics` from the address, port 0 included), and the scheduler that
//! runs cycles until it is told to stop. `cli` only takes the writer lock
//! (and waits on standby), then builds and runs this.

use std::future::Future;
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::audit::AuditStore;
use crate::config::{Config, Schedule};
use crate::cycle::CycleContext;
use crate::zendesk::ZendeskClient;

/// Exit code of a failed run or request.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of bad usage or a bad config.
pub const EXIT_USAGE: u8 = 2;

/// The Zendesk client a config describes.
pub fn client_from(config: &Config) -> anyhow::Result<ZendeskClient> {
    Ok(ZendeskClient::new(config.client_config()?)?)
}

/// The config's audit store, opened to write (no lead: the caller holds
/// the SQLite file's lock; on PostgreSQL, see `Lead`).
pub async fn open_store(config: &Config) -> anyhow::Result<AuditStore> {
    let signer = config.chain_signer()?;
    match &config.audit.postgres {
        Some(pg) => {
            use secrecy::ExposeSecret as _;
            AuditStore::open_postgres(pg.connect_url()?.expose_secret(), signer).await
        }
        None => AuditStore::open_with(&config.audit.database, signer).await,
    }
}

/// The config's audit store, for reading: one snapshot.
pub async fn open_reader(config: &Config) -> anyhow::Result<AuditStore> {
    match &config.audit.postgres {
        Some(pg) => {
            use secrecy::ExposeSecret as _;
            AuditStore::open_postgres_read_only(pg.connect_url()?.expose_secret()).await
        }
        None => AuditStore::open_read_only(&config.audit.database).await,
    }
}

/// Where the config keeps its audit, as it may be shown.
pub fn audit_place(config: &Config) -> String {
    match &config.audit.postgres {
        Some(pg) => crate::audit::redacted_url(&pg.url),
        None => config.audit.database.display().to_string(),
    }
}

/// A daemon ready to run.
pub struct App {
    ctx: CycleContext,
    schedule: Schedule,
    store: AuditStore,
    server: Option<SocketAddr>,
}

impl App {
    /// Builds the daemon's parts. The caller holds the database's writer
    /// lock. The health and metrics server is listening when this returns,
    /// when the config has `[server] listen`.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let store = open_store(config).await?;
        Self::build_with(config, store, None).await
    }

    /// [`Self::build`] on a store already opened (a PostgreSQL writer's,
    /// with its lead), its probes on the standby's server when one ran.
    pub async fn build_with(
        config: &Config,
        store: AuditStore,
        standby: Option<(SocketAddr, crate::health::StoreSlot)>,
    ) -> anyhow::Result<Self> {
        let client = client_from(config)?;
        // A crash of the previous process shows at once, not at the first
        // tick; its open jobs are followed by the first run.
        let interrupted = store.close_interrupted_runs(chrono::Utc::now()).await?;
        if !interrupted.is_empty() {
            tracing::warn!(runs = ?interrupted, "runs of an earlier process did not finish; recorded as interrupted");
        }
        let ctx = CycleContext::new(config, client, store.clone(), CancellationToken::new());
        if config.safety.dry_run {
            tracing::warn!("safety.dry_run = true: runs decide and record, and purge nothing");
        }
        let server = match (config.listen, standby) {
            (_, Some((addr, slot))) => {
                let _ = slot.set(store.clone());
                Some(addr)
            }
            (Some(listen), None) => {
                let metrics = crate::health::install_metrics()?;
                // the probes stop with the process, after the cycle
                let slot = crate::health::StoreSlot::default();
                let _ = slot.set(store.clone());
                Some(
                    crate::health::serve(
                        listen,
                        slot,
                        ctx.client.clone(),
                        metrics,
                        CancellationToken::new(),
                    )
                    .await?,
                )
            }
            (None, None) => None,
        };
        Ok(Self {
            ctx,
            schedule: config.schedule.clone(),
            store,
            server,
        })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` answer, if anywhere.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.server
    }

    /// The running cycles' context (its store, its client).
    pub fn context(&self) -> &CycleContext {
        &self.ctx
    }

    /// Runs cycles on the schedule until `shutdown` completes; then no new
    /// batch is sent, open jobs are followed for the grace period, and the
    /// running cycle is waited for.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cancel = self.ctx.cancel.clone();
        let stopper = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                shutdown.await;
                crate::health::notify_stopping();
                cancel.cancel();
            }
        });
        crate::health::notify_ready(cancel.clone());
        let result = crate::daemon::run_daemon(self.schedule, self.ctx).await;
        stopper.abort();
        self.store.close().await;
        result
    }
}

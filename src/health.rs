//! Health and metrics over HTTP while `run` is up: `/healthz` (the process
//! answers), `/readyz` (config loaded, database writable, Zendesk reachable
//! at the last attempt) and `/metrics` (Prometheus text). Also the systemd
//! notifications: READY=1, STOPPING=1 and watchdog pings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditStore;
use crate::zendesk::ZendeskClient;

/// Buckets of the run duration histogram, in seconds.
const RUN_SECONDS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Buckets of the freshness window (a read's answer to a purge request
/// leaving), in seconds.
/// Purge latency: from a minute to two days (a schedule interval is
/// usually 15 minutes; the alert compares the 95th percentile with
/// `zd_retention_purge_latency_bound_seconds`).
const LATENCY_SECONDS: &[f64] = &[
    60.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
    172800.0,
];

const WINDOW_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Installs the global metrics recorder; the handle renders `/metrics`.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("zd_retention_run_duration_seconds".into()),
            RUN_SECONDS,
        )
        .context("bad histogram buckets")?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                "zd_retention_freshness_window_seconds".into(),
            ),
            WINDOW_SECONDS,
        )
        .context("bad histogram buckets")?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("zd_retention_purge_latency_seconds".into()),
            LATENCY_SECONDS,
        )
        .context("bad histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
        .inspect(|_| {
            metrics::gauge!(
                "zd_retention_build_info",
                "version" => crate::build::VERSION,
                "commit" => crate::build::COMMIT,
            )
            .set(1.0);
        })
}

/// The store the probes check: empty while the daemon is a standby.
pub type StoreSlot = Arc<std::sync::OnceLock<AuditStore>>;

#[derive(Clone)]
struct Probe {
    store: StoreSlot,
    client: ZendeskClient,
    metrics: PrometheusHandle,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    let Some(store) = probe.store.get() else {
        // a standby: ready to take over, not to serve
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "standby: another node holds the lead of the audit database; this one takes over when it goes\n"
                .to_string(),
        );
    };
    let mut problems = Vec::new();
    if let Err(e) = store.check_writable().await {
        problems.push(format!("audit database not writable: {e:#}"));
    }
    if probe.client.last_attempt_failed() {
        problems.push("Zendesk was not reachable at the last attempt".to_string());
    }
    if problems.is_empty() {
        (
            StatusCode::OK,
            "ready: config loaded, database writable, Zendesk reachable at the last attempt\n"
                .to_string(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

async fn render_metrics(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        probe.metrics.render(),
    )
}

/// Serves the probes until `cancel`; returns the bound address at once.
pub async fn serve(
    listen: SocketAddr,
    store: StoreSlot,
    client: ZendeskClient,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(Arc::new(Probe {
            store,
            client,
            metrics,
        }));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the health and metrics server stopped");
        }
    });
    tracing::info!(%addr, "health and metrics on /healthz, /readyz, /metrics");
    Ok(addr)
}

/// Tells systemd the service is ready and keeps its watchdog fed until
/// `cancel`. Outside systemd these are no-ops.
pub fn notify_ready(cancel: CancellationToken) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY=1 not sent");
    }
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let every = (interval / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        });
    }
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

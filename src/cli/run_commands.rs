//! Commands about runs: `check-config`, `probe`, `once` and `run` (the
//! daemon, assembled by `app`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::args::{OnceArgs, ProbeArgs, ProbeFormat, SummaryFormat};
use super::common::{
    client_from, disk_full_words, holder_name, load_config, open_store, open_writer,
    progress_spinner, shutdown_signal, writes_so_far,
};
use crate::app::{EXIT_FAILED, EXIT_USAGE};
use crate::config::Config;
use crate::cycle::{CycleContext, RunStatus, Trigger, run_cycle};

pub(super) fn check_config(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    // valid, or a list of problems: never both. Files systemd hands the
    // service (LoadCredential) are not here outside it: said, not failed.
    let token_elsewhere = config.token_from_systemd_elsewhere();
    if token_elsewhere.is_none()
        && let Err(e) = config.auth()
    {
        eprintln!("{e}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let key_elsewhere = config.signing_key_from_systemd_elsewhere();
    let signer = match key_elsewhere.map_or_else(|| config.chain_signer(), |_| Ok(None)) {
        Ok(signer) => signer,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let file = config
        .source
        .as_ref()
        .map_or("(config)".into(), |p| p.display().to_string());
    println!("{file}: valid");
    println!(
        "  zendesk: {} (list {}, deep {}, account {}, at most {} jobs open)",
        config.zendesk.base_url,
        config.zendesk.limits.list,
        config.zendesk.limits.list_deep,
        config.zendesk.limits.account,
        config.zendesk.max_jobs_in_flight
    );
    let next = crate::config::cron_parser()
        .parse(&config.schedule.cron)
        .ok()
        .and_then(|c| {
            c.find_next_occurrence(
                &chrono::Utc::now().with_timezone(&config.schedule.timezone),
                false,
            )
            .ok()
        });
    println!(
        "  schedule: \"{}\" in {}{}",
        config.schedule.cron,
        config.schedule.timezone,
        next.map(|n| format!(", next run {}", n.format("%Y-%m-%d %H:%M:%S %Z")))
            .unwrap_or_default()
    );
    println!(
        "  safety: {}, min_age {}, at most {} purges per run, {} protected ids",
        if config.safety.dry_run {
            "DRY RUN (nothing is purged)"
        } else {
            "LIVE (tickets are purged for good)"
        },
        crate::human::duration(config.policy.min_age),
        config.safety.max_purges_per_run,
        config.policy.protect_ids.len()
    );
    println!(
        "  audit: {} (subjects {})",
        config.audit.database.display(),
        if config.audit.record_subjects {
            "recorded"
        } else {
            "not recorded"
        }
    );
    print_records_line(&config, signer.as_ref(), key_elsewhere);
    println!("  rules, first match decides, no match keeps:");
    for (i, rule) in config.policy.rules.iter().enumerate() {
        println!(
            "    {}. {} {:?}: {}",
            i + 1,
            rule.action.as_str(),
            rule.name,
            rule.describe()
        );
    }
    if config.policy.rules.is_empty() {
        println!("    (none: every ticket is kept)");
    }
    // the plan the cycle itself follows (cycle::choose_step)
    match crate::listing::ScanPlan::for_policy(&config.policy) {
        (crate::listing::ScanPlan::Sorted { horizon }, _) => println!(
            "  first run: the oldest deletions first, stopping at tickets younger than {} (once the order is proven)",
            crate::human::duration(horizon)
        ),
        (crate::listing::ScanPlan::Full, why) => {
            println!("  first run: the whole view ({why})")
        }
    }
    println!(
        "  later runs: the newest deletions only, the rest decided from the ledger; the whole view every {}",
        crate::human::duration(config.schedule.reconcile)
    );
    match token_elsewhere {
        None => println!("  credential: found"),
        Some(dir) => println!(
            "  credential: not read here: systemd puts it in {} when the service starts (LoadCredential); a missing source file stops that start, see `systemctl status`",
            dir.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// check-config's line on signed records: the key read, the key systemd
/// hands the service (not readable here), or none.
fn print_records_line(
    config: &Config,
    signer: Option<&crate::audit::ChainSigner>,
    key_elsewhere: Option<&std::path::Path>,
) {
    match signer {
        Some(key) => println!(
            "  records: every commit to the audit log signed with key {} ({})",
            key.key_id(),
            config
                .audit
                .signing_key_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        None => match key_elsewhere {
            Some(path) => println!(
                "  records: signed with the key systemd hands the service ({}; not read here)",
                path.display()
            ),
            None => println!(
                "  records: unsigned (set [audit] signing_key_file to sign each run's chain head; `zd-retention audit keygen` makes a key)"
            ),
        },
    }
}

pub(super) async fn probe(config: Option<PathBuf>, args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let client = client_from(&config)?;
    let bar = progress_spinner("probing the account (read requests only)");
    let findings = crate::zendesk::probe::probe(&client).await;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&findings)?;
    let stored = match open_store(&config).await {
        Ok(store) => {
            let id = store
                .record_probe(&findings.base_url, &json, findings.probed_at)
                .await;
            store.close().await;
            id.map(Some)
        }
        Err(e) => Err(e),
    };
    match args.format {
        ProbeFormat::Json => println!("{json}"),
        ProbeFormat::Table => print!("{}", crate::render::probe_table(&findings)),
    }
    match stored {
        Ok(Some(id)) => eprintln!("probe {id} stored in {}", crate::app::audit_place(&config)),
        Ok(None) => {}
        Err(e) => eprintln!("warning: the findings were not stored: {e:#}"),
    }
    let usable = findings.credentials == "ok" && findings.listing_error.is_none();
    Ok(if usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

pub(super) async fn once(
    config: Option<PathBuf>,
    args: OnceArgs,
    new_history: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let client = client_from(&config)?;
    // one writer per audit database, for the whole command
    let (store, _writer) = open_writer(&config, "once", new_history).await?;
    let cancel = CancellationToken::new();
    let mut ctx = CycleContext::new(&config, client, store.clone(), cancel.clone());
    if args.dry_run {
        ctx.settings.dry_run = true;
    }
    // Ctrl-C stops sending and follows open jobs, as in the daemon.
    let watcher = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::warn!("stopping: no new batch is sent; following open jobs");
        cancel.cancel();
    });
    let bar = progress_spinner("running a cycle");
    let ticker = {
        let bar = bar.clone();
        let client = ctx.client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let s = client.stats();
                bar.set_message(format!(
                    "{} list requests, {} purge requests, {} job polls",
                    s.sent("list"),
                    s.sent("destroy_many"),
                    s.sent("job_statuses")
                ));
            }
        })
    };
    let report = run_cycle(&ctx, Trigger::Manual).await;
    ticker.abort();
    bar.finish_and_clear();
    let report = report?;
    watcher.abort();
    store.close().await;
    match args.format {
        SummaryFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        SummaryFormat::Text => print!("{}", crate::render::summary(&report, &ctx.policy)),
    }
    // the run's error is text by now: SQLite's words for SQLITE_FULL
    if report
        .error
        .as_deref()
        .is_some_and(|e| e.contains("(code: 13) database or disk is full"))
    {
        let words = disk_full_words(None, Some(&config.audit.database), writes_so_far());
        eprintln!("error: {words}");
    }
    Ok(if report.status == RunStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

pub(super) async fn daemon(config: Option<PathBuf>, new_history: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    // a bad credential or URL fails now, not after a standby wait
    client_from(&config)?;
    // Active/standby: a second daemon on the same database waits here until
    // the active one ends (its lock goes with its process, SIGKILL too).
    let standby_cancel = CancellationToken::new();
    let stop_waiting = tokio::spawn({
        let cancel = standby_cancel.clone();
        async move {
            shutdown_signal().await;
            cancel.cancel();
        }
    });
    if let Some(pg) = &config.audit.postgres {
        let app = lead_or_wait(&config, pg, &standby_cancel).await;
        stop_waiting.abort();
        let Some(app) = app? else {
            tracing::info!("stopped while on standby");
            return Ok(ExitCode::SUCCESS);
        };
        // the lead is checked every second besides each write: once lost,
        // the daemon stops sending and ends (a supervisor starts it again,
        // as a standby)
        let store = app.context().store.clone();
        let watched = store.clone();
        let lost = async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = watched.confirm_lead().await {
                    tracing::error!(error = %format!("{e:#}"), "stopping");
                    return;
                }
            }
        };
        app.run_until_stopped(async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = lost => {}
            }
        })
        .await?;
        if store.lead_lost() {
            anyhow::bail!(
                "this daemon lost the lead of the audit database and stopped; it starts again as a standby"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let lock = crate::writer_lock::acquire_or_wait(
        &config.audit.database,
        "run",
        new_history,
        Duration::from_millis(500),
        &standby_cancel,
    )
    .await?;
    stop_waiting.abort();
    let Some(mut lock) = lock else {
        tracing::info!("stopped while on standby");
        return Ok(ExitCode::SUCCESS);
    };
    let app = crate::app::App::build(&config).await?;
    lock.mark_history();
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// A daemon on a PostgreSQL audit: its probes answer at once (a standby is
/// alive and not ready, `zd_retention_standby` 1), it waits for the lead,
/// then opens the store under it. `None` when stopped while waiting.
async fn lead_or_wait(
    config: &crate::config::Config,
    pg: &crate::config::PostgresAudit,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<crate::app::App>> {
    use secrecy::ExposeSecret as _;
    let url = pg.connect_url()?;
    let shown = crate::audit::redacted_url(&pg.url);
    let standby = match config.listen {
        Some(listen) => {
            let metrics = crate::health::install_metrics()?;
            let slot = crate::health::StoreSlot::default();
            let client = client_from(config)?;
            let addr = crate::health::serve(
                listen,
                slot.clone(),
                client,
                metrics,
                CancellationToken::new(),
            )
            .await?;
            Some((addr, slot))
        }
        None => None,
    };
    metrics::gauge!("zd_retention_standby").set(1.0);
    let waited_since = std::time::Instant::now();
    let mut waited = false;
    let lead = crate::audit::Lead::take_or_wait(
        url.expose_secret(),
        &holder_name("run"),
        Duration::from_millis(500),
        cancel,
        |holder| {
            waited = true;
            tracing::warn!(database = %shown, holder = %holder, "standby: another node holds the lead of the audit database; taking over when it goes");
        },
    )
    .await?;
    let Some(lead) = lead else { return Ok(None) };
    if waited {
        tracing::warn!(database = %shown, waited_ms = waited_since.elapsed().as_millis() as u64, "the active node is gone: this one takes over");
    }
    metrics::gauge!("zd_retention_standby").set(0.0);
    let store = crate::audit::AuditStore::open_postgres_leading(
        url.expose_secret(),
        config.chain_signer()?,
        lead,
    )
    .await?;
    Ok(Some(
        crate::app::App::build_with(config, store, standby).await?,
    ))
}

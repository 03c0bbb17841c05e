//! `demo`: the README's first command. Starts a sandbox in-process, runs one
//! live cycle on it with the rules of `config/example.toml` (embedded; dry run
//! off for the sandbox only) and explains what happened.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::audit::AuditStore;
use crate::config::Config;
use crate::cycle::{CycleContext, RunStatus, Trigger, run_cycle};
use crate::ids::RunId;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::zendesk::{Auth, ClientConfig, RateLimits, RetryPolicy, TicketId, ZendeskClient};

/// How much faster than Zendesk the demo's sandbox runs.
const TIME_SCALE: f64 = 60.0;

/// The example config, as shipped.
pub const EXAMPLE_CONFIG: &str = include_str!("../config/example.toml");

pub async fn run(tickets: usize, database: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let config = Config::parse(EXAMPLE_CONFIG, "config/example.toml")?;
    let sandbox = Sandbox::start_local(SandboxOptions {
        tickets,
        seed: 42,
        time_scale: TIME_SCALE,
        ..SandboxOptions::default()
    })
    .await?;
    // one writer per database: never start over a database in use; the
    // demo's history is new by design
    let old = crate::writer_lock::acquire(database, "demo", true)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = database.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(&p);
    }
    let _lock = crate::writer_lock::acquire(database, "demo", true)?;
    drop(old);
    let store = AuditStore::open(database).await?;
    let limits = config.zendesk.limits;
    let client = ZendeskClient::new(ClientConfig {
        base_url: Url::parse(&sandbox.base_url())?,
        auth: Auth::ApiToken {
            email: "demo@sandbox.example".into(),
            token: SecretString::from("demo-token"),
        },
        limits: RateLimits {
            list: limits.list.scaled(TIME_SCALE),
            list_deep: limits.list_deep.scaled(TIME_SCALE),
            account: limits.account.scaled(TIME_SCALE),
        },
        retry: RetryPolicy {
            request_timeout: Duration::from_secs(10),
            min_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
    })?;
    let mut ctx = CycleContext::new(&config, client, store.clone(), CancellationToken::new());
    ctx.settings.dry_run = false;
    ctx.settings.job_poll_interval = Duration::from_millis(100);

    println!(
        "zd-retention demo: a sandbox Zendesk at {} with {tickets} soft-deleted tickets, its clock {TIME_SCALE}x faster than Zendesk's;\nthe rules of config/example.toml, with dry run switched off for the sandbox only.\n",
        sandbox.base_url()
    );
    for (i, rule) in ctx.policy.rules.iter().enumerate() {
        println!(
            "  rule {}: {} {:?}: {}",
            i + 1,
            rule.action.as_str(),
            rule.name,
            rule.describe()
        );
    }
    println!(
        "  safety: nothing younger than {} is purged\n",
        crate::human::duration(ctx.policy.min_age)
    );

    let report = run_cycle(&ctx, Trigger::Demo).await?;
    print!("{}", crate::render::summary(&report, &ctx.policy));

    // Check from outside, through the sandbox's own state: exactly the
    // tickets the audit log says were selected have left the deleted view.
    let mut purged: Vec<TicketId> = sandbox
        .purged_ids()
        .into_iter()
        .map(TicketId::new)
        .collect();
    purged.sort_unstable();
    let selected = store.selected_tickets(report.run_id).await?;
    let exact = purged == selected;
    println!(
        "  check      the sandbox's deleted view lost {} tickets; the rules selected {}: {}",
        purged.len(),
        selected.len(),
        if exact { "exactly those" } else { "MISMATCH" }
    );
    println!(
        "  total      {:.1}s including start-up\n",
        started.elapsed().as_secs_f64()
    );

    // A later run costs what changed: 40 new deletions are listed, the rest
    // is decided from the ticket ledger.
    let now = chrono::Utc::now();
    sandbox.insert((0..40u32).map(|i| crate::sandbox::SandboxTicket {
        id: 9_000_000 + u64::from(i),
        subject: Some(format!("Deleted just now #{i}")),
        actor_id: 900001,
        actor_name: "Automation".into(),
        deleted_at: now - chrono::Duration::seconds(i64::from(i)),
        previous_state: "closed".into(),
    }));
    let second = run_cycle(&ctx, Trigger::Demo).await?;
    println!("40 tickets deleted since:");
    print!("{}", crate::render::summary(&second, &ctx.policy));
    println!();
    let example = selected.first().copied().unwrap_or_default();
    print_hints(database, report.run_id, example);
    store.close().await;
    sandbox.shutdown().await;
    Ok(if report.status == RunStatus::Completed && exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::app::EXIT_FAILED)
    })
}

/// Where the demo's audit log is, and what to try on it.
fn print_hints(database: &std::path::Path, run_id: RunId, example: TicketId) {
    // `cargo run` says so in the environment; an installed binary (the
    // package, the image) is called by its name
    let me = if std::env::var_os("CARGO").is_some() {
        "cargo run --release --"
    } else {
        "zd-retention"
    };
    println!("The audit log is in {}. Try:", database.display());
    println!(
        "  {me} audit run {} --database {}",
        run_id,
        database.display()
    );
    println!(
        "  {me} audit ticket {example} --database {}",
        database.display()
    );
    println!(
        "  {me} audit report --since 7d --output r.html --database {}",
        database.display()
    );
    println!(
        "  {me} audit certificate 1 --format html --output certificate-1.html --database {}",
        database.display()
    );
    println!(
        "  sqlite3 {} \"SELECT rule, COUNT(*) FROM decisions WHERE decision = 'purge' GROUP BY rule\"",
        database.display()
    );
}

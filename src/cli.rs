//! The command line: clap definitions and one function per command.
//!
//! Commands load the config through the config module, build the parts they
//! need and hand over to the library; they print tables and JSON to stdout,
//! progress and logs to stderr. Exit codes: 0 ok, 1 a failed run or request,
//! 2 bad usage or config.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;

use tokio_util::sync::CancellationToken;

use crate::audit::AuditStore;
use crate::config::{Config, ConfigError};
use crate::cycle::{CycleContext, RunStatus, Trigger, run_cycle};
use crate::sandbox::{CursorSort, Faults, Sandbox, SandboxAuth, SandboxLimits, SandboxOptions};
use crate::telemetry::LogFormat;
use crate::zendesk::{DeletedTicket, ListOptions, Pagination, SortBy, SortOrder};

/// Exit code of a failed run or request.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of bad usage or a bad config.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "zd-retention",
    version,
    about = "Enforces retention rules on Zendesk's soft-deleted tickets, with an audit trail in SQLite.",
    after_help = "Exit codes: 0 ok, 1 a failed run or request, 2 bad usage or config.\n\nStart with:  zd-retention demo"
)]
pub struct Cli {
    /// The config file (TOML); falls back to $ZD_RETENTION_CONFIG.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log line format on stderr (default: text, but JSON for `run` when
    /// stderr is not a terminal, as under journald or Kubernetes); the level
    /// comes from RUST_LOG (default: this program's lines at info, its
    /// libraries' at warn).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Begin a fresh audit history although the database that was in use
    /// here is missing (otherwise a writer refuses to start).
    #[arg(long, global = true)]
    pub new_history: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a fake Zendesk account on loopback for tests and trials.
    #[command(
        after_help = "Example:\n  zd-retention sandbox --listen 127.0.0.1:8089 --tickets 10000 --seed 42 --time-scale 60\n  curl -u 'a@b.c/token:x' 'http://127.0.0.1:8089/api/v2/deleted_tickets.json?page[size]=100'"
    )]
    Sandbox(SandboxArgs),
    /// List the account's soft-deleted tickets.
    #[command(
        after_help = "Example:\n  ZENDESK_API_TOKEN=x zd-retention list --config config/sandbox.toml --format json --limit 20"
    )]
    List(ListArgs),
    /// Validate the config file and summarise its rules (exit 2 on errors).
    #[command(after_help = "Example:\n  zd-retention check-config --config config/example.toml")]
    CheckConfig,
    /// Run one cycle now and wait for its jobs; exit 1 when the run fails.
    #[command(
        after_help = "Example:\n  zd-retention once --config /etc/zd-retention/config.toml --dry-run"
    )]
    Once(OnceArgs),
    /// Run as a daemon: a cycle on every tick of the configured cron.
    #[command(after_help = "Example:\n  zd-retention run --config /etc/zd-retention/config.toml")]
    Run,
    /// Purge a sandbox Zendesk by the example rules and show what happened.
    #[command(after_help = "Example:\n  cargo run --release -- demo")]
    Demo(DemoArgs),
    /// Query the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// A dry run against the account that records nothing: what would go, by which rule.
    #[command(
        after_help = "Examples:\n  zd-retention plan --config config.toml\n  zd-retention plan --config config.toml --explain 4711\n  zd-retention plan --config config.toml --format json | jq '.tickets[].id'"
    )]
    Plan(PlanArgs),
    /// Take soft-deleted tickets back out of the deleted view (audited).
    #[command(
        after_help = "Examples:\n  zd-retention restore 4711 4712 --config config.toml\n  zd-retention restore --ids-file ids.txt --yes --config config.toml"
    )]
    Restore(RestoreArgs),
    /// Permanently delete tickets by id through the audited path.
    #[command(
        after_help = "Example:\n  zd-retention purge 4711 4712 --yes --config config.toml\n\nThe safety floor (safety.min_age, safety.protect_ids) applies unless --force."
    )]
    Purge(PurgeArgs),
    /// Find out, with read requests only, how the account behaves where
    /// Zendesk's documentation leaves it open. Run it first.
    #[command(
        after_help = "Example:\n  zd-retention probe --config /etc/zd-retention/config.toml\n  zd-retention probe --config config.toml --format json\n\nNever sends a write request. The findings are stored in the audit database."
    )]
    Probe(ProbeArgs),
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  zd-retention completions bash > /etc/bash_completion.d/zd-retention"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
    /// Show, condition by condition, how the rules treat this ticket.
    #[arg(long, value_name = "TICKET_ID", conflicts_with = "ledger")]
    pub explain: Option<u64>,
    /// Compare this config's decisions with the ticket ledger in its audit
    /// database, without a listing: which tickets change decision, by rule.
    #[arg(long)]
    pub ledger: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Ticket ids.
    pub ids: Vec<u64>,
    /// A file of ticket ids (one per line, or separated by commas or spaces).
    #[arg(long, value_name = "FILE")]
    pub ids_file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Restore although the config says safety.dry_run = true (a dry run
    /// sends no write request at all otherwise).
    #[arg(long)]
    pub live: bool,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Ticket ids.
    pub ids: Vec<u64>,
    #[arg(long, value_name = "FILE")]
    pub ids_file: Option<PathBuf>,
    /// Confirm the permanent deletion.
    #[arg(long)]
    pub yes: bool,
    /// Skip the config's keep rules, the safety floor (min_age, protect_ids)
    /// and the check that each id is soft-deleted; recorded as forced.
    #[arg(long)]
    pub force: bool,
    /// Purge although the config says safety.dry_run = true (otherwise the
    /// ids are recorded as would_purge and nothing is sent).
    #[arg(long)]
    pub live: bool,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

impl Command {
    /// Commands that serve concurrent work for a long time.
    pub fn is_long_running(&self) -> bool {
        matches!(self, Command::Run | Command::Sandbox(_) | Command::Demo(_))
    }
}

#[derive(Debug, Args)]
pub struct OnceArgs {
    /// Decide and record only; send no write request (whatever the config says).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the run's report as JSON on stdout.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    pub format: SummaryFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Soft-deleted tickets in the demo's sandbox.
    #[arg(long, default_value_t = 3000)]
    pub tickets: usize,
    /// The demo's audit database (replaced at every demo).
    #[arg(long, default_value = "zd-retention-demo.db")]
    pub database: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The latest runs.
    #[command(
        after_help = "Example:\n  zd-retention audit runs --limit 10 --database zd-retention.db"
    )]
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Only runs started since this day, time or duration back (7d).
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// One run: its figures, decisions per rule and its jobs.
    #[command(after_help = "Example:\n  zd-retention audit run 1 --database zd-retention.db")]
    Run {
        run_id: i64,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// Decisions and their outcomes by time, rule, outcome, actor or ticket.
    #[command(
        after_help = "Examples:\n  zd-retention audit search --outcome failed --since 7d\n  zd-retention audit search --rule closed-after-7-days --decision purge --since 2026-11-01 --format csv"
    )]
    Search {
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_parser = parse_since)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        rule: Option<String>,
        /// purged, failed, unknown, not_sent, confirmed_gone, not_effective, restored, ...
        #[arg(long)]
        outcome: Option<String>,
        /// purge, would_purge, keep_rule, keep_no_rule, keep_protected, keep_too_young, ...
        #[arg(long)]
        decision: Option<String>,
        /// The deleting actor's user id.
        #[arg(long)]
        actor: Option<i64>,
        #[arg(long)]
        ticket: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// Check the audit log's hash chain; names the first row changed, removed or added (exit 1).
    #[command(
        after_help = "Examples:\n  zd-retention audit verify --database zd-retention.db\n  zd-retention audit verify --expect-head 3f2a...  # a head logged or noted earlier: detects a removed tail"
    )]
    Verify {
        /// A head hash noted earlier (from a run's log line or `audit head`):
        /// it must still be in the chain, or entries were removed.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// The ticket ledger: tickets per state, the high-water mark of the
    /// newest deletions, and when the view was last walked whole.
    #[command(after_help = "Example:\n  zd-retention audit ledger --database zd-retention.db")]
    Ledger {
        #[command(flatten)]
        target: AuditTarget,
    },
    /// The chain's head: its entry number and hash, to note elsewhere.
    #[command(after_help = "Example:\n  zd-retention audit head --database zd-retention.db")]
    Head {
        #[command(flatten)]
        target: AuditTarget,
    },
    /// Every decision with its outcome, as CSV or JSON lines, for archives.
    #[command(
        after_help = "Example:\n  zd-retention audit export --format jsonl --since 2026-11-01 > audit.jsonl"
    )]
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// The audit database; defaults to the config's audit.database.
        #[arg(long, value_name = "PATH")]
        database: Option<PathBuf>,
    },
    /// Counts over time: purges per rule per day, decisions per rule, outcomes.
    #[command(
        after_help = "Example:\n  zd-retention audit stats --by day --since 2026-11-01 --database zd-retention.db"
    )]
    Stats {
        #[arg(long, value_enum, default_value_t = StatsBy::Day)]
        by: StatsBy,
        /// Only since this day or time (2026-11-01 or RFC 3339).
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// What happened to one ticket, when, and by which rule.
    #[command(after_help = "Example:\n  zd-retention audit ticket 4711 --database zd-retention.db")]
    Ticket {
        ticket_id: u64,
        #[command(flatten)]
        target: AuditTarget,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsBy {
    Day,
    Rule,
    Outcome,
}

/// `2026-11-01`, `2026-11-01T12:00:00Z`, or a duration back from now (`7d`).
pub fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(chrono::Utc::now() - chrono::Duration::from_std(d).map_err(|e| e.to_string())?);
    }
    Err(format!(
        "{text:?} is not a day (2026-11-01), a time (RFC 3339) or a duration back from now (7d)"
    ))
}

#[derive(Debug, Args)]
pub struct AuditTarget {
    /// The audit database; defaults to the config's audit.database.
    #[arg(long, value_name = "PATH")]
    pub database: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on; loopback unless you say otherwise.
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,
    /// Soft-deleted tickets to generate.
    #[arg(long, default_value_t = 1000)]
    pub tickets: usize,
    /// Seed of the generated data and of the faults.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run the sandbox's clock this many times faster than Zendesk's: rate
    /// limit windows and job delays shrink by this factor.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// From purge request to job end, at Zendesk's time.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub job_delay: Duration,
    /// How long finished job statuses stay readable, at Zendesk's time.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub job_ttl: Duration,
    /// Jobs queued or running at once before 429.
    #[arg(long, default_value_t = 30)]
    pub max_jobs: usize,
    /// Account-wide requests per minute (Zendesk plans: 200, 400, 700, 2500).
    #[arg(long, default_value_t = 200)]
    pub account_limit: u32,
    /// Accept only this token (default: any non-empty token).
    #[arg(long, env = "SANDBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Share of answers that are 500/502/503.
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx: f64,
    /// Share of answers that are a spurious 429.
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    /// Share of answers that are slow, by --slow-delay.
    #[arg(long, default_value_t = 0.0)]
    pub fault_slow: f64,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub slow_delay: Duration,
    /// Share of answers whose connection breaks after the work is done.
    #[arg(long, default_value_t = 0.0)]
    pub fault_drop: f64,
    /// Share of 200 answers with a truncated JSON body.
    #[arg(long, default_value_t = 0.0)]
    pub fault_malformed: f64,
    /// Share of purge jobs that fail.
    #[arg(long, default_value_t = 0.0)]
    pub fault_job_fail: f64,
    /// Share of purge jobs that are killed.
    #[arg(long, default_value_t = 0.0)]
    pub fault_job_kill: f64,
    /// Share of purge jobs whose status vanishes (404).
    #[arg(long, default_value_t = 0.0)]
    pub fault_job_vanish: f64,
    /// Refuse every credential after this many requests.
    #[arg(long)]
    pub reject_auth_after: Option<u64>,
    /// Profile: whether cursor listing honours sort_by/sort_order (ignore:
    /// id order, and links.next carries only the cursor; offset pagination
    /// still sorts, as documented).
    #[arg(long, value_enum, default_value_t = CursorSort::Honour)]
    pub cursor_sort: CursorSort,
    /// Profile: agents at work during a scan, as actions per listing request
    /// on average (restores, deletions again with a new deleted_at, new
    /// deletions).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Profile: tickets deleted longer ago than this leave the view, as
    /// Zendesk's scrub does after about 30 days (e.g. 30d).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub scrub_after: Option<Duration>,
    /// Profile: job_statuses/show_many answers 404 when any id is unknown or
    /// expired, instead of leaving it out.
    #[arg(long)]
    pub strict_job_ids: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[arg(long, value_enum, default_value_t = ProbeFormat::Table)]
    pub format: ProbeFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum)]
    pub sort_by: Option<SortBy>,
    #[arg(long, value_enum, default_value_t = SortOrder::Asc)]
    pub sort_order: SortOrder,
    /// Stop after this many tickets.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Use offset pagination (stops at 10,000 tickets) instead of cursors.
    #[arg(long)]
    pub offset: bool,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Sandbox(args) => sandbox(args).await,
        Command::List(args) => list(cli.config, args).await,
        Command::CheckConfig => check_config(cli.config),
        Command::Once(args) => once(cli.config, args, cli.new_history).await,
        Command::Run => daemon(cli.config, cli.new_history).await,
        Command::Demo(args) => crate::demo::run(args.tickets, &args.database).await,
        Command::Audit(command) => crate::report::audit(cli.config, command).await,
        Command::Plan(args) => plan(cli.config, args).await,
        Command::Restore(args) => restore(cli.config, args, cli.new_history).await,
        Command::Purge(args) => purge(cli.config, args, cli.new_history).await,
        Command::Probe(args) => probe(cli.config, args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "zd-retention", &mut script);
            // a reader that went away (`| head`) is not a failure
            use std::io::Write as _;
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(anyhow::Error::new(e).context("cannot write the completions"))
                }
                _ => Ok(ExitCode::SUCCESS),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let usage = e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some();
            let code = if usage { EXIT_USAGE } else { EXIT_FAILED };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

pub(crate) fn load_config(path: Option<PathBuf>) -> Result<Config, ConfigError> {
    let path = Config::locate(path.as_deref())?;
    Config::load(&path)
}

/// Builds the client from the config, reading the credential.
pub use crate::app::client_from;

async fn sandbox(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    if !(args.time_scale > 0.0 && args.time_scale.is_finite()) {
        anyhow::bail!(
            "--time-scale must be a positive number, got {}",
            args.time_scale
        );
    }
    for (name, share) in [
        ("--fault-5xx", args.fault_5xx),
        ("--fault-429", args.fault_429),
        ("--fault-slow", args.fault_slow),
        ("--fault-drop", args.fault_drop),
        ("--fault-malformed", args.fault_malformed),
        ("--fault-job-fail", args.fault_job_fail),
        ("--fault-job-kill", args.fault_job_kill),
        ("--fault-job-vanish", args.fault_job_vanish),
    ] {
        if !(0.0..=1.0).contains(&share) {
            anyhow::bail!("{name} is a share between 0 and 1, got {share}");
        }
    }
    let options = SandboxOptions {
        tickets: args.tickets,
        seed: args.seed,
        time_scale: args.time_scale,
        job_delay: args.job_delay,
        job_ttl: args.job_ttl,
        max_jobs: args.max_jobs,
        limits: SandboxLimits {
            account: args.account_limit,
            ..SandboxLimits::default()
        },
        faults: Faults {
            server_errors: args.fault_5xx,
            rate_limits: args.fault_429,
            slow: args.fault_slow,
            slow_delay: args.slow_delay,
            drops: args.fault_drop,
            malformed: args.fault_malformed,
            job_failures: args.fault_job_fail,
            job_kills: args.fault_job_kill,
            job_vanish: args.fault_job_vanish,
            reject_auth_after: args.reject_auth_after,
            endpoints: Vec::new(),
        },
        auth: args.token.map_or(SandboxAuth::AnyToken, SandboxAuth::Token),
        cursor_sort: args.cursor_sort,
        churn: args.churn,
        scrub_after: args.scrub_after,
        strict_job_ids: args.strict_job_ids,
        ..SandboxOptions::default()
    };
    if !(args.churn >= 0.0 && args.churn.is_finite()) {
        anyhow::bail!(
            "--churn is a number of agent actions per listing request, 0 or more, got {}",
            args.churn
        );
    }
    let sandbox = Sandbox::start(options, args.listen).await?;
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the sandbox listens beyond loopback, as asked");
    }
    eprintln!(
        "sandbox: {} soft-deleted tickets at {} (time scale {}); Ctrl-C to stop",
        args.tickets,
        sandbox.base_url(),
        args.time_scale
    );
    eprintln!(
        "try: curl -u 'a@b.c/token:x' '{}/api/v2/deleted_tickets.json?page[size]=100'",
        sandbox.base_url()
    );
    shutdown_signal().await;
    let counts = sandbox.request_counts();
    eprintln!("sandbox: requests served (endpoint: status=count):");
    for (endpoint, by_status) in counts {
        let parts: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}={n}")).collect();
        eprintln!("  {endpoint}: {}", parts.join(" "));
    }
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn progress_spinner(message: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(message.to_string());
    bar
}

async fn list(config: Option<PathBuf>, args: ListArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let client = client_from(&config)?;
    let options = ListOptions {
        sort: args.sort_by.map(|by| (by, args.sort_order)),
        pagination: if args.offset {
            Pagination::Offset
        } else {
            Pagination::Cursor
        },
        ..ListOptions::default()
    };
    let started = Instant::now();
    let bar = progress_spinner("listing deleted tickets");
    let mut tickets: Vec<DeletedTicket> = Vec::new();
    let mut pages = client.list_deleted(options);
    let limit = args.limit.unwrap_or(usize::MAX);
    while let Some(page) = pages.next().await {
        let page = page?;
        tickets.extend(page.tickets);
        bar.set_message(format!("{} tickets, page {}", tickets.len(), page.number));
        if tickets.len() >= limit {
            tickets.truncate(limit);
            break;
        }
    }
    bar.finish_and_clear();
    let stats = client.stats();
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&tickets)?),
        OutputFormat::Csv => print!("{}", tickets_csv(&tickets)),
        OutputFormat::Table => println!("{}", tickets_table(&tickets)),
    }
    eprintln!(
        "{} tickets in {} requests ({} rate-limited, {} retries) in {:.1}s",
        tickets.len(),
        stats.total_sent(),
        stats.rate_limited,
        stats.retries,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn tickets_csv(tickets: &[DeletedTicket]) -> String {
    let mut out = String::from("id,deleted_at,actor_id,actor_name,previous_state,subject\n");
    for t in tickets {
        let actor = t.actor.as_ref();
        let row = [
            t.id.to_string(),
            t.deleted_at.map(|d| d.to_rfc3339()).unwrap_or_default(),
            actor
                .and_then(|a| a.id)
                .map(|i| i.to_string())
                .unwrap_or_default(),
            actor.and_then(|a| a.name.clone()).unwrap_or_default(),
            t.previous_state.clone().unwrap_or_default(),
            t.subject.clone().unwrap_or_default(),
        ];
        out.push_str(
            &row.iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

fn tickets_table(tickets: &[DeletedTicket]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "id",
        "deleted at",
        "deleted by",
        "previous state",
        "subject",
    ]);
    for t in tickets {
        let actor = t.actor.as_ref();
        table.add_row([
            t.id.to_string(),
            t.deleted_at
                .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "?".into()),
            actor
                .and_then(|a| a.name.clone().or(a.id.map(|i| i.to_string())))
                .unwrap_or_default(),
            t.previous_state.clone().unwrap_or_default(),
            t.subject.clone().unwrap_or_else(|| "(none)".into()),
        ]);
    }
    table
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    // valid, or a list of problems: never both
    if let Err(e) = config.auth() {
        eprintln!("{e}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
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
    println!("  credential: found");
    Ok(ExitCode::SUCCESS)
}

async fn probe(config: Option<PathBuf>, args: ProbeArgs) -> anyhow::Result<ExitCode> {
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
        ProbeFormat::Table => print!("{}", crate::report::probe_table(&findings)),
    }
    match stored {
        Ok(Some(id)) => eprintln!("probe {id} stored in {}", config.audit.database.display()),
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

async fn open_store(config: &Config) -> anyhow::Result<AuditStore> {
    AuditStore::open(&config.audit.database).await
}

async fn once(
    config: Option<PathBuf>,
    args: OnceArgs,
    new_history: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let client = client_from(&config)?;
    // one writer per audit database, for the whole command
    let mut lock = crate::writer_lock::acquire(&config.audit.database, "once", new_history)?;
    let store = open_store(&config).await?;
    lock.mark_history();
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
        SummaryFormat::Text => print!("{}", crate::report::summary(&report, &ctx.policy)),
    }
    Ok(if report.status == RunStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

async fn daemon(config: Option<PathBuf>, new_history: bool) -> anyhow::Result<ExitCode> {
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

/// A cycle context for manual commands: the config, its client and store.
async fn manual_context(
    config: Option<PathBuf>,
    command: &str,
    new_history: bool,
) -> anyhow::Result<(CycleContext, crate::writer_lock::WriterLock)> {
    let config = load_config(config)?;
    let client = client_from(&config)?;
    // one writer per audit database, for the whole command
    let mut lock = crate::writer_lock::acquire(&config.audit.database, command, new_history)?;
    let store = open_store(&config).await?;
    lock.mark_history();
    Ok((
        CycleContext::new(&config, client, store, CancellationToken::new()),
        lock,
    ))
}

async fn plan(config: Option<PathBuf>, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    if args.ledger {
        // read-only: the running daemon's ledger is not disturbed
        let store = AuditStore::open_read_only(&config.audit.database).await?;
        let entries = store.ledger_live().await?;
        store.close().await;
        let diff = crate::manual::ledger_diff(
            &entries,
            &config.policy,
            config.audit.record_subjects,
            config.safety.dry_run,
            chrono::Utc::now(),
        );
        crate::report::print_ledger_diff(&diff, args.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    // a plan writes nothing: no audit database is opened
    let client = client_from(&config)?;
    let bar = progress_spinner("listing deleted tickets");
    let ticker = {
        let bar = bar.clone();
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bar.set_message(format!("{} list requests", client.stats().sent("list")));
            }
        })
    };
    let plan = crate::manual::plan(&client, &config.policy, args.explain).await;
    ticker.abort();
    bar.finish_and_clear();
    let plan = plan?;
    crate::report::print_plan(&plan, &config.policy, args.format)?;
    Ok(ExitCode::SUCCESS)
}

fn read_ids(ids: &[u64], file: Option<&PathBuf>) -> anyhow::Result<Vec<u64>> {
    let mut all = ids.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read --ids-file {}: {e}", path.display()))?;
        for (n, word) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .enumerate()
        {
            all.push(word.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--ids-file {}: {word:?} (item {}) is not a ticket id",
                    path.display(),
                    n + 1
                )
            })?);
        }
    }
    if all.is_empty() {
        return Err(UsageError(
            "no ticket id given: pass ids as arguments or --ids-file FILE".into(),
        )
        .into());
    }
    // the audit stores ids as SQLite integers (signed 64-bit): a larger id
    // is no Zendesk ticket, and would be stored wrapped
    if let Some(big) = all.iter().find(|id| **id > crate::audit::MAX_TICKET_ID) {
        return Err(UsageError(format!(
            "{big} is not a ticket id: Zendesk ids are below 2^63 ({})",
            crate::audit::MAX_TICKET_ID
        ))
        .into());
    }
    Ok(all)
}

/// Bad command-line use: exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Asks on the terminal; refuses when there is none.
fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "{question} Not on a terminal: pass --yes to confirm"
        ))
        .into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn print_results(results: &[crate::manual::IdResult], format: TableFormat) -> anyhow::Result<()> {
    match format {
        TableFormat::Json => println!("{}", serde_json::to_string_pretty(results)?),
        TableFormat::Csv => {
            println!("id,outcome,detail");
            for r in results {
                println!(
                    "{},{},{}",
                    r.id,
                    r.outcome,
                    csv_field(r.detail.as_deref().unwrap_or(""))
                );
            }
        }
        TableFormat::Table => {
            for r in results {
                match &r.detail {
                    Some(d) => println!("{} {}: {d}", r.id, r.outcome),
                    None => println!("{} {}", r.id, r.outcome),
                }
            }
        }
    }
    Ok(())
}

async fn restore(
    config: Option<PathBuf>,
    args: RestoreArgs,
    new_history: bool,
) -> anyhow::Result<ExitCode> {
    let ids = read_ids(&args.ids, args.ids_file.as_ref())?;
    if !confirm(
        &format!("Restore {} tickets into the ticket views?", ids.len()),
        args.yes,
    )? {
        eprintln!("nothing restored");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let (ctx, _lock) = manual_context(config, "restore", new_history).await?;
    if ctx.settings.dry_run && !args.live {
        return Err(UsageError(format!(
            "safety.dry_run = true: a dry run sends no write request, so {} tickets were not restored; pass --live to restore them",
            ids.len()
        ))
        .into());
    }
    let (run, results) = crate::manual::restore(&ctx, &ids).await?;
    ctx.store.close().await;
    print_results(&results, args.format)?;
    let failed = results.iter().filter(|r| r.outcome != "restored").count();
    eprintln!(
        "{} restored, {failed} not; audit: zd-retention audit run {run}",
        results.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

async fn purge(
    config: Option<PathBuf>,
    args: PurgeArgs,
    new_history: bool,
) -> anyhow::Result<ExitCode> {
    let ids = read_ids(&args.ids, args.ids_file.as_ref())?;
    if !args.yes {
        return Err(UsageError(format!(
            "purging {} tickets cannot be undone: pass --yes to confirm",
            ids.len()
        ))
        .into());
    }
    let (ctx, _lock) = manual_context(config, "purge", new_history).await?;
    let (run, results) = crate::manual::purge(&ctx, &ids, args.force, args.live).await?;
    ctx.store.close().await;
    print_results(&results, args.format)?;
    let would = results
        .iter()
        .filter(|r| r.outcome == "would_purge")
        .count();
    if would > 0 {
        eprintln!(
            "dry run: {would} would be purged, nothing was sent (safety.dry_run = true; pass --live to purge); audit: zd-retention audit run {run}"
        );
        return Ok(if would == results.len() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        });
    }
    let purged = results.iter().filter(|r| r.outcome == "purged").count();
    eprintln!(
        "{purged} purged, {} not; audit: zd-retention audit run {run}",
        results.len() - purged
    );
    Ok(if purged == results.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

//! The clap definitions: every command, its arguments and its help.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::audit::{DecisionKind, MAX_TICKET_ID, Outcome};
use crate::ids::{RunId, TicketId};
use crate::sandbox::CursorSort;
use crate::telemetry::LogFormat;
use crate::zendesk::{SortBy, SortOrder};

#[derive(Debug, Parser)]
#[command(
    name = "zd-retention",
    version = crate::build::VERSION_LINE,
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
    /// Write the manual pages (roff), one per command, into a folder: what
    /// the packages install under /usr/share/man/man1.
    #[command(
        hide = true,
        after_help = "Example:\n  zd-retention manpages --out target/man"
    )]
    Manpages {
        /// The folder to write into (it must exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
    /// Show, condition by condition, how the rules treat this ticket.
    #[arg(long, value_name = "TICKET_ID", conflicts_with = "ledger", value_parser = parse_ticket_id)]
    pub explain: Option<TicketId>,
    /// Compare this config's decisions with the ticket ledger in its audit
    /// database, without a listing: which tickets change decision, by rule.
    #[arg(long)]
    pub ledger: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Ticket ids.
    pub ids: Vec<TicketId>,
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
    pub ids: Vec<TicketId>,
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

    /// The audit database given with `--database`, if any.
    pub fn database_arg(&self) -> Option<&PathBuf> {
        match self {
            Command::Demo(args) => Some(&args.database),
            Command::Audit(command) => command.database_arg(),
            _ => None,
        }
    }
}

impl AuditCommand {
    /// The audit database given with `--database`, if any.
    pub fn database_arg(&self) -> Option<&PathBuf> {
        match self {
            AuditCommand::Runs { target, .. }
            | AuditCommand::Run { target, .. }
            | AuditCommand::Search(SearchArgs { target, .. })
            | AuditCommand::Verify { target, .. }
            | AuditCommand::Migrate { target, .. }
            | AuditCommand::Config { target, .. }
            | AuditCommand::Ledger { target }
            | AuditCommand::Head { target }
            | AuditCommand::Stats { target, .. }
            | AuditCommand::Ticket { target, .. } => target.database.as_ref(),
            AuditCommand::Certificate { database, .. }
            | AuditCommand::Report { database, .. }
            | AuditCommand::Export { database, .. } => database.as_ref(),
            AuditCommand::Keygen { .. } => None,
        }
    }
}

/// `audit search`: one argument per filter.
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[arg(long, value_parser = parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long, value_parser = parse_since)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long)]
    pub rule: Option<String>,
    /// purged, failed, unknown, not_sent, confirmed_gone, not_effective, restored, ...
    #[arg(long, value_parser = parse_outcome)]
    pub outcome: Option<Outcome>,
    /// purge, would_purge, keep_rule, keep_no_rule, keep_protected, keep_too_young, ...
    #[arg(long, value_parser = parse_decision)]
    pub decision: Option<DecisionKind>,
    /// The deleting actor's user id.
    #[arg(long)]
    pub actor: Option<i64>,
    #[arg(long, value_parser = parse_ticket_id)]
    pub ticket: Option<TicketId>,
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    #[command(flatten)]
    pub target: AuditTarget,
}

/// A ticket id as the audit keeps it: 1 to 2^63-1 (SQLite integers are
/// signed 64-bit; a larger id is no Zendesk ticket).
fn parse_ticket_id(text: &str) -> Result<TicketId, String> {
    let id: TicketId = text.parse().map_err(|e| format!("{e}"))?;
    if id.get() == 0 || id > MAX_TICKET_ID {
        return Err(format!(
            "not a ticket id: Zendesk ids are 1 to {MAX_TICKET_ID}"
        ));
    }
    Ok(id)
}

fn parse_outcome(text: &str) -> Result<Outcome, String> {
    Outcome::parse(text).ok_or_else(|| one_of(Outcome::ALL.iter().map(|o| o.as_str())))
}

fn parse_decision(text: &str) -> Result<DecisionKind, String> {
    DecisionKind::parse(text).ok_or_else(|| one_of(DecisionKind::ALL.iter().map(|d| d.as_str())))
}

fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    format!("not one of {}", names.collect::<Vec<_>>().join(", "))
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
    /// Soft-deleted tickets in the demo's sandbox (at most 10,000,000).
    #[arg(long, default_value_t = 3000, value_parser = ticket_count)]
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
        run_id: RunId,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// Decisions and their outcomes by time, rule, outcome, actor or ticket.
    #[command(
        after_help = "Examples:\n  zd-retention audit search --outcome failed --since 7d\n  zd-retention audit search --rule closed-after-7-days --decision purge --since 2026-11-01 --format csv"
    )]
    Search(SearchArgs),
    /// Check the audit log's hash chain; names the first row changed, removed or added (exit 1).
    #[command(
        after_help = "Examples:\n  zd-retention audit verify --database zd-retention.db\n  zd-retention audit verify --expect-head 3f2a...  # a head logged or noted earlier: detects a removed tail"
    )]
    Verify {
        /// A head hash noted earlier (from a run's log line or `audit head`):
        /// it must still be in the chain, or entries were removed.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        /// The signing key's public half (`audit keygen` writes it): every
        /// run's signed chain head must verify with it, so a database
        /// rewritten and re-chained without the private key is caught.
        /// Repeat it for each key used over time (after a key change).
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// Copy a whole SQLite audit history into an empty PostgreSQL database
    /// (one transaction), then verify its chain (and, with --public-key,
    /// its signed heads) there: the head must be the same.
    #[command(
        after_help = "Example:\n  zd-retention audit migrate --database /var/lib/zd-retention/zd-retention.db \\\n    --to 'postgres://zd@db.internal/audit?sslmode=verify-full' --password-file /run/secrets/pg\n  # then set [audit] database to the URL (and password_file), and verify with --expect-head"
    )]
    Migrate {
        /// The PostgreSQL database to fill: empty, without a password in
        /// the URL (a process listing shows it).
        #[arg(long, value_name = "URL")]
        to: String,
        /// A file holding the destination's password.
        #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
        password_file: Option<PathBuf>,
        /// An environment variable holding the destination's password.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// The signing key's public half: the copy's signed heads must
        /// verify with it (repeat for each key used over time).
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// Make an Ed25519 key pair for signing chain heads ([audit]
    /// signing_key_file): the private key (mode 0600) and its public half.
    #[command(
        after_help = "Example:\n  zd-retention audit keygen --out /etc/zd-retention/signing-key.pem\n  # writes signing-key.pem (0600) and signing-key.pub.pem; keep the .pub.pem with your auditors"
    )]
    Keygen {
        /// The private key's file; the public key goes beside it as
        /// NAME.pub.pem. An existing file is never overwritten, and a name
        /// that looks public (NAME.pub.pem, NAME.pub, "public") is refused.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// A config version as stored when a run first used it: rules in words,
    /// safety, schedule (never a credential).
    #[command(
        after_help = "Example:\n  zd-retention audit config 3f2a9c --database zd-retention.db"
    )]
    Config {
        /// The config's hash or its first characters (as `audit run` shows it).
        hash: String,
        #[command(flatten)]
        target: AuditTarget,
    },
    /// A deletion certificate for one run: who, what, how, verified how,
    /// when, and the signed chain head at its end.
    #[command(
        after_help = "Example:\n  zd-retention audit certificate 12 --format html > certificate-12.html"
    )]
    Certificate {
        run_id: RunId,
        /// text, json or html; by default from --output's extension, else text.
        #[arg(long, value_enum)]
        format: Option<DocumentFormat>,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The audit database; defaults to the config's audit.database.
        #[arg(long, value_name = "PATH")]
        database: Option<PathBuf>,
        /// Check the signatures with this public key and say so (repeat it
        /// for each key used over time).
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
    },
    /// A report for a period, for people who sign off: purges by rule,
    /// failures and how they settled, refusals, config versions, a chart,
    /// and a completeness statement. One self-contained HTML file or Markdown.
    #[command(
        after_help = "Examples:\n  zd-retention audit report --since 30d --output report.html\n  zd-retention audit report --since 2026-11-01 --until 2026-12-01 --format md"
    )]
    Report {
        /// The period's start: a day, a time, or a duration back (30d).
        #[arg(long, value_parser = parse_since, default_value = "30d")]
        since: chrono::DateTime<chrono::Utc>,
        /// The period's end (default: now).
        #[arg(long, value_parser = parse_since)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// html, or md; by default from --output's extension, else html.
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The audit database; defaults to the config's audit.database.
        #[arg(long, value_name = "PATH")]
        database: Option<PathBuf>,
        /// Check the signatures with this public key and say so (repeat it
        /// for each key used over time).
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
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
        #[arg(value_parser = parse_ticket_id)]
        ticket_id: TicketId,
        #[command(flatten)]
        target: AuditTarget,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocumentFormat {
    Text,
    Json,
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Html,
    Md,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsBy {
    Day,
    Rule,
    Outcome,
}

/// `2026-11-01`, `2026-11-01T12:00:00Z`, or a duration back from now (`7d`).
pub fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    parse_time_at(text, command_line_now())
}

/// The time this command line was read, once: every duration back and a
/// period's default end are reckoned from it, so that `--since 0d` is the
/// same instant as "now" and its empty period shows.
pub fn command_line_now() -> chrono::DateTime<chrono::Utc> {
    static NOW: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    *NOW.get_or_init(chrono::Utc::now)
}

/// [`parse_since`] with the clock given: a day, a time, or a duration back
/// from `now`, between 1970-01-01 and the end of 9999 (a timestamp outside
/// them is a typo, and chrono's arithmetic stops there anyway).
pub fn parse_time_at(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let earliest = chrono::DateTime::UNIX_EPOCH;
    let at = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&chrono::Utc)
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        d.and_time(chrono::NaiveTime::MIN).and_utc()
    } else if let Ok(d) = humantime::parse_duration(text) {
        match chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
        {
            Some(t) if t >= earliest => t,
            _ => {
                return Err(format!(
                    "{text:?} reaches back before 1970-01-01: give a shorter duration (30d) or a day (2026-11-01)"
                ));
            }
        }
    } else {
        return Err(format!(
            "{text:?} is not a day (2026-11-01), a time (RFC 3339) or a duration back from now (7d)"
        ));
    };
    let latest = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map(|t| t.and_utc());
    if at < earliest || latest.is_some_and(|latest| at > latest) {
        return Err(format!(
            "{text:?} is outside the years 1970 to 9999: give a day such as 2026-11-01"
        ));
    }
    Ok(at)
}

/// A duration argument (`3s`, `90m`, `7d`), at most
/// [`crate::human::LONGEST`]: longer ones overflow the clocks they are
/// added to.
pub fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write it like 3s, 90m or 7d"))?;
    if d > crate::human::LONGEST {
        return Err(format!(
            "{text:?} is more than 100 years: give a shorter duration"
        ));
    }
    Ok(d)
}

/// The sandbox's time scale: a factor from 0.001 to 1,000,000 (beyond
/// them, its minute or a job's delay no longer fits a clock).
pub fn parse_time_scale(text: &str) -> Result<f64, String> {
    let factor: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.001..=1_000_000.0).contains(&factor) {
        return Err(format!(
            "{text:?} is out of range: give a factor from 0.001 to 1000000 (60 runs the sandbox's minute in a second)"
        ));
    }
    Ok(factor)
}

#[derive(Debug, Args)]
pub struct AuditTarget {
    /// The audit database; defaults to the config's audit.database.
    #[arg(long, value_name = "PATH")]
    pub database: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

pub use crate::render::TableFormat;

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
    /// Soft-deleted tickets to generate (at most 10,000,000).
    #[arg(long, default_value_t = 1000, value_parser = ticket_count)]
    pub tickets: usize,
    /// Seed of the generated data and of the faults.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run the sandbox's clock this many times faster than Zendesk's: rate
    /// limit windows and job delays shrink by this factor.
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// From purge request to job end, at Zendesk's time.
    #[arg(long, default_value = "3s", value_parser = parse_duration_arg)]
    pub job_delay: Duration,
    /// How long finished job statuses stay readable, at Zendesk's time.
    #[arg(long, default_value = "1h", value_parser = parse_duration_arg)]
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
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
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
    /// Profile: agents on their own clock, one action (a restore, or a
    /// restored ticket deleted again) this often in real time (e.g. 20ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub agents_every: Option<Duration>,
    /// Profile: tickets deleted longer ago than this leave the view, as
    /// Zendesk's scrub does after about 30 days (e.g. 30d).
    #[arg(long, value_parser = parse_duration_arg)]
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

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum)]
    pub sort_by: Option<SortBy>,
    #[arg(long, value_enum, default_value_t = SortOrder::Asc)]
    pub sort_order: SortOrder,
    /// Stop after this many tickets.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
    /// Use offset pagination (stops at 10,000 tickets) instead of cursors.
    #[arg(long)]
    pub offset: bool,
}

/// A number of generated tickets: the sandbox holds them in memory, so a
/// count beyond ten million is refused rather than left to fail an
/// allocation.
fn ticket_count(text: &str) -> Result<usize, String> {
    const MAX: usize = 10_000_000;
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of tickets"))?;
    if n > MAX {
        return Err(format!(
            "{n} is more than the sandbox holds: use 0 to {MAX}"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn huge_durations_back_are_refused_not_a_panic() {
        for text in ["99999999d", "18446744073709551615s", "600000y", "57y"] {
            let err = parse_time_at(text, now()).unwrap_err();
            assert!(err.contains("before 1970-01-01"), "{text}: {err}");
        }
        assert_eq!(
            parse_time_at("7d", now()).unwrap(),
            now() - chrono::Duration::days(7)
        );
        assert!(parse_time_at("9999-12-31", now()).is_ok());
        assert!(parse_time_at("1970-01-01", now()).is_ok());
        let err = parse_time_at("1969-12-31T23:59:59Z", now()).unwrap_err();
        assert!(err.contains("outside the years 1970 to 9999"), "{err}");
        assert!(parse_time_at("+262143-12-31", now()).is_err());
        assert!(parse_time_at("10000-01-01", now()).is_err());
    }

    #[test]
    fn sandbox_durations_and_time_scale_are_range_checked() {
        assert_eq!(parse_duration_arg("3s").unwrap(), Duration::from_secs(3));
        let err = parse_duration_arg("18446744073709551615s").unwrap_err();
        assert!(err.contains("more than 100 years"), "{err}");
        assert!(parse_duration_arg("soon").is_err());
        assert_eq!(parse_time_scale("60").unwrap(), 60.0);
        for bad in ["0", "-1", "1e-300", "NaN", "inf", "1e300", "fast"] {
            assert!(parse_time_scale(bad).is_err(), "{bad}");
        }
    }

    /// What a user might type, and what a fuzzer would: digits of any
    /// length with every unit humantime knows, dates with odd years.
    fn date_or_duration() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            ("[0-9]{1,30}", "(ns|us|ms|s|m|h|d|w|M|y|years|days| )").prop_map(|(n, u)| n + &u),
            "[+-]?[0-9]{1,7}-[0-9]{1,3}-[0-9]{1,3}",
            "[+-]?[0-9]{1,7}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})",
            ("[0-9]{1,20}", "[0-9]{1,20}").prop_map(|(a, b)| format!("{a}d {b}s")),
        ]
    }

    proptest! {
        #[test]
        fn date_and_duration_parsing_never_panics(text in date_or_duration(), secs in any::<i64>()) {
            let now = DateTime::from_timestamp(secs.rem_euclid(253_402_300_799), 0).unwrap();
            if let Ok(t) = parse_time_at(&text, now) {
                prop_assert!(t >= DateTime::UNIX_EPOCH);
                prop_assert!(t.format("%Y").to_string().len() == 4);
            }
            if let Ok(d) = parse_duration_arg(&text) {
                prop_assert!(d <= crate::human::LONGEST);
            }
            let _ = parse_time_scale(&text);
        }
    }
}

//! Shared set-up: clients with compressed quotas pointed at a URL, sandboxes
//! on port 0.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;
use zd_retention::quota::RateQuota;
use zd_retention::sandbox::{Sandbox, SandboxOptions};
use zd_retention::zendesk::{Auth, ClientConfig, RateLimits, RetryPolicy, ZendeskClient};

/// A token that the tests look for in outputs where it must not be.
pub const TOKEN: &str = "tok-SECRET-4711-do-not-leak";

pub fn fast_limits() -> RateLimits {
    RateLimits {
        list: RateQuota::new(10, Duration::from_millis(100)).unwrap(),
        list_deep: RateQuota::new(5, Duration::from_millis(100)).unwrap(),
        account: RateQuota::new(200, Duration::from_millis(100)).unwrap(),
    }
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
    }
}

pub fn client_for(base: &str) -> ZendeskClient {
    ZendeskClient::new(ClientConfig {
        base_url: Url::parse(base).unwrap(),
        auth: Auth::ApiToken {
            email: "ops@acme.example".into(),
            token: SecretString::from(TOKEN),
        },
        limits: fast_limits(),
        retry: fast_retry(),
    })
    .unwrap()
}

/// Sandbox options with time compressed 600 times (a Zendesk minute is
/// 100 ms), matching `fast_limits`.
pub fn fast_sandbox_options(tickets: usize) -> SandboxOptions {
    SandboxOptions {
        tickets,
        time_scale: 600.0,
        ..SandboxOptions::default()
    }
}

pub async fn sandbox(tickets: usize) -> Sandbox {
    Sandbox::start_local(fast_sandbox_options(tickets))
        .await
        .unwrap()
}

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use zd_retention::audit::AuditStore;
use zd_retention::cycle::{CycleContext, CycleSettings};
use zd_retention::rules::{Policy, RetentionRule, RuleAction};
use zd_retention::sandbox::{SandboxTicket, generate_tickets};

/// Settings for tests: live, quick polling, generous limits.
pub fn test_settings() -> CycleSettings {
    CycleSettings {
        dry_run: false,
        max_purges_per_run: 100_000,
        purge_while_scanning: false,
        max_jobs_in_flight: 10,
        job_poll_interval: Duration::from_millis(20),
        job_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
        record_subjects: false,
        settle_window: Duration::from_secs(31 * 86_400),
        // every run walks the whole view, as before the ledger; the refresh
        // tests set a day
        reconcile_every: Duration::ZERO,
        keep_details: None,
        clock_skew: Duration::from_secs(120),
        check_share: 0.5,
        check_interval: Duration::from_secs(900),
        latency_bound: Duration::from_secs(1800),
    }
}

/// The example config's rules: keep legal holds, purge solved/closed after
/// 7 days and automation deletions after an hour; min_age 1h.
pub fn example_policy() -> Policy {
    Policy {
        rules: vec![
            RetentionRule {
                subject_matches: Some(regex::Regex::new("(?i)legal hold").unwrap()),
                ..RetentionRule::new("legal-hold", RuleAction::Keep)
            },
            RetentionRule {
                previous_state: Some(["solved".to_string(), "closed".to_string()].into()),
                older_than: Some(Duration::from_secs(7 * 86_400)),
                ..RetentionRule::new("closed-after-7-days", RuleAction::Purge)
            },
            RetentionRule {
                actor_ids: Some([900001].into()),
                older_than: Some(Duration::from_secs(3600)),
                ..RetentionRule::new("automation-deletions", RuleAction::Purge)
            },
        ],
        min_age: Duration::from_secs(3600),
        protect_ids: Default::default(),
    }
}

/// The example rules written out by hand, independent of the engine, with a
/// margin of a minute around the age limits so the clock cannot flip a case.
pub fn example_selects(t: &SandboxTicket) -> Option<bool> {
    let age = chrono::Utc::now() - t.deleted_at;
    let near = |limit: chrono::Duration| (age - limit).num_seconds().abs() < 60;
    if near(chrono::Duration::days(7)) || near(chrono::Duration::hours(1)) {
        return None;
    }
    Some(example_selects_at(t, chrono::Utc::now()))
}

/// Whether the example rules select `t` at `now`, however close to a
/// threshold.
pub fn example_selects_at(t: &SandboxTicket, now: chrono::DateTime<chrono::Utc>) -> bool {
    let age = now - t.deleted_at;
    let held = t
        .subject
        .as_deref()
        .is_some_and(|s| s.to_lowercase().contains("legal hold"));
    let closed =
        matches!(t.previous_state.as_str(), "solved" | "closed") && age > chrono::Duration::days(7);
    let automation = t.actor_id == 900001 && age > chrono::Duration::hours(1);
    !held && (closed || automation)
}

/// A cycle context on a fresh database file.
pub struct Engine {
    pub ctx: CycleContext,
    pub db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// The PostgreSQL server the suite's second pass runs against
/// (`tests/tools/with-postgres`), if any.
pub fn postgres_server() -> Option<String> {
    std::env::var("ZD_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh, empty PostgreSQL database on the server of this pass: its URL.
pub async fn fresh_postgres_database(server: &str) -> String {
    use sqlx::Connection as _;
    zd_retention::audit::install_drivers();
    let name = format!("zd_{}", uuid_like());
    let mut admin = sqlx::AnyConnection::connect(server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

fn uuid_like() -> String {
    use rand::RngExt as _;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// The store a test's engine writes: SQLite in `dir`, or a fresh PostgreSQL
/// database in the suite's PostgreSQL pass.
pub async fn test_store(db: &std::path::Path) -> AuditStore {
    match postgres_server() {
        Some(server) => {
            let url = fresh_postgres_database(&server).await;
            AuditStore::open_postgres(&url, None).await.unwrap()
        }
        None => AuditStore::open(db).await.unwrap(),
    }
}

pub async fn engine(sb: &Sandbox, policy: Policy, settings: CycleSettings) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let store = test_store(&db).await;
    Engine {
        ctx: CycleContext {
            policy: Arc::new(policy),
            settings,
            origin: "test".into(),
            client: client_for(&sb.base_url()),
            store,
            cancel: CancellationToken::new(),
        },
        db,
        _dir: dir,
    }
}

/// Generated tickets without any that sit within a minute of an age limit of
/// the example rules, so that the clock cannot flip a case mid-test.
pub fn clear_tickets(n: usize, seed: u64) -> Vec<SandboxTicket> {
    generate_tickets(n, seed, chrono::Utc::now())
        .into_iter()
        .filter(|t| example_selects(t).is_some())
        .collect()
}

/// The ids the example rules select.
pub fn selected(tickets: &[SandboxTicket]) -> std::collections::BTreeSet<u64> {
    tickets
        .iter()
        .filter(|t| example_selects(t) == Some(true))
        .map(|t| t.id)
        .collect()
}

/// A sandbox on loopback port 0 holding exactly `tickets`.
pub async fn sandbox_with(tickets: Vec<SandboxTicket>, options: SandboxOptions) -> Sandbox {
    Sandbox::start_with(options, tickets, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The write-ahead rule, checked from the sandbox's side: every write request
/// it received was recorded before it arrived.
pub async fn assert_writes_recorded_first(sb: &Sandbox, pool: &sqlx::AnyPool, context: &str) {
    let jobs: Vec<(String, String)> = sqlx::query_as("SELECT ticket_ids, recorded_at FROM jobs")
        .fetch_all(pool)
        .await
        .unwrap();
    for request in sb.write_requests() {
        let ids = ids_text(&request.ids);
        let at = zd_retention::audit::timestamp(request.at);
        assert!(
            jobs.iter()
                .any(|(recorded, when)| *recorded == ids && *when <= at),
            "{context}: a write request with ids {ids} at {at} was not recorded before it was sent"
        );
    }
}

/// Ticket ids as the audit log's `jobs.ticket_ids` holds them.
pub fn ids_text(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The sandbox's readings of what Zendesk leaves open, one per profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Our own reading: cursor listing honours sort_by, a still account.
    Default,
    /// Cursor listing in id order whatever sort_by says.
    CursorIgnore,
    /// Tickets deleted more than 30 days ago leave the view.
    Scrub30d,
    /// show_many fails the whole call for an unknown job id.
    StrictJobIds,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Default,
        Profile::CursorIgnore,
        Profile::Scrub30d,
        Profile::StrictJobIds,
    ];

    pub fn apply(self, options: SandboxOptions) -> SandboxOptions {
        match self {
            Profile::Default => options,
            Profile::CursorIgnore => SandboxOptions {
                cursor_sort: zd_retention::sandbox::CursorSort::Ignore,
                ..options
            },
            Profile::Scrub30d => SandboxOptions {
                scrub_after: Some(Duration::from_secs(30 * 86_400)),
                ..options
            },
            Profile::StrictJobIds => SandboxOptions {
                strict_job_ids: true,
                ..options
            },
        }
    }
}

/// The last outcome of each ticket in the audit.
pub async fn last_outcomes(pool: &sqlx::AnyPool) -> std::collections::BTreeMap<u64, String> {
    sqlx::query_as::<_, (i64, String)>(
        "SELECT ticket_id, outcome FROM outcomes o WHERE id = (SELECT MAX(id) FROM outcomes WHERE ticket_id = o.ticket_id)",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(t, o)| (t as u64, o))
    .collect()
}

/// The last decision of a ticket in the audit.
pub async fn last_decision(pool: &sqlx::AnyPool, ticket: u64) -> Option<String> {
    sqlx::query_scalar(
        "SELECT decision FROM decisions WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(ticket as i64)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Every Zendesk job the sandbox created is accounted for in the audit: a
/// request row with its ids that names the job, or that ended `unknown`
/// because its answer was lost (the job id was never learnt), or is still
/// pending.
pub async fn assert_job_ids_accounted(sb: &Sandbox, pool: &sqlx::AnyPool, context: &str) {
    let jobs: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT ticket_ids, zendesk_job_id, status FROM jobs")
            .fetch_all(pool)
            .await
            .unwrap();
    for request in sb.write_requests() {
        let Some(job) = &request.job_id else { continue };
        let ids = ids_text(&request.ids);
        let accounted = jobs.iter().any(|(t, z, status)| {
            *t == ids
                && (z.as_deref() == Some(job) || matches!(status.as_str(), "pending" | "unknown"))
        });
        assert!(
            accounted,
            "{context}: Zendesk job {job} is not in the audit"
        );
    }
    // and no two attempts claim one job
    let mut named: Vec<&str> = jobs.iter().filter_map(|(_, z, _)| z.as_deref()).collect();
    named.sort_unstable();
    let before = named.len();
    named.dedup();
    assert_eq!(before, named.len(), "{context}: a job id is recorded twice");
}

/// The daemon in process against `base_url`: a run every second, health and
/// metrics on a port of its choosing, the listing paced at `list`. Returns
/// the bound address, the stop signal and the daemon's task.
pub async fn daemon_in_process(
    base_url: &str,
    audit: &AuditAt,
    list: &str,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let text = format!(
        "[zendesk]\nbase_url = \"{base_url}\"\nemail = \"ops@acme.example\"\ntoken_env = \"ZD_TEST_TOKEN\"\njob_poll_interval = \"20ms\"\n\
         [zendesk.rate_limits]\nlist = \"{list}\"\nlist_deep = \"5/100ms\"\naccount = \"200/100ms\"\n\
         [schedule]\ncron = \"* * * * * *\"\nshutdown_grace = \"2s\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [audit]\n{}\n[safety]\ndry_run = false\n\
         [[rules]]\nname = \"closed-after-7-days\"\naction = \"purge\"\nprevious_state = [\"solved\", \"closed\"]\nolder_than = \"7d\"\n",
        audit.config_line()
    );
    // SAFETY: this test's process only (nextest runs each test alone)
    unsafe { std::env::set_var("ZD_TEST_TOKEN", TOKEN) };
    let config = zd_retention::config::Config::parse(&text, "inline").unwrap();
    let app = zd_retention::app::App::build(&config).await.unwrap();
    let addr = app.server_addr().expect("a bound address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (addr, stop, daemon)
}

/// A deleted ticket `age` ago, with a subject naming it.
pub fn ticket(id: u64, age: chrono::Duration, state: &str, actor: u64) -> SandboxTicket {
    SandboxTicket {
        id,
        subject: Some(format!("Ticket {id}")),
        actor_id: actor,
        actor_name: format!("Agent {actor}"),
        deleted_at: chrono::Utc::now() - age,
        previous_state: state.into(),
    }
}

/// How many tickets a harness runs with: `HARNESS_TICKETS=100000` runs
/// the crash and churn harnesses at scale (printed, so that a failure can
/// be run again); CI runs the defaults.
pub fn harness_tickets(default: usize) -> usize {
    env_knob("HARNESS_TICKETS", default)
}

/// A test's knob from the environment, or its default; printed.
fn env_knob<T: std::str::FromStr + std::fmt::Display>(name: &str, default: T) -> T {
    let value = std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("{name}={value}");
    value
}

/// The agents' seed of a churn test: `CHURN_SEED=n` tries others (printed,
/// so that a failure can be run again).
pub fn churn_seed(default: u64) -> u64 {
    env_knob("CHURN_SEED", default)
}

/// The SHA-256 of a file's bytes, in hex: to show a file was not written.
pub fn sha256_file(path: &std::path::Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// Runs `command`, reads one byte of its output and closes the pipe, as
/// `| head -c1` does: how many bytes came, and how the command ended.
pub fn read_one_byte_then_close(
    command: &mut std::process::Command,
) -> (usize, std::process::Output) {
    use std::io::Read as _;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    let read = stdout.read(&mut one).unwrap_or(0);
    drop(stdout);
    (read, child.wait_with_output().unwrap())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Runs `sql` on `db` with Debian's sqlite3 (installed by .ci/test-deps):
/// its standard output, trimmed. Fails the test on an error.
pub fn sqlite3(db: &std::path::Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 is installed (.ci/test-deps installs it)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `dir/config.toml` for commands that never reach Zendesk (port 9,
/// where nothing listens; the token from `ZD_TEST_TOKEN`) on `database`,
/// with `safety.dry_run` and any further TOML (rules) after it.
pub fn offline_config(
    dir: &std::path::Path,
    database: &std::path::Path,
    dry_run: bool,
    more: &str,
) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[zendesk]\nbase_url = \"http://127.0.0.1:9\"\nemail = \"a@b.c\"\ntoken_env = \"ZD_TEST_TOKEN\"\n\n[audit]\ndatabase = {:?}\n\n[safety]\ndry_run = {dry_run}\n{more}",
            database.to_str().unwrap()
        ),
    )
    .unwrap();
    config
}

/// Waits until the sandbox's open jobs have ended, each wait as long as its
/// own clock says the oldest open job has left (never a guessed time); a
/// job that does not end within 100 such waits fails the test.
pub async fn jobs_ended(sb: &Sandbox) {
    for _ in 0..100 {
        let left = {
            let state = sb.state();
            if state.open_jobs() == 0 {
                return;
            }
            state.next_job_end(tokio::time::Instant::now())
        };
        tokio::time::sleep(left).await;
    }
    panic!("the sandbox's jobs did not end");
}

/// Where the binary a test runs keeps its audit: an SQLite file in the
/// test's folder or, in the PostgreSQL pass, a fresh database (its password
/// none: the test server trusts loopback).
pub enum AuditAt {
    File(std::path::PathBuf),
    Postgres(String),
}

impl AuditAt {
    /// The audit of the test folder `dir`, the same each time it is asked
    /// for: `dir/audit.db`, or in the PostgreSQL pass a database named
    /// after `dir`, created (empty) when it is not there. Callable outside a runtime
    /// (a test's config writer).
    pub fn at(dir: &std::path::Path) -> Self {
        let Some(server) = postgres_server() else {
            return AuditAt::File(dir.join("audit.db"));
        };
        let name = format!(
            "zd_dir_{}",
            &sha256_hex(dir.to_str().unwrap().as_bytes())[..20]
        );
        let (base, _) = server.rsplit_once('/').expect("a URL with a database");
        let url = format!("{base}/{name}");
        // a thread of its own: the caller may be inside a runtime or not
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    use sqlx::Connection as _;
                    zd_retention::audit::install_drivers();
                    let mut admin = sqlx::AnyConnection::connect(&server).await.unwrap();
                    let there: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
                            .bind(&name)
                            .fetch_one(&mut admin)
                            .await
                            .unwrap();
                    if there == 0 {
                        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                            .execute(&mut admin)
                            .await
                            .unwrap();
                    }
                    let _ = admin.close().await;
                })
        })
        .join()
        .unwrap();
        AuditAt::Postgres(url)
    }

    pub async fn new(dir: &std::path::Path) -> Self {
        match postgres_server() {
            Some(server) => AuditAt::Postgres(fresh_postgres_database(&server).await),
            None => AuditAt::File(dir.join("audit.db")),
        }
    }

    /// The `database = ...` line of a config.
    pub fn config_line(&self) -> String {
        match self {
            AuditAt::File(path) => format!("database = \"{}\"", path.display()),
            AuditAt::Postgres(url) => format!("database = \"{url}\""),
        }
    }

    pub async fn open(&self) -> anyhow::Result<AuditStore> {
        match self {
            AuditAt::File(path) => AuditStore::open(path).await,
            AuditAt::Postgres(url) => AuditStore::open_postgres(url, None).await,
        }
    }

    pub async fn open_read_only(&self) -> anyhow::Result<AuditStore> {
        match self {
            AuditAt::File(path) => AuditStore::open_read_only(path).await,
            AuditAt::Postgres(url) => AuditStore::open_postgres_read_only(url).await,
        }
    }

    /// A connection pool to the audit that opens nothing of the store's (no
    /// check, no seal): what an edit from outside would use.
    pub async fn raw_pool(&self) -> sqlx::AnyPool {
        zd_retention::audit::install_drivers();
        let url = match self {
            AuditAt::File(path) => format!("sqlite://{}", path.display()),
            AuditAt::Postgres(url) => url.clone(),
        };
        sqlx::pool::PoolOptions::<sqlx::Any>::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap()
    }

    /// Runs `sql` (one statement or several) on the audit from outside,
    /// as an operator's `sqlite3` or `psql` would.
    pub async fn edit(&self, sql: &str) {
        let pool = self.raw_pool().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
    }

    /// One number read from the audit from outside.
    pub async fn number(&self, sql: &str) -> i64 {
        let pool = self.raw_pool().await;
        let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
        n
    }

    /// Every byte the audit holds, as text: the file, or every row of every
    /// table (for "the secret is nowhere in the database").
    pub async fn all_text(&self) -> String {
        match self {
            AuditAt::File(path) => {
                String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
            }
            AuditAt::Postgres(_) => {
                let pool = self.raw_pool().await;
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                let mut all = String::new();
                for table in tables {
                    let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT string_agg(CAST(t AS TEXT), E'\\n' ORDER BY CAST(t AS TEXT)) FROM \"{table}\" AS t"
                    )))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    all.push_str(&rows.unwrap_or_default());
                    all.push('\n');
                }
                // and where each identity stands (a row added and removed
                // moves it on)
                let sequences: Option<String> = sqlx::query_scalar(
                    "SELECT string_agg(sequencename || '=' || COALESCE(CAST(last_value AS TEXT), '-'), ',' ORDER BY sequencename) FROM pg_sequences",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                all.push_str(&sequences.unwrap_or_default());
                pool.close().await;
                all
            }
        }
    }

    /// How the binary is told to read this audit: `--database FILE`, or
    /// `--config` of an offline config naming the database (written in
    /// `dir` as `<database>.toml`; the file flag takes no URL).
    pub fn cli_args(&self, dir: &std::path::Path) -> Vec<std::ffi::OsString> {
        match self {
            AuditAt::File(path) => vec!["--database".into(), path.into()],
            AuditAt::Postgres(url) => {
                let (_, name) = url.rsplit_once('/').unwrap();
                let config = dir.join(format!("{name}.toml"));
                if !config.exists() {
                    self.config_in(&config, false, "");
                }
                vec!["--config".into(), config.into()]
            }
        }
    }

    /// A digest of everything the audit holds: the file's bytes, or every
    /// row of every table.
    pub async fn fingerprint(&self) -> String {
        match self {
            AuditAt::File(path) => sha256_file(path),
            AuditAt::Postgres(_) => sha256_hex(self.all_text().await.as_bytes()),
        }
    }

    /// A copy of the audit as it is now, to edit apart from the original:
    /// the file backed up beside it, or a database made from this one.
    pub async fn copy(&self, name: &str) -> AuditAt {
        match self {
            AuditAt::File(path) => {
                let to = path.with_file_name(format!("{name}.db"));
                sqlite3(path, &format!(".backup '{}'", to.display()));
                AuditAt::File(to)
            }
            AuditAt::Postgres(url) => {
                let (server, db) = url.rsplit_once('/').unwrap();
                let copy = format!("{db}_{name}");
                let admin = sqlx::AnyPool::connect(&format!("{server}/postgres"))
                    .await
                    .unwrap();
                // (a template takes no other session: every pool and
                // process of the test must be done with it)
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE \"{copy}\" TEMPLATE \"{db}\""
                )))
                .execute(&admin)
                .await
                .unwrap_or_else(|e| {
                    panic!("copy of {db}, still in use by a session of the test? {e}")
                });
                admin.close().await;
                AuditAt::Postgres(format!("{server}/{copy}"))
            }
        }
    }

    /// An offline config for this audit (`offline_config`), written at `path`.
    pub fn config_in(&self, path: &std::path::Path, dry_run: bool, more: &str) {
        std::fs::write(
            path,
            format!(
                "[zendesk]\nbase_url = \"http://127.0.0.1:9\"\nemail = \"a@b.c\"\ntoken_env = \"ZD_TEST_TOKEN\"\n\n[audit]\n{}\n\n[safety]\ndry_run = {dry_run}\n{more}",
                self.config_line()
            ),
        )
        .unwrap();
    }

    /// Whether the audit has the table `name`.
    pub async fn has_table(&self, name: &str) -> bool {
        if let AuditAt::File(path) = self
            && !path.exists()
        {
            return false;
        }
        let sql = match self {
            AuditAt::File(_) => format!(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{name}'"
            ),
            AuditAt::Postgres(_) => format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = '{name}'"
            ),
        };
        self.number(&sql).await > 0
    }

    /// Whether anything was written there: the file made, or a table made.
    pub async fn holds_anything(&self) -> bool {
        match self {
            AuditAt::File(path) => path.exists(),
            AuditAt::Postgres(_) => {
                self.number(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .await
                    > 0
            }
        }
    }
}

/// Whether this pass runs against PostgreSQL; a test that concerns the
/// SQLite file alone (its permissions, its copy before an upgrade, a full
/// disk under it) says so and returns early there.
pub fn sqlite_only(why: &str) -> bool {
    if postgres_server().is_some() {
        eprintln!("SQLite only: {why}");
        return true;
    }
    false
}

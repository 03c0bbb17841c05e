//! The performance benchmark: the real binary (`zd-retention once`) against
//! the real sandbox (`zd-retention sandbox`), each its own process, with
//! compressed time. For each scenario it prints, and writes as JSON and
//! Markdown under `target/bench/`: requests per endpoint next to the
//! theoretical minimum, wall time next to the bound that the sandbox's
//! quotas and job delay allow, 429s, retries, peak RSS and CPU seconds of
//! the daemon process, and audit rows written per second.
//!
//!   cargo bench --bench retention              # S1 to S6
//!   cargo bench --bench retention -- S1 S3     # some of them
//!   ZD_BENCH_BEFORE=path/to/older/zd-retention cargo bench --bench retention -- S6
//!                                              # S6 for another build too
//!
//! S1 to S4 are first runs at default settings (no purge_while_scanning).
//! S5 and S6 measure the runs after (the ticket ledger): see `steady.rs`.
//!   cargo bench --bench retention -- --smoke   # CI: small S1, checks request counts only
//!   cargo bench --bench retention -- S7        # a million tickets: see `scale.rs`
//!
//! The smoke run exits non-zero when a request count is off; times are never
//! checked, only printed.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "retention/scale.rs"]
mod scale;
#[path = "retention/steady.rs"]
mod steady;

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

/// Zendesk's documented quotas, per minute.
const LIST: u32 = 10;
const LIST_DEEP: u32 = 5;
const ACCOUNT: u32 = 200;
/// The sandbox's job delay at Zendesk's time.
const JOB_DELAY: Duration = Duration::from_secs(3);

struct Scenario {
    name: &'static str,
    what: &'static str,
    tickets: usize,
    time_scale: f64,
    /// The rules, as TOML.
    rules: &'static str,
    dry_run: bool,
}

fn scenarios(smoke: bool) -> Vec<Scenario> {
    if smoke {
        return vec![Scenario {
            name: "S1-smoke",
            what: "2,000 tickets, about 30% selected by an age rule",
            tickets: 2_000,
            time_scale: 600.0,
            rules: AGE_21D,
            dry_run: false,
        }];
    }
    vec![
        Scenario {
            name: "S1",
            what: "10,000 tickets, about 30% selected by an age rule",
            tickets: 10_000,
            time_scale: 60.0,
            rules: AGE_21D,
            dry_run: false,
        },
        Scenario {
            name: "S2",
            what: "100,000 tickets, about 10% selected by an age rule (early stop)",
            tickets: 100_000,
            time_scale: 60.0,
            rules: AGE_27D,
            dry_run: false,
        },
        Scenario {
            name: "S3",
            what: "100,000 tickets, selected by actor and previous state only (full scan)",
            tickets: 100_000,
            time_scale: 600.0,
            rules: ACTOR_STATE,
            dry_run: false,
        },
        Scenario {
            name: "S4",
            what: "1,000,000 tickets, dry run, full scan",
            tickets: 1_000_000,
            time_scale: 3_000.0,
            rules: ACTOR_STATE,
            dry_run: true,
        },
    ]
}

const AGE_21D: &str =
    "[[rules]]\nname = \"older-than-21-days\"\naction = \"purge\"\nolder_than = \"21d\"\n";
const AGE_27D: &str =
    "[[rules]]\nname = \"older-than-27-days\"\naction = \"purge\"\nolder_than = \"27d\"\n";
const ACTOR_STATE: &str = "[[rules]]\nname = \"automation-closed\"\naction = \"purge\"\nactor_ids = [900001]\nprevious_state = [\"closed\"]\n";

fn free_port() -> u16 {
    // bound then released: the sandbox binds it a moment later
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the sandbox did not start listening on port {port}");
}

fn window_ms(scale: f64) -> f64 {
    60_000.0 / scale
}

/// Where a benchmark's daemon keeps its audit: `dir/audit.db`, or, with
/// `ZD_TEST_POSTGRES` set (`tests/tools/with-postgres cargo bench ...`), a
/// fresh database on that PostgreSQL server.
pub(crate) fn audit_database(dir: &Path) -> String {
    match std::env::var("ZD_TEST_POSTGRES") {
        Ok(server) if !server.is_empty() => {
            let name = format!(
                "bench_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            );
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                use sqlx::Connection as _;
                zd_retention::audit::install_drivers();
                let mut admin = sqlx::AnyConnection::connect(&server).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            });
            let (base, _) = server.rsplit_once('/').unwrap();
            format!("{base}/{name}")
        }
        _ => dir.join("audit.db").display().to_string(),
    }
}

fn write_config(dir: &Path, port: u16, s: &Scenario) -> PathBuf {
    let w = window_ms(s.time_scale);
    let text = format!(
        "[zendesk]\nbase_url = \"http://127.0.0.1:{port}\"\nemail = \"bench@sandbox.example\"\ntoken_env = \"BENCH_TOKEN\"\njob_poll_interval = \"{poll}ms\"\nrequest_timeout = \"30s\"\n\
         [zendesk.rate_limits]\nlist = \"{LIST}/{w}ms\"\nlist_deep = \"{LIST_DEEP}/{w}ms\"\naccount = \"{ACCOUNT}/{w}ms\"\nmax_jobs_in_flight = 10\n\
         [audit]\ndatabase = \"{db}\"\n[safety]\ndry_run = {dry}\nmax_purges_per_run = 1000000\n{rules}",
        w = w.round() as u64,
        poll = ((JOB_DELAY.as_millis() as f64 / s.time_scale) / 2.0)
            .max(5.0)
            .round() as u64,
        db = audit_database(dir),
        dry = s.dry_run,
        rules = s.rules,
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Waits for a child and reads its resource usage: (exit code, peak RSS in
/// KiB, CPU seconds).
fn wait_with_rusage(child: &Child) -> (i32, i64, f64) {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own child's, not yet waited for
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4 failed");
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        code,
        usage.ru_maxrss,
        cpu(usage.ru_utime) + cpu(usage.ru_stime),
    )
}

/// The earliest the L-th list request can be sent when each window's quota
/// is spent at its start: pages 1-100 at LIST per window, beyond at
/// LIST_DEEP (which also count against LIST).
fn list_windows(pages: u64) -> f64 {
    if pages == 0 {
        return 0.0;
    }
    let shallow = pages.min(100);
    let mut windows = (shallow - 1) / u64::from(LIST);
    if pages > 100 {
        let deep = pages - 100;
        // the first deep page opens a new window
        windows += 1 + (deep - 1) / u64::from(LIST_DEEP);
    }
    windows as f64
}

fn run(s: &Scenario) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    eprintln!("{}: {} (time scale {}x)", s.name, s.what, s.time_scale);
    let mut sandbox = Command::new(BIN)
        .args([
            "sandbox",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tickets",
            &s.tickets.to_string(),
            "--seed",
            "42",
        ])
        .args([
            "--time-scale",
            &s.time_scale.to_string(),
            "--job-delay",
            &humantime::format_duration(JOB_DELAY).to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let config = write_config(dir.path(), port, s);
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(["once", "--format", "json", "--config"])
        .arg(&config)
        .env("BENCH_TOKEN", "bench-token")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = child;
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let (code, rss_kib, cpu) = wait_with_rusage(&child);
    let wall = started.elapsed().as_secs_f64();
    // SAFETY: sending SIGINT to our own child
    unsafe { libc::kill(sandbox.id() as i32, libc::SIGINT) };
    let mut sandbox_log = String::new();
    sandbox
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut sandbox_log)
        .unwrap();
    let _ = sandbox.wait();
    assert_eq!(code, 0, "{}: zd-retention once failed:\n{out}", s.name);
    let report: Value = serde_json::from_str(&out).expect("once --format json prints the report");

    let counts = &report["counts"];
    let scanned = counts["scanned"].as_u64().unwrap();
    let matched = counts["matched"].as_u64().unwrap();
    let early = counts["early_stop"].as_bool().unwrap();
    let sent = |endpoint: &str| -> u64 {
        report["requests"]["requests"][endpoint]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    };
    // Listing requests made for safety (the order proof, the freshness reads
    // just before purging, the settle read) are counted apart: the scan's
    // own pages are held to their minimum.
    let safety = &report["safety_list_requests"];
    let safety_list = ["order_proof", "freshness", "settle"]
        .iter()
        .map(|k| safety[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    let list = sent("list") - safety_list;
    // The scan must read every page up to the first ticket too young to
    // purge (early stop) or every page (full scan).
    let list_min = if early {
        scanned / 100 + 1
    } else {
        (scanned as f64 / 100.0).ceil().max(1.0) as u64
    };
    let destroys = sent("destroy_many");
    let destroy_min = if s.dry_run { 0 } else { matched.div_ceil(100) };
    let polls = sent("job_statuses");
    let w = window_ms(s.time_scale) / 1000.0;
    let job_delay = JOB_DELAY.as_secs_f64() / s.time_scale;
    let purge_windows = (destroy_min.saturating_sub(1)) as f64 / f64::from(ACCOUNT);
    let bound =
        list_windows(list_min).max(purge_windows) * w + if s.dry_run { 0.0 } else { job_delay };
    // the same bound with the safety reads this run had to make (each can
    // cost a whole list window)
    let bound_safe = list_windows(list_min + safety_list).max(purge_windows) * w
        + if s.dry_run { 0.0 } else { job_delay };
    let rate_limited = report["requests"]["rate_limited"].as_u64().unwrap_or(0);
    let retries = report["requests"]["retries"].as_u64().unwrap_or(0);
    let audit_rows = scanned + 2 * matched; // decisions, plus a job row share and an outcome per purged ticket
    let result = json!({
        "scenario": s.name,
        "what": s.what,
        "tickets": s.tickets,
        "time_scale": s.time_scale,
        "scanned": scanned,
        "matched": matched,
        "purged": counts["purged"],
        "early_stop": early,
        "list_requests": list, "list_min": list_min,
        "safety_list_requests": safety_list,
        "lookup_requests": sent("tickets_show_many"),
        "destroy_many_requests": destroys, "destroy_many_min": destroy_min,
        "job_status_requests": polls,
        "wall_s": (wall * 1000.0).round() / 1000.0,
        "bound_s": (bound * 1000.0).round() / 1000.0,
        "ratio": ((wall / bound.max(1e-9)) * 1000.0).round() / 1000.0,
        "bound_with_safety_s": (bound_safe * 1000.0).round() / 1000.0,
        "ratio_with_safety": ((wall / bound_safe.max(1e-9)) * 1000.0).round() / 1000.0,
        "rate_limited_429": rate_limited,
        "retries": retries,
        "peak_rss_mib": ((rss_kib as f64 / 1024.0) * 10.0).round() / 10.0,
        "cpu_s": (cpu * 1000.0).round() / 1000.0,
        "cpu_s_per_100k_scanned": ((cpu / (scanned.max(1) as f64 / 100_000.0)) * 1000.0).round() / 1000.0,
        "audit_rows_per_s": (audit_rows as f64 / wall).round(),
        "sandbox_log": sandbox_log.lines().filter(|l| l.starts_with("  ")).map(str::trim).collect::<Vec<_>>(),
    });
    eprintln!("  {}", result);
    result
}

fn markdown(results: &[Value]) -> String {
    let mut md = String::from(
        "| scenario | scanned | matched | list req (min) | safety list req | destroy_many (min) | lookups | show_many | wall s | bound s | ratio | ratio with safety reads | 429s | retries | peak RSS MiB | CPU s | CPU s / 100k | audit rows/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        md.push_str(&format!(
            "| {} | {} | {} | {} ({}) | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["scenario"].as_str().unwrap(),
            r["scanned"], r["matched"], r["list_requests"], r["list_min"], r["safety_list_requests"], r["destroy_many_requests"], r["destroy_many_min"], r["lookup_requests"],
            r["job_status_requests"], r["wall_s"], r["bound_s"], r["ratio"], r["ratio_with_safety"], r["rate_limited_429"], r["retries"],
            r["peak_rss_mib"], r["cpu_s"], r["cpu_s_per_100k_scanned"], r["audit_rows_per_s"],
        ));
    }
    md
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let wanted: Vec<&String> = args.iter().filter(|a| a.starts_with('S')).collect();
    let chosen: Vec<Scenario> = scenarios(smoke)
        .into_iter()
        .filter(|s| wanted.is_empty() || wanted.iter().any(|w| s.name == w.as_str()))
        .collect();
    let results: Vec<Value> = chosen.iter().map(run).collect();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let want = |name: &str| !smoke && (wanted.is_empty() || wanted.iter().any(|w| *w == name));
    let mut steady_results = Vec::new();
    if want("S5") {
        steady_results.push(steady::s5());
    }
    if want("S6") {
        steady_results.push(steady::s6(Path::new(BIN), true));
        if let Some(before) = std::env::var_os("ZD_BENCH_BEFORE") {
            steady_results.push(steady::s6(Path::new(&before), false));
        }
    }
    if wanted.iter().any(|w| *w == "S7") && !smoke {
        // at scale: only when asked for by name (a million tickets)
        steady_results.push(scale::s7());
    }
    if !steady_results.is_empty() {
        let text = serde_json::to_string_pretty(&steady_results).unwrap();
        std::fs::write(out.join("steady.json"), &text).unwrap();
        println!("\n{text}\nwritten to {}/steady.json", out.display());
    }
    let md = markdown(&results);
    let stem = if smoke { "smoke" } else { "results" };
    if !results.is_empty() {
        std::fs::write(
            out.join(format!("{stem}.json")),
            serde_json::to_string_pretty(&results).unwrap(),
        )
        .unwrap();
        std::fs::write(out.join(format!("{stem}.md")), &md).unwrap();
        println!("\n{md}");
        println!("written to {}/{stem}.json and {stem}.md", out.display());
    }
    if smoke {
        // Request counts are deterministic: check them, never the times.
        let mut ok = true;
        for r in &results {
            let list_ok = r["list_requests"].as_u64() <= r["list_min"].as_u64().map(|m| m + 1);
            // one proof (and its second page), and per round of up to ten
            // batches a freshness read before and a read after; no settle read
            let safety_bound = 2 + 2 * r["destroy_many_min"].as_u64().unwrap_or(0).div_ceil(10);
            let safety_ok = r["safety_list_requests"].as_u64() <= Some(safety_bound);
            let destroy_ok = r["destroy_many_requests"] == r["destroy_many_min"];
            let no_429 = r["rate_limited_429"] == 0;
            if !(list_ok && safety_ok && destroy_ok && no_429) {
                eprintln!(
                    "smoke check failed for {}: list {} (min {}), safety list {} (at most {safety_bound}), destroy_many {} (min {}), 429s {}",
                    r["scenario"],
                    r["list_requests"],
                    r["list_min"],
                    r["safety_list_requests"],
                    r["destroy_many_requests"],
                    r["destroy_many_min"],
                    r["rate_limited_429"]
                );
                ok = false;
            }
        }
        if !ok {
            std::process::exit(1);
        }
        println!("smoke check: request counts at their minimum, no 429");
    }
}

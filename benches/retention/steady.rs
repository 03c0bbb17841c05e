//! S5 and S6: runs after the first, with the ticket ledger. The sandbox
//! runs in this process (so the bench can delete, restore and delete again
//! between runs), `zd-retention once` as a child process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use zd_retention::sandbox::{Sandbox, SandboxOptions, SandboxTicket, generate_tickets};

use super::{ACCOUNT, BIN, JOB_DELAY, LIST, LIST_DEEP};

/// Purges the automation's deletions in three states: about one ticket in
/// ten of the generated ones. Every other ticket is kept.
const KEEP_90: &str = "[[rules]]\nname = \"automation-three-states\"\naction = \"purge\"\nactor_ids = [900001]\nprevious_state = [\"closed\", \"solved\", \"pending\"]\n";
pub(super) const AUTOMATION: u64 = 900001;

fn selects(t: &SandboxTicket, now: DateTime<Utc>, min_age: chrono::Duration) -> bool {
    t.actor_id == AUTOMATION
        && matches!(t.previous_state.as_str(), "closed" | "solved" | "pending")
        && now - t.deleted_at >= min_age
}

pub(super) struct Bench {
    dir: tempfile::TempDir,
    pub(super) sandbox: Sandbox,
    runtime: tokio::runtime::Runtime,
    pub(super) config: PathBuf,
    /// The audit: an SQLite file's path or a PostgreSQL URL.
    db: String,
}

impl Bench {
    pub(super) fn start(
        tickets: Vec<SandboxTicket>,
        scale: f64,
        extra: &str,
        bin_understands_ledger: bool,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let options = SandboxOptions {
            time_scale: scale,
            job_delay: JOB_DELAY,
            ..SandboxOptions::default()
        };
        let sandbox = runtime
            .block_on(Sandbox::start_with(
                options,
                tickets,
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let w = (60_000.0 / scale).round() as u64;
        let db = super::audit_database(dir.path());
        let ledger_keys = if bin_understands_ledger {
            // sandbox and daemon share this host's clock: no skew to allow for
            "clock_skew = \"1s\"\n"
        } else {
            ""
        };
        let text = format!(
            "[zendesk]\nbase_url = \"{url}\"\nemail = \"bench@sandbox.example\"\ntoken_env = \"BENCH_TOKEN\"\njob_poll_interval = \"{poll}ms\"\nrequest_timeout = \"30s\"\n{ledger_keys}\
             [zendesk.rate_limits]\nlist = \"{LIST}/{w}ms\"\nlist_deep = \"{LIST_DEEP}/{w}ms\"\naccount = \"{ACCOUNT}/{w}ms\"\nmax_jobs_in_flight = 10\n\
             [audit]\ndatabase = \"{db}\"\n[safety]\ndry_run = false\nmin_age = \"1s\"\nmax_purges_per_run = 1000000\n{extra}{KEEP_90}",
            url = sandbox.base_url(),
            poll = ((JOB_DELAY.as_millis() as f64 / scale) / 2.0)
                .max(5.0)
                .round() as u64,
            db = db,
        );
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        Bench {
            dir,
            sandbox,
            runtime,
            config,
            db,
        }
    }

    fn once(&self, bin: &Path) -> (Value, f64) {
        let started = Instant::now();
        let out = Command::new(bin)
            .args(["once", "--format", "json", "--config"])
            .arg(&self.config)
            .env("BENCH_TOKEN", "bench-token")
            .env("RUST_LOG", "error")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "zd-retention once failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (serde_json::from_slice(&out.stdout).unwrap(), wall)
    }

    pub(super) fn db_bytes(&self) -> u64 {
        if self.db.starts_with("postgres") {
            return self.query_i64s("SELECT CAST(pg_database_size(current_database()) AS BIGINT)")[0]
                as u64;
        }
        ["audit.db", "audit.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.path().join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Rows of the audit's history: decisions, outcomes, jobs, chain entries.
    pub(super) fn audit_rows(&self) -> i64 {
        self.query_i64s(
            "SELECT (SELECT COUNT(*) FROM decisions) + (SELECT COUNT(*) FROM outcomes) + (SELECT COUNT(*) FROM jobs) + (SELECT COUNT(*) FROM audit_chain)",
        )[0]
    }
}

impl Bench {
    /// Copies the audit database (and its WAL) to `to`.
    pub(super) fn keep_database(&self, to: &Path) {
        for (from, suffix) in [("audit.db", ""), ("audit.db-wal", "-wal")] {
            let from = self.dir.path().join(from);
            if from.exists() {
                let mut target = to.as_os_str().to_owned();
                target.push(suffix);
                std::fs::copy(&from, &target).unwrap();
            }
        }
    }

    /// A column of integers from the audit database (read-only).
    pub(super) fn query_i64s(&self, sql: &str) -> Vec<i64> {
        let url = if self.db.starts_with("postgres") {
            self.db.clone()
        } else {
            format!("sqlite://{}?mode=ro", self.db)
        };
        self.runtime.block_on(async {
            zd_retention::audit::install_drivers();
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            let v: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_all(&pool)
                .await
                .unwrap();
            pool.close().await;
            v
        })
    }
}

fn list_requests(report: &Value) -> u64 {
    report["requests"]["requests"]["list"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// S5: 30,000 tickets, rules that keep 90%. Run 1 as a first run is; then
/// 500 new deletions, 50 restores and 20 deletions again; run 2 must make
/// at most ceil(520/100) + 2 listing requests and purge exactly what an
/// independent computation selects.
pub fn s5() -> Value {
    eprintln!(
        "S5: 30,000 tickets, 90% kept; then 500 new deletions, 50 restores, 20 deletions again"
    );
    let scale = 600.0;
    let t0 = Utc::now();
    let tickets = generate_tickets(30_000, 42, t0);
    let bench = Bench::start(tickets.clone(), scale, "", true);
    let bin = PathBuf::from(BIN);
    let run1_started = Utc::now();
    let (first, first_wall) = bench.once(&bin);

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let max_id = tickets.iter().map(|t| t.id).max().unwrap();
    let now = Utc::now();
    let since = (now - run1_started).num_milliseconds().max(1);
    let states = ["new", "open", "pending", "hold", "solved", "closed"];
    let fresh: Vec<SandboxTicket> = (0..500u64)
        .map(|i| {
            let automation = rng.random_bool(0.2);
            SandboxTicket {
                id: max_id + 1 + i,
                subject: Some(format!("New deletion {i}")),
                actor_id: if automation { AUTOMATION } else { 1001 },
                actor_name: if automation {
                    "Automation".into()
                } else {
                    "Ada Agent".into()
                },
                // deleted between the two runs
                deleted_at: run1_started
                    + chrono::Duration::milliseconds(rng.random_range(0..since)),
                previous_state: states[rng.random_range(0..states.len())].into(),
            }
        })
        .collect();
    bench.sandbox.insert(fresh);
    let deleted = bench.sandbox.deleted_ids();
    let kept: Vec<u64> = tickets
        .iter()
        .filter(|t| !selects(t, now, chrono::Duration::seconds(1)) && deleted.contains(&t.id))
        .map(|t| t.id)
        .collect();
    let mut restored = Vec::new();
    for _ in 0..50 {
        let id = kept[rng.random_range(0..kept.len())];
        if bench.sandbox.agent_restore(id) {
            restored.push(id);
        }
    }
    // 20 deleted again, by the automation: their new deletion is selected
    let mut again = Vec::new();
    while again.len() < 20 {
        let id = kept[rng.random_range(0..kept.len())];
        if !restored.contains(&id) && !again.contains(&id) && bench.sandbox.agent_restore(id) {
            bench.sandbox.state().agent_delete_again(
                id,
                Utc::now(),
                Some((AUTOMATION, "Automation".into())),
            );
            again.push(id);
        }
    }
    std::thread::sleep(Duration::from_millis(1100)); // past min_age = 1s
    // the independent computation: what the rules select in the view now
    let view = bench.sandbox.deleted_ids();
    let now = Utc::now();
    let want: std::collections::BTreeSet<u64> = bench
        .sandbox
        .tickets()
        .into_iter()
        .filter(|t| view.contains(&t.id) && selects(t, now, chrono::Duration::seconds(1)))
        .map(|t| t.id)
        .collect();
    let purged_before: std::collections::BTreeSet<u64> =
        bench.sandbox.purged_ids().into_iter().collect();
    let rows_before = bench.audit_rows();
    let (second, second_wall) = bench.once(&bin);
    let purged_after: std::collections::BTreeSet<u64> =
        bench.sandbox.purged_ids().into_iter().collect();
    let purged_now: std::collections::BTreeSet<u64> =
        purged_after.difference(&purged_before).copied().collect();
    let list2 = list_requests(&second);
    let budget = 520u64.div_ceil(100) + 2;
    let exact = purged_now == want;
    let result = json!({
        "scenario": "S5",
        "run1": {
            "step": first["step"], "scanned": first["counts"]["scanned"], "list_requests": list_requests(&first),
            "purged": first["counts"]["purged"], "decisions_recorded": first["decisions_recorded"], "wall_s": round(first_wall),
        },
        "run2": {
            "step": second["step"], "scanned": second["counts"]["scanned"], "list_requests": list2,
            "list_budget": budget, "decided_from_ledger": second["decided_from_ledger"],
            "decisions_recorded": second["decisions_recorded"], "purged": second["counts"]["purged"],
            "selected_independently": want.len(), "exactly_the_selection": exact,
            "restored_left_out": restored.iter().all(|id| !purged_after.contains(id)),
            "audit_rows_added": bench.audit_rows() - rows_before, "wall_s": round(second_wall),
            "safety_list_requests": second["safety_list_requests"],
        },
    });
    eprintln!("  {result}");
    assert!(
        exact,
        "S5: run 2 purged {purged_now:?}, the rules select {want:?}"
    );
    assert!(
        list2 <= budget,
        "S5: run 2 made {list2} list requests, the budget is {budget}"
    );
    result
}

/// S6: a day of a 15-minute schedule. 10,000 tickets, 96 runs, 1,000 new
/// deletions spread over them; the audit database's growth is measured
/// after the first run (the initial load). `bin` may be another build (the
/// code before the ledger, for comparison: `ZD_BENCH_BEFORE=path`).
pub fn s6(bin: &Path, ledger: bool) -> Value {
    eprintln!(
        "S6: 10,000 tickets, 96 runs with 1,000 new deletions ({})",
        bin.display()
    );
    let scale = 600.0;
    let tickets = generate_tickets(10_000, 43, Utc::now());
    let bench = Bench::start(tickets.clone(), scale, "", ledger);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut next_id = tickets.iter().map(|t| t.id).max().unwrap() + 1;
    let (first, _) = bench.once(bin);
    let base_bytes = bench.db_bytes();
    let base_rows = bench.audit_rows();
    let mut rows_per_run = Vec::new();
    let mut lists = 0;
    let started = Instant::now();
    for run in 1..96u64 {
        // 1,000 over 95 runs: 10 or 11 each
        let n = 1000 * (run + 1) / 96 - 1000 * run / 96;
        bench
            .sandbox
            .insert(new_deletions(&mut rng, &mut next_id, n, 500));
        std::thread::sleep(Duration::from_millis(1000));
        let before = bench.audit_rows();
        let (report, _) = bench.once(bin);
        lists += list_requests(&report);
        rows_per_run.push(bench.audit_rows() - before);
    }
    let bytes = bench.db_bytes() - base_bytes;
    let rows = bench.audit_rows() - base_rows;
    let mean = rows as f64 / 95.0;
    let result = json!({
        "scenario": if ledger { "S6" } else { "S6-before-ledger" },
        "first_run": { "scanned": first["counts"]["scanned"], "purged": first["counts"]["purged"] },
        "bytes_per_day": bytes,
        "mib_per_day": round(bytes as f64 / 1048576.0),
        "audit_rows_per_day": rows,
        "audit_rows_per_run_mean": round(mean),
        "audit_rows_per_run_max": rows_per_run.iter().max(),
        "list_requests_per_run_mean": round(lists as f64 / 95.0),
        "wall_s": round(started.elapsed().as_secs_f64()),
    });
    eprintln!("  {result}");
    result
}

/// `n` new deletions, one in five by the automation, deleted within the
/// last `spread_ms` milliseconds, with ids after `next_id`.
pub(super) fn new_deletions(
    rng: &mut rand::rngs::StdRng,
    next_id: &mut u64,
    n: u64,
    spread_ms: i64,
) -> Vec<SandboxTicket> {
    let at = Utc::now();
    (0..n)
        .map(|_| {
            let automation = rng.random_bool(0.2);
            *next_id += 1;
            SandboxTicket {
                id: *next_id,
                subject: None,
                actor_id: if automation { AUTOMATION } else { 1001 },
                actor_name: "Someone".into(),
                deleted_at: at - chrono::Duration::milliseconds(rng.random_range(0..spread_ms)),
                previous_state: "closed".into(),
            }
        })
        .collect()
}

pub(super) fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

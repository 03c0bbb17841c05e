//! S7: the largest accounts. A million tickets (`ZD_BENCH_S7_TICKETS` to
//! change it) at compressed time with Zendesk's real quota ratios: a whole
//! walk into the ledger, then a day of 15-minute refreshes (96 runs) with
//! about 570 changes each (500 new deletions, 50 restores, 20 deletions
//! again), and the whole-view check due mid-day. Each run is the real
//! binary, measured by wait4: peak RSS and CPU per run. Printed: list
//! requests per refresh against ceil(changes/100)+2, the check's pages and
//! its share of the listing requests, purge latency p50/p95/max (from the
//! audit's `purge_latency`), the audit's growth over the day.
//!
//!   cargo bench --bench retention -- S7
//!   ZD_BENCH_S7_TICKETS=100000 ZD_BENCH_S7_RUNS=20 cargo bench --bench retention -- S7

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use zd_retention::sandbox::generate_tickets;

use super::BIN;
use super::steady::{AUTOMATION, Bench, new_deletions, round};

/// At 450x, Zendesk's 15 minutes are 2 s: the cron below.
const SCALE: f64 = 450.0;
const INTERVAL: Duration = Duration::from_secs(2);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One `once` run, measured by `/usr/bin/time` (wait4 from this process
/// would count the RSS this process had when it forked, the in-process
/// sandbox's): its report, wall seconds, peak RSS MiB, CPU s.
fn measured(bench: &Bench) -> (Value, f64, f64, f64) {
    let timing = bench.config.with_extension("time");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M %U %S", "-o"])
        .arg(&timing)
        .arg(BIN)
        .args(["once", "--format", "json", "--config"])
        .arg(&bench.config)
        .env("BENCH_TOKEN", "bench-token")
        .env("RUST_LOG", "error")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "zd-retention once failed: {text}");
    let figures: Vec<f64> = std::fs::read_to_string(&timing)
        .unwrap()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let (rss_kib, cpu) = match figures[..] {
        [rss, user, sys] => (rss, user + sys),
        _ => (0.0, 0.0),
    };
    (
        serde_json::from_str(&text).unwrap(),
        wall,
        rss_kib / 1024.0,
        cpu,
    )
}

fn list_requests(report: &Value) -> u64 {
    report["requests"]["requests"]["list"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// The churn between two runs: new deletions, restores, deletions again.
fn churn(bench: &Bench, rng: &mut rand::rngs::StdRng, next_id: &mut u64, kept: &[u64]) -> u64 {
    bench.sandbox.insert(new_deletions(rng, next_id, 500, 1500));
    let mut changes = 500;
    for i in 0..70 {
        let id = kept[rng.random_range(0..kept.len())];
        if !bench.sandbox.agent_restore(id) {
            continue;
        }
        changes += 1;
        if i >= 50 {
            bench.sandbox.state().agent_delete_again(
                id,
                Utc::now(),
                Some((AUTOMATION, "Automation".into())),
            );
        }
    }
    changes
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn s7() -> Value {
    let n = env_u64("ZD_BENCH_S7_TICKETS", 1_000_000) as usize;
    let runs = env_u64("ZD_BENCH_S7_RUNS", 96);
    eprintln!(
        "S7: {n} tickets, a whole walk, then {runs} refreshes of a 15-minute schedule with about 570 changes each; the whole-view check due half-way (time scale {SCALE}x)"
    );
    let tickets = generate_tickets(n, 47, Utc::now());
    let kept: Vec<u64> = tickets
        .iter()
        .filter(|t| t.actor_id != AUTOMATION)
        .map(|t| t.id)
        .collect();
    let schedule = |reconcile: &str| {
        format!(
            "[schedule]\ncron = \"*/{} * * * * *\"\nreconcile = \"{reconcile}\"\ncheck_share = 0.5\n",
            INTERVAL.as_secs()
        )
    };
    let bench = Bench::start(tickets, SCALE, &schedule("24h"), true);
    // Zendesk's two minutes of clock_skew, at this time scale
    let base = std::fs::read_to_string(&bench.config).unwrap().replace(
        "clock_skew = \"1s\"",
        &format!("clock_skew = \"{}ms\"", (120_000.0 / SCALE) as u64),
    );
    std::fs::write(&bench.config, &base).unwrap();
    let (walk, walk_wall, walk_rss, walk_cpu) = measured(&bench);
    eprintln!(
        "  whole walk: {} listed, {} list requests, {:.1} s, peak RSS {walk_rss:.1} MiB, CPU {walk_cpu:.1} s",
        walk["counts"]["scanned"],
        list_requests(&walk),
        walk_wall
    );
    let bytes_after_walk = bench.db_bytes();
    let rows_after_walk = bench.audit_rows();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut next_id = 50_000_000u64;
    let mut per_run = Vec::new();
    let (mut over_budget, mut check_pages, mut all_lists) = (0u64, 0u64, 0u64);
    let mut check_finished_at = None;
    let started = Instant::now();
    for run in 0..runs {
        if run == runs / 2 {
            // the check falls due: `reconcile` shorter than the time since the walk
            let text = base.replace(&schedule("24h"), &schedule("1s"));
            std::fs::write(&bench.config, text).unwrap();
        }
        let changes = churn(&bench, &mut rng, &mut next_id, &kept);
        let tick = Instant::now();
        std::thread::sleep(INTERVAL.saturating_sub(tick.elapsed()));
        let (report, wall, rss, cpu) = measured(&bench);
        let lists = list_requests(&report);
        let pages = report["check"]["pages"].as_u64().unwrap_or(0);
        let settle = report["safety_list_requests"]["settle"]
            .as_u64()
            .unwrap_or(0);
        let refresh_lists = lists - pages - settle;
        let freshness = report["safety_list_requests"]["freshness"]
            .as_u64()
            .unwrap_or(0);
        let budget = changes.div_ceil(100) + 2;
        // the refresh's own listing: its pages and order proof
        if refresh_lists - freshness > budget {
            over_budget += 1;
        }
        check_pages += pages;
        all_lists += lists;
        if report["check"]["finished"].as_bool() == Some(true) && check_finished_at.is_none() {
            check_finished_at = Some(run);
        }
        per_run.push(json!({
            "run": run + 1, "changes": changes, "wall_s": round(wall), "peak_rss_mib": round(rss), "cpu_s": round(cpu),
            "list_requests": lists, "refresh_list_requests": refresh_lists - freshness, "freshness_reads": freshness,
            "budget": budget, "check_pages": pages, "settle_reads": settle,
            "purged": report["counts"]["purged"], "decided_from_ledger": report["decided_from_ledger"],
            "latency": report["latency"], "status": report["status"],
            "check_stopped": report["check"]["stopped"],
            "requests": report["requests"],
        }));
        if run % 8 == 0 || pages > 0 && run % 4 == 0 {
            eprintln!("  run {}: {}", run + 1, per_run.last().unwrap());
        }
    }
    let day_wall = started.elapsed().as_secs_f64();
    let mut rss: Vec<f64> = per_run
        .iter()
        .filter_map(|r| r["peak_rss_mib"].as_f64())
        .collect();
    let mut cpu: Vec<f64> = per_run.iter().filter_map(|r| r["cpu_s"].as_f64()).collect();
    rss.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let latency = latencies(&bench, walk["run_id"].as_i64().unwrap_or(1));
    let refresh_lists: Vec<u64> = per_run
        .iter()
        .filter_map(|r| r["refresh_list_requests"].as_u64())
        .collect();
    let result = json!({
        "scenario": "S7",
        "tickets": n,
        "whole_walk": {
            "listed": walk["counts"]["scanned"], "list_requests": list_requests(&walk),
            "wall_s": round(walk_wall), "peak_rss_mib": round(walk_rss), "cpu_s": round(walk_cpu),
        },
        "refreshes": runs,
        "peak_rss_mib_max": rss.last(), "peak_rss_mib_p50": percentile(&rss, 0.5),
        "cpu_s_per_run_p50": percentile(&cpu, 0.5), "cpu_s_per_run_max": cpu.last(),
        "refresh_list_requests_max": refresh_lists.iter().max(),
        "refresh_list_requests_mean": round(refresh_lists.iter().sum::<u64>() as f64 / runs.max(1) as f64),
        "refreshes_over_budget": over_budget,
        "check": {
            "pages_walked": check_pages,
            "share_of_list_requests_in_the_second_half": round(check_pages as f64 / per_run[(runs / 2) as usize..].iter().filter_map(|r| r["list_requests"].as_u64()).sum::<u64>().max(1) as f64),
            "finished_at_run": check_finished_at.map(|r| r + 1),
            "pages_per_run": round(check_pages as f64 / (runs - runs / 2).max(1) as f64),
            // the listing quota of one interval: 10 a minute over 15 minutes
            "share_of_the_listing_quota": round(check_pages as f64 / (runs - runs / 2).max(1) as f64 / 150.0),
        },
        "list_requests_day": all_lists,
        "latency_s": latency,
        "audit_growth_per_day_mib": round((bench.db_bytes() - bytes_after_walk) as f64 / 1048576.0 * 96.0 / runs.max(1) as f64),
        "audit_rows_per_day": (bench.audit_rows() - rows_after_walk) * 96 / runs.max(1) as i64,
        "day_wall_s": round(day_wall),
        "runs": per_run,
    });
    eprintln!(
        "  {}",
        json!({"S7": result.as_object().unwrap().iter().filter(|(k, _)| *k != "runs").map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>()})
    );
    if let Some(keep) = std::env::var_os("ZD_BENCH_S7_KEEP") {
        // the audit database, for measuring the audit commands at this size
        bench.keep_database(std::path::Path::new(&keep));
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("s7.json"),
        serde_json::to_string_pretty(&result).unwrap(),
    )
    .unwrap();
    result
}

/// Purge latency over the day (the whole walk's backlog left out), from the
/// audit: p50, p95, max in seconds.
fn latencies(bench: &Bench, walk_run: i64) -> Value {
    let ms = bench.query_i64s(&format!(
        "SELECT latency_ms FROM purge_latency WHERE job_id IN (SELECT id FROM jobs WHERE run_id > {walk_run}) ORDER BY latency_ms"
    ));
    let s: Vec<f64> = ms.iter().map(|m| *m as f64 / 1000.0).collect();
    json!({
        "tickets": s.len(),
        "p50": percentile(&s, 0.5), "p95": percentile(&s, 0.95), "max": s.last(),
        "interval_s": INTERVAL.as_secs(),
    })
}

//! The operations kit in `deploy/` names only metrics the daemon serves: an
//! in-process daemon runs against the sandbox until every family the Grafana
//! dashboard and the Prometheus rules name has shown on its `/metrics`.
//!
//! The exporter renders a family (its `# TYPE` line and samples) only once
//! the code has touched it, and several only on an event: a failed purge
//! job, a 429, a retry, a wait on the pacer. So the sandbox first fails
//! every purge job and answers a share of listings 429, then the faults
//! stop and a run completes (purged tickets, the last success); the listing
//! quota is tight (2 a second) so that the pacer waits within a run's
//! first pages.
//!
//! Like the engine's daemon test this installs the process's metrics
//! recorder, so it needs a process of its own (nextest runs each test alone).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use zd_retention::sandbox::{Faults, SandboxOptions};

use crate::helpers::{clear_tickets, fast_sandbox_options, sandbox_with};

/// Every metric of ours starts so.
const PREFIX: &str = "zd_retention_";

/// The files of the kit whose queries name metrics, from the crate's root.
const KIT: &[&str] = &[
    "deploy/grafana/zd-retention.json",
    "deploy/prometheus/alerts.yml",
    "deploy/prometheus/alerts_test.yml",
    "deploy/kubernetes/monitoring/prometheusrule.yaml",
];

/// The families that show only after a fault: the sandbox keeps failing
/// jobs and answering 429 until each has shown.
const AFTER_FAULTS: &[&str] = &[
    "zd_retention_tickets_failed_total",
    "zd_retention_rate_limited_total",
    "zd_retention_retries_total",
];

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The metric names a text mentions: each `zd_retention_` token with the
/// letters, digits and underscores after it. A token inside a longer
/// identifier (`my_zd_retention_x`) is not one of ours and is skipped.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(PREFIX) {
        let start = from + found;
        let mut end = start + PREFIX.len();
        while end < bytes.len() && is_name_byte(bytes[end]) {
            end += 1;
        }
        if start == 0 || !is_name_byte(bytes[start - 1]) {
            names.insert(text[start..end].to_string());
        }
        from = end;
    }
    names
}

/// The names a Prometheus text exposition serves: the families of its
/// `# TYPE` lines and the names of its samples (a histogram's `_bucket`,
/// `_sum` and `_count` among them).
fn served_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines().map(str::trim) {
        let name = if let Some(rest) = line.strip_prefix("# TYPE ") {
            rest.split_whitespace().next()
        } else if line.is_empty() || line.starts_with('#') {
            None
        } else {
            line.split(|c: char| c == '{' || c.is_whitespace()).next()
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            names.insert(name.to_string());
        }
    }
    names
}

/// The names mentioned and not served, in order.
fn unserved(named: &BTreeSet<String>, served: &BTreeSet<String>) -> Vec<String> {
    named.difference(served).cloned().collect()
}

/// Every metric name the kit's files mention.
fn kit_names() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = BTreeSet::new();
    for file in KIT {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let found = metric_names(&text);
        assert!(
            !found.is_empty(),
            "{file} names no metric: it moved, or the scan is broken"
        );
        names.extend(found);
    }
    names
}

#[test]
fn the_name_scan_catches_a_metric_that_is_not_served() {
    let exposition = "# TYPE zd_retention_runs_total counter\n\
                      zd_retention_runs_total{status=\"completed\"} 3\n\
                      \n\
                      # TYPE zd_retention_run_duration_seconds histogram\n\
                      zd_retention_run_duration_seconds_bucket{le=\"1\"} 0\n\
                      zd_retention_run_duration_seconds_bucket{le=\"+Inf\"} 1\n\
                      zd_retention_run_duration_seconds_sum 1.5\n\
                      zd_retention_run_duration_seconds_count 1\n";
    let served = served_names(exposition);
    let expected: BTreeSet<String> = [
        "zd_retention_runs_total",
        "zd_retention_run_duration_seconds",
        "zd_retention_run_duration_seconds_bucket",
        "zd_retention_run_duration_seconds_sum",
        "zd_retention_run_duration_seconds_count",
    ]
    .iter()
    .map(|n| n.to_string())
    .collect();
    assert_eq!(served, expected);

    let query = "sum by (status) (increase(zd_retention_runs_total{status=\"failed\"}[1h]))\n\
                 / histogram_quantile(0.9, rate(zd_retention_run_duration_seconds_bucket[1h]))\n\
                 + zd_retention_runs_failed_total + my_zd_retention_thing";
    let named = metric_names(query);
    let expected: BTreeSet<String> = [
        "zd_retention_runs_total",
        "zd_retention_run_duration_seconds_bucket",
        "zd_retention_runs_failed_total",
    ]
    .iter()
    .map(|n| n.to_string())
    .collect();
    assert_eq!(named, expected);
    assert_eq!(
        unserved(&named, &served),
        vec!["zd_retention_runs_failed_total".to_string()]
    );

    // the prefix alone, or a name in capitals, is no metric we serve
    assert_eq!(
        unserved(
            &metric_names("zd_retention_ and zd_retention_Runs"),
            &served
        ),
        vec![PREFIX.to_string(), "zd_retention_Runs".to_string()]
    );
    // JSON's escaped quotes end a name
    assert_eq!(
        metric_names(r#""expr": "sum(zd_retention_runs_total{status=\"failed\"})""#),
        BTreeSet::from(["zd_retention_runs_total".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_name_is_served() {
    let wanted = kit_names();
    for name in [
        "zd_retention_last_success_timestamp_seconds",
        "zd_retention_run_duration_seconds_bucket",
    ] {
        assert!(wanted.contains(name), "the kit no longer names {name}");
    }

    // every purge job fails, and a share of the listings answer 429
    // (retried after Retry-After, which holds the pacer)
    let faults = Faults {
        rate_limits: 0.3,
        job_failures: 1.0,
        endpoints: vec!["list".to_string()],
        ..Faults::default()
    };
    let sb = sandbox_with(
        clear_tickets(300, 43),
        SandboxOptions {
            faults,
            ..fast_sandbox_options(0)
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let audit = crate::helpers::AuditAt::new(dir.path()).await;
    let (addr, stop, daemon) =
        crate::helpers::daemon_in_process(&sb.base_url(), &audit, "2/1s").await;

    // a run every second: scrape until every name shows, the faults
    // lifted once the families they bring have shown
    let client = reqwest::Client::new();
    let mut exposition = String::new();
    let mut served = BTreeSet::new();
    let mut faulty = true;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        exposition = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        served = served_names(&exposition);
        if faulty && AFTER_FAULTS.iter().all(|n| served.contains(*n)) {
            sb.set_faults(Faults::default());
            faulty = false;
        }
        if unserved(&wanted, &served).is_empty() {
            break;
        }
    }
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();

    let missing = unserved(&wanted, &served);
    assert!(
        missing.is_empty(),
        "named in deploy/ but not served on /metrics (faults still on: {faulty}): {missing:?}\n\
         /metrics:\n{exposition}"
    );
}

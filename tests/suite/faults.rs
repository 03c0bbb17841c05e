//! The fault matrix: the real cycle against the sandbox's faults. Every cell
//! checks that no ticket the rules did not select is purged, that every
//! write request was recorded before it reached the sandbox, that the run's
//! recorded status and counts are true, that a log line names the fault, and
//! that the next run (faults gone) completes the work.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Row;
use zd_retention::cycle::{RunStatus, Trigger, run_cycle};
use zd_retention::sandbox::{Faults, Sandbox, SandboxOptions};
use zd_retention::zendesk::{Auth, ClientConfig, RetryPolicy, ZendeskClient};

use crate::helpers::{
    TOKEN, assert_writes_recorded_first, clear_tickets, engine, example_policy, fast_limits,
    fast_sandbox_options, selected, test_settings,
};

/// Log lines of this test's thread (the tests run on one thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

struct Cell {
    faults: Faults,
    /// A log line must contain one of these.
    names: &'static [&'static str],
    request_timeout: Duration,
    seed: u64,
}

async fn run_cell(cell: Cell) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let all = clear_tickets(600, cell.seed);
    let want = selected(&all);
    let sb = Sandbox::start_with(
        SandboxOptions {
            faults: cell.faults.clone(),
            seed: cell.seed,
            ..fast_sandbox_options(0)
        },
        all,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut e = engine(&sb, example_policy(), test_settings()).await;
    e.ctx.client = ZendeskClient::new(ClientConfig {
        base_url: url::Url::parse(&sb.base_url()).unwrap(),
        auth: Auth::ApiToken {
            email: "ops@acme.example".into(),
            token: secrecy::SecretString::from(TOKEN),
        },
        limits: fast_limits(),
        retry: RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            request_timeout: cell.request_timeout,
        },
    })
    .unwrap();

    let first = run_cycle(&e.ctx, Trigger::Cron)
        .await
        .expect("the audit store works through the faults");
    let pool = e.ctx.store.pool();

    // nothing purged that the rules did not select
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert!(
        purged.is_subset(&want),
        "purged outside the selection: {:?}",
        purged.difference(&want).collect::<Vec<_>>()
    );

    // every write request was recorded before it reached the sandbox, and
    // every job Zendesk created is accounted for (a retried attempt too)
    assert_writes_recorded_first(&sb, pool, "first run").await;
    crate::helpers::assert_job_ids_accounted(&sb, pool, "first run").await;

    // the recorded run is true to what happened
    let row = sqlx::query("SELECT status, purged, failed, unknown FROM runs WHERE id = $1")
        .bind(first.run_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("status"), first.status.as_str());
    let claimed: Vec<i64> = sqlx::query_scalar(
        "SELECT ticket_id FROM outcomes WHERE run_id = $1 AND outcome = 'purged'",
    )
    .bind(first.run_id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(claimed.len() as i64, row.get::<i64, _>("purged"));
    for id in &claimed {
        assert!(
            purged.contains(&(*id as u64)),
            "ticket {id} recorded purged but still in the sandbox"
        );
    }
    if first.status == RunStatus::Completed {
        assert_eq!(first.counts.failed, 0);
    }

    // a log line names the fault
    let text = logs.text();
    assert!(
        cell.names.iter().any(|n| text.contains(n)),
        "no log line names the fault ({:?}):\n{text}",
        cell.names
    );

    // the next tick, faults gone, finishes the work
    sb.set_faults(Faults::default());
    let second = run_cycle(&e.ctx, Trigger::Cron).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(
        purged, want,
        "after the next run exactly the selection is gone"
    );
}

const QUICK: Duration = Duration::from_secs(5);

#[tokio::test]
async fn rate_limit_storm_of_30_percent() {
    run_cell(Cell {
        faults: Faults {
            rate_limits: 0.3,
            ..Faults::default()
        },
        names: &["rate limited by Zendesk (429)"],
        request_timeout: QUICK,
        seed: 41,
    })
    .await;
}

#[tokio::test]
async fn server_error_bursts() {
    run_cell(Cell {
        faults: Faults {
            server_errors: 0.3,
            ..Faults::default()
        },
        names: &["500 Internal", "502 Bad", "503 Service"],
        request_timeout: QUICK,
        seed: 42,
    })
    .await;
}

#[tokio::test]
async fn answers_slower_than_the_timeout() {
    let faults = Faults {
        slow: 0.2,
        slow_delay: Duration::from_millis(800),
        ..Faults::default()
    };
    run_cell(Cell {
        faults,
        names: &["no answer within"],
        request_timeout: Duration::from_millis(200),
        seed: 43,
    })
    .await;
}

#[tokio::test]
async fn dropped_connections() {
    run_cell(Cell {
        faults: Faults {
            drops: 0.2,
            ..Faults::default()
        },
        names: &["broke off", "connection closed", "the request failed"],
        request_timeout: QUICK,
        seed: 44,
    })
    .await;
}

#[tokio::test]
async fn malformed_json() {
    run_cell(Cell {
        faults: Faults {
            malformed: 0.2,
            ..Faults::default()
        },
        names: &["could not decode"],
        request_timeout: QUICK,
        seed: 45,
    })
    .await;
}

#[tokio::test]
async fn jobs_that_fail() {
    run_cell(Cell {
        faults: Faults {
            job_failures: 0.7,
            ..Faults::default()
        },
        names: &["purge job did not succeed"],
        request_timeout: QUICK,
        seed: 46,
    })
    .await;
}

#[tokio::test]
async fn jobs_that_are_killed() {
    run_cell(Cell {
        faults: Faults {
            job_kills: 0.7,
            ..Faults::default()
        },
        names: &["status=killed"],
        request_timeout: QUICK,
        seed: 47,
    })
    .await;
}

#[tokio::test]
async fn job_statuses_that_vanish() {
    run_cell(Cell {
        faults: Faults {
            job_vanish: 0.7,
            ..Faults::default()
        },
        names: &["job status vanished"],
        request_timeout: QUICK,
        seed: 48,
    })
    .await;
}

#[tokio::test]
async fn a_token_rejected_midway() {
    run_cell(Cell {
        faults: Faults {
            reject_auth_after: Some(4),
            ..Faults::default()
        },
        names: &["unauthorized (401)"],
        request_timeout: QUICK,
        seed: 49,
    })
    .await;
}

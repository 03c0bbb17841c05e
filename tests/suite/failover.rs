//! Failover on a PostgreSQL audit (the PostgreSQL pass only): two daemons
//! (`run`) on "two nodes" (each its own folder, no file shared) against one
//! database and one sandbox. The active one is SIGKILLed at random moments,
//! many of them mid-purge (tickets old enough to purge are added before
//! each kill), and once it is paused (SIGSTOP), its sessions are ended from
//! the server (`pg_terminate_backend`) and it is woken (SIGCONT).
//!
//! After every step: the standby took over (the fencing term rose), the
//! chain verifies, every request the sandbox received was recorded first
//! and its job is accounted for, and no ticket was sent again unless its
//! earlier request was left in doubt. The woken leader's late writes are
//! refused: it ends, saying it lost the lead. Prints the takeover times.
//!
//! `FAILOVER_KILLS=25` runs the full measurement (CI: 3).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use crate::helpers::{
    AuditAt, TOKEN, clear_tickets, fast_sandbox_options, fresh_postgres_database, ids_text,
    postgres_server, ticket,
};
use zd_retention::sandbox::{Sandbox, SandboxOptions};

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

struct Node {
    name: &'static str,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<tokio::process::Child>,
    starts: usize,
}

impl Node {
    fn new(name: &'static str, base_url: &str, url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[zendesk]\nbase_url = \"{base_url}\"\nemail = \"ops@acme.example\"\ntoken_env = \"ZD_TEST_TOKEN\"\njob_poll_interval = \"20ms\"\n\
                 [zendesk.rate_limits]\nlist = \"10/200ms\"\nlist_deep = \"5/200ms\"\naccount = \"200/100ms\"\nmax_jobs_in_flight = 3\n\
                 [schedule]\ncron = \"* * * * * *\"\nshutdown_grace = \"1s\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
                 [audit]\ndatabase = \"{url}\"\n[safety]\ndry_run = false\nmin_age = \"1s\"\npurge_while_scanning = true\nmax_purges_per_run = 1000000\n\
                 [[rules]]\nname = \"automation\"\naction = \"purge\"\nactor_ids = [4242]\nolder_than = \"1s\"\n\
                 [[rules]]\nname = \"closed-after-7-days\"\naction = \"purge\"\nprevious_state = [\"solved\", \"closed\"]\nolder_than = \"7d\"\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("run.log");
        Node {
            name,
            _dir: dir,
            config,
            log,
            child: None,
            starts: 0,
        }
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = tokio::process::Command::new(BIN)
            .args(["run", "--log-format", "text", "--config"])
            .arg(&self.config)
            .env("ZD_TEST_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Where a node's health server listens, from its log (within 30 s).
async fn wait_for_addr(node: &Node) -> String {
    for _ in 0..300 {
        let log = node.log_text();
        if let Some(addr) = log
            .lines()
            .rev()
            .filter(|l| l.contains("health and metrics on"))
            .filter_map(|l| l.split("addr=").nth(1))
            .find_map(|rest| rest.split_whitespace().next())
        {
            return addr.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "node {} never said where it listens: {}",
        node.name,
        node.log_text()
    );
}

/// A GET of a node's health server: the status and the body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let answer = reqwest::get(format!("http://{addr}/{path}")).await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// 300 new deletions by the automation (actor 4242), purged a second after
/// they were deleted: the next refresh lists and sends them.
fn fresh_deletions(next_id: &mut u64) -> Vec<zd_retention::sandbox::SandboxTicket> {
    (0..300)
        .map(|i| {
            *next_id += 1;
            let state = if i % 2 == 0 { "closed" } else { "solved" };
            ticket(*next_id, chrono::Duration::seconds(2), state, 4242)
        })
        .collect()
}

/// The fencing term and its holder's pid, as the database has them.
async fn lead_of(admin: &mut sqlx::AnyConnection) -> Option<(i64, u32)> {
    let row: Option<(i64, String)> = sqlx::query_as("SELECT term, holder FROM fence WHERE id = 1")
        .fetch_optional(&mut *admin)
        .await
        .ok()
        .flatten();
    let (term, holder) = row?;
    // "pid N, command run, host H"
    let pid = holder
        .strip_prefix("pid ")
        .and_then(|p| p.split(',').next())
        .and_then(|p| p.parse().ok())?;
    Some((term, pid))
}

/// Waits until a term above `above` is held; the term and its pid.
async fn wait_for_term(
    admin: &mut sqlx::AnyConnection,
    above: i64,
    within: Duration,
) -> (i64, u32) {
    let until = Instant::now() + within;
    loop {
        if let Some((term, pid)) = lead_of(admin).await
            && term > above
        {
            return (term, pid);
        }
        assert!(
            Instant::now() < until,
            "no daemon took the lead above term {above} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What must hold after every step, while the active daemon goes on: the
/// audit is read on one snapshot, against the requests the sandbox had
/// received before it began (a later one is recorded in a later commit).
async fn check(sb: &Sandbox, at: &AuditAt, step: &str) {
    let cut = chrono::Utc::now();
    let store = at.open_read_only().await.unwrap();
    let chain = store.verify_chain().await.unwrap();
    assert!(chain.problem.is_none(), "{step}: {:?}", chain.problem);
    let requests: Vec<_> = sb
        .write_requests()
        .into_iter()
        .filter(|r| r.at < cut)
        .collect();
    let recorded: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT ticket_ids, recorded_at, zendesk_job_id, status FROM jobs")
            .fetch_all(store.pool())
            .await
            .unwrap();
    for r in &requests {
        let ids = ids_text(&r.ids);
        let sent = zd_retention::audit::timestamp(r.at);
        assert!(
            recorded
                .iter()
                .any(|(t, when, ..)| *t == ids && *when <= sent),
            "{step}: a write request with ids {ids} at {sent} was not recorded before it was sent"
        );
        if let Some(job) = &r.job_id {
            assert!(
                recorded.iter().any(|(t, _, z, status)| *t == ids
                    && (z.as_deref() == Some(job.as_str())
                        || matches!(status.as_str(), "pending" | "unknown"))),
                "{step}: Zendesk job {job} is not in the audit"
            );
        }
    }
    // a ticket is sent again only when its earlier request was left in
    // doubt (its job not recorded completed)
    let jobs: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT ticket_ids, zendesk_job_id, status FROM jobs WHERE kind = 'destroy_many'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut sends: BTreeMap<u64, Vec<(String, Option<String>)>> = BTreeMap::new();
    for r in &requests {
        for id in &r.ids {
            sends
                .entry(*id)
                .or_default()
                .push((ids_text(&r.ids), r.job_id.clone()));
        }
    }
    for (id, requests) in &sends {
        for (ids, job) in requests.iter().take(requests.len().saturating_sub(1)) {
            let completed = jobs
                .iter()
                .any(|(t, z, status)| t == ids && z.is_some() && z == job && status == "completed");
            assert!(
                !completed,
                "{step}: ticket {id} was sent again after a request whose job completed: {requests:?}"
            );
        }
    }
    let open = recorded
        .iter()
        .filter(|(.., status)| {
            matches!(
                status.as_str(),
                "pending" | "queued" | "working" | "unknown"
            )
        })
        .count();
    eprintln!(
        "{step}: {} write requests so far, {open} recorded open or in doubt",
        requests.len()
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_daemon_killed_or_paused_is_replaced_and_its_late_writes_are_refused() {
    let Some(server) = postgres_server() else {
        eprintln!("skipped: the PostgreSQL pass runs it (tests/tools/with-postgres)");
        return;
    };
    let kills: usize = std::env::var("FAILOVER_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(3);
    let seed = chrono::Utc::now().timestamp_millis() as u64;
    eprintln!("failover: {kills} kills, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let options = SandboxOptions {
        job_delay: Duration::from_secs(60),
        ..fast_sandbox_options(0)
    };
    let sb = Sandbox::start_with(
        options,
        clear_tickets(2000, 71),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let url = fresh_postgres_database(&server).await;
    let at = AuditAt::Postgres(url.clone());
    zd_retention::audit::install_drivers();
    let mut admin = {
        use sqlx::Connection as _;
        sqlx::AnyConnection::connect(&url).await.unwrap()
    };
    let mut nodes = [
        Node::new("a", &sb.base_url(), &url),
        Node::new("b", &sb.base_url(), &url),
    ];
    nodes[0].start();
    let (mut term, _) = wait_for_term(&mut admin, 0, Duration::from_secs(60)).await;
    nodes[1].start();
    // the standby says so: /readyz 503 "standby", zd_retention_standby 1;
    // the active one is ready
    let standby = wait_for_addr(&nodes[1]).await;
    let active = wait_for_addr(&nodes[0]).await;
    let (status, text) = get(&standby, "readyz").await;
    assert_eq!(status, 503);
    assert!(text.starts_with("standby"));
    let (_, metrics) = get(&standby, "metrics").await;
    assert!(metrics.contains("zd_retention_standby 1"), "{metrics}");
    let (status, text) = get(&active, "readyz").await;
    assert_eq!(status, 200, "{text}");
    let (_, metrics) = get(&active, "metrics").await;
    assert!(metrics.contains("zd_retention_standby 0"), "{metrics}");
    assert!(metrics.contains("zd_retention_fencing_term 1"), "{metrics}");
    let mut takeovers = Vec::new();
    let mut mid_purge = 0;
    let mut next_id = 9_000_000u64;
    for kill in 1..=kills {
        sb.insert(fresh_deletions(&mut next_id));
        let (_, holder) = lead_of(&mut admin).await.expect("a holder");
        let active = nodes
            .iter()
            .position(|n| n.pid() == Some(holder))
            .expect("the holder is one of the nodes");
        if kill % 2 == 1 {
            // mid-purge: once the active daemon has begun sending the new
            // tickets, a moment later
            let sent_before = sb.write_requests().len();
            let until = Instant::now() + Duration::from_secs(20);
            while sb.write_requests().len() == sent_before && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
        } else {
            // anywhere in its cycle
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..1500))).await;
        }
        let open_jobs: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'queued', 'working')",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap_or(0);
        let killed_at = Instant::now();
        nodes[active].child.as_mut().unwrap().start_kill().unwrap();
        let _ = nodes[active].child.as_mut().unwrap().wait().await;
        let (new_term, new_pid) = wait_for_term(&mut admin, term, Duration::from_secs(30)).await;
        let took = killed_at.elapsed();
        takeovers.push(took);
        assert_ne!(
            Some(new_pid),
            nodes[active].pid(),
            "kill {kill}: the other node took over"
        );
        eprintln!(
            "kill {kill}: node {} killed with {open_jobs} requests open, node {} took over in {took:?} (term {new_term})",
            nodes[active].name,
            nodes[1 - active].name
        );
        if open_jobs > 0 {
            mid_purge += 1;
        }
        term = new_term;
        check(&sb, &at, &format!("kill {kill}")).await;
        nodes[active].start();
    }

    // paused: its sessions ended from the server while it sleeps, then woken
    let (_, holder) = lead_of(&mut admin).await.expect("a holder");
    let active = nodes.iter().position(|n| n.pid() == Some(holder)).unwrap();
    sb.insert(fresh_deletions(&mut next_id));
    tokio::time::sleep(Duration::from_millis(rng.random_range(50..1000))).await;
    // SAFETY: a plain signal to a child of this test
    unsafe { libc::kill(holder as i32, libc::SIGSTOP) };
    let paused_at = Instant::now();
    let ended: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) AS t",
    )
    .bind(format!("zd-retention pid {holder}"))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(ended >= 1, "the paused leader's sessions were found");
    let (new_term, new_pid) = wait_for_term(&mut admin, term, Duration::from_secs(30)).await;
    let took = paused_at.elapsed();
    assert_ne!(new_pid, holder);
    eprintln!(
        "paused: node {} stopped, its {ended} sessions ended; the other took over in {took:?} (term {new_term})",
        nodes[active].name
    );
    // SAFETY: as above
    unsafe { libc::kill(holder as i32, libc::SIGCONT) };
    let woken = tokio::time::timeout(
        Duration::from_secs(30),
        nodes[active].child.as_mut().unwrap().wait(),
    )
    .await
    .expect("the woken former leader stops")
    .unwrap();
    assert!(
        !woken.success(),
        "the woken former leader ends with an error"
    );
    let log = nodes[active].log_text();
    assert!(
        log.contains("lost the lead"),
        "the woken former leader says why it stopped: {}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    check(&sb, &at, "after the pause").await;

    // the survivor finishes what was asked
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &mut nodes {
        if let Some(pid) = node.pid() {
            // SAFETY: as above
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let _ =
                tokio::time::timeout(Duration::from_secs(20), node.child.as_mut().unwrap().wait())
                    .await;
        }
    }
    check(&sb, &at, "at the end").await;
    takeovers.sort();
    let ms: Vec<u128> = takeovers.iter().map(|d| d.as_millis()).collect();
    eprintln!(
        "takeover after SIGKILL over {} kills ({mid_purge} with purge requests open): min {} ms, median {} ms, max {} ms; after a pause: {} ms",
        ms.len(),
        ms.first().unwrap_or(&0),
        ms.get(ms.len() / 2).unwrap_or(&0),
        ms.last().unwrap_or(&0),
        took.as_millis()
    );
}

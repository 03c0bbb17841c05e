//! The window between the last look and the send, under agents acting on
//! their own clock (the sandbox's `agents_every` profile): every ticket
//! Zendesk purged on a deletion no rule selected must have changed after the
//! last read before its request (inside the measured window), and each one a
//! read after the request could show before the job ran must be recorded in
//! doubt, not as purged by its rule.
//!
//! `WINDOW_SEEDS=n` runs n seeds per setting (default 10), `WINDOW_TICKETS`
//! and `WINDOW_AGENTS_MS` change the load; the figures are printed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use zd_retention::cycle::{RunStatus, Trigger, run_cycle};
use zd_retention::sandbox::{LoggedRequest, SandboxOptions};

use crate::helpers::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// What one run under the agents showed.
#[derive(Debug, Default)]
struct Figures {
    purged: u64,
    wrong: u64,
    in_doubt: u64,
    residual: u64,
    /// From the last list request's arrival to the purge request's, as the
    /// sandbox saw them (microseconds).
    server_windows: Vec<i64>,
    /// As the engine measured and recorded them (microseconds).
    recorded_windows: Vec<i64>,
}

/// The deletions each ticket was decided `purge` on, to the second (the
/// API's grain), with actor and previous state.
async fn purge_decisions(
    pool: &sqlx::AnyPool,
) -> BTreeMap<u64, BTreeSet<(DateTime<Utc>, i64, String)>> {
    type Row = (i64, Option<String>, Option<i64>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT ticket_id, deleted_at, actor_id, previous_state FROM decisions WHERE decision = 'purge'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: BTreeMap<u64, BTreeSet<_>> = BTreeMap::new();
    for (id, at, actor, state) in rows {
        let Some(at) = at.and_then(|a| DateTime::parse_from_rfc3339(&a).ok()) else {
            continue;
        };
        out.entry(id as u64).or_default().insert((
            at.with_timezone(&Utc).trunc_subsecs(0),
            actor.unwrap_or_default(),
            state.unwrap_or_default(),
        ));
    }
    out
}

/// Each ticket's outcomes in the order recorded, with the job row.
async fn outcomes_by_ticket(pool: &sqlx::AnyPool) -> BTreeMap<u64, Vec<(Option<i64>, String)>> {
    let rows: Vec<(i64, Option<i64>, String)> =
        sqlx::query_as("SELECT ticket_id, job_id, outcome FROM outcomes ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut out: BTreeMap<u64, Vec<_>> = BTreeMap::new();
    for (id, job, outcome) in rows {
        out.entry(id as u64).or_default().push((job, outcome));
    }
    out
}

async fn one_run(seed: u64, pipelined: bool) -> Figures {
    let tickets = clear_tickets(env_or("WINDOW_TICKETS", 800) as usize, seed);
    let options = SandboxOptions {
        seed,
        agents_every: Some(Duration::from_millis(env_or("WINDOW_AGENTS_MS", 4))),
        // jobs stay queued about 100 ms: long enough for agents to act
        // between a request and its job
        job_delay: Duration::from_secs(60),
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let settings = zd_retention::cycle::CycleSettings {
        purge_while_scanning: pipelined,
        ..test_settings()
    };
    let e = engine(&sb, example_policy(), settings).await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(
        report.status,
        RunStatus::Completed,
        "seed {seed}: {:?}",
        report.error
    );
    // the jobs end (they are followed to the end), then the agents stop
    let log: Vec<LoggedRequest> = sb.requests();
    let purged = sb.purged_tickets();
    let taken = sb.purge_times();
    let pool = e.ctx.store.pool();
    let decided = purge_decisions(pool).await;
    let outcomes = outcomes_by_ticket(pool).await;
    let job_rows: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT zendesk_job_id, id FROM jobs WHERE zendesk_job_id IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut f = Figures {
        recorded_windows: sqlx::query_scalar(
            "SELECT send_window_us FROM jobs WHERE send_window_us IS NOT NULL",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        ..Figures::default()
    };
    assert_each_send_right_after_a_read(&log, 10, &format!("seed {seed}, pipelined {pipelined}"));
    let lists: Vec<&LoggedRequest> = log.iter().filter(|r| r.endpoint == "list").collect();
    for d in log
        .iter()
        .filter(|r| r.endpoint == "destroy_many" && r.status == 200)
    {
        let last_read = lists
            .iter()
            .rev()
            .find(|l| l.at < d.at)
            .expect("a read before every purge");
        f.server_windows
            .push((d.at - last_read.at).num_microseconds().unwrap_or(i64::MAX));
    }
    for t in &purged {
        f.purged += 1;
        let seen = (
            t.deleted_at.trunc_subsecs(0),
            t.actor_id as i64,
            t.previous_state.clone(),
        );
        if decided.get(&t.id).is_some_and(|d| d.contains(&seen)) {
            continue;
        }
        // purged on a deletion it was never decided on: a deletion again
        f.wrong += 1;
        let changed = t.deleted_at;
        assert!(
            example_selects(t) != Some(true),
            "seed {seed}: ticket {} purged on a deletion the rules select but never decided",
            t.id
        );
        let took = taken[&t.id];
        let request = log
            .iter()
            .rfind(|r| r.endpoint == "destroy_many" && r.ids.contains(&t.id) && r.at < took)
            .expect("a purge request before the job");
        let last_read = lists
            .iter()
            .rev()
            .find(|l| l.at < request.at)
            .expect("a read before every purge");
        assert!(
            changed > last_read.at,
            "seed {seed} (pipelined {pipelined}): ticket {} was deleted again at {changed}, before the last read ({}) that preceded its purge request ({}): the read should have kept it out",
            t.id,
            last_read.at,
            request.at
        );
        let job_row = request
            .job_id
            .as_ref()
            .and_then(|j| job_rows.get(j))
            .copied();
        let recorded: Vec<&String> = outcomes
            .get(&t.id)
            .into_iter()
            .flatten()
            .filter(|(job, _)| *job == job_row)
            .map(|(_, o)| o)
            .collect();
        let bracket = lists.iter().find(|l| l.at > request.at);
        let visible = bracket.is_some_and(|b| b.at > changed && b.at < took);
        if recorded.iter().any(|o| o.as_str() == "purged") {
            assert!(
                !visible,
                "seed {seed} (pipelined {pipelined}): ticket {} recorded purged by its rule, but the read after its request ({:?}) came after its new deletion ({changed}) and before the job took it ({took})",
                t.id,
                bracket.map(|b| b.at)
            );
            f.residual += 1;
        } else {
            f.in_doubt += 1;
        }
    }
    sb.shutdown().await;
    f
}

fn percentile(values: &mut [i64], p: f64) -> i64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_purge_of_a_deletion_changed_before_the_last_read_and_the_visible_ones_in_doubt() {
    let seeds = env_or("WINDOW_SEEDS", 10);
    for pipelined in [false, true] {
        let mut all = Figures::default();
        for seed in 1..=seeds {
            let f = one_run(seed, pipelined).await;
            all.purged += f.purged;
            all.wrong += f.wrong;
            all.in_doubt += f.in_doubt;
            all.residual += f.residual;
            all.server_windows.extend(f.server_windows);
            all.recorded_windows.extend(f.recorded_windows);
        }
        let per_10k = |n: u64| n as f64 * 10_000.0 / all.purged.max(1) as f64;
        eprintln!(
            "purge_while_scanning={pipelined}, {seeds} seeds: {} purged, {} on a deletion again ({:.1} per 10,000): {} recorded in doubt, {} residual ({:.1} per 10,000); window recorded max {} µs p99 {} µs p50 {} µs ({} requests); sandbox-side (last list arrival to purge arrival) max {} µs p99 {} µs",
            all.purged,
            all.wrong,
            per_10k(all.wrong),
            all.in_doubt,
            all.residual,
            per_10k(all.residual),
            percentile(&mut all.recorded_windows, 1.0),
            percentile(&mut all.recorded_windows, 0.99),
            percentile(&mut all.recorded_windows, 0.5),
            all.recorded_windows.len(),
            percentile(&mut all.server_windows, 1.0),
            percentile(&mut all.server_windows, 0.99),
        );
        assert!(
            all.purged > 0,
            "nothing was purged: the harness tests nothing"
        );
        assert_eq!(
            all.recorded_windows.len(),
            all.server_windows.len(),
            "every purge request sent after a read has its window recorded"
        );
    }
}

/// Every purge request went out right after a read: since the last listing
/// request only purge requests of the same round arrived (no job poll, no
/// lookup, no earlier attempt at the same ids), and no more of them than
/// there are job slots.
fn assert_each_send_right_after_a_read(log: &[LoggedRequest], slots: usize, context: &str) {
    for (i, d) in log.iter().enumerate() {
        if d.endpoint != "destroy_many" {
            continue;
        }
        let mut since_read = 0;
        let mut read = false;
        for r in log[..i].iter().rev() {
            match r.endpoint.as_str() {
                "list" => {
                    read = true;
                    break;
                }
                // a sibling of the same round (sent together, answered in
                // any way), never an earlier attempt at the same ids
                "destroy_many" => {
                    assert!(
                        !r.ids.iter().any(|id| d.ids.contains(id)),
                        "{context}: purge request {i} sent ids again (first {:?}) after an attempt answered {} with no read between",
                        d.ids.first(),
                        r.status
                    );
                    since_read += 1;
                }
                other => panic!(
                    "{context}: purge request {i} ({:?}) went out after a {other} request (status {}) that came after the last read: the read vouched for a request that waited",
                    d.ids.first(),
                    r.status
                ),
            }
        }
        assert!(
            read,
            "{context}: purge request {i} without any read before it"
        );
        assert!(
            since_read < slots,
            "{context}: {since_read} purge requests before request {i} since the last read"
        );
    }
}

fn old_closed(n: u64) -> Vec<zd_retention::sandbox::SandboxTicket> {
    (0..n)
        .map(|i| zd_retention::sandbox::SandboxTicket {
            id: 30_000 + i,
            subject: Some(format!("Ticket {i}")),
            actor_id: 1001,
            actor_name: "Agent 1001".into(),
            deleted_at: Utc::now()
                - chrono::Duration::days(8)
                - chrono::Duration::minutes(i as i64),
            previous_state: "closed".into(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_deleted_again_while_its_purge_request_leaves_is_recorded_in_doubt() {
    use zd_retention::sandbox::{AgentAction, ScriptMoment, ScriptedAction};
    let tickets = old_closed(5);
    let target = tickets[2].id;
    // restored and deleted again the moment the purge request arrives,
    // after the freshness read cleared it: Zendesk's job (queued for a
    // while) purges the new deletion, which no rule selects
    let again = |action| ScriptedAction {
        at: ScriptMoment::BeforeDestroyMany(1),
        action,
    };
    let options = SandboxOptions {
        job_delay: Duration::from_secs(300),
        script: vec![
            again(AgentAction::Restore(target)),
            again(AgentAction::DeleteAgain {
                id: target,
                actor: None,
            }),
        ],
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    // Zendesk purged it (on its new deletion)
    assert_eq!(sb.purged_ids().len(), 5);
    let purged = sb.purged_tickets();
    let t = purged.iter().find(|t| t.id == target).unwrap();
    assert!(Utc::now() - t.deleted_at < chrono::Duration::minutes(5));
    // ... and the audit does not claim a rule selected that deletion
    let outcomes = last_outcomes(e.ctx.store.pool()).await;
    assert_eq!(outcomes.get(&target).map(String::as_str), Some("unknown"));
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM outcomes WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(target as i64)
    .fetch_one(e.ctx.store.pool())
    .await
    .unwrap();
    assert!(
        detail.starts_with(zd_retention::audit::IN_DOUBT_DETAIL),
        "{detail}"
    );
    for id in sb.purged_ids().into_iter().filter(|id| *id != target) {
        assert_eq!(
            outcomes.get(&id).map(String::as_str),
            Some("purged"),
            "{id}"
        );
    }
    assert_eq!(report.counts.purged, 4);
    assert_eq!(report.in_doubt, 1);
    assert!(report.max_send_window.is_some());
    // the certificate lists the four, and says why the fifth is not there
    let (cert, mut listing) =
        zd_retention::evidence::Certificate::gather(&e.ctx.store, report.run_id, &[])
            .await
            .unwrap();
    assert_eq!(cert.purged.listed, 4);
    let listed = purged_listed(&mut listing).await;
    drop(listing);
    assert_eq!(listed.len(), 4);
    assert!(!listed.contains(&target));
    assert_eq!(cert.windows.in_doubt, 1);
    assert_eq!(cert.windows.measured, 1);
    assert!(
        cert.residual
            .contains("showed 1 purged ticket(s) deleted again"),
        "{}",
        cert.residual
    );
    let text = zd_retention::render::certificate_text(&cert);
    assert!(text.contains("residual"), "{text}");
    assert_each_send_right_after_a_read(&sb.requests(), 10, "scripted");
    // and the chain holds the new columns
    let verified = e.ctx.store.verify_chain().await.unwrap();
    assert!(verified.problem.is_none(), "{:?}", verified.problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_sent_again_after_a_lost_answer_or_a_429_is_read_for_again() {
    use zd_retention::sandbox::Faults;
    let tickets = clear_tickets(1500, 11);
    let options = SandboxOptions {
        faults: Faults {
            server_errors: 0.25,
            rate_limits: 0.25,
            endpoints: vec!["destroy_many".into()],
            ..Faults::default()
        },
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    for pipelined in [false, true] {
        let settings = zd_retention::cycle::CycleSettings {
            purge_while_scanning: pipelined,
            ..test_settings()
        };
        let e = engine(&sb, example_policy(), settings).await;
        let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    }
    let log = sb.requests();
    assert!(
        log.iter()
            .any(|r| r.endpoint == "destroy_many" && r.status == 429),
        "the faults were served"
    );
    assert!(
        log.iter()
            .any(|r| r.endpoint == "destroy_many" && r.status >= 500),
        "the faults were served"
    );
    assert_each_send_right_after_a_read(&log, 10, "faults");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_stopped_run_sent_are_certified_under_that_run_whoever_saw_them_end() {
    use zd_retention::audit::{JobRowStatus, RunOrigin};
    use zd_retention::zendesk::IdBatch;
    let tickets = old_closed(150);
    let options = SandboxOptions {
        // queued long enough that the first process "dies" before its end
        job_delay: Duration::from_secs(120),
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets.clone(), options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let store = &e.ctx.store;
    // run 1 records a request, sends it and records the answer, then stops
    // (its process killed: the run stays `running`)
    let first = store
        .start_run(Trigger::Manual, false, &RunOrigin::from("test"), Utc::now())
        .await
        .unwrap();
    let now = Utc::now();
    let decided: Vec<zd_retention::audit::DecisionRecord> = tickets[..100]
        .iter()
        .map(|t| zd_retention::audit::DecisionRecord {
            ticket_id: t.id.into(),
            deleted_at: Some(t.deleted_at.trunc_subsecs(0)),
            actor_id: Some(t.actor_id),
            actor_name: None,
            previous_state: Some(t.previous_state.clone()),
            subject: None,
            rule: Some("closed-after-7-days".into()),
            decision: zd_retention::audit::DecisionKind::Purge,
            decided_at: now,
            listed: true,
            subject_tags: None,
        })
        .collect();
    store.record_decisions(first, &decided).await.unwrap();
    let batch = IdBatch::new(tickets[..100].iter().map(|t| t.id.into()).collect()).unwrap();
    let rows = store
        .record_requests(first, std::slice::from_ref(&batch), (Utc::now(), &[]))
        .await
        .unwrap();
    let (_, answer) = e.ctx.client.destroy_many_now(&batch).await;
    let job = answer.unwrap();
    store
        .record_answer(
            rows[0],
            Some(&job.id.0),
            JobRowStatus::Queued,
            None,
            Utc::now(),
        )
        .await
        .unwrap();
    // while no process follows the job, an agent deletes one of its tickets
    // again: the queued job will purge that new deletion
    let again = tickets[5].id;
    assert!(sb.agent_restore(again) && sb.agent_delete_again(again));
    // the next run closes run 1, reads the newest deletions for the job it
    // takes over, follows it to the end, and purges the rest
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    assert_eq!(sb.purged_ids().len(), 150);
    let outcomes = last_outcomes(store.pool()).await;
    assert_eq!(outcomes.get(&again).map(String::as_str), Some("unknown"));
    let cert = |run| zd_retention::evidence::Certificate::gather(store, run, &[]);
    let (one, mut listing) = cert(first).await.unwrap();
    let ids_one = purged_listed(&mut listing).await;
    drop(listing);
    let (two, mut listing) = cert(report.run_id).await.unwrap();
    let ids_two = purged_listed(&mut listing).await;
    drop(listing);
    // the purges of run 1's request are on run 1's certificate, the
    // requests of run 2 on run 2's: never one request on both, or on neither
    let sent_by_one: BTreeSet<u64> = batch
        .ids()
        .iter()
        .map(|id| id.get())
        .filter(|id| *id != again)
        .collect();
    assert_eq!(ids_one, sent_by_one);
    assert_eq!(one.windows.in_doubt, 1);
    assert_eq!(ids_two, tickets[100..].iter().map(|t| t.id).collect());
    assert_eq!(one.windows.requests, 1);
    assert_eq!(two.windows.requests, 1);
    assert_eq!(two.windows.measured, 1);
}

/// A stop that comes while a round's freshness read is under way: nothing
/// leaves (before, the round went on and sent seconds after the signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_freshness_read_sends_nothing() {
    use zd_retention::sandbox::Faults;
    let tickets = old_closed(60);
    let options = SandboxOptions {
        // every listing answers late: a stop lands inside the read
        faults: Faults {
            slow: 1.0,
            slow_delay: Duration::from_millis(400),
            endpoints: vec!["list".into()],
            ..Faults::default()
        },
        ..fast_sandbox_options(0)
    };
    let sb = std::sync::Arc::new(sandbox_with(tickets, options).await);
    let e = engine(&sb, example_policy(), test_settings()).await;
    let cancel = e.ctx.cancel.clone();
    // the scan lists its one page; after the lookup among active tickets,
    // the next listing request is the freshness read before the round
    let watch = {
        let sb = sb.clone();
        tokio::spawn(async move {
            while sb.count("tickets_show_many") < 1 || sb.count("list") < 2 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            cancel.cancel();
        })
    };
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    watch.await.unwrap();
    assert_eq!(report.status, RunStatus::Interrupted, "{:?}", report.error);
    let log: Vec<String> = sb.requests().iter().map(|r| r.endpoint.clone()).collect();
    assert_eq!(
        sb.count("destroy_many"),
        0,
        "a purge left after the stop: {log:?}"
    );
    let outcomes = last_outcomes(e.ctx.store.pool()).await;
    assert_eq!(outcomes.len(), 60);
    assert!(outcomes.values().all(|o| o == "not_sent"), "{outcomes:?}");
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM jobs")
        .fetch_all(e.ctx.store.pool())
        .await
        .unwrap();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|s| s == "withdrawn"), "{statuses:?}");
}

/// The tickets a certificate's listing streams.
async fn purged_listed(listing: &mut zd_retention::audit::PurgeListing) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    listing
        .for_each(|p| {
            ids.insert(p.ticket_id.get());
            Ok(())
        })
        .await
        .unwrap();
    ids
}

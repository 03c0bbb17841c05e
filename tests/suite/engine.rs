//! The purge cycle end to end: the real client, the sandbox and a real
//! SQLite file.

use std::collections::BTreeSet;
use std::time::Duration;
use zd_retention::ids::TicketId;

use sqlx::Row;
use zd_retention::audit::RequestKind;
use zd_retention::cycle::{RunStatus, Trigger, run_cycle};
use zd_retention::rules::{Policy, RetentionRule, RuleAction};
use zd_retention::sandbox::{Faults, SandboxOptions};

use crate::helpers::{
    clear_tickets, engine, example_policy, fast_sandbox_options, sandbox_with, selected,
    test_settings,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_purges_exactly_the_selected_tickets_and_audits_each() {
    let tickets = clear_tickets(1500, 1);
    let want = selected(&tickets);
    assert!(
        want.len() > 300,
        "the data must select a good share: {}",
        want.len()
    );
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let e = engine(&sb, example_policy(), test_settings()).await;

    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(purged, want, "exactly the selected tickets are gone");
    let left: BTreeSet<u64> = sb.deleted_ids().into_iter().collect();
    let all: BTreeSet<u64> = tickets.iter().map(|t| t.id).collect();
    assert_eq!(left, &all - &want);
    assert_eq!(report.counts.purged, want.len() as u64);
    assert_eq!(report.counts.matched, want.len() as u64);
    assert_eq!(report.purge_batches, want.len().div_ceil(100) as u64);
    assert_eq!(sb.count("destroy_many"), want.len().div_ceil(100) as u64);

    // every purged ticket: a purge decision with its rule, then an outcome
    // naming its job
    let rows = sqlx::query(
        "SELECT d.ticket_id, d.rule, o.outcome, j.zendesk_job_id, d.id < o.id AS decided_first
         FROM decisions d JOIN outcomes o ON o.ticket_id = d.ticket_id JOIN jobs j ON j.id = o.job_id
         WHERE d.decision = 'purge'",
    )
    .fetch_all(e.ctx.store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), want.len());
    for row in rows {
        let rule: Option<String> = row.get("rule");
        assert!(matches!(
            rule.as_deref(),
            Some("closed-after-7-days" | "automation-deletions")
        ));
        assert_eq!(row.get::<String, _>("outcome"), "purged");
        assert!(row.get::<Option<String>, _>("zendesk_job_id").is_some());
    }
    // no subject text anywhere
    let subjects: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM decisions WHERE subject IS NOT NULL")
            .fetch_one(e.ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(subjects, 0);
    // the database is private to its owner and sound
    use std::os::unix::fs::PermissionsExt;
    if crate::helpers::postgres_server().is_none() {
        assert_eq!(
            std::fs::metadata(&e.db).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(e.ctx.store.integrity_check().await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_no_write_request() {
    let tickets = clear_tickets(600, 2);
    let want = selected(&tickets);
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let e = engine(
        &sb,
        example_policy(),
        zd_retention::cycle::CycleSettings {
            dry_run: true,
            ..test_settings()
        },
    )
    .await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed);
    assert!(sb.write_requests().is_empty(), "{:?}", sb.write_requests());
    assert!(sb.purged_ids().is_empty());
    let would: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM decisions WHERE decision = 'would_purge'")
            .fetch_one(e.ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(would as usize, want.len());
    let dry: i64 = sqlx::query_scalar("SELECT dry_run FROM runs")
        .fetch_one(e.ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(dry, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_max_purges_per_run_purges_nothing_and_fails() {
    let tickets = clear_tickets(600, 3);
    let want = selected(&tickets);
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let e = engine(
        &sb,
        example_policy(),
        zd_retention::cycle::CycleSettings {
            max_purges_per_run: 10,
            ..test_settings()
        },
    )
    .await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("max_purges_per_run"),
        "{:?}",
        report.error
    );
    assert!(sb.write_requests().is_empty());
    assert!(sb.purged_ids().is_empty());
    assert_eq!(report.counts.matched, want.len() as u64);
    let status: String = sqlx::query_scalar("SELECT status FROM runs")
        .fetch_one(e.ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(status, "failed");
    // the tickets chosen up to the limit carry the reason they were not
    // sent; the rest were only counted (a refused run at a million
    // selected tickets holds and writes no more than the limit), and the
    // run's error says so
    let not_sent = not_sent_over_the_limit(e.ctx.store.pool()).await;
    assert_eq!(not_sent, 11);
    let error = report.error.as_deref().unwrap();
    assert!(
        error.contains(&format!(
            "({} of them past the limit were only counted",
            want.len() - 11
        )),
        "{error}"
    );
    let decided: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT ticket_id) FROM decisions WHERE decision = 'purge'",
    )
    .fetch_one(e.ctx.store.pool())
    .await
    .unwrap();
    assert_eq!(decided as usize, want.len(), "every one decided");
}

/// The `not_sent` outcomes `max_purges_per_run` gave.
async fn not_sent_over_the_limit(pool: &sqlx::AnyPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM outcomes WHERE outcome = 'not_sent' AND detail LIKE '%max_purges_per_run%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Purging while scanning over the limit: exactly the limit is sent, the
/// one more chosen carries the reason, the rest are only counted (a run
/// over a million selected tickets holds the limit, not the million).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_while_scanning_stops_at_the_limit_and_holds_no_more_than_it() {
    let tickets = clear_tickets(600, 3);
    let want = selected(&tickets);
    assert!(want.len() > 20, "{}", want.len());
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let e = engine(
        &sb,
        example_policy(),
        zd_retention::cycle::CycleSettings {
            max_purges_per_run: 10,
            purge_while_scanning: true,
            ..test_settings()
        },
    )
    .await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{:?}", report.error);
    assert_eq!(sb.purged_ids().len(), 10, "exactly the limit is purged");
    assert!(sb.purged_ids().iter().all(|id| want.contains(id)));
    assert_eq!(report.counts.matched, want.len() as u64);
    let error = report.error.as_deref().unwrap();
    assert!(
        error.contains("purging stopped at the limit")
            && error.contains(&format!(
                "({} of them past the limit were only counted",
                want.len() - 11
            )),
        "{error}"
    );
    let not_sent = not_sent_over_the_limit(e.ctx.store.pool()).await;
    assert_eq!(not_sent, 1, "the one chosen past the limit");
    // the next run, under a limit that fits, sends the rest
    let mut ctx = e.ctx.clone();
    ctx.settings.max_purges_per_run = 100_000;
    let next = run_cycle(&ctx, Trigger::Manual).await.unwrap();
    assert_eq!(next.status, RunStatus::Completed, "{:?}", next.error);
    let purged: std::collections::BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(purged, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_cycle_purges_nothing_new_and_confirms_the_first() {
    let tickets = clear_tickets(800, 4);
    let want = selected(&tickets);
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let first = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(first.counts.purged, want.len() as u64);
    let destroys = sb.count("destroy_many");
    let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed);
    assert_eq!(second.counts.matched, 0);
    assert_eq!(second.counts.purged, 0);
    assert_eq!(sb.count("destroy_many"), destroys, "no new purge request");
    assert_eq!(
        second.confirmed_gone,
        want.len() as u64,
        "the second scan proves the first purges"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_lists_only_the_newest_deletions_and_decides_the_rest_from_the_ledger() {
    let tickets = clear_tickets(1000, 5);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let old_only = Policy {
        rules: vec![RetentionRule {
            older_than: Some(Duration::from_secs(20 * 86_400)),
            ..RetentionRule::new("old", RuleAction::Purge)
        }],
        min_age: Duration::from_secs(3600),
        ..Policy::default()
    };
    let mut e = engine(
        &sb,
        old_only,
        zd_retention::cycle::CycleSettings {
            dry_run: true,
            reconcile_every: Duration::from_secs(86_400),
            ..test_settings()
        },
    )
    .await;
    let old = tickets
        .iter()
        .filter(|t| chrono::Utc::now() - t.deleted_at > chrono::Duration::days(20))
        .count() as u64;
    // the first run reads the backlog oldest-first and stops at 20 days
    let backlog = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(backlog.step.as_str(), "backlog", "{}", backlog.scan_reason);
    assert!(backlog.counts.early_stop);
    assert_eq!(backlog.counts.matched, old);
    assert!(backlog.counts.scanned < tickets.len() as u64);
    // the second walks the whole view into the ledger: the backlog's
    // tickets are seen again unchanged, only the others recorded
    let full = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(full.step.as_str(), "reconcile", "{}", full.scan_reason);
    assert_eq!(full.counts.scanned, tickets.len() as u64);
    assert_eq!(
        full.counts.list_requests,
        tickets.len().div_ceil(100) as u64
    );
    assert_eq!(
        full.decisions_recorded,
        tickets.len() as u64 - backlog.counts.scanned
    );
    assert_eq!(full.counts.matched, old);
    // the next reads the newest page, proves the order, and decides the
    // rest from the ledger: the same selection, nothing recorded again
    let refresh = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(refresh.step.as_str(), "refresh", "{}", refresh.scan_reason);
    assert!(refresh.counts.early_stop);
    assert!(
        refresh.counts.list_requests <= 3,
        "{} list requests",
        refresh.counts.list_requests
    );
    assert_eq!(
        refresh.would_purge_in_ledger,
        Some(old),
        "the selection, in the ledger"
    );
    assert_eq!(refresh.decisions_recorded, 0, "nothing changed");
    // only the rows whose decision can have moved: a dry run sends
    // nothing, so its would-purge rows wait for a threshold like kept ones
    // (none crossed one in these milliseconds, bar a ticket deleted within
    // a second of the 20 days)
    assert!(
        refresh.decided_from_ledger <= 2 && refresh.counts.matched <= 2,
        "{} decided, {} matched",
        refresh.decided_from_ledger,
        refresh.counts.matched
    );
    // new rules re-decide the whole ledger without a listing: each change
    // is recorded once
    e.ctx.policy = std::sync::Arc::new(Policy {
        rules: vec![RetentionRule {
            older_than: Some(Duration::from_secs(25 * 86_400)),
            ..RetentionRule::new("older", RuleAction::Purge)
        }],
        min_age: Duration::from_secs(3600),
        ..Policy::default()
    });
    let changed = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(changed.step.as_str(), "refresh");
    let older = tickets
        .iter()
        .filter(|t| chrono::Utc::now() - t.deleted_at > chrono::Duration::days(25))
        .count() as u64;
    assert_eq!(changed.counts.matched, older);
    // every old ticket changed rule or decision
    assert_eq!(changed.decisions_recorded, old);
    let again = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(again.decisions_recorded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_cycle_run_again_purges_the_rest_with_a_consistent_audit() {
    let tickets = clear_tickets(1500, 6);
    let want = selected(&tickets);
    // slow jobs so that the cancel lands while work is open
    let sb = sandbox_with(
        tickets,
        SandboxOptions {
            job_delay: Duration::from_secs(30),
            ..fast_sandbox_options(0)
        },
    )
    .await;
    let settings = zd_retention::cycle::CycleSettings {
        purge_while_scanning: true,
        max_jobs_in_flight: 2,
        ..test_settings()
    };
    let e = engine(&sb, example_policy(), settings).await;
    let cancel = e.ctx.cancel.clone();
    let ctx = e.ctx.clone();
    let run = tokio::spawn(async move { run_cycle(&ctx, Trigger::Manual).await });
    // cancel as soon as the first purge request has reached the sandbox
    while sb.count("destroy_many") == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cancel.cancel();
    let first = run.await.unwrap().unwrap();
    assert_eq!(first.status, RunStatus::Interrupted);
    assert!(
        sb.purged_ids().len() < want.len(),
        "the cancel came before the end"
    );

    let mut e2 = e.ctx.clone();
    e2.cancel = tokio_util::sync::CancellationToken::new();
    let second = run_cycle(&e2, Trigger::Manual).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(
        purged, want,
        "after the rerun exactly the selected tickets are gone"
    );
    // every ticket that left the sandbox had a purge decision before its request
    let undecided: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outcomes o WHERE o.outcome = 'purged'
         AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.ticket_id = o.ticket_id AND d.decision = 'purge' AND d.decided_at <= o.recorded_at)",
    )
    .fetch_one(e.ctx.store.pool())
    .await
    .unwrap();
    assert_eq!(undecided, 0);
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM runs ORDER BY id")
        .fetch_all(e.ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(statuses, ["interrupted", "completed"]);
    let open: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE status IN ('pending','queued','working')",
    )
    .fetch_one(e.ctx.store.pool())
    .await
    .unwrap();
    assert_eq!(open, 0, "no job is left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_running_is_closed_as_interrupted_and_its_request_settled() {
    let tickets = clear_tickets(300, 7);
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    // a crash between recording a request and its answer
    let store = &e.ctx.store;
    let crashed = store
        .start_run(Trigger::Cron, false, &"old".into(), chrono::Utc::now())
        .await
        .unwrap();
    let old = chrono::Utc::now() - chrono::Duration::days(20);
    let decided: Vec<_> = [1, 2]
        .map(|id| zd_retention::audit::DecisionRecord {
            ticket_id: TicketId::new(id),
            deleted_at: Some(old),
            actor_id: None,
            actor_name: None,
            previous_state: Some("closed".into()),
            subject: None,
            rule: Some("closed-after-7-days".into()),
            decision: zd_retention::audit::DecisionKind::Purge,
            decided_at: chrono::Utc::now(),
            listed: true,
            subject_tags: None,
        })
        .into();
    store.record_decisions(crashed, &decided).await.unwrap();
    let ghost = zd_retention::zendesk::IdBatch::new(vec![1.into(), 2.into()]).unwrap();
    store
        .record_request(
            crashed,
            RequestKind::DestroyMany,
            &ghost,
            chrono::Utc::now(),
        )
        .await
        .unwrap();

    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed);
    // the first whole walk settles (the run above read the backlog only)
    let whole = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(whole.step.as_str(), "reconcile");
    let old = store.run(crashed).await.unwrap().unwrap();
    assert_eq!(old.status, zd_retention::audit::RunStatus::Interrupted);
    let job: String = sqlx::query_scalar("SELECT status FROM jobs WHERE run_id = $1")
        .bind(crashed)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(job, "unknown");
    // ids 1 and 2 were never in the sandbox: the whole walk proves them gone
    let settled: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM outcomes WHERE ticket_id = 1 ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(settled, ["unknown", "confirmed_gone"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_are_recorded_with_zendesks_message_and_fail_the_run() {
    let tickets = clear_tickets(400, 8);
    let want = selected(&tickets);
    let sb = sandbox_with(
        tickets,
        SandboxOptions {
            faults: Faults {
                job_failures: 1.0,
                ..Faults::default()
            },
            ..fast_sandbox_options(0)
        },
    )
    .await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.counts.failed, want.len() as u64);
    assert_eq!(report.counts.purged, 0);
    assert!(sb.purged_ids().is_empty());
    let message: String =
        sqlx::query_scalar("SELECT detail FROM outcomes WHERE outcome = 'failed' LIMIT 1")
            .fetch_one(e.ctx.store.pool())
            .await
            .unwrap();
    assert!(message.contains("sandbox fault"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_whose_purge_failed_are_sent_again_by_the_next_run() {
    for (reconcile_every, purge_while_scanning) in [
        (Duration::ZERO, false),
        (Duration::from_secs(86_400), false),
        (Duration::ZERO, true),
        (Duration::from_secs(86_400), true),
    ] {
        let tickets = clear_tickets(400, 8);
        let want = selected(&tickets);
        let sb = sandbox_with(
            tickets,
            SandboxOptions {
                faults: Faults {
                    job_failures: 1.0,
                    ..Faults::default()
                },
                ..fast_sandbox_options(0)
            },
        )
        .await;
        let settings = zd_retention::cycle::CycleSettings {
            reconcile_every,
            purge_while_scanning,
            ..test_settings()
        };
        let e = engine(&sb, example_policy(), settings).await;
        let first = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(first.counts.failed, want.len() as u64);
        sb.set_faults(Faults::default());
        let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(
            second.counts.purged,
            want.len() as u64,
            "reconcile every {reconcile_every:?}, purge while scanning {purge_while_scanning}: {second:?}"
        );
        assert_eq!(sb.purged_ids().into_iter().collect::<BTreeSet<u64>>(), want);
        // the purges count for their rule, although their decisions (made
        // in the first run, unchanged) are not rows of the second
        let mut by_rule = 0;
        for job in e.ctx.store.jobs_of_run(second.run_id).await.unwrap() {
            let ids: Vec<TicketId> = job
                .ticket_ids
                .split(',')
                .map(|i| i.trim().parse().unwrap())
                .collect();
            for (_, n) in e.ctx.store.rules_of_request(job.id, &ids).await.unwrap() {
                by_rule += n;
            }
        }
        assert_eq!(by_rule as usize, want.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_that_did_not_take_is_flagged_and_tried_again() {
    let tickets = clear_tickets(300, 9);
    let want = selected(&tickets);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    // Zendesk reported success but the ticket comes back in the listing
    let back = *want.iter().next().unwrap();
    sb.insert(tickets.iter().filter(|t| t.id == back).cloned());
    let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(second.not_effective, 1);
    assert_eq!(second.counts.purged, 1);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM outcomes WHERE ticket_id = $1 ORDER BY id")
            .bind(back as i64)
            .fetch_all(e.ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(outcomes, ["purged", "not_effective", "purged"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_job_statuses_leave_outcomes_unknown_until_a_scan_settles_them() {
    let tickets = clear_tickets(300, 10);
    let want = selected(&tickets);
    let sb = sandbox_with(
        tickets,
        SandboxOptions {
            faults: Faults {
                job_vanish: 1.0,
                ..Faults::default()
            },
            ..fast_sandbox_options(0)
        },
    )
    .await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let first = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(first.counts.unknown, want.len() as u64);
    assert_eq!(first.counts.purged, 0);
    sb.set_faults(Faults::default());
    let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(second.confirmed_gone, want.len() as u64);
    assert_eq!(second.counts.matched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsorted_listing_falls_back_to_a_full_scan() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    // a server that ignores sort_by: deletion times jump back and forth
    let server = MockServer::start().await;
    let ticket = |id: u64, days: i64| {
        let at = (chrono::Utc::now() - chrono::Duration::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        format!(
            r#"{{"id": {id}, "subject": null, "actor": {{"id": 1, "name": "A"}}, "deleted_at": "{at}", "previous_state": "closed"}}"#
        )
    };
    let page = |tickets: Vec<String>, next: Option<&str>| {
        let links = next.map_or("null".to_string(), |n| {
            format!(
                "\"{}/api/v2/deleted_tickets.json?page%5Bafter%5D={n}&page%5Bsize%5D=100\"",
                server.uri()
            )
        });
        format!(
            r#"{{"deleted_tickets": [{}], "meta": {{"has_more": {}}}, "links": {{"next": {links}}}}}"#,
            tickets.join(","),
            next.is_some()
        )
    };
    Mock::given(method("GET"))
        .and(path("/api/v2/deleted_tickets.json"))
        .and(query_param("page[after]", "p2"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            page(vec![ticket(3, 25), ticket(4, 1)], None),
            "application/json",
        ))
        .mount(&server)
        .await;
    // sorted or not, the same first page
    Mock::given(method("GET"))
        .and(path("/api/v2/deleted_tickets.json"))
        .and(wiremock::matchers::query_param_is_missing("page[after]"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            page(vec![ticket(1, 20), ticket(2, 29)], Some("p2")),
            "application/json",
        ))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let store = crate::helpers::test_store(&dir.path().join("a.db")).await;
    let ctx = zd_retention::cycle::CycleContext {
        policy: std::sync::Arc::new(Policy {
            rules: vec![RetentionRule {
                older_than: Some(Duration::from_secs(10 * 86_400)),
                ..RetentionRule::new("old", RuleAction::Purge)
            }],
            min_age: Duration::from_secs(3600),
            ..Policy::default()
        }),
        settings: zd_retention::cycle::CycleSettings {
            dry_run: true,
            reconcile_every: Duration::from_secs(86_400),
            ..test_settings()
        },
        origin: "t".into(),
        client: crate::helpers::client_for(&server.uri()),
        store,
        cancel: tokio_util::sync::CancellationToken::new(),
    };
    let first = run_cycle(&ctx, Trigger::Manual).await.unwrap();
    assert_eq!(first.step.as_str(), "reconcile");
    assert_eq!(first.counts.scanned, 4);
    // the second would read the newest deletions first: the pages come the
    // same both ways, so it walks everything, and ticket 4 (one day old)
    // does not end the walk before ticket 3
    let report = run_cycle(&ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.step.as_str(), "reconcile", "{}", report.scan_reason);
    assert!(
        report.scan_reason.contains("no proven order"),
        "{}",
        report.scan_reason
    );
    assert!(!report.counts.early_stop);
    assert_eq!(report.counts.scanned, 4);
    assert_eq!(report.counts.matched, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_in_process_and_serves_metrics_from_its_bound_address() {
    let tickets = clear_tickets(300, 41);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = crate::helpers::AuditAt::new(dir.path()).await;
    let (addr, stop, daemon) =
        crate::helpers::daemon_in_process(&sb.base_url(), &audit, "10/100ms").await;
    assert_ne!(addr.port(), 0);
    // a tick every second: wait for the first completed run
    let client = reqwest::Client::new();
    let mut metrics = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("zd_retention_runs_total{status=\"completed\"}") {
            break;
        }
    }
    assert!(
        metrics.contains("zd_retention_runs_total{status=\"completed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("zd_retention_ledger_tickets"), "{metrics}");
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    let store = audit.open_read_only().await.unwrap();
    let runs = store.runs(None, 100).await.unwrap();
    assert!(!runs.is_empty());
    assert!(
        runs.iter().all(|r| r.status != RunStatus::Running),
        "{runs:?}"
    );
    let want = tickets
        .iter()
        .filter(|t| {
            matches!(t.previous_state.as_str(), "solved" | "closed")
                && chrono::Utc::now() - t.deleted_at > chrono::Duration::days(7)
        })
        .count();
    assert_eq!(sb.purged_ids().len(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_subject_or_an_actor_name_is_stored_as_the_replacement_character() {
    // JSON may carry a NUL, SQLite stores it and PostgreSQL refuses it in
    // text: one such ticket failed every write of its cycle there
    let mut odd = crate::helpers::ticket(31, chrono::Duration::days(20), "closed", 1001);
    odd.subject = Some("legal\0hold".into());
    odd.actor_name = "Agent\0X".into();
    // and what a batch written as JSON must carry unchanged
    let quoting = "\"quoted\" \\back\\slash\\ ' \u{2028} ✓ {\"a\": [1]} \\u0000 $1 ?";
    let mut quoted = crate::helpers::ticket(32, chrono::Duration::days(20), "closed", 1001);
    quoted.subject = Some(quoting.into());
    quoted.actor_name = quoting.into();
    let sb = sandbox_with(vec![odd, quoted], fast_sandbox_options(0)).await;
    let settings = zd_retention::cycle::CycleSettings {
        record_subjects: true,
        ..test_settings()
    };
    let e = engine(&sb, example_policy(), settings).await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    assert_eq!(sb.purged_ids(), [31, 32]);
    let (subject, actor): (String, String) =
        sqlx::query_as("SELECT subject, actor_name FROM ledger WHERE ticket_id = 31")
            .fetch_one(e.ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(subject, "legal\u{FFFD}hold");
    assert_eq!(actor, "Agent\u{FFFD}X");
    let (subject, actor): (String, String) =
        sqlx::query_as("SELECT subject, actor_name FROM ledger WHERE ticket_id = 32")
            .fetch_one(e.ctx.store.pool())
            .await
            .unwrap();
    assert_eq!((subject.as_str(), actor.as_str()), (quoting, quoting));
    let decided: String = sqlx::query_scalar("SELECT subject FROM decisions WHERE ticket_id = 32")
        .fetch_one(e.ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(decided, quoting);
    assert!(e.ctx.store.verify_chain().await.unwrap().problem.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_zendesks_job_answer_is_stored_as_the_replacement_character() {
    // a job's id, message or an outcome's detail from Zendesk: on
    // PostgreSQL a NUL failed the write of the answer after the purge left
    use zd_retention::audit::{JobRowStatus, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::helpers::test_store(&dir.path().join("a.db")).await;
    let run = store
        .start_run(Trigger::Cron, false, &"test".into(), chrono::Utc::now())
        .await
        .unwrap();
    let batch = zd_retention::zendesk::IdBatch::new(vec![7.into(), 8.into()]).unwrap();
    let job = store
        .record_request(run, RequestKind::DestroyMany, &batch, chrono::Utc::now())
        .await
        .unwrap();
    store
        .record_answer(
            job,
            Some("V3-ab\0cd"),
            JobRowStatus::Queued,
            Some("queued\0"),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    store
        .record_job_end(
            run,
            job,
            JobRowStatus::Failed,
            Some("failed: \0 odd"),
            Outcome::Failed,
            &[7.into(), 8.into()],
        )
        .await
        .unwrap();
    let (id, message): (String, String) =
        sqlx::query_as("SELECT zendesk_job_id, message FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(id, "V3-ab\u{FFFD}cd");
    assert_eq!(message, "failed: \u{FFFD} odd");
    let details: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM outcomes WHERE run_id = $1 ORDER BY id")
            .bind(run)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(details, ["failed: \u{FFFD} odd", "failed: \u{FFFD} odd"]);
    assert!(store.verify_chain().await.unwrap().problem.is_none());
}

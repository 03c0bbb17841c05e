//! The engine under every reading of what Zendesk's documentation leaves
//! open: cursor listing that ignores `sort_by`, a view that changes while it
//! is walked, Zendesk's own scrub, `show_many` failing on unknown job ids.
//! Each case of issue 9's "Why" has a test here that fails on the engine
//! that believed one reading.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use zd_retention::audit::{JobRowStatus, Outcome, RequestKind};
use zd_retention::cycle::{RunStatus, Trigger, run_cycle};
use zd_retention::rules::{Policy, RetentionRule, RuleAction};
use zd_retention::sandbox::{
    AgentAction, CursorSort, Faults, SandboxOptions, SandboxTicket, ScriptMoment, ScriptedAction,
};

use crate::helpers::{
    Profile, churn_seed, clear_tickets, engine, example_policy, fast_sandbox_options,
    last_decision, last_outcomes, sandbox_with, selected, test_settings, ticket,
};

fn days(d: i64) -> chrono::Duration {
    chrono::Duration::days(d)
}

/// Tickets all older than a week, closed, deleted by agent 1001: the
/// example rules select every one.
fn old_closed(n: u64) -> Vec<SandboxTicket> {
    (0..n)
        .map(|i| {
            ticket(
                20_000 + i,
                days(8) + chrono::Duration::minutes(i as i64 * 7),
                "closed",
                1001,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_purges_exactly_the_selection_and_a_second_run_settles_it() {
    for (n, profile) in Profile::ALL.into_iter().enumerate() {
        let mut tickets = clear_tickets(1200, 70 + n as u64);
        let mut scrubbed_early = BTreeSet::new();
        if profile == Profile::Scrub30d {
            // deleted 31 to 40 days ago: Zendesk's scrub takes them first
            for i in 0..50u64 {
                let t = ticket(90_000 + i, days(31 + (i as i64 % 10)), "closed", 1001);
                scrubbed_early.insert(t.id);
                tickets.push(t);
            }
        }
        let want: BTreeSet<u64> = &selected(&tickets) - &scrubbed_early;
        let sb = sandbox_with(tickets.clone(), profile.apply(fast_sandbox_options(0))).await;
        let mut e = engine(&sb, example_policy(), test_settings()).await;

        let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(
            report.status,
            RunStatus::Completed,
            "{profile:?}: {:?}",
            report.error
        );
        // a first run purges the backlog oldest-first where the order is
        // proven; the next walks the whole view into the ledger
        let expected_scan = if profile == Profile::CursorIgnore {
            assert_eq!(report.step.as_str(), "reconcile", "{profile:?}");
            "full"
        } else {
            // a backlog that stops on the last page has read everything
            let whole = !report.counts.early_stop;
            let expected_step = if whole { "reconcile" } else { "backlog" };
            assert_eq!(report.step.as_str(), expected_step, "{profile:?}");
            "sorted"
        };
        let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
        assert_eq!(purged, want, "{profile:?}: exactly the selection is purged");
        assert_eq!(report.counts.purged, want.len() as u64, "{profile:?}");
        assert_eq!(
            report.scan.as_str(),
            expected_scan,
            "{profile:?}: {}",
            report.scan_reason
        );
        let run = e.ctx.store.run(report.run_id).await.unwrap().unwrap();
        assert_eq!(
            run.scan.map(|s| s.to_string()).as_deref(),
            Some(expected_scan),
            "{profile:?}"
        );
        assert!(run.scan_reason.is_some_and(|r| !r.is_empty()));
        if profile == Profile::Scrub30d {
            let scrubbed: BTreeSet<u64> = sb.scrubbed_ids().into_iter().collect();
            assert!(scrubbed_early.is_subset(&scrubbed), "{profile:?}");
        }

        let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(second.status, RunStatus::Completed, "{profile:?}");
        assert_eq!(
            second.counts.matched, 0,
            "{profile:?}: nothing new to purge"
        );
        assert_eq!(second.purge_batches, 0, "{profile:?}");
        assert_eq!(second.restored_elsewhere, 0, "{profile:?}");
        let outcomes = last_outcomes(e.ctx.store.pool()).await;
        for id in &want {
            let o = outcomes.get(id).map(String::as_str);
            assert!(
                matches!(o, Some("purged" | "confirmed_gone")),
                "{profile:?}: ticket {id} ends {o:?}"
            );
        }

        // A third run reads only what changed: 150 new deletions, too young
        // to purge. Where the order is proven it lists about two pages;
        // without proof it walks the whole view again.
        e.ctx.settings.reconcile_every = Duration::from_secs(86_400);
        let fresh: Vec<SandboxTicket> = (0..150u64)
            .map(|i| {
                ticket(
                    95_000 + i,
                    chrono::Duration::seconds(i as i64),
                    "closed",
                    1001,
                )
            })
            .collect();
        sb.insert(fresh);
        let third = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(
            third.status,
            RunStatus::Completed,
            "{profile:?}: {:?}",
            third.error
        );
        assert_eq!(third.counts.purged, 0, "{profile:?}");
        if profile == Profile::CursorIgnore {
            assert_eq!(
                third.step.as_str(),
                "reconcile",
                "{profile:?}: {}",
                third.scan_reason
            );
            assert!(
                third.scan_reason.contains("no proven order"),
                "{}",
                third.scan_reason
            );
        } else {
            assert_eq!(
                third.step.as_str(),
                "refresh",
                "{profile:?}: {}",
                third.scan_reason
            );
            assert!(
                (150..=250).contains(&third.counts.scanned),
                "{profile:?}: a refresh lists the new deletions and its overlap, not {}",
                third.counts.scanned
            );
            // only the rows whose decision can have moved since the last
            // pass: nothing is left selected, no threshold fell between
            assert_eq!(third.decided_from_ledger, 0, "{profile:?}");
        }
        assert_eq!(
            third.decisions_recorded, 150,
            "{profile:?}: only the first sightings"
        );
        sb.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_listing_that_ignores_sort_by_still_purges_everything_an_age_rule_selects() {
    // the case: `older_than = "12d"` against an id-ordered listing
    // purged none of 884 selected tickets, every run
    let tickets = clear_tickets(3000, 12);
    let policy = Policy {
        rules: vec![RetentionRule {
            older_than: Some(Duration::from_secs(12 * 86_400)),
            ..RetentionRule::new("older-than-12d", RuleAction::Purge)
        }],
        min_age: Duration::from_secs(3600),
        protect_ids: Default::default(),
    };
    let margin = chrono::Duration::minutes(1);
    let want: BTreeSet<u64> = tickets
        .iter()
        .filter(|t| Utc::now() - t.deleted_at > days(12) + margin)
        .map(|t| t.id)
        .collect();
    let tickets: Vec<SandboxTicket> = tickets
        .into_iter()
        .filter(|t| ((Utc::now() - t.deleted_at) - days(12)).num_seconds().abs() > 60)
        .collect();
    assert!(want.len() > 500, "{}", want.len());
    let options = SandboxOptions {
        cursor_sort: CursorSort::Ignore,
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets.clone(), options).await;
    let e = engine(&sb, policy, test_settings()).await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    assert_eq!(report.scan.as_str(), "full", "{}", report.scan_reason);
    assert!(
        report.scan_reason.contains("ignores sort_by") || report.scan_reason.contains("both ways"),
        "{}",
        report.scan_reason
    );
    assert_eq!(
        report.counts.scanned,
        tickets.len() as u64,
        "every ticket looked at"
    );
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(purged, want, "none missed, none extra");
    // a later run would read only the newest deletions: it cannot prove the
    // order, and walks the whole view again
    let mut e = e;
    e.ctx.settings.reconcile_every = Duration::from_secs(86_400);
    let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(second.step.as_str(), "reconcile", "{}", second.scan_reason);
    assert!(
        second.scan_reason.contains("ignores sort_by") || second.scan_reason.contains("both ways"),
        "{}",
        second.scan_reason
    );
    assert_eq!(second.counts.purged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_deleted_again_during_the_scan_is_decided_by_its_latest_listing() {
    let tickets = old_closed(300);
    let target = tickets[295].id; // among the oldest: on the first page
    let options = SandboxOptions {
        script: vec![
            // after page 1 and the proof's newest-first page
            ScriptedAction {
                at: ScriptMoment::BeforeList(3),
                action: AgentAction::Restore(target),
            },
            ScriptedAction {
                at: ScriptMoment::BeforeList(3),
                action: AgentAction::DeleteAgain {
                    id: target,
                    actor: None,
                },
            },
        ],
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets.clone(), options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    assert!(
        !sb.purged_ids().contains(&target),
        "a ticket whose latest deletion is minutes old was purged"
    );
    assert!(sb.deleted_ids().contains(&target));
    assert_eq!(sb.purged_ids().len(), 299, "the others are purged");
    // minutes old: no purge rule matches it any more
    assert_eq!(
        last_decision(e.ctx.store.pool(), target).await.as_deref(),
        Some("keep_no_rule")
    );
    assert!(report.relisted >= 1, "the second listing was seen");
    assert_eq!(report.changed_during_scan, 1);
    let outcomes = last_outcomes(e.ctx.store.pool()).await;
    assert_eq!(outcomes.get(&target).map(String::as_str), Some("not_sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_listing_that_a_keep_rule_matches_is_not_purged() {
    // a purge rule without age: a full scan in id order, which meets the
    // ticket only once; the freshness read before purging sees it again
    let mut tickets = old_closed(250);
    for t in &mut tickets {
        t.actor_id = 900001;
    }
    let target = tickets[3].id;
    let policy = Policy {
        rules: vec![
            RetentionRule {
                actor_ids: Some([1003].into()),
                ..RetentionRule::new("carla-holds", RuleAction::Keep)
            },
            RetentionRule {
                actor_ids: Some([900001].into()),
                ..RetentionRule::new("automation", RuleAction::Purge)
            },
        ],
        min_age: Duration::ZERO,
        protect_ids: Default::default(),
    };
    let options = SandboxOptions {
        script: vec![
            ScriptedAction {
                at: ScriptMoment::BeforeList(2),
                action: AgentAction::Restore(target),
            },
            ScriptedAction {
                at: ScriptMoment::BeforeList(2),
                action: AgentAction::DeleteAgain {
                    id: target,
                    actor: Some((1003, "Carla Agent".into())),
                },
            },
        ],
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let e = engine(&sb, policy, test_settings()).await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    assert_eq!(report.scan.as_str(), "full");
    assert!(
        !sb.purged_ids().contains(&target),
        "deleted again by a held actor, and purged anyway"
    );
    assert_eq!(sb.purged_ids().len(), 249);
    assert_eq!(
        last_decision(e.ctx.store.pool(), target).await.as_deref(),
        Some("keep_rule")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_restored_during_a_run_is_restored_elsewhere_not_confirmed_gone() {
    let tickets = old_closed(150);
    let target = tickets[10].id;
    let options = SandboxOptions {
        // an agent restores it just as its batch (the second, after the
        // lookup that clears it) arrives: the job completes without full
        // success
        script: vec![ScriptedAction {
            at: ScriptMoment::BeforeDestroyMany(2),
            action: AgentAction::Restore(target),
        }],
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let first = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(first.counts.unknown, 50, "{:?}", first.counts);
    let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);
    let outcomes = last_outcomes(e.ctx.store.pool()).await;
    assert_eq!(
        outcomes.get(&target).map(String::as_str),
        Some("restored_elsewhere"),
        "a restored ticket was recorded as gone"
    );
    assert_eq!(second.restored_elsewhere, 1);
    for id in sb.purged_ids() {
        assert!(
            matches!(
                outcomes.get(&id).map(String::as_str),
                Some("purged" | "confirmed_gone")
            ),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_restored_before_its_batch_is_sent_is_left_out_of_it() {
    let tickets = old_closed(150);
    let target = tickets[140].id; // on the first page, oldest-first
    let options = SandboxOptions {
        // restored while the scan reads its second page, before any send
        script: vec![ScriptedAction {
            at: ScriptMoment::BeforeList(3),
            action: AgentAction::Restore(target),
        }],
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    assert_eq!(
        report.counts.purged, 149,
        "the rest purged with full success"
    );
    assert_eq!(report.counts.unknown, 0);
    let sent: Vec<u64> = sb
        .write_requests()
        .into_iter()
        .flat_map(|r| r.ids)
        .collect();
    assert!(
        !sent.contains(&target),
        "a restored ticket was sent for purging"
    );
    let outcomes = last_outcomes(e.ctx.store.pool()).await;
    assert_eq!(outcomes.get(&target).map(String::as_str), Some("not_sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_purge_answered_404_for_a_restored_ticket_settles_as_restored_elsewhere() {
    let tickets = old_closed(20);
    let target = tickets[0].id;
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    assert!(sb.agent_restore(target));
    let (_, results) = zd_retention::manual::purge(&e.ctx, &[target.into()], true, false)
        .await
        .unwrap();
    // answered 404, and found among active tickets at once
    assert_eq!(results[0].outcome, "restored_elsewhere", "{results:?}");
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed);
    let outcomes = last_outcomes(e.ctx.store.pool()).await;
    assert_eq!(
        outcomes.get(&target).map(String::as_str),
        Some("restored_elsewhere")
    );
    assert!(!sb.purged_ids().contains(&target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_whose_answer_was_lost_is_reported_restored() {
    let tickets = old_closed(10);
    let ids: Vec<u64> = tickets.iter().take(3).map(|t| t.id).collect();
    let options = SandboxOptions {
        faults: Faults {
            // the restore is carried out, then the connection breaks; the
            // retry finds nothing left to restore (404)
            drops: 1.0,
            endpoints: vec!["restore_many".into()],
            ..Faults::default()
        },
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let (run, results) =
        zd_retention::manual::restore(&e.ctx, &ids.iter().map(|&i| i.into()).collect::<Vec<_>>())
            .await
            .unwrap();
    assert_eq!(sb.restored_ids(), ids, "the sandbox restored them");
    for r in &results {
        assert_eq!(r.outcome, "restored", "{r:?}");
    }
    let row = e.ctx.store.run(run).await.unwrap().unwrap();
    assert_eq!(
        row.status,
        zd_retention::audit::RunStatus::Completed,
        "{:?}",
        row.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_left_pending_by_a_crash_is_settled_as_restored_not_purged() {
    let tickets = old_closed(10);
    let ids: Vec<u64> = tickets.iter().take(2).map(|t| t.id).collect();
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    // an earlier process recorded the restore and died before the answer
    let store = &e.ctx.store;
    let run = store
        .start_run(Trigger::Restore, false, &"test".into(), Utc::now())
        .await
        .unwrap();
    let batch =
        zd_retention::zendesk::IdBatch::new(ids.iter().map(|&i| i.into()).collect()).unwrap();
    store
        .record_request(run, RequestKind::RestoreMany, &batch, Utc::now())
        .await
        .unwrap();
    for id in &ids {
        assert!(sb.agent_restore(*id)); // Zendesk carried it out
    }
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    let outcomes = last_outcomes(store.pool()).await;
    for id in &ids {
        assert_eq!(
            outcomes.get(id).map(String::as_str),
            Some("restored"),
            "{id}"
        );
    }
    run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    let outcomes = last_outcomes(store.pool()).await;
    for id in &ids {
        assert_eq!(
            outcomes.get(id).map(String::as_str),
            Some("restored"),
            "a restore is never settled as a purge: {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_following_ends_by_job_timeout_while_show_many_keeps_failing() {
    for strict in [false, true] {
        let tickets = old_closed(120);
        let options = SandboxOptions {
            strict_job_ids: strict,
            faults: if strict {
                // every job id unknown: show_many answers 404 for the call
                Faults {
                    job_vanish: 1.0,
                    ..Faults::default()
                }
            } else {
                Faults {
                    server_errors: 1.0,
                    endpoints: vec!["job_statuses".into(), "job_status".into()],
                    ..Faults::default()
                }
            },
            ..fast_sandbox_options(0)
        };
        let sb = sandbox_with(tickets, options).await;
        let mut settings = test_settings();
        settings.job_timeout = Duration::from_millis(400);
        let e = engine(&sb, example_policy(), settings).await;
        // a guard against a hang, not a measurement
        let report =
            tokio::time::timeout(Duration::from_secs(60), run_cycle(&e.ctx, Trigger::Manual))
                .await
                .expect("the run ended")
                .unwrap();
        assert_eq!(
            report.counts.unknown, 120,
            "strict={strict}: {:?}",
            report.counts
        );
        assert_eq!(report.counts.purged, 0);
        // the next scan settles them through the lookup
        sb.set_faults(Faults::default());
        let next = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(next.confirmed_gone, 120, "strict={strict}");
        sb.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_listing_pages_are_retried_and_never_stored() {
    let tickets = clear_tickets(1500, 33);
    let want = selected(&tickets);
    let options = SandboxOptions {
        faults: Faults {
            malformed: 0.2,
            endpoints: vec!["list".into()],
            ..Faults::default()
        },
        seed: 9,
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets.clone(), options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    for i in 0..4 {
        let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(
            report.status,
            RunStatus::Completed,
            "run {i}: {:?}",
            report.error
        );
    }
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(purged, want);
    assert!(
        sb.requests().iter().any(|r| r.fault == Some("malformed")),
        "the fault was injected"
    );

    // every page broken: the run fails, and its error holds no ticket text
    sb.set_faults(Faults {
        malformed: 1.0,
        endpoints: vec!["list".into()],
        ..Faults::default()
    });
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let stored = e
        .ctx
        .store
        .run(report.run_id)
        .await
        .unwrap()
        .unwrap()
        .error
        .unwrap();
    for t in &tickets {
        if let Some(s) = &t.subject {
            assert!(
                !stored.contains(s.as_str()),
                "a subject in runs.error: {stored}"
            );
        }
        assert!(
            !stored.contains(&t.actor_name),
            "an actor in runs.error: {stored}"
        );
    }
    assert!(!stored.contains("Generated by"), "a description: {stored}");
    assert!(stored.contains("looks like"), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_over_five_runs_purges_nothing_young_or_held_and_every_outcome_is_true() {
    let seed = churn_seed(5);
    let tickets = clear_tickets(2500, seed);
    let options = SandboxOptions {
        churn: 4.0,
        seed,
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let mut policy = example_policy();
    policy.rules.insert(
        0,
        RetentionRule {
            actor_ids: Some([1003].into()),
            ..RetentionRule::new("carla-holds", RuleAction::Keep)
        },
    );
    let min_age = policy.min_age;
    let e = engine(&sb, policy, test_settings()).await;
    for i in 0..5 {
        let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(
            report.status,
            RunStatus::Completed,
            "run {i}: {:?}",
            report.error
        );
    }
    let log = sb.churn_log();
    assert!(log.len() > 50, "the agents were at work: {}", log.len());
    let now = Utc::now();
    // checked from the sandbox's side: each ticket as it was when purged.
    // Sends happen after the scan and no listing runs while the jobs do, so
    // the agents (who act on listing requests) cannot slip in between.
    let requested = sb.purge_requested_as();
    for t in sb.purged_tickets() {
        assert_eq!(
            requested.get(&t.id),
            Some(&t),
            "ticket {} changed between its purge request and its job",
            t.id
        );
        let age = now - t.deleted_at;
        assert!(
            age > chrono::Duration::from_std(min_age).unwrap(),
            "ticket {} purged though its latest deletion is {age} old",
            t.id
        );
        assert_ne!(t.actor_id, 1003, "ticket {} purged though held", t.id);
        let subject = t.subject.as_deref().unwrap_or("").to_lowercase();
        assert!(!subject.contains("legal hold"), "ticket {} held", t.id);
        let closed = matches!(t.previous_state.as_str(), "solved" | "closed") && age > days(7);
        let automation = t.actor_id == 900001 && age > chrono::Duration::hours(1);
        assert!(closed || automation, "ticket {} selected by no rule", t.id);
    }
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    let restored: BTreeSet<u64> = sb.restored_ids().into_iter().collect();
    let outcomes = last_outcomes(e.ctx.store.pool()).await;
    for (id, outcome) in &outcomes {
        match outcome.as_str() {
            "purged" | "confirmed_gone" => assert!(
                purged.contains(id),
                "ticket {id} recorded {outcome} but the sandbox did not purge it (restored: {})",
                restored.contains(id)
            ),
            "restored_elsewhere" => assert!(!purged.contains(id), "{id}"),
            _ => {}
        }
    }
    for id in &restored {
        assert_ne!(
            outcomes.get(id).map(String::as_str),
            Some("confirmed_gone"),
            "restored ticket {id} recorded confirmed_gone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_of_a_ticket_older_than_30_days_settles_as_scrubbed() {
    let mut tickets = old_closed(5);
    let old = ticket(88_001, days(35), "closed", 1001);
    tickets.push(old.clone());
    let options = SandboxOptions {
        scrub_after: Some(Duration::from_secs(30 * 86_400)),
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    // an earlier run decided it and lost the answer of its purge
    let store = &e.ctx.store;
    let run = store
        .start_run(Trigger::Cron, false, &"test".into(), Utc::now())
        .await
        .unwrap();
    let decision = zd_retention::audit::DecisionRecord {
        ticket_id: old.id.into(),
        deleted_at: Some(old.deleted_at),
        actor_id: Some(old.actor_id),
        actor_name: None,
        previous_state: Some(old.previous_state.clone()),
        subject: None,
        rule: Some("closed-after-7-days".into()),
        decision: zd_retention::audit::DecisionKind::Purge,
        decided_at: Utc::now(),
        listed: true,
        subject_tags: None,
    };
    store.record_decisions(run, &[decision]).await.unwrap();
    store
        .record_outcomes(
            run,
            None,
            &[old.id.into()],
            Outcome::Unknown,
            Some("answer lost"),
            Utc::now(),
        )
        .await
        .unwrap();
    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    assert!(sb.scrubbed_ids().contains(&old.id));
    let outcomes = last_outcomes(store.pool()).await;
    assert_eq!(
        outcomes.get(&old.id).map(String::as_str),
        Some("scrubbed_by_zendesk")
    );
    assert_eq!(report.scrubbed_by_zendesk, 1);
}

#[tokio::test]
async fn the_sandbox_survives_any_host_header_and_links_name_its_own_address() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sb = crate::helpers::sandbox(300).await;
    for host in ["a b", "evil.example:443", "\u{00e9}"] {
        let mut conn = tokio::net::TcpStream::connect(sb.addr()).await.unwrap();
        let request = format!(
            "GET /api/v2/deleted_tickets.json?page%5Bsize%5D=100 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            !text.contains("evil.example"),
            "a link follows the Host header"
        );
    }
    // and the sandbox still answers
    let client = crate::helpers::client_for(&sb.base_url());
    use futures::StreamExt;
    let pages: Vec<_> = client
        .list_deleted(Default::default())
        .collect::<Vec<_>>()
        .await;
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(Result::is_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_tells_every_profile_apart_with_read_requests_only() {
    use zd_retention::zendesk::probe::{SortFinding, probe};
    let cases: Vec<(&str, SandboxOptions)> = vec![
        ("default", fast_sandbox_options(0)),
        (
            "cursor-sort ignore",
            SandboxOptions {
                cursor_sort: CursorSort::Ignore,
                ..fast_sandbox_options(0)
            },
        ),
        (
            "strict job ids",
            SandboxOptions {
                strict_job_ids: true,
                ..fast_sandbox_options(0)
            },
        ),
        (
            "churn",
            SandboxOptions {
                churn: 3.0,
                ..fast_sandbox_options(0)
            },
        ),
        (
            "scrub after 30 days",
            SandboxOptions {
                scrub_after: Some(Duration::from_secs(30 * 86_400)),
                ..fast_sandbox_options(0)
            },
        ),
    ];
    for (name, options) in cases {
        // deletions over 40 days, so that a 30-day scrub shows
        let tickets: Vec<SandboxTicket> = (0..400u64)
            .map(|i| {
                ticket(
                    30_000 + i,
                    chrono::Duration::hours(i as i64 * 2 + 1),
                    "closed",
                    1001,
                )
            })
            .collect();
        let sb = sandbox_with(tickets, options).await;
        let client = crate::helpers::client_for(&sb.base_url());
        let f = probe(&client).await;
        assert!(sb.write_requests().is_empty(), "{name}: probe wrote");
        assert_eq!(f.credentials, "ok", "{name}");
        assert_eq!(f.role.as_deref(), Some("admin"), "{name}");
        assert_eq!(f.account_limit, Some(200), "{name}");
        assert!(
            f.rate_limit_headers
                .iter()
                .any(|h| h == "ratelimit-remaining"),
            "{name}: {:?}",
            f.rate_limit_headers
        );
        assert!(
            f.active_lookup.starts_with("works"),
            "{name}: {}",
            f.active_lookup
        );
        let expect_cursor = if name == "cursor-sort ignore" {
            SortFinding::Ignored
        } else {
            SortFinding::Honoured
        };
        assert_eq!(f.cursor_sort, expect_cursor, "{name}");
        assert_eq!(
            f.offset_sort,
            SortFinding::Honoured,
            "{name}: offset sorts in every profile"
        );
        assert_eq!(
            f.unknown_job_id.starts_with("the whole call fails"),
            name == "strict job ids",
            "{name}: {}",
            f.unknown_job_id
        );
        assert_eq!(f.view_changed_during_probe, Some(name == "churn"), "{name}");
        let oldest = f.oldest_deletion_days.unwrap();
        if name == "scrub after 30 days" {
            assert!(oldest <= 30.0, "{name}: {oldest}");
        } else {
            assert!(oldest > 33.0, "{name}: {oldest}");
        }
        sb.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_beside_a_cycle_ends_restored_not_confirmed_gone() {
    let tickets = old_closed(120);
    // jobs take 10 minutes of Zendesk's time (1 s here): the restore lands
    // while the purge job is queued
    let options = SandboxOptions {
        job_delay: Duration::from_secs(600),
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let ctx = e.ctx.clone();
    let cycle = tokio::spawn(async move { run_cycle(&ctx, Trigger::Manual).await });
    // wait (briefly, polling) for the first purge request to reach Zendesk
    let first_batch = loop {
        if let Some(r) = sb
            .write_requests()
            .into_iter()
            .find(|r| r.method == "DELETE")
        {
            break r.ids;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let target = first_batch[0];
    let (_, restored) = zd_retention::manual::restore(&e.ctx, &[target.into()])
        .await
        .unwrap();
    assert_eq!(restored[0].outcome, "restored", "{restored:?}");
    let report = cycle.await.unwrap().unwrap();
    assert!(report.counts.unknown >= 1, "{:?}", report.counts);
    let next = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(next.status, RunStatus::Completed, "{:?}", next.error);
    let outcomes = last_outcomes(e.ctx.store.pool()).await;
    assert_eq!(
        outcomes.get(&target).map(String::as_str),
        Some("restored_elsewhere"),
        "a ticket restored beside the cycle was recorded as gone"
    );
    assert!(sb.restored_ids().contains(&target));
    assert!(!sb.purged_ids().contains(&target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_after_a_crash_follows_the_open_jobs_and_does_not_purge_their_tickets_again() {
    let tickets = old_closed(150);
    // jobs take 10 minutes of Zendesk's time (1 s here): still queued when
    // the next process starts
    let options = SandboxOptions {
        job_delay: Duration::from_secs(600),
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets.clone(), options).await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    // an earlier process decided, sent one batch, recorded its job, and died
    let store = &e.ctx.store;
    let run = store
        .start_run(Trigger::Cron, false, &"test".into(), Utc::now())
        .await
        .unwrap();
    let sent: Vec<u64> = tickets.iter().take(100).map(|t| t.id).collect();
    let batch =
        zd_retention::zendesk::IdBatch::new(sent.iter().map(|&i| i.into()).collect()).unwrap();
    let row = store
        .record_request(run, RequestKind::DestroyMany, &batch, Utc::now())
        .await
        .unwrap();
    let job = e.ctx.client.destroy_many(&batch).await.unwrap();
    store
        .record_answer(row, Some(&job.id.0), JobRowStatus::Queued, None, Utc::now())
        .await
        .unwrap();

    let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
    assert_eq!(report.already_in_flight, 100);
    let requests: Vec<Vec<u64>> = sb
        .write_requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.ids)
        .collect();
    for id in &sent {
        let times = requests.iter().filter(|ids| ids.contains(id)).count();
        assert_eq!(times, 1, "ticket {id} was asked to be purged {times} times");
    }
    assert_eq!(sb.purged_ids().len(), 150);
    let outcomes = last_outcomes(store.pool()).await;
    for id in &sent {
        assert_eq!(outcomes.get(id).map(String::as_str), Some("purged"), "{id}");
    }
}

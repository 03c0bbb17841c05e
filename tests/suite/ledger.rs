//! The ticket ledger: a run lists what changed and decides the rest from
//! what it knows; an old database is upgraded in place.

use std::collections::BTreeSet;
use std::time::Duration;
use zd_retention::ids::TicketId;

use chrono::Utc;
use zd_retention::audit::AuditStore;
use zd_retention::cycle::{CycleSettings, RunStatus, Trigger, run_cycle};
use zd_retention::rules::{Policy, RetentionRule, RuleAction};
use zd_retention::sandbox::SandboxTicket;

use crate::helpers::*;

/// Purges only the bot's deletions older than an hour: most tickets are
/// kept, which is when re-listing everything costs most.
fn bot_policy() -> Policy {
    Policy {
        rules: vec![RetentionRule {
            actor_ids: Some([900001].into()),
            older_than: Some(Duration::from_secs(3600)),
            ..RetentionRule::new("bot-deletions", RuleAction::Purge)
        }],
        min_age: Duration::from_secs(3600),
        ..Policy::default()
    }
}

fn ledger_settings() -> CycleSettings {
    CycleSettings {
        reconcile_every: Duration::from_secs(86_400),
        ..test_settings()
    }
}

/// 1,000 tickets over 30 days, one in ten by the bot.
fn mixed(n: u64) -> Vec<SandboxTicket> {
    (0..n)
        .map(|i| {
            let actor = if i % 10 == 0 { 900001 } else { 1001 };
            // spread over 30 days, none within a minute of the hour limit
            let age = chrono::Duration::minutes(120 + (i as i64 * 43_000 / n as i64));
            ticket(10_000 + i, age, "closed", actor)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_run_lists_only_what_changed_and_purges_exactly_the_selection() {
    let tickets = mixed(1000);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let e = engine(&sb, bot_policy(), ledger_settings()).await;
    let first = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    assert_eq!(first.step.as_str(), "reconcile");
    assert_eq!(first.counts.purged, 100);

    // Between the runs: 40 new deletions (8 by the bot), 5 restores of kept
    // tickets, 2 kept tickets restored and deleted again.
    let fresh: Vec<SandboxTicket> = (0..40u64)
        .map(|i| {
            let actor = if i % 5 == 0 { 900001 } else { 1001 };
            ticket(
                50_000 + i,
                chrono::Duration::seconds(i as i64),
                "solved",
                actor,
            )
        })
        .collect();
    sb.insert(fresh.clone());
    let kept_ids: Vec<u64> = tickets
        .iter()
        .filter(|t| t.actor_id != 900001)
        .map(|t| t.id)
        .collect();
    for id in &kept_ids[..5] {
        assert!(sb.agent_restore(*id));
    }
    for id in &kept_ids[5..7] {
        assert!(sb.agent_restore(*id));
        assert!(sb.agent_delete_again(*id));
    }
    let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);
    assert_eq!(second.step.as_str(), "refresh", "{}", second.scan_reason);
    // 42 changes: one page, the order proof, and nothing else
    assert!(
        second.counts.list_requests <= 42u64.div_ceil(100) + 2,
        "{} list requests",
        second.counts.list_requests
    );
    // the one page read holds the 42 changes and older tickets, seen again
    assert!(
        (42..=100).contains(&second.counts.scanned),
        "{}",
        second.counts.scanned
    );
    // new deletions are minutes old: nothing new to purge, and every
    // decision recorded is a first sighting
    assert_eq!(second.counts.purged, 0);
    assert_eq!(second.decisions_recorded, 42);
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    let want: BTreeSet<u64> = tickets
        .iter()
        .filter(|t| t.actor_id == 900001)
        .map(|t| t.id)
        .collect();
    assert_eq!(purged, want);

    // New rules: anything older than a minute, decided from the ledger
    // without a listing (the fresh deletions and the two deleted again are
    // younger)
    let mut e = e;
    e.ctx.policy = std::sync::Arc::new(Policy {
        rules: vec![RetentionRule {
            actor_ids: Some([900001, 1001].into()),
            older_than: Some(Duration::from_secs(60)),
            ..RetentionRule::new("everyone", RuleAction::Purge)
        }],
        min_age: Duration::from_secs(60),
        ..Policy::default()
    });
    let third = {
        let mut ctx = e.ctx.clone();
        ctx.settings.max_purges_per_run = 10;
        run_cycle(&ctx, Trigger::Manual).await.unwrap()
    };
    // far over the limit: refused before anything is sent
    assert_eq!(third.status, RunStatus::Failed);
    assert!(
        third
            .error
            .as_deref()
            .is_some_and(|e| e.contains("max_purges_per_run")),
        "{:?}",
        third.error
    );
    assert_eq!(third.counts.purged, 0);
    assert_eq!(sb.purged_ids().len(), 100, "nothing sent over the limit");
    // restored tickets are no longer in the view; the lookup before
    // sending leaves them out
    let fourth = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(fourth.status, RunStatus::Completed, "{:?}", fourth.error);
    assert_eq!(fourth.step.as_str(), "refresh");
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    for id in &kept_ids[..5] {
        assert!(!purged.contains(id), "restored ticket {id} purged");
    }
    // everything still deleted and older than a minute is purged
    let still: Vec<u64> = sb.deleted_ids();
    for t in sb.tickets() {
        if still.contains(&t.id) {
            assert!(
                Utc::now() - t.deleted_at < chrono::Duration::minutes(2),
                "{} left: deleted {}",
                t.id,
                t.deleted_at
            );
        }
    }
    // deleted again just now: too young for a one-minute rule
    for id in &kept_ids[5..7] {
        assert!(!purged.contains(id), "{id} purged by its old deletion");
    }
    assert_eq!(
        fourth.counts.purged, 893,
        "the other old tickets, from the ledger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_settles_what_left_the_view_and_a_ledger_edit_is_refused() {
    let tickets = mixed(300);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let mut e = engine(&sb, bot_policy(), ledger_settings()).await;
    let first = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(first.counts.purged, 30);
    let kept: Vec<u64> = tickets
        .iter()
        .filter(|t| t.actor_id != 900001)
        .map(|t| t.id)
        .take(3)
        .collect();
    assert!(sb.agent_restore(kept[0]));
    // a refresh does not see what left the view; purges stay `purged`
    let refresh = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(refresh.step.as_str(), "refresh");
    assert_eq!(refresh.confirmed_gone, 0);
    // a reconcile walks everything and settles
    e.ctx.settings.reconcile_every = Duration::ZERO;
    let reconcile = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(reconcile.step.as_str(), "reconcile");
    assert_eq!(reconcile.confirmed_gone, 30);
    assert_eq!(reconcile.restored_elsewhere, 1);
    let counts: std::collections::BTreeMap<String, i64> = e
        .ctx
        .store
        .ledger_counts()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(counts.get("gone"), Some(&30));
    assert_eq!(counts.get("restored"), Some(&1));
    assert_eq!(counts.get("kept"), Some(&269));
    assert!(e.ctx.store.verify_chain().await.unwrap().problem.is_none());

    // someone makes a kept ticket look like the bot's, in the ledger only
    sqlx::query("UPDATE ledger SET actor_id = 900001 WHERE ticket_id = $1")
        .bind(kept[1] as i64)
        .execute(e.ctx.store.pool())
        .await
        .unwrap();
    e.ctx.settings.reconcile_every = Duration::from_secs(86_400);
    let err = run_cycle(&e.ctx, Trigger::Manual).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("changed outside zd-retention"),
        "{err:#}"
    );
    assert_eq!(
        sb.purged_ids().len(),
        30,
        "nothing purged from a forged ledger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_rule_is_decided_from_tags_without_keeping_subjects() {
    let mut tickets = mixed(200);
    for t in tickets.iter_mut().step_by(7) {
        t.subject = Some("Legal hold: contract".into());
    }
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let policy = |pattern: &str| Policy {
        rules: vec![
            RetentionRule {
                subject_matches: Some(regex::Regex::new(pattern).unwrap()),
                ..RetentionRule::new("hold", RuleAction::Keep)
            },
            RetentionRule {
                older_than: Some(Duration::from_secs(3600)),
                ..RetentionRule::new("old", RuleAction::Purge)
            },
        ],
        min_age: Duration::from_secs(3600),
        ..Policy::default()
    };
    let mut e = engine(
        &sb,
        policy("(?i)legal hold"),
        CycleSettings {
            dry_run: true,
            ..ledger_settings()
        },
    )
    .await;
    let first = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    let held = tickets.iter().step_by(7).count() as u64;
    assert_eq!(first.counts.matched, 200 - held);
    // no subject stored anywhere
    let subjects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE subject IS NOT NULL")
        .fetch_one(e.ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(subjects, 0);
    let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(second.step.as_str(), "refresh");
    assert_eq!(
        second.would_purge_in_ledger,
        Some(200 - held),
        "the hold decided from tags"
    );
    let summary = zd_retention::render::summary(&second, &e.ctx.policy);
    assert!(
        summary.contains(&format!("pending    {} would purge in all", 200 - held)),
        "{summary}"
    );
    // a new pattern cannot be answered from the old tags: a whole walk
    e.ctx.policy = std::sync::Arc::new(policy("(?i)contract"));
    let third = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(third.step.as_str(), "reconcile", "{}", third.scan_reason);
    assert!(
        third.scan_reason.contains("subject pattern"),
        "{}",
        third.scan_reason
    );
    assert_eq!(third.counts.matched, 200 - held);
    let fourth = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(fourth.step.as_str(), "refresh");
    // subjects kept for a while, then no longer: the rows that hold a
    // subject are decided from it, the holds still hold
    e.ctx.settings.record_subjects = true;
    e.ctx.settings.reconcile_every = Duration::ZERO;
    let kept_subjects = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(kept_subjects.counts.matched, 200 - held);
    e.ctx.settings.record_subjects = false;
    e.ctx.settings.reconcile_every = Duration::from_secs(86_400);
    let dropped = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(dropped.step.as_str(), "refresh", "{}", dropped.scan_reason);
    assert_eq!(dropped.counts.matched, 200 - held);
}

#[tokio::test]
async fn a_database_made_before_the_ledger_is_upgraded_and_still_verifies() {
    if crate::helpers::sqlite_only("an SQLite fixture of schema 6 upgraded in place") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/schemas/schema-06.db"
        ),
        &db,
    )
    .unwrap();
    let store = AuditStore::open(&db).await.unwrap();
    let report = store.verify_chain().await.unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(report.rows, 869, "every row of the old history");
    let counts: std::collections::BTreeMap<String, i64> =
        store.ledger_counts().await.unwrap().into_iter().collect();
    assert_eq!(counts.get("gone"), Some(&83), "{counts:?}");
    let decided: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT ticket_id) FROM decisions")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        counts.values().sum::<i64>(),
        decided,
        "one row per ticket ever decided"
    );
    // the history answers as before: a purged ticket's story
    let purged: i64 =
        sqlx::query_scalar("SELECT ticket_id FROM outcomes WHERE outcome = 'purged' LIMIT 1")
            .fetch_one(store.pool())
            .await
            .unwrap();
    let story = store
        .ticket_history(TicketId::new(purged as u64))
        .await
        .unwrap();
    let kinds: Vec<&str> = story.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"decision") && kinds.contains(&"outcome"),
        "{kinds:?}"
    );
    // and the live rows agree with their decisions: a run may build on them
    let mut live = 0;
    store
        .ledger_live_chunks(|rows| {
            live += rows.len() as i64;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(live, decided - 83);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_each_purges_evidence_and_the_chain_still_verifies() {
    let tickets = mixed(300);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let mut e = engine(&sb, bot_policy(), ledger_settings()).await;
    run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    // five kept tickets leave the view (deleted for good elsewhere: here,
    // restored and purged by hand in the sandbox), and a reconcile settles
    let kept: Vec<u64> = tickets
        .iter()
        .filter(|t| t.actor_id != 900001)
        .map(|t| t.id)
        .take(5)
        .collect();
    {
        let mut state = sb.state();
        for id in &kept {
            assert!(state.agent_restore(*id));
        }
    }
    e.ctx.settings.reconcile_every = Duration::ZERO;
    let settled = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(settled.confirmed_gone, 30);
    assert_eq!(settled.restored_elsewhere, 5);
    let store = &e.ctx.store;
    let pool = store.pool();
    let rows = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let purge_decisions = rows("SELECT COUNT(*) FROM decisions WHERE decision = 'purge'").await;
    let decisions = rows("SELECT COUNT(*) FROM decisions").await;

    // everything settled counts as long ago
    let pruned = store
        .prune_details(Utc::now() + chrono::Duration::days(1), Utc::now())
        .await
        .unwrap();
    // the 5 restored tickets' keep decisions; the purged tickets' first
    // sightings were purge decisions (they were old)
    assert_eq!(pruned, 5, "{pruned}");
    assert_eq!(rows("SELECT COUNT(*) FROM decisions").await, decisions - 5);
    assert_eq!(
        rows("SELECT COUNT(*) FROM decisions WHERE decision = 'purge'").await,
        purge_decisions,
        "every purge decision kept"
    );
    assert_eq!(
        rows("SELECT COUNT(*) FROM outcomes WHERE outcome IN ('purged', 'confirmed_gone')").await,
        60,
        "every purge outcome kept"
    );
    assert_eq!(rows("SELECT COUNT(*) FROM ledger").await, 300 - 35);
    let report = store.verify_chain().await.unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(report.pruned, 5);
    // a purged ticket's story is whole
    let purged = sb.purged_ids()[0];
    let story = store.ticket_history(purged.into()).await.unwrap();
    let whats: Vec<&str> = story.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(whats, ["purge", "purged", "confirmed_gone"], "{story:?}");
    // a run goes on on the pruned database, and it still verifies
    let next = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(next.status, RunStatus::Completed, "{:?}", next.error);
    assert!(store.verify_chain().await.unwrap().problem.is_none());

    // a purge decision removed and passed off as pruned is caught
    let victim: i64 = rows("SELECT MIN(id) FROM decisions WHERE decision = 'purge'").await;
    sqlx::query("DELETE FROM decisions WHERE id = $1")
        .bind(victim)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO pruned (tbl, row_id, run_id, what, pruned_at) VALUES ('decisions', $1, 1, 'keep_no_rule', '2026-01-01T00:00:00.000Z')")
        .bind(victim)
        .execute(pool)
        .await
        .unwrap();
    let report = store.verify_chain().await.unwrap();
    let problem = report.problem.expect("a forged prune is caught");
    assert!(problem.contains("pruned"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_restored_then_deleted_again_and_purged_keeps_each_deletion_apart() {
    // found by a hostile run: the purge of the second deletion was written
    // onto the first deletion's row too, and every later run refused the
    // ledger as edited
    let tickets = mixed(300);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let policy = Policy {
        rules: vec![RetentionRule {
            actor_ids: Some([900001].into()),
            ..RetentionRule::new("bot", RuleAction::Purge)
        }],
        min_age: Duration::ZERO,
        ..Policy::default()
    };
    let mut e = engine(&sb, policy, test_settings()).await;
    let first = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(first.counts.purged, 30);
    let kept = tickets.iter().find(|t| t.actor_id == 1001).unwrap().id;
    assert!(sb.agent_restore(kept));
    let second = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(second.restored_elsewhere, 1);
    // deleted again, by the bot: the new deletion is selected
    assert!(
        sb.state()
            .agent_delete_again(kept, Utc::now(), Some((900001, "Automation".into())))
    );
    e.ctx.settings.reconcile_every = Duration::from_secs(86_400);
    let third = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(third.status, RunStatus::Completed, "{:?}", third.error);
    assert_eq!(third.step.as_str(), "refresh");
    assert!(sb.purged_ids().contains(&kept));
    let states: Vec<(String, String)> = sqlx::query_as(
        "SELECT decision, state FROM ledger WHERE ticket_id = $1 ORDER BY deleted_at",
    )
    .bind(kept as i64)
    .fetch_all(e.ctx.store.pool())
    .await
    .unwrap();
    assert_eq!(
        states,
        [
            ("keep_no_rule".to_string(), "restored".to_string()),
            ("purge".to_string(), "purged".to_string())
        ]
    );
    let fourth = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(fourth.status, RunStatus::Completed, "{:?}", fourth.error);
    assert!(e.ctx.store.verify_chain().await.unwrap().problem.is_none());
    // a ledger edited outside fails the run, recorded as failed, and verify
    // names it too
    sqlx::query(
        "UPDATE ledger SET previous_state = 'solved' WHERE ticket_id = $1 AND state = 'kept'",
    )
    .bind(
        tickets
            .iter()
            .filter(|t| t.actor_id == 1001)
            .nth(3)
            .unwrap()
            .id as i64,
    )
    .execute(e.ctx.store.pool())
    .await
    .unwrap();
    let problem = e.ctx.store.verify_chain().await.unwrap().problem.unwrap();
    assert!(problem.contains("ledger"), "{problem}");
    assert!(run_cycle(&e.ctx, Trigger::Manual).await.is_err());
    let last: String = sqlx::query_scalar("SELECT status FROM runs ORDER BY id DESC LIMIT 1")
        .fetch_one(e.ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(last, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_ledger_row_removed_or_moved_to_a_state_nothing_recorded() {
    let tickets = mixed(300);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let e = engine(&sb, bot_policy(), test_settings()).await;
    run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    let store = &e.ctx.store;
    assert!(store.verify_chain().await.unwrap().problem.is_none());
    let kept = tickets.iter().find(|t| t.actor_id == 1001).unwrap().id as i64;
    // a purged ticket's row made kept again
    let gone = sb.purged_ids()[0] as i64;
    let state: String = sqlx::query_scalar("SELECT state FROM ledger WHERE ticket_id = $1")
        .bind(gone)
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE ledger SET state = 'kept' WHERE ticket_id = $1")
        .bind(gone)
        .execute(store.pool())
        .await
        .unwrap();
    let problem = store.verify_chain().await.unwrap().problem;
    assert!(
        problem
            .as_deref()
            .is_some_and(|p| p.contains(&format!("ticket {gone}"))),
        "{problem:?}"
    );
    sqlx::query("UPDATE ledger SET state = $1 WHERE ticket_id = $2")
        .bind(state)
        .bind(gone)
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.verify_chain().await.unwrap().problem.is_none());
    for (edit, undo) in [
        (
            "UPDATE ledger SET state = 'gone' WHERE ticket_id = $1",
            "UPDATE ledger SET state = 'kept' WHERE ticket_id = $1",
        ),
        (
            "UPDATE ledger SET state = 'restored' WHERE ticket_id = $1",
            "UPDATE ledger SET state = 'kept' WHERE ticket_id = $1",
        ),
        (
            "UPDATE ledger SET state = 'selected' WHERE ticket_id = $1",
            "UPDATE ledger SET state = 'kept' WHERE ticket_id = $1",
        ),
        (
            "UPDATE ledger SET state = 'superseded' WHERE ticket_id = $1",
            "UPDATE ledger SET state = 'kept' WHERE ticket_id = $1",
        ),
        (
            "UPDATE ledger SET deleted_at = '2099-01-01T00:00:00.000Z' WHERE ticket_id = $1",
            "UPDATE ledger SET deleted_at = (SELECT deleted_at FROM decisions WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1) WHERE ticket_id = $1",
        ),
        ("DELETE FROM ledger WHERE ticket_id = $1", "SELECT $1"),
    ] {
        sqlx::query(edit)
            .bind(kept)
            .execute(store.pool())
            .await
            .unwrap();
        let problem = store.verify_chain().await.unwrap().problem;
        assert!(
            problem
                .as_deref()
                .is_some_and(|p| p.contains(&format!("ticket {kept}"))),
            "{edit}: {problem:?}"
        );
        sqlx::query(undo)
            .bind(kept)
            .execute(store.pool())
            .await
            .unwrap();
        if !edit.starts_with("DELETE") {
            assert!(
                store.verify_chain().await.unwrap().problem.is_none(),
                "{undo}"
            );
        }
    }
}

#[test]
fn read_only_commands_read_an_older_database_through_an_upgraded_copy() {
    if crate::helpers::sqlite_only("an older SQLite file read through an upgraded copy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/schemas/schema-06.db"
        ),
        &db,
    )
    .unwrap();
    let before = std::fs::read(&db).unwrap();
    let bin = env!("CARGO_BIN_EXE_zd-retention");
    for args in [
        vec!["audit", "verify"],
        vec!["audit", "runs"],
        vec!["audit", "ledger"],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .arg("--database")
            .arg(&db)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("older zd-retention"),
            "{args:?}"
        );
    }
    assert!(
        std::fs::read(&db).unwrap() == before,
        "reading never writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_clock_far_from_zendesks_purges_nothing() {
    // found by a hostile run: with the host's clock two hours ahead, a
    // ticket deleted 16 minutes earlier passed min_age = 1h and was purged
    let tickets = mixed(300);
    for (offset, purges) in [
        (chrono::Duration::hours(-2), false),
        (chrono::Duration::seconds(-30), true),
    ] {
        let options = zd_retention::sandbox::SandboxOptions {
            clock_offset: offset,
            ..fast_sandbox_options(0)
        };
        let sb = sandbox_with(tickets.clone(), options).await;
        let e = engine(&sb, bot_policy(), test_settings()).await;
        let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        if purges {
            assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
            assert_eq!(sb.purged_ids().len(), 30);
        } else {
            assert_eq!(report.status, RunStatus::Failed);
            let error = report.error.unwrap_or_default();
            assert!(
                error.contains("ahead of Zendesk's") && error.contains("clock_skew"),
                "{error}"
            );
            assert!(sb.purged_ids().is_empty(), "purged on a wrong clock");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_twice_never_gives_a_pruned_id_out_again_and_a_wrong_clock_prunes_nothing() {
    // found by a hostile run: pruning the newest outcome rows let SQLite
    // give their ids to the next rows (verify then saw a changed row), and
    // a ticket pruned twice broke the pruned table's unique key
    let tickets = mixed(300);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let mut e = engine(&sb, bot_policy(), test_settings()).await;
    run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    let kept: Vec<u64> = tickets
        .iter()
        .filter(|t| t.actor_id != 900001)
        .map(|t| t.id)
        .collect();
    let store = e.ctx.store.clone();
    let later = || Utc::now() + chrono::Duration::days(1);
    for round in 0..3 {
        // kept tickets are purged by another integration: their left_view
        // outcomes are the newest rows, and the prune takes them; then a
        // restore adds an outcome row
        let others = zd_retention::zendesk::IdBatch::new(
            kept[round * 5..round * 5 + 5]
                .iter()
                .map(|&i| i.into())
                .collect(),
        )
        .unwrap();
        e.ctx.client.destroy_many(&others).await.unwrap();
        // their job ends: the next listing no longer shows them
        jobs_ended(&sb).await;
        for id in others.ids() {
            assert!(
                sb.purged_ids().contains(&id.get()),
                "ticket {id} not purged"
            );
        }
        // ticket kept[100] leaves (restored), comes back (deleted again),
        // and leaves again: its ledger rows are pruned twice
        match round {
            0 => assert!(sb.agent_restore(kept[100])),
            1 => {
                assert!(sb.agent_delete_again(kept[100]));
                assert!(sb.agent_restore(kept[101]));
            }
            _ => assert!(sb.agent_restore(kept[100])),
        }
        let report = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
        assert_eq!(report.status, RunStatus::Completed, "{:?}", report.error);
        store.prune_details(later(), Utc::now()).await.unwrap();
        let check = store.verify_chain().await.unwrap();
        assert!(
            check.problem.is_none(),
            "round {round}: {:?}",
            check.problem
        );
    }
    let next = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(next.status, RunStatus::Completed, "{:?}", next.error);
    assert!(store.verify_chain().await.unwrap().problem.is_none());

    // with Zendesk's clock two hours off, a run prunes nothing at all
    assert!(sb.agent_restore(kept[40]));
    run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    e.ctx.settings.keep_details = Some(Duration::from_secs(31 * 86_400));
    sqlx::query("UPDATE ledger SET state_at = '2020-01-01T00:00:00.000Z' WHERE state = 'restored'")
        .execute(store.pool())
        .await
        .unwrap();
    sb.set_clock_offset(chrono::Duration::hours(-2));
    let skewed = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(skewed.status, RunStatus::Failed);
    assert_eq!(
        skewed.pruned, 0,
        "pruned on a clock Zendesk's disagrees with"
    );
    sb.set_clock_offset(chrono::Duration::zero());
    let fine = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(fine.status, RunStatus::Completed, "{:?}", fine.error);
    assert!(fine.pruned > 0, "a clean run on a good clock prunes");
    assert!(store.verify_chain().await.unwrap().problem.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_manual_purge_of_a_ticket_the_ledger_knows_lands_on_its_row() {
    // found by a hostile run: the forced purge added a row with no deletion
    // time that never settled, and marked the real row superseded
    let tickets = mixed(300);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let e = engine(&sb, bot_policy(), test_settings()).await;
    run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    let kept = tickets.iter().find(|t| t.actor_id == 1001).unwrap().id;
    let (_, results) = zd_retention::manual::purge(&e.ctx, &[kept.into()], true, false)
        .await
        .unwrap();
    assert_eq!(results[0].outcome, "purged", "{results:?}");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT deleted_at, state FROM ledger WHERE ticket_id = $1")
            .bind(kept as i64)
            .fetch_all(e.ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "purged");
    assert!(!rows[0].0.is_empty());
    let next = run_cycle(&e.ctx, Trigger::Manual).await.unwrap();
    assert_eq!(
        next.confirmed_gone, 31,
        "the 30 of run 1 and the forced one"
    );
    assert!(e.ctx.store.verify_chain().await.unwrap().problem.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_twice_in_one_flush_ends_as_its_last_decision_says() {
    // A ticket listed twice in one scan (a listing that shifts under the
    // walk) is decided twice, and both decisions can fall in one flush. On
    // PostgreSQL one statement may not change a row twice: written in one
    // batch, the flush failed.
    let dir = tempfile::tempdir().unwrap();
    let store = AuditAt::new(dir.path()).await.open().await.unwrap();
    let run = store
        .start_run(Trigger::Cron, false, &"test".into(), Utc::now())
        .await
        .unwrap();
    let first_deletion = Utc::now() - chrono::Duration::days(3);
    let again = Utc::now() - chrono::Duration::hours(1);
    let decided = |id: u64, deleted: chrono::DateTime<Utc>, kind, rule: Option<&str>| {
        zd_retention::audit::DecisionRecord {
            ticket_id: TicketId::new(id),
            deleted_at: Some(deleted),
            actor_id: Some(1001),
            actor_name: None,
            previous_state: Some("closed".into()),
            subject: None,
            rule: rule.map(Into::into),
            decision: kind,
            decided_at: Utc::now(),
            listed: true,
            subject_tags: None,
        }
    };
    use zd_retention::audit::DecisionKind as K;
    let keep = |i: u64| decided(50_000 + i, first_deletion, K::KeepNoRule, None);
    let mut flush: Vec<_> = (0..300).map(keep).collect();
    // the same deletion decided again, differently; and a ticket deleted
    // again between its two listings; both near their first decisions
    flush.push(decided(50_007, first_deletion, K::Purge, Some("bot")));
    flush.push(decided(50_009, again, K::Purge, Some("bot")));
    flush.extend((300..1500).map(keep));
    flush.push(decided(60_000, first_deletion, K::KeepNoRule, None));
    store.record_decisions(run, &flush).await.unwrap();
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT ticket_id, decision, state FROM ledger WHERE ticket_id IN (50007, 50009, 50010) ORDER BY ticket_id, deleted_at",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (50_007, "purge".into(), "selected".into()),
            (50_009, "keep_no_rule".into(), "superseded".into()),
            (50_009, "purge".into(), "selected".into()),
            (50_010, "keep_no_rule".into(), "kept".into()),
        ]
    );
    let counts = store.ledger_counts().await.unwrap();
    assert_eq!(
        counts,
        [
            ("kept".to_string(), 1499),
            ("selected".to_string(), 2),
            ("superseded".to_string(), 1)
        ]
    );
    assert!(store.verify_chain().await.unwrap().problem.is_none());
}

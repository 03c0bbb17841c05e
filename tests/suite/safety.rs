//! The safety model on every path (issue 10): a manual purge honours a
//! dry-run config and the config's keep rules, and a rule cannot select
//! everything in disguise.

use chrono::Utc;
use zd_retention::rules::{RetentionRule, RuleAction, normalize};
use zd_retention::sandbox::SandboxTicket;

use crate::helpers::{engine, example_policy, fast_sandbox_options, sandbox_with, test_settings};

fn old(id: u64, subject: &str) -> SandboxTicket {
    SandboxTicket {
        id,
        subject: Some(subject.into()),
        actor_id: 1001,
        actor_name: "Ada Lovelace".into(),
        deleted_at: Utc::now() - chrono::Duration::days(9),
        previous_state: "closed".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_purge_in_a_dry_run_config_sends_nothing_unless_live() {
    let sb = sandbox_with(vec![old(1, "a"), old(2, "b")], fast_sandbox_options(0)).await;
    let mut settings = test_settings();
    settings.dry_run = true;
    let e = engine(&sb, example_policy(), settings).await;
    let (run, results) = zd_retention::manual::purge(&e.ctx, &[1, 2], false, false)
        .await
        .unwrap();
    assert!(
        sb.write_requests().is_empty(),
        "a dry-run config sent a purge"
    );
    assert!(
        results.iter().all(|r| r.outcome == "would_purge"),
        "{results:?}"
    );
    let row = e.ctx.store.run(run).await.unwrap().unwrap();
    assert!(row.dry_run, "the run is recorded as a dry run");
    let decisions: Vec<String> =
        sqlx::query_scalar("SELECT decision FROM decisions WHERE run_id = ?")
            .bind(run)
            .fetch_all(e.ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(decisions, ["would_purge", "would_purge"]);

    let (_, results) = zd_retention::manual::purge(&e.ctx, &[1, 2], false, true)
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.outcome == "purged"), "{results:?}");
    assert_eq!(sb.purged_ids(), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_rule_holds_a_manual_purge_unless_forced_and_forcing_is_recorded() {
    let sb = sandbox_with(
        vec![old(1, "Legal hold: contract"), old(2, "Refund")],
        fast_sandbox_options(0),
    )
    .await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let (_, results) = zd_retention::manual::purge(&e.ctx, &[1, 2], false, false)
        .await
        .unwrap();
    let held = results.iter().find(|r| r.id == 1).unwrap();
    assert_eq!(held.outcome, "not_sent");
    assert!(
        held.detail.as_deref().unwrap().contains("legal-hold"),
        "{held:?}"
    );
    assert_eq!(sb.purged_ids(), [2], "the held ticket stays");

    let (run, results) = zd_retention::manual::purge(&e.ctx, &[1], true, false)
        .await
        .unwrap();
    assert_eq!(results[0].outcome, "purged");
    let rule: String = sqlx::query_scalar("SELECT rule FROM decisions WHERE run_id = ?")
        .bind(run)
        .fetch_one(e.ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(rule, "(manual --force)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_rules_match_states_and_names_however_they_are_spelled() {
    let mut tickets = vec![
        old(1, "x"),
        old(2, "x"),
        old(3, "x"),
        old(4, "x"),
        old(5, "x"),
    ];
    tickets[0].previous_state = "Closed ".into();
    tickets[1].previous_state = "CLOSED".into();
    tickets[2].actor_name = "Jose\u{301} Stra\u{df}e ".into();
    tickets[3].actor_name = "JOSÉ STRASSE".into();
    tickets[4].previous_state = "open".into(); // not held: purged
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let mut policy = example_policy();
    policy.rules.insert(
        0,
        RetentionRule {
            previous_state: Some([normalize("closed")].into()),
            ..RetentionRule::new("hold-closed", RuleAction::Keep)
        },
    );
    policy.rules.insert(
        0,
        RetentionRule {
            actor_names: Some([normalize("José Straße")].into()),
            ..RetentionRule::new("hold-jose", RuleAction::Keep)
        },
    );
    policy.rules.push(RetentionRule {
        older_than: Some(std::time::Duration::from_secs(86_400)),
        ..RetentionRule::new("older-than-a-day", RuleAction::Purge)
    });
    let e = engine(&sb, policy, test_settings()).await;
    let report = zd_retention::cycle::run_cycle(&e.ctx, zd_retention::cycle::Trigger::Manual)
        .await
        .unwrap();
    assert_eq!(sb.purged_ids(), [5], "{:?}", report.kept);
}

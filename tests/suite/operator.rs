//! The operator's commands through the binary: plan, restore, purge, the
//! audit questions (table and JSON), completions.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use zd_retention::sandbox::Sandbox;

use crate::helpers::{TOKEN, clear_tickets, fast_sandbox_options};

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn config(dir: &Path, base_url: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[zendesk]\nbase_url = \"{base_url}\"\nemail = \"ops@acme.example\"\ntoken_env = \"ZD_TEST_TOKEN\"\njob_poll_interval = \"20ms\"\n\
         [zendesk.rate_limits]\nlist = \"10/100ms\"\nlist_deep = \"5/100ms\"\naccount = \"200/100ms\"\n\
         [audit]\n{}\n[safety]\ndry_run = false\nmin_age = \"1h\"\n\
         [[rules]]\nname = \"legal-hold\"\naction = \"keep\"\nsubject_matches = \"(?i)legal hold\"\n\
         [[rules]]\nname = \"closed-after-7-days\"\naction = \"purge\"\nprevious_state = [\"solved\", \"closed\"]\nolder_than = \"7d\"\n",
        crate::helpers::AuditAt::at(dir).config_line()
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn zd(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .await
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_takes_tickets_out_of_the_deleted_view_and_reports_each_id() {
    let sb = Sandbox::start_with(
        fast_sandbox_options(0),
        clear_tickets(400, 31),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sb.base_url());
    let ids = sb.deleted_ids();
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    // 999 was never deleted: reported, and the others still restored
    let out = zd(
        &config,
        &["restore", &a, &b, "999", "--yes", "--format", "json"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = json(&out);
    let outcome = |id: &str| {
        results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"].as_u64().map(|v| v.to_string()).as_deref() == Some(id))
            .unwrap()["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome(&a), "restored");
    assert_eq!(outcome(&b), "restored");
    assert_eq!(outcome("999"), "not_restored");
    assert_eq!(sb.restored_ids(), vec![ids[0], ids[1]]);
    // the audit shows when, by which command and which ids
    let history = json(&zd(&config, &["audit", "ticket", &a, "--format", "json"]).await);
    assert_eq!(history[0]["what"], "restored");
    let runs = json(&zd(&config, &["audit", "runs", "--format", "json"]).await);
    assert_eq!(runs[0]["trigger"], "restore");
    // without --yes and without a terminal it refuses
    let out = zd(&config, &["restore", &ids[2].to_string()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_purge_keeps_the_safety_floor_unless_forced() {
    let all = clear_tickets(400, 31);
    // not held by the config's legal-hold keep rule, which also applies
    let old = all
        .iter()
        .find(|t| {
            chrono::Utc::now() - t.deleted_at > chrono::Duration::days(2)
                && !t
                    .subject
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains("legal hold")
        })
        .unwrap()
        .id;
    let young = all
        .iter()
        .find(|t| chrono::Utc::now() - t.deleted_at < chrono::Duration::minutes(50))
        .unwrap()
        .id;
    let sb = Sandbox::start_with(fast_sandbox_options(0), all, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sb.base_url());
    let out = zd(&config, &["purge", &old.to_string()]).await;
    assert_eq!(out.status.code(), Some(2), "purge needs --yes");
    let out = zd(
        &config,
        &[
            "purge",
            &old.to_string(),
            &young.to_string(),
            "--yes",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "the young ticket is refused");
    let results = json(&out);
    assert_eq!(
        results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == old)
            .unwrap()["outcome"],
        "purged"
    );
    let refused = results
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == young)
        .unwrap()
        .clone();
    assert_eq!(refused["outcome"], "not_sent");
    assert!(refused["detail"].as_str().unwrap().contains("min_age"));
    assert_eq!(sb.purged_ids(), vec![old]);
    let out = zd(&config, &["purge", &young.to_string(), "--yes", "--force"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sb.purged_ids().contains(&young));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_each_audit_question_answer_in_one_command_as_table_and_json() {
    let all = clear_tickets(400, 31);
    let sb = Sandbox::start_with(
        fast_sandbox_options(0),
        all.clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sb.base_url());
    let first = all
        .iter()
        .find(|t| {
            matches!(t.previous_state.as_str(), "solved" | "closed")
                && chrono::Utc::now() - t.deleted_at > chrono::Duration::days(8)
                && !t
                    .subject
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains("legal hold")
        })
        .unwrap()
        .id;

    let plan = json(
        &zd(
            &config,
            &["plan", "--format", "json", "--explain", &first.to_string()],
        )
        .await,
    );
    assert!(plan["would_purge"]["closed-after-7-days"].as_u64().unwrap() > 0);
    assert_eq!(plan["explain"]["rules"][1]["matched"], true);
    assert!(sb.write_requests().is_empty(), "a plan writes nothing");
    assert!(
        !crate::helpers::AuditAt::at(dir.path())
            .holds_anything()
            .await,
        "a plan records nothing"
    );

    let out = zd(&config, &["once"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let questions: Vec<Vec<&str>> = vec![
        vec![
            "audit",
            "ticket",
            &Box::leak(first.to_string().into_boxed_str())[..],
        ],
        vec!["audit", "run", "1"],
        vec!["audit", "stats", "--by", "day"],
        vec!["audit", "search", "--outcome", "failed", "--since", "7d"],
        vec![
            "audit",
            "search",
            "--rule",
            "closed-after-7-days",
            "--since",
            &today,
        ],
        vec!["audit", "runs", "--since", "1d"],
        vec!["audit", "stats", "--by", "rule"],
        vec!["audit", "stats", "--by", "outcome"],
    ];
    for q in &questions {
        let table = zd(&config, q).await;
        assert!(
            table.status.success(),
            "{q:?}: {}",
            String::from_utf8_lossy(&table.stderr)
        );
        assert!(!table.stdout.is_empty(), "{q:?} printed nothing");
        let mut with_json = q.clone();
        with_json.extend(["--format", "json"]);
        json(&zd(&config, &with_json).await);
    }
    let history = json(
        &zd(
            &config,
            &["audit", "ticket", &first.to_string(), "--format", "json"],
        )
        .await,
    );
    assert_eq!(history[0]["what"], "purge");
    assert_eq!(history[0]["rule"], "closed-after-7-days");
    assert_eq!(history[1]["what"], "purged");
    // injection strings are only values
    for evil in [
        "x' OR 1=1 --",
        "\"; DROP TABLE decisions; --",
        "%' UNION SELECT * FROM runs --",
    ] {
        let found = json(
            &zd(
                &config,
                &["audit", "search", "--rule", evil, "--format", "json"],
            )
            .await,
        );
        assert_eq!(found.as_array().unwrap().len(), 0, "{evil}");
    }
    let still = json(
        &zd(
            &config,
            &[
                "audit",
                "search",
                "--rule",
                "closed-after-7-days",
                "--limit",
                "1",
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(
        still.as_array().unwrap().len(),
        1,
        "the decisions table is intact"
    );
    let export = zd(&config, &["audit", "export", "--format", "jsonl"]).await;
    let lines = String::from_utf8_lossy(&export.stdout)
        .lines()
        .inspect(|l| {
            serde_json::from_str::<Value>(l).unwrap();
        })
        .count();
    assert!(lines > 0);
    let csv = zd(&config, &["audit", "export", "--format", "csv"]).await;
    assert_eq!(
        String::from_utf8_lossy(&csv.stdout).lines().count(),
        lines + 1,
        "a header and a line per decision"
    );
    // columns in the schema's order, quoted where a field holds a comma
    let runs = zd(&config, &["audit", "runs", "--format", "csv"]).await;
    let text = String::from_utf8_lossy(&runs.stdout);
    let mut rows = text.lines();
    assert!(
        rows.next().is_some_and(|h| h.starts_with(
            "id,trigger,started_at,finished_at,dry_run,config_hash,status,scanned,matched,purged"
        )),
        "{text}"
    );
    for args in [
        &["audit", "run", "1", "--format", "csv"][..],
        &["audit", "stats", "--by", "rule", "--format", "csv"][..],
        &["audit", "ticket", "1", "--format", "csv"][..],
    ] {
        let out = zd(&config, args).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("zd-retention"));
    }
}

#[test]
fn every_command_help_has_an_example() {
    for command in [
        "sandbox",
        "list",
        "check-config",
        "once",
        "run",
        "demo",
        "plan",
        "restore",
        "purge",
        "completions",
        "audit runs",
        "audit run",
        "audit ticket",
        "audit search",
        "audit export",
        "audit stats",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example"),
            "{command} --help has no example:\n{text}"
        );
    }
}

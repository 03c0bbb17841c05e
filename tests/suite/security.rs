//! Secrets and tamper evidence: the audit chain catches rows edited or
//! deleted from outside (`sqlite3`, `psql`); world-readable secrets are
//! warned about.

use std::path::Path;
use std::process::Command;

use zd_retention::sandbox::Sandbox;

use crate::helpers::{AuditAt, TOKEN, fast_sandbox_options};

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn verify(audit: &AuditAt, dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .args(audit.cli_args(dir))
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// A copy of the audit, edited from outside (as with `sqlite3` or `psql`),
/// and what `verify` says of it.
async fn tampered(audit: &AuditAt, dir: &Path, name: &str, sql: &str) -> (i32, String) {
    let copy = audit.copy(name).await;
    copy.edit(sql).await;
    verify(&copy, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hash_chain_names_rows_edited_or_deleted_from_outside() {
    let sb = Sandbox::start_local(fast_sandbox_options(400))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = AuditAt::new(dir.path()).await;
    let dir = dir.path();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[zendesk]\nbase_url = \"{}\"\nemail = \"a@b.c\"\ntoken_env = \"ZD_TEST_TOKEN\"\njob_poll_interval = \"20ms\"\n[zendesk.rate_limits]\nlist = \"10/100ms\"\naccount = \"200/100ms\"\n[audit]\n{}\n[safety]\ndry_run = false\n[[rules]]\nname = \"old\"\naction = \"purge\"\nolder_than = \"20d\"\n",
            sb.base_url(),
            db.config_line()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text) = verify(&db, dir);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact"), "{text}");
    let tampered = |name: &'static str, sql: &'static str| tampered(&db, dir, name, sql);
    let (code, text) = tampered(
        "edit",
        "UPDATE decisions SET rule = 'legal-hold' WHERE id = 7",
    )
    .await;
    assert_eq!(code, 1);
    assert!(text.contains("row 7 of decisions was changed"), "{text}");
    let (code, text) = tampered("delete", "DELETE FROM outcomes WHERE id = 3").await;
    assert_eq!(code, 1);
    assert!(text.contains("row 3 of outcomes was removed"), "{text}");
    let (code, text) = tampered("job", "UPDATE jobs SET ticket_ids = '1,2,3' WHERE id = 1").await;
    assert_eq!(code, 1);
    assert!(text.contains("row 1 of jobs was changed"), "{text}");
    let (code, text) = tampered(
        "insert",
        "INSERT INTO decisions (run_id, ticket_id, decision, decided_at) VALUES (1, 42, 'purge', '2026-01-01')",
    )
    .await;
    assert_eq!(code, 1);
    assert!(text.contains("not in the chain"), "{text}");
    let (code, text) = tampered(
        "chain",
        "UPDATE audit_chain SET digests = 'x' || substr(digests, 2) WHERE seq = 2",
    )
    .await;
    assert_eq!(code, 1);
    assert!(text.contains("chain entry 2"), "{text}");

    // updates of what changes after insert: a run's figures and status, a
    // job's Zendesk id, the derived decision counts
    let (code, text) = tampered(
        "run-figures",
        "UPDATE runs SET purged = 0, status = 'completed' WHERE id = 1",
    )
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("row 1 of runs was changed after its last recorded state"),
        "{text}"
    );
    let (code, text) = tampered(
        "job-id",
        "UPDATE jobs SET zendesk_job_id = 'forged' WHERE id = 1",
    )
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("row 1 of jobs was changed after its last recorded state"),
        "{text}"
    );
    let (code, text) = tampered(
        "counts",
        "UPDATE run_decision_counts SET count = count + 1 WHERE run_id = 1 AND decision = (SELECT MIN(decision) FROM run_decision_counts WHERE run_id = 1)",
    )
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("decision counts of run 1"), "{text}");
    let (code, text) = tampered(
        "state-counts",
        "UPDATE ledger_state_counts SET n = n + 1 WHERE state = (SELECT MIN(state) FROM ledger_state_counts WHERE n > 0)",
    )
    .await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("ledger_state_counts was changed"), "{text}");
    // a value no build wrote in a column no CHECK guards: verify names the
    // row, and the history and its evidence can still be read (the value
    // shown as stored, the documents saying the records do not verify)
    let (code, text) = tampered("scan", "UPDATE runs SET scan = 'weird' WHERE id = 1").await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("row 1 of runs was changed"), "{text}");
    let weird = db.copy("scan2").await;
    weird
        .edit("UPDATE runs SET scan = 'weird' WHERE id = 1")
        .await;
    let audit = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("audit")
            .args(args)
            .args(weird.cli_args(dir))
            .env("ZD_TEST_TOKEN", TOKEN)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !said.contains("panicked") && !said.contains("decoding"),
            "{said}"
        );
        (out.status.code(), said)
    };
    let (code, said) = audit(&["runs", "--format", "json"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("\"scan\": \"weird\""), "{said}");
    let (code, said) = audit(&["run", "1"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("run 1 (manual, live): completed"), "{said}");
    for document in [&["report", "--since", "30d"][..], &["certificate", "1"][..]] {
        let (code, said) = audit(document);
        assert_eq!(code, Some(1), "{document:?}: {said}");
        assert!(said.contains("do not verify"), "{document:?}: {said}");
    }

    // rows with ids the chain never gives out
    for (name, sql) in [
        (
            "zero",
            "INSERT INTO decisions (id, run_id, ticket_id, decision, decided_at) VALUES (0, 1, 4711, 'purge', '2026-01-01')",
        ),
        (
            "negative",
            "INSERT INTO outcomes (id, run_id, ticket_id, outcome, recorded_at) VALUES (-1, 1, 4711, 'purged', '2026-01-01')",
        ),
    ] {
        let (code, text) = tampered(name, sql).await;
        assert_eq!(code, 1, "{name}: {text}");
        assert!(
            text.contains("has an id the chain never gives out"),
            "{name}: {text}"
        );
    }

    // a second run; the head noted after it. A forger who removes that
    // whole run (its rows and its chain entries) leaves a chain that
    // verifies on its own: only the noted head shows the tail is gone.
    let out = Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = Command::new(BIN)
        .args(["audit", "head", "--format", "json"])
        .args(db.cli_args(dir))
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    let hash = head["hash"].as_str().unwrap().to_string();
    assert!(head["entry"].as_i64().unwrap() > 3);
    let copy = db.copy("truncated").await;
    copy.edit(
        "DELETE FROM audit_chain WHERE seq >= (SELECT seq FROM audit_chain WHERE tbl = 'runs' AND first_id = 2);
         DELETE FROM outcomes WHERE run_id = 2; DELETE FROM decisions WHERE run_id = 2;
         DELETE FROM jobs WHERE run_id = 2; DELETE FROM run_decision_counts WHERE run_id = 2;
         DELETE FROM runs WHERE id = 2;",
    )
    .await;
    // the ticket ledger still holds what run 2 decided: that shows
    let (code, text) = verify(&copy, dir);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("ledger"), "{text}");
    // a forger who also rebuilds the ledger from the remaining rows leaves
    // a prefix that verifies on its own
    copy.edit(
        "DELETE FROM ledger;
         INSERT INTO ledger (ticket_id, deleted_at, actor_id, actor_name, previous_state, subject, subject_tags,
                             first_seen, last_seen, decision, rule, config_hash, state, state_at)
         SELECT d.ticket_id, COALESCE(d.deleted_at, ''), d.actor_id, d.actor_name, d.previous_state, d.subject,
                d.subject_tags, d.decided_at, d.decided_at, d.decision, d.rule, '',
                CASE COALESCE((SELECT o.outcome FROM outcomes o WHERE o.ticket_id = d.ticket_id ORDER BY o.id DESC LIMIT 1), '')
                    WHEN 'purged' THEN 'purged' WHEN 'unknown' THEN 'unknown' WHEN 'confirmed_gone' THEN 'gone'
                    WHEN 'restored_elsewhere' THEN 'restored' WHEN 'restored' THEN 'restored'
                    WHEN 'scrubbed_by_zendesk' THEN 'scrubbed' WHEN 'left_view' THEN 'left_view'
                    ELSE CASE WHEN d.decision IN ('purge', 'would_purge') THEN 'selected' ELSE 'kept' END END,
                d.decided_at
         FROM decisions d WHERE d.id = (SELECT MAX(id) FROM decisions WHERE ticket_id = d.ticket_id);",
    )
    .await;
    let (code, text) = verify(&copy, dir);
    assert_eq!(code, 0, "the truncated chain verifies on its own: {text}");
    let out = Command::new(BIN)
        .args(["audit", "verify", "--expect-head", &hash])
        .args(copy.cli_args(dir))
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("does not contain the expected head"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["audit", "verify", "--expect-head", &hash])
        .args(db.cli_args(dir))
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_world_readable_token_file_is_warned_about_not_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[zendesk]\nsubdomain = \"acme\"\nemail = \"a@b.c\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "a warning, not a refusal");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("readable by every user"), "{stderr}");
    assert!(!stderr.contains(TOKEN) && !String::from_utf8_lossy(&out.stdout).contains(TOKEN));
    // not on a terminal: no colour codes in the log
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes off a terminal: {stderr:?}"
    );
    // the config holds no secret: its own mode is not warned about
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("readable by every user"), "{stderr}");
}

//! Secrets and tamper evidence: the audit chain catches rows edited or
//! deleted with sqlite3; world-readable secrets are warned about.

use std::path::Path;
use std::process::Command;

use zd_retention::sandbox::Sandbox;

use crate::helpers::{TOKEN, fast_sandbox_options};

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn verify(db: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--database"])
        .arg(db)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hash_chain_names_rows_edited_or_deleted_with_sqlite3() {
    let sb = Sandbox::start_local(fast_sandbox_options(400))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[zendesk]\nbase_url = \"{}\"\nemail = \"a@b.c\"\ntoken_env = \"ZD_TEST_TOKEN\"\njob_poll_interval = \"20ms\"\n[zendesk.rate_limits]\nlist = \"10/100ms\"\naccount = \"200/100ms\"\n[audit]\ndatabase = \"{}\"\n[safety]\ndry_run = false\n[[rules]]\nname = \"old\"\naction = \"purge\"\nolder_than = \"20d\"\n",
            sb.base_url(),
            db.display()
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
    let (code, text) = verify(&db);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact"), "{text}");

    let tampered = |name: &str, sql: &str| {
        let copy = dir.path().join(format!("{name}.db"));
        std::fs::copy(&db, &copy).unwrap();
        sqlite(&copy, sql);
        verify(&copy)
    };
    let (code, text) = tampered(
        "edit",
        "UPDATE decisions SET rule = 'legal-hold' WHERE id = 7",
    );
    assert_eq!(code, 1);
    assert!(text.contains("row 7 of decisions was changed"), "{text}");
    let (code, text) = tampered("delete", "DELETE FROM outcomes WHERE id = 3");
    assert_eq!(code, 1);
    assert!(text.contains("row 3 of outcomes was removed"), "{text}");
    let (code, text) = tampered("job", "UPDATE jobs SET ticket_ids = '1,2,3' WHERE id = 1");
    assert_eq!(code, 1);
    assert!(text.contains("row 1 of jobs was changed"), "{text}");
    let (code, text) = tampered(
        "insert",
        "INSERT INTO decisions (run_id, ticket_id, decision, decided_at) VALUES (1, 42, 'purge', '2026-01-01')",
    );
    assert_eq!(code, 1);
    assert!(text.contains("not in the chain"), "{text}");
    let (code, text) = tampered(
        "chain",
        "UPDATE audit_chain SET digests = 'x' || substr(digests, 2) WHERE seq = 2",
    );
    assert_eq!(code, 1);
    assert!(text.contains("chain entry 2"), "{text}");
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
}

//! Evidence for people who sign off: signed chain heads, config versions,
//! certificates and reports, through the binary as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::helpers::{
    AuditAt, TOKEN, clear_tickets, fast_sandbox_options, postgres_server, sandbox_with,
};

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn config(dir: &Path, base_url: &str, audit_extra: &str, rules: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"
[zendesk]
base_url = "{base_url}"
email = "ops@acme.example"
token_env = "ZD_TEST_TOKEN"
job_poll_interval = "20ms"
[zendesk.rate_limits]
list = "10/100ms"
list_deep = "5/100ms"
account = "200/100ms"
[audit]
{db}
{audit_extra}
[safety]
dry_run = false
{rules}
"#,
        db = AuditAt::at(dir).config_line()
    );
    std::fs::write(&path, text).unwrap();
    path
}

const RULES: &str = r#"
[[rules]]
name = "closed-after-7-days"
action = "purge"
previous_state = ["solved", "closed"]
older_than = "7d"
"#;

/// Runs the binary. In the PostgreSQL pass `--database DIR/NAME.db` is read
/// as the audit of that folder's config (`DIR/config.toml`, or
/// `DIR/NAME.toml` for a copy): the file flag takes no URL, and each test
/// here reads its audit both ways.
fn zd(args: &[&str]) -> Output {
    zd_command(args).output().unwrap()
}

/// [`zd`]'s command, to run otherwise.
fn zd_command(args: &[&str]) -> Command {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if postgres_server().is_some()
        && let Some(at) = args.iter().position(|a| a == "--database")
    {
        let db = PathBuf::from(&args[at + 1]);
        let name = db.file_stem().unwrap().to_str().unwrap();
        let config = if name == "audit" { "config" } else { name };
        args[at] = "--config".into();
        args[at + 1] = db
            .with_file_name(format!("{config}.toml"))
            .display()
            .to_string();
    }
    let mut command = Command::new(BIN);
    command
        .args(&args)
        .env("ZD_TEST_TOKEN", TOKEN)
        .env("NO_COLOR", "1");
    command
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The audit `--database DIR/audit.db` names (in the PostgreSQL pass, the
/// database of `DIR`'s config).
fn audit_of(db: impl AsRef<Path>) -> AuditAt {
    AuditAt::at(db.as_ref().parent().unwrap())
}

/// The first purge decision's row id.
async fn first_purge_decision(db: &str) -> i64 {
    let pool = audit_of(db).raw_pool().await;
    let id = sqlx::query_scalar("SELECT MIN(id) FROM decisions WHERE decision = 'purge'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    id
}

/// What an attacker with write access and the (public) algorithm does:
/// change a chained row, then recompute its digest and every entry hash
/// from there on, so that the keyless `verify` finds the chain whole.
async fn rewrite_and_rechain(db: &Path, decision_id: i64) {
    let pool = audit_of(db).raw_pool().await;
    sqlx::query("UPDATE decisions SET decided_at = '2020-01-01T00:00:00.000Z' WHERE id = $1")
        .bind(decision_id)
        .execute(&pool)
        .await
        .unwrap();
    let values: Vec<Option<String>> = {
        use sqlx::Row as _;
        let row = sqlx::query(
            "SELECT CAST(run_id AS TEXT), CAST(ticket_id AS TEXT), CAST(deleted_at AS TEXT), CAST(actor_id AS TEXT), CAST(previous_state AS TEXT), CAST(subject AS TEXT), CAST(rule AS TEXT), CAST(decision AS TEXT), CAST(decided_at AS TEXT), CAST(actor_name AS TEXT), CAST(subject_tags AS TEXT) FROM decisions WHERE id = $1",
        )
        .bind(decision_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        let mut v: Vec<Option<String>> = (0..row.len()).map(|i| row.try_get(i).unwrap()).collect();
        while v.len() > 9 && v.last() == Some(&None) {
            v.pop();
        }
        v
    };
    let mut hasher = Sha256::new();
    hasher.update(b"decisions");
    for value in &values {
        hasher.update([0x1f]);
        match value {
            Some(v) => hasher.update(v.as_bytes()),
            None => hasher.update([0]),
        }
    }
    let digest = hex::encode(&hasher.finalize()[..8]);
    let (seq, first, digests): (i64, i64, String) = sqlx::query_as(
        "SELECT seq, first_id, digests FROM audit_chain WHERE tbl = 'decisions' AND first_id <= $1 AND last_id >= $2",
    )
    .bind(decision_id)
    .bind(decision_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let at = ((decision_id - first) * 16) as usize;
    let mut digests = digests;
    digests.replace_range(at..at + 16, &digest);
    sqlx::query("UPDATE audit_chain SET digests = $1 WHERE seq = $2")
        .bind(&digests)
        .bind(seq)
        .execute(&pool)
        .await
        .unwrap();
    let entries: Vec<(i64, String, i64, i64, String)> = sqlx::query_as(
        "SELECT seq, tbl, first_id, last_id, digests FROM audit_chain WHERE seq >= $1 ORDER BY seq",
    )
    .bind(seq)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut prev: String = sqlx::query_scalar("SELECT hash FROM audit_chain WHERE seq = $1")
        .bind(seq - 1)
        .fetch_optional(&pool)
        .await
        .unwrap()
        .unwrap_or_else(|| "genesis".into());
    for (seq, tbl, first, last, digests) in entries {
        let hash = hex::encode(Sha256::digest(
            format!("{prev}\x1e{tbl}\x1e{first}\x1e{last}\x1e{digests}").as_bytes(),
        ));
        sqlx::query("UPDATE audit_chain SET prev = $1, hash = $2 WHERE seq = $3")
            .bind(&prev)
            .bind(&hash)
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap();
        prev = hash;
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_that_recomputes_the_chain_is_caught_by_the_signed_heads() {
    let tickets = clear_tickets(250, 131);
    let sb = sandbox_with(tickets.clone(), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing-key.pem");
    let public = dir.path().join("signing-key.pub.pem");
    let keygen = zd(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(keygen.status.success(), "{}", text(&keygen));
    assert!(public.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let private_pem = std::fs::read_to_string(&key).unwrap();
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // a second keygen never overwrites the key
    let again = zd(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("never overwritten"),
        "{}",
        text(&again)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), private_pem);

    let extra = format!("signing_key_file = \"{}\"", key.display());
    let cfg = config(dir.path(), &sb.base_url(), &extra, RULES);
    let check = zd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("every commit to the audit log signed with key"),
        "{}",
        text(&check)
    );
    assert!(!text(&check).contains(private_pem.lines().nth(1).unwrap()));
    for _ in 0..2 {
        let once = zd(&["once", "--config", cfg.to_str().unwrap()]);
        assert!(once.status.success(), "{}", text(&once));
    }
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap();
    let checked = verify(dbs, &[&public]);
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(
        text(&checked).contains("signatures hold: "),
        "{}",
        text(&checked)
    );
    // the key itself reaches neither the database nor any output
    let raw = audit_of(&db).all_text().await;
    let secret_line = private_pem.lines().nth(1).unwrap();
    assert!(!raw.contains(secret_line));

    // a purge decision backdated, and the whole chain recomputed
    let target = first_purge_decision(dbs).await;
    rewrite_and_rechain(&db, target).await;
    let keyless = zd(&["audit", "verify", "--database", dbs]);
    assert!(
        keyless.status.success(),
        "the recomputed chain fools the keyless check, as it must for this test to mean anything: {}",
        text(&keyless)
    );
    let signed = verify(dbs, &[&public]);
    assert_eq!(signed.status.code(), Some(1), "{}", text(&signed));
    assert!(
        text(&signed).contains("not the one signed"),
        "{}",
        text(&signed)
    );

    // removing the signed heads instead is caught too
    audit_of(dbs).edit("DELETE FROM chain_heads").await;
    let stripped = verify(dbs, &[&public]);
    assert_eq!(stripped.status.code(), Some(1), "{}", text(&stripped));
    assert!(
        text(&stripped).contains("no chain head is signed"),
        "{}",
        text(&stripped)
    );
}

fn verify(db: &str, keys: &[&Path]) -> Output {
    let mut args = vec![
        "audit".to_string(),
        "verify".into(),
        "--database".into(),
        db.into(),
    ];
    for k in keys {
        args.push("--public-key".into());
        args.push(k.to_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    zd(&args)
}

fn once_with(dir: &Path, base_url: &str, key: Option<&Path>) {
    let extra = key
        .map(|k| format!("signing_key_file = \"{}\"", k.display()))
        .unwrap_or_default();
    let cfg = config(dir, base_url, &extra, RULES);
    let out = zd(&["once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    assert!(
        zd(&["audit", "keygen", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    (key, dir.join(format!("{name}.pub.pem")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_verifies_with_both_halves_and_other_keys_cannot_vouch() {
    let sb = sandbox_with(clear_tickets(120, 17), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (k1, p1) = keypair(dir.path(), "k1");
    let (k2, p2) = keypair(dir.path(), "k2");
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap();
    once_with(dir.path(), &sb.base_url(), Some(&k1));
    let wrong = verify(dbs, &[&p2]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong).contains("signatures NOT verified: cannot verify"),
        "{}",
        text(&wrong)
    );
    assert!(
        !text(&wrong).contains("TAMPERED"),
        "another key is no tampering: {}",
        text(&wrong)
    );
    // the key changes: the second run is signed by k2
    once_with(dir.path(), &sb.base_url(), Some(&k2));
    assert_eq!(verify(dbs, &[&p1]).status.code(), Some(1));
    let both = verify(dbs, &[&p1, &p2]);
    assert!(both.status.success(), "{}", text(&both));
    assert!(
        text(&both).contains("every entry covered"),
        "{}",
        text(&both)
    );
    // a head's time edited by hand
    audit_of(dbs)
        .edit("UPDATE chain_heads SET recorded_at = '2026-01-01T00:00:00.000Z' WHERE seq = (SELECT MAX(seq) FROM chain_heads WHERE run_id = 2 AND kind = 'commit')")
        .await;
    let forged = verify(dbs, &[&p1, &p2]);
    assert_eq!(forged.status.code(), Some(1));
    assert!(
        text(&forged).contains("does not verify"),
        "{}",
        text(&forged)
    );
    assert!(text(&forged).contains("TAMPERED"), "{}", text(&forged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_written_without_the_key_are_named_and_not_signed_over_later() {
    let sb = sandbox_with(clear_tickets(120, 18), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (k, p) = keypair(dir.path(), "k");
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap();
    once_with(dir.path(), &sb.base_url(), Some(&k));
    assert!(verify(dbs, &[&p]).status.success());
    // a run without the key
    once_with(dir.path(), &sb.base_url(), None);
    let after = verify(dbs, &[&p]);
    assert_eq!(after.status.code(), Some(1));
    assert!(
        text(&after).contains("follow the last signed head")
            || text(&after).contains("an unsigned chain head at entry"),
        "{}",
        text(&after)
    );
    // the key back: its heads do not cover the unsigned run's entries
    once_with(dir.path(), &sb.base_url(), Some(&k));
    let gap = verify(dbs, &[&p]);
    assert_eq!(gap.status.code(), Some(1));
    assert!(
        text(&gap).contains("were not written under a signature"),
        "{}",
        text(&gap)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_row_appended_with_its_chain_entry_is_not_laundered_by_the_next_run() {
    let sb = sandbox_with(clear_tickets(150, 19), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (k, p) = keypair(dir.path(), "k");
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap();
    once_with(dir.path(), &sb.base_url(), Some(&k));
    // a purge claimed for a ticket never sent: the row and its chain entry,
    // hashed as the code would
    let pool = audit_of(dbs).raw_pool().await;
    let at = "2026-11-29T10:00:00.000Z";
    let id: i64 = sqlx::query_scalar("INSERT INTO outcomes (run_id, job_id, ticket_id, outcome, detail, recorded_at) VALUES (1, NULL, 4711, 'purged', 'forged', $1) RETURNING id")
        .bind(at)
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut hasher = Sha256::new();
    hasher.update(b"outcomes");
    for v in [
        Some("1"),
        None,
        Some("4711"),
        Some("purged"),
        Some("forged"),
        Some(at),
    ] {
        hasher.update([0x1f]);
        match v {
            Some(v) => hasher.update(v.as_bytes()),
            None => hasher.update([0]),
        }
    }
    let digest = hex::encode(&hasher.finalize()[..8]);
    let prev: String = sqlx::query_scalar("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let hash = hex::encode(Sha256::digest(
        format!("{prev}\x1eoutcomes\x1e{id}\x1e{id}\x1e{digest}").as_bytes(),
    ));
    // its seq the next one, as the code's would be (given by the database:
    // PostgreSQL's identity moves on)
    sqlx::query("INSERT INTO audit_chain (tbl, first_id, last_id, digests, prev, hash) VALUES ('outcomes', $1, $2, $3, $4, $5)")
        .bind(id)
        .bind(id)
        .bind(&digest)
        .bind(&prev)
        .bind(&hash)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let keyless = zd(&["audit", "verify", "--database", dbs]);
    assert!(
        keyless.status.success(),
        "the forgery is whole without the key: {}",
        text(&keyless)
    );
    let signed = verify(dbs, &[&p]);
    assert_eq!(signed.status.code(), Some(1));
    assert!(
        text(&signed).contains("follow the last signed head"),
        "{}",
        text(&signed)
    );
    // the next run signs its own entries only: the forged one stays a gap
    once_with(dir.path(), &sb.base_url(), Some(&k));
    let later = verify(dbs, &[&p]);
    assert_eq!(later.status.code(), Some(1), "{}", text(&later));
    assert!(
        text(&later).contains("were not written under a signature"),
        "{}",
        text(&later)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_while_a_run_writes_sees_one_consistent_state() {
    let sb = sandbox_with(clear_tickets(3000, 23), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (k, p) = keypair(dir.path(), "k");
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap().to_string();
    // a first run, so that the database exists
    once_with(dir.path(), &sb.base_url(), Some(&k));
    sb.insert(clear_tickets(3000, 24).into_iter().map(|mut t| {
        t.id += 100_000;
        t
    }));
    let extra = format!("signing_key_file = \"{}\"", k.display());
    let cfg = config(dir.path(), &sb.base_url(), &extra, RULES);
    let mut run = Command::new(BIN)
        .args(["once", "--config", cfg.to_str().unwrap()])
        .env("ZD_TEST_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut checks = 0;
    let mut during = 0;
    loop {
        let running = run.try_wait().unwrap().is_none();
        let out = verify(&dbs, &[&p]);
        assert!(
            out.status.success(),
            "verify {checks} (run going: {running}): {}",
            text(&out)
        );
        let report = zd(&[
            "audit",
            "report",
            "--since",
            "1d",
            "--format",
            "md",
            "--database",
            &dbs,
            "--public-key",
            p.to_str().unwrap(),
        ]);
        // while the run goes on, the report says it is not final (exit 1)
        let still_running = text(&report).contains("was still running when this report was made");
        assert!(
            report.status.success() || (report.status.code() == Some(1) && still_running),
            "report {checks}: {}",
            text(&report)
        );
        checks += 1;
        if running {
            during += 1;
        } else {
            break;
        }
    }
    assert!(during >= 1, "at least one check while the run wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_records_are_unsigned_and_say_so() {
    let tickets = clear_tickets(80, 5);
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sb.base_url(), "", RULES);
    let check = zd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(check.status.success());
    assert!(
        text(&check).contains("records: unsigned"),
        "{}",
        text(&check)
    );
    assert!(
        zd(&["once", "--config", cfg.to_str().unwrap()])
            .status
            .success()
    );
    let dbs = dir.path().join("audit.db");
    let verify = zd(&["audit", "verify", "--database", dbs.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains("records are unsigned"),
        "{}",
        text(&verify)
    );
    // the head is recorded all the same, unsigned
    let run = zd(&["audit", "run", "1", "--database", dbs.to_str().unwrap()]);
    assert!(
        text(&run).contains("chain head at its end"),
        "{}",
        text(&run)
    );
    assert!(text(&run).contains("unsigned"), "{}", text(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signing_key_is_a_config_error_that_names_the_key_and_never_quotes_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRET-BYTES\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        "https://acme.zendesk.com",
        &format!("signing_key_file = \"{}\"", key.display()),
        RULES,
    );
    let check = zd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    assert!(
        text(&check).contains("audit.signing_key_file"),
        "{}",
        text(&check)
    );
    assert!(text(&check).contains("audit keygen"), "{}", text(&check));
    assert!(!text(&check).contains("SECRET-BYTES"));
    let missing = config(
        dir.path(),
        "https://acme.zendesk.com",
        "signing_key_file = \"/nonexistent/key.pem\"",
        RULES,
    );
    let once = zd(&["once", "--config", missing.to_str().unwrap()]);
    assert_ne!(once.status.code(), Some(0));
    assert!(
        text(&once).contains("cannot read the signing key"),
        "{}",
        text(&once)
    );
    // nothing was recorded by a run that could not sign
    let audit = AuditAt::at(dir.path());
    if audit.has_table("runs").await {
        assert_eq!(audit.number("SELECT COUNT(*) FROM runs").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_config_is_stored_once_and_certificates_name_it_with_every_purge() {
    let tickets = clear_tickets(300, 77);
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sb.base_url(), "", RULES);
    assert!(
        zd(&["once", "--config", cfg.to_str().unwrap()])
            .status
            .success()
    );
    assert!(
        zd(&["once", "--config", cfg.to_str().unwrap()])
            .status
            .success()
    );
    // what the sandbox deleted for good in run 1
    let expected: std::collections::BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert!(!expected.is_empty());
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap();
    let pool = audit_of(dbs).raw_pool().await;
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM config_versions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(versions, 1, "two runs of one config: one version");
    let settings: String = sqlx::query_scalar("SELECT settings FROM config_versions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        !settings.contains(TOKEN) && !settings.contains("ZD_TEST_TOKEN"),
        "{settings}"
    );
    let hash: String = sqlx::query_scalar("SELECT config_hash FROM runs WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    // a changed config is a new version
    let cfg = config(dir.path(), &sb.base_url(), "", &RULES.replace("7d", "8d"));
    assert!(
        zd(&["once", "--config", cfg.to_str().unwrap()])
            .status
            .success()
    );
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM config_versions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(versions, 2);
    let shown = zd(&["audit", "config", &hash[..10], "--database", dbs]);
    assert!(shown.status.success(), "{}", text(&shown));
    assert!(
        text(&shown).contains("closed-after-7-days: purge tickets deleted more than 7d ago"),
        "{}",
        text(&shown)
    );
    let run = zd(&["audit", "run", "1", "--database", dbs]);
    assert!(
        text(&run).contains(&format!("config version {hash}")),
        "{}",
        text(&run)
    );

    let cert = zd(&[
        "audit",
        "certificate",
        "1",
        "--format",
        "json",
        "--database",
        dbs,
    ]);
    assert!(cert.status.success(), "{}", text(&cert));
    let cert: serde_json::Value = serde_json::from_slice(&cert.stdout).unwrap();
    let purged: std::collections::BTreeSet<u64> = cert["purged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ticket_id"].as_u64().unwrap())
        .collect();
    assert_eq!(purged, expected);
    for p in cert["purged"].as_array().unwrap() {
        assert_eq!(p["rule"], "closed-after-7-days");
        assert!(
            p["zendesk_job_id"].is_string()
                && p["requested_at"].is_string()
                && p["completed_at"].is_string(),
            "{p}"
        );
        assert!(p["subject"].is_null(), "no subjects unless record_subjects");
    }
    assert_eq!(cert["config"]["hash"], hash.as_str());
    assert!(
        cert["ran_by"]["program_version"]
            .as_str()
            .unwrap()
            .starts_with("zd-retention ")
    );
    assert_eq!(cert["integrity"]["signatures"], "unsigned");

    // a config version rewritten by hand is named by verify
    sqlx::query("UPDATE config_versions SET settings = replace(settings, '7d', '700d')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let verify = zd(&["audit", "verify", "--database", dbs]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        text(&verify).contains("config_versions was changed"),
        "{}",
        text(&verify)
    );
    let report = zd(&[
        "audit",
        "report",
        "--since",
        "1d",
        "--format",
        "md",
        "--database",
        dbs,
    ]);
    assert_eq!(
        report.status.code(),
        Some(1),
        "a report over tampered records fails"
    );
    assert!(
        text(&report).contains("NOT complete or NOT intact"),
        "{}",
        text(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_without_runs_says_so_and_bad_periods_are_refused() {
    let tickets = clear_tickets(50, 3);
    let sb = sandbox_with(tickets, fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sb.base_url(), "", RULES);
    assert!(
        zd(&["once", "--config", cfg.to_str().unwrap()])
            .status
            .success()
    );
    let dbs = dir.path().join("audit.db");
    let dbs = dbs.to_str().unwrap();
    let empty = zd(&[
        "audit",
        "report",
        "--since",
        "2025-01-01",
        "--until",
        "2025-02-01",
        "--format",
        "md",
        "--database",
        dbs,
    ]);
    assert!(empty.status.success(), "{}", text(&empty));
    assert!(
        text(&empty).contains("No run took place in this period"),
        "{}",
        text(&empty)
    );
    let backwards = zd(&[
        "audit",
        "report",
        "--since",
        "2025-02-01",
        "--until",
        "2025-01-01",
        "--database",
        dbs,
    ]);
    assert_eq!(backwards.status.code(), Some(2), "{}", text(&backwards));
    assert!(text(&backwards).contains("--until"), "{}", text(&backwards));
    let no_run = zd(&["audit", "certificate", "99", "--database", dbs]);
    assert_ne!(no_run.status.code(), Some(0));
    assert!(text(&no_run).contains("no run 99"), "{}", text(&no_run));
    // --output's extension picks the format
    let md = dir.path().join("r.md");
    assert!(
        zd(&[
            "audit",
            "report",
            "--since",
            "1d",
            "--output",
            md.to_str().unwrap(),
            "--database",
            dbs
        ])
        .status
        .success()
    );
    assert!(
        std::fs::read_to_string(&md)
            .unwrap()
            .starts_with("# Retention report")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_every_signed_head_before_the_next_run_is_told_not_hidden() {
    let sb = sandbox_with(clear_tickets(200, 29), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (k, p) = keypair(dir.path(), "k");
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap();
    once_with(dir.path(), &sb.base_url(), Some(&k));
    // OpenSSL reads the key keygen wrote
    let openssl = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "command -v openssl >/dev/null && openssl pkey -in {} -noout",
            k.display()
        ))
        .status()
        .unwrap();
    assert!(
        openssl.success(),
        "openssl cannot read the key keygen wrote"
    );
    // the forger: a purge decision backdated, the chain recomputed, and
    // every signed head removed
    let target = first_purge_decision(dbs).await;
    rewrite_and_rechain(&db, target).await;
    audit_of(dbs).edit("DELETE FROM chain_heads").await;
    let stripped = verify(dbs, &[&p]);
    assert_eq!(stripped.status.code(), Some(1));
    assert!(
        text(&stripped).contains("cannot verify: no chain head is signed"),
        "{}",
        text(&stripped)
    );
    // the next run signs only what it writes, and verify says that the
    // earlier entries were not signed when written
    once_with(dir.path(), &sb.base_url(), Some(&k));
    let after = verify(dbs, &[&p]);
    assert!(after.status.success(), "{}", text(&after));
    assert!(
        !text(&after).contains("every entry covered"),
        "{}",
        text(&after)
    );
    assert!(
        text(&after).contains("precede the first signed head"),
        "{}",
        text(&after)
    );
    let cert = zd(&[
        "audit",
        "certificate",
        "1",
        "--public-key",
        p.to_str().unwrap(),
        "--database",
        dbs,
    ]);
    assert!(
        text(&cert).contains("NOTE: This run's records precede the first signed chain head"),
        "{}",
        text(&cert)
    );
    let report = zd(&[
        "audit",
        "report",
        "--since",
        "1d",
        "--format",
        "md",
        "--public-key",
        p.to_str().unwrap(),
        "--database",
        dbs,
    ]);
    assert!(
        text(&report).contains("since signing began"),
        "{}",
        text(&report)
    );
    assert!(
        !text(&report).contains("intact, and signed by the key holder\n"),
        "{}",
        text(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_added_by_hand_or_a_key_id_changed_is_named() {
    let sb = sandbox_with(clear_tickets(120, 31), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let (k, p) = keypair(dir.path(), "k");
    let db = dir.path().join("audit.db");
    once_with(dir.path(), &sb.base_url(), Some(&k));
    let work = dir.path().join("forged.db");
    let ws = work.to_str().unwrap();
    for (sql, expect) in [
        (
            "INSERT INTO chain_heads (seq, from_seq, run_id, kind, head, recorded_at) VALUES (999, 999, 1, 'end', '00cf', '2026-11-29T00:00:00.000Z')",
            "unsigned chain head at entry 999",
        ),
        (
            "UPDATE chain_heads SET key_id = 'deadbeefdeadbeef' WHERE seq = (SELECT MIN(seq) FROM chain_heads)",
            "names key deadbeefdeadbeef but was signed by a key given",
        ),
    ] {
        let copy = match audit_of(&db) {
            AuditAt::File(_) => {
                std::fs::copy(&db, &work).unwrap();
                AuditAt::File(work.clone())
            }
            pg => {
                let copy = pg.copy(&format!("forged{}", sql.len())).await;
                copy.config_in(&dir.path().join("forged.toml"), false, "");
                copy
            }
        };
        copy.edit(sql).await;
        let out = verify(ws, &[&p]);
        assert_eq!(out.status.code(), Some(1), "{sql}: {}", text(&out));
        assert!(text(&out).contains(expect), "{sql}: {}", text(&out));
        assert!(text(&out).contains("TAMPERED"), "{sql}: {}", text(&out));
    }
}

#[test]
fn keygen_refuses_a_public_name_for_the_private_key_and_says_what_it_wrote_where() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "k.pub.pem",
        "K.PUB.PEM",
        "k.pub",
        "public-key.pem",
        "my_PublicKey.pem",
        "signing.pub.key.pem",
        "pubkey.pem",
    ] {
        let out = dir.path().join(name);
        let keygen = zd(&["audit", "keygen", "--out", out.to_str().unwrap()]);
        assert_eq!(keygen.status.code(), Some(2), "{name}: {}", text(&keygen));
        assert!(
            text(&keygen).contains("PRIVATE key") && text(&keygen).contains("signing-key.pem"),
            "{name}: {}",
            text(&keygen)
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{name}: nothing is written"
        );
    }
    // a private name: both files, each path printed
    let key = dir.path().join("signing-key.pem");
    let keygen = zd(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(keygen.status.success(), "{}", text(&keygen));
    let public = dir.path().join("signing-key.pub.pem");
    let said = text(&keygen);
    assert!(
        said.contains(&format!("private key to {}", key.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!("public key to  {}", public.display())),
        "{said}"
    );
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .contains("PUBLIC KEY")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_over_a_running_or_interrupted_run_says_so_and_exits_by_what_it_claims() {
    use zd_retention::audit::{RunOrigin, Trigger};
    let sb = sandbox_with(clear_tickets(80, 7), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    once_with(dir.path(), &sb.base_url(), None);
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap();
    // a run begun and not ended, as a run in progress (or a process killed
    // in the middle of one) leaves it
    let store = audit_of(&db).open().await.unwrap();
    let run = store
        .start_run(
            Trigger::Cron,
            false,
            &RunOrigin::from("abc"),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    store.close().await;
    let report = |format: &str| {
        zd(&[
            "audit",
            "report",
            "--since",
            "1d",
            "--format",
            format,
            "--database",
            dbs,
        ])
    };
    for format in ["md", "html"] {
        let out = report(format);
        let doc = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{format}: {}", text(&out));
        // the summary and the statement both say it
        assert!(
            doc.contains(&format!(
                "Run {run} was still running when this report was made"
            )),
            "{format}: {doc}"
        );
        assert!(
            doc.contains(&format!("NOT final: run {run} was still running")),
            "{format}: {doc}"
        );
        assert!(
            !doc.contains("every purge outcome recorded in the period is listed"),
            "{format}: {doc}"
        );
        assert!(text(&out).contains("NOT final"), "{}", text(&out));
    }
    // the next start closes it as interrupted: the statement holds as
    // written again, and names the run
    let store = audit_of(&db).open().await.unwrap();
    assert_eq!(
        store
            .close_interrupted_runs(chrono::Utc::now())
            .await
            .unwrap(),
        vec![run]
    );
    store.close().await;
    for format in ["md", "html"] {
        let out = report(format);
        let doc = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{format}: {}", text(&out));
        assert!(
            doc.contains(&format!("Run {run} was interrupted")),
            "{format}: {doc}"
        );
        assert!(
            doc.contains(&format!(
                "every purge outcome recorded in the period is listed; run {run} was interrupted"
            )),
            "{format}: {doc}"
        );
    }
}

/// The purged tickets of a certificate or report are streamed from the
/// database into the document: each format lists every one exactly once,
/// a run without purges gives an empty list, a full disk is a clear error,
/// and a file is written whole or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_streams_every_purge_and_a_failed_write_leaves_no_half_document() {
    let sb = sandbox_with(clear_tickets(600, 91), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sb.base_url(), "", RULES);
    for _ in 0..2 {
        let once = zd(&["once", "--config", cfg.to_str().unwrap()]);
        assert!(once.status.success(), "{}", text(&once));
    }
    let purged = sb.purged_ids();
    assert!(purged.len() > 100, "{}", purged.len());
    let db = dir.path().join("audit.db");
    let dbs = db.to_str().unwrap();
    let doc = |args: &[&str]| {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database", dbs]);
        let out = zd(&all);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let ids_in = |lines: Vec<u64>| -> Vec<u64> {
        let mut ids = lines;
        ids.sort_unstable();
        ids
    };
    let text_cert = doc(&["certificate", "1"]);
    let listed = ids_in(
        text_cert
            .lines()
            .filter_map(|l| l.strip_prefix("    ")?.split(' ').next()?.parse().ok())
            .collect(),
    );
    assert_eq!(listed, purged, "{text_cert}");
    let html = doc(&["certificate", "1", "--format", "html"]);
    let rows = regex::Regex::new(r#"class="purged-row" data-ticket="(\d+)""#).unwrap();
    let listed = ids_in(
        rows.captures_iter(&html)
            .map(|c| c[1].parse().unwrap())
            .collect(),
    );
    assert_eq!(listed, purged);
    assert!(html.trim_end().ends_with("</html>"), "the page is whole");
    let report = doc(&["report", "--since", "1d", "--format", "md"]);
    let md_row = regex::Regex::new(r"(?m)^\| (\d+) \| closed\\-after\\-7\\-days \|").unwrap();
    let listed = ids_in(
        md_row
            .captures_iter(&report)
            .map(|c| c[1].parse().unwrap())
            .collect(),
    );
    assert_eq!(listed, purged, "{report}");
    assert!(
        report.contains(&format!(
            "Listed {} purge outcomes; the query counts {}.",
            purged.len(),
            purged.len()
        )),
        "{report}"
    );
    // run 2 found nothing left to purge: an empty list, still valid JSON
    let empty: serde_json::Value =
        serde_json::from_str(&doc(&["certificate", "2", "--format", "json"])).unwrap();
    assert_eq!(empty["purged"], serde_json::json!([]));
    assert_eq!(empty["run"]["id"], 2);

    // standard output on a full disk: a clear error, no panic
    let full = zd_command(&["audit", "report", "--since", "1d", "--database", dbs])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(full.status.code(), Some(1), "{}", text(&full));
    let said = String::from_utf8_lossy(&full.stderr);
    assert!(said.contains("No space left"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    // a name held by a folder, a pipe or a link cannot take the document
    // (as root, a rename over /dev/full once replaced the device with it):
    // refused, the thing left as it was, and no half document beside it
    let taken = dir.path().join("report.html");
    std::fs::create_dir(&taken).unwrap();
    let fifo = dir.path().join("fifo.html");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let link = dir.path().join("link.html");
    std::os::unix::fs::symlink(dir.path().join("elsewhere.html"), &link).unwrap();
    for target in [&taken, &fifo, &link] {
        let out = zd(&[
            "audit",
            "report",
            "--since",
            "1d",
            "--output",
            target.to_str().unwrap(),
            "--database",
            dbs,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("not a regular file"), "{}", text(&out));
        let kind = std::fs::symlink_metadata(target).unwrap().file_type();
        assert!(!kind.is_file(), "{} was replaced", target.display());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(taken.is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_reader_goes_away_ends_quietly() {
    // `audit export | head` over a history larger than a pipe holds: the
    // export said "error: Broken pipe" and exited 1
    let sb = sandbox_with(clear_tickets(900, 23), fast_sandbox_options(0)).await;
    let dir = tempfile::tempdir().unwrap();
    once_with(dir.path(), &sb.base_url(), None);
    let db = dir.path().join("audit.db");
    for format in ["jsonl", "csv"] {
        // one byte read, then the pipe closed, as `| head -c1` does
        let (read, out) = crate::helpers::read_one_byte_then_close(&mut zd_command(&[
            "audit",
            "export",
            "--format",
            format,
            "--database",
            db.to_str().unwrap(),
        ]));
        assert_eq!(read, 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert!(!stderr.contains("error"), "{format}: {stderr}");
    }
    // read whole, it is larger than a pipe holds: the test means something
    let whole = zd(&["audit", "export", "--database", db.to_str().unwrap()]);
    assert!(whole.status.success());
    assert!(whole.stdout.len() > 128 * 1024, "{}", whole.stdout.len());
}

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
    let (run, results) = zd_retention::manual::purge(&e.ctx, &[1.into(), 2.into()], false, false)
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
        sqlx::query_scalar("SELECT decision FROM decisions WHERE run_id = $1")
            .bind(run)
            .fetch_all(e.ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(decisions, ["would_purge", "would_purge"]);

    let (_, results) = zd_retention::manual::purge(&e.ctx, &[1.into(), 2.into()], false, true)
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
    let (_, results) = zd_retention::manual::purge(&e.ctx, &[1.into(), 2.into()], false, false)
        .await
        .unwrap();
    let held = results.iter().find(|r| r.id.get() == 1).unwrap();
    assert_eq!(held.outcome, "not_sent");
    assert!(
        held.detail.as_deref().unwrap().contains("legal-hold"),
        "{held:?}"
    );
    assert_eq!(sb.purged_ids(), [2], "the held ticket stays");

    let (run, results) = zd_retention::manual::purge(&e.ctx, &[1.into()], true, false)
        .await
        .unwrap();
    assert_eq!(results[0].outcome, "purged");
    let rule: String = sqlx::query_scalar("SELECT rule FROM decisions WHERE run_id = $1")
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

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn sandbox_config(dir: &std::path::Path, base_url: &str, credential: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[zendesk]\nbase_url = \"{base_url}\"\nemail = \"ops@acme.example\"\n{credential}\n\
             [zendesk.rate_limits]\nlist = \"10/100ms\"\nlist_deep = \"5/100ms\"\naccount = \"200/100ms\"\n\
             [audit]\n{}\n[[rules]]\nname = \"old\"\naction = \"purge\"\nolder_than = \"30d\"\n",
            crate::helpers::AuditAt::at(dir).config_line()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_never_sees_a_loopback_request() {
    // a "proxy" that records whether anyone connected
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = seen.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = proxy.accept().await {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let sb = crate::helpers::sandbox(150).await;
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox_config(dir.path(), &sb.base_url(), "token_env = \"ZD_TEST_TOKEN\"");
    let proxy_url = format!("http://{proxy_addr}");
    let out = tokio::process::Command::new(BIN)
        .args(["list", "--format", "json", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !seen.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy received a plain-http request carrying the credential"
    );
}

#[test]
fn a_token_with_a_control_character_is_refused_at_load_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-SECRET\u{1b}[0m-rest\n").unwrap();
    let config = sandbox_config(
        dir.path(),
        "http://127.0.0.1:9",
        &format!("token_file = \"{}\"", token.display()),
    );
    let out = std::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("control character"), "{stderr}");
    assert!(
        !stderr.contains("tok-SECRET"),
        "the token was shown: {stderr}"
    );
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    for args in [&["completions", "bash"][..], &["--help"][..]] {
        let (_, out) =
            crate::helpers::read_one_byte_then_close(std::process::Command::new(BIN).args(args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_commands_open_a_database_whose_path_holds_question_marks_and_percents() {
    if crate::helpers::sqlite_only("an SQLite file's path") {
        return;
    }
    let sb = crate::helpers::sandbox(150).await;
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("a?b%20c#d");
    std::fs::create_dir(&odd).unwrap();
    let config = sandbox_config(&odd, &sb.base_url(), "token_env = \"ZD_TEST_TOKEN\"");
    let once = tokio::process::Command::new(BIN)
        .args(["once", "--dry-run", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    let runs = tokio::process::Command::new(BIN)
        .args(["audit", "runs", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(
        runs.status.success(),
        "{}",
        String::from_utf8_lossy(&runs.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
}

fn live_config(dir: &std::path::Path, base_url: &str, cron: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[zendesk]\nbase_url = \"{base_url}\"\nemail = \"ops@acme.example\"\ntoken_env = \"ZD_TEST_TOKEN\"\njob_poll_interval = \"20ms\"\n\
             [zendesk.rate_limits]\nlist = \"10/100ms\"\nlist_deep = \"5/100ms\"\naccount = \"200/100ms\"\n\
             [schedule]\ncron = \"{cron}\"\nshutdown_grace = \"5s\"\n\
             [audit]\n{}\n[safety]\ndry_run = false\n\
             [[rules]]\nname = \"closed-after-7-days\"\naction = \"purge\"\nprevious_state = [\"solved\", \"closed\"]\nolder_than = \"7d\"\n",
            crate::helpers::AuditAt::at(dir).config_line()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_once_on_the_same_database_exits_1_naming_the_first() {
    let tickets = crate::helpers::clear_tickets(600, 44);
    let options = zd_retention::sandbox::SandboxOptions {
        // jobs of 10 minutes at Zendesk's time, 1 s here: the first run lasts
        job_delay: std::time::Duration::from_secs(600),
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let first = tokio::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first_pid = first.id().unwrap();
    // the first holds the lock once it lists (it locks before anything else)
    while sb.count("list") == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let second = tokio::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another writer"), "{stderr}");
    assert!(stderr.contains(&format!("pid {first_pid}")), "{stderr}");
    assert!(stderr.contains("command once"), "{stderr}");
    let first = first.wait_with_output().await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let store = crate::helpers::AuditAt::at(dir.path())
        .open_read_only()
        .await
        .unwrap();
    let runs = store.runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "the second wrote nothing");
    assert_eq!(runs[0].status, zd_retention::audit::RunStatus::Completed);
    assert_eq!(runs[0].purged as usize, sb.purged_ids().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_are_active_and_standby_and_the_standby_takes_over_after_sigkill() {
    if crate::helpers::sqlite_only(
        "the file lock between two daemons on one host (failover:: runs two daemons on PostgreSQL)",
    ) {
        return;
    }
    let sb = sandbox_with(
        crate::helpers::clear_tickets(300, 45),
        fast_sandbox_options(0),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), &sb.base_url(), "* * * * * *");
    let db = dir.path().join("audit.db");
    let spawn = || {
        tokio::process::Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let completed = || async {
        match zd_retention::audit::AuditStore::open_read_only(&db).await {
            Ok(store) => {
                let n = store
                    .runs(None, 1000)
                    .await
                    .map(|r| {
                        r.iter()
                            .filter(|r| r.status == zd_retention::audit::RunStatus::Completed)
                            .count()
                    })
                    .unwrap_or(0);
                store.close().await;
                n
            }
            Err(_) => 0,
        }
    };
    let mut active = spawn();
    for _ in 0..100 {
        if completed().await >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(completed().await >= 1, "the first daemon ran");
    let mut standby = spawn();
    // the standby announces itself on stderr
    let mut standby_err = standby.stderr.take().unwrap();
    let mut seen = String::new();
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while !seen.contains("standby") {
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            standby_err.read(&mut buf),
        )
        .await
        .expect("the standby says it waits")
        .unwrap();
        assert!(n > 0, "the standby ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    active.start_kill().unwrap(); // SIGKILL
    active.wait().await.unwrap();
    let before = completed().await;
    let mut took_over = false;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if completed().await > before {
            took_over = true;
            break;
        }
    }
    assert!(
        took_over,
        "the standby completed a cycle after the active one died"
    );
    unsafe { libc::kill(standby.id().unwrap() as i32, libc::SIGTERM) };
    let status = standby.wait().await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_id_above_i64_is_kept_and_logged_never_stored_wrapped() {
    let big = (i64::MAX as u64) + 5;
    let sb = sandbox_with(
        vec![old(big, "huge"), old(7, "small")],
        fast_sandbox_options(0),
    )
    .await;
    let e = engine(&sb, example_policy(), test_settings()).await;
    let report = zd_retention::cycle::run_cycle(&e.ctx, zd_retention::cycle::Trigger::Manual)
        .await
        .unwrap();
    assert_eq!(sb.purged_ids(), [7], "only the representable id is purged");
    assert_eq!(report.kept.get("keep_id_out_of_range"), Some(&1));
    let negative: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM decisions WHERE ticket_id < 0) + (SELECT COUNT(*) FROM outcomes WHERE ticket_id < 0)",
    )
    .fetch_one(e.ctx.store.pool())
    .await
    .unwrap();
    assert_eq!(negative, 0, "an id was stored wrapped");
    let chain = e.ctx.store.verify_chain().await.unwrap();
    assert!(chain.problem.is_none(), "{:?}", chain.problem);

    // on the command line it is refused with a clear error
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox_config(dir.path(), &sb.base_url(), "token_env = \"ZD_TEST_TOKEN\"");
    let out = std::process::Command::new(BIN)
        .args(["purge", &big.to_string(), "--yes", "--force", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a ticket id"), "{stderr}");
    assert!(sb.write_requests().iter().all(|r| !r.ids.contains(&big)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_removed_mid_run_fails_the_run_and_the_next_start_refuses_a_fresh_history() {
    if crate::helpers::sqlite_only("an SQLite file removed under a run") {
        return;
    }
    let tickets = crate::helpers::clear_tickets(1500, 46);
    let options = zd_retention::sandbox::SandboxOptions {
        job_delay: std::time::Duration::from_secs(600),
        ..fast_sandbox_options(0)
    };
    let sb = sandbox_with(tickets, options).await;
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let db = dir.path().join("audit.db");
    let child = tokio::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // the first purge request is out: remove the database under the run
    while !sb.write_requests().iter().any(|r| r.method == "DELETE") {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let out = child.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("removed or replaced while in use"), "{text}");

    let again = std::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("its history is gone"), "{stderr}");
    assert!(!db.exists(), "no fresh database was begun silently");
    let fresh = std::process::Command::new(BIN)
        .args(["once", "--new-history", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .unwrap();
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    assert!(db.exists());
}

#[test]
fn a_dangling_symlink_as_the_database_is_refused_and_nothing_is_created() {
    if crate::helpers::sqlite_only("a symlink as the SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere.db");
    let config = sandbox_config(
        dir.path(),
        "http://127.0.0.1:9",
        "token_env = \"ZD_TEST_TOKEN\"",
    );
    let db = dir.path().join("audit.db");
    std::os::unix::fs::symlink(&target, &db).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(!target.exists(), "a file was created through the link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_forged_after_a_crash_is_not_laundered_by_the_next_writer() {
    let sb = sandbox_with(
        crate::helpers::clear_tickets(300, 47),
        fast_sandbox_options(0),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let db = crate::helpers::AuditAt::at(dir.path());
    let once = || {
        std::process::Command::new(BIN)
            .args(["once", "--config"])
            .arg(&config)
            .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
            .output()
            .unwrap()
    };
    assert!(once().status.success());
    // as if the process died mid-run, and someone then edited its figures
    db.edit("UPDATE runs SET status = 'running', scanned = 9999, purged = 9999, error = 'all fine' WHERE id = 1")
        .await;
    let next = once();
    let stderr = String::from_utf8_lossy(&next.stderr);
    assert_eq!(next.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("changed outside zd-retention"), "{stderr}");
    let verify = std::process::Command::new(BIN)
        .args(["audit", "verify"])
        .args(db.cli_args(dir.path()))
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(1),
        "the forged row is still named"
    );
}

/// `file:d.db` was once kept as a plain file of that name (never read as an
/// SQLite URI naming d.db); a URL-looking database is now refused outright,
/// and neither file is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_path_that_looks_like_an_sqlite_uri_is_refused_and_nothing_is_made() {
    if crate::helpers::sqlite_only("an SQLite file's path") {
        return;
    }
    let sb = crate::helpers::sandbox(150).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[zendesk]\nbase_url = \"{}\"\nemail = \"a@b.c\"\ntoken_env = \"ZD_TEST_TOKEN\"\n\
             [zendesk.rate_limits]\nlist = \"10/100ms\"\naccount = \"200/100ms\"\n\
             [audit]\ndatabase = \"file:d.db\"\n[[rules]]\nname = \"old\"\naction = \"purge\"\nolder_than = \"30d\"\n",
            sb.base_url()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["once", "--dry-run", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 9: audit.database: is a URL (file:...)"),
        "{stderr}"
    );
    assert!(!dir.path().join("file:d.db").exists());
    assert!(
        !dir.path().join("d.db").exists(),
        "the path was read as a URI"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_replaced_mid_run_does_not_receive_the_old_write_ahead_log() {
    if crate::helpers::sqlite_only("an SQLite file and its write-ahead log replaced under a run") {
        return;
    }
    let sb = sandbox_with(
        crate::helpers::clear_tickets(1500, 48),
        zd_retention::sandbox::SandboxOptions {
            job_delay: std::time::Duration::from_secs(600),
            ..fast_sandbox_options(0)
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // another database, with a history of its own
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other_config = live_config(&other_dir, &sb.base_url(), "0 0 * * * *");
    let out = std::process::Command::new(BIN)
        .args(["once", "--dry-run", "--config"])
        .arg(&other_config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success());
    let other_db = other_dir.join("audit.db");
    let config = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let db = dir.path().join("audit.db");
    let child = tokio::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while !sb.write_requests().iter().any(|r| r.method == "DELETE") {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    std::fs::rename(&other_db, &db).unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the moved-in database keeps its own history, untouched
    let verify = std::process::Command::new(BIN)
        .args(["audit", "runs", "--format", "json", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&verify.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&verify.stderr)));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["dry_run"], true, "the other database's one dry run");
}

#[test]
fn a_url_with_a_credential_is_refused_first_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "http://user:hunter2@example.com",
        "http://user:hunter2@127.0.0.1:99999",
        "ftp://user:hunter2@127.0.0.1",
        "http://user:hunter2@",
    ] {
        let config = sandbox_config(dir.path(), url, "token_env = \"ZD_TEST_TOKEN\"");
        let out = std::process::Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{url}: {text}");
        assert!(
            !text.contains("hunter2"),
            "{url}: the password was echoed: {text}"
        );
    }
}

#[test]
fn invisible_characters_in_a_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for token in [
        "SECRETx\u{200b}y",
        "SECRETx\u{2028}y",
        "SECRETx\u{202e}y",
        "SECRETx y",
    ] {
        let config = sandbox_config(
            dir.path(),
            "http://127.0.0.1:9",
            "token_env = \"ZD_ODD_TOKEN\"",
        );
        let out = std::process::Command::new(BIN)
            .args(["once", "--config"])
            .arg(&config)
            .env("ZD_ODD_TOKEN", token)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{token:?}: {stderr}");
        assert!(!stderr.contains("SECRET"), "{token:?}: shown: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_expected_head_is_a_usage_error_and_case_does_not_matter() {
    let sb = crate::helpers::sandbox(150).await;
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox_config(dir.path(), &sb.base_url(), "token_env = \"ZD_TEST_TOKEN\"");
    let out = tokio::process::Command::new(BIN)
        .args(["once", "--dry-run", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let db = crate::helpers::AuditAt::at(dir.path()).cli_args(dir.path());
    let head = std::process::Command::new(BIN)
        .args(["audit", "head", "--format", "json"])
        .args(&db)
        .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
        .output()
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    let upper = head["hash"].as_str().unwrap().to_uppercase();
    let verify = |expect: &str| {
        std::process::Command::new(BIN)
            .args(["audit", "verify", "--expect-head", expect])
            .args(&db)
            .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(verify(&upper), Some(0));
    assert_eq!(verify(""), Some(2));
    assert_eq!(verify("abc123"), Some(2));
    // a write error other than a closed pipe is an error, not a panic
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    if let Ok(full) = full {
        let out = std::process::Command::new(BIN)
            .args(["audit", "runs"])
            .args(&db)
            .env("ZD_TEST_TOKEN", crate::helpers::TOKEN)
            .stdout(full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A write that fails on a full disk leaves no connection stuck in a
/// transaction: once space is freed, the store writes again (sqlx's
/// ROLLBACK after SQLite's own fails, and the connection kept a
/// transaction depth of one: "begin_with at non-zero transaction depth").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_writes_again_once_a_full_disk_is_freed() {
    if crate::helpers::sqlite_only("SQLite's page limit as a full disk") {
        return;
    }
    use zd_retention::audit::{AuditStore, DecisionKind, DecisionRecord, RunOrigin, Trigger};
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::open(&dir.path().join("a.db")).await.unwrap();
    let run = store
        .start_run(
            Trigger::Manual,
            false,
            &RunOrigin::from("test"),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let decisions = |from: u64| -> Vec<DecisionRecord> {
        (from..from + 3000)
            .map(|id| DecisionRecord {
                ticket_id: id.into(),
                deleted_at: Some(chrono::Utc::now()),
                actor_id: Some(1001),
                actor_name: None,
                previous_state: Some("closed".into()),
                subject: None,
                rule: None,
                decision: DecisionKind::KeepNoRule,
                decided_at: chrono::Utc::now(),
                listed: true,
                subject_tags: None,
            })
            .collect()
    };
    let limit_all = |pages: Option<i64>| {
        let pool = store.pool().clone();
        async move {
            let mut conns = Vec::new();
            for _ in 0..4 {
                conns.push(pool.acquire().await.unwrap());
            }
            for c in &mut conns {
                let n: i64 = sqlx::query_scalar("PRAGMA page_count")
                    .fetch_one(&mut **c)
                    .await
                    .unwrap();
                let pragma = format!("PRAGMA max_page_count = {}", pages.unwrap_or(n));
                sqlx::query(sqlx::AssertSqlSafe(pragma))
                    .execute(&mut **c)
                    .await
                    .unwrap();
            }
        }
    };
    // the disk is full: no page more
    limit_all(None).await;
    let full = store
        .record_decisions(run, &decisions(1))
        .await
        .unwrap_err();
    assert!(format!("{full:#}").contains("full"), "{full:#}");
    // space is freed
    limit_all(Some(1_073_741_823)).await;
    for i in 0..8 {
        store
            .record_decisions(run, &decisions(100_000 * (i + 1)))
            .await
            .unwrap_or_else(|e| panic!("write {i} after the disk was freed: {e:#}"));
    }
}

//! The binary as a user runs it: exit codes, messages, `once` and `run`
//! against a sandbox.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use zd_retention::sandbox::Sandbox;

use crate::helpers::{TOKEN, clear_tickets, fast_sandbox_options, selected};

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn live_config(dir: &Path, base_url: &str, cron: &str) -> std::path::PathBuf {
    live_config_with(dir, base_url, cron, "")
}

fn live_config_with(dir: &Path, base_url: &str, cron: &str, extra: &str) -> std::path::PathBuf {
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
[schedule]
cron = "{cron}"
shutdown_grace = "5s"
[audit]
{db}
[safety]
dry_run = false
{extra}
[[rules]]
name = "legal-hold"
action = "keep"
subject_matches = "(?i)legal hold"
[[rules]]
name = "closed-after-7-days"
action = "purge"
previous_state = ["solved", "closed"]
older_than = "7d"
[[rules]]
name = "automation-deletions"
action = "purge"
actor_ids = [900001]
older_than = "1h"
"#,
        db = crate::helpers::AuditAt::at(dir).config_line()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_names_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[zendesk]\nbase_url = \"http://acme.zendesk.com\"\nemail = \"a@b.c\"\ntoken_env = \"T\"\n[safety]\nmin_age = \"soon\"\n[[rules]]\nname = \"x\"\naction = \"purge\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: zendesk.base_url"), "{stderr}");
    assert!(stderr.contains("line 6: safety.min_age"), "{stderr}");
    assert!(stderr.contains("match_all = true"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_config_of_the_packaged_config_says_where_systemd_puts_the_token() {
    // the package's /etc/zd-retention/config.toml reads the token from the
    // folder LoadCredential makes at the service's start: an administrator's
    // check-config outside the service cannot read it, and is not failed
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let packaged = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/config.toml"
    ))
    .unwrap();
    assert!(packaged.contains("/run/credentials/zd-retention.service/zendesk-token"));
    let here = packaged.replace(
        "/var/lib/zd-retention/zd-retention.db",
        &dir.path().join("audit.db").display().to_string(),
    );
    std::fs::write(&path, here).unwrap();
    let check = |credentials_dir: Option<&std::path::Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["check-config", "--config"]).arg(&path);
        match credentials_dir {
            Some(d) => cmd.env("CREDENTIALS_DIRECTORY", d),
            None => cmd.env_remove("CREDENTIALS_DIRECTORY"),
        };
        cmd.output().unwrap()
    };
    let outside = check(None);
    let stdout = String::from_utf8_lossy(&outside.stdout);
    assert_eq!(
        outside.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&outside.stderr)
    );
    assert!(
        stdout.contains(
            "credential: not read here: systemd puts it in /run/credentials/zd-retention.service"
        ),
        "{stdout}"
    );
    // inside the service (systemd sets CREDENTIALS_DIRECTORY) a missing
    // token is the error it is
    let inside = check(Some(dir.path()));
    assert_eq!(inside.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&inside.stderr).contains("zendesk.token_file"),
        "{}",
        String::from_utf8_lossy(&inside.stderr)
    );
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // the commit checked out here (build.rs reads it from git), or
    // "unknown" for a build outside git
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    let shape = regex::Regex::new(
        r"^zd-retention \d+\.\d+\.\d+ \(commit (\S+), built (\d{4}-\d{2}-\d{2}|unknown)\)$",
    )
    .unwrap();
    let found = shape
        .captures(&line)
        .unwrap_or_else(|| panic!("--version printed {line:?}"));
    assert_eq!(&found[1], head, "{line}");
    assert_eq!(
        line,
        format!("zd-retention {}", zd_retention::build::VERSION_LINE)
    );
}

#[test]
fn commands_without_a_config_say_how_to_give_one() {
    let out = Command::new(BIN)
        .arg("once")
        .env_remove("ZD_RETENTION_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_purges_exactly_what_the_rules_select() {
    let tickets = clear_tickets(700, 21);
    let want = selected(&tickets);
    let sb = Sandbox::start_with(
        fast_sandbox_options(0),
        tickets,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let out = tokio::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("completed"), "{stdout}");
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(purged, want);
    // at trace level the token is still nowhere
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    let db = crate::helpers::AuditAt::at(dir.path()).all_text().await;
    assert!(!db.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_against_an_id_ordered_cursor_listing_says_it_scanned_everything() {
    let tickets = clear_tickets(700, 22);
    let want = selected(&tickets);
    let options = zd_retention::sandbox::SandboxOptions {
        cursor_sort: zd_retention::sandbox::CursorSort::Ignore,
        ..fast_sandbox_options(0)
    };
    let sb = Sandbox::start_with(options, tickets, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let out = tokio::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("(the whole view)"), "{stdout}");
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(purged, want);
    // the next run would read only the newest deletions: no proof here
    let out = tokio::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("scan       full: no proven order"),
        "{stdout}"
    );
    let audit = std::process::Command::new(BIN)
        .args(["audit", "run", "2", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        text.contains("a reconcile (the whole view)") && text.contains("scan: no proven order"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reads_only_stores_its_findings_and_fails_on_refused_credentials() {
    let options = zd_retention::sandbox::SandboxOptions {
        auth: zd_retention::sandbox::SandboxAuth::Token(TOKEN.into()),
        strict_job_ids: true,
        ..fast_sandbox_options(300)
    };
    let sb = Sandbox::start_local(options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let out = tokio::process::Command::new(BIN)
        .args(["probe", "--format", "json", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let findings: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(findings["cursor_sort"], "honoured");
    assert!(
        findings["unknown_job_id"]
            .as_str()
            .unwrap()
            .starts_with("the whole call fails")
    );
    assert!(sb.write_requests().is_empty(), "probe sent a write request");
    let store = crate::helpers::AuditAt::at(dir.path())
        .open_read_only()
        .await
        .unwrap();
    let (_, stored) = store
        .latest_probe(findings["base_url"].as_str().unwrap())
        .await
        .unwrap()
        .expect("the findings are stored");
    assert!(!stored.contains(TOKEN));
    assert!(stored.contains("\"cursor_sort\": \"honoured\""), "{stored}");

    let refused = tokio::process::Command::new(BIN)
        .args(["probe", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", "wrong-token")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("wrong-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_on_cron_and_stops_cleanly_on_sigterm() {
    let tickets = clear_tickets(300, 22);
    let sb = Sandbox::start_with(
        fast_sandbox_options(0),
        tickets,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = live_config_with(
        dir.path(),
        &sb.base_url(),
        "* * * * * *",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\""),
    );
    let child = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let db = crate::helpers::AuditAt::at(dir.path());
    // wait for two completed runs, read through a read-only store
    let mut completed = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(store) = db.open_read_only().await {
            completed = store
                .runs(None, 100)
                .await
                .map(|r| {
                    r.iter()
                        .filter(|r| r.status == zd_retention::audit::RunStatus::Completed)
                        .count()
                })
                .unwrap_or(0);
            store.close().await;
            if completed >= 2 {
                break;
            }
        }
    }
    assert!(completed >= 2, "the daemon ran on its cron");
    // health and metrics while it runs
    let base = format!("http://127.0.0.1:{port}");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "zd_retention_runs_total{status=\"completed\"}",
        "zd_retention_api_requests_total{endpoint=\"list\",status=\"200\"}",
        "zd_retention_tickets_matched_total{rule=",
        "zd_retention_tickets_purged_total{rule=",
        "zd_retention_run_duration_seconds_bucket",
        "zd_retention_last_success_timestamp_seconds",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    // which build is running: the same version and commit as --version
    let build_info = metrics
        .lines()
        .find(|l| l.starts_with("zd_retention_build_info{"))
        .unwrap_or_else(|| panic!("no zd_retention_build_info:\n{metrics}"));
    assert!(
        build_info.contains(&format!("version=\"{}\"", zd_retention::build::VERSION))
            && build_info.contains(&format!("commit=\"{}\"", zd_retention::build::COMMIT))
            && build_info.ends_with(" 1"),
        "{build_info}"
    );
    let pid = child.id().unwrap();
    // the token is in no process argument (it comes from the environment)
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN));
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits within 30 s")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = db.open_read_only().await.unwrap();
    let runs = store.runs(None, 100).await.unwrap();
    assert!(
        runs.iter()
            .all(|r| r.status != zd_retention::audit::RunStatus::Running),
        "no run is left running"
    );
    // runs never overlap: each starts after the previous one finished
    let mut by_start = runs.clone();
    by_start.sort_by_key(|r| r.id);
    for pair in by_start.windows(2) {
        let finished = pair[0].finished_at.clone().unwrap();
        assert!(
            pair[1].started_at >= finished,
            "run {} overlaps run {}",
            pair[1].id,
            pair[0].id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_ledger_shows_what_a_new_config_changes_without_a_listing() {
    let tickets = clear_tickets(600, 31);
    let sb = Sandbox::start_with(
        fast_sandbox_options(0),
        tickets.clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let out = tokio::process::Command::new(BIN)
        .args(["once", "--config"])
        .arg(&config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // the same account and database, with the automation rule dropped and a
    // hold on agent 1003's deletions
    let text = std::fs::read_to_string(&config).unwrap();
    let cut = text
        .find("[[rules]]\nname = \"automation-deletions\"")
        .unwrap();
    let new_config = dir.path().join("new.toml");
    std::fs::write(
        &new_config,
        format!(
            "{}[[rules]]\nname = \"carla-holds\"\naction = \"keep\"\nactor_ids = [1003]\n",
            &text[..cut]
        )
        .replace(
            "[[rules]]\nname = \"legal-hold\"",
            "[[rules]]\nname = \"carla-first\"\naction = \"keep\"\nactor_ids = [1003]\n[[rules]]\nname = \"legal-hold\"",
        ),
    )
    .unwrap();
    let requests_before = sb.count("list");
    let out = std::process::Command::new(BIN)
        .args(["plan", "--ledger", "--format", "json", "--config"])
        .arg(&new_config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sb.count("list"), requests_before, "no listing");
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = diff["changes"].as_array().unwrap();
    assert!(!changes.is_empty(), "{diff}");
    // the ledger holds the kept tickets (the purged await settling): agent
    // 1003's kept by no rule become kept by the new rule
    let carla_kept: u64 = changes
        .iter()
        .filter(|c| c["to_rule"] == "carla-first")
        .map(|c| c["tickets"].as_u64().unwrap())
        .sum();
    let expected = tickets
        .iter()
        .filter(|t| t.actor_id == 1003 && !sb.purged_ids().contains(&t.id))
        .count() as u64;
    assert!(
        carla_kept > 0 && carla_kept <= expected,
        "{carla_kept} of {expected}: {diff}"
    );
    // the table names both rules
    let out = std::process::Command::new(BIN)
        .args(["plan", "--ledger", "--config"])
        .arg(&new_config)
        .env("ZD_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would change decision") && text.contains("carla-first"),
        "{text}"
    );
    // and the ledger's own view
    let out = std::process::Command::new(BIN)
        .args(["audit", "ledger", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let ledger: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ledger["tickets"]["purged"].as_u64(),
        Some(sb.purged_ids().len() as u64),
        "{ledger}"
    );
    assert!(ledger["high_water"].is_string(), "{ledger}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_ledger_shows_what_a_refused_run_selected_as_purged_by_the_next_run() {
    let tickets = clear_tickets(600, 41);
    let want = selected(&tickets);
    assert!(want.len() > 5);
    let sb = Sandbox::start_with(
        fast_sandbox_options(0),
        tickets,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &Path| {
        std::process::Command::new(BIN)
            .args(["once", "--config"])
            .arg(config)
            .env("ZD_TEST_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    // a run refused by max_purges_per_run: its selection stays in the ledger
    let strict = live_config_with(
        dir.path(),
        &sb.base_url(),
        "0 0 * * * *",
        "max_purges_per_run = 5",
    );
    let refused = run(&strict);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("max_purges_per_run"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(sb.purged_ids().is_empty());
    let plan = |config: &Path, format: &str| {
        let out = std::process::Command::new(BIN)
            .args(["plan", "--ledger", "--format", format, "--config"])
            .arg(config)
            .env("ZD_TEST_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // under the same limit: the next run would refuse again, and says so
    let text = plan(&strict, "table");
    assert!(
        text.contains(&format!(
            "{} tickets will be purged by the next run",
            want.len()
        )) && text.contains("closed-after-7-days")
            && text.contains("refuses and purges none of them"),
        "{text}"
    );
    // the limit raised: exactly the refused selection, by rule
    let raised = live_config(dir.path(), &sb.base_url(), "0 0 * * * *");
    let diff: serde_json::Value = serde_json::from_str(&plan(&raised, "json")).unwrap();
    let next = &diff["next_run"];
    let planned: BTreeSet<u64> = next["ticket_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect();
    assert_eq!(planned, want, "{diff}");
    assert_eq!(
        next["already_selected"].as_u64(),
        Some(want.len() as u64),
        "{diff}"
    );
    assert_eq!(next["over_the_limit"], false, "{diff}");
    assert_eq!(next["sent"], true, "{diff}");
    let by_rule: u64 = next["by_rule"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_rule, want.len() as u64, "{diff}");
    // and the next run purges exactly those
    let out = run(&raised);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let purged: BTreeSet<u64> = sb.purged_ids().into_iter().collect();
    assert_eq!(purged, planned);
}

#[test]
fn a_writer_as_root_refuses_a_database_another_user_owns() {
    // found by a hostile run: `sudo zd-retention once` on the service's
    // database left its lock and its copy owned by root, and the service
    // could no longer start ("Permission denied")
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: runs as root only");
        return;
    }
    if crate::helpers::sqlite_only("the owner of a database file and its lock") {
        return;
    }
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("state");
    std::fs::create_dir(&folder).unwrap();
    // nobody owns the folder: the database does not exist yet
    std::os::unix::fs::chown(&folder, Some(65534), Some(65534)).unwrap();
    let config = crate::helpers::offline_config(dir.path(), &folder.join("audit.db"), true, "");
    let once = || {
        Command::new(BIN)
            .args(["once", "--config"])
            .arg(&config)
            .env("ZD_TEST_TOKEN", "x")
            .output()
            .unwrap()
    };
    let out = once();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("uid 65534")
            && stderr.contains("runs as root")
            && stderr.contains("runuser -u"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        0,
        "nothing made in the owner's folder"
    );
    // a database the other user owns, in a folder of root's
    std::os::unix::fs::chown(&folder, Some(0), Some(0)).unwrap();
    let db = folder.join("audit.db");
    std::fs::write(&db, b"").unwrap();
    std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
    let out = once();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs as root"));
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), 65534);
    assert!(!folder.join("audit.db.lock").exists(), "no lock made");
}

#[test]
fn bash_completes_below_the_first_word() {
    // clap_complete's arms and dispatch disagreed for a hyphenated program
    // name: `zd-retention audit ve<TAB>` completed nothing
    let script = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zd-retention.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let complete = |words: &[&str]| {
        let line = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _zd__retention zd-retention {} {}; echo \"${{COMPREPLY[*]}}\"",
            path.display(),
            words.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let out = Command::new("bash").args(["-c", &line]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete(&["zd-retention", "aud"]), "audit");
    assert_eq!(complete(&["zd-retention", "audit", "ve"]), "verify");
    assert!(
        complete(&["zd-retention", "once", "--dry"]).contains("--dry-run"),
        "{}",
        complete(&["zd-retention", "once", "--dry"])
    );
}

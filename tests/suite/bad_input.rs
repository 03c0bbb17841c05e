//! Bad input: every broken config under tests/configs/bad/ and broken
//! command lines give a message that names the problem, exit code 2, and no
//! panic or backtrace.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn assert_clean_refusal(what: &str, out: &std::process::Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: exit code\n{stderr}");
    assert!(
        stderr.contains(expect),
        "{what}: the message does not name {expect:?}:\n{stderr}"
    );
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{what}: {bad} in\n{stderr}");
    }
    assert!(
        stderr.lines().count() <= 24,
        "{what}: more than a screen:\n{stderr}"
    );
}

#[test]
fn every_broken_config_is_refused_with_its_key_and_exit_2() {
    let mut files: Vec<_> = std::fs::read_dir("tests/configs/bad")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus holds {} files", files.len());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks its # expect line", file.display()));
        for command in [&["check-config"][..], &["once", "--dry-run"][..]] {
            let out = Command::new(BIN)
                .args(command)
                .arg("--config")
                .arg(file)
                .env("RUST_BACKTRACE", "1")
                .output()
                .unwrap();
            assert_clean_refusal(
                &format!("{} ({})", file.display(), command[0]),
                &out,
                expect,
            );
        }
    }
}

#[test]
fn broken_command_lines_are_refused_with_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unrecognized subcommand"),
        (&["list", "--format", "xml"], "invalid value 'xml'"),
        (&["once", "--dry-run=maybe"], "unexpected value"),
        (&["audit", "ticket"], "TICKET_ID"),
        (
            &["audit", "ticket", "forty-two"],
            "invalid value 'forty-two'",
        ),
        (
            &["audit", "search", "--since", "last tuesday"],
            "is not a day",
        ),
        (
            &["sandbox", "--listen", "nowhere"],
            "invalid value 'nowhere'",
        ),
        (&["sandbox", "--job-delay", "soon"], "invalid value 'soon'"),
        (
            &["restore", "--config", "config/example.toml"],
            "no ticket id given",
        ),
        (
            &["once", "--config", "/nonexistent/config.toml"],
            "cannot read it",
        ),
        (&["plan", "--explain"], "TICKET_ID"),
        // ids the audit cannot hold, and vocabularies it does not have
        (
            &["audit", "search", "--ticket", "18446744073709551615"],
            "not a ticket id: Zendesk ids are 1 to 9223372036854775807",
        ),
        (
            &["audit", "ticket", "9223372036854775808"],
            "not a ticket id",
        ),
        (&["plan", "--explain", "0"], "not a ticket id"),
        (
            &["audit", "search", "--ticket", "-1"],
            "unexpected argument '-1'",
        ),
        (
            &["audit", "search", "--outcome", "PURGED"],
            "not one of purged, failed, unknown",
        ),
        (
            &["audit", "search", "--decision", "keep"],
            "not one of purge, would_purge, keep_rule",
        ),
        // dates and durations past what a clock holds: refused, never a panic
        (
            &["demo", "--tickets", "18446744073709551615"],
            "is more than the sandbox holds: use 0 to 10000000",
        ),
        (
            &["sandbox", "--tickets", "99999999999"],
            "is more than the sandbox holds: use 0 to 10000000",
        ),
        (
            &["audit", "report", "--since", "99999999d"],
            "for '--since <SINCE>': \"99999999d\" reaches back before 1970-01-01",
        ),
        (
            &["audit", "runs", "--since", "99999999d"],
            "for '--since <SINCE>'",
        ),
        (
            &["audit", "search", "--until", "99999999d"],
            "for '--until <UNTIL>'",
        ),
        (
            &["audit", "search", "--since", "18446744073709551615s"],
            "reaches back before 1970-01-01",
        ),
        (
            &["audit", "export", "--since", "1969-12-31"],
            "outside the years 1970 to 9999",
        ),
        (
            &["audit", "stats", "--since", "600000y"],
            "for '--since <SINCE>'",
        ),
        (
            &["audit", "report", "--until", "99999999d"],
            "for '--until <UNTIL>'",
        ),
        // an empty period, the same refusal everywhere
        (
            &["audit", "report", "--since", "0d"],
            "the period is empty: --since (",
        ),
        (
            &[
                "audit",
                "report",
                "--since",
                "2026-01-02",
                "--until",
                "2026-01-02",
            ],
            "the period is empty: --since (2026-01-02T00:00:00.000Z) is not before --until (2026-01-02T00:00:00.000Z)",
        ),
        (
            &[
                "audit",
                "search",
                "--since",
                "2026-01-03",
                "--until",
                "2026-01-02",
            ],
            "the period is empty: --since (2026-01-03T00:00:00.000Z) is not before --until",
        ),
        (&["audit", "search", "--since", "0s"], "the period is empty"),
        (&["audit", "runs", "--since", "0d"], "is not before now"),
        (
            &["audit", "export", "--since", "9999-01-01"],
            "is not before now",
        ),
        (&["audit", "stats", "--since", "0d"], "the period is empty"),
        // the sandbox (a listen address that cannot be bound: an argument
        // let through ends the command at once instead of serving)
        (
            &[
                "sandbox",
                "--listen",
                "192.0.2.1:9",
                "--job-delay",
                "18446744073709551615s",
            ],
            "for '--job-delay <JOB_DELAY>': \"18446744073709551615s\" is more than 100 years",
        ),
        (
            &[
                "sandbox",
                "--listen",
                "192.0.2.1:9",
                "--scrub-after",
                "99999999999d",
            ],
            "for '--scrub-after <SCRUB_AFTER>'",
        ),
        (
            &[
                "sandbox",
                "--listen",
                "192.0.2.1:9",
                "--time-scale",
                "1e-300",
            ],
            "for '--time-scale <TIME_SCALE>'",
        ),
    ];
    for (args, expect) in cases {
        let out = Command::new(BIN)
            .args(*args)
            .env("RUST_BACKTRACE", "1")
            .env_remove("ZD_RETENTION_CONFIG")
            .output()
            .unwrap();
        assert_clean_refusal(&args.join(" "), &out, expect);
    }
}

#[test]
fn a_database_url_or_a_missing_folder_is_refused_everywhere_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[zendesk]\nsubdomain = \"acme\"\nemail = \"ops@acme.example\"\ntoken_env = \"HOME\"\n[audit]\ndatabase = \"postgres://postgres:hunter2@127.0.0.1:5432/postgres\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .current_dir(dir.path())
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env_remove("ZD_RETENTION_CONFIG")
            .output()
            .unwrap()
    };
    let config = config.to_str().unwrap();
    for command in [
        &["check-config"][..],
        &["once", "--dry-run"],
        &["audit", "verify"],
        &["audit", "report"],
        &["plan", "--ledger"],
    ] {
        let out = run(&[command, &["--config", config]].concat());
        let what = command.join(" ");
        assert_clean_refusal(
            &what,
            &out,
            "line 6: audit.database: holds a password: the config is no place for it",
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    }
    for (database, expect) in [
        (
            "postgres://postgres:hunter2@127.0.0.1:5432/postgres",
            "--database: is a URL (postgres://...)",
        ),
        ("sqlite:audit.db", "--database: is a URL (sqlite:...)"),
        ("FILE:audit.db", "--database: is a URL (FILE:...)"),
        (
            "missing/folder/audit.db",
            "--database: its folder missing/folder does not exist",
        ),
    ] {
        for command in [
            &["audit", "verify"][..],
            &["audit", "report"],
            &["audit", "export"],
            &["audit", "certificate", "1"],
            &["demo", "--tickets", "10"],
        ] {
            let out = run(&[command, &["--database", database]].concat());
            let what = format!("{} --database {database}", command.join(" "));
            assert_clean_refusal(&what, &out, expect);
            assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
        }
    }
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["config.toml"], "no file or folder is created");
}

#[tokio::test]
async fn the_audit_store_never_creates_a_folder() {
    if crate::helpers::sqlite_only("a folder for an SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("not-made").join("audit.db");
    let Err(err) = zd_retention::audit::AuditStore::open(&db).await else {
        panic!("a database in a missing folder is opened");
    };
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    assert!(!dir.path().join("not-made").exists());
}

#[test]
fn an_ids_file_with_a_word_that_is_no_ticket_id_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, "4711, abc\n# a comment\n").unwrap();
    for command in ["restore", "purge"] {
        let out = Command::new(BIN)
            .args([command, "--config", "config/example.toml", "--ids-file"])
            .arg(&ids)
            .output()
            .unwrap();
        assert_clean_refusal(command, &out, "\"abc\" (item 2) is not a ticket id");
    }
}

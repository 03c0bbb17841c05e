//! The PostgreSQL audit from the command line (the PostgreSQL pass only):
//! `audit migrate --to` from an SQLite history of every schema, the same
//! head verified there, a destination that is not empty refused, a password
//! never taken on the command line; then the daemon's commands on the
//! migrated database, the chain going on where SQLite's stopped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::{TOKEN, fresh_postgres_database, postgres_server, sandbox};
use zd_retention::audit::AuditStore;

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn zd(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("ZD_TEST_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .env_remove("ZD_RETENTION_CONFIG")
        .output()
        .unwrap()
}

/// `audit migrate` of the SQLite file `db` into `to`.
fn migrate(db: &Path, to: &str, more: &[&str]) -> std::process::Output {
    let args = [
        "audit",
        "migrate",
        "--database",
        db.to_str().unwrap(),
        "--to",
        to,
    ];
    zd(&[&args[..], more].concat())
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fixture(schema: i64) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/schemas/schema-{schema:02}.db"))
}

fn config(dir: &Path, base_url: &str, database: &str, key: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[zendesk]\nbase_url = \"{base_url}\"\nemail = \"ops@acme.example\"\ntoken_env = \"ZD_TEST_TOKEN\"\njob_poll_interval = \"20ms\"\n\
             [zendesk.rate_limits]\nlist = \"10/100ms\"\nlist_deep = \"5/100ms\"\naccount = \"200/100ms\"\n\
             [audit]\ndatabase = \"{database}\"\nsigning_key_file = \"{}\"\n[safety]\ndry_run = false\n\
             [[rules]]\nname = \"closed-after-7-days\"\naction = \"purge\"\nprevious_state = [\"solved\", \"closed\"]\nolder_than = \"7d\"\n",
            key.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_moved_to_postgres_verifies_with_the_same_head_and_goes_on_there() {
    let Some(server) = postgres_server() else {
        eprintln!("skipped: the PostgreSQL pass runs it (tests/tools/with-postgres)");
        return;
    };
    let sb = sandbox(600).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    assert!(
        zd(&["audit", "keygen", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    let public = dir.path().join("key.pub.pem");
    let db = dir.path().join("audit.db");
    let sqlite_config = config(dir.path(), &sb.base_url(), db.to_str().unwrap(), &key);
    for _ in 0..2 {
        let out = zd(&["once", "--config", sqlite_config.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let source = AuditStore::open_read_only(&db).await.unwrap();
    let head = source.verify_chain().await.unwrap().head;
    source.close().await;

    // a password on the command line is refused, and never repeated
    let url = fresh_postgres_database(&server).await;
    let with_password = url.replacen("://zd@", "://zd:hunter2@", 1);
    let out = migrate(&db, &with_password, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--to holds a password"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("hunter2"));

    // the copy: the same head, the signatures verified there
    let out = migrate(&db, &url, &["--public-key", public.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("the same head {head}")),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("signed heads verify"), "{}", text(&out));

    // once more into the same database: refused, nothing copied twice
    let out = migrate(&db, &url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not empty"), "{}", text(&out));

    // the daemon's commands on PostgreSQL: the chain goes on from the head
    let pg_dir = tempfile::tempdir().unwrap();
    let pg_config = config(pg_dir.path(), &sb.base_url(), &url, &key);
    let pg_config = pg_config.to_str().unwrap();
    let verify = || {
        let public = public.to_str().unwrap();
        zd(&[
            "audit",
            "verify",
            "--config",
            pg_config,
            "--expect-head",
            &head,
            "--public-key",
            public,
        ])
    };
    let out = verify();
    assert!(out.status.success(), "{}", text(&out));
    let out = zd(&["once", "--config", pg_config]);
    assert!(out.status.success(), "{}", text(&out));
    let out = verify();
    assert!(
        out.status.success(),
        "after a run on PostgreSQL: {}",
        text(&out)
    );
    for command in [
        &["audit", "runs"][..],
        &["audit", "ledger"],
        &["audit", "stats"],
        &["audit", "head"],
    ] {
        let out = zd(&[command, &["--config", pg_config]].concat());
        assert!(out.status.success(), "{command:?}: {}", text(&out));
    }
    // a backup with pg_dump, restored into another database: the head
    // noted before verifies there
    let noted = AuditStore::open_postgres_read_only(&url)
        .await
        .unwrap()
        .verify_chain()
        .await
        .unwrap()
        .head;
    let dump = pg_dir.path().join("audit.dump");
    let out = Command::new("pg_dump")
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&dump)
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump: {}", text(&out));
    let restored = fresh_postgres_database(&server).await;
    let out = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname", &restored])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", text(&out));
    let restored_dir = tempfile::tempdir().unwrap();
    let restored_config = config(restored_dir.path(), &sb.base_url(), &restored, &key);
    let out = zd(&[
        "audit",
        "verify",
        "--config",
        restored_config.to_str().unwrap(),
        "--expect-head",
        &noted,
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "the restored backup: {}", text(&out));

    let report = pg_dir.path().join("report.html");
    let out = zd(&[
        "audit",
        "report",
        "--config",
        pg_config,
        "--since",
        "2000-01-01",
        "--output",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = zd(&[
        "audit",
        "certificate",
        "1",
        "--config",
        pg_config,
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_of_every_earlier_schema_moves_to_postgres_with_its_head() {
    let Some(server) = postgres_server() else {
        eprintln!("skipped: the PostgreSQL pass runs it (tests/tools/with-postgres)");
        return;
    };
    let newest = zd_retention::audit::newest_schema();
    let mut moved = 0;
    for schema in 1..newest {
        if !fixture(schema).exists() {
            // (2 and 7 were never written alone: see upgrade.rs)
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        std::fs::copy(fixture(schema), &db).unwrap();
        let source = AuditStore::open_read_only(&db).await.unwrap();
        let report = source.verify_chain().await.unwrap();
        source.close().await;
        let url = fresh_postgres_database(&server).await;
        let out = migrate(&db, &url, &[]);
        match report.problem {
            // a history older than the chain cannot be proven: not copied
            Some(problem) => {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "schema {schema}: {}",
                    text(&out)
                );
                assert!(
                    text(&out).contains("does not verify"),
                    "schema {schema} ({problem}): {}",
                    text(&out)
                );
            }
            None => {
                assert!(out.status.success(), "schema {schema}: {}", text(&out));
                assert!(
                    text(&out).contains(&format!("the same head {}", report.head)),
                    "schema {schema}: {}",
                    text(&out)
                );
                moved += 1;
            }
        }
    }
    assert!(moved >= 5, "only {moved} schemas moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_stays_out_of_output_errors_and_the_audit_and_sslmode_is_honoured() {
    let Some(server) = postgres_server() else {
        eprintln!("skipped: the PostgreSQL pass runs it (tests/tools/with-postgres)");
        return;
    };
    let sb = sandbox(50).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "pw-S3cret-q7Zx";
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{secret}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = fresh_postgres_database(&server).await;
    // a role that must sign in with its password (tests/tools/with-postgres
    // asks SCRAM of it over loopback)
    {
        let admin = sqlx::AnyPool::connect(&server).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'zd_password') THEN
                 CREATE ROLE zd_password LOGIN SUPERUSER;
               END IF;
             END $$;
             SET password_encryption = 'scram-sha-256';
             ALTER ROLE zd_password PASSWORD '{secret}';"
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
    }
    let trusted = url.clone();
    let url = url.replacen("postgres://zd@", "postgres://zd_password@", 1);
    let write = |name: &str, database: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[zendesk]\nbase_url = \"{}\"\nemail = \"ops@acme.example\"\ntoken_env = \"ZD_TEST_TOKEN\"\njob_poll_interval = \"20ms\"\n\
                 [zendesk.rate_limits]\nlist = \"10/100ms\"\n[audit]\ndatabase = \"{database}\"\npassword_file = \"{}\"\n[safety]\ndry_run = false\n\
                 [[rules]]\nname = \"old\"\naction = \"purge\"\nolder_than = \"7d\"\n",
                sb.base_url(),
                password.display()
            ),
        )
        .unwrap();
        path
    };
    let good = write("good.toml", &url);
    let good = good.to_str().unwrap();
    let mut seen = String::new();
    for args in [
        &["check-config", "--config", good][..],
        &["once", "--config", good],
        &["audit", "runs", "--config", good],
        &["audit", "verify", "--config", good],
    ] {
        let out = zd(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        seen.push_str(&text(&out));
    }
    // a wrong password: refused by the server, named, never shown
    let wrong_secret = "pw-Wr0ng-k2Lm";
    std::fs::write(&password, format!("{wrong_secret}\n")).unwrap();
    let out = zd(&["once", "--config", good]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("password authentication failed"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(wrong_secret), "{}", text(&out));
    std::fs::write(&password, format!("{secret}\n")).unwrap();
    // a server that is not there, and TLS asked of one without it
    let (base, _) = url.rsplit_once('/').unwrap();
    let gone = write("gone.toml", "postgres://zd@127.0.0.1:1/none");
    let out = zd(&["once", "--config", gone.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out)
            .contains("cannot connect to the audit database postgres://zd:***@127.0.0.1:1/none"),
        "{}",
        text(&out)
    );
    seen.push_str(&text(&out));
    // a read-only command names the refusal too (its pool had retried for
    // 30 s and then said only that it timed out)
    let out = zd(&["audit", "runs", "--config", gone.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Connection refused"), "{}", text(&out));
    seen.push_str(&text(&out));
    let tls = write(
        "tls.toml",
        &format!("{base}/{}?sslmode=require", url.rsplit_once('/').unwrap().1),
    );
    let out = zd(&["once", "--config", tls.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sslmode=require is honoured: {}",
        text(&out)
    );
    seen.push_str(&text(&out));
    assert!(!seen.contains(secret), "the password was shown: {seen}");
    // nor is it anywhere in the audit
    let store = AuditStore::open_postgres_read_only(&trusted).await.unwrap();
    let settings: Vec<String> = sqlx::query_scalar("SELECT settings FROM config_versions")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(!settings.is_empty());
    assert!(settings.iter().all(|s| !s.contains(secret)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lead_is_refused_and_a_write_under_an_older_term_leaves_nothing() {
    let Some(server) = postgres_server() else {
        eprintln!("skipped: the PostgreSQL pass runs it (tests/tools/with-postgres)");
        return;
    };
    use zd_retention::audit::{Lead, RunOrigin, Trigger};
    let url = fresh_postgres_database(&server).await;
    let lead = Lead::try_take(&url, "node a (pid 1)")
        .await
        .unwrap()
        .expect("the lead is free");
    let store = AuditStore::open_postgres_leading(&url, None, lead)
        .await
        .unwrap();
    let origin = RunOrigin::here("cafe", None);
    store
        .start_run(Trigger::Manual, true, &origin, chrono::Utc::now())
        .await
        .unwrap();
    // a second node is refused while the first holds it, told by whom
    let holder = Lead::try_take(&url, "node b (pid 2)")
        .await
        .unwrap()
        .expect_err("the lead is held");
    assert!(holder.contains("node a (pid 1)"), "{holder}");
    // a newer term (a takeover after the first node's lock went unnoticed)
    {
        use sqlx::Connection as _;
        let mut admin = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE fence SET term = term + 1, holder = 'node b (pid 2)'")
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let err = store
        .start_run(Trigger::Manual, true, &origin, chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("another node took over"),
        "{err:#}"
    );
    // refused for good, and nothing of the refused run was written
    assert!(store.confirm_lead().await.is_err());
    assert!(store.lead_lost());
    let reader = AuditStore::open_postgres_read_only(&url).await.unwrap();
    assert_eq!(reader.runs(None, 10).await.unwrap().len(), 1);
    assert!(reader.verify_chain().await.unwrap().problem.is_none());
}

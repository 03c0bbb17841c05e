//! Upgrades and rollbacks of the audit database.
//!
//! `tests/fixtures/schemas/schema-NN.db` holds a database of every schema
//! an earlier zd-retention wrote, each made by that commit's own binary
//! (`tests/fixtures/schemas/make.sh`): this build upgrades each in place,
//! keeps a copy of it as it was, and its history verifies and reads as
//! before. A database of a schema newer than this build's (a rollback to
//! an older binary, simulated by a migration from the future) is refused
//! by every command, naming both schemas, and never written.

use std::path::{Path, PathBuf};
use zd_retention::ids::TicketId;

use zd_retention::audit::{AuditStore, newest_schema};

use crate::helpers::{offline_config, sha256_file, sqlite3};

/// Schemas no build ever wrote alone: 0002 came with 0003, and 0007 was
/// edited after 0008 came (a database of the first 0007 does not open: sqlx
/// refuses an applied migration that changed since).
const NEVER_WRITTEN_ALONE: &[i64] = &[2, 7];

fn fixture(schema: i64) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/schemas/schema-{schema:02}.db"))
}

fn scalar(db: &Path, sql: &str) -> i64 {
    let out = sqlite3(db, sql);
    out.parse().unwrap_or_else(|_| panic!("{sql}: {out:?}"))
}

/// The copies an upgrade left in `dir`.
fn backups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect()
}

#[test]
fn every_earlier_schema_has_a_fixture() {
    let newest = newest_schema();
    for schema in 1..newest {
        assert!(
            NEVER_WRITTEN_ALONE.contains(&schema) || fixture(schema).exists(),
            "no fixture for schema {schema}: a new migration needs the previous schema's database, \
             made by tests/fixtures/schemas/make.sh with the last commit before it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_every_earlier_schema_is_upgraded_in_place_with_a_copy_kept() {
    if crate::helpers::sqlite_only(
        "an SQLite file upgraded in place beside its copy (PostgreSQL's schema is one migration; postgres::a_history_of_every_earlier_schema_moves_to_postgres_with_its_head takes each fixture there)",
    ) {
        return;
    }
    let newest = newest_schema();
    let mut seen = 0;
    for schema in (1..newest).filter(|s| fixture(*s).exists()) {
        seen += 1;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        std::fs::copy(fixture(schema), &db).unwrap();
        let runs = scalar(&db, "SELECT COUNT(*) FROM runs");
        let purged = scalar(
            &db,
            "SELECT COUNT(*) FROM outcomes WHERE outcome = 'purged'",
        );
        let decisions = scalar(&db, "SELECT COUNT(*) FROM decisions");
        let original = sha256_file(&db);

        let store = AuditStore::open(&db)
            .await
            .unwrap_or_else(|e| panic!("schema {schema}: {e:#}"));
        let report = store.verify_chain().await.unwrap();
        if schema < 4 {
            // never chained, and never passed off as chained: named as such
            let problem = report.problem.clone().unwrap_or_default();
            assert!(
                problem.starts_with("row 1 of runs predates the hash chain"),
                "schema {schema}: {report:?}"
            );
        } else {
            assert!(
                report.problem.is_none(),
                "schema {schema}: {:?}",
                report.problem
            );
            assert!(
                report.rows >= runs + decisions,
                "schema {schema}: every old row chained: {report:?}"
            );
        }
        let upgraded: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(upgraded, newest, "schema {schema}");
        // the history reads as before: a purged ticket's decision and outcome
        let ticket: i64 = sqlx::query_scalar(
            "SELECT ticket_id FROM outcomes WHERE outcome = 'purged' ORDER BY id LIMIT 1",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        let story = store
            .ticket_history(TicketId::new(ticket as u64))
            .await
            .unwrap();
        let kinds: Vec<&str> = story.iter().map(|e| e.kind.as_str()).collect();
        assert!(
            kinds.contains(&"decision") && kinds.contains(&"outcome"),
            "schema {schema}: {kinds:?}"
        );
        store.pool().close().await;
        drop(store);
        assert_eq!(
            scalar(&db, "SELECT COUNT(*) FROM runs"),
            runs,
            "schema {schema}"
        );
        assert_eq!(
            scalar(
                &db,
                "SELECT COUNT(*) FROM outcomes WHERE outcome = 'purged'"
            ),
            purged,
            "schema {schema}"
        );

        // the copy is the database as it was: same schema, same rows, private
        let copies = backups(dir.path());
        assert_eq!(copies.len(), 1, "schema {schema}: {copies:?}");
        let copy = &copies[0];
        assert!(
            copy.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("audit.db.schema-{schema}-")),
            "{copy:?}"
        );
        assert_eq!(
            scalar(copy, "SELECT MAX(version) FROM _sqlx_migrations"),
            schema
        );
        assert_eq!(scalar(copy, "SELECT COUNT(*) FROM decisions"), decisions);
        assert_eq!(
            sha256_file(&fixture(schema)),
            original,
            "the fixture itself untouched"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(copy).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }

        // opened again: already the newest schema, no second copy
        let again = AuditStore::open(&db).await.unwrap();
        again.pool().close().await;
        drop(again);
        let baks = backups(dir.path()).len();
        assert_eq!(baks, 1, "schema {schema}");
    }
    assert!(seen >= 8, "only {seen} fixtures");
}

/// A database at this build's schema with one more migration applied by a
/// build from the future: a new table, and its row in `_sqlx_migrations`.
async fn database_from_the_future(dir: &Path) -> (crate::helpers::AuditAt, i64) {
    use crate::helpers::AuditAt;
    let future = newest_schema() + 1;
    if let AuditAt::Postgres(url) = AuditAt::new(dir).await {
        let audit = AuditAt::Postgres(url);
        audit.open().await.unwrap().close().await;
        audit
            .edit(&format!(
                "CREATE TABLE holds_from_the_future (id BIGINT PRIMARY KEY, why TEXT NOT NULL);
                 INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES ({future}, 'holds from the future', TRUE, '\\x00', 1);"
            ))
            .await;
        return (audit, future);
    }
    let db = dir.join("audit.db");
    std::fs::copy(fixture(10), &db).unwrap();
    let store = AuditStore::open(&db).await.unwrap();
    store.pool().close().await;
    drop(store);
    for copy in backups(dir) {
        std::fs::remove_file(copy).unwrap();
    }
    sqlite3(
        &db,
        &format!(
            "CREATE TABLE holds_from_the_future (id INTEGER PRIMARY KEY, why TEXT NOT NULL);
             INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
             VALUES ({future}, 'holds from the future', '2027-01-01 00:00:00', 1, x'00', 1);
             PRAGMA wal_checkpoint(TRUNCATE);"
        ),
    );
    (AuditAt::File(db), future)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_binary_refuses_a_newer_database_naming_both_schemas_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (audit, future) = database_from_the_future(dir.path()).await;
    let newest = newest_schema();
    let before = audit.fingerprint().await;
    let says_both = |text: &str| {
        text.contains(&format!("schema {future}"))
            && text.contains(&format!("up to {newest}"))
            && text.contains("Nothing was written")
    };

    let Err(writer) = audit.open().await else {
        panic!("a writer refuses")
    };
    assert!(says_both(&format!("{writer:#}")), "{writer:#}");
    let Err(reader) = audit.open_read_only().await else {
        panic!("a reader refuses")
    };
    assert!(says_both(&format!("{reader:#}")), "{reader:#}");

    // every command, as a user would run it after a rollback
    let config = dir.path().join("config.toml");
    audit.config_in(
        &config,
        false,
        "
[[rules]]
name = \"all\"
action = \"purge\"
older_than = \"1h\"
previous_state = [\"closed\"]
",
    );
    let bin = env!("CARGO_BIN_EXE_zd-retention");
    for args in [
        vec!["once"],
        vec!["purge", "4711", "--yes"],
        vec!["audit", "verify"],
        vec!["audit", "runs"],
        vec!["audit", "report"],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .arg("--config")
            .arg(&config)
            .env("ZD_TEST_TOKEN", "x")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(says_both(&stderr), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert_eq!(
        audit.fingerprint().await,
        before,
        "the newer database is never written"
    );
    let wal = dir.path().join("audit.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "nothing written to its log either"
    );
    let baks = backups(dir.path()).len();
    assert_eq!(baks, 0, "no copy of a database that is not upgraded");
}

#[test]
fn an_upgrade_that_cannot_copy_the_database_first_changes_nothing() {
    if crate::helpers::sqlite_only("the copy of an SQLite file on a full disk") {
        return;
    }
    // a disk with room for the database but not for its copy: a small
    // tmpfs in a private mount namespace (root; skipped where unshare or
    // mount is not allowed)
    let allowed = std::process::Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !allowed {
        eprintln!("skipped: needs unshare --mount and mount (root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let config = offline_config(dir.path(), &disk.join("audit.db"), true, "");
    let fixture = fixture(10);
    let size = std::fs::metadata(&fixture).unwrap().len();
    let out = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-euc"])
        .arg(
            r#"mount -t tmpfs -o size="$SIZE" tmpfs "$DISK"
            cp "$FIXTURE" "$DISK/audit.db"
            sha256sum <"$DISK/audit.db" >"$OUT/before"
            rc=0; "$BIN" once --config "$CONFIG" >"$OUT/stdout" 2>"$OUT/stderr" || rc=$?
            echo "$rc" >"$OUT/rc"
            sha256sum <"$DISK/audit.db" >"$OUT/after"
            ls -a "$DISK" >"$OUT/ls""#,
        )
        // room for the database, its lock file and a third of a copy
        .env("SIZE", (size + size / 3 + 16 * 1024).to_string())
        .env("DISK", &disk)
        .env("FIXTURE", &fixture)
        .env("OUT", dir.path())
        .env("BIN", env!("CARGO_BIN_EXE_zd-retention"))
        .env("CONFIG", &config)
        .env("ZD_TEST_TOKEN", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let stderr = read("stderr");
    assert_eq!(read("rc").trim(), "1", "{stderr}");
    assert!(
        stderr.contains("without a copy of it as it was") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(read("before"), read("after"), "the database is as it was");
    assert!(
        !read("ls").contains(".bak"),
        "no half copy left: {}",
        read("ls")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_chain_is_never_sealed_over() {
    // rows of a chained database whose chain was deleted are not taken as
    // rows from before the chain: every writer and `verify` still refuse
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fixture.db");
    std::fs::copy(fixture(10), &db).unwrap();
    let store = AuditStore::open(&db).await.unwrap();
    // in the PostgreSQL pass, the history moved there first
    let audit = crate::helpers::AuditAt::new(dir.path()).await;
    if let crate::helpers::AuditAt::Postgres(url) = &audit {
        store.copy_into_postgres(url).await.unwrap();
    }
    store.pool().close().await;
    drop(store);
    if let crate::helpers::AuditAt::File(path) = &audit {
        sqlite3(&db, &format!(".backup '{}'", path.display()));
    }
    audit
        .edit("DELETE FROM audit_chain; DELETE FROM chain_heads;")
        .await;
    match audit.open().await {
        Err(e) => assert!(format!("{e:#}").contains("outside zd-retention"), "{e:#}"),
        Ok(store) => {
            let report = store.verify_chain().await.unwrap();
            let problem = report.problem.unwrap_or_default();
            assert!(problem.contains("is not in the chain"), "{problem}");
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zd-retention"))
        .args(["audit", "verify"])
        .args(audit.cli_args(dir.path()))
        .env("ZD_TEST_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is not in the chain")
            || String::from_utf8_lossy(&out.stderr).contains("is not in the chain"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Audit queries at scale: a database of 10 million decisions (1,000 runs of
//! 10,000 tickets, a tenth purged, each with its job and outcome), then the
//! real binary's `audit ticket`, `audit run` and `audit stats --by day`
//! timed on it, whole process included, best and median of 7.
//!
//!   cargo bench --bench audit_scale
//!
//! The database is generated once into target/bench/audit-10m.db (about a
//! minute) and reused.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("audit-10m.db");
    if !db.exists() {
        eprintln!("generating 10,000,000 decisions into {} ...", db.display());
        let started = Instant::now();
        let partial = dir.join("audit-10m.db.partial");
        let _ = std::fs::remove_file(&partial);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = zd_retention::audit::AuditStore::open(&partial)
                .await
                .unwrap();
            store.generate_synthetic(1_000, 10_000).await.unwrap();
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(store.pool())
                .await
                .unwrap();
            store.close().await;
        });
        std::fs::rename(&partial, &db).unwrap();
        eprintln!("generated in {:.1}s", started.elapsed().as_secs_f64());
    }
    let db_arg = db.display().to_string();
    let queries: Vec<(&str, Vec<String>, f64)> = vec![
        (
            "audit ticket 1000037",
            vec!["audit".into(), "ticket".into(), "1000037".into()],
            20.0,
        ),
        (
            "audit run 500",
            vec!["audit".into(), "run".into(), "500".into()],
            20.0,
        ),
        (
            "audit stats --by day",
            vec!["audit".into(), "stats".into(), "--by".into(), "day".into()],
            1000.0,
        ),
        (
            "audit stats --by rule",
            vec!["audit".into(), "stats".into(), "--by".into(), "rule".into()],
            1000.0,
        ),
    ];
    let mut md = String::from(
        "| query (10M decisions) | best ms | median ms | target ms |\n|---|---|---|---|\n",
    );
    for (name, args, target) in &queries {
        let mut times = Vec::new();
        for _ in 0..7 {
            let started = Instant::now();
            let out = Command::new(BIN)
                .args(args)
                .args(["--format", "json", "--database", &db_arg])
                .output()
                .unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON output parses");
        }
        times.sort_by(f64::total_cmp);
        md.push_str(&format!(
            "| `{name}` | {:.1} | {:.1} | {target} |\n",
            times[0],
            times[times.len() / 2]
        ));
    }
    std::fs::write(dir.join("audit.md"), &md).unwrap();
    println!("\n{md}\nwritten to {}/audit.md", dir.display());
}

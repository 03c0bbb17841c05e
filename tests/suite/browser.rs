//! The evidence pages in a real browser: after the demo, the report and a
//! certificate rendered by headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs), screenshots and an A4 print kept under
//! `target/evidence/`, and the figures read from the page's DOM compared
//! with what the audit queries return.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_zd-retention");

/// Runs the binary; in the PostgreSQL pass an audit command's `--database
/// DEMO.db` reads the history the test moved there (`DEMO.toml` names it).
fn zd(args: &[&str]) -> Output {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if crate::helpers::postgres_server().is_some()
        && args[0] == "audit"
        && args[1] != "migrate"
        && let Some(at) = args.iter().position(|a| a == "--database")
    {
        args[at] = "--config".into();
        args[at + 1] = Path::new(&args[at + 1])
            .with_extension("toml")
            .display()
            .to_string();
    }
    let out = Command::new(BIN)
        .args(&args)
        .env("ZD_TEST_TOKEN", "x")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zd-retention {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&zd(args).stdout).unwrap()
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "no chromium on this machine: the browser test needs it (apt-get install chromium; .ci/run installs it)"
    );
}

/// Runs headless Chromium on a local file with one action flag.
fn browse(page: &Path, action: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--no-pdf-header-footer",
            "--window-size=1240,1754",
            &format!("--user-data-dir={}", profile.path().display()),
            action,
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The values of `data-figure` elements in a DOM, by name (in order).
fn figures(dom: &str) -> BTreeMap<String, Vec<String>> {
    let re =
        regex::Regex::new(r#"data-figure="([a-z-]+)"(?:\s+data-rule="([^"]*)")?[^>]*>([^<]*)<"#)
            .unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in re.captures_iter(dom) {
        let name = match c.get(2) {
            Some(rule) => format!("{}:{}", &c[1], rule.as_str()),
            None => c[1].to_string(),
        };
        out.entry(name).or_default().push(c[3].trim().to_string());
    }
    out
}

fn one(f: &BTreeMap<String, Vec<String>>, name: &str) -> String {
    match f.get(name).map(Vec::as_slice) {
        Some([v]) => v.clone(),
        other => panic!("figure {name}: {other:?}"),
    }
}

/// The page holds everything it shows: no script, stylesheet, font or
/// image from anywhere else.
fn assert_self_contained(html: &str) {
    for forbidden in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", " src=",
    ] {
        assert!(
            !html.contains(forbidden),
            "the page refers to something outside it: {forbidden}"
        );
    }
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{} is no PNG",
        path.display()
    );
    assert!(bytes.len() > 20_000, "{} is nearly empty", path.display());
}

#[test]
fn the_report_and_a_certificate_show_in_a_browser_what_the_audit_queries_return() {
    let mut out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/evidence");
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("demo.db");
    let dbs = db.to_str().unwrap();
    zd(&["demo", "--tickets", "800", "--database", dbs]);
    if crate::helpers::postgres_server().is_some() {
        // the demo writes SQLite: its history moved to PostgreSQL, where
        // every page below is read from
        out_dir = out_dir.join("postgres");
        let audit = crate::helpers::AuditAt::at(work.path());
        let crate::helpers::AuditAt::Postgres(url) = &audit else {
            unreachable!()
        };
        zd(&["audit", "migrate", "--database", dbs, "--to", url]);
        audit.config_in(&db.with_extension("toml"), false, "");
    }
    std::fs::create_dir_all(&out_dir).unwrap();
    let report = out_dir.join("report.html");
    let certificate = out_dir.join("certificate-1.html");
    zd(&[
        "audit",
        "report",
        "--since",
        "7d",
        "--output",
        report.to_str().unwrap(),
        "--database",
        dbs,
    ]);
    zd(&[
        "audit",
        "certificate",
        "1",
        "--format",
        "html",
        "--output",
        certificate.to_str().unwrap(),
        "--database",
        dbs,
    ]);
    for page in [&report, &certificate] {
        assert_self_contained(&std::fs::read_to_string(page).unwrap());
    }

    // screenshots a person can read, and the report printed on A4
    let report_png = out_dir.join("report.png");
    let certificate_png = out_dir.join("certificate-1.png");
    browse(&report, &format!("--screenshot={}", report_png.display()));
    browse(
        &certificate,
        &format!("--screenshot={}", certificate_png.display()),
    );
    assert_png(&report_png);
    assert_png(&certificate_png);
    let pdf = out_dir.join("report.pdf");
    browse(&report, &format!("--print-to-pdf={}", pdf.display()));
    let pdf_bytes = std::fs::read(&pdf).unwrap();
    assert!(pdf_bytes.starts_with(b"%PDF"));
    let pdf_text = String::from_utf8_lossy(&pdf_bytes);
    assert!(
        pdf_text.contains("/MediaBox [0 0 594.95996 841.91998]"),
        "the report prints on A4 (595 x 842 points)"
    );

    // the report's figures, as the browser built the page
    let dom = String::from_utf8(browse(&report, "--dump-dom").stdout).unwrap();
    let f = figures(&dom);
    let runs = json(&[
        "audit",
        "runs",
        "--limit",
        "1000",
        "--format",
        "json",
        "--database",
        dbs,
    ]);
    let runs = runs.as_array().unwrap();
    assert_eq!(one(&f, "runs"), runs.len().to_string());
    let completed = runs.iter().filter(|r| r["status"] == "completed").count();
    assert_eq!(one(&f, "runs-completed"), completed.to_string());
    let purged = json(&[
        "audit",
        "search",
        "--outcome",
        "purged",
        "--limit",
        "1000000",
        "--format",
        "json",
        "--database",
        dbs,
    ]);
    let purged = purged.as_array().unwrap();
    assert!(!purged.is_empty(), "the demo purges");
    assert_eq!(one(&f, "purged"), purged.len().to_string());
    assert_eq!(one(&f, "purged-listed"), purged.len().to_string());
    assert_eq!(one(&f, "purges-counted"), purged.len().to_string());
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    for p in purged {
        *by_rule
            .entry(p["rule"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for (rule, n) in &by_rule {
        assert_eq!(
            one(&f, &format!("purged-by-rule:{rule}")),
            n.to_string(),
            "rule {rule}"
        );
    }
    assert_eq!(
        dom.matches("class=\"purged-row\"").count(),
        purged.len(),
        "every purge of the period is a row"
    );
    let chart_total: i64 = regex::Regex::new(r#"data-series="[^"]*" data-value="(\d+)""#)
        .unwrap()
        .captures_iter(dom.split("data-figure=\"chart-runs\"").next().unwrap())
        .map(|c| c[1].parse::<i64>().unwrap())
        .sum();
    assert_eq!(
        chart_total as usize,
        purged.len(),
        "the purge chart's bars add up"
    );
    assert_eq!(one(&f, "chain"), "intact");
    assert_eq!(one(&f, "signatures"), "unsigned");
    assert!(
        one(&f, "complete").starts_with("every purge outcome recorded in the period is listed"),
        "{}",
        one(&f, "complete")
    );

    // the certificate's
    let dom = String::from_utf8(browse(&certificate, "--dump-dom").stdout).unwrap();
    let f = figures(&dom);
    let run = json(&["audit", "run", "1", "--format", "json", "--database", dbs]);
    for name in ["scanned", "matched", "purged", "failed", "unknown"] {
        assert_eq!(
            one(&f, name),
            run["run"][name].to_string(),
            "certificate figure {name}"
        );
    }
    let purged_in_run: i64 = run["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == "purged")
        .map(|o| o["count"].as_i64().unwrap())
        .sum();
    assert_eq!(one(&f, "purged-listed"), purged_in_run.to_string());
    assert_eq!(
        dom.matches("class=\"purged-row\"").count() as i64,
        purged_in_run
    );
    assert_eq!(one(&f, "status"), "completed");
    assert_eq!(
        one(&f, "config-hash"),
        run["run"]["config_hash"].as_str().unwrap()
    );
    assert_eq!(one(&f, "head"), run["chain_head"]["head"].as_str().unwrap());
    assert!(one(&f, "account").starts_with("https://"));
    eprintln!(
        "screenshots: {} {}; print: {}",
        report_png.display(),
        certificate_png.display(),
        pdf.display()
    );
}

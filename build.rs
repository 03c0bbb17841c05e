//! Re-embeds the migrations when one is added or changed, and stamps the
//! build with its commit and date for `--version` and the metric
//! `zd_retention_build_info`.
//!
//! The commit comes from `ZD_RETENTION_COMMIT` if set (a build from a
//! tarball), else from git, else "unknown". The date is
//! `SOURCE_DATE_EPOCH` if set, else the commit's date, so that two builds
//! of one commit are the same bytes (reproducible builds); a build outside
//! git without either is dated "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=ZD_RETENTION_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // a new commit moves HEAD or the branch it names
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
            && let Some(reference) = git(&["rev-parse", "--git-path", &branch])
        {
            println!("cargo:rerun-if-changed={reference}");
        }
    }
    let commit = std::env::var("ZD_RETENTION_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .or_else(|| git(&["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()));
    let date = epoch
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map_or_else(|| "unknown".into(), |d| d.format("%Y-%m-%d").to_string());
    println!("cargo:rustc-env=ZD_RETENTION_COMMIT={commit}");
    println!("cargo:rustc-env=ZD_RETENTION_BUILD_DATE={date}");
}

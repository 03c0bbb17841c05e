//! zd-retention: enforces retention rules on Zendesk's soft-deleted tickets.
//!
//! See ARCHITECTURE.md for the code map and the invariants that hold it
//! together.

/// What this build is: its version, the commit it was built from and the
/// build's date (see build.rs), for `--version`, the metric
/// `zd_retention_build_info` and each run's record of what ran it.
pub mod build {
    /// The crate's version.
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    /// The commit, abbreviated to 12 hex digits, or "unknown".
    pub const COMMIT: &str = env!("ZD_RETENTION_COMMIT");
    /// `SOURCE_DATE_EPOCH`'s day, else the commit's (YYYY-MM-DD), or "unknown".
    pub const DATE: &str = env!("ZD_RETENTION_BUILD_DATE");
    /// `0.1.0 (commit 0123456789ab, built 2026-12-03)`: what `--version`
    /// prints after the program's name.
    pub const VERSION_LINE: &str = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("ZD_RETENTION_COMMIT"),
        ", built ",
        env!("ZD_RETENTION_BUILD_DATE"),
        ")"
    );
}

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod demo;
pub mod evidence;
pub mod health;
pub mod human;
pub mod ids;
pub mod listing;
pub mod manual;
pub mod quota;
pub mod render;
pub mod rules;
pub mod sandbox;
pub mod telemetry;
pub mod ticket;
pub mod writer_lock;
pub mod zendesk;

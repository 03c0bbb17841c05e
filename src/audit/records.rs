//! What the store records and reads back: the write-ahead records a run
//! hands it (decisions, figures, its origin) and the rows its queries give.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::encode::Flag;
use super::kinds::{
    DecisionKind, JobRowStatus, Outcome, RequestKind, RunStatus, ScanKind, StepKind, StoredScan,
    StoredStep, Trigger,
};
use super::store::{JobRowId, RunId};
use crate::ids::TicketId;
use crate::rules::SubjectTags;

/// Why a request recorded before its freshness read was withdrawn.
pub const WITHDRAWN_NARROWED: &str = "the freshness read did not clear every ticket of it: not sent; the tickets it cleared went under a new row";

/// One decision, ready to store.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub ticket_id: TicketId,
    pub deleted_at: Option<DateTime<Utc>>,
    pub actor_id: Option<u64>,
    /// Kept in the ledger (a rule can name actors), not in the decision row.
    pub actor_name: Option<String>,
    pub previous_state: Option<String>,
    /// Already `None` unless subjects are recorded.
    pub subject: Option<String>,
    pub rule: Option<String>,
    pub decision: DecisionKind,
    /// When the rules decided (the time the age conditions were read at).
    pub decided_at: DateTime<Utc>,
    /// Decided from a listing at `decided_at` (not from the ledger alone).
    pub listed: bool,
    /// The ledger's subject-pattern tags (`Policy::subject_tags`).
    pub subject_tags: Option<SubjectTags>,
}

/// The figures a finished run records.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunCounts {
    pub scanned: u64,
    pub matched: u64,
    pub purged: u64,
    pub failed: u64,
    pub unknown: u64,
    pub list_requests: u64,
    pub early_stop: bool,
    /// How the view was walked (cycles only).
    pub scan: Option<ScanKind>,
    pub scan_reason: Option<String>,
    /// The longest time from a ticket's last listing to its `destroy_many`.
    pub max_listing_age_ms: Option<u64>,
    /// Which listing the run made (cycles only).
    pub step: Option<StepKind>,
    /// The newest deletion known once the listing step finished whole.
    pub high_water: Option<DateTime<Utc>>,
    /// Decision rows the run wrote (decisions are recorded on change).
    pub decisions_recorded: Option<u64>,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: RunId,
    pub trigger: Trigger,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[sqlx(try_from = "Flag")]
    pub dry_run: bool,
    pub config_hash: String,
    pub status: RunStatus,
    pub scanned: i64,
    pub matched: i64,
    pub purged: i64,
    pub failed: i64,
    pub unknown: i64,
    pub list_requests: i64,
    #[sqlx(try_from = "Flag")]
    pub early_stop: bool,
    pub error: Option<String>,
    /// As stored: a value this build does not know is shown, not refused.
    pub scan: Option<StoredScan>,
    pub scan_reason: Option<String>,
    pub max_listing_age_ms: Option<i64>,
    /// Which listing the run made (cycles since the ledger), as stored.
    pub step: Option<StoredStep>,
    pub high_water: Option<String>,
    pub decisions_recorded: Option<i64>,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: JobRowId,
    pub run_id: RunId,
    pub kind: RequestKind,
    pub zendesk_job_id: Option<String>,
    pub ticket_ids: String,
    pub ticket_count: i64,
    pub recorded_at: String,
    pub answered_at: Option<String>,
    pub finished_at: Option<String>,
    pub status: JobRowStatus,
    pub message: Option<String>,
}

/// One line of a ticket's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TicketEvent {
    pub at: String,
    pub run_id: RunId,
    /// `decision` or `outcome`.
    pub kind: String,
    /// The decision or the outcome.
    pub what: String,
    pub rule: Option<String>,
    pub job: Option<String>,
    pub detail: Option<String>,
}

/// One line of a statistics table.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StatRow {
    /// The day, the decision or the outcome.
    pub key: String,
    pub rule: Option<String>,
    pub count: i64,
}

/// The runs of one day.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DayRuns {
    pub day: String,
    pub runs: i64,
    pub scanned: i64,
    pub matched: i64,
    pub purged: i64,
    pub failed: i64,
    pub failed_runs: i64,
}

/// Filters of `audit search`; every value is bound as a parameter.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub rule: Option<String>,
    pub outcome: Option<Outcome>,
    pub decision: Option<DecisionKind>,
    pub actor: Option<i64>,
    pub ticket: Option<TicketId>,
    pub limit: i64,
}

/// One row of `audit search` and `audit export`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SearchRow {
    pub at: String,
    pub run_id: RunId,
    pub ticket_id: i64,
    pub decision: String,
    pub rule: Option<String>,
    pub actor_id: Option<i64>,
    pub deleted_at: Option<String>,
    pub previous_state: Option<String>,
    /// The ticket's last outcome in that run, if any.
    pub outcome: Option<String>,
    pub outcome_at: Option<String>,
    pub detail: Option<String>,
}

/// What a run starts under: its config version and what ran it.
#[derive(Debug, Clone)]
pub struct RunOrigin {
    /// SHA-256 of the config file's text.
    pub config_hash: String,
    /// The config's settings as JSON, never a credential: stored once per
    /// hash, when a run first uses it (`None`: not stored).
    pub config_settings: Option<String>,
    pub host: Option<String>,
    pub os_user: Option<String>,
    pub program_version: String,
}

impl RunOrigin {
    /// A run on this machine, by this user, with this build.
    pub fn here(config_hash: &str, config_settings: Option<String>) -> Self {
        RunOrigin {
            config_hash: config_hash.to_string(),
            config_settings,
            host: whoami::hostname().ok(),
            os_user: whoami::username().ok(),
            program_version: format!("zd-retention {}", crate::build::VERSION_LINE),
        }
    }
}

impl From<&str> for RunOrigin {
    /// An origin with only a config hash (tests, and runs of old callers).
    fn from(config_hash: &str) -> Self {
        RunOrigin::here(config_hash, None)
    }
}

/// Parses the comma-separated ids of a job row.
pub fn parse_ids(text: &str) -> Vec<TicketId> {
    text.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

//! What a sandbox is started with: its limits, faults, auth, the cursor
//! order profile and the scripted agents.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How the cursor listing reads `sort_by`/`sort_order`: Zendesk documents
/// them for this endpoint, but its pagination guide says cursor pagination
/// sorts with `sort` instead. Offset pagination sorts in both profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorSort {
    /// Cursor pages follow `sort_by`/`sort_order`, and so do their cursors.
    #[default]
    Honour,
    /// Cursor pages come in id order whatever is asked; `links.next` carries
    /// only `page[size]` and `page[after]`.
    Ignore,
}

/// Per-minute limits at Zendesk's time; the sandbox divides the minute by
/// `time_scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    pub list: u32,
    pub list_deep: u32,
    pub account: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            list: 10,
            list_deep: 5,
            account: 200,
        }
    }
}

/// Faults injected into answers, each a share between 0 and 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Answers 500/502/503 with an HTML body, before doing anything.
    pub server_errors: f64,
    /// Answers 429 with Retry-After though the budget is not spent.
    pub rate_limits: f64,
    /// Answers late by `slow_delay` (real time).
    pub slow: f64,
    pub slow_delay: Duration,
    /// Does the work, then breaks the connection mid-answer.
    pub drops: f64,
    /// Does the work, then answers 200 with a truncated JSON body.
    pub malformed: f64,
    /// Purge jobs that end `failed`.
    pub job_failures: f64,
    /// Purge jobs that end `killed`.
    pub job_kills: f64,
    /// Purge jobs whose status answers 404 from the start (they still run).
    pub job_vanish: f64,
    /// After this many requests, every credential is refused with 401.
    pub reject_auth_after: Option<u64>,
    /// The endpoints (`list`, `restore_many`, `job_statuses`, ...) the faults
    /// above apply to; empty for all.
    pub endpoints: Vec<String>,
}

/// Who may call the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SandboxAuth {
    /// Any Basic `{email}/token:{token}` or Bearer credential that is not empty.
    #[default]
    AnyToken,
    /// Only this API token (with any email), or this OAuth token.
    Token(String),
}

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub tickets: usize,
    pub seed: u64,
    /// How many times faster than Zendesk the sandbox's clock runs: rate-limit
    /// windows and job delays are divided by it.
    pub time_scale: f64,
    /// From a purge request to its job's end, at Zendesk's time.
    pub job_delay: Duration,
    /// How long a finished job's status stays readable, at Zendesk's time.
    pub job_ttl: Duration,
    /// Jobs queued or working at once before 429.
    pub max_jobs: usize,
    pub limits: SandboxLimits,
    pub faults: Faults,
    pub auth: SandboxAuth,
    /// The reference time of the generated `deleted_at` values.
    pub now: DateTime<Utc>,
    /// Profile: whether cursor listing honours `sort_by`.
    pub cursor_sort: CursorSort,
    /// Profile: agent actions (restore, delete again, new deletion) per
    /// listing request, on average; 0 for a still account.
    pub churn: f64,
    /// Profile: agents on their own clock, one action (a restore, or a
    /// restored ticket deleted again) this often in real time, whatever the
    /// client does: a view that changes between any two requests.
    pub agents_every: Option<Duration>,
    /// Profile: tickets deleted longer ago than this (wall clock) leave the
    /// view, as Zendesk's own scrub does after about 30 days.
    pub scrub_after: Option<Duration>,
    /// Profile: `job_statuses/show_many` answers 404 for the whole call when
    /// any id is unknown or expired, instead of leaving it out.
    pub strict_job_ids: bool,
    /// Agents' actions at chosen moments, for tests that need a change at an
    /// exact point of a scan.
    pub script: Vec<ScriptedAction>,
    /// How far Zendesk's clock is ahead of the host's (negative: behind), as
    /// its `Date` header shows: a host whose clock is wrong.
    pub clock_offset: chrono::Duration,
}

/// When a scripted agent acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptMoment {
    /// Just before the n-th listing request (1-based) is answered.
    BeforeList(u64),
    /// Just before the n-th `destroy_many` (1-based) creates its job.
    BeforeDestroyMany(u64),
}

/// What a scripted agent does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAction {
    Restore(u64),
    /// Deletes a restored ticket again, now, optionally as another actor.
    DeleteAgain {
        id: u64,
        actor: Option<(u64, String)>,
    },
}

/// One scripted action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedAction {
    pub at: ScriptMoment,
    pub action: AgentAction,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            tickets: 1000,
            seed: 42,
            time_scale: 1.0,
            job_delay: Duration::from_secs(3),
            job_ttl: Duration::from_secs(3600),
            max_jobs: 30,
            limits: SandboxLimits::default(),
            faults: Faults::default(),
            auth: SandboxAuth::AnyToken,
            now: Utc::now(),
            cursor_sort: CursorSort::Honour,
            churn: 0.0,
            agents_every: None,
            scrub_after: None,
            strict_job_ids: false,
            script: Vec::new(),
            clock_offset: chrono::Duration::zero(),
        }
    }
}

//! The sandbox: a fake Zendesk account that serves the deleted-tickets and
//! job-status endpoints as Zendesk does (paths, pagination, jobs, rate
//! limits, errors), with faults on demand. Tests, benchmarks and the demo run
//! against it; so can any third-party Zendesk client.
//!
//! It shares no code with the client on purpose: it writes the JSON by hand
//! from the documented shapes, so a mistake in the client's types cannot hide
//! in both. Its own time runs `time_scale` times faster than Zendesk's.

mod http;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use state::{
    AUTOMATION_ACTOR, ChurnEvent, JobView, LoggedRequest, STATES, SandboxTicket, State,
    generate_tickets,
};

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

/// A running sandbox. Dropping it does not stop the server; call `shutdown`.
pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Starts a sandbox with generated tickets on `listen` (port 0 picks one).
    pub async fn start(options: SandboxOptions, listen: SocketAddr) -> std::io::Result<Self> {
        let tickets = generate_tickets(options.tickets, options.seed, options.now);
        Self::start_with(options, tickets, listen).await
    }

    /// Starts a sandbox on loopback port 0 holding exactly `tickets`.
    pub async fn start_with(
        options: SandboxOptions,
        tickets: Vec<SandboxTicket>,
        listen: SocketAddr,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::new(
            options,
            tickets,
            tokio::time::Instant::now(),
        )));
        let shutdown = CancellationToken::new();
        if let Some(every) = options_agents_every(&state) {
            let (state, token) = (state.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every.max(Duration::from_micros(100)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tick.tick() => lock(&state).agents_tick(tokio::time::Instant::now()),
                    }
                }
            });
        }
        let app = http::router(state.clone(), addr);
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        Ok(Self {
            addr,
            state,
            shutdown,
            task: Some(task),
        })
    }

    /// Starts on `127.0.0.1:0`.
    pub async fn start_local(options: SandboxOptions) -> std::io::Result<Self> {
        Self::start(options, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, to give the client as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Locks the account state after finishing the jobs that are due.
    pub fn state(&self) -> MutexGuard<'_, State> {
        let mut guard = lock(&self.state);
        guard.advance(tokio::time::Instant::now());
        guard
    }

    /// Ids still soft-deleted, in id order.
    pub fn deleted_ids(&self) -> Vec<u64> {
        self.state().tickets().map(|t| t.id).collect()
    }

    /// Ids permanently deleted, sorted.
    pub fn purged_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.state().purged().collect();
        ids.sort_unstable();
        ids
    }

    /// Ids restored, sorted.
    pub fn restored_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.state().restored().collect();
        ids.sort_unstable();
        ids
    }

    /// Purged tickets as they were when their job deleted them.
    pub fn purged_tickets(&self) -> Vec<SandboxTicket> {
        self.state().purged_tickets().cloned().collect()
    }

    /// Each ticket as it was when the last purge request naming it arrived
    /// (its job runs later; compare with `purged_tickets`).
    pub fn purge_requested_as(&self) -> BTreeMap<u64, SandboxTicket> {
        self.state().requested_as().clone()
    }

    /// Ids Zendesk's scrub removed (`scrub_after`), sorted.
    pub fn scrubbed_ids(&self) -> Vec<u64> {
        self.state().scrubbed().collect()
    }

    /// When each purged ticket was taken by its job (wall clock).
    pub fn purge_times(&self) -> BTreeMap<u64, DateTime<Utc>> {
        self.state().purge_times().clone()
    }

    /// What the agents of `churn` did, in order.
    pub fn churn_log(&self) -> Vec<ChurnEvent> {
        self.state().churn_log().to_vec()
    }

    /// An agent restores a soft-deleted ticket; false if it is not one.
    pub fn agent_restore(&self, id: u64) -> bool {
        self.state().agent_restore(id)
    }

    /// An agent deletes a restored ticket again, now.
    pub fn agent_delete_again(&self, id: u64) -> bool {
        self.state().agent_delete_again(id, Utc::now(), None)
    }

    /// Changes the agents' pace while running.
    pub fn set_churn(&self, rate: f64) {
        self.state().options.churn = rate;
    }

    /// Moves Zendesk's clock (its `Date` header) against the host's.
    pub fn set_clock_offset(&self, offset: chrono::Duration) {
        self.state().options.clock_offset = offset;
    }

    /// Every ticket still soft-deleted.
    pub fn tickets(&self) -> Vec<SandboxTicket> {
        self.state().tickets().cloned().collect()
    }

    /// Adds (or replaces) soft-deleted tickets.
    pub fn insert(&self, tickets: impl IntoIterator<Item = SandboxTicket>) {
        let mut state = self.state();
        for t in tickets {
            state.insert(t);
        }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// Requests per endpoint and status.
    pub fn request_counts(&self) -> BTreeMap<String, BTreeMap<u16, u64>> {
        request_counts(&self.state().log)
    }

    /// Requests to one endpoint, whatever their answer.
    pub fn count(&self, endpoint: &str) -> u64 {
        self.state()
            .log
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count() as u64
    }

    /// Write requests (restore, purge) received, whatever their answer.
    pub fn write_requests(&self) -> Vec<LoggedRequest> {
        self.state()
            .log
            .iter()
            .filter(|r| r.method != "GET")
            .cloned()
            .collect()
    }

    /// Replaces the fault settings while running.
    pub fn set_faults(&self, faults: Faults) {
        self.state().options.faults = faults;
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Locks the state; a panic elsewhere while it was held does not poison
/// every later request (the state is left as the panicking call left it).
fn options_agents_every(state: &Mutex<State>) -> Option<Duration> {
    lock(state).options.agents_every
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a request log per endpoint and status.
pub fn request_counts(log: &[LoggedRequest]) -> BTreeMap<String, BTreeMap<u16, u64>> {
    let mut out: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
    for r in log {
        *out.entry(r.endpoint.clone())
            .or_default()
            .entry(r.status)
            .or_default() += 1;
    }
    out
}

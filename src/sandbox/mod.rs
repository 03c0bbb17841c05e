//! The sandbox: a fake Zendesk account that serves the deleted-tickets and
//! job-status endpoints as Zendesk does (paths, pagination, jobs, rate
//! limits, errors), with faults on demand. Tests, benchmarks and the demo run
//! against it; so can any third-party Zendesk client.
//!
//! It shares no code with the client on purpose: it writes the JSON by hand
//! from the documented shapes, so a mistake in the client's types cannot hide
//! in both. Its own time runs `time_scale` times faster than Zendesk's.

mod http;
mod options;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use state::lock;

pub use options::{
    AgentAction, CursorSort, Faults, SandboxAuth, SandboxLimits, SandboxOptions, ScriptMoment,
    ScriptedAction,
};

pub use state::{
    AUTOMATION_ACTOR, ChurnEvent, JobView, LoggedRequest, STATES, SandboxTicket, State,
    generate_tickets,
};

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

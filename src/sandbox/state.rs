//! The sandbox's account: soft-deleted tickets, jobs, rate-limit windows and
//! the request log. Pure state behind one mutex; the server in `server.rs`
//! turns HTTP into calls here. Time is passed in, never read here, except
//! where a job's completion message needs the wall clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use super::options::{AgentAction, CursorSort, Faults, SandboxOptions, ScriptMoment};

/// The automation actor of the generated data: deletions by a trigger or an
/// integration rather than a person (the example config's `actor_ids`).
pub const AUTOMATION_ACTOR: (u64, &str) = (900001, "Retention Automation");
const AGENTS: [(u64, &str); 5] = [
    (1001, "Ada Lovelace"),
    (1002, "Brian Kernighan"),
    (1003, "Carla Agent"),
    (1004, "Dmitri Support"),
    (1005, "Eve Escalations"),
];
pub const STATES: [&str; 6] = ["new", "open", "pending", "hold", "solved", "closed"];

/// A soft-deleted ticket the sandbox holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxTicket {
    pub id: u64,
    pub subject: Option<String>,
    pub actor_id: u64,
    pub actor_name: String,
    pub deleted_at: DateTime<Utc>,
    pub previous_state: String,
}

/// Generates `n` tickets deterministically from `seed`, deleted over the 30
/// days before `now` (a few within the last hour).
pub fn generate_tickets(n: usize, seed: u64, now: DateTime<Utc>) -> Vec<SandboxTicket> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut id = 10_000u64;
    let subjects = [
        "Refund request",
        "Password reset",
        "Shipping delay",
        "Invoice question",
        "Account closure",
        "Bug report",
        "Legal hold: contract review",
        "Spam",
    ];
    (0..n)
        .map(|_| {
            id += rng.random_range(1..=3u64);
            let age_secs = if rng.random_bool(0.02) {
                rng.random_range(0..3_600i64)
            } else {
                rng.random_range(0..30 * 86_400i64)
            };
            let (actor_id, actor_name) = if rng.random_bool(0.2) {
                AUTOMATION_ACTOR
            } else {
                AGENTS[rng.random_range(0..AGENTS.len())]
            };
            let subject = if rng.random_bool(0.1) {
                None
            } else {
                let base = subjects[rng.random_range(0..subjects.len())];
                Some(format!("{base} #{id}"))
            };
            SandboxTicket {
                id,
                subject,
                actor_id,
                actor_name: actor_name.to_string(),
                deleted_at: now - chrono::Duration::seconds(age_secs),
                previous_state: STATES[rng.random_range(0..STATES.len())].to_string(),
            }
        })
        .collect()
}

/// How a job will end; drawn when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobFate {
    Complete,
    Fail,
    Kill,
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    ids: Vec<u64>,
    created: Instant,
    fate: JobFate,
    /// Answers 404 from the start, as if Zendesk had dropped it.
    vanishes: bool,
    finished: Option<FinishedJob>,
}

#[derive(Debug, Clone)]
struct FinishedJob {
    at: Instant,
    status: &'static str,
    success: bool,
    message: String,
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub id: String,
    pub status: String,
    pub total: Option<u64>,
    pub progress: Option<u64>,
    pub message: Option<String>,
    /// `None` while queued or working.
    pub success: Option<bool>,
}

/// One request as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub endpoint: String,
    pub status: u16,
    /// Ticket ids of a write request.
    pub ids: Vec<u64>,
    pub fault: Option<&'static str>,
    /// When the request arrived (wall clock).
    pub at: DateTime<Utc>,
    /// The job a purge request created, if any.
    pub job_id: Option<String>,
}

/// A rate-limit window counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub limit: u32,
    pub length: Duration,
    index: u64,
    used: u32,
}

impl Window {
    fn new(limit: u32, length: Duration) -> Self {
        Self {
            limit,
            length,
            index: 0,
            used: 0,
        }
    }

    fn roll(&mut self, since_start: Duration) {
        let index = (since_start.as_nanos() / self.length.as_nanos().max(1)) as u64;
        if index != self.index {
            self.index = index;
            self.used = 0;
        }
    }

    /// Time until this window ends.
    pub fn reset_in(&self, since_start: Duration) -> Duration {
        let end = self.length * (self.index as u32 + 1);
        end.saturating_sub(since_start)
    }

    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }
}

/// Which quotas a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quotas {
    Account,
    List,
    ListDeep,
}

/// The answer of a rate-limit check.
pub(crate) struct Budget {
    pub allowed: bool,
    pub retry_after: Duration,
    pub account: (u32, u32, Duration),
    pub endpoint: Option<(u32, u32, Duration)>,
}

/// The whole mutable account.
pub struct State {
    pub(crate) options: SandboxOptions,
    started: Instant,
    tickets: BTreeMap<u64, SandboxTicket>,
    by_deleted_at: BTreeSet<(i64, u64)>,
    by_subject: BTreeSet<(String, u64)>,
    /// Permanently deleted by a purge job, as each ticket was at that moment.
    purged: BTreeMap<u64, SandboxTicket>,
    /// Active tickets that were restored (by us, an agent, or churn), as
    /// they were when restored: what `tickets/show_many` finds.
    restored: BTreeMap<u64, SandboxTicket>,
    /// Each ticket as it was when the last purge request naming it arrived:
    /// a job runs later, and an agent may restore and delete the ticket
    /// again in between (the job then deletes the new deletion, as a real
    /// queue would: the sandbox does not pretend to know better).
    requested_as: BTreeMap<u64, SandboxTicket>,
    /// When each purged ticket was taken by its job (wall clock).
    purge_times: BTreeMap<u64, DateTime<Utc>>,
    /// Removed by the scrub (`scrub_after`), not by a purge.
    scrubbed: BTreeSet<u64>,
    /// What the agents of `churn` did, in order.
    churn_log: Vec<ChurnEvent>,
    next_new_id: u64,
    /// Listing and `destroy_many` requests served, for the script.
    lists_served: u64,
    destroys_served: u64,
    jobs: BTreeMap<u64, Job>,
    job_seq: HashMap<String, u64>,
    next_job: u64,
    rng: StdRng,
    account: Window,
    list: Window,
    list_deep: Window,
    pub(crate) requests_seen: u64,
    pub(crate) log: Vec<LoggedRequest>,
}

impl State {
    pub fn new(options: SandboxOptions, tickets: Vec<SandboxTicket>, now: Instant) -> Self {
        let scale = options.time_scale;
        let window = Duration::from_secs(60).div_f64(scale);
        let limits = options.limits;
        let mut state = Self {
            rng: StdRng::seed_from_u64(options.seed ^ 0x5eed_fa17),
            started: now,
            tickets: BTreeMap::new(),
            by_deleted_at: BTreeSet::new(),
            by_subject: BTreeSet::new(),
            purged: BTreeMap::new(),
            restored: BTreeMap::new(),
            requested_as: BTreeMap::new(),
            purge_times: BTreeMap::new(),
            scrubbed: BTreeSet::new(),
            churn_log: Vec::new(),
            next_new_id: 0,
            lists_served: 0,
            destroys_served: 0,
            jobs: BTreeMap::new(),
            job_seq: HashMap::new(),
            next_job: 0,
            account: Window::new(limits.account, window),
            list: Window::new(limits.list, window),
            list_deep: Window::new(limits.list_deep, window),
            requests_seen: 0,
            log: Vec::new(),
            options,
        };
        for t in tickets {
            state.insert(t);
        }
        state.next_new_id = state.tickets.keys().next_back().copied().unwrap_or(10_000) + 1_000;
        state
    }

    pub fn insert(&mut self, t: SandboxTicket) {
        if let Some(old) = self.tickets.remove(&t.id) {
            self.unindex(&old);
        }
        self.by_deleted_at
            .insert((t.deleted_at.timestamp_millis(), t.id));
        self.by_subject
            .insert((t.subject.clone().unwrap_or_default(), t.id));
        self.purged.remove(&t.id);
        self.restored.remove(&t.id);
        self.scrubbed.remove(&t.id);
        self.tickets.insert(t.id, t);
    }

    fn unindex(&mut self, t: &SandboxTicket) {
        self.by_deleted_at
            .remove(&(t.deleted_at.timestamp_millis(), t.id));
        self.by_subject
            .remove(&(t.subject.clone().unwrap_or_default(), t.id));
    }

    fn take(&mut self, id: u64) -> Option<SandboxTicket> {
        let t = self.tickets.remove(&id)?;
        self.unindex(&t);
        Some(t)
    }

    pub fn faults(&self) -> &Faults {
        &self.options.faults
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    pub fn tickets(&self) -> impl Iterator<Item = &SandboxTicket> {
        self.tickets.values()
    }

    pub fn ticket(&self, id: u64) -> Option<&SandboxTicket> {
        self.tickets.get(&id)
    }

    pub fn is_purged(&self, id: u64) -> bool {
        self.purged.contains_key(&id)
    }

    pub fn purged(&self) -> impl Iterator<Item = u64> + '_ {
        self.purged.keys().copied()
    }

    /// Purged tickets as they were when their job deleted them.
    pub fn purged_tickets(&self) -> impl Iterator<Item = &SandboxTicket> {
        self.purged.values()
    }

    pub fn restored(&self) -> impl Iterator<Item = u64> + '_ {
        self.restored.keys().copied()
    }

    /// Whether an id is an active (restored) ticket now.
    pub fn is_active(&self, id: u64) -> bool {
        self.restored.contains_key(&id)
    }

    /// The active tickets among `ids`, in the order asked.
    pub fn active_tickets(&self, ids: &[u64]) -> Vec<SandboxTicket> {
        ids.iter()
            .filter_map(|id| self.restored.get(id).cloned())
            .collect()
    }

    pub fn scrubbed(&self) -> impl Iterator<Item = u64> + '_ {
        self.scrubbed.iter().copied()
    }

    pub fn churn_log(&self) -> &[ChurnEvent] {
        &self.churn_log
    }

    /// An agent restores a soft-deleted ticket (it becomes active).
    pub fn agent_restore(&mut self, id: u64) -> bool {
        match self.take(id) {
            Some(t) => {
                self.churn_log
                    .push(ChurnEvent::Restored { id, at: Utc::now() });
                self.restored.insert(id, t);
                true
            }
            None => false,
        }
    }

    /// An agent deletes an active ticket again: it comes back to the view
    /// with a new `deleted_at` (and maybe another actor).
    pub fn agent_delete_again(
        &mut self,
        id: u64,
        at: DateTime<Utc>,
        actor: Option<(u64, String)>,
    ) -> bool {
        let Some(mut t) = self.restored.remove(&id) else {
            return false;
        };
        t.deleted_at = at;
        if let Some((actor_id, name)) = actor {
            t.actor_id = actor_id;
            t.actor_name = name;
        }
        self.churn_log.push(ChurnEvent::DeletedAgain { id, at });
        self.insert(t);
        true
    }

    /// Agents at work between two listing requests: `churn` actions on
    /// average (restores, deletions again, new deletions).
    pub fn churn(&mut self) {
        let rate = self.options.churn;
        if rate <= 0.0 {
            return;
        }
        let mut actions = rate.floor() as u64;
        if self.chance(rate.fract()) {
            actions += 1;
        }
        for _ in 0..actions {
            let now = Utc::now();
            match self.rng.random_range(0..3u8) {
                0 if !self.tickets.is_empty() => {
                    let n = self.rng.random_range(0..self.tickets.len());
                    if let Some(id) = self.tickets.keys().nth(n).copied() {
                        self.agent_restore(id);
                    }
                }
                1 if !self.restored.is_empty() => {
                    let n = self.rng.random_range(0..self.restored.len());
                    if let Some(id) = self.restored.keys().nth(n).copied() {
                        let (actor_id, name) = AGENTS[self.rng.random_range(0..AGENTS.len())];
                        self.agent_delete_again(id, now, Some((actor_id, name.to_string())));
                    }
                }
                _ => {
                    self.next_new_id += 1;
                    let id = self.next_new_id;
                    let (actor_id, name) = AGENTS[self.rng.random_range(0..AGENTS.len())];
                    let state = STATES[self.rng.random_range(0..STATES.len())].to_string();
                    self.churn_log.push(ChurnEvent::NewDeletion { id, at: now });
                    self.insert(SandboxTicket {
                        id,
                        subject: Some(format!("New deletion #{id}")),
                        actor_id,
                        actor_name: name.to_string(),
                        deleted_at: now,
                        previous_state: state,
                    });
                }
            }
        }
    }

    /// When each purged ticket was taken by its job (wall clock).
    pub fn purge_times(&self) -> &BTreeMap<u64, DateTime<Utc>> {
        &self.purge_times
    }

    /// Agents on their own clock (the `agents_every` profile): jobs due run
    /// first, then one action: a soft-deleted ticket restored, or a restored
    /// one deleted again (a new `deleted_at`, now, by another agent).
    pub fn agents_tick(&mut self, now: Instant) {
        self.advance(now);
        let restore = self.restored.is_empty()
            || (!self.tickets.is_empty() && self.rng.random_range(0..2u8) == 0);
        if restore {
            if self.tickets.is_empty() {
                return;
            }
            let n = self.rng.random_range(0..self.tickets.len());
            if let Some(id) = self.tickets.keys().nth(n).copied() {
                self.agent_restore(id);
            }
        } else {
            let n = self.rng.random_range(0..self.restored.len());
            if let Some(id) = self.restored.keys().nth(n).copied() {
                let (actor_id, name) = AGENTS[self.rng.random_range(0..AGENTS.len())];
                self.agent_delete_again(id, Utc::now(), Some((actor_id, name.to_string())));
            }
        }
    }

    /// Counts a listing request and plays the scripted actions due before it.
    pub fn before_list(&mut self) {
        self.lists_served += 1;
        self.play(ScriptMoment::BeforeList(self.lists_served));
    }

    /// Counts a `destroy_many` and plays the scripted actions due before it.
    pub fn before_destroy_many(&mut self) {
        self.destroys_served += 1;
        self.play(ScriptMoment::BeforeDestroyMany(self.destroys_served));
    }

    fn play(&mut self, moment: ScriptMoment) {
        let due: Vec<AgentAction> = self
            .options
            .script
            .iter()
            .filter(|a| a.at == moment)
            .map(|a| a.action.clone())
            .collect();
        for action in due {
            match action {
                AgentAction::Restore(id) => {
                    self.agent_restore(id);
                }
                AgentAction::DeleteAgain { id, actor } => {
                    self.agent_delete_again(id, Utc::now(), actor);
                }
            }
        }
    }

    /// Zendesk's own scrub: tickets deleted longer ago than `scrub_after`
    /// (wall clock, as ticket ages are) leave the view for good.
    fn scrub(&mut self) {
        let Some(after) = self.options.scrub_after else {
            return;
        };
        let Ok(after) = chrono::Duration::from_std(after) else {
            return;
        };
        let cutoff = (Utc::now() - after).timestamp_millis();
        while let Some(&(millis, id)) = self.by_deleted_at.first() {
            if millis >= cutoff {
                break;
            }
            self.take(id);
            self.scrubbed.insert(id);
        }
    }

    fn job_delay(&self) -> Duration {
        self.options.job_delay.div_f64(self.options.time_scale)
    }

    fn job_ttl(&self) -> Duration {
        self.options.job_ttl.div_f64(self.options.time_scale)
    }

    /// Finishes the jobs whose time has come, in the order they were made.
    pub fn advance(&mut self, now: Instant) {
        self.scrub();
        let delay = self.job_delay();
        let due: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.finished.is_none() && now >= j.created + delay)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            // seq comes from the map just read
            let job = self.jobs.get(&seq).expect("due job exists").clone();
            let at = job.created + delay;
            let finished = match job.fate {
                JobFate::Complete => {
                    let mut all = true;
                    for id in &job.ids {
                        match self.take(*id) {
                            Some(t) => {
                                self.purged.insert(*id, t);
                                self.purge_times.insert(*id, Utc::now());
                            }
                            None => all = false,
                        }
                    }
                    FinishedJob {
                        at,
                        status: "completed",
                        success: all,
                        message: format!(
                            "Completed at {}",
                            Utc::now().format("%Y-%m-%d %H:%M:%S +0000")
                        ),
                    }
                }
                JobFate::Fail => FinishedJob {
                    at,
                    status: "failed",
                    success: false,
                    message:
                        "Failed: the ticket deletion job hit an internal error (sandbox fault)"
                            .into(),
                },
                JobFate::Kill => FinishedJob {
                    at,
                    status: "killed",
                    success: false,
                    message: "Killed: the job was stopped by the system (sandbox fault)".into(),
                },
            };
            if let Some(j) = self.jobs.get_mut(&seq) {
                j.finished = Some(finished);
            }
        }
        // Zendesk keeps finished statuses for a while and about 100 of them.
        let ttl = self.job_ttl();
        let expired: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.finished.as_ref().is_some_and(|f| now >= f.at + ttl))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(j) = self.jobs.remove(&seq) {
                self.job_seq.remove(&j.id);
            }
        }
        while self.jobs.len() > 100 {
            let Some((&seq, job)) = self.jobs.iter().find(|(_, j)| j.finished.is_some()) else {
                break;
            };
            let id = job.id.clone();
            self.jobs.remove(&seq);
            self.job_seq.remove(&id);
        }
    }

    /// Jobs queued or working.
    pub fn open_jobs(&self) -> usize {
        self.jobs.values().filter(|j| j.finished.is_none()).count()
    }

    /// Time until the oldest open job finishes.
    pub fn next_job_end(&self, now: Instant) -> Duration {
        let delay = self.job_delay();
        self.jobs
            .values()
            .filter(|j| j.finished.is_none())
            .map(|j| (j.created + delay).saturating_duration_since(now))
            .min()
            .unwrap_or(delay)
    }

    /// Counts a request against its quotas, or says it must wait.
    pub(crate) fn spend(&mut self, quotas: Quotas, now: Instant) -> Budget {
        let since = now.saturating_duration_since(self.started);
        for w in [&mut self.account, &mut self.list, &mut self.list_deep] {
            w.roll(since);
        }
        let endpoint_windows: Vec<Window> = match quotas {
            Quotas::Account => vec![],
            Quotas::List => vec![self.list],
            Quotas::ListDeep => vec![self.list_deep, self.list],
        };
        let blocked: Vec<Duration> = std::iter::once(self.account)
            .chain(endpoint_windows.iter().copied())
            .filter(|w| w.remaining() == 0)
            .map(|w| w.reset_in(since))
            .collect();
        let allowed = blocked.is_empty();
        if allowed {
            self.account.used += 1;
            match quotas {
                Quotas::Account => {}
                Quotas::List => self.list.used += 1,
                Quotas::ListDeep => {
                    self.list.used += 1;
                    self.list_deep.used += 1;
                }
            }
        }
        let endpoint = match quotas {
            Quotas::Account => None,
            Quotas::List => Some(&self.list),
            Quotas::ListDeep => Some(&self.list_deep),
        };
        Budget {
            allowed,
            retry_after: blocked.into_iter().max().unwrap_or_default(),
            account: (
                self.account.limit,
                self.account.remaining(),
                self.account.reset_in(since),
            ),
            endpoint: endpoint.map(|w| (w.limit, w.remaining(), w.reset_in(since))),
        }
    }

    /// The page after `after` (exclusive) in the given order.
    pub fn page(
        &self,
        sort: SortKey,
        descending: bool,
        after: Option<&Position>,
        size: usize,
    ) -> (Vec<SandboxTicket>, bool) {
        fn collect<I: Iterator<Item = u64>>(
            state: &State,
            ids: I,
            size: usize,
        ) -> (Vec<SandboxTicket>, bool) {
            let mut out = Vec::with_capacity(size);
            let mut more = false;
            for id in ids {
                if out.len() == size {
                    more = true;
                    break;
                }
                if let Some(t) = state.tickets.get(&id) {
                    out.push(t.clone());
                }
            }
            (out, more)
        }
        use std::ops::Bound::{Excluded, Unbounded};
        match (sort, after) {
            (SortKey::Id, pos) => {
                let lower = pos.map(|p| p.id);
                if descending {
                    let upper = lower.map_or(Unbounded, Excluded);
                    collect(
                        self,
                        self.tickets
                            .range((Unbounded, upper))
                            .rev()
                            .map(|(id, _)| *id),
                        size,
                    )
                } else {
                    let lower = lower.map_or(Unbounded, Excluded);
                    collect(
                        self,
                        self.tickets.range((lower, Unbounded)).map(|(id, _)| *id),
                        size,
                    )
                }
            }
            (SortKey::DeletedAt, pos) => {
                let key = pos.map(|p| (p.millis, p.id));
                if descending {
                    let upper = key.map_or(Unbounded, Excluded);
                    collect(
                        self,
                        self.by_deleted_at
                            .range((Unbounded, upper))
                            .rev()
                            .map(|k| k.1),
                        size,
                    )
                } else {
                    let lower = key.map_or(Unbounded, Excluded);
                    collect(
                        self,
                        self.by_deleted_at.range((lower, Unbounded)).map(|k| k.1),
                        size,
                    )
                }
            }
            (SortKey::Subject, pos) => {
                let key = pos.map(|p| (p.subject.clone(), p.id));
                if descending {
                    let upper = key.map_or(Unbounded, Excluded);
                    collect(
                        self,
                        self.by_subject.range((Unbounded, upper)).rev().map(|k| k.1),
                        size,
                    )
                } else {
                    let lower = key.map_or(Unbounded, Excluded);
                    collect(
                        self,
                        self.by_subject.range((lower, Unbounded)).map(|k| k.1),
                        size,
                    )
                }
            }
        }
    }

    /// An offset page: tickets `skip..skip+size` in id order, and the total.
    pub fn offset_page(
        &self,
        sort: SortKey,
        descending: bool,
        skip: usize,
        size: usize,
    ) -> (Vec<SandboxTicket>, usize) {
        let ids: Box<dyn Iterator<Item = u64>> = match (sort, descending) {
            (SortKey::Id, false) => Box::new(self.tickets.keys().copied()),
            (SortKey::Id, true) => Box::new(self.tickets.keys().rev().copied()),
            (SortKey::DeletedAt, false) => Box::new(self.by_deleted_at.iter().map(|k| k.1)),
            (SortKey::DeletedAt, true) => Box::new(self.by_deleted_at.iter().rev().map(|k| k.1)),
            (SortKey::Subject, false) => Box::new(self.by_subject.iter().map(|k| k.1)),
            (SortKey::Subject, true) => Box::new(self.by_subject.iter().rev().map(|k| k.1)),
        };
        let page = ids
            .skip(skip)
            .take(size)
            .filter_map(|id| self.tickets.get(&id).cloned())
            .collect();
        (page, self.tickets.len())
    }

    /// Each ticket as it was when the last purge request naming it arrived.
    pub fn requested_as(&self) -> &BTreeMap<u64, SandboxTicket> {
        &self.requested_as
    }

    /// Starts a permanent-deletion job for ids that are soft-deleted now.
    pub fn create_job(&mut self, ids: Vec<u64>, now: Instant) -> JobView {
        for id in &ids {
            if let Some(t) = self.tickets.get(id) {
                self.requested_as.insert(*id, t.clone());
            }
        }
        self.next_job += 1;
        let seq = self.next_job;
        let hex: String = (0..16)
            .map(|_| format!("{:02x}", self.rng.random::<u8>()))
            .collect();
        let id = if seq.is_multiple_of(2) {
            format!("V3-{hex}")
        } else {
            hex
        };
        let faults = self.options.faults.clone();
        let fate = if self.chance(faults.job_failures) {
            JobFate::Fail
        } else if self.chance(faults.job_kills) {
            JobFate::Kill
        } else {
            JobFate::Complete
        };
        let vanishes = self.chance(faults.job_vanish);
        self.jobs.insert(
            seq,
            Job {
                id: id.clone(),
                ids,
                created: now,
                fate,
                vanishes,
                finished: None,
            },
        );
        self.job_seq.insert(id.clone(), seq);
        JobView {
            id,
            status: "queued".into(),
            total: None,
            progress: None,
            message: None,
            success: None,
        }
    }

    /// The cursor listing's reading of `sort_by` (a profile).
    pub fn cursor_sort(&self) -> CursorSort {
        self.options.cursor_sort
    }

    /// A job's status, or `None` when unknown, expired or vanished.
    pub fn job(&self, id: &str, now: Instant) -> Option<JobView> {
        let job = self.jobs.get(self.job_seq.get(id)?)?;
        if job.vanishes {
            return None;
        }
        let delay = self.job_delay();
        let total = Some(job.ids.len() as u64);
        Some(match &job.finished {
            Some(f) => JobView {
                id: job.id.clone(),
                status: f.status.into(),
                total,
                progress: total,
                message: Some(f.message.clone()),
                success: Some(f.success),
            },
            None if now < job.created + delay / 3 => JobView {
                id: job.id.clone(),
                status: "queued".into(),
                total: None,
                progress: None,
                message: None,
                success: None,
            },
            None => JobView {
                id: job.id.clone(),
                status: "working".into(),
                total,
                progress: Some(0),
                message: None,
                success: None,
            },
        })
    }

    /// Restores ids, all or none: an id that is not soft-deleted refuses the
    /// whole call.
    pub fn restore(&mut self, ids: &[u64]) -> Result<(), Vec<u64>> {
        let missing: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !self.tickets.contains_key(id))
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        for id in ids {
            if let Some(t) = self.take(*id) {
                self.restored.insert(*id, t);
            }
        }
        Ok(())
    }

    /// Whether an id is soft-deleted now (the precondition of a purge).
    pub fn is_soft_deleted(&self, id: u64) -> bool {
        self.tickets.contains_key(&id)
    }

    pub fn ticket_count(&self) -> usize {
        self.tickets.len()
    }
}

/// One thing the agents of `churn` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChurnEvent {
    Restored { id: u64, at: DateTime<Utc> },
    DeletedAgain { id: u64, at: DateTime<Utc> },
    NewDeletion { id: u64, at: DateTime<Utc> },
}

/// What a listing is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Id,
    DeletedAt,
    Subject,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "id" => Some(Self::Id),
            "deleted_at" => Some(Self::DeletedAt),
            "subject" => Some(Self::Subject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::DeletedAt => "deleted_at",
            Self::Subject => "subject",
        }
    }
}

/// Where a cursor points: the sort key of the last ticket of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub millis: i64,
    pub subject: String,
    pub id: u64,
}

impl Position {
    pub fn of(t: &SandboxTicket) -> Self {
        Self {
            millis: t.deleted_at.timestamp_millis(),
            subject: t.subject.clone().unwrap_or_default(),
            id: t.id,
        }
    }
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

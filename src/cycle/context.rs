//! What a cycle is given (settings, the client, the store) and what it
//! reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditStore, RunCounts, RunId, RunOrigin, RunStatus, ScanKind, StepKind};
use crate::config::Config;
use crate::rules::Policy;
use crate::zendesk::{ClientStatsSnapshot, TicketId, ZendeskClient};

/// The knobs of a cycle, from the config or set by tests.
#[derive(Debug, Clone)]
pub struct CycleSettings {
    pub dry_run: bool,
    pub max_purges_per_run: u64,
    /// Send batches while the scan goes on; `max_purges_per_run` then stops
    /// sending at the limit instead of purging nothing.
    pub purge_while_scanning: bool,
    pub max_jobs_in_flight: usize,
    pub job_poll_interval: Duration,
    /// A job not finished after this long counts as unknown.
    pub job_timeout: Duration,
    /// After cancellation, how long open jobs are still followed.
    pub shutdown_grace: Duration,
    pub record_subjects: bool,
    /// Unsettled outcomes older than this are no longer checked (Zendesk
    /// scrubs deleted tickets after about 30 days).
    pub settle_window: Duration,
    /// A run walks the whole view when the last such walk started longer
    /// ago than this; otherwise it reads only the newest deletions.
    pub reconcile_every: Duration,
    /// Details of tickets settled longer ago are pruned after each run.
    pub keep_details: Option<Duration>,
    /// The share of the listing quota (over `check_interval`) a whole-view
    /// check may take in one run; the check spans runs. Not used while
    /// `reconcile_every` is zero (every run walks the whole view itself).
    pub check_share: f64,
    /// The time between two scheduled runs: what a run's share of the
    /// listing quota is reckoned over.
    pub check_interval: Duration,
    /// The purge latency the alert holds the 95th percentile to (exported
    /// as `zd_retention_purge_latency_bound_seconds`).
    pub latency_bound: Duration,
    /// How far Zendesk's `deleted_at` and this host's clock may disagree:
    /// the refresh reads this far below the high-water mark, and every
    /// freshness read this far before the listing it checks.
    pub clock_skew: Duration,
}

impl CycleSettings {
    pub fn from_config(config: &Config) -> Self {
        let interval = config
            .schedule
            .interval(Utc::now())
            .unwrap_or(Duration::from_secs(15 * 60));
        Self {
            dry_run: config.safety.dry_run,
            max_purges_per_run: config.safety.max_purges_per_run,
            purge_while_scanning: config.safety.purge_while_scanning,
            max_jobs_in_flight: config.zendesk.max_jobs_in_flight,
            job_poll_interval: config.zendesk.job_poll_interval,
            job_timeout: config.zendesk.job_timeout,
            shutdown_grace: config.schedule.shutdown_grace,
            record_subjects: config.audit.record_subjects,
            settle_window: Duration::from_secs(31 * 86_400),
            reconcile_every: config.schedule.reconcile,
            keep_details: config.audit.keep_details,
            clock_skew: config.zendesk.clock_skew,
            check_share: config.schedule.check_share,
            check_interval: interval,
            latency_bound: config.schedule.latency_bound.unwrap_or(2 * interval),
        }
    }
}

/// Everything a cycle needs.
#[derive(Clone)]
pub struct CycleContext {
    pub policy: Arc<Policy>,
    pub settings: CycleSettings,
    /// The config version and what runs it, recorded with every run.
    pub origin: RunOrigin,
    pub client: ZendeskClient,
    pub store: AuditStore,
    /// Cancelled on shutdown: no new batch is sent, open jobs are followed
    /// for `shutdown_grace`.
    pub cancel: CancellationToken,
}

impl CycleContext {
    pub fn new(
        config: &Config,
        client: ZendeskClient,
        store: AuditStore,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            policy: Arc::new(config.policy.clone()),
            settings: CycleSettings::from_config(config),
            origin: RunOrigin::here(&config.hash, Some(config.version_settings())),
            client,
            store,
            cancel,
        }
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub run_id: RunId,
    pub status: RunStatus,
    pub dry_run: bool,
    pub counts: RunCounts,
    /// Tickets selected per purge rule.
    pub matched_by_rule: BTreeMap<String, u64>,
    /// Tickets kept per reason (`keep_rule`, `keep_no_rule`, ...).
    pub kept: BTreeMap<String, u64>,
    pub purge_batches: u64,
    /// Reported purged earlier but listed again.
    pub not_effective: u64,
    /// Earlier purges or unknown outcomes proven gone: absent from the view
    /// and not among the active tickets.
    pub confirmed_gone: u64,
    /// Absent from the view but found among active tickets: restored by
    /// someone, not purged.
    pub restored_elsewhere: u64,
    /// Unknown outcomes of tickets deleted more than 30 days ago and gone:
    /// Zendesk's own scrub cannot be told from our purge.
    pub scrubbed_by_zendesk: u64,
    /// Absent tickets whose lookup failed: left for a later run.
    pub unsettled_lookup_failed: u64,
    /// Listings of a ticket already listed in this scan.
    pub relisted: u64,
    /// Selected, but already in a purge job an earlier (killed) process
    /// sent: that job is followed, and they are not sent again.
    pub already_in_flight: u64,
    /// Tickets not purged because they changed during the scan (listed
    /// twice with different data, or deleted again).
    pub changed_during_scan: u64,
    /// The longest time between a purged ticket's last listing and its
    /// `destroy_many`.
    #[serde(with = "option_seconds")]
    pub max_listing_age: Option<Duration>,
    /// The longest time from a freshness read's answer to a purge request it
    /// cleared leaving (a ticket deleted again inside it is purged on its new
    /// deletion: no client can prevent that).
    #[serde(with = "option_seconds")]
    pub max_send_window: Option<Duration>,
    /// Purged tickets a read after their request showed deleted again:
    /// recorded `unknown`, not as purged by their rule.
    pub in_doubt: u64,
    /// Listing requests beyond the scan's pages: the order proof, the
    /// freshness reads before purging, the newest-first read that settles
    /// absent tickets.
    pub safety_list_requests: SafetyRequests,
    /// Selected but never sent (limit, failure or shutdown).
    pub not_sent: u64,
    pub requests: ClientStatsSnapshot,
    /// How the view was walked, and why.
    pub scan: ScanKind,
    pub scan_reason: String,
    /// Which listing the run made.
    pub step: StepKind,
    /// Live ledger rows decided again without a listing.
    pub decided_from_ledger: u64,
    /// Decision rows written: first sightings and changed decisions only.
    pub decisions_recorded: u64,
    /// Kept tickets a whole walk no longer found, and not active.
    pub left_view: u64,
    /// Audit rows pruned by `audit.keep_details`.
    pub pruned: u64,
    /// This run's part of the whole-view check, when it walked one.
    pub check: Option<CheckProgress>,
    /// From each purged ticket becoming purgeable to its request leaving.
    pub latency: Option<crate::audit::LatencySummary>,
    /// A dry run: the tickets the ledger holds as would-purge after it,
    /// from every run (`matched` counts this run's decisions only).
    pub would_purge_in_ledger: Option<u64>,
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    pub error: Option<String>,
}

mod option_seconds {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Listing requests made for safety rather than for the scan itself.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SafetyRequests {
    pub order_proof: u64,
    pub freshness: u64,
    pub settle: u64,
}

/// Whether this host's clock agrees with Zendesk's (the latest answer's
/// `Date` header) within `clock_skew` and the header's one-second grain.
/// Ages, and so `min_age`, are read off this host's clock.
pub(crate) fn clock_trusted(client: &ZendeskClient, clock_skew: Duration) -> Result<(), String> {
    let Some(offset) = client.clock_offset() else {
        // no answer yet, or none with a readable Date: nothing vouches for
        // this host's clock, so nothing is purged on it
        return Err(
            "Zendesk's answers carry no readable Date header, so this host's clock cannot be checked against Zendesk's: nothing is purged (a proxy that strips Date?)"
                .into(),
        );
    };
    let allowed =
        chrono::Duration::from_std(clock_skew).unwrap_or_default() + chrono::Duration::seconds(2);
    if offset.abs() <= allowed {
        return Ok(());
    }
    Err(format!(
        "this host's clock is {} {} Zendesk's (its Date header), more than zendesk.clock_skew = {} allows: ages cannot be trusted, nothing is purged; set the clock right (NTP) or raise zendesk.clock_skew",
        crate::human::duration(Duration::from_secs(offset.num_seconds().unsigned_abs())),
        if offset < chrono::Duration::zero() {
            "ahead of"
        } else {
            "behind"
        },
        crate::human::duration(clock_skew),
    ))
}

/// What a run's part of the whole-view check did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckProgress {
    pub check: i64,
    pub started_at: Option<DateTime<Utc>>,
    /// Pages and tickets this run walked.
    pub pages: u64,
    pub listed: u64,
    /// The pages this run could spend: its share of the listing quota.
    pub budget_pages: u64,
    /// Pages walked since the check began, and by how many runs.
    pub total_pages: u64,
    pub runs: u64,
    /// The walk reached the end of the view: its absences are settled.
    pub finished: bool,
    /// Why this run's part ended.
    pub stopped: String,
}

/// Ids in a set with a fast hash.
pub(super) type IdSet = std::collections::HashSet<TicketId, foldhash::fast::RandomState>;

/// Every id a scan listed: a full scan of a million tickets keeps them all,
/// in a compressed bitmap (about 2 bytes an id when sparse, far less when
/// dense), whatever their width.
#[derive(Debug, Clone, Default)]
pub(super) struct SeenIds(roaring::RoaringTreemap);

impl SeenIds {
    /// `true` when the id was not in the set yet.
    pub(super) fn insert(&mut self, id: TicketId) -> bool {
        self.0.insert(id.get())
    }

    pub(super) fn contains(&self, id: TicketId) -> bool {
        self.0.contains(id.get())
    }
}

impl FromIterator<TicketId> for SeenIds {
    fn from_iter<I: IntoIterator<Item = TicketId>>(ids: I) -> Self {
        SeenIds(ids.into_iter().map(TicketId::get).collect())
    }
}

/// What the cycle's unit tests build a context from: quick settings, and a
/// context on a fresh store in a temporary folder with a client for
/// `base_url` (a sandbox, or an address nothing listens on).
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;
    use std::time::Duration;

    use secrecy::SecretString;
    use tokio_util::sync::CancellationToken;

    use super::{CycleContext, CycleSettings};
    use crate::audit::AuditStore;
    use crate::quota::RateQuota;
    use crate::rules::Policy;
    use crate::zendesk::{Auth, ClientConfig, RateLimits, RetryPolicy, ZendeskClient};

    /// Live, quick polling, generous limits, a day between whole walks.
    pub(crate) fn settings() -> CycleSettings {
        CycleSettings {
            dry_run: false,
            max_purges_per_run: 1000,
            purge_while_scanning: false,
            max_jobs_in_flight: 2,
            job_poll_interval: Duration::from_millis(10),
            job_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(1),
            record_subjects: false,
            settle_window: Duration::from_secs(31 * 86_400),
            reconcile_every: Duration::from_secs(86_400),
            keep_details: None,
            clock_skew: Duration::from_secs(120),
            check_share: 0.5,
            check_interval: Duration::from_secs(900),
            latency_bound: Duration::from_secs(1800),
        }
    }

    /// A client for `base_url` with roomy quotas and no retries.
    pub(crate) fn client(base_url: &str) -> ZendeskClient {
        let quota = || RateQuota::new(100, Duration::from_millis(100)).unwrap();
        ZendeskClient::new(ClientConfig {
            base_url: url::Url::parse(base_url).unwrap(),
            auth: Auth::ApiToken {
                email: "ops@acme.example".into(),
                token: SecretString::from("t"),
            },
            limits: RateLimits {
                list: quota(),
                list_deep: quota(),
                account: quota(),
            },
            retry: RetryPolicy {
                max_retries: 0,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
                request_timeout: Duration::from_secs(5),
            },
        })
        .unwrap()
    }

    /// A context on a fresh store (kept while the folder lives).
    pub(crate) async fn context(
        base_url: &str,
        policy: Policy,
        settings: CycleSettings,
    ) -> (CycleContext, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let ctx = CycleContext {
            policy: Arc::new(policy),
            settings,
            origin: "test".into(),
            client: client(base_url),
            store,
            cancel: CancellationToken::new(),
        };
        (ctx, dir)
    }
}

//! Proactive pacing under Zendesk's rate limits, and the client's counters.
//!
//! Each request first waits for its endpoint class's governor limiter and the
//! account-wide one, then for any hold-off that Zendesk's rate-limit headers
//! asked for (another integration may be spending the same account budget).
//! All waiting goes through `tokio::time`. Knows headers, never JSON.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::RateLimiter;
use governor::clock::Clock;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// governor's clock on tokio's time: a test that pauses tokio's clock moves
/// the limiters with it, and every wait in the client is tokio time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    /// Time since the clock was made (a `Duration` is a governor reference).
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

/// A direct (unkeyed) limiter on tokio's clock.
type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

use crate::quota::RateQuota;

/// The quotas the client keeps to; defaults are Zendesk's documented numbers
/// for the smallest plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `GET deleted_tickets`, pages 1 to 100.
    pub list: RateQuota,
    /// `GET deleted_tickets` beyond page 100.
    pub list_deep: RateQuota,
    /// Every request of the account, job-creating calls included.
    pub account: RateQuota,
}

impl Default for RateLimits {
    fn default() -> Self {
        // the literals are positive with a non-zero window
        Self {
            list: RateQuota::per_minute(10).expect("valid literal"),
            list_deep: RateQuota::per_minute(5).expect("valid literal"),
            account: RateQuota::per_minute(200).expect("valid literal"),
        }
    }
}

/// Which quotas a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointClass {
    /// A listing page at or before page 100.
    List,
    /// A listing page beyond page 100: the deep quota and the list quota.
    ListDeep,
    /// Everything else: only the account quota.
    Other,
    /// A write whose account token `Pacer::reserve_writes` took already: it
    /// leaves without waiting.
    Prepaid,
}

/// Counters the benchmarks, the demo and the metrics read.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// (endpoint, status) to count; status 0 stands for no answer.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    rate_limited: AtomicU64,
    retries: AtomicU64,
    pacing_wait_micros: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ClientStatsSnapshot {
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    pub rate_limited: u64,
    pub retries: u64,
    pub pacing_wait: Duration,
}

impl ClientStatsSnapshot {
    /// Requests sent to one endpoint, whatever their answer.
    pub fn sent(&self, endpoint: &str) -> u64 {
        self.requests
            .get(endpoint)
            .map(|by_status| by_status.values().sum())
            .unwrap_or(0)
    }

    /// The requests, 429s, retries and waits since `before`.
    pub fn since(&self, before: &ClientStatsSnapshot) -> ClientStatsSnapshot {
        let mut requests = self.requests.clone();
        for (endpoint, by_status) in requests.iter_mut() {
            for (status, n) in by_status.iter_mut() {
                let earlier = before
                    .requests
                    .get(endpoint)
                    .and_then(|m| m.get(status))
                    .copied()
                    .unwrap_or(0);
                *n = n.saturating_sub(earlier);
            }
            by_status.retain(|_, n| *n > 0);
        }
        requests.retain(|_, m| !m.is_empty());
        ClientStatsSnapshot {
            requests,
            rate_limited: self.rate_limited.saturating_sub(before.rate_limited),
            retries: self.retries.saturating_sub(before.retries),
            pacing_wait: self.pacing_wait.saturating_sub(before.pacing_wait),
        }
    }

    pub fn total_sent(&self) -> u64 {
        self.requests.values().flat_map(|m| m.values()).sum()
    }
}

impl ClientStats {
    pub(crate) fn record(&self, endpoint: &str, status: u16) {
        let mut map = self.requests.lock().expect("stats lock is never poisoned");
        *map.entry((endpoint.to_string(), status)).or_default() += 1;
    }

    pub(crate) fn record_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ClientStatsSnapshot {
        let map = self.requests.lock().expect("stats lock is never poisoned");
        let mut requests: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
        for ((endpoint, status), n) in map.iter() {
            *requests
                .entry(endpoint.clone())
                .or_default()
                .entry(*status)
                .or_default() += n;
        }
        ClientStatsSnapshot {
            requests,
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            pacing_wait: Duration::from_micros(self.pacing_wait_micros.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Debug, Default)]
struct HoldOffs {
    list: Option<Instant>,
    account: Option<Instant>,
}

/// Governor limiters per endpoint class plus header-driven hold-offs.
pub struct Pacer {
    limits: RateLimits,
    list: Limiter,
    list_deep: Limiter,
    account: Limiter,
    holds: Mutex<HoldOffs>,
    /// The limiters' clock: tokio's.
    clock: TokioClock,
    pub(crate) stats: ClientStats,
    /// Zendesk's clock (its `Date` header) minus this host's, in ms, from
    /// the latest answer; `i64::MIN` before any.
    clock_offset_ms: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Pacer {
    pub fn new(limits: RateLimits) -> Self {
        let clock = TokioClock::default();
        Self {
            limits,
            // Listing is sequential (each page needs the previous cursor), so
            // a burst cannot collide with itself; the endpoint header's
            // `remaining=0` holds the rest until the window resets. This
            // spends each window's quota at its start instead of spreading
            // it, which is what the quota bound assumes.
            list: RateLimiter::direct_with_clock(limits.list.to_governor_burst(), clock),
            list_deep: RateLimiter::direct_with_clock(limits.list_deep.to_governor_burst(), clock),
            account: RateLimiter::direct_with_clock(limits.account.to_governor(), clock),
            holds: Mutex::new(HoldOffs::default()),
            clock,
            stats: ClientStats::default(),
            clock_offset_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Waits until a request of `class` may be sent.
    pub async fn acquire(&self, class: EndpointClass) {
        if class == EndpointClass::Prepaid {
            // its token was taken by `reserve_writes`, and its caller
            // checked `write_hold` just before: it leaves now
            return;
        }
        let started = Instant::now();
        self.wait_for_holds(class).await;
        match class {
            EndpointClass::List => until_ready(&self.list, &self.clock).await,
            EndpointClass::ListDeep => {
                until_ready(&self.list_deep, &self.clock).await;
                until_ready(&self.list, &self.clock).await;
            }
            EndpointClass::Other | EndpointClass::Prepaid => {}
        }
        until_ready(&self.account, &self.clock).await;
        self.note_wait(started);
    }

    /// Waits until `n` write requests may leave together, and takes their
    /// account tokens now: the requests then go out without any wait of
    /// their own (`EndpointClass::Prepaid`), right after the freshness read
    /// that clears them. The tokens are taken before the read, so each
    /// request leaves later than its token by at most the wait for the
    /// listing gate plus the read's duration: a window of the account quota
    /// may hold, besides its N, the requests whose tokens were taken within
    /// that much time before it (at most `n`).
    pub async fn reserve_writes(&self, n: usize) {
        let started = Instant::now();
        self.wait_for_holds(EndpointClass::Other).await;
        for _ in 0..n {
            until_ready(&self.account, &self.clock).await;
        }
        self.note_wait(started);
    }

    /// Counts the time since `started` as spent waiting on rate limits.
    fn note_wait(&self, started: Instant) {
        let waited = started.elapsed();
        if waited > Duration::from_millis(1) {
            metrics::counter!("zd_retention_rate_limit_wait_milliseconds_total")
                .increment(waited.as_millis() as u64);
            self.stats
                .pacing_wait_micros
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// How long the account is held off still (a spent budget or a 429's
    /// Retry-After), if at all: a write must not leave before.
    pub fn write_hold(&self) -> Option<Duration> {
        let holds = self.holds.lock().expect("holds lock is never poisoned");
        let now = Instant::now();
        holds.account.filter(|t| *t > now).map(|t| t - now)
    }

    async fn wait_for_holds(&self, class: EndpointClass) {
        loop {
            let until = {
                let holds = self.holds.lock().expect("holds lock is never poisoned");
                let list = match class {
                    EndpointClass::List | EndpointClass::ListDeep => holds.list,
                    EndpointClass::Other | EndpointClass::Prepaid => None,
                };
                list.into_iter().chain(holds.account).max()
            };
            match until {
                Some(t) if t > Instant::now() => {
                    tracing::debug!(wait = ?(t - Instant::now()), "holding off: Zendesk reported the budget spent");
                    tokio::time::sleep_until(t).await;
                }
                _ => return,
            }
        }
    }

    /// Zendesk's clock minus this host's, from the latest answer's `Date`
    /// header (whole seconds: within a second of the truth).
    pub fn clock_offset(&self) -> Option<chrono::Duration> {
        let ms = self
            .clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        (ms != i64::MIN).then(|| chrono::Duration::milliseconds(ms))
    }

    /// Reads the rate-limit headers of an answer and holds off the class or
    /// the whole account when Zendesk says its budget is spent; notes
    /// Zendesk's clock from its `Date` header.
    pub fn observe(&self, class: EndpointClass, headers: &HeaderMap) {
        // every HTTP date form (IMF-fixdate, RFC 850, asctime); an answer
        // without a readable one leaves the clock unvouched for
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .map(chrono::DateTime::<chrono::Utc>::from);
        let offset_ms = date.map_or(i64::MIN, |d| (d - chrono::Utc::now()).num_milliseconds());
        self.clock_offset_ms
            .store(offset_ms, std::sync::atomic::Ordering::Relaxed);
        let budget = RateLimitHeaders::parse(headers);
        let now = Instant::now();
        let mut holds = self.holds.lock().expect("holds lock is never poisoned");
        if let Some(reset) = budget.account_spent_for {
            let until = now + reset.unwrap_or(self.limits.account.spacing());
            holds.account = holds.account.max(Some(until));
        }
        if let Some(reset) = budget.endpoint_spent_for
            && matches!(class, EndpointClass::List | EndpointClass::ListDeep)
        {
            let until = now + reset.unwrap_or(self.limits.list.spacing());
            holds.list = holds.list.max(Some(until));
        }
    }

    /// How long requests are held off still (the longest hold), if at all.
    pub fn holding(&self) -> Option<Duration> {
        let holds = self.holds.lock().expect("holds lock is never poisoned");
        let now = Instant::now();
        holds
            .list
            .into_iter()
            .chain(holds.account)
            .max()
            .filter(|t| *t > now)
            .map(|t| t - now)
    }

    /// Holds every request off for `wait` (a 429's Retry-After).
    pub fn hold_account(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut holds = self.holds.lock().expect("holds lock is never poisoned");
        holds.account = holds.account.max(Some(until));
    }
}

async fn until_ready(limiter: &Limiter, clock: &TokioClock) {
    loop {
        match limiter.check() {
            Ok(()) => return,
            Err(not_until) => tokio::time::sleep(not_until.wait_time_from(clock.now())).await,
        }
    }
}

/// What the rate-limit headers of one answer say.
#[derive(Debug, Default, PartialEq)]
pub struct RateLimitHeaders {
    /// `Some` when the account budget is spent; the inner value is the reset.
    pub account_spent_for: Option<Option<Duration>>,
    /// `Some` when an endpoint budget (`zendesk-rate-limit-*`) is spent.
    pub endpoint_spent_for: Option<Option<Duration>>,
}

/// The longest wait a header may ask for; more is a broken header, and an
/// hour later the request is tried again rather than never.
pub const MAX_HEADER_WAIT: Duration = Duration::from_secs(3600);

/// Seconds as Zendesk writes them; fractions are accepted (the sandbox sends
/// them under compressed time). Capped at `MAX_HEADER_WAIT`.
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().parse().ok()?;
    if !(secs.is_finite() && secs >= 0.0) {
        return None;
    }
    // found by fuzzing: "1e300" overflowed Duration::from_secs_f64
    Some(Duration::try_from_secs_f64(secs).map_or(MAX_HEADER_WAIT, |d| d.min(MAX_HEADER_WAIT)))
}

impl RateLimitHeaders {
    pub fn parse(headers: &HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let remaining = get("ratelimit-remaining").or_else(|| get("x-rate-limit-remaining"));
        let account_spent_for = match remaining.and_then(|r| r.trim().parse::<i64>().ok()) {
            Some(r) if r <= 0 => Some(get("ratelimit-reset").and_then(parse_seconds)),
            _ => None,
        };
        let mut endpoint_spent_for = None;
        for (name, value) in headers {
            let name = name.as_str();
            if !(name.starts_with("zendesk-rate-limit-") || name.starts_with("zendesk-ratelimit-"))
            {
                continue;
            }
            let Ok(value) = value.to_str() else { continue };
            let mut remaining = None;
            let mut resets = None;
            for part in value.split([';', ',']) {
                if let Some((k, v)) = part.split_once('=') {
                    match k.trim() {
                        "remaining" => remaining = v.trim().parse::<i64>().ok(),
                        "resets" => resets = parse_seconds(v),
                        _ => {}
                    }
                }
            }
            if matches!(remaining, Some(r) if r <= 0) {
                endpoint_spent_for = Some(resets);
            }
        }
        Self {
            account_spent_for,
            endpoint_spent_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(list: &str, account: &str) -> RateLimits {
        RateLimits {
            list: list.parse().unwrap(),
            list_deep: "5/1m".parse().unwrap(),
            account: account.parse().unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_list_quota_is_spent_at_a_windows_start_then_refilled_on_tokio_time() {
        let pacer = Pacer::new(limits("10/1m", "6000/1m"));
        let start = Instant::now();
        for _ in 0..10 {
            pacer.acquire(EndpointClass::List).await;
        }
        // the account allows one every 10ms: the burst takes 90ms
        assert!(
            start.elapsed() <= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        pacer.acquire(EndpointClass::List).await;
        // the 11th waits for the list quota's refill, one every 6s
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(6) && waited < Duration::from_secs(7),
            "{waited:?}"
        );
    }

    #[test]
    fn zendesks_clock_is_read_from_every_http_date_form_and_none_is_none() {
        let pacer = Pacer::new(limits("10/1m", "200/1m"));
        assert_eq!(pacer.clock_offset(), None, "no answer yet");
        let now = chrono::Utc::now();
        for form in [
            "%a, %d %b %Y %H:%M:%S GMT", // IMF-fixdate
            "%A, %d-%b-%y %H:%M:%S GMT", // RFC 850
            "%a %b %e %H:%M:%S %Y",      // asctime
        ] {
            let mut headers = HeaderMap::new();
            let date = (now + chrono::Duration::hours(2)).format(form).to_string();
            headers.insert(reqwest::header::DATE, date.parse().unwrap());
            pacer.observe(EndpointClass::Other, &headers);
            let offset = pacer.clock_offset().unwrap_or_else(|| panic!("{date}"));
            assert!(
                (offset - chrono::Duration::hours(2)).num_seconds().abs() <= 1,
                "{date}"
            );
        }
        // an answer without a readable Date vouches for nothing
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::DATE, "soon".parse().unwrap());
        pacer.observe(EndpointClass::Other, &headers);
        assert_eq!(pacer.clock_offset(), None);
        pacer.observe(EndpointClass::Other, &HeaderMap::new());
        assert_eq!(pacer.clock_offset(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn spent_budget_headers_and_retry_after_hold_requests_on_tokio_time() {
        let pacer = Pacer::new(limits("10/1m", "200/1m"));
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit-remaining", "0".parse().unwrap());
        headers.insert("ratelimit-reset", "30".parse().unwrap());
        pacer.observe(EndpointClass::Other, &headers);
        assert_eq!(pacer.holding(), Some(Duration::from_secs(30)));
        let start = Instant::now();
        pacer.acquire(EndpointClass::Other).await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(pacer.holding(), None);
        pacer.hold_account(Duration::from_secs(12));
        let start = Instant::now();
        pacer.acquire(EndpointClass::List).await;
        assert!(
            start.elapsed() >= Duration::from_secs(12),
            "{:?}",
            start.elapsed()
        );
    }
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn reads_spent_account_and_endpoint_budgets() {
        let h = headers(&[
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "12"),
            (
                "zendesk-rate-limit-deleted-tickets-index",
                "total=10; remaining=0; resets=7",
            ),
        ]);
        let parsed = RateLimitHeaders::parse(&h);
        assert_eq!(
            parsed.account_spent_for,
            Some(Some(Duration::from_secs(12)))
        );
        assert_eq!(
            parsed.endpoint_spent_for,
            Some(Some(Duration::from_secs(7)))
        );
    }

    #[test]
    fn budget_left_means_no_hold() {
        let h = headers(&[
            ("x-rate-limit-remaining", "199"),
            (
                "zendesk-ratelimit-tickets-index",
                "total=1000; remaining=999; resets=12",
            ),
        ]);
        assert_eq!(RateLimitHeaders::parse(&h), RateLimitHeaders::default());
    }

    #[test]
    fn fractional_seconds_are_accepted() {
        assert_eq!(parse_seconds("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("1e300"), Some(MAX_HEADER_WAIT));
        assert_eq!(parse_seconds("NaN"), None);
        assert_eq!(parse_seconds("86400"), Some(MAX_HEADER_WAIT));
        assert_eq!(parse_seconds("soon"), None);
    }
}

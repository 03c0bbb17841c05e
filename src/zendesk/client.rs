//! `ZendeskClient`: the deleted-tickets and job-status endpoints over reqwest.
//!
//! Owns the HTTP conversation: URLs, authentication, pacing, retries, status
//! codes and decoding. It never reads files or the environment (the config
//! module hands it a `SecretString`) and never touches the audit store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::stream::BoxStream;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use super::batch::IdBatch;
use super::error::ZendeskError;
use super::model::{
    ActiveTicketsEnvelope, ApiErrorBody, CurrentUser, CurrentUserEnvelope, JobId, JobStatus,
    JobStatusEnvelope, JobStatusesEnvelope, RawDeletedTicketsPage, TicketId, body_shape,
    decode_reason,
};
use super::pacing::{
    ClientStatsSnapshot, EndpointClass, MAX_HEADER_WAIT, Pacer, RateLimits, parse_seconds,
};
use crate::ticket::Ticket;

/// How the client proves who it is. Debug output never shows the secret.
#[derive(Debug, Clone)]
pub enum Auth {
    /// HTTP Basic with `{email}/token` and the API token.
    ApiToken { email: String, token: SecretString },
    /// `Authorization: Bearer {token}`.
    OAuth { token: SecretString },
}

impl Auth {
    /// Adds the credential; reqwest marks the header sensitive so that no
    /// Debug output of the request shows it.
    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::ApiToken { email, token } => {
                request.basic_auth(format!("{email}/token"), Some(token.expose_secret()))
            }
            Auth::OAuth { token } => request.bearer_auth(token.expose_secret()),
        }
    }
}

/// Retries of transient failures and 429s.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first, for 5xx, timeouts, resets and 429s alike.
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// How long one attempt may take before it counts as timed out.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything the client needs; built by the config module or by tests.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub auth: Auth,
    pub limits: RateLimits,
    pub retry: RetryPolicy,
}

/// `https://{subdomain}.zendesk.com`.
pub fn subdomain_url(subdomain: &str) -> Result<Url, String> {
    let valid = !subdomain.is_empty()
        && subdomain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid {
        return Err(format!(
            "{subdomain:?} is not a Zendesk subdomain: use the part before .zendesk.com, letters, digits and dashes only"
        ));
    }
    Url::parse(&format!("https://{subdomain}.zendesk.com"))
        .map_err(|e| format!("{subdomain:?} does not make a valid URL: {e}"))
}

/// Accepts `https://` anywhere and `http://` only on loopback, where no
/// credential can be read off the wire.
pub fn check_base_url(text: &str) -> Result<Url, String> {
    // First, and without echoing the text: a URL with `@` carries (or
    // looks like it carries) a credential, and no Zendesk URL needs one.
    if text.contains('@') {
        return Err(
            "base_url holds a user name or password (an '@' before the host): credentials go in token_env or token_file, never in the URL".into(),
        );
    }
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "{text:?} uses plain http to a host that is not loopback: credentials would cross the network in clear; use https://"
            ));
        }
        other => {
            return Err(format!(
                "{text:?}: scheme {other:?} is not supported; use https://"
            ));
        }
    }
    if url.host_str().is_none() {
        return Err(format!("{text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // never echo the URL: it holds a credential
        return Err(
            "base_url holds a user name or password (user:password@host): credentials go in token_env or token_file, never in the URL".into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        // never echo it: a query may carry a token (`?api_token=...`)
        return Err(
            "base_url has a query (?...) or a fragment (#...): give only the scheme and host, such as \"https://acme.zendesk.com\"; credentials go in token_env or token_file".into(),
        );
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `sort_by` of the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    Id,
    Subject,
    DeletedAt,
}

impl SortBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Subject => "subject",
            Self::DeletedAt => "deleted_at",
        }
    }
}

/// `sort_order` of the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    Desc,
}

impl SortOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// Cursor pagination is Zendesk's recommendation and stays correct while
/// tickets vanish; offsets skip tickets then and stop at page 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pagination {
    #[default]
    Cursor,
    Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    pub sort: Option<(SortBy, SortOrder)>,
    /// At most 100; larger values are capped.
    pub page_size: u32,
    pub pagination: Pagination,
    /// Go on from a page a walk read earlier (its `next`), perhaps in
    /// another process: a walk that spans runs.
    pub resume: Option<Resume>,
}

/// Where an earlier walk stopped: the next page's path and query (on our
/// base URL, as a link Zendesk gave) and its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub next: String,
    pub number: u32,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            sort: None,
            page_size: 100,
            pagination: Pagination::Cursor,
            resume: None,
        }
    }
}

/// One page of deleted tickets.
#[derive(Debug, Clone)]
pub struct DeletedTicketsPage {
    pub tickets: Vec<Ticket>,
    /// 1 for the first page.
    pub number: u32,
    pub has_more: bool,
    /// The next page's path and query, when there is one: a walk that
    /// stops here goes on from it later (`ListOptions::resume`).
    pub next: Option<String>,
}

struct Inner {
    /// Whether the last attempt failed to reach Zendesk (no answer, 5xx,
    /// refused credentials); read by `/readyz`.
    last_failed: std::sync::atomic::AtomicBool,
    http: reqwest::Client,
    base: Url,
    auth: Auth,
    pacer: Pacer,
    retry: RetryPolicy,
}

/// A cheap-to-clone handle on one account's API.
#[derive(Clone)]
pub struct ZendeskClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ZendeskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZendeskClient")
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

/// What one request is, for pacing, counting and error messages.
struct Call {
    method: Method,
    url: Url,
    /// Short endpoint label for counters: `list`, `destroy_many`, ...
    endpoint: &'static str,
    /// Human description for errors: `DELETE destroy_many (100 ids)`.
    description: String,
    class: EndpointClass,
    /// When the request was handed to the HTTP connection (the last
    /// attempt's): the end of a purge's freshness window.
    sent_at: std::sync::OnceLock<tokio::time::Instant>,
}

impl Call {
    /// A permanent deletion is never sent again here: after an answer that
    /// was lost (a timeout, a dropped connection, a 5xx) the first attempt
    /// may have created a job, so the caller records each attempt before
    /// sending it again; after a 429 the caller waits, and reads the newest
    /// deletions again before re-sending (the wait can be a minute).
    fn caller_retries_transient(&self) -> bool {
        matches!(self.endpoint, "destroy_many" | "destroy")
    }
}

impl ZendeskClient {
    /// Zendesk's clock minus this host's, from the latest answer's `Date`
    /// header; `None` before any answer carried one.
    pub fn clock_offset(&self) -> Option<chrono::Duration> {
        self.inner.pacer.clock_offset()
    }

    /// How long requests are still held off by Zendesk's rate-limit headers
    /// or a 429's Retry-After, if at all.
    pub fn holding(&self) -> Option<std::time::Duration> {
        self.inner.pacer.holding()
    }

    pub fn new(config: ClientConfig) -> Result<Self, ZendeskError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("zd-retention/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.retry.request_timeout.min(Duration::from_secs(10)));
        if config.base_url.scheme() == "http" {
            // plain http is allowed to loopback only, and a proxy from the
            // environment (HTTP_PROXY) would read the credential in clear;
            // https honours HTTPS_PROXY / NO_PROXY as operators expect
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| ZendeskError::Refused {
            call: "building the HTTP client".into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                last_failed: std::sync::atomic::AtomicBool::new(false),
                http,
                base: config.base_url,
                auth: config.auth,
                pacer: Pacer::new(config.limits),
                retry: config.retry,
            }),
        })
    }

    /// Whether the last request could not reach Zendesk or was refused.
    pub fn last_attempt_failed(&self) -> bool {
        self.inner.last_failed.load(Ordering::Relaxed)
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The retry policy, for callers that retry themselves (each purge
    /// attempt is journalled).
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    pub fn limits(&self) -> RateLimits {
        self.inner.pacer.limits()
    }

    /// Requests, 429s, retries and pacing waits so far.
    pub fn stats(&self) -> ClientStatsSnapshot {
        self.inner.pacer.stats.snapshot()
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.inner.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{path}"));
        url
    }

    /// Takes the path and query of a link Zendesk gave and puts them on our
    /// base URL: credentials never follow a link to another host.
    fn rebase(&self, link: &str) -> Result<Url, String> {
        let parsed = Url::parse(link)
            .or_else(|_| self.inner.base.join(link))
            .map_err(|e| format!("next-page link {link:?} is not a URL: {e}"))?;
        let mut url = self.inner.base.clone();
        url.set_path(parsed.path());
        url.set_query(parsed.query());
        if parsed.host_str() != self.inner.base.host_str() {
            tracing::debug!(
                link,
                "next-page link names another host; following it on the configured base URL"
            );
        }
        Ok(url)
    }

    /// Lists soft-deleted tickets page by page, following the pagination to
    /// the end. Each item is a page or the error that ended the walk.
    pub fn list_deleted(
        &self,
        options: ListOptions,
    ) -> BoxStream<'static, Result<DeletedTicketsPage, ZendeskError>> {
        let client = self.clone();
        Box::pin(async_stream::try_stream! {
            let size = options.page_size.clamp(1, 100);
            let mut url = client.url("/api/v2/deleted_tickets.json");
            {
                let mut q = url.query_pairs_mut();
                match options.pagination {
                    Pagination::Cursor => { q.append_pair("page[size]", &size.to_string()); }
                    Pagination::Offset => {
                        q.append_pair("per_page", &size.to_string());
                        q.append_pair("page", "1");
                    }
                }
                if let Some((by, order)) = options.sort {
                    q.append_pair("sort_by", by.as_str());
                    q.append_pair("sort_order", order.as_str());
                }
            }
            let mut number = 1u32;
            if let Some(resume) = &options.resume {
                url = client.rebase(&resume.next).map_err(|reason| ZendeskError::Decode {
                    call: "GET deleted_tickets (resumed)".to_string(),
                    reason,
                    shape: "the stored next page cannot be read".to_string(),
                })?;
                number = resume.number.max(1);
            }
            loop {
                let class = if number > 100 { EndpointClass::ListDeep } else { EndpointClass::List };
                let call = Call {
                    method: Method::GET,
                    url: url.clone(),
                    endpoint: "list",
                    description: format!("GET deleted_tickets (page {number})"),
                    class,
                    sent_at: Default::default(),
                };
                let raw: RawDeletedTicketsPage = client.json(call).await?;
                let next = match options.pagination {
                    Pagination::Cursor => {
                        let meta = raw.meta.clone().unwrap_or_default();
                        if meta.has_more {
                            let link = raw.links.as_ref().and_then(|l| l.next.clone());
                            match (link, meta.after_cursor) {
                                (Some(link), _) => Some(client.rebase(&link)),
                                (None, Some(cursor)) => {
                                    let mut u = client.url("/api/v2/deleted_tickets.json");
                                    u.query_pairs_mut()
                                        .append_pair("page[after]", &cursor)
                                        .append_pair("page[size]", &size.to_string());
                                    // the order asked for goes on with the cursor
                                    if let Some((by, order)) = options.sort {
                                        u.query_pairs_mut()
                                            .append_pair("sort_by", by.as_str())
                                            .append_pair("sort_order", order.as_str());
                                    }
                                    Some(Ok(u))
                                }
                                (None, None) => Some(Err("meta.has_more is true but neither links.next nor meta.after_cursor is given".to_string())),
                            }
                        } else {
                            None
                        }
                    }
                    Pagination::Offset => raw.next_page.as_deref().map(|l| client.rebase(l)),
                };
                let next = match next {
                    Some(Ok(u)) if u == url => Some(Err("the next-page link points at the page just read".to_string())),
                    other => other,
                };
                let has_more = next.is_some();
                let next_link = match &next {
                    Some(Ok(u)) => Some(match u.query() {
                        Some(q) => format!("{}?{q}", u.path()),
                        None => u.path().to_string(),
                    }),
                    _ => None,
                };
                yield DeletedTicketsPage { tickets: raw.deleted_tickets.into_iter().map(Ticket::from).collect(), number, has_more, next: next_link };
                match next {
                    None => break,
                    Some(Ok(u)) => url = u,
                    Some(Err(reason)) => {
                        Err(ZendeskError::Decode {
                            call: format!("GET deleted_tickets (page {number})"),
                            reason,
                            shape: "the pagination cannot go on".to_string(),
                        })?;
                    }
                }
                number += 1;
            }
        })
    }

    /// Takes one soft-deleted ticket back into the ticket views.
    pub async fn restore(&self, id: TicketId) -> Result<(), ZendeskError> {
        let call = Call {
            method: Method::PUT,
            url: self.url(&format!("/api/v2/deleted_tickets/{id}/restore.json")),
            endpoint: "restore",
            description: format!("PUT deleted_tickets/{id}/restore"),
            class: EndpointClass::Other,
            sent_at: Default::default(),
        };
        self.send(&call).await.map(drop)
    }

    /// Restores up to 100 soft-deleted tickets in one call.
    pub async fn restore_many(&self, batch: &IdBatch) -> Result<(), ZendeskError> {
        let mut url = self.url("/api/v2/deleted_tickets/restore_many.json");
        url.query_pairs_mut().append_pair("ids", &batch.to_query());
        let call = Call {
            method: Method::PUT,
            url,
            endpoint: "restore_many",
            description: format!("PUT deleted_tickets/restore_many ({batch})"),
            class: EndpointClass::Other,
            sent_at: Default::default(),
        };
        self.send(&call).await.map(drop)
    }

    /// Permanently deletes one soft-deleted ticket; answers with its job.
    pub async fn destroy(&self, id: TicketId) -> Result<JobStatus, ZendeskError> {
        let call = Call {
            method: Method::DELETE,
            url: self.url(&format!("/api/v2/deleted_tickets/{id}.json")),
            endpoint: "destroy",
            description: format!("DELETE deleted_tickets/{id}"),
            class: EndpointClass::Other,
            sent_at: Default::default(),
        };
        self.json::<JobStatusEnvelope>(call)
            .await
            .map(|e| e.job_status)
    }

    /// Permanently deletes up to 100 soft-deleted tickets; answers with the
    /// queued job. A retry after a 429 re-sends the very same ids.
    pub async fn destroy_many(&self, batch: &IdBatch) -> Result<JobStatus, ZendeskError> {
        let call = self.destroy_many_call(batch, EndpointClass::Other);
        self.json::<JobStatusEnvelope>(call)
            .await
            .map(|e| e.job_status)
    }

    fn destroy_many_call(&self, batch: &IdBatch, class: EndpointClass) -> Call {
        let mut url = self.url("/api/v2/deleted_tickets/destroy_many.json");
        url.query_pairs_mut().append_pair("ids", &batch.to_query());
        Call {
            method: Method::DELETE,
            url,
            endpoint: "destroy_many",
            description: format!("DELETE deleted_tickets/destroy_many ({batch})"),
            class,
            sent_at: Default::default(),
        }
    }

    /// Waits until `n` purge requests may leave together, taking their
    /// account tokens now; then `destroy_many_now` sends each at once.
    pub async fn reserve_writes(&self, n: usize) {
        self.inner.pacer.reserve_writes(n).await;
    }

    /// How long Zendesk asked that no request be sent still (a spent account
    /// budget or a 429), if at all: checked right before prepaid sends.
    pub fn write_hold(&self) -> Option<Duration> {
        self.inner.pacer.write_hold()
    }

    /// `destroy_many` without any wait of its own: its account token was
    /// taken by `reserve_writes`. Also answers when the request was handed
    /// to the connection (`None`: it never was).
    pub async fn destroy_many_now(
        &self,
        batch: &IdBatch,
    ) -> (
        Option<tokio::time::Instant>,
        Result<JobStatus, ZendeskError>,
    ) {
        let call = self.destroy_many_call(batch, EndpointClass::Prepaid);
        let answer = self.send(&call).await.and_then(|body| {
            serde_json::from_slice::<JobStatusEnvelope>(&body)
                .map(|e| e.job_status)
                .map_err(|e| ZendeskError::Decode {
                    call: call.description.clone(),
                    reason: decode_reason(&e),
                    shape: body_shape(&body),
                })
        });
        (call.sent_at.get().copied(), answer)
    }

    /// One job's status.
    pub async fn job_status(&self, id: &JobId) -> Result<JobStatus, ZendeskError> {
        let call = Call {
            method: Method::GET,
            url: self.url(&format!("/api/v2/job_statuses/{id}.json")),
            endpoint: "job_status",
            description: format!("GET job_statuses/{id}"),
            class: EndpointClass::Other,
            sent_at: Default::default(),
        };
        self.json::<JobStatusEnvelope>(call)
            .await
            .map(|e| e.job_status)
    }

    /// Several jobs' statuses in one call per 100 ids. Jobs Zendesk no longer
    /// knows are simply absent from the answer.
    pub async fn job_statuses(&self, ids: &[JobId]) -> Result<Vec<JobStatus>, ZendeskError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let mut url = self.url("/api/v2/job_statuses/show_many.json");
            let joined = chunk
                .iter()
                .map(|j| j.0.as_str())
                .collect::<Vec<_>>()
                .join(",");
            url.query_pairs_mut().append_pair("ids", &joined);
            let call = Call {
                method: Method::GET,
                url,
                endpoint: "job_statuses",
                description: format!("GET job_statuses/show_many ({} ids)", chunk.len()),
                class: EndpointClass::Other,
                sent_at: Default::default(),
            };
            out.extend(self.json::<JobStatusesEnvelope>(call).await?.job_statuses);
        }
        Ok(out)
    }

    /// Which of `ids` are active tickets (`GET tickets/show_many`): a restored
    /// ticket is there; a purged one, or one still soft-deleted, is not.
    /// Together with the deleted view this tells purged from restored.
    pub async fn active_tickets(&self, batch: &IdBatch) -> Result<Vec<TicketId>, ZendeskError> {
        let mut url = self.url("/api/v2/tickets/show_many.json");
        url.query_pairs_mut().append_pair("ids", &batch.to_query());
        let call = Call {
            method: Method::GET,
            url,
            endpoint: "tickets_show_many",
            description: format!("GET tickets/show_many ({batch})"),
            class: EndpointClass::Other,
            sent_at: Default::default(),
        };
        let wanted: std::collections::HashSet<TicketId> = batch.ids().iter().copied().collect();
        Ok(self
            .json::<ActiveTicketsEnvelope>(call)
            .await?
            .tickets
            .into_iter()
            .map(|t| t.id)
            .filter(|id| wanted.contains(id))
            .collect())
    }

    /// Which of any number of ids are active tickets, in calls of 100.
    pub async fn active_among(
        &self,
        ids: &[TicketId],
    ) -> Result<std::collections::HashSet<TicketId>, ZendeskError> {
        let mut active = std::collections::HashSet::new();
        for batch in IdBatch::chunk(ids) {
            active.extend(self.active_tickets(&batch).await?);
        }
        Ok(active)
    }

    /// The token's user and role (`GET users/me`): a read-only credentials
    /// check.
    pub async fn current_user(&self) -> Result<CurrentUser, ZendeskError> {
        let call = Call {
            method: Method::GET,
            url: self.url("/api/v2/users/me.json"),
            endpoint: "users_me",
            description: "GET users/me".into(),
            class: EndpointClass::Other,
            sent_at: Default::default(),
        };
        self.json::<CurrentUserEnvelope>(call).await.map(|e| e.user)
    }

    /// One GET under pacing, without retries or status mapping: the status,
    /// the headers and the body, for `probe` to look at as they came.
    pub(crate) async fn get_raw(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(StatusCode, HeaderMap, Bytes), ZendeskError> {
        let mut url = self.url(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().copied());
        }
        let class = if path.contains("deleted_tickets") {
            EndpointClass::List
        } else {
            EndpointClass::Other
        };
        self.inner.pacer.acquire(class).await;
        let request = self.inner.http.get(url);
        let response = self
            .inner
            .auth
            .apply(request)
            .timeout(self.inner.retry.request_timeout)
            .send()
            .await
            .map_err(|e| ZendeskError::Transient {
                call: format!("GET {path}"),
                reason: describe_reqwest(&e, self.inner.retry.request_timeout),
                attempts: 1,
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        self.inner.pacer.observe(class, &headers);
        self.inner.pacer.stats.record(
            if class == EndpointClass::List {
                "list"
            } else {
                "probe"
            },
            status.as_u16(),
        );
        let body = response
            .bytes()
            .await
            .map_err(|e| ZendeskError::Transient {
                call: format!("GET {path}"),
                reason: describe_reqwest(&e, self.inner.retry.request_timeout),
                attempts: 1,
            })?;
        Ok((status, headers, body))
    }

    /// Sends a request and decodes its answer. A GET whose answer does not
    /// decode (a truncated body, an HTML error page with status 200) is sent
    /// again like a 5xx, a bounded number of times; a write is never re-sent
    /// for that, since it was carried out.
    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, ZendeskError> {
        let retry = self.inner.retry;
        let idempotent = call.method == Method::GET;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(retry.min_delay)
            .with_max_delay(retry.max_delay)
            .with_max_times(retry.max_retries)
            .with_jitter();
        (|| async {
            let body = self.send(&call).await?;
            serde_json::from_slice(&body).map_err(|e| ZendeskError::Decode {
                call: call.description.clone(),
                reason: decode_reason(&e),
                shape: body_shape(&body),
            })
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| idempotent && matches!(e, ZendeskError::Decode { .. }))
        .notify(|err, wait| {
            self.inner.pacer.stats.record_retry();
            metrics::counter!("zd_retention_retries_total", "endpoint" => call.endpoint, "reason" => err.kind()).increment(1);
            tracing::warn!(
                call = %call.description,
                reason = %err,
                wait = %crate::human::duration(round_ms(wait)),
                "retrying"
            );
        })
        .await
    }

    /// Sends one request under pacing, retrying 429s (after Retry-After) and
    /// transient failures (with exponential backoff and jitter).
    async fn send(&self, call: &Call) -> Result<Bytes, ZendeskError> {
        let retry = self.inner.retry;
        let attempts = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(retry.min_delay)
            .with_max_delay(retry.max_delay)
            .with_max_times(retry.max_retries)
            .with_jitter();
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.inner.pacer.acquire(call.class).await;
            self.attempt(call).await
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| e.is_retryable() && !call.caller_retries_transient())
        // Past the last retry `dur` is None and must stay None, or backon
        // would retry forever.
        .adjust(|err, dur| match (err, dur) {
            (_, None) => None,
            (ZendeskError::RateLimited { wait, .. }, Some(_)) => Some(*wait),
            (_, dur) => dur,
        })
        .notify(|err, wait| {
            self.inner.pacer.stats.record_retry();
            metrics::counter!("zd_retention_retries_total", "endpoint" => call.endpoint, "reason" => err.kind()).increment(1);
            tracing::warn!(
                call = %call.description,
                reason = %err,
                wait = %crate::human::duration(round_ms(wait)),
                "retrying"
            );
        })
        .await;
        result.map_err(|err| match err {
            ZendeskError::Transient { call, reason, .. } => ZendeskError::Transient {
                call,
                reason,
                attempts: attempts.load(Ordering::Relaxed),
            },
            other => other,
        })
    }

    async fn attempt(&self, call: &Call) -> Result<Bytes, ZendeskError> {
        let stats = &self.inner.pacer.stats;
        let transient = |reason: String| ZendeskError::Transient {
            call: call.description.clone(),
            reason,
            attempts: 1,
        };
        tracing::trace!(call = %call.description, "sending");
        // (set once: a purge is never sent twice through one call)
        let _ = call.sent_at.set(tokio::time::Instant::now());
        let request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone());
        let response = self
            .inner
            .auth
            .apply(request)
            .timeout(self.inner.retry.request_timeout)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                stats.record(call.endpoint, 0);
                self.inner.last_failed.store(true, Ordering::Relaxed);
                metrics::counter!("zd_retention_api_requests_total", "endpoint" => call.endpoint, "status" => "none").increment(1);
                return Err(transient(describe_reqwest(
                    &e,
                    self.inner.retry.request_timeout,
                )));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        self.inner.pacer.observe(call.class, &headers);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                stats.record(call.endpoint, 0);
                return Err(transient(format!(
                    "the answer ({status}) broke off: {}",
                    describe_reqwest(&e, self.inner.retry.request_timeout)
                )));
            }
        };
        stats.record(call.endpoint, status.as_u16());
        metrics::counter!("zd_retention_api_requests_total", "endpoint" => call.endpoint, "status" => status.as_str().to_string()).increment(1);
        let unreachable = status.is_server_error()
            || status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN;
        self.inner.last_failed.store(unreachable, Ordering::Relaxed);
        if status.is_success() {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body);
        let api_body = Box::new(ApiErrorBody::parse(&text));
        let call_name = call.description.clone();
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => {
                stats.record_rate_limited();
                metrics::counter!("zd_retention_rate_limited_total", "endpoint" => call.endpoint)
                    .increment(1);
                let wait = retry_after(&headers)
                    .unwrap_or_else(|| self.limits().account.window.min(Duration::from_secs(60)));
                self.inner.pacer.hold_account(wait);
                ZendeskError::RateLimited {
                    call: call_name,
                    wait,
                    body: api_body,
                }
            }
            StatusCode::UNAUTHORIZED => ZendeskError::Unauthorized {
                call: call_name,
                body: api_body,
            },
            StatusCode::FORBIDDEN => ZendeskError::Forbidden {
                call: call_name,
                body: api_body,
            },
            StatusCode::NOT_FOUND => ZendeskError::NotFound {
                call: call_name,
                body: api_body,
            },
            StatusCode::REQUEST_TIMEOUT => transient(format!("{status}: {api_body}")),
            s if s.is_server_error() => transient(format!("{status}: {api_body}")),
            s => ZendeskError::InvalidRequest {
                call: call_name,
                status: s.as_u16(),
                body: api_body,
            },
        })
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// `Retry-After` in seconds (fractions accepted) or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_seconds(text).or_else(|| {
        let at = httpdate::parse_http_date(text.trim()).ok()?;
        Some(
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(MAX_HEADER_WAIT),
        )
    })
}

/// A reqwest error in words, without the URL and never with headers.
fn describe_reqwest(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}", crate::human::duration(timeout));
    }
    let kind = if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut reason = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    reason
}

/// Status codes to `ZendeskError` variants, what is sent again and what is
/// not, and the waits a 429 carries; against wiremock.
#[cfg(test)]
mod status_tests {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::quota::RateQuota;

    const JOB: &str = r#"{"job_status": {"id": "J1", "status": "queued"}}"#;
    const PURGE: &str = "/api/v2/deleted_tickets/destroy_many.json";

    fn client(server: &MockServer, max_retries: usize) -> ZendeskClient {
        let quota = |window_ms| RateQuota::new(100, Duration::from_millis(window_ms)).unwrap();
        ZendeskClient::new(ClientConfig {
            base_url: Url::parse(&server.uri()).unwrap(),
            auth: Auth::ApiToken {
                email: "ops@acme.example".into(),
                token: SecretString::from("t"),
            },
            limits: RateLimits {
                list: quota(100),
                list_deep: quota(100),
                account: quota(250),
            },
            retry: RetryPolicy {
                max_retries,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                request_timeout: Duration::from_secs(5),
            },
        })
        .unwrap()
    }

    fn batch() -> IdBatch {
        IdBatch::new(vec![TicketId::new(1), TicketId::new(2)]).unwrap()
    }

    async fn requests(server: &MockServer) -> usize {
        server.received_requests().await.unwrap().len()
    }

    /// A purge answered `status` once (with `body`): what it comes back as.
    async fn purge_answered(status: u16, body: &str) -> (ZendeskError, usize) {
        let server = MockServer::start().await;
        Mock::given(method("DELETE"))
            .and(path(PURGE))
            .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
            .mount(&server)
            .await;
        // retries allowed: a purge is never sent twice by the client
        let e = client(&server, 3).destroy_many(&batch()).await.unwrap_err();
        (e, requests(&server).await)
    }

    #[tokio::test]
    async fn each_status_of_a_purge_maps_to_its_variant_and_is_sent_once() {
        let invalid = r#"{"error": "RecordInvalid", "description": "Record validation errors"}"#;
        for (status, body) in [
            (401, ""),
            (403, ""),
            (404, ""),
            (400, ""),
            (409, ""),
            (422, invalid),
        ] {
            let (e, sent) = purge_answered(status, body).await;
            assert_eq!(sent, 1, "{status}: {e}");
            assert!(!e.is_retryable(), "{status}");
            assert!(
                e.call().starts_with("DELETE deleted_tickets/destroy_many"),
                "{e}"
            );
            match (status, &e) {
                (401, ZendeskError::Unauthorized { .. })
                | (403, ZendeskError::Forbidden { .. })
                | (404, ZendeskError::NotFound { .. }) => {}
                (400 | 409 | 422, ZendeskError::InvalidRequest { status: s, .. }) => {
                    assert_eq!(*s, status)
                }
                _ => panic!("{status} came back as {e:?}"),
            }
            if status == 422 {
                let text = e.to_string();
                assert!(
                    text.contains("RecordInvalid") && text.contains("Record validation errors"),
                    "{text}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_purge_answered_5xx_or_408_is_transient_and_left_to_the_caller() {
        for status in [408, 500, 502, 503] {
            let (e, sent) = purge_answered(status, "<html>down</html>").await;
            assert_eq!(
                sent, 1,
                "{status}: the caller reads again before re-sending"
            );
            match e {
                ZendeskError::Transient {
                    attempts, reason, ..
                } => {
                    assert_eq!(attempts, 1, "{status}");
                    assert!(reason.starts_with(&status.to_string()), "{reason}");
                }
                other => panic!("{status} came back as {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_purge_answered_429_carries_its_retry_after_or_the_account_window() {
        let server = MockServer::start().await;
        Mock::given(method("DELETE"))
            .and(path(PURGE))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
            .mount(&server)
            .await;
        let c = client(&server, 3);
        match c.destroy_many(&batch()).await.unwrap_err() {
            ZendeskError::RateLimited { wait, .. } => assert_eq!(wait, Duration::from_secs(7)),
            other => panic!("{other:?}"),
        }
        assert_eq!(requests(&server).await, 1);
        // the account's requests are held off for the wait
        assert!(c.write_hold().is_some_and(|h| h > Duration::from_secs(6)));
        // without Retry-After: the account quota's window (250 ms here)
        let server = MockServer::start().await;
        Mock::given(method("DELETE"))
            .and(path(PURGE))
            .respond_with(ResponseTemplate::new(429))
            .mount(&server)
            .await;
        match client(&server, 3).destroy_many(&batch()).await.unwrap_err() {
            ZendeskError::RateLimited { wait, .. } => {
                assert_eq!(wait, Duration::from_millis(250))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_read_is_sent_again_after_5xx_a_bounded_number_of_times() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v2/job_statuses/J1.json"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v2/job_statuses/J1.json"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(JOB, "application/json"))
            .mount(&server)
            .await;
        let job = client(&server, 3)
            .job_status(&JobId("J1".into()))
            .await
            .unwrap();
        assert_eq!(job.id.0, "J1");
        assert_eq!(requests(&server).await, 3);
        // always 500: the first attempt and max_retries more, then given up
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        match client(&server, 2)
            .job_status(&JobId("J1".into()))
            .await
            .unwrap_err()
        {
            ZendeskError::Transient { attempts, .. } => assert_eq!(attempts, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(requests(&server).await, 3);
    }

    #[tokio::test]
    async fn an_undecodable_answer_is_read_again_but_never_a_purge_sent_again() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_raw("<html>oops</html>", "text/html"))
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(200).set_body_raw("{\"job_st", "application/json"))
            .mount(&server)
            .await;
        let c = client(&server, 2);
        let e = c.job_status(&JobId("J1".into())).await.unwrap_err();
        assert!(matches!(e, ZendeskError::Decode { .. }), "{e:?}");
        assert!(
            !e.to_string().contains("oops"),
            "the body's text stays out: {e}"
        );
        let gets = requests(&server).await;
        assert_eq!(gets, 3);
        let e = c.destroy_many(&batch()).await.unwrap_err();
        assert!(matches!(e, ZendeskError::Decode { .. }), "{e:?}");
        assert_eq!(requests(&server).await, gets + 1, "a purge is sent once");
    }

    #[tokio::test]
    async fn the_last_attempt_failed_for_5xx_and_refused_credentials_only() {
        let server = MockServer::start().await;
        let c = client(&server, 0);
        let answer = async |status: u16| {
            server.reset().await;
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(status).set_body_raw(JOB, "application/json"))
                .mount(&server)
                .await;
            let _ = c.job_status(&JobId("J1".into())).await;
            c.last_attempt_failed()
        };
        assert!(answer(503).await);
        assert!(!answer(404).await, "an answer, if not the one hoped for");
        assert!(answer(401).await);
        assert!(answer(403).await);
        assert!(!answer(200).await);
    }

    #[test]
    fn retry_after_reads_seconds_fractions_and_dates() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(with("3"), Some(Duration::from_secs(3)));
        assert_eq!(with("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(
            with("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "passed"
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(7200));
        assert_eq!(with(&later), Some(MAX_HEADER_WAIT), "capped");
        assert_eq!(with("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}

//! `probe`: what a real account does where Zendesk's documentation leaves a
//! behaviour open, found out with read requests only (never a write).
//!
//! It asks for the token's user and role, reads the first deleted-ticket
//! pages both ways under cursor and offset pagination, follows one cursor
//! link, asks `show_many` for a job id that cannot exist and the active
//! tickets for a deleted one, and notes the rate-limit headers it saw. The
//! findings are plain data; the command prints and stores them.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Serialize;

use super::client::ZendeskClient;
use super::error::ZendeskError;
use super::model::{JobStatusesEnvelope, RawDeletedTicketsPage, TicketId, body_shape};

/// How one listing reads `sort_by=deleted_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortFinding {
    /// Oldest-first and newest-first pages are each in order and differ.
    Honoured,
    /// The pages came in another order.
    Ignored,
    /// Too few tickets, equal times or a failed request: no conclusion.
    Inconclusive(String),
}

impl SortFinding {
    pub fn words(&self) -> String {
        match self {
            Self::Honoured => "honoured in both orders".into(),
            Self::Ignored => "ignored (pages not in deleted_at order)".into(),
            Self::Inconclusive(why) => format!("inconclusive: {why}"),
        }
    }
}

/// Everything `probe` found.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeFindings {
    pub base_url: String,
    pub probed_at: DateTime<Utc>,
    /// `ok` or what went wrong with `GET users/me`.
    pub credentials: String,
    pub role: Option<String>,
    /// The account's requests per minute, from `X-Rate-Limit` or
    /// `ratelimit-limit`.
    pub account_limit: Option<u64>,
    /// Names of the rate-limit headers that arrived.
    pub rate_limit_headers: Vec<String>,
    pub cursor_sort: SortFinding,
    /// Whether the second cursor page (from `links.next`) kept the order.
    pub cursor_later_page_in_order: Option<bool>,
    /// Whether `links.next` carries `sort_by` back.
    pub cursor_next_link_keeps_sort: Option<bool>,
    pub offset_sort: SortFinding,
    /// How `job_statuses/show_many` answers an id that does not exist.
    pub unknown_job_id: String,
    /// How `tickets/show_many` answers for a soft-deleted ticket.
    pub active_lookup: String,
    /// The view as seen: tickets on the first page, whether there are more,
    /// the oldest deletion's age in days (from a sorted first page).
    pub first_page_tickets: usize,
    pub more_pages: bool,
    /// Why the first listing request failed, if it did.
    pub listing_error: Option<String>,
    pub oldest_deletion_days: Option<f64>,
    /// Whether the newest-first page changed between two reads a moment
    /// apart (agents at work during a scan).
    pub view_changed_during_probe: Option<bool>,
    /// What the engine will do with this account, in words.
    pub advice: Vec<String>,
}

struct Page {
    page: RawDeletedTicketsPage,
}

impl Page {
    fn times(&self) -> Option<Vec<DateTime<Utc>>> {
        self.page
            .deleted_tickets
            .iter()
            .map(|t| t.deleted_at)
            .collect()
    }

    fn ids(&self) -> Vec<TicketId> {
        self.page.deleted_tickets.iter().map(|t| t.id).collect()
    }
}

async fn list_page(
    client: &ZendeskClient,
    query: &[(&str, &str)],
    headers_seen: &mut BTreeSet<String>,
    limit: &mut Option<u64>,
) -> Result<Page, String> {
    let (status, headers, body) = client
        .get_raw("/api/v2/deleted_tickets.json", query)
        .await
        .map_err(|e| e.to_string())?;
    note_headers(&headers, headers_seen, limit);
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    serde_json::from_slice::<RawDeletedTicketsPage>(&body)
        .map(|page| Page { page })
        .map_err(|_| format!("the page did not decode ({})", body_shape(&body)))
}

fn note_headers(headers: &HeaderMap, seen: &mut BTreeSet<String>, limit: &mut Option<u64>) {
    for name in headers.keys() {
        let n = name.as_str();
        if n.contains("rate-limit") || n.contains("ratelimit") || n == "retry-after" {
            seen.insert(n.to_string());
        }
    }
    for name in ["x-rate-limit", "ratelimit-limit"] {
        if let Some(v) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
        {
            limit.get_or_insert(v);
        }
    }
}

fn sort_finding(asc: &Result<Page, String>, desc: &Result<Page, String>) -> SortFinding {
    let (asc, desc) = match (asc, desc) {
        (Ok(a), Ok(d)) => (a, d),
        (Err(e), _) | (_, Err(e)) => return SortFinding::Inconclusive(e.clone()),
    };
    let (Some(a), Some(d)) = (asc.times(), desc.times()) else {
        return SortFinding::Inconclusive("a ticket has no readable deleted_at".into());
    };
    if a.len() < 2 || d.len() < 2 {
        return SortFinding::Inconclusive("fewer than two deleted tickets".into());
    }
    if a.first() == a.last() && d.first() == d.last() && a.first() == d.first() {
        return SortFinding::Inconclusive("every deletion time on the page is equal".into());
    }
    let asc_ok = a.windows(2).all(|w| w[0] <= w[1]);
    let desc_ok = d.windows(2).all(|w| w[0] >= w[1]);
    if asc_ok && desc_ok && a[0] < d[0] {
        SortFinding::Honoured
    } else {
        SortFinding::Ignored
    }
}

/// Probes the account behind `client` with read requests only.
pub async fn probe(client: &ZendeskClient) -> ProbeFindings {
    let mut headers_seen = BTreeSet::new();
    let mut limit = None;

    let (credentials, role) = match client.current_user().await {
        Ok(user) => ("ok".to_string(), user.role),
        Err(e @ (ZendeskError::Unauthorized { .. } | ZendeskError::Forbidden { .. })) => {
            (format!("refused: {e}"), None)
        }
        Err(e) => (format!("failed: {e}"), None),
    };
    if let Ok((_, headers, _)) = client.get_raw("/api/v2/users/me.json", &[]).await {
        note_headers(&headers, &mut headers_seen, &mut limit);
    }

    let cursor_query = |order| {
        [
            ("page[size]", "100"),
            ("sort_by", "deleted_at"),
            ("sort_order", order),
        ]
    };
    let cursor_asc = list_page(client, &cursor_query("asc"), &mut headers_seen, &mut limit).await;
    let cursor_desc = list_page(client, &cursor_query("desc"), &mut headers_seen, &mut limit).await;
    let cursor_sort = sort_finding(&cursor_asc, &cursor_desc);

    // the second cursor page, through links.next as a client follows it
    let (cursor_later_page_in_order, cursor_next_link_keeps_sort) = match &cursor_asc {
        Ok(first) => second_cursor_page(client, first, &mut headers_seen, &mut limit).await,
        Err(_) => (None, None),
    };

    let offset_query = |order| {
        [
            ("page", "1"),
            ("per_page", "100"),
            ("sort_by", "deleted_at"),
            ("sort_order", order),
        ]
    };
    let offset_asc = list_page(client, &offset_query("asc"), &mut headers_seen, &mut limit).await;
    let offset_desc = list_page(client, &offset_query("desc"), &mut headers_seen, &mut limit).await;
    let offset_sort = sort_finding(&offset_asc, &offset_desc);

    // the newest-first page read again: a different page means agents at work
    let view_changed_during_probe = match (
        &cursor_desc,
        list_page(client, &cursor_query("desc"), &mut headers_seen, &mut limit).await,
    ) {
        (Ok(a), Ok(b)) => Some(a.ids() != b.ids()),
        _ => None,
    };

    // the oldest deletion, from whichever listing sorts
    let oldest_page = match (&cursor_sort, &offset_sort) {
        (SortFinding::Honoured, _) => cursor_asc.as_ref().ok(),
        (_, SortFinding::Honoured) => offset_asc.as_ref().ok(),
        _ => None,
    };
    let now = Utc::now();
    let oldest_deletion_days = oldest_page
        .and_then(|p| p.page.deleted_tickets.first())
        .and_then(|t| t.deleted_at)
        .map(|d| ((now - d).num_seconds() as f64 / 86_400.0 * 10.0).round() / 10.0);
    let (first_page_tickets, more_pages) = match &cursor_asc {
        Ok(p) => (
            p.page.deleted_tickets.len(),
            p.page.meta.as_ref().is_some_and(|m| m.has_more),
        ),
        Err(_) => (0, false),
    };

    let unknown_job_id = unknown_job_answer(client, &mut headers_seen, &mut limit).await;
    let some_deleted = cursor_asc
        .as_ref()
        .ok()
        .and_then(|p| p.page.deleted_tickets.first())
        .map(|t| t.id);
    let active_lookup =
        active_lookup_answer(client, some_deleted, &mut headers_seen, &mut limit).await;

    let mut findings = ProbeFindings {
        base_url: client.base_url().to_string(),
        probed_at: now,
        credentials,
        role,
        account_limit: limit,
        rate_limit_headers: headers_seen.into_iter().collect(),
        cursor_sort,
        cursor_later_page_in_order,
        cursor_next_link_keeps_sort,
        offset_sort,
        unknown_job_id,
        active_lookup,
        first_page_tickets,
        more_pages,
        listing_error: cursor_asc.as_ref().err().cloned(),
        oldest_deletion_days,
        view_changed_during_probe,
        advice: Vec::new(),
    };
    findings.advice = advice_for(&findings);
    findings
}

/// What an operator should do about the findings. Pure.
fn advice_for(f: &ProbeFindings) -> Vec<String> {
    let mut advice = Vec::new();
    if f.credentials != "ok" {
        advice.push("fix the credentials first (zendesk.email, token_env or token_file)".into());
    }
    if !matches!(f.role.as_deref(), Some("admin") | None) {
        advice.push(format!(
            "the token's user is {:?}: an agent needs the \"view deleted tickets\" permission and may not delete for good",
            f.role.as_deref().unwrap_or("")
        ));
    }
    match &f.cursor_sort {
        SortFinding::Honoured => advice.push(
            "cursor listing sorts: runs with only age-based purge rules stop early (each run proves the order again)"
                .into(),
        ),
        SortFinding::Ignored => advice.push(
            "cursor listing ignores sort_by: every run scans the whole view (about 10 pages a minute)"
                .into(),
        ),
        SortFinding::Inconclusive(_) => advice.push(
            "cursor order unknown: each run proves it before stopping early, or scans everything"
                .into(),
        ),
    }
    if f.offset_sort != SortFinding::Honoured && f.cursor_sort != SortFinding::Honoured {
        advice.push(
            "no listing sorts by deleted_at: the freshness read before purging cannot be made, so nothing is purged; report this"
                .into(),
        );
    }
    if f.unknown_job_id.starts_with("the whole call fails") {
        advice.push(
            "show_many fails on an expired job id: jobs are then asked one by one, and each ends by job_timeout"
                .into(),
        );
    }
    if f.view_changed_during_probe == Some(true) {
        advice.push(
            "the view changed while probed: tickets listed twice are decided by their latest listing"
                .into(),
        );
    }
    advice
}

/// Follows the oldest-first cursor page's `links.next` as a client would:
/// whether the second page continues the order, and whether the link keeps
/// `sort_by`.
async fn second_cursor_page(
    client: &ZendeskClient,
    first: &Page,
    headers_seen: &mut BTreeSet<String>,
    limit: &mut Option<u64>,
) -> (Option<bool>, Option<bool>) {
    let Some(next) = first
        .page
        .meta
        .as_ref()
        .is_some_and(|m| m.has_more)
        .then(|| first.page.links.as_ref().and_then(|l| l.next.clone()))
        .flatten()
    else {
        return (None, None);
    };
    let Ok(url) = url::Url::parse(&next) else {
        return (None, None);
    };
    let keeps_sort = Some(url.query_pairs().any(|(k, _)| k == "sort_by"));
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let query: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut in_order = None;
    if let Ok(second) = list_page(client, &query, headers_seen, limit).await
        && let (Some(a), Some(b)) = (first.times(), second.times())
    {
        let joined: Vec<_> = a.iter().chain(b.iter()).collect();
        in_order = Some(joined.windows(2).all(|w| w[0] <= w[1]));
    }
    (in_order, keeps_sort)
}

/// How `job_statuses/show_many` answers an id that does not exist.
async fn unknown_job_answer(
    client: &ZendeskClient,
    headers_seen: &mut BTreeSet<String>,
    limit: &mut Option<u64>,
) -> String {
    match client
        .get_raw(
            "/api/v2/job_statuses/show_many.json",
            &[("ids", "0123456789abcdef0123456789abcdef")],
        )
        .await
    {
        Ok((status, headers, body)) => {
            note_headers(&headers, headers_seen, limit);
            match (status, serde_json::from_slice::<JobStatusesEnvelope>(&body)) {
                (StatusCode::OK, Ok(e)) if e.job_statuses.is_empty() => {
                    "left out of the answer (200)".to_string()
                }
                (StatusCode::OK, _) => "answered 200 with something unexpected".to_string(),
                (status, _) => format!("the whole call fails ({status})"),
            }
        }
        Err(e) => format!("failed: {e}"),
    }
}

/// Whether a soft-deleted ticket is told apart from active ones by
/// `tickets/show_many` (how outcomes of tickets gone from the view settle).
async fn active_lookup_answer(
    client: &ZendeskClient,
    some_deleted: Option<TicketId>,
    headers_seen: &mut BTreeSet<String>,
    limit: &mut Option<u64>,
) -> String {
    match some_deleted {
        None => "not tried (no deleted ticket to look up)".to_string(),
        Some(id) => match client
            .get_raw(
                "/api/v2/tickets/show_many.json",
                &[("ids", &id.to_string())],
            )
            .await
        {
            Ok((status, headers, body)) => {
                note_headers(&headers, headers_seen, limit);
                if status.is_success() {
                    match serde_json::from_slice::<serde_json::Value>(&body) {
                        Ok(v) if v["tickets"].as_array().is_some_and(|t| t.is_empty()) => {
                            "works (a soft-deleted ticket is not among the active ones)".into()
                        }
                        Ok(_) => "answered, but listed a soft-deleted ticket as active: outcomes of tickets gone from the view cannot be told apart".into(),
                        Err(_) => format!("did not decode ({})", body_shape(&body)),
                    }
                } else {
                    format!("refused ({status}): tickets gone from the view stay unsettled")
                }
            }
            Err(e) => format!("failed: {e}"),
        },
    }
}

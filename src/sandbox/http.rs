//! The sandbox's HTTP face: routing (with and without `.json`), credentials,
//! rate limits, faults, and the JSON of Zendesk's documented shapes, written
//! here by hand and not through the client's types.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::options::{CursorSort, SandboxAuth};
use super::state::{
    Budget, JobView, LoggedRequest, Position, Quotas, SandboxTicket, SortKey, State,
};

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
}

pub fn router(state: Arc<Mutex<State>>, addr: SocketAddr) -> Router {
    Router::new()
        .fallback(handle_dated)
        .with_state(Shared { state, addr })
}

/// Every answer carries Zendesk's clock in its `Date` header (offset by the
/// `clock_offset` option).
async fn handle_dated(
    AxumState(shared): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let offset = super::state::lock(&shared.state).options.clock_offset;
    let mut response = handle(AxumState(shared), method, uri, headers).await;
    let date = (chrono::Utc::now() + offset).format("%a, %d %b %Y %H:%M:%S GMT");
    if let Ok(value) = HeaderValue::from_str(&date.to_string()) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}

/// The seven endpoints.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    List,
    Restore(u64),
    RestoreMany,
    Destroy(u64),
    DestroyMany,
    JobStatus(String),
    JobStatuses,
    /// `GET /api/v2/tickets/show_many?ids=`: the active tickets among ids.
    TicketsShowMany,
    /// `GET /api/v2/users/me`: the token's user.
    UsersMe,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Self> {
        let path = path.strip_suffix(".json").unwrap_or(path);
        let rest = path.strip_prefix("/api/v2/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let route = match (method.as_str(), parts.as_slice()) {
            ("GET", ["deleted_tickets"]) => Self::List,
            ("PUT", ["deleted_tickets", "restore_many"]) => Self::RestoreMany,
            ("PUT", ["deleted_tickets", id, "restore"]) => Self::Restore(id.parse().ok()?),
            ("DELETE", ["deleted_tickets", "destroy_many"]) => Self::DestroyMany,
            ("DELETE", ["deleted_tickets", id]) => Self::Destroy(id.parse().ok()?),
            ("GET", ["job_statuses", "show_many"]) => Self::JobStatuses,
            ("GET", ["job_statuses", id]) => Self::JobStatus((*id).to_string()),
            ("GET", ["tickets", "show_many"]) => Self::TicketsShowMany,
            ("GET", ["users", "me"]) => Self::UsersMe,
            _ => return None,
        };
        Some(route)
    }

    fn label(&self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Restore(_) => "restore",
            Self::RestoreMany => "restore_many",
            Self::Destroy(_) => "destroy",
            Self::DestroyMany => "destroy_many",
            Self::JobStatus(_) => "job_status",
            Self::JobStatuses => "job_statuses",
            Self::TicketsShowMany => "tickets_show_many",
            Self::UsersMe => "users_me",
        }
    }
}

/// An answer before faults and headers.
struct Answer {
    status: StatusCode,
    body: String,
    content_type: &'static str,
    retry_after: Option<Duration>,
}

impl Answer {
    fn json(status: StatusCode, value: Value) -> Self {
        Self {
            status,
            body: value.to_string(),
            content_type: "application/json; charset=utf-8",
            retry_after: None,
        }
    }

    fn empty() -> Self {
        Self {
            status: StatusCode::OK,
            body: String::new(),
            content_type: "application/json; charset=utf-8",
            retry_after: None,
        }
    }

    fn not_found() -> Self {
        Self::json(
            StatusCode::NOT_FOUND,
            json!({"error": "RecordNotFound", "description": "Not found"}),
        )
    }

    fn too_many(wait: Duration) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: "<html><head><title>429 Too Many Requests</title></head><body><h1>Too Many Requests</h1><p>You have exceeded the rate limit. Retry after the time in the Retry-After header.</p></body></html>".into(),
            content_type: "text/html; charset=utf-8",
            retry_after: Some(wait),
        }
    }

    fn invalid(description: &str) -> Self {
        Self::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "RecordInvalid", "description": "Record validation errors", "details": {"ids": [{"description": description}]}}),
        )
    }

    fn bad_request(error: &str, description: &str) -> Self {
        Self::json(
            StatusCode::BAD_REQUEST,
            json!({"error": error, "description": description}),
        )
    }
}

/// What to do to an answer after the work is done.
#[derive(Clone, Copy, PartialEq)]
enum LateFault {
    None,
    Drop,
    Malformed,
}

/// Reset times as header text: whole seconds (rounded up) at Zendesk's own
/// speed; under compressed time, milliseconds as a fraction so that a client
/// can hold off exactly.
fn seconds_text(d: Duration, time_scale: f64) -> String {
    if time_scale == 1.0 {
        d.as_secs_f64().ceil().max(0.0).to_string()
    } else {
        format!("{:.3}", d.as_secs_f64())
    }
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn authorized(auth: &SandboxAuth, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let token = if let Some(b64) = value.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        // API tokens are sent as "{email}/token"; a bare password is refused
        // as Zendesk refuses it for API access.
        if !user.ends_with("/token") || user.len() <= "/token".len() {
            return false;
        }
        password.to_string()
    } else if let Some(bearer) = value.strip_prefix("Bearer ") {
        bearer.trim().to_string()
    } else {
        return false;
    };
    match auth {
        SandboxAuth::AnyToken => !token.is_empty(),
        SandboxAuth::Token(expected) => &token == expected,
    }
}

fn ids_param(query: &HashMap<String, String>) -> Result<Vec<u64>, Answer> {
    let Some(text) = query.get("ids") else {
        return Err(Answer::bad_request(
            "InvalidParameter",
            "ids is required: a comma-separated list of ticket ids",
        ));
    };
    let ids: Result<Vec<u64>, _> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<u64>())
        .collect();
    match ids {
        Ok(ids) if ids.is_empty() => Err(Answer::bad_request("InvalidParameter", "ids is empty")),
        Ok(ids) if ids.len() > 100 => Err(Answer::invalid(&format!(
            "at most 100 ids per request, got {}",
            ids.len()
        ))),
        Ok(ids) => Ok(ids),
        Err(_) => Err(Answer::bad_request(
            "InvalidParameter",
            "ids must be comma-separated integers",
        )),
    }
}

fn ticket_json(t: &SandboxTicket, base: &str) -> Value {
    json!({
        "id": t.id,
        "subject": t.subject,
        "actor": {"id": t.actor_id, "name": t.actor_name},
        "deleted_at": t.deleted_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "previous_state": t.previous_state,
        "description": "Generated by the zd-retention sandbox.",
        "url": format!("{base}/api/v2/deleted_tickets/{}.json", t.id),
    })
}

fn job_json(job: &JobView, base: &str) -> Value {
    json!({
        "id": job.id,
        "job_type": "BulkDeleteTicketsPermanently",
        "url": format!("{base}/api/v2/job_statuses/{}.json", job.id),
        "status": job.status,
        "total": job.total,
        "progress": job.progress,
        "message": job.message,
        "results": job.success.map(|s| json!({"success": s})),
    })
}

/// A cursor: the listing's order, the page number and the position of a
/// ticket, hex-encoded so that clients treat it as opaque.
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    sort: SortKey,
    descending: bool,
    page: u32,
    pos: Position,
}

impl Cursor {
    fn encode(&self) -> String {
        let text = format!(
            "v1|{}|{}|{}|{}|{}|{}",
            self.sort.as_str(),
            if self.descending { "desc" } else { "asc" },
            self.page,
            self.pos.millis,
            self.pos.id,
            self.pos.subject
        );
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(text: &str) -> Option<Self> {
        if !text.len().is_multiple_of(2) || !text.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
        let text = String::from_utf8(bytes?).ok()?;
        let parts: Vec<&str> = text.splitn(7, '|').collect();
        if parts.len() != 7 || parts[0] != "v1" {
            return None;
        }
        Some(Self {
            sort: SortKey::parse(parts[1])?,
            descending: parts[2] == "desc",
            page: parts[3].parse().ok()?,
            pos: Position {
                millis: parts[4].parse().ok()?,
                id: parts[5].parse().ok()?,
                subject: parts[6].to_string(),
            },
        })
    }
}

fn sort_params(query: &HashMap<String, String>) -> Result<(SortKey, bool), Answer> {
    let sort = match query.get("sort_by") {
        None => SortKey::Id,
        Some(s) => SortKey::parse(s).ok_or_else(|| {
            Answer::bad_request(
                "InvalidParameter",
                "sort_by must be id, subject or deleted_at",
            )
        })?,
    };
    let descending = match query.get("sort_order").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(Answer::bad_request(
                "InvalidParameter",
                "sort_order must be asc or desc",
            ));
        }
    };
    Ok((sort, descending))
}

/// A parsed listing request.
enum ListRequest {
    Cursor {
        sort: SortKey,
        descending: bool,
        size: usize,
        page: u32,
        after: Option<Position>,
        before: Option<Position>,
    },
    Offset {
        sort: SortKey,
        descending: bool,
        per_page: usize,
        page: usize,
    },
}

impl ListRequest {
    fn parse(query: &HashMap<String, String>, cursor_sort: CursorSort) -> Result<Self, Answer> {
        let (mut sort, mut descending) = sort_params(query)?;
        let cursor_style = query.keys().any(|k| k.starts_with("page["));
        if cursor_style {
            let size = match query.get("page[size]") {
                None => 100,
                Some(s) => s
                    .parse::<usize>()
                    .map_err(|_| {
                        Answer::bad_request(
                            "InvalidPaginationParameter",
                            "page[size] must be a positive integer",
                        )
                    })?
                    .clamp(1, 100),
            };
            let decode = |key: &str| -> Result<Option<Cursor>, Answer> {
                match query.get(key) {
                    None => Ok(None),
                    Some(text) => Cursor::decode(text).map(Some).ok_or_else(|| {
                        Answer::bad_request(
                            "InvalidPaginationParameter",
                            &format!("{key} is not a cursor this account issued"),
                        )
                    }),
                }
            };
            let after = decode("page[after]")?;
            let before = decode("page[before]")?;
            let mut page = 1;
            if let Some(c) = after.as_ref().or(before.as_ref()) {
                sort = c.sort;
                descending = c.descending;
                page = if after.is_some() {
                    c.page + 1
                } else {
                    c.page.saturating_sub(1).max(1)
                };
            }
            if cursor_sort == CursorSort::Ignore {
                // the profile where cursor listing reads `sort`, not `sort_by`
                sort = SortKey::Id;
                descending = false;
            }
            Ok(Self::Cursor {
                sort,
                descending,
                size,
                page,
                after: after.map(|c| c.pos),
                before: before.map(|c| c.pos),
            })
        } else {
            let per_page = match query.get("per_page") {
                None => 100,
                Some(s) => s
                    .parse::<usize>()
                    .map_err(|_| {
                        Answer::bad_request(
                            "InvalidPaginationParameter",
                            "per_page must be a positive integer",
                        )
                    })?
                    .clamp(1, 100),
            };
            let page = match query.get("page") {
                None => 1,
                Some(s) => s.parse::<usize>().ok().filter(|p| *p >= 1).ok_or_else(|| {
                    Answer::bad_request(
                        "InvalidPaginationParameter",
                        "page must be a positive integer",
                    )
                })?,
            };
            Ok(Self::Offset {
                sort,
                descending,
                per_page,
                page,
            })
        }
    }

    fn page_number(&self) -> u64 {
        match self {
            Self::Cursor { page, .. } => u64::from(*page),
            Self::Offset { page, .. } => *page as u64,
        }
    }
}

fn list_answer(state: &State, request: &ListRequest, base: &str) -> Answer {
    let list_url = |params: &[(&str, String)]| {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        format!("{base}/api/v2/deleted_tickets.json?{query}")
    };
    let keep_sort = state.cursor_sort() == CursorSort::Honour;
    match request {
        ListRequest::Cursor {
            sort,
            descending,
            size,
            page,
            after,
            before,
        } => {
            let (tickets, more) = match before {
                Some(pos) => {
                    let (mut t, more) = state.page(*sort, !descending, Some(pos), *size);
                    t.reverse();
                    (t, more)
                }
                None => state.page(*sort, *descending, after.as_ref(), *size),
            };
            let cursor = |t: &SandboxTicket, page: u32| {
                Cursor {
                    sort: *sort,
                    descending: *descending,
                    page,
                    pos: Position::of(t),
                }
                .encode()
            };
            let after_cursor = tickets.last().map(|t| cursor(t, *page));
            let before_cursor = tickets.first().map(|t| cursor(t, *page));
            let has_more = if before.is_some() { true } else { more };
            let sort_pairs = [
                ("sort_by", sort.as_str().to_string()),
                (
                    "sort_order",
                    if *descending { "desc" } else { "asc" }.to_string(),
                ),
            ];
            let link = |key: &str, c: &Option<String>| {
                c.as_ref().map(|c| {
                    let mut params = vec![(key, c.clone()), ("page[size]", size.to_string())];
                    if keep_sort {
                        params.extend(sort_pairs.iter().cloned());
                    }
                    list_url(&params)
                })
            };
            let next = if has_more {
                link("page[after]", &after_cursor)
            } else {
                None
            };
            let prev = if *page > 1 {
                link("page[before]", &before_cursor)
            } else {
                None
            };
            Answer::json(
                StatusCode::OK,
                json!({
                    "deleted_tickets": tickets.iter().map(|t| ticket_json(t, base)).collect::<Vec<_>>(),
                    "meta": {"has_more": has_more, "after_cursor": after_cursor, "before_cursor": before_cursor},
                    "links": {"next": next, "prev": prev},
                }),
            )
        }
        ListRequest::Offset {
            sort,
            descending,
            per_page,
            page,
        } => {
            let skip = (page - 1) * per_page;
            if skip >= 10_000 {
                return Answer::bad_request(
                    "InvalidPaginationParameter",
                    "Offset pagination is limited to the first 100 pages (10,000 records). Use cursor pagination instead.",
                );
            }
            let (tickets, count) = state.offset_page(*sort, *descending, skip, *per_page);
            let link = |p: usize| {
                list_url(&[
                    ("page", p.to_string()),
                    ("per_page", per_page.to_string()),
                    ("sort_by", sort.as_str().to_string()),
                    (
                        "sort_order",
                        if *descending { "desc" } else { "asc" }.to_string(),
                    ),
                ])
            };
            let next =
                (skip + per_page < count && skip + per_page < 10_000).then(|| link(page + 1));
            let prev = (*page > 1).then(|| link(page - 1));
            Answer::json(
                StatusCode::OK,
                json!({
                    "deleted_tickets": tickets.iter().map(|t| ticket_json(t, base)).collect::<Vec<_>>(),
                    "next_page": next,
                    "previous_page": prev,
                    "count": count,
                }),
            )
        }
    }
}

/// Does the work of a route that passed credentials and limits.
fn serve_route(
    state: &mut State,
    route: &Route,
    query: &HashMap<String, String>,
    list: Option<&ListRequest>,
    base: &str,
    now: Instant,
) -> (Answer, Vec<u64>) {
    match route {
        Route::List => {
            // agents at work between two pages (the churn profile, the script)
            state.before_list();
            state.churn();
            match list {
                Some(request) => (list_answer(state, request, base), vec![]),
                None => (
                    Answer::bad_request("InvalidParameter", "listing not understood"),
                    vec![],
                ),
            }
        }
        Route::UsersMe => (
            Answer::json(
                StatusCode::OK,
                json!({"user": {
                    "id": 1,
                    "url": format!("{base}/api/v2/users/1.json"),
                    "name": "Sandbox Admin",
                    "email": "admin@sandbox.example",
                    "role": "admin",
                    "active": true,
                }}),
            ),
            vec![],
        ),
        Route::TicketsShowMany => match ids_param(query) {
            Err(a) => (a, vec![]),
            Ok(ids) => {
                let tickets: Vec<Value> = state
                    .active_tickets(&ids)
                    .iter()
                    .map(|t| {
                        json!({
                            "id": t.id,
                            "url": format!("{base}/api/v2/tickets/{}.json", t.id),
                            "subject": t.subject,
                            "status": "open",
                            "requester_id": 20001,
                            "updated_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        })
                    })
                    .collect();
                (
                    Answer::json(
                        StatusCode::OK,
                        json!({"tickets": tickets, "count": tickets.len()}),
                    ),
                    vec![],
                )
            }
        },
        Route::Restore(id) => match state.restore(&[*id]) {
            Ok(()) => (Answer::empty(), vec![*id]),
            Err(_) => (Answer::not_found(), vec![*id]),
        },
        Route::RestoreMany => match ids_param(query) {
            Err(a) => (a, vec![]),
            Ok(ids) => match state.restore(&ids) {
                Ok(()) => (Answer::empty(), ids),
                Err(_) => (Answer::not_found(), ids),
            },
        },
        Route::Destroy(id) => destroy(state, vec![*id], base, now),
        Route::DestroyMany => match ids_param(query) {
            Err(a) => (a, vec![]),
            Ok(ids) => {
                state.before_destroy_many();
                destroy(state, ids, base, now)
            }
        },
        Route::JobStatus(id) => match state.job(id, now) {
            Some(job) => (
                Answer::json(StatusCode::OK, json!({"job_status": job_json(&job, base)})),
                vec![],
            ),
            None => (Answer::not_found(), vec![]),
        },
        Route::JobStatuses => {
            let Some(ids) = query.get("ids") else {
                return (
                    Answer::bad_request(
                        "InvalidParameter",
                        "ids is required: a comma-separated list of job status ids",
                    ),
                    vec![],
                );
            };
            let found: Vec<Option<JobView>> = ids
                .split(',')
                .filter(|id| !id.trim().is_empty())
                .map(|id| state.job(id.trim(), now))
                .collect();
            if state.options.strict_job_ids && found.iter().any(Option::is_none) {
                // the profile where an unknown or expired id fails the call
                return (Answer::not_found(), vec![]);
            }
            let jobs: Vec<Value> = found.iter().flatten().map(|j| job_json(j, base)).collect();
            (
                Answer::json(StatusCode::OK, json!({"job_statuses": jobs})),
                vec![],
            )
        }
    }
}

fn destroy(state: &mut State, ids: Vec<u64>, base: &str, now: Instant) -> (Answer, Vec<u64>) {
    if !ids.iter().any(|id| state.is_soft_deleted(*id)) {
        return (Answer::not_found(), ids);
    }
    if state.open_jobs() >= state.options.max_jobs {
        return (Answer::too_many(state.next_job_end(now)), ids);
    }
    let job = state.create_job(ids.clone(), now);
    (
        Answer::json(StatusCode::OK, json!({"job_status": job_json(&job, base)})),
        ids,
    )
}

async fn handle(
    AxumState(shared): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let now = Instant::now();
    // Links name the address the sandbox listens on, never the request's
    // Host header (which a client may set to anything).
    let base = format!("http://{}", shared.addr);
    let query = query_map(&uri);
    let route = Route::parse(&method, uri.path());

    let (answer, budget, late, slow, scale) = {
        let mut state = super::state::lock(&shared.state);
        state.advance(now);
        state.requests_seen += 1;
        let scale = state.options.time_scale;
        let label = route.as_ref().map_or("unknown", Route::label);
        let mut log = LoggedRequest {
            method: method.to_string(),
            endpoint: label.to_string(),
            status: 0,
            ids: vec![],
            fault: None,
            at: chrono::Utc::now(),
            job_id: None,
        };
        // the ids a write request carries, logged even when a fault answers it
        log.ids = match &route {
            Some(Route::Restore(id) | Route::Destroy(id)) => vec![*id],
            Some(Route::RestoreMany | Route::DestroyMany) => query
                .get("ids")
                .map(|t| t.split(',').filter_map(|i| i.trim().parse().ok()).collect())
                .unwrap_or_default(),
            _ => vec![],
        };
        let auth_revoked = state
            .faults()
            .reject_auth_after
            .is_some_and(|n| state.requests_seen > n);
        let mut budget = None;
        let mut late = LateFault::None;
        let mut slow = None;
        let answer = if !authorized(&state.options.auth, &headers) || auth_revoked {
            if auth_revoked {
                log.fault = Some("auth_revoked");
            }
            Answer::json(
                StatusCode::UNAUTHORIZED,
                json!({"error": "Couldn't authenticate you"}),
            )
        } else if let Some(route) = &route {
            let routed = answer_route(&mut state, route, &query, &base, now, &mut log);
            budget = routed.budget;
            late = routed.late;
            slow = routed.slow;
            routed.answer
        } else {
            Answer::json(
                StatusCode::NOT_FOUND,
                json!({"error": "InvalidEndpoint", "description": "Not found"}),
            )
        };
        log.status = if late == LateFault::Drop {
            0
        } else {
            answer.status.as_u16()
        };
        state.log.push(log);
        (answer, budget, late, slow, scale)
    };

    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }

    respond(answer, late, budget, scale)
}

/// What the sandbox answers a request on a known route, and how: the quota
/// it spent and the faults it plays.
struct Routed {
    answer: Answer,
    budget: Option<Budget>,
    late: LateFault,
    slow: Option<Duration>,
}

fn answer_route(
    state: &mut State,
    route: &Route,
    query: &HashMap<String, String>,
    base: &str,
    now: Instant,
    log: &mut LoggedRequest,
) -> Routed {
    let mut budget = None;
    let mut late = LateFault::None;
    let mut slow = None;
    let list = match route {
        Route::List => Some(ListRequest::parse(query, state.cursor_sort())),
        _ => None,
    };
    let answer = match list {
        Some(Err(answer)) => answer,
        list => {
            let list = list.and_then(Result::ok);
            let quotas = match &list {
                Some(l) if l.page_number() > 100 => Quotas::ListDeep,
                Some(_) => Quotas::List,
                None => Quotas::Account,
            };
            let spent = state.spend(quotas, now);
            let allowed = spent.allowed;
            let retry_after = spent.retry_after;
            budget = Some(spent);
            let mut faults = state.faults().clone();
            if !faults.endpoints.is_empty() && !faults.endpoints.iter().any(|e| e == route.label())
            {
                faults = super::options::Faults::default();
            }
            if !allowed {
                Answer::too_many(retry_after)
            } else if state.chance(faults.rate_limits) {
                log.fault = Some("rate_limit");
                Answer::too_many(Duration::from_secs(1))
            } else if state.chance(faults.server_errors) {
                log.fault = Some("server_error");
                let status = [
                    StatusCode::INTERNAL_SERVER_ERROR,
                    StatusCode::BAD_GATEWAY,
                    StatusCode::SERVICE_UNAVAILABLE,
                ][(state.requests_seen % 3) as usize];
                Answer {
                    status,
                    body: format!(
                        "<html><body><h1>{status}</h1><p>Something went wrong (sandbox fault).</p></body></html>"
                    ),
                    content_type: "text/html; charset=utf-8",
                    retry_after: None,
                }
            } else {
                if state.chance(faults.slow) {
                    log.fault = Some("slow");
                    slow = Some(faults.slow_delay);
                }
                let (answer, ids) = serve_route(state, route, query, list.as_ref(), base, now);
                if !ids.is_empty() {
                    log.ids = ids;
                }
                if matches!(route, Route::Destroy(_) | Route::DestroyMany)
                    && answer.status == StatusCode::OK
                {
                    log.job_id = serde_json::from_str::<Value>(&answer.body)
                        .ok()
                        .and_then(|v| v["job_status"]["id"].as_str().map(str::to_string));
                }
                if answer.status == StatusCode::OK {
                    if state.chance(faults.drops) {
                        log.fault = Some("drop");
                        late = LateFault::Drop;
                    } else if state.chance(faults.malformed) {
                        log.fault = Some("malformed");
                        late = LateFault::Malformed;
                    }
                }
                answer
            }
        }
    };
    Routed {
        answer,
        budget,
        late,
        slow,
    }
}

/// The HTTP response for an answer: a late fault cuts its body; the rate
/// limit headers tell the quota spent.
fn respond(answer: Answer, late: LateFault, budget: Option<Budget>, scale: f64) -> Response {
    let body = match late {
        LateFault::None => Body::from(answer.body),
        LateFault::Malformed => {
            // cut as bytes: the body may hold multi-byte characters
            let mut bytes = answer.body.into_bytes();
            bytes.truncate(bytes.len() / 2);
            bytes.extend_from_slice(b"<!-- truncated");
            Body::from(bytes)
        }
        LateFault::Drop => {
            let head = answer.body.as_bytes()[..answer.body.len() / 3].to_vec();
            Body::from_stream(futures::stream::iter(vec![
                Ok(bytes::Bytes::from(head)),
                Err(std::io::Error::other("sandbox fault: connection dropped")),
            ]))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = answer.status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    if let Some(wait) = answer.retry_after {
        // Whole seconds, at least 1, whatever the time scale: HTTP's
        // delta-seconds, and clients (zenpy) parse it with int() and stop
        // waiting at 0.
        set(
            "retry-after",
            (wait.as_secs_f64().ceil() as u64).max(1).to_string(),
        );
    }
    if let Some(budget) = budget {
        let (limit, remaining, reset) = budget.account;
        set("x-rate-limit", limit.to_string());
        set("x-rate-limit-remaining", remaining.to_string());
        set("ratelimit-limit", limit.to_string());
        set("ratelimit-remaining", remaining.to_string());
        set("ratelimit-reset", seconds_text(reset, scale));
        if let Some((total, remaining, resets)) = budget.endpoint {
            set(
                "zendesk-rate-limit-deleted-tickets-index",
                format!(
                    "total={total}; remaining={remaining}; resets={}",
                    seconds_text(resets, scale)
                ),
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            sort: SortKey::Subject,
            descending: true,
            page: 7,
            pos: Position {
                millis: -5,
                id: 42,
                subject: "a|b".into(),
            },
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode("abc"), None);
    }

    #[test]
    fn routes_with_and_without_json_suffix() {
        assert_eq!(
            Route::parse(&Method::GET, "/api/v2/deleted_tickets.json"),
            Some(Route::List)
        );
        assert_eq!(
            Route::parse(&Method::GET, "/api/v2/deleted_tickets"),
            Some(Route::List)
        );
        assert_eq!(
            Route::parse(&Method::DELETE, "/api/v2/deleted_tickets/destroy_many.json"),
            Some(Route::DestroyMany)
        );
        assert_eq!(
            Route::parse(&Method::DELETE, "/api/v2/deleted_tickets/12.json"),
            Some(Route::Destroy(12))
        );
        assert_eq!(
            Route::parse(&Method::PUT, "/api/v2/deleted_tickets/12/restore"),
            Some(Route::Restore(12))
        );
        assert_eq!(
            Route::parse(&Method::GET, "/api/v2/job_statuses/V3-abc.json"),
            Some(Route::JobStatus("V3-abc".into()))
        );
        assert_eq!(Route::parse(&Method::POST, "/api/v2/deleted_tickets"), None);
    }
}

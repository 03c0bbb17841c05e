//! Zendesk's JSON for deleted tickets and job statuses, decoded leniently.
//!
//! Only this module (with the rest of `zendesk/`) knows the wire shapes. Real
//! answers carry fields the documentation omits, leave documented ones null,
//! and write dates in two forms; everything here accepts that and ignores
//! what it does not know. Nothing here does IO.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ticket::{Actor, Ticket};

/// A Zendesk ticket id.
pub use crate::ids::TicketId;

/// A soft-deleted ticket as `GET /api/v2/deleted_tickets` lists it; the
/// client hands on the domain `Ticket` made from it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct WireTicket {
    pub id: TicketId,
    /// Null on real pages for tickets created without one.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub actor: Option<WireActor>,
    /// `None` when Zendesk sent none or a form we cannot read.
    #[serde(default, deserialize_with = "lenient_time")]
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub previous_state: Option<String>,
}

/// Who deleted the ticket, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct WireActor {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
}

impl From<WireTicket> for Ticket {
    fn from(t: WireTicket) -> Self {
        Ticket {
            id: t.id,
            subject: without_nul(t.subject),
            actor: t.actor.map(|a| Actor {
                id: a.id,
                name: without_nul(a.name),
            }),
            deleted_at: t.deleted_at,
            previous_state: without_nul(t.previous_state),
        }
    }
}

/// Listed text as every audit backend stores it: a NUL character (which
/// JSON may carry, SQLite stores and PostgreSQL refuses in text) is read as
/// U+FFFD, the replacement character. Left as it was, one agent's subject
/// failed every write of the cycle that listed it on PostgreSQL.
fn without_nul(text: Option<String>) -> Option<String> {
    text.map(|t| {
        if t.contains('\0') {
            t.replace('\0', "\u{FFFD}")
        } else {
            t
        }
    })
}

/// Parses `deleted_at` in RFC 3339 or the reference's basic form
/// (`20140704T15:37:04Z`).
pub fn parse_zendesk_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y%m%dT%H:%M:%SZ",
        "%Y%m%dT%H%M%SZ",
        "%Y-%m-%d %H:%M:%S UTC",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    None
}

fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    Ok(text.as_deref().and_then(parse_zendesk_time))
}

/// One page of the deleted-tickets listing, in either pagination style.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawDeletedTicketsPage {
    #[serde(default)]
    pub deleted_tickets: Vec<WireTicket>,
    #[serde(default)]
    pub meta: Option<CursorMeta>,
    #[serde(default)]
    pub links: Option<CursorLinks>,
    /// Offset pagination.
    #[serde(default)]
    pub next_page: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct CursorMeta {
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub after_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct CursorLinks {
    #[serde(default)]
    pub next: Option<String>,
}

/// A background job's id: opaque, 32 hex characters, sometimes `V3-` first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's state. Unknown values are kept, never a decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Working,
    Completed,
    Failed,
    Killed,
    Other(String),
}

impl JobState {
    /// Completed, failed and killed jobs never change again.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Killed)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Working => "working",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::Other(s) => s,
        }
    }
}

impl From<&str> for JobState {
    fn from(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "working" => Self::Working,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "killed" => Self::Killed,
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        Ok(JobState::from(s.as_deref().unwrap_or("unknown")))
    }
}

impl Serialize for JobState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A job's `results`: null while queued, `{"success": bool}` for permanent
/// deletion, an array of per-item results for other bulk jobs.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum JobResults {
    #[default]
    Pending,
    Success(bool),
    Items(Vec<JobItemResult>),
    /// A shape we do not know, kept for the operator.
    Unrecognised(serde_json::Value),
}

/// One entry of an array of job results.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct JobItemResult {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for JobResults {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(match value {
            serde_json::Value::Null => Self::Pending,
            serde_json::Value::Object(ref map) => match map.get("success") {
                Some(serde_json::Value::Bool(b)) => Self::Success(*b),
                _ => Self::Unrecognised(value),
            },
            serde_json::Value::Array(_) => match serde_json::from_value(value.clone()) {
                Ok(items) => Self::Items(items),
                Err(_) => Self::Unrecognised(value),
            },
            other => Self::Unrecognised(other),
        })
    }
}

impl JobResults {
    /// Whether every part of the job succeeded, when the job says so.
    pub fn succeeded(&self) -> Option<bool> {
        match self {
            Self::Success(b) => Some(*b),
            Self::Items(items) => Some(items.iter().all(|i| i.success.unwrap_or(false))),
            Self::Pending | Self::Unrecognised(_) => None,
        }
    }
}

/// A background job, as `destroy_many` and `job_statuses` answer it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub status: JobState,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub progress: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub results: JobResults,
}

impl Default for JobState {
    fn default() -> Self {
        Self::Other("unknown".into())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobStatusEnvelope {
    pub job_status: JobStatus,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobStatusesEnvelope {
    #[serde(default)]
    pub job_statuses: Vec<JobStatus>,
}

/// An error body: JSON in one of Zendesk's two styles, or raw text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiErrorBody {
    pub error: Option<String>,
    pub description: Option<String>,
    pub details: Option<serde_json::Value>,
    pub errors: Vec<ApiErrorItem>,
    /// The body as received (shortened), for bodies that are not JSON.
    pub raw: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApiErrorItem {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Deserialize)]
struct RawApiError {
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    details: Option<serde_json::Value>,
    #[serde(default)]
    errors: Option<Vec<ApiErrorItem>>,
}

/// The first characters of a body, safe to print on one line.
pub fn snippet(body: &str, max: usize) -> String {
    let flat: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if body.chars().count() > max {
        format!("{flat}…")
    } else {
        flat
    }
}

impl ApiErrorBody {
    pub fn parse(body: &str) -> Self {
        let raw = snippet(body.trim(), 300);
        match serde_json::from_str::<RawApiError>(body) {
            Ok(parsed) => Self {
                error: parsed.error.map(|e| match e {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                }),
                description: parsed.description,
                details: parsed.details,
                errors: parsed.errors.unwrap_or_default(),
                raw,
            },
            Err(_) => Self {
                raw,
                ..Self::default()
            },
        }
    }
}

impl fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(e) = &self.error {
            parts.push(e.clone());
        }
        if let Some(d) = &self.description {
            parts.push(d.clone());
        }
        if let Some(d) = &self.details {
            parts.push(d.to_string());
        }
        for item in &self.errors {
            parts.push(
                [item.code.as_deref(), item.title.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            );
        }
        if parts.is_empty() {
            if self.raw.is_empty() {
                f.write_str("(empty body)")
            } else {
                write!(f, "{:?}", self.raw)
            }
        } else {
            f.write_str(&one_line(&parts.join(" - ")))
        }
    }
}

/// A remote text on one line: control characters and line separators
/// escaped, so that an answer cannot forge lines of our log.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The reason a body failed to decode, without any of its content (serde's
/// own messages quote values, such as a name).
pub fn decode_reason(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Eof => "the JSON ends early",
        serde_json::error::Category::Data => "a value of an unexpected type",
        serde_json::error::Category::Io => "a read error",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// What a body looks like, without quoting it.
pub fn body_shape(body: &[u8]) -> String {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let looks = match first {
        None => "empty",
        Some(b'{') | Some(b'[') => "JSON",
        Some(b'<') => "HTML or XML",
        Some(_) => "text",
    };
    format!("the body ({} bytes) looks like {looks}", body.len())
}

/// One active ticket of `GET /api/v2/tickets/show_many`: only its id is read.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActiveTicket {
    pub id: TicketId,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActiveTicketsEnvelope {
    /// Required: an answer without it says nothing about which are active,
    /// and must not be read as "none".
    pub tickets: Vec<ActiveTicket>,
}

/// The token's user, from `GET /api/v2/users/me`: no name or email is kept.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CurrentUser {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CurrentUserEnvelope {
    pub user: CurrentUser,
}

/// Decodes a listing page's tickets, as the client does; for fuzzing and
/// tools.
pub fn decode_deleted_tickets(body: &[u8]) -> Result<Vec<Ticket>, serde_json::Error> {
    serde_json::from_slice::<RawDeletedTicketsPage>(body)
        .map(|p| p.deleted_tickets.into_iter().map(Ticket::from).collect())
}

/// Decodes a `{"job_status": ...}` answer.
pub fn decode_job_status(body: &[u8]) -> Result<JobStatus, serde_json::Error> {
    serde_json::from_slice::<JobStatusEnvelope>(body).map(|e| e.job_status)
}

/// Decodes a `{"job_statuses": [...]}` answer.
pub fn decode_job_statuses(body: &[u8]) -> Result<Vec<JobStatus>, serde_json::Error> {
    serde_json::from_slice::<JobStatusesEnvelope>(body).map(|e| e.job_statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_in_listed_text_is_read_as_the_replacement_character() {
        let wire: WireTicket = serde_json::from_str(
            r#"{"id": 7, "subject": "a\u0000b", "actor": {"id": 1, "name": "\u0000"}, "previous_state": "clo\u0000sed", "deleted_at": "2026-11-01T00:00:00Z"}"#,
        )
        .unwrap();
        let ticket = Ticket::from(wire);
        assert_eq!(ticket.subject.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(
            ticket.actor.and_then(|a| a.name).as_deref(),
            Some("\u{FFFD}")
        );
        assert_eq!(ticket.previous_state.as_deref(), Some("clo\u{FFFD}sed"));
    }

    #[test]
    fn an_error_body_cannot_forge_log_lines() {
        let body = ApiErrorBody::parse(
            r#"{"error": "RecordInvalid", "description": "bad\n2026-11-29T00:00:00Z  INFO run completed purged=0\r\u2028x"}"#,
        );
        let text = body.to_string();
        assert!(
            !text.contains('\n') && !text.contains('\r') && !text.contains('\u{2028}'),
            "{text}"
        );
        assert!(
            text.contains("RecordInvalid") && text.contains("\\n2026"),
            "{text}"
        );
    }
}

//! `ZendeskError`: what a call to Zendesk can end in, for callers that branch.
//!
//! Every variant names the call that failed (`call`), never the credentials:
//! the token lives in a header that no message here ever prints.

use std::time::Duration;

use super::model::ApiErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ZendeskError {
    #[error("{call}: rate limited by Zendesk (429), retry after {}; the request was not carried out: {body}", crate::human::duration(*wait))]
    RateLimited {
        call: String,
        wait: Duration,
        body: Box<ApiErrorBody>,
    },
    #[error("{call}: not found (404): {body}")]
    NotFound {
        call: String,
        body: Box<ApiErrorBody>,
    },
    #[error(
        "{call}: unauthorized (401): Zendesk refused the credentials; check the email and the API token (or OAuth token) in the config: {body}"
    )]
    Unauthorized {
        call: String,
        body: Box<ApiErrorBody>,
    },
    #[error(
        "{call}: forbidden (403): the user lacks a permission; deleted tickets need an agent with \"view deleted tickets\", OAuth needs the tickets:write scope: {body}"
    )]
    Forbidden {
        call: String,
        body: Box<ApiErrorBody>,
    },
    #[error("{call}: invalid request ({status}): {body}")]
    InvalidRequest {
        call: String,
        status: u16,
        body: Box<ApiErrorBody>,
    },
    #[error("{call}: transient failure, gave up after {attempts} attempt(s): {reason}")]
    Transient {
        call: String,
        reason: String,
        attempts: u32,
    },
    /// The answer's text is never part of the message: a listing holds
    /// subjects, names and descriptions, which must not reach a log or the
    /// audit unless the operator asked for subjects.
    #[error("{call}: could not decode Zendesk's answer ({reason}); {shape}")]
    Decode {
        call: String,
        reason: String,
        /// What the body looked like, without its content.
        shape: String,
    },
    #[error("{call}: refused: {reason}")]
    Refused { call: String, reason: String },
}

impl ZendeskError {
    /// Errors that another attempt of the same request may cure.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient { .. })
    }

    pub fn call(&self) -> &str {
        match self {
            Self::RateLimited { call, .. }
            | Self::NotFound { call, .. }
            | Self::Unauthorized { call, .. }
            | Self::Forbidden { call, .. }
            | Self::InvalidRequest { call, .. }
            | Self::Transient { call, .. }
            | Self::Decode { call, .. }
            | Self::Refused { call, .. } => call,
        }
    }

    /// A short kind name for logs and the audit store.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::NotFound { .. } => "not_found",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Transient { .. } => "transient",
            Self::Decode { .. } => "decode",
            Self::Refused { .. } => "refused",
        }
    }
}

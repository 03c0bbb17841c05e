//! Everything that speaks to Zendesk: the client, its wire types, its errors
//! and its pacing. Only this module knows Zendesk's JSON.

pub mod batch;
pub mod client;
pub mod error;
pub mod model;
pub mod pacing;
pub mod probe;

pub use batch::{IdBatch, IdBatchError, MAX_IDS_PER_BATCH};
pub use client::{
    Auth, ClientConfig, DeletedTicketsPage, ListOptions, Pagination, Resume, RetryPolicy, SortBy,
    SortOrder, ZendeskClient, check_base_url, subdomain_url,
};
pub use error::ZendeskError;
pub use model::{ApiErrorBody, JobId, JobResults, JobState, JobStatus, TicketId};
pub use pacing::{ClientStatsSnapshot, RateLimits};

//! zd-retention: enforces retention rules on Zendesk's soft-deleted tickets.
//!
//! See ARCHITECTURE.md for the code map and the invariants that hold it
//! together.

pub mod quota;
pub mod sandbox;
pub mod zendesk;
pub mod config;
pub mod rules;
pub mod cli;
pub mod telemetry;

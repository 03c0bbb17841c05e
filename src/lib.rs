//! zd-retention: enforces retention rules on Zendesk's soft-deleted tickets.
//!
//! See ARCHITECTURE.md for the code map and the invariants that hold it
//! together.

pub mod cli;
pub mod config;
pub mod quota;
pub mod rules;
pub mod sandbox;
pub mod telemetry;
pub mod zendesk;

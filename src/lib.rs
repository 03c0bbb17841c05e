//! zd-retention: enforces retention rules on Zendesk's soft-deleted tickets.
//!
//! See ARCHITECTURE.md for the code map and the invariants that hold it
//! together.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod demo;
pub mod evidence;
pub mod human;
pub mod listing;
pub mod manual;
pub mod quota;
pub mod report;
pub mod rules;
pub mod sandbox;
pub mod server;
pub mod telemetry;
pub mod writer_lock;
pub mod zendesk;

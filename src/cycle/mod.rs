//! The purge cycle: list, decide, record, purge, follow jobs, settle.
//!
//! `run_cycle` is one plain function that the scheduler, `once`, the demo
//! and the tests call. It talks to Zendesk only through the client and to
//! SQLite only through the audit store, and it writes ahead: the decisions
//! and a batch are committed before the batch's `destroy_many` is sent, and
//! the job id as soon as the answer arrives.

mod check;
mod context;
mod run;
mod scan;
mod send;
mod settle;
mod worker;

pub use crate::audit::{RunStatus, Trigger};
pub use check::CheckProgress;
pub(crate) use context::clock_trusted;
pub use context::{CycleContext, CycleReport, CycleSettings, SafetyRequests};
pub use run::run_cycle;
pub(crate) use scan::decision_record;
pub(crate) use worker::{ListedAs, Release, send_and_follow};

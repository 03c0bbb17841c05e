//! The purge cycle, one file per stage: choose the step (`step`), list and
//! decide (`scan`), purge (`worker`, `send`), follow jobs (`follow`), settle
//! (`settle`, and across runs `check`). `context` is what every stage is
//! given, `handover` what the listing hands the purge worker, and `run`
//! calls the stages in order.
//!
//! `run_cycle` is one plain function that the scheduler, `once`, the demo
//! and the tests call. It talks to Zendesk only through the client and to
//! SQLite only through the audit store, and it writes ahead: the decisions
//! and a batch are committed before the batch's `destroy_many` is sent, and
//! the job id as soon as the answer arrives.

mod check;
mod context;
mod follow;
mod handover;
mod run;
mod scan;
mod send;
mod settle;
mod step;
mod worker;

pub use crate::audit::{RunStatus, Trigger};
pub(crate) use context::clock_trusted;
#[cfg(test)]
pub(crate) use context::test_support;
pub use context::{CheckProgress, CycleContext, CycleReport, CycleSettings, SafetyRequests};
pub(crate) use handover::{ListedAs, Release};
pub use run::run_cycle;
pub(crate) use scan::decision_record;
pub(crate) use worker::send_and_follow;

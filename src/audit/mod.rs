//! The audit store: runs, decisions, jobs and outcomes in SQLite (WAL) or
//! PostgreSQL, through sqlx's `Any` driver in the SQL both accept.
//!
//! The only module that knows SQL. Writes that precede a request to Zendesk
//! are committed (SQLite: synchronous = FULL) before the caller sends it:
//! decisions and the batch first, the job id as soon as the answer arrives.
//! On PostgreSQL every write transaction is the lead's (`lead`, checked in
//! `store::begin_write`). Subjects are stored only when the config says so.
//!
//! Its files, from the bottom up (each imports by name, only from those
//! below it): `kinds` (the closed vocabularies), `keys` (the signing keys)
//! and `connect` (drivers, PostgreSQL URLs shown without a password);
//! `lead` (one active writer across nodes); `store` (the store, its
//! backend, its file, times and ids); `records` (what is recorded and read
//! back); `chain` (the hash chain's tables, digests and appends); `heads`
//! (the chain heads each commit records); `ledger` (the ticket ledger);
//! `verify`, `signing` (checking the chain and its signed heads); `open`
//! (opening and upgrading SQLite), `postgres` (opening PostgreSQL),
//! `migrate` (a history copied from one to the other); `writes`,
//! `queries`, `evidence_queries`, `checks` (the writers and readers). This
//! file only declares them and names what the rest of the crate uses.

mod chain;
mod checks;
mod connect;
mod encode;
mod evidence_queries;
mod heads;
mod keys;
mod kinds;
mod lead;
mod ledger;
mod migrate;
mod open;
mod postgres;
mod queries;
mod records;
mod signing;
mod store;
mod verify;
mod writes;

pub use checks::{LatencySummary, RequestLatency, ViewCheck};
pub use connect::{install_drivers, redacted as redacted_url};
pub use encode::MAX_TICKET_ID;
pub use evidence_queries::{
    ConfigVersion, DayRuleCount, DayStatusCount, IN_DOUBT_DETAIL, KeptCount, OpenOutcome,
    PURGES_OF_PERIOD_SQL, PurgeListing, PurgeScope, PurgedTicket, RunOriginRow, SendWindows,
};
pub use heads::ChainHead;
pub use keys::{ChainSigner, ChainVerifier};
pub use kinds::{
    DecisionKind, JobRowStatus, Outcome, RequestKind, RunStatus, ScanKind, StepKind, Stored,
    StoredScan, StoredStep, TextEnum, Trigger,
};
pub use lead::Lead;
pub use ledger::{LEDGER_CHUNK, LedgerEntry, LedgerState, ListingMarks, Sighting, Unsettled};
pub(crate) use open::create_private;
pub use open::newest_schema;
pub use records::{
    DayRuns, DecisionRecord, JobRow, RunCounts, RunOrigin, RunRow, SearchFilter, SearchRow,
    StatRow, TicketEvent, WITHDRAWN_NARROWED, parse_ids,
};
pub use signing::SignatureReport;
pub use store::{AuditStore, Backend, JobRowId, RunId, timestamp};
pub use verify::ChainReport;
pub use writes::requests_recorded;

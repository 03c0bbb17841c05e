//! The output layer: everything the commands show. Commands gather (through
//! the store, the client or the engine) and hand what they got to one
//! function here, which returns the text they write; evidence documents are
//! written by streaming their purged tickets into a mark. Knows neither the
//! command line nor SQL.
//!
//! - `rows`: run summaries, plans, probe findings; rows as a table, JSON or
//!   CSV.
//! - `audit`: each `audit` query's answer.
//! - `escape`: text made safe for HTML and Markdown.
//! - `stream`: the mark where a document's purged tickets go, each row's
//!   style, and the streaming writer.
//! - `document`: certificates as text, reports as Markdown, the sentences
//!   the pages share.
//! - `html`: the pages, through askama's templates in `templates/`.

mod audit;
mod document;
mod escape;
mod html;
mod rows;
mod stream;

pub use audit::{
    ExportWriter, RunDetails, Verification, chain_head, config_version, keygen_written, ledger,
    run_details, runs_table, search_table, stats_by_day, stats_rows, ticket_history, verify_result,
};
pub use document::{certificate_text, report_markdown};
pub use html::{certificate_html, report_html};
pub use rows::{
    ListedTicketRow, TableFormat, csv_rows, id_results, ledger_diff, listed_tickets, plan,
    probe_table, rows_text, summary,
};
pub use stream::{RowStyle, json_document, write_document};

//! Evidence for people who sign off: a deletion certificate per run and a
//! report per period, as text, JSON, Markdown or one self-contained HTML
//! page (no script, font or image from elsewhere; inline SVG charts; prints
//! on A4). Gathers through the audit store's queries and knows no SQL.
//!
//! Every figure a page shows carries a `data-figure` attribute, so that a
//! browser test can compare what a person reads with the audit queries.

use crate::ids::RunId;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{
    AuditStore, ChainHead, ChainReport, ChainVerifier, ConfigVersion, DayRuleCount, DayStatusCount,
    KeptCount, OpenOutcome, PURGES_OF_PERIOD_SQL, PurgeListing, PurgeScope, PurgedTicket,
    RunOriginRow, RunRow, RunStatus, SendWindows,
};

/// The method every purge uses.
pub const METHOD: &str = "Zendesk API permanent deletion of soft-deleted tickets";
pub const ENDPOINT: &str = "DELETE /api/v2/deleted_tickets/destroy_many?ids=…, followed by GET /api/v2/job_statuses/show_many until the job ends";
const VERIFIED_HOW: &str = "Each id was sent only after a fresh listing showed it still soft-deleted with the same deletion; the request was recorded before it was sent and Zendesk's answer right after; a ticket counts as purged only when its job ended `completed` with every id succeeded.";

/// Where a document's rows of purged tickets go. A document is rendered
/// with this mark in their place and written by [`write_document`], which
/// streams the rows from the database there: a period of a million purges
/// costs the memory of one row.
const ROWS_MARK: &str = "\u{1}purged-rows\u{1}";

/// A document's purged tickets, as its figures see them: how many the
/// listing holds and whether any has a subject. Serialised as the mark
/// the rows replace.
#[derive(Debug, Clone, Copy)]
pub struct PurgedRows {
    pub listed: i64,
    pub with_subjects: bool,
}

impl PurgedRows {
    fn of(listing: &PurgeListing) -> Self {
        PurgedRows {
            listed: listing.listed,
            with_subjects: listing.with_subjects,
        }
    }
}

impl Serialize for PurgedRows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(ROWS_MARK)
    }
}

/// How each purged ticket is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStyle {
    Html { with_subjects: bool },
    Text,
    Markdown,
    Json,
}

impl RowStyle {
    fn write(self, out: &mut String, p: &PurgedTicket, first: bool) -> anyhow::Result<()> {
        match self {
            RowStyle::Html { with_subjects } => {
                write!(
                    out,
                    "<tr class=\"purged-row\" data-ticket=\"{}\"><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    p.ticket_id,
                    p.ticket_id,
                    esc(p.rule.as_deref().unwrap_or("?")),
                    p.run_id,
                    esc(p.zendesk_job_id.as_deref().unwrap_or("")),
                    esc(&utc(p.requested_at.as_deref().unwrap_or(""))),
                    esc(&utc(p.completed_at.as_deref().unwrap_or(""))),
                    esc(&utc(&p.verified_at)),
                )?;
                if with_subjects {
                    write!(out, "<td>{}</td>", esc(p.subject.as_deref().unwrap_or("")))?;
                }
                out.push_str("</tr>\n");
            }
            RowStyle::Text => writeln!(
                out,
                "    {} by {} job {} requested {} completed {}",
                p.ticket_id,
                p.rule.as_deref().unwrap_or("?"),
                p.zendesk_job_id.as_deref().unwrap_or("-"),
                p.requested_at.as_deref().unwrap_or("-"),
                p.completed_at.as_deref().unwrap_or("-")
            )?,
            RowStyle::Markdown => writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                p.ticket_id,
                md(p.rule.as_deref().unwrap_or("?")),
                p.run_id,
                md(p.zendesk_job_id.as_deref().unwrap_or("")),
                p.requested_at.as_deref().unwrap_or(""),
                p.completed_at.as_deref().unwrap_or("")
            )?,
            RowStyle::Json => write!(
                out,
                "{}\n    {}",
                if first { "" } else { "," },
                serde_json::to_string(p)?
            )?,
        }
        Ok(())
    }
}

/// A document as JSON: its purged tickets an array streamed in place.
pub fn json_document(document: &impl Serialize) -> anyhow::Result<String> {
    let text = serde_json::to_string_pretty(document)?;
    let mark = serde_json::to_string(ROWS_MARK)?;
    anyhow::ensure!(
        text.matches(&mark).count() == 1,
        "internal: a JSON document without one place for its rows"
    );
    Ok(text.replacen(&mark, &format!("[{ROWS_MARK}\n  ]"), 1) + "\n")
}

/// Writes `document` to `out`, with the listing's rows streamed where its
/// mark stands, a bounded buffer at a time.
pub async fn write_document(
    document: &str,
    style: RowStyle,
    listing: &mut PurgeListing,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    // the mark is two control characters: a recorded text holding it
    // (an error Zendesk sent, a rule's name) must not move the rows
    anyhow::ensure!(
        document.matches(ROWS_MARK).count() == 1,
        "a recorded text holds the control characters that mark where the purged tickets go: the document would be wrong, so none is written; `audit run` and `audit ticket` show the records"
    );
    let Some((head, tail)) = document.split_once(ROWS_MARK) else {
        anyhow::bail!("internal: a document without a place for its rows");
    };
    out.write_all(head.as_bytes())?;
    let mut buffer = String::new();
    let mut first = true;
    listing
        .for_each(|p| {
            style.write(&mut buffer, p, first)?;
            first = false;
            if buffer.len() >= 64 * 1024 {
                out.write_all(buffer.as_bytes())?;
                buffer.clear();
            }
            Ok(())
        })
        .await?;
    out.write_all(buffer.as_bytes())?;
    out.write_all(tail.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// A config version with its settings read back.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInWords {
    pub hash: String,
    pub first_run: Option<RunId>,
    pub first_used: Option<String>,
    /// `None` for runs recorded before config versions were stored.
    pub account: Option<String>,
    pub rules: Vec<String>,
    pub safety: Vec<String>,
    pub settings: Option<serde_json::Value>,
}

impl VersionInWords {
    pub fn of(hash: &str, stored: Option<ConfigVersion>) -> Self {
        let settings = stored
            .as_ref()
            .and_then(|v| serde_json::from_str::<serde_json::Value>(&v.settings).ok());
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let rules = settings
            .as_ref()
            .and_then(|s| s["rules"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|r| format!("{}: {}", text(&r["name"]), text(&r["in_words"])))
            .collect();
        let safety = settings
            .as_ref()
            .and_then(|s| s["safety"].as_object().cloned())
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k} = {}", text(v)))
            .collect();
        VersionInWords {
            hash: hash.to_string(),
            first_run: stored.as_ref().map(|v| v.first_run),
            first_used: stored.as_ref().map(|v| v.first_used.clone()),
            account: settings
                .as_ref()
                .and_then(|s| s["account"].as_str().map(str::to_string)),
            rules,
            safety,
            settings,
        }
    }
}

/// How the records' integrity was checked.
#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    /// The hash chain recomputed over every row.
    pub chain: ChainReport,
    /// `verified`, `failed` (altered), `unverifiable` (the keys given
    /// cannot check them), `not_checked` (signed, no public key given) or
    /// `unsigned`.
    pub signatures: &'static str,
    pub signature_detail: String,
    /// Entries written before the first signed head (verified records).
    pub before_signing: i64,
    /// The run that made the first signed head.
    pub signing_began_run: Option<RunId>,
}

impl Integrity {
    async fn check(store: &AuditStore, keys: &[ChainVerifier]) -> anyhow::Result<Self> {
        let chain = store.verify_chain().await?;
        let mut before_signing = 0;
        let mut signing_began_run = None;
        let (signatures, signature_detail) = match keys {
            [_, ..] => {
                let r = store.verify_signatures(keys).await?;
                before_signing = r.before_signing;
                signing_began_run = r.signing_began.as_ref().and_then(|(_, run)| *run);
                match r.problem {
                    None if r.before_signing == 0 => (
                        "verified",
                        format!(
                            "{} signed chain heads verify with public key {}; every chain entry is covered by one",
                            r.signed, r.key_id
                        ),
                    ),
                    None => (
                        "verified",
                        format!(
                            "{} signed chain heads verify with public key {}; chain entries 1 to {} precede the first signed head ({}): it vouches for them as they stood then, not as they were written",
                            r.signed,
                            r.key_id,
                            r.before_signing,
                            r.signing_began.as_ref().map(|(at, _)| at.as_str()).unwrap_or("?")
                        ),
                    ),
                    Some(p) if r.tampered => ("failed", p),
                    Some(p) => ("unverifiable", p),
                }
            }
            [] if store.is_signed().await? => (
                "not_checked",
                "chain heads are signed, but not checked here: pass --public-key to check them (without that, a rewrite that recomputes the chain would not show)".to_string(),
            ),
            [] => (
                "unsigned",
                "the records are not signed ([audit] signing_key_file is not set): the chain shows a row changed by hand, not a rewrite that recomputes it".to_string(),
            ),
        };
        Ok(Integrity {
            chain,
            signatures,
            signature_detail,
            before_signing,
            signing_began_run,
        })
    }

    /// Nothing found wrong (signatures may be unchecked or absent: see
    /// [`Self::statement`]).
    pub fn holds(&self) -> bool {
        self.chain.problem.is_none() && !matches!(self.signatures, "failed" | "unverifiable")
    }

    /// What may be said of the records, in one line.
    pub fn statement(&self) -> &'static str {
        match (self.holds(), self.signatures) {
            (false, _) => "NOT intact: see above",
            (true, "verified") if self.before_signing == 0 => {
                "intact, and signed by the key holder"
            }
            (true, "verified") => {
                "intact, and signed by the key holder since signing began (earlier entries as they stood then)"
            }
            (true, "not_checked") => "intact as far as the chain shows; signatures not checked",
            (true, _) => "intact as far as the chain shows; the records are unsigned",
        }
    }
}

/// A certificate of deletion for one run (after NIST SP 800-88's).
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    pub issued_at: String,
    pub run: RunRow,
    pub ran_by: RunOriginRow,
    pub config: VersionInWords,
    pub method: &'static str,
    pub endpoint: &'static str,
    pub verified_how: &'static str,
    /// The run's freshness windows and tickets in doubt.
    pub windows: SendWindows,
    /// What no client can rule out, with the run's measured window.
    pub residual: String,
    pub purged: PurgedRows,
    pub chain_head: Option<ChainHead>,
    pub integrity: Integrity,
    /// What a reader must know before relying on it.
    pub caveats: Vec<String>,
}

impl Certificate {
    /// The certificate, and the listing its rows are written from.
    pub async fn gather(
        store: &AuditStore,
        run: RunId,
        keys: &[ChainVerifier],
    ) -> anyhow::Result<(Self, PurgeListing)> {
        let Some(row) = store.run(run).await? else {
            anyhow::bail!(
                "no run {run} in this audit database (zd-retention audit runs lists them)"
            );
        };
        let stored = store.config_version(&row.config_hash).await?;
        let windows = store.send_windows_of_run(run).await?;
        let chain_head = store.chain_head_of(run).await?;
        let integrity = Integrity::check(store, keys).await?;
        let mut caveats = Vec::new();
        match row.status {
            crate::audit::RunStatus::Running => caveats.push(
                "The run has not ended: this certificate is not final, and its figures are not recorded yet.".to_string(),
            ),
            crate::audit::RunStatus::Interrupted => caveats.push(
                "The run did not end normally (interrupted): its figures were not recorded; the tickets below are the purges it recorded before it stopped, or that a later run settled for it.".to_string(),
            ),
            _ => {}
        }
        let precedes = match (&chain_head, integrity.signing_began_run) {
            (Some(h), _) => integrity.before_signing >= h.seq,
            (None, Some(first)) => run < first,
            (None, None) => false,
        };
        if integrity.signatures == "verified" && integrity.before_signing > 0 && precedes {
            caveats.push(format!(
                "This run's records precede the first signed chain head: the signature vouches for them as they stood when signing began, not as they were written (entries 1 to {}).",
                integrity.before_signing
            ));
        }
        let ran_by = store.run_origin(run).await?;
        // last: on a read-only store it holds the one connection
        let listing = store.purge_listing(PurgeScope::Run(run)).await?;
        let cert = Certificate {
            caveats,
            issued_at: crate::audit::timestamp(Utc::now()),
            ran_by,
            config: VersionInWords::of(&row.config_hash, stored),
            method: METHOD,
            endpoint: ENDPOINT,
            verified_how: VERIFIED_HOW,
            residual: residual_of(&windows),
            windows,
            purged: PurgedRows::of(&listing),
            chain_head,
            integrity,
            run: row,
        };
        Ok((cert, listing))
    }
}

/// What the certificate says no client can rule out, with the run's
/// measured freshness window and the tickets a later read put in doubt.
fn residual_of(w: &SendWindows) -> String {
    let floor = "Zendesk offers no conditional delete: it purges whichever deletion a ticket has when the job runs, so a ticket deleted again (restored, then deleted anew) after the last read this run made and before Zendesk ran the job would be purged on its new deletion and listed here under the rule that selected the earlier one; once the job has run, no read can show such a change.";
    let window = match (w.measured, w.max_us) {
        (0, _) | (_, None) if w.requests == 0 => "This run sent no purge request.".to_string(),
        (0, _) | (_, None) => format!(
            "The time from the freshness read to each request was not measured for this run ({} requests; recorded before zd-retention measured it, or sent without a listing).",
            w.requests
        ),
        (n, Some(us)) => format!(
            "Each request left at most {} after the answer of the freshness read that cleared it ({n} of {} requests measured). {} of them were followed by another read (as soon as the listing quota allowed, so a job may have run before it; a failed read leaves none); it showed {} purged ticket(s) deleted again: those are recorded unknown and are not listed here.",
            crate::report::window_text(std::time::Duration::from_micros(us.max(0) as u64)),
            w.requests,
            w.read_after,
            w.in_doubt
        ),
    };
    format!("{window} {floor}")
}

/// A config version in force during a period.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInForce {
    /// The first run of the period under it.
    pub from: String,
    pub runs: usize,
    pub version: VersionInWords,
}

/// A period's report.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodReport {
    pub since: String,
    pub until: String,
    pub generated_at: String,
    pub runs: Vec<RunRow>,
    pub runs_by_status: BTreeMap<String, i64>,
    pub purged: PurgedRows,
    pub purged_by_rule: BTreeMap<String, i64>,
    /// What [`PURGES_OF_PERIOD_SQL`] counts: equal to `purged.listed`.
    pub purges_counted: i64,
    pub completeness_query: &'static str,
    pub open_outcomes: Vec<OpenOutcome>,
    /// Runs a safety limit refused or stopped.
    pub refused_runs: Vec<RunRow>,
    /// Runs overlapping the period that had not ended normally when the
    /// report was made: still running, or interrupted.
    pub unfinished_runs: Vec<RunRow>,
    pub kept_now: Vec<KeptCount>,
    pub purges_by_day: Vec<DayRuleCount>,
    pub runs_by_day: Vec<DayStatusCount>,
    pub config_versions: Vec<VersionInForce>,
    pub integrity: Integrity,
    /// When the first run in the database started.
    pub records_begin: Option<String>,
    /// From each ticket becoming purgeable (its deletion plus its rule's
    /// age, or `min_age`) to its purge request, for the requests of the
    /// period (as measured when sent).
    pub latency: crate::audit::LatencySummary,
}

impl PeriodReport {
    /// The report, and the listing its rows are written from.
    pub async fn gather(
        store: &AuditStore,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        keys: &[ChainVerifier],
    ) -> anyhow::Result<(Self, PurgeListing)> {
        let runs = store.runs_between(since, until).await?;
        let mut runs_by_status = BTreeMap::new();
        for r in &runs {
            *runs_by_status.entry(r.status.to_string()).or_default() += 1;
        }
        let refused_runs = runs
            .iter()
            .filter(|r| r.error.as_deref().is_some_and(|e| e.contains("safety.")))
            .cloned()
            .collect();
        let open_outcomes = store.open_outcomes_between(since, until).await?;
        let unfinished_runs = store.unfinished_runs_between(since, until).await?;
        let kept_now = store.kept_now().await?;
        let runs_by_day = store.runs_by_day_and_status(since, until).await?;
        let config_versions = versions_in_force(store, since, &runs).await?;
        let integrity = Integrity::check(store, keys).await?;
        let records_begin = store.first_run_started().await?;
        let latency = store
            .latency_summary(Some(since), Some(until), None)
            .await?;
        // last, on one snapshot: on a read-only store it holds the one
        // connection; its counts, per rule and per day, and its rows agree
        let mut listing = store
            .purge_listing(PurgeScope::Between(since, until))
            .await?;
        let purges_by_day = listing.by_day_and_rule().await?;
        let mut purged_by_rule = BTreeMap::new();
        for p in &purges_by_day {
            *purged_by_rule.entry(p.rule.clone()).or_default() += p.count;
        }
        let report = PeriodReport {
            since: crate::audit::timestamp(since),
            until: crate::audit::timestamp(until),
            generated_at: crate::audit::timestamp(Utc::now()),
            runs_by_status,
            purges_counted: listing.count_purges_between(since, until).await?,
            completeness_query: PURGES_OF_PERIOD_SQL,
            purged_by_rule,
            purged: PurgedRows::of(&listing),
            open_outcomes,
            refused_runs,
            unfinished_runs,
            kept_now,
            purges_by_day,
            runs_by_day,
            config_versions,
            integrity,
            records_begin,
            latency,
            runs,
        };
        Ok((report, listing))
    }

    /// The list is the query's answer, no run of the period was still
    /// running, and nothing was found wrong with the records (see
    /// [`Self::statement`] for what can be said).
    pub fn complete(&self) -> bool {
        self.listed_in_full() && self.integrity.holds() && self.still_running().is_none()
    }

    /// The listing holds every purge outcome the query counts.
    fn listed_in_full(&self) -> bool {
        self.purges_counted == self.purged.listed
    }

    /// The runs of the period with `status` among the unfinished ones, as
    /// "run 4" or "runs 4, 7", and whether there are several.
    fn unfinished(&self, status: RunStatus) -> Option<(String, bool)> {
        let ids: Vec<String> = self
            .unfinished_runs
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.id.to_string())
            .collect();
        match ids.as_slice() {
            [] => None,
            [one] => Some((format!("run {one}"), false)),
            many => Some((format!("runs {}", many.join(", ")), true)),
        }
    }

    /// The runs of the period still running when the report was made
    /// ("run 4"): then the report is not final.
    pub fn still_running(&self) -> Option<String> {
        self.unfinished(RunStatus::Running).map(|(runs, _)| runs)
    }

    /// One sentence for each kind of run that had not ended normally: a
    /// running one (its outcomes may still be missing), an interrupted one.
    pub fn unfinished_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some((runs, many)) = self.unfinished(RunStatus::Running) {
            let (was, its) = if many {
                ("were", "their")
            } else {
                ("was", "its")
            };
            notes.push(format!(
                "{runs} {was} still running when this report was made (or stopped without a later start closing it): {its} outcomes may be incomplete"
            ));
        }
        if let Some((runs, many)) = self.unfinished(RunStatus::Interrupted) {
            let (was, it, its) = if many {
                ("were", "they", "their")
            } else {
                ("was", "it", "its")
            };
            notes.push(format!(
                "{runs} {was} interrupted: {it} stopped before {its} end, and {its} purges are those recorded before {it} stopped or settled for {it} by a later run"
            ));
        }
        notes
    }

    /// The report's statement, in one line: it claims completeness only
    /// when [`Self::complete`] holds, and names every run that had not
    /// ended normally.
    pub fn statement(&self) -> String {
        if !self.listed_in_full() || !self.integrity.holds() {
            return "NOT complete or NOT intact: see above".to_string();
        }
        let records = self.integrity.statement();
        let notes = self.unfinished_notes().join("; ");
        if self.still_running().is_some() {
            format!(
                "NOT final: {notes}; every purge outcome recorded in the period until then is listed; the records are {records}"
            )
        } else if notes.is_empty() {
            format!(
                "every purge outcome recorded in the period is listed; the records are {records}"
            )
        } else {
            format!(
                "every purge outcome recorded in the period is listed; {notes}; the records are {records}"
            )
        }
    }

    /// Where the records begin, when the period starts before them.
    fn records_note(&self) -> Option<String> {
        match &self.records_begin {
            Some(first) if *first > self.since => Some(format!(
                "The audit records begin at {first} (the first run in this database): nothing before it is recorded here."
            )),
            None => Some("This audit database holds no run at all.".to_string()),
            _ => None,
        }
    }
}

/// The config versions in force during a period: the one the last run
/// before it used, then each change, in order.
async fn versions_in_force(
    store: &AuditStore,
    since: DateTime<Utc>,
    runs: &[RunRow],
) -> anyhow::Result<Vec<VersionInForce>> {
    let mut out: Vec<VersionInForce> = Vec::new();
    if let Some(before) = store.run_before(since).await?
        && runs
            .first()
            .is_none_or(|r| r.config_hash != before.config_hash)
    {
        out.push(VersionInForce {
            from: format!("before the period (run {})", before.id),
            runs: 0,
            version: VersionInWords::of(
                &before.config_hash,
                store.config_version(&before.config_hash).await?,
            ),
        });
    }
    for r in runs {
        match out.last_mut() {
            Some(v) if v.version.hash == r.config_hash => v.runs += 1,
            _ => out.push(VersionInForce {
                from: format!("{} (run {})", r.started_at, r.id),
                runs: 1,
                version: VersionInWords::of(
                    &r.config_hash,
                    store.config_version(&r.config_hash).await?,
                ),
            }),
        }
    }
    Ok(out)
}

impl PeriodReport {
    /// The purge latency of the period in a sentence.
    fn latency_sentence(&self) -> String {
        let l = &self.latency;
        let s = |v: Option<f64>| {
            v.map_or("-".to_string(), |v| {
                crate::human::duration(std::time::Duration::from_secs_f64(v.max(0.0)))
            })
        };
        if l.tickets == 0 {
            return "No purge request of the period has a measured latency.".into();
        }
        format!(
            "From becoming purgeable (deletion plus the rule's age, or safety.min_age) to the purge request, over {} tickets: median {}, 95th percentile {}, longest {}.",
            l.tickets,
            s(l.p50_seconds),
            s(l.p95_seconds),
            s(l.max_seconds)
        )
    }

    /// The distinct tickets of the failed and unknown outcomes.
    fn open_tickets(&self) -> usize {
        self.open_outcomes
            .iter()
            .map(|o| o.ticket_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }
}

/// How a failed or unknown outcome settled, in words.
trait Settlement {
    fn settlement(&self) -> String;
}

impl Settlement for OpenOutcome {
    fn settlement(&self) -> String {
        match (self.settled_as.as_deref(), self.settled_at.as_deref()) {
            (Some(s @ ("failed" | "unknown" | "not_sent")), Some(at)) => {
                format!("still open (latest: {s} at {at})")
            }
            (Some(s), Some(at)) => format!("{s} at {at}"),
            _ => "still open".into(),
        }
    }
}

/// A sentence as it begins a paragraph.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Text safe inside HTML.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // a control character has no place on a page (and one could
            // pose as the mark where the rows go)
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A stored time as people read it: `2026-11-29 14:22:45.913`, UTC.
fn utc(stored: &str) -> String {
    stored
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

/// Text safe inside a Markdown table cell.
/// Text as Markdown shows it, never as markup: every character Markdown
/// or HTML gives a meaning is escaped, and a line break is a space (a rule
/// name cannot open a heading or a list of its own).
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '.'
            | '!' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
@page { size: A4; margin: 16mm 14mm; }
* { box-sizing: border-box; }
body { font-family: 'DejaVu Sans', 'Liberation Sans', Arial, sans-serif; font-size: 10.5pt; color: #111; max-width: 182mm; margin: 0 auto; padding: 8mm 0; line-height: 1.4; }
h1 { font-size: 17pt; margin: 0 0 2mm; }
h2 { font-size: 12.5pt; margin: 7mm 0 2mm; border-bottom: 1px solid #999; padding-bottom: 1mm; }
table { border-collapse: collapse; width: 100%; margin: 2mm 0; }
th, td { border: 1px solid #bbb; padding: 1mm 2mm; text-align: left; vertical-align: top; font-size: 9.5pt; }
th { background: #eee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #135e13; font-weight: bold; }
.bad { color: #a00; font-weight: bold; }
.muted { color: #555; }
code, .mono { font-family: 'DejaVu Sans Mono', monospace; font-size: 9pt; word-break: break-all; }
.figures { display: flex; flex-wrap: wrap; gap: 3mm; }
.figure { border: 1px solid #bbb; padding: 2mm 4mm; min-width: 38mm; }
.figure b { display: block; font-size: 16pt; }
.sign { margin-top: 10mm; display: flex; gap: 12mm; }
.sign div { flex: 1; border-top: 1px solid #111; padding-top: 1mm; }
svg { max-width: 100%; }
table.purged td, table.purged th { font-size: 8pt; padding: 0.5mm 1.2mm; }
table.purged td.mono { font-size: 7pt; }
tr, .figure { page-break-inside: avoid; }
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width\">\n<title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        esc(title)
    )
}

fn figure(name: &str, label: &str, value: impl std::fmt::Display) -> String {
    format!(
        "<div class=\"figure\">{}<b data-figure=\"{name}\">{value}</b></div>",
        esc(label)
    )
}

fn integrity_html(i: &Integrity) -> String {
    let chain = match &i.chain.problem {
        None => format!(
            "<span class=\"ok\" data-figure=\"chain\">intact</span>: {} chain entries over {} rows recomputed; head <code>{}</code>",
            i.chain.entries, i.chain.rows, i.chain.head
        ),
        Some(p) => format!(
            "<span class=\"bad\" data-figure=\"chain\">TAMPERED</span>: {}",
            esc(p)
        ),
    };
    let class = match i.signatures {
        "verified" => "ok",
        "failed" | "unverifiable" => "bad",
        _ => "muted",
    };
    format!(
        "<p>Hash chain: {chain}</p>\n<p>Signatures: <span class=\"{class}\" data-figure=\"signatures\">{}</span>: {}</p>\n",
        i.signatures,
        esc(&i.signature_detail)
    )
}

fn version_html(v: &VersionInWords) -> String {
    let mut out = format!(
        "<p>Config version <code data-figure=\"config-hash\">{}</code>{}</p>\n",
        esc(&v.hash),
        v.first_used
            .as_ref()
            .map(|t| format!(
                ", first used {} (run {})",
                esc(t),
                v.first_run.unwrap_or_default()
            ))
            .unwrap_or_default()
    );
    if v.settings.is_none() {
        out.push_str("<p class=\"muted\">Its settings were not stored (a run recorded before config versions were kept).</p>\n");
        return out;
    }
    out.push_str("<ul>\n");
    for r in &v.rules {
        let _ = writeln!(out, "<li>{}</li>", esc(r));
    }
    out.push_str("</ul>\n");
    if !v.safety.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"muted\">The config's safety settings (a run's own mode is stated with the run): {}</p>",
            esc(&v.safety.join("; "))
        );
    }
    out
}

/// The table of purged tickets, its rows streamed in place of the mark.
fn purged_rows_html(rows: PurgedRows) -> String {
    let mut out = String::from(
        "<table class=\"purged\"><thead><tr><th>ticket</th><th>rule</th><th>run</th><th>Zendesk job</th><th>requested (UTC)</th><th>completed (UTC)</th><th>recorded (UTC)</th>",
    );
    if rows.with_subjects {
        out.push_str("<th>subject</th>");
    }
    out.push_str("</tr></thead><tbody>\n");
    out.push_str(ROWS_MARK);
    out.push_str("</tbody></table>\n");
    out
}

impl Certificate {
    pub fn html(&self) -> String {
        let r = &self.run;
        let mut b = format!(
            "<h1>Certificate of deletion: run {}</h1>\n<p class=\"muted\">Issued {} by zd-retention from its audit records.</p>\n",
            r.id,
            esc(&self.issued_at)
        );
        for c in &self.caveats {
            let _ = writeln!(b, "<p class=\"bad\" data-figure=\"caveat\">{}</p>", esc(c));
        }
        let _ = write!(
            b,
            "<h2>Who and where</h2>\n<table><tbody>\n<tr><th>Account</th><td data-figure=\"account\">{}</td></tr>\n<tr><th>Run</th><td>{} ({}), {} to {}, status <b data-figure=\"status\">{}</b>{}</td></tr>\n<tr><th>Ran on</th><td>host {}, user {}, {}</td></tr>\n</tbody></table>\n",
            esc(self.config.account.as_deref().unwrap_or("(not recorded)")),
            r.id,
            esc(&r.trigger.to_string()),
            esc(&r.started_at),
            esc(r.finished_at.as_deref().unwrap_or("(not ended)")),
            esc(&r.status.to_string()),
            if r.dry_run {
                ", dry run: nothing was sent"
            } else {
                ", live: purge requests were sent"
            },
            esc(self.ran_by.host.as_deref().unwrap_or("?")),
            esc(self.ran_by.os_user.as_deref().unwrap_or("?")),
            esc(self
                .ran_by
                .program_version
                .as_deref()
                .unwrap_or("(not recorded)")),
        );
        b.push_str("<h2>Under which rules</h2>\n");
        b.push_str(&version_html(&self.config));
        let _ = write!(
            b,
            "<h2>Method</h2>\n<p>{}: <code>{}</code></p>\n<p>{}</p>\n<p data-figure=\"residual\">{}</p>\n",
            esc(self.method),
            esc(self.endpoint),
            esc(self.verified_how),
            esc(&self.residual)
        );
        b.push_str("<h2>Figures</h2>\n<div class=\"figures\">");
        b.push_str(&figure("scanned", "tickets examined", r.scanned));
        b.push_str(&figure("matched", "selected by a rule", r.matched));
        b.push_str(&figure("purged", "purged (run's count)", r.purged));
        b.push_str(&figure(
            "purged-listed",
            "purged, listed below",
            self.purged.listed,
        ));
        b.push_str(&figure("failed", "failed", r.failed));
        b.push_str(&figure("unknown", "unknown", r.unknown));
        b.push_str("</div>\n");
        let _ = writeln!(b, "<h2>Tickets purged ({})</h2>", self.purged.listed);
        b.push_str(&purged_rows_html(self.purged));
        b.push_str("<h2>Integrity</h2>\n");
        match &self.chain_head {
            Some(h) => {
                let _ = writeln!(
                    b,
                    "<p>Chain head at the run's end: entry {} <code data-figure=\"head\">{}</code>, {}{}</p>",
                    h.seq,
                    esc(&h.head),
                    esc(&h.recorded_at),
                    match (&h.key_id, &h.signature) {
                        (Some(k), Some(s)) => format!(", signed by key {} <code>{}</code>", esc(k), esc(s)),
                        _ => ", unsigned".to_string(),
                    }
                );
            }
            None => b.push_str("<p class=\"muted\">No chain head was recorded at this run's end (a run before heads were kept, or not ended).</p>\n"),
        }
        b.push_str(&integrity_html(&self.integrity));
        let _ = write!(
            b,
            "<p class=\"muted\">Check any ticket: <code>zd-retention audit ticket ID</code>; check the records: <code>zd-retention audit verify --public-key KEY.pub.pem</code>.</p>\n<div class=\"sign\"><div>Reviewed by (name, role)</div><div>Date and signature</div></div>\n"
        );
        page(&format!("Certificate of deletion: run {}", r.id), &b)
    }

    pub fn text(&self) -> String {
        let r = &self.run;
        let mut t = format!("Certificate of deletion: run {}\n", r.id);
        for c in &self.caveats {
            let _ = writeln!(t, "  NOTE: {c}");
        }
        let _ = writeln!(
            t,
            "  account     {}",
            self.config.account.as_deref().unwrap_or("(not recorded)")
        );
        let _ = writeln!(
            t,
            "  run         {} ({}), {} to {}, {}",
            r.id,
            r.trigger,
            r.started_at,
            r.finished_at.as_deref().unwrap_or("(not ended)"),
            r.status
        );
        let _ = writeln!(
            t,
            "  ran on      host {}, user {}, {}",
            self.ran_by.host.as_deref().unwrap_or("?"),
            self.ran_by.os_user.as_deref().unwrap_or("?"),
            self.ran_by
                .program_version
                .as_deref()
                .unwrap_or("(not recorded)")
        );
        let _ = writeln!(t, "  config      {}", self.config.hash);
        for rule in &self.config.rules {
            let _ = writeln!(t, "    rule      {rule}");
        }
        let _ = writeln!(t, "  method      {}: {}", self.method, self.endpoint);
        let _ = writeln!(t, "  residual    {}", self.residual);
        let _ = writeln!(
            t,
            "  figures     {} examined, {} selected, {} purged, {} failed, {} unknown",
            r.scanned, r.matched, r.purged, r.failed, r.unknown
        );
        t.push_str(ROWS_MARK);
        match &self.chain_head {
            Some(h) => {
                let _ = writeln!(
                    t,
                    "  chain head  entry {} {} ({})",
                    h.seq,
                    h.head,
                    if h.signature.is_some() {
                        "signed"
                    } else {
                        "unsigned"
                    }
                );
            }
            None => t.push_str("  chain head  (not recorded)\n"),
        }
        let _ = writeln!(
            t,
            "  chain       {}",
            self.integrity.chain.problem.as_deref().unwrap_or("intact")
        );
        let _ = writeln!(
            t,
            "  signatures  {}: {}",
            self.integrity.signatures, self.integrity.signature_detail
        );
        t
    }
}

/// Stacked bars per day: one colour per series.
fn svg_stacked(days: &[String], series: &[(String, Vec<i64>)], figure: &str) -> String {
    const COLOURS: [&str; 8] = [
        "#2f6db5", "#d9822b", "#3a9a4a", "#b53a3a", "#7a4fb5", "#8a6d3b", "#2aa1a1", "#777777",
    ];
    let (w, h, left, bottom, top) = (660.0_f64, 220.0_f64, 44.0, 34.0, 10.0);
    let totals: Vec<i64> = (0..days.len())
        .map(|i| series.iter().map(|(_, v)| v[i]).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = (w - left - 8.0) / days.len().max(1) as f64;
    let bar = (slot * 0.7).max(2.0);
    let scale = (h - bottom - top) / max;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {}\" width=\"{w}\" role=\"img\" data-figure=\"{figure}\" font-size=\"10\" font-family=\"sans-serif\">\n",
        h + 18.0 * series.len().div_ceil(4) as f64
    );
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#555\"/><line x1=\"{left}\" y1=\"{0}\" x2=\"{}\" y2=\"{0}\" stroke=\"#555\"/>",
        h - bottom,
        w - 4.0
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
        left - 4.0,
        top + 8.0,
        max as i64,
        left - 4.0,
        h - bottom
    );
    let label_every = (days.len() / 10).max(1);
    for (i, day) in days.iter().enumerate() {
        let x = left + 4.0 + slot * i as f64;
        let mut y = h - bottom;
        for (k, (name, values)) in series.iter().enumerate() {
            let v = values[i];
            if v == 0 {
                continue;
            }
            let height = v as f64 * scale;
            y -= height;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{height:.1}\" fill=\"{}\" data-day=\"{}\" data-series=\"{}\" data-value=\"{v}\"><title>{} {}: {v}</title></rect>",
                COLOURS[k % COLOURS.len()],
                esc(day),
                esc(name),
                esc(day),
                esc(name)
            );
        }
        if i % label_every == 0 {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                h - bottom + 14.0,
                esc(day.get(5..).unwrap_or(day))
            );
        }
        if totals[i] > 0 {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333\">{}</text>",
                x + bar / 2.0,
                y - 3.0,
                totals[i]
            );
        }
    }
    for (k, (name, _)) in series.iter().enumerate() {
        let (lx, ly) = (
            left + 160.0 * (k % 4) as f64,
            h + 4.0 + 18.0 * (k / 4) as f64,
        );
        let _ = writeln!(
            out,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            COLOURS[k % COLOURS.len()],
            lx + 14.0,
            ly + 9.0,
            esc(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Every day from `since` to `until`, and each series' value per day.
fn per_day<'a>(
    since: &str,
    until: &str,
    points: impl Iterator<Item = (&'a str, &'a str, i64)>,
) -> (Vec<String>, Vec<(String, Vec<i64>)>) {
    let parse =
        |t: &str| chrono::NaiveDate::parse_from_str(t.get(..10).unwrap_or(""), "%Y-%m-%d").ok();
    let points: Vec<(&str, &str, i64)> = points.collect();
    // a period that begins long before the first figure starts at it
    let first = points.iter().filter_map(|(d, _, _)| parse(d)).min();
    let (Some(start), Some(end)) = (parse(since), parse(until)) else {
        return (Vec::new(), Vec::new());
    };
    let long = |a: chrono::NaiveDate| (end - a).num_days() > 400;
    let start = match first {
        Some(f) if long(start) => f.max(start).min(end),
        // nothing to show: the last 400 days are enough to say so
        None if long(start) => end - chrono::Duration::days(400),
        _ => start,
    };
    // still more than 400 days: a bar per month
    let monthly = long(start);
    let key = |d: chrono::NaiveDate| {
        if monthly {
            d.format("%Y-%m").to_string()
        } else {
            d.format("%Y-%m-%d").to_string()
        }
    };
    let mut days: Vec<String> = Vec::new();
    let mut d = start;
    while d <= end {
        let k = key(d);
        if days.last() != Some(&k) {
            days.push(k);
        }
        match d.succ_opt() {
            Some(next) => d = next,
            None => break,
        }
    }
    let mut by_series: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (day, name, count) in points {
        let values = by_series
            .entry(name.to_string())
            .or_insert_with(|| vec![0; days.len()]);
        if let Some(i) = parse(day).and_then(|d| days.iter().position(|k| *k == key(d))) {
            values[i] += count;
        }
    }
    (days, by_series.into_iter().collect())
}

impl PeriodReport {
    pub fn html(&self) -> String {
        let mut b = format!(
            "<h1>Retention report</h1>\n<p>Period <b data-figure=\"since\">{}</b> to <b data-figure=\"until\">{}</b>. Generated {} by zd-retention from its audit records.</p>\n",
            esc(&self.since),
            esc(&self.until),
            esc(&self.generated_at)
        );
        if self.runs.is_empty() && self.purged.listed == 0 {
            b.push_str("<p class=\"bad\" data-figure=\"no-runs\">No run took place in this period: nothing was purged by zd-retention.</p>\n");
        }
        if let Some(note) = self.records_note() {
            let _ = writeln!(
                b,
                "<p class=\"muted\" data-figure=\"records-begin\">{}</p>",
                esc(&note)
            );
        }
        b.push_str(&self.summary_html());
        b.push_str("<h2>Purges per day, by rule</h2>\n");
        let (days, series) = per_day(
            &self.since,
            &self.until,
            self.purges_by_day
                .iter()
                .map(|p| (p.day.as_str(), p.rule.as_str(), p.count)),
        );
        b.push_str(&svg_stacked(&days, &series, "chart-purges"));
        b.push_str("<h2>Runs per day, by status</h2>\n");
        let (days, series) = per_day(
            &self.since,
            &self.until,
            self.runs_by_day
                .iter()
                .map(|p| (p.day.as_str(), p.status.as_str(), p.count)),
        );
        b.push_str(&svg_stacked(&days, &series, "chart-runs"));
        b.push_str("<h2>Config versions in force</h2>\n");
        if self.config_versions.is_empty() {
            b.push_str("<p class=\"muted\">No run, so no config, in this period.</p>\n");
        }
        for v in &self.config_versions {
            let _ = writeln!(
                b,
                "<h3>From {} ({} runs in the period)</h3>",
                esc(&v.from),
                v.runs
            );
            b.push_str(&version_html(&v.version));
        }
        let _ = writeln!(
            b,
            "<h2>Purge latency</h2>\n<p data-figure=\"latency\">{}</p>",
            esc(&self.latency_sentence())
        );
        b.push_str(&self.completeness_html());
        let _ = writeln!(
            b,
            "<h2>Every purge of the period ({})</h2>",
            self.purged.listed
        );
        b.push_str(&purged_rows_html(self.purged));
        page("Retention report", &b)
    }

    fn summary_html(&self) -> String {
        let mut b = String::from("<h2>Summary</h2>\n<div class=\"figures\">");
        b.push_str(&figure("runs", "runs", self.runs.len()));
        b.push_str(&figure("purged", "tickets purged", self.purged.listed));
        b.push_str(&figure(
            "open-outcomes",
            "failed or unknown outcomes",
            self.open_outcomes.len(),
        ));
        b.push_str(&figure(
            "open-tickets",
            "tickets they concern",
            self.open_tickets(),
        ));
        b.push_str(&figure(
            "refused-runs",
            "runs refused by a safety limit",
            self.refused_runs.len(),
        ));
        b.push_str("</div>\n");
        for note in self.unfinished_notes() {
            let _ = writeln!(
                b,
                "<p class=\"bad\" data-figure=\"unfinished-runs\">{}.</p>",
                esc(&capitalised(&note))
            );
        }
        b.push_str("<table><thead><tr><th>rule</th><th>tickets purged</th></tr></thead><tbody>\n");
        for (rule, n) in &self.purged_by_rule {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td class=\"n\" data-figure=\"purged-by-rule\" data-rule=\"{}\">{n}</td></tr>",
                esc(rule),
                esc(rule)
            );
        }
        if self.purged_by_rule.is_empty() {
            b.push_str("<tr><td colspan=\"2\">none</td></tr>\n");
        }
        b.push_str("</tbody></table>\n<p>Runs by status: ");
        let statuses: Vec<String> = self
            .runs_by_status
            .iter()
            .map(|(s, n)| {
                format!(
                    "<span data-figure=\"runs-{}\">{n}</span> {}",
                    esc(s),
                    esc(s)
                )
            })
            .collect();
        b.push_str(&if statuses.is_empty() {
            "none".into()
        } else {
            statuses.join(", ")
        });
        b.push_str("</p>\n<h3>Failures and unknowns, and how each settled</h3>\n");
        if self.open_outcomes.is_empty() {
            b.push_str("<p>None.</p>\n");
        } else {
            b.push_str("<table><thead><tr><th>ticket</th><th>run</th><th>outcome</th><th>when</th><th>why</th><th>settled as</th></tr></thead><tbody>\n");
            for o in &self.open_outcomes {
                let _ = writeln!(
                    b,
                    "<tr class=\"open-row\"><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    o.ticket_id,
                    o.run_id,
                    esc(&o.outcome),
                    esc(&o.recorded_at),
                    esc(o.detail.as_deref().unwrap_or("")),
                    esc(&o.settlement())
                );
            }
            b.push_str("</tbody></table>\n");
        }
        b.push_str("<h3>Runs refused by a safety limit</h3>\n");
        if self.refused_runs.is_empty() {
            b.push_str("<p>None.</p>\n");
        }
        for r in &self.refused_runs {
            let _ = writeln!(
                b,
                "<p>Run {} at {}: {}</p>",
                r.id,
                esc(&r.started_at),
                esc(r.error.as_deref().unwrap_or(""))
            );
        }
        b.push_str("<h3>Tickets held or protected (kept now)</h3>\n");
        if self.kept_now.is_empty() {
            b.push_str("<p>None.</p>\n");
        }
        for k in &self.kept_now {
            let why = match k.decision.as_str() {
                "keep_protected" => "protected id (safety.protect_ids)".to_string(),
                _ => format!("kept by rule {}", k.rule.as_deref().unwrap_or("?")),
            };
            let _ = writeln!(
                b,
                "<p><b data-figure=\"kept\">{}</b> tickets: {}</p>",
                k.tickets,
                esc(&why)
            );
        }
        b
    }

    fn completeness_html(&self) -> String {
        let listed = self.purged.listed;
        let mut b = String::from("<h2>Completeness</h2>\n");
        let _ = writeln!(
            b,
            "<p>This report lists <b data-figure=\"purged-listed\">{listed}</b> purge outcomes: the answer of the query below, which anyone can run against the database (it counts <b data-figure=\"purges-counted\">{}</b>{}). That no purge outcome is missing from the database rests on the hash chain (every chained row is present) and, when signed, on the signed heads; a newest tail removed whole shows only against a head noted elsewhere (<code>audit verify --expect-head</code>).</p>",
            self.purges_counted,
            if listed == self.purges_counted {
                ""
            } else {
                ": <span class=\"bad\">THEY DIFFER</span>"
            }
        );
        let _ = writeln!(
            b,
            "<pre class=\"mono\">{}</pre>",
            esc(self.completeness_query)
        );
        b.push_str(&integrity_html(&self.integrity));
        let _ = writeln!(
            b,
            "<p>Statement: <b data-figure=\"complete\">{}</b>.</p>\n<p class=\"muted\">Check any ticket: <code>zd-retention audit ticket ID --database DB</code> shows each decision, request and outcome with its rule and time; <code>zd-retention audit verify --public-key KEY.pub.pem</code> recomputes the chain and checks every signature.</p>\n<div class=\"sign\"><div>Reviewed by (name, role)</div><div>Date and signature</div></div>",
            esc(&self.statement())
        );
        b
    }

    pub fn markdown(&self) -> String {
        let mut m = format!(
            "# Retention report\n\nPeriod {} to {}. Generated {} by zd-retention.\n\n",
            self.since, self.until, self.generated_at
        );
        if self.runs.is_empty() && self.purged.listed == 0 {
            m.push_str(
                "**No run took place in this period: nothing was purged by zd-retention.**\n\n",
            );
        }
        if let Some(note) = self.records_note() {
            let _ = writeln!(m, "**{note}**\n");
        }
        let _ = writeln!(
            m,
            "## Summary\n\n- runs: {}\n- tickets purged: {}\n- failed or unknown outcomes: {} (tickets: {})\n- runs refused by a safety limit: {}\n",
            self.runs.len(),
            self.purged.listed,
            self.open_outcomes.len(),
            self.open_tickets(),
            self.refused_runs.len()
        );
        for note in self.unfinished_notes() {
            let _ = writeln!(m, "**{}.**\n", capitalised(&note));
        }
        m.push_str("| rule | tickets purged |\n|---|---|\n");
        for (rule, n) in &self.purged_by_rule {
            let _ = writeln!(m, "| {} | {n} |", md(rule));
        }
        m.push_str("\n## Failures and unknowns, and how each settled\n\n");
        if self.open_outcomes.is_empty() {
            m.push_str("None.\n");
        }
        for o in &self.open_outcomes {
            let _ = writeln!(
                m,
                "- ticket {} (run {}): {} at {}; settled as {}",
                o.ticket_id,
                o.run_id,
                o.outcome,
                o.recorded_at,
                o.settlement()
            );
        }
        m.push_str("\n## Runs refused by a safety limit\n\n");
        if self.refused_runs.is_empty() {
            m.push_str("None.\n");
        }
        for r in &self.refused_runs {
            let _ = writeln!(
                m,
                "- run {} at {}: {}",
                r.id,
                r.started_at,
                md(r.error.as_deref().unwrap_or(""))
            );
        }
        m.push_str("\n## Tickets held or protected (kept now)\n\n");
        if self.kept_now.is_empty() {
            m.push_str("None.\n");
        }
        for k in &self.kept_now {
            let _ = writeln!(
                m,
                "- {} tickets: {} {}",
                k.tickets,
                k.decision,
                md(k.rule.as_deref().unwrap_or(""))
            );
        }
        m.push_str("\n## Config versions in force\n\n");
        for v in &self.config_versions {
            let _ = writeln!(
                m,
                "### From {} ({} runs)\n\nConfig `{}`\n",
                v.from, v.runs, v.version.hash
            );
            for r in &v.version.rules {
                let _ = writeln!(m, "- {}", md(r));
            }
            m.push('\n');
        }
        let _ = writeln!(m, "## Purge latency\n\n{}\n", md(&self.latency_sentence()));
        let _ = writeln!(
            m,
            "## Completeness\n\nListed {} purge outcomes; the query counts {}.\n\n```sql\n{}\n```\n\n- hash chain: {}\n- signatures: {}: {}\n- statement: **{}**\n",
            self.purged.listed,
            self.purges_counted,
            self.completeness_query,
            self.integrity.chain.problem.as_deref().unwrap_or("intact"),
            self.integrity.signatures,
            self.integrity.signature_detail,
            self.statement()
        );
        let _ = writeln!(
            m,
            "## Every purge of the period\n\n| ticket | rule | run | job | requested | completed |\n|---|---|---|---|---|---|"
        );
        m.push_str(ROWS_MARK);
        m.push_str("\nCheck any ticket with `zd-retention audit ticket ID`.\n");
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_a_subject_or_rule_could_inject() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(md("a|b\nc"), "a\\|b c");
        assert_eq!(
            md("x\n\n## Completeness <img src=x>"),
            "x  \\#\\# Completeness &lt;img src=x&gt;"
        );
    }

    #[test]
    fn days_cover_the_period_and_values_land_on_their_day() {
        let points = [
            ("2026-11-02", "r1", 3),
            ("2026-11-02", "r2", 1),
            ("2026-11-04", "r1", 2),
        ];
        let (days, series) = per_day(
            "2026-11-01T00:00:00.000Z",
            "2026-11-04T10:00:00.000Z",
            points.iter().map(|(d, r, n)| (*d, *r, *n)),
        );
        assert_eq!(
            days,
            ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
        );
        assert_eq!(series[0], ("r1".to_string(), vec![0, 3, 0, 2]));
        assert_eq!(series[1], ("r2".to_string(), vec![0, 1, 0, 0]));
        let svg = svg_stacked(&days, &series, "chart");
        assert_eq!(
            svg.matches("<rect x").count(),
            3 + 2,
            "three bars and two legend keys"
        );
        assert!(svg.contains("data-value=\"3\""));
    }

    #[test]
    fn a_long_period_starts_at_its_first_figure_and_goes_by_month_when_still_long() {
        let points = [("2025-01-15", "r", 2), ("2026-11-02", "r", 5)];
        let (days, series) = per_day(
            "2016-01-01T00:00:00.000Z",
            "2026-11-04T00:00:00.000Z",
            points.iter().map(|(d, r, n)| (*d, *r, *n)),
        );
        assert_eq!(days.first().unwrap(), "2025-01");
        assert_eq!(days.last().unwrap(), "2026-11");
        assert_eq!(series[0].1.iter().sum::<i64>(), 7, "no figure dropped");
        let (days, series) = per_day(
            "2016-01-01T00:00:00.000Z",
            "2026-11-04T00:00:00.000Z",
            [("2026-11-02", "r", 5)].into_iter(),
        );
        assert_eq!(days.first().unwrap(), "2026-11-02");
        assert_eq!(series[0].1.iter().sum::<i64>(), 5);
        // no figure at all over a century: a bounded chart, not 36,000 days
        let (days, series) = per_day(
            "1926-01-01T00:00:00.000Z",
            "2026-11-04T00:00:00.000Z",
            std::iter::empty(),
        );
        assert!(days.len() <= 401, "{}", days.len());
        assert!(series.is_empty());
    }
}

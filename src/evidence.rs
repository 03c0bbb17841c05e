//! Evidence for people who sign off: a deletion certificate per run and a
//! report per period, gathered through the audit store's queries (no SQL
//! here, and no rendering: `crate::render` writes them as text, JSON,
//! Markdown or one self-contained HTML page).
//!
//! A document's purged tickets are not held: [`PurgedRows`] counts them,
//! and the store's [`PurgeListing`] that comes with each document streams
//! them when it is written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{
    AuditStore, ChainHead, ChainReport, ChainVerifier, ConfigVersion, DayRuleCount, DayStatusCount,
    KeptCount, OpenOutcome, PURGES_OF_PERIOD_SQL, PurgeListing, PurgeScope, RunOriginRow, RunRow,
    RunStatus, SendWindows,
};
use crate::ids::RunId;

/// The method every purge uses.
pub const METHOD: &str = "Zendesk API permanent deletion of soft-deleted tickets";
pub const ENDPOINT: &str = "DELETE /api/v2/deleted_tickets/destroy_many?ids=…, followed by GET /api/v2/job_statuses/show_many until the job ends";
const VERIFIED_HOW: &str = "Each id was sent only after a fresh listing showed it still soft-deleted with the same deletion; the request was recorded before it was sent and Zendesk's answer right after; a ticket counts as purged only when its job ended `completed` with every id succeeded.";

/// A document's purged tickets, as its figures see them: how many the
/// listing holds and whether any has a subject. Serialised (by
/// `crate::render`) as the mark the rows are streamed into.
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

    /// Nothing found wrong (signatures may be unchecked or absent: the
    /// `signatures` field says which).
    pub fn holds(&self) -> bool {
        self.chain.problem.is_none() && !matches!(self.signatures, "failed" | "unverifiable")
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
            crate::human::window_text(std::time::Duration::from_micros(us.max(0) as u64)),
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
    /// running, and nothing was found wrong with the records (the report's
    /// statement says so only then).
    pub fn complete(&self) -> bool {
        self.listed_in_full() && self.integrity.holds() && self.still_running().is_none()
    }

    /// The listing holds every purge outcome the query counts.
    pub fn listed_in_full(&self) -> bool {
        self.purges_counted == self.purged.listed
    }

    /// The runs of the period with `status` among the unfinished ones, as
    /// "run 4" or "runs 4, 7", and whether there are several.
    pub fn unfinished(&self, status: RunStatus) -> Option<(String, bool)> {
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
    /// The distinct tickets of the failed and unknown outcomes.
    pub fn open_tickets(&self) -> usize {
        self.open_outcomes
            .iter()
            .map(|o| o.ticket_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }
}

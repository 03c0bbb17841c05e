//! Each `audit` query's answer as the command writes it: a table for
//! people, JSON or CSV for scripts. A command gathers through the store
//! and calls one function here; what it returns goes to standard output
//! as it is.

use std::fmt::Write as _;
use std::time::Duration;

use super::rows::{TableFormat, csv_rows, rows_text, table};
use crate::audit::{
    ChainHead, ChainReport, ConfigVersion, DayRuns, JobRow, ListingMarks, RunOriginRow, RunRow,
    SearchRow, SignatureReport, StatRow, StepKind, TicketEvent,
};
use crate::zendesk::TicketId;

/// `audit runs`.
pub fn runs_table(runs: &[RunRow], format: TableFormat) -> anyhow::Result<String> {
    rows_text(runs, format, |runs| {
        let mut t = table(&[
            "run", "trigger", "started", "mode", "status", "scanned", "matched", "purged",
            "failed", "unknown",
        ]);
        for r in runs {
            t.add_row(vec![
                r.id.to_string(),
                r.trigger.to_string(),
                r.started_at.clone(),
                if r.dry_run {
                    "dry run".into()
                } else {
                    "live".into()
                },
                r.status.to_string(),
                r.scanned.to_string(),
                r.matched.to_string(),
                r.purged.to_string(),
                r.failed.to_string(),
                r.unknown.to_string(),
            ]);
        }
        format!("{t}\n")
    })
}

/// What `audit run` gathered about one run.
pub struct RunDetails<'a> {
    pub run: &'a RunRow,
    /// Decisions per kind and rule.
    pub decisions: &'a [(String, Option<String>, i64)],
    /// Outcomes per kind.
    pub outcomes: &'a [(String, i64)],
    pub jobs: &'a [JobRow],
    /// `None` for a run recorded before config versions were stored.
    pub version: Option<&'a ConfigVersion>,
    pub origin: &'a RunOriginRow,
    pub head: Option<&'a ChainHead>,
}

/// `audit run`.
pub fn run_details(d: &RunDetails<'_>, format: TableFormat) -> anyhow::Result<String> {
    Ok(match format {
        TableFormat::Csv => {
            #[derive(serde::Serialize)]
            struct Row<'a> {
                decision: &'a str,
                rule: Option<&'a str>,
                count: i64,
            }
            let rows: Vec<Row> = d
                .decisions
                .iter()
                .map(|(decision, rule, n)| Row {
                    decision,
                    rule: rule.as_deref(),
                    count: *n,
                })
                .collect();
            csv_rows(&rows)?
        }
        TableFormat::Json => {
            let decisions: Vec<_> = d
                .decisions
                .iter()
                .map(|(d, r, n)| serde_json::json!({"decision": d, "rule": r, "count": n}))
                .collect();
            let outcomes: Vec<_> = d
                .outcomes
                .iter()
                .map(|(o, n)| serde_json::json!({"outcome": o, "count": n}))
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({
                "run": d.run,
                "ran_by": d.origin,
                "config_version": d.version,
                "chain_head": d.head,
                "decisions": decisions,
                "outcomes": outcomes,
                "jobs": d.jobs
            }))? + "\n"
        }
        TableFormat::Table => {
            let mut out = run_tables(d.run, d.decisions, d.outcomes, d.jobs);
            let run = d.run;
            match d.version {
                Some(v) => writeln!(
                    out,
                    "config version {} (first used by run {}): zd-retention audit config {} shows it",
                    v.hash,
                    v.first_run,
                    &v.hash[..12.min(v.hash.len())]
                )?,
                None => writeln!(
                    out,
                    "config {}: its settings were not stored (a run before config versions were kept)",
                    run.config_hash
                )?,
            }
            if let Some(program) = &d.origin.program_version {
                writeln!(
                    out,
                    "ran by {} on {}, {program}",
                    d.origin.os_user.as_deref().unwrap_or("?"),
                    d.origin.host.as_deref().unwrap_or("?")
                )?;
            }
            if let Some(h) = d.head {
                writeln!(
                    out,
                    "chain head at its end: entry {} {}, {}",
                    h.seq,
                    h.head,
                    if h.signature.is_some() {
                        "signed"
                    } else {
                        "unsigned"
                    }
                )?;
            }
            out
        }
    })
}

/// `audit run` as tables: the run's figures, decisions per rule, outcomes
/// and its requests.
fn run_tables(
    run: &RunRow,
    decisions: &[(String, Option<String>, i64)],
    outcomes: &[(String, i64)],
    jobs: &[JobRow],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {} ({}, {}): {} from {} to {}",
        run.id,
        run.trigger,
        if run.dry_run { "dry run" } else { "live" },
        run.status,
        run.started_at,
        run.finished_at.as_deref().unwrap_or("(not finished)")
    );
    let _ = writeln!(
        out,
        "  scanned {}, matched {}, purged {}, failed {}, unknown {}; {} list requests{}; config {}",
        run.scanned,
        run.matched,
        run.purged,
        run.failed,
        run.unknown,
        run.list_requests,
        match (
            run.step.as_ref().and_then(|s| s.known()),
            run.scan.as_ref(),
            run.early_stop,
        ) {
            (Some(StepKind::Refresh), _, _) => ", a refresh (the newest deletions)".to_string(),
            (Some(StepKind::Reconcile), _, _) => ", a reconcile (the whole view)".to_string(),
            (_, _, true) => ", sorted scan stopped early".to_string(),
            (_, Some(scan), false) => format!(", {scan} scan"),
            (_, None, false) => String::new(),
        },
        &run.config_hash[..12.min(run.config_hash.len())]
    );
    if let Some(reason) = &run.scan_reason {
        let _ = writeln!(out, "  scan: {reason}");
    }
    if let Some(n) = run.decisions_recorded {
        let _ = writeln!(
            out,
            "  {n} decisions recorded (first sightings and changes; the ledger holds the rest)"
        );
    }
    if let Some(ms) = run.max_listing_age_ms {
        let _ = writeln!(
            out,
            "  at most {} between a ticket's last listing and its destroy_many",
            crate::human::duration(Duration::from_millis(ms as u64))
        );
    }
    if let Some(e) = &run.error {
        let _ = writeln!(out, "  error: {e}");
    }
    let mut t = table(&["decision", "rule", "tickets"]);
    for (d, r, n) in decisions {
        t.add_row(vec![
            d.clone(),
            r.clone().unwrap_or_default(),
            n.to_string(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    if !outcomes.is_empty() {
        let mut t = table(&["outcome", "tickets"]);
        for (o, n) in outcomes {
            t.add_row(vec![o.clone(), n.to_string()]);
        }
        let _ = writeln!(out, "{t}");
    }
    if !jobs.is_empty() {
        let mut t = table(&[
            "request",
            "kind",
            "zendesk job",
            "tickets",
            "recorded",
            "status",
            "message",
        ]);
        for j in jobs {
            t.add_row(vec![
                j.id.to_string(),
                j.kind.to_string(),
                j.zendesk_job_id.clone().unwrap_or_default(),
                j.ticket_count.to_string(),
                j.recorded_at.clone(),
                j.status.to_string(),
                j.message.clone().unwrap_or_default(),
            ]);
        }
        let _ = writeln!(out, "{t}");
    }
    out
}

/// `audit search`.
pub fn search_table(rows: &[SearchRow], format: TableFormat) -> anyhow::Result<String> {
    rows_text(rows, format, |rows| {
        let mut t = table(&[
            "decided", "run", "ticket", "decision", "rule", "actor", "outcome", "detail",
        ]);
        for r in rows {
            t.add_row(vec![
                r.at.clone(),
                r.run_id.to_string(),
                r.ticket_id.to_string(),
                r.decision.clone(),
                r.rule.clone().unwrap_or_default(),
                r.actor_id.map(|a| a.to_string()).unwrap_or_default(),
                r.outcome.clone().unwrap_or_default(),
                r.detail.clone().unwrap_or_default(),
            ]);
        }
        format!("{t}\n")
    })
}

/// `audit ledger`: tickets per state and the listing marks.
pub fn ledger(
    counts: &[(String, i64)],
    marks: &ListingMarks,
    format: TableFormat,
) -> anyhow::Result<String> {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(crate::audit::timestamp);
    Ok(match format {
        TableFormat::Json | TableFormat::Csv => format!(
            "{}\n",
            serde_json::json!({
                "tickets": counts.iter().map(|(s, n)| (s.clone(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
                "high_water": time(marks.high_water),
                "last_reconcile": time(marks.last_reconcile),
            })
        ),
        TableFormat::Table => {
            let mut t = table(&["state", "tickets"]);
            for (state, n) in counts {
                t.add_row(vec![state.clone(), n.to_string()]);
            }
            format!(
                "{t}\nnewest deletion known (high-water mark): {}\nlast whole walk of the view began: {}\n",
                time(marks.high_water).unwrap_or_else(|| "none yet".into()),
                time(marks.last_reconcile).unwrap_or_else(|| "never".into())
            )
        }
    })
}

/// `audit head`.
pub fn chain_head(seq: i64, hash: &str, format: TableFormat) -> String {
    match format {
        TableFormat::Json | TableFormat::Csv => {
            format!("{}\n", serde_json::json!({"entry": seq, "hash": hash}))
        }
        TableFormat::Table => format!("chain head: entry {seq}, hash {hash}\n"),
    }
}

/// What `audit verify` found: the chain (its problem, if any, includes
/// the signatures'), the signatures when keys were given, whether the keys
/// could not check them, and whether the records are signed at all.
pub struct Verification<'a> {
    pub chain: &'a ChainReport,
    pub signatures: Option<&'a SignatureReport>,
    /// The keys given cannot check the records (no tampering shown).
    pub unverifiable: bool,
    /// Chain heads are signed (asked only when no key was given).
    pub signed: bool,
}

/// `audit verify`.
pub fn verify_result(v: &Verification<'_>, format: TableFormat) -> anyhow::Result<String> {
    let report = v.chain;
    Ok(match format {
        TableFormat::Json | TableFormat::Csv => {
            serde_json::to_string_pretty(
                &serde_json::json!({"chain": report, "signatures": v.signatures}),
            )? + "\n"
        }
        TableFormat::Table => match (&report.problem, v.unverifiable) {
            (Some(p), true) => format!("signatures NOT verified: {p}\n"),
            (Some(p), false) => format!("audit log TAMPERED: {p}\n"),
            (None, _) => {
                let intact = format!(
                    "audit log intact: {} chain entries over {} rows; head {}\n",
                    report.entries, report.rows, report.head
                );
                let signatures = match v.signatures {
                    Some(s) if s.before_signing == 0 => format!(
                        "signatures hold: {} signed chain heads verify with key {}, every entry covered",
                        s.signed, s.key_id
                    ),
                    Some(s) => format!(
                        "signatures hold: {} signed chain heads verify with key {}; entries 1 to {} precede the first signed head ({}): the signature vouches for them as they stood then, not as they were written",
                        s.signed,
                        s.key_id,
                        s.before_signing,
                        s.signing_began
                            .as_ref()
                            .map(|(at, run)| format!(
                                "made at {at}{}",
                                run.map(|r| format!(" by run {r}")).unwrap_or_default()
                            ))
                            .unwrap_or_default()
                    ),
                    None if v.signed => {
                        "chain heads are signed: pass --public-key FILE to check the signatures"
                            .to_string()
                    }
                    None => "records are unsigned ([audit] signing_key_file is not set): a rewrite that recomputes the chain is not detected".to_string(),
                };
                format!("{intact}{signatures}\n")
            }
        },
    })
}

/// `audit export`'s writer, a row at a time as the store streams them:
/// each decision a JSON line, or a CSV row (one CSV writer for the whole
/// stream: its header once).
pub enum ExportWriter<W: std::io::Write> {
    Jsonl(W),
    /// Boxed: the CSV writer holds its own buffer.
    Csv(Box<csv::Writer<W>>),
}

impl<W: std::io::Write> ExportWriter<W> {
    pub fn jsonl(out: W) -> Self {
        ExportWriter::Jsonl(out)
    }

    pub fn csv(out: W) -> Self {
        ExportWriter::Csv(Box::new(csv::Writer::from_writer(out)))
    }

    /// Writes one decision.
    pub fn write(&mut self, row: &SearchRow) -> anyhow::Result<()> {
        match self {
            ExportWriter::Jsonl(out) => writeln!(out, "{}", serde_json::to_string(row)?)?,
            ExportWriter::Csv(out) => out.serialize(row)?,
        }
        Ok(())
    }

    /// Flushes what is still buffered.
    pub fn finish(self) -> anyhow::Result<()> {
        match self {
            ExportWriter::Jsonl(mut out) => out.flush()?,
            ExportWriter::Csv(mut out) => out.flush()?,
        }
        Ok(())
    }
}

/// `audit stats --by day`: purges selected per day and rule, then runs
/// per day.
pub fn stats_by_day(
    selected: &[StatRow],
    runs: &[DayRuns],
    format: TableFormat,
) -> anyhow::Result<String> {
    Ok(match format {
        TableFormat::Csv => csv_rows(selected)?,
        TableFormat::Json => {
            serde_json::to_string_pretty(
                &serde_json::json!({"purges_by_rule": selected, "runs": runs}),
            )? + "\n"
        }
        TableFormat::Table => {
            let mut t = table(&["day", "rule", "selected for purge"]);
            for r in selected {
                t.add_row(vec![
                    r.key.clone(),
                    r.rule.clone().unwrap_or_default(),
                    r.count.to_string(),
                ]);
            }
            let mut days = table(&[
                "day",
                "runs",
                "failed runs",
                "scanned",
                "matched",
                "purged",
                "failed",
            ]);
            for d in runs {
                days.add_row(vec![
                    d.day.clone(),
                    d.runs.to_string(),
                    d.failed_runs.to_string(),
                    d.scanned.to_string(),
                    d.matched.to_string(),
                    d.purged.to_string(),
                    d.failed.to_string(),
                ]);
            }
            format!("{t}\n{days}\n")
        }
    })
}

/// `audit stats --by rule` (`by_rule`) or `--by outcome`.
pub fn stats_rows(rows: &[StatRow], by_rule: bool, format: TableFormat) -> anyhow::Result<String> {
    rows_text(rows, format, |rows| {
        let header: &[&str] = if by_rule {
            &["rule", "decision", "tickets"]
        } else {
            &["outcome", "", "tickets"]
        };
        let mut t = table(header);
        for r in rows {
            if by_rule {
                t.add_row(vec![
                    r.rule.clone().unwrap_or_else(|| "(none)".into()),
                    r.key.clone(),
                    r.count.to_string(),
                ]);
            } else {
                t.add_row(vec![r.key.clone(), String::new(), r.count.to_string()]);
            }
        }
        format!("{t}\n")
    })
}

/// `audit ticket`: one ticket's story.
pub fn ticket_history(
    ticket_id: TicketId,
    events: &[TicketEvent],
    format: TableFormat,
) -> anyhow::Result<String> {
    rows_text(events, format, |events| {
        if events.is_empty() {
            return format!("ticket {ticket_id}: nothing recorded\n");
        }
        let mut t = table(&["at", "run", "event", "what", "rule", "job", "detail"]);
        for e in events {
            t.add_row(vec![
                e.at.clone(),
                e.run_id.to_string(),
                e.kind.clone(),
                e.what.clone(),
                e.rule.clone().unwrap_or_default(),
                e.job.clone().unwrap_or_default(),
                e.detail.clone().unwrap_or_default(),
            ]);
        }
        format!("ticket {ticket_id}\n{t}\n")
    })
}

/// `audit config HASH`: a stored config version, read back for people.
pub fn config_version(version: &ConfigVersion, format: TableFormat) -> anyhow::Result<String> {
    Ok(match format {
        TableFormat::Table => {
            let words = crate::evidence::VersionInWords::of(&version.hash, Some(version.clone()));
            let mut out = format!(
                "config {}\nfirst used {} by run {}\n",
                version.hash, version.first_used, version.first_run
            );
            if let Some(account) = &words.account {
                writeln!(out, "account    {account}")?;
            }
            for rule in &words.rules {
                writeln!(out, "rule       {rule}")?;
            }
            writeln!(out, "{}", version.settings)?;
            out
        }
        _ => serde_json::to_string_pretty(version)? + "\n",
    })
}

/// `audit keygen`: where the two halves went, and the key's id.
pub fn keygen_written(private: &std::path::Path, public: &std::path::Path, key_id: &str) -> String {
    format!(
        "wrote the private key to {} (mode 0600): set [audit] signing_key_file to it\nwrote the public key to  {}: keep a copy away from this machine; `audit verify --public-key` checks with it\nkey id                   {}\n",
        private.display(),
        public.display(),
        key_id
    )
}

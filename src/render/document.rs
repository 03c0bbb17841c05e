//! The evidence documents in words: a certificate as text, a period's
//! report as Markdown, and the sentences both share with the pages (the
//! statement a report makes, its notes on unfinished runs, its latency).
//! Each is rendered with the mark where its purged tickets go
//! ([`super::stream`]). Knows no SQL: the documents come gathered
//! ([`crate::evidence`]).

use std::fmt::Write as _;

use super::escape::{capitalised, md};
use super::stream::ROWS_MARK;
use crate::audit::{OpenOutcome, RunStatus};
use crate::evidence::{Certificate, Integrity, PeriodReport};

/// What may be said of the records, in one line.
pub(super) fn integrity_statement(i: &Integrity) -> &'static str {
    match (i.holds(), i.signatures) {
        (false, _) => "NOT intact: see above",
        (true, "verified") if i.before_signing == 0 => "intact, and signed by the key holder",
        (true, "verified") => {
            "intact, and signed by the key holder since signing began (earlier entries as they stood then)"
        }
        (true, "not_checked") => "intact as far as the chain shows; signatures not checked",
        (true, _) => "intact as far as the chain shows; the records are unsigned",
    }
}

/// One sentence for each kind of run that had not ended normally: a
/// running one (its outcomes may still be missing), an interrupted one.
pub(super) fn unfinished_notes(report: &PeriodReport) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some((runs, many)) = report.unfinished(RunStatus::Running) {
        let (was, its) = if many {
            ("were", "their")
        } else {
            ("was", "its")
        };
        notes.push(format!(
            "{runs} {was} still running when this report was made (or stopped without a later start closing it): {its} outcomes may be incomplete"
        ));
    }
    if let Some((runs, many)) = report.unfinished(RunStatus::Interrupted) {
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

/// The report's statement, in one line: it claims completeness only when
/// [`PeriodReport::complete`] holds, and names every run that had not
/// ended normally.
pub(super) fn report_statement(report: &PeriodReport) -> String {
    if !report.listed_in_full() || !report.integrity.holds() {
        return "NOT complete or NOT intact: see above".to_string();
    }
    let records = integrity_statement(&report.integrity);
    let notes = unfinished_notes(report).join("; ");
    if report.still_running().is_some() {
        format!(
            "NOT final: {notes}; every purge outcome recorded in the period until then is listed; the records are {records}"
        )
    } else if notes.is_empty() {
        format!("every purge outcome recorded in the period is listed; the records are {records}")
    } else {
        format!(
            "every purge outcome recorded in the period is listed; {notes}; the records are {records}"
        )
    }
}

/// Where the records begin, when the period starts before them.
pub(super) fn records_note(report: &PeriodReport) -> Option<String> {
    match &report.records_begin {
        Some(first) if *first > report.since => Some(format!(
            "The audit records begin at {first} (the first run in this database): nothing before it is recorded here."
        )),
        None => Some("This audit database holds no run at all.".to_string()),
        _ => None,
    }
}

/// The purge latency of the period in a sentence.
pub(super) fn latency_sentence(report: &PeriodReport) -> String {
    let l = &report.latency;
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

/// How a failed or unknown outcome settled, in words.
pub(super) fn settlement(o: &OpenOutcome) -> String {
    match (o.settled_as.as_deref(), o.settled_at.as_deref()) {
        (Some(s @ ("failed" | "unknown" | "not_sent")), Some(at)) => {
            format!("still open (latest: {s} at {at})")
        }
        (Some(s), Some(at)) => format!("{s} at {at}"),
        _ => "still open".into(),
    }
}

/// A certificate as text, its purged tickets at the mark.
pub fn certificate_text(cert: &Certificate) -> String {
    let r = &cert.run;
    let mut t = format!("Certificate of deletion: run {}\n", r.id);
    for c in &cert.caveats {
        let _ = writeln!(t, "  NOTE: {c}");
    }
    let _ = writeln!(
        t,
        "  account     {}",
        cert.config.account.as_deref().unwrap_or("(not recorded)")
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
        cert.ran_by.host.as_deref().unwrap_or("?"),
        cert.ran_by.os_user.as_deref().unwrap_or("?"),
        cert.ran_by
            .program_version
            .as_deref()
            .unwrap_or("(not recorded)")
    );
    let _ = writeln!(t, "  config      {}", cert.config.hash);
    for rule in &cert.config.rules {
        let _ = writeln!(t, "    rule      {rule}");
    }
    let _ = writeln!(t, "  method      {}: {}", cert.method, cert.endpoint);
    let _ = writeln!(t, "  residual    {}", cert.residual);
    let _ = writeln!(
        t,
        "  figures     {} examined, {} selected, {} purged, {} failed, {} unknown",
        r.scanned, r.matched, r.purged, r.failed, r.unknown
    );
    t.push_str(ROWS_MARK);
    match &cert.chain_head {
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
        cert.integrity.chain.problem.as_deref().unwrap_or("intact")
    );
    let _ = writeln!(
        t,
        "  signatures  {}: {}",
        cert.integrity.signatures, cert.integrity.signature_detail
    );
    t
}

/// A period's report as Markdown, its purged tickets at the mark.
pub fn report_markdown(report: &PeriodReport) -> String {
    let mut m = format!(
        "# Retention report\n\nPeriod {} to {}. Generated {} by zd-retention.\n\n",
        report.since, report.until, report.generated_at
    );
    if report.runs.is_empty() && report.purged.listed == 0 {
        m.push_str("**No run took place in this period: nothing was purged by zd-retention.**\n\n");
    }
    if let Some(note) = records_note(report) {
        let _ = writeln!(m, "**{note}**\n");
    }
    let _ = writeln!(
        m,
        "## Summary\n\n- runs: {}\n- tickets purged: {}\n- failed or unknown outcomes: {} (tickets: {})\n- runs refused by a safety limit: {}\n",
        report.runs.len(),
        report.purged.listed,
        report.open_outcomes.len(),
        report.open_tickets(),
        report.refused_runs.len()
    );
    for note in unfinished_notes(report) {
        let _ = writeln!(m, "**{}.**\n", capitalised(&note));
    }
    m.push_str("| rule | tickets purged |\n|---|---|\n");
    for (rule, n) in &report.purged_by_rule {
        let _ = writeln!(m, "| {} | {n} |", md(rule));
    }
    m.push_str("\n## Failures and unknowns, and how each settled\n\n");
    if report.open_outcomes.is_empty() {
        m.push_str("None.\n");
    }
    for o in &report.open_outcomes {
        let _ = writeln!(
            m,
            "- ticket {} (run {}): {} at {}; settled as {}",
            o.ticket_id,
            o.run_id,
            o.outcome,
            o.recorded_at,
            settlement(o)
        );
    }
    m.push_str("\n## Runs refused by a safety limit\n\n");
    if report.refused_runs.is_empty() {
        m.push_str("None.\n");
    }
    for r in &report.refused_runs {
        let _ = writeln!(
            m,
            "- run {} at {}: {}",
            r.id,
            r.started_at,
            md(r.error.as_deref().unwrap_or(""))
        );
    }
    m.push_str("\n## Tickets held or protected (kept now)\n\n");
    if report.kept_now.is_empty() {
        m.push_str("None.\n");
    }
    for k in &report.kept_now {
        let _ = writeln!(
            m,
            "- {} tickets: {} {}",
            k.tickets,
            k.decision,
            md(k.rule.as_deref().unwrap_or(""))
        );
    }
    m.push_str("\n## Config versions in force\n\n");
    for v in &report.config_versions {
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
    let _ = writeln!(m, "## Purge latency\n\n{}\n", md(&latency_sentence(report)));
    let _ = writeln!(
        m,
        "## Completeness\n\nListed {} purge outcomes; the query counts {}.\n\n```sql\n{}\n```\n\n- hash chain: {}\n- signatures: {}: {}\n- statement: **{}**\n",
        report.purged.listed,
        report.purges_counted,
        report.completeness_query,
        report
            .integrity
            .chain
            .problem
            .as_deref()
            .unwrap_or("intact"),
        report.integrity.signatures,
        report.integrity.signature_detail,
        report_statement(report)
    );
    let _ = writeln!(
        m,
        "## Every purge of the period\n\n| ticket | rule | run | job | requested | completed |\n|---|---|---|---|---|---|"
    );
    m.push_str(ROWS_MARK);
    m.push_str("\nCheck any ticket with `zd-retention audit ticket ID`.\n");
    m
}

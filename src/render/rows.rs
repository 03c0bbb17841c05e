//! Run summaries, plans, probe findings, and rows as a table (comfy-table),
//! JSON or CSV (the `csv` crate, columns in the row type's field order, the
//! header once). Knows neither the command line nor SQL.

use std::fmt::Write as _;
use std::time::Duration;

use comfy_table::Table;

use crate::audit::StepKind;
use crate::cycle::CycleReport;
use crate::rules::Policy;
use crate::zendesk::TicketId;

/// How a table of rows is printed: for people, or for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Table,
    Json,
    Csv,
}

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

fn kept_label(kind: &str) -> &str {
    match kind {
        "keep_rule" => "by a keep rule",
        "keep_no_rule" => "no rule matched",
        "keep_protected" => "protected id",
        "keep_too_young" => "younger than min_age",
        "keep_unknown_age" => "deletion time unknown",
        "keep_id_out_of_range" => "id above 2^63-1 (not recorded)",
        other => other,
    }
}

/// What `probe` found, as a table for a person.
pub fn probe_table(f: &crate::zendesk::probe::ProbeFindings) -> String {
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes".to_string(),
        Some(false) => "no".to_string(),
        None => "not seen".to_string(),
    };
    let mut t = table(&["check", "finding"]);
    let rows: Vec<(&str, String)> = vec![
        ("account", f.base_url.clone()),
        ("credentials (GET users/me)", f.credentials.clone()),
        ("role", f.role.clone().unwrap_or_else(|| "unknown".into())),
        (
            "account limit (requests/minute)",
            f.account_limit
                .map_or("no header".to_string(), |l| l.to_string()),
        ),
        (
            "rate-limit headers",
            if f.rate_limit_headers.is_empty() {
                "none".to_string()
            } else {
                f.rate_limit_headers.join(", ")
            },
        ),
        (
            "listing deleted tickets",
            f.listing_error
                .clone()
                .map_or("ok".to_string(), |e| format!("failed: {e}")),
        ),
        ("cursor listing, sort_by=deleted_at", f.cursor_sort.words()),
        (
            "cursor page 2 keeps the order",
            yes_no(f.cursor_later_page_in_order),
        ),
        (
            "links.next carries sort_by",
            yes_no(f.cursor_next_link_keeps_sort),
        ),
        ("offset listing, sort_by=deleted_at", f.offset_sort.words()),
        ("show_many, unknown job id", f.unknown_job_id.clone()),
        ("active-ticket lookup", f.active_lookup.clone()),
        (
            "first page",
            format!(
                "{} tickets{}",
                f.first_page_tickets,
                if f.more_pages { ", more pages" } else { "" }
            ),
        ),
        (
            "oldest deletion in the view",
            f.oldest_deletion_days
                .map_or("unknown (no sorted listing)".to_string(), |d| {
                    format!("{d} days ago")
                }),
        ),
        (
            "view changed during the probe",
            yes_no(f.view_changed_during_probe),
        ),
    ];
    for (check, finding) in rows {
        t.add_row(vec![check.to_string(), finding]);
    }
    let mut out = format!("{t}\n");
    for line in &f.advice {
        let _ = writeln!(out, "- {line}");
    }
    out
}

/// A summary's lines under `matched`: each purge rule's count, then a dry
/// run's pending total.
fn matched_lines(out: &mut String, report: &CycleReport, policy: &Policy) {
    for rule in policy.purge_rules() {
        let n = report.matched_by_rule.get(&rule.name).copied().unwrap_or(0);
        let _ = writeln!(out, "    {:<28} {n:>7}", rule.name);
    }
    if let Some(n) = report.would_purge_in_ledger {
        let _ = writeln!(
            out,
            "  pending    {n} would purge in all: the ledger's tickets a rule selects, from every run (a dry run decides a ticket again only when a threshold or the config moved it)"
        );
    }
}

/// A run's summary for a person.
pub fn summary(report: &CycleReport, policy: &Policy) -> String {
    let c = &report.counts;
    let mut out = String::new();
    let mode = if report.dry_run { "dry run" } else { "live" };
    let _ = writeln!(
        out,
        "run {} ({mode}): {}",
        report.run_id,
        report.status.as_str()
    );
    let scan_note = match report.step {
        StepKind::Refresh => " (the newest deletions)",
        StepKind::Backlog => " (oldest first, up to the youngest purgeable age)",
        StepKind::Reconcile => " (the whole view)",
    };
    let _ = writeln!(
        out,
        "  scanned    {} tickets in {} list requests{scan_note}",
        c.scanned, c.list_requests
    );
    if report.decided_from_ledger > 0 {
        let _ = writeln!(
            out,
            "  ledger     {} more tickets decided from the ledger, without a listing",
            report.decided_from_ledger
        );
    }
    let _ = writeln!(
        out,
        "  recorded   {} decisions (first sightings and changes)",
        report.decisions_recorded
    );
    let _ = writeln!(out, "  scan       {}: {}", report.scan, report.scan_reason);
    if report.already_in_flight > 0 {
        let _ = writeln!(
            out,
            "  in flight  {} selected tickets are in purge jobs an earlier process sent: those jobs were followed, nothing sent again",
            report.already_in_flight
        );
    }
    if report.relisted > 0 || report.changed_during_scan > 0 {
        let _ = writeln!(
            out,
            "  changed    {} listed again during the scan; {} not purged because they changed (listed twice with other data, or deleted again)",
            report.relisted, report.changed_during_scan
        );
    }
    let verb = if report.dry_run {
        "would purge"
    } else {
        "selected for purge"
    };
    let _ = writeln!(out, "  matched    {} {verb}", c.matched);
    matched_lines(&mut out, report, policy);
    let kept: u64 = report.kept.values().sum();
    let _ = writeln!(out, "  kept       {kept}");
    for (kind, n) in &report.kept {
        let _ = writeln!(out, "    {:<28} {n:>7}", kept_label(kind));
    }
    if !report.dry_run {
        let _ = writeln!(
            out,
            "  purged     {} in {} destroy_many jobs; {} failed, {} unknown (settled by the next whole walk), {} not sent",
            c.purged, report.purge_batches, c.failed, c.unknown, report.not_sent
        );
    }
    if let Some(age) = report.max_listing_age {
        let _ = writeln!(
            out,
            "  freshness  at most {} between a ticket's last listing and its destroy_many",
            crate::human::duration(Duration::from_millis(age.as_millis() as u64))
        );
    }
    window_line(&mut out, report);
    scale_lines(&mut out, report);
    let settled = report.not_effective
        + report.left_view
        + report.confirmed_gone
        + report.restored_elsewhere
        + report.scrubbed_by_zendesk
        + report.unsettled_lookup_failed;
    if settled > 0 {
        let _ = writeln!(
            out,
            "  checked    earlier purges and unknown outcomes: {} confirmed gone (listed no more, not active), {} restored elsewhere (active again), {} scrubbed by Zendesk, {} still listed (decided again), {} left open for a later run; {} kept tickets left the view",
            report.confirmed_gone,
            report.restored_elsewhere,
            report.scrubbed_by_zendesk,
            report.not_effective,
            report.unsettled_lookup_failed,
            report.left_view
        );
    }
    let requests: Vec<String> = report
        .requests
        .requests
        .iter()
        .map(|(e, by)| format!("{e} {}", by.values().sum::<u64>()))
        .collect();
    let _ = writeln!(
        out,
        "  requests   {} ({} rate-limited, {} retried, {:.1}s waiting on rate limits)",
        if requests.is_empty() {
            "none".to_string()
        } else {
            requests.join(", ")
        },
        report.requests.rate_limited,
        report.requests.retries,
        report.requests.pacing_wait.as_secs_f64()
    );
    let _ = writeln!(out, "  time       {:.1}s", report.duration.as_secs_f64());
    if let Some(e) = &report.error {
        let _ = writeln!(out, "  error      {e}");
    }
    out
}

/// Rows as JSON (one array), as CSV ([`csv_rows`]), or for people as
/// `people` writes them.
pub fn rows_text<T: serde::Serialize>(
    rows: &[T],
    format: TableFormat,
    people: impl FnOnce(&[T]) -> String,
) -> anyhow::Result<String> {
    Ok(match format {
        TableFormat::Json => serde_json::to_string_pretty(rows)? + "\n",
        TableFormat::Csv => csv_rows(rows)?,
        TableFormat::Table => people(rows),
    })
}

/// One ticket as `list` prints it, the columns in this order.
#[derive(Debug, serde::Serialize)]
pub struct ListedTicketRow {
    pub id: TicketId,
    pub deleted_at: Option<String>,
    pub actor_id: Option<u64>,
    pub actor_name: Option<String>,
    pub previous_state: Option<String>,
    pub subject: Option<String>,
}

impl ListedTicketRow {
    pub fn of(t: &crate::ticket::Ticket) -> Self {
        let actor = t.actor.as_ref();
        ListedTicketRow {
            id: t.id,
            deleted_at: t.deleted_at.map(|d| d.to_rfc3339()),
            actor_id: actor.and_then(|a| a.id),
            actor_name: actor.and_then(|a| a.name.clone()),
            previous_state: t.previous_state.clone(),
            subject: t.subject.clone(),
        }
    }
}

/// `list`'s table.
fn tickets_table(tickets: &[ListedTicketRow]) -> Table {
    let mut t = table(&[
        "id",
        "deleted at",
        "deleted by",
        "previous state",
        "subject",
    ]);
    for r in tickets {
        t.add_row([
            r.id.to_string(),
            r.deleted_at
                .as_deref()
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
                .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "?".into()),
            r.actor_name
                .clone()
                .or(r.actor_id.map(|i| i.to_string()))
                .unwrap_or_default(),
            r.previous_state.clone().unwrap_or_default(),
            r.subject.clone().unwrap_or_else(|| "(none)".into()),
        ]);
    }
    t
}

/// `list`'s output.
pub fn listed_tickets(tickets: &[ListedTicketRow], format: TableFormat) -> anyhow::Result<String> {
    rows_text(tickets, format, |tickets| {
        format!("{}\n", tickets_table(tickets))
    })
}

/// A manual command's result per id: for people one line each.
pub fn id_results(
    results: &[crate::manual::IdResult],
    format: TableFormat,
) -> anyhow::Result<String> {
    rows_text(results, format, |results| {
        let mut out = String::new();
        for r in results {
            let _ = match &r.detail {
                Some(d) => writeln!(out, "{} {}: {d}", r.id, r.outcome),
                None => writeln!(out, "{} {}", r.id, r.outcome),
            };
        }
        out
    })
}

/// Rows as CSV through the `csv` crate: the columns in the order the row
/// type declares its fields (for stored rows, the schema's order), the
/// header once, quoting as RFC 4180 asks. No rows: no output.
pub fn csv_rows<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write CSV: {e}"))?;
    Ok(String::from_utf8(bytes)?)
}

/// `plan`'s output.
pub fn plan(
    plan: &crate::manual::Plan,
    policy: &Policy,
    format: TableFormat,
) -> anyhow::Result<String> {
    let mut out = String::new();
    match format {
        TableFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(plan)?)?,
        TableFormat::Csv => out.push_str(&csv_rows(&plan.tickets)?),
        TableFormat::Table => {
            if let Some(e) = &plan.explain {
                writeln!(out, "ticket {}: {}", e.ticket, e.decision)?;
                for r in &e.rules {
                    writeln!(
                        out,
                        "  rule {:?} ({}): {}",
                        r.rule,
                        r.action,
                        if r.matched {
                            "matches"
                        } else {
                            "does not match"
                        }
                    )?;
                    for (condition, holds) in &r.conditions {
                        writeln!(out, "    [{}] {condition}", if *holds { "x" } else { " " })?;
                    }
                }
                writeln!(out)?;
            }
            let total: u64 = plan.would_purge.values().sum();
            writeln!(
                out,
                "plan: {} tickets scanned{}; {total} would be purged",
                plan.scanned,
                if plan.early_stop {
                    " (sorted scan, stopped at tickets too young for any purge rule)"
                } else {
                    ""
                }
            )?;
            for rule in policy.purge_rules() {
                writeln!(
                    out,
                    "  {:<28} {:>7}",
                    rule.name,
                    plan.would_purge.get(&rule.name).copied().unwrap_or(0)
                )?;
            }
            for (kind, n) in &plan.kept {
                writeln!(out, "  kept: {:<22} {n:>7}", kept_label(kind))?;
            }
            if !plan.tickets.is_empty() {
                let mut t = table(&["ticket", "rule", "deleted at", "previous state", "actor"]);
                for p in plan.tickets.iter().take(50) {
                    t.add_row(vec![
                        p.id.to_string(),
                        p.rule.clone(),
                        p.deleted_at.clone().unwrap_or_default(),
                        p.previous_state.clone().unwrap_or_default(),
                        p.actor_id.map(|a| a.to_string()).unwrap_or_default(),
                    ]);
                }
                writeln!(out, "{t}")?;
                if plan.tickets.len() > 50 {
                    writeln!(
                        out,
                        "  ... and {} more (--format json or csv lists them all)",
                        plan.tickets.len() - 50
                    )?;
                }
            }
        }
    }
    Ok(out)
}

/// `plan --ledger`'s word on the ledger's tickets the next run purges,
/// by rule.
fn next_run_lines(out: &mut String, next: &crate::manual::NextRunPurges) -> std::fmt::Result {
    if next.tickets == 0 {
        return writeln!(
            out,
            "no ticket of the ledger will be purged by the next run"
        );
    }
    let what = if next.sent {
        "will be purged by the next run"
    } else {
        "would be selected by the next run, which sends nothing (safety.dry_run)"
    };
    writeln!(
        out,
        "{} tickets {what} unless Zendesk's view changed since ({} of them selected already by an earlier run that did not send them):",
        next.tickets, next.already_selected
    )?;
    let mut t = table(&["rule", "tickets"]);
    for (rule, n) in &next.by_rule {
        t.add_row(vec![rule.clone(), n.to_string()]);
    }
    writeln!(out, "{t}")?;
    let ids: Vec<String> = next
        .ticket_ids
        .iter()
        .take(10)
        .map(|id| id.to_string())
        .collect();
    writeln!(
        out,
        "first ids: {}{} (--format json lists them all)",
        ids.join(", "),
        if next.ticket_ids.len() > 10 {
            ", ..."
        } else {
            ""
        }
    )?;
    if next.sent && next.over_the_limit {
        if next.purge_while_scanning {
            writeln!(
                out,
                "that is more than safety.max_purges_per_run = {}: the next run stops purging at the limit",
                next.max_purges_per_run
            )?;
        } else {
            writeln!(
                out,
                "that is more than safety.max_purges_per_run = {}: the next run refuses and purges none of them (raise the limit or narrow the rules)",
                next.max_purges_per_run
            )?;
        }
    }
    Ok(())
}

/// `plan --ledger`: what a config would change in the ledger's decisions.
pub fn ledger_diff(
    diff: &crate::manual::LedgerDiff,
    format: TableFormat,
) -> anyhow::Result<String> {
    let mut out = String::new();
    match format {
        TableFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(diff)?)?,
        TableFormat::Csv => {
            #[derive(serde::Serialize)]
            struct Row<'a> {
                ticket_id: TicketId,
                from_decision: &'a str,
                from_rule: Option<&'a str>,
                to_decision: &'a str,
                to_rule: Option<&'a str>,
            }
            let rows: Vec<Row> = diff
                .changes
                .iter()
                .flat_map(|c| {
                    c.ticket_ids.iter().map(move |id| Row {
                        ticket_id: *id,
                        from_decision: &c.from_decision,
                        from_rule: c.from_rule.as_deref(),
                        to_decision: &c.to_decision,
                        to_rule: c.to_rule.as_deref(),
                    })
                })
                .collect();
            out.push_str(&csv_rows(&rows)?);
        }
        TableFormat::Table => {
            let changed: u64 = diff.changes.iter().map(|c| c.tickets).sum();
            writeln!(
                out,
                "against the ledger ({} live tickets, no listing): {changed} would change decision, {} unchanged, {} awaiting the settling of a purge",
                diff.live, diff.unchanged, diff.awaiting_settlement
            )?;
            if diff.undecidable > 0 {
                writeln!(
                    out,
                    "{} tickets were listed before a subject pattern of this config (subjects are not kept): the next run walks the whole view to decide them",
                    diff.undecidable
                )?;
            }
            next_run_lines(&mut out, &diff.next_run)?;
            if diff.changes.is_empty() {
                return Ok(out);
            }
            let mut t = table(&["from", "to", "tickets", "first ids"]);
            let side = |d: &str, r: &Option<String>| match r {
                Some(r) => format!("{d} ({r})"),
                None => d.to_string(),
            };
            for c in &diff.changes {
                let ids: Vec<String> = c
                    .ticket_ids
                    .iter()
                    .take(5)
                    .map(|id| id.to_string())
                    .collect();
                t.add_row(vec![
                    side(&c.from_decision, &c.from_rule),
                    side(&c.to_decision, &c.to_rule),
                    c.tickets.to_string(),
                    ids.join(", ") + if c.ticket_ids.len() > 5 { ", ..." } else { "" },
                ]);
            }
            writeln!(out, "{t}")?;
        }
    }
    Ok(out)
}

/// The run summary's line on the freshness window and tickets in doubt.
fn window_line(out: &mut String, report: &CycleReport) {
    if let Some(window) = report.max_send_window {
        let _ = writeln!(
            out,
            "  window     at most {} from a freshness read's answer to a purge request leaving{}",
            crate::human::window_text(window),
            if report.in_doubt > 0 {
                format!(
                    "; {} purged tickets were deleted again after their request (a read after it showed it): recorded unknown, not purged by their rule",
                    report.in_doubt
                )
            } else {
                String::new()
            }
        );
    }
}

/// The run summary's lines on purge latency and the whole-view check.
fn scale_lines(out: &mut String, report: &CycleReport) {
    if let Some(l) = &report.latency
        && l.tickets > 0
    {
        let s = |v: Option<f64>| {
            v.map_or("-".to_string(), |v| {
                crate::human::duration(Duration::from_secs_f64(v.max(0.0))).to_string()
            })
        };
        let _ = writeln!(
            out,
            "  latency    p50 {}, p95 {}, max {} from becoming purgeable (deletion plus the rule's age) to the purge request, {} tickets",
            s(l.p50_seconds),
            s(l.p95_seconds),
            s(l.max_seconds),
            l.tickets
        );
    }
    if let Some(c) = &report.check {
        let _ = writeln!(
            out,
            "  check      whole-view check {}: {} pages this run (its share: {}), {} in all over {} runs; {}{}",
            c.check,
            c.pages,
            c.budget_pages,
            c.total_pages,
            c.runs,
            if c.finished {
                "finished, absences settled"
            } else {
                "goes on next run"
            },
            if c.stopped.is_empty() {
                String::new()
            } else {
                format!(" (stopped at {})", c.stopped)
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Row<'a> {
        id: i64,
        zeta: &'a str,
        alpha: Option<&'a str>,
    }

    #[test]
    fn csv_keeps_the_declared_column_order_quotes_and_writes_the_header_once() {
        let rows = [
            Row {
                id: 2,
                zeta: "a, \"quoted\"\nline",
                alpha: None,
            },
            Row {
                id: 1,
                zeta: "plain",
                alpha: Some("x"),
            },
        ];
        let text = csv_rows(&rows).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            ["id", "zeta", "alpha"],
            "declared order, not alphabetical"
        );
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(
            &records[0][1], "a, \"quoted\"\nline",
            "quoted and read back whole"
        );
        assert_eq!(&records[0][2], "");
        assert_eq!(text.matches("id,zeta,alpha").count(), 1);
        assert_eq!(csv_rows::<Row>(&[]).unwrap(), "", "no rows, no output");
    }
}

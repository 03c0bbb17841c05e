//! What the operator reads: run summaries and the audit queries' tables and
//! JSON. Reads the audit store through its methods; never SQL of its own.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use comfy_table::Table;

use crate::audit::{AuditStore, SearchFilter};
use crate::cli::{
    AuditCommand, AuditTarget, EXIT_FAILED, ExportFormat, StatsBy, TableFormat, load_config,
};
use crate::cycle::CycleReport;
use crate::rules::Policy;

fn table(header: &[&str]) -> Table {
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
    let scan_note = match report.step.as_str() {
        "refresh" => " (the newest deletions)",
        "backlog" => " (oldest first, up to the youngest purgeable age)",
        _ => " (the whole view)",
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
    for rule in policy.purge_rules() {
        let n = report.matched_by_rule.get(&rule.name).copied().unwrap_or(0);
        let _ = writeln!(out, "    {:<28} {n:>7}", rule.name);
    }
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

async fn open(config: Option<PathBuf>, target: &AuditTarget) -> anyhow::Result<AuditStore> {
    let path = match &target.database {
        Some(p) => p.clone(),
        None => load_config(config)?.audit.database,
    };
    AuditStore::open_read_only(&path).await
}

/// `zd-retention audit ...`
pub async fn audit(config: Option<PathBuf>, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Runs {
            limit,
            since,
            target,
        } => {
            let store = open(config, &target).await?;
            let runs = store.runs(since, limit).await?;
            match target.format {
                TableFormat::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
                TableFormat::Csv => print!("{}", csv_rows(&runs)?),
                TableFormat::Table => {
                    let mut t = table(&[
                        "run", "trigger", "started", "mode", "status", "scanned", "matched",
                        "purged", "failed", "unknown",
                    ]);
                    for r in &runs {
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
                    println!("{t}");
                }
            }
        }
        AuditCommand::Run { run_id, target } => {
            let store = open(config, &target).await?;
            let Some(run) = store.run(run_id).await? else {
                eprintln!("no run {run_id} in the audit log (zd-retention audit runs lists them)");
                return Ok(ExitCode::from(EXIT_FAILED));
            };
            let decisions = store.decision_counts(run_id).await?;
            let outcomes = store.outcome_counts(run_id).await?;
            let jobs = store.jobs_of_run(run_id).await?;
            match target.format {
                TableFormat::Csv => {
                    #[derive(serde::Serialize)]
                    struct Row<'a> {
                        decision: &'a str,
                        rule: Option<&'a str>,
                        count: i64,
                    }
                    let rows: Vec<Row> = decisions
                        .iter()
                        .map(|(d, r, n)| Row {
                            decision: d,
                            rule: r.as_deref(),
                            count: *n,
                        })
                        .collect();
                    print!("{}", csv_rows(&rows)?);
                }
                TableFormat::Json => {
                    let decisions: Vec<_> = decisions
                        .iter()
                        .map(|(d, r, n)| serde_json::json!({"decision": d, "rule": r, "count": n}))
                        .collect();
                    let outcomes: Vec<_> = outcomes
                        .iter()
                        .map(|(o, n)| serde_json::json!({"outcome": o, "count": n}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"run": run, "decisions": decisions, "outcomes": outcomes, "jobs": jobs})
                        )?
                    );
                }
                TableFormat::Table => {
                    println!(
                        "run {} ({}, {}): {} from {} to {}",
                        run.id,
                        run.trigger,
                        if run.dry_run { "dry run" } else { "live" },
                        run.status,
                        run.started_at,
                        run.finished_at.as_deref().unwrap_or("(not finished)")
                    );
                    println!(
                        "  scanned {}, matched {}, purged {}, failed {}, unknown {}; {} list requests{}; config {}",
                        run.scanned,
                        run.matched,
                        run.purged,
                        run.failed,
                        run.unknown,
                        run.list_requests,
                        match (run.step.as_deref(), run.scan.as_deref(), run.early_stop) {
                            (Some("refresh"), _, _) =>
                                ", a refresh (the newest deletions)".to_string(),
                            (Some("reconcile"), _, _) =>
                                ", a reconcile (the whole view)".to_string(),
                            (_, _, true) => ", sorted scan stopped early".to_string(),
                            (_, Some(scan), false) => format!(", {scan} scan"),
                            (_, None, false) => String::new(),
                        },
                        &run.config_hash[..12.min(run.config_hash.len())]
                    );
                    if let Some(reason) = &run.scan_reason {
                        println!("  scan: {reason}");
                    }
                    if let Some(n) = run.decisions_recorded {
                        println!(
                            "  {n} decisions recorded (first sightings and changes; the ledger holds the rest)"
                        );
                    }
                    if let Some(ms) = run.max_listing_age_ms {
                        println!(
                            "  at most {} between a ticket's last listing and its destroy_many",
                            crate::human::duration(Duration::from_millis(ms as u64))
                        );
                    }
                    if let Some(e) = &run.error {
                        println!("  error: {e}");
                    }
                    let mut t = table(&["decision", "rule", "tickets"]);
                    for (d, r, n) in &decisions {
                        t.add_row(vec![
                            d.clone(),
                            r.clone().unwrap_or_default(),
                            n.to_string(),
                        ]);
                    }
                    println!("{t}");
                    if !outcomes.is_empty() {
                        let mut t = table(&["outcome", "tickets"]);
                        for (o, n) in &outcomes {
                            t.add_row(vec![o.clone(), n.to_string()]);
                        }
                        println!("{t}");
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
                        for j in &jobs {
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
                        println!("{t}");
                    }
                }
            }
        }
        AuditCommand::Search {
            since,
            until,
            rule,
            outcome,
            decision,
            actor,
            ticket,
            limit,
            target,
        } => {
            let store = open(config, &target).await?;
            let filter = SearchFilter {
                since,
                until,
                rule,
                outcome,
                decision,
                actor,
                ticket,
                limit,
            };
            let rows = store.search(&filter).await?;
            match target.format {
                TableFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                TableFormat::Csv => print!("{}", csv_rows(&rows)?),
                TableFormat::Table => {
                    let mut t = table(&[
                        "decided", "run", "ticket", "decision", "rule", "actor", "outcome",
                        "detail",
                    ]);
                    for r in &rows {
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
                    println!("{t}");
                    eprintln!("{} rows (at most --limit {limit})", rows.len());
                }
            }
        }
        AuditCommand::Ledger { target } => {
            let store = open(config, &target).await?;
            let counts = store.ledger_counts().await?;
            let marks = store.listing_marks(&[]).await?;
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(crate::audit::timestamp);
            match target.format {
                TableFormat::Json | TableFormat::Csv => println!(
                    "{}",
                    serde_json::json!({
                        "tickets": counts.iter().map(|(s, n)| (s.clone(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
                        "high_water": time(marks.high_water),
                        "last_reconcile": time(marks.last_reconcile),
                    })
                ),
                TableFormat::Table => {
                    let mut t = table(&["state", "tickets"]);
                    for (state, n) in &counts {
                        t.add_row(vec![state.clone(), n.to_string()]);
                    }
                    println!("{t}");
                    println!(
                        "newest deletion known (high-water mark): {}",
                        time(marks.high_water).unwrap_or_else(|| "none yet".into())
                    );
                    println!(
                        "last whole walk of the view began: {}",
                        time(marks.last_reconcile).unwrap_or_else(|| "never".into())
                    );
                }
            }
        }
        AuditCommand::Head { target } => {
            let store = open(config, &target).await?;
            let (seq, hash) = store.chain_head().await?;
            match target.format {
                TableFormat::Json | TableFormat::Csv => {
                    println!("{}", serde_json::json!({"entry": seq, "hash": hash}))
                }
                TableFormat::Table => println!("chain head: entry {seq}, hash {hash}"),
            }
        }
        AuditCommand::Verify {
            expect_head,
            target,
        } => {
            let expect_head = expect_head.map(|h| h.trim().to_ascii_lowercase());
            if let Some(h) = &expect_head
                && !(h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(crate::cli::UsageError(format!(
                    "--expect-head {h:?} is not a chain head: it is 64 hexadecimal characters, as `zd-retention audit head` prints"
                ))
                .into());
            }
            let store = open(config, &target).await?;
            let mut report = store.verify_chain().await?;
            if let Some(expected) = expect_head.as_deref()
                && report.problem.is_none()
                && !store.chain_contains(expected).await?
            {
                report.problem = Some(format!(
                    "the chain does not contain the expected head {expected}: entries after it were removed (or the hash belongs to another database)"
                ));
            }
            match target.format {
                TableFormat::Json | TableFormat::Csv => {
                    println!("{}", serde_json::to_string_pretty(&report)?)
                }
                TableFormat::Table => match &report.problem {
                    None => println!(
                        "audit log intact: {} chain entries over {} rows; head {}",
                        report.entries, report.rows, report.head
                    ),
                    Some(p) => println!("audit log TAMPERED: {p}"),
                },
            }
            if report.problem.is_some() {
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        }
        AuditCommand::Export {
            format,
            since,
            database,
        } => {
            let target = AuditTarget {
                database,
                format: TableFormat::Json,
            };
            let store = open(config, &target).await?;
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = match format {
                ExportFormat::Jsonl => {
                    use std::io::Write as _;
                    let mut out = out;
                    let n = store
                        .export(since, |row| {
                            writeln!(out, "{}", serde_json::to_string(&row)?)?;
                            Ok(())
                        })
                        .await?;
                    out.flush()?;
                    n
                }
                ExportFormat::Csv => {
                    // one CSV writer for the whole stream: its header once
                    let mut out = csv::Writer::from_writer(out);
                    let n = store
                        .export(since, |row| {
                            out.serialize(&row)?;
                            Ok(())
                        })
                        .await?;
                    out.flush()?;
                    n
                }
            };
            eprintln!("{n} decisions exported");
        }
        AuditCommand::Stats { by, since, target } => {
            let store = open(config, &target).await?;
            match by {
                StatsBy::Day => {
                    let selected = store.stats_by_day(since).await?;
                    let runs = store.runs_by_day(since).await?;
                    match target.format {
                        TableFormat::Csv => print!("{}", csv_rows(&selected)?),
                        TableFormat::Json => println!(
                            "{}",
                            serde_json::to_string_pretty(
                                &serde_json::json!({"purges_by_rule": selected, "runs": runs})
                            )?
                        ),
                        TableFormat::Table => {
                            let mut t = table(&["day", "rule", "selected for purge"]);
                            for r in &selected {
                                t.add_row(vec![
                                    r.key.clone(),
                                    r.rule.clone().unwrap_or_default(),
                                    r.count.to_string(),
                                ]);
                            }
                            println!("{t}");
                            let mut t = table(&[
                                "day",
                                "runs",
                                "failed runs",
                                "scanned",
                                "matched",
                                "purged",
                                "failed",
                            ]);
                            for d in &runs {
                                t.add_row(vec![
                                    d.day.clone(),
                                    d.runs.to_string(),
                                    d.failed_runs.to_string(),
                                    d.scanned.to_string(),
                                    d.matched.to_string(),
                                    d.purged.to_string(),
                                    d.failed.to_string(),
                                ]);
                            }
                            println!("{t}");
                        }
                    }
                }
                StatsBy::Rule | StatsBy::Outcome => {
                    let rows = if by == StatsBy::Rule {
                        store.stats_by_rule(since).await?
                    } else {
                        store.stats_by_outcome(since).await?
                    };
                    match target.format {
                        TableFormat::Csv => print!("{}", csv_rows(&rows)?),
                        TableFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                        TableFormat::Table => {
                            let header: &[&str] = if by == StatsBy::Rule {
                                &["rule", "decision", "tickets"]
                            } else {
                                &["outcome", "", "tickets"]
                            };
                            let mut t = table(header);
                            for r in &rows {
                                if by == StatsBy::Rule {
                                    t.add_row(vec![
                                        r.rule.clone().unwrap_or_else(|| "(none)".into()),
                                        r.key.clone(),
                                        r.count.to_string(),
                                    ]);
                                } else {
                                    t.add_row(vec![
                                        r.key.clone(),
                                        String::new(),
                                        r.count.to_string(),
                                    ]);
                                }
                            }
                            println!("{t}");
                        }
                    }
                }
            }
        }
        AuditCommand::Ticket { ticket_id, target } => {
            let store = open(config, &target).await?;
            let events = store.ticket_history(ticket_id).await?;
            match target.format {
                TableFormat::Json => println!("{}", serde_json::to_string_pretty(&events)?),
                TableFormat::Csv => print!("{}", csv_rows(&events)?),
                TableFormat::Table => {
                    if events.is_empty() {
                        println!("ticket {ticket_id}: nothing recorded");
                    } else {
                        let mut t = table(&["at", "run", "event", "what", "rule", "job", "detail"]);
                        for e in &events {
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
                        println!("ticket {ticket_id}");
                        println!("{t}");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
pub fn print_plan(
    plan: &crate::manual::Plan,
    policy: &Policy,
    format: TableFormat,
) -> anyhow::Result<()> {
    match format {
        TableFormat::Json => println!("{}", serde_json::to_string_pretty(plan)?),
        TableFormat::Csv => print!("{}", csv_rows(&plan.tickets)?),
        TableFormat::Table => {
            if let Some(e) = &plan.explain {
                println!("ticket {}: {}", e.ticket, e.decision);
                for r in &e.rules {
                    println!(
                        "  rule {:?} ({}): {}",
                        r.rule,
                        r.action,
                        if r.matched {
                            "matches"
                        } else {
                            "does not match"
                        }
                    );
                    for (condition, holds) in &r.conditions {
                        println!("    [{}] {condition}", if *holds { "x" } else { " " });
                    }
                }
                println!();
            }
            let total: u64 = plan.would_purge.values().sum();
            println!(
                "plan: {} tickets scanned{}; {total} would be purged",
                plan.scanned,
                if plan.early_stop {
                    " (sorted scan, stopped at tickets too young for any purge rule)"
                } else {
                    ""
                }
            );
            for rule in policy.purge_rules() {
                println!(
                    "  {:<28} {:>7}",
                    rule.name,
                    plan.would_purge.get(&rule.name).copied().unwrap_or(0)
                );
            }
            for (kind, n) in &plan.kept {
                println!("  kept: {:<22} {n:>7}", kept_label(kind));
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
                println!("{t}");
                if plan.tickets.len() > 50 {
                    println!(
                        "  ... and {} more (--format json or csv lists them all)",
                        plan.tickets.len() - 50
                    );
                }
            }
        }
    }
    Ok(())
}

/// `plan --ledger`: what a config would change in the ledger's decisions.
pub fn print_ledger_diff(
    diff: &crate::manual::LedgerDiff,
    format: TableFormat,
) -> anyhow::Result<()> {
    match format {
        TableFormat::Json => println!("{}", serde_json::to_string_pretty(diff)?),
        TableFormat::Csv => {
            #[derive(serde::Serialize)]
            struct Row<'a> {
                ticket_id: u64,
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
            print!("{}", csv_rows(&rows)?);
        }
        TableFormat::Table => {
            let changed: u64 = diff.changes.iter().map(|c| c.tickets).sum();
            println!(
                "against the ledger ({} live tickets, no listing): {changed} would change decision, {} unchanged, {} awaiting the settling of a purge",
                diff.live, diff.unchanged, diff.awaiting_settlement
            );
            if diff.undecidable > 0 {
                println!(
                    "{} tickets were listed before a subject pattern of this config (subjects are not kept): the next run walks the whole view to decide them",
                    diff.undecidable
                );
            }
            if diff.changes.is_empty() {
                return Ok(());
            }
            let mut t = table(&["from", "to", "tickets", "first ids"]);
            let side = |d: &str, r: &Option<String>| match r {
                Some(r) => format!("{d} ({r})"),
                None => d.to_string(),
            };
            for c in &diff.changes {
                let ids: Vec<String> = c.ticket_ids.iter().take(5).map(u64::to_string).collect();
                t.add_row(vec![
                    side(&c.from_decision, &c.from_rule),
                    side(&c.to_decision, &c.to_rule),
                    c.tickets.to_string(),
                    ids.join(", ") + if c.ticket_ids.len() > 5 { ", ..." } else { "" },
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

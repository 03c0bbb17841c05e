//! What the operator reads: run summaries and the audit queries' tables and
//! JSON. Reads the audit store through its methods; never SQL of its own.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use comfy_table::Table;

use crate::audit::AuditStore;
use crate::cli::{AuditCommand, AuditTarget, EXIT_FAILED, StatsBy, TableFormat, load_config};
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
        other => other,
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
    let scan_note = if c.early_stop {
        match policy.purge_horizon() {
            Some(h) => format!(
                " (sorted by deletion time; stopped at tickets deleted less than {} ago)",
                humantime::format_duration(h)
            ),
            None => String::new(),
        }
    } else {
        " (full scan)".to_string()
    };
    let _ = writeln!(
        out,
        "  scanned    {} tickets in {} list requests{scan_note}",
        c.scanned, c.list_requests
    );
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
            "  purged     {} in {} destroy_many jobs; {} failed, {} unknown (settled by the next scan), {} not sent",
            c.purged, report.purge_batches, c.failed, c.unknown, report.not_sent
        );
    }
    if report.not_effective + report.confirmed_gone > 0 {
        let _ = writeln!(
            out,
            "  settled    {} earlier purges confirmed gone, {} found still listed (purged again)",
            report.confirmed_gone, report.not_effective
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
        AuditCommand::Runs { limit, target } => {
            let store = open(config, &target).await?;
            let runs = store.runs(None, limit).await?;
            match target.format {
                TableFormat::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
                TableFormat::Table => {
                    let mut t = table(&[
                        "run", "trigger", "started", "mode", "status", "scanned", "matched",
                        "purged", "failed", "unknown",
                    ]);
                    for r in &runs {
                        t.add_row(vec![
                            r.id.to_string(),
                            r.trigger.clone(),
                            r.started_at.clone(),
                            if r.dry_run {
                                "dry run".into()
                            } else {
                                "live".into()
                            },
                            r.status.clone(),
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
                        if run.early_stop {
                            ", stopped early"
                        } else {
                            ""
                        },
                        &run.config_hash[..12.min(run.config_hash.len())]
                    );
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
                                j.kind.clone(),
                                j.zendesk_job_id.clone().unwrap_or_default(),
                                j.ticket_count.to_string(),
                                j.recorded_at.clone(),
                                j.status.clone(),
                                j.message.clone().unwrap_or_default(),
                            ]);
                        }
                        println!("{t}");
                    }
                }
            }
        }
        AuditCommand::Stats { by, since, target } => {
            let store = open(config, &target).await?;
            match by {
                StatsBy::Day => {
                    let selected = store.stats_by_day(since).await?;
                    let runs = store.runs_by_day(since).await?;
                    match target.format {
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

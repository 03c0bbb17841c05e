//! `zd-retention audit ...`: the audit queries, read-only, as tables, JSON
//! or CSV through the output layer.

use crate::ids::RunId;
use crate::zendesk::TicketId;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::args::{
    AuditCommand, AuditTarget, DocumentFormat, ExportFormat, ReportFormat, StatsBy,
    command_line_now,
};
use super::common::{UsageError, check_database_arg, load_config};
use crate::app::EXIT_FAILED;
use crate::audit::{AuditStore, SearchFilter};
use crate::report::{TableFormat, csv_rows, print_rows, table};

async fn open(config: Option<PathBuf>, target: &AuditTarget) -> anyhow::Result<AuditStore> {
    let path = match &target.database {
        Some(p) => {
            check_database_arg(p)?;
            p.clone()
        }
        None => load_config(config)?.audit.database,
    };
    AuditStore::open_read_only(&path).await
}

/// `zd-retention audit ...`: one function per query.
pub(super) async fn audit(
    config: Option<PathBuf>,
    command: AuditCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Runs {
            limit,
            since,
            target,
        } => {
            check_period(since, None)?;
            runs(config, limit, since, target).await
        }
        AuditCommand::Run { run_id, target } => run(config, run_id, target).await,
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
            check_period(since, until)?;
            search(
                config, since, until, rule, outcome, decision, actor, ticket, limit, target,
            )
            .await
        }
        AuditCommand::Ledger { target } => ledger(config, target).await,
        AuditCommand::Head { target } => head(config, target).await,
        AuditCommand::Verify {
            expect_head,
            public_key,
            target,
        } => verify(config, expect_head, public_key, target).await,
        AuditCommand::Keygen { out } => keygen(&out),
        AuditCommand::Config { hash, target } => config_version(config, &hash, target).await,
        AuditCommand::Certificate {
            run_id,
            format,
            output,
            database,
            public_key,
        } => {
            let target = database_only(database);
            certificate(config, run_id, format, output, public_key, target).await
        }
        AuditCommand::Report {
            since,
            until,
            format,
            output,
            database,
            public_key,
        } => {
            check_period(Some(since), until)?;
            let target = database_only(database);
            let until = until.unwrap_or_else(command_line_now);
            let format = format.unwrap_or(match extension(output.as_deref()).as_deref() {
                Some("md" | "markdown") => ReportFormat::Md,
                _ => ReportFormat::Html,
            });
            period_report(config, (since, until), format, output, public_key, target).await
        }
        AuditCommand::Export {
            format,
            since,
            database,
        } => {
            check_period(since, None)?;
            export(config, format, since, database).await
        }
        AuditCommand::Stats { by, since, target } => {
            check_period(since, None)?;
            stats(config, by, since, target).await
        }
        AuditCommand::Ticket { ticket_id, target } => ticket(config, ticket_id, target).await,
    }
}

/// The period `[since, until)` a command reads, `until` by default the
/// time the command line was read: an empty or backward one (`--since 0d`,
/// `--since D --until D`, a `--since` to come) is refused the same way by
/// every command, exit 2, naming its arguments.
fn check_period(
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), UsageError> {
    let Some(since) = since else {
        return Ok(());
    };
    let (end, end_named, fix) = match until {
        Some(until) => (until, "--until", "give a --since before --until"),
        None => (
            command_line_now(),
            "now",
            "give a --since in the past, such as 7d or a day",
        ),
    };
    if since < end {
        return Ok(());
    }
    Err(UsageError(format!(
        "the period is empty: --since ({}) is not before {end_named} ({}); {fix}",
        crate::audit::timestamp(since),
        crate::audit::timestamp(end)
    )))
}

/// `zd-retention audit runs`.
async fn runs(
    config: Option<PathBuf>,
    limit: i64,
    since: Option<chrono::DateTime<chrono::Utc>>,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    let store = open(config, &target).await?;
    let runs = store.runs(since, limit).await?;
    print_rows(&runs, target.format, |_| {
        let mut t = table(&[
            "run", "trigger", "started", "mode", "status", "scanned", "matched", "purged",
            "failed", "unknown",
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
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit run`.
async fn run(
    config: Option<PathBuf>,
    run_id: RunId,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    let store = open(config, &target).await?;
    let Some(run) = store.run(run_id).await? else {
        eprintln!("no run {run_id} in the audit log (zd-retention audit runs lists them)");
        return Ok(ExitCode::from(EXIT_FAILED));
    };
    let decisions = store.decision_counts(run_id).await?;
    let outcomes = store.outcome_counts(run_id).await?;
    let jobs = store.jobs_of_run(run_id).await?;
    let version = store.config_version(&run.config_hash).await?;
    let origin = store.run_origin(run_id).await?;
    let head = store.chain_head_of(run_id).await?;
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
                    &serde_json::json!({"run": run, "ran_by": origin, "config_version": version, "chain_head": head, "decisions": decisions, "outcomes": outcomes, "jobs": jobs})
                )?
            );
        }
        TableFormat::Table => {
            print_run_table(&run, &decisions, &outcomes, &jobs);
            match &version {
                Some(v) => println!(
                    "config version {} (first used by run {}): zd-retention audit config {} shows it",
                    v.hash,
                    v.first_run,
                    &v.hash[..12.min(v.hash.len())]
                ),
                None => println!(
                    "config {}: its settings were not stored (a run before config versions were kept)",
                    run.config_hash
                ),
            }
            if let Some(program) = &origin.program_version {
                println!(
                    "ran by {} on {}, {program}",
                    origin.os_user.as_deref().unwrap_or("?"),
                    origin.host.as_deref().unwrap_or("?")
                );
            }
            if let Some(h) = &head {
                println!(
                    "chain head at its end: entry {} {}, {}",
                    h.seq,
                    h.head,
                    if h.signature.is_some() {
                        "signed"
                    } else {
                        "unsigned"
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit run` as tables: the run's figures, decisions per rule, outcomes
/// and its requests.
fn print_run_table(
    run: &crate::audit::RunRow,
    decisions: &[(String, Option<String>, i64)],
    outcomes: &[(String, i64)],
    jobs: &[crate::audit::JobRow],
) {
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
            (Some("refresh"), _, _) => ", a refresh (the newest deletions)".to_string(),
            (Some("reconcile"), _, _) => ", a reconcile (the whole view)".to_string(),
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
    for (d, r, n) in decisions {
        t.add_row(vec![
            d.clone(),
            r.clone().unwrap_or_default(),
            n.to_string(),
        ]);
    }
    println!("{t}");
    if !outcomes.is_empty() {
        let mut t = table(&["outcome", "tickets"]);
        for (o, n) in outcomes {
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
        println!("{t}");
    }
}

/// `zd-retention audit search`.
// the command's own arguments, one per filter, as clap hands them over
#[allow(clippy::too_many_arguments)]
async fn search(
    config: Option<PathBuf>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    rule: Option<String>,
    outcome: Option<String>,
    decision: Option<String>,
    actor: Option<i64>,
    ticket: Option<i64>,
    limit: i64,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
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
    print_rows(&rows, target.format, |_| {
        let mut t = table(&[
            "decided", "run", "ticket", "decision", "rule", "actor", "outcome", "detail",
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
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit ledger`.
async fn ledger(config: Option<PathBuf>, target: AuditTarget) -> anyhow::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit head`.
async fn head(config: Option<PathBuf>, target: AuditTarget) -> anyhow::Result<ExitCode> {
    let store = open(config, &target).await?;
    let (seq, hash) = store.chain_head().await?;
    match target.format {
        TableFormat::Json | TableFormat::Csv => {
            println!("{}", serde_json::json!({"entry": seq, "hash": hash}))
        }
        TableFormat::Table => println!("chain head: entry {seq}, hash {hash}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit verify`.
async fn verify(
    config: Option<PathBuf>,
    expect_head: Option<String>,
    public_key: Vec<PathBuf>,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    let keys = read_keys(&public_key)?;
    let expect_head = expect_head.map(|h| h.trim().to_ascii_lowercase());
    if let Some(h) = &expect_head
        && !(h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(UsageError(format!(
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
    // signatures are checked over a whole chain: a recomputed chain is
    // whole, but its heads are no longer the ones signed
    let signatures = if !keys.is_empty() && report.problem.is_none() {
        Some(store.verify_signatures(&keys).await?)
    } else {
        None
    };
    // the keys given cannot check the records: not a tampering, but no
    // proof either (exit 1 all the same)
    let unverifiable = signatures
        .as_ref()
        .and_then(|s| s.problem.clone().filter(|_| !s.tampered));
    if let Some(p) = signatures.as_ref().and_then(|s| s.problem.clone()) {
        report.problem = Some(p);
    }
    match target.format {
        TableFormat::Json | TableFormat::Csv => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"chain": report, "signatures": signatures})
            )?
        ),
        TableFormat::Table => match (&report.problem, &unverifiable) {
            (Some(p), Some(_)) => println!("signatures NOT verified: {p}"),
            (Some(p), None) => println!("audit log TAMPERED: {p}"),
            (None, _) => {
                println!(
                    "audit log intact: {} chain entries over {} rows; head {}",
                    report.entries, report.rows, report.head
                );
                match &signatures {
                    Some(s) if s.before_signing == 0 => println!(
                        "signatures hold: {} signed chain heads verify with key {}, every entry covered",
                        s.signed, s.key_id
                    ),
                    Some(s) => println!(
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
                    None if store.is_signed().await? => println!(
                        "chain heads are signed: pass --public-key FILE to check the signatures"
                    ),
                    None => println!(
                        "records are unsigned ([audit] signing_key_file is not set): a rewrite that recomputes the chain is not detected"
                    ),
                }
            }
        },
    }
    if report.problem.is_some() {
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit export`.
async fn export(
    config: Option<PathBuf>,
    format: ExportFormat,
    since: Option<chrono::DateTime<chrono::Utc>>,
    database: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let target = database_only(database);
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
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit stats`.
async fn stats(
    config: Option<PathBuf>,
    by: StatsBy,
    since: Option<chrono::DateTime<chrono::Utc>>,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
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
            print_rows(&rows, target.format, |_| {
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
                        t.add_row(vec![r.key.clone(), String::new(), r.count.to_string()]);
                    }
                }
                println!("{t}");
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit ticket`.
async fn ticket(
    config: Option<PathBuf>,
    ticket_id: TicketId,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    let store = open(config, &target).await?;
    let events = store.ticket_history(ticket_id).await?;
    print_rows(&events, target.format, |_| {
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
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Why `--out` would put the private key under a public name (`k.pub.pem`,
/// `k.pub`, `public-key.pem`, in any case), or `None` when it does not:
/// someone handing the "public" file to an auditor would hand over the key.
fn public_looking_name(out: &Path) -> Option<String> {
    let name = out.file_name()?.to_string_lossy().to_lowercase();
    let words: Vec<&str> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if name.ends_with(".pub.pem") || name.ends_with(".pub") {
        return Some(format!("{name:?} ends like a public key's file"));
    }
    words
        .iter()
        .find(|w| matches!(**w, "pub" | "pubkey") || w.contains("public"))
        .map(|word| format!("{name:?} says {word:?}, as a public key's file would"))
}

/// `zd-retention audit keygen`: a key pair for signing chain heads.
fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    use secrecy::ExposeSecret as _;
    use std::io::Write as _;
    if let Some(why) = public_looking_name(out) {
        return Err(UsageError(format!(
            "--out {} names the PRIVATE key's file, but {why}: give the private key a private name such as signing-key.pem (its public half then goes beside it as signing-key.pub.pem)",
            out.display()
        ))
        .into());
    }
    let public_path = {
        let stem = out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "signing-key".into());
        out.with_file_name(format!("{stem}.pub.pem"))
    };
    let (private, public) = crate::audit::ChainSigner::generate()?;
    let create = |path: &Path, mode: u32| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        options.open(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e}{}",
                path.display(),
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    " (an existing key is never overwritten: move it away or choose another --out)"
                } else {
                    ""
                }
            )
        })
    };
    if public_path.symlink_metadata().is_ok() {
        anyhow::bail!(
            "{} exists already: an existing key is never overwritten (move it away or choose another --out)",
            public_path.display()
        );
    }
    create(out, 0o600)?.write_all(private.expose_secret().as_bytes())?;
    create(&public_path, 0o644)?.write_all(public.as_bytes())?;
    let key = crate::audit::ChainSigner::from_pem(private.expose_secret())
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "wrote the private key to {} (mode 0600): set [audit] signing_key_file to it\nwrote the public key to  {}: keep a copy away from this machine; `audit verify --public-key` checks with it\nkey id                   {}",
        out.display(),
        public_path.display(),
        key.key_id()
    );
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit config HASH`.
async fn config_version(
    config: Option<PathBuf>,
    hash: &str,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    let store = open(config, &target).await?;
    let Some(version) = store.config_version(hash).await? else {
        eprintln!(
            "no config version {hash:?} in this database: runs before config versions were stored keep only the hash (zd-retention audit runs shows each run's)"
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    };
    match target.format {
        TableFormat::Table => {
            let words = crate::evidence::VersionInWords::of(&version.hash, Some(version.clone()));
            println!(
                "config {}\nfirst used {} by run {}",
                version.hash, version.first_used, version.first_run
            );
            if let Some(account) = &words.account {
                println!("account    {account}");
            }
            for rule in &words.rules {
                println!("rule       {rule}");
            }
            println!("{}", version.settings);
        }
        _ => println!("{}", serde_json::to_string_pretty(&version)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// A command that names only `--database` (its output has its own format).
fn database_only(database: Option<PathBuf>) -> AuditTarget {
    AuditTarget {
        database,
        format: TableFormat::Json,
    }
}

/// The public keys given with `--public-key`.
fn read_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<crate::audit::ChainVerifier>> {
    paths
        .iter()
        .map(|p| crate::config::read_public_key(p))
        .collect()
}

/// `--output`'s extension in lower case: it picks the format when
/// `--format` is not given.
fn extension(output: Option<&Path>) -> Option<String> {
    output
        .and_then(Path::extension)
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Writes a document to `output` (mode 0600: it may name tickets and
/// people), or to standard output (a reader that stops early, `| head`,
/// ends the command quietly). The purged tickets are streamed from the
/// listing into it. A file is written beside its name and renamed into
/// place once whole: a failure leaves no half document.
async fn write_document(
    output: Option<&Path>,
    text: &str,
    style: crate::evidence::RowStyle,
    listing: &mut crate::audit::PurgeListing,
) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            let cannot =
                |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot write {}: {e}", path.display());
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            // a fresh file of its own (0600, never one left behind or a
            // link planted there), renamed over the name once whole
            let file = tempfile::Builder::new()
                .prefix(".zd-retention-")
                .suffix(".partial")
                .tempfile_in(dir)
                .map_err(|e| cannot(&e))?;
            let mut out = std::io::BufWriter::new(file);
            crate::evidence::write_document(text, style, listing, &mut out)
                .await
                .map_err(|e| match e.downcast::<std::io::Error>() {
                    Ok(io) => cannot(&io),
                    Err(other) => other,
                })?;
            let file = out.into_inner().map_err(|e| cannot(e.error()))?;
            file.as_file().sync_all().map_err(|e| cannot(&e))?;
            file.persist(path).map_err(|e| cannot(&e.error))?;
            Ok(())
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            match crate::evidence::write_document(text, style, listing, &mut out).await {
                Err(e)
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
                {
                    Ok(())
                }
                other => other,
            }
        }
    }
}

/// `zd-retention audit certificate RUN`.
async fn certificate(
    config: Option<PathBuf>,
    run: RunId,
    format: Option<DocumentFormat>,
    output: Option<PathBuf>,
    public_key: Vec<PathBuf>,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    let keys = read_keys(&public_key)?;
    let store = open(config, &target).await?;
    let (cert, mut listing) = crate::evidence::Certificate::gather(&store, run, &keys).await?;
    let format = format.unwrap_or(match extension(output.as_deref()).as_deref() {
        Some("html" | "htm") => DocumentFormat::Html,
        Some("json") => DocumentFormat::Json,
        _ => DocumentFormat::Text,
    });
    use crate::evidence::RowStyle;
    let (text, style) = match format {
        DocumentFormat::Text => (cert.text(), RowStyle::Text),
        DocumentFormat::Json => (crate::evidence::json_document(&cert)?, RowStyle::Json),
        DocumentFormat::Html => (
            cert.html(),
            RowStyle::Html {
                with_subjects: cert.purged.with_subjects,
            },
        ),
    };
    write_document(output.as_deref(), &text, style, &mut listing).await?;
    if let Some(path) = &output {
        eprintln!("certificate of run {run} written to {}", path.display());
    }
    Ok(if cert.integrity.holds() {
        ExitCode::SUCCESS
    } else {
        eprintln!("the records do not verify: the certificate says so");
        ExitCode::from(EXIT_FAILED)
    })
}

/// `zd-retention audit report`.
async fn period_report(
    config: Option<PathBuf>,
    (since, until): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    format: ReportFormat,
    output: Option<PathBuf>,
    public_key: Vec<PathBuf>,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    let keys = read_keys(&public_key)?;
    let store = open(config, &target).await?;
    let (report, mut listing) =
        crate::evidence::PeriodReport::gather(&store, since, until, &keys).await?;
    let (text, style) = match format {
        ReportFormat::Html => (
            report.html(),
            crate::evidence::RowStyle::Html {
                with_subjects: report.purged.with_subjects,
            },
        ),
        ReportFormat::Md => (report.markdown(), crate::evidence::RowStyle::Markdown),
    };
    write_document(output.as_deref(), &text, style, &mut listing).await?;
    if let Some(path) = &output {
        eprintln!(
            "report for {} to {} written to {}: {} runs, {} tickets purged",
            report.since,
            report.until,
            path.display(),
            report.runs.len(),
            report.purged.listed
        );
    }
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else if let Some(runs) = report.still_running() {
        eprintln!(
            "the report is NOT final: {runs} had not ended when it was made, and it says so; make it again once the run has ended"
        );
        ExitCode::from(EXIT_FAILED)
    } else {
        eprintln!("the report is NOT complete or the records do not verify: it says why");
        ExitCode::from(EXIT_FAILED)
    })
}

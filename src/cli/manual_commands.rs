//! What an operator does by hand: `list`, `plan`, `restore`, `purge`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::args::{ListArgs, PlanArgs, PurgeArgs, RestoreArgs};
use super::common::{UsageError, Writer, client_from, load_config, open_writer, progress_spinner};
use crate::app::EXIT_FAILED;
use crate::cycle::CycleContext;
use crate::render::{self, ListedTicketRow, TableFormat};
use crate::ticket::Ticket;
use crate::zendesk::{ListOptions, Pagination, TicketId};

pub(super) async fn list(config: Option<PathBuf>, args: ListArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let client = client_from(&config)?;
    let options = ListOptions {
        sort: args.sort_by.map(|by| (by, args.sort_order)),
        pagination: if args.offset {
            Pagination::Offset
        } else {
            Pagination::Cursor
        },
        ..ListOptions::default()
    };
    let started = Instant::now();
    let bar = progress_spinner("listing deleted tickets");
    let mut tickets: Vec<Ticket> = Vec::new();
    let mut pages = client.list_deleted(options);
    let limit = args.limit.unwrap_or(usize::MAX);
    while let Some(page) = pages.next().await {
        let page = page?;
        tickets.extend(page.tickets);
        bar.set_message(format!("{} tickets, page {}", tickets.len(), page.number));
        if tickets.len() >= limit {
            tickets.truncate(limit);
            break;
        }
    }
    bar.finish_and_clear();
    let stats = client.stats();
    let rows: Vec<ListedTicketRow> = tickets.iter().map(ListedTicketRow::of).collect();
    print!("{}", render::listed_tickets(&rows, args.format)?);
    eprintln!(
        "{} tickets in {} requests ({} rate-limited, {} retries) in {:.1}s",
        tickets.len(),
        stats.total_sent(),
        stats.rate_limited,
        stats.retries,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// A cycle context for manual commands: the config, its client and store.
pub(super) async fn manual_context(
    config: Option<PathBuf>,
    command: &str,
    new_history: bool,
) -> anyhow::Result<(CycleContext, Writer)> {
    let config = load_config(config)?;
    let client = client_from(&config)?;
    // one writer per audit database, for the whole command
    let (store, lock) = open_writer(&config, command, new_history).await?;
    Ok((
        CycleContext::new(&config, client, store, CancellationToken::new()),
        lock,
    ))
}

pub(super) async fn plan(config: Option<PathBuf>, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    if args.ledger {
        // read-only: the running daemon's ledger is not disturbed
        let store = crate::app::open_reader(&config).await?;
        let mut differ =
            crate::manual::LedgerDiffer::new(&config.policy, &config.safety, chrono::Utc::now());
        let read = store
            .ledger_live_chunks(|rows| {
                rows.iter().for_each(|e| differ.add(e));
                Ok(())
            })
            .await;
        store.close().await;
        read?;
        let diff = differ.finish();
        print!("{}", render::ledger_diff(&diff, args.format)?);
        return Ok(ExitCode::SUCCESS);
    }
    // a plan writes nothing: no audit database is opened
    let client = client_from(&config)?;
    let bar = progress_spinner("listing deleted tickets");
    let ticker = {
        let bar = bar.clone();
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bar.set_message(format!("{} list requests", client.stats().sent("list")));
            }
        })
    };
    let plan = crate::manual::plan(&client, &config.policy, args.explain).await;
    ticker.abort();
    bar.finish_and_clear();
    let plan = plan?;
    // a plan reads ages off this host's clock too
    if let Err(message) = crate::cycle::clock_trusted(&client, config.zendesk.clock_skew) {
        eprintln!("warning: the ages below may be wrong: {message}");
    }
    print!("{}", render::plan(&plan, &config.policy, args.format)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn read_ids(ids: &[TicketId], file: Option<&PathBuf>) -> anyhow::Result<Vec<TicketId>> {
    let mut all = ids.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read --ids-file {}: {e}", path.display()))?;
        for (n, word) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .enumerate()
        {
            all.push(word.parse().map_err(|_| {
                UsageError(format!(
                    "--ids-file {}: {word:?} (item {}) is not a ticket id",
                    path.display(),
                    n + 1
                ))
            })?);
        }
    }
    if all.is_empty() {
        return Err(UsageError(
            "no ticket id given: pass ids as arguments or --ids-file FILE".into(),
        )
        .into());
    }
    // the audit stores ids as SQLite integers (signed 64-bit): a larger id
    // is no Zendesk ticket, and would be stored wrapped
    if let Some(big) = all.iter().find(|id| **id > crate::audit::MAX_TICKET_ID) {
        return Err(UsageError(format!(
            "{big} is not a ticket id: Zendesk ids are below 2^63 ({})",
            crate::audit::MAX_TICKET_ID
        ))
        .into());
    }
    Ok(all)
}

/// Asks on the terminal; refuses when there is none.
pub(super) fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "{question} Not on a terminal: pass --yes to confirm"
        ))
        .into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub(super) fn print_results(
    results: &[crate::manual::IdResult],
    format: TableFormat,
) -> anyhow::Result<()> {
    print!("{}", render::id_results(results, format)?);
    Ok(())
}

pub(super) async fn restore(
    config: Option<PathBuf>,
    args: RestoreArgs,
    new_history: bool,
) -> anyhow::Result<ExitCode> {
    let ids = read_ids(&args.ids, args.ids_file.as_ref())?;
    if !confirm(
        &format!("Restore {} tickets into the ticket views?", ids.len()),
        args.yes,
    )? {
        eprintln!("nothing restored");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let (ctx, _lock) = manual_context(config, "restore", new_history).await?;
    if ctx.settings.dry_run && !args.live {
        return Err(UsageError(format!(
            "safety.dry_run = true: a dry run sends no write request, so {} tickets were not restored; pass --live to restore them",
            ids.len()
        ))
        .into());
    }
    let (run, results) = crate::manual::restore(&ctx, &ids).await?;
    ctx.store.close().await;
    print_results(&results, args.format)?;
    let failed = results.iter().filter(|r| r.outcome != "restored").count();
    eprintln!(
        "{} restored, {failed} not; audit: zd-retention audit run {run}",
        results.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

pub(super) async fn purge(
    config: Option<PathBuf>,
    args: PurgeArgs,
    new_history: bool,
) -> anyhow::Result<ExitCode> {
    let ids = read_ids(&args.ids, args.ids_file.as_ref())?;
    if !args.yes {
        return Err(UsageError(format!(
            "purging {} tickets cannot be undone: pass --yes to confirm",
            ids.len()
        ))
        .into());
    }
    let (ctx, _lock) = manual_context(config, "purge", new_history).await?;
    let (run, results) = crate::manual::purge(&ctx, &ids, args.force, args.live).await?;
    ctx.store.close().await;
    print_results(&results, args.format)?;
    let would = results
        .iter()
        .filter(|r| r.outcome == "would_purge")
        .count();
    if would > 0 {
        eprintln!(
            "dry run: {would} would be purged, nothing was sent (safety.dry_run = true; pass --live to purge); audit: zd-retention audit run {run}"
        );
        return Ok(if would == results.len() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        });
    }
    let purged = results.iter().filter(|r| r.outcome == "purged").count();
    eprintln!(
        "{purged} purged, {} not; audit: zd-retention audit run {run}",
        results.len() - purged
    );
    Ok(if purged == results.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

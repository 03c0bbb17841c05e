//! `zd-retention audit ...`: the audit queries, read-only. Each command
//! gathers through the store and writes what one function of the output
//! layer (`crate::render`) makes of it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::{
    AuditCommand, AuditTarget, DocumentFormat, ExportFormat, ReportFormat, StatsBy,
    command_line_now,
};
use super::common::{UsageError, check_database_arg, load_config};
use crate::app::EXIT_FAILED;
use crate::audit::{AuditStore, SearchFilter};
use crate::cli::args::SearchArgs;
use crate::ids::RunId;
use crate::render::{self, TableFormat};
use crate::zendesk::TicketId;

async fn open(config: Option<PathBuf>, target: &AuditTarget) -> anyhow::Result<AuditStore> {
    match &target.database {
        Some(p) => {
            check_database_arg(p)?;
            AuditStore::open_read_only(p).await
        }
        None => crate::app::open_reader(&load_config(config)?).await,
    }
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
        AuditCommand::Search(args) => {
            check_period(args.since, args.until)?;
            search(config, args).await
        }
        AuditCommand::Ledger { target } => ledger(config, target).await,
        AuditCommand::Head { target } => head(config, target).await,
        AuditCommand::Verify {
            expect_head,
            public_key,
            target,
        } => verify(config, expect_head, public_key, target).await,
        AuditCommand::Keygen { out } => keygen(&out),
        AuditCommand::Migrate {
            to,
            password_file,
            password_env,
            public_key,
            target,
        } => {
            let destination = crate::config::PostgresAudit {
                url: to,
                password_file,
                password_env,
            };
            migrate(config, destination, public_key, target).await
        }
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
    print!("{}", render::runs_table(&runs, target.format)?);
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
    let details = render::RunDetails {
        run: &run,
        decisions: &decisions,
        outcomes: &outcomes,
        jobs: &jobs,
        version: version.as_ref(),
        origin: &origin,
        head: head.as_ref(),
    };
    print!("{}", render::run_details(&details, target.format)?);
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit search`.
async fn search(config: Option<PathBuf>, args: SearchArgs) -> anyhow::Result<ExitCode> {
    let SearchArgs {
        since,
        until,
        rule,
        outcome,
        decision,
        actor,
        ticket,
        limit,
        target,
    } = args;
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
    print!("{}", render::search_table(&rows, target.format)?);
    if target.format == TableFormat::Table {
        eprintln!("{} rows (at most --limit {limit})", rows.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit ledger`.
async fn ledger(config: Option<PathBuf>, target: AuditTarget) -> anyhow::Result<ExitCode> {
    let store = open(config, &target).await?;
    let counts = store.ledger_counts().await?;
    let marks = store.listing_marks(&[]).await?;
    print!("{}", render::ledger(&counts, &marks, target.format)?);
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit head`.
async fn head(config: Option<PathBuf>, target: AuditTarget) -> anyhow::Result<ExitCode> {
    let store = open(config, &target).await?;
    let (seq, hash) = store.chain_head().await?;
    print!("{}", render::chain_head(seq, &hash, target.format));
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
    // asked only where the answer is shown: intact records, no key given
    let signed = target.format == TableFormat::Table
        && report.problem.is_none()
        && signatures.is_none()
        && store.is_signed().await?;
    let verification = render::Verification {
        chain: &report,
        signatures: signatures.as_ref(),
        unverifiable: unverifiable.is_some(),
        signed,
    };
    print!("{}", render::verify_result(&verification, target.format)?);
    if report.problem.is_some() {
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// `zd-retention audit migrate`: the copy, then the destination verified.
async fn migrate(
    config: Option<PathBuf>,
    destination: crate::config::PostgresAudit,
    public_key: Vec<PathBuf>,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    use secrecy::ExposeSecret as _;
    if !crate::config::is_postgres_url(&destination.url) {
        return Err(UsageError(
            "--to: give a PostgreSQL URL, postgres://USER@HOST:PORT/DATABASE".into(),
        )
        .into());
    }
    if url::Url::parse(&destination.url).is_ok_and(|u| {
        u.password().is_some()
            || u.query_pairs()
                .any(|(k, _)| k == "password" || k == "passfile")
    }) {
        return Err(UsageError(
            "--to holds a password, which a process listing shows to every user of this machine: remove it from the URL and give it with --password-file or --password-env".into(),
        )
        .into());
    }
    let keys = read_keys(&public_key)?;
    let shown = crate::audit::redacted_url(&destination.url);
    let source = match &target.database {
        Some(p) => {
            check_database_arg(p)?;
            AuditStore::open_read_only(p).await?
        }
        None => {
            let config = load_config(config)?;
            if config.audit.postgres.is_some() {
                return Err(UsageError(
                    "the config's audit database is PostgreSQL already: name the SQLite file to copy with --database".into(),
                )
                .into());
            }
            AuditStore::open_read_only(&config.audit.database).await?
        }
    };
    let before = source.verify_chain().await?;
    if let Some(problem) = &before.problem {
        anyhow::bail!("the SQLite audit does not verify, so it is not copied: {problem}");
    }
    let url = destination.connect_url()?;
    let copied = source.copy_into_postgres(url.expose_secret()).await?;
    let copy = AuditStore::open_postgres_read_only(url.expose_secret()).await?;
    let after = copy.verify_chain().await?;
    let signatures = if keys.is_empty() {
        None
    } else {
        Some(copy.verify_signatures(&keys).await?)
    };
    for (table, rows) in &copied {
        println!("{table:<20} {rows:>10} rows");
    }
    let mut problem = after.problem.clone();
    if problem.is_none() && after.head != before.head {
        problem = Some(format!(
            "the copy's chain head {} differs from the SQLite audit's {}",
            after.head, before.head
        ));
    }
    if problem.is_none() {
        problem = signatures.as_ref().and_then(|s| s.problem.clone());
    }
    match problem {
        Some(p) => {
            eprintln!("error: the copy in {shown} does not verify: {p}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
        None => {
            println!(
                "copied into {shown}: {} chain entries over {} rows; the same head {}{}",
                after.entries,
                after.rows,
                after.head,
                match &signatures {
                    Some(s) => format!("; {} signed heads verify", s.signed),
                    None if copy.is_signed().await? =>
                        "; signed heads copied (give --public-key to check them)".into(),
                    None => String::new(),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
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
    let mut writer = match format {
        ExportFormat::Jsonl => render::ExportWriter::jsonl(out),
        ExportFormat::Csv => render::ExportWriter::csv(out),
    };
    // a reader that went away (`| head`) ends the export, quietly; told
    // by the writer's own error (a database error may hold a broken pipe
    // of its connection, never taken for the reader's)
    let mut gone = false;
    let exported = store
        .export(since, |row| {
            writer.write(&row).inspect_err(|e| gone = reader_gone(e))
        })
        .await;
    let n = match exported {
        Err(_) if gone => return Ok(ExitCode::SUCCESS),
        other => other?,
    };
    match writer.finish() {
        Err(e) if reader_gone(&e) => return Ok(ExitCode::SUCCESS),
        other => other?,
    }
    eprintln!("{n} decisions exported");
    Ok(ExitCode::SUCCESS)
}

/// Whether writing standard output failed because its reader closed it
/// (`| head`): the end of what was wanted, not an error of ours.
fn reader_gone(e: &anyhow::Error) -> bool {
    let broken = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(broken)
            || cause
                .downcast_ref::<csv::Error>()
                .is_some_and(|c| matches!(c.kind(), csv::ErrorKind::Io(io) if broken(io)))
    })
}

/// `zd-retention audit stats`.
async fn stats(
    config: Option<PathBuf>,
    by: StatsBy,
    since: Option<chrono::DateTime<chrono::Utc>>,
    target: AuditTarget,
) -> anyhow::Result<ExitCode> {
    let store = open(config, &target).await?;
    let text = match by {
        StatsBy::Day => {
            let selected = store.stats_by_day(since).await?;
            let runs = store.runs_by_day(since).await?;
            render::stats_by_day(&selected, &runs, target.format)?
        }
        StatsBy::Rule => {
            render::stats_rows(&store.stats_by_rule(since).await?, true, target.format)?
        }
        StatsBy::Outcome => {
            render::stats_rows(&store.stats_by_outcome(since).await?, false, target.format)?
        }
    };
    print!("{text}");
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
    print!(
        "{}",
        render::ticket_history(ticket_id, &events, target.format)?
    );
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
    print!(
        "{}",
        render::keygen_written(out, &public_path, &key.key_id())
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
    print!("{}", render::config_version(&version, target.format)?);
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
    style: render::RowStyle,
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
            // the document replaces a file of that name, never a device,
            // a pipe or a link (as root, a rename over /dev/full replaced
            // the device): those are refused before anything is written
            if let Ok(meta) = std::fs::symlink_metadata(path)
                && !meta.file_type().is_file()
            {
                return Err(UsageError(format!(
                    "--output {}: not a regular file (a device, a pipe, a link or a folder); name a file, or leave --output out to write to standard output",
                    path.display()
                ))
                .into());
            }
            // a fresh file of its own (0600, never one left behind or a
            // link planted there), renamed over the name once whole
            let file = tempfile::Builder::new()
                .prefix(".zd-retention-")
                .suffix(".partial")
                .tempfile_in(dir)
                .map_err(|e| cannot(&e))?;
            let mut out = std::io::BufWriter::new(file);
            render::write_document(text, style, listing, &mut out)
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
            match render::write_document(text, style, listing, &mut out).await {
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
    use render::RowStyle;
    let (text, style) = match format {
        DocumentFormat::Text => (render::certificate_text(&cert), RowStyle::Text),
        DocumentFormat::Json => (render::json_document(&cert)?, RowStyle::Json),
        DocumentFormat::Html => (
            render::certificate_html(&cert)?,
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
            render::report_html(&report)?,
            render::RowStyle::Html {
                with_subjects: report.purged.with_subjects,
            },
        ),
        ReportFormat::Md => (render::report_markdown(&report), render::RowStyle::Markdown),
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

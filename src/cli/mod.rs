//! The command line: the clap definitions (`args`), the dispatch, and one
//! file per command group (`runs`, `manual`, `audit`, `sandbox`).
//!
//! Commands load the config through the config module, build the parts they
//! need and hand over to the library; they print tables and JSON to stdout,
//! progress and logs to stderr. Exit codes: 0 ok, 1 a failed run or request,
//! 2 bad usage or config.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;

use tokio_util::sync::CancellationToken;

use crate::audit::AuditStore;
use crate::config::{Config, ConfigError};
use crate::cycle::{CycleContext, RunStatus, Trigger, run_cycle};
use crate::sandbox::{CursorSort, Faults, Sandbox, SandboxAuth, SandboxLimits, SandboxOptions};
use crate::telemetry::LogFormat;
use crate::zendesk::{DeletedTicket, ListOptions, Pagination, SortBy, SortOrder};

mod args;
mod audit;
mod manual;
mod runs;
mod sandbox;

pub use args::*;
use manual::*;
use runs::*;
use sandbox::*;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Sandbox(args) => sandbox(args).await,
        Command::List(args) => list(cli.config, args).await,
        Command::CheckConfig => check_config(cli.config),
        Command::Once(args) => once(cli.config, args, cli.new_history).await,
        Command::Run => daemon(cli.config, cli.new_history).await,
        Command::Demo(args) => match check_database_arg(&args.database) {
            Ok(()) => crate::demo::run(args.tickets, &args.database).await,
            Err(e) => Err(e.into()),
        },
        Command::Audit(command) => audit::audit(cli.config, command).await,
        Command::Plan(args) => plan(cli.config, args).await,
        Command::Restore(args) => restore(cli.config, args, cli.new_history).await,
        Command::Purge(args) => purge(cli.config, args, cli.new_history).await,
        Command::Probe(args) => probe(cli.config, args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "zd-retention", &mut script);
            // a reader that went away (`| head`) is not a failure
            use std::io::Write as _;
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(anyhow::Error::new(e).context("cannot write the completions"))
                }
                _ => Ok(ExitCode::SUCCESS),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let usage = e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some();
            let code = if usage { EXIT_USAGE } else { EXIT_FAILED };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

pub(crate) fn load_config(path: Option<PathBuf>) -> Result<Config, ConfigError> {
    let path = Config::locate(path.as_deref())?;
    Config::load(&path)
}

/// Builds the client from the config, reading the credential.
pub use crate::app::client_from;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn progress_spinner(message: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(message.to_string());
    bar
}

/// The config's audit database, opened to write, with its signing key.
async fn open_store(config: &Config) -> anyhow::Result<AuditStore> {
    let signer = config.chain_signer()?;
    AuditStore::open_with(&config.audit.database, signer).await
}

/// `--database` gets the checks `audit.database` gets in a config: a path
/// (no URL) in a folder that exists.
pub(crate) fn check_database_arg(path: &std::path::Path) -> Result<(), UsageError> {
    match crate::config::database_path_problem(path, true) {
        None => Ok(()),
        Some(problem) => Err(UsageError(format!("--database: {problem}"))),
    }
}

/// Bad command-line use: exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

//! The command line: the clap definitions (`args`), the dispatch, and one
//! file per command group (`runs`, `manual`, `audit`, `sandbox`).
//!
//! Commands load the config through the config module, build the parts they
//! need and hand over to the library; they print tables and JSON to stdout,
//! progress and logs to stderr. Exit codes: 0 ok, 1 a failed run or request,
//! 2 bad usage or config.

use std::process::ExitCode;

use common::{
    Sends, SentSoFar, UsageError, check_database_arg, disk_full_message, fix_bash_hyphen_names,
    is_disk_full, load_config, write_manpages, writes_so_far,
};
use manual_commands::{list, plan, purge, restore};
use run_commands::{check_config, daemon, once, probe};
use sandbox_commands::sandbox;

use crate::config::ConfigError;

mod args;
mod audit_commands;
mod common;
mod manual_commands;
mod run_commands;
mod sandbox_commands;

pub use crate::app::{EXIT_FAILED, EXIT_USAGE};
pub use args::{Cli, Command};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    // what a full disk's message needs, before the command is handed over
    let database = cli.command.database_arg().cloned();
    let sends = Sends::of(&cli.command);
    let config = cli.config.clone();
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
        Command::Audit(command) => audit_commands::audit(cli.config, command).await,
        Command::Plan(args) => plan(cli.config, args).await,
        Command::Restore(args) => restore(cli.config, args, cli.new_history).await,
        Command::Purge(args) => purge(cli.config, args, cli.new_history).await,
        Command::Probe(args) => probe(cli.config, args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "zd-retention", &mut script);
            if shell == clap_complete::Shell::Bash {
                script = fix_bash_hyphen_names(script);
            }
            // a reader that went away (`| head`) is not a failure
            use std::io::Write as _;
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(anyhow::Error::new(e).context("cannot write the completions"))
                }
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Manpages { out } => {
            use clap::CommandFactory;
            write_manpages(&Cli::command(), &out).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) if is_disk_full(&e) => {
            let database = database.or_else(|| load_config(config).ok().map(|c| c.audit.database));
            let sent = match sends {
                Sends::Nothing => SentSoFar::Nothing,
                Sends::Reads => SentSoFar::NoWrite,
                Sends::Writes => writes_so_far(),
            };
            eprintln!(
                "error: {}",
                disk_full_message(&e, database.as_deref(), sent)
            );
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            let usage = e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some();
            let code = if usage { EXIT_USAGE } else { EXIT_FAILED };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

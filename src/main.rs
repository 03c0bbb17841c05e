//! The `zd-retention` binary: parses the command line, starts logging and
//! hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use zd_retention::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    zd_retention::telemetry::init(cli.log_format);
    // One-shot commands run on one thread: fewer wake-ups across threads per
    // page. The daemon and the sandbox serve concurrent work on several.
    let runtime = if cli.command.is_long_running() {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(rt) => rt.block_on(cli::run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(cli::EXIT_FAILED)
        }
    }
}

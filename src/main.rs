//! The `zd-retention` binary: parses the command line, starts logging and
//! hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use zd_retention::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    zd_retention::telemetry::init(cli.log_format);
    cli::run(cli).await
}

//! The `zd-retention` binary: parses the command line, starts logging and
//! hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use zd_retention::cli::{self, Cli};

fn main() -> ExitCode {
    // `zd-retention audit run 1 | head -1`: the reader went away, which is
    // not an error of ours; leave quietly instead of panicking on the write.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") {
            if message.contains("Broken pipe") {
                std::process::exit(0);
            }
            // a full disk, a closed descriptor: an error, not a crash
            eprintln!("error: cannot write the output: {message}");
            std::process::exit(1);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    zd_retention::telemetry::init(zd_retention::telemetry::LogFormat::choose(
        cli.log_format,
        matches!(cli.command, zd_retention::cli::Command::Run),
    ));
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

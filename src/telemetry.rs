//! Logging through tracing: readable on a terminal, JSON on request (and for
//! the daemon when stderr is not a terminal); the level comes from
//! `RUST_LOG` (default: our lines at info, the libraries' at warn). Colour
//! only on a terminal, and never with `NO_COLOR`. Logs go to stderr so that
//! stdout stays clean for tables and JSON. Reads `RUST_LOG` and `NO_COLOR`:
//! the one place besides the config module that reads the environment.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Without `RUST_LOG`: this program's lines at info, its libraries' (the
/// scheduler's chatter, HTTP, SQL) at warn.
pub const DEFAULT_FILTER: &str = "warn,zd_retention=info";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// The format asked for, else JSON for the daemon when stderr is not a
    /// terminal (journald, `kubectl logs`), else text.
    pub fn choose(asked: Option<LogFormat>, daemon: bool) -> LogFormat {
        asked.unwrap_or(if daemon && !std::io::stderr().is_terminal() {
            LogFormat::Json
        } else {
            LogFormat::Text
        })
    }
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set (and not
/// empty), as no-color.org asks.
pub fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber; a second call is ignored (tests).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
    }

    #[test]
    fn an_asked_format_wins_and_the_daemon_defaults_by_its_stderr() {
        assert_eq!(
            LogFormat::choose(Some(LogFormat::Text), true),
            LogFormat::Text
        );
        assert_eq!(
            LogFormat::choose(Some(LogFormat::Json), false),
            LogFormat::Json
        );
        assert_eq!(LogFormat::choose(None, false), LogFormat::Text);
        // tests run with stderr captured: not a terminal
        if !std::io::stderr().is_terminal() {
            assert_eq!(LogFormat::choose(None, true), LogFormat::Json);
        }
    }
}

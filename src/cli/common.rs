//! What the command groups share: config loading, the client, signals,
//! spinners, the store, the full-disk message and usage errors.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::args::Command;
use crate::audit::AuditStore;
use crate::config::{Config, ConfigError};

pub fn load_config(path: Option<PathBuf>) -> Result<Config, ConfigError> {
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

pub(super) fn progress_spinner(message: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(message.to_string());
    bar
}

/// The config's audit database, opened to write, with its signing key.
pub(super) use crate::app::open_store;

/// What a writing command holds for its life: the SQLite file's lock, or
/// (on PostgreSQL) the lead its store carries.
#[derive(Debug)]
pub(super) enum Writer {
    File {
        _lock: crate::writer_lock::WriterLock,
    },
    Lead,
}

/// The name a writer leaves for others to read.
pub(super) fn holder_name(command: &str) -> String {
    crate::audit::Lead::holder_name(command)
}

/// Takes the config's audit database for writing and opens it: the
/// SQLite file's lock, or the lead of a PostgreSQL audit (refused at once,
/// naming the holder, when another process has either).
pub(super) async fn open_writer(
    config: &Config,
    command: &str,
    new_history: bool,
) -> anyhow::Result<(AuditStore, Writer)> {
    match &config.audit.postgres {
        None => {
            let mut lock =
                crate::writer_lock::acquire(&config.audit.database, command, new_history)?;
            let store = open_store(config).await?;
            lock.mark_history();
            Ok((store, Writer::File { _lock: lock }))
        }
        Some(pg) => {
            use secrecy::ExposeSecret as _;
            let url = pg.connect_url()?;
            let lead = match crate::audit::Lead::try_take(
                url.expose_secret(),
                &holder_name(command),
            )
            .await?
            {
                Ok(lead) => lead,
                Err(holder) => anyhow::bail!(
                    "the audit database {} is in use by another writer: {holder}. Wait for it to finish, or stop it",
                    crate::audit::redacted_url(&pg.url)
                ),
            };
            let store = AuditStore::open_postgres_leading(
                url.expose_secret(),
                config.chain_signer()?,
                lead,
            )
            .await?;
            Ok((store, Writer::Lead))
        }
    }
}

/// What a command may send to Zendesk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sends {
    /// Nothing at all (the audit queries, check-config, the sandbox).
    Nothing,
    /// Read requests only (list, plan, probe).
    Reads,
    /// Write requests too (once, run, restore, purge, and the demo to its
    /// sandbox), each recorded before it is sent.
    Writes,
}

impl Sends {
    pub(super) fn of(command: &Command) -> Self {
        match command {
            Command::List(_) | Command::Plan(_) | Command::Probe(_) => Sends::Reads,
            Command::Once(_)
            | Command::Run
            | Command::Restore(_)
            | Command::Purge(_)
            | Command::Demo(_) => Sends::Writes,
            Command::Sandbox(_)
            | Command::CheckConfig
            | Command::Audit(_)
            | Command::Completions { .. }
            | Command::Manpages { .. } => Sends::Nothing,
        }
    }
}

/// What had been sent when the disk filled, as far as can be said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentSoFar {
    /// The command sends nothing.
    Nothing,
    /// No write request: none was recorded, and each is recorded first.
    NoWrite,
    /// This many write requests were recorded, and may have been sent.
    Writes(u64),
}

/// Whether SQLite said the disk (or the database) is full, SQLITE_FULL
/// (13), anywhere in the error's chain.
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    use sqlx::error::DatabaseError as _;
    e.chain().any(|cause| {
        let code = match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db.code(),
            _ => cause
                .downcast_ref::<sqlx::sqlite::SqliteError>()
                .and_then(|db| db.code()),
        };
        // the primary result code is the low byte of an extended one
        code.and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == 13)
    })
}

/// A full disk in one message, with its fix: where to free space, what was
/// being done, and what was sent (only what is true). SQLite's own words
/// (printed two or three times by the whole chain) are left out.
pub fn disk_full_message(
    e: &anyhow::Error,
    database: Option<&std::path::Path>,
    sent: SentSoFar,
) -> String {
    let doing = e.to_string();
    let doing = (!doing.contains("database or disk is full")).then_some(doing);
    disk_full_words(doing.as_deref(), database, sent)
}

/// The words of [`disk_full_message`], for an error known only as text
/// (a run's recorded error).
pub fn disk_full_words(
    doing: Option<&str>,
    database: Option<&std::path::Path>,
    sent: SentSoFar,
) -> String {
    let place = database.map_or("the audit database".to_string(), |d| {
        d.display().to_string()
    });
    let doing = doing.map(|d| format!(" ({d})")).unwrap_or_default();
    let sent = match sent {
        SentSoFar::Nothing => "nothing was sent".to_string(),
        SentSoFar::NoWrite => {
            "no write request was sent to Zendesk (each is recorded before it is sent)".to_string()
        }
        SentSoFar::Writes(1) => {
            "the write request recorded before it may have been sent: the next run settles its outcome".to_string()
        }
        SentSoFar::Writes(n) => format!(
            "the {n} write requests recorded before it may have been sent: the next run settles their outcomes"
        ),
    };
    format!(
        "the disk holding {place} is full{doing}: free space on the disk holding {place}, then run the command again; {sent}"
    )
}

/// What a writing command had sent when the disk filled.
pub fn writes_so_far() -> SentSoFar {
    match crate::audit::requests_recorded() {
        0 => SentSoFar::NoWrite,
        n => SentSoFar::Writes(n),
    }
}

/// `--database` gets the checks `audit.database` gets in a config: a path
/// (no URL) in a folder that exists.
pub fn check_database_arg(path: &std::path::Path) -> Result<(), UsageError> {
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

/// clap_complete's bash script names its case arms `zd__subcmd__retention__…`
/// while its dispatch loop builds `zd__retention__…` for a hyphenated
/// program name, so nothing below the first word completed (found by a
/// hostile run; clap-rs/clap#6421, open). The arms are renamed to what the
/// loop builds.
pub(super) fn fix_bash_hyphen_names(script: Vec<u8>) -> Vec<u8> {
    String::from_utf8(script)
        .map(|text| {
            text.replace("zd__subcmd__retention", "zd__retention")
                .into_bytes()
        })
        .unwrap_or_else(|e| e.into_bytes())
}

/// Writes `zd-retention.1` and a page per visible subcommand
/// (`zd-retention-audit-verify.1`, ...) into `dir`.
pub(super) fn write_manpages(cli: &clap::Command, dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a folder: create it first (mkdir -p {})",
            dir.display(),
            dir.display()
        );
    }
    let mut cli = cli.clone().version(crate::build::VERSION);
    cli.build();
    fn walk(cmd: &clap::Command, name: String, dir: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let cmd = cmd.clone().name(name.clone());
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .date(crate::build::DATE)
            .render(&mut page)
            .with_context(|| format!("cannot render the manual page of {name}"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            walk(sub, format!("{name}-{}", sub.get_name()), dir)?;
        }
        Ok(())
    }
    walk(&cli, "zd-retention".into(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's own SQLITE_FULL, from a database that may not grow past
    /// two pages (`max_page_count`): what a full disk gives, without one.
    async fn full_database_error(db: &std::path::Path) -> anyhow::Error {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .create_if_missing(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("PRAGMA max_page_count = 2")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        let e = loop {
            if let Err(e) = sqlx::query("INSERT INTO t VALUES (zeroblob(4096))")
                .execute(&pool)
                .await
            {
                break e;
            }
        };
        pool.close().await;
        anyhow::Error::new(e).context("cannot record the start of the run")
    }

    #[tokio::test]
    async fn a_full_disk_is_one_message_with_the_fix_and_only_true_words_on_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let e = full_database_error(&db).await;
        assert!(format!("{e:#}").contains("(code: 13)"), "{e:#}");
        assert!(is_disk_full(&e));
        let place = db.display().to_string();
        let message = disk_full_message(&e, Some(&db), SentSoFar::Nothing);
        assert_eq!(
            message,
            format!(
                "the disk holding {place} is full (cannot record the start of the run): free space on the disk holding {place}, then run the command again; nothing was sent"
            )
        );
        assert!(!message.contains("code: 13"), "{message}");
        let message = disk_full_message(&e, Some(&db), SentSoFar::NoWrite);
        assert!(
            message.ends_with(
                "no write request was sent to Zendesk (each is recorded before it is sent)"
            ),
            "{message}"
        );
        let message = disk_full_message(&e, None, SentSoFar::Writes(3));
        assert!(!message.contains("nothing was sent"), "{message}");
        assert!(message.contains("the 3 write requests recorded before it may have been sent"));
        assert!(message.contains("free space on the disk holding the audit database"));
        let message = disk_full_message(&e, None, SentSoFar::Writes(1));
        assert!(message.ends_with("the write request recorded before it may have been sent: the next run settles its outcome"), "{message}");
        // the bare error, and an error that is something else
        let bare = anyhow::Error::new(
            full_database_error(&dir.path().join("b.db"))
                .await
                .downcast::<sqlx::Error>()
                .unwrap(),
        );
        assert!(is_disk_full(&bare));
        assert!(
            disk_full_message(&bare, Some(&db), SentSoFar::Nothing)
                .starts_with(&format!("the disk holding {place} is full: free space"))
        );
        assert!(!is_disk_full(&anyhow::anyhow!(
            "cannot open the audit database: (code: 14) unable to open database file"
        )));
    }
}

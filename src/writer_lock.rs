//! One writer per audit database: every command that writes (`run`,
//! `once`, `purge`, `restore`, the demo) holds an exclusive advisory lock on
//! `<database>.lock` for its whole life.
//!
//! The lock is the operating system's (`flock`, through std's
//! `File::try_lock`): it is released when the process ends, however it
//! ends (SIGKILL included), so a standby never waits on a dead holder and no
//! heartbeat is needed. It works between processes on one host and on
//! volumes whose file system honours `flock` (local disks, most Kubernetes
//! block volumes); on NFS it may not, which the README says. The file holds
//! the holder's pid, command, host and start time, for the message a second
//! writer gets. Read-only audit commands never take it.
//!
//! Owns the lock file; never touches the database itself.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

/// The lock held; released when dropped or when the process ends.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    path: PathBuf,
    /// The lock file said a database with history was opened here before.
    had_history: bool,
}

impl WriterLock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a database with history was opened beside this lock before:
    /// if the database is missing now, its history vanished.
    pub fn had_history(&self) -> bool {
        self.had_history
    }

    /// Notes, in the lock file, that the database was opened: from now on
    /// its disappearance is noticed at the next start.
    pub fn mark_history(&mut self) {
        if !self.had_history {
            let _ = self
                .file
                .seek(SeekFrom::End(0))
                .and_then(|_| self.file.write_all(b"history=kept\n"))
                .and_then(|()| self.file.sync_all());
            self.had_history = true;
        }
    }
}

/// Refuses to begin a fresh history where one vanished: the database is
/// missing, but the lock file beside it says one was in use here.
pub fn check_history(database: &Path, lock: &WriterLock, new_history: bool) -> anyhow::Result<()> {
    if lock.had_history() && std::fs::symlink_metadata(database).is_err() && !new_history {
        anyhow::bail!(
            "the audit database {} is missing, but {} shows one was in use here: its history is gone. Restore it from a backup; or, to start a fresh history knowingly, run again with --new-history",
            database.display(),
            lock.path().display()
        );
    }
    Ok(())
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the audit database {database} is in use by another writer ({holder}): only one command that writes may use it at a time; wait for that one to finish or stop it (read-only audit commands work meanwhile)"
    )]
    Held { database: String, holder: String },
    #[error("cannot lock the audit database's lock file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// `<database>.lock`, beside the database.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "audit.db".into());
    name.push(".lock");
    database.with_file_name(name)
}

fn open(path: &Path) -> Result<File, LockError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// Who holds the lock, as its file says.
fn holder(path: &Path) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let fields: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| matches!(*k, "pid" | "command" | "host" | "since"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    match (read, fields.is_empty()) {
        (Ok(_), false) => fields.join(", "),
        _ => "a process that has not written its name yet".into(),
    }
}

/// Takes the lock at once, or says who holds it.
pub fn acquire(database: &Path, command: &str) -> Result<WriterLock, LockError> {
    let path = lock_path(database);
    let mut file = open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(LockError::Held {
                database: database.display().to_string(),
                holder: holder(&path),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(LockError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    }
    let mut previous = String::new();
    let _ = file.read_to_string(&mut previous);
    let had_history = previous.lines().any(|l| l == "history=kept");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let text = format!(
        "pid={}\ncommand={command}\nhost={host}\nsince={}\n{}",
        std::process::id(),
        crate::audit::timestamp(Utc::now()),
        if had_history { "history=kept\n" } else { "" }
    );
    // the holder's name is for messages only: failing to write it is not fatal
    let _ = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|()| file.flush());
    Ok(WriterLock {
        file,
        path,
        had_history,
    })
}

/// For a daemon: takes the lock, or waits as a standby until the holder
/// ends, trying every `poll`. `None` when cancelled while waiting.
pub async fn acquire_or_wait(
    database: &Path,
    command: &str,
    poll: Duration,
    cancel: &CancellationToken,
) -> Result<Option<WriterLock>, LockError> {
    let mut announced = false;
    loop {
        match acquire(database, command) {
            Ok(lock) => {
                if announced {
                    tracing::warn!(
                        database = %database.display(),
                        "the active daemon is gone: this one takes over"
                    );
                }
                return Ok(Some(lock));
            }
            Err(LockError::Held { holder, .. }) => {
                if !announced {
                    tracing::warn!(
                        database = %database.display(),
                        holder = %holder,
                        "standby: another writer holds the audit database; taking over when it stops"
                    );
                    announced = true;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holders_name_until_the_first_lets_go() {
        let dir = tempfile_dir();
        let db = dir.join("audit.db");
        let first = acquire(&db, "once").unwrap();
        let err = acquire(&db, "purge").unwrap_err().to_string();
        assert!(err.contains("in use by another writer"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("command once"), "{err}");
        drop(first);
        let again = acquire(&db, "purge").unwrap();
        assert_eq!(again.path(), lock_path(&db));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "zd-lock-test-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

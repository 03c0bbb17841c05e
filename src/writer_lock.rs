//! One writer per audit database: every command that writes (`run`,
//! `once`, `purge`, `restore`, the demo) holds an exclusive advisory lock on
//! the database file itself for its whole life.
//!
//! The lock is the operating system's `flock` (through std's
//! `File::try_lock`) on the database file: it belongs to the file, not to a
//! path, so a hard link, a relative path or a symlinked directory reaches
//! the same lock; and it is released when the process ends, however it ends
//! (SIGKILL included), so a standby never waits on a dead holder and no
//! heartbeat is needed. (`flock` and SQLite's own `fcntl` locks do not
//! interfere on Linux.) It works between processes on one host and on
//! volumes whose file system honours `flock`; on NFS it may not, which the
//! README says.
//!
//! A sidecar file `<database>.lock` names the holder (pid, command, host,
//! since when) for the message a second writer gets, and remembers that a
//! database with history was used here, so that a vanished database is not
//! silently begun again. Neither file is ever opened through a symbolic
//! link. Read-only audit commands take no lock.
//!
//! Owns the lock and the sidecar; never reads or writes the database's
//! content.

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
    /// The database file, flocked.
    _database: File,
    sidecar: Option<File>,
    path: PathBuf,
    had_history: bool,
}

impl WriterLock {
    /// The sidecar file naming the holder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notes, in the sidecar, that the database was opened: from now on its
    /// disappearance is noticed at the next start.
    pub fn mark_history(&mut self) {
        if self.had_history {
            return;
        }
        if let Some(file) = self.sidecar.as_mut() {
            let _ = file
                .seek(SeekFrom::End(0))
                .and_then(|_| file.write_all(b"history=kept\n"))
                .and_then(|()| file.sync_all());
        }
        self.had_history = true;
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the audit database {database} is in use by another writer ({holder}): only one command that writes may use it at a time; wait for that one to finish or stop it (read-only audit commands work meanwhile)"
    )]
    Held { database: String, holder: String },
    #[error(
        "the audit database {database} is missing, but {sidecar} shows one was in use here: its history is gone. Restore it from a backup; or, to start a fresh history knowingly, run again with --new-history"
    )]
    HistoryGone { database: String, sidecar: String },
    #[error("cannot use {path} for the audit database: {reason}")]
    Io { path: String, reason: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> LockError {
    LockError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
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

/// Opens a file that must not be a symbolic link (`O_NOFOLLOW`), creating
/// it 0600 when `create`.
fn open_no_follow(path: &Path, create: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Who holds the lock, as the sidecar says.
fn holder(text: &str) -> String {
    let fields: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| matches!(*k, "pid" | "command" | "host" | "since"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if fields.is_empty() {
        "a process that has not written its name yet".into()
    } else {
        fields.join(", ")
    }
}

/// Takes the lock at once, or says who holds it. Before anything is
/// created: refuses to begin a fresh history where one vanished, unless
/// `new_history`.
pub fn acquire(database: &Path, command: &str, new_history: bool) -> Result<WriterLock, LockError> {
    let database = std::path::absolute(database).map_err(|e| io(database, e))?;
    let sidecar_path = lock_path(&database);
    // the folder is the operator's: a missing one is a mistyped path
    if let Some(dir) = database.parent()
        && !dir.is_dir()
    {
        return Err(io(
            &database,
            format!(
                "its folder {} does not exist: create it first (zd-retention never creates folders)",
                dir.display()
            ),
        ));
    }
    refuse_root_over_another_owner(&database)?;
    let mut sidecar = match open_no_follow(&sidecar_path, true) {
        Ok(f) => f,
        Err(e) => {
            return Err(io(
                &sidecar_path,
                format!("{e} (is it a symbolic link? it must be a plain file)"),
            ));
        }
    };
    let mut previous = String::new();
    let _ = sidecar.read_to_string(&mut previous);
    let had_history = previous.lines().any(|l| l == "history=kept");
    let exists = std::fs::symlink_metadata(&database).is_ok();
    if had_history && !exists && !new_history {
        return Err(LockError::HistoryGone {
            database: database.display().to_string(),
            sidecar: sidecar_path.display().to_string(),
        });
    }
    crate::audit::create_private(&database).map_err(|e| io(&database, e))?;
    let file = open_no_follow(&database, false).map_err(|e| io(&database, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(LockError::Held {
                database: database.display().to_string(),
                holder: holder(&previous),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&database, e)),
    }
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
    let _ = sidecar
        .set_len(0)
        .and_then(|()| sidecar.seek(SeekFrom::Start(0)))
        .and_then(|_| sidecar.write_all(text.as_bytes()))
        .and_then(|()| sidecar.flush());
    Ok(WriterLock {
        _database: file,
        sidecar: Some(sidecar),
        path: sidecar_path,
        had_history,
    })
}

/// Refuses a writer running as root on a database (or, before it exists,
/// a folder) that another user owns, such as the service's user: the
/// files root would make (the database, its lock, its log, the copy before
/// an upgrade) would belong to root, and the service could no longer open
/// them. Found by a hostile run: `sudo zd-retention once` locked the
/// service out with "Permission denied".
fn refuse_root_over_another_owner(database: &Path) -> Result<(), LockError> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid cannot fail and touches no memory
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let owned = std::fs::metadata(database)
        .or_else(|_| std::fs::metadata(database.parent().unwrap_or(Path::new("/"))));
    let Ok(meta) = owned else { return Ok(()) };
    if meta.uid() == 0 {
        return Ok(());
    }
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == meta.uid().to_string()).then(|| name.to_string())
            })
        });
    let who = name.as_deref().map_or_else(
        || format!("uid {}", meta.uid()),
        |n| format!("user {n} (uid {})", meta.uid()),
    );
    let run_as = name.as_deref().unwrap_or("<that user>");
    Err(io(
        database,
        format!(
            "it belongs to {who}, and this command runs as root: the files it would make (the lock, the write-ahead log, a copy before an upgrade) would belong to root and lock {who} out. Run it as the owner: runuser -u {run_as} -- zd-retention ..."
        ),
    ))
}

/// For a daemon: takes the lock, or waits as a standby until the holder
/// ends, trying every `poll`. `None` when cancelled while waiting.
pub async fn acquire_or_wait(
    database: &Path,
    command: &str,
    new_history: bool,
    poll: Duration,
    cancel: &CancellationToken,
) -> Result<Option<WriterLock>, LockError> {
    let mut announced = false;
    loop {
        match acquire(database, command, new_history) {
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

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "zd-lock-test-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_folder_is_refused_and_never_created() {
        let dir = temp_dir();
        let db = dir.join("not").join("here").join("audit.db");
        let err = acquire(&db, "once", false).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!dir.join("not").exists(), "no folder is made");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holders_name_until_the_first_lets_go() {
        let dir = temp_dir();
        let db = dir.join("audit.db");
        let first = acquire(&db, "once", false).unwrap();
        let err = acquire(&db, "purge", false).unwrap_err().to_string();
        assert!(err.contains("in use by another writer"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("command once"), "{err}");
        drop(first);
        let again = acquire(&db, "purge", false).unwrap();
        assert_eq!(again.path(), lock_path(&std::path::absolute(&db).unwrap()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_hard_link_or_another_spelling_of_the_path_reaches_the_same_lock() {
        let dir = temp_dir();
        let db = dir.join("audit.db");
        let _first = acquire(&db, "once", false).unwrap();
        let link = dir.join("other-name.db");
        std::fs::hard_link(&db, &link).unwrap();
        assert!(matches!(
            acquire(&link, "once", false),
            Err(LockError::Held { .. })
        ));
        let dotted = dir.join(".").join("audit.db");
        assert!(matches!(
            acquire(&dotted, "once", false),
            Err(LockError::Held { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_symlinked_sidecar_is_never_followed() {
        let dir = temp_dir();
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, "important").unwrap();
        let db = dir.join("audit.db");
        std::os::unix::fs::symlink(&victim, lock_path(&db)).unwrap();
        assert!(acquire(&db, "once", false).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "important");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

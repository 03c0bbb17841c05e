//! The store itself: its pool, the file a writer opened, and the times and
//! ids every table shares. The bottom of the audit module: it imports none
//! of its siblings but the signing key it holds.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::AnyPool;

use super::keys::ChainSigner;

pub use crate::ids::{JobRowId, RunId};

/// Reads a stored time back (`None` for NULL, empty or unreadable text).
pub(crate) fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|d| DateTime::parse_from_rfc3339(&d).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// Timestamps as stored: RFC 3339, UTC, milliseconds.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The store; cheap to clone (a pool).
#[derive(Debug, Clone)]
pub struct AuditStore {
    pub(super) pool: AnyPool,
    /// For a writer: the file and its identity when opened. A database
    /// removed or replaced while in use fails the next write loudly:
    /// SQLite would go on writing to the removed file, and the history
    /// would vanish without a word.
    pub(super) file: Option<(std::path::PathBuf, FileIdentity)>,
    /// The write-ahead log this writer opened: removed with the database's
    /// disappearance, so that SQLite never replays it onto another file
    /// moved into its place.
    pub(super) wal: Option<FileIdentity>,
    /// An upgraded private copy of an older database being read: removed
    /// when the last clone of the store goes.
    pub(super) scratch: Option<std::sync::Arc<ScratchFile>>,
    /// Signs the chain's head at each run's end (`[audit] signing_key_file`).
    pub(super) signer: Option<ChainSigner>,
}

/// A temporary file removed on drop.
#[derive(Debug)]
pub(super) struct ScratchFile(pub(super) std::path::PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

impl AuditStore {
    /// Whether this store only reads, on one snapshot held for its life.
    pub(crate) fn is_reader(&self) -> bool {
        self.file.is_none()
    }

    /// A store that only reads.
    pub(super) fn reader(pool: AnyPool) -> Self {
        Self {
            pool,
            file: None,
            wal: None,
            scratch: None,
            signer: None,
        }
    }

    /// Fails when the database file a writer opened was removed or replaced
    /// since (device and inode), before anything more is written.
    pub(super) fn check_file(&self) -> anyhow::Result<()> {
        if let Some((path, identity)) = &self.file
            && FileIdentity::of(path) != Some(*identity)
        {
            // our log belongs to the file that went: left at this path,
            // SQLite would replay it onto whatever file takes the name
            let wal_path = suffixed(path, "-wal");
            if self.wal.is_some() && FileIdentity::of(&wal_path) == self.wal {
                let _ = std::fs::remove_file(&wal_path);
                let _ = std::fs::remove_file(suffixed(path, "-shm"));
            }
            anyhow::bail!(
                "the audit database {} was removed or replaced while in use: what this process writes would be lost with it, so it stops; restore the database (from a backup or the moved file) before running again",
                path.display()
            );
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `path` with a suffix on its file name (`-wal`, `-shm`).
pub(super) fn suffixed(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The identity of the database file while a writer uses it: its device
/// and inode, checked at every commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    pub(super) fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

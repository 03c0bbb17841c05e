//! One active writer across nodes, on a PostgreSQL audit.
//!
//! The active daemon holds a session advisory lock for its whole life, on a
//! connection of its own (never a pooled one): PostgreSQL releases it when
//! that session ends, however the process died. A dropped connection loses
//! the lock without a word, so the holder checks, before each write
//! transaction and each write to Zendesk, that its session is still there
//! and still holds the lock ([`Lead::confirm`]); once that fails it never
//! writes again.
//!
//! Each takeover raises a fencing term (table `fence`), and every write
//! transaction of the holder checks in the database that the term is still
//! its own (`AuditStore::begin_write`): a former leader paused past the
//! loss of its lock finds a newer term and is refused, even if it never
//! noticed the loss.
//!
//! A pooler in transaction mode (pgBouncer's `pool_mode = transaction`)
//! hands each transaction to any server session: a session lock is then
//! meaningless. Taking the lead refuses a connection whose server session
//! changes between statements.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::{AnyConnection, Connection as _};
use tokio_util::sync::CancellationToken;

use super::connect::{named, redacted};

/// The session advisory lock of the active daemon: any number, the same for
/// every node of one audit database.
pub(super) const LEAD_LOCK_KEY: i64 = 0x7a64_6c65_6164_6572; // "zdleader"

/// Sent on every PostgreSQL session: the server notices a client that
/// vanished (its host lost power, its network cut) within about 30 s and
/// ends its session, releasing the lead, instead of after the kernel's two
/// hours.
pub(crate) const KEEPALIVES: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000";

/// The lead, held.
#[derive(Debug)]
pub struct Lead {
    conn: tokio::sync::Mutex<AnyConnection>,
    term: std::sync::atomic::AtomicI64,
    lost: AtomicBool,
    pid: i64,
    holder: String,
}

/// Who holds the lead, as the holder recorded it.
async fn holder_of(conn: &mut AnyConnection) -> String {
    let row: Option<(String, String, i64)> =
        sqlx::query_as("SELECT holder, taken_at, term FROM fence WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await
            .ok()
            .flatten();
    match row {
        Some((holder, at, term)) => format!("{holder}, since {at} (term {term})"),
        None => "another node".into(),
    }
}

impl Lead {
    /// The name this process leaves as the lead's holder, as the SQLite
    /// file's lock names its holder: "pid N, command C, host H".
    pub fn holder_name(command: &str) -> String {
        let host = whoami::hostname().unwrap_or_else(|_| "?".into());
        format!("pid {}, command {command}, host {host}", std::process::id())
    }

    /// Takes the lead now, or says who holds it.
    pub async fn try_take(url: &str, holder: &str) -> anyhow::Result<Result<Lead, String>> {
        super::connect::install_drivers();
        let shown = redacted(url);
        let mut conn = AnyConnection::connect(&named(url))
            .await
            .map_err(|e| super::connect::refused_connection(e, &shown))?;
        {
            use sqlx::Executor as _;
            (&mut conn).execute(KEEPALIVES).await?;
            // a takeover waits at most this long for a former leader's
            // transaction to end
            (&mut conn).execute("SET lock_timeout = '60s'").await?;
        }
        let pids: Vec<i64> = {
            let mut pids = Vec::new();
            for _ in 0..3 {
                pids.push(
                    sqlx::query_scalar("SELECT CAST(pg_backend_pid() AS BIGINT)")
                        .fetch_one(&mut conn)
                        .await?,
                );
            }
            pids
        };
        if pids.windows(2).any(|w| w[0] != w[1]) {
            anyhow::bail!(
                "the audit database {shown} is reached through a pooler in transaction mode (its server session changed between two statements): the lead of one active daemon is a session lock and cannot hold there. Point audit.database at PostgreSQL itself, or at a pooler in session mode"
            );
        }
        let took: bool = sqlx::query_scalar::<_, i64>(
            "SELECT CASE WHEN pg_try_advisory_lock($1) THEN 1 ELSE 0 END",
        )
        .bind(LEAD_LOCK_KEY)
        .fetch_one(&mut conn)
        .await?
            == 1;
        if !took {
            let who = holder_of(&mut conn).await;
            let _ = conn.close().await;
            return Ok(Err(who));
        }
        Ok(Ok(Lead {
            conn: tokio::sync::Mutex::new(conn),
            term: std::sync::atomic::AtomicI64::new(0),
            lost: AtomicBool::new(false),
            pid: pids[0],
            holder: holder.to_string(),
        }))
    }

    /// Takes the lead, or waits as a standby until it is free, trying every
    /// `poll`; `None` when cancelled while waiting. `standby` is told who
    /// holds it, once.
    pub async fn take_or_wait(
        url: &str,
        holder: &str,
        poll: Duration,
        cancel: &CancellationToken,
        mut standby: impl FnMut(&str),
    ) -> anyhow::Result<Option<Lead>> {
        let mut announced = false;
        loop {
            match Self::try_take(url, holder).await {
                Ok(Ok(lead)) => return Ok(Some(lead)),
                Ok(Err(who)) if !announced => {
                    standby(&who);
                    announced = true;
                }
                Ok(Err(_)) => {}
                // the database may be restarting: a standby keeps waiting
                Err(e) if announced => {
                    tracing::warn!(error = %format!("{e:#}"), "standby: cannot reach the audit database; trying again");
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Raises the fencing term: this holder's writes are the only ones the
    /// database takes from now on. Called once the store is migrated.
    pub async fn raise_term(&self) -> anyhow::Result<i64> {
        let mut conn = self.conn.lock().await;
        let term: i64 = sqlx::query_scalar(
            "INSERT INTO fence (id, term, holder, taken_at) VALUES (1, 1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET term = fence.term + 1, holder = excluded.holder, taken_at = excluded.taken_at
             RETURNING term",
        )
        .bind(&self.holder)
        .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .fetch_one(&mut *conn)
        .await
        .context("cannot raise the fencing term")?;
        self.term.store(term, Ordering::SeqCst);
        Ok(term)
    }

    /// This holder's fencing term (0 before [`Self::raise_term`]).
    pub fn term(&self) -> i64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Whether the lead was found lost (never regained: the process stops).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Fails unless this process still holds the lead: its session is
    /// alive, is the one that took the lock, holds it, and the term is
    /// still its own. A failure is final.
    pub async fn confirm(&self) -> anyhow::Result<()> {
        if self.is_lost() {
            anyhow::bail!(
                "this daemon lost the lead of the audit database: it writes nothing more"
            );
        }
        let checked = async {
            let mut conn = self.conn.lock().await;
            let (pid, held, term): (i64, i64, Option<i64>) = sqlx::query_as(
                "SELECT CAST(pg_backend_pid() AS BIGINT),
                        (SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                            AND pid = pg_backend_pid()
                            AND classid = CAST(($1 >> 32) & 4294967295 AS OID)
                            AND objid = CAST($1 & 4294967295 AS OID) AND objsubid = 1),
                        (SELECT term FROM fence WHERE id = 1)",
            )
            .bind(LEAD_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
            anyhow::ensure!(
                pid == self.pid,
                "its session changed (a pooler, or a reconnection)"
            );
            anyhow::ensure!(held == 1, "its session no longer holds the lock");
            anyhow::ensure!(
                term == Some(self.term()),
                "another node took over (term {} after {})",
                term.unwrap_or_default(),
                self.term()
            );
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), checked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.lost.store(true, Ordering::SeqCst);
                Err(e.context(
                    "this daemon lost the lead of the audit database: it writes nothing more",
                ))
            }
            Err(_) => {
                self.lost.store(true, Ordering::SeqCst);
                anyhow::bail!(
                    "this daemon lost the lead of the audit database (no answer in 10 s): it writes nothing more"
                )
            }
        }
    }
}

//! Chain heads: every transaction that appends to the hash chain records,
//! before it commits, the head it leaves and the entries it added (signed
//! when the store has a key); a run's end is such a head marked `end`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Any;

use super::chain::last_entry;
use super::keys::ChainSigner;
use super::store::{AuditStore, RunId, timestamp};

/// What a head is: a commit of a run, its end, or the end written for it by
/// the next process after it was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadKind {
    Commit,
    End,
    Interrupted,
}

impl HeadKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::End => "end",
            Self::Interrupted => "interrupted",
        }
    }
}

/// What a signature covers, one field a line so that none can run into
/// another: the run, what the head is, the entries the transaction
/// appended (`from` to `seq`), the head's hash and the time.
pub(super) fn head_message(h: &ChainHead) -> String {
    format!(
        "zd-retention chain head\nrun {}\nkind {}\nentries {} to {}\nhash {}\nat {}\n",
        h.run_id.map_or("-".to_string(), |r| r.to_string()),
        h.kind,
        h.from_seq,
        h.seq,
        h.head,
        h.recorded_at
    )
}

/// A recorded chain head.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ChainHead {
    pub seq: i64,
    pub from_seq: i64,
    pub run_id: Option<RunId>,
    pub kind: String,
    pub head: String,
    pub recorded_at: String,
    pub key_id: Option<String>,
    pub signature: Option<String>,
}

/// Records the head a transaction leaves, in it, before it commits: every
/// commit when signing (signed), only a run's end otherwise (unsigned).
/// Nothing when the transaction appended nothing.
pub(super) async fn record_head(
    tx: &mut sqlx::Transaction<'_, Any>,
    base: i64,
    run: Option<RunId>,
    kind: HeadKind,
    signer: Option<&ChainSigner>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    if signer.is_none() && kind == HeadKind::Commit {
        return Ok(());
    }
    let Some((seq, head)) = last_entry(tx).await? else {
        return Ok(());
    };
    if seq <= base {
        return Ok(());
    }
    let mut h = ChainHead {
        seq,
        from_seq: base + 1,
        run_id: run,
        kind: kind.as_str().to_string(),
        head,
        recorded_at: timestamp(now),
        key_id: None,
        signature: None,
    };
    if let Some(s) = signer {
        h.key_id = Some(s.key_id());
        h.signature = Some(s.sign(&head_message(&h)));
    }
    sqlx::query("INSERT INTO chain_heads (seq, from_seq, run_id, kind, head, recorded_at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(h.seq)
        .bind(h.from_seq)
        .bind(h.run_id)
        .bind(h.kind)
        .bind(h.head)
        .bind(h.recorded_at)
        .bind(h.key_id)
        .bind(h.signature)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl AuditStore {
    /// Records the head `tx` leaves (see [`record_head`]) with this store's
    /// key; called by every writer just before it commits.
    pub(super) async fn seal(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        base: i64,
        run: Option<RunId>,
        kind: HeadKind,
    ) -> anyhow::Result<()> {
        record_head(tx, base, run, kind, self.signer.as_ref(), Utc::now()).await
    }
}

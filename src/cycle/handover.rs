//! What the listing stage hands the purge stage: a release (ids, their
//! deletion times as listed), the ticket as listed, and the gate that keeps
//! listing requests and freshness reads apart.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::ticket::Ticket;
use crate::zendesk::IdBatch;

/// A batch on its way to the purge worker: the ids, each one's deletion
/// time as last listed, and when the oldest of them was listed.
#[derive(Debug)]
pub(crate) struct Release {
    pub batch: IdBatch,
    /// Each ticket as listed, parallel to `batch.ids()` (`None`: not
    /// listed, as with `purge --force`).
    pub listed: Vec<Option<ListedAs>>,
    pub listed_at: DateTime<Utc>,
    /// When each ticket became purgeable by its rule (its deletion plus the
    /// rule's age or `min_age`), parallel to `batch.ids()`; `None` when
    /// not known (a manual purge): its purge latency is not measured.
    pub purgeable: Vec<Option<DateTime<Utc>>>,
    /// Whether the freshness read applies (not for `purge --force`, where
    /// the operator names the ids without a listing).
    pub check_freshness: bool,
}

/// Shared by the scan and the purge worker of one cycle: listing requests
/// and each freshness read with the sends it clears take turns, so that no
/// page of the scan falls between a freshness read and its `destroy_many`.
#[derive(Debug, Clone, Default)]
pub(super) struct ListingGate {
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
    /// Whether the cursor listing's order was proven this cycle (the
    /// freshness read then uses it; otherwise offset pagination).
    pub(super) cursor_proven: Arc<std::sync::atomic::AtomicBool>,
}

/// Releases queued for the purge worker: more than its job slots, so that
/// a group fills them all and one read clears as many requests as can go.
pub(super) const RELEASES_QUEUED: usize = 64;

/// A ticket as a listing showed it, in what decides a purge: compared with
/// a later listing to tell a deletion again (even within the same second,
/// by another actor) from the same deletion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListedAs {
    pub deleted_at: Option<DateTime<Utc>>,
    pub actor_id: Option<u64>,
    pub previous_state: Option<String>,
}

impl ListedAs {
    pub(crate) fn of(t: &Ticket) -> Self {
        Self {
            deleted_at: t.deleted_at,
            actor_id: t.actor.as_ref().and_then(|a| a.id),
            previous_state: t.previous_state.clone(),
        }
    }
}

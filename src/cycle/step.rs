//! Choosing the step: which listing a run makes (backlog, refresh,
//! reconcile), its sort, and the proof that a sorted listing is in order.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::audit::{ListingMarks, ScanKind, StepKind};
use crate::cycle::CycleSettings;
use crate::rules::Policy;
use crate::zendesk::{ListOptions, SortBy, SortOrder};

/// Which listing a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A first run whose purge rules all have an age: oldest first, up to
    /// the youngest purgeable age (the backlog), provided the order is
    /// proven. The next run walks the whole view and builds the ledger.
    Backlog { horizon: Duration },
    /// The newest deletions, newest first, down to the high-water mark of
    /// the last listing less an overlap; the rest is decided from the ledger.
    Refresh { down_to: DateTime<Utc> },
    /// The whole view, in any order; live ledger rows it does not list are
    /// settled.
    Reconcile,
}

impl Step {
    /// The step's name, as `runs.step` stores it.
    pub(super) fn kind(self) -> StepKind {
        match self {
            Self::Backlog { .. } => StepKind::Backlog,
            Self::Refresh { .. } => StepKind::Refresh,
            Self::Reconcile => StepKind::Reconcile,
        }
    }

    /// How the step walks the view, as `runs.scan` stores it.
    pub(super) fn scan_kind(self) -> ScanKind {
        match self {
            Self::Backlog { .. } => ScanKind::Sorted,
            Self::Refresh { .. } => ScanKind::Refresh,
            Self::Reconcile => ScanKind::Full,
        }
    }

    /// Read in deletion order (proven first, checked on every page).
    pub(super) fn sorted(self) -> Option<SortOrder> {
        match self {
            Self::Backlog { .. } => Some(SortOrder::Asc),
            Self::Refresh { .. } => Some(SortOrder::Desc),
            Self::Reconcile => None,
        }
    }

    pub(super) fn list_options(self) -> ListOptions {
        match self {
            Self::Backlog { .. } => ListOptions {
                sort: Some((SortBy::DeletedAt, SortOrder::Asc)),
                ..ListOptions::default()
            },
            Self::Refresh { .. } => ListOptions {
                sort: Some((SortBy::DeletedAt, SortOrder::Desc)),
                ..ListOptions::default()
            },
            Self::Reconcile => ListOptions::default(),
        }
    }

    /// Whether the walk may stop after `page`: a backlog once a whole page
    /// is younger than the horizon, a refresh below its mark.
    pub(super) fn stops_at(
        self,
        page: &crate::zendesk::DeletedTicketsPage,
        now: DateTime<Utc>,
    ) -> bool {
        match self {
            Self::Backlog { horizon } => crate::listing::reaches_horizon(page, horizon, now),
            Self::Refresh { down_to } => page
                .tickets
                .last()
                .and_then(|t| t.deleted_at)
                .is_some_and(|d| d < down_to),
            Self::Reconcile => false,
        }
    }
}

/// The listing a run makes, and why.
pub(super) fn choose_step(
    policy: &Policy,
    settings: &CycleSettings,
    marks: &ListingMarks,
    now: DateTime<Utc>,
) -> (Step, String) {
    if marks.high_water.is_none()
        && marks.listings == 0
        && let (crate::listing::ScanPlan::Sorted { horizon }, _) =
            crate::listing::ScanPlan::for_policy(policy)
    {
        return (
            Step::Backlog { horizon },
            "a first run: the oldest deletions up to the youngest purgeable age; the next run walks the whole view into the ledger".into(),
        );
    }
    if marks.untagged > 0 {
        return (
            Step::Reconcile,
            format!(
                "{} tickets in the ledger were listed before a subject pattern now in force (subjects are not kept): the whole view is walked",
                marks.untagged
            ),
        );
    }
    let (Some(high_water), Some(last)) = (marks.high_water, marks.last_reconcile) else {
        return (
            Step::Reconcile,
            "the ledger has no whole walk of the view yet".into(),
        );
    };
    let every =
        chrono::Duration::from_std(settings.reconcile_every).unwrap_or(chrono::TimeDelta::MAX);
    // `0s`: every run walks the whole view itself (a small account); else
    // a due check walks on after each refresh (`check.rs`), over runs
    if settings.reconcile_every.is_zero() && now - last >= every {
        return (
            Step::Reconcile,
            format!(
                "the last whole walk began {} ago (schedule.reconcile = {})",
                crate::human::duration(Duration::from_secs(
                    (now - last).num_seconds().max(0) as u64
                )),
                crate::human::duration(settings.reconcile_every)
            ),
        );
    }
    // tickets deleted in the same second, and clock skew
    let overlap = chrono::Duration::from_std(settings.clock_skew).unwrap_or_default();
    (
        Step::Refresh {
            down_to: high_water - overlap,
        },
        "the newest deletions, down to the last listing's high-water mark; the rest decided from the ledger".into(),
    )
}

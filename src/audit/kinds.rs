//! The closed vocabularies of the audit log, as Rust enums stored as text.
//! Each has its `CHECK` in the schema (migration 0008: triggers, since
//! SQLite cannot add a `CHECK` to an existing table), so that no state is a
//! bare string on either side.

use serde::Serialize;

/// Stores a [`TextEnum`] as its text on every backend, refusing text it
/// does not know when read.
macro_rules! sql_text {
    ($name:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'static str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut DB::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'static str as sqlx::Encode<'q, DB>>::encode_by_ref(
                    &$crate::audit::TextEnum::as_str(*self),
                    buf,
                )
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                <$name as $crate::audit::TextEnum>::parse(text)
                    .ok_or_else(|| format!("{text:?} is no {}", stringify!($name)).into())
            }
        }
    };
}
pub(super) use sql_text;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        sql_text!($name);

        impl TextEnum for $name {
            fn parse(text: &str) -> Option<Self> {
                $name::parse(text)
            }

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }
    };
}

/// A vocabulary whose values are stored as text.
pub trait TextEnum: Sized + Copy {
    fn parse(text: &str) -> Option<Self>;
    fn as_str(self) -> &'static str;
}

/// A vocabulary value as a row holds it: one this build knows, or text it
/// does not (a column without a `CHECK`, edited outside). Read as stored
/// rather than refusing the row, so that a history and its evidence can
/// still be read (`verify` names the edited row); shown and serialised as
/// the stored text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Stored<T> {
    Known(T),
    Unknown(String),
}

impl<T: TextEnum> Stored<T> {
    pub fn known(&self) -> Option<T> {
        match self {
            Stored::Known(v) => Some(*v),
            Stored::Unknown(_) => None,
        }
    }
}

impl<T: TextEnum> std::fmt::Display for Stored<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stored::Known(v) => f.write_str(v.as_str()),
            Stored::Unknown(text) => f.write_str(text),
        }
    }
}

impl<T, DB: sqlx::Database> sqlx::Type<DB> for Stored<T>
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, T: TextEnum, DB: sqlx::Database> sqlx::Decode<'r, DB> for Stored<T>
where
    &'r str: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
        Ok(T::parse(text).map_or_else(|| Stored::Unknown(text.to_string()), Stored::Known))
    }
}

/// `runs.scan` as stored (no `CHECK` guards it).
pub type StoredScan = Stored<ScanKind>;
/// `runs.step` as stored.
pub type StoredStep = Stored<StepKind>;

text_enum! {
    /// What became of a ticket, as Zendesk told or a later walk proved.
    Outcome {
        /// Reported purged by a completed job.
        Purged => "purged",
        /// In a failed or killed job, or refused.
        Failed => "failed",
        /// Its job's end was not seen; a reconcile settles it.
        Unknown => "unknown",
        /// Selected but never sent (a limit, a failure, a change, shutdown).
        NotSent => "not_sent",
        /// Absent from the view and not active: the purge took effect.
        ConfirmedGone => "confirmed_gone",
        /// Reported purged, listed again.
        NotEffective => "not_effective",
        /// Unknown, listed again.
        StillPresent => "still_present",
        /// Restored by hand through zd-retention.
        Restored => "restored",
        /// Not restored by a restore request.
        NotRestored => "not_restored",
        /// A restore whose answer was lost and could not be looked up.
        RestoreUnknown => "restore_unknown",
        /// Absent from the view, found among the active tickets.
        RestoredElsewhere => "restored_elsewhere",
        /// An unknown outcome, gone, deleted more than 30 days ago.
        ScrubbedByZendesk => "scrubbed_by_zendesk",
        /// A kept ticket gone from the view and not active.
        LeftView => "left_view",
    }
}

text_enum! {
    /// A write request's state in the `jobs` table.
    JobRowStatus {
        /// Recorded, not answered yet.
        Pending => "pending",
        Queued => "queued",
        Working => "working",
        Completed => "completed",
        Failed => "failed",
        Killed => "killed",
        /// Zendesk refused the request (4xx).
        Refused => "refused",
        /// Answered 429: not carried out, sent again after the wait.
        RateLimited => "rate_limited",
        /// Its end was not seen (timeout, lost answer, shutdown).
        Unknown => "unknown",
        /// Recorded before its freshness read, which did not clear it whole:
        /// never sent (its cleared tickets go under a new row).
        Withdrawn => "withdrawn",
    }
}

text_enum! {
    /// The kind of a write request.
    RequestKind {
        DestroyMany => "destroy_many",
        RestoreMany => "restore_many",
        /// A single restore (`PUT deleted_tickets/{id}/restore`).
        Restore => "restore",
    }
}

text_enum! {
    /// What the rules decided, as recorded.
    DecisionKind {
        Purge => "purge",
        /// A purge decision in a dry run.
        WouldPurge => "would_purge",
        KeepRule => "keep_rule",
        KeepNoRule => "keep_no_rule",
        KeepProtected => "keep_protected",
        KeepTooYoung => "keep_too_young",
        KeepUnknownAge => "keep_unknown_age",
    }
}

text_enum! {
    /// What started a run.
    Trigger {
        Cron => "cron",
        Manual => "manual",
        Demo => "demo",
        /// `zd-retention restore`.
        Restore => "restore",
        /// `zd-retention purge`.
        ManualPurge => "manual_purge",
    }
}

text_enum! {
    /// Where a run stands.
    RunStatus {
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Interrupted => "interrupted",
    }
}

impl DecisionKind {
    /// Whether the decision selects the ticket for a purge.
    pub fn selects(self) -> bool {
        matches!(self, Self::Purge | Self::WouldPurge)
    }

    pub fn of(decision: &crate::rules::Decision, dry_run: bool) -> Self {
        use crate::rules::{Decision, KeepReason};
        match decision {
            Decision::Purge { .. } if dry_run => Self::WouldPurge,
            Decision::Purge { .. } => Self::Purge,
            Decision::Keep(KeepReason::Rule(_)) => Self::KeepRule,
            Decision::Keep(KeepReason::NoRuleMatched) => Self::KeepNoRule,
            Decision::Keep(KeepReason::Protected) => Self::KeepProtected,
            Decision::Keep(KeepReason::TooYoung { .. }) => Self::KeepTooYoung,
            Decision::Keep(KeepReason::UnknownAge { .. }) => Self::KeepUnknownAge,
        }
    }
}

impl JobRowStatus {
    /// A job still to be followed.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Queued | Self::Working)
    }

    /// The row's status for a state Zendesk reported; a state it does not
    /// document is followed as working.
    pub fn of(state: &crate::zendesk::JobState) -> Self {
        use crate::zendesk::JobState;
        match state {
            JobState::Queued => Self::Queued,
            JobState::Working | JobState::Other(_) => Self::Working,
            JobState::Completed => Self::Completed,
            JobState::Failed => Self::Failed,
            JobState::Killed => Self::Killed,
        }
    }
}

text_enum! {
    /// Which listing a run made (`runs.step`, checked by migration 0007).
    StepKind {
        /// The whole view, oldest deletions first, stopping where no rule
        /// can select yet.
        Backlog => "backlog",
        /// The newest deletions, newest first, down to the last high-water
        /// mark.
        Refresh => "refresh",
        /// The whole view, in any order.
        Reconcile => "reconcile",
    }
}

text_enum! {
    /// How a run walked the view (`runs.scan`): the step as the listing
    /// went, a sorted step that could not prove its order being `full`.
    ScanKind {
        /// Oldest first, its order proven.
        Sorted => "sorted",
        /// Newest first, down to the last high-water mark.
        Refresh => "refresh",
        /// The whole view.
        Full => "full",
    }
}

/// The `CHECK` of migration 0008 (0010 for `jobs.status`) lists exactly
/// these values (a unit test reads the migration).
#[cfg(test)]
mod tests {
    use super::*;

    fn listed_in_migration(column: &str, values: &[&str]) {
        // the latest migration that checks the column
        let newer = include_str!("../../migrations/0010_freshness_window.sql");
        let sql = if newer.contains(&format!("-- {column}:")) {
            newer
        } else {
            include_str!("../../migrations/0008_closed_vocabularies.sql")
        };
        let start = sql
            .find(&format!("-- {column}:"))
            .unwrap_or_else(|| panic!("{column} has no check in migration 0008"));
        let check = &sql[start..];
        let end = check.find(";\nEND;").unwrap();
        let check = &check[..end];
        for v in values {
            assert!(
                check.contains(&format!("'{v}'")),
                "{column}: {v} is not allowed by the migration"
            );
        }
        let quoted = check.matches('\'').count() / 2;
        assert_eq!(
            quoted,
            values.len() + 1,
            "{column}: the migration allows other values"
        );
    }

    #[test]
    fn every_value_round_trips_and_the_schema_allows_exactly_these() {
        macro_rules! check {
            ($ty:ident, $column:literal) => {
                let texts: Vec<&str> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                for v in $ty::ALL {
                    assert_eq!($ty::parse(v.as_str()), Some(*v));
                    let json = serde_json::to_string(v).unwrap();
                    assert_eq!(json, format!("\"{}\"", v.as_str()));
                }
                listed_in_migration($column, &texts);
            };
        }
        check!(Outcome, "outcomes.outcome");
        check!(JobRowStatus, "jobs.status");
        check!(RequestKind, "jobs.kind");
        check!(DecisionKind, "decisions.decision");
        check!(Trigger, "runs.trigger");
        check!(RunStatus, "runs.status");
        // runs.step's CHECK came with its column (0007); runs.scan has none
        for v in StepKind::ALL {
            assert_eq!(StepKind::parse(v.as_str()), Some(*v));
        }
        for v in ScanKind::ALL {
            assert_eq!(ScanKind::parse(v.as_str()), Some(*v));
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{v}\""));
        }
        let ledger = include_str!("../../migrations/0007_ledger.sql");
        assert!(ledger.contains("CHECK (step IN ('backlog', 'refresh', 'reconcile'))"));
    }

    /// The text a value is bound as and read back from is sqlx's derive
    /// (`rename_all`), not `as_str`: both must agree for every value.
    #[tokio::test]
    async fn every_value_is_stored_as_its_text_and_read_back_as_itself() {
        use sqlx::Connection;
        crate::audit::install_drivers();
        let mut db = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        macro_rules! round_trip {
            ($ty:ident) => {
                for v in $ty::ALL {
                    let (text, back): (String, $ty) = sqlx::query_as("SELECT $1, $1")
                        .bind(*v)
                        .fetch_one(&mut db)
                        .await
                        .unwrap();
                    assert_eq!(text, v.as_str(), "{} binds as its text", stringify!($ty));
                    assert_eq!(back, *v);
                }
            };
        }
        round_trip!(Outcome);
        round_trip!(JobRowStatus);
        round_trip!(RequestKind);
        round_trip!(DecisionKind);
        round_trip!(Trigger);
        round_trip!(RunStatus);
        round_trip!(StepKind);
        round_trip!(ScanKind);
    }
}

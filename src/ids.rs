//! The ids the house passes around, each its own type: a ticket's id cannot
//! be handed where a run's is wanted, and no id is a bare integer outside
//! the store, which alone turns them into SQL values (`audit::encode`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Zendesk ticket id: positive, at most `i64::MAX` where it is stored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TicketId(u64);

impl TicketId {
    pub const fn new(id: u64) -> Self {
        TicketId(id)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for TicketId {
    fn from(id: u64) -> Self {
        TicketId(id)
    }
}

impl From<TicketId> for u64 {
    fn from(id: TicketId) -> Self {
        id.0
    }
}

/// Unit tests compare ids with literals.
#[cfg(test)]
impl PartialEq<u64> for TicketId {
    fn eq(&self, other: &u64) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TicketId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(TicketId)
    }
}

macro_rules! row_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize,
            Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(i64);

        impl $name {
            pub const fn new(id: i64) -> Self {
                $name(id)
            }

            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                $name(id)
            }
        }

        /// Unit tests compare ids with literals.
        #[cfg(test)]
        impl PartialEq<i64> for $name {
            fn eq(&self, other: &i64) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

row_id! {
    /// A run's row in the audit (`runs.id`).
    RunId
}

row_id! {
    /// A write request's row in the audit (`jobs.id`): one `destroy_many`
    /// or restore, not Zendesk's job id.
    JobRowId
}

//! The ticket the house decides on: a soft-deleted ticket as the rules, the
//! ledger and the reports see it. The client maps Zendesk's JSON to it
//! (`zendesk::model`), the ledger stores it and rebuilds it from its rows,
//! and the rule engine takes nothing else.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::TicketId;

/// A soft-deleted ticket, as last listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ticket {
    pub id: TicketId,
    /// `None` for tickets created without one, and where subjects are not
    /// kept.
    pub subject: Option<String>,
    pub actor: Option<Actor>,
    /// `None` when Zendesk sent none or a form that cannot be read: the
    /// rule engine never purges a ticket whose age it does not know.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The status before deletion: an open string (custom statuses exist).
    pub previous_state: Option<String>,
}

/// Who deleted the ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub id: Option<u64>,
    pub name: Option<String>,
}

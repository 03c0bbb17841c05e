//! How the deleted view is walked: the proof that a listing really sorts by
//! `deleted_at` before any early stop is trusted, the whole-page order
//! check, and the newest-first freshness read that runs just before a purge.
//!
//! Zendesk documents `sort_by`/`sort_order` for this endpoint, but its
//! pagination guide says cursor pagination sorts with `sort` instead, and a
//! list endpoint has been seen ignoring `sort_by` under `page[size]`. A scan
//! that believed an unsorted listing would stop at the first young ticket and
//! purge nothing (or, worse, settle outcomes on a walk that never covered
//! them). So an order is proven, never assumed; without proof the scan is
//! full. The reasoning is written out in ARCHITECTURE.md ("Scanning").
//!
//! Talks to Zendesk only through the client; knows no SQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::rules::Policy;
use crate::ticket::Ticket;
use crate::zendesk::{
    DeletedTicketsPage, ListOptions, Pagination, SortBy, SortOrder, TicketId, ZendeskClient,
};

/// At most this many pages in one freshness read (10,000 deletions during
/// one scan); past it the purge is refused rather than half-checked.
pub const FRESHNESS_MAX_PAGES: u32 = 100;

/// How a scan walks the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanPlan {
    /// Every ticket is listed (any order).
    Full,
    /// Sorted by `deleted_at`, oldest first, stopping after the first whole
    /// page that reaches tickets younger than `horizon`, provided the order
    /// is proven at the start and holds on every page.
    Sorted { horizon: Duration },
}

impl ScanPlan {
    /// The plan a policy asks for, before any proof: sorted only when every
    /// purge rule has an age condition (the youngest of them, or `min_age`,
    /// is the horizon).
    pub fn for_policy(policy: &Policy) -> (Self, &'static str) {
        if policy.purge_rules().next().is_none() {
            return (Self::Full, "no purge rule: every ticket is kept");
        }
        match policy.purge_horizon() {
            Some(horizon) => (
                Self::Sorted { horizon },
                "every purge rule has an age condition",
            ),
            None => (
                Self::Full,
                "a purge rule has no age condition: every ticket must be looked at",
            ),
        }
    }

    pub fn list_options(&self) -> ListOptions {
        ListOptions {
            sort: matches!(self, Self::Sorted { .. })
                .then_some((SortBy::DeletedAt, SortOrder::Asc)),
            ..ListOptions::default()
        }
    }
}

fn non_decreasing(times: &[DateTime<Utc>]) -> bool {
    times.windows(2).all(|w| w[0] <= w[1])
}

fn non_increasing(times: &[DateTime<Utc>]) -> bool {
    times.windows(2).all(|w| w[0] >= w[1])
}

fn times_of(page: &DeletedTicketsPage) -> Option<Vec<DateTime<Utc>>> {
    page.tickets.iter().map(|t| t.deleted_at).collect()
}

/// Proves, from the first page of a listing sorted by `deleted_at` (in
/// `first_order`) and the first page of the other order read here, that the
/// cursor listing sorts by `deleted_at`. `Ok` carries the words for the
/// run's record, `Err` why there is no proof.
///
/// A server that ignores `sort_by` returns the same page both ways: it cannot
/// be both non-decreasing and non-increasing unless every time on it is
/// equal, and then the oldest-first page's first time is not below the
/// newest-first page's first time, so the proof fails.
pub async fn prove_sorted(
    client: &ZendeskClient,
    first: &DeletedTicketsPage,
    first_order: SortOrder,
) -> Result<&'static str, String> {
    if !first.has_more {
        return Err("the whole view fits on one page: it is read whole".into());
    }
    let other_order = match first_order {
        SortOrder::Asc => SortOrder::Desc,
        SortOrder::Desc => SortOrder::Asc,
    };
    let mut other = client.list_deleted(ListOptions {
        sort: Some((SortBy::DeletedAt, other_order)),
        ..ListOptions::default()
    });
    let other_page = match other.next().await {
        Some(Ok(page)) => page,
        Some(Err(e)) => {
            return Err(format!(
                "the first page in the other order, read to prove the order, failed: {e}"
            ));
        }
        None => return Err("the listing in the other order returned no page".into()),
    };
    match first_order {
        SortOrder::Asc => compare_first_pages(first, &other_page),
        SortOrder::Desc => compare_first_pages(&other_page, first),
    }
}

/// The proof proper: the oldest-first and newest-first first pages are each
/// in their order, differ, bracket each other, and are not also in id order.
fn compare_first_pages(
    oldest_first: &DeletedTicketsPage,
    desc_page: &DeletedTicketsPage,
) -> Result<&'static str, String> {
    let Some(asc) = times_of(oldest_first) else {
        return Err("a ticket on the oldest-first page has no readable deleted_at".into());
    };
    if !non_decreasing(&asc) {
        return Err(
            "the first page asked for sort_by=deleted_at asc is not in that order: the listing ignores sort_by"
                .into(),
        );
    }
    let Some(desc) = times_of(desc_page) else {
        return Err("a ticket on the newest-first page has no readable deleted_at".into());
    };
    if !non_increasing(&desc) {
        return Err(
            "the first page asked for sort_by=deleted_at desc is not in that order: the listing ignores sort_by"
                .into(),
        );
    }
    let (Some(asc_first), Some(asc_last), Some(desc_first), Some(desc_last)) =
        (asc.first(), asc.last(), desc.first(), desc.last())
    else {
        return Err("an empty first page".into());
    };
    // the oldest-first page starts at the oldest deletion, the newest-first
    // page at the newest: they must differ, and bracket each other
    if !(asc_first < desc_first && asc_first <= desc_last && desc_first >= asc_last) {
        return Err(
            "the first page came in the same order both ways: the listing does not sort by deleted_at"
                .into(),
        );
    }
    // A listing sorted by id that honours sort_order would pass the checks
    // above whenever tickets were deleted in id order (a bulk deletion):
    // then the two orders cannot be told apart, and nothing is proven.
    let ids_up = |p: &DeletedTicketsPage| p.tickets.windows(2).all(|w| w[0].id < w[1].id);
    let ids_down = |p: &DeletedTicketsPage| p.tickets.windows(2).all(|w| w[0].id > w[1].id);
    if ids_up(oldest_first) && ids_down(desc_page) {
        return Err(
            "the pages are in id order as well as in deletion order: a listing sorted by id cannot be told apart"
                .into(),
        );
    }
    Ok(
        "sorted by deleted_at: the first page read oldest-first and newest-first agreed; each later page is checked whole",
    )
}

/// The order check of a sorted walk, page by page.
#[derive(Debug, Default)]
pub struct PageOrder {
    last: Option<DateTime<Utc>>,
    newest_first: bool,
}

impl PageOrder {
    /// The check of a newest-first walk (a refresh).
    pub fn newest_first() -> Self {
        Self {
            last: None,
            newest_first: true,
        }
    }

    /// Checks a whole page against the order so far: every ticket has a
    /// deletion time and none is older than the one before it. `Err` names
    /// the first ticket out of order.
    pub fn check(&mut self, page: &DeletedTicketsPage) -> Result<(), String> {
        let mut last = self.last;
        for t in &page.tickets {
            match (last, t.deleted_at) {
                (_, None) => {
                    return Err(format!(
                        "page {}: ticket {} has no readable deleted_at",
                        page.number, t.id
                    ));
                }
                (Some(prev), Some(at)) if !self.newest_first && at < prev => {
                    return Err(format!(
                        "page {}: ticket {} was deleted before the ticket listed ahead of it",
                        page.number, t.id
                    ));
                }
                (Some(prev), Some(at)) if self.newest_first && at > prev => {
                    return Err(format!(
                        "page {}: ticket {} was deleted after the ticket listed ahead of it",
                        page.number, t.id
                    ));
                }
                (_, at) => last = at,
            }
        }
        self.last = last;
        Ok(())
    }
}

/// Whether a page (checked in order) reaches tickets younger than the
/// horizon: everything after it is younger still.
pub fn reaches_horizon(page: &DeletedTicketsPage, horizon: Duration, now: DateTime<Utc>) -> bool {
    page.tickets
        .last()
        .and_then(|t| crate::rules::age_of(t, now))
        .is_some_and(|age| age < horizon)
}

/// What a newest-first read found.
#[derive(Debug, Clone)]
pub struct RecentDeletions {
    /// Every ticket deleted at or after `covered_from`, as listed now.
    pub tickets: Vec<Ticket>,
    /// How far back the read is complete: `since` when it got there, or the
    /// oldest deletion read when it stopped at the page limit.
    pub covered_from: DateTime<Utc>,
    /// Whether it reached `since`.
    pub complete: bool,
}

/// Reads the most recently deleted tickets, newest first, until one deleted
/// before `since` (or the page limit): every deletion since then, as the
/// view shows it now. Uses the cursor listing when its order was proven this
/// run, otherwise offset pagination, which Zendesk documents as sorting;
/// either way each page is checked newest-first before it is believed.
pub async fn deleted_since(
    client: &ZendeskClient,
    since: DateTime<Utc>,
    cursor_proven: bool,
) -> Result<RecentDeletions, String> {
    let options = ListOptions {
        sort: Some((SortBy::DeletedAt, SortOrder::Desc)),
        pagination: if cursor_proven {
            Pagination::Cursor
        } else {
            Pagination::Offset
        },
        ..ListOptions::default()
    };
    let mut pages = client.list_deleted(options.clone());
    let mut out: Vec<Ticket> = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    let mut walked_pages = 0;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| e.to_string())?;
        walked_pages = page.number;
        if page.number > FRESHNESS_MAX_PAGES {
            // complete only from the oldest whole second read
            let covered_from = last.map_or(Utc::now(), |l| l + chrono::Duration::seconds(1));
            out.retain(|t: &Ticket| t.deleted_at.is_some_and(|d| d >= covered_from));
            return Ok(RecentDeletions {
                tickets: out,
                covered_from,
                complete: false,
            });
        }
        let mut reached = false;
        for t in page.tickets {
            let Some(at) = t.deleted_at else {
                return Err(format!(
                    "ticket {} in the newest-first listing has no readable deleted_at",
                    t.id
                ));
            };
            if let Some(l) = last.filter(|l| at > *l) {
                return Err(format!(
                    "the newest-first listing is not in order (ticket {} on page {}, deleted {}, after one deleted {})",
                    t.id,
                    page.number,
                    crate::audit::timestamp(at),
                    crate::audit::timestamp(l)
                ));
            }
            last = Some(at);
            if at < since {
                reached = true;
            } else {
                out.push(t);
            }
        }
        if reached {
            break;
        }
    }
    drop(pages);
    // A ticket deleted again while this walk went on moved to the head of
    // the listing, which the walk had already passed. Read the head again,
    // down to a ticket already seen unchanged (everything after it was
    // seen), until one such pass ends on its first page: then nothing can
    // have moved past the reader unseen.
    let mut latest: std::collections::HashMap<TicketId, Ticket> =
        out.into_iter().map(|t| (t.id, t)).collect();
    // (a walk of one page was read in one answer: nothing to re-read)
    let mut stable = walked_pages <= 1;
    for _ in 0..HEAD_PASSES {
        if stable {
            break;
        }
        let mut pages = client.list_deleted(options.clone());
        let mut first_page_only = true;
        'pages: while let Some(page) = pages.next().await {
            let page = page.map_err(|e| e.to_string())?;
            if page.number > 1 {
                first_page_only = false;
            }
            if page.number > FRESHNESS_MAX_PAGES {
                break;
            }
            for t in page.tickets {
                if t.deleted_at.is_none_or(|d| d < since)
                    || latest.get(&t.id).is_some_and(|seen| *seen == t)
                {
                    break 'pages;
                }
                latest.insert(t.id, t);
            }
        }
        // ended on its first page: anchored there, or the view ended there
        stable = first_page_only;
    }
    if !stable {
        return Err(format!(
            "the deleted view kept changing at its head while it was read ({HEAD_PASSES} passes)"
        ));
    }
    Ok(RecentDeletions {
        tickets: latest.into_values().collect(),
        covered_from: since,
        complete: true,
    })
}

/// How many times the head of the listing is read again before a freshness
/// read gives up on a view that does not hold still.
const HEAD_PASSES: usize = 6;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zendesk::TicketId;

    fn page(number: u32, secs: &[i64]) -> DeletedTicketsPage {
        DeletedTicketsPage {
            tickets: secs
                .iter()
                .enumerate()
                .map(|(i, s)| Ticket {
                    id: TicketId::new(i as u64 + 1),
                    subject: None,
                    actor: None,
                    deleted_at: DateTime::from_timestamp(*s, 0),
                    previous_state: None,
                })
                .collect(),
            number,
            has_more: true,
            next: None,
        }
    }

    #[test]
    fn page_order_is_checked_across_pages_and_names_the_ticket() {
        let mut order = PageOrder::default();
        assert!(order.check(&page(1, &[1, 2, 2, 5])).is_ok());
        assert!(order.check(&page(2, &[5, 9])).is_ok());
        let err = order.check(&page(3, &[10, 4])).unwrap_err();
        assert!(err.contains("page 3") && err.contains("ticket 2"), "{err}");
        let mut order = PageOrder::default();
        let mut missing = page(1, &[1]);
        missing.tickets[0].deleted_at = None;
        assert!(order.check(&missing).is_err());
    }

    #[test]
    fn the_horizon_is_read_off_the_last_ticket_of_a_page() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let old_then_young = page(1, &[0, 999_990]);
        assert!(reaches_horizon(
            &old_then_young,
            Duration::from_secs(60),
            now
        ));
        let all_old = page(1, &[0, 100]);
        assert!(!reaches_horizon(&all_old, Duration::from_secs(60), now));
    }
}

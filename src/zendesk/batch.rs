//! `IdBatch`: between 1 and 100 ticket ids, the only thing the bulk calls take.
//!
//! Zendesk refuses more than 100 ids per `destroy_many` / `restore_many` and
//! an empty list means nothing; making both unrepresentable keeps every
//! caller honest. Pure data, no IO.

use std::fmt;

use super::model::TicketId;

/// The most ids Zendesk takes in one bulk call.
pub const MAX_IDS_PER_BATCH: usize = 100;

/// One to 100 distinct ticket ids, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBatch(Vec<TicketId>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdBatchError {
    #[error("a batch needs at least one ticket id")]
    Empty,
    #[error("a batch holds at most {MAX_IDS_PER_BATCH} ticket ids, got {0}")]
    TooMany(usize),
}

impl IdBatch {
    /// Takes the ids as a batch; duplicates are dropped (Zendesk would count
    /// them twice against the limit).
    pub fn new(ids: Vec<TicketId>) -> Result<Self, IdBatchError> {
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let ids: Vec<TicketId> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
        match ids.len() {
            0 => Err(IdBatchError::Empty),
            n if n > MAX_IDS_PER_BATCH => Err(IdBatchError::TooMany(n)),
            _ => Ok(Self(ids)),
        }
    }

    /// Splits any number of ids into batches of at most 100.
    pub fn chunk(ids: &[TicketId]) -> Vec<IdBatch> {
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let unique: Vec<TicketId> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
        unique
            .chunks(MAX_IDS_PER_BATCH)
            .map(|c| IdBatch(c.to_vec()))
            .collect()
    }

    pub fn ids(&self) -> &[TicketId] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `ids` query value: `1,2,3`.
    pub fn to_query(&self) -> String {
        self.0
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for IdBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ids", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_and_oversized_batches() {
        let ids = |r: std::ops::RangeInclusive<u64>| r.map(TicketId::new).collect::<Vec<_>>();
        assert_eq!(IdBatch::new(vec![]), Err(IdBatchError::Empty));
        assert_eq!(IdBatch::new(ids(1..=101)), Err(IdBatchError::TooMany(101)));
        assert_eq!(IdBatch::new(ids(1..=100)).unwrap().len(), 100);
    }

    #[test]
    fn chunks_into_batches_of_at_most_100_without_duplicates() {
        let ids: Vec<TicketId> = (1..=250).chain(1..=10).map(TicketId::new).collect();
        let batches = IdBatch::chunk(&ids);
        assert_eq!(
            batches.iter().map(IdBatch::len).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(batches[2].ids().last(), Some(&TicketId::new(250)));
        assert!(IdBatch::chunk(&[]).is_empty());
        let three = [3, 1, 2].map(TicketId::new).to_vec();
        assert_eq!(IdBatch::new(three).unwrap().to_query(), "3,1,2");
    }
}

//! How the store turns a ticket id into SQL and back: SQLite integers are
//! signed 64-bit, so an id is stored as `i64` (ids above `MAX_TICKET_ID`
//! are refused before they get here) and read back as `u64`. This is the
//! one place where a ticket id becomes a bare integer.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::ids::TicketId;
use crate::rules::SubjectTags;

/// The largest ticket id the store keeps: SQLite integers are signed 64-bit,
/// and an id above this would be stored wrapped (negative).
pub const MAX_TICKET_ID: TicketId = TicketId::new(i64::MAX as u64);

/// A ticket id as the store writes it, for `query!` arguments. Ids above
/// `MAX_TICKET_ID` are refused before they get here (the command line, the
/// scan); this conversion would wrap one, while binding a `TicketId`
/// (`Encode`, below) refuses it.
pub(crate) fn sql_id(id: TicketId) -> i64 {
    id.get() as i64
}

/// Text from Zendesk (a job's id or message, an outcome's detail) as every
/// backend stores it: a NUL, which PostgreSQL refuses in text, as U+FFFD
/// (as a listing's text is read, `zendesk::model`). A job whose message
/// held one had failed its answer's write after the purge was sent.
pub(crate) fn storable(text: Option<&str>) -> Option<String> {
    text.map(|t| t.replace('\0', "\u{FFFD}"))
}

/// A ticket id as the store read it.
pub(crate) fn ticket_id(value: i64) -> TicketId {
    TicketId::new(value as u64)
}

/// A type stored as `$as` is on every backend.
macro_rules! same_type_as {
    ($ty:ty, $as:ty) => {
        impl<DB: Database> Type<DB> for $ty
        where
            $as: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <$as as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <$as as Type<DB>>::compatible(ty)
            }
        }
    };
}

same_type_as!(TicketId, i64);

impl<'q, DB: Database> Encode<'q, DB> for TicketId
where
    i64: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        if *self > MAX_TICKET_ID {
            return Err(format!("ticket id {self} is above {MAX_TICKET_ID}: not stored").into());
        }
        <i64 as Encode<'q, DB>>::encode(sql_id(*self), buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for TicketId
where
    i64: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(ticket_id(<i64 as Decode<'r, DB>>::decode(value)?))
    }
}

// Subject tags are stored as their text (`Display`), read back by
// `SubjectTags::parse`.
same_type_as!(SubjectTags, str);

impl<'q, DB: Database> Encode<'q, DB> for SubjectTags
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(self.to_string(), buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for SubjectTags
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(SubjectTags::parse(<&'r str as Decode<'r, DB>>::decode(
            value,
        )?))
    }
}

/// A yes/no column as both backends store it: an integer, 0 or 1 (so that
/// its chained text is the same everywhere). Read with
/// `#[sqlx(try_from = "Flag")]` on a `bool` field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag(pub(crate) bool);

impl From<Flag> for bool {
    fn from(flag: Flag) -> bool {
        flag.0
    }
}

same_type_as!(Flag, i64);

impl<'r, DB: Database> Decode<'r, DB> for Flag
where
    i64: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Flag(<i64 as Decode<'r, DB>>::decode(value)? != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_id_round_trips_through_its_sql_integer_up_to_the_largest_kept() {
        for id in [1, 4711, 1 << 40, MAX_TICKET_ID.get()] {
            let id = TicketId::new(id);
            assert_eq!(ticket_id(sql_id(id)), id);
            assert!(sql_id(id) > 0);
        }
    }

    #[tokio::test]
    async fn a_ticket_id_above_the_largest_kept_is_refused_not_stored_wrapped() {
        use sqlx::Connection;
        crate::audit::install_drivers();
        let mut db = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let kept: TicketId = sqlx::query_scalar("SELECT $1")
            .bind(MAX_TICKET_ID)
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(kept, MAX_TICKET_ID);
        let over = TicketId::new(MAX_TICKET_ID.get() + 1);
        let err = sqlx::query_scalar::<_, i64>("SELECT $1")
            .bind(over)
            .fetch_one(&mut db)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not stored"), "{err}");
    }

    #[test]
    fn subject_tags_are_stored_as_the_text_older_versions_wrote() {
        let tags = SubjectTags::parse("a1b2c3d4e5f6+ 0f0f0f0f0f0f-");
        assert_eq!(tags.to_string(), "a1b2c3d4e5f6+ 0f0f0f0f0f0f-");
    }
}

//! Column values that need their own wire form: JSON kept as its exact text
//! (the `json` type stores it verbatim, so the chain hashes what is stored),
//! and microsecond timestamps.

use std::error::Error;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio_postgres::types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

/// JSON text written to and read from a `json` column unchanged (its binary
/// form is the text itself).
#[derive(Debug, Clone, Copy)]
pub struct JsonText<'a>(pub &'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    accepts!(JSON);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for JsonText<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(JsonText(std::str::from_utf8(raw)?))
    }
    accepts!(JSON);
}

/// A text or JSON column's bytes, unchecked: compared byte for byte with
/// what a value decodes to, it needs no UTF-8 validation.
#[derive(Debug, Clone, Copy)]
pub struct TextBytes<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for TextBytes<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(TextBytes(raw))
    }
    accepts!(TEXT, VARCHAR, JSON);
}

/// Microseconds since the epoch as a timestamp (callers checked the range).
pub fn timestamp(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A timestamp as microseconds since the epoch.
pub fn micros_of(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The current time, truncated to the microseconds PostgreSQL keeps.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

//! Timestamps on the wire: RFC 3339 strings.
//!
//! `presence-core` counts time as [`Timestamp`] (milliseconds since the
//! Unix epoch, UTC). On the wire that becomes an RFC 3339 string:
//!
//! - **Written** always in UTC, with exactly three fractional digits and a
//!   `Z`: `"2026-11-28T12:00:00.000Z"` (24 characters, the shape
//!   JavaScript's `Date.prototype.toISOString` produces, so Rocket.Chat
//!   clients read it unchanged). Instants outside the years 0000–9999 are
//!   clamped to that range, which RFC 3339 cannot go beyond.
//! - **Read** with any offset (`Z`, `z`, `+02:00`, `-05:30`) and any number
//!   of fractional digits; digits below a millisecond are dropped (rounding
//!   toward the past). Anything else — a date without a time, a missing
//!   offset, a Unix number — is rejected.
//!
//! Use the serde helpers with `#[serde(with = "presence_protocol::rfc3339")]`
//! on a `Timestamp` field, or `with = "presence_protocol::rfc3339::option"`
//! on an `Option<Timestamp>` (written as `null` when `None`).
//!
//! Formatting is hand-written (no allocation: the text is built in a
//! 24-byte buffer) because it runs for every `presence` update that carries
//! an expiry; parsing is delegated to the `time` crate.

use std::fmt;

use presence_core::Timestamp;
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339 as WellKnownRfc3339;

use crate::echo::echo;

/// The earliest instant RFC 3339 can express: `0000-01-01T00:00:00.000Z`.
pub const MIN_MILLIS: i64 = -62_167_219_200_000;
/// The latest instant RFC 3339 can express: `9999-12-31T23:59:59.999Z`.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Formats `ts` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds).
pub fn format_rfc3339(ts: Timestamp) -> String {
    encode(ts).as_str().to_owned()
}

/// Parses an RFC 3339 timestamp with any offset and any number of
/// fractional digits. Returns `None` for anything that is not one, and for
/// instants outside the years 0000–9999 (UTC).
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let parsed = OffsetDateTime::parse(s, &WellKnownRfc3339).ok()?;
    let millis = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
    let millis = i64::try_from(millis).ok()?;
    (MIN_MILLIS..=MAX_MILLIS)
        .contains(&millis)
        .then_some(Timestamp::from_millis(millis))
}

/// Displays a [`Timestamp`] in the wire format without allocating, for
/// logs and `format!`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisplayRfc3339(pub Timestamp);

impl fmt::Display for DisplayRfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(encode(self.0).as_str())
    }
}

/// Serde helper: serializes a [`Timestamp`] as an RFC 3339 string.
pub fn serialize<S: Serializer>(ts: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(encode(*ts).as_str())
}

/// Serde helper: deserializes a [`Timestamp`] from an RFC 3339 string.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
    deserializer.deserialize_str(TimestampVisitor)
}

/// The same helpers for `Option<Timestamp>`: `None` is `null`.
pub mod option {
    use presence_core::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        ts: &Option<Timestamp>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => super::serialize(ts, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Timestamp>, D::Error> {
        Ok(Option::<Wire>::deserialize(deserializer)?.map(|w| w.0))
    }

    /// A timestamp in wire format, so `Option`'s own impl handles `null`.
    struct Wire(Timestamp);

    impl<'de> Deserialize<'de> for Wire {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            super::deserialize(deserializer).map(Wire)
        }
    }
}

struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp such as 2026-11-28T12:00:00Z")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        parse_rfc3339(v).ok_or_else(|| {
            E::custom(format_args!(
                "`{}` is not an RFC 3339 timestamp such as 2026-11-28T12:00:00Z",
                echo(v)
            ))
        })
    }
}

/// The 24 ASCII bytes of a formatted timestamp.
struct Encoded([u8; 24]);

impl Encoded {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("the encoder writes ASCII digits and separators only")
    }
}

const MILLIS_PER_DAY: i64 = 86_400_000;

fn encode(ts: Timestamp) -> Encoded {
    let millis = ts.as_millis().clamp(MIN_MILLIS, MAX_MILLIS);
    let (year, month, day) = civil_from_days(millis.div_euclid(MILLIS_PER_DAY));
    let in_day = millis.rem_euclid(MILLIS_PER_DAY);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut out[0..4], year as u32);
    put_digits(&mut out[5..7], month);
    put_digits(&mut out[8..10], day);
    put_digits(&mut out[11..13], (in_day / 3_600_000) as u32);
    put_digits(&mut out[14..16], (in_day / 60_000 % 60) as u32);
    put_digits(&mut out[17..19], (in_day / 1_000 % 60) as u32);
    put_digits(&mut out[20..23], (in_day % 1_000) as u32);
    Encoded(out)
}

/// Writes `value` right-aligned into `slot` as zero-padded decimal digits.
fn put_digits(slot: &mut [u8], mut value: u32) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month (1–12) and day (1–31) of the day `days` after 1970-01-01 in
/// the proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
/// Only called for days between 0000-01-01 and 9999-12-31, so the year is
/// never negative.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

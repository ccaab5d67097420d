//! Who a user is, for display (Rocket.Chat `users.presence`, R3): username,
//! display name and UTC offset. One type for every layer: the gateway reads
//! it from the token, from a client's own report of its UTC offset, or from
//! an admin's upsert; the cluster commands carry it, the engine keeps it
//! with the user, and the durable record stores it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A user's username, display name and UTC offset, as last said by their
/// token or their client ([`Profile::merge`]: what is said replaces, what
/// is not said is kept) or set by an admin (replaced whole).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<UtcOffset>,
}

impl Profile {
    /// Whether nothing is known about the user.
    pub fn is_empty(&self) -> bool {
        self.username.is_none() && self.name.is_none() && self.utc_offset.is_none()
    }

    /// Takes every field `newer` says something about; keeps the others.
    /// Returns whether anything changed.
    pub fn merge(&mut self, newer: &Profile) -> bool {
        let before = self.clone();
        if let Some(username) = &newer.username {
            self.username = Some(username.clone());
        }
        if let Some(name) = &newer.name {
            self.name = Some(name.clone());
        }
        if let Some(offset) = newer.utc_offset {
            self.utc_offset = Some(offset);
        }
        *self != before
    }
}

/// A UTC offset in whole minutes, between UTC−12:00 and UTC+14:00 (every
/// offset in use). Stored as minutes; Rocket.Chat shows it in hours
/// (`utcOffset: 5.5`), see [`UtcOffset::from_hours`] and
/// [`UtcOffset::hours`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i16", into = "i16")]
pub struct UtcOffset(i16);

/// Why a UTC offset was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcOffsetOutOfRange;

impl fmt::Display for UtcOffsetOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a UTC offset is a number of hours from -12 to 14")
    }
}

impl std::error::Error for UtcOffsetOutOfRange {}

impl UtcOffset {
    /// The smallest offset, in minutes (UTC−12:00).
    pub const MIN_MINUTES: i16 = -12 * 60;
    /// The largest offset, in minutes (UTC+14:00).
    pub const MAX_MINUTES: i16 = 14 * 60;

    /// An offset of `minutes` east of UTC.
    pub fn from_minutes(minutes: i16) -> Result<UtcOffset, UtcOffsetOutOfRange> {
        if (Self::MIN_MINUTES..=Self::MAX_MINUTES).contains(&minutes) {
            Ok(UtcOffset(minutes))
        } else {
            Err(UtcOffsetOutOfRange)
        }
    }

    /// An offset of `hours` (Rocket.Chat's `utcOffset`, e.g. `5.5` or
    /// `-3`), rounded to the minute.
    pub fn from_hours(hours: f64) -> Result<UtcOffset, UtcOffsetOutOfRange> {
        let minutes = (hours * 60.0).round();
        if !minutes.is_finite()
            || minutes < f64::from(Self::MIN_MINUTES)
            || minutes > f64::from(Self::MAX_MINUTES)
        {
            return Err(UtcOffsetOutOfRange);
        }
        Self::from_minutes(minutes as i16)
    }

    /// Minutes east of UTC.
    pub fn minutes(self) -> i16 {
        self.0
    }

    /// Hours east of UTC, as Rocket.Chat shows them (`5.5`, `-3`).
    pub fn hours(self) -> f64 {
        f64::from(self.0) / 60.0
    }
}

impl TryFrom<i16> for UtcOffset {
    type Error = UtcOffsetOutOfRange;

    fn try_from(minutes: i16) -> Result<Self, Self::Error> {
        Self::from_minutes(minutes)
    }
}

impl From<UtcOffset> for i16 {
    fn from(offset: UtcOffset) -> i16 {
        offset.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r3_utc_offsets_are_hours_from_minus_12_to_14_kept_in_minutes() {
        let check = |hours: f64, minutes: Option<i16>| {
            assert_eq!(
                UtcOffset::from_hours(hours).ok().map(UtcOffset::minutes),
                minutes,
                "{hours}"
            );
        };
        check(0.0, Some(0));
        check(5.5, Some(330));
        check(5.75, Some(345));
        check(-3.0, Some(-180));
        check(-12.0, Some(-720));
        check(14.0, Some(840));
        check(14.01, None);
        check(-12.5, None);
        check(f64::NAN, None);
        check(f64::INFINITY, None);
        assert_eq!(UtcOffset::from_minutes(330).unwrap().hours(), 5.5);
        assert!(serde_json::from_str::<UtcOffset>("900").is_err());
        assert_eq!(serde_json::to_string(&UtcOffset(-180)).unwrap(), "-180");
    }

    #[test]
    fn r3_a_merge_takes_what_is_said_and_keeps_the_rest() {
        let mut stored = Profile {
            username: Some("ann".into()),
            name: Some("Ann".into()),
            utc_offset: Some(UtcOffset(60)),
        };
        assert!(!stored.merge(&Profile::default()));
        let newer = Profile {
            name: Some("Ann B.".into()),
            ..Profile::default()
        };
        assert!(stored.merge(&newer));
        assert_eq!(stored.username.as_deref(), Some("ann"));
        assert_eq!(stored.name.as_deref(), Some("Ann B."));
        assert_eq!(stored.utc_offset, Some(UtcOffset(60)));
        assert!(!stored.merge(&newer), "the same again changes nothing");
    }
}

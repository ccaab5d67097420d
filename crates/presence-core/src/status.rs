//! The status vocabularies: what a user chooses, what others see, what the
//! user sees of themselves, and the platforms devices run on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The status a user picked from the menu. `Online` means "automatic":
/// the devices decide (A4). `Busy`, `Away` and `Invisible` are manual
/// overrides (A2, A3, M1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChosenStatus {
    #[default]
    Online,
    Away,
    Busy,
    Invisible,
}

impl ChosenStatus {
    /// All chosen statuses, for tables and property tests.
    pub const ALL: [ChosenStatus; 4] = [Self::Online, Self::Away, Self::Busy, Self::Invisible];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Invisible => "invisible",
        }
    }

    /// `true` for the statuses that suspend automatic presence (M1).
    pub fn is_manual(self) -> bool {
        !matches!(self, Self::Online)
    }
}

/// The presence everybody else sees. Offline covers both "no device" (A1)
/// and "invisible" (A3); the two are indistinguishable from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisplayedStatus {
    Online,
    Away,
    Busy,
    Offline,
}

impl DisplayedStatus {
    pub const ALL: [DisplayedStatus; 4] = [Self::Online, Self::Away, Self::Busy, Self::Offline];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }

    /// The chosen status an admin-defined custom status of this type
    /// selects (C2): `offline` maps to invisible.
    pub fn as_chosen(self) -> ChosenStatus {
        match self {
            Self::Online => ChosenStatus::Online,
            Self::Away => ChosenStatus::Away,
            Self::Busy => ChosenStatus::Busy,
            Self::Offline => ChosenStatus::Invisible,
        }
    }
}

/// What the user sees of themselves: like [`DisplayedStatus`], but an
/// invisible user with a connected device sees `Invisible` (A3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfStatus {
    Online,
    Away,
    Busy,
    Invisible,
    Offline,
}

impl SelfStatus {
    /// What everybody else sees while the user sees `self` (A3): an
    /// invisible user shows as `offline`.
    pub fn shown_to_others(self) -> DisplayedStatus {
        match self {
            Self::Online => DisplayedStatus::Online,
            Self::Away => DisplayedStatus::Away,
            Self::Busy => DisplayedStatus::Busy,
            Self::Invisible | Self::Offline => DisplayedStatus::Offline,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Invisible => "invisible",
            Self::Offline => "offline",
        }
    }
}

/// The kind of client a device is. Each platform can report only some
/// device events (D8, see [`crate::DeviceEvent::supported_on`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Web,
    Desktop,
    Mobile,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Self::Web, Self::Desktop, Self::Mobile];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
        }
    }

    /// Whether this platform has an idle timer at all (D2: mobile has none).
    pub fn has_idle_detection(self) -> bool {
        !matches!(self, Self::Mobile)
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(ChosenStatus, DisplayedStatus, SelfStatus, Platform);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a3_others_see_an_invisible_user_as_offline() {
        let cases = [
            (SelfStatus::Online, DisplayedStatus::Online),
            (SelfStatus::Away, DisplayedStatus::Away),
            (SelfStatus::Busy, DisplayedStatus::Busy),
            (SelfStatus::Invisible, DisplayedStatus::Offline),
            (SelfStatus::Offline, DisplayedStatus::Offline),
        ];
        for (own, others) in cases {
            assert_eq!(own.shown_to_others(), others, "{own}");
        }
    }
}

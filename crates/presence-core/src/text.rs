//! Validated text values. A [`StatusText`] or [`CustomStatusName`] that
//! exists is valid: the checks of T1 and C1 run once, in the constructor.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::PresenceError;

/// T1: status texts are at most this many Unicode scalar values.
pub const MAX_STATUS_TEXT_CHARS: usize = 120;
/// C1: custom status names are at most this many Unicode scalar values.
pub const MAX_CUSTOM_STATUS_NAME_CHARS: usize = 120;

/// A non-empty, trimmed status text of at most 120 characters without
/// control characters (T1). Emoji, including ZWJ sequences, are fine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct StatusText(String);

impl StatusText {
    /// Validates `raw`. Returns `Ok(None)` for a text that is empty after
    /// trimming: an empty text means "no text", it is not an error.
    pub fn parse(raw: &str) -> Result<Option<StatusText>, PresenceError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(PresenceError::StatusTextInvalid);
        }
        let len = trimmed.chars().count();
        if len > MAX_STATUS_TEXT_CHARS {
            return Err(PresenceError::StatusTextTooLong {
                len,
                max: MAX_STATUS_TEXT_CHARS,
            });
        }
        Ok(Some(StatusText(trimmed.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text a custom status gives its users (C2). Names are stricter
    /// than texts, so every valid name is a valid text.
    pub fn from_name(name: &CustomStatusName) -> StatusText {
        StatusText(name.as_str().to_owned())
    }
}

impl<'de> Deserialize<'de> for StatusText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        StatusText::parse(&raw)
            .map_err(serde::de::Error::custom)?
            .ok_or_else(|| serde::de::Error::custom("status text must not be empty"))
    }
}

impl fmt::Display for StatusText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an admin-defined custom status (C1): trimmed, 1–120
/// characters, no control characters and none of `< > & " '` (Rocket.Chat
/// rejects those so names can be shown without escaping).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CustomStatusName(String);

impl CustomStatusName {
    pub fn parse(raw: &str) -> Result<CustomStatusName, PresenceError> {
        let trimmed = raw.trim();
        let invalid = |reason| PresenceError::CustomStatusNameInvalid { reason };
        if trimmed.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if trimmed.chars().count() > MAX_CUSTOM_STATUS_NAME_CHARS {
            return Err(invalid("the name is longer than 120 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid("the name contains control characters"));
        }
        if trimmed
            .chars()
            .any(|c| matches!(c, '<' | '>' | '&' | '"' | '\''))
        {
            return Err(invalid("the name contains one of < > & \" '"));
        }
        Ok(CustomStatusName(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key uniqueness is checked on (C1: case-insensitive).
    pub fn unique_key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl<'de> Deserialize<'de> for CustomStatusName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        CustomStatusName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for CustomStatusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

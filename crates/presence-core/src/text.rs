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
/// control characters, bidirectional overrides or invisible format
/// characters (T1, see [`is_hidden_char`]). Emoji, including ZWJ
/// sequences, are fine.
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
        if trimmed.chars().any(char::is_control) || has_hidden_chars(trimmed) {
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
/// characters, no control characters, no bidirectional overrides or
/// invisible format characters (as for T1), and none of `< > & " '` (Rocket.Chat
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
        if has_hidden_chars(trimmed) {
            return Err(invalid(
                "the name contains bidirectional overrides or invisible format characters",
            ));
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

/// T1, C1: whether `text` holds a character that changes how the rest of
/// the text is shown without being seen itself: a bidirectional override
/// or isolate (U+202A–202E, U+2066–2069; "Trojan Source" reordering), or
/// an invisible format character (zero-width space, word joiner, BOM,
/// soft hyphen, fillers …) that lets two texts look alike while differing.
///
/// Joiners are what some scripts and emoji need, so they are allowed where
/// they do that work: U+200D (ZWJ) between two emoji (👨‍👩‍👧), and U+200C
/// (ZWNJ) and U+200D between two letters outside ASCII (Persian, Indic
/// scripts). Tag characters are allowed only in emoji tag sequences (the
/// flags of England, Scotland, Wales: U+1F3F4 followed by tags).
pub fn has_hidden_chars(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().any(|(i, &c)| {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        match c {
            '\u{200C}' => {
                !(prev.is_some_and(is_script_letter) && next.is_some_and(is_script_letter))
            }
            '\u{200D}' => {
                let emoji = prev.is_some_and(is_emoji_part) && next.is_some_and(is_emoji_part);
                let letters =
                    prev.is_some_and(is_script_letter) && next.is_some_and(is_script_letter);
                !(emoji || letters)
            }
            '\u{E0020}'..='\u{E007F}' => {
                !prev.is_some_and(|p| p == '\u{1F3F4}' || ('\u{E0020}'..='\u{E007F}').contains(&p))
            }
            c => is_hidden_char(c),
        }
    })
}

/// Characters refused anywhere in a text (T1) or name (C1): bidirectional
/// controls and invisible format characters. The joiners U+200C and U+200D
/// and the tag characters are judged in context by [`has_hidden_chars`].
pub fn is_hidden_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                      // soft hyphen
        | '\u{034F}'                    // combining grapheme joiner
        | '\u{061C}'                    // Arabic letter mark
        | '\u{115F}' | '\u{1160}'        // Hangul fillers
        | '\u{17B4}' | '\u{17B5}'        // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'        // Mongolian variation selectors, vowel separator
        | '\u{200B}'..='\u{200F}'        // zero-width space/joiners, LRM, RLM
        | '\u{2028}' | '\u{2029}'        // line and paragraph separators
        | '\u{202A}'..='\u{202E}'        // bidirectional embeddings and overrides
        | '\u{2060}'..='\u{206F}'        // word joiner, invisible operators, isolates, deprecated
        | '\u{3164}'                    // Hangul filler
        | '\u{FEFF}'                    // zero-width no-break space (BOM)
        | '\u{FFA0}'                    // halfwidth Hangul filler
        | '\u{FFF9}'..='\u{FFFB}'        // interlinear annotation
        | '\u{1BCA0}'..='\u{1BCA3}'      // shorthand format controls
        | '\u{1D173}'..='\u{1D17A}'      // musical symbol format controls
        | '\u{E0000}'..='\u{E0FFF}'      // tags and variation selectors supplement
    )
}

/// A letter of a script that may need joiners (not ASCII).
fn is_script_letter(c: char) -> bool {
    !c.is_ascii() && (c.is_alphabetic() || is_combining_mark(c))
}

/// Combining marks often sit between a letter and a joiner (Indic viramas).
fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{0900}'..='\u{0DFF}' | '\u{1AB0}'..='\u{1AFF}')
}

/// A character that takes part in an emoji ZWJ sequence: pictographs,
/// dingbats and symbols, skin-tone modifiers, the emoji variation selector
/// and the keycap mark.
fn is_emoji_part(c: char) -> bool {
    matches!(
        c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{21AA}'
        | '\u{2300}'..='\u{23FF}'
        | '\u{24C2}'
        | '\u{25A0}'..='\u{27BF}'
        | '\u{2934}' | '\u{2935}'
        | '\u{2B05}'..='\u{2B55}'
        | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{FE0F}'
        | '\u{20E3}'
        | '\u{1F000}'..='\u{1FAFF}'
    )
}

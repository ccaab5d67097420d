//! Quoting client input in error messages, safely: never more than
//! [`MAX_ECHO_CHARS`] characters, so a hostile client cannot make the
//! server reflect megabytes back at it or into its logs.

use std::borrow::Cow;

/// The most characters of client input an error message quotes.
pub const MAX_ECHO_CHARS: usize = 64;

/// `s` cut to at most `max_chars` characters, with `…` marking a cut.
pub(crate) fn excerpt(s: &str, max_chars: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max_chars) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// `s` cut to [`MAX_ECHO_CHARS`].
pub(crate) fn echo(s: &str) -> Cow<'_, str> {
    excerpt(s, MAX_ECHO_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_on_characters_not_bytes() {
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("abcd", 3), "abc…");
        assert_eq!(excerpt("ééé€", 2), "éé…");
        assert_eq!(excerpt("", 0), "");
    }
}

//! Where a request's token comes from: the `Authorization: Bearer`
//! header, or the `?token=` query parameter (browsers cannot set headers
//! on WebSockets).

use std::borrow::Cow;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// The token from an `Authorization: Bearer <token>` header. The scheme is
/// matched case-insensitively; a missing header, another scheme or an empty
/// token gives `None`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The `token` parameter of a raw query string (`a=1&token=…`),
/// percent-decoded. JWTs are base64url and need no escaping, so this
/// borrows in the common case. The first `token` parameter wins; an empty
/// one gives `None`.
pub fn query_token(query: &str) -> Option<Cow<'_, str>> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    if raw.is_empty() {
        return None;
    }
    percent_decode(raw)
}

/// The token of a request: the `Authorization` header if present, else the
/// `?token=` query parameter (browsers cannot set headers on WebSockets).
pub fn request_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, str>> {
    bearer_token(headers)
        .map(Cow::Borrowed)
        .or_else(|| query.and_then(query_token))
}

/// Form decoding of a query value (`+` is a space, `%XX` a byte), but
/// strict where browsers are lenient, deliberately: a malformed escape
/// (`%zz`, `%2`) or bytes that are not UTF-8 give `None`, because a token
/// that lost bytes on the way can only fail later with a misleading
/// `token_malformed`; as no token at all the client learns it sent none.
fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains(['%', '+']) {
        return Some(Cow::Borrowed(raw));
    }
    if !escapes_are_well_formed(raw) {
        return None;
    }
    // `+` first, so that an escaped plus (`%2B`) stays a plus.
    let spaced = raw.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()?;
    Some(Cow::Owned(decoded.into_owned()))
}

/// Whether every `%` starts an escape of two hex digits.
fn escapes_are_well_formed(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

//! Decoding request bodies with serde while keeping enough of the error to
//! say which field was wrong. Shared by [`crate::rest`] and
//! [`crate::rocketchat`], which phrase the result in their own error
//! shapes.

use serde::de::DeserializeOwned;

use crate::echo::excerpt;

/// The longest serde message quoted in an error: long enough for
/// "unknown variant `x`, expected one of `online`, `away`, `busy`,
/// `invisible`", short enough that client input never dominates it.
const MAX_DETAIL_CHARS: usize = 120;

/// Why a body did not decode.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Not JSON at all (syntax error, truncated, empty).
    Syntax(String),
    /// JSON of the wrong shape.
    Shape(ShapeError),
}

#[derive(Debug)]
pub(crate) struct ShapeError {
    /// Where it went wrong, `.` for the top level, else `field`,
    /// `users[2]`…
    pub path: String,
    pub kind: ShapeErrorKind,
    /// serde's message without the position, cut to a safe length.
    pub detail: String,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ShapeErrorKind {
    MissingField(String),
    UnknownField(String),
    Other,
}

/// Decodes a request body, which must be a JSON object. (serde would also
/// accept an array for a struct, field by field in order; no client means
/// that.)
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    if let Some(kind) = non_object_kind(body) {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            return Err(classify(e, ".".to_owned()));
        }
        return Err(BodyError::Shape(ShapeError {
            path: ".".to_owned(),
            kind: ShapeErrorKind::Other,
            detail: format!("expected a JSON object, found {kind}"),
        }));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = excerpt(&e.path().to_string(), crate::MAX_ECHO_CHARS).into_owned();
        let e = e.into_inner();
        // serde_json reports a number or boolean where an enum's string
        // belongs as a syntax error; a body that is valid JSON has the
        // wrong shape, it is not malformed.
        if !e.is_data() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            return BodyError::Shape(ShapeError {
                path,
                kind: ShapeErrorKind::Other,
                detail: "a value of the wrong type".to_owned(),
            });
        }
        classify(e, path)
    })?;
    de.end().map_err(|e| classify(e, ".".to_owned()))?;
    Ok(value)
}

fn classify(e: serde_json::Error, path: String) -> BodyError {
    let detail = without_position(&e);
    if !e.is_data() {
        return BodyError::Syntax(detail);
    }
    let kind = if let Some(name) = quoted_after(&detail, "missing field `") {
        ShapeErrorKind::MissingField(name)
    } else if let Some(name) = quoted_after(&detail, "unknown field `") {
        ShapeErrorKind::UnknownField(name)
    } else {
        ShapeErrorKind::Other
    };
    BodyError::Shape(ShapeError { path, kind, detail })
}

/// What the body is, when it is not an object (judged by its first
/// character; an empty body is left to the parser to call malformed).
fn non_object_kind(body: &[u8]) -> Option<&'static str> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    Some(match first {
        b'{' => return None,
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    })
}

/// serde_json's message without " at line L column C", cut to a safe
/// length.
fn without_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) if e.line() != 0 => &full[..i],
        _ => &full,
    };
    excerpt(message, MAX_DETAIL_CHARS).into_owned()
}

/// The backquoted name after `prefix`, e.g. `users` in
/// "missing field `users`".
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    Some(excerpt(&rest[..end], crate::MAX_ECHO_CHARS).into_owned())
}

//! Reading requests: JSON bodies with a size limit and Rocket.Chat's
//! error wording, raw query strings as browsers encode them, and quoting
//! client input back.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use presence_protocol::rocketchat::{RcFailure, parse_body};
use serde::de::DeserializeOwned;

use super::MAX_ECHO_CHARS;
use crate::app::App;
use crate::error::ApiError;

/// Reads a JSON body of at most `max_body_bytes` and decodes it with
/// Rocket.Chat's error wording. An empty body is `{}`: that is what
/// Rocket.Chat's client sends for a call without parameters.
pub(super) async fn read_body<T: DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let limit = app.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    // A stream error here is either the limit or a client that went away;
    // the answer only matters in the first case.
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    // JSON is UTF-8; serde would skip the bytes of an ignored value
    // without looking, and accept what it cannot have parsed (F9).
    if std::str::from_utf8(&bytes).is_err() {
        return Err(ApiError::rc_failure(RcFailure::new(
            "The request body is not valid JSON: it is not UTF-8",
        )));
    }
    let json: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    parse_body(json).map_err(ApiError::rc_failure)
}

/// The parameters of a raw query string, decoded, in order. Read as
/// pairs rather than with a serde query format because Rocket.Chat's
/// client sends arrays as `ids[]=a&ids[]=b`, which none of them reads.
///
/// Decoding is `application/x-www-form-urlencoded` as browsers write it,
/// and as lenient as Rocket.Chat's own server (Node's `querystring`),
/// deliberately: `+` is a space, `%2B` a plus, a malformed escape (`%zz`)
/// stays as it is, and bytes that are not UTF-8 become U+FFFD.
pub(super) struct QueryParams {
    pub(super) pairs: Vec<(String, String)>,
}

impl QueryParams {
    pub(super) fn parse(raw: Option<&str>) -> QueryParams {
        let pairs = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        QueryParams { pairs }
    }

    /// The first value of `key`.
    pub(super) fn first(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `s` cut to [`MAX_ECHO_CHARS`] characters, for quoting client input.
pub(super) fn echo(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// HTTP 413 in Rocket.Chat's words.
pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::rocketchat_only(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        RcFailure::typed(
            format!("The request body is larger than {limit} bytes"),
            "error-payload-too-large",
        ),
    )
}

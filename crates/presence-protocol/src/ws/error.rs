//! Why a client frame was rejected.

use thiserror::Error;

/// A client frame the server cannot accept. `code` is stable and meant for
/// programs; `message` is for people and quotes at most
/// [`crate::MAX_ECHO_CHARS`] characters of the frame. `ref_` is the frame's
/// `ref`, when one could be read, so the `error` reply can echo it.
///
/// | code | when |
/// |---|---|
/// | `invalid_json` | the frame is not JSON, or not a JSON object |
/// | `invalid_ref` | `ref` is neither a string of at most 64 characters nor a non-negative integer |
/// | `missing_type` | the object has no `type` |
/// | `unknown_type` | `type` names no client message, or is not a string |
/// | `invalid_message` | a field is missing, unknown, or of the wrong type or value; the message names the field |
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: &'static str,
    pub message: String,
    pub ref_: Option<String>,
}

impl ProtocolError {
    pub const INVALID_JSON: &'static str = "invalid_json";
    pub const INVALID_REF: &'static str = "invalid_ref";
    pub const MISSING_TYPE: &'static str = "missing_type";
    pub const UNKNOWN_TYPE: &'static str = "unknown_type";
    pub const INVALID_MESSAGE: &'static str = "invalid_message";

    /// Every code [`crate::ws::parse_client_message`] can return.
    pub const CODES: [&'static str; 5] = [
        Self::INVALID_JSON,
        Self::INVALID_REF,
        Self::MISSING_TYPE,
        Self::UNKNOWN_TYPE,
        Self::INVALID_MESSAGE,
    ];

    pub fn new(code: &'static str, message: impl Into<String>, ref_: Option<String>) -> Self {
        Self {
            code,
            message: message.into(),
            ref_,
        }
    }
}

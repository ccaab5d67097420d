//! Why a client frame was rejected.

use thiserror::Error;

use super::MessageType;

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
/// | `invalid_user_id` | a user id in `users` is empty, too long or has control characters |
/// | `custom_status_not_found` | the `id` of `use_custom_status` cannot name a custom status |
/// | `too_many_users` | `users` is longer than the socket's limits allow (only with limits) |
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: &'static str,
    pub message: String,
    pub ref_: Option<String>,
    /// The frame's `type`, once it was read and is one of the protocol's
    /// (a frame refused for its fields or ids); `None` before that.
    pub message_type: Option<MessageType>,
}

impl ProtocolError {
    pub const INVALID_JSON: &'static str = "invalid_json";
    pub const INVALID_REF: &'static str = "invalid_ref";
    pub const MISSING_TYPE: &'static str = "missing_type";
    pub const UNKNOWN_TYPE: &'static str = "unknown_type";
    pub const INVALID_MESSAGE: &'static str = "invalid_message";
    pub const INVALID_USER_ID: &'static str = "invalid_user_id";
    pub const CUSTOM_STATUS_NOT_FOUND: &'static str = "custom_status_not_found";
    pub const TOO_MANY_USERS: &'static str = "too_many_users";

    /// Every code [`crate::ws::parse_client_message_within`] can return.
    pub const CODES: [&'static str; 8] = [
        Self::INVALID_JSON,
        Self::INVALID_REF,
        Self::MISSING_TYPE,
        Self::UNKNOWN_TYPE,
        Self::INVALID_MESSAGE,
        Self::INVALID_USER_ID,
        Self::CUSTOM_STATUS_NOT_FOUND,
        Self::TOO_MANY_USERS,
    ];

    pub fn new(code: &'static str, message: impl Into<String>, ref_: Option<String>) -> Self {
        Self {
            code,
            message: message.into(),
            ref_,
            message_type: None,
        }
    }

    /// The same error, about a frame of type `message_type`.
    pub fn of_type(self, message_type: MessageType) -> Self {
        Self {
            message_type: Some(message_type),
            ..self
        }
    }
}

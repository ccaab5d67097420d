//! Bodies of the Rocket.Chat-compatible REST API under `/api/v1`.
//!
//! Field names are exactly Rocket.Chat's (`camelCase`, `_id`,
//! `_updatedAt`), and so are the error shapes, so Rocket.Chat clients and
//! SDKs work unchanged:
//!
//! - a failed request: [`RcFailure`], `{"success": false, "error":
//!   "<message> [<errorType>]", "errorType": "<errorType>"}` (HTTP 400);
//! - no or bad credentials: [`RcUnauthorized`], `{"status": "error",
//!   "message": "You must be logged in to do this."}` (HTTP 401);
//! - not allowed: [`RcForbidden`], `{"success": false, "error":
//!   "unauthorized"}` (HTTP 403).
//!
//! | endpoint | request | response |
//! |---|---|---|
//! | `POST users.setStatus` | [`SetStatusBody`] | [`Success`] |
//! | `GET users.getStatus` | query `userId`/`username` | [`GetStatusOwn`] or [`GetStatusOther`] |
//! | `GET users.presence` | query `ids`, `from` | [`PresenceResponse`] |
//! | `GET custom-user-status.list` | query `count`, `offset` | [`CustomUserStatusList`] |
//! | `POST custom-user-status.create` | [`CustomUserStatusCreate`] | [`CustomUserStatusResponse`] |
//! | `POST custom-user-status.update` | [`CustomUserStatusUpdate`] | [`CustomUserStatusResponse`] |
//! | `POST custom-user-status.delete` | [`CustomUserStatusDelete`] | [`Success`] |
//! | `GET presence.getConnections` | — | [`GetConnections`] |
//! | `POST presence.enableBroadcast` | — | [`Success`] |
//!
//! Status values are free strings in requests, because Rocket.Chat answers
//! an unknown one with its own error (`error-invalid-status`,
//! `error-input-is-not-a-valid-field`), not with a schema error; map them
//! with [`parse_status`] and [`parse_status_type`]. In Rocket.Chat,
//! `offline` chosen by the user means invisible.

use presence_core::{ChosenStatus, CustomStatus, DisplayedStatus, PresenceError, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::body::{BodyError, ShapeErrorKind, decode};

/// Rocket.Chat's `errorType` for a body that fails its schema.
pub const INVALID_PARAMS: &str = "invalid-params";

/// Decodes a request body, or answers like Rocket.Chat's schema validator
/// does: `errorType` `invalid-params` and an AJV-style message
/// (`must have required property 'name'`, `must NOT have additional
/// properties`).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, RcFailure> {
    decode(body).map_err(|e| match e {
        BodyError::Syntax(detail) => {
            RcFailure::typed(format!("Invalid JSON body: {detail}"), INVALID_PARAMS)
        }
        BodyError::Shape(shape) => {
            let message = match shape.kind {
                ShapeErrorKind::MissingField(name) => {
                    format!("must have required property '{name}'")
                }
                ShapeErrorKind::UnknownField(_) => "must NOT have additional properties".to_owned(),
                ShapeErrorKind::Other => ajv_type_message(&shape.detail).unwrap_or(shape.detail),
            };
            RcFailure::typed(message, INVALID_PARAMS)
        }
    })
}

/// AJV's wording for a value of the wrong JSON type, from serde's
/// "invalid type: integer `5`, expected a string".
fn ajv_type_message(serde_detail: &str) -> Option<String> {
    let expected = serde_detail.split(", expected ").nth(1)?;
    let ajv_type = match expected {
        "a string" => "string",
        "a boolean" => "boolean",
        "a sequence" => "array",
        "u64" | "i64" | "u32" | "f64" | "usize" => "number",
        _ => return None,
    };
    Some(format!("must be {ajv_type}"))
}

/// A Rocket.Chat user status string as a chosen status: `online`, `away`,
/// `busy`, and `offline` (which chooses invisible). Anything else is
/// `None`, to be answered with [`RcFailure::invalid_status`].
pub fn parse_status(status: &str) -> Option<ChosenStatus> {
    match status {
        "online" => Some(ChosenStatus::Online),
        "away" => Some(ChosenStatus::Away),
        "busy" => Some(ChosenStatus::Busy),
        "offline" => Some(ChosenStatus::Invisible),
        _ => None,
    }
}

/// A custom status's `statusType` string: `online`, `away`, `busy` or
/// `offline`. Anything else is `None`, to be answered with
/// [`RcFailure::invalid_status_type`].
pub fn parse_status_type(status_type: &str) -> Option<DisplayedStatus> {
    DisplayedStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == status_type)
}

/// `POST /api/v1/users.setStatus`. At least one of `status` and `message`
/// must be present (Rocket.Chat's schema: `anyOf required`), which
/// [`SetStatusBody::is_empty`] checks. The target user is `userId`,
/// `username` or `user` (a username), else the caller. Unknown fields are
/// rejected (Rocket.Chat's schema has `additionalProperties: false`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStatusBody {
    /// `online | away | busy | offline`, kept as sent; see [`parse_status`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The status text; `""` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(rename = "userId", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl SetStatusBody {
    /// Neither `status` nor `message`: Rocket.Chat refuses such a body.
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.message.is_none()
    }
}

/// `GET users.getStatus` about oneself: `status` is what others see
/// (`offline` while invisible), `connectionStatus` the devices' aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStatusOwn {
    #[serde(rename = "_id")]
    pub id: String,
    pub status: DisplayedStatus,
    #[serde(rename = "connectionStatus")]
    pub connection_status: DisplayedStatus,
    /// The status text, `""` when there is none.
    pub message: String,
    pub success: bool,
}

/// `GET users.getStatus` about someone else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStatusOther {
    #[serde(rename = "_id")]
    pub id: String,
    pub status: DisplayedStatus,
    pub success: bool,
}

/// One user in `users.presence`. R3: `_id`, `username`, `name`, `status`
/// and `utcOffset` are always there, with Rocket.Chat's types (strings,
/// and a number of hours); `statusText` only when there is one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceUser {
    #[serde(rename = "_id")]
    pub id: String,
    pub username: String,
    pub name: String,
    pub status: DisplayedStatus,
    /// Hours from UTC, e.g. `5.5`.
    #[serde(rename = "utcOffset")]
    pub utc_offset: f64,
    #[serde(
        rename = "statusText",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub status_text: Option<String>,
}

/// `GET users.presence`: the users not offline (`full: true`), or the
/// requested ones (`full: false`). While the presence cap has disabled
/// broadcasting, Rocket.Chat answers `{"users": [], "full": true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceResponse {
    pub users: Vec<PresenceUser>,
    pub full: bool,
    pub success: bool,
}

/// One custom status, as Rocket.Chat shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomUserStatus {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    #[serde(rename = "statusType")]
    pub status_type: DisplayedStatus,
    #[serde(rename = "_updatedAt", with = "crate::rfc3339")]
    pub updated_at: Timestamp,
}

impl From<&CustomStatus> for CustomUserStatus {
    fn from(s: &CustomStatus) -> Self {
        Self {
            id: s.id.as_str().to_owned(),
            name: s.name.as_str().to_owned(),
            status_type: s.status_type,
            updated_at: s.updated_at,
        }
    }
}

/// `GET custom-user-status.list`, paginated: `count` items from `offset`
/// of `total`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomUserStatusList {
    pub statuses: Vec<CustomUserStatus>,
    pub count: u64,
    pub offset: u64,
    pub total: u64,
    pub success: bool,
}

/// `POST custom-user-status.create`. `statusType` is optional in
/// Rocket.Chat (and may be `null`); kept as sent, see
/// [`parse_status_type`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomUserStatusCreate {
    pub name: String,
    #[serde(
        rename = "statusType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub status_type: Option<String>,
}

/// `POST custom-user-status.update`: `_id` and `name` are required,
/// `statusType` optional, as in Rocket.Chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomUserStatusUpdate {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    #[serde(
        rename = "statusType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub status_type: Option<String>,
}

/// `POST custom-user-status.delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomUserStatusDelete {
    #[serde(rename = "customUserStatusId")]
    pub custom_user_status_id: String,
}

/// The reply to create and update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomUserStatusResponse {
    #[serde(rename = "customUserStatus")]
    pub custom_user_status: CustomUserStatus,
    pub success: bool,
}

impl CustomUserStatusResponse {
    pub fn new(status: &CustomStatus) -> Self {
        Self {
            custom_user_status: status.into(),
            success: true,
        }
    }
}

/// `GET presence.getConnections`: connections now and the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetConnections {
    pub current: u64,
    pub max: u64,
    pub success: bool,
}

/// `{"success": true}`, the reply of every call that returns nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Success {
    pub success: bool,
}

impl Default for Success {
    fn default() -> Self {
        Self { success: true }
    }
}

/// A failed call (HTTP 400). With an error type, `error` is
/// `"<message> [<errorType>]"`, Rocket.Chat's format for errors thrown as
/// `Meteor.Error(errorType, message)`; without one it is the bare message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcFailure {
    pub success: bool,
    pub error: String,
    #[serde(rename = "errorType", default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

impl RcFailure {
    /// A failure without an error type, like Rocket.Chat's
    /// `API.v1.failure("message")`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            success: false,
            error: message.into(),
            error_type: None,
        }
    }

    /// A typed failure: `error` becomes `"<message> [<error_type>]"`.
    pub fn typed(message: impl AsRef<str>, error_type: impl Into<String>) -> Self {
        let error_type = error_type.into();
        Self {
            success: false,
            error: format!("{} [{error_type}]", message.as_ref()),
            error_type: Some(error_type),
        }
    }

    /// `users.setStatus` with a status that is not one of the four.
    pub fn invalid_status() -> Self {
        Self::typed(
            "Valid status types include online, away, offline, and busy.",
            "error-invalid-status",
        )
    }

    /// A custom status with a `statusType` that is not one of the four.
    pub fn invalid_status_type(status_type: &str) -> Self {
        Self::typed(
            format!(
                "{} is not a valid status type",
                crate::echo::echo(status_type)
            ),
            "error-input-is-not-a-valid-field",
        )
    }

    /// `custom-user-status.update` for an id that does not exist
    /// (Rocket.Chat answers this one untyped).
    pub fn custom_status_not_found_for_update(id: &str) -> Self {
        Self::new(format!(
            "No custom user status found with the id of \"{}\".",
            crate::echo::echo(id)
        ))
    }

    /// `custom-user-status.delete` for an id that does not exist.
    pub fn custom_status_not_found_for_delete() -> Self {
        Self::typed(
            "Invalid user status",
            "Custom_User_Status_Error_Invalid_User_Status",
        )
    }

    /// `custom-user-status.delete` without `customUserStatusId`.
    pub fn custom_status_id_required() -> Self {
        Self::new("The \"customUserStatusId\" params is required!")
    }
}

/// A rule violation in Rocket.Chat's terms. Where Rocket.Chat has an error
/// for the same situation its message and type are used (invisible not
/// allowed, status change not allowed, custom status name taken, invalid
/// name); everything else keeps our message, with our code in Rocket.Chat's
/// spelling as the type (`status_text_too_long` →
/// `error-status-text-too-long`). A missing custom status gets the delete
/// wording; use [`RcFailure::custom_status_not_found_for_update`] on
/// update.
impl From<&PresenceError> for RcFailure {
    fn from(e: &PresenceError) -> Self {
        match e {
            PresenceError::InvisibleDisabled => {
                Self::typed("Invisible status is disabled", "error-status-not-allowed")
            }
            PresenceError::StatusTextDisabled => {
                Self::typed("Change status is not allowed", "error-not-allowed")
            }
            PresenceError::CustomStatusNameTaken { .. } => Self::typed(
                "The custom user status name is already in use",
                "Custom_User_Status_Error_Name_Already_In_Use",
            ),
            PresenceError::CustomStatusNameInvalid {
                reason: "the name is empty",
            } => Self::typed("The field Name is required", "error-the-field-is-required"),
            PresenceError::CustomStatusNameInvalid { .. } => {
                Self::typed(e.to_string(), "error-input-is-not-a-valid-field")
            }
            PresenceError::CustomStatusNotFound { .. } => {
                Self::custom_status_not_found_for_delete()
            }
            other => Self::typed(
                other.to_string(),
                format!("error-{}", other.code().replace('_', "-")),
            ),
        }
    }
}

impl From<PresenceError> for RcFailure {
    fn from(e: PresenceError) -> Self {
        Self::from(&e)
    }
}

/// HTTP 401: no credentials, or credentials that do not check out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcUnauthorized {
    pub status: String,
    pub message: String,
}

impl Default for RcUnauthorized {
    fn default() -> Self {
        Self {
            status: "error".to_owned(),
            message: "You must be logged in to do this.".to_owned(),
        }
    }
}

/// HTTP 403: authenticated but not allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcForbidden {
    pub success: bool,
    pub error: String,
}

impl RcForbidden {
    /// Rocket.Chat's `API.v1.forbidden()` / `unauthorized()`, e.g. when a
    /// user sets someone else's status.
    pub fn unauthorized() -> Self {
        Self {
            success: false,
            error: "unauthorized".to_owned(),
        }
    }

    /// What Rocket.Chat answers when an endpoint's required permission is
    /// missing (admin endpoints: custom statuses, presence cap).
    pub fn missing_permission() -> Self {
        Self {
            success: false,
            error:
                "User does not have the permissions required for this action [error-unauthorized]"
                    .to_owned(),
        }
    }
}

impl Default for RcForbidden {
    fn default() -> Self {
        Self::unauthorized()
    }
}

/// `POST method.call/{method}`: Rocket.Chat's REST bridge to its DDP
/// methods. `message` is a DDP `method` message as a JSON string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodCallBody {
    pub message: String,
}

/// The DDP message inside [`MethodCallBody::message`]:
/// `{"msg": "method", "id", "method", "params": [...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DdpMethodCall {
    pub msg: String,
    pub id: String,
    pub method: String,
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

/// The answer to `method.call`: the DDP `result` message as a JSON string
/// (`{"msg": "result", "id"}` for a method without a result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodCallResponse {
    pub message: String,
    pub success: bool,
}

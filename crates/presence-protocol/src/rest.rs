//! Bodies of the native REST API under `/v1`.
//!
//! Requests and responses are JSON objects with `snake_case` fields;
//! requests reject unknown fields. Every error response has the same shape,
//! [`ApiError`]:
//!
//! ```json
//! {"error": {"code": "status_text_too_long", "message": "status text is 130 characters long; the limit is 120"}}
//! ```
//!
//! `code` is stable: the rule codes of [`PresenceError::code`], the two
//! body codes of [`parse_body`] (`invalid_json`, `invalid_request`), and the
//! gateway's own (authentication, permissions, not found, rate limits).
//!
//! | body | used by |
//! |---|---|
//! | [`SetStatusRequest`] | set own status |
//! | [`AdminSetStatusRequest`] | an admin sets another user's status |
//! | [`UseCustomStatusRequest`] | select a custom status |
//! | [`PreferencesPatch`] → [`PreferencesView`] | own auto-away preferences |
//! | [`CalendarRequest`] | a calendar integration reports an event |
//! | [`BulkQueryRequest`] → [`BulkQueryResponse`] | bulk presence query |
//! | [`crate::PresenceEntry`] | one user's presence |
//! | [`crate::SelfState`] | own presence |
//! | [`OnlineCount`] | users online |
//! | [`SettingsPatch`] → [`SettingsView`] | admin workspace settings |
//! | [`CustomStatusCreate`], [`CustomStatusPatch`] → [`CustomStatusView`], [`CustomStatusList`] | admin custom statuses |
//! | [`CapView`] | admin presence cap |

use presence_core::{
    CapState, CustomStatus, DisplayedStatus, EffectivePreferences, IdleTimeLimit,
    PreferencesUpdate, PresenceError, Timestamp, WorkspaceSettings,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::body::{BodyError, ShapeErrorKind, decode};
use crate::ws::ProtocolError;
use crate::{PresenceEntry, StatusChange};

/// The body was not JSON.
pub const INVALID_JSON: &str = "invalid_json";
/// The body was JSON of the wrong shape: a missing, unknown or mistyped
/// field. The message names the field.
pub const INVALID_REQUEST: &str = "invalid_request";

/// Decodes a request body, or explains in an [`ApiError`] what is wrong
/// with it (`invalid_json` or `invalid_request`, quoting little of the
/// body).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    decode(body).map_err(|e| match e {
        BodyError::Syntax(detail) => ApiError::new(
            INVALID_JSON,
            format!("the body is not valid JSON: {detail}"),
        ),
        // serde's message names the unknown field itself.
        BodyError::Shape(shape)
            if shape.path == "." || matches!(shape.kind, ShapeErrorKind::UnknownField(_)) =>
        {
            ApiError::new(
                INVALID_REQUEST,
                format!("the body is not a valid request: {}", shape.detail),
            )
        }
        BodyError::Shape(shape) => ApiError::new(
            INVALID_REQUEST,
            format!("field `{}`: {}", shape.path, shape.detail),
        ),
    })
}

/// Every error response: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ApiErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }

    pub fn code(&self) -> &str {
        &self.error.code
    }
}

impl From<&PresenceError> for ApiError {
    fn from(e: &PresenceError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<PresenceError> for ApiError {
    fn from(e: PresenceError) -> Self {
        Self::from(&e)
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        Self::new(e.code, e.message)
    }
}

/// Set own status. See [`StatusChange`] for the meaning of each field.
pub type SetStatusRequest = StatusChange;

/// An admin sets another user's status; the same body as
/// [`SetStatusRequest`].
pub type AdminSetStatusRequest = StatusChange;

/// Select an admin-defined custom status (C2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseCustomStatusRequest {
    /// Checked as a `CustomStatusId` by the gateway, not by serde: an id
    /// that cannot exist is `custom_status_not_found` (404), not a body
    /// error.
    pub id: String,
}

/// Change own auto-away preferences (S1, S2); absent fields stay as they
/// are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_away: Option<bool>,
    /// Seconds, at least 60 (S2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_time_limit: Option<u64>,
}

impl PreferencesPatch {
    /// The update `presence-core` applies. `idle_floor` is the minimum idle
    /// time limit in seconds: [`presence_core::MIN_IDLE_TIME_LIMIT_SECS`]
    /// unless an operator lowered it for tests.
    pub fn to_update(&self, idle_floor: u64) -> Result<PreferencesUpdate, PresenceError> {
        Ok(PreferencesUpdate {
            auto_away: self.auto_away,
            idle_time_limit: self
                .idle_time_limit
                .map(|s| IdleTimeLimit::with_floor(s, idle_floor))
                .transpose()?,
        })
    }
}

/// Own preferences in force, workspace defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencesView {
    pub auto_away: bool,
    /// Seconds.
    pub idle_time_limit: u64,
}

impl From<EffectivePreferences> for PreferencesView {
    fn from(p: EffectivePreferences) -> Self {
        Self {
            auto_away: p.auto_away,
            idle_time_limit: p.idle_time_limit.seconds(),
        }
    }
}

/// A busy calendar event starts (`busy: true`) or ends (K2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarRequest {
    pub event_id: String,
    pub busy: bool,
}

/// Read many users' presence at once (W2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkQueryRequest {
    /// Checked by the gateway, not by serde: first the count
    /// (`too_many_users`), then each id as a `UserId` (`invalid_user_id`),
    /// codes a body error would hide.
    pub users: Vec<String>,
}

/// The users asked for, in the order asked; unknown users are `offline`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkQueryResponse {
    pub users: Vec<PresenceEntry>,
}

/// How many users are online (invisible users are not counted, A3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineCount {
    pub count: u64,
}

/// Change workspace settings; absent fields stay as they are (the one
/// type the backends and the cluster wire use too; check it with
/// [`SettingsPatch::validated`] before use).
pub use presence_core::SettingsPatch;

/// The workspace settings, all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsView {
    pub allow_custom_status_text: bool,
    pub allow_invisible: bool,
    pub calendar_integration: bool,
    pub default_auto_away: bool,
    /// Seconds.
    pub default_idle_time_limit: u64,
    /// 0 means unlimited.
    pub cap: u64,
}

impl From<&WorkspaceSettings> for SettingsView {
    fn from(s: &WorkspaceSettings) -> Self {
        Self {
            allow_custom_status_text: s.allow_custom_status_text,
            allow_invisible: s.allow_invisible,
            calendar_integration: s.calendar_integration,
            default_auto_away: s.default_auto_away,
            default_idle_time_limit: s.default_idle_time_limit.seconds(),
            cap: s.cap,
        }
    }
}

/// Create a custom status (C1). The name is validated by `presence-core`
/// (`CustomStatusName::parse`), so its errors carry the rule's code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomStatusCreate {
    pub name: String,
    pub status_type: DisplayedStatus,
}

/// Rename and/or remap a custom status (C1, C3); absent fields stay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomStatusPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_type: Option<DisplayedStatus>,
}

/// One custom status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomStatusView {
    pub id: String,
    pub name: String,
    pub status_type: DisplayedStatus,
    #[serde(with = "crate::rfc3339")]
    pub updated_at: Timestamp,
}

impl From<&CustomStatus> for CustomStatusView {
    fn from(s: &CustomStatus) -> Self {
        Self {
            id: s.id.as_str().to_owned(),
            name: s.name.as_str().to_owned(),
            status_type: s.status_type,
            updated_at: s.updated_at,
        }
    }
}

/// All custom statuses, ordered by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomStatusList {
    pub statuses: Vec<CustomStatusView>,
}

impl<'a> FromIterator<&'a CustomStatus> for CustomStatusList {
    fn from_iter<I: IntoIterator<Item = &'a CustomStatus>>(iter: I) -> Self {
        Self {
            statuses: iter.into_iter().map(CustomStatusView::from).collect(),
        }
    }
}

/// The presence cap (X5): connections now, the cap (0 = unlimited), the
/// highest count seen, and whether real-time updates are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapView {
    pub count: u64,
    pub cap: u64,
    pub peak: u64,
    pub enabled: bool,
}

impl From<CapState> for CapView {
    fn from(s: CapState) -> Self {
        Self {
            count: s.count,
            cap: s.cap,
            peak: s.peak,
            enabled: s.enabled,
        }
    }
}

/// R3: a user's profile as an admin or a directory sync stores it
/// (`PUT /v1/admin/users/{id}/profile`), and as the answer shows it. The
/// stored profile is replaced whole: a field left out is forgotten (and
/// `users.presence` falls back: username = user id, name = username,
/// `utcOffset` = 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Hours east of UTC, from -12 to 14 (`5.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<f64>,
}

/// One user of a bulk profile upsert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserProfileEntry {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<f64>,
}

impl UserProfileEntry {
    /// The profile part of the entry.
    pub fn profile(&self) -> UserProfile {
        UserProfile {
            username: self.username.clone(),
            name: self.name.clone(),
            utc_offset: self.utc_offset,
        }
    }
}

/// `PUT /v1/admin/users/profiles`: a directory sync, each profile replaced
/// whole as by `PUT /v1/admin/users/{id}/profile`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkProfilesRequest {
    pub profiles: Vec<UserProfileEntry>,
}

/// The answer to a bulk profile upsert: how many profiles were stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkProfilesResponse {
    pub stored: usize,
}

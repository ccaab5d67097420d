//! Payloads that appear on more than one surface: a user's presence as
//! others see it, as the user sees it, the settings every client may read,
//! and a status change request.

use presence_core::{
    ChosenStatus, DisplayedStatus, PublicView, SelfStatus, SelfView, StatusRequest, Timestamp,
    WorkspaceSettings,
};
use serde::{Deserialize, Deserializer, Serialize};

/// One user's presence as everybody else sees it (WS `snapshot`, REST bulk
/// query and per-user GET).
///
/// ```json
/// {"user": "alice", "status": "busy", "text": "In a meeting", "version": 42}
/// ```
///
/// `text` is `null` while `status` is `offline` (T3). `version` grows with
/// every visible change of this user (W3): a client keeps, per user, the
/// entry with the highest version it has seen and drops older ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub user: String,
    pub status: DisplayedStatus,
    pub text: Option<String>,
    pub version: u64,
}

impl PresenceEntry {
    pub fn new(user: impl Into<String>, view: &PublicView, version: u64) -> Self {
        Self {
            user: user.into(),
            status: view.status,
            text: view.text.as_ref().map(|t| t.as_str().to_owned()),
            version,
        }
    }
}

/// Everything a user sees of their own presence (WS `ready.me` and
/// `presence.me`, and the REST read of one's own presence).
///
/// ```json
/// {"user": "alice", "status": "invisible", "text": null, "chosen": "invisible",
///  "custom_status": null, "expires_at": null, "calendar_busy": false,
///  "connection": "online", "devices": 2, "auto_away": true,
///  "idle_time_limit": 300, "version": 7}
/// ```
///
/// - `status`: what the user sees of themselves (`invisible` instead of
///   `offline` while invisible with a device connected, A3).
/// - `text`: the user's own text, shown to them even while others see none.
/// - `chosen`: the menu choice; `online` means automatic.
/// - `custom_status`: the id of the admin-defined custom status in use.
/// - `expires_at`: when the current manual status or text ends (T6).
/// - `calendar_busy`: a busy calendar event currently makes the user busy.
/// - `connection`: the device aggregate alone (`online`, `away` or
///   `offline`), Rocket.Chat's `connectionStatus`.
/// - `devices`: connected devices.
/// - `auto_away`, `idle_time_limit` (seconds): preferences in force, with
///   workspace defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfState {
    pub user: String,
    pub status: SelfStatus,
    pub text: Option<String>,
    pub chosen: ChosenStatus,
    pub custom_status: Option<String>,
    #[serde(default, with = "crate::rfc3339::option")]
    pub expires_at: Option<Timestamp>,
    pub calendar_busy: bool,
    pub connection: DisplayedStatus,
    pub devices: usize,
    pub auto_away: bool,
    pub idle_time_limit: u64,
    pub version: u64,
}

impl SelfState {
    pub fn new(user: impl Into<String>, view: &SelfView, version: u64) -> Self {
        Self {
            user: user.into(),
            status: view.status,
            text: view.text.as_ref().map(|t| t.as_str().to_owned()),
            chosen: view.chosen,
            custom_status: view.custom_status.as_ref().map(|id| id.as_str().to_owned()),
            expires_at: view.expires_at,
            calendar_busy: view.calendar_busy,
            connection: view.connection,
            devices: view.devices,
            auto_away: view.preferences.auto_away,
            idle_time_limit: view.preferences.idle_time_limit.seconds(),
            version,
        }
    }
}

/// The workspace settings every user may read (WS `ready.settings`), so a
/// client can hide what the workspace does not allow. The cap is not among
/// them; admins read it through the REST settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicSettings {
    pub allow_custom_status_text: bool,
    pub allow_invisible: bool,
    pub calendar_integration: bool,
    pub default_auto_away: bool,
    /// Seconds.
    pub default_idle_time_limit: u64,
}

impl From<&WorkspaceSettings> for PublicSettings {
    fn from(s: &WorkspaceSettings) -> Self {
        Self {
            allow_custom_status_text: s.allow_custom_status_text,
            allow_invisible: s.allow_invisible,
            calendar_integration: s.calendar_integration,
            default_auto_away: s.default_auto_away,
            default_idle_time_limit: s.default_idle_time_limit.seconds(),
        }
    }
}

/// A request to change a status: WS `set_status`, the REST request that
/// sets one's own status, and the admin's request that sets another
/// user's.
///
/// ```json
/// {"status": "busy", "text": "Presenting", "expires_at": "2026-11-28T13:00:00Z"}
/// ```
///
/// Every field is optional, with three states for `text`:
/// - absent: keep the current text (unless a built-in status is chosen,
///   which clears it, T4);
/// - `null` or `""`: clear the text — both decode to `Some("")`, which is
///   how [`StatusRequest`] spells "clear";
/// - a string: set this text (validated by `presence-core`, T1).
///
/// `status` and `expires_at` treat `null` like absent. Unknown fields are
/// rejected. Validation beyond the JSON shape (text length, expiry in the
/// future, an empty request) is `presence-core`'s job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ChosenStatus>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text_or_null"
    )]
    pub text: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::rfc3339::option"
    )]
    pub expires_at: Option<Timestamp>,
}

impl StatusChange {
    /// The request `presence-core` applies.
    pub fn to_request(&self) -> StatusRequest {
        self.clone().into_request()
    }

    pub fn into_request(self) -> StatusRequest {
        StatusRequest {
            status: self.status,
            text: self.text,
            expires_at: self.expires_at,
        }
    }
}

impl From<StatusChange> for StatusRequest {
    fn from(change: StatusChange) -> Self {
        change.into_request()
    }
}

/// Present `text`: a string sets it, `null` clears it (`Some("")`).
fn text_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?.unwrap_or_default()))
}

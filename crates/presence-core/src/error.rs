//! The one error type of the presence rules. Every variant has a stable
//! machine code ([`PresenceError::code`]) that clients can match on, and a
//! human message (its `Display`). The gateway maps codes to HTTP statuses
//! and to Rocket.Chat's error types; the codes themselves never change.

use thiserror::Error;

use crate::{DeviceEvent, Platform};

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PresenceError {
    /// T1: more than 120 Unicode scalar values after trimming.
    #[error("status text is {len} characters long; the limit is {max}")]
    StatusTextTooLong { len: usize, max: usize },
    /// T1: a control character (newline, tab, NUL, …), a bidirectional
    /// override or an invisible format character in the text.
    #[error(
        "status text must not contain control characters, bidirectional overrides \
         or invisible format characters"
    )]
    StatusTextInvalid,
    /// T5: the workspace does not allow free status text.
    #[error("custom status text is disabled in this workspace")]
    StatusTextDisabled,
    /// S2: idle time limits start at the floor (60 s in production).
    #[error("idle time limit of {seconds} s is below the minimum of {min} s")]
    IdleTimeLimitTooLow { seconds: u64, min: u64 },
    /// S2: idle time limits end at a day; beyond it auto-away is off in
    /// all but name (use `auto_away: false` for that).
    #[error("idle time limit of {seconds} s is above the maximum of {max} s")]
    IdleTimeLimitTooHigh { seconds: u64, max: u64 },
    /// I2: the workspace does not allow new invisible requests.
    #[error("invisible status is disabled in this workspace")]
    InvisibleDisabled,
    /// D8: the platform cannot produce this event.
    #[error("a {platform} device cannot report '{event}'")]
    UnsupportedEvent {
        platform: Platform,
        event: DeviceEvent,
    },
    /// K3/D8: calendar events come only from desktop devices.
    #[error("a {platform} device cannot report calendar events")]
    UnsupportedCalendarSource { platform: Platform },
    /// T6: expiries must lie in the future.
    #[error("expires_at must be in the future")]
    ExpiryNotInFuture,
    /// T6: expiries lie at most a year ahead.
    #[error("expires_at must be at most {max_days} days in the future")]
    ExpiryTooFar { max_days: u64 },
    /// T6: an expiry needs something to expire.
    #[error("expires_at needs a status or a text to expire")]
    ExpiryWithoutChange,
    /// A status change must change something.
    #[error("a status change needs a status, a text or both")]
    EmptyStatusChange,
    /// C1: custom status names are unique, ignoring case.
    #[error("a custom status named '{name}' already exists")]
    CustomStatusNameTaken { name: String },
    /// C1: names are 1–120 characters without markup characters.
    #[error("custom status name is invalid: {reason}")]
    CustomStatusNameInvalid { reason: &'static str },
    /// C1–C3: no custom status with this id.
    #[error("custom status '{id}' does not exist")]
    CustomStatusNotFound { id: String },
    /// X4: the broadcast is re-enabled only while the count is below the cap.
    #[error("presence broadcast cannot be enabled: {count} connections, cap is {cap}")]
    BroadcastEnableRefused { count: u64, cap: u64 },
    /// K1: calendar integration is switched off for the workspace.
    #[error("calendar integration is disabled in this workspace")]
    CalendarDisabled,
    /// A device event for a device that is not connected.
    #[error("device '{device}' is not connected")]
    UnknownDevice { device: String },
    /// Calendar event ids are short opaque strings.
    #[error("calendar event id must be 1-{max} printable characters")]
    CalendarEventIdInvalid { max: usize },
    /// A user cannot hold an unbounded number of concurrent busy events.
    #[error("too many concurrent calendar events (limit {max})")]
    TooManyCalendarEvents { max: usize },
}

impl PresenceError {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::StatusTextTooLong { .. } => "status_text_too_long",
            Self::StatusTextInvalid => "status_text_invalid",
            Self::StatusTextDisabled => "status_text_disabled",
            Self::IdleTimeLimitTooLow { .. } => "idle_time_limit_too_low",
            Self::IdleTimeLimitTooHigh { .. } => "idle_time_limit_too_high",
            Self::InvisibleDisabled => "invisible_disabled",
            Self::UnsupportedEvent { .. } | Self::UnsupportedCalendarSource { .. } => {
                "unsupported_event"
            }
            Self::ExpiryNotInFuture => "expiry_not_in_future",
            Self::ExpiryTooFar { .. } => "expiry_too_far",
            Self::ExpiryWithoutChange => "expiry_without_change",
            Self::EmptyStatusChange => "empty_status_change",
            Self::CustomStatusNameTaken { .. } => "custom_status_name_taken",
            Self::CustomStatusNameInvalid { .. } => "custom_status_name_invalid",
            Self::CustomStatusNotFound { .. } => "custom_status_not_found",
            Self::BroadcastEnableRefused { .. } => "broadcast_enable_refused",
            Self::CalendarDisabled => "calendar_disabled",
            Self::UnknownDevice { .. } => "unknown_device",
            Self::CalendarEventIdInvalid { .. } => "calendar_event_id_invalid",
            Self::TooManyCalendarEvents { .. } => "too_many_calendar_events",
        }
    }
}

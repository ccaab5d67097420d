//! `presence-core`: every presence rule of DESIGN.md §1 as pure code.
//!
//! Nothing here does I/O, reads a clock or spawns a task. The gateway, the
//! in-memory backend and the Redis aggregator all call the same functions,
//! so a rule is written once and tested once, here, by its rule id.
//!
//! The main types:
//! - [`UserPresence`]: one user's durable state plus live devices; commands
//!   in, [`Outcome`] (views, changed flags, version) out.
//! - [`Device`]: one device's state machine with the platform matrix (D8).
//! - [`CapState`]: the presence cap (X1–X5).
//! - [`CustomStatusRegistry`]: admin-defined custom statuses (C1–C3).
//! - Validated ids: [`UserId`], [`DeviceId`], [`CustomStatusId`].
//! - Validated values: [`StatusText`], [`CustomStatusName`],
//!   [`IdleTimeLimit`], [`Expiry`].
#![forbid(unsafe_code)]

mod cap;
mod counts;
mod custom;
mod device;
mod device_map;
mod error;
mod ids;
mod profile;
mod settings;
mod status;
mod text;
mod time;
mod user;

pub use cap::{CapState, CapTransition};
pub use counts::StatusCounts;
pub use custom::{CustomStatus, CustomStatusRegistry};
pub use device::{AwayReason, Device, DeviceEvent, DeviceStatus, IdleSource, Link};
pub use device_map::DeviceMap;
pub use error::PresenceError;
pub use ids::{
    CustomStatusId, DeviceId, IdError, IdKind, IdProblem, MAX_CUSTOM_STATUS_ID_CHARS,
    MAX_DEVICE_ID_CHARS, MAX_USER_ID_CHARS, UserId,
};
pub use profile::{Profile, UtcOffset, UtcOffsetOutOfRange};
pub use settings::{
    DEFAULT_CAP, DEFAULT_IDLE_TIME_LIMIT_SECS, EffectivePreferences, Expiry, IdleTimeLimit,
    MAX_EXPIRY_DAYS, MAX_IDLE_TIME_LIMIT_SECS, MIN_IDLE_TIME_LIMIT_SECS, Preferences,
    SettingsPatch, WorkspaceSettings,
};
pub use status::{ChosenStatus, DisplayedStatus, Platform, SelfStatus};
pub use text::{
    CustomStatusName, MAX_CUSTOM_STATUS_NAME_CHARS, MAX_STATUS_TEXT_CHARS, StatusText,
    has_hidden_chars, is_hidden_char,
};
pub use time::Timestamp;
pub use user::{
    CalendarClaims, CalendarSource, Command, Context, Disconnect, DurableState,
    MAX_CALENDAR_EVENT_ID_CHARS, MAX_CALENDAR_EVENTS, MAX_RESTORE_DEPTH, ManualState, Outcome,
    PreferencesUpdate, PublicView, SelfView, SocketEnd, StatusLayer, StatusRequest, Temporary,
    UserPresence, next_version,
};

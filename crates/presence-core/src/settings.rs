//! Auto-away preferences (S1, S2) and the workspace settings every rule
//! reads (T5, I2, K1, X1 and the default preferences).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{PresenceError, Timestamp};

/// S2: the production floor of the idle time limit.
pub const MIN_IDLE_TIME_LIMIT_SECS: u64 = 60;
/// S2: the ceiling of the idle time limit (one day). A larger limit would
/// switch auto-away off silently; `auto_away: false` says that openly.
pub const MAX_IDLE_TIME_LIMIT_SECS: u64 = 24 * 60 * 60;
/// T6: how far ahead an expiry may lie (one year).
pub const MAX_EXPIRY_DAYS: u64 = 366;
/// S1: the default idle time limit (5 minutes).
pub const DEFAULT_IDLE_TIME_LIMIT_SECS: u64 = 300;
/// X1: the default presence cap.
pub const DEFAULT_CAP: u64 = 200;

/// How long a device must be idle before it shows `away` (D2), never
/// below the floor nor above [`MAX_IDLE_TIME_LIMIT_SECS`] (S2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdleTimeLimit(u64);

impl IdleTimeLimit {
    /// Validates against the production floor of 60 seconds (S2).
    pub fn new(seconds: u64) -> Result<Self, PresenceError> {
        Self::with_floor(seconds, MIN_IDLE_TIME_LIMIT_SECS)
    }

    /// Validates against another floor. The service uses this only when an
    /// operator explicitly lowers the floor for end-to-end tests; the
    /// default floor is always [`MIN_IDLE_TIME_LIMIT_SECS`].
    pub fn with_floor(seconds: u64, floor: u64) -> Result<Self, PresenceError> {
        if seconds < floor {
            return Err(PresenceError::IdleTimeLimitTooLow {
                seconds,
                min: floor,
            });
        }
        if seconds > MAX_IDLE_TIME_LIMIT_SECS {
            return Err(PresenceError::IdleTimeLimitTooHigh {
                seconds,
                max: MAX_IDLE_TIME_LIMIT_SECS,
            });
        }
        Ok(Self(seconds))
    }

    pub fn seconds(self) -> u64 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl Default for IdleTimeLimit {
    fn default() -> Self {
        Self(DEFAULT_IDLE_TIME_LIMIT_SECS)
    }
}

/// A user's own auto-away preferences. `None` means "use the workspace
/// default" (S1), so changing the default reaches everyone who never chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_away: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_time_limit: Option<IdleTimeLimit>,
}

impl Preferences {
    /// The preferences in force, with workspace defaults filled in.
    pub fn resolve(&self, settings: &WorkspaceSettings) -> EffectivePreferences {
        EffectivePreferences {
            auto_away: self.auto_away.unwrap_or(settings.default_auto_away),
            idle_time_limit: self
                .idle_time_limit
                .unwrap_or(settings.default_idle_time_limit),
        }
    }
}

/// Preferences with every default resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectivePreferences {
    pub auto_away: bool,
    pub idle_time_limit: IdleTimeLimit,
}

/// The admin's workspace settings, with the defaults of DESIGN §1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkspaceSettings {
    /// T5
    pub allow_custom_status_text: bool,
    /// I2
    pub allow_invisible: bool,
    /// K1
    pub calendar_integration: bool,
    /// S1
    pub default_auto_away: bool,
    /// S1
    pub default_idle_time_limit: IdleTimeLimit,
    /// X1: concurrent connections across the cluster; 0 means unlimited.
    pub cap: u64,
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        Self {
            allow_custom_status_text: true,
            allow_invisible: true,
            calendar_integration: false,
            default_auto_away: true,
            default_idle_time_limit: IdleTimeLimit::default(),
            cap: DEFAULT_CAP,
        }
    }
}

/// A change of the workspace settings; `None` fields stay as they are.
/// The one definition: the admin's REST body, the backends' argument and
/// the cluster wire format. Unknown fields are refused.
///
/// A patch that was deserialized holds an idle time limit nobody checked:
/// [`validated`](Self::validated) checks it against the service's floor
/// (S2) before it goes anywhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_custom_status_text: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_invisible: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_integration: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_auto_away: Option<bool>,
    /// Seconds on the wire, at least the floor (S2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_idle_time_limit: Option<IdleTimeLimit>,
    /// Concurrent connections across the cluster; 0 means unlimited (X1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<u64>,
}

impl SettingsPatch {
    /// The patch, once its idle time limit is checked against `idle_floor`
    /// seconds (S2: [`IdleTimeLimit::with_floor`]).
    pub fn validated(self, idle_floor: u64) -> Result<Self, PresenceError> {
        let default_idle_time_limit = self
            .default_idle_time_limit
            .map(|limit| IdleTimeLimit::with_floor(limit.seconds(), idle_floor))
            .transpose()?;
        Ok(Self {
            default_idle_time_limit,
            ..self
        })
    }

    /// `current` with this patch applied, validated like
    /// [`validated`](Self::validated).
    pub fn apply(
        self,
        current: &WorkspaceSettings,
        idle_floor: u64,
    ) -> Result<WorkspaceSettings, PresenceError> {
        Ok(self.validated(idle_floor)?.apply_to(current))
    }

    /// `settings` with this patch applied.
    pub fn apply_to(&self, settings: &WorkspaceSettings) -> WorkspaceSettings {
        let mut next = settings.clone();
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = self.$f { next.$f = v; } )*};
        }
        set!(
            allow_custom_status_text,
            allow_invisible,
            calendar_integration,
            default_auto_away,
            default_idle_time_limit,
            cap
        );
        next
    }
}

/// T6: a moment in the future at which a manual status or text ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Expiry(Timestamp);

impl Expiry {
    /// Validates that `at` lies strictly after `now` and at most
    /// [`MAX_EXPIRY_DAYS`] ahead of it.
    pub fn new(at: Timestamp, now: Timestamp) -> Result<Self, PresenceError> {
        if at <= now {
            return Err(PresenceError::ExpiryNotInFuture);
        }
        let max_ahead = Duration::from_secs(MAX_EXPIRY_DAYS * 24 * 60 * 60);
        if at.saturating_since(now) > max_ahead {
            return Err(PresenceError::ExpiryTooFar {
                max_days: MAX_EXPIRY_DAYS,
            });
        }
        Ok(Self(at))
    }

    pub fn at(self) -> Timestamp {
        self.0
    }
}

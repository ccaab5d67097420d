//! One device's state machine (D1–D8, A5).
//!
//! A device is one connection of one client app. Its state is a set of
//! independent facts — idle, screen locked, asleep, in the background,
//! link lost — from which its status (`online` or `away` with a reason) is
//! derived. Keeping facts instead of a single status makes every event
//! idempotent and lets preference changes (auto-away off) take effect
//! without replaying history.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{EffectivePreferences, Platform, PresenceError, Timestamp};

/// An event a client reports about its device (WebSocket message types of
/// the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceEvent {
    /// The user did something; restarts the server-side idle timer.
    Activity,
    /// The client's own idle detector fired.
    Idle,
    /// The client's own idle detector saw the user return.
    Active,
    Lock,
    Unlock,
    Sleep,
    Wake,
    Background,
    Foreground,
}

impl DeviceEvent {
    pub const ALL: [DeviceEvent; 9] = [
        Self::Activity,
        Self::Idle,
        Self::Active,
        Self::Lock,
        Self::Unlock,
        Self::Sleep,
        Self::Wake,
        Self::Background,
        Self::Foreground,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activity => "activity",
            Self::Idle => "idle",
            Self::Active => "active",
            Self::Lock => "lock",
            Self::Unlock => "unlock",
            Self::Sleep => "sleep",
            Self::Wake => "wake",
            Self::Background => "background",
            Self::Foreground => "foreground",
        }
    }

    /// The platform capability matrix (D8), from the product document's
    /// "Platform differences": idle detection on web and desktop, screen
    /// lock and sleep on desktop only, foreground/background on mobile only.
    pub fn supported_on(self, platform: Platform) -> bool {
        use DeviceEvent::*;
        match platform {
            Platform::Web => matches!(self, Activity | Idle | Active),
            Platform::Desktop => {
                matches!(
                    self,
                    Activity | Idle | Active | Lock | Unlock | Sleep | Wake
                )
            }
            Platform::Mobile => matches!(self, Background | Foreground),
        }
    }
}

impl fmt::Display for DeviceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a device shows `away`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwayReason {
    /// D7: the socket dropped without a goodbye; the grace period runs.
    Disconnected,
    /// D6
    Asleep,
    /// D3
    Locked,
    /// D4
    Background,
    /// D2
    Idle,
}

/// The status of one device (automatic mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum DeviceStatus {
    Online,
    Away(AwayReason),
}

impl DeviceStatus {
    /// A4: `online` beats `away`.
    pub fn rank(self) -> u8 {
        match self {
            Self::Online => 1,
            Self::Away(_) => 0,
        }
    }
}

/// Who decides that a device is idle (D2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum IdleSource {
    /// The client sends `idle`/`active` itself; the server runs no timer.
    /// Every device starts here.
    Client,
    /// The client reports `activity`; the server declares the device idle
    /// once the user's idle time limit has passed since the last report.
    /// A device switches to this mode with its first `activity` report.
    ServerTimer { last_activity: Timestamp },
}

/// The link between the device and its gateway (D7, A5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "link", rename_all = "snake_case")]
pub enum Link {
    Connected,
    /// The socket dropped without a goodbye; the device shows `away` until
    /// `until`, then it is removed.
    Lost {
        until: Timestamp,
    },
}

/// One connected device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub platform: Platform,
    pub connected_at: Timestamp,
    pub idle: bool,
    pub idle_source: IdleSource,
    pub locked: bool,
    pub asleep: bool,
    pub background: bool,
    pub link: Link,
    /// A5/H1: when set, the device counts as disconnected from this moment
    /// unless its heartbeat moves the deadline on.
    pub heartbeat_deadline: Option<Timestamp>,
}

impl Device {
    /// D1: every new connection starts `online`, whatever the device was
    /// before it dropped.
    pub fn connect(platform: Platform, now: Timestamp) -> Device {
        Device {
            platform,
            connected_at: now,
            idle: false,
            idle_source: IdleSource::Client,
            locked: false,
            asleep: false,
            background: false,
            link: Link::Connected,
            heartbeat_deadline: None,
        }
    }

    /// Applies one client-reported event (D2–D6), rejecting events the
    /// platform cannot produce (D8). Applying the same event twice at the
    /// same instant leaves the same state.
    pub fn apply(&mut self, event: DeviceEvent, now: Timestamp) -> Result<(), PresenceError> {
        if !event.supported_on(self.platform) {
            return Err(PresenceError::UnsupportedEvent {
                platform: self.platform,
                event,
            });
        }
        match event {
            DeviceEvent::Activity => self.record_activity(now, true),
            DeviceEvent::Idle => {
                self.idle = true;
                self.idle_source = IdleSource::Client;
            }
            DeviceEvent::Active => {
                self.idle = false;
                self.idle_source = IdleSource::Client;
            }
            DeviceEvent::Lock => self.locked = true,
            DeviceEvent::Unlock => {
                // Unlocking means someone is at the keyboard.
                self.locked = false;
                self.record_activity(now, false);
            }
            DeviceEvent::Sleep => self.asleep = true,
            DeviceEvent::Wake => {
                self.asleep = false;
                self.record_activity(now, false);
            }
            DeviceEvent::Background => self.background = true,
            DeviceEvent::Foreground => self.background = false,
        }
        Ok(())
    }

    /// The device's status under the user's preferences.
    pub fn status(&self, prefs: &EffectivePreferences) -> DeviceStatus {
        let reason = if matches!(self.link, Link::Lost { .. }) {
            Some(AwayReason::Disconnected)
        } else if self.asleep {
            Some(AwayReason::Asleep)
        } else if self.locked {
            Some(AwayReason::Locked)
        } else if self.background {
            Some(AwayReason::Background)
        } else if self.idle && prefs.auto_away && self.platform.has_idle_detection() {
            Some(AwayReason::Idle)
        } else {
            None
        };
        reason.map_or(DeviceStatus::Online, DeviceStatus::Away)
    }

    /// Whether the device still counts as connected at `now` (A5, D7).
    pub fn is_live(&self, now: Timestamp) -> bool {
        let grace_over = matches!(self.link, Link::Lost { until } if until <= now);
        let heartbeat_lapsed = self.heartbeat_deadline.is_some_and(|d| d <= now);
        !grace_over && !heartbeat_lapsed
    }

    /// Applies the passage of time to `now`: the server-side idle timer (D2).
    /// Returns whether anything changed.
    pub fn advance(&mut self, now: Timestamp, prefs: &EffectivePreferences) -> bool {
        if let Some(deadline) = self.idle_deadline(prefs)
            && deadline <= now
        {
            self.idle = true;
            return true;
        }
        false
    }

    /// The next moment at which time alone changes this device: the idle
    /// timer, the end of the grace period, or the heartbeat deadline.
    pub fn next_deadline(&self, prefs: &EffectivePreferences) -> Option<Timestamp> {
        let grace = match self.link {
            Link::Lost { until } => Some(until),
            Link::Connected => None,
        };
        [self.idle_deadline(prefs), grace, self.heartbeat_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    fn idle_deadline(&self, prefs: &EffectivePreferences) -> Option<Timestamp> {
        match self.idle_source {
            IdleSource::ServerTimer { last_activity }
                if !self.idle && prefs.auto_away && self.platform.has_idle_detection() =>
            {
                Some(last_activity + prefs.idle_time_limit.duration())
            }
            _ => None,
        }
    }

    fn record_activity(&mut self, now: Timestamp, switch_to_server_timer: bool) {
        self.idle = false;
        match &mut self.idle_source {
            IdleSource::ServerTimer { last_activity } => {
                *last_activity = (*last_activity).max(now);
            }
            IdleSource::Client if switch_to_server_timer => {
                self.idle_source = IdleSource::ServerTimer { last_activity: now };
            }
            IdleSource::Client => {}
        }
    }
}

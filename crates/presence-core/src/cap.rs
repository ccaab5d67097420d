//! The presence cap (X1–X5): a state machine over the cluster-wide
//! connection count and admin requests.
//!
//! **Invariant:** the broadcast only ever goes from disabled to enabled
//! through [`CapState::request_enable`], and that refuses while the count
//! is not below the cap (X4).

use serde::{Deserialize, Serialize};

use crate::{DEFAULT_CAP, PresenceError};

/// What a cap operation did to the broadcast, for notices (X3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapTransition {
    /// X2: the count exceeded the cap; real-time updates stop.
    Disabled,
    /// X4: an admin re-enabled the broadcast.
    Enabled,
}

/// Count, cap, peak and enabled state (X5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapState {
    /// X1: 0 means unlimited.
    pub cap: u64,
    pub count: u64,
    pub peak: u64,
    pub enabled: bool,
}

impl Default for CapState {
    fn default() -> Self {
        Self::new(DEFAULT_CAP)
    }
}

impl CapState {
    pub fn new(cap: u64) -> Self {
        Self {
            cap,
            count: 0,
            peak: 0,
            enabled: true,
        }
    }

    /// Records the current connection count (X1, X2).
    pub fn observe_count(&mut self, count: u64) -> Option<CapTransition> {
        self.count = count;
        self.peak = self.peak.max(count);
        self.disable_if_exceeded()
    }

    /// Changes the cap (an admin setting). Lowering it below the count
    /// disables the broadcast; raising it never re-enables it (X4).
    pub fn set_cap(&mut self, cap: u64) -> Option<CapTransition> {
        self.cap = cap;
        self.disable_if_exceeded()
    }

    /// X4: an admin asks to re-enable the broadcast. Refused while the count
    /// is not below the cap; a no-op when it is already enabled.
    pub fn request_enable(&mut self) -> Result<Option<CapTransition>, PresenceError> {
        if self.enabled {
            return Ok(None);
        }
        if self.cap != 0 && self.count >= self.cap {
            return Err(PresenceError::BroadcastEnableRefused {
                count: self.count,
                cap: self.cap,
            });
        }
        self.enabled = true;
        Ok(Some(CapTransition::Enabled))
    }

    fn disable_if_exceeded(&mut self) -> Option<CapTransition> {
        if self.enabled && self.cap != 0 && self.count > self.cap {
            self.enabled = false;
            return Some(CapTransition::Disabled);
        }
        None
    }
}

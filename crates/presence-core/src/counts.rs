//! How many users show each status: the online count of the APIs (A3) and
//! the `presence_users` gauge. One type for every layer: the engine keeps
//! it as users change, a cluster shard stores it (`presence:{s}:counts`,
//! as JSON `{"online", "away", "busy", "invisible"}`), and the backend
//! trait returns it.

use serde::{Deserialize, Serialize};

use crate::SelfStatus;

/// Users per status, by the status each sees of themselves; users with no
/// connected device (`offline`) are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub online: u64,
    pub away: u64,
    pub busy: u64,
    /// Connected but invisible (A3): shown offline, not counted online.
    pub invisible: u64,
}

impl StatusCounts {
    /// The online count of the API: everyone shown as not offline (A3).
    pub fn online_total(&self) -> u64 {
        self.online + self.away + self.busy
    }

    /// Counts one more user showing `status`; `Offline` is not counted.
    pub fn add(&mut self, status: SelfStatus) {
        if let Some(slot) = self.slot(status) {
            *slot += 1;
        }
    }

    /// Counts one user fewer showing `status` (saturating at zero).
    pub fn remove(&mut self, status: SelfStatus) {
        if let Some(slot) = self.slot(status) {
            *slot = slot.saturating_sub(1);
        }
    }

    fn slot(&mut self, status: SelfStatus) -> Option<&mut u64> {
        match status {
            SelfStatus::Online => Some(&mut self.online),
            SelfStatus::Away => Some(&mut self.away),
            SelfStatus::Busy => Some(&mut self.busy),
            SelfStatus::Invisible => Some(&mut self.invisible),
            SelfStatus::Offline => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a3_counts_connected_users_and_the_online_total_leaves_out_invisible() {
        let mut counts = StatusCounts::default();
        for status in [
            SelfStatus::Online,
            SelfStatus::Online,
            SelfStatus::Away,
            SelfStatus::Busy,
            SelfStatus::Invisible,
            SelfStatus::Offline,
        ] {
            counts.add(status);
        }
        let expected = StatusCounts {
            online: 2,
            away: 1,
            busy: 1,
            invisible: 1,
        };
        assert_eq!(counts, expected);
        assert_eq!(counts.online_total(), 4);
        counts.remove(SelfStatus::Online);
        counts.remove(SelfStatus::Offline);
        assert_eq!(counts.online, 1);
        counts.remove(SelfStatus::Busy);
        counts.remove(SelfStatus::Busy);
        assert_eq!(counts.busy, 0, "never below zero");
    }
}

//! The presence cap (X1–X5) as the engine owns it: `presence-core`'s
//! [`CapState`] plus what was last persisted.
//!
//! Exactly one engine owns the cap: the embedded backend's (which counts
//! its own sockets, [`CapOwner::observe_count`]) or, in cluster mode, shard
//! 0's leader, which sums the counts every gateway stores with its node
//! lease ([`CapOwner::observe`]) — only of nodes whose lease is live, so a
//! crashed gateway's last count cannot hold the broadcast off forever. The
//! state is persisted (`presence:cap`, or the embedded store's cap record)
//! so a new owner resumes with the same enabled flag and peak (X4: a
//! restart never re-enables the broadcast), and admins can read it (X5).

use std::collections::BTreeSet;

use presence_core::{CapState, CapTransition, PresenceError};

/// The cap state machine of the cluster, with what was last persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapOwner {
    state: CapState,
    persisted: Option<CapState>,
}

impl CapOwner {
    /// A fresh cap with nothing stored yet: enabled, no peak.
    pub fn new(cap: u64) -> Self {
        Self {
            state: CapState::new(cap),
            persisted: None,
        }
    }

    /// Resumes from the stored state. The cap itself comes from the
    /// workspace settings (`cap`), which are the authority for it; the
    /// enabled flag and the peak come from `stored`. Lowering the cap
    /// below the stored count disables the broadcast at once.
    pub fn restore(stored: Option<CapState>, cap: u64) -> Self {
        let Some(stored) = stored else {
            return Self::new(cap);
        };
        let mut owner = Self {
            state: stored,
            persisted: Some(stored),
        };
        owner.state.set_cap(cap);
        owner
    }

    /// X1, X2: records the cluster-wide count, the sum of the counts of the
    /// nodes in `live_nodes`; counts of other nodes (lapsed leases) are
    /// ignored.
    pub fn observe(
        &mut self,
        live_node_counts: &[(String, u64)],
        live_nodes: &BTreeSet<String>,
    ) -> Option<CapTransition> {
        let count = live_node_counts
            .iter()
            .filter(|(node, _)| live_nodes.contains(node))
            .map(|(_, count)| *count)
            .fold(0u64, u64::saturating_add);
        self.state.observe_count(count)
    }

    /// X1, X2: records the connection count of a single process (the
    /// embedded backend counts its own sockets).
    pub fn observe_count(&mut self, count: u64) -> Option<CapTransition> {
        self.state.observe_count(count)
    }

    /// X4: an admin re-enables the broadcast; refused while the last
    /// observed count is not below the cap.
    pub fn enable(&mut self) -> Result<Option<CapTransition>, PresenceError> {
        self.state.request_enable()
    }

    /// X1: the admin changed the cap in the workspace settings.
    pub fn set_cap(&mut self, cap: u64) -> Option<CapTransition> {
        self.state.set_cap(cap)
    }

    /// Count, cap, peak and enabled state (X5).
    pub fn state(&self) -> CapState {
        self.state
    }

    /// The state to store in `presence:cap`, if it differs from what was
    /// last returned here (or loaded). Call after the previous one was
    /// committed; on a failed commit the owner is discarded with the shard.
    pub fn take_persist(&mut self) -> Option<CapState> {
        if self.persisted == Some(self.state) {
            return None;
        }
        self.persisted = Some(self.state);
        Some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| (*n).to_owned()).collect()
    }

    fn counts(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    }

    #[test]
    fn x1_counts_only_live_nodes() {
        let mut owner = CapOwner::new(10);
        let all = counts(&[("a", 4), ("b", 5), ("dead", 100)]);
        assert_eq!(owner.observe(&all, &live(&["a", "b"])), None);
        assert_eq!(owner.state().count, 9);
        assert!(owner.state().enabled);
    }

    #[test]
    fn x2_x4_disables_above_the_cap_and_enables_only_below_it() {
        let mut owner = CapOwner::new(10);
        let nodes = live(&["a", "b"]);
        assert_eq!(
            owner.observe(&counts(&[("a", 6), ("b", 5)]), &nodes),
            Some(CapTransition::Disabled)
        );
        assert_eq!(owner.state().peak, 11);
        // X4: never re-enables by itself.
        assert_eq!(owner.observe(&counts(&[("a", 1)]), &nodes), None);
        assert!(!owner.state().enabled);
        owner.observe(&counts(&[("a", 10)]), &nodes);
        assert_eq!(
            owner.enable(),
            Err(PresenceError::BroadcastEnableRefused { count: 10, cap: 10 })
        );
        owner.observe(&counts(&[("a", 9)]), &nodes);
        assert_eq!(owner.enable(), Ok(Some(CapTransition::Enabled)));
        assert_eq!(owner.enable(), Ok(None));
    }

    #[test]
    fn x4_restore_keeps_the_disabled_flag_and_peak() {
        let mut before = CapOwner::new(10);
        before.observe(&counts(&[("a", 20)]), &live(&["a"]));
        let stored = before.take_persist();
        let after = CapOwner::restore(stored, 10);
        assert!(!after.state().enabled);
        assert_eq!(after.state().peak, 20);
        // The settings are the authority for the cap.
        let raised = CapOwner::restore(stored, 50);
        assert_eq!(raised.state().cap, 50);
        assert!(!raised.state().enabled, "raising the cap never re-enables");
        assert_eq!(CapOwner::restore(None, 7).state(), CapState::new(7));
    }

    #[test]
    fn x5_take_persist_reports_each_change_once() {
        let mut owner = CapOwner::new(10);
        assert_eq!(owner.take_persist(), Some(CapState::new(10)));
        assert_eq!(owner.take_persist(), None);
        owner.observe(&counts(&[("a", 3)]), &live(&["a"]));
        assert_eq!(owner.take_persist().map(|s| s.count), Some(3));
        owner.observe(&counts(&[("a", 3)]), &live(&["a"]));
        assert_eq!(owner.take_persist(), None);
        assert_eq!(owner.set_cap(2), Some(CapTransition::Disabled));
        assert_eq!(owner.take_persist().map(|s| s.enabled), Some(false));
    }
}

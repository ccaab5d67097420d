//! Who holds each device's socket: per user a small list of
//! `(device, owner)` pairs, and per gateway node the devices it holds
//! ([`NodeIndex`]), so a node that died or restarted loses all of its
//! devices at once (H2) without a scan of every user.
//!
//! **Architecture Invariant:** every device in a user's `DeviceMap` has
//! exactly one owner, and the node index holds exactly the owned devices.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use presence_core::{DeviceId, DeviceMap};

use crate::Owner;

/// A user's device owners; a user has few devices, so a vector.
pub(crate) type Owners = Vec<(DeviceId, Owner)>;

/// Node → the `(user, device)` pairs whose socket it holds.
#[derive(Debug, Default)]
pub(crate) struct NodeIndex {
    nodes: HashMap<Arc<str>, BTreeSet<(Arc<str>, DeviceId)>>,
}

impl NodeIndex {
    /// The shared name of `node` (one allocation per node, not per device).
    pub(crate) fn intern(&self, node: &str) -> Arc<str> {
        match self.nodes.get_key_value(node) {
            Some((n, _)) => n.clone(),
            None => Arc::from(node),
        }
    }

    /// Records that `owner` holds `device` of `user`, replacing the
    /// device's previous owner.
    pub(crate) fn set(
        &mut self,
        user: &Arc<str>,
        owners: &mut Owners,
        device: DeviceId,
        owner: Owner,
    ) {
        let node = owner.node.clone();
        match owners.iter_mut().find(|(d, _)| *d == device) {
            Some((_, held)) => {
                if held.node != node {
                    self.unindex(&held.node.clone(), user, &device);
                }
                *held = owner;
            }
            None => owners.push((device.clone(), owner)),
        }
        self.nodes
            .entry(node)
            .or_default()
            .insert((user.clone(), device));
    }

    /// Drops the owners of devices the user no longer has.
    pub(crate) fn prune(&mut self, user: &Arc<str>, owners: &mut Owners, devices: &DeviceMap) {
        owners.retain(|(device, owner)| {
            let keep = devices.contains_key(device);
            if !keep {
                self.unindex(&owner.node, user, device);
            }
            keep
        });
    }

    /// The devices `node` holds.
    pub(crate) fn devices_of(&self, node: &str) -> Vec<(Arc<str>, DeviceId)> {
        self.nodes
            .get(node)
            .map(|devices| devices.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The nodes holding at least one device.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Arc<str>> {
        self.nodes.keys()
    }

    fn unindex(&mut self, node: &Arc<str>, user: &Arc<str>, device: &DeviceId) {
        if let Some(devices) = self.nodes.get_mut(node) {
            devices.remove(&(user.clone(), device.clone()));
            if devices.is_empty() {
                self.nodes.remove(node);
            }
        }
    }
}

/// The owner of `device` among `owners`.
pub(crate) fn owner_of<'a>(owners: &'a Owners, device: &DeviceId) -> Option<&'a Owner> {
    owners.iter().find(|(d, _)| d == device).map(|(_, o)| o)
}

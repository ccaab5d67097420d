//! Who holds each device's socket: per user a small list of
//! `(device, owner)` pairs, and per gateway node the devices it holds
//! ([`NodeIndex`]), so a node that died or restarted loses all of its
//! devices at once (H2) without a scan of every user.
//!
//! The per-node index costs an entry per device. An engine whose sockets
//! all live on one node that never dies (the embedded backend) goes
//! without it ([`crate::EngineConfig::index_devices_by_node`]); a node's
//! devices are then found by a scan of every user, which gives the same
//! answers.
//!
//! **Architecture Invariant:** every device in a user's `DeviceMap` has
//! exactly one owner, and the node index, when kept, holds exactly the
//! owned devices.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use presence_core::{DeviceId, DeviceMap};

use crate::Owner;

/// A user's device owners; a user has few devices, so a vector that grows
/// one at a time (most users have one or two).
pub(crate) type Owners = Vec<(DeviceId, Owner)>;

/// The `(user, device)` pairs whose socket one node holds.
type NodeDevices = BTreeSet<(Arc<str>, DeviceId)>;

/// Node → the `(user, device)` pairs whose socket it holds.
#[derive(Debug)]
pub(crate) struct NodeIndex {
    /// `None` when the engine keeps no index.
    nodes: Option<HashMap<Arc<str>, NodeDevices>>,
    /// The node names handed out without an index (one allocation per
    /// node, not per device).
    names: HashSet<Arc<str>>,
}

impl NodeIndex {
    /// An index, or with `indexed == false` only the interning of names.
    pub(crate) fn new(indexed: bool) -> Self {
        Self {
            nodes: indexed.then(HashMap::new),
            names: HashSet::new(),
        }
    }

    /// Whether the devices of each node are indexed.
    pub(crate) fn is_indexed(&self) -> bool {
        self.nodes.is_some()
    }

    /// The shared name of `node` (one allocation per node, not per device).
    pub(crate) fn intern(&mut self, node: &str) -> Arc<str> {
        match &self.nodes {
            Some(nodes) => match nodes.get_key_value(node) {
                Some((n, _)) => n.clone(),
                None => Arc::from(node),
            },
            None => match self.names.get(node) {
                Some(n) => n.clone(),
                None => {
                    let name: Arc<str> = Arc::from(node);
                    self.names.insert(name.clone());
                    name
                }
            },
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
            None => {
                owners.reserve_exact(1);
                owners.push((device.clone(), owner));
            }
        }
        if let Some(nodes) = &mut self.nodes {
            nodes
                .entry(node)
                .or_default()
                .insert((user.clone(), device));
        }
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
        if owners.is_empty() {
            *owners = Vec::new(); // Give the allocation back.
        }
    }

    /// The devices `node` holds, from the index (empty without one).
    pub(crate) fn indexed_devices_of(&self, node: &str) -> Vec<(Arc<str>, DeviceId)> {
        self.nodes
            .as_ref()
            .and_then(|nodes| nodes.get(node))
            .map(|devices| devices.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The nodes holding at least one device, from the index (none
    /// without one).
    pub(crate) fn indexed_nodes(&self) -> impl Iterator<Item = &Arc<str>> {
        self.nodes.iter().flat_map(HashMap::keys)
    }

    fn unindex(&mut self, node: &Arc<str>, user: &Arc<str>, device: &DeviceId) {
        let Some(nodes) = &mut self.nodes else {
            return;
        };
        if let Some(devices) = nodes.get_mut(node) {
            devices.remove(&(user.clone(), device.clone()));
            if devices.is_empty() {
                nodes.remove(node);
            }
        }
    }
}

/// The owner of `device` among `owners`.
pub(crate) fn owner_of<'a>(owners: &'a Owners, device: &DeviceId) -> Option<&'a Owner> {
    owners.iter().find(|(d, _)| d == device).map(|(_, o)| o)
}

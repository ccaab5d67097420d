//! The devices of one user, in a small sorted vector.
//!
//! Users have one to a handful of devices, and a node holds one entry per
//! connected user, so this map matters for memory per connection: a
//! `BTreeMap` allocates a node for 11 entries (about 1 KiB) even for one
//! device, a vector allocates exactly what it holds.

use std::ops::Index;

use serde::{Deserialize, Serialize};

use crate::{Device, DeviceId};

/// Devices by id, iterated in id order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceMap {
    entries: Vec<(DeviceId, Device)>,
}

impl DeviceMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains_key(&self, id: &DeviceId) -> bool {
        self.find(id).is_ok()
    }

    pub fn get(&self, id: &DeviceId) -> Option<&Device> {
        self.find(id).ok().map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, id: &DeviceId) -> Option<&mut Device> {
        self.find(id).ok().map(|i| &mut self.entries[i].1)
    }

    /// Inserts or replaces; returns the replaced device.
    pub fn insert(&mut self, id: DeviceId, device: Device) -> Option<Device> {
        match self.find(&id) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, device)),
            Err(i) => {
                // Grow one at a time: most users have one or two devices.
                self.entries.reserve_exact(1);
                self.entries.insert(i, (id, device));
                None
            }
        }
    }

    pub fn remove(&mut self, id: &DeviceId) -> Option<Device> {
        let i = self.find(id).ok()?;
        let removed = self.entries.remove(i).1;
        if self.entries.is_empty() {
            self.entries = Vec::new(); // Give the allocation back.
        }
        Some(removed)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&DeviceId, &Device) -> bool) {
        self.entries.retain(|(id, d)| keep(id, d));
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &Device)> {
        self.entries.iter().map(|(id, d)| (id, d))
    }

    pub fn keys(&self) -> impl Iterator<Item = &DeviceId> {
        self.entries.iter().map(|(id, _)| id)
    }

    pub fn values(&self) -> impl Iterator<Item = &Device> {
        self.entries.iter().map(|(_, d)| d)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Device> {
        self.entries.iter_mut().map(|(_, d)| d)
    }

    fn find(&self, id: &DeviceId) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(id))
    }
}

impl Index<&DeviceId> for DeviceMap {
    type Output = Device;

    fn index(&self, id: &DeviceId) -> &Device {
        self.get(id).expect("no device with this id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Platform, Timestamp};

    fn dev(id: &str) -> DeviceId {
        DeviceId::try_from(id).unwrap()
    }

    #[test]
    fn keeps_ids_sorted_and_unique() {
        let mut map = DeviceMap::new();
        let now = Timestamp::from_millis(0);
        for id in ["b", "a", "c", "a"] {
            map.insert(dev(id), Device::connect(Platform::Web, now));
        }
        let ids: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(map.remove(&dev("b")).is_some());
        assert!(map.remove(&dev("b")).is_none());
        assert_eq!(map.len(), 2);
        map.retain(|_, _| false);
        assert!(map.is_empty());
    }
}

//! Batch diffing: what the engine remembers about a user the first time a
//! batch touches them ([`Before`]), and how [`Engine::finish`] turns the
//! difference into [`Changes`].
//!
//! **Architecture Invariant:** a changed public or own view always gets a
//! version strictly greater than every version handed out for that user
//! before (W3), also when a rule did not notice the change itself
//! (settings moved under it, or a restored view was stale).

use std::collections::BTreeMap;
use std::sync::Arc;

use presence_core::{
    DeviceId, DeviceMap, Link, PublicView, SelfStatus, SelfView, Timestamp, next_version,
};

use crate::engine::{Engine, UserEntry};
use crate::owners::{Owners, owner_of};
use crate::{Announcement, Changes, OwnedDevice, Replaced, UserChange, UserRecord};

/// What was handed out for a user before the batch touched them.
#[derive(Debug)]
pub(crate) struct Before {
    /// `None`: unknown, so whatever the view is now is a change.
    pub(crate) public: Option<PublicView>,
    pub(crate) self_view: Option<SelfView>,
    pub(crate) version: u64,
    pub(crate) public_version: u64,
    pub(crate) devices: DeviceMap,
    pub(crate) owners: Owners,
    /// The durable state changed (not only the profile).
    pub(crate) durable_changed: bool,
    /// The profile changed.
    pub(crate) profile_changed: bool,
    /// Devices (re)connected in this batch: their heartbeat deadline is set
    /// again even if one existed (the old socket's may be about to lapse).
    pub(crate) reconnected: Vec<DeviceId>,
}

/// The open batch: everything since the last [`Engine::finish`].
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) touched: BTreeMap<Arc<str>, Before>,
    pub(crate) replaced: Vec<Replaced>,
    pub(crate) announcements: Vec<Announcement>,
    /// Lapsed heartbeat deadlines to delete whatever the engine knows of
    /// their devices.
    pub(crate) stray_heartbeats: Vec<(Arc<str>, DeviceId)>,
}

impl Engine {
    /// Opens `user` in the current batch (creating an empty entry for a
    /// user the engine has never seen) and returns the shared id.
    pub(crate) fn touch(&mut self, user: &str) -> Arc<str> {
        let id = match self.users.get_key_value(user) {
            Some((id, _)) => id.clone(),
            None => {
                let id: Arc<str> = Arc::from(user);
                self.users.insert(id.clone(), UserEntry::new());
                id
            }
        };
        if !self.batch.touched.contains_key(&id) {
            let entry = &self.users[&id];
            let before = Before {
                public: Some(entry.presence.public_view(&self.settings)),
                self_view: Some(entry.presence.self_view(&self.settings)),
                version: entry.presence.durable.version,
                public_version: entry.presence.durable.public_version,
                devices: entry.presence.devices.clone(),
                owners: entry.owners.clone(),
                durable_changed: false,
                profile_changed: false,
                reconnected: Vec::new(),
            };
            self.batch.touched.insert(id.clone(), before);
        }
        id
    }

    /// Closes the open batch: compares every touched user with what was
    /// handed out before, bumps versions where views changed without one,
    /// reschedules timers, moves the counts, and returns what changed.
    pub fn finish(&mut self, now: Timestamp) -> Changes {
        let batch = std::mem::take(&mut self.batch);
        let mut changes = Changes {
            replaced: batch.replaced,
            announcements: batch.announcements,
            ..Changes::default()
        };
        for (user, device) in batch.stray_heartbeats {
            changes
                .users
                .entry(user)
                .or_default()
                .heartbeats
                .insert(device, None);
        }
        let hb_deadline = self.config.device_timeout.map(|t| now + t);
        for (id, before) in batch.touched {
            let Some(entry) = self.users.get_mut(&id) else {
                continue;
            };
            let (change, status) = diff_user(&id, entry, before, &self.settings, now, hb_deadline);
            if change.public.is_some() {
                entry.changed_at = now;
            }
            self.timers.reschedule(&id, entry, &self.settings);
            if status != entry.counted {
                self.counts.remove(entry.counted);
                self.counts.add(status);
                entry.counted = status;
                self.counts_dirty = true;
            }
            let stray = changes.users.remove(&id).unwrap_or_default();
            let mut change = merge_strays(stray, change);
            if change.is_empty() {
                if !entry.known {
                    // Never handed out and nothing to hand out: forget them.
                    self.timers.cancel(&id, entry);
                    self.users.remove(&id);
                }
                continue;
            }
            if !entry.known && change.has_state() {
                change.new_user = true;
                entry.known = true;
            }
            changes.users.insert(id, change);
        }
        if let Some(cap) = &mut self.cap {
            changes.cap = cap.take_persist();
        }
        if std::mem::take(&mut self.counts_dirty) {
            changes.counts = Some(self.counts);
        }
        changes
    }
}

/// Compares a user's state with what was handed out before the batch;
/// returns the change and the status the user is counted under now.
fn diff_user(
    id: &Arc<str>,
    entry: &mut UserEntry,
    before: Before,
    settings: &presence_core::WorkspaceSettings,
    now: Timestamp,
    hb_deadline: Option<Timestamp>,
) -> (UserChange, SelfStatus) {
    let public = entry.presence.public_view(settings);
    let self_view = entry.presence.self_view(settings);
    let public_changed = before.public.as_ref() != Some(&public);
    let self_changed = before.self_view.as_ref() != Some(&self_view);
    let durable = &mut entry.presence.durable;
    // W3: a view that changed without a rule noticing still gets a newer
    // version than the one handed out.
    if (public_changed || self_changed) && durable.version <= before.version {
        durable.version = next_version(before.version, now);
    }
    if public_changed && durable.public_version <= before.public_version {
        durable.public_version = next_version(before.public_version, now);
    }
    let status = self_view.status;

    let mut change = UserChange {
        version: durable.version,
        public_version: durable.public_version,
        durable_changed: before.durable_changed,
        ..UserChange::default()
    };
    let connected = |devices: &DeviceMap, device: &DeviceId| {
        devices
            .get(device)
            .is_some_and(|d| d.link == Link::Connected)
    };
    for (device_id, device) in entry.presence.devices.iter() {
        let Some(owner) = owner_of(&entry.owners, device_id) else {
            tracing::error!(user = %id, device = %device_id, "a device without an owner");
            continue;
        };
        if before.devices.get(device_id) != Some(device)
            || owner_of(&before.owners, device_id) != Some(owner)
        {
            change.devices.insert(
                device_id.clone(),
                Some(OwnedDevice {
                    device: device.clone(),
                    owner: owner.clone(),
                }),
            );
        }
        if let Some(deadline) = hb_deadline
            && device.link == Link::Connected
            && (!connected(&before.devices, device_id) || before.reconnected.contains(device_id))
        {
            change.heartbeats.insert(device_id.clone(), Some(deadline));
        }
    }
    for device_id in before.devices.keys() {
        if !entry.presence.devices.contains_key(device_id) {
            change.devices.insert(device_id.clone(), None);
        }
        if hb_deadline.is_some()
            && connected(&before.devices, device_id)
            && !connected(&entry.presence.devices, device_id)
        {
            change.heartbeats.insert(device_id.clone(), None);
        }
    }
    if before.durable_changed || before.profile_changed {
        change.record = Some(UserRecord {
            state: entry.presence.durable.clone(),
            profile: entry.profile.clone(),
            updated_at: now,
        });
    }
    if public_changed {
        change.public = Some(public);
    }
    if self_changed {
        change.self_view = Some(self_view);
    }
    (change, status)
}

/// Lapsed deadlines first, then what the batch decided (later wins).
fn merge_strays(mut stray: UserChange, change: UserChange) -> UserChange {
    stray.heartbeats.extend(change.heartbeats);
    UserChange {
        heartbeats: stray.heartbeats,
        ..change
    }
}

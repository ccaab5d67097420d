//! [`Engine`]: the state of one shard of users, and every way it changes.
//!
//! The rules are `presence-core`'s; the engine does the bookkeeping around
//! them that both modes need: who holds each device's socket and which
//! devices each gateway node holds (H2), when each user's next timer fires
//! (D2, D7, T6), the users per status (A3), the presence cap (X1–X4), the
//! custom statuses and their fan-out to users (C1–C3), the re-evaluation of
//! every user when the settings move (S1, I2, K1, T5), and versions (W3).
//!
//! Calls change the state inside an open *batch*; [`Engine::finish`] closes
//! it and returns the [`Changes`]. A driver calls `finish` after every
//! request (the embedded backend) or after a batch of stream entries (a
//! cluster shard leader). Time is always a parameter: the engine reads no
//! clock, does no I/O and spawns nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use presence_core::{
    CapState, CapTransition, Command, Context, CustomStatus, CustomStatusId, CustomStatusName,
    CustomStatusRegistry, Device, DeviceId, Disconnect, DisplayedStatus, DurableState, Link,
    Outcome, Platform, PresenceError, Profile, PublicView, SelfStatus, SelfView, SettingsPatch,
    SocketEnd, StatusCounts, Timestamp, UserPresence, WorkspaceSettings,
};

use crate::batch::{Batch, Before};
use crate::owners::{NodeIndex, Owners, owner_of};
use crate::timers::Timers;
use crate::{Announcement, CapOwner, Owner, Replaced};

/// How an engine measures time-driven device changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// D7: how long a device whose socket dropped shows `away`.
    pub disconnect_grace: Duration,
    /// H1: the heartbeat deadline given to a device that (re)connects, in
    /// [`crate::UserChange::heartbeats`]. `None` when sockets live in the
    /// same process and need no heartbeats (the embedded backend).
    pub device_timeout: Option<Duration>,
    /// H2: keep an index of the devices of each gateway node, so a node
    /// that died loses them all at once without a scan of every user. It
    /// costs an entry per device; an engine whose sockets all live on one
    /// node that never dies (the embedded backend) goes without, and finds
    /// a node's devices by a scan instead (same answers).
    pub index_devices_by_node: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            disconnect_grace: Duration::from_secs(30),
            device_timeout: None,
            index_devices_by_node: true,
        }
    }
}

/// A user as a driver restores them from storage ([`Engine::restore`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoredUser {
    pub durable: DurableState,
    pub profile: Profile,
    /// The user's devices with the socket holding each.
    pub devices: Vec<(DeviceId, Device, Owner)>,
    /// What was handed out for the user before; `None` when that is what
    /// the restored state shows now (nothing is stale).
    pub committed: Option<Committed>,
    /// When the public view last changed.
    pub changed_at: Timestamp,
}

/// What was handed out for a restored user: the views (`None` if never
/// stored) and the largest version issued.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub public: Option<PublicView>,
    pub self_view: Option<SelfView>,
    pub version: u64,
}

/// One user as the engine holds them, for reads.
#[derive(Clone, Copy, Debug)]
pub struct EngineUser<'a> {
    pub id: &'a Arc<str>,
    pub presence: &'a UserPresence,
    pub profile: &'a Profile,
    /// When the public view last changed.
    pub changed_at: Timestamp,
}

/// The in-memory state of one shard of users (every user, in the
/// embedded backend).
#[derive(Debug)]
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) settings: WorkspaceSettings,
    custom: CustomStatusRegistry,
    /// The engine that owns the cap (the embedded one, or shard 0's).
    pub(crate) cap: Option<CapOwner>,
    pub(crate) users: HashMap<Arc<str>, UserEntry>,
    nodes: NodeIndex,
    pub(crate) timers: Timers,
    pub(crate) batch: Batch,
    pub(crate) counts: StatusCounts,
    pub(crate) counts_dirty: bool,
}

#[derive(Debug)]
pub(crate) struct UserEntry {
    pub(crate) presence: UserPresence,
    pub(crate) profile: Profile,
    pub(crate) owners: Owners,
    /// The deadline this user is queued at in `timers`.
    pub(crate) scheduled: Option<Timestamp>,
    /// Whether anything was ever handed out for the user.
    pub(crate) known: bool,
    /// The status the user is counted under in `counts`.
    pub(crate) counted: SelfStatus,
    /// When the public view last changed.
    pub(crate) changed_at: Timestamp,
}

impl UserEntry {
    pub(crate) fn new() -> Self {
        Self {
            presence: UserPresence::default(),
            profile: Profile::default(),
            owners: Vec::new(),
            scheduled: None,
            known: false,
            counted: SelfStatus::Offline,
            changed_at: Timestamp::default(),
        }
    }
}

impl Engine {
    /// An engine with no users yet. `cap` is `Some` for the engine that
    /// owns the presence cap.
    pub fn new(
        config: EngineConfig,
        settings: WorkspaceSettings,
        custom_statuses: Vec<CustomStatus>,
        cap: Option<CapOwner>,
    ) -> Self {
        let nodes = NodeIndex::new(config.index_devices_by_node);
        Self {
            config,
            settings,
            custom: CustomStatusRegistry::from_statuses(custom_statuses),
            cap,
            users: HashMap::new(),
            nodes,
            timers: Timers::default(),
            batch: Batch::default(),
            counts: StatusCounts::default(),
            // The first batch reports the counts, even of an empty engine.
            counts_dirty: true,
        }
    }

    /// Adds a user read back from storage to the open batch. Their views
    /// are compared with `committed` when the batch finishes, so a stale
    /// stored view is handed out again with a newer version (W3). Call
    /// [`advance_everyone`](Self::advance_everyone) after the last one to
    /// apply the time that passed while nobody ran the rules.
    pub fn restore(&mut self, user: &str, restored: RestoredUser) {
        let id: Arc<str> = Arc::from(user);
        let mut entry = UserEntry {
            presence: UserPresence::from_durable(restored.durable),
            profile: restored.profile,
            known: true,
            changed_at: restored.changed_at,
            ..UserEntry::new()
        };
        for (device, state, owner) in restored.devices {
            entry.presence.devices.insert(device.clone(), state);
            let owner = Owner {
                node: self.nodes.intern(&owner.node),
                conn: owner.conn,
            };
            self.nodes.set(&id, &mut entry.owners, device, owner);
        }
        let durable = &entry.presence.durable;
        let committed = restored.committed.unwrap_or_else(|| Committed {
            public: Some(entry.presence.public_view(&self.settings)),
            self_view: Some(entry.presence.self_view(&self.settings)),
            version: durable.version,
        });
        let before = Before {
            public: committed.public,
            self_view: committed.self_view,
            version: committed.version,
            public_version: durable.public_version,
            devices: entry.presence.devices.clone(),
            owners: entry.owners.clone(),
            durable_changed: false,
            profile_changed: false,
            reconnected: Vec::new(),
        };
        self.users.insert(id.clone(), entry);
        self.batch.touched.insert(id, before);
    }

    /// Applies the passage of time up to `now` to every user, due or not
    /// (after [`restore`](Self::restore)).
    pub fn advance_everyone(&mut self, now: Timestamp) {
        let ids: Vec<Arc<str>> = self.users.keys().cloned().collect();
        for id in ids {
            self.advance_user(&id, now);
        }
    }

    /// Applies the passage of time up to `now` to every user whose timer
    /// is due: idle timers (D2), grace periods (D7) and expiries (T6).
    pub fn advance(&mut self, now: Timestamp) {
        while let Some(id) = self.timers.pop_due(now) {
            if let Some(entry) = self.users.get_mut(&id) {
                entry.scheduled = None;
            }
            self.advance_user(&id, now);
        }
    }

    // ---- A user's commands ----

    /// D1: socket `owner` of `user` connects `device`. A socket of the same
    /// device on another node is reported in [`crate::Changes::replaced`]
    /// (a node closes its own replaced sockets by itself). A non-empty
    /// `profile` replaces the stored one.
    pub fn connect(
        &mut self,
        user: &str,
        device: DeviceId,
        platform: Platform,
        owner: (&str, u64),
        profile: &Profile,
        now: Timestamp,
    ) -> Result<(), PresenceError> {
        let id = self.touch(user);
        self.update_profile(&id, profile);
        let node = self.nodes.intern(owner.0);
        let entry = self.users.get_mut(&id).expect("touched above");
        if let Some(held) = owner_of(&entry.owners, &device)
            && held.node != node
        {
            self.batch.replaced.push(Replaced {
                node: held.node.clone(),
                user: id.clone(),
                conn: held.conn,
            });
        }
        let ctx = Context {
            now,
            settings: &self.settings,
        };
        let command = Command::Connect {
            device: device.clone(),
            platform,
        };
        let outcome = entry.presence.apply(command, ctx)?;
        let owner = Owner {
            node,
            conn: owner.1,
        };
        self.nodes
            .set(&id, &mut entry.owners, device.clone(), owner);
        let before = self.batch.touched.get_mut(&id).expect("touched above");
        before.durable_changed |= outcome.durable_changed;
        before.reconnected.push(device);
        Ok(())
    }

    /// D7: socket `owner` of `user`'s `device` ended. Ignored (`Ok`) unless
    /// `owner` still holds the device and it is connected: a replaced
    /// socket, or one whose device already left.
    pub fn disconnect(
        &mut self,
        user: &str,
        device: DeviceId,
        owner: (&str, u64),
        end: SocketEnd,
        now: Timestamp,
    ) -> Result<(), PresenceError> {
        let live = self.users.get(user).is_some_and(|entry| {
            let holds = owner_of(&entry.owners, &device)
                .is_some_and(|o| o.conn == owner.1 && &*o.node == owner.0);
            let connected = entry
                .presence
                .devices
                .get(&device)
                .is_some_and(|d| d.link == Link::Connected);
            holds && connected
        });
        if !live {
            return Ok(());
        }
        let how = match end {
            SocketEnd::Clean => Disconnect::Clean,
            SocketEnd::Lost => Disconnect::Lost {
                grace_until: now + self.config.disconnect_grace,
            },
        };
        self.apply(user, Command::Disconnect { device, how }, now)
    }

    /// Applies a command of `presence-core` to `user` (device events,
    /// status requests, calendar events, preferences, a custom status by
    /// value). On error nothing changes.
    pub fn apply(
        &mut self,
        user: &str,
        command: Command,
        now: Timestamp,
    ) -> Result<(), PresenceError> {
        let id = self.touch(user);
        let outcome = self.apply_to(&id, command, now)?;
        let before = self.batch.touched.get_mut(&id).expect("touched above");
        before.durable_changed |= outcome.durable_changed;
        Ok(())
    }

    /// C2: `user` selects custom status `id`.
    pub fn use_custom_status(
        &mut self,
        user: &str,
        id: &CustomStatusId,
        now: Timestamp,
    ) -> Result<(), PresenceError> {
        let status = self.custom.get(id)?.clone();
        self.apply(user, Command::UseCustomStatus(status), now)
    }

    /// Records the profile a token or client carried: each field it says
    /// something about replaces the stored one ([`Profile::merge`]); an
    /// empty one changes nothing.
    pub fn touch_profile(&mut self, user: &str, profile: &Profile) {
        let id = self.touch(user);
        self.update_profile(&id, profile);
    }

    /// R3: an admin's (or a directory sync's) profile of `user`, replacing
    /// the stored one whole; an empty one forgets it.
    pub fn put_profile(&mut self, user: &str, profile: &Profile) {
        let id = self.touch(user);
        let entry = self.users.get_mut(&id).expect("touched above");
        if entry.profile == *profile {
            return;
        }
        entry.profile = profile.clone();
        let before = self.batch.touched.get_mut(&id).expect("touched above");
        before.profile_changed = true;
    }

    // ---- Liveness (A5, H2) ----

    /// A5: removes at once each `(user, device)` whose heartbeat lapsed,
    /// and hands out the deletion of its deadline (also for devices the
    /// engine does not hold, so stale deadlines do not linger).
    pub fn expire_heartbeats<U: AsRef<str>, D: AsRef<str>>(
        &mut self,
        lapsed: &[(U, D)],
        now: Timestamp,
    ) {
        for (user, device) in lapsed {
            // A member that is no valid device id names no device.
            let Ok(device) = DeviceId::try_from(device.as_ref()) else {
                continue;
            };
            let user = user.as_ref();
            self.batch
                .stray_heartbeats
                .push((Arc::from(user), device.clone()));
            let holds = self
                .users
                .get(user)
                .is_some_and(|e| e.presence.devices.contains_key(&device));
            if holds {
                tracing::debug!(user, device = %device, "heartbeat lapsed; removing the device");
                self.remove_device(user, device, now);
            }
        }
    }

    /// H2: removes every device whose socket one of `dead_nodes` held;
    /// devices of other nodes stay.
    pub fn expire_nodes<N: AsRef<str>>(&mut self, dead_nodes: &[N], now: Timestamp) {
        for node in dead_nodes {
            let devices = self.devices_of(node.as_ref());
            if devices.is_empty() {
                continue;
            }
            tracing::info!(
                node = node.as_ref(),
                devices = devices.len(),
                "gateway node gone; removing its devices"
            );
            for (user, device) in devices {
                self.remove_device(&user, device, now);
            }
        }
    }

    /// H2, for a driver that knows the live nodes rather than the dead
    /// ones: expires every node holding devices here that is not in
    /// `live_nodes`.
    pub fn expire_nodes_not_in(&mut self, live_nodes: &BTreeSet<String>, now: Timestamp) {
        let dead: Vec<Arc<str>> = self
            .nodes()
            .filter(|n| !live_nodes.contains(*n))
            .map(Arc::from)
            .collect();
        self.expire_nodes(&dead, now);
    }

    // ---- Workspace state (S*, C*, X*) ----

    /// An admin changes the workspace settings: every user is re-evaluated
    /// (S1, I2, K1, T5) and the cap moves (X1). Announced when they
    /// differ. Returns the new settings.
    pub fn update_settings(&mut self, patch: &SettingsPatch, now: Timestamp) -> WorkspaceSettings {
        let new = patch.apply_to(&self.settings);
        if new != self.settings {
            self.reevaluate(new.clone(), now);
            self.batch
                .announcements
                .push(Announcement::Settings(new.clone()));
        }
        new
    }

    /// The workspace settings became `new` (an admin's change on another
    /// engine, or read again): every user is re-evaluated against them —
    /// changed defaults move idle devices (S1) — and views that changed
    /// get a new version. Nothing is announced.
    pub fn reevaluate(&mut self, new: WorkspaceSettings, now: Timestamp) {
        if new == self.settings {
            return;
        }
        // Remember every user's views under the old settings first.
        let ids: Vec<Arc<str>> = self.users.keys().cloned().collect();
        for id in &ids {
            self.touch(id);
        }
        let cap = new.cap;
        self.settings = new;
        for id in &ids {
            self.advance_user(id, now);
        }
        if let Some(owner) = &mut self.cap {
            let transition = owner.set_cap(cap);
            self.announce_cap(transition);
        }
    }

    /// C1: an admin creates a custom status (the driver picks the id).
    pub fn create_custom_status(
        &mut self,
        id: CustomStatusId,
        name: CustomStatusName,
        status_type: DisplayedStatus,
        now: Timestamp,
    ) -> Result<CustomStatus, PresenceError> {
        let status = self.custom.create(id, name, status_type, now)?;
        self.batch
            .announcements
            .push(Announcement::CustomStatus(status.clone()));
        Ok(status)
    }

    /// C1, C3: an admin renames or remaps a custom status; its users
    /// follow.
    pub fn update_custom_status(
        &mut self,
        id: &CustomStatusId,
        name: Option<CustomStatusName>,
        status_type: Option<DisplayedStatus>,
        now: Timestamp,
    ) -> Result<CustomStatus, PresenceError> {
        let status = self.custom.update(id, name, status_type, now)?;
        self.apply_to_users_of(id, || Command::CustomStatusChanged(status.clone()), now);
        self.batch
            .announcements
            .push(Announcement::CustomStatus(status.clone()));
        Ok(status)
    }

    /// C1, C3: an admin deletes a custom status; its users keep their
    /// presence and the name as plain text. Returns the deleted status.
    pub fn delete_custom_status(
        &mut self,
        id: &CustomStatusId,
        now: Timestamp,
    ) -> Result<CustomStatus, PresenceError> {
        let status = self.custom.delete(id)?;
        self.apply_to_users_of(id, || Command::CustomStatusDeleted(id.clone()), now);
        self.batch
            .announcements
            .push(Announcement::CustomStatusDeleted(id.clone()));
        Ok(status)
    }

    /// C3: another engine's admin created, renamed or remapped `status`;
    /// every user here using it (also in a state an expiry will restore)
    /// follows. Nothing is announced.
    pub fn custom_status_changed(&mut self, status: CustomStatus, now: Timestamp) {
        let mut all: Vec<CustomStatus> = self
            .custom
            .list()
            .into_iter()
            .filter(|s| s.id != status.id)
            .cloned()
            .collect();
        all.push(status.clone());
        self.custom = CustomStatusRegistry::from_statuses(all);
        let id = status.id.clone();
        self.apply_to_users_of(&id, || Command::CustomStatusChanged(status.clone()), now);
    }

    /// C3: another engine's admin deleted custom status `id`.
    pub fn custom_status_deleted(&mut self, id: &CustomStatusId, now: Timestamp) {
        // Users may still hold a status this engine never heard of.
        let _ = self.custom.delete(id);
        self.apply_to_users_of(id, || Command::CustomStatusDeleted(id.clone()), now);
    }

    /// C3, for a driver that re-reads the custom statuses: applies every
    /// difference between the ones held here and `statuses`.
    pub fn sync_custom_statuses(&mut self, statuses: Vec<CustomStatus>, now: Timestamp) {
        let incoming: BTreeMap<CustomStatusId, CustomStatus> =
            statuses.into_iter().map(|s| (s.id.clone(), s)).collect();
        let deleted: Vec<CustomStatusId> = self
            .custom
            .list()
            .into_iter()
            .filter(|s| !incoming.contains_key(&s.id))
            .map(|s| s.id.clone())
            .collect();
        for id in &deleted {
            self.custom_status_deleted(id, now);
        }
        for status in incoming.into_values() {
            let same = self.custom.get(&status.id).is_ok_and(|held| {
                held.name == status.name && held.status_type == status.status_type
            });
            if !same {
                self.custom_status_changed(status, now);
            }
        }
    }

    /// X1, X2: the connection count of the one process that counts all
    /// sockets (the embedded backend). Without the cap, nothing happens.
    pub fn observe_connections(&mut self, count: u64) {
        if let Some(cap) = &mut self.cap {
            let transition = cap.observe_count(count);
            self.announce_cap(transition);
        }
    }

    /// X1, X2: the cluster-wide count, the sum of the live nodes' counts.
    /// Without the cap, nothing happens.
    pub fn observe_node_counts(
        &mut self,
        live_node_counts: &[(String, u64)],
        live_nodes: &BTreeSet<String>,
    ) {
        if let Some(cap) = &mut self.cap {
            let transition = cap.observe(live_node_counts, live_nodes);
            self.announce_cap(transition);
        }
    }

    /// X4: an admin re-enables the broadcast; refused while the count is
    /// not below the cap. `Ok(None)` if this engine does not own the cap.
    pub fn enable_broadcast(&mut self) -> Result<Option<CapState>, PresenceError> {
        let Some(cap) = &mut self.cap else {
            return Ok(None);
        };
        let transition = cap.enable()?;
        self.announce_cap(transition);
        Ok(self.cap())
    }

    // ---- Reads ----

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn settings(&self) -> &WorkspaceSettings {
        &self.settings
    }

    pub fn custom_statuses(&self) -> &CustomStatusRegistry {
        &self.custom
    }

    /// X5: count, cap, peak and enabled state, if this engine owns the cap.
    pub fn cap(&self) -> Option<CapState> {
        self.cap.as_ref().map(CapOwner::state)
    }

    /// The earliest moment [`advance`](Self::advance) has work to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.first()
    }

    /// One user, if the engine holds them.
    pub fn user(&self, user: &str) -> Option<EngineUser<'_>> {
        self.users
            .get_key_value(user)
            .map(|(id, entry)| engine_user(id, entry))
    }

    /// Every user the engine holds, in no particular order.
    pub fn each_user(&self) -> impl Iterator<Item = EngineUser<'_>> {
        self.users.iter().map(|(id, entry)| engine_user(id, entry))
    }

    /// The user's presence (durable state and devices), if held.
    pub fn presence(&self, user: &str) -> Option<&UserPresence> {
        self.users.get(user).map(|e| &e.presence)
    }

    /// What others see of `user`.
    pub fn public_view(&self, user: &str) -> Option<PublicView> {
        self.presence(user).map(|p| p.public_view(&self.settings))
    }

    /// What `user` sees of themselves.
    pub fn self_view(&self, user: &str) -> Option<SelfView> {
        self.presence(user).map(|p| p.self_view(&self.settings))
    }

    /// The user's version (W3).
    pub fn version(&self, user: &str) -> Option<u64> {
        self.presence(user).map(|p| p.durable.version)
    }

    /// The socket holding `device` of `user`.
    pub fn device_owner(&self, user: &str, device: &DeviceId) -> Option<&Owner> {
        owner_of(&self.users.get(user)?.owners, device)
    }

    /// The gateway nodes holding at least one device.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        // Without the index, a scan of every user.
        let scanned: BTreeSet<&str> = if self.nodes.is_indexed() {
            BTreeSet::new()
        } else {
            self.users
                .values()
                .flat_map(|e| e.owners.iter().map(|(_, o)| &*o.node))
                .collect()
        };
        self.nodes.indexed_nodes().map(|n| &**n).chain(scanned)
    }

    /// The user ids the engine holds.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(|u| &**u)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn device_count(&self) -> usize {
        self.users.values().map(|e| e.presence.devices.len()).sum()
    }

    /// Users per status (A3), as of the last [`finish`](Self::finish).
    pub fn counts(&self) -> StatusCounts {
        self.counts
    }

    // ---- Helpers that change state inside the open batch ----

    /// Applies `command` to a touched user and prunes the owners of
    /// devices that left.
    fn apply_to(
        &mut self,
        id: &Arc<str>,
        command: Command,
        now: Timestamp,
    ) -> Result<Outcome, PresenceError> {
        let entry = self.users.get_mut(id).expect("touched above");
        let ctx = Context {
            now,
            settings: &self.settings,
        };
        let outcome = entry.presence.apply(command, ctx)?;
        self.nodes
            .prune(id, &mut entry.owners, &entry.presence.devices);
        Ok(outcome)
    }

    /// Runs `presence-core`'s `advance` for one user.
    fn advance_user(&mut self, user: &str, now: Timestamp) {
        if !self.users.contains_key(user) {
            return;
        }
        let id = self.touch(user);
        let entry = self.users.get_mut(&id).expect("present above");
        let outcome = entry.presence.advance(Context {
            now,
            settings: &self.settings,
        });
        self.nodes
            .prune(&id, &mut entry.owners, &entry.presence.devices);
        let before = self.batch.touched.get_mut(&id).expect("touched above");
        before.durable_changed |= outcome.durable_changed;
    }

    /// The `(user, device)` pairs whose socket `node` holds: from the
    /// index, or without one by a scan of every user.
    fn devices_of(&self, node: &str) -> Vec<(Arc<str>, DeviceId)> {
        if self.nodes.is_indexed() {
            return self.nodes.indexed_devices_of(node);
        }
        self.users
            .iter()
            .flat_map(|(user, e)| {
                e.owners
                    .iter()
                    .filter(|(_, o)| &*o.node == node)
                    .map(|(device, _)| (user.clone(), device.clone()))
            })
            .collect()
    }

    /// Removes a device at once (A5, H2), whatever its socket.
    fn remove_device(&mut self, user: &str, device: DeviceId, now: Timestamp) {
        let command = Command::Disconnect {
            device,
            how: Disconnect::Clean,
        };
        // An unknown device is already gone.
        let _ = self.apply(user, command, now);
    }

    /// Applies `command()` to every user using custom status `id` (C3).
    fn apply_to_users_of(
        &mut self,
        id: &CustomStatusId,
        command: impl Fn() -> Command,
        now: Timestamp,
    ) {
        let using: Vec<Arc<str>> = self
            .users
            .iter()
            .filter(|(_, e)| e.presence.uses_custom_status(id))
            .map(|(u, _)| u.clone())
            .collect();
        for user in using {
            // A user the command does not apply to keeps their state.
            let _ = self.apply(&user, command(), now);
        }
    }

    /// Merges a token's or client's profile into the stored one.
    fn update_profile(&mut self, id: &Arc<str>, profile: &Profile) {
        let entry = self.users.get_mut(id).expect("touched above");
        if !entry.profile.merge(profile) {
            return;
        }
        let before = self.batch.touched.get_mut(id).expect("touched above");
        before.profile_changed = true;
    }

    /// X3: announces a broadcast transition.
    fn announce_cap(&mut self, transition: Option<CapTransition>) {
        let Some(transition) = transition else {
            return;
        };
        let active = transition == CapTransition::Enabled;
        if let Some(cap) = self.cap() {
            tracing::info!(
                active,
                count = cap.count,
                cap = cap.cap,
                "presence broadcast {}",
                if active { "enabled" } else { "disabled" }
            );
        }
        self.batch
            .announcements
            .push(Announcement::Broadcast { active });
    }
}

fn engine_user<'a>(id: &'a Arc<str>, entry: &'a UserEntry) -> EngineUser<'a> {
    EngineUser {
        id,
        presence: &entry.presence,
        profile: &entry.profile,
        changed_at: entry.changed_at,
    }
}

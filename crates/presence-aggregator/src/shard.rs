//! The state of one shard, as its leader holds it in memory.
//!
//! A leader loads its shard ([`ShardState::load`]), then feeds it what
//! happens: stream entries ([`ShardState::apply_batch`]), the passage of
//! time ([`ShardState::advance`]), lapsed heartbeats and dead gateways
//! ([`ShardState::expire_heartbeats`], [`ShardState::expire_nodes`]),
//! settings and custom status changes announced by shard 0
//! ([`ShardState::reevaluate`], [`ShardState::custom_status_changed`], …).
//! Each call returns the [`ShardChanges`] to commit. The rules themselves
//! are `presence-core`'s; this module only does the bookkeeping around
//! them, the same bookkeeping `presence_store::MemoryBackend` does in one
//! process: who holds each device's socket, which devices each gateway
//! node holds (H2), when each user's next timer fires, and what changed
//! since the last commit.
//!
//! Each call is one *batch*: the first time a user is touched the state
//! remembers what was last committed for them (views, devices); at the
//! end the current state is compared with it, so a user touched many
//! times in one batch yields one set of final values.
//!
//! **Architecture Invariant:** every device in a user's `DeviceMap` has
//! exactly one owner `(node, conn)`, and the node index holds exactly the
//! owned devices.
//!
//! **Architecture Invariant:** an entry whose reply id already has an
//! outcome (stored in Redis and handed in with
//! [`ShardState::remember_outcomes`], produced earlier in the same batch
//! for a retry ([`StreamEntry::retry`]), or of a retry this state applied)
//! is answered with that outcome and not applied: a request the gateway
//! appended twice is applied once, in whichever order the appends arrive.
//!
//! **Architecture Invariant:** a changed public or own view is always
//! committed with a version strictly greater than every version committed
//! for that user before (W3), including versions a previous leader
//! committed (they are loaded with the views).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use presence_core::{
    CapState, CapTransition, Command, Context, CustomStatus, CustomStatusId, CustomStatusRegistry,
    DeviceId, DeviceMap, Disconnect, DisplayedStatus, Link, PresenceError, PublicView, SelfView,
    Timestamp, UserPresence, WorkspaceSettings, next_version,
};
use presence_protocol::cluster::{
    self, ClusterCommand, CommandError, CommandOk, CommandResult, ControlMessage, EntryError,
    INVALID_COMMAND, ReplacedMessage, ReplyMessage, SocketEnd, StoredCounts, StoredDevice,
    StoredSelf, StoredView, StreamEntry, StreamId, WRONG_SHARD, shard_of,
};
use presence_store::{Profile, UserRecord};

use crate::{CapOwner, ShardChanges, UserChange};

/// What a shard leader needs to know about its place in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    /// This shard's number; shard 0 also owns the cluster-wide state.
    pub shard: u16,
    /// `S`, the number of shards.
    pub shards: u16,
    /// D7: how long a device whose socket dropped shows `away`.
    pub disconnect_grace: Duration,
    /// H1: the heartbeat deadline the leader gives a device it adds; the
    /// gateways move it on with every refresh.
    pub heartbeat_timeout: Duration,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            shard: 0,
            shards: 1,
            disconnect_grace: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(30),
        }
    }
}

/// One user of the shard as Redis holds it, for [`ShardState::load`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedUser {
    pub user: String,
    /// `presence:{s}:user:<uid>`; `None` if absent.
    pub record: Option<UserRecord>,
    /// `presence:{s}:devices:<uid>`.
    pub devices: Vec<(DeviceId, StoredDevice)>,
    /// `presence:{s}:view:<uid>`; `None` if absent.
    pub view: Option<StoredView>,
    /// `presence:{s}:self:<uid>`; `None` if absent.
    pub self_view: Option<StoredSelf>,
}

/// Everything a new leader reads before it takes over a shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardLoad {
    /// Every user of `presence:{s}:users`.
    pub users: Vec<LoadedUser>,
    /// `presence:settings` (defaults if absent).
    pub settings: WorkspaceSettings,
    /// `presence:custom-statuses`.
    pub custom_statuses: Vec<CustomStatus>,
    /// `presence:cap`; only shard 0 reads it.
    pub cap: Option<CapState>,
}

/// The in-memory state of one shard.
#[derive(Debug)]
pub struct ShardState {
    config: ShardConfig,
    settings: WorkspaceSettings,
    custom: CustomStatusRegistry,
    /// Shard 0 only.
    cap: Option<CapOwner>,
    users: HashMap<Arc<str>, UserEntry>,
    /// H2: node → the devices whose socket it holds.
    nodes: HashMap<Arc<str>, BTreeSet<(Arc<str>, DeviceId)>>,
    /// Each user's next time-driven transition, at most one entry per user.
    timers: BTreeSet<(Timestamp, Arc<str>)>,
    batch: Batch,
    /// Users per displayed status ([`CountClass`] index), kept as users
    /// change; written to `presence:{s}:counts` when it moved.
    counts: [u64; 4],
    counts_dirty: bool,
    /// Outcomes of earlier appends of requests in the next batch, read
    /// from `presence:{s}:reply:<id>` by the runner; consumed by the batch.
    stored_outcomes: HashMap<String, CommandResult>,
    /// Retries applied because no outcome of their id was known, with
    /// when and what they answered: should the first append of the same
    /// request arrive after its retry (a timed-out `XADD` that Redis ran
    /// late), it is answered with this instead of being applied.
    retried: HashMap<String, (Timestamp, CommandResult)>,
}

/// How long [`ShardState`] remembers a retry it applied: as long as Redis
/// keeps the outcome.
const RETRY_MEMORY: Duration = Duration::from_millis(cluster::REPLY_OUTCOME_TTL_MS);

/// Which count a user is in: online, away, busy, invisible (connected but
/// shown offline); `None` for offline.
type CountClass = Option<usize>;

fn count_class(presence: &UserPresence, settings: &WorkspaceSettings) -> CountClass {
    match presence.public_view(settings).status {
        DisplayedStatus::Online => Some(0),
        DisplayedStatus::Away => Some(1),
        DisplayedStatus::Busy => Some(2),
        DisplayedStatus::Offline => (presence.self_view(settings).status
            == presence_core::SelfStatus::Invisible)
            .then_some(3),
    }
}

#[derive(Debug)]
struct UserEntry {
    presence: UserPresence,
    profile: Profile,
    /// The live socket of each device (a user has few: a vector).
    owners: Vec<(DeviceId, Owner)>,
    /// The deadline this user is queued at in `timers`.
    scheduled: Option<Timestamp>,
    /// Whether the user is in `presence:{s}:users`.
    known: bool,
    /// The count the user is in ([`ShardState::counts`]).
    counted: CountClass,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    node: Arc<str>,
    conn: u64,
}

/// What was committed for a user before the batch touched them.
#[derive(Debug)]
struct Before {
    /// `None`: unknown, so whatever the view is now gets committed.
    public: Option<PublicView>,
    self_view: Option<SelfView>,
    version: u64,
    devices: DeviceMap,
    owners: Vec<(DeviceId, Owner)>,
    durable_dirty: bool,
    /// Devices (re)connected in this batch: their heartbeat deadline is set
    /// again even if a member existed (the old socket's deadline may be
    /// about to lapse).
    reconnected: Vec<DeviceId>,
}

#[derive(Debug, Default)]
struct Batch {
    touched: HashMap<Arc<str>, Before>,
    cursor: Option<StreamId>,
    replies: Vec<ReplyMessage>,
    notices: Vec<ReplacedMessage>,
    cluster: crate::ClusterChanges,
    /// Lapsed heartbeat members to delete whatever the shard knows of them.
    stray_heartbeats: Vec<(String, DeviceId)>,
}

impl ShardState {
    /// An empty shard: no users yet.
    pub fn new(
        config: ShardConfig,
        settings: WorkspaceSettings,
        custom_statuses: Vec<CustomStatus>,
        stored_cap: Option<CapState>,
    ) -> Self {
        let cap = (config.shard == 0).then(|| CapOwner::restore(stored_cap, settings.cap));
        Self {
            config,
            custom: CustomStatusRegistry::from_statuses(custom_statuses),
            settings,
            cap,
            users: HashMap::new(),
            nodes: HashMap::new(),
            timers: BTreeSet::new(),
            batch: Batch::default(),
            counts: [0; 4],
            // The first commit writes the counts, even of an empty shard.
            counts_dirty: true,
            stored_outcomes: HashMap::new(),
            retried: HashMap::new(),
        }
    }

    /// Takeover: rebuilds the shard from what Redis holds and applies the
    /// time that passed since the last leader committed (expiries, grace
    /// periods, idle timers). The returned changes hold every view that
    /// differs from its stored value — republish them — and, on shard 0,
    /// the cap state if none was stored.
    ///
    /// Versions continue from the largest stored for each user (the
    /// document's, the public view's and the own view's), so nothing this
    /// leader publishes can look older than what the last one did (W3).
    pub fn load(config: ShardConfig, load: ShardLoad, now: Timestamp) -> (Self, ShardChanges) {
        let mut state = Self::new(config, load.settings, load.custom_statuses, load.cap);
        for loaded in load.users {
            let id: Arc<str> = Arc::from(loaded.user);
            let record = loaded.record.unwrap_or_default();
            let mut presence = UserPresence::from_durable(record.state);
            let version = [
                Some(presence.durable.version),
                loaded.view.as_ref().map(|v| v.version),
                loaded.self_view.as_ref().map(|s| s.version),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default();
            presence.durable.version = version;
            let mut entry = UserEntry {
                presence,
                profile: record.profile,
                owners: Vec::new(),
                scheduled: None,
                known: true,
                counted: None,
            };
            for (device, stored) in loaded.devices {
                entry.presence.devices.insert(device.clone(), stored.device);
                set_owner(
                    &mut state.nodes,
                    &id,
                    &mut entry,
                    device,
                    &stored.node,
                    stored.conn,
                );
            }
            let before = Before {
                public: loaded.view.map(|v| v.view()),
                self_view: loaded.self_view.map(|s| s.view),
                version,
                devices: entry.presence.devices.clone(),
                owners: entry.owners.clone(),
                durable_dirty: false,
                reconnected: Vec::new(),
            };
            state.users.insert(id.clone(), entry);
            state.batch.touched.insert(id, before);
        }
        let ids: Vec<Arc<str>> = state.users.keys().cloned().collect();
        for id in ids {
            state.advance_user(&id, now);
        }
        let changes = state.finish(now);
        (state, changes)
    }

    /// Applies stream entries in order, at `now` (the leader's clock, not
    /// the entries' ids). Every entry that carries a reply id is answered
    /// in [`ShardChanges::replies`], whether it succeeded or not; a refused
    /// command changes nothing.
    pub fn apply_batch(
        &mut self,
        entries: impl IntoIterator<Item = (StreamId, StreamEntry)>,
        now: Timestamp,
    ) -> ShardChanges {
        self.apply_raw_batch(entries.into_iter().map(|(id, e)| (id, Ok(e))), now)
    }

    /// Like [`apply_batch`](Self::apply_batch), for entries as decoded by
    /// [`StreamEntry::from_fields`]: an entry that did not decode is
    /// skipped (the cursor moves past it) and answered with
    /// `invalid_command` if its reply id could be read.
    pub fn apply_raw_batch(
        &mut self,
        entries: impl IntoIterator<Item = (StreamId, Result<StreamEntry, EntryError>)>,
        now: Timestamp,
    ) -> ShardChanges {
        for (id, entry) in entries {
            self.batch.cursor = self.batch.cursor.max(Some(id));
            let entry = match entry {
                Ok(entry) => entry,
                Err(EntryError::BadCommand {
                    node,
                    reply,
                    detail,
                    ..
                }) => {
                    tracing::warn!(%id, %detail, "skipping a stream entry with an invalid command");
                    if let Some(r) = reply {
                        self.batch.replies.push(ReplyMessage {
                            node,
                            r,
                            result: CommandResult::error(INVALID_COMMAND, detail),
                        });
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "skipping a malformed stream entry");
                    continue;
                }
            };
            let StreamEntry {
                user,
                command,
                node,
                reply,
                retry,
                profile,
            } = entry;
            if let Some(r) = &reply
                && let Some(result) = self.earlier_outcome(r, retry)
            {
                tracing::info!(%id, reply = %r, "answered a repeated request from its first outcome");
                self.batch.replies.push(ReplyMessage {
                    node,
                    r: r.clone(),
                    result,
                });
                continue;
            }
            // The token's profile travels with the command (one XADD) and
            // is recorded in the same step, before it.
            if let Some(profile) = profile {
                let touch = ClusterCommand::TouchProfile { profile };
                let _ = self.apply_user(&user, touch, &node, now, false);
            }
            let kind = command.kind();
            let result = if command.is_admin() {
                self.apply_admin(command, now)
            } else if command.is_shard_wide() {
                Ok(self.apply_shard_wide(command, now))
            } else {
                self.apply_user(&user, command, &node, now, reply.is_some())
            };
            match (reply, result) {
                (Some(r), result) => {
                    let result = match result {
                        Ok(ok) => CommandResult::Ok(ok),
                        Err(e) => CommandResult::Error(e),
                    };
                    if retry {
                        self.retried.insert(r.clone(), (now, result.clone()));
                    }
                    self.batch.replies.push(ReplyMessage { node, r, result });
                }
                (None, Err(e)) => {
                    tracing::debug!(%id, kind, code = %e.code, "refused a command nobody waits for");
                }
                (None, Ok(_)) => {}
            }
        }
        self.stored_outcomes.clear();
        self.finish(now)
    }

    /// Hands in the stored outcomes (`presence:{s}:reply:<id>`) of
    /// requests in the next batch: each entry whose id is here (a retry,
    /// or a first append that arrived after its retry was applied) is
    /// answered with its outcome instead of being applied. The next
    /// [`apply_raw_batch`](Self::apply_raw_batch) consumes them.
    pub fn remember_outcomes(
        &mut self,
        outcomes: impl IntoIterator<Item = (String, CommandResult)>,
    ) {
        self.stored_outcomes.extend(outcomes);
    }

    /// The outcome an earlier append of request `reply` already got, if
    /// any: for a retry, from this batch; for any append, from Redis
    /// ([`remember_outcomes`](Self::remember_outcomes): the runner looks
    /// up retries, and first appends for a while after a takeover) or
    /// from a retry of it this leader applied before (the first append
    /// arrived late).
    fn earlier_outcome(&self, reply: &str, retry: bool) -> Option<CommandResult> {
        if retry {
            let in_batch = self.batch.replies.iter().rev().find(|m| m.r == reply);
            if let Some(message) = in_batch {
                return Some(message.result.clone());
            }
        }
        if let Some(stored) = self.stored_outcomes.get(reply) {
            return Some(stored.clone());
        }
        self.retried.get(reply).map(|(_, result)| result.clone())
    }

    /// Applies the passage of time up to `now` to every user whose timer is
    /// due: idle timers (D2), grace periods (D7) and expiries (T6).
    pub fn advance(&mut self, now: Timestamp) -> ShardChanges {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let (_, id) = self.timers.pop_first().expect("checked above");
            if let Some(entry) = self.users.get_mut(&id) {
                entry.scheduled = None;
            }
            self.advance_user(&id, now);
        }
        self.finish(now)
    }

    /// A5: removes at once each `(user, device)` whose heartbeat member
    /// lapsed, and deletes those members (also for devices the shard does
    /// not hold, so stale members do not linger).
    pub fn expire_heartbeats<U: AsRef<str>, D: AsRef<str>>(
        &mut self,
        lapsed: &[(U, D)],
        now: Timestamp,
    ) -> ShardChanges {
        for (user, device) in lapsed {
            // A member that is no valid device id names no device.
            let Ok(device) = DeviceId::try_from(device.as_ref()) else {
                continue;
            };
            let user = user.as_ref();
            self.batch
                .stray_heartbeats
                .push((user.to_owned(), device.clone()));
            let holds = self
                .users
                .get(user)
                .is_some_and(|e| e.presence.devices.contains_key(&device));
            if holds {
                tracing::debug!(user, device = %device, "heartbeat lapsed; removing the device");
                self.remove_device(user, device, now);
            }
        }
        self.finish(now)
    }

    /// H2: removes every device whose socket one of `dead_nodes` held, for
    /// every user; devices of other nodes stay.
    pub fn expire_nodes<N: AsRef<str>>(
        &mut self,
        dead_nodes: &[N],
        now: Timestamp,
    ) -> ShardChanges {
        for node in dead_nodes {
            let Some(devices) = self.nodes.get(node.as_ref()) else {
                continue;
            };
            tracing::info!(
                node = node.as_ref(),
                devices = devices.len(),
                "gateway node lease lapsed; removing its devices"
            );
            let devices: Vec<(Arc<str>, DeviceId)> = devices.iter().cloned().collect();
            for (user, device) in devices {
                self.remove_device(&user, device, now);
            }
        }
        self.finish(now)
    }

    /// H2, for a runner that knows the live nodes rather than the dead
    /// ones: expires every node holding devices here that is not in
    /// `live_nodes` (including nodes whose lease entry is gone entirely).
    pub fn expire_nodes_not_in(
        &mut self,
        live_nodes: &BTreeSet<String>,
        now: Timestamp,
    ) -> ShardChanges {
        let dead: Vec<Arc<str>> = self
            .nodes
            .keys()
            .filter(|n| !live_nodes.contains(&***n))
            .cloned()
            .collect();
        self.expire_nodes(&dead, now)
    }

    /// S1: the workspace settings became `new_settings` (announced by
    /// shard 0, or read again). Every user is re-evaluated against them —
    /// changed defaults move idle devices — and views that changed get a
    /// new version. The old settings are the ones the shard held.
    pub fn reevaluate(&mut self, new_settings: WorkspaceSettings, now: Timestamp) -> ShardChanges {
        self.switch_settings(new_settings, now);
        self.finish(now)
    }

    /// C3: an admin created, renamed or remapped `status`; every user of
    /// the shard using it (also in a state an expiry will restore) follows.
    pub fn custom_status_changed(&mut self, status: CustomStatus, now: Timestamp) -> ShardChanges {
        self.replicate_custom_status(status, now);
        self.finish(now)
    }

    /// C3: an admin deleted custom status `id`; its users keep their
    /// presence and the name as plain text.
    pub fn custom_status_deleted(&mut self, id: &CustomStatusId, now: Timestamp) -> ShardChanges {
        self.replicate_custom_delete(id, now);
        self.finish(now)
    }

    /// C3, for a runner that re-reads `presence:custom-statuses` (pub/sub
    /// is at-most-once): applies every difference between the statuses the
    /// shard holds and `statuses`.
    pub fn sync_custom_statuses(
        &mut self,
        statuses: Vec<CustomStatus>,
        now: Timestamp,
    ) -> ShardChanges {
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
            self.replicate_custom_delete(id, now);
        }
        for status in incoming.into_values() {
            let same = self.custom.get(&status.id).is_ok_and(|held| {
                held.name == status.name && held.status_type == status.status_type
            });
            if !same {
                self.replicate_custom_status(status, now);
            }
        }
        self.finish(now)
    }

    /// X1, X2 (shard 0): observes the cluster-wide connection count, the
    /// sum of the live nodes' counts. On other shards this does nothing.
    pub fn observe_connections(
        &mut self,
        live_node_counts: &[(String, u64)],
        live_nodes: &BTreeSet<String>,
        now: Timestamp,
    ) -> ShardChanges {
        if let Some(cap) = &mut self.cap {
            let transition = cap.observe(live_node_counts, live_nodes);
            self.announce_cap(transition);
        }
        self.finish(now)
    }

    // ---- Reads ----

    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    pub fn settings(&self) -> &WorkspaceSettings {
        &self.settings
    }

    pub fn custom_statuses(&self) -> &CustomStatusRegistry {
        &self.custom
    }

    /// X5 (shard 0 only).
    pub fn cap(&self) -> Option<CapState> {
        self.cap.as_ref().map(CapOwner::state)
    }

    /// The earliest moment [`advance`](Self::advance) has work to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The user's presence (durable state and devices), if the shard holds
    /// them.
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

    /// The user's current version (W3).
    pub fn version(&self, user: &str) -> Option<u64> {
        self.presence(user).map(|p| p.durable.version)
    }

    /// The node and socket holding `device` of `user`.
    pub fn device_owner(&self, user: &str, device: &DeviceId) -> Option<(&str, u64)> {
        let entry = self.users.get(user)?;
        entry
            .owners
            .iter()
            .find(|(d, _)| d == device)
            .map(|(_, o)| (&*o.node, o.conn))
    }

    /// The gateway nodes holding at least one device of this shard.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(|n| &**n)
    }

    /// The user ids the shard holds.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(|u| &**u)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn device_count(&self) -> usize {
        self.users.values().map(|e| e.presence.devices.len()).sum()
    }

    // ---- Commands ----

    /// [`ClusterCommand::NodeStarted`] and [`ClusterCommand::Sync`].
    fn apply_shard_wide(&mut self, command: ClusterCommand, now: Timestamp) -> CommandOk {
        if let ClusterCommand::NodeStarted { node } = command
            && let Some(devices) = self.nodes.get(node.as_str())
        {
            tracing::info!(
                node,
                devices = devices.len(),
                "gateway node restarted; removing the devices of its previous run"
            );
            let devices: Vec<(Arc<str>, DeviceId)> = devices.iter().cloned().collect();
            for (user, device) in devices {
                self.remove_device(&user, device, now);
            }
        }
        CommandOk::default()
    }

    fn apply_user(
        &mut self,
        user: &str,
        command: ClusterCommand,
        entry_node: &str,
        now: Timestamp,
        wants_reply: bool,
    ) -> Result<CommandOk, CommandError> {
        if user.is_empty() {
            return Err(CommandError {
                code: INVALID_COMMAND.to_owned(),
                message: "the stream entry names no user".to_owned(),
            });
        }
        let owner_shard = shard_of(user, self.config.shards);
        if owner_shard != self.config.shard {
            tracing::warn!(user, owner_shard, "a command for another shard's user");
            return Err(CommandError {
                code: WRONG_SHARD.to_owned(),
                message: format!(
                    "user belongs to shard {owner_shard}, not {}",
                    self.config.shard
                ),
            });
        }
        let id = self.touch(user);
        let Self {
            users,
            nodes,
            settings,
            custom,
            batch,
            config,
            ..
        } = self;
        let entry = users.get_mut(&id).expect("touched above");
        let before = batch.touched.get_mut(&id).expect("touched above");
        let ctx = Context { now, settings };
        let core = match command {
            ClusterCommand::Connect {
                device,
                platform,
                conn,
                node,
                profile,
            } => {
                before.durable_dirty |= update_profile(entry, profile);
                // D1 across nodes: the socket this one replaces may live on
                // another gateway, which must close it (a gateway closes
                // its own replaced sockets by itself).
                if let Some((_, held)) = entry.owners.iter().find(|(d, _)| *d == device)
                    && &*held.node != node.as_str()
                {
                    batch.notices.push(ReplacedMessage {
                        node: held.node.to_string(),
                        user: id.to_string(),
                        replaced: held.conn,
                    });
                }
                let outcome = entry.presence.apply(
                    Command::Connect {
                        device: device.clone(),
                        platform,
                    },
                    ctx,
                );
                set_owner(nodes, &id, entry, device.clone(), &node, conn);
                before.reconnected.push(device);
                outcome
            }
            ClusterCommand::DeviceEvent { device, event } => entry
                .presence
                .apply(Command::DeviceEvent { device, event }, ctx),
            ClusterCommand::Disconnect { device, conn, end } => {
                // Connection ids are per node: both must match.
                let live_conn = entry
                    .owners
                    .iter()
                    .any(|(d, o)| *d == device && o.conn == conn && &*o.node == entry_node);
                let connected = entry
                    .presence
                    .devices
                    .get(&device)
                    .is_some_and(|d| d.link == Link::Connected);
                if !(live_conn && connected) {
                    // D7: a replaced socket, or one already gone.
                    return Ok(reply_ok(entry, settings, wants_reply));
                }
                let how = match end {
                    SocketEnd::Clean => Disconnect::Clean,
                    SocketEnd::Lost => Disconnect::Lost {
                        grace_until: now + config.disconnect_grace,
                    },
                };
                entry
                    .presence
                    .apply(Command::Disconnect { device, how }, ctx)
            }
            ClusterCommand::SetStatus { request } => entry
                .presence
                .apply(Command::SetStatus(request.into()), ctx),
            ClusterCommand::UseCustomStatus { id: status } => match custom.get(&status) {
                Ok(status) => entry
                    .presence
                    .apply(Command::UseCustomStatus(status.clone()), ctx),
                Err(e) => Err(e),
            },
            ClusterCommand::Calendar {
                event_id,
                busy,
                source,
            } => entry.presence.apply(
                Command::Calendar {
                    event_id,
                    busy,
                    source: source.into(),
                },
                ctx,
            ),
            ClusterCommand::SetPreferences {
                auto_away,
                idle_time_limit,
            } => entry.presence.apply(
                Command::SetPreferences(presence_core::PreferencesUpdate {
                    auto_away,
                    idle_time_limit,
                }),
                ctx,
            ),
            ClusterCommand::TouchProfile { profile } => {
                before.durable_dirty |= update_profile(entry, profile);
                return Ok(reply_ok(entry, settings, wants_reply));
            }
            ClusterCommand::UpdateSettings { .. }
            | ClusterCommand::CreateCustomStatus { .. }
            | ClusterCommand::UpdateCustomStatus { .. }
            | ClusterCommand::DeleteCustomStatus { .. }
            | ClusterCommand::EnableBroadcast => unreachable!("admin commands go to apply_admin"),
            ClusterCommand::NodeStarted { .. } | ClusterCommand::Sync => {
                unreachable!("shard-wide commands go to apply_shard_wide")
            }
        };
        let outcome = core.map_err(|e| CommandError::from(&e))?;
        before.durable_dirty |= outcome.durable_changed;
        prune_owners(nodes, &id, entry);
        Ok(reply_ok(entry, settings, wants_reply))
    }

    fn apply_admin(
        &mut self,
        command: ClusterCommand,
        now: Timestamp,
    ) -> Result<CommandOk, CommandError> {
        if self.config.shard != 0 {
            return Err(CommandError {
                code: WRONG_SHARD.to_owned(),
                message: format!(
                    "'{}' is handled by shard 0, not {}",
                    command.kind(),
                    self.config.shard
                ),
            });
        }
        let rule = |e: PresenceError| CommandError::from(&e);
        match command {
            ClusterCommand::UpdateSettings { patch } => {
                let new = patch.apply_to(&self.settings);
                if new != self.settings {
                    self.switch_settings(new.clone(), now);
                    self.batch.cluster.settings = Some(new.clone());
                    self.batch
                        .cluster
                        .control
                        .push(ControlMessage::SettingsChanged {
                            settings: new.clone(),
                        });
                }
                Ok(CommandOk {
                    settings: Some(new),
                    cap: self.cap(),
                    ..CommandOk::default()
                })
            }
            ClusterCommand::CreateCustomStatus {
                id,
                name,
                status_type,
            } => {
                let status = self
                    .custom
                    .create(id, name, status_type, now)
                    .map_err(rule)?;
                self.announce_custom(Some(status.clone()), &status.id);
                Ok(custom_ok(status))
            }
            ClusterCommand::UpdateCustomStatus {
                id,
                name,
                status_type,
            } => {
                let status = self
                    .custom
                    .update(&id, name, status_type, now)
                    .map_err(rule)?;
                self.apply_to_users_of(&id, || Command::CustomStatusChanged(status.clone()), now);
                self.announce_custom(Some(status.clone()), &id);
                Ok(custom_ok(status))
            }
            ClusterCommand::DeleteCustomStatus { id } => {
                let status = self.custom.delete(&id).map_err(rule)?;
                self.apply_to_users_of(&id, || Command::CustomStatusDeleted(id.clone()), now);
                self.announce_custom(None, &id);
                Ok(custom_ok(status))
            }
            ClusterCommand::EnableBroadcast => {
                let cap = self.cap.as_mut().expect("shard 0 owns the cap");
                let transition = cap.enable().map_err(rule)?;
                self.announce_cap(transition);
                Ok(CommandOk {
                    cap: self.cap(),
                    ..CommandOk::default()
                })
            }
            _ => unreachable!("user commands go to apply_user"),
        }
    }

    // ---- Helpers that change state inside the open batch ----

    /// Opens `user` in the current batch (creating an empty entry for a
    /// user the shard has never seen) and returns the shared id.
    fn touch(&mut self, user: &str) -> Arc<str> {
        let id = match self.users.get_key_value(user) {
            Some((id, _)) => id.clone(),
            None => {
                let id: Arc<str> = Arc::from(user);
                self.users.insert(
                    id.clone(),
                    UserEntry {
                        presence: UserPresence::default(),
                        profile: Profile::default(),
                        owners: Vec::new(),
                        scheduled: None,
                        known: false,
                        counted: None,
                    },
                );
                id
            }
        };
        if !self.batch.touched.contains_key(&id) {
            let entry = &self.users[&id];
            let before = Before {
                public: Some(entry.presence.public_view(&self.settings)),
                self_view: Some(entry.presence.self_view(&self.settings)),
                version: entry.presence.durable.version,
                devices: entry.presence.devices.clone(),
                owners: entry.owners.clone(),
                durable_dirty: false,
                reconnected: Vec::new(),
            };
            self.batch.touched.insert(id.clone(), before);
        }
        id
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
        let before = self.batch.touched.get_mut(&id).expect("touched above");
        before.durable_dirty |= outcome.durable_changed;
        prune_owners(&mut self.nodes, &id, entry);
    }

    /// Removes a device at once (A5, H2), whatever its socket.
    fn remove_device(&mut self, user: &str, device: DeviceId, now: Timestamp) {
        let id = self.touch(user);
        let entry = self.users.get_mut(&id).expect("touched above");
        let command = Command::Disconnect {
            device,
            how: Disconnect::Clean,
        };
        let ctx = Context {
            now,
            settings: &self.settings,
        };
        if let Ok(outcome) = entry.presence.apply(command, ctx) {
            let before = self.batch.touched.get_mut(&id).expect("touched above");
            before.durable_dirty |= outcome.durable_changed;
        }
        prune_owners(&mut self.nodes, &id, entry);
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
            let user = self.touch(&user);
            let entry = self.users.get_mut(&user).expect("touched above");
            let ctx = Context {
                now,
                settings: &self.settings,
            };
            if let Ok(outcome) = entry.presence.apply(command(), ctx) {
                let before = self.batch.touched.get_mut(&user).expect("touched above");
                before.durable_dirty |= outcome.durable_changed;
            }
            prune_owners(&mut self.nodes, &user, entry);
        }
    }

    /// Re-evaluates every user under `new` settings (S1) and, on shard 0,
    /// moves the cap (X1).
    fn switch_settings(&mut self, new: WorkspaceSettings, now: Timestamp) {
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

    fn replicate_custom_status(&mut self, status: CustomStatus, now: Timestamp) {
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

    fn replicate_custom_delete(&mut self, id: &CustomStatusId, now: Timestamp) {
        // Users may still hold a status this shard never heard of.
        let _ = self.custom.delete(id);
        self.apply_to_users_of(id, || Command::CustomStatusDeleted(id.clone()), now);
    }

    /// Shard 0: records a custom status change for Redis and the other
    /// leaders.
    fn announce_custom(&mut self, status: Option<CustomStatus>, id: &CustomStatusId) {
        let cluster = &mut self.batch.cluster;
        cluster.custom_statuses.insert(id.clone(), status.clone());
        cluster.control.push(match status {
            Some(status) => ControlMessage::CustomStatusesChanged {
                changed: vec![status],
                deleted: Vec::new(),
            },
            None => ControlMessage::CustomStatusesChanged {
                changed: Vec::new(),
                deleted: vec![id.clone()],
            },
        });
    }

    /// X3: announces a broadcast transition on the control channel.
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
            .cluster
            .control
            .push(ControlMessage::Broadcast { active });
    }

    /// Closes the open batch: compares every touched user with what was
    /// committed before, bumps versions where views changed without one,
    /// reschedules timers, and returns what to commit.
    fn finish(&mut self, now: Timestamp) -> ShardChanges {
        let batch = std::mem::take(&mut self.batch);
        if !self.retried.is_empty() {
            self.retried.retain(|_, (at, _)| *at + RETRY_MEMORY > now);
        }
        let mut changes = ShardChanges {
            cursor: batch.cursor,
            users: BTreeMap::new(),
            replies: batch.replies,
            notices: batch.notices,
            cluster: batch.cluster,
            counts: None,
        };
        for (user, device) in batch.stray_heartbeats {
            changes
                .users
                .entry(user)
                .or_default()
                .heartbeats
                .insert(device, None);
        }
        let hb_deadline = now + self.config.heartbeat_timeout;
        for (id, before) in batch.touched {
            let Some(entry) = self.users.get_mut(&id) else {
                continue;
            };
            let change = diff_user(entry, before, &self.settings, now, hb_deadline);
            reschedule(&mut self.timers, &id, entry, &self.settings);
            let class = count_class(&entry.presence, &self.settings);
            if class != entry.counted {
                if let Some(old) = entry.counted {
                    self.counts[old] -= 1;
                }
                if let Some(new) = class {
                    self.counts[new] += 1;
                }
                entry.counted = class;
                self.counts_dirty = true;
            }
            let stray = changes.users.remove(&*id).unwrap_or_default();
            let mut change = merge_strays(stray, change);
            if change.is_empty() {
                if !entry.known {
                    // Never stored and nothing to store: forget the user.
                    if let Some(at) = entry.scheduled {
                        self.timers.remove(&(at, id.clone()));
                    }
                    self.users.remove(&id);
                }
                continue;
            }
            if !entry.known && has_state(&change) {
                // Every user of the set has both views stored, so readers
                // never have to guess what a missing key means.
                change.new_user = true;
                entry.known = true;
                let version = entry.presence.durable.version;
                change.view.get_or_insert_with(|| {
                    StoredView::new(&entry.presence.public_view(&self.settings), version)
                });
                change.self_view.get_or_insert_with(|| StoredSelf {
                    version,
                    view: entry.presence.self_view(&self.settings),
                });
            }
            changes.users.insert(id.to_string(), change);
        }
        if let Some(cap) = &mut self.cap {
            changes.cluster.cap = cap.take_persist();
        }
        if std::mem::take(&mut self.counts_dirty) {
            let [online, away, busy, invisible] = self.counts;
            changes.counts = Some(StoredCounts {
                online,
                away,
                busy,
                invisible,
            });
        }
        changes
    }

    /// Users of the shard per displayed status (what
    /// `presence:{s}:counts` holds after the next commit).
    pub fn counts(&self) -> StoredCounts {
        let [online, away, busy, invisible] = self.counts;
        StoredCounts {
            online,
            away,
            busy,
            invisible,
        }
    }
}

/// Sets the stored profile from a token's, unless the token said nothing.
/// Returns whether it changed.
fn update_profile(entry: &mut UserEntry, profile: cluster::Profile) -> bool {
    if profile.is_empty() {
        return false;
    }
    let profile = Profile {
        username: profile.username,
        name: profile.name,
    };
    if entry.profile == profile {
        return false;
    }
    entry.profile = profile;
    true
}

fn reply_ok(entry: &UserEntry, settings: &WorkspaceSettings, wants_reply: bool) -> CommandOk {
    CommandOk {
        me: wants_reply.then(|| StoredSelf {
            version: entry.presence.durable.version,
            view: entry.presence.self_view(settings),
        }),
        ..CommandOk::default()
    }
}

fn custom_ok(status: CustomStatus) -> CommandOk {
    CommandOk {
        custom_status: Some(status),
        ..CommandOk::default()
    }
}

/// Records that `node`'s socket `conn` holds `device` of `user`.
fn set_owner(
    nodes: &mut HashMap<Arc<str>, BTreeSet<(Arc<str>, DeviceId)>>,
    user: &Arc<str>,
    entry: &mut UserEntry,
    device: DeviceId,
    node: &str,
    conn: u64,
) {
    let node: Arc<str> = match nodes.get_key_value(node) {
        Some((n, _)) => n.clone(),
        None => Arc::from(node),
    };
    let owner = Owner {
        node: node.clone(),
        conn,
    };
    match entry.owners.iter_mut().find(|(d, _)| *d == device) {
        Some((_, held)) => {
            if held.node != node {
                unindex(nodes, &held.node, user, &device);
            }
            *held = owner;
        }
        None => entry.owners.push((device.clone(), owner)),
    }
    nodes
        .entry(node)
        .or_default()
        .insert((user.clone(), device));
}

/// Drops the owners of devices the user no longer has.
fn prune_owners(
    nodes: &mut HashMap<Arc<str>, BTreeSet<(Arc<str>, DeviceId)>>,
    user: &Arc<str>,
    entry: &mut UserEntry,
) {
    let devices = &entry.presence.devices;
    entry.owners.retain(|(device, owner)| {
        let keep = devices.contains_key(device);
        if !keep {
            unindex(nodes, &owner.node, user, device);
        }
        keep
    });
}

fn unindex(
    nodes: &mut HashMap<Arc<str>, BTreeSet<(Arc<str>, DeviceId)>>,
    node: &Arc<str>,
    user: &Arc<str>,
    device: &DeviceId,
) {
    if let Some(devices) = nodes.get_mut(node) {
        devices.remove(&(user.clone(), device.clone()));
        if devices.is_empty() {
            nodes.remove(node);
        }
    }
}

/// Queues the user at their next deadline, replacing the old entry.
fn reschedule(
    timers: &mut BTreeSet<(Timestamp, Arc<str>)>,
    id: &Arc<str>,
    entry: &mut UserEntry,
    settings: &WorkspaceSettings,
) {
    let next = entry.presence.next_deadline(settings);
    if next == entry.scheduled {
        return;
    }
    if let Some(old) = entry.scheduled {
        timers.remove(&(old, id.clone()));
    }
    if let Some(at) = next {
        timers.insert((at, id.clone()));
    }
    entry.scheduled = next;
}

/// Compares a user's state with what was committed before the batch.
fn diff_user(
    entry: &mut UserEntry,
    before: Before,
    settings: &WorkspaceSettings,
    now: Timestamp,
    hb_deadline: Timestamp,
) -> UserChange {
    let public = entry.presence.public_view(settings);
    let self_view = entry.presence.self_view(settings);
    let public_changed = before.public.as_ref() != Some(&public);
    let self_changed = before.self_view.as_ref() != Some(&self_view);
    // W3: a view that changed without a rule noticing (settings moved under
    // it, or a takeover found the stored view stale) still gets a newer
    // version than the one stored.
    if (public_changed || self_changed) && entry.presence.durable.version <= before.version {
        entry.presence.durable.version = next_version(before.version, now);
    }
    let version = entry.presence.durable.version;

    let mut change = UserChange::default();
    let owner_of = |owners: &[(DeviceId, Owner)], id: &DeviceId| {
        owners.iter().find(|(d, _)| d == id).map(|(_, o)| o.clone())
    };
    let connected = |devices: &DeviceMap, id: &DeviceId| {
        devices.get(id).is_some_and(|d| d.link == Link::Connected)
    };
    for (id, device) in entry.presence.devices.iter() {
        let owner = owner_of(&entry.owners, id).expect("every device has an owner");
        if before.devices.get(id) != Some(device)
            || owner_of(&before.owners, id).as_ref() != Some(&owner)
        {
            change.devices.insert(
                id.clone(),
                Some(StoredDevice {
                    node: owner.node.to_string(),
                    conn: owner.conn,
                    device: device.clone(),
                }),
            );
        }
        if device.link == Link::Connected
            && (!connected(&before.devices, id) || before.reconnected.contains(id))
        {
            change.heartbeats.insert(id.clone(), Some(hb_deadline));
        }
    }
    for id in before.devices.keys() {
        if !entry.presence.devices.contains_key(id) {
            change.devices.insert(id.clone(), None);
        }
        if connected(&before.devices, id) && !connected(&entry.presence.devices, id) {
            change.heartbeats.insert(id.clone(), None);
        }
    }
    if before.durable_dirty {
        change.record = Some(UserRecord {
            state: entry.presence.durable.clone(),
            profile: entry.profile.clone(),
            updated_at: now,
        });
    }
    if public_changed {
        change.view = Some(StoredView::new(&public, version));
    }
    if self_changed {
        change.self_view = Some(StoredSelf {
            version,
            view: self_view,
        });
    }
    change
}

/// Lapsed members first, then what the batch decided (later wins).
fn merge_strays(mut stray: UserChange, change: UserChange) -> UserChange {
    stray.heartbeats.extend(change.heartbeats);
    UserChange {
        heartbeats: stray.heartbeats,
        ..change
    }
}

/// Whether `change` stores something about the user (as opposed to only
/// deleting stale heartbeat members).
fn has_state(change: &UserChange) -> bool {
    change.record.is_some()
        || change.view.is_some()
        || change.self_view.is_some()
        || change.device_upserts().next().is_some()
}

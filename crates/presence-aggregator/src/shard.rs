//! The state of one shard, as its leader holds it in memory.
//!
//! A leader loads its shard ([`ShardState::load`]), then feeds it what
//! happens: stream entries ([`ShardState::apply_batch`]), the passage of
//! time ([`ShardState::advance`]), lapsed heartbeats and dead gateways
//! ([`ShardState::expire_heartbeats`], [`ShardState::expire_nodes`]),
//! settings and custom status changes announced by shard 0
//! ([`ShardState::reevaluate`], [`ShardState::custom_status_changed`], …).
//! Each call returns the [`ShardChanges`] to commit.
//!
//! The users, devices, socket owners, timers, counts, cap and versions are
//! `presence-engine`'s [`Engine`], the same one the embedded backend
//! drives. This module adds what only a cluster leader has: the stream
//! (the cursor, decoding, which shard a command belongs to — the commands
//! themselves are applied in `commands.rs`), the answers to requests and
//! their retries, and the Redis shapes of the engine's changes
//! (`changes.rs`).
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

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use presence_core::{
    CapState, CustomStatus, CustomStatusId, CustomStatusRegistry, DeviceId, PublicView, SelfView,
    Timestamp, UserPresence, WorkspaceSettings,
};
use presence_engine::UserRecord;
use presence_engine::{CapOwner, Committed, Engine, EngineConfig, Owner, RestoredUser};
use presence_protocol::cluster::{
    self, CommandResult, EntryError, INVALID_COMMAND, ReplyMessage, StoredCounts, StoredDevice,
    StoredSelf, StoredView, StreamEntry, StreamId, UserCommand,
};

use crate::ShardChanges;

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
    pub device_timeout: Duration,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            shard: 0,
            shards: 1,
            disconnect_grace: Duration::from_secs(30),
            device_timeout: Duration::from_secs(30),
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
    pub(crate) config: ShardConfig,
    pub(crate) engine: Engine,
    pub(crate) batch: EntryBatch,
    /// Outcomes of earlier appends of requests in the next batch, read
    /// from `presence:{s}:reply:<id>` by the runner; consumed by the batch.
    stored_outcomes: HashMap<String, CommandResult>,
    /// Retries applied because no outcome of their id was known, with
    /// when and what they answered: should the first append of the same
    /// request arrive after its retry (a timed-out `XADD` that Redis ran
    /// late), it is answered with this instead of being applied.
    retried: HashMap<String, (Timestamp, CommandResult)>,
}

/// What the open batch has of the stream, besides the engine's changes.
#[derive(Debug, Default)]
pub(crate) struct EntryBatch {
    pub(crate) cursor: Option<StreamId>,
    pub(crate) replies: Vec<ReplyMessage>,
}

/// How long [`ShardState`] remembers a retry it applied: as long as Redis
/// keeps the outcome.
const RETRY_MEMORY: Duration = Duration::from_millis(cluster::REPLY_OUTCOME_TTL_MS);

impl ShardState {
    /// An empty shard: no users yet.
    pub fn new(
        config: ShardConfig,
        settings: WorkspaceSettings,
        custom_statuses: Vec<CustomStatus>,
        stored_cap: Option<CapState>,
    ) -> Self {
        let cap = (config.shard == 0).then(|| CapOwner::restore(stored_cap, settings.cap));
        let engine_config = EngineConfig {
            disconnect_grace: config.disconnect_grace,
            device_timeout: Some(config.device_timeout),
            index_devices_by_node: true,
        };
        Self {
            config,
            engine: Engine::new(engine_config, settings, custom_statuses, cap),
            batch: EntryBatch::default(),
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
            let record = loaded.record.unwrap_or_default();
            let mut durable = record.state;
            let version = [
                Some(durable.version),
                loaded.view.as_ref().map(|v| v.version),
                loaded.self_view.as_ref().map(|s| s.version),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default();
            durable.version = version;
            let devices = loaded
                .devices
                .into_iter()
                .map(|(id, stored)| {
                    let owner = Owner {
                        node: stored.node.into(),
                        conn: stored.conn,
                    };
                    (id, stored.device, owner)
                })
                .collect();
            let restored = RestoredUser {
                durable,
                profile: record.profile,
                devices,
                committed: Some(Committed {
                    public: loaded.view.map(|v| v.view()),
                    self_view: loaded.self_view.map(|s| s.view),
                    version,
                }),
                changed_at: record.updated_at,
            };
            state.engine.restore(&loaded.user, restored);
        }
        state.engine.advance_everyone(now);
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
                let touch = UserCommand::TouchProfile { profile };
                let _ = self.apply_user(&user, touch, &node, now, false);
            }
            let kind = command.kind();
            let result = self.apply_command(&user, command, &node, now, reply.is_some());
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
        self.engine.advance(now);
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
        self.engine.expire_heartbeats(lapsed, now);
        self.finish(now)
    }

    /// H2: removes every device whose socket one of `dead_nodes` held, for
    /// every user; devices of other nodes stay.
    pub fn expire_nodes<N: AsRef<str>>(
        &mut self,
        dead_nodes: &[N],
        now: Timestamp,
    ) -> ShardChanges {
        self.engine.expire_nodes(dead_nodes, now);
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
        self.engine.expire_nodes_not_in(live_nodes, now);
        self.finish(now)
    }

    /// S1: the workspace settings became `new_settings` (announced by
    /// shard 0, or read again). Every user is re-evaluated against them —
    /// changed defaults move idle devices — and views that changed get a
    /// new version. The old settings are the ones the shard held.
    pub fn reevaluate(&mut self, new_settings: WorkspaceSettings, now: Timestamp) -> ShardChanges {
        self.engine.reevaluate(new_settings, now);
        self.finish(now)
    }

    /// C3: an admin created, renamed or remapped `status`; every user of
    /// the shard using it (also in a state an expiry will restore) follows.
    pub fn custom_status_changed(&mut self, status: CustomStatus, now: Timestamp) -> ShardChanges {
        self.engine.custom_status_changed(status, now);
        self.finish(now)
    }

    /// C3: an admin deleted custom status `id`; its users keep their
    /// presence and the name as plain text.
    pub fn custom_status_deleted(&mut self, id: &CustomStatusId, now: Timestamp) -> ShardChanges {
        self.engine.custom_status_deleted(id, now);
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
        self.engine.sync_custom_statuses(statuses, now);
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
        self.engine
            .observe_node_counts(live_node_counts, live_nodes);
        self.finish(now)
    }

    // ---- Reads ----

    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    pub fn settings(&self) -> &WorkspaceSettings {
        self.engine.settings()
    }

    pub fn custom_statuses(&self) -> &CustomStatusRegistry {
        self.engine.custom_statuses()
    }

    /// X5 (shard 0 only).
    pub fn cap(&self) -> Option<CapState> {
        self.engine.cap()
    }

    /// The earliest moment [`advance`](Self::advance) has work to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.engine.next_deadline()
    }

    /// The user's presence (durable state and devices), if the shard holds
    /// them.
    pub fn presence(&self, user: &str) -> Option<&UserPresence> {
        self.engine.presence(user)
    }

    /// What others see of `user`.
    pub fn public_view(&self, user: &str) -> Option<PublicView> {
        self.engine.public_view(user)
    }

    /// What `user` sees of themselves.
    pub fn self_view(&self, user: &str) -> Option<SelfView> {
        self.engine.self_view(user)
    }

    /// The user's current version (W3).
    pub fn version(&self, user: &str) -> Option<u64> {
        self.engine.version(user)
    }

    /// The node and socket holding `device` of `user`.
    pub fn device_owner(&self, user: &str, device: &DeviceId) -> Option<(&str, u64)> {
        self.engine
            .device_owner(user, device)
            .map(|o| (&*o.node, o.conn))
    }

    /// The gateway nodes holding at least one device of this shard.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.engine.nodes()
    }

    /// The user ids the shard holds.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.engine.users()
    }

    pub fn user_count(&self) -> usize {
        self.engine.user_count()
    }

    pub fn device_count(&self) -> usize {
        self.engine.device_count()
    }

    /// Users of the shard per displayed status (what
    /// `presence:{s}:counts` holds after the next commit).
    pub fn counts(&self) -> StoredCounts {
        self.engine.counts()
    }

    /// Closes the open batch: the engine's changes in Redis shapes, with
    /// the cursor and the replies.
    fn finish(&mut self, now: Timestamp) -> ShardChanges {
        if !self.retried.is_empty() {
            self.retried.retain(|_, (at, _)| *at + RETRY_MEMORY > now);
        }
        let changes = self.engine.finish(now);
        let batch = std::mem::take(&mut self.batch);
        ShardChanges::from_engine(changes, &self.engine, batch.cursor, batch.replies)
    }
}

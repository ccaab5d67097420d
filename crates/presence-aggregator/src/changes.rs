//! What a shard leader must commit after applying commands or time:
//! [`ShardChanges`]. It is plain data, built by [`crate::ShardState`] from
//! the engine's [`presence_engine::Changes`] ([`ShardChanges::from_engine`]:
//! the same changes in the shapes Redis stores and publishes) and written
//! by the Redis runner in one fenced script.
//!
//! Per user it holds *final values*, not a log: the new user document, the
//! new value of each changed device (or its deletion), each heartbeat
//! member to set or delete, and the new views. Several changes therefore
//! merge by letting the later value win ([`ShardChanges::merge`]), and a
//! runner may batch several of them into one commit.

use std::collections::BTreeMap;

use presence_core::{CustomStatus, CustomStatusId, DeviceId, Timestamp, WorkspaceSettings};
use presence_engine::UserRecord;
use presence_engine::{Announcement, Changes, Engine};
use presence_protocol::cluster::{
    ControlMessage, ReplacedMessage, ReplyMessage, StoredCounts, StoredDevice, StoredSelf,
    StoredView, StreamId, UpdateMessage, encode_update_batch,
};

/// Everything to commit after one call into a [`crate::ShardState`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardChanges {
    /// The last stream entry applied: the new `presence:{s}:cursor`.
    /// `None` when no entry was applied (timers, sweeps).
    pub cursor: Option<StreamId>,
    /// Per changed user, by user id.
    pub users: BTreeMap<String, UserChange>,
    /// Answers to the entries that carried a reply id, in stream order:
    /// publish each on the asking node's `presence:{s}:node:<node>`.
    pub replies: Vec<ReplyMessage>,
    /// Sockets replaced by a socket on another node (D1): publish each on
    /// `presence:{s}:node:<node>` of the node that holds it.
    pub notices: Vec<ReplacedMessage>,
    /// Cluster-wide state, written only by shard 0's leader.
    pub cluster: ClusterChanges,
    /// The shard's new `presence:{s}:counts`, when they moved.
    pub counts: Option<StoredCounts>,
}

/// What changed for one user. Every field is a final value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserChange {
    /// The user is new to the shard: add them to `presence:{s}:users`.
    pub new_user: bool,
    /// The new durable document (`presence:{s}:user:<uid>`), when the
    /// chosen state, calendar claims, preferences or profile changed.
    /// Device-only changes never write it (their versions live in the
    /// stored views).
    pub record: Option<UserRecord>,
    /// `presence:{s}:devices:<uid>`: `Some` sets the device (`HSET`),
    /// `None` deletes it (`HDEL`).
    pub devices: BTreeMap<DeviceId, Option<StoredDevice>>,
    /// `presence:{s}:hb` members `<uid>\n<device>`: `Some(deadline)` sets
    /// the deadline (plain `ZADD`, milliseconds), `None` removes the
    /// member (`ZREM`). Only connected devices have a member; a device in
    /// its grace period (D7) is timed by the leader instead.
    pub heartbeats: BTreeMap<DeviceId, Option<Timestamp>>,
    /// What others see now (`presence:{s}:view:<uid>`), when it changed.
    pub view: Option<StoredView>,
    /// What the user sees now (`presence:{s}:self:<uid>`), when it changed.
    pub self_view: Option<StoredSelf>,
}

/// Cluster-wide changes made by shard 0's leader (admin commands, cap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterChanges {
    /// The new `presence:settings`.
    pub settings: Option<WorkspaceSettings>,
    /// `presence:custom-statuses`: `Some` sets the status, `None` deletes it.
    pub custom_statuses: BTreeMap<CustomStatusId, Option<CustomStatus>>,
    /// The new `presence:cap` (JSON [`presence_core::CapState`]).
    pub cap: Option<presence_core::CapState>,
    /// To publish on `presence:control`, in order.
    pub control: Vec<ControlMessage>,
}

impl ShardChanges {
    /// The engine's `changes` as Redis keys and messages, with the stream
    /// `cursor` and the `replies` of the batch. A user new to the shard
    /// gets both views stored, so readers never have to guess what a
    /// missing key means.
    pub fn from_engine(
        changes: Changes,
        engine: &Engine,
        cursor: Option<StreamId>,
        replies: Vec<ReplyMessage>,
    ) -> Self {
        let mut out = ShardChanges {
            cursor,
            replies,
            counts: changes.counts,
            ..ShardChanges::default()
        };
        for (user, change) in changes.users {
            let version = change.version;
            let mut stored = UserChange {
                new_user: change.new_user,
                record: change.record,
                devices: change
                    .devices
                    .into_iter()
                    .map(|(id, device)| {
                        let device = device.map(|d| StoredDevice {
                            node: d.owner.node.to_string(),
                            conn: d.owner.conn,
                            device: d.device,
                        });
                        (id, device)
                    })
                    .collect(),
                heartbeats: change.heartbeats,
                view: change.public.map(|view| StoredView::new(&view, version)),
                self_view: change.self_view.map(|view| StoredSelf { version, view }),
            };
            if stored.new_user {
                if stored.view.is_none() {
                    stored.view = engine
                        .public_view(&user)
                        .map(|view| StoredView::new(&view, version));
                }
                if stored.self_view.is_none() {
                    stored.self_view = engine
                        .self_view(&user)
                        .map(|view| StoredSelf { version, view });
                }
            }
            out.users.insert(user.to_string(), stored);
        }
        out.notices = changes
            .replaced
            .into_iter()
            .map(|r| ReplacedMessage {
                node: r.node.to_string(),
                user: r.user.to_string(),
                replaced: r.conn,
            })
            .collect();
        let cluster = &mut out.cluster;
        for announcement in changes.announcements {
            let message = match announcement {
                Announcement::Broadcast { active } => ControlMessage::Broadcast { active },
                Announcement::Settings(settings) => {
                    cluster.settings = Some(settings.clone());
                    ControlMessage::SettingsChanged { settings }
                }
                Announcement::CustomStatus(status) => {
                    cluster
                        .custom_statuses
                        .insert(status.id.clone(), Some(status.clone()));
                    ControlMessage::CustomStatusesChanged {
                        changed: vec![status],
                        deleted: Vec::new(),
                    }
                }
                Announcement::CustomStatusDeleted(id) => {
                    cluster.custom_statuses.insert(id.clone(), None);
                    ControlMessage::CustomStatusesChanged {
                        changed: Vec::new(),
                        deleted: vec![id],
                    }
                }
            };
            cluster.control.push(message);
        }
        cluster.cap = changes.cap;
        out
    }

    /// Whether there is nothing to commit at all.
    pub fn is_empty(&self) -> bool {
        self.cursor.is_none()
            && self.users.is_empty()
            && self.replies.is_empty()
            && self.notices.is_empty()
            && self.cluster.is_empty()
            && self.counts.is_none()
    }

    /// Folds `later` (computed after `self`) into `self`, so both can be
    /// committed at once: later values win, replies and control messages
    /// keep their order.
    pub fn merge(&mut self, later: ShardChanges) {
        self.cursor = self.cursor.max(later.cursor);
        for (user, change) in later.users {
            match self.users.get_mut(&user) {
                Some(earlier) => earlier.merge(change),
                None => {
                    self.users.insert(user, change);
                }
            }
        }
        self.replies.extend(later.replies);
        self.notices.extend(later.notices);
        self.cluster.merge(later.cluster);
        if later.counts.is_some() {
            self.counts = later.counts;
        }
    }

    /// The messages to publish on `presence:{s}:updates`, one per user
    /// whose public or own view changed, stamped with the leader's lease
    /// `epoch`.
    pub fn update_messages(&self, epoch: u64) -> Vec<UpdateMessage> {
        self.users
            .iter()
            .filter_map(|(user, change)| change.update_message(user, epoch))
            .collect()
    }
}

/// The one message a commit publishes on `presence:{s}:updates` for
/// `users` (a commit batch's share of the changes): every changed view,
/// stamped with the leader's lease `epoch` and the commit time, in one
/// batch payload (`presence_protocol::cluster::encode_update_batch`), or
/// `None` when no view changed. One message per commit, not per user:
/// one `PUBLISH` for Redis to run and fan out, one message per gateway.
pub fn update_batch<'a>(
    users: impl IntoIterator<Item = (&'a str, &'a UserChange)>,
    epoch: u64,
    committed_at_us: u64,
) -> Option<String> {
    let updates: Vec<UpdateMessage> = users
        .into_iter()
        .filter_map(|(user, change)| change.update_message(user, epoch))
        .map(|update| UpdateMessage {
            committed_at_us: Some(committed_at_us),
            ..update
        })
        .collect();
    (!updates.is_empty()).then(|| encode_update_batch(&updates))
}

impl UserChange {
    /// Whether nothing is to be written for this user.
    pub fn is_empty(&self) -> bool {
        !self.new_user
            && self.record.is_none()
            && self.devices.is_empty()
            && self.heartbeats.is_empty()
            && self.view.is_none()
            && self.self_view.is_none()
    }

    /// The devices to set.
    pub fn device_upserts(&self) -> impl Iterator<Item = (&DeviceId, &StoredDevice)> {
        self.devices
            .iter()
            .filter_map(|(id, d)| d.as_ref().map(|d| (id, d)))
    }

    /// The devices to delete.
    pub fn device_removals(&self) -> impl Iterator<Item = &DeviceId> {
        self.devices
            .iter()
            .filter_map(|(id, d)| d.is_none().then_some(id))
    }

    /// The heartbeat members to set, with their deadlines.
    pub fn heartbeat_adds(&self) -> impl Iterator<Item = (&DeviceId, Timestamp)> {
        self.heartbeats
            .iter()
            .filter_map(|(id, t)| t.map(|t| (id, t)))
    }

    /// The heartbeat members to remove.
    pub fn heartbeat_removes(&self) -> impl Iterator<Item = &DeviceId> {
        self.heartbeats
            .iter()
            .filter_map(|(id, t)| t.is_none().then_some(id))
    }

    /// The update to publish for `user`, if a view changed.
    pub fn update_message(&self, user: &str, epoch: u64) -> Option<UpdateMessage> {
        if self.view.is_none() && self.self_view.is_none() {
            return None;
        }
        let version = self
            .view
            .as_ref()
            .map(|v| v.version)
            .max(self.self_view.as_ref().map(|s| s.version))
            .unwrap_or_default();
        Some(UpdateMessage {
            user: user.to_owned(),
            version,
            epoch,
            committed_at_us: None,
            public: self.view.as_ref().map(StoredView::view),
            self_view: self.self_view.as_ref().map(|s| s.view.clone()),
        })
    }

    fn merge(&mut self, later: UserChange) {
        self.new_user |= later.new_user;
        if later.record.is_some() {
            self.record = later.record;
        }
        self.devices.extend(later.devices);
        self.heartbeats.extend(later.heartbeats);
        if later.view.is_some() {
            self.view = later.view;
        }
        if later.self_view.is_some() {
            self.self_view = later.self_view;
        }
    }
}

impl ClusterChanges {
    pub fn is_empty(&self) -> bool {
        self.settings.is_none()
            && self.custom_statuses.is_empty()
            && self.cap.is_none()
            && self.control.is_empty()
    }

    fn merge(&mut self, later: ClusterChanges) {
        if later.settings.is_some() {
            self.settings = later.settings;
        }
        self.custom_statuses.extend(later.custom_statuses);
        if later.cap.is_some() {
            self.cap = later.cap;
        }
        self.control.extend(later.control);
    }
}

//! What one batch of the engine changed: [`Changes`], plain data that
//! the driver turns into its own effects. The embedded backend publishes
//! updates and writes records to its local store; a cluster shard leader
//! writes keys and publishes messages in one fenced commit.
//!
//! Per user it holds *final values*, not a log: the new record, the new
//! value of each changed device (or its deletion), each heartbeat
//! deadline to set or delete, and the views that changed, with their
//! versions. A user touched many times in one batch yields one
//! [`UserChange`].

use std::collections::BTreeMap;
use std::sync::Arc;

use presence_core::{
    CustomStatus, CustomStatusId, Device, DeviceId, PublicView, SelfView, StatusCounts, Timestamp,
    WorkspaceSettings,
};

use crate::UserRecord;

/// Everything one batch changed ([`crate::Engine::finish`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Per changed user, by user id.
    pub users: BTreeMap<Arc<str>, UserChange>,
    /// Sockets replaced by a socket of the same device on another node
    /// (D1): the node that holds each must close it.
    pub replaced: Vec<Replaced>,
    /// Workspace-wide changes, in the order they happened: what the
    /// engine that owns the workspace state (the embedded one, or shard
    /// 0's) must store and tell everyone.
    pub announcements: Vec<Announcement>,
    /// The cap state to persist, when it differs from what was last
    /// handed out (the engine that owns the cap only).
    pub cap: Option<presence_core::CapState>,
    /// The users per status, when they moved.
    pub counts: Option<StatusCounts>,
}

/// What changed for one user. Every field is a final value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserChange {
    /// The user had nothing stored before and has state now.
    pub new_user: bool,
    /// The new durable record, when the chosen state, calendar claims,
    /// preferences or profile changed. Device-only changes never make one
    /// (versions follow the clock, see `presence_core::next_version`).
    pub record: Option<UserRecord>,
    /// Whether the record holds a change of durable state (M3: store it
    /// before acknowledging) and not only a new profile.
    pub durable_changed: bool,
    /// `Some` sets the device with the socket holding it, `None` deletes
    /// it.
    pub devices: BTreeMap<DeviceId, Option<OwnedDevice>>,
    /// Heartbeat deadlines (A5, H1; only with
    /// [`crate::EngineConfig::device_timeout`]): `Some` sets one for a
    /// device that (re)connected, `None` drops the device's. A device in
    /// its grace period (D7) is timed by the engine instead.
    pub heartbeats: BTreeMap<DeviceId, Option<Timestamp>>,
    /// What others see now, when it changed.
    pub public: Option<PublicView>,
    /// What the user sees now, when it changed.
    pub self_view: Option<SelfView>,
    /// The user's version after the batch (W3): the version of the self
    /// view, moved by every visible change.
    pub version: u64,
    /// The version of the public view (W3, I3): moves only when what
    /// others see changes.
    pub public_version: u64,
}

/// A device with the socket that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedDevice {
    pub device: Device,
    pub owner: Owner,
}

/// The socket holding a device: a gateway node and a connection id that
/// is unique on that node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub node: Arc<str>,
    pub conn: u64,
}

/// Socket `conn` of `user` on `node` was replaced by a newer socket of the
/// same device on another node (D1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    pub node: Arc<str>,
    pub user: Arc<str>,
    pub conn: u64,
}

/// A workspace-wide change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// X2–X4: the broadcast was disabled (`false`) or re-enabled (`true`).
    Broadcast { active: bool },
    /// An admin changed the workspace settings.
    Settings(WorkspaceSettings),
    /// An admin created, renamed or remapped a custom status.
    CustomStatus(CustomStatus),
    /// An admin deleted a custom status.
    CustomStatusDeleted(CustomStatusId),
}

impl Changes {
    /// Whether the batch changed nothing at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.replaced.is_empty()
            && self.announcements.is_empty()
            && self.cap.is_none()
            && self.counts.is_none()
    }

    /// The broadcast transitions among the announcements, in order.
    pub fn broadcast_transitions(&self) -> impl Iterator<Item = bool> + '_ {
        self.announcements.iter().filter_map(|a| match a {
            Announcement::Broadcast { active } => Some(*active),
            _ => None,
        })
    }
}

impl UserChange {
    /// Whether nothing is to be written for this user.
    pub fn is_empty(&self) -> bool {
        !self.new_user
            && self.record.is_none()
            && self.devices.is_empty()
            && self.heartbeats.is_empty()
            && self.public.is_none()
            && self.self_view.is_none()
    }

    /// Whether the change stores something about the user (as opposed to
    /// only deleting stale heartbeat deadlines).
    pub fn has_state(&self) -> bool {
        self.record.is_some()
            || self.public.is_some()
            || self.self_view.is_some()
            || self.devices.values().any(Option::is_some)
    }
}

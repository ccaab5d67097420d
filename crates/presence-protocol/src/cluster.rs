//! Cluster wire types: what gateways, shard leaders and the shard 0 leader
//! exchange through Redis in cluster mode (`docs/cluster.md`).
//!
//! Gateways never write user state. They append a [`StreamEntry`] (a
//! [`ClusterCommand`] for one user) to the shard's event stream
//! `presence:{s}:events`; the shard's leader applies it with
//! `presence-core` and commits what changed in one fenced script, which
//! also publishes the [`UpdateMessage`]s of the changed users, one batch
//! per commit ([`encode_update_batch`]), on `presence:{s}:updates`, a [`ReplyMessage`] per entry that asked for one
//! on the asking gateway's own channel `presence:{s}:node:<node>`, and
//! [`ControlMessage`]s on `presence:{0}:control`.
//! The leader stores each user's views as [`StoredView`] and
//! [`StoredSelf`] and each device as a [`StoredDevice`].
//!
//! # Encoding
//!
//! Everything is JSON. These types only travel between processes of the
//! same build, so they use `presence-core`'s own serde forms: timestamps
//! are **integers, milliseconds since the Unix epoch** (not the RFC 3339
//! strings of the client-facing surfaces), durations are seconds, statuses
//! are lower-case strings. Validated values are validated again when they
//! are decoded ([`presence_core::StatusText`],
//! [`presence_core::CustomStatusName`]); [`presence_core::IdleTimeLimit`]
//! is not, so the gateway checks the idle floor (S2) before it sends one.
//!
//! Commands are tagged with `"type"`:
//!
//! ```json
//! {"type": "connect", "device": "d1", "platform": "web", "conn": 7, "node": "n1", "profile": {"username": "alice"}}
//! {"type": "device_event", "device": "d1", "event": "lock"}
//! {"type": "disconnect", "device": "d1", "conn": 7, "end": "lost"}
//! {"type": "set_status", "request": {"status": "busy", "text": "Presenting", "expires_at": 1700000060000}}
//! ```
//!
//! Stream entries are flat field lists (`u` user, `c` command JSON, `n`
//! node, `r` reply id, `a` = `"retry"` on a repeated append, `p` the
//! profile of the caller's token), see [`StreamEntry::to_fields`].
//!
//! # Reply ids and stored outcomes
//!
//! A reply id is unique across nodes and restarts ([`reply_id`]: the
//! node, a random per-process nonce and a counter). The leader's commit
//! stores every answer under `presence:{s}:reply:<id>` for
//! [`REPLY_OUTCOME_TTL_MS`] as a [`CommandResult`], atomically with the
//! change, so a gateway that missed the pub/sub answer reads it from
//! there, and a retried append with the same id ([`StreamEntry::retry`]) is
//! answered from there instead of being applied twice.

use std::fmt;
use std::str::FromStr;

use presence_core::{
    CapState, CustomStatus, CustomStatusId, CustomStatusName, Device, DeviceEvent, DeviceId,
    DisplayedStatus, IdleTimeLimit, Platform, PresenceError, PublicView, SelfView, StatusText,
    WorkspaceSettings,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Error code of a reply to a command sent to a shard that does not own
/// its user, or of an admin command sent to a shard other than 0.
pub const WRONG_SHARD: &str = "wrong_shard";
/// Error code of a reply to a stream entry whose command could not be
/// decoded.
pub const INVALID_COMMAND: &str = "invalid_command";

/// How long a leader keeps a reply's outcome (`presence:{s}:reply:<id>`,
/// `SET … PX`): far longer than a gateway waits for an answer (5 s) or
/// can retry an append with the same id, short enough that the keys of
/// thousands of requests a second stay a few megabytes.
pub const REPLY_OUTCOME_TTL_MS: u64 = 30_000;

/// A reply id unique across nodes and restarts: `<nonce>.<n>@<node>`, with
/// `nonce` random per process (a restarted node never reuses an id its
/// previous run may still have outcomes stored under) and `n` a
/// per-process counter. The node comes last: node ids may hold any
/// character.
pub fn reply_id(node: &str, nonce: u64, n: u64) -> String {
    format!("{nonce:016x}.{n:x}@{node}")
}

/// The shard of `user`: `fnv1a64(user id bytes) % shards` (`docs/cluster.md`).
/// `shards` must be at least 1.
pub fn shard_of(user: &str, shards: u16) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = user
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash % u64::from(shards.max(1))) as u16
}

/// The member of `presence:{s}:hb` for one device: `<user>\n<device>`.
/// User ids must not contain a newline; device ids may.
pub fn heartbeat_member(user: &str, device: &str) -> String {
    let mut member = String::with_capacity(user.len() + 1 + device.len());
    member.push_str(user);
    member.push('\n');
    member.push_str(device);
    member
}

/// Splits a heartbeat member into user and device at its first newline.
pub fn split_heartbeat_member(member: &str) -> Option<(&str, &str)> {
    member.split_once('\n')
}

/// A Redis stream entry id, `<ms>-<seq>`. Ordered like Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: before every entry (read from the start).
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not a stream id.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("'{0}' is not a stream id (expected <ms>-<seq>)")]
pub struct InvalidStreamId(String);

impl FromStr for StreamId {
    type Err = InvalidStreamId;

    /// Parses `<ms>-<seq>`; a bare `<ms>` means sequence 0, as in Redis.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidStreamId(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(Self {
            ms: ms.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// What a user's token said about them; the type lives in `presence-core`.
pub use presence_core::Profile;

/// How a socket ended (D7): `"clean"` or `"lost"` (defined in
/// `presence-core`).
pub use presence_core::SocketEnd;

/// Where a calendar event comes from (K2): `{"device": "desktop"}` or
/// `"integration"`. The type is `presence-core`'s; this name stays for
/// the cluster code.
pub use presence_core::CalendarSource as CalendarOrigin;

/// A status request (T1–T6, I2) on the wire: `text` keeps its three
/// states, absent (keep), `""` (clear), a string (set, validated by the
/// leader). The type is `presence-core`'s; this name stays for the
/// cluster code.
pub use presence_core::StatusRequest as StatusRequestBody;

/// A change of the workspace settings, already validated by the gateway
/// (the idle floor, S2); the type lives in `presence-core`.
pub use presence_core::SettingsPatch;

/// Everything a gateway can ask a shard leader, in three kinds that are
/// handled differently: a [`UserCommand`] about the entry's user, on the
/// user's shard; an [`AdminCommand`] on shard 0, whose leader owns the
/// cluster-wide settings, custom statuses and presence cap; a
/// [`ShardCommand`] about a whole shard, on any shard.
///
/// The kinds are a Rust distinction only: on the wire every command is one
/// flat JSON object tagged with `"type"`, as it always was, so entries
/// appended by an older build decode unchanged (no version field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ClusterCommand {
    User(UserCommand),
    Admin(AdminCommand),
    Shard(ShardCommand),
}

/// A command about one user (the [`StreamEntry::user`]), applied by the
/// leader of the user's shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserCommand {
    /// D1: a new socket `conn` on gateway `node`; replaces a device with
    /// the same id.
    Connect {
        device: DeviceId,
        platform: Platform,
        conn: u64,
        node: String,
        #[serde(default)]
        profile: Profile,
    },
    /// D2–D6, D8.
    DeviceEvent {
        device: DeviceId,
        event: DeviceEvent,
    },
    /// D7. Ignored unless `conn` is the device's live socket.
    Disconnect {
        device: DeviceId,
        conn: u64,
        end: SocketEnd,
    },
    /// A2, A3, M1, M2, T1–T6, I2.
    SetStatus { request: StatusRequestBody },
    /// C2.
    UseCustomStatus { id: CustomStatusId },
    /// K1, K2.
    Calendar {
        event_id: String,
        busy: bool,
        source: CalendarOrigin,
    },
    /// S1, S2 (the limit is validated by the gateway).
    SetPreferences {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auto_away: Option<bool>,
        /// Seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_time_limit: Option<IdleTimeLimit>,
    },
    /// Records the profile a token carried.
    TouchProfile { profile: Profile },
    /// R3: replaces the stored profile whole (an admin's upsert).
    PutProfile { profile: Profile },
}

/// A cluster-wide admin command, handled by shard 0's leader whatever the
/// entry's user (the admin's id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminCommand {
    /// S1, T5, I2, K1, X1.
    UpdateSettings { patch: SettingsPatch },
    /// C1. The gateway picks the id.
    CreateCustomStatus {
        id: CustomStatusId,
        name: CustomStatusName,
        status_type: DisplayedStatus,
    },
    /// C1, C3.
    UpdateCustomStatus {
        id: CustomStatusId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<CustomStatusName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_type: Option<DisplayedStatus>,
    },
    /// C1, C3.
    DeleteCustomStatus { id: CustomStatusId },
    /// X4.
    EnableBroadcast,
}

/// A command about a whole shard, for any shard; the entry's user is
/// empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShardCommand {
    /// Gateway `node` (re)started and holds no sockets yet, so every
    /// device a previous run of it registered here is gone (H2 without
    /// waiting for the node lease to lapse).
    NodeStarted { node: String },
    /// Answered once the leader has applied every entry before it,
    /// including the cluster-wide settings and custom statuses it re-reads
    /// before each batch (S1, C3). A gateway sends it to every other shard
    /// after an admin change, so the change is visible everywhere when the
    /// admin's request returns.
    Sync,
}

impl From<UserCommand> for ClusterCommand {
    fn from(command: UserCommand) -> Self {
        Self::User(command)
    }
}

impl From<AdminCommand> for ClusterCommand {
    fn from(command: AdminCommand) -> Self {
        Self::Admin(command)
    }
}

impl From<ShardCommand> for ClusterCommand {
    fn from(command: ShardCommand) -> Self {
        Self::Shard(command)
    }
}

impl ClusterCommand {
    /// Whether this is a cluster-wide admin command, for shard 0.
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin(_))
    }

    /// Whether the command is about the shard rather than one user (the
    /// entry's user is empty).
    pub fn is_shard_wide(&self) -> bool {
        matches!(self, Self::Shard(_))
    }

    /// The `"type"` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::User(c) => c.kind(),
            Self::Admin(c) => c.kind(),
            Self::Shard(c) => c.kind(),
        }
    }

    /// Decodes a command's JSON: its `"type"` says which kind it is, then
    /// only that kind is decoded (so an error names the real problem, a
    /// missing field or a bad value, not "no kind matched").
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let tag: Tag<'_> = serde_json::from_str(json)?;
        if UserCommand::KINDS.contains(&&*tag.kind) {
            serde_json::from_str(json).map(Self::User)
        } else if AdminCommand::KINDS.contains(&&*tag.kind) {
            serde_json::from_str(json).map(Self::Admin)
        } else if ShardCommand::KINDS.contains(&&*tag.kind) {
            serde_json::from_str(json).map(Self::Shard)
        } else {
            Err(serde::de::Error::custom(format_args!(
                "unknown command type `{}`",
                tag.kind
            )))
        }
    }
}

impl<'de> Deserialize<'de> for ClusterCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let json = value.to_string();
        Self::from_json(&json).map_err(serde::de::Error::custom)
    }
}

impl UserCommand {
    /// The `"type"` tags of user commands (every [`Self::kind`]).
    pub const KINDS: &[&str] = &[
        "connect",
        "device_event",
        "disconnect",
        "set_status",
        "use_custom_status",
        "calendar",
        "set_preferences",
        "touch_profile",
        "put_profile",
    ];

    /// The `"type"` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::DeviceEvent { .. } => "device_event",
            Self::Disconnect { .. } => "disconnect",
            Self::SetStatus { .. } => "set_status",
            Self::UseCustomStatus { .. } => "use_custom_status",
            Self::Calendar { .. } => "calendar",
            Self::SetPreferences { .. } => "set_preferences",
            Self::TouchProfile { .. } => "touch_profile",
            Self::PutProfile { .. } => "put_profile",
        }
    }
}

impl AdminCommand {
    /// The `"type"` tags of admin commands (every [`Self::kind`]).
    pub const KINDS: &[&str] = &[
        "update_settings",
        "create_custom_status",
        "update_custom_status",
        "delete_custom_status",
        "enable_broadcast",
    ];

    /// The `"type"` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UpdateSettings { .. } => "update_settings",
            Self::CreateCustomStatus { .. } => "create_custom_status",
            Self::UpdateCustomStatus { .. } => "update_custom_status",
            Self::DeleteCustomStatus { .. } => "delete_custom_status",
            Self::EnableBroadcast => "enable_broadcast",
        }
    }
}

impl ShardCommand {
    /// The `"type"` tags of shard-wide commands (every [`Self::kind`]).
    pub const KINDS: &[&str] = &["node_started", "sync"];

    /// The `"type"` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NodeStarted { .. } => "node_started",
            Self::Sync => "sync",
        }
    }
}

/// One entry of `presence:{s}:events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// The user the command is about (the admin's id for admin commands).
    pub user: String,
    pub command: ClusterCommand,
    /// The gateway node that appended the entry; replies go back to it.
    pub node: String,
    /// Set when the gateway waits for a [`ReplyMessage`].
    pub reply: Option<String>,
    /// The gateway appended this entry before, with the same reply id,
    /// and cannot tell whether that append reached Redis (a dropped
    /// connection, a timeout). The leader answers it from the stored
    /// outcome of that id, if any, instead of applying it again.
    pub retry: bool,
    /// What the caller's token said about the user (username, display
    /// name), recorded by the leader in the same step as the command, so a
    /// status change with a profile is one `XADD`. `None` (or an empty
    /// profile) keeps the stored one. Entries appended by older gateways
    /// carry it as a separate [`ClusterCommand::TouchProfile`] entry
    /// instead, which stays decodable.
    pub profile: Option<Profile>,
}

/// Why stream entry fields do not make a [`StreamEntry`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EntryError {
    #[error("stream entry has no field '{0}'")]
    MissingField(&'static str),
    #[error("stream entry field '{0}' is not UTF-8")]
    NotUtf8(&'static str),
    /// The envelope is fine but the command is not: the leader still
    /// answers the reply id, if any, with [`INVALID_COMMAND`].
    #[error("stream entry command is invalid: {detail}")]
    BadCommand {
        user: String,
        node: String,
        reply: Option<String>,
        detail: String,
    },
}

impl StreamEntry {
    /// The fields to `XADD`: `u`, `c`, `n`, `r` when a reply is wanted,
    /// `a` = `"retry"` on a retry, and `p` (the profile's JSON) when the
    /// entry carries a profile that is not empty.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let command =
            serde_json::to_string(&self.command).expect("cluster commands always serialize");
        let mut fields = vec![
            ("u", self.user.clone()),
            ("c", command),
            ("n", self.node.clone()),
        ];
        if let Some(reply) = &self.reply {
            fields.push(("r", reply.clone()));
        }
        if self.retry {
            fields.push(("a", "retry".to_owned()));
        }
        if let Some(profile) = self.profile.as_ref().filter(|p| !p.is_empty()) {
            let profile = serde_json::to_string(profile).expect("a profile always serializes");
            fields.push(("p", profile));
        }
        fields
    }

    /// Decodes the fields of a stream entry, as `XREAD`/`XRANGE` return
    /// them. Unknown fields are ignored; a repeated field's last value wins.
    pub fn from_fields<K, V>(fields: impl IntoIterator<Item = (K, V)>) -> Result<Self, EntryError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let (mut user, mut command, mut node, mut reply, mut attempt, mut profile) =
            (None, None, None, None, None, None);
        for (key, value) in fields {
            let slot = match key.as_ref() {
                b"u" => (&mut user, "u"),
                b"c" => (&mut command, "c"),
                b"n" => (&mut node, "n"),
                b"r" => (&mut reply, "r"),
                b"a" => (&mut attempt, "a"),
                b"p" => (&mut profile, "p"),
                _ => continue,
            };
            let text =
                std::str::from_utf8(value.as_ref()).map_err(|_| EntryError::NotUtf8(slot.1))?;
            *slot.0 = Some(text.to_owned());
        }
        let user = user.ok_or(EntryError::MissingField("u"))?;
        let node = node.ok_or(EntryError::MissingField("n"))?;
        let command = command.ok_or(EntryError::MissingField("c"))?;
        let retry = attempt.as_deref() == Some("retry");
        let decoded = ClusterCommand::from_json(&command).and_then(|command| {
            let profile = profile
                .as_deref()
                .map(serde_json::from_str::<Profile>)
                .transpose()?
                .filter(|p| !p.is_empty());
            Ok((command, profile))
        });
        match decoded {
            Ok((command, profile)) => Ok(Self {
                user,
                command,
                node,
                reply,
                retry,
                profile,
            }),
            Err(e) => Err(EntryError::BadCommand {
                user,
                node,
                reply,
                detail: e.to_string().chars().take(160).collect(),
            }),
        }
    }
}

/// A user's own view with its version (W3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSelf {
    pub version: u64,
    pub view: SelfView,
}

/// What others see of a user, with its version: the value of
/// `presence:{s}:view:<uid>`, `{"status", "text", "version"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredView {
    pub status: DisplayedStatus,
    pub text: Option<StatusText>,
    pub version: u64,
}

impl StoredView {
    pub fn new(view: &PublicView, version: u64) -> Self {
        Self {
            status: view.status,
            text: view.text.clone(),
            version,
        }
    }

    pub fn view(&self) -> PublicView {
        PublicView {
            status: self.status,
            text: self.text.clone(),
        }
    }
}

/// One device in `presence:{s}:devices:<uid>`: its state and who holds
/// its socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDevice {
    pub node: String,
    pub conn: u64,
    pub device: Device,
}

/// What a command did, as the leader answers it.
///
/// `{"ok": {...}}` or `{"error": {"code": "status_text_too_long", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandResult {
    Ok(CommandOk),
    Error(CommandError),
}

impl CommandResult {
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Error(CommandError {
            code: code.into(),
            message: message.into(),
        })
    }
}

impl From<&PresenceError> for CommandResult {
    fn from(e: &PresenceError) -> Self {
        Self::Error(CommandError::from(e))
    }
}

/// A command that succeeded. Which fields are set depends on the
/// command: `me` for every user command, `settings` for
/// `update_settings`, `custom_status` for the custom status commands (the
/// deleted one for `delete_custom_status`), `cap` for `enable_broadcast`
/// and `update_settings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<StoredSelf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<WorkspaceSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<CustomStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<CapState>,
}

/// A refused command: a stable code (a [`PresenceError::code`],
/// [`WRONG_SHARD`] or [`INVALID_COMMAND`]) and a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl From<&PresenceError> for CommandError {
    fn from(e: &PresenceError) -> Self {
        Self {
            code: e.code().to_owned(),
            message: e.to_string(),
        }
    }
}

/// An answer on the asking node's channel `presence:{s}:node:<node>`:
/// `{"node", "r", "result"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyMessage {
    /// The gateway that asked: the message goes to its channel only.
    pub node: String,
    /// The entry's reply id.
    pub r: String,
    pub result: CommandResult,
}

/// How many of a shard's users show each status, `presence:{s}:counts`:
/// kept by the shard's leader in the same commit as the views, so the
/// cluster-wide counts (A3's online count, the `presence_users` gauge) are
/// a read of `S` small keys rather than a scan of every user. The type is
/// `presence-core`'s [`presence_core::StatusCounts`]; this name stays for
/// the cluster code that reads and writes the key.
pub use presence_core::StatusCounts as StoredCounts;

/// A notice to one gateway on its channel `presence:{s}:node:<node>`, `{"node",
/// "replaced", "user"}`: its socket `replaced` of `user` was replaced by a
/// newer socket of the same device on another node (D1), so it closes it
/// with the `replaced` notice and close code 4001.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedMessage {
    pub node: String,
    pub user: String,
    pub replaced: u64,
}

/// A message on a node's channel `presence:{s}:node:<node>`: an answer or
/// a replacement notice.
/// Decode each shape directly (try [`ReplyMessage`] first), not through
/// serde's untagged buffering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMessage {
    Reply(Box<ReplyMessage>),
    Replaced(ReplacedMessage),
}

/// A change of one user, published on `presence:{s}:updates` in a batch
/// line ([`encode_update_batch`]):
/// `{"user", "version", "epoch", "committed_at_us"?, "public"?, "self"?}`.
///
/// `public` is present when what others see changed, `self` when what the
/// user sees of themselves changed; `version` is the user's version after
/// the change (W3), the version of both views that are present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateMessage {
    pub user: String,
    pub version: u64,
    /// The lease epoch of the leader that published it.
    pub epoch: u64,
    /// When the leader committed the change: its wall clock as it sent the
    /// fenced commit that also publishes this message, in microseconds
    /// since the Unix epoch. Gateways measure delivery latency from it
    /// (`presence_update_delivery_seconds`). `None` in messages of older
    /// leaders and in views a gateway re-reads on resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<PublicView>,
    #[serde(rename = "self", default, skip_serializing_if = "Option::is_none")]
    pub self_view: Option<SelfView>,
}

/// The updates of one commit batch, as one message on
/// `presence:{s}:updates`: one line per user, `<user>\t<UpdateMessage
/// JSON>`, lines separated by `\n`.
///
/// One `PUBLISH` per batch instead of one per user, and the user id of
/// each line can be read without decoding its JSON ([`UpdateLines`]), so a
/// gateway decodes only the updates of users its sockets watch. Neither
/// separator can occur inside a line: user ids hold no control characters
/// (`presence_core::UserId`), and compact JSON escapes them. A user id
/// that held one anyway would be sent with an empty prefix (`\t<JSON>`),
/// which readers must decode. A payload that starts with `{` is a single
/// [`UpdateMessage`] (what leaders published before batches).
pub fn encode_update_batch(updates: &[UpdateMessage]) -> String {
    let mut out = String::new();
    for update in updates {
        if !out.is_empty() {
            out.push('\n');
        }
        if !update.user.contains(['\t', '\n']) {
            out.push_str(&update.user);
        }
        out.push('\t');
        let json = serde_json::to_string(update).expect("an update always serializes");
        out.push_str(&json);
    }
    out
}

/// The lines of an update batch (see [`encode_update_batch`]), each with
/// the user it names, if it names one, and its JSON still undecoded.
pub fn update_lines(payload: &str) -> UpdateLines<'_> {
    UpdateLines {
        rest: (!payload.is_empty()).then_some(payload),
    }
}

/// Every update of a batch payload, decoded (tests and tools; gateways
/// peek with [`update_lines`] first).
pub fn decode_update_batch(payload: &str) -> Result<Vec<UpdateMessage>, serde_json::Error> {
    update_lines(payload).map(|line| line.decode()).collect()
}

/// An iterator over the lines of an update batch.
#[derive(Clone, Debug)]
pub struct UpdateLines<'a> {
    rest: Option<&'a str>,
}

/// One update of a batch, not decoded yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateLine<'a> {
    /// The user the update is for; `None` when the line does not say
    /// (a single-message payload, or an empty prefix): decode to know.
    pub user: Option<&'a str>,
    pub json: &'a str,
}

impl<'a> UpdateLine<'a> {
    pub fn decode(&self) -> Result<UpdateMessage, serde_json::Error> {
        serde_json::from_str(self.json)
    }
}

impl<'a> Iterator for UpdateLines<'a> {
    type Item = UpdateLine<'a>;

    fn next(&mut self) -> Option<UpdateLine<'a>> {
        let rest = self.rest?;
        if rest.starts_with('{') {
            // A single message of an older leader: the whole payload.
            self.rest = None;
            return Some(UpdateLine {
                user: None,
                json: rest,
            });
        }
        let (line, after) = match rest.split_once('\n') {
            Some((line, after)) => (line, Some(after)),
            None => (rest, None),
        };
        self.rest = after.filter(|a| !a.is_empty());
        Some(match line.split_once('\t') {
            Some((user, json)) => UpdateLine {
                user: (!user.is_empty()).then_some(user),
                json,
            },
            // Not a batch line: let the decoder say what is wrong.
            None => UpdateLine {
                user: None,
                json: line,
            },
        })
    }
}

/// A cluster-wide announcement on `presence:control`, tagged with `"type"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// X2–X4: real-time updates stopped (`false`) or resumed (`true`).
    Broadcast { active: bool },
    /// The workspace settings changed; every leader re-evaluates (S1).
    SettingsChanged { settings: WorkspaceSettings },
    /// Custom statuses were created, renamed, remapped (`changed`) or
    /// deleted; every leader updates the users using them (C3).
    CustomStatusesChanged {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed: Vec<CustomStatus>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<CustomStatusId>,
    },
}

#[cfg(test)]
mod tests;

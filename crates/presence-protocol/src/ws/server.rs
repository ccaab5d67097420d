//! Server → client frames.
//!
//! These are serialized for every subscribed socket, so they are plain
//! structs of owned strings and numbers that serde writes in one pass (an
//! internally tagged enum writes its `type` first, then the fields, without
//! buffering). The gateway serializes a `presence` update once and sends
//! the same text to every subscriber; only the user's own sockets get a
//! second variant with `me`.

use presence_core::{Platform, PresenceError, PublicView, SelfStatus, SelfView, Timestamp};
use serde::{Deserialize, Serialize};

use super::ProtocolError;
use crate::{PresenceEntry, PublicSettings, SelfState};

/// Everything the server sends. Deserialize is derived too, for test and
/// benchmark clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The first frame on every socket, once the device is registered.
    Ready(Box<Ready>),
    /// A subscribed user's presence changed, or the user's own did.
    Presence(PresenceUpdate),
    /// The reply to `query` and `subscribe`.
    Snapshot(Snapshot),
    /// Something about the connection or the service changed.
    Notice {
        kind: NoticeKind,
        /// For `token_expiring`: when the socket's authority ends (the
        /// token's `exp` plus the server's leeway) and it is closed with
        /// 4002 `token_expired` unless a `reauth` arrives first.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::rfc3339::option"
        )]
        expires_at: Option<Timestamp>,
    },
    /// A client frame was rejected. `code` is stable: the protocol codes of
    /// [`ProtocolError`] or the rule codes of [`PresenceError::code`], plus
    /// the gateway's own (rate limits, permissions).
    Error {
        code: String,
        message: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        ref_: Option<String>,
    },
    /// A client frame with a `ref` was applied.
    Ack {
        #[serde(rename = "ref")]
        ref_: String,
    },
}

impl ServerMessage {
    pub fn ready(ready: Ready) -> Self {
        Self::Ready(Box::new(ready))
    }

    pub fn snapshot(ref_: Option<String>, users: Vec<PresenceEntry>) -> Self {
        Self::Snapshot(Snapshot { ref_, users })
    }

    pub fn notice(kind: NoticeKind) -> Self {
        Self::Notice {
            kind,
            expires_at: None,
        }
    }

    /// R2: the socket's token expires at `expires_at`; send `reauth`.
    pub fn token_expiring(expires_at: Timestamp) -> Self {
        Self::Notice {
            kind: NoticeKind::TokenExpiring,
            expires_at: Some(expires_at),
        }
    }

    pub fn error(
        code: impl Into<String>,
        message: impl Into<String>,
        ref_: Option<String>,
    ) -> Self {
        Self::Error {
            code: code.into(),
            message: message.into(),
            ref_,
        }
    }

    /// The `error` reply for a rule violation, with the rule's stable code.
    pub fn from_presence_error(error: &PresenceError, ref_: Option<String>) -> Self {
        Self::error(error.code(), error.to_string(), ref_)
    }

    pub fn ack(ref_: impl Into<String>) -> Self {
        Self::Ack { ref_: ref_.into() }
    }

    /// The frame's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Ready(_) => "ready",
            Self::Presence(_) => "presence",
            Self::Snapshot(_) => "snapshot",
            Self::Notice { .. } => "notice",
            Self::Error { .. } => "error",
            Self::Ack { .. } => "ack",
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

impl From<ProtocolError> for ServerMessage {
    fn from(e: ProtocolError) -> Self {
        Self::Error {
            code: e.code.to_owned(),
            message: e.message,
            ref_: e.ref_,
        }
    }
}

impl From<PresenceUpdate> for ServerMessage {
    fn from(update: PresenceUpdate) -> Self {
        Self::Presence(update)
    }
}

/// The first frame: who the socket is, what the user looks like to
/// themselves, and the rules of the workspace and the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub me: SelfState,
    pub settings: PublicSettings,
    /// `false` while the presence cap has disabled real-time updates (X2).
    pub presence_active: bool,
    pub session: Session,
    pub limits: Limits,
}

/// The identity of this socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub device: String,
    pub platform: Platform,
}

/// Limits the server enforces on this socket; a client that respects them
/// never sees the corresponding errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest text frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// The most users one socket may be subscribed to.
    pub max_subscriptions: usize,
    /// F3: the most subscriptions one user may hold across all their
    /// sockets on this node.
    #[serde(default)]
    pub max_subscriptions_per_user: usize,
    /// The most users one `query` may name.
    pub max_query_users: usize,
}

/// One user's new presence.
///
/// `status` is what the receiver may see: one of `online`, `away`, `busy`,
/// `offline` for other users; for the user's own updates (sent to their
/// own sockets) it is their self status, which may also be `invisible`,
/// and `me` carries their full [`SelfState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUpdate {
    pub user: String,
    pub status: SelfStatus,
    pub text: Option<String>,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<Box<SelfState>>,
}

impl PresenceUpdate {
    /// The update other users receive.
    pub fn public(user: impl Into<String>, view: &PublicView, version: u64) -> Self {
        PresenceEntry::new(user, view, version).into()
    }

    /// The update the user's own sockets receive.
    pub fn own(user: impl Into<String>, view: &SelfView, version: u64) -> Self {
        let me = SelfState::new(user, view, version);
        Self {
            user: me.user.clone(),
            status: me.status,
            text: me.text.clone(),
            version,
            me: Some(Box::new(me)),
        }
    }
}

impl From<PresenceEntry> for PresenceUpdate {
    fn from(entry: PresenceEntry) -> Self {
        Self {
            user: entry.user,
            status: displayed_to_self(entry.status),
            text: entry.text,
            version: entry.version,
            me: None,
        }
    }
}

/// Users' current presence, in reply to the frame whose `ref` it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub ref_: Option<String>,
    pub users: Vec<PresenceEntry>,
}

/// What a `notice` announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// X2/X3: the presence cap was exceeded; no more `presence` updates
    /// until an admin re-enables them. Queries still answer.
    PresenceInactive,
    /// X3/X4: real-time updates are back; clients should re-query what
    /// they display, since they missed updates.
    PresenceActive,
    /// The node is draining; the socket will close (1001) shortly and the
    /// client should reconnect, with backoff.
    ShuttingDown,
    /// A newer connection with the same device id took over; this socket
    /// closes and the client must not reconnect on its own.
    Replaced,
    /// R2: the socket's token expires soon (`expires_at`); the client
    /// should send `reauth {token}` with a fresh token for the same user,
    /// or the socket is closed with 4002 `token_expired` at that moment.
    TokenExpiring,
}

fn displayed_to_self(status: presence_core::DisplayedStatus) -> SelfStatus {
    use presence_core::DisplayedStatus as D;
    match status {
        D::Online => SelfStatus::Online,
        D::Away => SelfStatus::Away,
        D::Busy => SelfStatus::Busy,
        D::Offline => SelfStatus::Offline,
    }
}

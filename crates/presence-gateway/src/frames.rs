//! Server → client frames, serialised once into shareable text.

use axum::extract::ws::Utf8Bytes;
use presence_backend::{ConnectInfo, PresenceSnapshot, SelfSnapshot};
use presence_protocol::ws::{Limits, NoticeKind, PresenceUpdate, Ready, ServerMessage, Session};
use presence_protocol::{PresenceEntry, PublicSettings, SelfState};

use crate::config::GatewayConfig;

fn text(message: &ServerMessage) -> Utf8Bytes {
    Utf8Bytes::from(message.to_json())
}

/// A `presence` update as other users receive it.
pub fn presence(snapshot: &PresenceSnapshot) -> Utf8Bytes {
    text(&PresenceUpdate::public(&*snapshot.user, &snapshot.view, snapshot.version).into())
}

/// A `presence` update for the user's own sockets, with `me`.
pub fn me(snapshot: &SelfSnapshot) -> Utf8Bytes {
    text(&PresenceUpdate::own(&*snapshot.user, &snapshot.view, snapshot.version).into())
}

pub fn snapshot(snapshots: &[PresenceSnapshot], ref_: Option<&str>) -> Utf8Bytes {
    let users = snapshots
        .iter()
        .map(|s| PresenceEntry::new(&*s.user, &s.view, s.version))
        .collect();
    text(&ServerMessage::snapshot(ref_.map(str::to_owned), users))
}

pub fn notice(kind: &str) -> Utf8Bytes {
    let kind = match kind {
        "presence_inactive" => NoticeKind::PresenceInactive,
        "presence_active" => NoticeKind::PresenceActive,
        "replaced" => NoticeKind::Replaced,
        _ => NoticeKind::ShuttingDown,
    };
    text(&ServerMessage::notice(kind))
}

pub fn error(code: &str, message: &str, ref_: Option<&str>) -> Utf8Bytes {
    text(&ServerMessage::error(
        code,
        message,
        ref_.map(str::to_owned),
    ))
}

pub fn ack(ref_: &str) -> Utf8Bytes {
    text(&ServerMessage::ack(ref_))
}

pub fn ready(
    info: &ConnectInfo,
    session: &presence_backend::Session,
    config: &GatewayConfig,
) -> Utf8Bytes {
    let ready = Ready {
        me: SelfState::new(&*info.me.user, &info.me.view, info.me.version),
        settings: PublicSettings::from(&*info.settings),
        presence_active: info.presence_active,
        session: Session {
            user: session.user.to_string(),
            device: session.device.to_string(),
            platform: session.platform,
        },
        limits: limits(config),
    };
    text(&ServerMessage::ready(ready))
}

/// The limits a socket is told in `ready`, and held to when its frames
/// are parsed.
pub fn limits(config: &GatewayConfig) -> Limits {
    Limits {
        max_frame_bytes: config.max_frame_bytes,
        max_subscriptions: config.max_subscriptions,
        max_subscriptions_per_user: config.max_subscriptions_per_user,
        max_query_users: config.max_query_users,
    }
}

//! Server → client frames serialize to exactly the documented JSON, and
//! parse back for test and benchmark clients.

use presence_core::{
    ChosenStatus, CustomStatusId, DisplayedStatus, EffectivePreferences, IdleTimeLimit, Platform,
    PresenceError, PublicView, SelfStatus, SelfView, StatusText, Timestamp, WorkspaceSettings,
};
use presence_protocol::ws::{
    Limits, NoticeKind, PresenceUpdate, ProtocolError, Ready, ServerMessage, Session,
    parse_client_message,
};
use presence_protocol::{PresenceEntry, PublicSettings, SelfState};
use serde_json::{Value, json};

/// `message` serializes to exactly `expected`, and `expected` parses back
/// to `message`.
fn check(message: ServerMessage, expected: Value) {
    let text = message.to_json();
    let written: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(written, expected, "{text}");
    assert_eq!(
        serde_json::from_value::<ServerMessage>(expected).unwrap(),
        message
    );
    assert_eq!(written["type"], message.type_name());
}

/// 2026-11-28T12:00:00Z
const NOV_28: i64 = 1_795_867_200_000;

fn text(s: &str) -> Option<StatusText> {
    StatusText::parse(s).unwrap()
}

fn invisible_self_view() -> SelfView {
    SelfView {
        status: SelfStatus::Invisible,
        text: text("Heads down"),
        chosen: ChosenStatus::Invisible,
        custom_status: Some(CustomStatusId::try_from("cs-7").unwrap()),
        expires_at: Some(Timestamp::from_millis(NOV_28)),
        calendar_busy: false,
        connection: DisplayedStatus::Away,
        devices: 2,
        preferences: EffectivePreferences {
            auto_away: false,
            idle_time_limit: IdleTimeLimit::new(600).unwrap(),
        },
    }
}

fn invisible_self_json(version: u64) -> Value {
    json!({
        "user": "alice",
        "status": "invisible",
        "text": "Heads down",
        "chosen": "invisible",
        "custom_status": "cs-7",
        "expires_at": "2026-11-28T12:00:00.000Z",
        "calendar_busy": false,
        "connection": "away",
        "devices": 2,
        "auto_away": false,
        "idle_time_limit": 600,
        "version": version,
    })
}

#[test]
fn ready() {
    check(
        ServerMessage::ready(Ready {
            me: SelfState::new("alice", &invisible_self_view(), 7),
            settings: PublicSettings::from(&WorkspaceSettings::default()),
            presence_active: true,
            session: Session {
                user: "alice".into(),
                device: "laptop-1".into(),
                platform: Platform::Desktop,
            },
            limits: Limits {
                max_frame_bytes: 4096,
                max_subscriptions: 1000,
                max_subscriptions_per_user: 4000,
                max_query_users: 500,
            },
        }),
        json!({
            "type": "ready",
            "me": invisible_self_json(7),
            "settings": {
                "allow_custom_status_text": true,
                "allow_invisible": true,
                "calendar_integration": false,
                "default_auto_away": true,
                "default_idle_time_limit": 300,
            },
            "presence_active": true,
            "session": {"user": "alice", "device": "laptop-1", "platform": "desktop"},
            "limits": {"max_frame_bytes": 4096, "max_subscriptions": 1000, "max_subscriptions_per_user": 4000, "max_query_users": 500},
        }),
    );
}

#[test]
fn self_state_writes_null_for_absent_values() {
    let view = SelfView {
        status: SelfStatus::Offline,
        text: None,
        chosen: ChosenStatus::Online,
        custom_status: None,
        expires_at: None,
        calendar_busy: true,
        connection: DisplayedStatus::Offline,
        devices: 0,
        preferences: EffectivePreferences {
            auto_away: true,
            idle_time_limit: IdleTimeLimit::default(),
        },
    };
    assert_eq!(
        serde_json::to_value(SelfState::new("bob", &view, 0)).unwrap(),
        json!({
            "user": "bob",
            "status": "offline",
            "text": null,
            "chosen": "online",
            "custom_status": null,
            "expires_at": null,
            "calendar_busy": true,
            "connection": "offline",
            "devices": 0,
            "auto_away": true,
            "idle_time_limit": 300,
            "version": 0,
        })
    );
}

#[test]
fn presence_for_others() {
    let busy = PublicView {
        status: DisplayedStatus::Busy,
        text: text("In a meeting"),
    };
    check(
        PresenceUpdate::public("bob", &busy, 42).into(),
        json!({"type": "presence", "user": "bob", "status": "busy", "text": "In a meeting", "version": 42}),
    );
    let offline = PublicView {
        status: DisplayedStatus::Offline,
        text: None,
    };
    check(
        PresenceUpdate::public("carol", &offline, 3).into(),
        json!({"type": "presence", "user": "carol", "status": "offline", "text": null, "version": 3}),
    );
}

#[test]
fn presence_for_oneself_carries_me() {
    check(
        PresenceUpdate::own("alice", &invisible_self_view(), 8).into(),
        json!({
            "type": "presence",
            "user": "alice",
            "status": "invisible",
            "text": "Heads down",
            "version": 8,
            "me": invisible_self_json(8),
        }),
    );
}

#[test]
fn snapshot() {
    let entries = vec![
        PresenceEntry::new(
            "bob",
            &PublicView {
                status: DisplayedStatus::Away,
                text: None,
            },
            5,
        ),
        PresenceEntry::new(
            "dave",
            &PublicView {
                status: DisplayedStatus::Online,
                text: text("  Out for lunch 🌮  "),
            },
            1,
        ),
    ];
    check(
        ServerMessage::snapshot(Some("q1".into()), entries.clone()),
        json!({
            "type": "snapshot",
            "ref": "q1",
            "users": [
                {"user": "bob", "status": "away", "text": null, "version": 5},
                {"user": "dave", "status": "online", "text": "Out for lunch 🌮", "version": 1},
            ],
        }),
    );
    check(
        ServerMessage::snapshot(None, vec![]),
        json!({"type": "snapshot", "users": []}),
    );
}

#[test]
fn notices() {
    for (kind, name) in [
        (NoticeKind::PresenceInactive, "presence_inactive"),
        (NoticeKind::PresenceActive, "presence_active"),
        (NoticeKind::ShuttingDown, "shutting_down"),
        (NoticeKind::Replaced, "replaced"),
    ] {
        check(
            ServerMessage::notice(kind),
            json!({"type": "notice", "kind": name}),
        );
    }
}

#[test]
fn errors_and_acks() {
    check(
        ServerMessage::error("rate_limited", "slow down", None),
        json!({"type": "error", "code": "rate_limited", "message": "slow down"}),
    );
    check(
        ServerMessage::from_presence_error(&PresenceError::InvisibleDisabled, Some("r".into())),
        json!({
            "type": "error",
            "code": "invisible_disabled",
            "message": "invisible status is disabled in this workspace",
            "ref": "r",
        }),
    );
    check(
        ServerMessage::ack("r-2"),
        json!({"type": "ack", "ref": "r-2"}),
    );
}

#[test]
fn protocol_errors_become_error_frames_that_echo_the_ref() {
    let err = parse_client_message(r#"{"type":"subscribe","ref":11}"#).unwrap_err();
    assert_eq!(err.code, ProtocolError::INVALID_MESSAGE);
    check(
        err.into(),
        json!({
            "type": "error",
            "code": "invalid_message",
            "message": "`subscribe` needs field `users` (an array of strings)",
            "ref": "11",
        }),
    );
}

//! Round trips of every cluster wire type and variant, plus the exact JSON
//! of the shapes other components rely on.

use presence_core::{
    AwayReason, CapState, ChosenStatus, CustomStatus, CustomStatusId, CustomStatusName, Device,
    DeviceEvent, DeviceId, DisplayedStatus, EffectivePreferences, IdleTimeLimit, Link, Platform,
    PresenceError, PublicView, SelfStatus, SelfView, StatusText, Timestamp, WorkspaceSettings,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;

const T: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) -> String {
    let json = serde_json::to_string(value).expect("serializes");
    let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(&back, value, "round trip of {json}");
    json
}

fn dev(id: &str) -> DeviceId {
    DeviceId::try_from(id).unwrap()
}

fn custom(id: &str, name: &str, status_type: DisplayedStatus) -> CustomStatus {
    CustomStatus {
        id: CustomStatusId::try_from(id).unwrap(),
        name: CustomStatusName::parse(name).unwrap(),
        status_type,
        updated_at: T,
    }
}

fn self_view() -> SelfView {
    SelfView {
        status: SelfStatus::Busy,
        text: StatusText::parse("In a meeting").unwrap(),
        chosen: ChosenStatus::Busy,
        custom_status: Some(CustomStatusId::try_from("cs1").unwrap()),
        expires_at: Some(T),
        calendar_busy: false,
        connection: DisplayedStatus::Away,
        devices: 2,
        preferences: EffectivePreferences {
            auto_away: true,
            idle_time_limit: IdleTimeLimit::new(300).unwrap(),
        },
    }
}

fn every_command() -> Vec<ClusterCommand> {
    vec![
        ClusterCommand::User(UserCommand::Connect {
            device: dev("d1"),
            platform: Platform::Desktop,
            conn: 7,
            node: "n1".into(),
            profile: Profile {
                username: Some("alice".into()),
                name: Some("Alice A.".into()),
                utc_offset: None,
            },
        }),
        ClusterCommand::User(UserCommand::Connect {
            device: dev("d2"),
            platform: Platform::Mobile,
            conn: u64::MAX,
            node: "n2".into(),
            profile: Profile::default(),
        }),
        ClusterCommand::User(UserCommand::DeviceEvent {
            device: dev("d1"),
            event: DeviceEvent::Lock,
        }),
        ClusterCommand::User(UserCommand::Disconnect {
            device: dev("d1"),
            conn: 7,
            end: SocketEnd::Clean,
        }),
        ClusterCommand::User(UserCommand::Disconnect {
            device: dev("d1"),
            conn: 8,
            end: SocketEnd::Lost,
        }),
        ClusterCommand::User(UserCommand::SetStatus {
            request: StatusRequestBody {
                status: Some(ChosenStatus::Busy),
                text: Some("Presenting 🎤".into()),
                expires_at: Some(T),
            },
        }),
        ClusterCommand::User(UserCommand::SetStatus {
            request: StatusRequestBody {
                status: None,
                text: Some(String::new()),
                expires_at: None,
            },
        }),
        ClusterCommand::User(UserCommand::SetStatus {
            request: StatusRequestBody::default(),
        }),
        ClusterCommand::User(UserCommand::UseCustomStatus {
            id: CustomStatusId::try_from("cs1").unwrap(),
        }),
        ClusterCommand::User(UserCommand::Calendar {
            event_id: "ev-1".into(),
            busy: true,
            source: CalendarOrigin::Device(Platform::Desktop),
        }),
        ClusterCommand::User(UserCommand::Calendar {
            event_id: "ev-1".into(),
            busy: false,
            source: CalendarOrigin::Integration,
        }),
        ClusterCommand::User(UserCommand::SetPreferences {
            auto_away: Some(false),
            idle_time_limit: Some(IdleTimeLimit::new(600).unwrap()),
        }),
        ClusterCommand::User(UserCommand::SetPreferences {
            auto_away: None,
            idle_time_limit: None,
        }),
        ClusterCommand::User(UserCommand::TouchProfile {
            profile: Profile {
                username: Some("bob".into()),
                name: None,
                utc_offset: None,
            },
        }),
        ClusterCommand::User(UserCommand::PutProfile {
            profile: Profile {
                username: Some("bob.b".into()),
                name: Some("Bob B".into()),
                utc_offset: Some(presence_core::UtcOffset::from_minutes(-210).unwrap()),
            },
        }),
        ClusterCommand::Admin(AdminCommand::UpdateSettings {
            patch: SettingsPatch {
                allow_custom_status_text: Some(false),
                allow_invisible: Some(false),
                calendar_integration: Some(true),
                default_auto_away: Some(false),
                default_idle_time_limit: Some(IdleTimeLimit::new(120).unwrap()),
                cap: Some(0),
            },
        }),
        ClusterCommand::Admin(AdminCommand::UpdateSettings {
            patch: SettingsPatch::default(),
        }),
        ClusterCommand::Admin(AdminCommand::CreateCustomStatus {
            id: CustomStatusId::try_from("cs2").unwrap(),
            name: CustomStatusName::parse("On vacation").unwrap(),
            status_type: DisplayedStatus::Away,
        }),
        ClusterCommand::Admin(AdminCommand::UpdateCustomStatus {
            id: CustomStatusId::try_from("cs2").unwrap(),
            name: Some(CustomStatusName::parse("Holidays").unwrap()),
            status_type: Some(DisplayedStatus::Offline),
        }),
        ClusterCommand::Admin(AdminCommand::UpdateCustomStatus {
            id: CustomStatusId::try_from("cs2").unwrap(),
            name: None,
            status_type: None,
        }),
        ClusterCommand::Admin(AdminCommand::DeleteCustomStatus {
            id: CustomStatusId::try_from("cs2").unwrap(),
        }),
        ClusterCommand::Admin(AdminCommand::EnableBroadcast),
    ]
}

#[test]
fn every_command_round_trips_as_json_and_as_stream_fields() {
    for (i, command) in every_command().into_iter().enumerate() {
        let json = round_trip(&command);
        assert!(
            json.contains(&format!("\"type\":\"{}\"", command.kind())),
            "{json} is tagged with its kind"
        );
        let entry = StreamEntry {
            user: format!("user-{i}"),
            command,
            node: "node-a".into(),
            reply: (i % 2 == 0).then(|| format!("r{i}")),
            retry: i % 4 == 0,
            profile: (i % 3 == 0).then(|| Profile {
                username: Some(format!("user{i}")),
                name: None,
                utc_offset: None,
            }),
        };
        let fields = entry.to_fields();
        let expected = 3
            + usize::from(entry.reply.is_some())
            + usize::from(entry.retry)
            + usize::from(entry.profile.is_some());
        assert_eq!(fields.len(), expected);
        assert_eq!(StreamEntry::from_fields(fields), Ok(entry));
    }
}

#[test]
fn admin_commands_are_exactly_the_cluster_wide_ones() {
    let admin: Vec<&str> = every_command()
        .iter()
        .filter(|c| c.is_admin())
        .map(ClusterCommand::kind)
        .collect();
    assert_eq!(
        admin,
        [
            "update_settings",
            "update_settings",
            "create_custom_status",
            "update_custom_status",
            "update_custom_status",
            "delete_custom_status",
            "enable_broadcast"
        ]
    );
}

#[test]
fn command_json_has_the_documented_shape() {
    let connect = ClusterCommand::User(UserCommand::Connect {
        device: dev("d1"),
        platform: Platform::Web,
        conn: 7,
        node: "n1".into(),
        profile: Profile {
            username: Some("alice".into()),
            name: None,
            utc_offset: None,
        },
    });
    assert_eq!(
        serde_json::to_string(&connect).unwrap(),
        r#"{"type":"connect","device":"d1","platform":"web","conn":7,"node":"n1","profile":{"username":"alice"}}"#
    );
    let set = ClusterCommand::User(UserCommand::SetStatus {
        request: StatusRequestBody {
            status: Some(ChosenStatus::Invisible),
            text: None,
            expires_at: Some(T),
        },
    });
    assert_eq!(
        serde_json::to_string(&set).unwrap(),
        r#"{"type":"set_status","request":{"status":"invisible","expires_at":1700000000000}}"#
    );
    let calendar = ClusterCommand::User(UserCommand::Calendar {
        event_id: "e".into(),
        busy: true,
        source: CalendarOrigin::Device(Platform::Desktop),
    });
    assert_eq!(
        serde_json::to_string(&calendar).unwrap(),
        r#"{"type":"calendar","event_id":"e","busy":true,"source":{"device":"desktop"}}"#
    );
    // A connect without a profile decodes to an empty one.
    let bare: ClusterCommand = serde_json::from_str(
        r#"{"type":"connect","device":"d","platform":"mobile","conn":1,"node":"n"}"#,
    )
    .unwrap();
    assert!(
        matches!(bare, ClusterCommand::User(UserCommand::Connect { profile, .. }) if profile.is_empty())
    );
}

#[test]
fn t4_status_request_text_keeps_its_three_states() {
    for text in [None, Some(""), Some("Lunch")] {
        let body = StatusRequestBody {
            status: None,
            text: text.map(str::to_owned),
            expires_at: None,
        };
        let json = round_trip(&body);
        assert_eq!(json.contains("\"text\""), text.is_some(), "{json}");
    }
}

#[test]
fn calendar_origin_has_the_documented_shape() {
    for (source, json) in [
        (CalendarOrigin::Integration, r#""integration""#),
        (
            CalendarOrigin::Device(Platform::Desktop),
            r#"{"device":"desktop"}"#,
        ),
    ] {
        assert_eq!(round_trip(&source), json);
    }
}

#[test]
fn settings_patch_applies_only_present_fields() {
    let base = WorkspaceSettings::default();
    assert_eq!(SettingsPatch::default().apply_to(&base), base);
    let patched = SettingsPatch {
        allow_invisible: Some(false),
        cap: Some(5),
        ..SettingsPatch::default()
    }
    .apply_to(&base);
    assert!(!patched.allow_invisible);
    assert_eq!(patched.cap, 5);
    assert_eq!(
        patched.default_idle_time_limit,
        base.default_idle_time_limit
    );
}

#[test]
fn stream_entry_field_errors_name_the_field() {
    let ok = [
        ("u", "alice"),
        ("c", r#"{"type":"enable_broadcast"}"#),
        ("n", "n1"),
    ];
    assert!(StreamEntry::from_fields(ok).is_ok());
    assert_eq!(
        StreamEntry::from_fields([("c", "{}"), ("n", "n1")]),
        Err(EntryError::MissingField("u"))
    );
    assert_eq!(
        StreamEntry::from_fields([("u", "a"), ("c", "{}")]),
        Err(EntryError::MissingField("n"))
    );
    assert_eq!(
        StreamEntry::from_fields([("u", "a"), ("n", "n1")]),
        Err(EntryError::MissingField("c"))
    );
    let bytes: [(&[u8], &[u8]); 3] = [(b"u", b"\xff"), (b"c", b"{}"), (b"n", b"n")];
    assert_eq!(
        StreamEntry::from_fields(bytes),
        Err(EntryError::NotUtf8("u"))
    );
    // An unknown command keeps the envelope, so the leader can answer it.
    let bad = StreamEntry::from_fields([
        ("u", "alice"),
        ("c", r#"{"type":"teleport"}"#),
        ("n", "n1"),
        ("r", "r9"),
        ("extra", "ignored"),
    ]);
    match bad {
        Err(EntryError::BadCommand {
            user, node, reply, ..
        }) => {
            assert_eq!((user.as_str(), node.as_str()), ("alice", "n1"));
            assert_eq!(reply.as_deref(), Some("r9"));
        }
        other => panic!("expected BadCommand, got {other:?}"),
    }
    // A custom status name is validated again when decoded (C1).
    let invalid_name = StreamEntry::from_fields([
        ("u", "admin"),
        (
            "c",
            r#"{"type":"create_custom_status","id":"x","name":"<b>","status_type":"busy"}"#,
        ),
        ("n", "n1"),
    ]);
    assert!(matches!(invalid_name, Err(EntryError::BadCommand { .. })));
}

#[test]
fn stream_ids_parse_print_and_order_like_redis() {
    let id: StreamId = "1700000000000-3".parse().unwrap();
    assert_eq!(id, StreamId::new(1_700_000_000_000, 3));
    assert_eq!(id.to_string(), "1700000000000-3");
    assert_eq!("42".parse::<StreamId>().unwrap(), StreamId::new(42, 0));
    assert!("x-1".parse::<StreamId>().is_err());
    assert!("1-".parse::<StreamId>().is_err());
    assert!(StreamId::new(1, 9) < StreamId::new(2, 0));
    assert!(StreamId::new(2, 0) < StreamId::new(2, 1));
    assert_eq!(round_trip(&id), "\"1700000000000-3\"");
}

#[test]
fn shard_of_is_fnv1a64_modulo_shards() {
    // FNV-1a 64 of "" is the offset basis, of "a" a published test vector.
    assert_eq!(
        shard_of("", 1 << 15),
        (0xcbf2_9ce4_8422_2325_u64 % (1 << 15)) as u16
    );
    assert_eq!(
        shard_of("a", 1 << 15),
        (0xaf63_dc4c_8601_ec8c_u64 % (1 << 15)) as u16
    );
    assert_eq!(shard_of("alice", 1), 0);
    assert_eq!(shard_of("alice", 0), 0, "0 shards is treated as 1");
    let spread: std::collections::BTreeSet<u16> = (0..200)
        .map(|i| shard_of(&format!("user-{i}"), 16))
        .collect();
    assert_eq!(spread.len(), 16, "200 users reach every one of 16 shards");
}

#[test]
fn heartbeat_members_split_at_the_first_newline() {
    let member = heartbeat_member("alice", "web\n2");
    assert_eq!(member, "alice\nweb\n2");
    assert_eq!(split_heartbeat_member(&member), Some(("alice", "web\n2")));
    assert_eq!(split_heartbeat_member("no-newline"), None);
}

#[test]
fn command_results_round_trip() {
    let results = [
        CommandResult::Ok(CommandOk::default()),
        CommandResult::Ok(CommandOk {
            me: Some(StoredSelf {
                version: 9,
                view: self_view(),
            }),
            settings: Some(WorkspaceSettings::default()),
            custom_status: Some(custom("cs1", "Lunch", DisplayedStatus::Away)),
            cap: Some(CapState::new(200)),
        }),
        CommandResult::from(&PresenceError::StatusTextTooLong { len: 130, max: 120 }),
        CommandResult::error(WRONG_SHARD, "user belongs to shard 3"),
    ];
    for result in &results {
        round_trip(result);
    }
    assert_eq!(serde_json::to_string(&results[0]).unwrap(), r#"{"ok":{}}"#);
    assert_eq!(
        serde_json::to_string(&results[2]).unwrap(),
        r#"{"error":{"code":"status_text_too_long","message":"status text is 130 characters long; the limit is 120"}}"#
    );
    let reply = ReplyMessage {
        node: "n1".into(),
        r: "r1".into(),
        result: results[1].clone(),
    };
    round_trip(&reply);
}

#[test]
fn stored_values_round_trip() {
    let view = PublicView {
        status: DisplayedStatus::Busy,
        text: StatusText::parse("Focus").unwrap(),
    };
    let stored = StoredView::new(&view, 12);
    assert_eq!(
        round_trip(&stored),
        r#"{"status":"busy","text":"Focus","version":12}"#
    );
    assert_eq!(stored.view(), view);
    round_trip(&StoredView::new(
        &PublicView {
            status: DisplayedStatus::Offline,
            text: None,
        },
        0,
    ));
    round_trip(&StoredSelf {
        version: 3,
        view: self_view(),
    });
    let mut device = Device::connect(Platform::Desktop, T);
    device.locked = true;
    device.link = Link::Lost { until: T };
    round_trip(&StoredDevice {
        node: "n1".into(),
        conn: 3,
        device,
    });
    // The away reason type is part of views; make sure it stays plain.
    assert_eq!(
        serde_json::to_string(&AwayReason::Idle).unwrap(),
        "\"idle\""
    );
}

#[test]
fn update_messages_round_trip_with_either_view() {
    let public = PublicView {
        status: DisplayedStatus::Online,
        text: None,
    };
    let messages = [
        UpdateMessage {
            user: "alice".into(),
            version: 5,
            epoch: 2,
            committed_at_us: Some(1_700_000_000_123_456),
            public: Some(public.clone()),
            self_view: Some(self_view()),
        },
        UpdateMessage {
            user: "alice".into(),
            version: 6,
            epoch: 2,
            committed_at_us: None,
            public: None,
            self_view: Some(self_view()),
        },
        UpdateMessage {
            user: "bob".into(),
            version: 7,
            epoch: 3,
            committed_at_us: None,
            public: Some(public),
            self_view: None,
        },
    ];
    for message in &messages {
        round_trip(message);
    }
    assert_eq!(
        serde_json::to_string(&messages[2]).unwrap(),
        r#"{"user":"bob","version":7,"epoch":3,"public":{"status":"online","text":null}}"#
    );
    assert!(
        serde_json::to_string(&messages[0])
            .unwrap()
            .contains(r#""committed_at_us":1700000000123456"#)
    );
}

#[test]
fn control_messages_round_trip() {
    let settings = WorkspaceSettings {
        allow_invisible: false,
        ..WorkspaceSettings::default()
    };
    let messages = [
        ControlMessage::Broadcast { active: false },
        ControlMessage::Broadcast { active: true },
        ControlMessage::SettingsChanged { settings },
        ControlMessage::CustomStatusesChanged {
            changed: vec![custom("cs1", "Lunch", DisplayedStatus::Away)],
            deleted: vec![CustomStatusId::try_from("cs0").unwrap()],
        },
        ControlMessage::CustomStatusesChanged {
            changed: vec![],
            deleted: vec![],
        },
    ];
    for message in &messages {
        round_trip(message);
    }
    assert_eq!(
        serde_json::to_string(&messages[0]).unwrap(),
        r#"{"type":"broadcast","active":false}"#
    );
}

/// A status change and the profile its token carried travel in one entry
/// (one `XADD`); an empty profile is not sent, and an entry without `p`
/// (older gateways) decodes with no profile.
#[test]
fn the_profile_travels_in_the_same_entry_and_an_empty_one_is_not_sent() {
    let mut entry = StreamEntry {
        user: "alice".into(),
        command: ClusterCommand::Shard(ShardCommand::Sync),
        node: "n1".into(),
        reply: None,
        retry: false,
        profile: Some(Profile::default()),
    };
    assert!(entry.to_fields().iter().all(|(k, _)| *k != "p"));
    entry.profile = None;
    assert_eq!(
        StreamEntry::from_fields(entry.to_fields()),
        Ok(entry.clone())
    );
    let fields = vec![
        ("u", "alice"),
        ("c", r#"{"type":"sync"}"#),
        ("n", "n1"),
        ("p", r#"{"username":"al","name":"Alice"}"#),
    ];
    let decoded = StreamEntry::from_fields(fields).unwrap();
    assert_eq!(
        decoded.profile,
        Some(Profile {
            username: Some("al".into()),
            name: Some("Alice".into()),
            utc_offset: None,
        })
    );
    let bad = vec![
        ("u", "alice"),
        ("c", r#"{"type":"sync"}"#),
        ("n", "n1"),
        ("p", "{"),
    ];
    assert!(matches!(
        StreamEntry::from_fields(bad),
        Err(EntryError::BadCommand { .. })
    ));
}

#[test]
fn each_kind_lists_exactly_its_commands_tags() {
    let mut seen: Vec<&str> = Vec::new();
    for command in every_command().into_iter().chain([
        ShardCommand::NodeStarted { node: "n".into() }.into(),
        ShardCommand::Sync.into(),
    ]) {
        let (kind, list) = match &command {
            ClusterCommand::User(c) => (c.kind(), UserCommand::KINDS),
            ClusterCommand::Admin(c) => (c.kind(), AdminCommand::KINDS),
            ClusterCommand::Shard(c) => (c.kind(), ShardCommand::KINDS),
        };
        assert!(list.contains(&kind), "{kind} is listed with its kind");
        seen.push(kind);
    }
    let mut listed: Vec<&str> =
        [UserCommand::KINDS, AdminCommand::KINDS, ShardCommand::KINDS].concat();
    listed.sort_unstable();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen, listed,
        "every listed tag has a command, and no tag is listed twice"
    );
}

#[test]
fn entries_of_the_flat_format_decode_into_their_kind() {
    let cases = [
        (
            r#"{"type":"device_event","device":"d1","event":"lock"}"#,
            "user",
        ),
        (r#"{"type":"enable_broadcast"}"#, "admin"),
        (r#"{"type":"delete_custom_status","id":"cs1"}"#, "admin"),
        (r#"{"type":"node_started","node":"n1"}"#, "shard"),
        (r#"{"type":"sync"}"#, "shard"),
    ];
    for (json, expected) in cases {
        let command = ClusterCommand::from_json(json).expect(json);
        let kind = match command {
            ClusterCommand::User(_) => "user",
            ClusterCommand::Admin(_) => "admin",
            ClusterCommand::Shard(_) => "shard",
        };
        assert_eq!(kind, expected, "{json}");
        assert_eq!(
            serde_json::to_string(&command).unwrap(),
            json,
            "same bytes back"
        );
    }
    let missing = ClusterCommand::from_json(r#"{"type":"disconnect","device":"d1"}"#);
    let message = missing.expect_err("a field is missing").to_string();
    assert!(
        message.contains("conn"),
        "the error names the field: {message}"
    );
    let unknown = ClusterCommand::from_json(r#"{"type":"teleport"}"#);
    assert!(
        unknown
            .expect_err("unknown")
            .to_string()
            .contains("teleport")
    );
}

fn update(user: &str, version: u64) -> UpdateMessage {
    UpdateMessage {
        user: user.to_owned(),
        version,
        epoch: 3,
        committed_at_us: Some(1_700_000_000_000_001),
        public: Some(PublicView {
            status: DisplayedStatus::Busy,
            text: StatusText::parse("out {\"back\"}: 2 pm").unwrap(),
        }),
        self_view: None,
    }
}

/// W3 across a batch: every update of a commit batch travels in one
/// message, in order, each line naming its user before its JSON.
#[test]
fn w3_update_batches_round_trip_in_order_and_name_each_user_up_front() {
    let updates = vec![update("ann", 4), update("ben", 9), update("ann", 5)];
    let payload = encode_update_batch(&updates);
    let users: Vec<Option<&str>> = update_lines(&payload).map(|l| l.user).collect();
    assert_eq!(users, vec![Some("ann"), Some("ben"), Some("ann")]);
    assert_eq!(decode_update_batch(&payload).unwrap(), updates);
    assert_eq!(payload.lines().count(), 3);
}

#[test]
fn update_batches_read_single_messages_and_unnamed_lines() {
    let single = serde_json::to_string(&update("cy", 2)).unwrap();
    let lines: Vec<UpdateLine<'_>> = update_lines(&single).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].user, None, "decode to learn the user");
    assert_eq!(lines[0].decode().unwrap(), update("cy", 2));

    // A user id with a separator (never valid) is sent unnamed.
    let odd = update("d\tx", 1);
    let payload = encode_update_batch(std::slice::from_ref(&odd));
    let line = update_lines(&payload).next().unwrap();
    assert_eq!(line.user, None);
    assert_eq!(line.decode().unwrap(), odd);

    assert_eq!(update_lines("").count(), 0);
    assert!(decode_update_batch("ann\tnot json").is_err());
}

//! Client → server frames: what parses, and the exact error code (and
//! echoed `ref`) for everything that does not.

use presence_core::{ChosenStatus, CustomStatusId, DeviceEvent, Timestamp, UserId};
use presence_protocol::StatusChange;
use presence_protocol::ws::{
    ClientFrame, ClientMessage, MAX_REF_CHARS, ProtocolError, parse_client_message,
};

/// What a frame should parse into.
enum Expect {
    /// The frame parses to this message with this `ref`.
    Parses(Option<&'static str>, ClientMessage),
    /// The frame is refused with this code and `ref`, and the message
    /// contains this text.
    Fails(&'static str, Option<&'static str>, &'static str),
}
use Expect::{Fails, Parses};

fn check(frame: &str, expect: Expect) {
    let got = parse_client_message(frame);
    match expect {
        Parses(ref_, message) => {
            let expected = ClientFrame {
                ref_: ref_.map(str::to_owned),
                message,
            };
            assert_eq!(got, Ok(expected), "frame {frame}");
        }
        Fails(code, ref_, mention) => {
            let err = got.expect_err(frame);
            assert_eq!(err.code, code, "frame {frame}: {err:?}");
            assert_eq!(err.ref_.as_deref(), ref_, "frame {frame}: {err:?}");
            assert!(
                err.message.contains(mention),
                "frame {frame}: {:?} does not mention {mention:?}",
                err.message
            );
            assert!(
                err.message.chars().count() <= 200,
                "frame {frame}: message too long: {}",
                err.message
            );
        }
    }
}

fn users(ids: &[&str]) -> Vec<UserId> {
    ids.iter().map(|s| UserId::try_from(*s).unwrap()).collect()
}

fn custom(id: &str) -> CustomStatusId {
    CustomStatusId::try_from(id).unwrap()
}

fn set_status(
    status: Option<ChosenStatus>,
    text: Option<&str>,
    expires_at: Option<i64>,
) -> ClientMessage {
    ClientMessage::SetStatus(StatusChange {
        status,
        text: text.map(str::to_owned),
        expires_at: expires_at.map(Timestamp::from_millis),
    })
}

/// 2026-11-28T12:00:00Z
const NOV_28: i64 = 1_795_867_200_000;

const INVALID_JSON: &str = ProtocolError::INVALID_JSON;
const INVALID_REF: &str = ProtocolError::INVALID_REF;
const MISSING_TYPE: &str = ProtocolError::MISSING_TYPE;
const UNKNOWN_TYPE: &str = ProtocolError::UNKNOWN_TYPE;
const INVALID_MESSAGE: &str = ProtocolError::INVALID_MESSAGE;

#[test]
fn every_client_message_type_parses() {
    use ClientMessage as M;
    check(r#"{"type":"activity"}"#, Parses(None, M::Activity));
    check(r#"{"type":"idle"}"#, Parses(None, M::Idle));
    check(r#"{"type":"active"}"#, Parses(None, M::Active));
    check(r#"{"type":"lock"}"#, Parses(None, M::Lock));
    check(r#"{"type":"unlock"}"#, Parses(None, M::Unlock));
    check(r#"{"type":"sleep"}"#, Parses(None, M::Sleep));
    check(r#"{"type":"wake"}"#, Parses(None, M::Wake));
    check(r#"{"type":"background"}"#, Parses(None, M::Background));
    check(r#"{"type":"foreground"}"#, Parses(None, M::Foreground));
    check(r#"{"type":"bye"}"#, Parses(None, M::Bye));
    check(
        r#"{"type":"set_status","status":"busy","text":"Presenting","expires_at":"2026-11-28T12:00:00Z"}"#,
        Parses(
            None,
            set_status(Some(ChosenStatus::Busy), Some("Presenting"), Some(NOV_28)),
        ),
    );
    check(
        r#"{"type":"use_custom_status","id":"cs-1"}"#,
        Parses(None, M::UseCustomStatus { id: custom("cs-1") }),
    );
    check(
        r#"{"type":"calendar","event_id":"ev-9","busy":true}"#,
        Parses(
            None,
            M::Calendar {
                event_id: "ev-9".into(),
                busy: true,
            },
        ),
    );
    check(
        r#"{"type":"subscribe","users":["alice","bob"]}"#,
        Parses(
            None,
            M::Subscribe {
                users: users(&["alice", "bob"]),
            },
        ),
    );
    check(
        r#"{"type":"unsubscribe","users":["bob"]}"#,
        Parses(
            None,
            M::Unsubscribe {
                users: users(&["bob"]),
            },
        ),
    );
    check(
        r#"{"type":"query","users":[]}"#,
        Parses(None, M::Query { users: vec![] }),
    );
}

#[test]
fn set_status_fields_are_optional_and_text_null_clears() {
    use ChosenStatus::*;
    check(
        r#"{"type":"set_status"}"#,
        Parses(None, set_status(None, None, None)),
    );
    check(
        r#"{"type":"set_status","status":"invisible"}"#,
        Parses(None, set_status(Some(Invisible), None, None)),
    );
    check(
        r#"{"type":"set_status","status":null,"expires_at":null}"#,
        Parses(None, set_status(None, None, None)),
    );
    check(
        r#"{"type":"set_status","text":"Lunch 🌮"}"#,
        Parses(None, set_status(None, Some("Lunch 🌮"), None)),
    );
    check(
        r#"{"type":"set_status","text":null}"#,
        Parses(None, set_status(None, Some(""), None)),
    );
    check(
        r#"{"type":"set_status","text":""}"#,
        Parses(None, set_status(None, Some(""), None)),
    );
    check(
        r#"{"type":"set_status","status":"away","expires_at":"2026-11-28T14:00:00.5+02:00"}"#,
        Parses(None, set_status(Some(Away), None, Some(NOV_28 + 500))),
    );
}

#[test]
fn refs_are_strings_or_non_negative_integers() {
    check(
        r#"{"type":"bye","ref":"r-1"}"#,
        Parses(Some("r-1"), ClientMessage::Bye),
    );
    check(
        r#"{"ref":42,"type":"bye"}"#,
        Parses(Some("42"), ClientMessage::Bye),
    );
    check(
        r#"{"type":"bye","ref":0}"#,
        Parses(Some("0"), ClientMessage::Bye),
    );
    check(
        r#"{"type":"bye","ref":18446744073709551615}"#,
        Parses(Some("18446744073709551615"), ClientMessage::Bye),
    );
    check(
        r#"{"type":"bye","ref":null}"#,
        Parses(None, ClientMessage::Bye),
    );
    check(
        r#"{"type":"bye","ref":""}"#,
        Parses(Some(""), ClientMessage::Bye),
    );
    let longest = "é".repeat(MAX_REF_CHARS);
    let frame = format!(r#"{{"type":"bye","ref":"{longest}"}}"#);
    let parsed = parse_client_message(&frame).unwrap();
    assert_eq!(parsed.ref_.as_deref(), Some(longest.as_str()));
}

#[test]
fn each_error_code_triggers() {
    // invalid_json: not JSON, or not an object.
    check(
        r#"{"type":"bye""#,
        Fails(INVALID_JSON, None, "not valid JSON"),
    );
    check("", Fails(INVALID_JSON, None, "not valid JSON"));
    check("hello", Fails(INVALID_JSON, None, "not valid JSON"));
    check(
        r#"[{"type":"bye"}]"#,
        Fails(INVALID_JSON, None, "not an array"),
    );
    check(r#""bye""#, Fails(INVALID_JSON, None, "not a string"));
    check("42", Fails(INVALID_JSON, None, "not a number"));
    check("null", Fails(INVALID_JSON, None, "not null"));

    // missing_type
    check("{}", Fails(MISSING_TYPE, None, "no `type`"));
    check(
        r#"{"ref":"r1","users":[]}"#,
        Fails(MISSING_TYPE, Some("r1"), "no `type`"),
    );

    // unknown_type: unknown names (case matters, server types are not
    // client types) and non-string types.
    check(
        r#"{"type":"dance"}"#,
        Fails(UNKNOWN_TYPE, None, "unknown message type `dance`"),
    );
    check(
        r#"{"type":"Activity","ref":"r2"}"#,
        Fails(UNKNOWN_TYPE, Some("r2"), "`Activity`"),
    );
    check(
        r#"{"type":"ack","ref":"x"}"#,
        Fails(UNKNOWN_TYPE, Some("x"), "`ack`"),
    );
    check(
        r#"{"type":5,"ref":"r3"}"#,
        Fails(UNKNOWN_TYPE, Some("r3"), "not a number"),
    );
    check(r#"{"type":null}"#, Fails(UNKNOWN_TYPE, None, "not null"));
    check(
        r#"{"type":["bye"]}"#,
        Fails(UNKNOWN_TYPE, None, "not an array"),
    );

    // invalid_ref: too long, negative, fractional, other JSON types.
    let too_long = "r".repeat(MAX_REF_CHARS + 1);
    check(
        &format!(r#"{{"type":"bye","ref":"{too_long}"}}"#),
        Fails(INVALID_REF, None, "a string of 65 characters"),
    );
    check(
        r#"{"type":"bye","ref":-1}"#,
        Fails(INVALID_REF, None, "the number -1"),
    );
    check(
        r#"{"type":"bye","ref":1.5}"#,
        Fails(INVALID_REF, None, "the number 1.5"),
    );
    check(
        r#"{"type":"bye","ref":true}"#,
        Fails(INVALID_REF, None, "a boolean"),
    );
    check(
        r#"{"type":"bye","ref":{"id":1}}"#,
        Fails(INVALID_REF, None, "an object"),
    );
    check(r#"{"ref":[1]}"#, Fails(INVALID_REF, None, "an array"));
}

#[test]
fn invalid_message_names_the_field_and_echoes_the_ref() {
    // Unknown fields.
    check(
        r#"{"type":"activity","ref":"a","at":1}"#,
        Fails(
            INVALID_MESSAGE,
            Some("a"),
            "unknown field `at`: `activity` takes no fields",
        ),
    );
    check(
        r#"{"type":"subscribe","ref":7,"user":["alice"]}"#,
        Fails(
            INVALID_MESSAGE,
            Some("7"),
            "unknown field `user` in `subscribe`; its fields are `users`",
        ),
    );
    check(
        r#"{"type":"set_status","state":"busy"}"#,
        Fails(
            INVALID_MESSAGE,
            None,
            "its fields are `status`, `text`, `expires_at`",
        ),
    );

    // Missing fields.
    check(
        r#"{"type":"subscribe","ref":"s"}"#,
        Fails(
            INVALID_MESSAGE,
            Some("s"),
            "`subscribe` needs field `users` (an array of strings)",
        ),
    );
    check(
        r#"{"type":"calendar","busy":true}"#,
        Fails(INVALID_MESSAGE, None, "`calendar` needs field `event_id`"),
    );
    check(
        r#"{"type":"calendar","event_id":"e"}"#,
        Fails(INVALID_MESSAGE, None, "`calendar` needs field `busy`"),
    );
    check(
        r#"{"type":"use_custom_status"}"#,
        Fails(INVALID_MESSAGE, None, "needs field `id`"),
    );
    check(
        r#"{"type":"reauth","ref":"t"}"#,
        Fails(
            INVALID_MESSAGE,
            Some("t"),
            "`reauth` needs field `token` (a string)",
        ),
    );
    check(
        r#"{"type":"reauth","token":7}"#,
        Fails(
            INVALID_MESSAGE,
            None,
            "field `token` of `reauth` must be a string, not a number",
        ),
    );

    // Wrong types and values.
    check(
        r#"{"type":"query","users":"alice"}"#,
        Fails(
            INVALID_MESSAGE,
            None,
            "field `users` of `query` must be an array of strings, not a string",
        ),
    );
    check(
        r#"{"type":"unsubscribe","users":["alice",3]}"#,
        Fails(INVALID_MESSAGE, None, "item 1 is a number"),
    );
    check(
        r#"{"type":"calendar","event_id":"e","busy":"yes"}"#,
        Fails(
            INVALID_MESSAGE,
            None,
            "field `busy` of `calendar` must be true or false, not a string",
        ),
    );
    check(
        r#"{"type":"use_custom_status","id":12}"#,
        Fails(
            INVALID_MESSAGE,
            None,
            "field `id` of `use_custom_status` must be a string, not a number",
        ),
    );
    check(
        r#"{"type":"set_status","status":"dnd","ref":"q"}"#,
        Fails(
            INVALID_MESSAGE,
            Some("q"),
            "field `status` of `set_status` must be one of \"online\", \"away\", \"busy\", \"invisible\", not \"dnd\"",
        ),
    );
    check(
        r#"{"type":"set_status","status":"offline"}"#,
        Fails(INVALID_MESSAGE, None, "not \"offline\""),
    );
    check(
        r#"{"type":"set_status","status":1}"#,
        Fails(INVALID_MESSAGE, None, "field `status`"),
    );
    check(
        r#"{"type":"set_status","text":42}"#,
        Fails(
            INVALID_MESSAGE,
            None,
            "field `text` of `set_status` must be a string or null, not a number",
        ),
    );
    check(
        r#"{"type":"set_status","expires_at":"tomorrow"}"#,
        Fails(
            INVALID_MESSAGE,
            None,
            "field `expires_at` of `set_status` must be an RFC 3339 timestamp",
        ),
    );
    check(
        r#"{"type":"set_status","expires_at":1795867200000}"#,
        Fails(INVALID_MESSAGE, None, "not a number"),
    );
}

#[test]
fn errors_never_echo_much_of_the_frame() {
    let huge = "Z".repeat(100_000);
    for frame in [
        format!(r#"{{"type":"{huge}"}}"#),
        format!(r#"{{"type":"bye","{huge}":1}}"#),
        format!(r#"{{"type":"set_status","status":"{huge}"}}"#),
        format!(r#"{{"type":"set_status","expires_at":"{huge}"}}"#),
        format!(r#"{{"type":"bye","ref":"{huge}"}}"#),
        format!(r#"{{"type":"bye","ref":1{}}}"#, "0".repeat(5000)),
    ] {
        let err = parse_client_message(&frame).unwrap_err();
        assert!(
            err.message.chars().count() <= 200,
            "{} chars: {}",
            err.message.len(),
            err.message
        );
    }
}

#[test]
fn device_messages_map_to_device_events_and_back() {
    for event in DeviceEvent::ALL {
        let frame = format!(r#"{{"type":"{}"}}"#, event.as_str());
        let parsed = parse_client_message(&frame).unwrap().message;
        assert_eq!(parsed.device_event(), Some(event));
        assert_eq!(ClientMessage::from_device_event(event), parsed);
        assert_eq!(parsed.type_name(), event.as_str());
    }
    assert_eq!(ClientMessage::Bye.device_event(), None);
    assert_eq!(ClientMessage::Query { users: vec![] }.device_event(), None);
}

#[test]
fn every_message_serializes_to_a_frame_that_parses_back() {
    use ClientMessage as M;
    let messages = vec![
        M::Activity,
        M::Idle,
        M::Active,
        M::Lock,
        M::Unlock,
        M::Sleep,
        M::Wake,
        M::Background,
        M::Foreground,
        set_status(None, None, None),
        set_status(Some(ChosenStatus::Busy), Some(""), Some(NOV_28 + 1)),
        set_status(Some(ChosenStatus::Online), Some("Back at 3"), None),
        M::UseCustomStatus { id: custom("cs") },
        M::Calendar {
            event_id: "e".into(),
            busy: false,
        },
        M::Subscribe {
            users: users(&["a", "b"]),
        },
        M::Unsubscribe {
            users: users(&["a"]),
        },
        M::Query { users: vec![] },
        M::Reauth {
            token: "eyJ.a.b".into(),
        },
        M::Bye,
    ];
    let mut seen_types = Vec::new();
    for message in messages {
        seen_types.push(message.type_name());
        for frame in [
            ClientFrame::new(message.clone()),
            ClientFrame::new(message.clone()).with_ref("r-9"),
        ] {
            let json = frame.to_json();
            assert_eq!(parse_client_message(&json), Ok(frame), "{json}");
        }
        assert_eq!(
            parse_client_message(&message.to_json()).map(|f| f.message),
            Ok(message)
        );
    }
    seen_types.dedup();
    assert_eq!(seen_types, ClientMessage::TYPES);
}

#[test]
fn frames_have_the_documented_shape() {
    let frame = ClientFrame::new(set_status(
        Some(ChosenStatus::Away),
        Some("Lunch"),
        Some(NOV_28),
    ))
    .with_ref("1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&frame.to_json()).unwrap(),
        serde_json::json!({
            "type": "set_status",
            "ref": "1",
            "status": "away",
            "text": "Lunch",
            "expires_at": "2026-11-28T12:00:00.000Z",
        })
    );
    assert_eq!(
        ClientMessage::Calendar {
            event_id: "e".into(),
            busy: true
        }
        .to_json(),
        r#"{"type":"calendar","event_id":"e","busy":true}"#
    );
}

#[test]
fn ids_are_validated_with_their_own_codes() {
    let long_user = "u".repeat(129);
    check(
        r#"{"type":"subscribe","ref":"r1","users":["alice",""]}"#,
        Fails(
            ProtocolError::INVALID_USER_ID,
            Some("r1"),
            "user ids are 1-128",
        ),
    );
    check(
        &format!(r#"{{"type":"query","users":["{long_user}"]}}"#),
        Fails(ProtocolError::INVALID_USER_ID, None, "user ids are 1-128"),
    );
    check(
        r#"{"type":"unsubscribe","users":["a\nb"]}"#,
        Fails(ProtocolError::INVALID_USER_ID, None, "control characters"),
    );
    // The list's shape is checked before its ids.
    check(
        r#"{"type":"query","users":["",3]}"#,
        Fails(INVALID_MESSAGE, None, "item 1 is a number"),
    );
    // An id that cannot exist is refused as the backend refuses an unknown
    // one, quoting at most an excerpt of it.
    check(
        r#"{"type":"use_custom_status","ref":"r2","id":""}"#,
        Fails(
            ProtocolError::CUSTOM_STATUS_NOT_FOUND,
            Some("r2"),
            "custom status '' does not exist",
        ),
    );
    check(
        &format!(
            r#"{{"type":"use_custom_status","id":"{}"}}"#,
            "x".repeat(65)
        ),
        Fails(
            ProtocolError::CUSTOM_STATUS_NOT_FOUND,
            None,
            "does not exist",
        ),
    );
}

#[test]
fn an_error_names_the_message_type_once_it_is_known() {
    use presence_protocol::ws::MessageType;
    let type_of = |frame: &str| parse_client_message(frame).unwrap_err().message_type;
    assert_eq!(type_of(r#"{"type":"dance"}"#), None);
    assert_eq!(type_of(r#"{"ref":[],"type":"lock"}"#), None);
    assert_eq!(type_of(r#"{"users":[]}"#), None);
    assert_eq!(
        type_of(r#"{"type":"set_status","status":"gone"}"#),
        Some(MessageType::SetStatus)
    );
    assert_eq!(
        type_of(r#"{"type":"subscribe","users":[""]}"#),
        Some(MessageType::Subscribe)
    );
}

#[test]
fn user_lists_are_held_to_the_limits_before_their_ids_are_checked() {
    use presence_protocol::ws::{Limits, parse_client_message_within};
    let limits = Limits {
        max_frame_bytes: 16 * 1024,
        max_subscriptions: 1,
        max_subscriptions_per_user: 10,
        max_query_users: 2,
    };
    let code = |frame: &str| parse_client_message_within(frame, &limits).map_err(|e| e.code);
    let too_many = Err(ProtocolError::TOO_MANY_USERS);
    let bad_id = Err(ProtocolError::INVALID_USER_ID);
    assert_eq!(code(r#"{"type":"query","users":["a","b","c"]}"#), too_many);
    assert_eq!(
        code(r#"{"type":"subscribe","users":["a","","c"]}"#),
        too_many
    );
    assert_eq!(code(r#"{"type":"subscribe","users":["a",""]}"#), bad_id);
    assert_eq!(
        code(r#"{"type":"unsubscribe","users":["a","b"]}"#),
        too_many
    );
    assert!(code(r#"{"type":"unsubscribe","users":["a"]}"#).is_ok());
    assert!(code(r#"{"type":"query","users":["a","b"]}"#).is_ok());
    let error = parse_client_message_within(
        r#"{"ref":"r1","type":"query","users":["a","b","c"]}"#,
        &limits,
    )
    .unwrap_err();
    assert_eq!(error.message, "at most 2 users per request");
    assert_eq!(error.ref_.as_deref(), Some("r1"));
    // Without limits, only the ids are checked.
    assert!(parse_client_message(r#"{"type":"query","users":["a","b","c"]}"#).is_ok());
}

//! Native REST bodies: exact field names both ways, and the errors of
//! `parse_body`.

use std::fmt::Debug;

use presence_core::{
    CapState, ChosenStatus, CustomStatus, CustomStatusId, CustomStatusName, DisplayedStatus,
    EffectivePreferences, IdleTimeLimit, PresenceError, StatusRequest, Timestamp,
    WorkspaceSettings,
};
use presence_protocol::rest::{
    AdminSetStatusRequest, ApiError, BulkQueryRequest, BulkQueryResponse, CalendarRequest, CapView,
    CustomStatusCreate, CustomStatusList, CustomStatusPatch, CustomStatusView, OnlineCount,
    PreferencesPatch, PreferencesView, SetStatusRequest, SettingsPatch, SettingsView,
    UseCustomStatusRequest, parse_body,
};
use presence_protocol::{PresenceEntry, StatusChange};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// `value` is written as exactly `expected`, and `expected` reads back as
/// `value` through `parse_body`.
fn check<T>(value: T, expected: Value)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    assert_eq!(serde_json::to_value(&value).unwrap(), expected);
    let body = serde_json::to_vec(&expected).unwrap();
    assert_eq!(parse_body::<T>(&body).unwrap(), value);
}

/// `body` is refused as `T` with `code`, and the message mentions
/// `mention`.
fn check_refused<T: DeserializeOwned + Debug>(body: &str, code: &str, mention: &str) {
    let err = parse_body::<T>(body.as_bytes()).expect_err(body);
    assert_eq!(err.code(), code, "{body}: {err:?}");
    assert!(
        err.error.message.contains(mention),
        "{body}: {:?} does not mention {mention:?}",
        err.error.message
    );
    assert!(
        err.error.message.chars().count() <= 200,
        "{}",
        err.error.message
    );
}

/// 2026-11-28T12:00:00Z
const NOV_28: i64 = 1_795_867_200_000;

#[test]
fn request_bodies_round_trip() {
    check(
        SetStatusRequest {
            status: Some(ChosenStatus::Busy),
            text: Some("Presenting".into()),
            expires_at: Some(Timestamp::from_millis(NOV_28)),
        },
        json!({"status": "busy", "text": "Presenting", "expires_at": "2026-11-28T12:00:00.000Z"}),
    );
    check(AdminSetStatusRequest::default(), json!({}));
    check(
        UseCustomStatusRequest { id: "cs-1".into() },
        json!({"id": "cs-1"}),
    );
    check(
        PreferencesPatch {
            auto_away: Some(false),
            idle_time_limit: Some(900),
        },
        json!({"auto_away": false, "idle_time_limit": 900}),
    );
    check(PreferencesPatch::default(), json!({}));
    check(
        CalendarRequest {
            event_id: "ev".into(),
            busy: true,
        },
        json!({"event_id": "ev", "busy": true}),
    );
    check(
        BulkQueryRequest {
            users: vec!["a".into(), "b".into()],
        },
        json!({"users": ["a", "b"]}),
    );
    check(
        SettingsPatch {
            allow_custom_status_text: Some(false),
            allow_invisible: Some(false),
            calendar_integration: Some(true),
            default_auto_away: Some(false),
            default_idle_time_limit: Some(IdleTimeLimit::new(120).unwrap()),
            cap: Some(0),
        },
        json!({
            "allow_custom_status_text": false,
            "allow_invisible": false,
            "calendar_integration": true,
            "default_auto_away": false,
            "default_idle_time_limit": 120,
            "cap": 0,
        }),
    );
    check(
        CustomStatusCreate {
            name: "On leave".into(),
            status_type: DisplayedStatus::Offline,
        },
        json!({"name": "On leave", "status_type": "offline"}),
    );
    check(
        CustomStatusPatch {
            name: None,
            status_type: Some(DisplayedStatus::Busy),
        },
        json!({"status_type": "busy"}),
    );
}

#[test]
fn response_bodies_round_trip() {
    check(
        ApiError::new("not_found", "no such user"),
        json!({"error": {"code": "not_found", "message": "no such user"}}),
    );
    check(
        BulkQueryResponse {
            users: vec![PresenceEntry {
                user: "a".into(),
                status: DisplayedStatus::Online,
                text: None,
                version: 2,
            }],
        },
        json!({"users": [{"user": "a", "status": "online", "text": null, "version": 2}]}),
    );
    check(OnlineCount { count: 17 }, json!({"count": 17}));
    check(
        PreferencesView::from(EffectivePreferences {
            auto_away: true,
            idle_time_limit: IdleTimeLimit::new(300).unwrap(),
        }),
        json!({"auto_away": true, "idle_time_limit": 300}),
    );
    check(
        SettingsView::from(&WorkspaceSettings::default()),
        json!({
            "allow_custom_status_text": true,
            "allow_invisible": true,
            "calendar_integration": false,
            "default_auto_away": true,
            "default_idle_time_limit": 300,
            "cap": 200,
        }),
    );
    let status = CustomStatus {
        id: CustomStatusId::try_from("cs-1").unwrap(),
        name: CustomStatusName::parse("Vacation").unwrap(),
        status_type: DisplayedStatus::Away,
        updated_at: Timestamp::from_millis(NOV_28 + 57),
    };
    let view = json!({
        "id": "cs-1",
        "name": "Vacation",
        "status_type": "away",
        "updated_at": "2026-11-28T12:00:00.057Z",
    });
    check(CustomStatusView::from(&status), view.clone());
    check(
        [&status].into_iter().collect::<CustomStatusList>(),
        json!({"statuses": [view]}),
    );
    check(
        CapView::from(CapState {
            cap: 200,
            count: 201,
            peak: 250,
            enabled: false,
        }),
        json!({"count": 201, "cap": 200, "peak": 250, "enabled": false}),
    );
}

#[test]
fn set_status_text_null_clears_and_becomes_a_core_request() {
    let parsed: SetStatusRequest =
        parse_body(br#"{"status": "online", "text": null, "expires_at": null}"#).unwrap();
    assert_eq!(
        parsed.into_request(),
        StatusRequest {
            status: Some(ChosenStatus::Online),
            text: Some(String::new()),
            expires_at: None,
        }
    );
    let parsed: StatusChange =
        parse_body(br#"{"text": "Lunch", "expires_at": "2026-11-28T13:00:00+01:00"}"#).unwrap();
    assert_eq!(
        StatusRequest::from(parsed),
        StatusRequest {
            status: None,
            text: Some("Lunch".into()),
            expires_at: Some(Timestamp::from_millis(NOV_28)),
        }
    );
}

#[test]
fn parse_body_errors_name_the_problem() {
    const JSON: &str = "invalid_json";
    const REQUEST: &str = "invalid_request";
    check_refused::<SetStatusRequest>("", JSON, "not valid JSON");
    check_refused::<SetStatusRequest>("{", JSON, "not valid JSON");
    check_refused::<SetStatusRequest>(r#"{"status":"busy"} x"#, JSON, "trailing characters");
    check_refused::<SetStatusRequest>("[]", REQUEST, "not a valid request");
    check_refused::<SetStatusRequest>(r#"{"mood":"busy"}"#, REQUEST, "unknown field `mood`");
    check_refused::<SetStatusRequest>(r#"{"status":"dnd"}"#, REQUEST, "field `status`");
    check_refused::<SetStatusRequest>(
        r#"{"status":"offline"}"#,
        REQUEST,
        "unknown variant `offline`",
    );
    check_refused::<SetStatusRequest>(r#"{"text":5}"#, REQUEST, "field `text`");
    // serde_json calls a number where an enum string belongs a syntax
    // error; valid JSON of the wrong shape is still an invalid request.
    check_refused::<SetStatusRequest>(r#"{"status":5}"#, REQUEST, "field `status`");
    check_refused::<SetStatusRequest>(r#"{"status":true}"#, REQUEST, "field `status`");
    check_refused::<SetStatusRequest>(
        r#"{"expires_at":"soon"}"#,
        REQUEST,
        "field `expires_at`: `soon` is not an RFC 3339 timestamp",
    );
    check_refused::<BulkQueryRequest>(r#"{}"#, REQUEST, "missing field `users`");
    check_refused::<BulkQueryRequest>(r#"{"users":["a",2]}"#, REQUEST, "field `users[1]`");
    check_refused::<PreferencesPatch>(
        r#"{"idle_time_limit":-5}"#,
        REQUEST,
        "field `idle_time_limit`",
    );
    check_refused::<CustomStatusCreate>(
        r#"{"name":"x","status_type":"invisible"}"#,
        REQUEST,
        "field `status_type`",
    );
    check_refused::<SettingsPatch>(r#"{"cap":"lots"}"#, REQUEST, "field `cap`");

    let huge = "q".repeat(50_000);
    check_refused::<SetStatusRequest>(
        &format!(r#"{{"status":"{huge}"}}"#),
        REQUEST,
        "field `status`",
    );
    check_refused::<SetStatusRequest>(&format!(r#"{{"{huge}":1}}"#), REQUEST, "unknown field");
}

#[test]
fn patches_apply_with_the_idle_floor() {
    let current = WorkspaceSettings::default();
    let patch = SettingsPatch {
        cap: Some(0),
        allow_invisible: Some(false),
        ..SettingsPatch::default()
    };
    let next = patch.apply(&current, 60).unwrap();
    assert_eq!(next.cap, 0);
    assert!(!next.allow_invisible);
    assert_eq!(
        next.default_idle_time_limit,
        current.default_idle_time_limit
    );

    // Deserialized, as a REST body is: nothing checked the limit yet.
    let too_low: SettingsPatch =
        serde_json::from_value(json!({"default_idle_time_limit": 30})).unwrap();
    assert_eq!(
        too_low.apply(&current, 60),
        Err(PresenceError::IdleTimeLimitTooLow {
            seconds: 30,
            min: 60
        })
    );
    assert_eq!(
        too_low.apply(&current, 1).unwrap().default_idle_time_limit,
        IdleTimeLimit::with_floor(30, 1).unwrap()
    );

    let prefs = PreferencesPatch {
        auto_away: Some(false),
        idle_time_limit: Some(59),
    };
    let err = prefs.to_update(60).unwrap_err();
    assert_eq!(ApiError::from(&err).code(), "idle_time_limit_too_low");
    let update = PreferencesPatch {
        idle_time_limit: Some(60),
        ..prefs
    }
    .to_update(60)
    .unwrap();
    assert_eq!(update.auto_away, Some(false));
    assert_eq!(update.idle_time_limit.map(IdleTimeLimit::seconds), Some(60));
}

#[test]
fn presence_errors_keep_their_code() {
    check(
        ApiError::from(PresenceError::StatusTextTooLong { len: 130, max: 120 }),
        json!({"error": {
            "code": "status_text_too_long",
            "message": "status text is 130 characters long; the limit is 120",
        }}),
    );
}

//! Rocket.Chat-compatible bodies: Rocket.Chat's exact field names and
//! error shapes.

use std::fmt::Debug;

use presence_core::{
    ChosenStatus, CustomStatus, CustomStatusId, CustomStatusName, DisplayedStatus, PresenceError,
    Timestamp,
};
use presence_protocol::rocketchat::{
    CustomUserStatus, CustomUserStatusCreate, CustomUserStatusDelete, CustomUserStatusList,
    CustomUserStatusResponse, CustomUserStatusUpdate, GetConnections, GetStatusOther, GetStatusOwn,
    PresenceResponse, PresenceUser, RcFailure, RcForbidden, RcUnauthorized, SetStatusBody, Success,
    parse_body, parse_status, parse_status_type,
};
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

/// `body` is refused as `T` with exactly this Rocket.Chat failure body.
fn check_refused<T: DeserializeOwned + Debug>(body: &str, expected: Value) {
    let err = parse_body::<T>(body.as_bytes()).expect_err(body);
    assert_eq!(serde_json::to_value(&err).unwrap(), expected, "{body}");
}

/// 2026-11-28T12:00:00Z
const NOV_28: i64 = 1_795_867_200_000;

fn vacation() -> CustomStatus {
    CustomStatus {
        id: CustomStatusId::try_from("EscbQinc8jmeXbpt7").unwrap(),
        name: CustomStatusName::parse("Vacation").unwrap(),
        status_type: DisplayedStatus::Away,
        updated_at: Timestamp::from_millis(NOV_28 + 57),
    }
}

fn vacation_json() -> Value {
    json!({
        "_id": "EscbQinc8jmeXbpt7",
        "name": "Vacation",
        "statusType": "away",
        "_updatedAt": "2026-11-28T12:00:00.057Z",
    })
}

#[test]
fn users_set_status() {
    check(
        SetStatusBody {
            status: Some("busy".into()),
            message: Some("In a call".into()),
            user_id: Some("u1".into()),
            username: Some("alice".into()),
            user: Some("alice".into()),
        },
        json!({"status": "busy", "message": "In a call", "userId": "u1", "username": "alice", "user": "alice"}),
    );
    check(
        SetStatusBody {
            status: Some("dnd".into()),
            ..SetStatusBody::default()
        },
        json!({"status": "dnd"}),
    );
    assert!(SetStatusBody::default().is_empty());
    assert!(
        !SetStatusBody {
            message: Some(String::new()),
            ..SetStatusBody::default()
        }
        .is_empty()
    );
}

#[test]
fn users_get_status_and_presence() {
    check(
        GetStatusOwn {
            id: "u1".into(),
            status: DisplayedStatus::Offline,
            connection_status: DisplayedStatus::Online,
            message: String::new(),
            success: true,
        },
        json!({"_id": "u1", "status": "offline", "connectionStatus": "online", "message": "", "success": true}),
    );
    check(
        GetStatusOther {
            id: "u2".into(),
            status: DisplayedStatus::Busy,
            success: true,
        },
        json!({"_id": "u2", "status": "busy", "success": true}),
    );
    check(
        PresenceResponse {
            users: vec![
                PresenceUser {
                    id: "u1".into(),
                    username: "alice".into(),
                    name: "Alice".into(),
                    status: DisplayedStatus::Away,
                    utc_offset: 5.5,
                    status_text: Some("Lunch".into()),
                },
                PresenceUser {
                    id: "u2".into(),
                    username: "u2".into(),
                    name: "u2".into(),
                    status: DisplayedStatus::Online,
                    utc_offset: 0.0,
                    status_text: None,
                },
            ],
            full: false,
            success: true,
        },
        json!({
            "users": [
                {"_id": "u1", "username": "alice", "name": "Alice", "status": "away", "utcOffset": 5.5, "statusText": "Lunch"},
                {"_id": "u2", "username": "u2", "name": "u2", "status": "online", "utcOffset": 0.0},
            ],
            "full": false,
            "success": true,
        }),
    );
}

#[test]
fn custom_user_status_endpoints() {
    check(CustomUserStatus::from(&vacation()), vacation_json());
    check(
        CustomUserStatusList {
            statuses: vec![CustomUserStatus::from(&vacation())],
            count: 1,
            offset: 0,
            total: 1,
            success: true,
        },
        json!({"statuses": [vacation_json()], "count": 1, "offset": 0, "total": 1, "success": true}),
    );
    check(
        CustomUserStatusCreate {
            name: "Vacation".into(),
            status_type: Some("away".into()),
        },
        json!({"name": "Vacation", "statusType": "away"}),
    );
    check(
        CustomUserStatusCreate {
            name: "Vacation".into(),
            status_type: None,
        },
        json!({"name": "Vacation"}),
    );
    check(
        CustomUserStatusUpdate {
            id: "EscbQinc8jmeXbpt7".into(),
            name: "Holiday".into(),
            status_type: Some("offline".into()),
        },
        json!({"_id": "EscbQinc8jmeXbpt7", "name": "Holiday", "statusType": "offline"}),
    );
    check(
        CustomUserStatusDelete {
            custom_user_status_id: "EscbQinc8jmeXbpt7".into(),
        },
        json!({"customUserStatusId": "EscbQinc8jmeXbpt7"}),
    );
    check(
        CustomUserStatusResponse::new(&vacation()),
        json!({"customUserStatus": vacation_json(), "success": true}),
    );
    // Rocket.Chat's schema allows a null statusType.
    let parsed: CustomUserStatusCreate =
        parse_body(br#"{"name": "Vacation", "statusType": null}"#).unwrap();
    assert_eq!(parsed.status_type, None);
}

#[test]
fn presence_endpoints_and_success() {
    check(
        GetConnections {
            current: 180,
            max: 200,
            success: true,
        },
        json!({"current": 180, "max": 200, "success": true}),
    );
    check(Success::default(), json!({"success": true}));
}

#[test]
fn error_bodies() {
    check(
        RcFailure::invalid_status(),
        json!({
            "success": false,
            "error": "Valid status types include online, away, offline, and busy. [error-invalid-status]",
            "errorType": "error-invalid-status",
        }),
    );
    check(
        RcFailure::typed("Invalid status", "error-invalid-status"),
        json!({"success": false, "error": "Invalid status [error-invalid-status]", "errorType": "error-invalid-status"}),
    );
    check(
        RcFailure::new("User not found"),
        json!({"success": false, "error": "User not found"}),
    );
    check(
        RcFailure::invalid_status_type("dnd"),
        json!({
            "success": false,
            "error": "dnd is not a valid status type [error-input-is-not-a-valid-field]",
            "errorType": "error-input-is-not-a-valid-field",
        }),
    );
    check(
        RcFailure::custom_status_not_found_for_update("nope"),
        json!({"success": false, "error": "No custom user status found with the id of \"nope\"."}),
    );
    check(
        RcFailure::custom_status_id_required(),
        json!({"success": false, "error": "The \"customUserStatusId\" params is required!"}),
    );
    check(
        RcUnauthorized::default(),
        json!({"status": "error", "message": "You must be logged in to do this."}),
    );
    check(
        RcForbidden::unauthorized(),
        json!({"success": false, "error": "unauthorized"}),
    );
    check(
        RcForbidden::missing_permission(),
        json!({"success": false, "error": "User does not have the permissions required for this action [error-unauthorized]"}),
    );
}

#[test]
fn presence_errors_in_rocketchat_terms() {
    let cases = [
        (
            PresenceError::InvisibleDisabled,
            "Invisible status is disabled [error-status-not-allowed]",
            "error-status-not-allowed",
        ),
        (
            PresenceError::StatusTextDisabled,
            "Change status is not allowed [error-not-allowed]",
            "error-not-allowed",
        ),
        (
            PresenceError::CustomStatusNameTaken {
                name: "Vacation".into(),
            },
            "The custom user status name is already in use [Custom_User_Status_Error_Name_Already_In_Use]",
            "Custom_User_Status_Error_Name_Already_In_Use",
        ),
        (
            CustomStatusName::parse("  ").unwrap_err(),
            "The field Name is required [error-the-field-is-required]",
            "error-the-field-is-required",
        ),
        (
            CustomStatusName::parse("<b>").unwrap_err(),
            "custom status name is invalid: the name contains one of < > & \" ' [error-input-is-not-a-valid-field]",
            "error-input-is-not-a-valid-field",
        ),
        (
            PresenceError::CustomStatusNotFound { id: "x".into() },
            "Invalid user status [Custom_User_Status_Error_Invalid_User_Status]",
            "Custom_User_Status_Error_Invalid_User_Status",
        ),
        (
            PresenceError::StatusTextTooLong { len: 130, max: 120 },
            "status text is 130 characters long; the limit is 120 [error-status-text-too-long]",
            "error-status-text-too-long",
        ),
    ];
    for (error, message, error_type) in cases {
        let failure = RcFailure::from(&error);
        assert_eq!(failure.error, message, "{error:?}");
        assert_eq!(failure.error_type.as_deref(), Some(error_type), "{error:?}");
        assert!(!failure.success);
    }
}

#[test]
fn bodies_fail_like_rocketchats_schema_validator() {
    check_refused::<CustomUserStatusCreate>(
        "{}",
        json!({"success": false, "error": "must have required property 'name' [invalid-params]", "errorType": "invalid-params"}),
    );
    check_refused::<CustomUserStatusUpdate>(
        r#"{"name": "x"}"#,
        json!({"success": false, "error": "must have required property '_id' [invalid-params]", "errorType": "invalid-params"}),
    );
    check_refused::<SetStatusBody>(
        r#"{"status": "busy", "emoji": ":)"}"#,
        json!({"success": false, "error": "must NOT have additional properties [invalid-params]", "errorType": "invalid-params"}),
    );
    check_refused::<SetStatusBody>(
        r#"{"message": 5}"#,
        json!({"success": false, "error": "must be string [invalid-params]", "errorType": "invalid-params"}),
    );
    check_refused::<CustomUserStatusDelete>(
        "[]",
        json!({"success": false, "error": "expected a JSON object, found an array [invalid-params]", "errorType": "invalid-params"}),
    );
    let err = parse_body::<SetStatusBody>(b"{").unwrap_err();
    assert_eq!(err.error_type.as_deref(), Some("invalid-params"));
    assert!(err.error.starts_with("Invalid JSON body"), "{}", err.error);
}

#[test]
fn status_strings() {
    assert_eq!(parse_status("online"), Some(ChosenStatus::Online));
    assert_eq!(parse_status("away"), Some(ChosenStatus::Away));
    assert_eq!(parse_status("busy"), Some(ChosenStatus::Busy));
    assert_eq!(parse_status("offline"), Some(ChosenStatus::Invisible));
    assert_eq!(parse_status("invisible"), None);
    assert_eq!(parse_status("Online"), None);
    assert_eq!(parse_status(""), None);

    assert_eq!(parse_status_type("offline"), Some(DisplayedStatus::Offline));
    assert_eq!(parse_status_type("busy"), Some(DisplayedStatus::Busy));
    assert_eq!(parse_status_type("invisible"), None);
    assert_eq!(parse_status_type("Busy"), None);
}

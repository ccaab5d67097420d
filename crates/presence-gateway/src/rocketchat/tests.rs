//! Tests of query decoding, parameter parsing and rate-limit answers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use presence_core::{StatusRequest, UserId};

use super::caller::UserParams;
use super::custom_statuses::parse_sort;
use super::request::QueryParams;
use super::users_presence::presence_ids;
use crate::app::App;
use crate::auth::Identity;

#[test]
fn query_strings_decode_like_browsers_encode() {
    let q = QueryParams::parse(Some(
        "ids%5B%5D=a&ids[]=b%2Cc&name=Out+to+lunch&bad=%zz%4&empty&x=%F0%9F%8C%B4\
         &&plus=a%2Bb&latin1=caf%E9&trail=%",
    ));
    let pairs: Vec<(&str, &str)> = q
        .pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("ids[]", "a"),
            ("ids[]", "b,c"),
            ("name", "Out to lunch"),
            ("bad", "%zz%4"),
            ("empty", ""),
            ("x", "🌴"),
            ("plus", "a+b"),
            ("latin1", "caf\u{FFFD}"),
            ("trail", "%"),
        ]
    );
    assert_eq!(q.first("name"), Some("Out to lunch"));
    assert_eq!(q.first("nope"), None);
    assert!(QueryParams::parse(None).pairs.is_empty());
}

#[test]
fn presence_ids_come_in_every_array_form() {
    let ids = |raw: &str| -> Vec<String> {
        presence_ids(&QueryParams::parse(Some(raw)), 10)
            .unwrap()
            .iter()
            .map(|id| id.to_string())
            .collect()
    };
    assert_eq!(ids("ids=a,b"), ["a", "b"]);
    assert_eq!(ids("ids[]=a&ids[]=b"), ["a", "b"]);
    assert_eq!(ids("ids[0]=a&ids[1]=b"), ["a", "b"]);
    assert_eq!(ids("ids=a&ids=b,a&ids="), ["a", "b"]);
    assert_eq!(ids("idsx=a&ids[x]=b&from=c"), Vec::<String>::new());
    assert!(presence_ids(&QueryParams::parse(Some("ids=a,b,c")), 2).is_err());
}

#[test]
fn sort_accepts_known_fields_and_directions_only() {
    assert!(parse_sort(None).unwrap().0.is_empty());
    assert_eq!(parse_sort(Some(r#"{"name":-1}"#)).unwrap().0.len(), 1);
    for bad in [r#"{"name":2}"#, r#"{"emoji":1}"#, "name", "[1]"] {
        let (status, body) = parse_sort(Some(bad)).unwrap_err().rocketchat();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errorType"], "error-invalid-sort", "{bad}");
    }
}

#[test]
fn a_blank_user_parameter_names_the_caller() {
    let caller = Identity {
        user_id: UserId::try_from("u1").unwrap(),
        admin: false,
        username: Some("alice".into()),
        name: None,
    };
    let check = |id, username, user, expected| {
        let params = UserParams::new(id, username, user);
        assert_eq!(
            params.names(&caller),
            expected,
            "{id:?} {username:?} {user:?}"
        );
    };
    check(None, None, None, true);
    check(Some(" "), Some(""), None, true);
    check(Some("u1"), None, None, true);
    check(None, Some("alice"), None, true);
    check(None, None, Some("alice"), true);
    check(Some("u2"), Some("alice"), None, true);
    check(Some("u2"), None, None, false);
    check(None, Some("bob"), None, false);
}

#[tokio::test]
async fn rate_limit_refusals_carry_their_wait_in_seconds() {
    use crate::auth::{AuthConfig, Authenticator};
    use crate::config::GatewayConfig;
    use crate::metrics::Metrics;
    use crate::ratelimit::{Rate, RateLimits};
    use presence_embedded::{MemoryBackend, MemoryConfig, MemoryStore, SystemClock};

    let backend = MemoryBackend::start(
        MemoryConfig::default(),
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let auth = Authenticator::new(AuthConfig::Hs256 {
        secret: vec![7; 32],
    })
    .unwrap();
    let config = GatewayConfig {
        rate_limits: RateLimits {
            status: Rate::per(1, Duration::from_secs(42)).unwrap(),
            ..RateLimits::default()
        },
        ..GatewayConfig::default()
    };
    let app = App::new(Arc::new(backend), auth, Metrics::new(), config);
    let user: Arc<str> = Arc::from("u1");
    let request = StatusRequest::default();
    crate::status_change_limits::check_status_change(&app, &user, &request)
        .await
        .unwrap();
    let error = crate::status_change_limits::check_status_change(&app, &user, &request)
        .await
        .unwrap_err();
    assert_eq!(error.retry_after_secs, Some(42));
    let (status, body) = error.rocketchat();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body["error"],
        "Error, too many requests. Please slow down. You must wait 42 seconds before trying this endpoint again. [error-too-many-requests]"
    );
}

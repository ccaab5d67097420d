//! The Rocket.Chat-compatible REST API under `/api/v1`, end to end against
//! a real `presenced`: every endpoint's success shape (exact keys), every
//! refusal in Rocket.Chat's shapes, and Rocket.Chat's own JavaScript client
//! (`@rocket.chat/api-client` from npm) driving the server unchanged.
//!
//! A Rocket.Chat client authenticates with two headers only: `X-User-Id`
//! and `X-Auth-Token` (here: one of our JWTs for that user).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_e2e::{DEADLINE, SECRET, Server, ServerOptions, token};
use presence_gateway::auth::{MintClaims, mint_hs256};
use presence_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Rocket.Chat's 401 body (both its current and its legacy keys).
fn unauthorized() -> Value {
    json!({
        "success": false,
        "error": "You must be logged in to do this.",
        "status": "error",
        "message": "You must be logged in to do this.",
    })
}

/// Rocket.Chat's 403 for a missing permission (admin endpoints).
fn missing_permission() -> Value {
    json!({
        "success": false,
        "error": "User does not have the permissions required for this action [error-unauthorized]",
    })
}

/// A typed Rocket.Chat failure body.
fn failure(message: &str, error_type: &str) -> Value {
    json!({
        "success": false,
        "error": format!("{message} [{error_type}]"),
        "errorType": error_type,
    })
}

/// A server whose rate limits stay out of the way of these tests (one
/// test checks the limit itself).
async fn start() -> Server {
    start_with(ServerOptions::default()).await
}

async fn start_with(options: ServerOptions) -> Server {
    Server::start_with(
        options
            .arg("--status-changes-burst", 1000)
            .arg("--text-changes-per-minute", 1000),
    )
    .await
}

/// A Rocket.Chat REST client for one user: the two headers, nothing else.
struct Rc<'a> {
    server: &'a Server,
    user: String,
    token: String,
}

impl<'a> Rc<'a> {
    fn new(server: &'a Server, user: &str, admin: bool) -> Self {
        Self::with_token(server, user, token(user, admin))
    }

    fn with_token(server: &'a Server, user: &str, token: String) -> Self {
        Self {
            server,
            user: user.to_owned(),
            token,
        }
    }

    fn url(&self, endpoint: &str) -> String {
        self.server.url(&format!("/api/v1/{endpoint}"))
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .header("X-User-Id", &self.user)
            .header("X-Auth-Token", &self.token)
    }

    /// `GET /api/v1/<endpoint>`; the endpoint may carry a query string.
    async fn get(&self, endpoint: &str) -> (StatusCode, Value) {
        send(self.authed(self.server.http().get(self.url(endpoint)))).await
    }

    /// `POST /api/v1/<endpoint>` with a JSON body.
    async fn post(&self, endpoint: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(endpoint, body.to_string()).await
    }

    /// `POST` with these exact body bytes and `Content-Type:
    /// application/json`, as Rocket.Chat's client sends them.
    async fn post_raw(
        &self,
        endpoint: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let request = self
            .server
            .http()
            .post(self.url(endpoint))
            .header("Content-Type", "application/json")
            .body(body);
        send(self.authed(request)).await
    }

    /// Asserts a `{success: true}` answer.
    async fn ok(&self, endpoint: &str, body: Value) {
        let (status, answer) = self.post(endpoint, body.clone()).await;
        assert_eq!(
            (status, &answer),
            (StatusCode::OK, &json!({"success": true})),
            "{endpoint} {body}"
        );
    }

    async fn set_status(&self, body: Value) -> (StatusCode, Value) {
        self.post("users.setStatus", body).await
    }

    /// `users.getStatus` of `query` (`""` = the caller).
    async fn status_of(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("users.getStatus?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Sends a request and reads the answer, which must be JSON.
async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request is answered");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{status}: the answer is not JSON: {text:?}"));
    assert!(
        content_type.starts_with("application/json"),
        "{status}: content-type {content_type:?}"
    );
    (status, value)
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Changes workspace settings through the native admin API.
async fn set_workspace_settings(server: &Server, patch: Value) {
    let response = server
        .patch("/v1/admin/settings", &token("root", true))
        .json(&patch)
        .send()
        .await
        .expect("settings request is answered");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "PATCH /v1/admin/settings {patch} failed: {status} {body}"
    );
}

/// An ISO 8601 timestamp as JavaScript's `Date.toISOString()` writes it.
fn iso8601(at: SystemTime) -> String {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let (secs, ms) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

#[test]
fn iso8601_matches_javascript() {
    let at = UNIX_EPOCH + Duration::from_millis(1_795_867_200_123);
    assert_eq!(iso8601(at), "2026-11-28T12:00:00.123Z");
    assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
}

// ---------------------------------------------------------------------------
// users.setStatus and users.getStatus
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rc_set_status_and_get_status_shapes() {
    let server = start().await;
    let _alice_ws = server.connect("alice", "alice-web", "web").await;
    let alice = Rc::new(&server, "alice", false);
    let bob = Rc::new(&server, "bob", false);

    alice
        .ok(
            "users.setStatus",
            json!({"status": "busy", "message": "Deep work"}),
        )
        .await;

    let own = alice.status_of("").await;
    assert_eq!(
        keys(&own),
        ["_id", "connectionStatus", "message", "status", "success"]
    );
    assert_eq!(
        own,
        json!({
            "_id": "alice",
            "status": "busy",
            "connectionStatus": "online",
            "message": "Deep work",
            "success": true,
        })
    );
    assert_eq!(alice.status_of("userId=alice").await, own);
    assert_eq!(alice.status_of("username=alice.name").await, own);

    let other = json!({"_id": "alice", "status": "busy", "success": true});
    for query in ["userId=alice", "username=alice.name", "user=alice.name"] {
        let answer = bob.status_of(query).await;
        assert_eq!(keys(&answer), ["_id", "status", "success"], "{query}");
        assert_eq!(answer, other, "{query}");
    }
    // Every id is a user; one never seen is offline.
    assert_eq!(
        bob.status_of("userId=ghost").await,
        json!({"_id": "ghost", "status": "offline", "success": true})
    );
    let (status, body) = bob.get("users.getStatus?username=nobody").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        failure(
            "The required \"userId\" or \"username\" param provided does not match any users",
            "error-invalid-user"
        )
    );
}

#[tokio::test]
async fn t4_rc_status_clears_text_and_message_only_keeps_status() {
    let server = start().await;
    let _ws = server.connect("alice", "alice-web", "web").await;
    let alice = Rc::new(&server, "alice", false);
    let own = |status: &str, message: &str| {
        json!({
            "_id": "alice",
            "status": status,
            "connectionStatus": "online",
            "message": message,
            "success": true,
        })
    };

    alice
        .ok(
            "users.setStatus",
            json!({"status": "away", "message": "Lunch"}),
        )
        .await;
    assert_eq!(alice.status_of("").await, own("away", "Lunch"));
    // Only a message: the status stays.
    alice
        .ok("users.setStatus", json!({"message": "Back at 2"}))
        .await;
    assert_eq!(alice.status_of("").await, own("away", "Back at 2"));
    // Only a status: T4 clears the text (Rocket.Chat would keep it).
    alice.ok("users.setStatus", json!({"status": "busy"})).await;
    assert_eq!(alice.status_of("").await, own("busy", ""));
    alice
        .ok("users.setStatus", json!({"message": "Focus"}))
        .await;
    alice.ok("users.setStatus", json!({"message": ""})).await;
    assert_eq!(alice.status_of("").await, own("busy", ""));
    // `online` is automatic: the devices decide.
    alice
        .ok("users.setStatus", json!({"status": "online"}))
        .await;
    assert_eq!(alice.status_of("").await, own("online", ""));
}

#[tokio::test]
async fn a3_rc_offline_means_invisible() {
    let server = start().await;
    let _ws = server.connect("alice", "alice-web", "web").await;
    let alice = Rc::new(&server, "alice", false);
    let bob = Rc::new(&server, "bob", false);

    alice
        .ok(
            "users.setStatus",
            json!({"status": "offline", "message": "Hidden"}),
        )
        .await;
    // Rocket.Chat shows an invisible user their own status as offline;
    // the device is still connected.
    let own = alice.status_of("").await;
    assert_eq!(own["status"], "offline");
    assert_eq!(own["connectionStatus"], "online");
    assert_eq!(own["message"], "Hidden");
    assert_eq!(bob.status_of("userId=alice").await["status"], "offline");
    let (_, presence) = bob.get("users.presence?ids=alice").await;
    assert_eq!(
        presence,
        json!({"users": [], "full": false, "success": true})
    );
}

#[tokio::test]
async fn rc_auth_is_x_user_id_and_x_auth_token() {
    let server = start().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |ttl_secs| MintClaims {
        sub: "alice".into(),
        admin: true,
        username: None,
        name: None,
        ttl: Duration::from_secs(ttl_secs),
    };
    let expired = mint_hs256(SECRET.as_bytes(), &claims(60), now - 3600).unwrap();
    let forged = mint_hs256(
        b"another-secret-that-is-also-32-bytes-long",
        &claims(3600),
        now,
    )
    .unwrap();
    let valid = token("alice", true);
    let bearer = format!("Bearer {valid}");
    let url = server.url("/api/v1/users.getStatus");
    let cases: [(&str, Vec<(&str, &str)>); 8] = [
        ("no headers", vec![]),
        ("only X-User-Id", vec![("X-User-Id", "alice")]),
        ("only X-Auth-Token", vec![("X-Auth-Token", &valid)]),
        (
            "another user's token",
            vec![("X-User-Id", "bob"), ("X-Auth-Token", &valid)],
        ),
        (
            "forged token",
            vec![("X-User-Id", "alice"), ("X-Auth-Token", &forged)],
        ),
        (
            "expired token",
            vec![("X-User-Id", "alice"), ("X-Auth-Token", &expired)],
        ),
        (
            "not a token",
            vec![("X-User-Id", "alice"), ("X-Auth-Token", "abc.def.ghi")],
        ),
        (
            "a bearer token is not Rocket.Chat's auth",
            vec![("Authorization", &bearer)],
        ),
    ];
    for (case, headers) in cases {
        let mut request = server.http().get(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let (status, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(body, unauthorized(), "{case}");
    }

    // Every endpoint answers the same without credentials.
    let gets = [
        "users.getStatus",
        "users.presence",
        "custom-user-status.list",
        "presence.getConnections",
    ];
    let posts = [
        "users.setStatus",
        "custom-user-status.create",
        "custom-user-status.update",
        "custom-user-status.delete",
        "presence.enableBroadcast",
    ];
    for endpoint in gets {
        let url = server.url(&format!("/api/v1/{endpoint}"));
        let (status, body) = send(server.http().get(url)).await;
        assert_eq!((status, body), (StatusCode::UNAUTHORIZED, unauthorized()));
    }
    for endpoint in posts {
        let url = server.url(&format!("/api/v1/{endpoint}"));
        let request = server.http().post(url).body("{}");
        let (status, body) = send(request).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, unauthorized()),
            "{endpoint}"
        );
    }

    // The right pair works, with nothing else.
    let alice = Rc::with_token(&server, "alice", valid);
    assert_eq!(alice.status_of("").await["_id"], "alice");
}

#[tokio::test]
async fn t1_rc_set_status_rejections() {
    let server = start().await;
    let alice = Rc::new(&server, "alice", false);
    let any_of = failure(
        "must have required property 'message'\n must have required property 'status'\n must match a schema in anyOf",
        "invalid-params",
    );
    let cases: [(&str, String, Value); 6] = [
        (
            "unknown status",
            json!({"status": "dnd"}).to_string(),
            failure(
                "Valid status types include online, away, offline, and busy.",
                "error-invalid-status",
            ),
        ),
        ("neither status nor message", "{}".into(), any_of.clone()),
        ("empty body", String::new(), any_of),
        (
            "unknown field",
            json!({"status": "busy", "emoji": ":)"}).to_string(),
            failure("must NOT have additional properties", "invalid-params"),
        ),
        (
            "wrong type",
            json!({"message": 5}).to_string(),
            failure("must be string", "invalid-params"),
        ),
        (
            "text over 120 characters",
            json!({"message": "x".repeat(121)}).to_string(),
            failure(
                "status text is 121 characters long; the limit is 120",
                "error-status-text-too-long",
            ),
        ),
    ];
    for (case, body, expected) in cases {
        let (status, answer) = alice.post_raw("users.setStatus", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(answer, expected, "{case}");
    }

    let (status, answer) = alice.post_raw("users.setStatus", "{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["errorType"], "invalid-params");
    assert_eq!(answer["success"], false);

    let (status, answer) = alice.set_status(json!({"message": "two\nlines"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["errorType"], "error-status-text-invalid");

    // 120 characters (emoji count as one each) are fine, and nothing was
    // changed by the refused requests before.
    let text = "🌴".repeat(120);
    alice.ok("users.setStatus", json!({"message": text})).await;
    assert_eq!(alice.status_of("").await["message"], text.as_str());
}

#[tokio::test]
async fn i2_rc_invisible_disabled() {
    let server = start().await;
    let alice = Rc::new(&server, "alice", false);
    set_workspace_settings(&server, json!({"allow_invisible": false})).await;
    let (status, body) = alice.set_status(json!({"status": "offline"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        failure("Invisible status is disabled", "error-status-not-allowed")
    );
    alice.ok("users.setStatus", json!({"status": "away"})).await;
}

#[tokio::test]
async fn t5_rc_status_text_disabled() {
    let server = start().await;
    let alice = Rc::new(&server, "alice", false);
    set_workspace_settings(&server, json!({"allow_custom_status_text": false})).await;
    let (status, body) = alice
        .set_status(json!({"status": "away", "message": "Lunch"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        failure("Change status is not allowed", "error-not-allowed")
    );
    // Only free text is refused; choosing a status still works.
    alice.ok("users.setStatus", json!({"status": "away"})).await;
}

#[tokio::test]
async fn rc_changing_someone_else_needs_admin() {
    let server = start().await;
    let _ws = server.connect("alice", "alice-web", "web").await;
    let bob = Rc::new(&server, "bob", false);
    let root = Rc::new(&server, "root", true);
    let forbidden = json!({"success": false, "error": "unauthorized"});

    for target in [
        json!({"userId": "alice"}),
        json!({"username": "alice.name"}),
    ] {
        let mut body = json!({"status": "away"});
        body.as_object_mut()
            .unwrap()
            .extend(target.as_object().unwrap().clone());
        let (status, answer) = bob.set_status(body).await;
        assert_eq!((status, &answer), (StatusCode::FORBIDDEN, &forbidden));
    }
    // Naming oneself is fine.
    bob.ok(
        "users.setStatus",
        json!({"status": "away", "userId": "bob"}),
    )
    .await;
    bob.ok(
        "users.setStatus",
        json!({"status": "busy", "username": "bob.name"}),
    )
    .await;
    assert_eq!(bob.status_of("").await["message"], "");
    assert_eq!(alice_status(&bob).await, "online", "refused: unchanged");

    // An admin may change anyone, by id or by username.
    root.ok(
        "users.setStatus",
        json!({"userId": "alice", "status": "busy", "message": "In a meeting"}),
    )
    .await;
    assert_eq!(alice_status(&bob).await, "busy");
    let alice = Rc::new(&server, "alice", false);
    assert_eq!(alice.status_of("").await["message"], "In a meeting");
    root.ok(
        "users.setStatus",
        json!({"username": "alice.name", "status": "away"}),
    )
    .await;
    assert_eq!(alice_status(&bob).await, "away");

    let (status, answer) = root
        .set_status(json!({"username": "ghost", "status": "away"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["errorType"], "error-invalid-user");
}

async fn alice_status(viewer: &Rc<'_>) -> String {
    viewer.status_of("userId=alice").await["status"]
        .as_str()
        .expect("status")
        .to_owned()
}

#[tokio::test]
async fn w1_rc_status_reaches_websocket_watchers() {
    let server = start().await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    bob.ok(json!({"type": "subscribe", "users": ["alice"]}))
        .await;
    let _alice_ws = server.connect("alice", "alice-desktop", "desktop").await;
    bob.expect_presence("alice", "online").await;

    Rc::new(&server, "alice", false)
        .ok(
            "users.setStatus",
            json!({"status": "away", "message": "Lunch"}),
        )
        .await;
    let update = bob.expect_presence("alice", "away").await;
    assert_eq!(update["text"], "Lunch");
}

// ---------------------------------------------------------------------------
// users.presence
// ---------------------------------------------------------------------------

#[tokio::test]
async fn w2_rc_users_presence_takes_ids_in_every_form() {
    let server = start().await;
    let _alice = server.connect("alice", "alice-web", "web").await;
    let _carol = server.connect("carol", "carol-web", "web").await;
    Rc::new(&server, "carol", false)
        .ok(
            "users.setStatus",
            json!({"status": "busy", "message": "Focus"}),
        )
        .await;
    let bob = Rc::new(&server, "bob", false);

    let expected = json!({
        "users": [
            {"_id": "alice", "username": "alice.name", "name": "User alice", "status": "online", "utcOffset": 0.0},
            {"_id": "carol", "username": "carol.name", "name": "User carol", "status": "busy", "statusText": "Focus", "utcOffset": 0.0},
        ],
        "full": false,
        "success": true,
    });
    for query in [
        "ids=alice,carol,dave",
        "ids[]=alice&ids[]=carol&ids[]=dave",
        "ids%5B%5D=alice&ids%5B%5D=carol",
        "ids=alice&ids=carol&ids=dave",
        "ids[0]=alice&ids[1]=carol",
    ] {
        let (status, body) = bob.get(&format!("users.presence?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(keys(&body), ["full", "success", "users"], "{query}");
        assert_eq!(body, expected, "{query}");
    }
}

#[tokio::test]
async fn rc_users_presence_from_lists_the_changes_of_the_last_ten_minutes() {
    let server = start().await;
    let _alice = server.connect("alice", "alice-web", "web").await;
    let _bob_ws = server.connect("bob", "bob-web", "web").await;
    let carol_ws = server.connect("carol", "carol-web", "web").await;
    carol_ws.close().await;
    let bob = Rc::new(&server, "bob", false);
    // State that changes after a socket closes has no event to wait on.
    wait_until(
        "carol offline",
        DEADLINE,
        async || bob.status_of("userId=carol").await,
        |carol| carol["status"] == "offline",
    )
    .await;

    let ids = |body: &Value| -> BTreeSet<String> {
        body["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["_id"].as_str().expect("_id").to_owned())
            .collect()
    };
    let status_of = |body: &Value, user: &str| -> Value {
        body["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["_id"] == user)
            .map(|u| u["status"].clone())
            .unwrap_or(Value::Null)
    };

    // Within ten minutes: who changed since, offline ones included, except
    // the caller.
    let recent = iso8601(SystemTime::now() - Duration::from_secs(60));
    let (status, delta) = bob.get(&format!("users.presence?from={recent}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(delta["full"], false);
    assert_eq!(
        ids(&delta),
        BTreeSet::from(["alice".into(), "carol".into()])
    );
    assert_eq!(status_of(&delta, "carol"), "offline");
    assert_eq!(status_of(&delta, "alice"), "online");

    // A later `from` than the changes: nothing.
    let (_, none) = bob
        .get(&format!(
            "users.presence?from={}",
            iso8601(SystemTime::now())
        ))
        .await;
    assert_eq!(none, json!({"users": [], "full": false, "success": true}));

    // Older than ten minutes, unparseable, or absent: everyone not
    // offline, the caller included.
    let old = iso8601(SystemTime::now() - Duration::from_secs(11 * 60));
    for query in [
        format!("from={old}"),
        "from=yesterday".into(),
        String::new(),
    ] {
        let (status, full) = bob.get(&format!("users.presence?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(full["full"], true, "{query}");
        assert_eq!(
            ids(&full),
            BTreeSet::from(["alice".into(), "bob".into()]),
            "{query}"
        );
    }
}

// ---------------------------------------------------------------------------
// The presence cap: users.presence, presence.getConnections,
// presence.enableBroadcast
// ---------------------------------------------------------------------------

#[tokio::test]
async fn x2_x4_rc_presence_while_the_broadcast_is_disabled() {
    let server = start_with(ServerOptions::default().arg("--cap", 1)).await;
    let alice_ws = server.connect("alice", "alice-web", "web").await;
    let bob_ws = server.connect("bob", "bob-web", "web").await;
    let root = Rc::new(&server, "root", true);

    let empty = json!({"users": [], "full": true, "success": true});
    // At once on one node; within a moment in a cluster, where the counts
    // of every node reach the cap owner (X1).
    wait_until(
        format_args!("the broadcast to stop (users.presence {empty})"),
        DEADLINE,
        async || root.get("users.presence").await.1,
        |body| *body == empty,
    )
    .await;
    for query in ["", "ids=alice,bob", "from=2026-01-01T00:00:00.000Z"] {
        let (status, body) = root.get(&format!("users.presence?{query}")).await;
        assert_eq!((status, &body), (StatusCode::OK, &empty), "{query}");
    }
    // Reads of single users still return the last known status.
    assert_eq!(alice_status(&root).await, "online");

    let connections = |current: u64| json!({"current": current, "max": 1, "success": true});
    wait_for_connections(&root, connections(2)).await;
    let (status, body) = root.get("presence.getConnections").await;
    assert_eq!(keys(&body), ["current", "max", "success"]);
    assert_eq!((status, body), (StatusCode::OK, connections(2)));

    let refused = |count: u64| {
        json!({
            "success": false,
            "error": format!("Cannot enable broadcast when there are {count} connections and the limit is 1"),
        })
    };
    let (status, body) = root.post_raw("presence.enableBroadcast", "").await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, refused(2)));

    // At the cap is not below it.
    bob_ws.close().await;
    wait_for_connections(&root, connections(1)).await;
    let (status, body) = root.post_raw("presence.enableBroadcast", "").await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, refused(1)));

    alice_ws.close().await;
    wait_for_connections(&root, connections(0)).await;
    let (status, body) = root.post_raw("presence.enableBroadcast", "").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"success": true})));

    let _carol = server.connect("carol", "carol-web", "web").await;
    let (_, body) = root.get("users.presence").await;
    assert_eq!(body["full"], true);
    assert_eq!(body["users"][0]["_id"], "carol");
}

async fn wait_for_connections(admin: &Rc<'_>, expected: Value) {
    wait_until(
        format_args!("connections {expected}"),
        DEADLINE,
        async || admin.get("presence.getConnections").await.1,
        |body| *body == expected,
    )
    .await;
}

#[tokio::test]
async fn x5_rc_presence_endpoints_need_admin() {
    let server = start().await;
    let _ws = server.connect("alice", "alice-web", "web").await;
    let bob = Rc::new(&server, "bob", false);
    let (status, body) = bob.get("presence.getConnections").await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, missing_permission())
    );
    let (status, body) = bob.post_raw("presence.enableBroadcast", "").await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, missing_permission())
    );

    let root = Rc::new(&server, "root", true);
    wait_for_connections(&root, json!({"current": 1, "max": 200, "success": true})).await;
    let (status, body) = root.get("presence.getConnections").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"current": 1, "max": 200, "success": true})
        )
    );
}

#[tokio::test]
async fn x4_rc_enable_broadcast_takes_an_empty_json_body() {
    let server = start().await;
    let root = Rc::new(&server, "root", true);
    // What Rocket.Chat's client sends for a POST without parameters.
    let (status, body) = root.post_raw("presence.enableBroadcast", "").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"success": true})));
    let (status, body) = root.post("presence.enableBroadcast", json!({})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"success": true})));
    // No Content-Type at all.
    let request = root.authed(
        server
            .http()
            .post(server.url("/api/v1/presence.enableBroadcast")),
    );
    let (status, body) = send(request).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"success": true})));
}

// ---------------------------------------------------------------------------
// custom-user-status.*
// ---------------------------------------------------------------------------

#[tokio::test]
async fn c1_rc_custom_user_status_crud() {
    let server = start().await;
    let root = Rc::new(&server, "root", true);
    let bob = Rc::new(&server, "bob", false);

    let (status, created) = root
        .post(
            "custom-user-status.create",
            json!({"name": "Vacation", "statusType": "away"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(keys(&created), ["customUserStatus", "success"]);
    let vacation = created["customUserStatus"].clone();
    assert_eq!(keys(&vacation), ["_id", "_updatedAt", "name", "statusType"]);
    assert_eq!(vacation["name"], "Vacation");
    assert_eq!(vacation["statusType"], "away");
    let updated_at = vacation["_updatedAt"].as_str().expect("_updatedAt");
    assert!(
        updated_at.len() == 24 && updated_at.ends_with('Z'),
        "{updated_at}"
    );
    let vacation_id = vacation["_id"].as_str().expect("_id").to_owned();

    let (_, meeting) = root
        .post(
            "custom-user-status.create",
            json!({"name": "In a meeting", "statusType": "busy"}),
        )
        .await;
    // Without a type a custom status maps to online (automatic).
    let (_, commuting) = root
        .post("custom-user-status.create", json!({"name": "Commuting"}))
        .await;
    assert_eq!(commuting["customUserStatus"]["statusType"], "online");

    // Every user may list them.
    let names = |body: &Value| -> Vec<String> {
        body["statuses"]
            .as_array()
            .expect("statuses")
            .iter()
            .map(|s| s["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let (status, list) = bob.get("custom-user-status.list").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&list),
        ["count", "offset", "statuses", "success", "total"]
    );
    assert_eq!(
        list,
        json!({
            "statuses": [
                commuting["customUserStatus"],
                meeting["customUserStatus"],
                vacation,
            ],
            "count": 3,
            "offset": 0,
            "total": 3,
            "success": true,
        })
    );
    let (_, filtered) = bob.get("custom-user-status.list?name=MEET").await;
    assert_eq!(names(&filtered), ["In a meeting"]);
    assert_eq!(
        (filtered["count"].clone(), filtered["total"].clone()),
        (json!(1), json!(1))
    );
    let (_, by_id) = bob
        .get(&format!("custom-user-status.list?_id={vacation_id}"))
        .await;
    assert_eq!(names(&by_id), ["Vacation"]);
    let (_, page) = bob.get("custom-user-status.list?offset=1&count=1").await;
    assert_eq!(names(&page), ["In a meeting"]);
    assert_eq!(
        (
            page["count"].clone(),
            page["offset"].clone(),
            page["total"].clone()
        ),
        (json!(1), json!(1), json!(3))
    );
    let (_, sorted) = bob
        .get("custom-user-status.list?sort=%7B%22name%22%3A-1%7D")
        .await;
    assert_eq!(names(&sorted), ["Vacation", "In a meeting", "Commuting"]);
    let (status, bad) = bob.get("custom-user-status.list?count=many").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad, failure("must be number", "invalid-params"));

    let (status, updated) = root
        .post(
            "custom-user-status.update",
            json!({"_id": vacation_id, "name": "Holiday", "statusType": "offline"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(keys(&updated), ["customUserStatus", "success"]);
    assert_eq!(updated["customUserStatus"]["_id"], vacation_id.as_str());
    assert_eq!(updated["customUserStatus"]["name"], "Holiday");
    assert_eq!(updated["customUserStatus"]["statusType"], "offline");
    // Without a type the update keeps it.
    let (_, renamed) = root
        .post(
            "custom-user-status.update",
            json!({"_id": vacation_id, "name": "Leave"}),
        )
        .await;
    assert_eq!(renamed["customUserStatus"]["statusType"], "offline");

    root.ok(
        "custom-user-status.delete",
        json!({"customUserStatusId": vacation_id}),
    )
    .await;
    let (_, list) = bob.get("custom-user-status.list").await;
    assert_eq!(names(&list), ["Commuting", "In a meeting"]);
    assert_eq!(list["total"], 2);
}

#[tokio::test]
async fn c1_rc_custom_user_status_rejections() {
    let server = start().await;
    let root = Rc::new(&server, "root", true);
    let bob = Rc::new(&server, "bob", false);
    let (_, created) = root
        .post(
            "custom-user-status.create",
            json!({"name": "Vacation", "statusType": "away"}),
        )
        .await;
    let id = created["customUserStatus"]["_id"]
        .as_str()
        .expect("_id")
        .to_owned();
    root.post(
        "custom-user-status.create",
        json!({"name": "Lunch", "statusType": "away"}),
    )
    .await;

    // Only admins write.
    for (endpoint, body) in [
        ("custom-user-status.create", json!({"name": "Mine"})),
        (
            "custom-user-status.update",
            json!({"_id": id, "name": "Mine"}),
        ),
        (
            "custom-user-status.delete",
            json!({"customUserStatusId": id}),
        ),
    ] {
        let (status, answer) = bob.post(endpoint, body).await;
        assert_eq!(
            (status, answer),
            (StatusCode::FORBIDDEN, missing_permission()),
            "{endpoint}"
        );
    }

    let name_taken = failure(
        "The custom user status name is already in use",
        "Custom_User_Status_Error_Name_Already_In_Use",
    );
    let mut cases = vec![
        (
            "custom-user-status.create",
            json!({"name": "vacation", "statusType": "busy"}),
            name_taken.clone(),
        ),
        (
            "custom-user-status.create",
            json!({"name": "Gone", "statusType": "dnd"}),
            failure(
                "dnd is not a valid status type",
                "error-input-is-not-a-valid-field",
            ),
        ),
        (
            "custom-user-status.create",
            json!({"name": "  "}),
            failure("The field Name is required", "error-the-field-is-required"),
        ),
        (
            "custom-user-status.create",
            json!({}),
            failure("must have required property 'name'", "invalid-params"),
        ),
        (
            "custom-user-status.create",
            json!({"name": "x".repeat(121)}),
            failure(
                "custom status name is invalid: the name is longer than 120 characters",
                "error-input-is-not-a-valid-field",
            ),
        ),
        (
            "custom-user-status.update",
            json!({"_id": "nope", "name": "X"}),
            json!({"success": false, "error": "No custom user status found with the id of \"nope\"."}),
        ),
        (
            "custom-user-status.update",
            json!({"_id": id, "name": "LUNCH"}),
            name_taken,
        ),
        (
            "custom-user-status.update",
            json!({"_id": id, "name": "Vacation", "statusType": "idle"}),
            failure(
                "idle is not a valid status type",
                "error-input-is-not-a-valid-field",
            ),
        ),
        (
            "custom-user-status.delete",
            json!({"customUserStatusId": "nope"}),
            failure(
                "Invalid user status",
                "Custom_User_Status_Error_Invalid_User_Status",
            ),
        ),
        (
            "custom-user-status.delete",
            json!({}),
            json!({"success": false, "error": "The \"customUserStatusId\" params is required!"}),
        ),
    ];
    for c in ['<', '>', '&', '"', '\''] {
        let name = format!("a{c}b");
        cases.push((
            "custom-user-status.create",
            json!({"name": name, "statusType": "away"}),
            failure(
                &format!("{name} is not a valid name"),
                "error-input-is-not-a-valid-field",
            ),
        ));
    }
    for (endpoint, body, expected) in cases {
        let (status, answer) = root.post(endpoint, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{endpoint} {body}");
        assert_eq!(answer, expected, "{endpoint} {body}");
    }
    let (status, answer) = root.post_raw("custom-user-status.delete", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer["error"],
        "The \"customUserStatusId\" params is required!"
    );

    // Nothing was changed by the refusals.
    let (_, list) = bob.get("custom-user-status.list").await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["statuses"][1]["name"], "Vacation");
    assert_eq!(list["statuses"][1]["statusType"], "away");
}

// ---------------------------------------------------------------------------
// Limits and the JSON-everywhere rule
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rc_rate_limit_answers_429() {
    let server = Server::start_with(
        ServerOptions::default()
            .arg("--status-changes-burst", 2)
            .arg("--status-changes-per-second", 0.01),
    )
    .await;
    let alice = Rc::new(&server, "alice", false);
    alice.ok("users.setStatus", json!({"status": "away"})).await;
    alice.ok("users.setStatus", json!({"status": "busy"})).await;

    let response = alice
        .authed(server.http().post(alice.url("users.setStatus")))
        .header("Content-Type", "application/json")
        .body(json!({"status": "online"}).to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After header");
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(
        body,
        failure(
            &format!(
                "Error, too many requests. Please slow down. You must wait {retry_after} seconds before trying this endpoint again."
            ),
            "error-too-many-requests",
        )
    );
    // The refused change did not happen.
    assert_eq!(alice.status_of("").await["message"], "");
    let (_, own) = alice.get("users.getStatus").await;
    assert_eq!(own["_id"], "alice");
}

#[tokio::test]
async fn rc_every_answer_under_api_is_json() {
    let server = start().await;
    let alice = Rc::new(&server, "alice", false);
    let not_found = json!({"success": false, "error": "Resource not found"});
    for path in ["/api/v1/nope", "/api/v2/users.presence", "/api", "/api/v1"] {
        let (status, body) = send(alice.authed(server.http().get(server.url(path)))).await;
        assert_eq!(
            (status, &body),
            (StatusCode::NOT_FOUND, &not_found),
            "{path}"
        );
    }
    let (status, body) = send(server.http().delete(server.url("/api/v1/x/y"))).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found));

    let not_allowed = json!({"success": false, "error": "Method not allowed"});
    let (status, body) = alice.get("users.setStatus").await;
    assert_eq!(
        (status, body),
        (StatusCode::METHOD_NOT_ALLOWED, not_allowed.clone())
    );
    let (status, body) = alice.post("users.getStatus", json!({})).await;
    assert_eq!(
        (status, body),
        (StatusCode::METHOD_NOT_ALLOWED, not_allowed)
    );

    let huge = json!({"message": "x".repeat(100 * 1024)}).to_string();
    let (status, body) = alice.post_raw("users.setStatus", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["success"], false);
    assert_eq!(body["errorType"], "error-payload-too-large");
}

// ---------------------------------------------------------------------------
// R3: profiles in users.presence
// ---------------------------------------------------------------------------

/// A token without `username` or `name` claims, as many identity systems
/// issue them.
fn bare_token(user: &str, admin: bool) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = MintClaims {
        sub: user.into(),
        admin,
        username: None,
        name: None,
        ttl: Duration::from_secs(3600),
    };
    mint_hs256(SECRET.as_bytes(), &claims, now).unwrap()
}

/// A WebSocket of `user` with a bare token and this upgrade query.
async fn connect_bare(server: &Server, user: &str, query: &str) -> presence_e2e::Ws {
    let url = format!(
        "ws://{}/v1/ws?platform=web&device_id={user}-web{query}",
        server.addr
    );
    let mut ws = presence_e2e::Ws::connect_with_token(&url, &bare_token(user, false))
        .await
        .expect("websocket connects");
    ws.expect_type("ready").await;
    ws
}

/// One `users.presence` item, as Rocket.Chat shows it.
fn rc_user(id: &str, username: &str, name: &str, utc_offset: f64) -> Value {
    json!({"_id": id, "username": username, "name": name, "status": "online", "utcOffset": utc_offset})
}

/// `users.presence?ids=…` once every listed user shows what is expected
/// (a cluster applies a change within a moment, W4).
async fn presence_becomes(viewer: &Rc<'_>, ids: &str, expected: Value) {
    let endpoint = format!("users.presence?ids={ids}");
    let last = wait_until(
        format!("users.presence to show {expected}"),
        DEADLINE,
        async || viewer.get(&endpoint).await.1["users"].clone(),
        |users| *users == expected,
    )
    .await;
    assert_eq!(last, expected);
}

/// R3: `users.presence` items always carry `_id, username, name, status,
/// utcOffset`, with tokens that carry no profile claims: the fallbacks
/// (username = id, name = username, offset 0), the client's own offset
/// (on the WebSocket upgrade and through `method.call/userSetUtcOffset`)
/// and an admin's stored profiles (one, or a bulk sync) each show.
#[tokio::test]
async fn r3_rc_users_presence_items_always_carry_every_field() {
    let server = start().await;
    let root = Rc::with_token(&server, "root", bare_token("root", true));
    let admin_token = bare_token("root", true);
    let stored = Server::call(
        server
            .put("/v1/admin/users/cat/profile", &admin_token)
            .json(&json!({"username": " cat.s ", "name": "Cat S", "utc_offset": -3})),
    )
    .await;
    assert_eq!(
        stored,
        (
            200,
            json!({"username": "cat.s", "name": "Cat S", "utc_offset": -3.0})
        )
    );
    let _ann = connect_bare(&server, "ann", "&utc_offset=5.5").await;
    let _bob = connect_bare(&server, "bob", "").await;
    let _cat = connect_bare(&server, "cat", "").await;
    presence_becomes(
        &root,
        "ann,bob,cat",
        json!([
            rc_user("ann", "ann", "ann", 5.5),
            rc_user("bob", "bob", "bob", 0.0),
            rc_user("cat", "cat.s", "Cat S", -3.0),
        ]),
    )
    .await;

    // The way Rocket.Chat clients report their offset after login.
    let ann = Rc::with_token(&server, "ann", bare_token("ann", false));
    let call = json!({"msg": "method", "id": "7", "method": "userSetUtcOffset", "params": [-7]});
    let (status, answer) = ann
        .post(
            "method.call/userSetUtcOffset",
            json!({"message": call.to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["success"], true);
    let result: Value = serde_json::from_str(answer["message"].as_str().unwrap()).unwrap();
    assert_eq!(result, json!({"msg": "result", "id": "7"}));
    for bad in [json!([15]), json!(["5"]), json!([])] {
        let call = json!({"msg": "method", "id": "8", "method": "userSetUtcOffset", "params": bad});
        let (status, answer) = ann
            .post(
                "method.call/userSetUtcOffset",
                json!({"message": call.to_string()}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert_eq!(answer["errorType"], "invalid-params", "{bad}");
    }

    // A directory sync: every entry is checked before anything is stored.
    let bulk = |profiles: Value| {
        Server::call(
            server
                .put("/v1/admin/users/profiles", &admin_token)
                .json(&json!({ "profiles": profiles })),
        )
    };
    let (status, answer) = bulk(json!([
        {"id": "bob", "username": "bob.b", "name": "Bob B"},
        {"id": "ann", "utc_offset": 99},
    ]))
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_body"))
    );
    let (status, answer) = bulk(json!([{"id": "bob", "username": "bob.b", "name": "Bob B"}])).await;
    assert_eq!((status, answer), (200, json!({"stored": 1})));
    presence_becomes(
        &root,
        "ann,bob,cat",
        json!([
            rc_user("ann", "ann", "ann", -7.0),
            rc_user("bob", "bob.b", "Bob B", 0.0),
            rc_user("cat", "cat.s", "Cat S", -3.0),
        ]),
    )
    .await;
    // Usernames from stored profiles name users in Rocket.Chat's calls.
    assert_eq!(root.status_of("username=bob.b").await["_id"], "bob");

    // Only admins store profiles, and only valid ones.
    let (status, answer) = Server::call(
        server
            .put("/v1/admin/users/cat/profile", &bare_token("ann", false))
            .json(&json!({"name": "Not Cat"})),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (403, &json!("forbidden"))
    );
    for (bad, code) in [
        (json!({"username": ""}), "invalid_body"),
        (json!({"name": "x".repeat(121)}), "invalid_body"),
        (json!({"name": "a\u{7}b"}), "invalid_body"),
        (json!({"utc_offset": -12.5}), "invalid_body"),
        (json!({"nickname": "c"}), "invalid_request"),
    ] {
        let (status, answer) = Server::call(
            server
                .put("/v1/admin/users/cat/profile", &admin_token)
                .json(&bad),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{bad}");
    }
    let (status, answer) = server
        .refused_upgrade(
            "platform=web&utc_offset=20",
            Some(&bare_token("ann", false)),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_query"))
    );
}

// ---------------------------------------------------------------------------
// Rocket.Chat's own JavaScript client
// ---------------------------------------------------------------------------

/// The version of `@rocket.chat/api-client` the test installs, and the one
/// of its only runtime dependency.
const API_CLIENT: &str = "@rocket.chat/api-client@0.2.57";
const QUERY_STRING: &str = "query-string@7.1.3";

/// Drives the server with Rocket.Chat's `RestClient`, printing what each
/// call returned (or, for a rejected call, the HTTP status and JSON body).
const CLIENT_SCRIPT: &str = r#"
const { RestClient } = require('@rocket.chat/api-client');
const [base, aliceToken, rootToken, bobBareToken] = process.argv.slice(2);
const client = (user, token) =>
  new RestClient({ baseUrl: base, credentials: { 'X-User-Id': user, 'X-Auth-Token': token } });
const alice = client('alice', aliceToken);
const root = client('root', rootToken);
const anonymous = new RestClient({ baseUrl: base });
// A token without username or name claims (R3).
const bob = client('bob', bobBareToken);
const refused = async (call) => {
  try {
    return { resolved: await call };
  } catch (response) {
    return { status: response.status, body: await response.json() };
  }
};
(async () => {
  const out = {};
  out.setStatus = await alice.post('/v1/users.setStatus', { status: 'busy', message: 'Deep work' });
  out.ownStatus = await alice.get('/v1/users.getStatus');
  out.otherStatus = await root.get('/v1/users.getStatus', { username: 'alice.name' });
  out.presence = await root.get('/v1/users.presence', { ids: ['alice', 'bob'] });
  out.bobSetUtcOffset = await bob.post('/v1/method.call/userSetUtcOffset', {
    message: JSON.stringify({ msg: 'method', id: '1', method: 'userSetUtcOffset', params: [-3.5] }),
  });
  out.bobPresence = await bob.get('/v1/users.presence', { ids: ['bob', 'alice'] });
  out.created = await root.post('/v1/custom-user-status.create', { name: 'Vacation', statusType: 'away' });
  out.list = await alice.get('/v1/custom-user-status.list', { count: 10, offset: 0, name: 'vac' });
  const id = out.created.customUserStatus._id;
  out.updated = await root.post('/v1/custom-user-status.update', { _id: id, name: 'Holiday', statusType: 'busy' });
  out.deleted = await root.post('/v1/custom-user-status.delete', { customUserStatusId: id });
  out.connections = await root.get('/v1/presence.getConnections');
  out.enableBroadcast = await root.post('/v1/presence.enableBroadcast');
  out.invalidStatus = await refused(alice.post('/v1/users.setStatus', { status: 'dnd' }));
  out.anonymous = await refused(anonymous.get('/v1/users.getStatus'));
  out.forbidden = await refused(alice.get('/v1/presence.getConnections'));
  process.stdout.write(JSON.stringify(out));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
"#;

#[tokio::test]
async fn rc_javascript_client_works_unchanged() {
    let Some(dir) = install_api_client().await else {
        return;
    };
    let server = start().await;
    let _ws = server.connect("alice", "alice-web", "web").await;
    let _bob = connect_bare(&server, "bob", "").await;
    // In a cluster the count reaches the cap owner within a moment (X1).
    let root = Rc::new(&server, "root", true);
    wait_for_connections(&root, json!({"current": 2, "max": 200, "success": true})).await;
    let script = dir.path().join("client.js");
    std::fs::write(&script, CLIENT_SCRIPT).expect("writing client.js");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(&script)
            .arg(format!("http://{}", server.addr))
            .arg(token("alice", false))
            .arg(token("root", true))
            .arg(bare_token("bob", false))
            .current_dir(dir.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node finishes")
    .expect("node runs");
    assert!(
        output.status.success(),
        "the Rocket.Chat client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    assert_eq!(out["setStatus"], json!({"success": true}));
    assert_eq!(
        out["ownStatus"],
        json!({
            "_id": "alice",
            "status": "busy",
            "connectionStatus": "online",
            "message": "Deep work",
            "success": true,
        })
    );
    assert_eq!(
        out["otherStatus"],
        json!({"_id": "alice", "status": "busy", "success": true})
    );
    let alice = json!({
        "_id": "alice",
        "username": "alice.name",
        "name": "User alice",
        "status": "busy",
        "utcOffset": 0,
        "statusText": "Deep work",
    });
    // R3: bob's token says nothing about him: the fallbacks, then the
    // offset his client reported.
    let bob = |offset: Value| json!({"_id": "bob", "username": "bob", "name": "bob", "status": "online", "utcOffset": offset});
    assert_eq!(
        out["presence"],
        json!({"users": [alice.clone(), bob(json!(0))], "full": false, "success": true})
    );
    assert_eq!(out["bobSetUtcOffset"]["success"], true);
    assert_eq!(
        out["bobSetUtcOffset"]["message"],
        r#"{"id":"1","msg":"result"}"#
    );
    assert_eq!(
        out["bobPresence"],
        json!({"users": [alice, bob(json!(-3.5))], "full": false, "success": true})
    );
    assert_eq!(out["created"]["customUserStatus"]["name"], "Vacation");
    assert_eq!(out["list"]["total"], 1);
    assert_eq!(out["list"]["statuses"][0]["name"], "Vacation");
    assert_eq!(out["updated"]["customUserStatus"]["name"], "Holiday");
    assert_eq!(out["updated"]["customUserStatus"]["statusType"], "busy");
    assert_eq!(out["deleted"], json!({"success": true}));
    assert_eq!(
        out["connections"],
        json!({"current": 2, "max": 200, "success": true})
    );
    assert_eq!(out["enableBroadcast"], json!({"success": true}));
    assert_eq!(
        out["invalidStatus"],
        json!({
            "status": 400,
            "body": failure(
                "Valid status types include online, away, offline, and busy.",
                "error-invalid-status",
            ),
        })
    );
    assert_eq!(
        out["anonymous"],
        json!({"status": 401, "body": unauthorized()})
    );
    assert_eq!(
        out["forbidden"],
        json!({"status": 403, "body": missing_permission()})
    );
}

/// Installs Rocket.Chat's client into a temporary directory with npm, or
/// says why it cannot and returns `None`. Only its runtime code is needed:
/// the package itself (`npm pack`) and `query-string`; its type-only
/// dependencies (`@rocket.chat/rest-typings` and friends) are skipped.
async fn install_api_client() -> Option<tempfile::TempDir> {
    for tool in ["node", "npm", "tar"] {
        if !run(tool, &["--version"], Path::new(".")).await {
            println!("SKIPPED rc_javascript_client_works_unchanged: `{tool}` is not available");
            return None;
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path();
    std::fs::write(path.join("package.json"), r#"{"private": true}"#).expect("package.json");
    let steps: [(&str, &[&str]); 3] = [
        ("npm", &["pack", "--silent", API_CLIENT]),
        (
            "npm",
            &[
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                QUERY_STRING,
            ],
        ),
        ("tar", &["xzf", "rocket.chat-api-client-0.2.57.tgz"]),
    ];
    for (tool, args) in steps {
        if !run(tool, args, path).await {
            println!(
                "SKIPPED rc_javascript_client_works_unchanged: `{tool} {}` failed (is the npm registry reachable?)",
                args.join(" ")
            );
            return None;
        }
    }
    let target = path.join("node_modules/@rocket.chat");
    std::fs::create_dir_all(&target).expect("node_modules/@rocket.chat");
    std::fs::rename(path.join("package"), target.join("api-client")).expect("placing the client");
    Some(dir)
}

/// Runs a command quietly with a deadline; whether it succeeded.
async fn run(tool: &str, args: &[&str], dir: &Path) -> bool {
    let child = tokio::process::Command::new(tool)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(180), child).await {
        Ok(Ok(output)) if output.status.success() => true,
        Ok(Ok(output)) => {
            println!(
                "`{tool} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            false
        }
        Ok(Err(_)) => false,
        Err(_) => {
            println!("`{tool} {}` timed out", args.join(" "));
            false
        }
    }
}

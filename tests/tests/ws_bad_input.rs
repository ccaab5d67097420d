//! Bad input over WebSocket, end to end. Every case must get its documented
//! error, fail alone (another user's socket on the same server keeps
//! working) and change nothing (the user's `version` does not move, W3).

use std::time::Duration;

use futures_util::StreamExt;
use presence_e2e::{Server, ServerOptions, Ws, token, token_issued_at, unix_now_secs};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Alice (the sender of bad input, on two devices), Bob (an innocent user
/// on the same server) and Carol, who watches both.
struct Scene {
    server: Server,
    alice: Ws,
    alice_phone: Ws,
    bob: Ws,
    carol: Ws,
    before: Value,
}

impl Scene {
    async fn start(options: ServerOptions) -> Scene {
        let server = Server::start_with(options).await;
        let mut carol = server.connect("carol", "carol-web", "web").await;
        carol.subscribe(&["alice", "bob"]).await;
        let alice = server.connect("alice", "alice-desktop", "desktop").await;
        let alice_phone = server.connect("alice", "alice-phone", "mobile").await;
        let bob = server.connect("bob", "bob-web", "web").await;
        carol.expect_update("alice", "online").await;
        carol.expect_update("bob", "online").await;
        let before = carol.query("alice").await;
        Scene {
            server,
            alice,
            alice_phone,
            bob,
            carol,
            before,
        }
    }

    /// Nothing about alice changed, and bob's socket still works.
    async fn assert_alone_and_unchanged(&mut self) {
        let now = self.carol.query("alice").await;
        assert_eq!(now, self.before, "bad input changed alice");
        self.bob.ok(json!({"type": "idle"})).await;
        self.carol.expect_update("bob", "away").await;
        self.bob.ok(json!({"type": "active"})).await;
        self.carol.expect_update("bob", "online").await;
    }
}

/// Frames that fail to parse: (frame, code, the ref the error echoes).
fn malformed() -> Vec<(String, &'static str, Option<&'static str>)> {
    let long_ref = "r".repeat(65);
    let long_user = "u".repeat(129);
    let huge_type = "t".repeat(10_000);
    vec![
        ("not json".into(), "invalid_json", None),
        (r#"{"type": "lock""#.into(), "invalid_json", None),
        (r#"[{"type": "lock"}]"#.into(), "invalid_json", None),
        (r#""lock""#.into(), "invalid_json", None),
        ("null".into(), "invalid_json", None),
        ("".into(), "invalid_json", None),
        (r#"{"ref": "r1"}"#.into(), "missing_type", Some("r1")),
        (
            r#"{"ref": "r2", "type": null}"#.into(),
            "unknown_type",
            Some("r2"),
        ),
        (
            r#"{"ref": "r3", "type": "teleport"}"#.into(),
            "unknown_type",
            Some("r3"),
        ),
        (
            r#"{"ref": "r4", "type": 42}"#.into(),
            "unknown_type",
            Some("r4"),
        ),
        (
            r#"{"ref": 7, "type": "LOCK"}"#.into(),
            "unknown_type",
            Some("7"),
        ),
        (
            format!(r#"{{"ref": "r5", "type": "{huge_type}"}}"#),
            "unknown_type",
            Some("r5"),
        ),
        (
            r#"{"ref": "r6", "type": "subscribe", "users": "bob"}"#.into(),
            "invalid_message",
            Some("r6"),
        ),
        (
            r#"{"ref": "r7", "type": "subscribe", "users": [1]}"#.into(),
            "invalid_message",
            Some("r7"),
        ),
        (
            r#"{"ref": "r8", "type": "subscribe"}"#.into(),
            "invalid_message",
            Some("r8"),
        ),
        (
            r#"{"ref": "r9", "type": "calendar", "event_id": "e", "busy": "yes"}"#.into(),
            "invalid_message",
            Some("r9"),
        ),
        (
            r#"{"ref": "r10", "type": "set_status", "status": "sleeping"}"#.into(),
            "invalid_message",
            Some("r10"),
        ),
        (
            r#"{"ref": "r11", "type": "set_status", "status": "busy", "expires_at": "tomorrow"}"#
                .into(),
            "invalid_message",
            Some("r11"),
        ),
        (
            r#"{"ref": "r12", "type": "set_status", "text": 5}"#.into(),
            "invalid_message",
            Some("r12"),
        ),
        (
            r#"{"ref": "r13", "type": "lock", "force": true}"#.into(),
            "invalid_message",
            Some("r13"),
        ),
        (
            r#"{"ref": "r14", "type": "set_status", "status": "busy", "colour": "red"}"#.into(),
            "invalid_message",
            Some("r14"),
        ),
        (
            r#"{"ref": "r15", "type": "use_custom_status", "id": 3}"#.into(),
            "invalid_message",
            Some("r15"),
        ),
        (
            format!(r#"{{"ref": "{long_ref}", "type": "lock"}}"#),
            "invalid_ref",
            None,
        ),
        (
            r#"{"ref": {"a": 1}, "type": "lock"}"#.into(),
            "invalid_ref",
            None,
        ),
        (r#"{"ref": -1, "type": "lock"}"#.into(), "invalid_ref", None),
        (
            r#"{"ref": "r16", "type": "subscribe", "users": [""]}"#.into(),
            "invalid_user_id",
            Some("r16"),
        ),
        (
            format!(r#"{{"ref": "r17", "type": "query", "users": ["{long_user}"]}}"#),
            "invalid_user_id",
            Some("r17"),
        ),
        (
            r#"{"ref": "r18", "type": "calendar", "event_id": "", "busy": true}"#.into(),
            "calendar_event_id_invalid",
            Some("r18"),
        ),
        (
            r#"{"ref": "r19", "type": "use_custom_status", "id": "nope"}"#.into(),
            "custom_status_not_found",
            Some("r19"),
        ),
        (
            r#"{"ref": "r20", "type": "set_status"}"#.into(),
            "empty_status_change",
            Some("r20"),
        ),
    ]
}

#[tokio::test]
async fn malformed_frames_get_their_error_alone_and_change_nothing() {
    let mut scene = Scene::start(ServerOptions::default().relaxed_limits()).await;
    for (frame, code, echoed) in malformed() {
        scene.alice.send_text(&frame).await;
        let error = scene.alice.expect_type("error").await;
        let shown = frame.chars().take(80).collect::<String>();
        assert_eq!(error["code"], code, "{shown}: {error}");
        assert_eq!(error["ref"], json!(echoed), "{shown}: {error}");
        let message = error["message"].as_str().expect("a message");
        assert!(!message.is_empty() && message.len() < 400, "{message}");
    }
    scene.assert_alone_and_unchanged().await;
    // Alice's socket still works too.
    scene.alice.ok(json!({"type": "lock"})).await;
    scene.alice_phone.ok(json!({"type": "background"})).await;
    scene.carol.expect_update("alice", "away").await;
}

#[tokio::test]
async fn binary_frames_are_refused() {
    let mut scene = Scene::start(ServerOptions::default()).await;
    let frame = json!({"type": "set_status", "status": "busy"}).to_string();
    scene
        .alice
        .send_raw(Message::binary(frame.into_bytes()))
        .await;
    scene.alice.expect_error("binary_not_supported").await;
    scene.assert_alone_and_unchanged().await;
    scene.alice.ok(json!({"type": "lock"})).await;
}

#[tokio::test]
async fn overlong_status_text_is_refused_never_truncated() {
    let mut scene = Scene::start(ServerOptions::default()).await;
    // Just under the 16 KiB frame limit.
    let text = "x".repeat(15 * 1024);
    scene
        .alice
        .refused(
            json!({"type": "set_status", "status": "busy", "text": text}),
            "status_text_too_long",
        )
        .await;
    scene.assert_alone_and_unchanged().await;
}

#[tokio::test]
async fn oversize_frame_closes_the_socket_with_1009() {
    let mut scene = Scene::start(ServerOptions::default()).await;
    let text = "x".repeat(17 * 1024);
    let frame = json!({"type": "set_status", "status": "busy", "text": text});
    scene.alice.send(frame).await;
    assert_eq!(scene.alice.expect_close().await, Some(1009));
    // The frame was not applied: alice's choice is untouched.
    let desktop = scene
        .server
        .connect("alice", "alice-desktop", "desktop")
        .await;
    assert_eq!(desktop.ready_me()["chosen"], "online");
    assert_eq!(desktop.ready_me()["text"], Value::Null);
    scene.bob.ok(json!({"type": "idle"})).await;
    scene.carol.expect_update("bob", "away").await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_json() {
    let mut scene = Scene::start(ServerOptions::default()).await;
    let server = &scene.server;
    let query = "device_id=d1&platform=web";
    let expired = token_issued_at("alice", false, unix_now_secs() - 7200);
    let claims = presence_gateway::auth::MintClaims {
        sub: "alice".into(),
        admin: true,
        username: None,
        name: None,
        ttl: Duration::from_secs(3600),
    };
    let forged = presence_gateway::auth::mint_hs256(
        b"another-secret-that-is-at-least-32-bytes-long",
        &claims,
        unix_now_secs(),
    )
    .expect("mint");
    // Bob's claims under alice's signature.
    let (alice_token, bob_token) = (token("alice", false), token("bob", true));
    let a: Vec<&str> = alice_token.split('.').collect();
    let b: Vec<&str> = bob_token.split('.').collect();
    let tampered = format!("{}.{}.{}", a[0], b[1], a[2]);
    let cases = [
        (None, "token_missing"),
        (Some("not-a-token".to_owned()), "token_malformed"),
        (Some(expired), "token_expired"),
        (Some(forged), "token_invalid_signature"),
        (Some(tampered), "token_invalid_signature"),
    ];
    for (bearer, code) in &cases {
        let (status, body) = server.refused_upgrade(query, bearer.as_deref()).await;
        assert_eq!(status, 401, "{code}: {body}");
        assert_eq!(body["error"]["code"], *code, "{body}");
        assert!(body["error"]["message"].is_string());
    }
    // The token in the query string is checked the same way.
    let (status, body) = server
        .refused_upgrade(&format!("{query}&token=not-a-token"), None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("token_malformed"))
    );
    // And a good one there works.
    let url = server.ws_url(&format!("{query}&token={}", token("alice", false)));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("token in the query string");
    let ready = ws.next().await.expect("a frame").expect("ok");
    let ready: Value = serde_json::from_str(ready.to_text().unwrap()).unwrap();
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["session"]["user"], "alice");
    assert_eq!(ready["me"]["devices"], 3);
    drop(ws);
    // None of the refused upgrades touched alice; bob never noticed.
    scene.before = scene.carol.query("alice").await;
    assert_eq!(scene.before["status"], "online");
    scene.assert_alone_and_unchanged().await;
}

#[tokio::test]
async fn bad_platform_or_device_id_is_refused_with_400_json() {
    let mut scene = Scene::start(ServerOptions::default()).await;
    let alice = token("alice", false);
    let long_id = "d".repeat(129);
    let cases = [
        ("device_id=d1".to_owned(), "invalid_platform"),
        ("device_id=d1&platform=tv".to_owned(), "invalid_platform"),
        ("device_id=d1&platform=WEB".to_owned(), "invalid_platform"),
        (
            "device_id=a%20b&platform=web".to_owned(),
            "invalid_device_id",
        ),
        ("device_id=&platform=web".to_owned(), "invalid_device_id"),
        (
            format!("device_id={long_id}&platform=web"),
            "invalid_device_id",
        ),
        (
            "device_id=%C3%A9&platform=web".to_owned(),
            "invalid_device_id",
        ),
    ];
    for (query, code) in &cases {
        let (status, body) = scene.server.refused_upgrade(query, Some(&alice)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], *code, "{query}: {body}");
    }
    scene.assert_alone_and_unchanged().await;
}

#[tokio::test]
async fn subscribing_past_the_limit_is_refused() {
    let mut scene = Scene::start(ServerOptions::default().arg("--max-subscriptions", 3)).await;
    let limits = &scene.alice.ready.as_ref().unwrap()["limits"];
    assert_eq!(limits["max_subscriptions"], 3);
    scene.alice.subscribe(&["bob", "u1"]).await;
    scene
        .alice
        .refused(
            json!({"type": "subscribe", "users": ["u2", "u3"]}),
            "too_many_subscriptions",
        )
        .await;
    // The existing subscriptions still work; the refused ones were not added.
    scene.bob.ok(json!({"type": "idle"})).await;
    scene.alice.expect_update("bob", "away").await;
    scene.alice.subscribe(&["u2"]).await;
    scene
        .alice
        .refused(
            json!({"type": "subscribe", "users": ["u3"]}),
            "too_many_subscriptions",
        )
        .await;
    scene.carol.expect_update("bob", "away").await;
    scene.bob.ok(json!({"type": "active"})).await;
    scene.carol.expect_update("bob", "online").await;
    assert_eq!(scene.carol.query("alice").await, scene.before);
}

#[tokio::test]
async fn queries_of_more_than_1000_users_are_refused() {
    let mut scene = Scene::start(ServerOptions::default()).await;
    let users: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    scene
        .alice
        .refused(json!({"type": "query", "users": users}), "too_many_users")
        .await;
    scene
        .alice
        .refused(
            json!({"type": "subscribe", "users": users}),
            "too_many_users",
        )
        .await;
    let answer = scene
        .alice
        .request(json!({"type": "query", "users": &users[..1000]}))
        .await;
    assert_eq!(answer["users"].as_array().map(Vec::len), Some(1000));
    scene.assert_alone_and_unchanged().await;
}

#[tokio::test]
async fn flooding_a_socket_is_rate_limited_then_closed_with_1008() {
    // A small bucket that refills slowly, so the flood is deterministic.
    let options = ServerOptions::default()
        .arg("--socket-messages-burst", 10)
        .arg("--socket-messages-per-second", 0.1);
    let mut scene = Scene::start(options).await;
    // The refused frames get `rate_limited` errors that echo their ref.
    for i in 0..10 {
        scene
            .alice
            .send(json!({"type": "query", "users": ["bob"], "ref": format!("ok{i}")}))
            .await;
    }
    scene
        .alice
        .send(json!({"type": "set_status", "status": "busy", "ref": "over"}))
        .await;
    let error = scene.alice.expect(|f| f["ref"] == "over").await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "rate_limited");
    // Keep flooding: the 100th refusal in a row closes the socket. (Exactly
    // that many, so the client has nothing left to write when the close
    // comes and reads it cleanly.)
    let frame = json!({"type": "set_status", "status": "busy"}).to_string();
    for _ in 1..100 {
        scene.alice.send_text(&frame).await;
    }
    assert_eq!(scene.alice.expect_close().await, Some(1008));
    // Nothing the flood asked for was applied.
    let desktop = scene
        .server
        .connect("alice", "alice-desktop", "desktop")
        .await;
    assert_eq!(desktop.ready_me()["chosen"], "online");
    assert_ne!(scene.carol.query("alice").await["status"], "busy");
    // Other sockets have their own budget.
    scene.bob.ok(json!({"type": "idle"})).await;
    scene.carol.expect_update("bob", "away").await;
}

#[tokio::test]
async fn status_changes_are_rate_limited_per_user() {
    // The default burst of 5 status changes per user, refilled slowly so the
    // test does not race the refill.
    let options = ServerOptions::default().arg("--status-changes-per-second", 0.1);
    let mut scene = Scene::start(options).await;
    for status in ["busy", "away", "busy", "away", "busy"] {
        scene
            .alice
            .ok(json!({"type": "set_status", "status": status}))
            .await;
    }
    scene.carol.expect_update("alice", "busy").await;
    let before = scene.carol.query("alice").await;
    // The budget is the user's, whichever device asks.
    for ws in [&mut scene.alice, &mut scene.alice_phone] {
        ws.refused(
            json!({"type": "set_status", "status": "away"}),
            "rate_limited",
        )
        .await;
    }
    assert_eq!(scene.carol.query("alice").await, before);
    // Bob has his own budget.
    scene
        .bob
        .ok(json!({"type": "set_status", "status": "busy"}))
        .await;
    scene.carol.expect_update("bob", "busy").await;
}

#[tokio::test]
async fn status_text_changes_are_rate_limited_per_user() {
    let options = ServerOptions::default().arg("--status-changes-burst", 100);
    let mut scene = Scene::start(options).await;
    for i in 0..5 {
        scene
            .alice
            .ok(json!({"type": "set_status", "text": format!("text {i}")}))
            .await;
    }
    scene
        .alice_phone
        .refused(
            json!({"type": "set_status", "text": "one too many"}),
            "rate_limited",
        )
        .await;
    // Changes without a text still go through.
    scene
        .alice
        .ok(json!({"type": "set_status", "status": "busy"}))
        .await;
    scene.carol.expect_update("alice", "busy").await;
    let now = scene.carol.query("alice").await;
    assert_eq!(now["text"], Value::Null);
    scene
        .bob
        .ok(json!({"type": "set_status", "text": "bob's own"}))
        .await;
}

//! The native REST API under `/v1`, end to end against a real `presenced`:
//! every endpoint's success shape, every error a client can trigger, and
//! the rules (T1, T5, T6, I2, S2, K1, K2, C1–C3, X4, X5, A3, W2) as seen
//! through REST. Every response, errors included, must be JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_e2e::{DEADLINE, SECRET, Server, ServerOptions};
use presence_testkit::wait_until;
use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// Presence reads.

#[tokio::test]
async fn rest_reads_one_users_presence() {
    let server = Server::start().await;
    let alice = server.token("alice", false);

    let entry = send(server.get("/v1/users/bob/presence", &alice))
        .await
        .ok();
    assert_eq!(
        entry,
        json!({"user": "bob", "status": "offline", "text": null, "version": 0})
    );

    let _bob_ws = server.connect("bob", "bob-web", "web").await;
    let bob = server.token("bob", false);
    send(
        server
            .put("/v1/me/status", &bob)
            .json(&json!({"status": "busy", "text": "Deep work"})),
    )
    .await
    .ok();
    let entry = send(server.get("/v1/users/bob/presence", &alice))
        .await
        .ok();
    assert_eq!(entry["user"], "bob");
    assert_eq!(entry["status"], "busy");
    assert_eq!(entry["text"], "Deep work");
    assert!(entry["version"].as_u64().unwrap() > 0, "{entry}");

    let too_long = format!("/v1/users/{}/presence", "u".repeat(129));
    send(server.get(&too_long, &alice))
        .await
        .error(400, "invalid_user_id");
    send(server.get("/v1/users/a%0Ab/presence", &alice))
        .await
        .error(400, "invalid_user_id");
    send(server.get("/v1/users/%FF/presence", &alice))
        .await
        .error(400, "invalid_path");
}

#[tokio::test]
async fn w2_rest_bulk_query_answers_in_the_order_asked() {
    let server = Server::start().await;
    let _bob_ws = server.connect("bob", "bob-web", "web").await;
    let alice = server.token("alice", false);

    let body = json!({"users": ["carol", "bob", "nobody", "bob"]});
    let answer = send(server.post("/v1/presence/query", &alice).json(&body))
        .await
        .ok();
    let users = answer["users"].as_array().expect("users array");
    let seen: Vec<(&str, &str)> = users
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), u["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("carol", "offline"),
            ("bob", "online"),
            ("nobody", "offline"),
            ("bob", "online")
        ]
    );
    assert_eq!(users[0]["text"], Value::Null);
    assert_eq!(users[0]["version"], 0);

    let empty = send(
        server
            .post("/v1/presence/query", &alice)
            .json(&json!({"users": []})),
    )
    .await
    .ok();
    assert_eq!(empty, json!({"users": []}));

    send(
        server
            .post("/v1/presence/query", &alice)
            .json(&json!({"users": ["ok", ""]})),
    )
    .await
    .error(400, "invalid_user_id");
}

#[tokio::test]
async fn w2_rest_bulk_query_rejects_more_than_1000_users() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    let ids = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();

    let answer = send(
        server
            .post("/v1/presence/query", &alice)
            .json(&json!({"users": ids(1000)})),
    )
    .await
    .ok();
    assert_eq!(answer["users"].as_array().unwrap().len(), 1000);

    send(
        server
            .post("/v1/presence/query", &alice)
            .json(&json!({"users": ids(1001)})),
    )
    .await
    .error(400, "too_many_users");
}

#[tokio::test]
async fn a3_rest_online_count_excludes_invisible_users() {
    let server = Server::start().await;
    let viewer = server.token("viewer", false);
    let _alice = server.connect("alice", "alice-web", "web").await;
    let _bob = server.connect("bob", "bob-web", "web").await;
    let _carol = server.connect("carol", "carol-web", "web").await;
    poll(&server, "/v1/presence/online-count", &viewer, |v| {
        v == &json!({"count": 3})
    })
    .await;

    let carol = server.token("carol", false);
    send(
        server
            .put("/v1/me/status", &carol)
            .json(&json!({"status": "invisible"})),
    )
    .await
    .ok();
    let bob = server.token("bob", false);
    send(
        server
            .put("/v1/me/status", &bob)
            .json(&json!({"status": "away"})),
    )
    .await
    .ok();
    // Away still counts as online; invisible does not (A3).
    poll(&server, "/v1/presence/online-count", &viewer, |v| {
        v == &json!({"count": 2})
    })
    .await;
}

// The caller's own presence.

#[tokio::test]
async fn rest_me_reads_and_sets_own_status() {
    let server = Server::start().await;
    let alice = server.token("alice", false);

    let me = send(server.get("/v1/me", &alice)).await.ok();
    assert_eq!(
        me,
        json!({
            "user": "alice", "status": "offline", "text": null, "chosen": "online",
            "custom_status": null, "expires_at": null, "calendar_busy": false,
            "connection": "offline", "devices": 0, "auto_away": true,
            "idle_time_limit": 300, "version": me["version"],
        })
    );

    let _ws = server.connect("alice", "alice-desktop", "desktop").await;
    let me = send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"status": "busy", "text": "  Deep work "})),
    )
    .await
    .ok();
    assert_eq!(me["status"], "busy");
    assert_eq!(me["chosen"], "busy");
    assert_eq!(me["text"], "Deep work", "T1: trimmed");
    assert_eq!(me["connection"], "online");
    assert_eq!(me["devices"], 1);

    // T4: a built-in status alone clears the text.
    let me = send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"status": "away"})),
    )
    .await
    .ok();
    assert_eq!(
        (me["chosen"].as_str(), me["text"].as_str()),
        (Some("away"), None)
    );

    send(server.put("/v1/me/status", &alice).json(&json!({})))
        .await
        .error(400, "empty_status_change");
    let me = send(server.get("/v1/me", &alice)).await.ok();
    assert_eq!(me["chosen"], "away");
}

#[tokio::test]
async fn c2_rest_selecting_a_custom_status_sets_presence_and_text() {
    let server = Server::start().await;
    let admin = server.token("root", true);
    let created = send(
        server
            .post("/v1/admin/custom-statuses", &admin)
            .json(&json!({"name": "In a meeting", "status_type": "busy"})),
    )
    .await
    .status(201);
    let id = created["id"].as_str().expect("id").to_owned();

    let _ws = server.connect("alice", "alice-web", "web").await;
    let alice = server.token("alice", false);
    let me = send(
        server
            .post("/v1/me/custom-status", &alice)
            .json(&json!({"id": id})),
    )
    .await
    .ok();
    assert_eq!(me["custom_status"], json!(id));
    assert_eq!(me["status"], "busy");
    assert_eq!(me["text"], "In a meeting");

    send(
        server
            .post("/v1/me/custom-status", &alice)
            .json(&json!({"id": "no-such-status"})),
    )
    .await
    .error(404, "custom_status_not_found");
}

#[tokio::test]
async fn s1_rest_reads_and_changes_own_preferences() {
    let server = Server::start().await;
    let alice = server.token("alice", false);

    let prefs = send(server.get("/v1/me/preferences", &alice)).await.ok();
    assert_eq!(prefs, json!({"auto_away": true, "idle_time_limit": 300}));

    let patch = json!({"auto_away": false, "idle_time_limit": 600});
    let prefs = send(server.patch("/v1/me/preferences", &alice).json(&patch))
        .await
        .ok();
    assert_eq!(prefs, patch);
    // Absent fields stay as they are.
    let prefs = send(
        server
            .patch("/v1/me/preferences", &alice)
            .json(&json!({"auto_away": true})),
    )
    .await
    .ok();
    assert_eq!(prefs, json!({"auto_away": true, "idle_time_limit": 600}));
    let me = send(server.get("/v1/me", &alice)).await.ok();
    assert_eq!(
        (me["auto_away"].as_bool(), me["idle_time_limit"].as_u64()),
        (Some(true), Some(600))
    );
}

#[tokio::test]
async fn s2_rest_rejects_a_59_second_idle_limit() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    send(
        server
            .patch("/v1/me/preferences", &alice)
            .json(&json!({"idle_time_limit": 59})),
    )
    .await
    .error(400, "idle_time_limit_too_low");
    let prefs = send(
        server
            .patch("/v1/me/preferences", &alice)
            .json(&json!({"idle_time_limit": 60})),
    )
    .await
    .ok();
    assert_eq!(prefs["idle_time_limit"], 60);

    // The workspace default obeys the same floor.
    let admin = server.token("root", true);
    send(
        server
            .patch("/v1/admin/settings", &admin)
            .json(&json!({"default_idle_time_limit": 59})),
    )
    .await
    .error(400, "idle_time_limit_too_low");
}

#[tokio::test]
async fn s2_rest_honours_a_lowered_idle_floor() {
    let server = Server::start_with(ServerOptions::default().arg("--min-idle-time-limit", 1)).await;
    let alice = server.token("alice", false);
    let prefs = send(
        server
            .patch("/v1/me/preferences", &alice)
            .json(&json!({"idle_time_limit": 2})),
    )
    .await
    .ok();
    assert_eq!(prefs["idle_time_limit"], 2);
    send(
        server
            .patch("/v1/me/preferences", &alice)
            .json(&json!({"idle_time_limit": 0})),
    )
    .await
    .error(400, "idle_time_limit_too_low");
}

#[tokio::test]
async fn k1_rest_calendar_is_disabled_by_default() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    send(
        server
            .post("/v1/me/calendar", &alice)
            .json(&json!({"event_id": "e1", "busy": true})),
    )
    .await
    .error(403, "calendar_disabled");
}

#[tokio::test]
async fn k2_rest_calendar_event_makes_busy_then_restores() {
    let server = Server::start().await;
    let admin = server.token("root", true);
    let settings = send(
        server
            .patch("/v1/admin/settings", &admin)
            .json(&json!({"calendar_integration": true})),
    )
    .await
    .ok();
    assert_eq!(settings["calendar_integration"], true);

    let _ws = server.connect("alice", "alice-web", "web").await;
    let alice = server.token("alice", false);
    let me = send(
        server
            .post("/v1/me/calendar", &alice)
            .json(&json!({"event_id": "standup", "busy": true})),
    )
    .await
    .ok();
    assert_eq!(
        (me["status"].as_str(), me["calendar_busy"].as_bool()),
        (Some("busy"), Some(true))
    );
    let me = send(
        server
            .post("/v1/me/calendar", &alice)
            .json(&json!({"event_id": "standup", "busy": false})),
    )
    .await
    .ok();
    assert_eq!(
        (me["status"].as_str(), me["calendar_busy"].as_bool()),
        (Some("online"), Some(false))
    );
}

// Status text rules.

#[tokio::test]
async fn t1_rest_rejects_121_character_text() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    let reply = send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"text": "a".repeat(121)})),
    )
    .await;
    reply.error(400, "status_text_too_long");
    let me = send(server.get("/v1/me", &alice)).await.ok();
    assert_eq!(me["text"], Value::Null, "never silently truncated");
}

#[tokio::test]
async fn t1_rest_accepts_120_character_emoji_text() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    let text = "😀".repeat(120);
    let me = send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"text": text})),
    )
    .await
    .ok();
    assert_eq!(me["text"], json!(text));
}

#[tokio::test]
async fn t1_rest_rejects_control_characters_in_text() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    for text in ["line\nbreak", "tab\there", "nul\u{0}"] {
        send(
            server
                .put("/v1/me/status", &alice)
                .json(&json!({"text": text})),
        )
        .await
        .error(400, "status_text_invalid");
    }
}

#[tokio::test]
async fn t5_rest_text_disabled_still_allows_custom_statuses() {
    let server = Server::start().await;
    let admin = server.token("root", true);
    send(
        server
            .patch("/v1/admin/settings", &admin)
            .json(&json!({"allow_custom_status_text": false})),
    )
    .await
    .ok();
    let lunch = send(
        server
            .post("/v1/admin/custom-statuses", &admin)
            .json(&json!({"name": "Lunch", "status_type": "away"})),
    )
    .await
    .status(201);

    let alice = server.token("alice", false);
    send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"status": "busy", "text": "Out"})),
    )
    .await
    .error(403, "status_text_disabled");
    let me = send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"status": "busy"})),
    )
    .await
    .ok();
    assert_eq!(me["chosen"], "busy");
    let me = send(
        server
            .post("/v1/me/custom-status", &alice)
            .json(&json!({"id": lunch["id"]})),
    )
    .await
    .ok();
    assert_eq!(
        (me["chosen"].as_str(), me["text"].as_str()),
        (Some("away"), Some("Lunch"))
    );
}

#[tokio::test]
async fn i2_rest_invisible_disabled_keeps_invisible_users_invisible() {
    let server = Server::start().await;
    let _carol_ws = server.connect("carol", "carol-web", "web").await;
    let carol = server.token("carol", false);
    send(
        server
            .put("/v1/me/status", &carol)
            .json(&json!({"status": "invisible"})),
    )
    .await
    .ok();

    let admin = server.token("root", true);
    let settings = send(
        server
            .patch("/v1/admin/settings", &admin)
            .json(&json!({"allow_invisible": false})),
    )
    .await
    .ok();
    assert_eq!(settings["allow_invisible"], false);

    let dave = server.token("dave", false);
    send(
        server
            .put("/v1/me/status", &dave)
            .json(&json!({"status": "invisible"})),
    )
    .await
    .error(403, "invisible_disabled");

    let me = send(server.get("/v1/me", &carol)).await.ok();
    assert_eq!(
        (me["status"].as_str(), me["chosen"].as_str()),
        (Some("invisible"), Some("invisible"))
    );
    let seen = send(server.get("/v1/users/carol/presence", &dave))
        .await
        .ok();
    assert_eq!(seen["status"], "offline");
}

#[tokio::test]
async fn t6_rest_rejects_an_expiry_in_the_past() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    let body = json!({"status": "busy", "expires_at": rfc3339_from_now(-60_000)});
    send(server.put("/v1/me/status", &alice).json(&body))
        .await
        .error(400, "expiry_not_in_future");
}

#[tokio::test]
async fn t6_rest_expiry_restores_the_previous_status() {
    let server = Server::start().await;
    let _ws = server.connect("alice", "alice-web", "web").await;
    let alice = server.token("alice", false);
    send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"status": "away"})),
    )
    .await
    .ok();
    let body =
        json!({"status": "busy", "text": "On a call", "expires_at": rfc3339_from_now(2_000)});
    let me = send(server.put("/v1/me/status", &alice).json(&body))
        .await
        .ok();
    assert_eq!(me["chosen"], "busy");
    assert!(me["expires_at"].is_string(), "{me}");

    let me = poll(&server, "/v1/me", &alice, |me| me["chosen"] != "busy").await;
    assert_eq!(me["chosen"], "away");
    assert_eq!(me["text"], Value::Null);
    assert_eq!(me["expires_at"], Value::Null);
}

#[tokio::test]
async fn rest_rate_limits_the_sixth_text_change() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    for i in 1..=5 {
        send(
            server
                .put("/v1/me/status", &alice)
                .json(&json!({"text": format!("text {i}")})),
        )
        .await
        .ok();
    }
    let reply = send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"text": "text 6"})),
    )
    .await;
    reply.error(429, "rate_limited");
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    let me = send(server.get("/v1/me", &alice)).await.ok();
    assert_eq!(me["text"], "text 5");
}

// Admin: settings, custom statuses, the cap, other users' statuses.

#[tokio::test]
async fn rest_admin_reads_and_changes_workspace_settings() {
    let server = Server::start().await;
    let admin = server.token("root", true);
    let defaults = json!({
        "allow_custom_status_text": true, "allow_invisible": true,
        "calendar_integration": false, "default_auto_away": true,
        "default_idle_time_limit": 300, "cap": 200,
    });
    assert_eq!(
        send(server.get("/v1/admin/settings", &admin)).await.ok(),
        defaults
    );

    let changed = send(
        server
            .patch("/v1/admin/settings", &admin)
            .json(&json!({"default_auto_away": false, "default_idle_time_limit": 900, "cap": 0})),
    )
    .await
    .ok();
    let mut expected = defaults.clone();
    expected["default_auto_away"] = json!(false);
    expected["default_idle_time_limit"] = json!(900);
    expected["cap"] = json!(0);
    assert_eq!(changed, expected);
    assert_eq!(
        send(server.get("/v1/admin/settings", &admin)).await.ok(),
        expected
    );

    // Users without preferences of their own get the new defaults (S1).
    let alice = server.token("alice", false);
    let prefs = send(server.get("/v1/me/preferences", &alice)).await.ok();
    assert_eq!(prefs, json!({"auto_away": false, "idle_time_limit": 900}));
}

#[tokio::test]
async fn c1_rest_admin_manages_custom_statuses() {
    let server = Server::start().await;
    let admin = server.token("root", true);
    let create = |name: &str, status_type: &str| {
        server
            .post("/v1/admin/custom-statuses", &admin)
            .json(&json!({"name": name, "status_type": status_type}))
    };

    let meeting = send(create("In a meeting", "busy")).await.status(201);
    assert_eq!(meeting["name"], "In a meeting");
    assert_eq!(meeting["status_type"], "busy");
    assert!(
        meeting["updated_at"].as_str().unwrap().ends_with('Z'),
        "{meeting}"
    );
    let lunch = send(create("Lunch", "away")).await.status(201);

    // C1: names are unique ignoring case, 1–120 characters.
    send(create("in a MEETING", "away"))
        .await
        .error(409, "custom_status_name_taken");
    send(create("   ", "away"))
        .await
        .error(400, "custom_status_name_invalid");
    send(create(&"n".repeat(121), "away"))
        .await
        .error(400, "custom_status_name_invalid");
    send(create("Gone", "sleeping"))
        .await
        .error(400, "invalid_request");

    let list = send(server.get("/v1/admin/custom-statuses", &admin))
        .await
        .ok();
    let names: Vec<&str> = list["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["In a meeting", "Lunch"], "ordered by name");

    let path = format!(
        "/v1/admin/custom-statuses/{}",
        lunch["id"].as_str().unwrap()
    );
    let renamed = send(
        server
            .patch(&path, &admin)
            .json(&json!({"name": "Long lunch", "status_type": "offline"})),
    )
    .await
    .ok();
    assert_eq!(
        (
            renamed["id"].clone(),
            renamed["name"].as_str(),
            renamed["status_type"].as_str()
        ),
        (lunch["id"].clone(), Some("Long lunch"), Some("offline"))
    );
    send(
        server
            .patch(&path, &admin)
            .json(&json!({"name": "IN A MEETING"})),
    )
    .await
    .error(409, "custom_status_name_taken");

    let deleted = send(server.delete(&path, &admin)).await.ok();
    assert_eq!(deleted, renamed);
    send(server.delete(&path, &admin))
        .await
        .error(404, "custom_status_not_found");
    send(server.patch(&path, &admin).json(&json!({"name": "Back"})))
        .await
        .error(404, "custom_status_not_found");
    let list = send(server.get("/v1/admin/custom-statuses", &admin))
        .await
        .ok();
    assert_eq!(list["statuses"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn c3_rest_renaming_a_custom_status_updates_its_users() {
    let server = Server::start().await;
    let admin = server.token("root", true);
    let status = send(
        server
            .post("/v1/admin/custom-statuses", &admin)
            .json(&json!({"name": "Travelling", "status_type": "away"})),
    )
    .await
    .status(201);
    let alice = server.token("alice", false);
    send(
        server
            .post("/v1/me/custom-status", &alice)
            .json(&json!({"id": status["id"]})),
    )
    .await
    .ok();

    let path = format!(
        "/v1/admin/custom-statuses/{}",
        status["id"].as_str().unwrap()
    );
    send(
        server
            .patch(&path, &admin)
            .json(&json!({"name": "On the road", "status_type": "busy"})),
    )
    .await
    .ok();
    let me = send(server.get("/v1/me", &alice)).await.ok();
    assert_eq!(
        (me["chosen"].as_str(), me["text"].as_str()),
        (Some("busy"), Some("On the road"))
    );

    send(server.delete(&path, &admin)).await.ok();
    let me = send(server.get("/v1/me", &alice)).await.ok();
    assert_eq!(
        (me["chosen"].as_str(), me["text"].as_str()),
        (Some("busy"), Some("On the road"))
    );
    assert_eq!(me["custom_status"], Value::Null);
}

#[tokio::test]
async fn x5_rest_admin_reads_the_cap_state() {
    let server = Server::start().await;
    let admin = server.token("root", true);
    let cap = send(server.get("/v1/admin/cap", &admin)).await.ok();
    assert_eq!(
        cap,
        json!({"count": 0, "cap": 200, "peak": 0, "enabled": true})
    );

    let _ws = server.connect("alice", "alice-web", "web").await;
    poll(&server, "/v1/admin/cap", &admin, |cap| {
        cap == &json!({"count": 1, "cap": 200, "peak": 1, "enabled": true})
    })
    .await;
    // Enabling what is enabled is a no-op, not an error.
    let cap = send(server.post("/v1/admin/cap/enable", &admin)).await.ok();
    assert_eq!(cap["enabled"], true);
}

#[tokio::test]
async fn x4_rest_reenable_refused_at_cap() {
    let server = Server::start_with(ServerOptions::default().arg("--cap", 1)).await;
    let admin = server.token("root", true);
    let mut first = server.connect("u1", "u1-web", "web").await;
    let second = server.connect("u2", "u2-web", "web").await;

    let cap = poll(&server, "/v1/admin/cap", &admin, |cap| {
        cap["enabled"] == false
    })
    .await;
    assert_eq!(
        cap,
        json!({"count": 2, "cap": 1, "peak": 2, "enabled": false})
    );
    first
        .expect(|f| f["type"] == "notice" && f["kind"] == "presence_inactive")
        .await;
    send(server.post("/v1/admin/cap/enable", &admin))
        .await
        .error(409, "broadcast_enable_refused");

    // At the cap is not below it.
    second.close().await;
    poll(&server, "/v1/admin/cap", &admin, |cap| cap["count"] == 1).await;
    send(server.post("/v1/admin/cap/enable", &admin))
        .await
        .error(409, "broadcast_enable_refused");
    let cap = send(server.get("/v1/admin/cap", &admin)).await.ok();
    assert_eq!(cap["enabled"], false, "X4: never re-enables itself");

    first.close().await;
    poll(&server, "/v1/admin/cap", &admin, |cap| cap["count"] == 0).await;
    let cap = send(server.post("/v1/admin/cap/enable", &admin)).await.ok();
    assert_eq!(
        cap,
        json!({"count": 0, "cap": 1, "peak": 2, "enabled": true})
    );
}

#[tokio::test]
async fn rest_admin_sets_another_users_status_and_watchers_see_it() {
    let server = Server::start().await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    bob.request(json!({"type": "subscribe", "users": ["alice"]}))
        .await;
    let _alice_ws = server.connect("alice", "alice-web", "web").await;
    bob.expect_presence("alice", "online").await;

    let carol = server.token("carol", false);
    send(
        server
            .put("/v1/admin/users/alice/status", &carol)
            .json(&json!({"status": "busy"})),
    )
    .await
    .error(403, "forbidden");

    let admin = server.token("root", true);
    let state = send(
        server
            .put("/v1/admin/users/alice/status", &admin)
            .json(&json!({"status": "busy", "text": "Out sick"})),
    )
    .await
    .ok();
    assert_eq!(state["user"], "alice");
    assert_eq!(
        (state["chosen"].as_str(), state["text"].as_str()),
        (Some("busy"), Some("Out sick"))
    );
    let update = bob.expect_presence("alice", "busy").await;
    assert_eq!(update["text"], "Out sick");
}

// Errors every endpoint shares.

/// Every route of the API with a body it would accept.
fn all_routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/v1/users/bob/presence", None),
        (
            "POST",
            "/v1/presence/query",
            Some(json!({"users": ["bob"]})),
        ),
        ("GET", "/v1/presence/online-count", None),
        ("GET", "/v1/me", None),
        ("PUT", "/v1/me/status", Some(json!({"status": "busy"}))),
        ("POST", "/v1/me/custom-status", Some(json!({"id": "x"}))),
        ("GET", "/v1/me/preferences", None),
        (
            "PATCH",
            "/v1/me/preferences",
            Some(json!({"auto_away": false})),
        ),
        (
            "POST",
            "/v1/me/calendar",
            Some(json!({"event_id": "e", "busy": true})),
        ),
    ]
    .into_iter()
    .chain(admin_routes())
    .collect()
}

fn admin_routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/v1/admin/settings", None),
        (
            "PATCH",
            "/v1/admin/settings",
            Some(json!({"allow_invisible": false})),
        ),
        ("GET", "/v1/admin/custom-statuses", None),
        (
            "POST",
            "/v1/admin/custom-statuses",
            Some(json!({"name": "Lunch", "status_type": "away"})),
        ),
        (
            "PATCH",
            "/v1/admin/custom-statuses/x",
            Some(json!({"name": "Tea"})),
        ),
        ("DELETE", "/v1/admin/custom-statuses/x", None),
        ("GET", "/v1/admin/cap", None),
        ("POST", "/v1/admin/cap/enable", None),
        (
            "PUT",
            "/v1/admin/users/bob/status",
            Some(json!({"status": "busy"})),
        ),
    ]
}

fn request(server: &Server, method: &str, path: &str, body: &Option<Value>) -> RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let builder = server.http().request(method, server.url(path));
    match body {
        Some(body) => builder.json(body),
        None => builder,
    }
}

#[tokio::test]
async fn rest_rejects_missing_malformed_expired_and_forged_tokens() {
    let server = Server::start().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |ttl: u64| presence_gateway::auth::MintClaims {
        sub: "alice".into(),
        admin: true,
        username: None,
        name: None,
        ttl: Duration::from_secs(ttl),
    };
    let expired =
        presence_gateway::auth::mint_hs256(SECRET.as_bytes(), &claims(60), now - 3600).unwrap();
    let forged = presence_gateway::auth::mint_hs256(
        b"another-secret-that-is-also-32-bytes-or-more",
        &claims(3600),
        now,
    )
    .unwrap();
    let cases: [(Option<String>, &str); 6] = [
        (None, "token_missing"),
        (Some("Basic YWxpY2U6c2VjcmV0".into()), "token_missing"),
        (Some("Bearer not-a-jwt".into()), "token_malformed"),
        (Some("Bearer a.b.c".into()), "token_malformed"),
        (Some(format!("Bearer {expired}")), "token_expired"),
        (Some(format!("Bearer {forged}")), "token_invalid_signature"),
    ];
    for (method, path, body) in all_routes() {
        for (authorization, code) in &cases {
            let mut builder = request(&server, method, path, &body);
            if let Some(value) = authorization {
                builder = builder.header("authorization", value);
            }
            let reply = send(builder).await;
            assert_eq!(
                (reply.status, reply.code()),
                (401, *code),
                "{method} {path} with {authorization:?}: {}",
                reply.body
            );
        }
    }
}

#[tokio::test]
async fn rest_admin_routes_refuse_non_admins() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    for (method, path, body) in admin_routes() {
        let reply = send(request(&server, method, path, &body).bearer_auth(&alice)).await;
        assert_eq!(
            (reply.status, reply.code()),
            (403, "forbidden"),
            "{method} {path}: {}",
            reply.body
        );
    }
    // Nothing changed.
    let admin = server.token("root", true);
    let settings = send(server.get("/v1/admin/settings", &admin)).await.ok();
    assert_eq!(settings["allow_invisible"], true);
    let list = send(server.get("/v1/admin/custom-statuses", &admin))
        .await
        .ok();
    assert_eq!(list, json!({"statuses": []}));
    let bob = send(server.get("/v1/users/bob/presence", &alice))
        .await
        .ok();
    assert_eq!(bob["version"], 0);
}

#[tokio::test]
async fn rest_refuses_malformed_bodies_with_json_errors() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    // (body, code): syntax errors are invalid_json; JSON of the wrong
    // shape is invalid_request.
    let cases = [
        (r#"{"status": "busy""#, "invalid_json"),
        ("", "invalid_json"),
        ("not json", "invalid_json"),
        (r#"{"status": "busy"} {}"#, "invalid_json"),
        (r#"["busy"]"#, "invalid_request"),
        (r#""busy""#, "invalid_request"),
        ("null", "invalid_request"),
        (r#"{"status": "busy", "colour": "red"}"#, "invalid_request"),
        (r#"{"status": 5}"#, "invalid_request"),
        (r#"{"status": true}"#, "invalid_request"),
        (r#"{"status": "sleeping"}"#, "invalid_request"),
        (r#"{"text": 5}"#, "invalid_request"),
        (r#"{"expires_at": "tomorrow"}"#, "invalid_request"),
    ];
    for (body, code) in cases {
        let reply = send(
            server
                .put("/v1/me/status", &alice)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, code),
            "{body:?}: {}",
            reply.body
        );
    }
    let reply = send(
        server
            .post("/v1/presence/query", &alice)
            .json(&json!({"users": "bob"})),
    )
    .await;
    reply.error(400, "invalid_request");
    assert!(reply.message().contains("users"), "{}", reply.body);
    let reply = send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"status": "busy", "colour": "red"})),
    )
    .await;
    assert!(reply.message().contains("colour"), "{}", reply.body);

    // None of the refused bodies was charged or applied.
    let me = send(server.get("/v1/me", &alice)).await.ok();
    assert_eq!(me["chosen"], "online");
    // The content type is not checked: a JSON object is a JSON object.
    let me = send(
        server
            .put("/v1/me/status", &alice)
            .header("content-type", "text/plain")
            .body(r#"{"status": "away"}"#),
    )
    .await
    .ok();
    assert_eq!(me["chosen"], "away");
}

#[tokio::test]
async fn rest_refuses_an_oversize_body_with_413() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    let padding = "x".repeat(64 * 1024);
    let reply = send(
        server
            .put("/v1/me/status", &alice)
            .json(&json!({"text": padding})),
    )
    .await;
    reply.error(413, "payload_too_large");

    // Without a Content-Length the limit applies while reading.
    let (status, body) = chunked_put(&server, "/v1/me/status", &alice, 80 * 1024).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn rest_unknown_routes_and_methods_answer_json() {
    let server = Server::start().await;
    let alice = server.token("alice", false);
    send(server.get("/v1/no-such-thing", &alice))
        .await
        .error(404, "not_found");
    let reply = send(server.delete("/v1/me", &alice)).await;
    reply.error(405, "method_not_allowed");
    let allow = reply.headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET"), "Allow: {allow}");
}

// Helpers.

/// A JSON response: every response of the API is one.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// The body of a 200.
    fn ok(self) -> Value {
        self.status(200)
    }

    fn status(self, expected: u16) -> Value {
        assert_eq!(self.status, expected, "{}", self.body);
        self.body
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// Asserts the `{"error": {"code", "message"}}` shape.
    fn error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.body);
        assert!(!self.message().is_empty(), "{}", self.body);
        let keys: Vec<&String> = self.body["error"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2, "{}", self.body);
    }
}

async fn send(request: RequestBuilder) -> Reply {
    let response = tokio::time::timeout(DEADLINE, request.send())
        .await
        .expect("an answer before the deadline")
        .expect("the request is answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("response body");
    let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "status {status}: the body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "status {status}: content-type {content_type:?}"
    );
    Reply {
        status,
        headers,
        body,
    }
}

/// GETs `path` until `done` holds for the answer, or panics at the
/// deadline with the last answer.
async fn poll(server: &Server, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_until(
        format_args!("GET {path} to match"),
        DEADLINE,
        async || send(server.get(path, token)).await.ok(),
        |value| done(value),
    )
    .await
}

/// Sends a PUT with a chunked body of `len` bytes (no `Content-Length`)
/// over a raw socket, and returns the status and JSON body of the answer.
async fn chunked_put(server: &Server, path: &str, token: &str, len: usize) -> (u16, Value) {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let chunk = vec![b' '; 8 * 1024];
    let mut sent = 0;
    while sent < len {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        // The server may answer and close before reading everything.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw))
        .await
        .expect("an answer before the deadline");
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, body)
}

/// Now plus `offset_ms`, as an RFC 3339 UTC timestamp with milliseconds.
fn rfc3339_from_now(offset_ms: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ms = now + offset_ms;
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[test]
fn civil_from_days_matches_known_dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(20_454), (2026, 1, 1));
}

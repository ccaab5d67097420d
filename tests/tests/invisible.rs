//! I3 (issue 10, F2): invisible is unobservable. While a user stays
//! invisible, nothing another user can read about them changes, on any
//! API, and watchers receive no frame about them.

use std::time::Duration;

use presence_e2e::{Server, ServerOptions, Ws, rfc3339_from_now, token};
use presence_testkit::wait_until;
use serde_json::{Value, json};

/// Everything bob (another user) can read about alice, as raw answers:
/// native REST, Rocket.Chat `users.presence` (by id and as a delta since
/// `from`), `users.getStatus`, and a WebSocket `query`.
struct Observer<'a> {
    server: &'a Server,
    token: String,
    from: String,
}

impl Observer<'_> {
    async fn raw(&self, request: reqwest::RequestBuilder) -> String {
        let response = tokio::time::timeout(presence_e2e::DEADLINE, request.send())
            .await
            .expect("an answer in time")
            .expect("the request is answered");
        let status = response.status().as_u16();
        let body = response.text().await.expect("a body");
        format!("{status} {body}")
    }

    async fn rocketchat(&self, endpoint: &str) -> String {
        let request = self
            .server
            .http()
            .get(self.server.url(&format!("/api/v1/{endpoint}")))
            .header("X-User-Id", "bob")
            .header("X-Auth-Token", &self.token);
        self.raw(request).await
    }

    async fn read(&self, bob: &mut Ws) -> Vec<String> {
        vec![
            self.raw(self.server.get("/v1/users/alice/presence", &self.token))
                .await,
            self.raw(
                self.server
                    .post("/v1/presence/query", &self.token)
                    .json(&json!({"users": ["alice"]})),
            )
            .await,
            self.rocketchat("users.presence?ids=alice").await,
            self.rocketchat(&format!("users.presence?from={}", self.from))
                .await,
            self.rocketchat("users.getStatus?userId=alice").await,
            self.raw(self.server.get("/v1/presence/online-count", &self.token))
                .await,
            bob.query("alice").await.to_string(),
        ]
    }
}

/// Polls what alice sees of herself until `pred` holds.
async fn alice_sees(server: &Server, pred: impl Fn(&Value) -> bool) -> Value {
    let (_, me) = wait_until(
        "alice to see what was expected of herself",
        presence_e2e::DEADLINE,
        async || Server::call(server.get("/v1/me", &token("alice", false))).await,
        |(status, me)| *status == 200 && pred(me),
    )
    .await;
    me
}

#[tokio::test]
async fn i3_nothing_anyone_reads_about_an_invisible_user_changes_and_watchers_get_no_frame() {
    let server = Server::start_with(ServerOptions::default().relaxed_limits()).await;
    server
        .admin_settings(json!({"calendar_integration": true}))
        .await;
    let hidden = server.create_custom_status("Hidden", "offline").await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    bob.subscribe(&["alice", "carol"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    bob.expect_update("alice", "online").await;
    desktop
        .ok(json!({"type": "set_status", "status": "invisible"}))
        .await;
    bob.expect_update("alice", "offline").await;
    let observer = Observer {
        server: &server,
        token: token("bob", false),
        from: rfc3339_from_now(1),
    };
    let before = observer.read(&mut bob).await;
    println!("what bob reads: {before:#?}");

    // The actions of the probe, each followed by a full read.
    let mut steps: Vec<&str> = Vec::new();
    let mut check = async |what: &'static str, bob: &mut Ws| {
        let now = observer.read(bob).await;
        assert_eq!(now, before, "after {what}, bob reads something new");
        steps.push(what);
    };
    desktop.ok(json!({"type": "lock"})).await;
    check("lock", &mut bob).await;
    desktop.ok(json!({"type": "unlock"})).await;
    check("unlock", &mut bob).await;
    web.ok(json!({"type": "idle"})).await;
    check("idle", &mut bob).await;
    web.ok(json!({"type": "active"})).await;
    check("active", &mut bob).await;
    desktop
        .ok(json!({"type": "set_status", "text": "Secret plans"}))
        .await;
    check("text change", &mut bob).await;
    let phone = server.connect("alice", "alice-phone", "mobile").await;
    check("second device", &mut bob).await;
    phone.close().await;
    alice_sees(&server, |me| me["devices"] == 2).await;
    check("disconnect of one of two devices", &mut bob).await;
    desktop
        .ok(json!({"type": "set_status", "text": "Back soon", "expires_at": rfc3339_from_now(1500)}))
        .await;
    alice_sees(&server, |me| me["text"] == "Back soon").await;
    check("a text with an expiry", &mut bob).await;
    alice_sees(&server, |me| me["text"] == "Secret plans").await;
    check("expiry", &mut bob).await;
    desktop
        .ok(json!({"type": "calendar", "event_id": "standup", "busy": true}))
        .await;
    desktop
        .ok(json!({"type": "calendar", "event_id": "standup", "busy": false}))
        .await;
    check("calendar event", &mut bob).await;
    server
        .preferences("alice", json!({"auto_away": false, "idle_time_limit": 600}))
        .await;
    check("preferences change", &mut bob).await;
    desktop
        .ok(json!({"type": "use_custom_status", "id": hidden}))
        .await;
    check("custom status mapped to offline", &mut bob).await;
    desktop.ok(json!({"type": "sleep"})).await;
    desktop.ok(json!({"type": "wake"})).await;
    check("sleep and wake", &mut bob).await;
    web.close().await;
    alice_sees(&server, |me| me["devices"] == 1).await;
    check("disconnect of the last web device", &mut bob).await;
    println!("unchanged after: {steps:?}");

    // Delivery works (carol's change arrives) and nothing about alice came
    // before it or comes after.
    let mut carol = server.connect("carol", "carol-web", "web").await;
    bob.expect_update("carol", "online").await;
    carol
        .ok(json!({"type": "set_status", "status": "busy"}))
        .await;
    bob.expect_update("carol", "busy").await;
    let about_alice = |f: &Value| f["type"] == "presence" && f["user"] == "alice";
    assert!(
        !bob.has_backlog(about_alice),
        "bob got a frame about invisible alice"
    );
    bob.expect_none(Duration::from_millis(500), about_alice)
        .await;
    // Leaving invisible shows at once, with a newer public version.
    desktop
        .ok(json!({"type": "set_status", "status": "online"}))
        .await;
    let update = bob.expect_update("alice", "online").await;
    let old: Value = serde_json::from_str(before[0].split_once(' ').unwrap().1).unwrap();
    assert!(
        update["version"].as_u64() > old["version"].as_u64(),
        "{update} after {old}"
    );
}

/// I3 across a restart (`kill -9`): the devices are gone, but an invisible
/// user was shown `offline` before and still is, so nothing anyone reads
/// moves, the public version included. A visible user's does in one
/// process (their view changed: their devices left).
#[tokio::test]
async fn i3_a_restart_moves_nothing_others_read_about_an_invisible_user() {
    let mut server = Server::start().await;
    let mut alice = server.connect("alice", "alice-web", "web").await;
    alice
        .ok(json!({"type": "set_status", "status": "invisible", "text": "Hidden"}))
        .await;
    let mut carol = server.connect("carol", "carol-web", "web").await;
    // A chosen text is durable once acknowledged (M3); a connect alone is
    // not, and a kill -9 right after it may leave carol unknown (version
    // 0) rather than moved.
    carol
        .ok(json!({"type": "set_status", "status": "online", "text": "Around"}))
        .await;
    let bob = token("bob", false);
    let read = async |server: &Server, user: &str| {
        let path = format!("/v1/users/{user}/presence");
        Server::call(server.get(&path, &bob)).await.1
    };
    let alice_before = read(&server, "alice").await;
    let carol_before = read(&server, "carol").await;
    drop((alice, carol));
    server.restart().await;
    let alice_after = read(&server, "alice").await;
    let carol_after = read(&server, "carol").await;
    println!("alice {alice_before} -> {alice_after}; carol {carol_before} -> {carol_after}");
    assert_eq!(alice_after, alice_before);
    if !server.is_cluster() {
        // (In a cluster, devices of killed nodes leave when the node lease
        // lapses, H2; in one process they are gone with it.)
        assert_eq!(carol_after["status"], "offline");
        assert!(carol_after["version"].as_u64() > carol_before["version"].as_u64());
    }
}

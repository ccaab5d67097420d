//! The shortest path through the service: two users, one watches the other.

use presence_e2e::Server;
use serde_json::json;

#[tokio::test]
async fn w1_w2_a2_watcher_sees_manual_status_arrive() {
    let server = Server::start().await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    let ready = bob.ready.clone().expect("ready");
    assert_eq!(ready["me"]["user"], "bob");
    assert_eq!(ready["presence_active"], true);

    let snapshot = bob
        .request(json!({"type": "subscribe", "users": ["alice"]}))
        .await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["users"][0]["status"], "offline");

    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    bob.expect_presence("alice", "online").await;
    alice
        .ok(json!({"type": "set_status", "status": "busy", "text": "Deep work"}))
        .await;
    let update = bob.expect_presence("alice", "busy").await;
    assert_eq!(update["text"], "Deep work");
    // Alice's own sockets get her full state.
    let own = alice
        .expect(|f| f["type"] == "presence" && f["me"]["chosen"] == "busy")
        .await;
    assert_eq!(own["user"], "alice");
    alice.close().await;
    bob.expect_presence("alice", "offline").await;
}

//! The life of a process and of a socket, end to end: draining on SIGTERM,
//! a device that connects twice, and a client that goes silent.

use std::time::{Duration, Instant};

use presence_e2e::{Server, ServerOptions, token};
use presence_testkit::wait_until;
use serde_json::json;

#[tokio::test]
async fn sigterm_fails_readiness_closes_sockets_with_1001_and_exits_0() {
    let mut server = Server::start_with(ServerOptions::default().arg("--drain-window", "1s")).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let mut bob = server.connect("bob", "bob-phone", "mobile").await;
    let (status, body) = Server::call(server.http().get(server.url("/readyz"))).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")));

    server.send_sigterm();
    // Readiness fails as soon as the drain starts.
    let (_, body) = wait_until(
        "/readyz to fail with 503",
        presence_e2e::DEADLINE,
        async || Server::call(server.http().get(server.url("/readyz"))).await,
        |(status, _)| *status == 503,
    )
    .await;
    assert_eq!(body["status"], "draining");
    // While draining: new sockets refused, health still fine.
    let (status, _) = Server::call(server.http().get(server.url("/healthz"))).await;
    assert_eq!(status, 200);
    let (status, body) = server
        .refused_upgrade("device_id=late&platform=web", Some(&token("carol", false)))
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "shutting_down");

    // Every socket is told, then closed with 1001 ("going away").
    for ws in [&mut alice, &mut bob] {
        let notice = ws.expect_type("notice").await;
        assert_eq!(notice["kind"], "shutting_down");
        assert_eq!(ws.expect_close().await, Some(1001));
    }
    assert_eq!(server.wait_exit().await, Some(0));
}

#[tokio::test]
async fn same_device_id_replaces_the_first_socket_with_notice_and_4001() {
    let server = Server::start().await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    bob.subscribe(&["alice"]).await;
    let mut first = server.connect("alice", "alice-laptop", "desktop").await;
    bob.expect_update("alice", "online").await;
    first.ok(json!({"type": "lock"})).await;
    bob.expect_update("alice", "away").await;

    let mut second = server.connect("alice", "alice-laptop", "desktop").await;
    let notice = first.expect_type("notice").await;
    assert_eq!(notice["kind"], "replaced");
    assert_eq!(first.expect_close().await, Some(4001));
    // The device was replaced, not added, and starts online (D1).
    assert_eq!(second.ready_me()["devices"], 1);
    assert_eq!(second.ready_me()["status"], "online");
    bob.expect_update("alice", "online").await;
    // The replaced socket's end neither removes nor loses its successor.
    second
        .ok(json!({"type": "set_status", "status": "busy"}))
        .await;
    let me = second.expect_me(|m| m["chosen"] == "busy").await;
    assert_eq!(
        (&me["devices"], &me["connection"]),
        (&json!(1), &json!("online"))
    );
    let update = bob.next_update("alice").await;
    assert_eq!(update["status"], "busy", "never offline in between");
    second
        .ok(json!({"type": "set_status", "status": "online"}))
        .await;
    assert_eq!(bob.next_update("alice").await["status"], "online");
}

#[tokio::test]
async fn silent_socket_is_closed_after_the_heartbeat_timeout() {
    let options = ServerOptions::default()
        .arg("--heartbeat-interval", "200ms")
        .arg("--heartbeat-timeout", "1s")
        .arg("--disconnect-grace", "1s");
    let server = Server::start_with(options).await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    bob.subscribe(&["alice"]).await;
    // Alice's client is never read, so it never answers the server's pings.
    let connected = Instant::now();
    let mut silent = server.connect("alice", "alice-web", "web").await;
    bob.expect_update("alice", "online").await;
    // Lost for silence: away for the grace, then offline.
    bob.expect_update("alice", "away").await;
    assert!(
        connected.elapsed() >= Duration::from_millis(900),
        "closed only after the heartbeat timeout, not after {:?}",
        connected.elapsed()
    );
    bob.expect_update("alice", "offline").await;
    // The server sent close 1001 and hung up; reading it now, the client
    // may meet the close frame or, having queued pongs to a closed
    // connection, the reset first.
    let code = silent.expect_close().await;
    assert!(matches!(code, Some(1001) | None), "{code:?}");
    // Bob read all along, answered every ping, and is still connected.
    assert_eq!(bob.query("bob").await["status"], "online");
    bob.ok(json!({"type": "idle"})).await;
    let me = bob.expect_me(|m| m["status"] == "away").await;
    assert_eq!(me["devices"], 1);
}

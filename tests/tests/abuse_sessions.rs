//! Sessions under abuse, end to end (issue 10): tokens on long-lived
//! sockets (R2, F6), configuration validation at start (F7) and the
//! subscription budget per user (F3).

use std::time::{Duration, Instant};

use presence_e2e::{SECRET, Server, Ws, presenced_bin, token, unix_now_secs};
use serde_json::json;

/// A token for `user` whose authority (exp + the server's 30 s leeway)
/// ends `valid_for` from now: `exp` lies in the past by the difference,
/// which the leeway still accepts.
fn token_ending_in(user: &str, valid_for: Duration) -> String {
    let leeway = presence_gateway::auth::EXP_LEEWAY_SECS;
    let exp = unix_now_secs() + valid_for.as_secs() - leeway;
    let claims = presence_gateway::auth::MintClaims {
        sub: user.to_owned(),
        admin: false,
        username: None,
        name: None,
        ttl: Duration::from_secs(1),
    };
    presence_gateway::auth::mint_hs256(SECRET.as_bytes(), &claims, exp - 1).expect("mint")
}

async fn connect_with(server: &Server, device: &str, token: &str) -> Ws {
    let url = server.ws_url(&format!("device_id={device}&platform=web"));
    let mut ws = Ws::connect_with_token(&url, token)
        .await
        .expect("websocket connects");
    ws.ready = Some(ws.expect_type("ready").await);
    ws
}

#[tokio::test]
async fn r2_socket_is_told_ahead_then_closed_4002_when_its_token_expires() {
    let server = Server::start().await;
    let started = Instant::now();
    let mut alice = connect_with(
        &server,
        "a1",
        &token_ending_in("alice", Duration::from_secs(4)),
    )
    .await;
    // Less than the 60 s notice lead is left: the notice comes at once.
    let notice = alice
        .expect(|f| f["type"] == "notice" && f["kind"] == "token_expiring")
        .await;
    let expires_at = notice["expires_at"]
        .as_str()
        .expect("expires_at is a timestamp");
    assert!(expires_at.ends_with('Z'), "{notice}");
    println!("token_expiring after {:?}: {notice}", started.elapsed());
    // The socket still works until then.
    alice
        .ok(json!({"type": "set_status", "status": "busy"}))
        .await;
    let code = alice.expect_close().await;
    let closed_after = started.elapsed();
    println!("closed with {code:?} after {closed_after:?}");
    assert_eq!(code, Some(4002));
    assert!(
        closed_after >= Duration::from_secs(2),
        "closed too early: {closed_after:?}"
    );
    // REST refuses the same token from then on, too.
    let expired = token_ending_in("alice", Duration::from_secs(0));
    let (status, body) = Server::call(server.get("/v1/users/alice/presence", &expired)).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn r2_reauth_with_a_fresh_token_for_the_same_user_keeps_the_socket() {
    let server = Server::start().await;
    let mut alice = connect_with(
        &server,
        "a1",
        &token_ending_in("alice", Duration::from_secs(3)),
    )
    .await;
    alice
        .expect(|f| f["type"] == "notice" && f["kind"] == "token_expiring")
        .await;
    let answer = alice
        .request(json!({"type": "reauth", "token": token("alice", false)}))
        .await;
    assert_eq!(answer["type"], "ack", "{answer}");
    // Past the old token's end, nothing closes the socket and it still
    // applies changes.
    alice
        .expect_none(Duration::from_secs(5), |f| f["type"] == "notice")
        .await;
    alice
        .ok(json!({"type": "set_status", "status": "away"}))
        .await;
    alice.close().await;
}

#[tokio::test]
async fn r2_reauth_with_another_users_token_is_refused_and_closes_4003() {
    let server = Server::start().await;
    let mut alice = server.connect("alice", "a1", "web").await;
    let answer = alice
        .request(json!({"type": "reauth", "token": token("mallory", false)}))
        .await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "reauth_user_mismatch");
    assert_eq!(alice.expect_close().await, Some(4003));
}

#[tokio::test]
async fn r2_reauth_with_an_invalid_or_expired_token_is_refused_and_closes_4003() {
    let server = Server::start().await;
    let cases = [
        ("not-a-jwt".to_owned(), "token_malformed"),
        (
            format!("{}x", token("alice", false)),
            "token_invalid_signature",
        ),
        (
            token_ending_in("alice", Duration::from_secs(0)),
            "token_expired",
        ),
    ];
    for (i, (bad, code)) in cases.into_iter().enumerate() {
        let mut alice = server.connect("alice", &format!("a{i}"), "web").await;
        let answer = alice.request(json!({"type": "reauth", "token": bad})).await;
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["code"], code, "{answer}");
        assert_eq!(alice.expect_close().await, Some(4003), "{code}");
    }
}

#[tokio::test]
async fn f7_serve_refuses_a_zero_heartbeat_interval_naming_the_flag() {
    let cases = [
        (
            vec!["--heartbeat-interval", "0s"],
            "--heartbeat-interval 0s is out of range",
        ),
        (
            vec!["--max-subscriptions", "0"],
            "--max-subscriptions 0 is out of range",
        ),
        (
            vec!["--status-changes-per-second=-1"],
            "--status-changes-per-second -1",
        ),
    ];
    for (args, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = tokio::process::Command::new(presenced_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ephemeral",
                "--jwt-secret",
                SECRET,
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .args(&args)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(10), output)
            .await
            .expect("presenced exits at once")
            .expect("presenced runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

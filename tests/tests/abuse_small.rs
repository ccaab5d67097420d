//! The small findings of issue 10 (F8–F12), against the real binary:
//! body-less endpoints refuse bodies they cannot parse, `/metrics` stays
//! off the public port when a metrics listener exists, unknown paths get
//! a JSON 404, and the REST 401 says what REST accepts.

use presence_e2e::{Server, ServerOptions, admin_token, token};
use serde_json::Value;

/// `(status, json body)` of a POST with a raw body.
async fn post_raw(
    server: &Server,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut request = server.http().post(server.url(path)).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    Server::call(request).await
}

/// POSTs a body of 10 MiB the way a client that reads answers early does:
/// the headers, the first 64 KiB, then the answer (the server answers
/// from `Content-Length` and closes without reading the rest).
async fn ten_mib(server: &Server, path: &str, headers: &[(&str, String)]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
        10 << 20
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(&vec![b'{'; 64 * 1024]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(presence_e2e::DEADLINE, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A JSON value nested `depth` arrays deep.
fn deep(depth: usize) -> Vec<u8> {
    let mut body = "[".repeat(depth).into_bytes();
    body.extend(std::iter::repeat_n(b']', depth));
    body
}

#[tokio::test]
async fn f8_cap_enable_refuses_bodies_it_cannot_parse() {
    let server = Server::start().await;
    let auth = [("authorization", format!("Bearer {}", admin_token()))];
    let (status, answer) = ten_mib(&server, "/v1/admin/cap/enable", &auth).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{answer}"
    );
    let cases: [(&str, Vec<u8>, u16, &str); 5] = [
        ("an unclosed object", b"{".to_vec(), 400, "invalid_json"),
        (
            "invalid UTF-8",
            b"{\"a\": \"\xff\"}".to_vec(),
            400,
            "invalid_json",
        ),
        ("depth 10 000", deep(10_000), 400, "invalid_request"),
        ("not an object", b"[1]".to_vec(), 400, "invalid_request"),
        (
            "an unknown field",
            b"{\"force\": true}".to_vec(),
            400,
            "invalid_request",
        ),
    ];
    for (what, body, status, code) in cases {
        let (got, answer) = post_raw(&server, "/v1/admin/cap/enable", body, &auth).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {answer}"
        );
    }
    for ok in [&b""[..], b"  ", b"{}"] {
        let (status, answer) = post_raw(&server, "/v1/admin/cap/enable", ok.to_vec(), &auth).await;
        assert_eq!(status, 200, "{:?}: {answer}", String::from_utf8_lossy(ok));
        assert_eq!(answer["enabled"], true);
    }
}

#[tokio::test]
async fn f8_enable_broadcast_refuses_bodies_it_cannot_parse() {
    let server = Server::start().await;
    let auth = [
        ("x-user-id", "admin".to_owned()),
        ("x-auth-token", admin_token()),
    ];
    let path = "/api/v1/presence.enableBroadcast";
    let (status, answer) = ten_mib(&server, path, &auth).await;
    assert_eq!(
        (status, &answer["success"]),
        (413, &Value::Bool(false)),
        "{answer}"
    );
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("an unclosed object", b"{".to_vec(), 400),
        ("invalid UTF-8", b"{\"a\": \"\xff\"}".to_vec(), 400),
        ("depth 10 000", deep(10_000), 400),
        ("not an object", b"[1]".to_vec(), 400),
    ];
    for (what, body, status) in cases {
        let (got, answer) = post_raw(&server, path, body, &auth).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["success"], false, "{what}: {answer}");
    }
    let (status, answer) = post_raw(&server, path, b"{}".to_vec(), &auth).await;
    assert_eq!(
        (status, &answer["success"]),
        (200, &Value::Bool(true)),
        "{answer}"
    );
}

#[tokio::test]
async fn f10_metrics_only_on_the_metrics_listener() {
    let server =
        Server::start_with(ServerOptions::default().arg("--metrics-listen", "127.0.0.1:0")).await;
    let public = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let body: Value = public.json().await.expect("a JSON 404");
    assert_eq!(body["error"]["code"], "not_found");
    // Probes stay on the main port (load balancers use it).
    let health = reqwest::get(format!("http://{}/healthz", server.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ops = server.metrics_addr().expect("metrics listener");
    let private = reqwest::get(format!("http://{ops}/metrics")).await.unwrap();
    assert_eq!(private.status(), 200);
    assert!(
        private
            .text()
            .await
            .unwrap()
            .contains("presence_tcp_connections ")
    );
    // Without a metrics listener the main port serves them, as before.
    let plain = Server::start().await;
    let metrics = reqwest::get(format!("http://{}/metrics", plain.addr))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test]
async fn f11_unknown_paths_get_a_json_404() {
    let server = Server::start().await;
    let bearer = token("f11-alice", false);
    for path in [
        "/V1/me",
        "/v1/nope",
        "/",
        "/foo/bar",
        "/V1/ws",
        "/healthz/x",
        "/v2/me",
    ] {
        let (status, body) = Server::call(server.get(path, &bearer)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    // Under the Rocket.Chat prefix, Rocket.Chat's shape.
    let (status, body) = Server::call(server.get("/api/v1/nope", &bearer)).await;
    assert_eq!(status, 404);
    assert_eq!(body["success"], false, "{body}");
}

#[tokio::test]
async fn f12_the_rest_401_names_what_rest_accepts() {
    let server = Server::start().await;
    let (status, body) = Server::call(server.http().get(server.url("/v1/me"))).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_missing");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Authorization: Bearer"), "{message}");
    assert!(
        !message.contains("token="),
        "REST ignores ?token=: {message}"
    );
    // The WebSocket accepts both, and says so.
    let (status, body) = server.refused_upgrade("platform=web", None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token="),
        "{body}"
    );
}

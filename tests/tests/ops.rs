//! Operational endpoints against the real binary: `/healthz`, `/readyz`
//! and `/metrics` after real traffic.

use presence_e2e::Server;
use serde_json::{Value, json};

/// The value of the first sample line that starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{metrics}"))
}

#[tokio::test]
async fn health_and_readiness_answer_json() {
    let server = Server::start().await;
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn metrics_count_real_traffic_without_user_ids_in_labels() {
    let server = Server::start().await;
    let mut watcher = server.connect("metrics-watcher", "w1", "web").await;
    watcher
        .request(json!({"type": "subscribe", "users": ["metrics-alice"]}))
        .await;
    let mut alice = server.connect("metrics-alice", "a1", "mobile").await;
    watcher.expect_presence("metrics-alice", "online").await;
    alice
        .ok(json!({"type": "set_status", "status": "busy", "text": "Quarterly review"}))
        .await;
    watcher.expect_presence("metrics-alice", "busy").await;
    // A refused message is counted by its code.
    let refused = alice.request(json!({"type": "lock"})).await;
    assert_eq!(refused["code"], "unsupported_event");

    let response = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let metrics = response.text().await.unwrap();

    assert_eq!(
        sample(&metrics, "presence_connections{platform=\"web\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "presence_connections{platform=\"mobile\"}"),
        1.0
    );
    assert_eq!(sample(&metrics, "presence_users{status=\"busy\"}"), 1.0);
    assert_eq!(sample(&metrics, "presence_users{status=\"online\"}"), 1.0);
    assert!(sample(&metrics, "presence_status_changes_total") >= 2.0);
    assert!(sample(&metrics, "presence_updates_delivered_total") >= 2.0);
    assert!(sample(&metrics, "presence_update_delivery_seconds_count") >= 2.0);
    assert_eq!(
        sample(&metrics, "presence_ws_messages_total{type=\"set_status\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "presence_rejected_messages_total{code=\"unsupported_event\"}"
        ),
        1.0
    );
    assert!(sample(&metrics, "presence_store_write_seconds_count") >= 1.0);
    assert_eq!(sample(&metrics, "presence_cap_enabled"), 1.0);
    assert_eq!(sample(&metrics, "presence_cap_connections"), 2.0);
    assert_eq!(sample(&metrics, "presence_cap_limit"), 200.0);
    assert!(metrics.contains("presence_http_requests_total{"));
    // Never a user id, device id or status text in a label or anywhere else.
    for secret in ["metrics-alice", "metrics-watcher", "a1", "Quarterly"] {
        assert!(!metrics.contains(secret), "{secret} leaked into /metrics");
    }
    // Ours, or the standard process collector's (open files, memory, CPU).
    assert!(sample(&metrics, "process_open_fds") >= 1.0);
    assert!(metrics.contains("presence_build_info{"));
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.starts_with("presence_") || line.starts_with("process_"),
            "metric without prefix: {line}"
        );
    }
}

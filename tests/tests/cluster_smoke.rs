//! Cluster mode end to end: a real redis-server and three real presenced
//! nodes; users and watchers on different nodes.

use presence_e2e::{Server, ServerOptions};
use presence_testkit::RedisServer;
use serde_json::json;

async fn node(redis: &RedisServer, id: &str) -> Server {
    let options = ServerOptions::default()
        .arg("--redis", redis.url())
        .arg("--shards", 4)
        .arg("--node-id", id);
    Server::start_with(options).await
}

#[tokio::test(flavor = "multi_thread")]
async fn w1_redis_cluster_delivers_changes_across_nodes() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let c = node(&redis, "node-c").await;

    let mut watcher = a.connect("bob", "bob-web", "web").await;
    let snapshot = watcher
        .request(json!({"type": "subscribe", "users": ["alice", "carol"]}))
        .await;
    assert_eq!(snapshot["type"], "snapshot");

    let mut alice = b.connect("alice", "alice-desktop", "desktop").await;
    watcher.expect_presence("alice", "online").await;
    let mut carol = c.connect("carol", "carol-phone", "mobile").await;
    watcher.expect_presence("carol", "online").await;

    alice
        .ok(json!({"type": "set_status", "status": "busy", "text": "Deep work"}))
        .await;
    let update = watcher.expect_presence("alice", "busy").await;
    assert_eq!(update["text"], "Deep work");
    carol.ok(json!({"type": "background"})).await;
    watcher.expect_presence("carol", "away").await;

    // A REST read on a third node sees the same state.
    let token = c.token("dave", false);
    let entry: serde_json::Value = c
        .get("/v1/users/alice/presence", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entry["status"], "busy");

    alice.close().await;
    watcher.expect_presence("alice", "offline").await;
}

/// The value of `metric` in a node's `/metrics`, if present.
async fn metric(node: &Server, metric: &str) -> Option<f64> {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregator_metrics_show_every_shard_held_exactly_once() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis, "node-a").await,
        node(&redis, "node-b").await,
        node(&redis, "node-c").await,
    ];
    // The exporter refreshes once a second; poll until the leases settle.
    presence_testkit::wait_until(
        "4 shards held across the nodes (per node)",
        std::time::Duration::from_secs(15),
        async || {
            let mut held = Vec::new();
            for n in &nodes {
                held.push(metric(n, "presence_aggregator_shards_held").await);
            }
            held
        },
        |held| held.iter().map(|h| h.unwrap_or(0.0)).sum::<f64>() == 4.0,
    )
    .await;
    for n in &nodes {
        let text = reqwest::get(n.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in [
            "presence_aggregator_fenced_writes_rejected_total",
            "presence_aggregator_takeovers_total",
            "presence_aggregator_lease_epoch{shard=",
            "presence_aggregator_node_leases_lapsed_total",
            "presence_aggregator_devices_expired_total",
            "presence_cluster_shards 4",
            "presence_redis_command_seconds_bucket{le=",
            "presence_redis_errors_total{kind=\"timeout\"}",
            "presence_resyncs_total{reason=\"redis_reconnected\"}",
            "presence_pubsub_lagged_total",
            "presence_redis_replies_recovered_total",
            "presence_redis_append_retries_total",
            "presence_redis_heartbeat_commands_total",
            "presence_redis_device_reregistrations_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        // Every node has talked to Redis by now (leases, heartbeats).
        let commands = metric(n, "presence_redis_command_seconds_count")
            .await
            .unwrap_or(0.0);
        assert!(commands > 0.0, "no Redis command measured");
    }
}

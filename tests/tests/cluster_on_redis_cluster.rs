//! Cluster mode on a Redis Cluster (three primaries, every slot assigned):
//! three presenced nodes with `redis+cluster://`. Every key of shard `s`
//! carries the hash tag `{s}`, so each script (lease, fenced commit,
//! heartbeats, rate limits) touches one slot, and pub/sub is sharded
//! (`SSUBSCRIBE`/`SPUBLISH`): if any of that were wrong, Redis would answer
//! `CROSSSLOT` or messages would not arrive.

use std::time::Duration;

use presence_e2e::{Server, ServerOptions, admin_token};
use presence_testkit::{RedisCluster, wait_until};
use serde_json::json;

async fn node(cluster: &RedisCluster, id: &str) -> Server {
    let options = ServerOptions::default()
        .relaxed_limits()
        .arg("--redis", cluster.url())
        .arg("--shards", 4)
        .arg("--node-id", id);
    let server = Server::start_with(options).await;
    server.wait_ready(Duration::from_secs(15)).await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn w1_c3_x1_three_nodes_on_a_redis_cluster_with_sharded_pubsub() {
    let cluster = RedisCluster::start(3);
    let a = node(&cluster, "node-a").await;
    let b = node(&cluster, "node-b").await;
    let c = node(&cluster, "node-c").await;

    // Every shard has a leader, and the leases live on different Redis
    // primaries (the tags spread the shards over the slots).
    let mut owners = std::collections::BTreeSet::new();
    for shard in 0..4 {
        let key = format!("presence:{{{shard}}}:lease");
        let owner = cluster.owner_of(&key);
        wait_until(
            format_args!("shard {shard} to have a leader ({key} to exist)"),
            Duration::from_secs(10),
            async || owner.command(&["EXISTS", &key]),
            |exists| exists.trim() == "1",
        )
        .await;
        owners.insert(owner.port());
    }
    assert!(
        owners.len() > 1,
        "the shards' keys all landed on one primary"
    );

    // W1 across nodes, through per-shard streams and sharded pub/sub.
    let mut watcher = a.connect("bob", "bob-web", "web").await;
    watcher.subscribe(&["alice", "carol"]).await;
    let mut alice = b.connect("alice", "alice-desktop", "desktop").await;
    watcher.expect_update("alice", "online").await;
    let mut carol = c.connect("carol", "carol-phone", "mobile").await;
    watcher.expect_update("carol", "online").await;
    alice
        .ok(json!({"type": "set_status", "status": "busy", "text": "Deep work"}))
        .await;
    let update = watcher.expect_update("alice", "busy").await;
    assert_eq!(update["text"], "Deep work");
    carol.ok(json!({"type": "background"})).await;
    watcher.expect_update("carol", "away").await;

    // C1–C3: a custom status is cluster-wide state in shard 0's slot; a
    // user of another shard uses it, then its rename reaches that user.
    let id = c.create_custom_status("Commuting", "away").await;
    alice
        .ok(json!({"type": "use_custom_status", "id": id}))
        .await;
    let update = watcher.expect_update("alice", "away").await;
    assert_eq!(update["text"], "Commuting");
    let (status, _) = Server::call(
        b.patch(&format!("/v1/admin/custom-statuses/{id}"), &admin_token())
            .json(&json!({"name": "On the train", "status_type": "busy"})),
    )
    .await;
    assert_eq!(status, 200);
    let update = watcher.expect_update("alice", "busy").await;
    assert_eq!(update["text"], "On the train");

    // X1: the cluster-wide count sums every node's sockets.
    wait_until(
        "a cluster-wide connection count of 3",
        Duration::from_secs(10),
        async || Server::call(a.get("/v1/admin/cap", &admin_token())).await.1,
        |cap| cap["count"] == 3,
    )
    .await;

    alice.close().await;
    watcher.expect_update("alice", "offline").await;
}

//! Redis Cluster mode, on a one-node cluster that owns every slot: the
//! client detects it behind a plain `redis://` URL, routes scripts by slot,
//! and uses sharded pub/sub (`SPUBLISH` in the commit, `SSUBSCRIBE` in the
//! subscriber).

mod redis_support;

use std::time::{Duration, Instant};

use presence_redis::{CommitBatch, CommitOutcome, Keys, RedisClient, SubscriberEvent, lease_value};
use presence_testkit::{RedisOptions, RedisServer, wait_until};
use redis_support::{calls, test_config};

fn start_cluster() -> RedisServer {
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        // A lone node does not know its own address; clients would be told
        // to connect to "".
        "--cluster-announce-ip",
        "127.0.0.1",
    ];
    let server = RedisServer::start_with(RedisOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..RedisOptions::default()
    });
    server.command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    server
}

#[tokio::test]
async fn a_redis_cluster_is_detected_and_gets_sharded_pubsub() {
    let server = start_cluster();
    wait_until(
        "the cluster is up (cluster_state:ok)",
        Duration::from_secs(5),
        async || server.command(&["CLUSTER", "INFO"]),
        |info| info.contains("cluster_state:ok"),
    )
    .await;

    // A plain URL with a database number, as for a standalone server.
    let redis = RedisClient::connect(test_config(&server)).await.unwrap();
    assert!(redis.is_cluster());

    let mut subscriber = redis.subscriber().await.unwrap();
    let channel = Keys::new(3).updates_channel();
    subscriber
        .subscribe(std::slice::from_ref(&channel))
        .await
        .unwrap();
    assert_eq!(
        server.command(&["PUBSUB", "SHARDNUMSUB", &channel]),
        format!("{channel}\n1")
    );

    let epoch = redis
        .acquire_lease(3, "n", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    server.command(&["CONFIG", "RESETSTAT"]);
    let mut batch = CommitBatch::new();
    batch
        .set_string(Keys::new(3).user("alice"), "doc")
        .publish(&channel, "hello");
    let started = Instant::now();
    assert_eq!(
        redis
            .commit(3, &lease_value("n", epoch), &batch)
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
    let event = tokio::time::timeout(Duration::from_secs(5), subscriber.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event,
        SubscriberEvent::Message {
            channel: channel.clone(),
            payload: "hello".into()
        }
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(calls(&server, "spublish"), 1);
    assert_eq!(calls(&server, "publish"), 0);

    // The rest of the API routes by slot like any command.
    assert_eq!(server.command(&["GET", &Keys::new(3).user("alice")]), "doc");
    assert_eq!(redis.refresh_node("gw", 10, 1).await.unwrap(), None);
    assert_eq!(redis.live_nodes(5).await.unwrap().len(), 1);
    redis.append(3, &[("u", "alice")]).await.unwrap();
    assert_eq!(redis.read_views(3, &["alice"]).await.unwrap(), [None]);
    assert_eq!(redis.load_shard(3).await.unwrap().users.len(), 0);
}

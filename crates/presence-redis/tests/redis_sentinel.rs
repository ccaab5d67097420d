//! A node on `redis+sentinel://` must hear the sentinels' failover events
//! before it serves (R1): only the sentinel that runs a failover announces
//! that it starts, and a node that misses the announcement writes to the
//! old primary after the promotion, where a replica that is not promoted
//! can still acknowledge what the new primary never receives. Against
//! real `redis-server` and `redis-sentinel` processes.

mod redis_support;

use std::time::Duration;

use presence_redis::{RedisClient, RedisConfig};
use presence_testkit::{SentinelCluster, wait_until};

async fn connect(url: String) -> RedisClient {
    let mut config = RedisConfig::new(url.clone());
    config.command_timeout = redis_support::COMMAND_TIMEOUT;
    RedisClient::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn r1_a_sentinel_node_hears_every_sentinel_before_it_is_ready() {
    let sentinel = tokio::task::spawn_blocking(SentinelCluster::start)
        .await
        .expect("sentinels start");
    let redis = connect(sentinel.url()).await;
    wait_until(
        "the node to listen to all three sentinels",
        Duration::from_secs(10),
        async || (redis.hears_sentinels(), redis.sentinels_listened()),
        |(heard, listened)| *heard && *listened == Some((3, 3)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn r1_a_sentinel_that_is_down_does_not_keep_a_node_unready() {
    let mut sentinel = tokio::task::spawn_blocking(SentinelCluster::start)
        .await
        .expect("sentinels start");
    sentinel.kill_sentinel(2);
    let redis = connect(sentinel.url()).await;
    wait_until(
        "the node to listen to the two sentinels that are up",
        Duration::from_secs(10),
        async || (redis.hears_sentinels(), redis.sentinels_listened()),
        |(heard, listened)| *heard && *listened == Some((2, 3)),
    )
    .await;
}

#[tokio::test]
async fn r1_without_sentinel_there_is_nothing_to_hear() {
    let server = presence_testkit::RedisServer::start();
    let redis = redis_support::connect(&server).await;
    assert!(redis.hears_sentinels());
    assert_eq!(redis.sentinels_listened(), None);
}

//! R1 at the Redis layer: with `replica_acks` N, an append returns only
//! once N replicas hold the entry (`WAIT` on the same connection), and is
//! refused (`backend_unavailable`, never an id) when they do not confirm in
//! time. Real primary and replica processes; the replica is killed to
//! prove the refusal.

mod redis_support;

use std::time::Duration;

use presence_redis::{Keys, RedisClient, RedisError};
use presence_testkit::{RedisOptions, RedisServer, wait_until};
use redis_support::test_config;

#[tokio::test]
async fn r1_an_append_is_acknowledged_only_once_a_replica_holds_it() {
    let primary = RedisServer::start();
    let mut replica = RedisServer::start_with(RedisOptions {
        extra_args: vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port().to_string(),
        ],
        ..RedisOptions::default()
    });
    wait_until(
        "the replica's link to the primary (master_link_status:up)",
        Duration::from_secs(10),
        async || replica.command(&["INFO", "replication"]),
        |info| info.contains("master_link_status:up"),
    )
    .await;
    let mut config = test_config(&primary);
    config.replica_acks = Some(1);
    let redis = RedisClient::connect(config).await.unwrap();
    assert_eq!(redis.replica_acks(), 1);

    // Acknowledged: the replica holds the entry when append returns.
    let id = redis.append(3, &[("u", "alice")]).await.unwrap();
    let on_replica = replica.command(&["XRANGE", &Keys::new(3).events(), "-", "+"]);
    assert!(on_replica.contains(&id.to_string()), "{on_replica}");

    // No replica: refused within the wait, as unavailability, and never
    // with an id.
    replica.kill9();
    wait_until(
        "the primary to see the replica gone (connected_slaves:0)",
        Duration::from_secs(10),
        async || primary.command(&["INFO", "replication"]),
        |info| info.contains("connected_slaves:0"),
    )
    .await;
    let refused = redis.append(3, &[("u", "bob")]).await.unwrap_err();
    assert!(
        matches!(
            refused,
            RedisError::NotReplicated {
                acked: 0,
                wanted: 1
            }
        ),
        "{refused:?}"
    );
    assert_eq!(refused.code(), "backend_unavailable");
}

#[tokio::test]
async fn r1_a_single_server_needs_no_replica_by_default() {
    let server = RedisServer::start();
    let redis = RedisClient::connect(test_config(&server)).await.unwrap();
    assert_eq!(redis.replica_acks(), 0);
    redis.append(0, &[("u", "alice")]).await.unwrap();
}

//! The per-user rate limits every gateway of a cluster shares
//! (`RedisRateLimits`), against a real Redis with several limiters (one
//! per simulated gateway) on it: a flood on one node is limited exactly,
//! the limit holds across nodes (within the tolerance the module
//! documents), requests with a fresh view never wait for Redis, and a
//! Redis that does not answer leaves each node deciding on its own.

mod redis_support;

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use presence_backend::{BucketRate, SharedRateLimits};
use presence_redis::{RedisClient, RedisRateLimits, SHARED_LIMIT_WAIT};
use presence_testkit::{RedisServer, TcpProxy};
use redis_support::{calls, connect, test_config};

const SHARDS: u16 = 16;

/// Node ids of the limiters a test starts.
static NEXT_NODE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// The status-text limit's shape: 5 tokens, one back every 12 s.
const TEXT: BucketRate = BucketRate {
    capacity: 5,
    interval: Duration::from_secs(12),
};

async fn node(server: &RedisServer) -> RedisRateLimits {
    RedisRateLimits::start(
        connect(server).await,
        SHARDS,
        format!(
            "node-{}",
            NEXT_NODE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
    )
}

/// Takes `n` tokens one after the other; how many were granted, and the
/// last refusal.
async fn flood(limits: &RedisRateLimits, user: &str, n: usize) -> (usize, Option<Duration>) {
    let mut granted = 0;
    let mut refused = None;
    for _ in 0..n {
        match limits.take("text", user, TEXT).await {
            Ok(()) => granted += 1,
            Err(wait) => refused = Some(wait),
        }
    }
    (granted, refused)
}

/// A flood on one node is limited exactly, and once the node has heard
/// from Redis every further request is decided without waiting for it.
#[tokio::test]
async fn rate_limits_a_flood_on_one_node_is_limited_exactly() {
    let server = RedisServer::start();
    let a = node(&server).await;

    // The first request asks Redis (no view yet); the rest are local.
    assert_eq!(a.take("text", "alice", TEXT).await, Ok(()));
    let (granted, refused) = flood(&a, "alice", 100).await;
    assert_eq!(granted, 4, "5 in all: the bucket's capacity");
    let wait = refused.expect("the sixth request is refused");
    assert!(
        wait > Duration::from_secs(11) && wait <= TEXT.interval,
        "wait for the next token: {wait:?}"
    );

    // Settled: Redis holds the bucket as 5 tokens taken.
    a.settle_now().await;
    let stored: u64 = server
        .command(&["PTTL", &rate_key("alice")])
        .parse()
        .unwrap();
    assert!(
        stored > 59_000 && stored <= 60_001,
        "the shared bucket is empty for a minute: PTTL {stored}"
    );
    // Other users are not affected.
    assert_eq!(a.take("text", "bob", TEXT).await, Ok(()));
}

/// The limit holds across nodes: what one node granted, another node that
/// has no fresh view of the bucket learns from Redis before it grants
/// anything.
#[tokio::test]
async fn rate_limits_hold_across_nodes_for_a_user_moving_between_them() {
    let server = RedisServer::start();
    let a = node(&server).await;
    let b = node(&server).await;
    let c = node(&server).await;

    let (granted, _) = flood(&a, "carol", 3).await;
    assert_eq!(granted, 3);
    a.settle_now().await;
    let (granted, _) = flood(&b, "carol", 10).await;
    assert_eq!(granted, 2, "node b grants what is left of 5");
    b.settle_now().await;
    let (granted, refused) = flood(&c, "carol", 10).await;
    assert_eq!(granted, 0, "node c grants nothing");
    assert!(refused.unwrap() > Duration::from_secs(11));
    // Node a's view is fresh but stale by b's takes: it learns them with
    // its next settle and then refuses too.
    a.settle_now().await;
    let (granted, _) = flood(&a, "carol", 10).await;
    assert!(
        granted <= 2,
        "a grants at most what its view had: {granted}"
    );
}

/// A user whose requests alternate between nodes (a client spread over
/// gateways, one request after the other) is limited exactly: once a node
/// learns that another one uses the bucket too, it asks Redis on every
/// request. `settle_now` after each request stands for the charge that
/// request started reaching Redis before the next request arrives.
#[tokio::test]
async fn rate_limits_a_user_alternating_between_nodes_is_limited_exactly() {
    let server = RedisServer::start();
    let nodes = [
        node(&server).await,
        node(&server).await,
        node(&server).await,
    ];
    let mut granted = 0;
    for i in 0..12 {
        let n = &nodes[i % nodes.len()];
        if n.take("text", "fay", TEXT).await.is_ok() {
            granted += 1;
        }
        n.settle_now().await;
    }
    assert_eq!(granted, 5, "the workspace-wide limit");
}

/// Floods on several nodes at once stay within the documented tolerance
/// (each node admits at most what its own view holds), every grant is
/// charged to the shared bucket, and the overshoot is paid back: after
/// settling, every node waits as long as the excess took.
#[tokio::test]
async fn rate_limits_concurrent_floods_stay_within_the_tolerance_and_are_paid_back() {
    let server = RedisServer::start();
    let nodes = [
        node(&server).await,
        node(&server).await,
        node(&server).await,
    ];
    let floods = nodes.iter().map(|n| flood(n, "dave", 20));
    let results = futures_util::future::join_all(floods).await;
    let total: usize = results.iter().map(|(granted, _)| granted).sum();
    assert!(
        (5..=5 * nodes.len()).contains(&total),
        "granted {total}: at least the limit, at most one capacity per node"
    );
    for n in &nodes {
        n.settle_now().await;
    }
    // Every grant was charged: the shared bucket is empty for `total`
    // intervals.
    let total = u32::try_from(total).unwrap();
    let pttl: u64 = server
        .command(&["PTTL", &rate_key("dave")])
        .parse()
        .unwrap();
    let charged = TEXT.interval * total;
    assert!(
        Duration::from_millis(pttl) > charged - Duration::from_secs(1)
            && Duration::from_millis(pttl) <= charged + Duration::from_millis(1),
        "{total} granted, the bucket is full again in {pttl} ms"
    );
    // A node that asks now waits until the overshoot is paid back.
    let late = node(&server).await;
    let refused = late
        .take("text", "dave", TEXT)
        .await
        .expect_err("paid back first");
    let floor = TEXT.interval * (total + 1 - TEXT.capacity) - Duration::from_secs(1);
    assert!(
        refused >= floor,
        "{total} granted: the next token is {refused:?} away, at least {floor:?}"
    );
}

/// No Redis round trip on the hot path: a request whose view is fresh is
/// decided on its first poll, and one settle round charges many users
/// with one script call per shard.
#[tokio::test]
async fn rate_limits_fresh_views_decide_at_once_and_settle_in_one_call_per_shard() {
    let server = RedisServer::start();
    let a = node(&server).await;
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    // The first requests ask Redis, all in a few rounds.
    let first = users.iter().map(|u| a.take("status", u, TEXT));
    let answers = futures_util::future::join_all(first).await;
    assert!(answers.iter().all(Result::is_ok));
    let rounds = a.stats().rounds;
    assert!(rounds < 20, "{rounds} rounds for 200 users");

    server.command(&["CONFIG", "RESETSTAT"]);
    let before = a.stats();
    for user in &users {
        let decided = a
            .take("status", user, TEXT)
            .now_or_never()
            .expect("a fresh view decides without waiting");
        assert_eq!(decided, Ok(()));
    }
    a.settle_now().await;
    let after = a.stats();
    let calls_sent = after.calls - before.calls;
    assert!(
        calls_sent <= u64::from(SHARDS) * (after.rounds - before.rounds),
        "{calls_sent} script calls in {} rounds",
        after.rounds - before.rounds
    );
    let evalsha = calls(&server, "evalsha");
    assert!(
        evalsha <= u64::from(SHARDS) * 2,
        "{evalsha} script calls settled 200 users"
    );
    assert_eq!(calls(&server, "mget"), evalsha, "one MGET per call");
    assert_eq!(after.local_fallbacks, 0);
}

/// A Redis that does not answer holds no request up for longer than
/// `SHARED_LIMIT_WAIT`: the node decides from its own view (exact for its
/// own requests), and charges what it granted once Redis is back.
#[tokio::test]
async fn rate_limits_fall_back_to_the_local_view_when_redis_does_not_answer() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.addr());
    let mut config = test_config(&server);
    config.url = proxy.redis_url();
    let client = RedisClient::connect(config).await.expect("connect");
    let a = RedisRateLimits::start(client, SHARDS, "proxied");
    let b = node(&server).await;

    proxy.blackhole();
    let started = Instant::now();
    let (granted, refused) = flood(&a, "erin", 10).await;
    assert_eq!(granted, 5, "this node's own view still limits");
    assert!(refused.is_some());
    assert!(
        started.elapsed() < SHARED_LIMIT_WAIT * 4,
        "not held up by Redis: {:?}",
        started.elapsed()
    );
    assert!(a.stats().local_fallbacks >= 1);

    proxy.heal();
    // The grants reach Redis once it answers again: then another node
    // refuses.
    presence_testkit::wait_until(
        "erin's bucket to be charged in Redis",
        Duration::from_secs(10),
        async || server.command(&["EXISTS", &rate_key("erin")]),
        |exists| exists == "1",
    )
    .await;
    let (granted, _) = flood(&b, "erin", 5).await;
    assert!(granted <= 1, "node b sees erin's bucket spent: {granted}");
}

fn rate_key(user: &str) -> String {
    let shard = presence_redis::shard_of(user, SHARDS);
    presence_redis::Keys::new(shard).rate("text", user)
}

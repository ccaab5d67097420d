//! Device heartbeats (H1) and node leases (H2) against a real Redis.

mod redis_support;

use presence_redis::{CommitBatch, HEARTBEAT_CHUNK, Keys, NodeInfo, heartbeat_member, lease_value};
use presence_testkit::RedisServer;
use redis_support::{calls, connect};

const T0: u64 = 1_700_000_000_000;

/// H1: at most one Redis command per 500 devices per interval; `XX` never
/// adds a device the leader does not know (or removed); `GT` never moves a
/// deadline backwards.
#[tokio::test]
async fn h1_heartbeat_refresh_sends_one_zadd_per_500_devices() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let keys = Keys::new(7);
    let members: Vec<String> = (0..1200)
        .map(|i| heartbeat_member(&format!("user-{i}"), "web"))
        .collect();

    // The leader registers the devices (fenced commit), deadline T0.
    let epoch = redis
        .acquire_lease(7, "leader", std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut batch = CommitBatch::new();
    for member in &members {
        batch.zset_add(keys.heartbeats(), T0, member.as_str());
    }
    redis
        .commit(7, &lease_value("leader", epoch), &batch)
        .await
        .unwrap();

    // A gateway refreshes them, plus two devices the leader never added.
    let mut refreshed = members.clone();
    refreshed.push(heartbeat_member("stranger", "web"));
    refreshed.push(heartbeat_member("user-1", "removed-device"));
    server.command(&["CONFIG", "RESETSTAT"]);
    let outcome = redis
        .refresh_heartbeats(7, T0 + 30_000, &refreshed[..1200])
        .await
        .unwrap();
    assert_eq!(outcome.commands, 3);
    assert_eq!(outcome.updated, 1200);
    assert_eq!(
        calls(&server, "zadd"),
        3,
        "Redis saw 3 ZADDs for 1200 devices"
    );
    assert_eq!(HEARTBEAT_CHUNK, 500);

    let outcome = redis
        .refresh_heartbeats(7, T0 + 30_000, &refreshed)
        .await
        .unwrap();
    assert_eq!(outcome.commands, 3, "1202 members are still 3 chunks");
    assert_eq!(outcome.updated, 0, "same deadline: nothing moves");
    assert_eq!(
        server.command(&["ZCARD", &keys.heartbeats()]),
        "1200",
        "XX adds nobody"
    );
    assert_eq!(
        server.command(&[
            "ZSCORE",
            &keys.heartbeats(),
            &heartbeat_member("stranger", "web")
        ]),
        "(nil)"
    );

    // GT: a late refresh with an older deadline leaves the newer one.
    let outcome = redis
        .refresh_heartbeats(7, T0 + 10_000, &members[..10])
        .await
        .unwrap();
    assert_eq!((outcome.commands, outcome.updated), (1, 0));
    assert_eq!(
        server.command(&["ZSCORE", &keys.heartbeats(), &members[0]]),
        (T0 + 30_000).to_string()
    );
    let outcome = redis
        .refresh_heartbeats(7, T0 + 40_000, &members[..10])
        .await
        .unwrap();
    assert_eq!((outcome.commands, outcome.updated), (1, 10));

    // Nothing to refresh: no command at all.
    server.command(&["CONFIG", "RESETSTAT"]);
    let outcome = redis.refresh_heartbeats(7, T0, &[]).await.unwrap();
    assert_eq!(outcome.commands, 0);
    assert_eq!(calls(&server, "zadd"), 0);
}

#[tokio::test]
async fn lapsed_heartbeats_come_earliest_first_up_to_the_limit() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let hb = Keys::new(2).heartbeats();
    let deadlines = [
        ("a", T0 + 300),
        ("b", T0 + 100),
        ("c", T0 + 200),
        ("d", T0 + 900),
    ];
    for (user, deadline) in deadlines {
        let member = heartbeat_member(user, "dev:1");
        server.command(&["ZADD", &hb, &deadline.to_string(), &member]);
    }

    let lapsed = redis.lapsed_heartbeats(2, T0 + 300, 10).await.unwrap();
    let got: Vec<(&str, &str, u64)> = lapsed
        .iter()
        .map(|e| {
            let (user, device) = e.user_and_device().unwrap();
            (user, device, e.deadline_ms)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("b", "dev:1", T0 + 100),
            ("c", "dev:1", T0 + 200),
            ("a", "dev:1", T0 + 300)
        ],
        "a deadline equal to now has lapsed"
    );
    let limited = redis.lapsed_heartbeats(2, T0 + 1_000, 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    assert!(redis.lapsed_heartbeats(2, T0, 10).await.unwrap().is_empty());
    assert!(
        redis
            .lapsed_heartbeats(3, T0 + 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// H2 groundwork: node leases and socket counts, live vs lapsed, and the
/// signal a gateway gets when its own lease had lapsed.
#[tokio::test]
async fn node_leases_live_lapsed_and_forgotten() {
    let server = RedisServer::start();
    let redis = connect(&server).await;

    assert_eq!(
        redis.refresh_node("gw-1", T0 + 30_000, 12).await.unwrap(),
        None
    );
    assert_eq!(
        redis.refresh_node("gw-2", T0 + 5_000, 3).await.unwrap(),
        None
    );
    assert_eq!(
        redis.refresh_node("gw:3", T0 + 60_000, 0).await.unwrap(),
        None
    );
    assert_eq!(
        redis.refresh_node("gw-1", T0 + 40_000, 15).await.unwrap(),
        Some(T0 + 30_000),
        "the previous deadline comes back"
    );
    assert_eq!(server.command(&["HGET", &Keys::conns(), "gw-1"]), "15");

    let now = T0 + 10_000;
    let live = redis.live_nodes(now).await.unwrap();
    assert_eq!(
        live,
        [
            NodeInfo {
                node: "gw-1".into(),
                deadline_ms: T0 + 40_000,
                connections: 15
            },
            NodeInfo {
                node: "gw:3".into(),
                deadline_ms: T0 + 60_000,
                connections: 0
            },
        ]
    );
    let lapsed = redis.lapsed_nodes(now).await.unwrap();
    assert_eq!(
        lapsed,
        [NodeInfo {
            node: "gw-2".into(),
            deadline_ms: T0 + 5_000,
            connections: 3
        }]
    );
    // A deadline equal to now has lapsed.
    let at_deadline = redis.lapsed_nodes(T0 + 40_000).await.unwrap();
    assert_eq!(at_deadline.len(), 2);

    // gw-2 comes back after lapsing: it learns its lease had lapsed.
    let previous = redis.refresh_node("gw-2", now + 30_000, 1).await.unwrap();
    assert!(previous.is_some_and(|p| p < now), "{previous:?}");

    redis.forget_node("gw:3").await.unwrap();
    assert_eq!(server.command(&["HEXISTS", &Keys::conns(), "gw:3"]), "0");
    let live: Vec<String> = redis
        .live_nodes(now)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node)
        .collect();
    assert_eq!(live, ["gw-1", "gw-2"]);
}

//! Shard leases and fencing against a real Redis (docs/cluster.md "Lease",
//! "Commit"; DESIGN H2).

mod redis_support;

use std::io;
use std::time::Duration;

use presence_redis::{CommitBatch, CommitOutcome, Keys, Lease, lease_value};
use presence_testkit::RedisServer;
use presence_testkit::resp::{Connection, Reply};
use redis_support::{connect, wait_until_expired};

const TTL: Duration = Duration::from_millis(200);

#[tokio::test]
async fn lease_acquire_renew_and_steal_after_expiry_with_increasing_epochs() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let lease_key = Keys::new(3).lease();

    let a1 = redis.acquire_lease(3, "node-a", TTL).await.unwrap();
    assert_eq!(a1, Some(1));
    assert_eq!(server.command(&["GET", &lease_key]), "node-a:1");
    let pttl: i64 = server.command(&["PTTL", &lease_key]).parse().unwrap();
    assert!((1..=200).contains(&pttl), "PTTL {pttl}");
    assert_eq!(
        redis.lease_holder(3).await.unwrap(),
        Some(Lease::new("node-a", 1))
    );

    // Held: nobody else (nor node-a again) acquires; only the holder renews.
    assert_eq!(redis.acquire_lease(3, "node-b", TTL).await.unwrap(), None);
    assert_eq!(redis.acquire_lease(3, "node-a", TTL).await.unwrap(), None);
    assert!(
        redis
            .renew_lease(3, "node-a", 1, Duration::from_secs(10))
            .await
            .unwrap()
    );
    let pttl: i64 = server.command(&["PTTL", &lease_key]).parse().unwrap();
    assert!(pttl > 5_000, "renewed PTTL {pttl}");
    assert!(!redis.renew_lease(3, "node-b", 1, TTL).await.unwrap());
    assert!(!redis.renew_lease(3, "node-a", 2, TTL).await.unwrap());

    // Other shards are independent.
    assert_eq!(
        redis.acquire_lease(4, "node-b", TTL).await.unwrap(),
        Some(1)
    );

    // Let it expire; node-b takes over with a higher epoch, node-a is out.
    assert!(redis.renew_lease(3, "node-a", 1, TTL).await.unwrap());
    wait_until_expired(&server, &lease_key).await;
    assert!(!redis.renew_lease(3, "node-a", 1, TTL).await.unwrap());
    let b = redis.acquire_lease(3, "node-b", TTL).await.unwrap();
    assert_eq!(b, Some(2));
    assert!(!redis.renew_lease(3, "node-a", 1, TTL).await.unwrap());
    assert!(!redis.release_lease(3, "node-a", 1).await.unwrap());
    assert_eq!(server.command(&["GET", &lease_key]), "node-b:2");

    // A clean release frees the shard at once; the next epoch is higher
    // again, even for a node that held it before.
    assert!(redis.release_lease(3, "node-b", 2).await.unwrap());
    assert_eq!(server.command(&["EXISTS", &lease_key]), "0");
    assert_eq!(
        redis.acquire_lease(3, "node-a", TTL).await.unwrap(),
        Some(3)
    );
    assert!(redis.lease_holder(5).await.unwrap().is_none());
}

#[tokio::test]
async fn lease_arguments_are_checked() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    for node in ["", "bad\nnode"] {
        let error = redis.acquire_lease(0, node, TTL).await.unwrap_err();
        assert_eq!(error.code(), "invalid_config", "{node:?}");
    }
    let error = redis
        .acquire_lease(0, "n", Duration::from_micros(10))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "invalid_config");
    assert_eq!(server.command(&["DBSIZE"]), "0");
}

/// H2: a leader whose lease expired and was taken over cannot write or
/// publish anything, even though it still believes it leads.
#[tokio::test]
async fn h2_deposed_leader_commit_is_fenced() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let keys = Keys::new(1);
    let channel = keys.updates_channel();

    // A raw subscriber, independent of the client under test.
    let mut watcher = Connection::open(server.addr()).unwrap();
    let confirmation = watcher.call(&["SUBSCRIBE", &channel]).unwrap();
    assert!(
        confirmation.to_string().starts_with("subscribe"),
        "{confirmation}"
    );

    let old_epoch = redis.acquire_lease(1, "old", TTL).await.unwrap().unwrap();
    let old_lease = lease_value("old", old_epoch);
    let mut first = CommitBatch::new();
    first
        .set_string(keys.user("alice"), "v1")
        .publish(&channel, "from-old-while-leading");
    assert_eq!(
        redis.commit(1, &old_lease, &first).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(message(&mut watcher), "from-old-while-leading");

    // The old leader stalls past its TTL; a new one takes the shard.
    wait_until_expired(&server, &keys.lease()).await;
    // With no lease at all, the old leader is already fenced.
    assert_eq!(
        redis.commit(1, &old_lease, &first).await.unwrap(),
        CommitOutcome::Fenced
    );
    let new_epoch = redis
        .acquire_lease(1, "new", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(new_epoch > old_epoch);

    // Same node name, old epoch, or new epoch under the old name: all
    // fenced, nothing written.
    let mut stale = CommitBatch::new();
    stale
        .set_string(keys.user("alice"), "v2-from-deposed")
        .set_string(keys.view("alice"), "stale view")
        .hash_set(keys.devices("alice"), "web", "{}")
        .set_add(keys.users(), "alice")
        .zset_add(keys.heartbeats(), 1, "alice\nweb")
        .delete_key(keys.user("bob"))
        .publish(&channel, "from-deposed")
        .cursor("9-9".parse().unwrap());
    server.command(&["SET", &keys.user("bob"), "kept"]);
    for lease in [
        old_lease.clone(),
        lease_value("new", old_epoch),
        lease_value("old", new_epoch),
    ] {
        assert_eq!(
            redis.commit(1, &lease, &stale).await.unwrap(),
            CommitOutcome::Fenced,
            "{lease}"
        );
    }
    assert_eq!(server.command(&["GET", &keys.user("alice")]), "v1");
    assert_eq!(server.command(&["GET", &keys.user("bob")]), "kept");
    for key in [
        keys.view("alice"),
        keys.devices("alice"),
        keys.users(),
        keys.heartbeats(),
        keys.cursor(),
    ] {
        assert_eq!(server.command(&["EXISTS", &key]), "0", "{key}");
    }

    // The new leader's commit goes through, and its message is the very
    // next one on the channel: the deposed leader published nothing.
    let mut fresh = CommitBatch::new();
    fresh
        .set_string(keys.user("alice"), "v2")
        .publish(&channel, "from-new");
    assert_eq!(
        redis
            .commit(1, &lease_value("new", new_epoch), &fresh)
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(message(&mut watcher), "from-new");
    assert_eq!(server.command(&["GET", &keys.user("alice")]), "v2");
    watcher.set_read_timeout(Duration::from_millis(50)).unwrap();
    let nothing_more = watcher.read_reply().unwrap_err();
    assert!(
        matches!(
            nothing_more.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{nothing_more}"
    );
}

/// The payload of the next pub/sub message on `connection`.
fn message(connection: &mut Connection) -> String {
    match connection.read_reply().unwrap() {
        Reply::Array(Some(parts)) if parts.len() == 3 && parts[0].to_string() == "message" => {
            parts[2].to_string()
        }
        other => panic!("expected a pub/sub message, got {other:?}"),
    }
}

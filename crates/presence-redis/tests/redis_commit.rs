//! The fenced commit script against a real Redis: every operation, all or
//! nothing, publishes after writing, and survives a flushed script cache.

mod redis_support;

use std::time::Duration;

use presence_redis::{
    CommitBatch, CommitOutcome, Keys, RedisError, StreamId, lease_value, redis_stats,
};
use presence_testkit::RedisServer;
use presence_testkit::resp::{Connection, Reply};
use redis_support::connect;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn commit_applies_every_operation_in_order_and_publishes() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let keys = Keys::new(2);
    let epoch = redis.acquire_lease(2, "n", LONG).await.unwrap().unwrap();
    let lease = lease_value("n", epoch);
    let mut watcher = subscribe(
        &server,
        &[&keys.updates_channel(), &keys.node_channel("g1")],
    );

    // State the batch changes or removes.
    server.command(&["SET", &keys.user("gone"), "old"]);
    server.command(&["HSET", &keys.devices("alice"), "old-device", "{}"]);
    server.command(&["SADD", &keys.users(), "gone"]);
    server.command(&["ZADD", &keys.heartbeats(), "5", "gone\nweb"]);

    let mut batch = CommitBatch::new();
    batch
        .set_string(keys.user("alice"), r#"{"chosen":"busy"}"#)
        .set_string(keys.view("alice"), r#"{"status":"busy","version":1}"#)
        .delete_key(keys.user("gone"))
        .hash_set(keys.devices("alice"), "web-1", r#"{"node":"g1"}"#)
        .hash_delete(keys.devices("alice"), "old-device")
        .set_add(keys.users(), "alice")
        .set_remove(keys.users(), "gone")
        .zset_add(keys.heartbeats(), 1_700_000_030_000, "alice\nweb-1")
        .zset_remove(keys.heartbeats(), "gone\nweb")
        .publish(keys.updates_channel(), r#"{"user":"alice","version":1}"#)
        .publish(keys.node_channel("g1"), r#"{"node":"g1","r":"7"}"#)
        // A key deleted then recreated as another type in the same batch.
        .delete_key(keys.self_view("alice"))
        .set_string(keys.self_view("alice"), "self")
        .cursor(StreamId::new(1_700_000_000_000, 3));
    server.command(&["HSET", &keys.self_view("alice"), "f", "v"]);
    assert_eq!(
        redis.commit(2, &lease, &batch).await.unwrap(),
        CommitOutcome::Committed
    );

    let cases: [(&[&str], &str); 10] = [
        (&["GET", &keys.user("alice")], r#"{"chosen":"busy"}"#),
        (
            &["GET", &keys.view("alice")],
            r#"{"status":"busy","version":1}"#,
        ),
        (&["EXISTS", &keys.user("gone")], "0"),
        (
            &["HGETALL", &keys.devices("alice")],
            "web-1\n{\"node\":\"g1\"}",
        ),
        (&["SMEMBERS", &keys.users()], "alice"),
        (
            &["ZRANGE", &keys.heartbeats(), "0", "-1", "WITHSCORES"],
            "alice\nweb-1\n1700000030000",
        ),
        (&["GET", &keys.self_view("alice")], "self"),
        (&["GET", &keys.cursor()], "1700000000000-3"),
        (&["GET", &keys.lease()], &lease),
        (&["DBSIZE"], "9"),
    ];
    for (command, expected) in cases {
        assert_eq!(server.command(command), expected, "{command:?}");
    }
    assert_eq!(
        next_message(&mut watcher),
        (
            keys.updates_channel(),
            r#"{"user":"alice","version":1}"#.into()
        )
    );
    assert_eq!(
        next_message(&mut watcher),
        (keys.node_channel("g1"), r#"{"node":"g1","r":"7"}"#.into())
    );

    // An empty batch only checks the lease.
    assert_eq!(
        redis.commit(2, &lease, &CommitBatch::new()).await.unwrap(),
        CommitOutcome::Committed
    );
}

#[tokio::test]
async fn commit_is_all_or_nothing_when_an_operation_cannot_apply() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let keys = Keys::new(0);
    let epoch = redis.acquire_lease(0, "n", LONG).await.unwrap().unwrap();
    let lease = lease_value("n", epoch);
    let mut watcher = subscribe(&server, &[&Keys::control_channel()]);
    // Someone stored a string where the heartbeat zset belongs.
    server.command(&["SET", &keys.heartbeats(), "not a zset"]);

    let mut batch = CommitBatch::new();
    batch
        .set_string(keys.user("alice"), "doc")
        .set_string(Keys::cap(), r#"{"enabled":false}"#)
        .publish(Keys::control_channel(), "presence_inactive")
        .set_add(keys.users(), "alice")
        .zset_add(keys.heartbeats(), 10, "alice\nweb")
        .cursor(StreamId::new(1, 0));
    let error = redis.commit(0, &lease, &batch).await.unwrap_err();
    assert!(
        matches!(&error, RedisError::Server(e) if e.contains("WRONGTYPE")),
        "{error:?}"
    );
    assert_eq!(error.code(), "internal");
    for key in [keys.user("alice"), Keys::cap(), keys.users(), keys.cursor()] {
        assert_eq!(server.command(&["EXISTS", &key]), "0", "{key} was written");
    }
    assert_eq!(server.command(&["GET", &keys.heartbeats()]), "not a zset");

    // Nothing was published either: the next message is this one.
    server.command(&["DEL", &keys.heartbeats()]);
    assert_eq!(
        redis.commit(0, &lease, &batch).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(next_message(&mut watcher).1, "presence_inactive");
    assert_eq!(
        server.command(&["GET", &Keys::cap()]),
        r#"{"enabled":false}"#
    );
}

#[tokio::test]
async fn a_batch_with_a_key_of_another_shard_is_refused_and_nothing_is_sent() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let epoch = redis.acquire_lease(1, "n", LONG).await.unwrap().unwrap();
    server.command(&["CONFIG", "RESETSTAT"]);
    let mut batch = CommitBatch::new();
    batch
        .set_string(Keys::new(1).user("a"), "x")
        .set_string(Keys::new(2).user("b"), "y");
    let error = redis
        .commit(1, &lease_value("n", epoch), &batch)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RedisError::CrossShard { shard: 1, .. }),
        "{error:?}"
    );
    assert_eq!(redis_support::calls(&server, "evalsha"), 0);
    assert_eq!(server.command(&["EXISTS", &Keys::new(1).user("a")]), "0");
}

/// Redis forgets scripts on restart or `SCRIPT FLUSH`; the client loads
/// them again on `NOSCRIPT` and retries, invisibly to the caller.
#[tokio::test]
async fn noscript_reloads_the_script_and_retries_once() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let keys = Keys::new(4);
    let epoch = redis.acquire_lease(4, "n", LONG).await.unwrap().unwrap();
    let lease = lease_value("n", epoch);
    assert_eq!(redis.script_reloads(), 0);
    // Process-wide counters (nextest runs each test in its own process).
    let before = redis_stats().snapshot();

    for (round, value) in ["one", "two", "three"].into_iter().enumerate() {
        server.command(&["SCRIPT", "FLUSH"]);
        let mut batch = CommitBatch::new();
        batch.set_string(keys.user("alice"), value);
        assert_eq!(
            redis.commit(4, &lease, &batch).await.unwrap(),
            CommitOutcome::Committed
        );
        assert_eq!(server.command(&["GET", &keys.user("alice")]), value);
        assert_eq!(redis.script_reloads(), round as u64 + 1);
    }
    // Each script is reloaded only when it is missing: the flush in the
    // last round also dropped renew_lease, loaded again once here.
    assert!(redis.renew_lease(4, "n", epoch, LONG).await.unwrap());
    assert_eq!(redis.script_reloads(), 4);
    assert!(redis.renew_lease(4, "n", epoch, LONG).await.unwrap());
    assert_eq!(redis.script_reloads(), 4);
    let mut batch = CommitBatch::new();
    batch.set_string(keys.user("alice"), "four");
    assert_eq!(
        redis.commit(4, &lease, &batch).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(redis.script_reloads(), 4);
    // On /metrics the reloads are presence_redis_script_reloads_total,
    // not Redis errors (issue 13).
    let after = redis_stats().snapshot();
    assert_eq!(after.script_reloads - before.script_reloads, 4);
    assert_eq!(after.errors, before.errors, "a reload is not an error");
}

/// A raw subscriber to `channels`, confirmations read.
fn subscribe(server: &RedisServer, channels: &[&str]) -> Connection {
    let mut connection = Connection::open(server.addr()).unwrap();
    let mut command = vec!["SUBSCRIBE"];
    command.extend_from_slice(channels);
    connection.send(&command).unwrap();
    for _ in channels {
        let confirmation = connection.read_reply().unwrap();
        assert!(
            confirmation.to_string().starts_with("subscribe"),
            "{confirmation}"
        );
    }
    connection
}

fn next_message(connection: &mut Connection) -> (String, String) {
    connection.set_read_timeout(Duration::from_secs(5)).unwrap();
    match connection.read_reply().unwrap() {
        Reply::Array(Some(parts)) if parts.len() == 3 && parts[0].to_string() == "message" => {
            (parts[1].to_string(), parts[2].to_string())
        }
        other => panic!("expected a pub/sub message, got {other:?}"),
    }
}

/// Issue 13: `presence_store_write_seconds` measures cluster writes too.
/// Every successful store write (a stream append, a heartbeat batch, a
/// commit script, fenced or not) reaches the process's observer with its
/// kind; lease scripts do not.
#[tokio::test]
async fn store_writes_reach_the_write_observer_by_kind() {
    use std::sync::{Arc, Mutex};

    use presence_redis::observe_store_writes;

    let seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let sink = seen.clone();
    // nextest runs each test in its own process: this observer is the only one.
    assert!(observe_store_writes(Box::new(move |kind, _elapsed| {
        sink.lock().unwrap().push(kind);
    })));
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let keys = Keys::new(4);
    let epoch = redis.acquire_lease(4, "n", LONG).await.unwrap().unwrap();
    assert!(redis.renew_lease(4, "n", epoch, LONG).await.unwrap());
    assert!(
        seen.lock().unwrap().is_empty(),
        "lease scripts are not store writes"
    );

    redis.append(4, &[("u", "alice")]).await.unwrap();
    redis
        .refresh_heartbeats(4, 1, &["alice|web".to_owned()])
        .await
        .unwrap();
    let mut batch = CommitBatch::new();
    batch.set_string(keys.user("alice"), "one");
    let lease = lease_value("n", epoch);
    assert_eq!(
        redis.commit(4, &lease, &batch).await.unwrap(),
        CommitOutcome::Committed
    );
    // A fenced-off commit writes nothing, but its script ran: it is timed
    // like any other commit (a leader that keeps being fenced shows there).
    let stale = lease_value("n", epoch + 1);
    assert_ne!(
        redis.commit(4, &stale, &batch).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["append", "heartbeats", "commit", "commit"]
    );
}

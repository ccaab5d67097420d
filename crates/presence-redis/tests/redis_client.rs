//! The connection itself against a real Redis: cluster metadata, shard
//! loads and view reads, behaviour while Redis is down (H3), and the
//! subscriber's resync events.

mod redis_support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use presence_redis::{
    ClusterSnapshot, CommitBatch, Keys, RedisClient, RedisError, ResyncReason, StoredUser,
    StreamId, SubscriberEvent, lease_value,
};
use presence_testkit::{RedisServer, wait_until};
use redis_support::{COMMAND_TIMEOUT, connect, test_config};

#[tokio::test]
async fn ensure_meta_refuses_a_node_with_another_shard_count() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    redis.ensure_meta(16).await.unwrap();
    redis.ensure_meta(16).await.unwrap();
    assert_eq!(server.command(&["HGET", &Keys::meta(), "shards"]), "16");
    match redis.ensure_meta(8).await {
        Err(
            e @ RedisError::ShardCountMismatch {
                stored: 16,
                configured: 8,
            },
        ) => {
            assert_eq!(e.code(), "shard_count_mismatch");
            assert!(e.to_string().contains("16 shards"), "{e}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert_eq!(server.command(&["HGET", &Keys::meta(), "shards"]), "16");
}

#[tokio::test]
async fn load_shard_returns_everything_a_new_leader_needs() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let keys = Keys::new(3);
    let empty = redis.load_shard(3).await.unwrap();
    assert_eq!(empty.cursor, None);
    assert!(empty.users.is_empty());

    let epoch = redis
        .acquire_lease(3, "n", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut batch = CommitBatch::new();
    // 1 100 users: more than two load chunks.
    for i in 0..1100 {
        let user = format!("u{i:04}");
        batch
            .set_add(keys.users(), user.as_str())
            .set_string(keys.user(&user), format!(r#"{{"n":{i}}}"#))
            .set_string(keys.view(&user), format!("view-{i}"));
    }
    batch
        .set_add(keys.users(), "a:b{9}")
        .set_string(keys.user("a:b{9}"), "doc")
        .set_string(keys.self_view("a:b{9}"), "self")
        .hash_set(keys.devices("a:b{9}"), "web", "w")
        .hash_set(keys.devices("a:b{9}"), "desktop", "d")
        // In the set, but no keys (yet).
        .set_add(keys.users(), "bare")
        .cursor(StreamId::new(42, 7));
    redis
        .commit(3, &lease_value("n", epoch), &batch)
        .await
        .unwrap();

    let snapshot = redis.load_shard(3).await.unwrap();
    assert_eq!(snapshot.cursor, Some(StreamId::new(42, 7)));
    assert_eq!(snapshot.users.len(), 1102);
    assert_eq!(snapshot.users[0].user, "a:b{9}", "sorted by id");
    assert_eq!(
        snapshot.users[0],
        StoredUser {
            user: "a:b{9}".into(),
            doc: Some("doc".into()),
            view: None,
            self_view: Some("self".into()),
            devices: vec![("desktop".into(), "d".into()), ("web".into(), "w".into())],
        }
    );
    assert_eq!(
        snapshot.users[1],
        StoredUser {
            user: "bare".into(),
            ..StoredUser::default()
        }
    );
    let u0999 = snapshot.users.iter().find(|u| u.user == "u0999").unwrap();
    assert_eq!(u0999.doc.as_deref(), Some(r#"{"n":999}"#));
    assert_eq!(u0999.view.as_deref(), Some("view-999"));
    assert!(u0999.devices.is_empty());

    // Gateway resync: views in the order asked, None for unknown users.
    let views = redis
        .read_views(3, &["u0001", "nobody", "u1099"])
        .await
        .unwrap();
    assert_eq!(
        views,
        [Some("view-1".into()), None, Some("view-1099".into())]
    );
    assert_eq!(
        redis.read_views(3, &["u0002"]).await.unwrap(),
        [Some("view-2".into())]
    );
    assert!(redis.read_views::<&str>(3, &[]).await.unwrap().is_empty());
    let many: Vec<String> = (0..1100).map(|i| format!("u{i:04}")).collect();
    let views = redis.read_views(3, &many).await.unwrap();
    assert_eq!(views.len(), 1100);
    assert_eq!(views[777].as_deref(), Some("view-777"));
}

#[tokio::test]
async fn cluster_state_written_by_shard_0_is_readable_by_everyone() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    assert_eq!(
        redis.read_cluster_state().await.unwrap(),
        ClusterSnapshot::default()
    );

    let epoch = redis
        .acquire_lease(0, "n", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut batch = CommitBatch::new();
    batch
        .set_string(Keys::settings(), r#"{"cap":200}"#)
        .hash_set(Keys::custom_statuses(), "b", r#"{"name":"Lunch"}"#)
        .hash_set(Keys::custom_statuses(), "a", r#"{"name":"Focus"}"#)
        .set_string(Keys::cap(), r#"{"enabled":true}"#);
    redis
        .commit(0, &lease_value("n", epoch), &batch)
        .await
        .unwrap();

    let state = redis.read_cluster_state().await.unwrap();
    assert_eq!(state.settings.as_deref(), Some(r#"{"cap":200}"#));
    assert_eq!(
        state.custom_statuses,
        [
            ("a".to_owned(), r#"{"name":"Focus"}"#.to_owned()),
            ("b".to_owned(), r#"{"name":"Lunch"}"#.to_owned()),
        ]
    );
    assert_eq!(state.cap.as_deref(), Some(r#"{"enabled":true}"#));
}

/// H3 groundwork: while Redis is down a command fails within the command
/// timeout with `backend_unavailable` (no hang), the wait queue is
/// bounded, and the client comes back by itself when Redis does (scripts
/// included: the restarted Redis has none).
#[tokio::test]
async fn h3_commands_fail_fast_while_redis_is_down_and_the_client_recovers() {
    let mut server = RedisServer::start();
    let mut config = test_config(&server);
    config.max_command_buffer = 16;
    let redis = RedisClient::connect(config).await.unwrap();
    assert!(redis.is_connected());
    redis
        .acquire_lease(0, "n", Duration::from_secs(30))
        .await
        .unwrap();

    server.kill9();
    let started = Instant::now();
    let error = redis.append(0, &[("u", "alice")]).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error.code(), "backend_unavailable", "{error:?}");
    assert!(
        waited <= COMMAND_TIMEOUT + Duration::from_millis(250),
        "failed after {waited:?}"
    );
    let error = redis.ping().await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");

    // Far more concurrent commands than the queue holds: the excess fails
    // at once instead of piling up.
    let started = Instant::now();
    let pings: Vec<_> = (0..200)
        .map(|_| {
            let redis = redis.clone();
            tokio::spawn(async move { redis.ping().await })
        })
        .collect();
    let mut backpressure = 0;
    for ping in pings {
        let error = ping.await.unwrap().unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
        backpressure += usize::from(matches!(error, RedisError::Backpressure));
    }
    assert!(
        backpressure >= 150,
        "only {backpressure} of 200 were refused at once"
    );
    assert!(started.elapsed() <= COMMAND_TIMEOUT + Duration::from_millis(250));

    server.restart();
    wait_until(
        "the client reconnects",
        Duration::from_secs(5),
        async || redis.ping().await,
        Result::is_ok,
    )
    .await
    .expect("accepted above");
    // The new server has neither data nor scripts; both work again.
    assert_eq!(
        redis
            .acquire_lease(0, "n", Duration::from_secs(1))
            .await
            .unwrap(),
        Some(1)
    );
    assert!(redis.script_reloads() >= 1);
    redis.append(0, &[("u", "bob")]).await.unwrap();
    assert_eq!(server.command(&["XLEN", &Keys::new(0).events()]), "1");
    wait_until(
        "every pooled connection is back",
        Duration::from_secs(5),
        async || redis.is_connected(),
        |&connected| connected,
    )
    .await;
}

/// A Redis that stops answering without closing connections (a partition,
/// a stalled host: here `DEBUG SLEEP`) is a timeout within the command
/// timeout, not a hang, and the client carries on once it answers again.
#[tokio::test]
async fn h3_a_frozen_redis_is_a_timeout_and_the_client_carries_on() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let addr = server.addr();
    let freeze = std::thread::spawn(move || {
        presence_testkit::resp::query(addr, &["DEBUG", "SLEEP", "1.2"]).unwrap()
    });
    // The freeze has begun once Redis stops answering.
    wait_until(
        "redis freezes (a PING unanswered for 100 ms)",
        Duration::from_secs(5),
        async || tokio::time::timeout(Duration::from_millis(100), redis.ping()).await,
        |ping| ping.is_err(),
    )
    .await
    .expect_err("accepted above");

    let started = Instant::now();
    let error = redis.append(1, &[("u", "alice")]).await.unwrap_err();
    assert!(matches!(error, RedisError::Timeout(_)), "{error:?}");
    assert_eq!(error.code(), "backend_unavailable");
    assert!(started.elapsed() <= COMMAND_TIMEOUT + Duration::from_millis(250));

    freeze.join().unwrap();
    wait_until(
        "redis answers again",
        Duration::from_secs(5),
        async || redis.ping().await,
        Result::is_ok,
    )
    .await
    .expect("accepted above");
    redis.append(1, &[("u", "bob")]).await.unwrap();
}

#[tokio::test]
async fn connecting_to_nothing_fails_with_backend_unavailable() {
    let port = presence_testkit::free_port();
    let mut config = presence_redis::RedisConfig::new(format!("redis://127.0.0.1:{port}"));
    config.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = RedisClient::connect(config).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let error = RedisClient::connect(presence_redis::RedisConfig::new("nope://x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "invalid_config");
}

#[tokio::test]
async fn the_subscriber_resyncs_after_its_connection_is_killed() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    assert!(!redis.is_cluster());
    let mut subscriber = redis.subscriber().await.unwrap();
    let channels = [Keys::new(0).updates_channel(), Keys::control_channel()];
    subscriber.subscribe(&channels).await.unwrap();

    server.command(&["PUBLISH", &channels[0], "one"]);
    assert_eq!(
        recv(&mut subscriber).await,
        SubscriberEvent::Message {
            channel: channels[0].clone(),
            payload: "one".into()
        }
    );

    // Redis drops the subscriber (as on a restart or a network cut): the
    // messages published meanwhile are lost, so the caller must resync,
    // and only once it is subscribed again.
    server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(
        recv(&mut subscriber).await,
        SubscriberEvent::Resync(ResyncReason::Reconnected)
    );
    let subscribed: u64 = server
        .command(&["PUBSUB", "NUMSUB", &channels[1]])
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(subscribed, 1, "subscribed again before the resync event");
    server.command(&["PUBLISH", &channels[1], "two"]);
    assert_eq!(
        recv(&mut subscriber).await,
        SubscriberEvent::Message {
            channel: channels[1].clone(),
            payload: "two".into()
        }
    );

    subscriber.unsubscribe(&channels[..1]).await.unwrap();
    assert_eq!(
        subscriber.channels().collect::<Vec<_>>(),
        [channels[1].as_str()]
    );
    subscriber.quit().await;
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_to_resync() {
    let server = RedisServer::start();
    let mut config = test_config(&server);
    config.pubsub_broadcast_capacity = 8;
    let redis = RedisClient::connect(config).await.unwrap();
    let mut subscriber = redis.subscriber().await.unwrap();
    let channel = Keys::new(1).updates_channel();
    subscriber
        .subscribe(std::slice::from_ref(&channel))
        .await
        .unwrap();

    // 100 messages arrive in one burst while nobody reads. (The publisher
    // blocks this thread, so fred's reader gets to them only afterwards.)
    let mut publisher = presence_testkit::resp::Connection::open(server.addr()).unwrap();
    for i in 0..100 {
        publisher
            .call(&["PUBLISH", &channel, &i.to_string()])
            .unwrap();
    }
    // Every message is either delivered or counted as missed, and the
    // reader is told each time it fell behind.
    let mut delivered = 0;
    let mut resyncs = 0;
    loop {
        match recv(&mut subscriber).await {
            SubscriberEvent::Message { payload, .. } => {
                delivered += 1;
                if payload == "99" {
                    break;
                }
            }
            SubscriberEvent::Resync(ResyncReason::Lagged { missed }) => {
                assert!(missed > 0);
                resyncs += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(resyncs > 0, "100 messages into a buffer of 8 must lag");
    assert_eq!(
        delivered + subscriber.lagged_total(),
        100,
        "after {resyncs} resyncs"
    );
}

#[tokio::test]
async fn server_time_is_the_redis_clock_in_ms() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let ours = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let theirs = redis.server_time_ms().await.unwrap();
    assert!(
        theirs.abs_diff(ours) < 1_000,
        "redis {theirs} vs local {ours}"
    );
}

async fn recv(subscriber: &mut presence_redis::RedisSubscriber) -> SubscriberEvent {
    tokio::time::timeout(Duration::from_secs(5), subscriber.recv())
        .await
        .expect("an event within 5 s")
        .expect("the subscriber is open")
}

//! Each shard's event stream against a real Redis: append, read after a
//! cursor, blocking reads on a dedicated connection, trim, and the cap.

mod redis_support;

use std::time::{Duration, Instant};

use presence_redis::{Keys, StreamId};
use presence_testkit::{RedisServer, wait_until};
use redis_support::{connect, test_config};

#[tokio::test]
async fn stream_append_read_trim_round_trip_with_1000_entries() {
    let server = RedisServer::start();
    let redis = connect(&server).await;

    let mut appended = Vec::new();
    for i in 0..1000 {
        let user = format!("user-{i}");
        let command = format!(r#"{{"type":"activity","n":{i}}}"#);
        let id = redis
            .append(5, &[("u", user.as_str()), ("c", &command), ("n", "node-a")])
            .await
            .unwrap();
        appended.push(id);
    }
    assert!(appended.windows(2).all(|w| w[0] < w[1]), "ids increase");
    assert_eq!(redis.stream_len(5).await.unwrap(), 1000);
    assert_eq!(server.command(&["XLEN", &Keys::new(5).events()]), "1000");

    // Read it back in pages, as a leader does, from the start.
    let mut cursor = StreamId::ZERO;
    let mut read = Vec::new();
    loop {
        let page = redis.read(5, cursor, 300, None).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.id;
        read.extend(page);
    }
    assert_eq!(read.len(), 1000);
    for (i, entry) in read.iter().enumerate() {
        assert_eq!(entry.id, appended[i]);
        assert_eq!(entry.field("u"), Some(format!("user-{i}").as_str()));
        assert_eq!(entry.field("n"), Some("node-a"));
        assert_eq!(entry.fields.len(), 3);
    }
    // Reading after a middle id starts right after it.
    let after = redis.read(5, appended[499], 2, None).await.unwrap();
    assert_eq!(
        after.iter().map(|e| e.id).collect::<Vec<_>>(),
        &appended[500..502]
    );

    // Trim what was applied: everything before entry 500.
    let deleted = redis.trim(5, appended[500]).await.unwrap();
    assert_eq!(deleted, 500);
    assert_eq!(redis.stream_len(5).await.unwrap(), 500);
    let rest = redis.read(5, StreamId::ZERO, 1, None).await.unwrap();
    assert_eq!(rest[0].id, appended[500]);
    assert_eq!(redis.trim(5, appended[500]).await.unwrap(), 0);

    // Other shards' streams are separate; an empty one reads as nothing.
    assert!(
        redis
            .read(6, StreamId::ZERO, 10, None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_blocking_read_waits_on_its_own_connection_and_wakes_on_append() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let reader = redis.stream_reader().await.unwrap();

    // Nothing comes: the read returns empty after the block time.
    let started = Instant::now();
    let nothing = reader
        .read(0, StreamId::ZERO, 10, Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert!(nothing.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(90));

    // A read blocked for longer than the command timeout is not a timeout,
    // and an append wakes it; the pool keeps answering meanwhile.
    let tail = redis.append(0, &[("u", "first")]).await.unwrap();
    let blocked = tokio::spawn(async move {
        let entries = reader
            .read(0, tail, 10, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        (entries, reader)
    });
    // The read is blocked in Redis once Redis counts a blocked client.
    wait_until(
        "the read to block in Redis (blocked_clients:1)",
        Duration::from_secs(5),
        async || server.command(&["INFO", "clients"]),
        |info| info.contains("blocked_clients:1"),
    )
    .await;
    for _ in 0..20 {
        redis.ping().await.unwrap();
    }
    let woke_by = redis.append(0, &[("u", "second")]).await.unwrap();
    let (entries, reader) = tokio::time::timeout(Duration::from_secs(2), blocked)
        .await
        .expect("the append wakes the blocked read")
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, woke_by);
    assert_eq!(entries[0].field("u"), Some("second"));

    // Blocking longer than the command timeout and the unresponsive
    // timeout (1 s in tests), with nothing arriving: neither fires, the
    // connection is not replaced.
    let connections_before = connections_received(&server);
    let long = Duration::from_millis(1_200);
    let empty = reader.read(0, woke_by, 10, Some(long)).await.unwrap();
    assert!(empty.is_empty());
    assert_eq!(
        connections_received(&server),
        connections_before + 1,
        "only the test's own INFO connected"
    );
    reader.quit().await;
}

#[tokio::test]
async fn appends_are_capped_at_about_stream_max_len() {
    let server = RedisServer::start();
    let mut config = test_config(&server);
    config.stream_max_len = 100;
    let redis = presence_redis::RedisClient::connect(config).await.unwrap();
    for i in 0..1000 {
        redis.append(9, &[("i", i.to_string())]).await.unwrap();
    }
    // `MAXLEN ~` trims whole radix-tree nodes (100 entries by default), so
    // the length stays within one node of the cap.
    let len = redis.stream_len(9).await.unwrap();
    assert!((100..=200).contains(&len), "XLEN {len}");
    let error = redis.append::<&str, &str>(9, &[]).await.unwrap_err();
    assert_eq!(error.code(), "invalid_config");
}

/// `total_connections_received` of `INFO stats` (each testkit command
/// opens one).
fn connections_received(server: &RedisServer) -> u64 {
    let stats = server.command(&["INFO", "stats"]);
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("total_connections_received:"))
        .unwrap()
        .parse()
        .unwrap()
}

/// The console's cluster page (issue 14): a shard's unapplied entries are
/// those after the stored cursor, counted up to a cap.
#[tokio::test]
async fn unapplied_entries_are_the_entries_after_the_stored_cursor() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    assert_eq!(redis.unapplied_entries(2, 100).await.unwrap(), 0);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(redis.append(2, &[("u", format!("u{i}"))]).await.unwrap());
    }
    assert_eq!(redis.unapplied_entries(2, 100).await.unwrap(), 5);
    server.command(&["SET", &Keys::new(2).cursor(), &ids[1].to_string()]);
    assert_eq!(redis.unapplied_entries(2, 100).await.unwrap(), 3);
    assert_eq!(redis.unapplied_entries(2, 2).await.unwrap(), 2);
    server.command(&["SET", &Keys::new(2).cursor(), &ids[4].to_string()]);
    assert_eq!(redis.unapplied_entries(2, 100).await.unwrap(), 0);
}

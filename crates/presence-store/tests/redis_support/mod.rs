//! Shared by the `redis_*` test binaries: a client tuned for tests against
//! a `presence_testkit::RedisServer`, and polling helpers.
#![allow(dead_code)] // Each binary uses a different part.

use std::future::Future;
use std::time::{Duration, Instant};

use presence_store::redis::{Backoff, RedisClient, RedisConfig};
use presence_testkit::RedisServer;

/// Short timeouts so failure paths are quick; still far above what a
/// loopback Redis needs.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

pub fn test_config(server: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::new(server.url());
    config.pool_size = 2;
    config.command_timeout = COMMAND_TIMEOUT;
    config.connect_timeout = Duration::from_millis(500);
    config.unresponsive_timeout = Duration::from_secs(1);
    config.unresponsive_check_interval = Duration::from_millis(200);
    config.reconnect = Backoff {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        jitter: Duration::from_millis(20),
    };
    config
}

pub async fn connect(server: &RedisServer) -> RedisClient {
    RedisClient::connect(test_config(server))
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", server.url()))
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `key` no longer exists (its TTL ran out), polling `PTTL`.
pub async fn wait_until_expired(server: &RedisServer, key: &str) {
    eventually(
        &format!("{key} expires"),
        Duration::from_secs(5),
        || async { (server.command(&["PTTL", key]) == "-2").then_some(()) },
    )
    .await
}

/// How many times Redis executed `command` since the last
/// `CONFIG RESETSTAT` (`INFO commandstats`).
pub fn calls(server: &RedisServer, command: &str) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
    stats
        .lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

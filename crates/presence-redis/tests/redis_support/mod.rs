//! Shared by the `redis_*` test binaries: a client tuned for tests against
//! a `presence_testkit::RedisServer`, and reads of its state (waits use
//! `presence_testkit::wait_until`).
#![allow(dead_code)] // Each binary uses a different part.

use std::time::Duration;

use presence_redis::{Backoff, RedisClient, RedisConfig};
use presence_testkit::{RedisServer, wait_until};

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

/// Waits until `key` no longer exists (its TTL ran out), polling `PTTL`.
pub async fn wait_until_expired(server: &RedisServer, key: &str) {
    wait_until(
        format_args!("{key} to expire (PTTL -2)"),
        Duration::from_secs(5),
        async || server.command(&["PTTL", key]),
        |pttl| pttl == "-2",
    )
    .await;
}

/// How many times Redis executed `command` since the last
/// `CONFIG RESETSTAT` (`INFO commandstats`).
pub fn calls(server: &RedisServer, command: &str) -> u64 {
    calls_in(&server.command(&["INFO", "commandstats"]), command)
}

/// How many times `command` ran according to `stats`, the text of one
/// `INFO commandstats` (read once to compare several commands).
pub fn calls_in(stats: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
    stats
        .lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

//! A load for profiling one shard leader with instruction counts
//! (`valgrind --tool=callgrind`), which stay comparable on a loaded
//! machine where wall-clock rates do not.
//!
//! Two steps against a `redis-server` you start (so only the leader runs
//! under valgrind):
//!
//! ```sh
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run -p presence-aggregator --example leader_load -- fill redis://127.0.0.1:6390 1000 4000
//! valgrind --tool=callgrind target/debug/examples/leader_load lead redis://127.0.0.1:6390 4000
//! ```
//!
//! `fill <url> <users> <events>` appends (to an empty database)
//! `events` commands for `users` users to shard 0 of a one-shard cluster
//! (each user's first is a connect, then idle/active alternately);
//! `lead <url> <events>` starts one aggregator and exits once it has
//! applied them, printing the rate. The same shapes as the
//! `aggregation_throughput_of_one_shard_leader` test.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use presence_aggregator::{Aggregator, AggregatorConfig};
use presence_core::{DeviceEvent, DeviceId, Platform};
use presence_protocol::cluster::{ClusterCommand, Profile, StreamEntry, UserCommand};
use presence_redis::{RedisClient, RedisConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("fill") => fill(&args[1], number(2), number(3)).await,
        Some("lead") => lead(&args[1], number(2)).await,
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: leader_load fill <redis-url> <users> <events> | lead <redis-url> <events>");
    std::process::exit(2)
}

async fn client(url: &str) -> RedisClient {
    let mut config = RedisConfig::new(url.to_owned());
    config.command_timeout = Duration::from_secs(30);
    RedisClient::connect(config).await.expect("redis")
}

async fn fill(url: &str, users: usize, events: usize) {
    let client = client(url).await;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    client
        .refresh_node("g1", now_ms + 3_600_000, users as u64)
        .await
        .expect("node lease");
    for i in 0..events {
        let command = if i < users {
            ClusterCommand::User(UserCommand::Connect {
                device: DeviceId::try_from("web").expect("id"),
                platform: Platform::Web,
                conn: 1,
                node: "g1".to_owned(),
                profile: Profile::default(),
            })
        } else {
            let event = if (i / users).is_multiple_of(2) {
                DeviceEvent::Idle
            } else {
                DeviceEvent::Active
            };
            ClusterCommand::User(UserCommand::DeviceEvent {
                device: DeviceId::try_from("web").expect("id"),
                event,
            })
        };
        let entry = StreamEntry {
            user: format!("load-{}", i % users),
            command,
            node: "g1".to_owned(),
            reply: None,
            retry: false,
            profile: None,
        };
        client.append(0, &entry.to_fields()).await.expect("XADD");
    }
    println!("appended {events} events for {users} users");
}

async fn lead(url: &str, events: usize) {
    // A long lease and device timeout: under valgrind a 3 s lease lapses
    // between renewals, and nobody refreshes the devices' heartbeats.
    let mut config = AggregatorConfig::new("agg", 1);
    config.lease_ttl = Duration::from_secs(120);
    config.device_timeout = Duration::from_secs(3600);
    let handle = Aggregator::start(client(url).await, config, CancellationToken::new());
    // The first lease attempt waits up to a tenth of the renewal
    // interval: time from the takeover.
    while handle.stats().snapshot().takeovers == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took_over = Instant::now();
    while handle.stats().snapshot().events_applied < events as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = took_over.elapsed().as_secs_f64();
    let stats = handle.stats().snapshot();
    println!(
        "{events} events in {elapsed:.2} s after the takeover ({:.0}/s), {} commits",
        events as f64 / elapsed,
        stats.commits
    );
    handle.shutdown().await;
}

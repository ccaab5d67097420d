//! Shared by the `redis_*` test binaries: a real `redis-server`, a client
//! tuned for tests, aggregators with short timings, stream entries, and
//! waits for their state (through `presence_testkit::wait_until`, never
//! bare sleeps as synchronisation).
#![allow(dead_code)] // Each binary uses a different part.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_aggregator::{Aggregator, AggregatorConfig, AggregatorHandle};
use presence_core::{DeviceId, Platform};
use presence_protocol::cluster::{
    ClusterCommand, Profile, SocketEnd, StatusRequestBody, StoredView, StreamEntry, UserCommand,
    shard_of,
};
use presence_redis::{
    Backoff, RedisClient, RedisConfig, RedisSubscriber, StreamId, SubscriberEvent,
};
use presence_testkit::{RedisServer, wait_until};
use tokio_util::sync::CancellationToken;

pub fn test_config(server: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::new(server.url());
    config.pool_size = 2;
    config.command_timeout = Duration::from_millis(500);
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

/// Short timings: a 1 s lease, sweeps every 100 ms.
pub fn aggregator_config(node: &str, shards: u16) -> AggregatorConfig {
    let mut config = AggregatorConfig::new(node, shards);
    config.lease_ttl = Duration::from_secs(1);
    config.sweep_interval = Duration::from_millis(100);
    config.trim_interval = Duration::from_millis(300);
    config
}

pub async fn start(server: &RedisServer, config: AggregatorConfig) -> AggregatorHandle {
    Aggregator::start(connect(server).await, config, CancellationToken::new())
}

/// Waits until `handle` holds `count` shards.
pub async fn wait_held(handle: &AggregatorHandle, count: u64, within: Duration) {
    wait_until(
        format_args!("holding {count} shards"),
        within,
        async || handle.stats().snapshot().shards_held,
        |&held| held == count,
    )
    .await;
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Registers gateway `node` with a lease of `ttl` and `connections` open
/// sockets.
pub async fn register_node(client: &RedisClient, node: &str, ttl: Duration, connections: u64) {
    client
        .refresh_node(node, now_ms() + ttl.as_millis() as u64, connections)
        .await
        .unwrap();
}

/// Appends `command` for `user` to the user's shard (shard 0 for admin
/// commands), as gateway `node`.
pub async fn append(
    client: &RedisClient,
    shards: u16,
    user: &str,
    node: &str,
    command: ClusterCommand,
    reply: Option<&str>,
) -> StreamId {
    let shard = if command.is_admin() {
        0
    } else {
        shard_of(user, shards)
    };
    let entry = StreamEntry {
        user: user.to_owned(),
        command,
        node: node.to_owned(),
        reply: reply.map(str::to_owned),
        retry: false,
        profile: None,
    };
    client.append(shard, &entry.to_fields()).await.unwrap()
}

pub fn connect_cmd(device: &str, node: &str, conn: u64) -> ClusterCommand {
    ClusterCommand::User(UserCommand::Connect {
        device: DeviceId::try_from(device).unwrap(),
        platform: Platform::Web,
        conn,
        node: node.to_owned(),
        profile: Profile::default(),
    })
}

pub fn disconnect_cmd(device: &str, conn: u64) -> ClusterCommand {
    ClusterCommand::User(UserCommand::Disconnect {
        device: DeviceId::try_from(device).unwrap(),
        conn,
        end: SocketEnd::Clean,
    })
}

pub fn set_status_cmd(status: presence_core::ChosenStatus, text: Option<&str>) -> ClusterCommand {
    ClusterCommand::User(UserCommand::SetStatus {
        request: StatusRequestBody {
            status: Some(status),
            text: text.map(str::to_owned),
            expires_at: None,
        },
    })
}

/// The stored view of `user`, if any.
pub async fn view(client: &RedisClient, shards: u16, user: &str) -> Option<StoredView> {
    let views = client
        .read_views(shard_of(user, shards), &[user])
        .await
        .unwrap();
    views[0]
        .as_deref()
        .map(|json| serde_json::from_str(json).unwrap())
}

/// The next message of `subscriber`, as `(channel, payload)`, within
/// `within`.
pub async fn next_message(subscriber: &mut RedisSubscriber, within: Duration) -> (String, String) {
    let event = tokio::time::timeout(within, subscriber.recv())
        .await
        .unwrap_or_else(|_| panic!("no message within {within:?}"))
        .expect("subscriber closed");
    match event {
        SubscriberEvent::Message { channel, payload } => (channel, payload),
        SubscriberEvent::Resync(reason) => panic!("unexpected resync: {reason:?}"),
    }
}

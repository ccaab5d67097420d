//! The gateway's settings. The binary fills this from flags and
//! `PRESENCE_*` variables; tests build it directly.

use std::time::Duration;

use crate::listener::ListenerConfig;
use crate::ratelimit::RateLimits;

/// Everything the gateway needs to know about its limits and timers.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest WebSocket frame or message accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Largest REST request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// W2: how many users one socket may watch.
    pub max_subscriptions: usize,
    /// F3: how many subscriptions one user may hold across all their
    /// sockets on this node.
    pub max_subscriptions_per_user: usize,
    /// How many users one query (WS `query`, REST bulk) may name.
    pub max_query_users: usize,
    /// Control messages (acks, errors, snapshots) queued per socket before
    /// it is dropped as a slow consumer.
    pub max_control_queue: usize,
    /// The server pings every socket this often.
    pub ping_interval: Duration,
    /// A socket silent for this long is closed and treated as lost (D7).
    pub heartbeat_timeout: Duration,
    /// A write to a socket that takes longer than this drops the client.
    pub write_timeout: Duration,
    /// SIGTERM spreads socket closes over this window.
    pub drain_window: Duration,
    /// S2: the floor for idle time limits. 60 s unless lowered for tests.
    pub idle_floor_secs: u64,
    /// WebSocket read/write buffer sizes.
    pub socket_buffer_bytes: usize,
    pub rate_limits: RateLimits,
    /// X6: sockets one user may hold on this node; the next is refused
    /// with 429 `too_many_sockets` before the upgrade.
    pub max_sockets_per_user: usize,
    /// Client connections (HTTP and WebSocket) this node holds at once;
    /// past it, 503 `too_many_connections` with `Retry-After`.
    pub max_connections: usize,
    /// Request headers (and so a WebSocket handshake) must arrive within
    /// this; idle keep-alive connections are closed after it too.
    pub handshake_timeout: Duration,
    /// Whether the main listener serves `/metrics` (false when a separate
    /// metrics listener is configured: metrics are not public there).
    pub metrics_on_main_listener: bool,
}

impl GatewayConfig {
    /// How the API listener treats its connections.
    pub fn listener(&self) -> ListenerConfig {
        ListenerConfig {
            handshake_timeout: self.handshake_timeout,
            ..ListenerConfig::default()
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            max_subscriptions: 10_000,
            max_subscriptions_per_user: 20_000,
            max_query_users: 1_000,
            max_control_queue: 256,
            ping_interval: Duration::from_secs(20),
            heartbeat_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            drain_window: Duration::from_secs(10),
            idle_floor_secs: presence_core::MIN_IDLE_TIME_LIMIT_SECS,
            socket_buffer_bytes: 256,
            rate_limits: RateLimits::default(),
            max_sockets_per_user: 16,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            metrics_on_main_listener: true,
        }
    }
}

//! The backend conformance suite (`presence-store/tests/conformance/`)
//! against cluster mode: a real redis-server, an [`Aggregator`] leading
//! every shard, and a [`RedisBackend`] as the gateway's backend, all in
//! this process. It lives here because it needs both crates and
//! `presence-store` cannot depend on `presence-aggregator`.
//!
//! Every case runs twice: with one shard (`<case>::redis_1_shard`, the
//! plain "one leader" cluster) and with four (`<case>::redis_4_shards`:
//! commands routed to several leaders, cluster-wide state owned by shard
//! 0's leader and learnt by the others).
//!
//! A restart stops the backend (devices deregistered) and the aggregator
//! (leases released), then starts both again on the same Redis, which is
//! the durable store (M3).

#[path = "../../presence-embedded/tests/conformance/mod.rs"]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::{BackendHarness, HarnessConfig};
use presence_aggregator::{Aggregator, AggregatorConfig, AggregatorHandle};
use presence_backend::Backend;
use presence_redis::{Backoff, RedisBackend, RedisBackendConfig, RedisClient, RedisConfig};
use presence_testkit::{RedisServer, wait_until};
use tokio_util::sync::CancellationToken;

/// Cluster mode with `SHARDS` shards, all led by one aggregator.
struct RedisHarness<const SHARDS: u16> {
    config: HarnessConfig,
    server: RedisServer,
    generation: u64,
    running: Option<Running>,
}

struct Running {
    backend: Arc<RedisBackend>,
    aggregator: AggregatorHandle,
}

type OneShard = RedisHarness<1>;
type FourShards = RedisHarness<4>;

impl<const SHARDS: u16> RedisHarness<SHARDS> {
    async fn launch(&mut self) -> Running {
        self.generation += 1;
        let client = connect(&self.server).await;
        client.ensure_meta(SHARDS).await.expect("presence:meta");

        let mut aggregator = AggregatorConfig::new(format!("agg-{}", self.generation), SHARDS);
        aggregator.disconnect_grace = self.config.disconnect_grace;
        aggregator.lease_ttl = Duration::from_secs(3);
        // The cap count and sweeps are polled by the cases: keep them quick.
        aggregator.sweep_interval = Duration::from_millis(50);
        let aggregator = Aggregator::start(client.clone(), aggregator, CancellationToken::new());

        // Production intervals: the socket count is written on change.
        let gateway = RedisBackendConfig::new(format!("gw-{}", self.generation), SHARDS);
        let backend = Arc::new(RedisBackend::start(client, gateway).await);
        wait_until_serving(&backend, &aggregator, SHARDS).await;
        Running {
            backend,
            aggregator,
        }
    }
}

impl<const SHARDS: u16> BackendHarness for RedisHarness<SHARDS> {
    async fn start_with(config: HarnessConfig) -> Self {
        let mut harness = RedisHarness {
            config,
            server: RedisServer::start(),
            generation: 0,
            running: None,
        };
        harness.running = Some(harness.launch().await);
        harness
    }

    fn backend(&self) -> Arc<dyn Backend> {
        self.running
            .as_ref()
            .expect("the backend is running")
            .backend
            .clone()
    }

    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.backend.shutdown().await;
            running.aggregator.shutdown().await;
        }
    }

    async fn resume(&mut self) {
        assert!(self.running.is_none(), "resume without stop");
        self.running = Some(self.launch().await);
    }
}

/// The backend is ready and the aggregator leads every shard.
async fn wait_until_serving(backend: &RedisBackend, aggregator: &AggregatorHandle, shards: u16) {
    wait_until(
        format_args!("a ready backend and {shards} shards held"),
        Duration::from_secs(10),
        async || (backend.ready().await, aggregator.stats().held_shards()),
        |(ready, held)| *ready && held.len() == usize::from(shards),
    )
    .await;
}

async fn connect(server: &RedisServer) -> RedisClient {
    let mut config = RedisConfig::new(server.url());
    config.pool_size = 2;
    config.command_timeout = Duration::from_millis(1000);
    config.reconnect = Backoff {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        jitter: Duration::from_millis(20),
    };
    RedisClient::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", server.url()))
}

conformance::conformance_tests!(redis_1_shard => OneShard, redis_4_shards => FourShards);

//! The aggregator role: competes for every shard's lease and, for each
//! shard it wins, runs a leader ([`crate::leader`]) until the lease is
//! lost or the process shuts down.
//!
//! One task per shard loops over "try to acquire, lead while held". The
//! attempts are jittered and slowed down in proportion to the shards this
//! node already holds, so nodes started together spread the shards
//! between them instead of the first one taking everything.
//!
//! ```text
//!  Aggregator::start ──► one task per shard: acquire_lease ──► lead(shard, epoch)
//!                                          ▲   (jittered)        │ takeover, stream, timers,
//!                                          └────── lost ◄────────┘ sweeps, renewal, trim
//! ```

use std::sync::Arc;
use std::time::Duration;

use presence_redis::RedisClient;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::holdoff::Reachability;
use crate::stats::AggregatorStats;

/// How an aggregator runs.
#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    /// This node's id: the `<node>` of the lease values it holds.
    pub node_id: String,
    /// `S`, the number of shards (every node of a cluster agrees).
    pub shards: u16,
    /// Lease time to live (default 3 s); renewed every `lease_ttl / 3`.
    pub lease_ttl: Duration,
    /// How often a leader sweeps lapsed heartbeats and dead nodes, and
    /// (shard 0) sums connection counts; other shards also re-read the
    /// settings and custom statuses then (default 2 s).
    pub sweep_interval: Duration,
    /// H1: the heartbeat deadline a new device gets (default 30 s).
    pub device_timeout: Duration,
    /// D7: how long a device whose socket dropped shows `away`
    /// (default 30 s).
    pub disconnect_grace: Duration,
    /// At most this many stream entries per read, and users per commit
    /// (default 500).
    pub batch_size: usize,
    /// How often a leader trims the entries it applied from its stream
    /// (default 5 s).
    pub trim_interval: Duration,
    /// How often shard 0's leader sums the live nodes' connection counts
    /// for the cap (X1, X2), between sweeps (default 200 ms: two small
    /// reads).
    pub cap_poll_interval: Duration,
    /// H4: how often gateways refresh their heartbeats and node lease
    /// (default 10 s). After Redis was unreachable, or restarted, leaders
    /// sweep lapsed heartbeats and node leases only once this long has
    /// passed since it is back (`holdoff.rs`).
    pub gateway_refresh_interval: Duration,
}

impl AggregatorConfig {
    /// The defaults for node `node_id` in a cluster of `shards` shards.
    pub fn new(node_id: impl Into<String>, shards: u16) -> Self {
        Self {
            node_id: node_id.into(),
            shards,
            lease_ttl: Duration::from_secs(3),
            sweep_interval: Duration::from_secs(2),
            device_timeout: Duration::from_secs(30),
            disconnect_grace: Duration::from_secs(30),
            batch_size: 500,
            trim_interval: Duration::from_secs(5),
            cap_poll_interval: Duration::from_millis(200),
            gateway_refresh_interval: Duration::from_secs(10),
        }
    }

    /// How often a held lease is renewed.
    pub fn renew_interval(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// How much earlier than the lease's expiry in Redis a leader stops
    /// committing (clock rate differences, the renewal's own latency).
    pub fn lease_margin(&self) -> Duration {
        self.lease_ttl / 6
    }
}

/// The running aggregator. Dropping it does not stop it: cancel the
/// shutdown token (or call [`shutdown`](Self::shutdown)).
pub struct AggregatorHandle {
    stats: Arc<AggregatorStats>,
    shutdown: CancellationToken,
    freeze: Arc<Freeze>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the aggregator role on `client`. It runs until `shutdown` is
/// cancelled, then releases every lease it holds.
pub struct Aggregator;

impl Aggregator {
    pub fn start(
        client: RedisClient,
        config: AggregatorConfig,
        shutdown: CancellationToken,
    ) -> AggregatorHandle {
        assert!(config.shards > 0, "an aggregator needs at least one shard");
        let stats = Arc::new(AggregatorStats::new(config.shards));
        let freeze = Arc::new(Freeze::default());
        let shutdown = shutdown.child_token();
        let loaded_generation = loaded_generations(&client, config.shards);
        let ctx = Arc::new(Ctx {
            client,
            reachability: Reachability::new(config.gateway_refresh_interval),
            config,
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            freeze: freeze.clone(),
            loaded_generation,
        });
        let tasks = (0..ctx.config.shards)
            .map(|shard| tokio::spawn(compete(ctx.clone(), shard)))
            .collect();
        AggregatorHandle {
            stats,
            shutdown,
            freeze,
            tasks,
        }
    }
}

impl AggregatorHandle {
    /// Live counters and gauges.
    pub fn stats(&self) -> &Arc<AggregatorStats> {
        &self.stats
    }

    /// Stops every leader, releases the leases held, and waits for it.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Stops at once without releasing anything, as if the process died:
    /// the leases lapse after their TTL. For tests and fatal paths.
    pub fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    /// **Test hook** (simulates `SIGSTOP` or a long pause): for `pause`,
    /// this node's leaders renew nothing, and each stops right before its
    /// next commit *after* having checked its lease validity, the worst
    /// moment; then they go on as if nothing happened.
    pub fn freeze_leaders_for_test(&self, pause: Duration) {
        *self.freeze.until.lock().expect("freeze lock") = Some(Instant::now() + pause);
    }
}

/// What every task of one aggregator shares.
pub(crate) struct Ctx {
    pub client: RedisClient,
    /// H4: when Redis was last back; shared by this node's leaders.
    pub reachability: Reachability,
    pub config: AggregatorConfig,
    pub stats: Arc<AggregatorStats>,
    pub shutdown: CancellationToken,
    pub freeze: Arc<Freeze>,
    /// Per shard: the Redis primary generation this node last loaded the
    /// shard under (at first, the one at start). A takeover under a newer
    /// one republishes every user of the shard (see
    /// `leader::forget_published_views`).
    pub loaded_generation: Vec<std::sync::atomic::AtomicU64>,
}

/// The primary generation at start, for every shard (see
/// [`Ctx::loaded_generation`]).
fn loaded_generations(client: &RedisClient, shards: u16) -> Vec<std::sync::atomic::AtomicU64> {
    let now = *client.primary_generation().borrow();
    (0..shards)
        .map(|_| std::sync::atomic::AtomicU64::new(now))
        .collect()
}

/// The test hook's state: frozen until this instant.
#[derive(Debug, Default)]
pub(crate) struct Freeze {
    until: std::sync::Mutex<Option<Instant>>,
}

impl Freeze {
    pub fn is_frozen(&self) -> bool {
        self.frozen_until().is_some()
    }

    /// Returns once no freeze is in effect.
    pub async fn wait(&self) {
        while let Some(until) = self.frozen_until() {
            tokio::time::sleep_until(until).await;
        }
    }

    fn frozen_until(&self) -> Option<Instant> {
        let until = *self.until.lock().expect("freeze lock");
        until.filter(|u| *u > Instant::now())
    }
}

/// One shard: acquire its lease whenever it is free, lead while held.
async fn compete(ctx: Arc<Ctx>, shard: u16) {
    let mut first = true;
    loop {
        let delay = attempt_delay(&ctx, first);
        first = false;
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let sent = Instant::now();
        let acquired = ctx
            .client
            .acquire_lease(shard, &ctx.config.node_id, ctx.config.lease_ttl)
            .await;
        match &acquired {
            Ok(_) => ctx.reachability.succeeded(),
            Err(_) => ctx.reachability.failed(),
        }
        match acquired {
            Ok(Some(epoch)) => {
                tracing::info!(shard, epoch, "acquired the shard lease");
                // After a failed commit the lease was given back: try again
                // at once (as at start) instead of after a full pause.
                first = crate::leader::lead(&ctx, shard, epoch, sent).await;
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(shard, %error, "could not try the shard lease"),
        }
    }
}

/// The pause before the next attempt on a shard: random, up to a third of
/// the TTL, and longer the more shards this node holds, so that an idle
/// node tends to win the race for a free shard.
fn attempt_delay(ctx: &Ctx, first: bool) -> Duration {
    let base = ctx.config.renew_interval();
    let mut rng = rand::rng();
    if first {
        return base.mul_f64(rng.random_range(0.0..0.1));
    }
    let held = ctx.stats.snapshot().shards_held as f64;
    let load = held / f64::from(ctx.config.shards);
    base.mul_f64(rng.random_range(0.5..1.0) * (1.0 + load))
}

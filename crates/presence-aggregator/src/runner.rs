//! The aggregator role: competes for every shard's lease and, for each
//! shard it wins, runs a leader ([`crate::leader`]) until the lease is
//! lost, handed off, or the process shuts down.
//!
//! H5: shard leadership spreads evenly over the aggregator nodes. Each
//! node keeps a membership (`membership.rs`) and computes from the live
//! node set the same target assignment (`assignment.rs`). One task per
//! shard loops over "try to acquire, lead while held":
//!
//! - a shard assigned to this node is tried every `handoff_poll` while
//!   another node holds it, so it is taken within that time of its old
//!   leader handing it off;
//! - a shard assigned to another live node is only taken if it stays
//!   without a leader for `orphan_after` (its target may be stuck); the
//!   leader then hands it to its target later;
//! - before the membership was read once, every shard is tried at a
//!   jittered pace, as a cluster without the membership would.
//!
//! A leader whose shard is assigned elsewhere hands it off (`leader.rs`).
//! [`AggregatorHandle::shutdown`] leaves the membership first, waits for
//! the other nodes to see it, then stops every leader, which commits its
//! last batch and releases its lease: a planned handoff of every shard.
//!
//! ```text
//!  Aggregator::start ──► membership task (join, read the live set, assign)
//!                   └──► one task per shard: acquire_lease ──► lead(shard, epoch)
//!                           ▲ (assigned here: at once)            │ takeover, stream, timers,
//!                           └──── lost / handed off ◄─────────────┘ sweeps, renewal, trim
//! ```

use std::sync::Arc;
use std::time::Duration;

use presence_redis::RedisClient;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::holdoff::Reachability;
use crate::membership::Membership;
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
    /// H5: how often the aggregator membership is read (default 250 ms).
    pub membership_interval: Duration,
    /// H5: how long the membership must stay unchanged before a leader
    /// hands a shard to the node it is now assigned to (default 1 s).
    pub rebalance_settle: Duration,
    /// H5: a shard this node took is not handed off before it led it this
    /// long (default 2 s): a cool-down against passing shards around.
    pub handoff_cooldown: Duration,
    /// H5: how often a shard assigned to this node but held by another is
    /// tried (default 100 ms): bounds the gap of a planned handoff.
    pub handoff_poll: Duration,
    /// H5: a shard assigned to another live node is taken here only after
    /// it had no leader for this long (default 1 s).
    pub orphan_after: Duration,
    /// H2: shard 0's leader forgets gateway and aggregator nodes whose
    /// lease lapsed this long ago (default 10 min): their registry entries
    /// go, every leader having long removed their devices.
    pub forget_nodes_after: Duration,
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
            membership_interval: Duration::from_millis(250),
            rebalance_settle: Duration::from_secs(1),
            handoff_cooldown: Duration::from_secs(2),
            handoff_poll: Duration::from_millis(100),
            orphan_after: Duration::from_secs(1),
            forget_nodes_after: Duration::from_secs(600),
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

    /// How long a leaving node keeps its shards after leaving the
    /// membership: two membership reads, so every other node has seen it
    /// leave and takes the shards assigned to it at once.
    pub fn leave_wait(&self) -> Duration {
        self.membership_interval * 2
    }
}

/// The running aggregator. Dropping it does not stop it: cancel the
/// shutdown token (or call [`shutdown`](Self::shutdown)).
pub struct AggregatorHandle {
    ctx: Arc<Ctx>,
    stats: Arc<AggregatorStats>,
    shutdown: CancellationToken,
    freeze: Arc<Freeze>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the aggregator role on `client`. It runs until `shutdown` is
/// cancelled (then it releases every lease it holds), or until
/// [`AggregatorHandle::shutdown`] hands its shards off.
pub struct Aggregator;

impl Aggregator {
    pub fn start(
        client: RedisClient,
        config: AggregatorConfig,
        shutdown: CancellationToken,
    ) -> AggregatorHandle {
        assert!(config.shards > 0, "an aggregator needs at least one shard");
        let stats = Arc::new(AggregatorStats::new(config.shards));
        // This node is a gateway node too: its lapse counter exists at 0
        // from the start, even before it leads a shard and sweeps.
        stats.observe_live_nodes([config.node_id.as_str()]);
        let freeze = Arc::new(Freeze::default());
        let shutdown = shutdown.child_token();
        let loaded_generation = loaded_generations(&client, config.shards);
        let membership = Membership::new(config.node_id.clone(), config.shards);
        let ctx = Arc::new(Ctx {
            client,
            reachability: Reachability::new(config.gateway_refresh_interval),
            membership,
            config,
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            freeze: freeze.clone(),
            loaded_generation,
        });
        let mut tasks: Vec<JoinHandle<()>> = (0..ctx.config.shards)
            .map(|shard| tokio::spawn(compete(ctx.clone(), shard)))
            .collect();
        tasks.push(tokio::spawn(crate::membership::run(ctx.clone())));
        AggregatorHandle {
            ctx,
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

    /// H5: hands every shard off and stops. Leaves the membership, waits
    /// until the other nodes have seen it ([`AggregatorConfig::leave_wait`]),
    /// then stops every leader: each commits the batch it applied, releases
    /// its lease, and the node each shard is now assigned to takes it.
    pub async fn shutdown(self) {
        if !self.shutdown.is_cancelled() && self.ctx.membership.leave(&self.ctx.client).await {
            tokio::select! {
                () = self.shutdown.cancelled() => {}
                () = tokio::time::sleep(self.ctx.config.leave_wait()) => {}
            }
        }
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
    /// H5: the aggregator membership and the target spread of the shards.
    pub membership: Membership,
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

/// One shard: acquire its lease when it is assigned here and free (or
/// left without a leader), lead while held.
async fn compete(ctx: Arc<Ctx>, shard: u16) {
    let mut first = true;
    let mut view = ctx.membership.subscribe();
    // Since when the shard, assigned to another node, was seen free.
    let mut free_since: Option<Instant> = None;
    // Nodes started together would all race for every shard: wait for the
    // first membership read (bounded: without Redis there is none).
    let first_view = view.wait_for(|v| v.assignment.is_some());
    let _ = tokio::time::timeout(ctx.config.lease_ttl, first_view).await;
    loop {
        let delay = attempt_delay(&ctx, shard, first);
        first = false;
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
            // The assignment changed: judge the shard again at once.
            changed = view.changed() => if changed.is_err() { return },
        }
        if ctx.membership.is_leaving() {
            continue;
        }
        match Claim::of(&ctx, shard) {
            Claim::Assigned | Claim::Unknown => free_since = None,
            Claim::Elsewhere => {
                // Step in only for a shard its target leaves leaderless.
                match ctx.client.lease_holder(shard).await {
                    Ok(None) => {
                        let since = *free_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < ctx.config.orphan_after {
                            continue;
                        }
                        tracing::info!(
                            shard,
                            "the shard's assigned node does not take it; stepping in"
                        );
                    }
                    Ok(Some(_)) => {
                        free_since = None;
                        continue;
                    }
                    Err(error) => {
                        ctx.reachability.failed();
                        tracing::debug!(shard, %error, "could not read the shard lease");
                        continue;
                    }
                }
            }
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
                free_since = None;
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

/// Whose shard a shard is, by this node's view of the membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Assigned to this node.
    Assigned,
    /// Assigned to another live node.
    Elsewhere,
    /// No view yet (the membership was never read).
    Unknown,
}

impl Claim {
    pub(crate) fn of(ctx: &Ctx, shard: u16) -> Claim {
        match ctx.membership.view().assignment {
            None => Claim::Unknown,
            Some(assignment) => match assignment.target(shard) {
                Some(node) if node == ctx.config.node_id => Claim::Assigned,
                Some(_) => Claim::Elsewhere,
                None => Claim::Unknown,
            },
        }
    }
}

/// The pause before the next look at a shard: short for a shard assigned
/// here (it is taken within `handoff_poll` of being released), random
/// around `orphan_after / 2` for one assigned elsewhere, and, before the
/// membership is known, random up to a third of the TTL (at start, at
/// once).
fn attempt_delay(ctx: &Ctx, shard: u16, first: bool) -> Duration {
    let config = &ctx.config;
    let mut rng = rand::rng();
    match Claim::of(ctx, shard) {
        // Fast while a handoff to this node is due; slower if the holder
        // never hands it over (a node of an older build in a rolling
        // upgrade), so the polls do not go on at full pace.
        Claim::Assigned => {
            let patience = config.rebalance_settle + config.handoff_cooldown * 4;
            if ctx.membership.view().changed_at.elapsed() <= patience {
                config.handoff_poll
            } else {
                (config.orphan_after / 2).mul_f64(rng.random_range(0.8..1.2))
            }
        }
        Claim::Elsewhere => (config.orphan_after / 2).mul_f64(rng.random_range(0.8..1.2)),
        Claim::Unknown if first => config.renew_interval().mul_f64(rng.random_range(0.0..0.1)),
        Claim::Unknown => config.renew_interval().mul_f64(rng.random_range(0.5..1.0)),
    }
}

//! H5: the live aggregator nodes as this node sees them, and the target
//! spread of the shards over them ([`Assignment`]).
//!
//! Every aggregator node keeps a membership deadline in
//! `presence:{0}:aggregators` (refreshed every `renew_interval`, lapsing
//! after `lease_ttl` like a shard lease) and reads the live members every
//! `membership_interval`. From that set each node computes the same
//! [`Assignment`]; the shard tasks (`runner.rs`) acquire the shards
//! assigned to this node as soon as they are free, and the leaders
//! (`leader.rs`) hand off the shards assigned elsewhere once the set has
//! been stable for `rebalance_settle` (so nodes that briefly disagree do
//! not pass a shard back and forth).
//!
//! A node always counts itself in (a failed or late write of its own
//! membership must not make it give every shard away), except once it
//! [leaves](Membership::leave): then it removes its member at once, so the
//! others assign its shards among themselves at their next read, and its
//! leaders release after `leave_wait`.
//!
//! ```text
//!  membership task ──ZADD self──► presence:{0}:aggregators ◄──ZRANGEBYSCORE── every node
//!        │ (every membership_interval)
//!        └──► watch<View> ──► shard tasks (acquire targets) and leaders (hand off the rest)
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_redis::RedisClient;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::assignment::Assignment;
use crate::runner::Ctx;

/// What this node knows of the aggregator membership.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// The target spread; `None` until the membership was read once.
    pub assignment: Option<Arc<Assignment>>,
    /// When the node set last changed (or was first read).
    pub changed_at: Instant,
}

/// This node's membership: the view its shard tasks and leaders follow.
pub(crate) struct Membership {
    node: String,
    shards: u16,
    view: watch::Sender<View>,
    leaving: AtomicBool,
    /// When the set was last read successfully.
    read_at: std::sync::Mutex<Option<Instant>>,
}

impl Membership {
    pub(crate) fn new(node: String, shards: u16) -> Self {
        let (view, _) = watch::channel(View {
            assignment: None,
            changed_at: Instant::now(),
        });
        Self {
            node,
            shards,
            view,
            leaving: AtomicBool::new(false),
            read_at: std::sync::Mutex::new(None),
        }
    }

    /// The current view.
    pub(crate) fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// A receiver told of every change of the node set.
    pub(crate) fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Whether this node is leaving (its shards go to the others).
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// Whether the set was read within `within`: a view older than that
    /// may miss a node that joined or left, so no handoff is based on it.
    pub(crate) fn is_fresh(&self, within: Duration) -> bool {
        let read_at = *self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        read_at.is_some_and(|at| at.elapsed() <= within)
    }

    /// Leaves the membership: removes this node's member from Redis (best
    /// effort: otherwise it lapses within a lease TTL) and from its own
    /// view, so every shard is assigned to the other nodes. Returns
    /// whether there are any (a lone node has nobody to hand off to).
    pub(crate) async fn leave(&self, client: &RedisClient) -> bool {
        self.leaving.store(true, Ordering::Release);
        if let Err(error) = client.leave_aggregators(&self.node).await {
            tracing::warn!(%error, "could not leave the aggregator membership");
        }
        let nodes: Vec<String> = self
            .view()
            .assignment
            .map(|a| a.nodes().to_vec())
            .unwrap_or_default();
        let others = nodes.iter().any(|n| *n != self.node);
        self.publish(nodes.into_iter().collect());
        others
    }

    /// Publishes `nodes` (with this node added unless it leaves) if the
    /// set differs from the current one.
    fn publish(&self, mut nodes: BTreeSet<String>) {
        if self.is_leaving() {
            nodes.remove(&self.node);
        } else {
            nodes.insert(self.node.clone());
        }
        let shards = self.shards;
        self.view.send_if_modified(|view| {
            let same = view
                .assignment
                .as_ref()
                .is_some_and(|a| a.nodes().iter().eq(nodes.iter()));
            if same {
                return false;
            }
            tracing::info!(nodes = ?nodes, "aggregator membership changed");
            view.assignment = Some(Arc::new(Assignment::new(shards, nodes)));
            view.changed_at = Instant::now();
            true
        });
    }
}

/// Keeps this node's member fresh (every `renew_interval`, live for a
/// `lease_ttl`) and the view current (every `membership_interval`) until
/// the aggregator stops.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let (client, config, membership) = (&ctx.client, &ctx.config, &ctx.membership);
    let mut last_refresh: Option<Instant> = None;
    let mut ticks = tokio::time::interval(config.membership_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Test hook: a frozen node (a stopped process) refreshes nothing.
        if ctx.freeze.is_frozen() {
            continue;
        }
        let now_ms = wall_ms();
        let due = last_refresh.is_none_or(|at| at.elapsed() >= config.renew_interval());
        if due && !membership.is_leaving() {
            let ttl = u64::try_from(config.lease_ttl.as_millis()).unwrap_or(u64::MAX);
            match client
                .join_aggregators(&membership.node, now_ms + ttl)
                .await
            {
                Ok(()) => last_refresh = Some(Instant::now()),
                Err(error) => {
                    ctx.reachability.failed();
                    tracing::debug!(%error, "aggregator membership refresh failed");
                    continue;
                }
            }
        }
        match client.live_aggregators(now_ms).await {
            Ok(nodes) => {
                *membership.read_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now());
                membership.publish(nodes.into_iter().collect());
            }
            Err(error) => {
                ctx.reachability.failed();
                tracing::debug!(%error, "aggregator membership read failed");
            }
        }
    }
}

/// The wall clock in ms (membership deadlines, like node leases).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

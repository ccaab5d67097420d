//! One shard's leader, for as long as this node holds the shard's lease:
//! the steps `lib.rs` documents, against Redis.
//!
//! 1. Takeover: `load_shard` + `read_cluster_state` → [`ShardState::load`]
//!    → commit, then a sweep.
//! 2. Loop: sweeps every `sweep_interval` (lapsed heartbeats, dead nodes,
//!    on shard 0 the cap; elsewhere a re-read of settings and custom
//!    statuses), timers when due, a trim every `trim_interval`, and
//!    otherwise an `XREAD` blocking until the next of those (at most
//!    `ttl / 3`) → (shards other than 0: re-read settings and custom
//!    statuses, so a command sent after shard 0 answered an admin change
//!    is applied under it) → [`ShardState::apply_raw_batch`] → commit.
//!
//! A renewal task runs beside the loop and moves `valid_until` forward
//! (monotonic clock: the instant the renewal was *sent* + ttl − margin).
//! The loop checks it before every commit: past it, the leader drops the
//! shard at once, even if Redis never said the lease is gone.
//!
//! **Planned handoff (H5).** When the membership (`membership.rs`) assigns
//! the shard to another node and has been stable for `rebalance_settle`
//! (and this node led the shard for at least `handoff_cooldown`), the
//! leader stops between two batches: the batch it read is applied,
//! committed and answered, then it releases the lease and the assigned
//! node, polling for it, takes over from the stored cursor. Nothing is
//! lost (entries after the cursor stay in the stream) and nothing is
//! applied twice (the cursor moves in the same fenced script as the
//! changes; a retried request is answered from its stored outcome,
//! `retries.rs`). A clean shutdown ends every leader the same way.
//!
//! **Liveness owner.** Shard 0's leader also owns what is counted once for
//! the cluster: the distinct shards led (read from the leases), each node
//! lease lapse (per node id, recorded in `presence:{0}:lapses` so a new
//! leader does not count it again), and forgetting nodes lapsed for longer
//! than `forget_nodes_after` (`forget_node`).
//!
//! **Architecture Invariant:** a commit that is fenced or whose outcome is
//! unknown ends the leadership and drops the [`ShardState`]; the next
//! leader (this node or another) takes over from what Redis holds. A later
//! batch is never committed on top of a lost one.
//!
//! **Redis failover (W4, R1).** A new primary may lack the last commits of
//! the old one. The leader's state is tied to the primary generation it
//! was loaded under: commits and trims go through
//! `RedisClient::on_primary` with it, and when the generation moves the
//! leader drops its state and takes the shard over again from the new
//! primary, keeping its lease if the new primary still holds it. The
//! stream resumes at the *stored* cursor, so commands whose commit was
//! lost are applied again (appends waited for a replica, so every
//! acknowledged one is there), and every user of the shard is republished
//! with a version above any the old primary may have published
//! ([`forget_published_views`]), so watchers do not keep a lost state.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_core::Timestamp;
use presence_protocol::cluster::StreamEntry as Entry;
use presence_redis::{CommitOutcome, RedisError, StreamId, StreamReader, lease_value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::redis_codec::{self, commit_batches};
use crate::runner::Ctx;
use crate::stats::AggregatorStats;
use crate::{ShardChanges, ShardConfig, ShardLoad, ShardState};

/// Why a leadership ended.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// The node shuts down: release the lease.
    Shutdown,
    /// The lease is lost, lapsed or fenced, or a commit's outcome is
    /// unknown: drop the shard without touching the lease.
    Lost,
    /// The takeover could not complete (Redis unreachable, a stored
    /// document that does not parse): give the lease back so another node
    /// may try.
    Failed,
    /// The Redis primary changed: drop the shard's state and take it over
    /// again from the new primary, lease kept.
    PrimaryChanged,
    /// A commit's outcome is unknown (a connection dropped or a Redis
    /// Cluster slot moved under it): drop the state and give the lease
    /// back at once, so the shard is taken over again without waiting for
    /// the lease to lapse. Safe: the unknown commit is fenced by a lease
    /// value nobody holds any more.
    CommitFailed,
    /// H5: the shard is assigned to another node: its last batch is
    /// committed; release the lease so that node takes over at once.
    Handoff,
}

/// Leads `shard` with lease `epoch`, acquired by a request sent at
/// `acquired_at`, until the lease is lost or the node shuts down. Returns
/// whether the shard should be tried again at once (a commit failed and
/// the lease was given back).
pub(crate) async fn lead(ctx: &Arc<Ctx>, shard: u16, epoch: u64, acquired_at: Instant) -> bool {
    let config = &ctx.config;
    let valid_until = acquired_at + config.lease_ttl - config.lease_margin();
    ctx.stats.set_held(shard, Some((epoch, valid_until)));
    let (valid_tx, valid_rx) = watch::channel(valid_until);
    let lost = CancellationToken::new();
    let renewal = AbortOnDrop(tokio::spawn(renew(
        ctx.clone(),
        shard,
        epoch,
        valid_tx,
        lost.clone(),
    )));
    let mut leader = Leader {
        ctx,
        shard,
        epoch,
        lease: lease_value(&config.node_id, epoch),
        valid_until: valid_rx,
        lost,
        generation: *ctx.client.primary_generation().borrow(),
        held_since: Instant::now(),
    };
    let exit = leader.run_across_failovers().await;
    drop(renewal);
    match exit {
        Exit::Shutdown | Exit::Failed | Exit::CommitFailed | Exit::Handoff => {
            // The shard stops counting as held before the release: another
            // node may hold it a moment later.
            ctx.stats.set_held(shard, None);
            match ctx
                .client
                .release_lease(shard, &config.node_id, epoch)
                .await
            {
                Ok(true) => {
                    tracing::info!(shard, epoch, ?exit, "released the shard lease");
                    if matches!(exit, Exit::Handoff | Exit::Shutdown) {
                        AggregatorStats::add(&ctx.stats.handoffs, 1);
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(shard, %error, "could not release the shard lease"),
            }
        }
        Exit::Lost | Exit::PrimaryChanged => {
            tracing::warn!(shard, epoch, "lost the shard; dropped its state")
        }
    }
    ctx.stats.set_held(shard, None);
    exit == Exit::CommitFailed
}

/// Uninhabited: the leader loop only ever returns an [`Exit`].
enum Never {}

struct Leader<'a> {
    ctx: &'a Ctx,
    shard: u16,
    epoch: u64,
    lease: String,
    valid_until: watch::Receiver<Instant>,
    lost: CancellationToken,
    /// The Redis primary generation the shard's state was loaded under.
    generation: u64,
    /// When this leadership began (H5: the handoff cool-down).
    held_since: Instant,
}

impl Leader<'_> {
    /// Runs the leader; after a Redis primary change, drops the state and
    /// runs it again on the new primary (same lease) until another exit.
    async fn run_across_failovers(&mut self) -> Exit {
        let mut primary = self.ctx.client.primary_generation();
        loop {
            let exit = match self.run(&mut primary).await {
                Ok(never) => match never {},
                Err(exit) => exit,
            };
            if exit != Exit::PrimaryChanged {
                return exit;
            }
            // The change may still be under way (the pool is moving): wait
            // until the new generation is published.
            while *primary.borrow_and_update() == self.generation {
                tokio::select! {
                    () = self.ctx.shutdown.cancelled() => return Exit::Shutdown,
                    () = self.lost.cancelled() => return Exit::Lost,
                    changed = primary.changed() => if changed.is_err() {
                        return Exit::Lost;
                    },
                }
            }
            tracing::warn!(
                shard = self.shard,
                epoch = self.epoch,
                "the Redis primary changed; taking the shard over again from it"
            );
        }
    }

    async fn run(&mut self, primary: &mut watch::Receiver<u64>) -> Result<Never, Exit> {
        let config = &self.ctx.config;
        self.generation = *primary.borrow_and_update();
        let reader = self.ctx.client.stream_reader().await.map_err(|error| {
            tracing::warn!(shard = self.shard, %error, "no stream connection");
            Exit::Failed
        })?;
        let (mut state, mut cursor) = self.takeover().await?;
        // A first append that Redis ran late may follow a retry an earlier
        // leader applied; look them up until such outcomes expire.
        let look_up_first_appends_until = Instant::now() + crate::retries::FIRST_APPEND_LOOKUP;
        let mut next_sweep = Instant::now();
        let mut next_trim = Instant::now() + config.trim_interval;
        // Only shard 0 owns the cap; other shards never poll the counts.
        let far = Instant::now() + Duration::from_secs(3600 * 24 * 365);
        let mut next_cap = if self.shard == 0 { Instant::now() } else { far };
        let mut membership = self.ctx.membership.subscribe();
        loop {
            if self.ctx.shutdown.is_cancelled() {
                return Err(Exit::Shutdown);
            }
            self.check_valid()?;
            if self.handoff_due_now() {
                return Err(Exit::Handoff);
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(&mut state).await?;
                next_sweep = self.next_sweep_at();
            }
            if now >= next_trim {
                self.trim(cursor).await;
                next_trim = Instant::now() + config.trim_interval;
            }
            if now >= next_cap {
                self.observe_cap(&mut state).await?;
                next_cap = Instant::now() + config.cap_poll_interval;
            }
            let wall = wall_now();
            if state.next_deadline().is_some_and(|d| d <= wall) {
                let changes = state.advance(wall);
                self.commit(changes).await?;
            }
            let block = self.block_for(&state, next_sweep.min(next_trim).min(next_cap));
            let read = tokio::select! {
                () = self.ctx.shutdown.cancelled() => return Err(Exit::Shutdown),
                () = self.lost.cancelled() => return Err(Exit::Lost),
                _ = primary.changed() => return Err(Exit::PrimaryChanged),
                () = self.handoff_due(&mut membership) => return Err(Exit::Handoff),
                read = self.read(&reader, cursor, block) => read,
            };
            let Some(entries) = read else { continue };
            let Some(last) = entries.last().map(|e| e.id) else {
                continue;
            };
            let count = entries.len() as u64;
            let decoded: Vec<_> = entries
                .iter()
                .map(|e| {
                    let fields = e.fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
                    (e.id, Entry::from_fields(fields))
                })
                .collect();
            // A repeated request is answered from its first outcome.
            let first_appends = Instant::now() < look_up_first_appends_until;
            if !self
                .remember_earlier_outcomes(&mut state, &decoded, first_appends)
                .await
            {
                continue;
            }
            // Read-your-writes across shards: a gateway that saw shard 0
            // commit a settings or custom status change may append a
            // command here at once; re-read them *after* the entries, so
            // the command is applied under them.
            let Some(mut changes) = self.follow_cluster(&mut state).await else {
                continue;
            };
            changes.merge(state.apply_raw_batch(decoded, wall_now()));
            self.commit(changes).await?;
            cursor = last;
            AggregatorStats::add(&self.ctx.stats.events_applied, count);
        }
    }

    /// Step 1: load the shard and the cluster state, rebuild, commit what
    /// differs, and sweep once.
    async fn takeover(&mut self) -> Result<(ShardState, StreamId), Exit> {
        let (shard, client, config) = (self.shard, &self.ctx.client, &self.ctx.config);
        let unavailable = |error: presence_redis::RedisError| {
            tracing::warn!(shard, %error, "takeover read failed");
            Exit::Failed
        };
        let snapshot = client.load_shard(shard).await.map_err(unavailable)?;
        if !snapshot.users.is_empty() {
            // Redis holds devices from before: if it restarted, their
            // deadlines lapsed while it was down (H4).
            self.observe_redis_uptime().await;
        }
        let cluster = client.read_cluster_state().await.map_err(unavailable)?;
        let cursor = snapshot.cursor.unwrap_or(StreamId::ZERO);
        let users = snapshot.users.len();
        let mut load = redis_codec::shard_load(shard, snapshot, cluster).map_err(|e| {
            tracing::error!(shard, error = %e.0, "cannot take the shard over");
            Exit::Failed
        })?;
        let loaded = &self.ctx.loaded_generation[usize::from(shard)];
        let after_failover = loaded.load(Ordering::Acquire) != self.generation;
        if after_failover {
            forget_published_views(&mut load);
        }
        let shard_config = ShardConfig {
            shard,
            shards: config.shards,
            disconnect_grace: config.disconnect_grace,
            device_timeout: config.device_timeout,
        };
        let (state, changes) = ShardState::load(shard_config, load, wall_now());
        self.commit(changes).await?;
        loaded.store(self.generation, Ordering::Release);
        AggregatorStats::add(&self.ctx.stats.takeovers, 1);
        tracing::info!(
            shard,
            epoch = self.epoch,
            users,
            %cursor,
            generation = self.generation,
            republished = after_failover,
            "took the shard over"
        );
        Ok((state, cursor))
    }

    /// Step 3: A5/H1 lapsed heartbeats, H2 dead nodes, X1 (shard 0) the
    /// cluster-wide count; other shards re-read settings and custom
    /// statuses (pub/sub announcements may be lost). A failed read skips
    /// the sweep: an unknown set of live nodes must never look empty.
    async fn sweep(&self, state: &mut ShardState) -> Result<(), Exit> {
        let (shard, client) = (self.shard, &self.ctx.client);
        let now = wall_now();
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(0);
        // H4: after Redis was unreachable, deadlines lapsed for want of
        // Redis, not of gateways: expire nothing until they had a refresh
        // interval to move them on.
        let holding_off = self.ctx.reachability.hold_off_until().is_some();
        let read = async {
            let lapsed = if holding_off {
                Vec::new()
            } else {
                client.lapsed_heartbeats(shard, now_ms, 10_000).await?
            };
            let nodes = client.live_nodes(now_ms).await?;
            let cluster = if shard == 0 {
                None
            } else {
                Some(client.read_cluster_state().await?)
            };
            Ok::<_, presence_redis::RedisError>((lapsed, nodes, cluster))
        };
        let (lapsed, nodes, cluster) = match read.await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(shard, %error, "sweep skipped: Redis read failed");
                self.ctx.reachability.failed();
                return Ok(());
            }
        };
        let devices_before = state.device_count();
        let pairs: Vec<(&str, &str)> = lapsed.iter().filter_map(|e| e.user_and_device()).collect();
        let mut changes = state.expire_heartbeats(&pairs, now);
        let live: BTreeSet<String> = nodes.iter().map(|n| n.node.clone()).collect();
        self.ctx
            .stats
            .observe_live_nodes(live.iter().map(String::as_str));
        if !holding_off {
            changes.merge(state.expire_nodes_not_in(&live, now));
        }
        if shard == 0 {
            changes.merge(observe_counts(state, &nodes, now));
        }
        if let Some(cluster) = cluster {
            changes.merge(apply_cluster_state(state, &cluster, now));
        }
        let expired = devices_before.saturating_sub(state.device_count()) as u64;
        AggregatorStats::add(&self.ctx.stats.devices_expired, expired);
        self.commit(changes).await?;
        if shard == 0 {
            self.own_liveness(now_ms, holding_off).await;
        }
        Ok(())
    }

    /// Shard 0's leader, after its sweep: the distinct shards led, read
    /// from the leases; each node lease lapse counted once (per node id,
    /// recorded in Redis before it is counted, so no later leader counts
    /// it again); nodes lapsed for longer than `forget_nodes_after`
    /// forgotten. Lapses and forgetting wait for the H4 hold-off. A failed
    /// read skips the step until the next sweep.
    async fn own_liveness(&self, now_ms: u64, holding_off: bool) {
        let (client, config, stats) = (&self.ctx.client, &self.ctx.config, &self.ctx.stats);
        match client.lease_holders(config.shards).await {
            Ok(holders) => stats.set_shards_led(holders.iter().flatten().count() as u64),
            Err(error) => tracing::debug!(%error, "could not read the shard leases"),
        }
        if holding_off {
            return;
        }
        let read = async {
            let lapsed = client.lapsed_nodes(now_ms).await?;
            let counted = client.counted_lapses().await?;
            Ok::<_, RedisError>((lapsed, counted))
        };
        let (lapsed, counted) = match read.await {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, "could not read the lapsed nodes");
                return;
            }
        };
        let forget_before = now_ms.saturating_sub(
            u64::try_from(config.forget_nodes_after.as_millis()).unwrap_or(u64::MAX),
        );
        for node in lapsed {
            if node.deadline_ms < forget_before {
                match client.forget_node(&node.node).await {
                    Ok(()) => {
                        tracing::info!(node = %node.node, deadline_ms = node.deadline_ms, "forgot a long-lapsed node");
                        stats.forget_node(&node.node);
                        AggregatorStats::add(&stats.nodes_forgotten, 1);
                    }
                    Err(error) => tracing::debug!(%error, "could not forget a node"),
                }
                continue;
            }
            if counted.get(&node.node) == Some(&node.deadline_ms) {
                continue;
            }
            match client.record_lapse(&node.node, node.deadline_ms).await {
                Ok(()) => {
                    tracing::warn!(node = %node.node, deadline_ms = node.deadline_ms, "a node lease lapsed");
                    stats.count_lapse(&node.node);
                }
                Err(error) => tracing::debug!(%error, "could not record a lapse"),
            }
        }
        if let Err(error) = client.forget_lapsed_aggregators(forget_before).await {
            tracing::debug!(%error, "could not forget lapsed aggregator members");
        }
    }

    /// H5: when this leader should hand the shard off, if it should: the
    /// shard is assigned to another node, the membership has been stable
    /// for `rebalance_settle`, the cool-down since this leadership began
    /// has passed, and no H4 hold-off is running. `None` while leaving (the
    /// shutdown ends every leader).
    fn handoff_at(&self) -> Option<Instant> {
        let (membership, config) = (&self.ctx.membership, &self.ctx.config);
        if membership.is_leaving() {
            return None;
        }
        let view = membership.view();
        let target = view.assignment.as_ref()?.target(self.shard)?;
        if target == config.node_id {
            return None;
        }
        let due = (view.changed_at + config.rebalance_settle)
            .max(self.held_since + config.handoff_cooldown);
        // After a Redis outage members rejoin one by one: no handoff until
        // the H4 hold-off is over and the set had time to settle.
        Some(match self.ctx.reachability.hold_off_until() {
            Some(until) => due.max(until),
            None => due,
        })
    }

    /// Whether the handoff is due now, by a view read recently enough to
    /// trust (a node whose membership reads fail keeps its shards).
    fn handoff_due_now(&self) -> bool {
        let fresh = self
            .ctx
            .membership
            .is_fresh(self.ctx.config.membership_interval * 4);
        fresh && self.handoff_at().is_some_and(|at| at <= Instant::now())
    }

    /// Returns when the handoff is due (see [`Self::handoff_due_now`]);
    /// pending as long as the shard stays assigned here.
    async fn handoff_due(&self, membership: &mut watch::Receiver<crate::membership::View>) {
        loop {
            if self.handoff_due_now() {
                return;
            }
            let wake = self
                .handoff_at()
                .map(|at| at.max(Instant::now() + self.ctx.config.membership_interval / 5));
            tokio::select! {
                () = sleep_until_or_forever(wake) => {}
                changed = membership.changed() => if changed.is_err() {
                    std::future::pending::<()>().await;
                },
            }
        }
    }

    /// Shard 0, between sweeps: the cluster-wide connection count (X1)
    /// and the cap transitions it causes (X2). A failed read waits for the
    /// next poll.
    async fn observe_cap(&self, state: &mut ShardState) -> Result<(), Exit> {
        let now = wall_now();
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(0);
        let nodes = match self.ctx.client.live_nodes(now_ms).await {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::debug!(%error, "cap poll skipped: Redis read failed");
                return Ok(());
            }
        };
        let changes = observe_counts(state, &nodes, now);
        self.commit(changes).await
    }

    /// Shards other than 0: re-reads the settings and custom statuses that
    /// shard 0 owns and applies any difference (S1, C3). `None` if Redis
    /// could not be read; shard 0, the authority, returns no changes.
    async fn follow_cluster(&self, state: &mut ShardState) -> Option<ShardChanges> {
        if self.shard == 0 {
            return Some(ShardChanges::default());
        }
        match self.ctx.client.read_cluster_state().await {
            Ok(cluster) => Some(apply_cluster_state(state, &cluster, wall_now())),
            Err(error) => {
                tracing::warn!(shard = self.shard, %error, "cannot read the cluster state");
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    }

    /// Deletes the entries before the cursor (applied and committed) and
    /// records how many remain after it.
    async fn trim(&self, cursor: StreamId) {
        let (shard, client) = (self.shard, &self.ctx.client);
        if cursor == StreamId::ZERO {
            return;
        }
        // Guarded: a cursor from before a failover may be ahead of what the
        // new primary stored, and the entries after its cursor must stay.
        let trimmed = client
            .on_primary(self.generation, client.trim(shard, cursor))
            .await;
        if let Err(error) = trimmed {
            tracing::debug!(shard, %error, "stream trim failed");
            return;
        }
        if let Ok(len) = client.stream_len(shard).await {
            // The cursor's own entry stays in the stream.
            self.ctx.stats.stream_lag[usize::from(shard)]
                .store(len.saturating_sub(1), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Step 2's read: `None` on a transport error (after a short pause, so
    /// a down Redis does not spin the loop).
    async fn read(
        &self,
        reader: &StreamReader,
        cursor: StreamId,
        block: Duration,
    ) -> Option<Vec<presence_redis::StreamEntry>> {
        let count = self.ctx.config.batch_size.max(1) as u64;
        match reader.read(self.shard, cursor, count, Some(block)).await {
            Ok(entries) => Some(entries),
            Err(error) => {
                tracing::warn!(shard = self.shard, %error, "stream read failed");
                self.ctx.reachability.failed();
                self.ctx.client.check_primary_now();
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    }

    /// How long the stream read may block: until the next timer, sweep or
    /// trim, and never longer than a third of the lease TTL.
    fn block_for(&self, state: &ShardState, next_chore: Instant) -> Duration {
        let mut block = self.ctx.config.renew_interval();
        block = block.min(next_chore.saturating_duration_since(Instant::now()));
        if let Some(deadline) = state.next_deadline() {
            block = block.min(deadline.saturating_since(wall_now()));
        }
        // `BLOCK 0` would wait forever.
        block.max(Duration::from_millis(1))
    }

    /// When the next sweep is due: a sweep interval from now, or the end
    /// of the H4 hold-off if that comes first (so a node that died during
    /// a Redis outage is swept the moment the hold-off ends).
    fn next_sweep_at(&self) -> Instant {
        let next = Instant::now() + self.ctx.config.sweep_interval;
        match self.ctx.reachability.hold_off_until() {
            Some(until) => next.min(until.max(Instant::now())),
            None => next,
        }
    }

    /// H4 at takeover of a shard with users: a Redis that restarted within
    /// the hold-off (with its data) holds the sweeps off as an outage this
    /// node saw would. An empty Redis holds no deadline to lapse. A failed
    /// read changes nothing.
    async fn observe_redis_uptime(&self) {
        match self.ctx.client.server_uptime(self.shard).await {
            Ok(uptime) => self.ctx.reachability.observe_uptime(uptime),
            Err(error) => tracing::debug!(shard = self.shard, %error, "redis uptime unknown"),
        }
    }

    /// Hands the stored outcomes of the retries in `entries` (and with
    /// `first_appends` of every entry) to `state` (`retries.rs`); `false`
    /// if they could not be read: the batch is read again, rather than
    /// applied without knowing whether a request was applied before.
    async fn remember_earlier_outcomes(
        &self,
        state: &mut ShardState,
        entries: &[(
            presence_protocol::cluster::StreamId,
            Result<Entry, presence_protocol::cluster::EntryError>,
        )],
        first_appends: bool,
    ) -> bool {
        match crate::retries::stored_outcomes(&self.ctx.client, self.shard, entries, first_appends)
            .await
        {
            Ok(outcomes) => {
                state.remember_outcomes(outcomes);
                true
            }
            Err(error) => {
                tracing::warn!(shard = self.shard, %error, "cannot read stored outcomes; reading the batch again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                false
            }
        }
    }

    /// Whether the lease is still ours by the monotonic clock.
    fn check_valid(&self) -> Result<(), Exit> {
        if self.lost.is_cancelled() || Instant::now() >= *self.valid_until.borrow() {
            tracing::warn!(
                shard = self.shard,
                "lease validity passed; dropping the shard"
            );
            return Err(Exit::Lost);
        }
        Ok(())
    }

    /// Commits `changes` (nothing if empty), fenced by our lease value, in
    /// batches of at most `batch_size` users.
    async fn commit(&self, changes: ShardChanges) -> Result<(), Exit> {
        if changes.is_empty() {
            return Ok(());
        }
        let stats = &self.ctx.stats;
        let committed_at_us = wall_now_us();
        let batches = commit_batches(
            self.shard,
            self.epoch,
            committed_at_us,
            &changes,
            self.ctx.config.batch_size,
        );
        for batch in &batches {
            self.check_valid()?;
            // Test hook: a pause here, after the validity check, is the
            // worst case a real pause (GC, SIGSTOP, swap) can produce.
            self.ctx.freeze.wait().await;
            let client = &self.ctx.client;
            let committed = client
                .on_primary(
                    self.generation,
                    client.commit(self.shard, &self.lease, batch),
                )
                .await;
            match committed {
                Ok(CommitOutcome::Committed) => AggregatorStats::add(&stats.commits, 1),
                Ok(CommitOutcome::Fenced) => {
                    AggregatorStats::add(&stats.fenced_rejected, 1);
                    tracing::warn!(shard = self.shard, epoch = self.epoch, "commit fenced");
                    return Err(Exit::Lost);
                }
                Err(RedisError::PrimaryChanged) => {
                    // Not sent: the state may hold what the new primary
                    // lost; load it again from there.
                    return Err(Exit::PrimaryChanged);
                }
                Err(error) => {
                    AggregatorStats::add(&stats.commit_errors, 1);
                    tracing::warn!(shard = self.shard, %error, "commit failed; outcome unknown");
                    // A failover may explain it: let the node follow it
                    // before the shard is taken over again (and answers).
                    client.settle_primary(Duration::from_secs(2)).await;
                    return Err(Exit::CommitFailed);
                }
            }
        }
        Ok(())
    }
}

/// After a Redis failover: makes [`ShardState::load`] republish every user
/// of the shard, with a version above any published before. The old
/// primary may have published versions it never replicated; a watcher
/// that saw one would drop the stored (older) view as stale (W3) and keep
/// showing a lost state. Forgetting the stored views makes every view
/// "changed"; the version floor is kept in the document, so each user gets
/// `max(largest stored + 1, now in µs)`, above anything published before
/// now.
fn forget_published_views(load: &mut ShardLoad) {
    for user in &mut load.users {
        let floor = [
            user.record.as_ref().map(|r| r.state.version),
            user.view.as_ref().map(|v| v.version),
            user.self_view.as_ref().map(|s| s.version),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
        let record = user.record.get_or_insert_with(Default::default);
        record.state.version = floor;
        user.view = None;
        user.self_view = None;
    }
}

/// Applies shard 0's settings and custom statuses as stored in `cluster`
/// (no changes when they equal what the shard holds).
fn apply_cluster_state(
    state: &mut ShardState,
    cluster: &presence_redis::ClusterSnapshot,
    now: Timestamp,
) -> ShardChanges {
    let (settings, statuses) = redis_codec::cluster_state(cluster);
    let mut changes = ShardChanges::default();
    if let Some(settings) = settings.filter(|s| s != state.settings()) {
        changes.merge(state.reevaluate(settings, now));
    }
    changes.merge(state.sync_custom_statuses(statuses, now));
    changes
}

/// Renews the lease every `ttl / 3` while not frozen, moving
/// `valid_until` on; cancels `lost` when Redis says the lease is gone.
async fn renew(
    ctx: Arc<Ctx>,
    shard: u16,
    epoch: u64,
    valid_until: watch::Sender<Instant>,
    lost: CancellationToken,
) {
    let config = &ctx.config;
    let every = config.renew_interval();
    let mut next = Instant::now() + every;
    loop {
        tokio::time::sleep_until(next).await;
        next = (next + every).max(Instant::now());
        if ctx.freeze.is_frozen() {
            continue;
        }
        let sent = Instant::now();
        match ctx
            .client
            .renew_lease(shard, &config.node_id, epoch, config.lease_ttl)
            .await
        {
            Ok(true) => {
                ctx.reachability.succeeded();
                let until = sent + config.lease_ttl - config.lease_margin();
                valid_until.send_replace(until);
                ctx.stats.set_valid_until(shard, until);
            }
            Ok(false) => {
                tracing::warn!(shard, epoch, "the lease is no longer ours");
                lost.cancel();
                return;
            }
            Err(error) => {
                ctx.reachability.failed();
                tracing::warn!(shard, %error, "lease renewal failed");
            }
        }
    }
}

/// Sleeps until `at`, or forever with no instant.
async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Aborts the task when dropped (also when the leader's own task is
/// aborted: a dead node renews nothing).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The wall clock, for the rules (heartbeat deadlines are wall-clock ms).
fn wall_now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The wall clock in µs since the Unix epoch: the commit time stamped on
/// every published update (W1's delivery latency is measured from it).
fn wall_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// X1, X2 (shard 0): the cap state machine over the live nodes' counts.
fn observe_counts(
    state: &mut ShardState,
    nodes: &[presence_redis::NodeInfo],
    now: Timestamp,
) -> ShardChanges {
    let live: BTreeSet<String> = nodes.iter().map(|n| n.node.clone()).collect();
    let counts: Vec<(String, u64)> = nodes
        .iter()
        .map(|n| (n.node.clone(), n.connections))
        .collect();
    state.observe_connections(&counts, &live, now)
}

//! Liveness (H1–H4, X1): the task that renews this node's lease and
//! socket count, refreshes the heartbeat deadlines of its live devices
//! (one `ZADD` per 500), stores the socket count within ~100 ms of a
//! change, registers every live device again when the node lease had
//! lapsed or pub/sub reconnected, and announces a (re)start to every
//! shard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use presence_protocol::cluster::{ClusterCommand, ShardCommand};

use crate::error::RedisError;
use crate::heartbeats::HEARTBEAT_CHUNK;
use crate::keys::{heartbeat_member, shard_of};
use presence_backend::{ConnId, Session};

use super::methods::connect_command;
use super::{Inner, LiveSocket, duration_ms, now_ms};

/// How long socket count changes are gathered before one write.
const COUNT_COALESCE: Duration = Duration::from_millis(100);
/// Pause before retrying a registration of every live device that failed.
const REGISTRATION_RETRY: Duration = Duration::from_millis(500);
/// Pause between liveness refreshes while they fail (Redis unreachable):
/// the first one that succeeds is the refresh "as soon as Redis is back"
/// that H4 counts on.
const LIVENESS_RETRY: Duration = Duration::from_millis(250);

// ---- Liveness: node lease, socket count, heartbeats, re-registration ----

pub(super) async fn run_liveness(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(inner.config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The node lease is one command per node: renewed three times per ttl,
    // so one lost renewal never lets it lapse (H2).
    let mut lease_ticker = tokio::time::interval(inner.config.node_lease_ttl / 3);
    lease_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A registration that failed half way (Redis went again) is retried
    // until it completes; the retry's instant is kept across the loop's
    // other wake-ups, so frequent ticks never postpone it.
    let mut retry_registration: Option<tokio::time::Instant> = None;
    let retry_after = || Some(tokio::time::Instant::now() + REGISTRATION_RETRY);
    // H4: after a failed liveness write, the whole refresh (node lease and
    // every heartbeat) is tried again every LIVENESS_RETRY until Redis
    // answers, so deadlines move on as soon as it is back, not an interval
    // later.
    let mut retry_refresh: Option<tokio::time::Instant> = None;
    let refresh_after = |failed: bool, current: Option<tokio::time::Instant>| {
        failed.then(|| current.unwrap_or_else(|| tokio::time::Instant::now() + LIVENESS_RETRY))
    };
    loop {
        tokio::select! {
            _ = inner.stop.notified() => return,
            _ = ticker.tick() => {
                let result = inner.refresh_liveness().await;
                if let Err(error) = &result {
                    tracing::warn!(%error, "redis backend: liveness refresh failed");
                }
                retry_refresh = refresh_after(result.is_err(), retry_refresh);
            }
            _ = lease_ticker.tick() => {
                if !inner.stopping.load(Ordering::Acquire)
                    && let Err(error) = inner.refresh_lease(now_ms()).await
                {
                    tracing::warn!(%error, "redis backend: renewing the node lease failed");
                    retry_refresh = refresh_after(true, retry_refresh);
                }
            }
            _ = inner.count_changed.notified() => {
                // Coalesce a burst of connects into one write (X1: the cap
                // owner sees the count within a fraction of a second, not
                // a heartbeat interval later).
                tokio::time::sleep(COUNT_COALESCE).await;
                if !inner.stopping.load(Ordering::Acquire)
                    && let Err(error) = inner.refresh_lease(now_ms()).await
                {
                    tracing::warn!(%error, "redis backend: writing the socket count failed");
                    retry_refresh = refresh_after(true, retry_refresh);
                }
            }
            _ = inner.refresh_soon.notified() => {
                let failed = inner.refresh_liveness().await.is_err();
                retry_refresh = refresh_after(failed, None);
            }
            _ = tokio::time::sleep_until(retry_refresh.unwrap_or_else(tokio::time::Instant::now)),
                if retry_refresh.is_some() => {
                let failed = match inner.refresh_liveness().await {
                    Ok(()) => {
                        tracing::info!("redis backend: node lease and heartbeats refreshed after a failure");
                        false
                    }
                    Err(error) => {
                        tracing::debug!(%error, "redis backend: liveness refresh failed again");
                        true
                    }
                };
                retry_refresh = refresh_after(failed, None);
            }
            _ = inner.reregister.notified() => {
                retry_registration = (!inner.register_all().await).then(retry_after).flatten();
            }
            _ = tokio::time::sleep_until(retry_registration.unwrap_or_else(tokio::time::Instant::now)),
                if retry_registration.is_some() => {
                retry_registration = (!inner.register_all().await).then(retry_after).flatten();
            }
        }
    }
}

impl Inner {
    /// Tells every shard that this node (re)started without sockets, so
    /// the devices a previous run of it registered go at once rather than
    /// when its node lease lapses (H2). Best effort: a shard not told in
    /// time still expires them with the lease or their heartbeats.
    pub(super) async fn announce_start(&self) {
        let node = self.config.node_id.clone();
        for shard in 0..self.config.shards {
            let command = ClusterCommand::Shard(ShardCommand::NodeStarted { node: node.clone() });
            if let Err(error) = self.append_on(shard, "", command, None).await {
                tracing::warn!(shard, %error, "redis backend: could not announce this node's start");
            }
        }
    }

    /// One round: node lease and count (X1, H2), then every live device's
    /// heartbeat deadline (H1). A lapsed lease registers every device again.
    pub(super) async fn refresh_liveness(&self) -> Result<(), RedisError> {
        if self.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = now_ms();
        let members = {
            let live = self.live.lock();
            let mut members: BTreeMap<u16, Vec<String>> = BTreeMap::new();
            for socket in live.values() {
                members
                    .entry(shard_of(&socket.user, self.config.shards))
                    .or_default()
                    .push(heartbeat_member(&socket.user, &socket.device));
            }
            members
        };
        self.refresh_lease(now).await?;
        let deadline = now + duration_ms(self.config.device_timeout);
        for (shard, mut members) in members {
            members.sort_unstable();
            members.dedup();
            let refresh = self
                .client
                .refresh_heartbeats(shard, deadline, &members)
                .await?;
            debug_assert!(refresh.commands <= members.len().div_ceil(HEARTBEAT_CHUNK));
            self.heartbeat_commands
                .fetch_add(refresh.commands as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Extends the node lease and stores the socket count (X1, H2); a
    /// lease that had lapsed registers every device again.
    pub(super) async fn refresh_lease(&self, now: u64) -> Result<(), RedisError> {
        let count = self.live.lock().len() as u64;
        let lease_until = now + duration_ms(self.config.node_lease_ttl);
        let previous = self
            .client
            .refresh_node(&self.config.node_id, lease_until, count)
            .await?;
        self.lease_renewed_ms.store(now_ms(), Ordering::Release);
        // A lapsed lease, or none at all while sockets are open (the node
        // was forgotten after a long lapse, H2): leaders removed its devices.
        let forgotten = previous.is_none() && count > 0;
        if forgotten || previous.is_some_and(|deadline| deadline <= now) {
            tracing::warn!(
                "redis backend: this node's lease had lapsed; registering its devices again"
            );
            if !self.register_all().await {
                self.reregister.notify_one();
            }
        }
        Ok(())
    }

    /// Appends a `Connect` for every live socket (H2, H3); `false` if an
    /// append failed (the caller retries the whole registration).
    pub(super) async fn register_all(&self) -> bool {
        let sockets: Vec<(ConnId, LiveSocket)> = self
            .live
            .lock()
            .iter()
            .map(|(c, s)| (*c, s.clone()))
            .collect();
        for (conn, socket) in sockets {
            let session = Session {
                user: socket.user.clone(),
                device: socket.device.clone(),
                platform: socket.platform,
                conn,
                profile: socket.profile.clone(),
            };
            let command = connect_command(&self.config.node_id, &session);
            if let Err(error) = self.append(&socket.user, command, None).await {
                tracing::warn!(%error, "redis backend: registering a device again failed; retrying");
                return false;
            }
        }
        self.reregistrations.fetch_add(1, Ordering::Relaxed);
        true
    }
}

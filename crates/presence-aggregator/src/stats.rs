//! Counters and gauges of an aggregator, as plain atomics.
//!
//! The runner updates them; whoever exports metrics (the gateway's
//! Prometheus registry) reads them with [`AggregatorStats::snapshot`]. This
//! crate does not depend on any metrics library.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters (`_total`, only ever grow) and gauges of one aggregator.
#[derive(Debug)]
pub struct AggregatorStats {
    /// Gauge: shards whose lease this node holds now.
    pub shards_held: AtomicU64,
    /// Gauge per shard: the lease epoch held, 0 when not held.
    pub lease_epoch: Vec<AtomicU64>,
    /// Counter: commits the script refused because the lease was no longer
    /// ours (`presence_fenced_writes_rejected_total`).
    pub fenced_rejected: AtomicU64,
    /// Counter: commits that failed with an unknown outcome (timeout,
    /// connection lost); each drops the shard like a fenced one.
    pub commit_errors: AtomicU64,
    /// Counter: stream entries applied.
    pub events_applied: AtomicU64,
    /// Counter: fenced commit scripts that succeeded.
    pub commits: AtomicU64,
    /// Counter: devices removed because their heartbeat lapsed (A5, H1).
    pub devices_expired: AtomicU64,
    /// Counter: gateway nodes whose lease lapsed while they held devices
    /// here (H2).
    pub nodes_lapsed: AtomicU64,
    /// Counter: takeovers (shard loads) completed.
    pub takeovers: AtomicU64,
    /// Gauge per shard: entries in the stream after the cursor, as of the
    /// last trim.
    pub stream_lag: Vec<AtomicU64>,
}

/// A copy of [`AggregatorStats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub shards_held: u64,
    pub lease_epoch: Vec<u64>,
    pub fenced_rejected: u64,
    pub commit_errors: u64,
    pub events_applied: u64,
    pub commits: u64,
    pub devices_expired: u64,
    pub nodes_lapsed: u64,
    pub takeovers: u64,
    pub stream_lag: Vec<u64>,
}

impl AggregatorStats {
    /// Zeroed stats for `shards` shards.
    pub fn new(shards: u16) -> Self {
        let per_shard = || (0..shards).map(|_| AtomicU64::new(0)).collect();
        Self {
            shards_held: AtomicU64::new(0),
            lease_epoch: per_shard(),
            fenced_rejected: AtomicU64::new(0),
            commit_errors: AtomicU64::new(0),
            events_applied: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            devices_expired: AtomicU64::new(0),
            nodes_lapsed: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            stream_lag: per_shard(),
        }
    }

    /// Every value, read with relaxed ordering (each is exact; they are not
    /// a consistent cut).
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            shards_held: load(&self.shards_held),
            lease_epoch: self.lease_epoch.iter().map(load).collect(),
            fenced_rejected: load(&self.fenced_rejected),
            commit_errors: load(&self.commit_errors),
            events_applied: load(&self.events_applied),
            commits: load(&self.commits),
            devices_expired: load(&self.devices_expired),
            nodes_lapsed: load(&self.nodes_lapsed),
            takeovers: load(&self.takeovers),
            stream_lag: self.stream_lag.iter().map(load).collect(),
        }
    }

    /// The shards held now (those with a non-zero epoch).
    pub fn held_shards(&self) -> Vec<u16> {
        self.lease_epoch
            .iter()
            .enumerate()
            .filter(|(_, e)| e.load(Ordering::Relaxed) != 0)
            .map(|(s, _)| s as u16)
            .collect()
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_held(&self, shard: u16, epoch: Option<u64>) {
        let slot = &self.lease_epoch[usize::from(shard)];
        let before = slot.swap(epoch.unwrap_or(0), Ordering::Relaxed);
        match (before != 0, epoch.is_some()) {
            (false, true) => {
                self.shards_held.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.shards_held.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

//! Counters and gauges of an aggregator, as plain atomics.
//!
//! The runner updates them; whoever exports metrics (the gateway's
//! Prometheus registry) reads them with [`AggregatorStats::snapshot`],
//! at scrape time. This crate does not depend on any metrics library.
//!
//! Two kinds of value need care (issue 13):
//!
//! - **Shards held** are judged at the moment of the snapshot, from each
//!   leader's lease validity deadline (monotonic clock): a leader paused
//!   past its lease (a stopped process, a long GC) stops counting the
//!   shard the instant it resumes, before its loop even notices, so the
//!   sum over nodes never counts a shard twice for long.
//! - **Node lease lapses** are counted once per lapse, by the liveness
//!   owner (shard 0's leader), per node id. Every node keeps a zero
//!   counter for each live gateway node it has seen, so the series exists
//!   before its first lapse, wherever shard 0 is led when it happens, and
//!   `increase()` sees the step.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long the shards-led reading of shard 0's leader stays reportable.
const SHARDS_LED_FRESH: Duration = Duration::from_secs(10);

/// Live counters (`_total`, only ever grow) and gauges of one aggregator.
#[derive(Debug)]
pub struct AggregatorStats {
    /// The origin of the `*_ms` instants below.
    base: Instant,
    /// Per shard: the lease epoch held, 0 when not held.
    pub lease_epoch: Vec<AtomicU64>,
    /// Per shard: until when (ms after `base`) the lease is known valid.
    valid_until_ms: Vec<AtomicU64>,
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
    /// Counter: takeovers (shard loads) completed.
    pub takeovers: AtomicU64,
    /// Counter: shards this node gave away by planned handoff (H5: a
    /// rebalance or a clean shutdown).
    pub handoffs: AtomicU64,
    /// Counter: long-lapsed gateway nodes this node forgot (liveness
    /// owner only).
    pub nodes_forgotten: AtomicU64,
    /// Gauge per shard: entries in the stream after the cursor, as of the
    /// last trim.
    pub stream_lag: Vec<AtomicU64>,
    /// Shard 0's leader: distinct shards whose lease is held, read from
    /// the leases themselves, and when (ms after `base`, 0 = never).
    shards_led: AtomicU64,
    shards_led_at_ms: AtomicU64,
    /// Per gateway node id: node lease lapses this node counted (H2).
    node_lapses: Mutex<BTreeMap<String, u64>>,
}

/// A copy of [`AggregatorStats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Shards whose lease this node holds and still knows valid.
    pub shards_held: u64,
    /// Per shard: the epoch held (0 when not held, or no longer valid).
    pub lease_epoch: Vec<u64>,
    pub fenced_rejected: u64,
    pub commit_errors: u64,
    pub events_applied: u64,
    pub commits: u64,
    pub devices_expired: u64,
    pub takeovers: u64,
    pub handoffs: u64,
    pub nodes_forgotten: u64,
    pub stream_lag: Vec<u64>,
    /// Distinct shards led, as shard 0's leader last read them from the
    /// leases: `Some` only on the node that leads shard 0 now, with a
    /// reading less than 10 s old.
    pub shards_led: Option<u64>,
    /// Node lease lapses per gateway node id (each counted once, by the
    /// liveness owner; 0 for live nodes seen here).
    pub node_lapses: Vec<(String, u64)>,
}

impl AggregatorStats {
    /// Zeroed stats for `shards` shards.
    pub fn new(shards: u16) -> Self {
        let per_shard = || (0..shards).map(|_| AtomicU64::new(0)).collect();
        Self {
            base: Instant::now(),
            lease_epoch: per_shard(),
            valid_until_ms: per_shard(),
            fenced_rejected: AtomicU64::new(0),
            commit_errors: AtomicU64::new(0),
            events_applied: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            devices_expired: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            nodes_forgotten: AtomicU64::new(0),
            stream_lag: per_shard(),
            shards_led: AtomicU64::new(0),
            shards_led_at_ms: AtomicU64::new(0),
            node_lapses: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every value, read with relaxed ordering (each is exact; they are not
    /// a consistent cut). Shards count as held only while their lease is
    /// known valid now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let now = self.ms(Instant::now());
        let lease_epoch: Vec<u64> = (0..self.lease_epoch.len())
            .map(|s| self.valid_epoch(s, now))
            .collect();
        let led_at = load(&self.shards_led_at_ms);
        let fresh =
            led_at != 0 && now.saturating_sub(led_at) <= SHARDS_LED_FRESH.as_millis() as u64;
        let shards_led =
            (fresh && lease_epoch.first().is_some_and(|e| *e != 0)).then(|| load(&self.shards_led));
        StatsSnapshot {
            shards_held: lease_epoch.iter().filter(|e| **e != 0).count() as u64,
            lease_epoch,
            fenced_rejected: load(&self.fenced_rejected),
            commit_errors: load(&self.commit_errors),
            events_applied: load(&self.events_applied),
            commits: load(&self.commits),
            devices_expired: load(&self.devices_expired),
            takeovers: load(&self.takeovers),
            handoffs: load(&self.handoffs),
            nodes_forgotten: load(&self.nodes_forgotten),
            stream_lag: self.stream_lag.iter().map(load).collect(),
            shards_led,
            node_lapses: self
                .lapses()
                .iter()
                .map(|(node, n)| (node.clone(), *n))
                .collect(),
        }
    }

    /// The shards held now (lease known valid).
    pub fn held_shards(&self) -> Vec<u16> {
        let now = self.ms(Instant::now());
        (0..self.lease_epoch.len())
            .filter(|s| self.valid_epoch(*s, now) != 0)
            .map(|s| s as u16)
            .collect()
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// This node holds `shard` at `epoch`, valid until `valid_until`
    /// (`None`: not held any more).
    pub(crate) fn set_held(&self, shard: u16, held: Option<(u64, Instant)>) {
        let s = usize::from(shard);
        let (epoch, until) = held.map_or((0, 0), |(e, until)| (e, self.ms(until)));
        self.valid_until_ms[s].store(until, Ordering::Relaxed);
        self.lease_epoch[s].store(epoch, Ordering::Relaxed);
    }

    /// A renewal moved `shard`'s lease validity to `valid_until`.
    pub(crate) fn set_valid_until(&self, shard: u16, valid_until: Instant) {
        self.valid_until_ms[usize::from(shard)].store(self.ms(valid_until), Ordering::Relaxed);
    }

    /// Shard 0's leader read `led` distinct shards with a leader.
    pub(crate) fn set_shards_led(&self, led: u64) {
        self.shards_led.store(led, Ordering::Relaxed);
        let now = self.ms(Instant::now()).max(1);
        self.shards_led_at_ms.store(now, Ordering::Relaxed);
    }

    /// Gateway nodes seen live: each gets a lapse counter at 0 if it has
    /// none yet.
    pub(crate) fn observe_live_nodes<'a>(&self, nodes: impl IntoIterator<Item = &'a str>) {
        let mut lapses = self.lapses();
        for node in nodes {
            if !lapses.contains_key(node) {
                lapses.insert(node.to_owned(), 0);
            }
        }
    }

    /// The liveness owner counted one lapse of `node`'s lease.
    pub(crate) fn count_lapse(&self, node: &str) {
        *self.lapses().entry(node.to_owned()).or_insert(0) += 1;
    }

    /// `node` was forgotten (gone for good): its series goes too, so ids
    /// of nodes long gone do not pile up.
    pub(crate) fn forget_node(&self, node: &str) {
        self.lapses().remove(node);
    }

    fn lapses(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.node_lapses.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn valid_epoch(&self, shard: usize, now_ms: u64) -> u64 {
        let epoch = self.lease_epoch[shard].load(Ordering::Relaxed);
        let until = self.valid_until_ms[shard].load(Ordering::Relaxed);
        if epoch != 0 && until > now_ms {
            epoch
        } else {
            0
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a shard stops counting as held the moment its lease
    /// validity passes (a paused leader that resumes), before its leader
    /// drops it; shards-led is reported only with shard 0 held.
    #[test]
    fn h5_a_shard_stops_counting_when_its_validity_passes() {
        let stats = AggregatorStats::new(2);
        let later = Instant::now() + Duration::from_secs(60);
        stats.set_held(0, Some((7, later)));
        stats.set_held(1, Some((3, later)));
        stats.set_shards_led(2);
        let snapshot = stats.snapshot();
        assert_eq!(
            (snapshot.shards_held, snapshot.lease_epoch.clone()),
            (2, vec![7, 3])
        );
        assert_eq!(snapshot.shards_led, Some(2));
        // Shard 0's validity passed (a renewal would have moved it).
        stats.set_valid_until(0, Instant::now());
        let snapshot = stats.snapshot();
        assert_eq!(
            (snapshot.shards_held, snapshot.lease_epoch),
            (1, vec![0, 3])
        );
        assert_eq!(snapshot.shards_led, None, "shard 0 is not held any more");
        assert_eq!(stats.held_shards(), vec![1]);
        stats.set_valid_until(0, later);
        assert_eq!(stats.held_shards(), vec![0, 1]);
        stats.set_held(1, None);
        assert_eq!(stats.held_shards(), vec![0]);
        // A reading older than SHARDS_LED_FRESH is not reported.
        let stale = stats
            .ms(Instant::now())
            .saturating_sub(SHARDS_LED_FRESH.as_millis() as u64 + 1);
        stats
            .shards_led_at_ms
            .store(stale.max(1), Ordering::Relaxed);
        if stale > 0 {
            assert_eq!(stats.snapshot().shards_led, None, "a stale reading");
        }
    }

    /// Issue 13: lapse counters exist at 0 for live nodes, count per node,
    /// and go with a forgotten node.
    #[test]
    fn h2_lapses_are_counted_per_node() {
        let stats = AggregatorStats::new(1);
        stats.observe_live_nodes(["a", "b"]);
        stats.count_lapse("b");
        stats.observe_live_nodes(["b"]);
        stats.count_lapse("c");
        assert_eq!(
            stats.snapshot().node_lapses,
            vec![("a".into(), 0), ("b".into(), 1), ("c".into(), 1)]
        );
        stats.forget_node("b");
        assert_eq!(
            stats.snapshot().node_lapses,
            vec![("a".into(), 0), ("c".into(), 1)]
        );
    }
}

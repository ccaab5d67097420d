//! What the Redis layer measures, for `/metrics`: the latency of every
//! operation on the command pool, the errors by kind, and the scripts
//! loaded again after Redis forgot them (`NOSCRIPT`, e.g. after a restart
//! or failover: routine, so not an error). Store writes (a gateway's
//! stream append, a heartbeat batch, a shard leader's commit script) are
//! also handed to a [`StoreWriteObserver`], so that the binary's
//! `presence_store_write_seconds` measures cluster writes as it measures
//! the embedded store's commits. Process-wide
//! atomics (one Redis client per process in practice), read by the
//! binary's exporter; this crate does not depend on Prometheus.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::RedisError;

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 2.5,
];

/// The error kinds counted, as `kind` label values.
pub const ERROR_KINDS: [&str; 7] = [
    "timeout",
    "connection",
    "backpressure",
    "auth",
    "server",
    "protocol",
    "not_replicated",
];

/// Counters of one process's Redis operations.
pub struct RedisStats {
    /// Per bucket (not cumulative); the last one counts what is above
    /// every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    script_reloads: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RedisStatsSnapshot {
    /// Cumulative counts, one per bound of [`LATENCY_BOUNDS`].
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
    /// `(kind, count)` for every kind of [`ERROR_KINDS`].
    pub errors: Vec<(&'static str, u64)>,
    /// Scripts loaded again after a `NOSCRIPT` answer.
    pub script_reloads: u64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

static STATS: RedisStats = RedisStats {
    buckets: [ZERO; LATENCY_BOUNDS.len() + 1],
    count: ZERO,
    sum_ns: ZERO,
    errors: [ZERO; ERROR_KINDS.len()],
    script_reloads: ZERO,
};

/// What a store write was: `"append"` (a gateway's change record on a
/// shard stream), `"heartbeats"` (a batch of device deadlines) or
/// `"commit"` (a shard leader's fenced commit script).
pub type StoreWriteKind = &'static str;

/// Called after every successful store write with its kind and duration
/// (replica acknowledgements included).
pub type StoreWriteObserver = Box<dyn Fn(StoreWriteKind, Duration) + Send + Sync>;

static STORE_WRITE_OBSERVER: OnceLock<StoreWriteObserver> = OnceLock::new();

/// Installs this process's [`StoreWriteObserver`]. One per process (one
/// metrics registry): returns `false`, keeping the first, if one is set.
pub fn observe_store_writes(observer: StoreWriteObserver) -> bool {
    STORE_WRITE_OBSERVER.set(observer).is_ok()
}

/// Reports a successful store write to the observer, if there is one.
pub(crate) fn store_write(kind: StoreWriteKind, elapsed: Duration) {
    if let Some(observer) = STORE_WRITE_OBSERVER.get() {
        observer(kind, elapsed);
    }
}

/// This process's Redis counters.
pub fn redis_stats() -> &'static RedisStats {
    &STATS
}

impl RedisStats {
    /// Records one operation that took `elapsed`.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Counts `error` under its kind; configuration problems are not
    /// operation errors and are not counted. Nor is a first `NOSCRIPT`:
    /// the script is loaded again and counted by
    /// [`script_reload`](Self::script_reload); only a script still missing
    /// after that ([`RedisError::NoScript`]) is a server error.
    pub(crate) fn error(&self, error: &RedisError) {
        if error.is_noscript() {
            return;
        }
        let kind = match error {
            RedisError::Timeout(_) => 0,
            RedisError::Connection(_) => 1,
            RedisError::Backpressure => 2,
            RedisError::Auth(_) => 3,
            RedisError::Server(_) | RedisError::NoScript { .. } => 4,
            RedisError::Protocol(_) => 5,
            RedisError::NotReplicated { .. } => 6,
            // Not an error of Redis: an operation held back on purpose.
            RedisError::PrimaryChanged
            | RedisError::Config(_)
            | RedisError::ShardCountMismatch { .. }
            | RedisError::CrossShard { .. } => return,
        };
        self.errors[kind].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a script loaded again after Redis answered `NOSCRIPT`.
    pub(crate) fn script_reload(&self) {
        self.script_reloads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RedisStatsSnapshot {
        let mut running = 0;
        let cumulative = LATENCY_BOUNDS
            .iter()
            .enumerate()
            .map(|(i, _)| {
                running += self.buckets[i].load(Ordering::Relaxed);
                running
            })
            .collect();
        RedisStatsSnapshot {
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            errors: ERROR_KINDS
                .iter()
                .zip(&self.errors)
                .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
                .collect(),
            script_reloads: self.script_reloads.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_bucket_errors_under_their_kind_and_reloads_apart() {
        let stats = RedisStats {
            buckets: [ZERO; LATENCY_BOUNDS.len() + 1],
            count: ZERO,
            sum_ns: ZERO,
            errors: [ZERO; ERROR_KINDS.len()],
            script_reloads: ZERO,
        };
        stats.observe(Duration::from_micros(100)); // ≤ 0.25 ms
        stats.observe(Duration::from_millis(3)); // ≤ 5 ms
        stats.observe(Duration::from_secs(9)); // above every bound
        stats.error(&RedisError::Timeout("t".into()));
        stats.error(&RedisError::Backpressure);
        stats.error(&RedisError::Config("not counted".into()));
        // A NOSCRIPT is a reload, not an error, unless the reload fails.
        stats.error(&RedisError::Server("NOSCRIPT No matching script.".into()));
        stats.script_reload();
        stats.error(&RedisError::NoScript { script: "commit" });
        let snap = stats.snapshot();
        assert_eq!(snap.count, 3);
        assert_eq!(snap.cumulative[0], 1);
        assert_eq!(snap.cumulative[4], 2);
        assert_eq!(*snap.cumulative.last().unwrap(), 2, "9 s is only in +Inf");
        assert!((snap.sum_seconds - 9.0031).abs() < 1e-6);
        assert_eq!(
            snap.errors,
            vec![
                ("timeout", 1),
                ("connection", 0),
                ("backpressure", 1),
                ("auth", 0),
                ("server", 1),
                ("protocol", 0),
                ("not_replicated", 0)
            ]
        );
        assert_eq!(snap.script_reloads, 1);
    }
}

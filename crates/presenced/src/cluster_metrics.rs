//! Prometheus export of the aggregator's stats (cluster mode): the
//! aggregator counts in plain atomics (it does not depend on the gateway);
//! this copies them into the process registry once a second.

use std::sync::Arc;
use std::time::Duration;

use presence_aggregator::{AggregatorStats, StatsSnapshot};
use presence_redis::ReplyStats;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

struct Exported {
    shards_held: IntGauge,
    lease_epoch: IntGaugeVec,
    stream_lag: IntGaugeVec,
    fenced_rejected: IntCounter,
    commit_errors: IntCounter,
    events_applied: IntCounter,
    commits: IntCounter,
    devices_expired: IntCounter,
    nodes_lapsed: IntCounter,
    takeovers: IntCounter,
}

/// Registers the aggregator metrics in `registry` and keeps them current
/// until `shutdown`.
pub fn export(
    registry: &Registry,
    stats: Arc<AggregatorStats>,
    shutdown: CancellationToken,
) -> prometheus::Result<()> {
    let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
        let c = IntCounter::new(name, help)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let per_shard = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), &["shard"])?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let shards_held = IntGauge::new(
        "presence_aggregator_shards_held",
        "Shards whose lease this node holds.",
    )?;
    registry.register(Box::new(shards_held.clone()))?;
    let exported = Exported {
        shards_held,
        lease_epoch: per_shard(
            "presence_aggregator_lease_epoch",
            "Epoch of the lease this node holds per shard (0 if not held).",
        )?,
        stream_lag: per_shard(
            "presence_aggregator_stream_lag",
            "Entries in the shard's event stream not yet applied by this leader.",
        )?,
        fenced_rejected: counter(
            "presence_aggregator_fenced_writes_rejected_total",
            "Commits refused because this node's lease was no longer current.",
        )?,
        commit_errors: counter(
            "presence_aggregator_commit_errors_total",
            "Commits that failed with an unknown outcome (the shard is taken over again).",
        )?,
        events_applied: counter(
            "presence_aggregator_events_applied_total",
            "Stream entries applied by this node's shard leaders.",
        )?,
        commits: counter(
            "presence_aggregator_commits_total",
            "Fenced commits made by this node's shard leaders.",
        )?,
        devices_expired: counter(
            "presence_aggregator_devices_expired_total",
            "Devices removed because their heartbeat lapsed (A5, H1).",
        )?,
        nodes_lapsed: counter(
            "presence_aggregator_node_leases_lapsed_total",
            "Nodes whose lease lapsed and whose devices were removed (H2).",
        )?,
        takeovers: counter(
            "presence_aggregator_takeovers_total",
            "Shards this node took over.",
        )?,
    };
    let mut last = StatsSnapshot::default();
    every_second(shutdown, move || {
        let now = stats.snapshot();
        exported.update(&last, &now);
        last = now;
    });
    Ok(())
}

/// Runs `copy` once a second until `shutdown`.
fn every_second(shutdown: CancellationToken, mut copy: impl FnMut() + Send + 'static) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => copy(),
            }
        }
    });
}

impl Exported {
    fn update(&self, last: &StatsSnapshot, now: &StatsSnapshot) {
        self.shards_held.set(now.shards_held as i64);
        for (shard, epoch) in now.lease_epoch.iter().enumerate() {
            let label = shard.to_string();
            self.lease_epoch
                .with_label_values(&[label.as_str()])
                .set(*epoch as i64);
            let lag = now.stream_lag.get(shard).copied().unwrap_or(0);
            self.stream_lag
                .with_label_values(&[label.as_str()])
                .set(lag as i64);
        }
        let add = |c: &IntCounter, before: u64, after: u64| c.inc_by(after.saturating_sub(before));
        add(
            &self.fenced_rejected,
            last.fenced_rejected,
            now.fenced_rejected,
        );
        add(&self.commit_errors, last.commit_errors, now.commit_errors);
        add(
            &self.events_applied,
            last.events_applied,
            now.events_applied,
        );
        add(&self.commits, last.commits, now.commits);
        add(
            &self.devices_expired,
            last.devices_expired,
            now.devices_expired,
        );
        add(&self.nodes_lapsed, last.nodes_lapsed, now.nodes_lapsed);
        add(&self.takeovers, last.takeovers, now.takeovers);
    }
}

/// The Redis layer's own numbers (any role in cluster mode):
/// `presence_redis_command_seconds` (histogram) and
/// `presence_redis_errors_total{kind}`, read from the process-wide
/// counters at scrape time, plus `presence_cluster_shards`.
pub fn export_redis(registry: &Registry, shards: u16) -> prometheus::Result<()> {
    let configured = IntGauge::new(
        "presence_cluster_shards",
        "Shards of the cluster (S); every shard should have one leader.",
    )?;
    configured.set(i64::from(shards));
    registry.register(Box::new(configured))?;
    registry.register(Box::new(RedisCollector::new()?))
}

/// The gateway side's resyncs and lost pub/sub messages (RedisBackend),
/// copied into the gateway's counters once a second.
pub fn export_resyncs(
    metrics: &presence_gateway::metrics::Metrics,
    backend: Arc<presence_redis::RedisBackend>,
    shutdown: CancellationToken,
) {
    let lagged = metrics.resyncs.with_label_values(&["redis_lagged"]);
    let reconnected = metrics.resyncs.with_label_values(&["redis_reconnected"]);
    let messages = metrics.pubsub_lagged.clone();
    let mut last = (0, 0, 0);
    every_second(shutdown, move || {
        let now = backend.resync_stats();
        lagged.inc_by(now.0.saturating_sub(last.0));
        reconnected.inc_by(now.1.saturating_sub(last.1));
        messages.inc_by(now.2.saturating_sub(last.2));
        last = now;
    });
}

/// The gateway side's truthful replies and liveness (RedisBackend,
/// [`ReplyStats`]), copied into `registry` once a second:
/// `presence_redis_replies_recovered_total`,
/// `presence_redis_append_retries_total`,
/// `presence_redis_heartbeat_commands_total` and
/// `presence_redis_device_reregistrations_total`.
pub fn export_replies(
    registry: &Registry,
    backend: Arc<presence_redis::RedisBackend>,
    shutdown: CancellationToken,
) -> prometheus::Result<()> {
    let counters = ReplyCounters::register(registry)?;
    let mut last = ReplyStats::default();
    every_second(shutdown, move || {
        let now = backend.reply_stats();
        counters.update(&last, &now);
        last = now;
    });
    Ok(())
}

/// The counters of [`export_replies`].
struct ReplyCounters {
    recovered: IntCounter,
    append_retries: IntCounter,
    heartbeat_commands: IntCounter,
    reregistrations: IntCounter,
}

impl ReplyCounters {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Self {
            recovered: counter(
                "presence_redis_replies_recovered_total",
                "Requests answered from their stored outcome in Redis because the pub/sub answer was missed or late (R1).",
            )?,
            append_retries: counter(
                "presence_redis_append_retries_total",
                "Requests whose stream entry was appended again with the same reply id after an ambiguous failure.",
            )?,
            heartbeat_commands: counter(
                "presence_redis_heartbeat_commands_total",
                "Heartbeat refresh commands sent to Redis (H1: one per 500 devices per interval).",
            )?,
            reregistrations: counter(
                "presence_redis_device_reregistrations_total",
                "Times this node registered every live device again (its node lease had lapsed, or pub/sub reconnected).",
            )?,
        })
    }

    /// Adds what the counters moved between two snapshots.
    fn update(&self, last: &ReplyStats, now: &ReplyStats) {
        let add = |c: &IntCounter, before: u64, after: u64| c.inc_by(after.saturating_sub(before));
        add(&self.recovered, last.recovered, now.recovered);
        add(
            &self.append_retries,
            last.append_retries,
            now.append_retries,
        );
        add(
            &self.heartbeat_commands,
            last.heartbeat_commands,
            now.heartbeat_commands,
        );
        add(
            &self.reregistrations,
            last.reregistrations,
            now.reregistrations,
        );
    }
}

/// Builds the Redis metric families from `presence_redis::redis_stats`
/// on every scrape, so the histogram is exact (no copying of buckets).
struct RedisCollector {
    descs: Vec<prometheus::core::Desc>,
}

const LATENCY_NAME: &str = "presence_redis_command_seconds";
const LATENCY_HELP: &str =
    "Latency of Redis operations on the command pool (a command, script or pipeline).";
const ERRORS_NAME: &str = "presence_redis_errors_total";
const ERRORS_HELP: &str = "Failed Redis operations, by kind.";
const RELOADS_NAME: &str = "presence_redis_script_reloads_total";
const RELOADS_HELP: &str = "Scripts loaded again after Redis answered NOSCRIPT (a restart or failover forgot them); not errors.";

impl RedisCollector {
    fn new() -> prometheus::Result<Self> {
        let latency = prometheus::core::Desc::new(
            LATENCY_NAME.into(),
            LATENCY_HELP.into(),
            vec![],
            Default::default(),
        )?;
        let errors = prometheus::core::Desc::new(
            ERRORS_NAME.into(),
            ERRORS_HELP.into(),
            vec!["kind".into()],
            Default::default(),
        )?;
        let reloads = prometheus::core::Desc::new(
            RELOADS_NAME.into(),
            RELOADS_HELP.into(),
            vec![],
            Default::default(),
        )?;
        Ok(Self {
            descs: vec![latency, errors, reloads],
        })
    }
}

impl prometheus::core::Collector for RedisCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use presence_redis::{LATENCY_BOUNDS, redis_stats};
        use prometheus::proto::{
            Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType,
        };
        let snapshot = redis_stats().snapshot();

        let mut histogram = Histogram::default();
        histogram.set_sample_count(snapshot.count);
        histogram.set_sample_sum(snapshot.sum_seconds);
        let buckets = LATENCY_BOUNDS
            .iter()
            .zip(&snapshot.cumulative)
            .map(|(bound, count)| {
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(*bound);
                bucket.set_cumulative_count(*count);
                bucket
            })
            .collect();
        histogram.set_bucket(buckets);
        let mut metric = Metric::default();
        metric.set_histogram(histogram);
        let mut latency = MetricFamily::default();
        latency.set_name(LATENCY_NAME.into());
        latency.set_help(LATENCY_HELP.into());
        latency.set_field_type(MetricType::HISTOGRAM);
        latency.mut_metric().push(metric);

        let mut errors = MetricFamily::default();
        errors.set_name(ERRORS_NAME.into());
        errors.set_help(ERRORS_HELP.into());
        errors.set_field_type(MetricType::COUNTER);
        for (kind, count) in snapshot.errors {
            let mut label = LabelPair::default();
            label.set_name("kind".into());
            label.set_value(kind.into());
            let mut counter = Counter::default();
            counter.set_value(count as f64);
            let mut metric = Metric::default();
            metric.set_label(vec![label]);
            metric.set_counter(counter);
            errors.mut_metric().push(metric);
        }

        let mut counter = Counter::default();
        counter.set_value(snapshot.script_reloads as f64);
        let mut metric = Metric::default();
        metric.set_counter(counter);
        let mut reloads = MetricFamily::default();
        reloads.set_name(RELOADS_NAME.into());
        reloads.set_help(RELOADS_HELP.into());
        reloads.set_field_type(MetricType::COUNTER);
        reloads.mut_metric().push(metric);
        vec![latency, errors, reloads]
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, Registry, TextEncoder};

    use super::{ReplyCounters, ReplyStats};

    fn text(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("the registry encodes");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// R1's truthful replies are visible on `/metrics`: every counter is
    /// registered with HELP text, and moves by what the backend counted
    /// since the previous copy.
    #[test]
    fn r1_reply_counters_copy_the_backend_stats() {
        let registry = Registry::new();
        let counters = ReplyCounters::register(&registry).expect("registers");
        let first = ReplyStats {
            recovered: 2,
            append_retries: 1,
            heartbeat_commands: 7,
            reregistrations: 0,
        };
        counters.update(&ReplyStats::default(), &first);
        let second = ReplyStats {
            recovered: 5,
            append_retries: 1,
            heartbeat_commands: 9,
            reregistrations: 1,
        };
        counters.update(&first, &second);
        let text = text(&registry);
        for (name, value) in [
            ("presence_redis_replies_recovered_total", 5),
            ("presence_redis_append_retries_total", 1),
            ("presence_redis_heartbeat_commands_total", 9),
            ("presence_redis_device_reregistrations_total", 1),
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            assert!(
                text.contains(&format!("# TYPE {name} counter")),
                "{name} is not a counter"
            );
            assert!(
                text.contains(&format!("\n{name} {value}\n")),
                "{name}: {text}"
            );
        }
    }
}

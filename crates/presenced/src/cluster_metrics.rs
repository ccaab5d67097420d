//! Prometheus export of the aggregator's stats (cluster mode): the
//! aggregator counts in plain atomics (it does not depend on the gateway);
//! its families are built from them at scrape time, and the gateway side's
//! Redis counters are copied into the process registry once a second.

use std::sync::Arc;
use std::time::Duration;

use presence_aggregator::{AggregatorStats, StatsSnapshot};
use presence_redis::ReplyStats;
use prometheus::{IntCounter, IntGauge, Registry};
use tokio_util::sync::CancellationToken;

/// Registers the aggregator metrics in `registry`. They are read from the
/// aggregator's stats at scrape time ([`AggregatorCollector`]), so a shard
/// this node stopped holding is not reported a moment longer.
pub fn export(registry: &Registry, stats: Arc<AggregatorStats>) -> prometheus::Result<()> {
    registry.register(Box::new(AggregatorCollector::new(stats)?))
}

/// The aggregator's metric families, built from one
/// [`AggregatorStats::snapshot`] per scrape.
struct AggregatorCollector {
    stats: Arc<AggregatorStats>,
    descs: Vec<prometheus::core::Desc>,
}

/// Name, help, kind, label and samples of every aggregator metric.
type Samples = fn(&StatsSnapshot) -> Vec<(String, u64)>;
const AGGREGATOR_METRICS: [(&str, &str, Kind, Option<&str>, Samples); 13] = [
    (
        "presence_aggregator_shards_held",
        "Shards whose lease this node holds now (a lease whose validity passed is not counted).",
        Kind::Gauge,
        None,
        |s| one(s.shards_held),
    ),
    (
        "presence_aggregator_shards_led",
        "Distinct shards with a leader, read from the leases by shard 0's leader (0 on the other nodes): max() over nodes is the cluster's figure.",
        Kind::Gauge,
        None,
        |s| one(s.shards_led.unwrap_or(0)),
    ),
    (
        "presence_aggregator_lease_epoch",
        "Epoch of the lease this node holds per shard (0 if not held).",
        Kind::Gauge,
        Some("shard"),
        |s| per_shard(&s.lease_epoch),
    ),
    (
        "presence_aggregator_stream_lag",
        "Entries in the shard's event stream not yet applied by this leader.",
        Kind::Gauge,
        Some("shard"),
        |s| per_shard(&s.stream_lag),
    ),
    (
        "presence_aggregator_fenced_writes_rejected_total",
        "Commits refused because this node's lease was no longer current.",
        Kind::Counter,
        None,
        |s| one(s.fenced_rejected),
    ),
    (
        "presence_aggregator_commit_errors_total",
        "Commits that failed with an unknown outcome (the shard is taken over again).",
        Kind::Counter,
        None,
        |s| one(s.commit_errors),
    ),
    (
        "presence_aggregator_events_applied_total",
        "Stream entries applied by this node's shard leaders.",
        Kind::Counter,
        None,
        |s| one(s.events_applied),
    ),
    (
        "presence_aggregator_commits_total",
        "Fenced commits made by this node's shard leaders.",
        Kind::Counter,
        None,
        |s| one(s.commits),
    ),
    (
        "presence_aggregator_devices_expired_total",
        "Devices removed because their heartbeat lapsed (A5, H1).",
        Kind::Counter,
        None,
        |s| one(s.devices_expired),
    ),
    (
        "presence_aggregator_node_leases_lapsed_total",
        "Gateway node leases that lapsed (H2: every device of the node was removed), per node id, each counted once by the liveness owner (shard 0's leader).",
        Kind::Counter,
        Some("node"),
        |s| s.node_lapses.clone(),
    ),
    (
        "presence_aggregator_nodes_forgotten_total",
        "Gateway nodes lapsed for long that the liveness owner removed from the registry.",
        Kind::Counter,
        None,
        |s| one(s.nodes_forgotten),
    ),
    (
        "presence_aggregator_takeovers_total",
        "Shards this node took over.",
        Kind::Counter,
        None,
        |s| one(s.takeovers),
    ),
    (
        "presence_aggregator_handoffs_total",
        "Shards this node handed off by plan (H5: a rebalance or a clean shutdown), committing its last batch and releasing the lease.",
        Kind::Counter,
        None,
        |s| one(s.handoffs),
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

impl AggregatorCollector {
    fn new(stats: Arc<AggregatorStats>) -> prometheus::Result<Self> {
        let descs = AGGREGATOR_METRICS
            .iter()
            .map(|(name, help, _, label, _)| {
                prometheus::core::Desc::new(
                    (*name).into(),
                    (*help).into(),
                    label.iter().map(|l| (*l).to_owned()).collect(),
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self { stats, descs })
    }
}

impl prometheus::core::Collector for AggregatorCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let now = self.stats.snapshot();
        AGGREGATOR_METRICS
            .iter()
            .map(|(name, help, kind, label, samples)| {
                family(name, help, *kind, *label, samples(&now))
            })
            .collect()
    }
}

/// One sample without labels.
fn one(value: u64) -> Vec<(String, u64)> {
    vec![(String::new(), value)]
}

/// One sample per shard, labelled with the shard number.
fn per_shard(values: &[u64]) -> Vec<(String, u64)> {
    values
        .iter()
        .enumerate()
        .map(|(shard, v)| (shard.to_string(), *v))
        .collect()
}

/// One metric family of `kind`, one sample per `(label value, value)`
/// (the label value is ignored without a label).
fn family(
    name: &str,
    help: &str,
    kind: Kind,
    label: Option<&str>,
    samples: Vec<(String, u64)>,
) -> prometheus::proto::MetricFamily {
    use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
    let mut family = MetricFamily::default();
    family.set_name(name.into());
    family.set_help(help.into());
    family.set_field_type(match kind {
        Kind::Gauge => MetricType::GAUGE,
        Kind::Counter => MetricType::COUNTER,
    });
    for (label_value, value) in samples {
        let mut metric = Metric::default();
        if let Some(label) = label {
            let mut pair = LabelPair::default();
            pair.set_name(label.into());
            pair.set_value(label_value);
            metric.set_label(vec![pair]);
        }
        match kind {
            Kind::Gauge => {
                let mut gauge = Gauge::default();
                gauge.set_value(value as f64);
                metric.set_gauge(gauge);
            }
            Kind::Counter => {
                let mut counter = Counter::default();
                counter.set_value(value as f64);
                metric.set_counter(counter);
            }
        }
        family.mut_metric().push(metric);
    }
    family
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

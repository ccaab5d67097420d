//! Every Prometheus metric of the service, in one registry served at
//! `/metrics`.
//!
//! Conventions (DESIGN §3 "Operations"): names start with `presence_`,
//! values are in base units (seconds, not milliseconds), counters end in
//! `_total`, and no label ever carries a user or device id. Each label has
//! a bounded set of values, and this module enforces it: labelled metrics
//! are reached through typed accessors ([`Metrics::connections`],
//! [`Metrics::ws_message`], [`Metrics::rate_limited`] …) that take enums or
//! `&'static str`, never free-form strings from a client. Unlabelled
//! metrics are plain public fields.
//!
//! The children of bounded label sets are created up front, so every series
//! is exported from the start (a dashboard sees `0`, not "no data") and the
//! hot paths touch a pre-resolved atomic instead of a label lookup.
//!
//! `prometheus` is built without default features, so there is no process
//! collector (CPU, RSS, file descriptors); node-level exporters cover those.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use presence_core::{CapState, Platform, StatusCounts};
use presence_protocol::ws::MessageType;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::budget::ConnectionBudget;
use crate::ratelimit::Limit;

/// The `Content-Type` of [`Metrics::render`]'s output: the Prometheus text
/// exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The client → server WebSocket message types (DESIGN §3, one list in
/// [`MessageType`]), the values of the `type` label of
/// `presence_ws_messages_total`, then [`UNKNOWN_MESSAGE_TYPE`] for anything
/// else.
pub const WS_MESSAGE_TYPES: [&str; MessageType::ALL.len() + 1] = {
    let mut types = [UNKNOWN_MESSAGE_TYPE; MessageType::ALL.len() + 1];
    let mut i = 0;
    while i < MessageType::ALL.len() {
        types[i] = MessageType::NAMES[i];
        i += 1;
    }
    types
};

/// The `type` label for messages whose type is missing, not a string, or
/// not one of [`WS_MESSAGE_TYPES`].
pub const UNKNOWN_MESSAGE_TYPE: &str = "unknown";

/// The `route` label of requests that matched no route (404s).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Delivery latency buckets: from 50 µs (a local fan-out) to 1 s (the
/// DESIGN W1 ceiling), dense below 10 ms where the p99 target lives.
const DELIVERY_BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    0.75, 1.0,
];

/// Store write latency buckets: from 100 µs (in-memory backend, or a Redis
/// round trip on the same host) to 2.5 s (a stalled Redis).
const STORE_WRITE_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// HTTP request duration buckets: from 0.5 ms (a read answered from
/// memory) to 5 s (a write held back by a Redis failover).
const HTTP_DURATION_BUCKETS: [f64; 13] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Why watched users were read again from stored state:
/// `gateway_lagged` (this process's update receiver fell behind),
/// `redis_lagged` (the Redis subscriber fell behind), `redis_reconnected`
/// (the subscriber reconnected and subscribed again).
pub const RESYNC_REASONS: [&str; 3] = ["gateway_lagged", "redis_lagged", "redis_reconnected"];

/// Why a connection or socket was refused before it was served, the values
/// of the `reason` label of `presence_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// X6: the user already held `--max-sockets-per-user` sockets (429).
    SocketsPerUser,
    /// The node already held `--max-connections` connections (503).
    MaxConnections,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 2] = [Self::SocketsPerUser, Self::MaxConnections];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SocketsPerUser => "sockets_per_user",
            Self::MaxConnections => "max_connections",
        }
    }
}

/// The service's metrics. Create one per process, share it in an `Arc`.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,

    /// `presence_status_changes_total`: committed changes of a user's
    /// displayed status or text.
    pub status_changes: IntCounter,
    /// `presence_updates_delivered_total`: presence updates written to client
    /// sockets (one per subscriber).
    pub updates_delivered: IntCounter,
    /// `presence_update_delivery_seconds`: from a change's commit to its
    /// frame being written to a subscriber's socket. Embedded mode: from
    /// the in-memory apply (before the durable write is awaited). Cluster
    /// mode: from the shard leader's commit time stamped in the update
    /// (its wall clock as it sends the fenced commit), so Redis, pub/sub
    /// and this node are included; clocks must be in sync (NTP), and a
    /// stamp ahead of this node's clock counts as 0. Updates without a
    /// stamp (resyncs, older leaders) start when they reach this node.
    pub update_delivery_seconds: Histogram,
    /// `presence_store_write_seconds`: duration of one durable write.
    /// Embedded: a commit of the local store. Cluster: a gateway's stream
    /// append, a heartbeat batch, or a shard leader's commit script, with
    /// its replica acknowledgements (one process is in one mode, so the
    /// mode needs no label).
    pub store_write_seconds: Histogram,
    /// `presence_ws_slow_consumers_dropped_total`: sockets closed because
    /// their outbound queue was full.
    pub ws_slow_consumers_dropped: IntCounter,
    /// `presence_pubsub_lagged_total`: times the pub/sub receiver lagged and
    /// updates were skipped (each triggers a resync).
    pub pubsub_lagged: IntCounter,
    /// `presence_resyncs_total{reason}`: resynchronisations of watched
    /// users from stored state, by [`RESYNC_REASONS`].
    pub resyncs: IntCounterVec,
    /// `presence_cap_enabled`: 1 while presence broadcasting is on (X2).
    pub cap_enabled: IntGauge,
    /// `presence_cap_connections`: the cluster-wide connection count (X5).
    pub cap_connections: IntGauge,
    /// `presence_cap_limit`: the configured cap; 0 = unlimited (X1).
    pub cap_limit: IntGauge,
    /// `presence_cap_peak`: the highest connection count seen (X5).
    pub cap_peak: IntGauge,
    /// `presence_tcp_connections`: client connections open on the API
    /// listener (HTTP and WebSocket), counted against `--max-connections`.
    pub tcp_connections: IntGauge,
    /// `presence_tcp_connections_limit`: `--max-connections`.
    pub tcp_connections_limit: IntGauge,
    /// `presence_connections_timed_out_total`: connections closed because
    /// their request headers did not arrive within `--handshake-timeout`
    /// (slow or silent clients, idle keep-alive connections).
    pub connections_timed_out: IntCounter,
    /// `presence_accept_errors_total`: accepts that failed for lack of
    /// file descriptors or socket memory (the loop pauses, then goes on).
    pub accept_errors: IntCounter,

    connections: [IntGauge; 3],
    connections_refused: [IntCounter; 2],
    users: [IntGauge; 4],
    ws_messages: [IntCounter; WS_MESSAGE_TYPES.len()],
    rate_limited: [IntCounter; 3],
    rejected_messages: IntCounterVec,
    http_requests: IntCounterVec,
    http_request_duration: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = Registrar(&registry);

        let connections = r.gauge_vec(
            "presence_connections",
            "Open WebSocket connections on this node, by client platform.",
            "platform",
        );
        let users = r.gauge_vec(
            "presence_users",
            "Connected users by the status they see of themselves.",
            "status",
        );
        let ws_messages = r.counter_vec(
            "presence_ws_messages_total",
            "WebSocket messages received from clients, by message type.",
            &["type"],
        );
        let rate_limited = r.counter_vec(
            "presence_rate_limited_total",
            "Requests refused by a rate limit, by limit.",
            &["limit"],
        );
        let connections_refused = r.counter_vec(
            "presence_connections_refused_total",
            "Connections and WebSocket upgrades refused by a connection budget, by reason.",
            &["reason"],
        );

        Metrics {
            status_changes: r.counter(
                "presence_status_changes_total",
                "Committed changes of a user's displayed status or status text.",
            ),
            updates_delivered: r.counter(
                "presence_updates_delivered_total",
                "Presence updates queued to subscribed client sockets.",
            ),
            update_delivery_seconds: r.histogram(
                "presence_update_delivery_seconds",
                "Seconds from a presence change's commit (embedded: applied in memory; cluster: the shard leader's commit) to its frame being written to a subscriber socket.",
                &DELIVERY_BUCKETS,
            ),
            store_write_seconds: r.histogram(
                "presence_store_write_seconds",
                "Duration of one durable write: an embedded store commit, or in cluster mode a Redis stream append, heartbeat batch or commit script.",
                &STORE_WRITE_BUCKETS,
            ),
            ws_slow_consumers_dropped: r.counter(
                "presence_ws_slow_consumers_dropped_total",
                "WebSocket connections closed because their outbound queue was full.",
            ),
            pubsub_lagged: r.counter(
                "presence_pubsub_lagged_total",
                "Times the pub/sub receiver fell behind and skipped updates.",
            ),
            resyncs: {
                let resyncs = r.counter_vec(
                    "presence_resyncs_total",
                    "Resynchronisations of watched users from stored state, by reason.",
                    &["reason"],
                );
                for reason in RESYNC_REASONS {
                    resyncs.with_label_values(&[reason]);
                }
                resyncs
            },
            cap_enabled: r.gauge(
                "presence_cap_enabled",
                "1 while presence broadcasting is enabled, 0 once the cap disabled it.",
            ),
            cap_connections: r.gauge(
                "presence_cap_connections",
                "Connections counted against the presence cap, across the cluster.",
            ),
            cap_limit: r.gauge(
                "presence_cap_limit",
                "The presence cap on concurrent connections; 0 means unlimited.",
            ),
            cap_peak: r.gauge(
                "presence_cap_peak",
                "The highest cluster-wide connection count seen.",
            ),
            tcp_connections: r.gauge(
                "presence_tcp_connections",
                "Client connections open on the API listener, WebSockets included.",
            ),
            tcp_connections_limit: r.gauge(
                "presence_tcp_connections_limit",
                "The most client connections this node holds at once (--max-connections).",
            ),
            connections_timed_out: r.counter(
                "presence_connections_timed_out_total",
                "Connections closed because request headers did not arrive in time.",
            ),
            accept_errors: r.counter(
                "presence_accept_errors_total",
                "Accepts that failed for lack of file descriptors or socket memory.",
            ),
            connections: Platform::ALL
                .map(|platform| connections.with_label_values(&[platform.as_str()])),
            connections_refused: RefusalReason::ALL
                .map(|reason| connections_refused.with_label_values(&[reason.as_str()])),
            users: ["online", "away", "busy", "invisible"]
                .map(|status| users.with_label_values(&[status])),
            ws_messages: WS_MESSAGE_TYPES.map(|kind| ws_messages.with_label_values(&[kind])),
            rate_limited: Limit::ALL.map(|limit| rate_limited.with_label_values(&[limit.as_str()])),
            rejected_messages: r.counter_vec(
                "presence_rejected_messages_total",
                "Client requests rejected with an error, by error code.",
                &["code"],
            ),
            http_requests: r.counter_vec(
                "presence_http_requests_total",
                "HTTP requests served, by route template and status code.",
                &["route", "status"],
            ),
            http_request_duration: r.histogram_vec(
                "presence_http_request_duration_seconds",
                "Seconds from a request's arrival to its response head (a WebSocket: to the upgrade), by route template and status code.",
                &["route", "status"],
                &HTTP_DURATION_BUCKETS,
            ),
            registry,
        }
    }

    /// The registry, for registering metrics owned by other components.
    /// Use the same naming rules.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the text exposition format; serve it with
    /// [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "failed to encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// `presence_connections{platform}`: increment on connect, decrement on
    /// close.
    pub fn connections(&self, platform: Platform) -> &IntGauge {
        &self.connections[platform_index(platform)]
    }

    /// `presence_connections_refused_total{reason}`.
    pub fn connections_refused(&self, reason: RefusalReason) -> &IntCounter {
        &self.connections_refused[match reason {
            RefusalReason::SocketsPerUser => 0,
            RefusalReason::MaxConnections => 1,
        }]
    }

    /// Mirrors the API listener's connection budget into
    /// `presence_tcp_connections` and `presence_tcp_connections_limit`.
    pub fn set_connections(&self, budget: &ConnectionBudget) {
        self.tcp_connections
            .set(saturating_i64(budget.open() as u64));
        self.tcp_connections_limit
            .set(saturating_i64(budget.max() as u64));
    }

    /// Sets every `presence_users{status}` series at once.
    pub fn set_users(&self, users: &StatusCounts) {
        let [online, away, busy, invisible] = &self.users;
        online.set(saturating_i64(users.online));
        away.set(saturating_i64(users.away));
        busy.set(saturating_i64(users.busy));
        invisible.set(saturating_i64(users.invisible));
    }

    /// `presence_ws_messages_total{type}` for a client message's `type`
    /// field as received; unknown types share one series.
    pub fn ws_message(&self, message_type: &str) -> &IntCounter {
        let index = WS_MESSAGE_TYPES
            .iter()
            .position(|known| *known == message_type)
            .unwrap_or(WS_MESSAGE_TYPES.len() - 1);
        &self.ws_messages[index]
    }

    /// Counts one request rejected with error `code`
    /// (`presence_rejected_messages_total{code}`). Codes are the stable
    /// `&'static str` codes of the error types, which keeps the label set
    /// bounded.
    pub fn rejected(&self, code: &'static str) {
        self.rejected_messages.with_label_values(&[code]).inc();
    }

    /// `presence_rate_limited_total{limit}`.
    pub fn rate_limited(&self, limit: Limit) -> &IntCounter {
        &self.rate_limited[limit_index(limit)]
    }

    /// Mirrors the presence cap state into the four `presence_cap_*` gauges.
    pub fn set_cap(&self, cap: &CapState) {
        self.cap_enabled.set(i64::from(cap.enabled));
        self.cap_connections.set(saturating_i64(cap.count));
        self.cap_limit.set(saturating_i64(cap.cap));
        self.cap_peak.set(saturating_i64(cap.peak));
    }

    /// Counts one HTTP request. `route` must be the matched route template
    /// (`/v1/users/{id}/presence`), never the raw path; use
    /// [`UNMATCHED_ROUTE`] when nothing matched. [`track_http_requests`]
    /// does this for a whole router.
    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
    }

    /// Counts one HTTP request like [`http_request`](Self::http_request)
    /// and records how long it took in
    /// `presence_http_request_duration_seconds{route,status}`.
    pub fn http_request_took(&self, route: &str, status: u16, elapsed: std::time::Duration) {
        let status = status.to_string();
        let labels = [route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_request_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// Axum middleware counting every request in
/// `presence_http_requests_total{route,status}` and timing it in
/// `presence_http_request_duration_seconds{route,status}`, labelled with
/// the matched route template (bounded: ids never become labels). Install it with `Router::layer` (not `route_layer`, which
/// would miss 404s):
///
/// ```
/// use std::sync::Arc;
///
/// use axum::{Router, middleware, routing::get};
/// use presence_gateway::metrics::{Metrics, track_http_requests};
///
/// let metrics = Arc::new(Metrics::new());
/// let app: Router = Router::new()
///     .route("/healthz", get(|| async { "ok" }))
///     .layer(middleware::from_fn_with_state(metrics, track_http_requests));
/// ```
pub async fn track_http_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.http_request_took(
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Registers metrics, panicking on the only possible failure: a name
/// registered twice, which is a bug in [`Metrics::new`] that its tests
/// catch.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique and valid");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid counter"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid gauge"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
    }

    fn gauge_vec(&self, name: &str, help: &str, label: &str) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid gauge"))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("valid histogram"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(Histogram::with_opts(opts).expect("valid histogram"))
    }
}

fn platform_index(platform: Platform) -> usize {
    match platform {
        Platform::Web => 0,
        Platform::Desktop => 1,
        Platform::Mobile => 2,
    }
}

fn limit_index(limit: Limit) -> usize {
    match limit {
        Limit::StatusText => 0,
        Limit::Status => 1,
        Limit::WsMessages => 2,
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    /// Every metric family name the service exports.
    const NAMES: [&str; 27] = [
        "presence_connections",
        "presence_users",
        "presence_status_changes_total",
        "presence_updates_delivered_total",
        "presence_update_delivery_seconds",
        "presence_ws_messages_total",
        "presence_rejected_messages_total",
        "presence_rate_limited_total",
        "presence_cap_enabled",
        "presence_cap_connections",
        "presence_cap_limit",
        "presence_cap_peak",
        "presence_store_write_seconds",
        "presence_ws_slow_consumers_dropped_total",
        "presence_http_requests_total",
        "presence_http_request_duration_seconds",
        "presence_pubsub_lagged_total",
        "presence_resyncs_total",
        "presence_tcp_connections",
        "presence_tcp_connections_limit",
        "presence_connections_refused_total",
        "presence_connections_timed_out_total",
        "presence_accept_errors_total",
        // Histograms export these series too.
        "presence_update_delivery_seconds_bucket",
        "presence_store_write_seconds_count",
        "presence_store_write_seconds_sum",
        "presence_http_request_duration_seconds_bucket",
    ];

    /// Touches every metric, with client-chosen strings where a client
    /// could smuggle an id in.
    fn touch_everything(metrics: &Metrics) {
        for platform in Platform::ALL {
            metrics.connections(platform).inc();
        }
        metrics.set_users(&StatusCounts {
            online: 4,
            away: 3,
            busy: 2,
            invisible: 1,
        });
        metrics.status_changes.inc();
        metrics.updates_delivered.inc_by(50);
        metrics.update_delivery_seconds.observe(0.000_3);
        metrics.store_write_seconds.observe(0.002);
        metrics.ws_slow_consumers_dropped.inc();
        metrics.pubsub_lagged.inc();
        metrics.resyncs.with_label_values(&["gateway_lagged"]).inc();
        metrics.ws_message("set_status").inc();
        metrics.ws_message("user-42").inc();
        metrics.ws_message("").inc();
        metrics.rejected("text_too_long");
        for limit in Limit::ALL {
            metrics.rate_limited(limit).inc();
        }
        let mut cap = CapState::new(200);
        cap.observe_count(150);
        metrics.set_cap(&cap);
        metrics.http_request("/v1/users/{id}/presence", 200);
        metrics.http_request_took(
            "/v1/users/{id}/presence",
            200,
            std::time::Duration::from_millis(3),
        );
        for reason in RefusalReason::ALL {
            metrics.connections_refused(reason).inc();
        }
        metrics.set_connections(&ConnectionBudget::new(100));
        metrics.connections_timed_out.inc();
        metrics.accept_errors.inc();
    }

    /// `(name, labels)` of every sample line.
    fn samples(rendered: &str) -> Vec<(String, Vec<(String, String)>)> {
        rendered
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let series = line.rsplit_once(' ').unwrap().0;
                let Some((name, labels)) = series.split_once('{') else {
                    return (series.to_owned(), Vec::new());
                };
                let labels = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once('=').unwrap();
                        (key.to_owned(), value.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            })
            .collect()
    }

    #[test]
    fn render_contains_every_metric_after_touching_each() {
        let metrics = Metrics::new();
        touch_everything(&metrics);
        let rendered = metrics.render();
        // Families from their `# TYPE` lines, series from the samples.
        let families = rendered
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_owned);
        let names: BTreeSet<String> = samples(&rendered)
            .into_iter()
            .map(|(name, _)| name)
            .chain(families)
            .collect();
        for name in NAMES {
            assert!(names.contains(name), "{name} missing from:\n{rendered}");
        }
    }

    #[test]
    fn names_follow_the_conventions() {
        let metrics = Metrics::new();
        touch_everything(&metrics);
        let families = metrics.registry().gather();
        assert_eq!(families.len(), 23);
        for family in families {
            let name = family.name();
            let rest = name
                .strip_prefix("presence_")
                .unwrap_or_else(|| panic!("{name}"));
            assert!(
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            match family.get_field_type() {
                prometheus::proto::MetricType::COUNTER => {
                    assert!(name.ends_with("_total"), "{name}")
                }
                prometheus::proto::MetricType::HISTOGRAM => {
                    assert!(name.ends_with("_seconds"), "{name}")
                }
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
            assert!(!name.contains("millis") && !name.contains("_ms"), "{name}");
        }
    }

    #[test]
    fn labels_never_carry_ids() {
        let metrics = Metrics::new();
        touch_everything(&metrics);
        let rendered = metrics.render();
        assert!(!rendered.contains("user-42"), "{rendered}");

        let platforms: Vec<&str> = Platform::ALL.map(Platform::as_str).to_vec();
        let limits: Vec<&str> = Limit::ALL.map(Limit::as_str).to_vec();
        for (name, labels) in samples(&rendered) {
            for (key, value) in labels {
                let allowed = match key.as_str() {
                    "platform" => platforms.contains(&value.as_str()),
                    "status" if name == "presence_users" => {
                        ["online", "away", "busy", "invisible"].contains(&value.as_str())
                    }
                    "status" => value.parse::<u16>().is_ok(),
                    "type" => WS_MESSAGE_TYPES.contains(&value.as_str()),
                    "limit" => limits.contains(&value.as_str()),
                    "code" => value == "text_too_long",
                    "reason" if name == "presence_connections_refused_total" => RefusalReason::ALL
                        .iter()
                        .any(|reason| reason.as_str() == value),
                    "reason" => RESYNC_REASONS.contains(&value.as_str()),
                    "route" => value == "/v1/users/{id}/presence",
                    "le" => true,
                    _ => false,
                };
                assert!(allowed, "{name}: {key}={value:?}");
            }
        }
    }

    #[test]
    fn bounded_series_exist_before_first_use() {
        let rendered = Metrics::new().render();
        for series in [
            r#"presence_connections{platform="mobile"} 0"#,
            r#"presence_users{status="invisible"} 0"#,
            r#"presence_ws_messages_total{type="unknown"} 0"#,
            r#"presence_rate_limited_total{limit="status_text"} 0"#,
            r#"presence_connections_refused_total{reason="sockets_per_user"} 0"#,
        ] {
            assert!(
                rendered.contains(series),
                "{series} missing from:\n{rendered}"
            );
        }
    }

    #[test]
    fn typed_accessors_reach_the_right_series() {
        let metrics = Metrics::new();
        touch_everything(&metrics);
        metrics.connections(Platform::Desktop).inc();
        let rendered = metrics.render();
        for series in [
            r#"presence_connections{platform="web"} 1"#,
            r#"presence_connections{platform="desktop"} 2"#,
            r#"presence_users{status="online"} 4"#,
            r#"presence_users{status="invisible"} 1"#,
            r#"presence_ws_messages_total{type="set_status"} 1"#,
            r#"presence_ws_messages_total{type="unknown"} 2"#,
            r#"presence_ws_messages_total{type="bye"} 0"#,
            r#"presence_rate_limited_total{limit="ws_messages"} 1"#,
            r#"presence_rejected_messages_total{code="text_too_long"} 1"#,
            r#"presence_http_requests_total{route="/v1/users/{id}/presence",status="200"} 2"#,
            r#"presence_http_request_duration_seconds_bucket{route="/v1/users/{id}/presence",status="200",le="0.005"} 1"#,
            r#"presence_http_request_duration_seconds_bucket{route="/v1/users/{id}/presence",status="200",le="0.0025"} 0"#,
            "presence_cap_enabled 1",
            "presence_cap_connections 150",
            "presence_cap_limit 200",
            "presence_cap_peak 150",
            "presence_updates_delivered_total 50",
            r#"presence_connections_refused_total{reason="max_connections"} 1"#,
            "presence_tcp_connections_limit 100",
        ] {
            assert!(
                rendered.contains(series),
                "{series} missing from:\n{rendered}"
            );
        }
    }

    #[test]
    fn content_type_is_the_text_format() {
        assert_eq!(CONTENT_TYPE, prometheus::TEXT_FORMAT);
    }

    #[tokio::test]
    async fn the_middleware_labels_requests_with_the_route_template() {
        let metrics = Arc::new(Metrics::new());
        let app = Router::new()
            .route("/v1/users/{id}/presence", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                track_http_requests,
            ));
        for uri in [
            "/v1/users/alice-123/presence",
            "/v1/users/bob/presence",
            "/secret-999",
        ] {
            let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let expected = if uri.starts_with("/v1") {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(response.status(), expected, "{uri}");
        }
        let rendered = metrics.render();
        for series in [
            r#"presence_http_requests_total{route="/v1/users/{id}/presence",status="200"} 2"#,
            r#"presence_http_requests_total{route="unmatched",status="404"} 1"#,
            r#"presence_http_request_duration_seconds_count{route="/v1/users/{id}/presence",status="200"} 2"#,
            r#"presence_http_request_duration_seconds_bucket{route="unmatched",status="404",le="+Inf"} 1"#,
        ] {
            assert!(
                rendered.contains(series),
                "{series} missing from:\n{rendered}"
            );
        }
        for id in ["alice-123", "bob", "secret-999"] {
            assert!(!rendered.contains(id), "{id} leaked into:\n{rendered}");
        }
    }
}

//! `presenced`: the presence service binary.
//!
//! `presenced serve` (the default) runs the gateway with the embedded
//! backend: every role in one process, durable data in `--data-dir`.
//! `presenced token` mints development tokens. Every flag has a
//! `PRESENCE_*` environment variable; `presenced --help` lists them.

mod cluster_metrics;
mod cluster_view;
mod config;
mod process_metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use presence_aggregator::{Aggregator, AggregatorConfig, AggregatorHandle};
use presence_backend::{Backend, SettingsPatch, SharedRateLimits};
use presence_embedded::{
    DurableStore, MemoryBackend, MemoryStore, RedbOptions, RedbStore, SystemClock,
};
use presence_gateway::app::App;
use presence_gateway::auth::{self, Authenticator, MintClaims};
use presence_gateway::budget::ConnectionBudget;
use presence_gateway::console::cluster::ClusterSource;
use presence_gateway::listener;
use presence_gateway::metrics::Metrics;
use presence_redis::{RedisBackend, RedisBackendConfig, RedisClient, RedisConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cluster_view::{LocalLag, RedisCluster};
use crate::config::{Cli, Command, LogFormat, Role, ServeArgs, TokenArgs};

/// Connections the metrics listener (`--metrics-listen`) holds at once.
const OPS_MAX_CONNECTIONS: usize = 64;

/// F3: an allocator that gives freed memory back to the system, so RSS
/// returns to its baseline after a burst: jemalloc, whose background
/// threads purge unused pages (measured in BENCHMARKS.md; glibc and
/// mimalloc kept 15–40 % above the baseline).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => token(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.validate()?;
    init_logging(args.log_format);
    let open_files = raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args, open_files))
}

async fn run(args: ServeArgs, open_files: u64) -> anyhow::Result<()> {
    // Flags are checked before anything is opened or bound.
    let gateway = args.with_connection_limits(args.gateway_config()?, open_files)?;
    let metrics = Metrics::new();
    process_metrics::export(metrics.registry()).context("registering the process metrics")?;
    let auth_config = config::auth_config(&args)?;
    let authenticator = Authenticator::new(auth_config).context("loading the JWT key")?;
    let shutdown = CancellationToken::new();
    let (backend, aggregator, redis_backend, redis_client) = match &args.redis {
        None => {
            if args.role != Role::All {
                bail!(
                    "--role {:?} needs --redis: the embedded mode runs every role",
                    args.role
                );
            }
            (embedded_backend(&args, &metrics).await?, None, None, None)
        }
        Some(url) => {
            // Cluster writes (stream appends, heartbeat batches, commit
            // scripts) in the histogram that times the embedded commits.
            let histogram = metrics.store_write_seconds.clone();
            presence_redis::observe_store_writes(Box::new(move |_kind, elapsed| {
                histogram.observe(elapsed.as_secs_f64());
            }));
            let (backend, aggregator, client) = cluster_backend(&args, url, &shutdown).await?;
            let dynamic: Arc<dyn Backend> = backend.clone();
            (dynamic, aggregator, Some(backend), Some(client))
        }
    };
    // Cluster mode: per-user rate limits shared by every gateway.
    let shared_limits = redis_backend
        .as_ref()
        .map(|backend| Arc::new(backend.rate_limits()) as Arc<dyn SharedRateLimits>);
    let node_id = redis_backend.as_ref().map(|b| b.node_id().to_owned());
    if let Some(backend) = redis_backend {
        cluster_metrics::export_redis(metrics.registry(), args.shards)
            .context("registering the Redis metrics")?;
        cluster_metrics::export_replies(metrics.registry(), backend.clone(), shutdown.clone())
            .context("registering the reply metrics")?;
        cluster_metrics::export_resyncs(&metrics, backend, shutdown.clone());
    }
    if let Some(aggregator) = &aggregator {
        cluster_metrics::export(metrics.registry(), aggregator.stats().clone())
            .context("registering the aggregator metrics")?;
    }
    // The console's cluster page reads the cluster through this (cluster
    // mode only).
    let cluster_source = redis_client
        .map(|client| RedisCluster {
            client,
            node: node_id.clone().unwrap_or_default(),
            shards: args.shards,
            local_lag: aggregator.as_ref().map(|aggregator| {
                let stats = aggregator.stats().clone();
                let lag: LocalLag = Arc::new(move || {
                    let s = stats.snapshot();
                    s.lease_epoch
                        .iter()
                        .zip(&s.stream_lag)
                        .map(|(&epoch, &lag)| (epoch != 0).then_some(lag))
                        .collect()
                });
                lag
            }),
        })
        .map(|cluster| ClusterSource(Arc::new(cluster)));
    let app = App::with_shared_limits(backend, shared_limits, authenticator, metrics, gateway);
    app.start_dispatcher().await;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr: SocketAddr = listener.local_addr()?;

    if let Some(metrics_addr) = args.metrics_listen {
        let listener = TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding {metrics_addr}"))?;
        let addr = listener.local_addr()?;
        println!("presenced metrics on http://{addr}");
        let ops = app.ops_router();
        let config = app.config.listener();
        let metrics = app.metrics.clone();
        let stop = app.shutdown.clone();
        // Probes and scrapers are few: a small budget of their own, so a
        // flood of the main port never starves them (nor they it).
        let budget = ConnectionBudget::new(OPS_MAX_CONNECTIONS);
        tokio::spawn(async move {
            listener::serve(
                listener,
                ops,
                budget,
                config,
                metrics,
                stop.cancelled_owned(),
            )
            .await;
        });
    }

    // Tests and scripts read this line to learn the port of `--listen :0`;
    // it comes last, once the metrics line (if any) is out.
    println!("presenced listening on http://{addr}");
    tracing::info!(%addr, role = ?args.role, cluster = args.redis.is_some(), "presenced started");

    let router = match args.role {
        Role::Aggregator => app.ops_router(),
        Role::All | Role::Gateway => match cluster_source {
            Some(source) => app.router().layer(axum::Extension(source)),
            None => app.router(),
        },
    };
    let shutdown_app = app.clone();
    listener::serve(
        listener,
        router,
        app.connections.clone(),
        app.config.listener(),
        app.metrics.clone(),
        async move {
            wait_for_signal().await;
            tracing::info!("shutting down: draining sockets");
            shutdown_app.drain().await;
        },
    )
    .await;
    if let Some(aggregator) = aggregator {
        aggregator.shutdown().await; // Releases the shard leases.
    }
    shutdown.cancel();
    tracing::info!("presenced stopped");
    Ok(())
}

/// The embedded backend: everything in this process, durable data in
/// `--data-dir`.
async fn embedded_backend(args: &ServeArgs, metrics: &Metrics) -> anyhow::Result<Arc<dyn Backend>> {
    let store: Arc<dyn DurableStore> = if args.ephemeral {
        tracing::warn!("--ephemeral: durable data is kept in memory only and lost on exit");
        Arc::new(MemoryStore::new())
    } else {
        let histogram = metrics.store_write_seconds.clone();
        let options = RedbOptions {
            on_commit: Some(Box::new(move |elapsed, _batches| {
                histogram.observe(elapsed.as_secs_f64());
            })),
            ..RedbOptions::default()
        };
        let store = RedbStore::open_with(&args.data_dir, options)
            .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
        Arc::new(store)
    };
    let backend = MemoryBackend::start(args.memory_config(), store, Arc::new(SystemClock))
        .context("loading durable data")?;
    if let Some(cap) = args.cap {
        let patch = SettingsPatch {
            cap: Some(cap),
            ..SettingsPatch::default()
        };
        backend
            .update_settings(patch)
            .await
            .context("applying --cap")?;
    }
    Ok(Arc::new(backend))
}

/// Cluster mode: the Redis backend, and the aggregator role if asked.
async fn cluster_backend(
    args: &ServeArgs,
    url: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<RedisBackend>, Option<AggregatorHandle>, RedisClient)> {
    let redis_config = RedisConfig {
        replica_acks: args.redis_replica_acks,
        ..RedisConfig::new(url)
    };
    let client = RedisClient::connect(redis_config)
        .await
        .context("connecting to Redis")?;
    client
        .ensure_meta(args.shards)
        .await
        .context("checking the cluster's shard count")?;
    let node_id = args.node_id();
    let refresh: Duration = args.device_refresh_interval.into();
    let device_timeout: Duration = args.device_timeout.into();
    let node_lease_ttl: Duration = args.node_lease_ttl.into();
    if device_timeout < refresh * 2 {
        bail!(
            "--device-timeout ({}) must be at least twice --device-refresh-interval ({}), \
             or live devices would expire between refreshes",
            args.device_timeout,
            args.device_refresh_interval
        );
    }
    if node_lease_ttl < Duration::from_millis(300) {
        bail!("--node-lease-ttl must be at least 300ms");
    }
    let heartbeat_timeout: Duration = args.heartbeat_timeout.into();
    let grace: Duration = args.disconnect_grace.map_or(heartbeat_timeout, Into::into);
    let aggregator = (args.role != Role::Gateway).then(|| {
        let config = AggregatorConfig {
            device_timeout,
            disconnect_grace: grace,
            // H4: sweeps wait this long after a Redis outage (every node
            // runs with the same refresh flags; each refresh also renews
            // the node lease).
            gateway_refresh_interval: refresh,
            ..AggregatorConfig::new(node_id.clone(), args.shards)
        };
        Aggregator::start(client.clone(), config, shutdown.clone())
    });
    let config = RedisBackendConfig {
        heartbeat_interval: refresh,
        device_timeout,
        node_lease_ttl,
        ..RedisBackendConfig::new(node_id.clone(), args.shards)
    };
    let backend = RedisBackend::start(client.clone(), config).await;
    if let Some(cap) = args.cap {
        let patch = SettingsPatch {
            cap: Some(cap),
            ..SettingsPatch::default()
        };
        backend
            .update_settings(patch)
            .await
            .context("applying --cap")?;
    }
    tracing::info!(node = %node_id, shards = args.shards, "joined the cluster");
    Ok((Arc::new(backend), aggregator, client))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = config::resolve_secret(args.jwt_secret.as_deref(), &args.data_dir, false)?;
    let Some(secret) = secret else {
        bail!(
            "no JWT secret: pass --jwt-secret, set PRESENCE_JWT_SECRET, or start \
             `presenced serve` once so it creates {}/jwt-secret",
            args.data_dir.display()
        );
    };
    let claims = MintClaims {
        sub: args.user,
        admin: args.admin,
        username: args.username,
        name: args.name,
        ttl: args.ttl.into(),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = auth::mint_hs256(&secret, &claims, now)?;
    println!("{token}");
    Ok(())
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// A process may hold many sockets: raise the soft open-files limit to the
/// hard limit (DESIGN §6). Returns the limit in force, which bounds
/// `--max-connections`.
fn raise_open_files_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open-files limit raised");
            limit
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

//! Connecting to Redis: the settings an operator controls, how they become
//! fred clients, and the [`RedisClient`] handle every other module hangs
//! its operations on.
//!
//! fred's defaults suit a cache, not a presence service (DESIGN §5): no
//! command timeout, a command queue that grows without bound while
//! reconnecting, commands replayed after a dropped connection, and a
//! 32-message pub/sub buffer. [`RedisConfig`] replaces each of them:
//!
//! - every command has a deadline ([`RedisConfig::command_timeout`]), so a
//!   dead Redis is an error within seconds, never a hang (H3);
//! - operations waiting for Redis are bounded
//!   ([`RedisConfig::max_command_buffer`]); beyond it they fail at once.
//!   The bound is ours (a semaphore around the pool), not fred's
//!   `max_command_buffer_len`: in fred 10.1 a command refused by that
//!   bounded queue leaks its slot in the router's pending-command count
//!   (`send_to_router` increments it, the `Full` branch of
//!   `ClientInner::send_command` never decrements it), and from then on
//!   the router believes more commands are coming and stops flushing the
//!   socket after commands such as `GET` or `SCRIPT LOAD`, which then
//!   hang until they time out. fred's queue is left unbounded and
//!   everything that reaches it has passed our bound;
//! - reconnection never gives up and backs off exponentially with jitter
//!   ([`Backoff`]), so a fleet of gateways does not stampede a restarted
//!   Redis;
//! - a command is written at most once: if its connection drops while it
//!   is in flight it fails instead of being replayed (an `XADD` or a commit
//!   that ran but whose reply was lost must not run twice);
//! - a connection that stops answering is closed and replaced
//!   ([`RedisConfig::unresponsive_timeout`]), and TCP keepalive finds
//!   half-open connections nobody writes to (the subscriber's);
//! - the subscriber's buffer is large and separate from the command
//!   pool's ([`RedisConfig::pubsub_broadcast_capacity`]).
//!
//! The command pool is several multiplexed connections
//! ([`RedisConfig::pool_size`]); the subscriber and every
//! [`StreamReader`](super::StreamReader) have their own connection, because
//! `SUBSCRIBE` and `XREAD BLOCK` monopolise one.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::{
    Blocking, Builder, ClientLike, Config, ConnectionConfig, EventInterface, PerformanceConfig,
    Pool, ReconnectPolicy, Server, ServerConfig, TcpConfig, TlsConnector,
};
use fred::types::config::UnresponsiveConfig;
use fred::types::{ClusterHash, CustomCommand, InfoKind};
use socket2::TcpKeepalive;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::error::RedisError;
use super::failover::{self, Failover, Watcher};
use super::scripts::Scripts;
use super::stream::StreamReader;
use super::subscriber::RedisSubscriber;
use super::url::{HostPort, RedisEndpoint, Topology};

/// How to reach Redis and how to behave when it misbehaves. Build it with
/// [`RedisConfig::new`] (production defaults) and override fields.
#[derive(Clone)]
pub struct RedisConfig {
    /// See [`RedisEndpoint`](super::RedisEndpoint) for the accepted forms:
    /// `redis://`, `rediss://`, a `host:port,host:port` cluster seed list,
    /// `redis+cluster://`, `redis+sentinel://…/service_name[/db]`.
    pub url: String,
    /// Multiplexed connections for commands. Default 4: one connection
    /// pipelines tens of thousands of commands per second; several spread
    /// the encoding work and keep one slow reply from delaying the rest.
    pub pool_size: usize,
    /// Every command fails with a timeout after this long. Default 2 s:
    /// far above a healthy Redis's sub-millisecond answers and the largest
    /// batch we send (a 500-op commit or load chunk, tens of ms), far below
    /// the 30 s heartbeat timeout that decides what a gateway must do.
    pub command_timeout: Duration,
    /// Opening a TCP (+TLS) connection, per attempt. Default 2 s.
    pub connect_timeout: Duration,
    /// Reconnection: forever, exponential backoff with jitter.
    pub reconnect: Backoff,
    /// Operations (a command, a script call or a pipeline) that may be
    /// waiting for Redis at once, across the pool; beyond it an operation
    /// fails at once with [`RedisError::Backpressure`] (H3: nothing buffers
    /// unbounded while Redis is away; each waiting operation gives up after
    /// `command_timeout`). Default 10 000: far above what a healthy Redis
    /// leaves outstanding at 50k operations/s (a few hundred), small
    /// enough that a dead Redis costs a few MB of queued commands.
    pub max_command_buffer: usize,
    /// A connection with a command unanswered for this long is closed and
    /// replaced. Default 3 s (a little above `command_timeout`: a command
    /// times out first, then the connection is given up on). Blocking
    /// reads are exempt.
    pub unresponsive_timeout: Duration,
    /// How often connections are checked for the above. Default 1 s.
    pub unresponsive_check_interval: Duration,
    /// TCP keepalive idle time before probes (then 3 probes 5 s apart):
    /// finds a dead peer on a connection nobody writes to. Default 10 s.
    pub tcp_keepalive: Duration,
    /// Messages the subscriber buffers for a slow reader before it lags
    /// (then the reader resyncs: see [`RedisSubscriber`]). Default 16 384:
    /// a second and a half of the 10 000 changes/s target. fred gives each
    /// client eight channels of this size, so only the subscriber gets it;
    /// the command pool keeps fred's 32.
    pub pubsub_broadcast_capacity: usize,
    /// `XADD … MAXLEN ~ <cap>` of every shard's event stream: the safety net
    /// for a shard without a leader (the leader trims what it applied).
    /// Default 100 000 entries (a few tens of MB per shard at most).
    pub stream_max_len: u64,
    /// R1: how many replicas must confirm each appended stream entry
    /// (`WAIT N`) before the append returns; fewer in time is an error
    /// ([`RedisError::NotReplicated`]), so a change a failover could lose
    /// is never acknowledged. `None` (the default) chooses at connect: 1
    /// with Sentinel and with a Redis Cluster whose primaries have
    /// replicas, 0 with a single server. See
    /// [`RedisClient::replica_acks`].
    pub replica_acks: Option<u32>,
    /// How long an append waits for the replicas (`WAIT`'s timeout).
    /// Default 1 s: a healthy replica confirms in well under a
    /// millisecond; a failover refuses writes for about this long plus the
    /// time to follow the new primary (writes refused ≤ 3 s). At most
    /// half of `command_timeout` is used, so the append's own deadline
    /// never cuts the wait short.
    pub replica_ack_timeout: Duration,
}

/// Jittered exponential backoff: `min_delay · 2^(n-1)`, plus up to
/// `jitter`, capped at `max_delay`; unlimited attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Default 100 ms.
    pub min_delay: Duration,
    /// Default 2 s: a restarted Redis is found within two seconds, which
    /// the 5 s failover target needs.
    pub max_delay: Duration,
    /// Random extra delay, so gateways cut off together do not reconnect
    /// together. Default 250 ms.
    pub jitter: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            jitter: Duration::from_millis(250),
        }
    }
}

impl RedisConfig {
    /// Production defaults (documented on each field) for `url`.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            pool_size: 4,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            reconnect: Backoff::default(),
            max_command_buffer: 10_000,
            unresponsive_timeout: Duration::from_secs(3),
            unresponsive_check_interval: Duration::from_secs(1),
            tcp_keepalive: Duration::from_secs(10),
            pubsub_broadcast_capacity: 16_384,
            stream_max_len: 100_000,
            replica_acks: None,
            replica_ack_timeout: Duration::from_secs(1),
        }
    }

    /// The URL parsed; also checks the other settings.
    pub fn endpoint(&self) -> Result<RedisEndpoint, RedisError> {
        let positive = [
            ("command_timeout", self.command_timeout),
            ("connect_timeout", self.connect_timeout),
            ("unresponsive_timeout", self.unresponsive_timeout),
            (
                "unresponsive_check_interval",
                self.unresponsive_check_interval,
            ),
            ("tcp_keepalive", self.tcp_keepalive),
            ("reconnect.min_delay", self.reconnect.min_delay),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(RedisError::Config(format!("{name} must be above zero")));
            }
        }
        let counts = [
            ("pool_size", self.pool_size),
            ("max_command_buffer", self.max_command_buffer),
            ("pubsub_broadcast_capacity", self.pubsub_broadcast_capacity),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(RedisError::Config(format!("{name} must be at least 1")));
            }
        }
        if self.reconnect.max_delay < self.reconnect.min_delay {
            return Err(RedisError::Config(
                "reconnect.max_delay is below reconnect.min_delay".into(),
            ));
        }
        if self.replica_ack_timeout.is_zero() {
            return Err(RedisError::Config(
                "replica_ack_timeout must be above zero".into(),
            ));
        }
        if self.stream_max_len == 0 {
            return Err(RedisError::Config(
                "stream_max_len must be at least 1".into(),
            ));
        }
        RedisEndpoint::parse(&self.url)
    }
}

/// Never prints the URL's password.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoint = RedisEndpoint::parse(&self.url)
            .map(|e| format!("{e:?}"))
            .unwrap_or_else(|_| "<invalid url>".into());
        f.debug_struct("RedisConfig")
            .field("endpoint", &format_args!("{endpoint}"))
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("max_command_buffer", &self.max_command_buffer)
            .field("unresponsive_timeout", &self.unresponsive_timeout)
            .field(
                "unresponsive_check_interval",
                &self.unresponsive_check_interval,
            )
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("pubsub_broadcast_capacity", &self.pubsub_broadcast_capacity)
            .field("stream_max_len", &self.stream_max_len)
            .field("replica_acks", &self.replica_acks)
            .field("replica_ack_timeout", &self.replica_ack_timeout)
            .finish()
    }
}

/// A connected pool of command connections, with the scripts loaded. Cheap
/// to clone (one `Arc`); every operation of cluster mode is a method of it
/// (leases, commits, streams, heartbeats, nodes, shard loads).
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// `max_command_buffer` permits: one per operation waiting for Redis.
    outstanding: Semaphore,
    /// Builds the subscriber and stream readers with the same settings.
    builder: Builder,
    cluster: bool,
    config: RedisConfig,
    scripts: Scripts,
    script_reloads: AtomicU64,
    /// `WAIT` this many replicas after each append (resolved at connect).
    replica_acks: u32,
    failover: Arc<Failover>,
    /// Follows the primary (Sentinel, Redis Cluster); stops when dropped.
    _watcher: Watcher,
}

impl RedisClient {
    /// Connects the command pool, detects Redis Cluster behind a plain
    /// `redis://` URL (`INFO cluster`), and loads every script
    /// (`SCRIPT LOAD`). Fails if Redis cannot be reached now; once
    /// connected, the client reconnects by itself forever.
    pub async fn connect(config: RedisConfig) -> Result<RedisClient, RedisError> {
        let endpoint = config.endpoint()?;
        let mut cluster = endpoint.is_cluster();
        let mut builder = fred_builder(&endpoint, &config, cluster)?;
        let mut pool = connect_pool(&builder, &config).await?;
        if let Topology::Standalone(_) = endpoint.topology {
            let detected = match is_cluster_node(&pool).await {
                Ok(detected) => detected,
                Err(e) => {
                    let _ = pool.quit().await;
                    return Err(e);
                }
            };
            if detected {
                tracing::info!(
                    "redis: the server is a Redis Cluster node; reconnecting in cluster mode"
                );
                let _ = pool.quit().await;
                cluster = true;
                builder = fred_builder(&endpoint, &config, cluster)?;
                pool = connect_pool(&builder, &config).await?;
            }
        }
        let scripts = match Scripts::load(&pool).await {
            Ok(scripts) => scripts,
            Err(e) => {
                let _ = pool.quit().await;
                return Err(e);
            }
        };
        for client in pool.clients() {
            log_connection_events(client, "commands");
        }
        let replica_acks = match config.replica_acks {
            Some(n) => n,
            None => match &endpoint.topology {
                Topology::Sentinel { .. } => 1,
                _ if cluster => match cluster_has_replicas(&pool).await {
                    Ok(has) => u32::from(has),
                    Err(e) => {
                        let _ = pool.quit().await;
                        return Err(e);
                    }
                },
                _ => 0,
            },
        };
        let failover = Arc::new(Failover::new());
        let watcher = failover::start(&endpoint, cluster, &builder, pool.clone(), failover.clone());
        tracing::info!(
            endpoint = ?endpoint,
            cluster,
            pool_size = config.pool_size,
            replica_acks,
            "redis: connected"
        );
        Ok(RedisClient {
            inner: Arc::new(Inner {
                pool,
                outstanding: Semaphore::new(config.max_command_buffer),
                builder,
                cluster,
                config,
                scripts,
                script_reloads: AtomicU64::new(0),
                replica_acks,
                failover,
                _watcher: watcher,
            }),
        })
    }

    /// Whether Redis is a Redis Cluster: pub/sub then uses the sharded
    /// `SSUBSCRIBE`/`SPUBLISH` (every channel carries its shard's hash
    /// tag), and fred routes each command to its slot's node.
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster
    }

    /// Whether every pooled connection is up right now (for `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.inner.pool.clients().iter().all(|c| c.is_connected())
    }

    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// How many replicas confirm every appended stream entry before
    /// [`append`](Self::append) returns (`RedisConfig::replica_acks`,
    /// resolved at connect).
    pub fn replica_acks(&self) -> u32 {
        self.inner.replica_acks
    }

    pub(crate) fn failover(&self) -> &Failover {
        &self.inner.failover
    }

    /// How many times a script was missing (`NOSCRIPT`: Redis restarted or
    /// `SCRIPT FLUSH`) and was loaded again.
    pub fn script_reloads(&self) -> u64 {
        self.inner.script_reloads.load(Ordering::Relaxed)
    }

    /// `PING`, within the command timeout.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let _: String = self.pool()?.ping(None).await?;
        Ok(())
    }

    /// Redis's clock (`TIME`) in ms since the Unix epoch: one clock all
    /// nodes can agree on, for callers that would rather not trust their
    /// own against other machines'.
    pub async fn server_time_ms(&self) -> Result<u64, RedisError> {
        let command = CustomCommand::new_static("TIME", ClusterHash::Random, false);
        let (secs, micros): (String, String) =
            self.pool()?.custom(command, Vec::<String>::new()).await?;
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| RedisError::protocol(format!("TIME answered {s:?}")))
        };
        Ok(parse(&secs)? * 1000 + parse(&micros)? / 1000)
    }

    /// A new subscriber connection with fred's resubscribe-on-reconnect;
    /// see [`RedisSubscriber`].
    pub async fn subscriber(&self) -> Result<RedisSubscriber, RedisError> {
        let mut builder = self.inner.builder.clone();
        builder.with_performance_config(|perf| {
            perf.broadcast_channel_capacity = self.inner.config.pubsub_broadcast_capacity;
        });
        let client = builder.build_subscriber_client()?;
        init_with_deadline(&client, &self.inner.config).await?;
        let registration = self.inner.failover.register(client.clone());
        Ok(RedisSubscriber::new(
            client,
            self.inner.cluster,
            registration,
        ))
    }

    /// A new connection of its own for blocking stream reads
    /// (`XREAD BLOCK`), so a leader waiting for commands never holds up a
    /// pooled connection. One per led shard.
    pub async fn stream_reader(&self) -> Result<StreamReader, RedisError> {
        let client = self.inner.builder.build()?;
        init_with_deadline(&client, &self.inner.config).await?;
        Ok(StreamReader::new(
            client,
            self.inner.config.command_timeout,
            self.primary_generation(),
        ))
    }

    /// Closes the pool's connections. Commands sent afterwards fail.
    pub async fn quit(&self) {
        let _ = self.inner.pool.quit().await;
    }

    /// The pool, for one operation: holds one of the `max_command_buffer`
    /// permits until dropped, or fails at once if none is left.
    pub(crate) fn pool(&self) -> Result<PoolGuard<'_>, RedisError> {
        match self.inner.outstanding.try_acquire() {
            Ok(permit) => Ok(PoolGuard {
                pool: &self.inner.pool,
                _permit: permit,
                started: std::time::Instant::now(),
            }),
            Err(_) => {
                super::stats::redis_stats().error(&RedisError::Backpressure);
                Err(RedisError::Backpressure)
            }
        }
    }

    pub(crate) fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    pub(crate) fn count_script_reload(&self) {
        self.inner.script_reloads.fetch_add(1, Ordering::Relaxed);
        super::stats::redis_stats().script_reload();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        quit_in_background(self.pool.clone());
    }
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("config", &self.inner.config)
            .field("cluster", &self.inner.cluster)
            .finish_non_exhaustive()
    }
}

/// The command pool, borrowed for one operation (see [`RedisClient::pool`]).
pub(crate) struct PoolGuard<'a> {
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
    /// The operation's latency is recorded when the guard drops.
    started: std::time::Instant,
}

impl Drop for PoolGuard<'_> {
    fn drop(&mut self) {
        super::stats::redis_stats().observe(self.started.elapsed());
    }
}

impl Deref for PoolGuard<'_> {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        self.pool
    }
}

/// Whether any primary of a Redis Cluster has a replica (`CLUSTER SLOTS`
/// lists replicas after each range's primary).
async fn cluster_has_replicas(pool: &Pool) -> Result<bool, RedisError> {
    let command = CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
    let reply: fred::types::Value = pool.next().custom(command, vec!["SLOTS"]).await?;
    let fred::types::Value::Array(ranges) = reply else {
        return Err(RedisError::protocol("CLUSTER SLOTS is not an array"));
    };
    Ok(ranges
        .iter()
        .any(|r| matches!(r, fred::types::Value::Array(items) if items.len() > 3)))
}

/// Whether the server behind a plain URL is a Redis Cluster node.
async fn is_cluster_node(pool: &Pool) -> Result<bool, RedisError> {
    let info: String = pool.info(Some(InfoKind::Cluster)).await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

async fn connect_pool(builder: &Builder, config: &RedisConfig) -> Result<Pool, RedisError> {
    let pool = builder.build_pool(config.pool_size)?;
    if let Err(e) = init_with_deadline(&pool, config).await {
        let _ = pool.quit().await;
        return Err(e);
    }
    Ok(pool)
}

/// `init` (connect and wait), bounded: fred fails fast on a refused
/// connection, but a black-holed address or a sentinel that never answers
/// must not stall start-up beyond the configured timeouts.
async fn init_with_deadline(
    client: &impl ClientLike,
    config: &RedisConfig,
) -> Result<(), RedisError> {
    let deadline = config.connect_timeout + config.command_timeout;
    match tokio::time::timeout(deadline, client.init()).await {
        Ok(Ok(_task)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            let _ = client.quit().await;
            Err(RedisError::Timeout(format!(
                "connecting to redis took longer than {deadline:?}"
            )))
        }
    }
}

/// The fred builder for `endpoint` with `config`'s settings; `cluster`
/// turns a standalone endpoint into a one-seed cluster.
fn fred_builder(
    endpoint: &RedisEndpoint,
    config: &RedisConfig,
    cluster: bool,
) -> Result<Builder, RedisError> {
    let server = |hp: &HostPort| Server::new(hp.host.clone(), hp.port);
    let server_config = match &endpoint.topology {
        Topology::Standalone(host) if cluster => ServerConfig::Clustered {
            hosts: vec![server(host)],
            policy: Default::default(),
        },
        Topology::Standalone(host) => ServerConfig::Centralized {
            server: server(host),
        },
        Topology::Cluster { seeds } => ServerConfig::Clustered {
            hosts: seeds.iter().map(server).collect(),
            policy: Default::default(),
        },
        Topology::Sentinel {
            sentinels,
            service_name,
            sentinel_username,
            sentinel_password,
        } => ServerConfig::Sentinel {
            hosts: sentinels.iter().map(server).collect(),
            service_name: service_name.clone(),
            username: sentinel_username.clone(),
            password: sentinel_password.clone(),
        },
    };
    let tls = if endpoint.tls {
        Some(TlsConnector::default_rustls()?.into())
    } else {
        None
    };
    let fred_config = Config {
        // The first connection's failure is returned to `connect`; later
        // ones run the reconnect policy.
        fail_fast: true,
        blocking: Blocking::Block,
        username: endpoint.username.clone(),
        password: endpoint.password.clone(),
        server: server_config,
        database: endpoint.database.filter(|_| !cluster),
        tls,
        ..Config::default()
    };
    let mut builder = Builder::from_config(fred_config);
    builder.set_performance_config(PerformanceConfig {
        default_command_timeout: config.command_timeout,
        ..PerformanceConfig::default()
    });
    let keepalive = TcpKeepalive::new()
        .with_time(config.tcp_keepalive)
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    builder.set_connection_config(ConnectionConfig {
        connection_timeout: config.connect_timeout,
        internal_command_timeout: config.command_timeout,
        max_command_attempts: 1,
        // Unbounded here, bounded by `RedisClient::pool` (see the module
        // documentation for the fred bug this avoids).
        max_command_buffer_len: 0,
        unresponsive: UnresponsiveConfig {
            max_timeout: Some(config.unresponsive_timeout),
            interval: config.unresponsive_check_interval,
        },
        tcp: TcpConfig {
            nodelay: Some(true),
            keepalive: Some(keepalive),
            ..TcpConfig::default()
        },
        ..ConnectionConfig::default()
    });
    builder.set_policy(ReconnectPolicy::Exponential {
        attempts: 0,
        max_attempts: 0,
        min_delay: millis(config.reconnect.min_delay),
        max_delay: millis(config.reconnect.max_delay),
        base: 2,
        jitter: millis(config.reconnect.jitter),
    });
    Ok(builder)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Closes a fred client without waiting: its router task would otherwise
/// keep reconnecting after the last handle is gone.
pub(crate) fn quit_in_background<C: ClientLike + Send + 'static>(client: C) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = client.quit().await;
        });
    }
}

/// Logs connection trouble once per event, for operators.
pub(crate) fn log_connection_events(client: &impl EventInterface, role: &'static str) {
    client.on_error(move |(error, server)| async move {
        tracing::warn!(role, server = ?server, %error, "redis: connection error");
        Ok(())
    });
    client.on_reconnect(move |server| async move {
        tracing::info!(role, %server, "redis: connected");
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounded() {
        let config = RedisConfig::new("redis://127.0.0.1:6379");
        config.endpoint().unwrap();
        assert!(config.command_timeout < config.unresponsive_timeout);
        assert!(config.reconnect.max_delay <= Duration::from_secs(5));
        assert!(config.max_command_buffer > 0);
    }

    #[test]
    fn nonsense_settings_are_refused() {
        let base = RedisConfig::new("redis://h");
        type Change = fn(&mut RedisConfig);
        let cases: [(&str, Change); 5] = [
            ("command_timeout", |c| c.command_timeout = Duration::ZERO),
            ("pool_size", |c| c.pool_size = 0),
            ("max_command_buffer", |c| c.max_command_buffer = 0),
            ("reconnect.max_delay", |c| {
                c.reconnect.max_delay = Duration::from_millis(1)
            }),
            ("stream_max_len", |c| c.stream_max_len = 0),
        ];
        for (name, change) in cases {
            let mut config = base.clone();
            change(&mut config);
            let error = config.endpoint().unwrap_err();
            assert!(error.to_string().contains(name), "{name}: {error}");
        }
    }

    #[test]
    fn the_builder_carries_the_settings_into_fred() {
        let config = RedisConfig::new("redis+sentinel://:pw@s1:26379,s2/mymaster/2");
        let endpoint = config.endpoint().unwrap();
        let builder = fred_builder(&endpoint, &config, false).unwrap();
        let fred = builder.get_config().unwrap();
        assert_eq!(fred.database, Some(2));
        assert_eq!(fred.password.as_deref(), Some("pw"));
        match &fred.server {
            ServerConfig::Sentinel {
                hosts,
                service_name,
                ..
            } => {
                assert_eq!(service_name, "mymaster");
                assert_eq!(hosts.len(), 2);
                assert_eq!(hosts[1].port, 26379);
            }
            other => panic!("not sentinel: {other:?}"),
        }
        let connection = builder.get_connection_config();
        assert_eq!(connection.max_command_attempts, 1);
        assert_eq!(
            connection.max_command_buffer_len, 0,
            "bounded by our semaphore"
        );
        assert_eq!(
            connection.unresponsive.max_timeout,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            builder.get_performance_config().default_command_timeout,
            Duration::from_secs(2)
        );
        assert!(matches!(
            builder.get_policy(),
            Some(ReconnectPolicy::Exponential {
                max_attempts: 0,
                ..
            })
        ));
    }

    #[test]
    fn a_standalone_url_becomes_a_one_seed_cluster_when_detected() {
        let config = RedisConfig::new("redis://n1:7000/0");
        let endpoint = config.endpoint().unwrap();
        let builder = fred_builder(&endpoint, &config, true).unwrap();
        let fred = builder.get_config().unwrap();
        assert!(matches!(&fred.server, ServerConfig::Clustered { hosts, .. } if hosts.len() == 1));
        assert_eq!(fred.database, None);
    }
}

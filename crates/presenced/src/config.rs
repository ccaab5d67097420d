//! Command-line flags and `PRESENCE_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use presence_core::MAX_IDLE_TIME_LIMIT_SECS;
use presence_embedded::MemoryConfig;
use presence_gateway::auth::AuthConfig;
use presence_gateway::config::GatewayConfig;
use presence_gateway::ratelimit::{Rate, RateLimits};

#[derive(Debug, Parser)]
#[command(
    name = "presenced",
    version,
    about = "Presence service: who is online, away, busy or offline, pushed in real time.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Mint a development token signed with the HS256 secret.
    Token(TokenArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Which roles this process runs (DESIGN §2). Every process is a gateway
/// unless it runs only the aggregator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Gateway and aggregator (the default).
    All,
    /// Serves clients; leaves aggregation to other nodes.
    Gateway,
    /// Competes for shard leases only; serves just /healthz, /readyz and
    /// /metrics.
    Aggregator,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KeyAlgorithm {
    Rs256,
    Eddsa,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for WebSocket, REST and metrics (port 0 picks one).
    #[arg(long, env = "PRESENCE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Also serve /healthz, /readyz and /metrics on this address (a
    /// separate port for probes and Prometheus; port 0 picks one). The
    /// main address keeps /healthz and /readyz but no longer serves
    /// /metrics, which stays off the public port.
    #[arg(long, env = "PRESENCE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Directory of the durable data (chosen statuses, texts, preferences,
    /// settings, custom statuses). Created if missing.
    #[arg(long, env = "PRESENCE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Join a cluster through Redis (`redis://host:6379/0`,
    /// `redis+sentinel://host:26379/service`, or a cluster seed list).
    /// Without it presenced runs embedded: every role in one process.
    #[arg(long, env = "PRESENCE_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// Roles of this process in cluster mode.
    #[arg(long, env = "PRESENCE_ROLE", value_enum, default_value = "all")]
    pub role: Role,

    /// Shards of the cluster (every node must agree; stored in Redis).
    #[arg(long, env = "PRESENCE_SHARDS", default_value_t = 16)]
    pub shards: u16,

    /// This node's id in the cluster (default: host name and a random
    /// suffix). Must be unique among running nodes.
    #[arg(long, env = "PRESENCE_NODE_ID")]
    pub node_id: Option<String>,

    /// Cluster mode: how often a gateway refreshes its devices' heartbeats
    /// and its node lease in Redis (H1).
    #[arg(long, env = "PRESENCE_DEVICE_REFRESH_INTERVAL", default_value = "10s")]
    pub device_refresh_interval: humantime::Duration,

    /// Cluster mode: a device whose heartbeat was not refreshed for this
    /// long is removed by its shard leader (H1). More than twice the
    /// refresh interval.
    #[arg(long, env = "PRESENCE_DEVICE_TIMEOUT", default_value = "30s")]
    pub device_timeout: humantime::Duration,

    /// Cluster mode: the node lease, renewed every third of it; when it
    /// lapses (crash, partition) leaders remove all of the node's devices
    /// at once (H2).
    #[arg(long, env = "PRESENCE_NODE_LEASE_TTL", default_value = "10s")]
    pub node_lease_ttl: humantime::Duration,

    /// Cluster mode: a change is acknowledged only once this many Redis
    /// replicas hold it (`WAIT`), so a failover cannot lose it (R1); if
    /// they do not confirm within a second the client gets
    /// `backend_unavailable`. Default: 1 with Sentinel and with a Redis
    /// Cluster that has replicas, 0 with a single server.
    #[arg(long, env = "PRESENCE_REDIS_REPLICA_ACKS")]
    pub redis_replica_acks: Option<u32>,

    /// Keep durable data in memory only (lost on exit). For experiments.
    #[arg(long, env = "PRESENCE_EPHEMERAL")]
    pub ephemeral: bool,

    /// HS256 secret for tokens (at least 32 bytes). Without it and without
    /// --jwt-public-key, a random secret is created in <data-dir>/jwt-secret.
    #[arg(long, env = "PRESENCE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key file to verify RS256 or EdDSA tokens instead of HS256.
    #[arg(long, env = "PRESENCE_JWT_PUBLIC_KEY", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<PathBuf>,

    /// Algorithm of --jwt-public-key.
    #[arg(
        long,
        env = "PRESENCE_JWT_ALGORITHM",
        value_enum,
        default_value = "rs256"
    )]
    pub jwt_algorithm: KeyAlgorithm,

    /// Presence cap: concurrent connections before broadcasting stops
    /// (0 = unlimited). Overrides the stored workspace setting at start.
    #[arg(long, env = "PRESENCE_CAP")]
    pub cap: Option<u64>,

    /// How often the server pings each socket.
    #[arg(long, env = "PRESENCE_HEARTBEAT_INTERVAL", default_value = "20s")]
    pub heartbeat_interval: humantime::Duration,

    /// A socket silent this long is closed and its device treated as lost.
    #[arg(long, env = "PRESENCE_HEARTBEAT_TIMEOUT", default_value = "30s")]
    pub heartbeat_timeout: humantime::Duration,

    /// How long a lost device shows away before it goes offline (D7).
    /// Defaults to the heartbeat timeout.
    #[arg(long, env = "PRESENCE_DISCONNECT_GRACE")]
    pub disconnect_grace: Option<humantime::Duration>,

    /// On SIGTERM, socket closes are spread over this window.
    #[arg(long, env = "PRESENCE_DRAIN_WINDOW", default_value = "10s")]
    pub drain_window: humantime::Duration,

    /// Most users one socket may subscribe to.
    #[arg(long, env = "PRESENCE_MAX_SUBSCRIPTIONS", default_value_t = 10_000)]
    pub max_subscriptions: usize,

    /// Most subscriptions one user may hold across all their sockets on
    /// this node (F3: many sockets must not multiply the per-socket limit).
    #[arg(
        long,
        env = "PRESENCE_MAX_SUBSCRIPTIONS_PER_USER",
        default_value_t = 20_000
    )]
    pub max_subscriptions_per_user: usize,

    /// Largest WebSocket frame accepted, in bytes.
    #[arg(long, env = "PRESENCE_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,

    /// Status changes per user per second (sustained).
    #[arg(
        long,
        env = "PRESENCE_STATUS_CHANGES_PER_SECOND",
        default_value_t = 1.0
    )]
    pub status_changes_per_second: f64,

    /// Status changes per user allowed in a burst.
    #[arg(long, env = "PRESENCE_STATUS_CHANGES_BURST", default_value_t = 5)]
    pub status_changes_burst: u32,

    /// Status-text changes per user per minute.
    #[arg(long, env = "PRESENCE_TEXT_CHANGES_PER_MINUTE", default_value_t = 5)]
    pub text_changes_per_minute: u32,

    /// WebSocket messages per connection per second (sustained).
    #[arg(
        long,
        env = "PRESENCE_SOCKET_MESSAGES_PER_SECOND",
        default_value_t = 20.0
    )]
    pub socket_messages_per_second: f64,

    /// WebSocket messages per connection allowed in a burst.
    #[arg(long, env = "PRESENCE_SOCKET_MESSAGES_BURST", default_value_t = 60)]
    pub socket_messages_burst: u32,

    /// TESTING ONLY: lowers the 60 s floor of idle time limits (S2) so
    /// end-to-end tests can watch auto-away in seconds. Never set this in
    /// production.
    #[arg(long, env = "PRESENCE_MIN_IDLE_TIME_LIMIT", default_value_t = 60)]
    pub min_idle_time_limit: u64,

    // Connection budgets and timeouts of the accept path (issue 10: X6,
    // F1, F4).
    /// X6: WebSocket sockets one user may hold on this node at once; the
    /// next is refused with 429 `too_many_sockets` before the upgrade and
    /// never counts toward the presence cap. Per node: in a cluster a user
    /// may hold this many on each gateway. 1 to 10000.
    #[arg(long, env = "PRESENCE_MAX_SOCKETS_PER_USER", default_value_t = 16)]
    pub max_sockets_per_user: usize,

    /// Client connections (HTTP and WebSocket) this node holds at once;
    /// past it, 503 `too_many_connections` with `Retry-After`. Default:
    /// the open-files limit less a tenth (at least 64) kept for Redis, the
    /// data directory and the metrics listener. 1 to that default.
    #[arg(long, env = "PRESENCE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// A connection that has not sent complete request headers (a
    /// WebSocket handshake included) within this is closed; so is a
    /// keep-alive HTTP connection idle this long. 100ms to 5m.
    #[arg(long, env = "PRESENCE_HANDSHAKE_TIMEOUT", default_value = "10s")]
    pub handshake_timeout: humantime::Duration,

    /// Log format on stderr; filter with RUST_LOG.
    #[arg(
        long,
        env = "PRESENCE_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub user: String,
    /// Grant the admin role.
    #[arg(long)]
    pub admin: bool,
    /// Optional `username` claim (Rocket.Chat clients show it).
    #[arg(long)]
    pub username: Option<String>,
    /// Optional display `name` claim.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime of the token.
    #[arg(long, default_value = "24h")]
    pub ttl: humantime::Duration,
    /// The HS256 secret; defaults to the one `presenced serve` created.
    #[arg(long, env = "PRESENCE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Where `presenced serve` keeps its data (and jwt-secret).
    #[arg(long, env = "PRESENCE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

impl ServeArgs {
    /// This node's cluster id.
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_owned());
        let suffix: u32 = rand::random();
        format!("{host}-{suffix:08x}")
    }

    pub fn memory_config(&self) -> MemoryConfig {
        let grace: Duration = self
            .disconnect_grace
            .map_or(self.heartbeat_timeout.into(), Into::into);
        MemoryConfig {
            disconnect_grace: grace,
            ..MemoryConfig::default()
        }
    }

    pub fn gateway_config(&self) -> anyhow::Result<GatewayConfig> {
        self.validate()?;
        if self.min_idle_time_limit < presence_core::MIN_IDLE_TIME_LIMIT_SECS {
            tracing::warn!(
                floor = self.min_idle_time_limit,
                "the idle time limit floor is lowered for testing; never do this in production"
            );
        }
        let per_minute = f64::from(self.text_changes_per_minute) / 60.0;
        Ok(GatewayConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_subscriptions: self.max_subscriptions,
            max_subscriptions_per_user: self.max_subscriptions_per_user,
            ping_interval: self.heartbeat_interval.into(),
            heartbeat_timeout: self.heartbeat_timeout.into(),
            drain_window: self.drain_window.into(),
            idle_floor_secs: self.min_idle_time_limit,
            rate_limits: RateLimits {
                status: Rate::new(self.status_changes_burst, self.status_changes_per_second)
                    .context("--status-changes-*")?,
                status_text: Rate::new(self.text_changes_per_minute, per_minute)
                    .context("--text-changes-per-minute")?,
                ws_messages: Rate::new(self.socket_messages_burst, self.socket_messages_per_second)
                    .context("--socket-messages-*")?,
                ..RateLimits::default()
            },
            ..GatewayConfig::default()
        })
    }
}

/// The connection budgets and timeouts (X6, F1, F4), kept apart from
/// [`ServeArgs::gateway_config`] so each group validates its own flags.
impl ServeArgs {
    /// Fills the accept-path limits into `config`. `open_files` is the
    /// process's open-files limit, which bounds `--max-connections`.
    pub fn with_connection_limits(
        &self,
        mut config: GatewayConfig,
        open_files: u64,
    ) -> anyhow::Result<GatewayConfig> {
        if !(1..=MAX_SOCKETS_PER_USER).contains(&self.max_sockets_per_user) {
            bail!(
                "--max-sockets-per-user must be between 1 and {MAX_SOCKETS_PER_USER} (got {})",
                self.max_sockets_per_user
            );
        }
        let ceiling = default_max_connections(open_files);
        let max_connections = self.max_connections.unwrap_or(ceiling);
        if !(1..=ceiling).contains(&max_connections) {
            bail!(
                "--max-connections must be between 1 and {ceiling} (the open-files limit \
                 {open_files} less a reserve for Redis, storage and the metrics listener); \
                 got {max_connections}"
            );
        }
        let handshake: Duration = self.handshake_timeout.into();
        if !(MIN_HANDSHAKE_TIMEOUT..=MAX_HANDSHAKE_TIMEOUT).contains(&handshake) {
            bail!(
                "--handshake-timeout must be between 100ms and 5m (got {})",
                self.handshake_timeout
            );
        }
        config.max_sockets_per_user = self.max_sockets_per_user;
        config.max_connections = max_connections;
        config.handshake_timeout = handshake;
        config.metrics_on_main_listener = self.metrics_listen.is_none();
        Ok(config)
    }
}

/// The most sockets `--max-sockets-per-user` allows.
pub const MAX_SOCKETS_PER_USER: usize = 10_000;
const MIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(300);

/// The default (and the ceiling) of `--max-connections`: the open-files
/// limit less a tenth of it, at least 64, for everything else the process
/// opens. Never below 1.
pub fn default_max_connections(open_files: u64) -> usize {
    let reserve = (open_files / 10).max(64);
    usize::try_from(open_files.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The verification key from the flags: a public key file, or the HS256
/// secret (created in the data directory on first start when absent).
pub fn auth_config(args: &ServeArgs) -> anyhow::Result<AuthConfig> {
    if let Some(path) = &args.jwt_public_key {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the JWT public key {}", path.display()))?;
        return Ok(match args.jwt_algorithm {
            KeyAlgorithm::Rs256 => AuthConfig::Rs256 {
                public_key_pem: pem,
            },
            KeyAlgorithm::Eddsa => AuthConfig::EdDsa {
                public_key_pem: pem,
            },
        });
    }
    if args.ephemeral && args.jwt_secret.is_none() {
        bail!("--ephemeral needs --jwt-secret or --jwt-public-key");
    }
    let secret = resolve_secret(args.jwt_secret.as_deref(), &args.data_dir, true)?
        .context("no JWT secret")?;
    Ok(AuthConfig::Hs256 { secret })
}

/// The HS256 secret: the flag, else `<data_dir>/jwt-secret`, created with a
/// random value when `create` is set.
pub fn resolve_secret(
    flag: Option<&str>,
    data_dir: &Path,
    create: bool,
) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(secret) = flag {
        return Ok(Some(secret.as_bytes().to_vec()));
    }
    let path = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) => return Ok(Some(secret.trim().as_bytes().to_vec())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("reading {}", path.display()));
        }
        Err(_) => {}
    }
    if !create {
        return Ok(None);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let secret: String = (0..48)
        .map(|_| char::from(b"0123456789abcdef"[rand::random_range(0..16)]))
        .collect();
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "created a development JWT secret; mint tokens with `presenced token --user <id>`"
    );
    Ok(Some(secret.into_bytes()))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// The allowed range of one numeric flag (F7: every duration and count is
/// checked at start, so a zero or absurd value is refused with a message
/// naming the flag instead of breaking sockets later).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlagRange {
    Duration {
        value: Option<Duration>,
        min: Duration,
        max: Duration,
    },
    Count {
        value: Option<u64>,
        min: u64,
        max: u64,
    },
    Rate {
        value: f64,
        min: f64,
        max: f64,
    },
}

impl FlagRange {
    /// A duration flag (`None` for an optional flag that was not given).
    fn duration(
        value: impl Into<Option<humantime::Duration>>,
        min: Duration,
        max: Duration,
    ) -> Self {
        Self::Duration {
            value: value.into().map(Into::into),
            min,
            max,
        }
    }

    fn count(value: impl TryInto<u64>, min: u64, max: u64) -> Self {
        Self::Count {
            // A value that does not fit in u64 is out of every range.
            value: Some(value.try_into().unwrap_or(u64::MAX)),
            min,
            max,
        }
    }

    fn optional_count(value: Option<u64>, min: u64, max: u64) -> Self {
        Self::Count { value, min, max }
    }

    fn rate(value: f64, min: f64, max: f64) -> Self {
        Self::Rate { value, min, max }
    }

    /// `Err` with the allowed range when the value lies outside it.
    fn check(self, flag: &str) -> anyhow::Result<()> {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        match self {
            Self::Duration {
                value: Some(v),
                min,
                max,
            } if v < min || v > max => bail!(
                "{flag} {} is out of range: allowed {} to {}",
                fmt(v),
                fmt(min),
                fmt(max)
            ),
            Self::Count {
                value: Some(v),
                min,
                max,
            } if v < min || v > max => {
                bail!("{flag} {v} is out of range: allowed {min} to {max}")
            }
            // `!(v >= min)` also refuses NaN.
            Self::Rate { value, min, max } if !(value >= min && value <= max) => {
                bail!("{flag} {value} is out of range: allowed {min} to {max}")
            }
            _ => Ok(()),
        }
    }
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl ServeArgs {
    /// Every numeric flag with its allowed range. Adding a flag is one line.
    #[rustfmt::skip]
    pub fn flag_ranges(&self) -> Vec<(&'static str, FlagRange)> {
        use FlagRange as R;
        vec![
            ("--shards", R::count(self.shards, 1, 4096)),
            ("--device-refresh-interval", R::duration(self.device_refresh_interval, 100 * MS, 10 * MINUTE)),
            ("--device-timeout", R::duration(self.device_timeout, SECOND, HOUR)),
            ("--node-lease-ttl", R::duration(self.node_lease_ttl, 300 * MS, 10 * MINUTE)),
            ("--cap", R::optional_count(self.cap, 0, 100_000_000)),
            ("--heartbeat-interval", R::duration(self.heartbeat_interval, 100 * MS, 10 * MINUTE)),
            ("--heartbeat-timeout", R::duration(self.heartbeat_timeout, 200 * MS, HOUR)),
            ("--disconnect-grace", R::duration(self.disconnect_grace, 100 * MS, HOUR)),
            ("--drain-window", R::duration(self.drain_window, 10 * MS, 10 * MINUTE)),
            ("--max-subscriptions", R::count(self.max_subscriptions, 1, 1_000_000)),
            ("--max-subscriptions-per-user", R::count(self.max_subscriptions_per_user, 1, 10_000_000)),
            ("--max-frame-bytes", R::count(self.max_frame_bytes, 1024, 16 * 1024 * 1024)),
            ("--status-changes-per-second", R::rate(self.status_changes_per_second, 0.001, 1_000_000.0)),
            ("--status-changes-burst", R::count(self.status_changes_burst, 1, 1_000_000)),
            ("--text-changes-per-minute", R::count(self.text_changes_per_minute, 1, 10_000_000)),
            ("--socket-messages-per-second", R::rate(self.socket_messages_per_second, 0.001, 1_000_000.0)),
            ("--socket-messages-burst", R::count(self.socket_messages_burst, 1, 1_000_000)),
            ("--min-idle-time-limit", R::count(self.min_idle_time_limit, 1, MAX_IDLE_TIME_LIMIT_SECS)),
            ("--max-sockets-per-user", R::count(self.max_sockets_per_user, 1, MAX_SOCKETS_PER_USER as u64)),
            // The open-files limit narrows this further at start
            // (`with_connection_limits`).
            ("--max-connections", R::optional_count(self.max_connections.map(|n| n as u64), 1, 10_000_000)),
            ("--handshake-timeout", R::duration(self.handshake_timeout, MIN_HANDSHAKE_TIMEOUT, MAX_HANDSHAKE_TIMEOUT)),
            ("--redis-replica-acks", R::optional_count(self.redis_replica_acks.map(u64::from), 0, 16)),
        ]
    }

    /// Refuses flags out of range and combinations that cannot work,
    /// naming the flag and what is allowed.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, range) in self.flag_ranges() {
            range.check(flag)?;
        }
        let interval: Duration = self.heartbeat_interval.into();
        let timeout: Duration = self.heartbeat_timeout.into();
        if timeout <= interval {
            bail!(
                "--heartbeat-timeout ({}) must be longer than --heartbeat-interval ({}), \
                 or live sockets would be closed between pings",
                self.heartbeat_timeout,
                self.heartbeat_interval
            );
        }
        let refresh: Duration = self.device_refresh_interval.into();
        let device_timeout: Duration = self.device_timeout.into();
        if device_timeout < refresh * 2 {
            bail!(
                "--device-timeout ({}) must be at least twice --device-refresh-interval ({}), \
                 or live devices would expire between refreshes",
                self.device_timeout,
                self.device_refresh_interval
            );
        }
        if self.max_subscriptions_per_user < self.max_subscriptions {
            bail!(
                "--max-subscriptions-per-user ({}) must be at least --max-subscriptions ({})",
                self.max_subscriptions_per_user,
                self.max_subscriptions
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;

    /// Parses `presenced serve <args>` as the binary would, but without
    /// reading `PRESENCE_*` variables, so the tests do not depend on (or
    /// touch) the process environment.
    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let command = Cli::command().mut_args(|a| a.env(None));
        let argv = ["presenced", "serve"].iter().chain(args);
        let mut matches = command.try_get_matches_from(argv)?;
        let cli = Cli::from_arg_matches_mut(&mut matches)?;
        match cli.command {
            Some(Command::Serve(args)) => Ok(*args),
            other => panic!("expected the serve command, got {other:?}"),
        }
    }

    /// `Ok(())` when accepted; `Err(message)` when parsing or validation
    /// refused the flags.
    fn check(args: &[&str]) -> Result<(), String> {
        let args = parse(args).map_err(|e| e.to_string())?;
        args.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn f7_defaults_are_valid() {
        assert_eq!(check(&[]), Ok(()));
        let args = parse(&[]).unwrap();
        assert!(args.gateway_config().is_ok());
    }

    #[test]
    fn f7_out_of_range_flags_are_refused_naming_the_flag_and_range() {
        // (arguments, text the error must contain)
        let refused: &[(&[&str], &str)] = &[
            (
                &["--heartbeat-interval", "0s"],
                "--heartbeat-interval 0s is out of range: allowed 100ms to 10m",
            ),
            (&["--heartbeat-interval", "1year"], "--heartbeat-interval"),
            (
                &["--heartbeat-timeout", "0s"],
                "--heartbeat-timeout 0s is out of range",
            ),
            (&["--heartbeat-timeout", "100days"], "allowed 200ms to 1h"),
            (
                &["--disconnect-grace", "0s"],
                "--disconnect-grace 0s is out of range",
            ),
            (&["--drain-window", "0s"], "--drain-window"),
            (
                &["--device-refresh-interval", "0s"],
                "--device-refresh-interval",
            ),
            (&["--device-timeout", "0s"], "--device-timeout"),
            (
                &["--node-lease-ttl", "1ms"],
                "--node-lease-ttl 1ms is out of range: allowed 300ms to 10m",
            ),
            (
                &["--shards", "0"],
                "--shards 0 is out of range: allowed 1 to 4096",
            ),
            (&["--shards", "65535"], "--shards"),
            (&["--cap", "1000000000000"], "--cap"),
            (
                &["--max-subscriptions", "0"],
                "--max-subscriptions 0 is out of range: allowed 1 to 1000000",
            ),
            (
                &["--max-subscriptions-per-user", "0"],
                "--max-subscriptions-per-user 0 is out of range",
            ),
            (
                &["--max-frame-bytes", "10"],
                "--max-frame-bytes 10 is out of range: allowed 1024 to 16777216",
            ),
            (
                &["--max-frame-bytes", "18446744073709551615"],
                "--max-frame-bytes",
            ),
            (
                &["--status-changes-per-second", "0"],
                "--status-changes-per-second 0 is out of range",
            ),
            (
                &["--status-changes-per-second", "NaN"],
                "--status-changes-per-second NaN",
            ),
            (
                &["--status-changes-per-second", "inf"],
                "--status-changes-per-second inf",
            ),
            (
                &["--status-changes-per-second=-1"],
                "--status-changes-per-second -1",
            ),
            (&["--status-changes-burst", "0"], "--status-changes-burst 0"),
            (
                &["--text-changes-per-minute", "0"],
                "--text-changes-per-minute 0",
            ),
            (
                &["--socket-messages-per-second", "0"],
                "--socket-messages-per-second 0",
            ),
            (
                &["--socket-messages-burst", "0"],
                "--socket-messages-burst 0",
            ),
            (&["--min-idle-time-limit", "0"], "--min-idle-time-limit 0"),
            (&["--min-idle-time-limit", "86401"], "allowed 1 to 86400"),
            // Negative values never parse; clap names the flag.
            (&["--heartbeat-interval=-1s"], "--heartbeat-interval"),
            (&["--max-subscriptions=-1"], "--max-subscriptions"),
            (&["--cap=-1"], "--cap"),
            // Combinations that cannot work.
            (
                &["--heartbeat-interval", "30s", "--heartbeat-timeout", "30s"],
                "--heartbeat-timeout (30s) must be longer than --heartbeat-interval (30s)",
            ),
            (
                &[
                    "--device-refresh-interval",
                    "10s",
                    "--device-timeout",
                    "15s",
                ],
                "--device-timeout (15s) must be at least twice",
            ),
            (
                &[
                    "--max-subscriptions",
                    "5000",
                    "--max-subscriptions-per-user",
                    "100",
                ],
                "--max-subscriptions-per-user (100) must be at least --max-subscriptions (5000)",
            ),
        ];
        for (args, expected) in refused {
            match check(args) {
                Ok(()) => panic!("{args:?} was accepted"),
                Err(message) => assert!(
                    message.contains(expected),
                    "{args:?}: {message:?} does not contain {expected:?}"
                ),
            }
        }
    }

    #[test]
    fn f7_values_at_the_edges_and_those_the_tests_use_are_accepted() {
        let accepted: &[&[&str]] = &[
            &[
                "--heartbeat-interval",
                "100ms",
                "--heartbeat-timeout",
                "200ms",
            ],
            &[
                "--heartbeat-interval",
                "200ms",
                "--heartbeat-timeout",
                "1s",
                "--disconnect-grace",
                "1s",
            ],
            &["--heartbeat-interval", "10m", "--heartbeat-timeout", "1h"],
            &[
                "--device-refresh-interval",
                "500ms",
                "--device-timeout",
                "1s",
            ],
            &["--node-lease-ttl", "300ms"],
            &["--cap", "0"],
            &["--shards", "1"],
            &["--max-frame-bytes", "1024"],
            &["--max-subscriptions", "3"],
            &[
                "--status-changes-per-second",
                "0.01",
                "--status-changes-burst",
                "2",
            ],
            &[
                "--status-changes-burst",
                "10000",
                "--status-changes-per-second",
                "10000",
            ],
            &["--text-changes-per-minute", "100000"],
            &[
                "--socket-messages-per-second",
                "0.1",
                "--socket-messages-burst",
                "10",
            ],
            &["--min-idle-time-limit", "1"],
            &["--drain-window", "1s"],
        ];
        for args in accepted {
            assert_eq!(check(args), Ok(()), "{args:?}");
        }
    }

    #[test]
    fn f7_every_numeric_flag_has_a_range() {
        // A new duration or count flag must get a line in `flag_ranges`;
        // this lists the flags that are not numeric on purpose.
        let not_numeric = [
            "listen",
            "metrics-listen",
            "data-dir",
            "redis",
            "role",
            "node-id",
            "ephemeral",
            "jwt-secret",
            "jwt-public-key",
            "jwt-algorithm",
            "log-format",
            "help",
            "version",
        ];
        let args = parse(&[]).unwrap();
        let ranged: Vec<&str> = args
            .flag_ranges()
            .iter()
            .map(|(flag, _)| flag.trim_start_matches("--"))
            .collect();
        for arg in Cli::command().get_arguments() {
            let name = arg.get_id().as_str().replace('_', "-");
            if arg.get_long().is_none() || not_numeric.contains(&name.as_str()) {
                continue;
            }
            assert!(
                ranged.contains(&name.as_str()),
                "--{name} has no range in flag_ranges"
            );
        }
    }
}

//! [`RedisBackend`]: the gateway side of cluster mode (`docs/cluster.md`).
//!
//! The gateway talks to a [`Backend`](presence_backend::Backend); in cluster mode that backend owns no
//! user state. It turns every mutation into a [`ClusterCommand`] appended to
//! the user's shard stream (admin commands to shard 0's), and waits for the
//! shard leader's [`ReplyMessage`](wire::ReplyMessage) when the caller needs an answer. Reads
//! go straight to the views and documents the leaders store.
//!
//! ```text
//!  gateway ─ Backend call ─► append(presence:{s}:events, command, reply id r)
//!                                   │ (shard leader applies, commits)
//!  waiter(r) ◄─ pump task ◄─ presence:{s}:node:<this node>  {node, r, result}
//!  subscribe() ◄─ pump task ◄─ presence:{s}:updates / presence:{0}:control
//!  liveness task ─► refresh_node (H2, X1) + refresh_heartbeats (H1)
//! ```
//!
//! One file per concept:
//!
//! - `methods.rs`: every [`Backend`](presence_backend::Backend) method, mapped onto a command, a
//!   request or a read;
//! - `requests.rs`: appending a command with a reply id and waiting for
//!   its answer (the waiters, appends retried after an ambiguous failure,
//!   admin requests and their `Sync`), and the reply recovery task;
//! - `reply_errors.rs`: a leader's refusal back into the [`BackendError`]
//!   the embedded backend would have returned;
//! - `pump.rs`: the pub/sub pump (subscription and its probe, dispatch of
//!   replies, updates and control messages);
//! - `resync.rs`: re-reading stored views after pub/sub lost messages;
//! - `seen.rs`: the W3 filter, the last versions emitted per user,
//!   bounded;
//! - `stored_reads.rs`: reads of stored views and of the cached
//!   cluster-wide state; `directory.rs`: the scans of every user;
//! - `liveness.rs`: node lease, socket count, heartbeats, re-registration
//!   and the start announcement.
//!
//! Three background tasks run per backend (the third, the reply
//! recovery, is described under "Truthful replies" below):
//!
//! - the **pump** owns the [`RedisSubscriber`](super::RedisSubscriber): it
//!   resolves waiters, turns [`UpdateMessage`]s into [`Update::Presence`] /
//!   [`Update::SelfState`] (dropping versions not newer than the last seen,
//!   W3) and [`ControlMessage`]s into [`Update::Broadcast`] /
//!   [`Update::Settings`];
//! - the **liveness** task refreshes this node's lease and socket count
//!   every [`RedisBackendConfig::heartbeat_interval`] and the heartbeat
//!   deadlines of its live devices, one `ZADD` per 500 devices; it also
//!   stores the socket count within ~100 ms of a connect or disconnect
//!   (X1), coalescing bursts into one write.
//!
//! **Truthful replies (R1).** A reply id is unique across nodes and
//! restarts ([`wire::reply_id`]: node, a per-process random nonce, a
//! counter). The leader's commit stores every answer under
//! `presence:{s}:reply:<id>` with the change, and also publishes it. A
//! third task, the **reply recovery**, reads the stored outcomes of the
//! requests still waiting (one `MGET` per shard) whenever the answer may
//! have been missed: right after the subscriber reconnected or lagged,
//! and for every request older than 500 ms, every 250 ms. So a request that was applied is acknowledged,
//! within a second, even when its pub/sub answer was lost; a request is
//! answered `backend_unavailable` only when Redis is unreachable or no
//! leader applied it within the request timeout. An `XADD` that failed
//! ambiguously (sent, then the connection dropped or timed out) is
//! appended again with the same reply id, marked as a retry: the leader
//! answers a retry from the stored outcome of its id, so it is never
//! applied twice.
//!
//! **H4.** When Redis comes back after it was unreachable (a liveness
//! write failed, or the subscriber reconnected), the liveness task
//! refreshes the node lease and every heartbeat at once, retrying every
//! 250 ms until it succeeds, rather than at the next interval;
//! leaders hold their sweeps off long enough for this (see
//! `presence-aggregator`'s `holdoff.rs`).
//!
//! **Resync (H3).** Pub/sub loses messages on reconnect and lag. On any
//! [`SubscriberEvent::Resync`] the pump re-reads the stored views of every
//! user this backend tracks (read with
//! [`Backend::presence`](presence_backend::Backend::presence) — the gateway reads a
//! user before it pushes their updates, so this covers every watched user
//! — or with a socket here; at most
//! [`RedisBackendConfig::seen_capacity`] besides the latter, least
//! recently used forgotten first, `seen.rs`) and the own views of users
//! with a socket here, and emits an [`Update`] for each one newer than
//! what was last emitted. The gateway's own resync (a lagged broadcast receiver)
//! still works as with any backend. After a `Reconnected` resync, and
//! whenever `refresh_node` says the node lease had lapsed, every live
//! device is registered again with a `Connect` (the leader may have
//! removed it). A re-registered device starts `online` (D1); its client
//! re-reports idle or lock.
//!
//! **Directory reads** (`list_not_offline(None)`, `list_changed_since`,
//! `user_by_username`, `status_counts`) scan every shard's user set and
//! `MGET` the users' views, own views and documents, 500 users per round
//! trip: O(users) per call. They are admin/compat endpoints, so
//! correctness comes first; a username index and maintained counters
//! written by the leaders are the way to make them cheap.
//! `list_changed_since` compares the stored view's version, which leaders
//! derive from their clock (`max(previous + 1, now_ms · 1000)`), with the
//! time asked; `user_by_username` picks, among documents carrying the
//! name, the one written last (a username can move between users).
//!
//! **Architecture Invariant:** this backend never writes user state. It
//! writes only stream entries, heartbeat deadlines (`ZADD XX GT`) and its
//! own node lease and socket count.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use presence_core::{CapState, CustomStatus, Platform, WorkspaceSettings};
use presence_protocol::cluster::CommandResult;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::client::RedisClient;
use crate::error::RedisError;
use crate::ratelimit::RedisRateLimits;
use presence_backend::{BackendError, BackendResult, ConnId, Interest, Update};
use presence_core::Profile;

/// Capacity of the [`Update`] broadcast channel.
mod directory;
mod liveness;
mod methods;
mod pump;
mod reply_errors;
mod requests;
mod resync;
mod seen;

use seen::SeenVersions;
mod stored_reads;

pub use reply_errors::error_from_reply;
pub use seen::DEFAULT_SEEN_CAPACITY;

/// Capacity of the [`Update`] broadcast channel.
const UPDATE_CHANNEL_CAPACITY: usize = 16_384;

/// How a [`RedisBackend`] behaves. [`RedisBackendConfig::new`] gives the
/// defaults of DESIGN §2.
#[derive(Clone, Debug)]
pub struct RedisBackendConfig {
    /// This gateway's node id: unique in the cluster, stable across the
    /// process's life. Replies are addressed to it.
    pub node_id: String,
    /// The cluster's shard count (`presence:meta`).
    pub shards: u16,
    /// How long a caller waits for a shard leader's answer before
    /// `backend_unavailable`. Default 5 s (a leader failover takes ≤ 5 s).
    pub request_timeout: Duration,
    /// How often heartbeats and the node lease are refreshed (H1). Default
    /// 10 s.
    pub heartbeat_interval: Duration,
    /// The heartbeat deadline written for each live device (H1). Default
    /// 30 s.
    pub device_timeout: Duration,
    /// The node lease (H2), renewed every third of it. Default 10 s: a
    /// crashed node's devices go offline for everyone within about that.
    pub node_lease_ttl: Duration,
    /// How many users' versions (W3) this node tracks besides those with a
    /// socket here before it forgets the least recently used (see
    /// `seen.rs`). Default [`DEFAULT_SEEN_CAPACITY`].
    pub seen_capacity: usize,
}

impl RedisBackendConfig {
    pub fn new(node_id: impl Into<String>, shards: u16) -> RedisBackendConfig {
        RedisBackendConfig {
            node_id: node_id.into(),
            shards: shards.max(1),
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(10),
            device_timeout: Duration::from_secs(30),
            node_lease_ttl: Duration::from_secs(10),
            seen_capacity: DEFAULT_SEEN_CAPACITY,
        }
    }
}

/// How the gateway side of cluster mode kept its answers truthful and
/// its devices alive, counted since start ([`RedisBackend::reply_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyStats {
    /// Requests answered from their stored outcome
    /// (`presence:{s}:reply:<id>`) because their pub/sub answer was
    /// missed or late.
    pub recovered: u64,
    /// Requests whose stream entry was appended again, with the same
    /// reply id, after an append failed ambiguously (counted once per
    /// request).
    pub append_retries: u64,
    /// Heartbeat refresh commands sent (H1).
    pub heartbeat_commands: u64,
    /// Times every live device was registered again (H2, H3).
    pub reregistrations: u64,
}

/// The cluster-mode [`Backend`](presence_backend::Backend) (see the module documentation).
pub struct RedisBackend {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The per-user rate limits shared with every other gateway.
    rate_limits: RedisRateLimits,
}

struct Inner {
    client: RedisClient,
    config: RedisBackendConfig,
    updates: broadcast::Sender<Update>,
    waiters: Mutex<HashMap<String, Waiter>>,
    next_id: AtomicU64,
    /// Random per process: reply ids of a restarted node never repeat
    /// those of its previous run.
    nonce: u64,
    /// Wakes the reply recovery to read the outcome of every request still
    /// waiting (the subscriber reconnected or lagged).
    recover_replies: Notify,
    /// Wakes the liveness task to refresh the node lease and every
    /// heartbeat now (Redis is back, H4).
    refresh_soon: Notify,
    /// Requests answered from a stored outcome rather than pub/sub, and
    /// entries appended again after an ambiguous failure (tests, logs).
    replies_recovered: AtomicU64,
    append_retries: AtomicU64,
    /// Per user: the last public and own versions emitted (W3), bounded;
    /// its tracked users are the ones resynced after a pub/sub loss.
    seen: Mutex<SeenVersions>,
    /// This node's open sockets.
    live: Mutex<HashMap<ConnId, LiveSocket>>,
    /// The users the gateway wants updates about; `None`: every user.
    interest: RwLock<Option<Arc<dyn Interest>>>,
    /// Update lines skipped without decoding: nobody here wanted them.
    updates_skipped: AtomicU64,
    cluster: Mutex<Option<CachedCluster>>,
    subscribed: AtomicBool,
    /// Woken whenever `subscribed` turns true.
    subscribed_changed: Notify,
    stopping: AtomicBool,
    /// Wakes the liveness task to register every live device again.
    reregister: Notify,
    /// Wakes the liveness task to store the socket count (X1).
    count_changed: Notify,
    stop: Notify,
    /// Times every live device was registered again (tests, metrics).
    reregistrations: AtomicU64,
    /// Resyncs after the subscriber lagged / reconnected, and the
    /// messages it lost lagging (for `/metrics`).
    resyncs_lagged: AtomicU64,
    resyncs_reconnected: AtomicU64,
    lagged_messages: AtomicU64,
    /// When the node lease was last renewed (ms since the epoch): proof
    /// that Redis answers, for readiness.
    lease_renewed_ms: AtomicU64,
    /// Heartbeat refresh commands sent (tests, metrics).
    heartbeat_commands: AtomicU64,
}

/// A request waiting for its answer.
struct Waiter {
    tx: oneshot::Sender<CommandResult>,
    shard: u16,
    since: tokio::time::Instant,
}

#[derive(Clone, Debug)]
struct LiveSocket {
    user: Arc<str>,
    device: presence_core::DeviceId,
    platform: Platform,
    profile: Profile,
}

#[derive(Clone, Debug)]
struct CachedCluster {
    settings: Arc<WorkspaceSettings>,
    custom: Vec<CustomStatus>,
    cap: CapState,
}

impl RedisBackend {
    /// Starts the background tasks and returns once the subscriber listens
    /// (or after the request timeout if Redis is unreachable);
    /// [`Backend::ready`](presence_backend::Backend::ready) tells which. Call
    /// [`RedisClient::ensure_meta`] first.
    pub async fn start(client: RedisClient, config: RedisBackendConfig) -> RedisBackend {
        let (updates, _) = broadcast::channel(UPDATE_CHANNEL_CAPACITY);
        let seen_capacity = config.seen_capacity;
        let rate_limits =
            RedisRateLimits::start(client.clone(), config.shards, config.node_id.clone());
        let inner = Arc::new(Inner {
            client,
            config,
            updates,
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            nonce: process_nonce(),
            recover_replies: Notify::new(),
            refresh_soon: Notify::new(),
            replies_recovered: AtomicU64::new(0),
            append_retries: AtomicU64::new(0),
            seen: Mutex::new(SeenVersions::new(seen_capacity)),
            live: Mutex::new(HashMap::new()),
            interest: RwLock::new(None),
            updates_skipped: AtomicU64::new(0),
            cluster: Mutex::new(None),
            subscribed: AtomicBool::new(false),
            subscribed_changed: Notify::new(),
            stopping: AtomicBool::new(false),
            reregister: Notify::new(),
            count_changed: Notify::new(),
            stop: Notify::new(),
            reregistrations: AtomicU64::new(0),
            resyncs_lagged: AtomicU64::new(0),
            resyncs_reconnected: AtomicU64::new(0),
            lagged_messages: AtomicU64::new(0),
            lease_renewed_ms: AtomicU64::new(0),
            heartbeat_commands: AtomicU64::new(0),
        });
        let pump = tokio::spawn(pump::run_pump(inner.clone()));
        let liveness = tokio::spawn(liveness::run_liveness(inner.clone()));
        let recovery = tokio::spawn(requests::run_reply_recovery(inner.clone()));
        // Replies published before the subscriber listens would be lost:
        // give it the time of one request to start listening.
        inner.wait_subscribed(inner.config.request_timeout).await;
        inner.announce_start().await;
        RedisBackend {
            inner,
            tasks: Mutex::new(vec![pump, liveness, recovery]),
            rate_limits,
        }
    }

    /// The per-user rate limits this node shares with every other gateway
    /// of the cluster (on the same Redis connection pool).
    pub fn rate_limits(&self) -> RedisRateLimits {
        self.rate_limits.clone()
    }

    /// The node id replies are addressed to.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Sockets open on this node (what `refresh_node` reports, X1).
    pub fn connections(&self) -> u64 {
        self.inner.live.lock().len() as u64
    }

    /// How many times every live device was registered again (H2, H3).
    pub fn reregistrations(&self) -> u64 {
        self.inner.reregistrations.load(Ordering::Relaxed)
    }

    /// Resyncs since start: `(after the subscriber lagged, after it
    /// reconnected)`, and the pub/sub messages lost lagging.
    pub fn resync_stats(&self) -> (u64, u64, u64) {
        let inner = &self.inner;
        (
            inner.resyncs_lagged.load(Ordering::Relaxed),
            inner.resyncs_reconnected.load(Ordering::Relaxed),
            inner.lagged_messages.load(Ordering::Relaxed),
        )
    }

    /// The truthful-reply counters since start (R1), for `/metrics`.
    pub fn reply_stats(&self) -> ReplyStats {
        let inner = &self.inner;
        ReplyStats {
            recovered: inner.replies_recovered.load(Ordering::Relaxed),
            append_retries: inner.append_retries.load(Ordering::Relaxed),
            heartbeat_commands: inner.heartbeat_commands.load(Ordering::Relaxed),
            reregistrations: inner.reregistrations.load(Ordering::Relaxed),
        }
    }

    /// Users whose versions (W3) this node holds now: `(tracked, strangers)`
    /// (see [`RedisBackendConfig::seen_capacity`]).
    pub fn seen_users(&self) -> (usize, usize) {
        self.inner.seen.lock().sizes()
    }

    /// Updates skipped since start without being decoded, because no
    /// socket here wanted their user ([`Backend::set_interest`](presence_backend::Backend::set_interest)).
    pub fn skipped_updates(&self) -> u64 {
        self.inner.updates_skipped.load(Ordering::Relaxed)
    }

    /// Heartbeat `ZADD` commands sent since start (H1).
    pub fn heartbeat_commands(&self) -> u64 {
        self.inner.heartbeat_commands.load(Ordering::Relaxed)
    }

    /// Runs one liveness round now (node lease, count, heartbeats), as the
    /// background task does every interval.
    pub async fn refresh_now(&self) -> Result<(), RedisError> {
        self.inner.refresh_liveness().await
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        for task in self.tasks.lock().iter() {
            task.abort();
        }
    }
}

impl Inner {
    pub(super) fn check_running(&self) -> BackendResult<()> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(BackendError::ShuttingDown);
        }
        Ok(())
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> BackendResult<T> {
    serde_json::from_str(json)
        .map_err(|e| BackendError::Unavailable(format!("{what} in redis does not decode: {e}")))
}

fn unavailable(error: RedisError) -> BackendError {
    BackendError::Unavailable(error.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A random number per process (std's hasher keys are random per
/// process), mixed with the time and the process id.
fn process_nonce() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

//! [`RedisBackend`]: the gateway side of cluster mode (`docs/cluster.md`).
//!
//! The gateway talks to a [`Backend`]; in cluster mode that backend owns no
//! user state. It turns every mutation into a [`ClusterCommand`] appended to
//! the user's shard stream (admin commands to shard 0's), and waits for the
//! shard leader's [`ReplyMessage`](wire::ReplyMessage) when the caller needs an answer. Reads
//! go straight to the views and documents the leaders store.
//!
//! ```text
//!  gateway ─ Backend call ─► append(presence:{s}:events, command, reply id r)
//!                                   │ (shard leader applies, commits)
//!  waiter(r) ◄─ pump task ◄─ presence:{s}:replies  {node, r, result}
//!  subscribe() ◄─ pump task ◄─ presence:{s}:updates / presence:{0}:control
//!  liveness task ─► refresh_node (H2, X1) + refresh_heartbeats (H1)
//! ```
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
//! user this backend has seen (read with [`Backend::presence`] or updated
//! since start: the gateway reads a user before it pushes their updates, so
//! this covers every watched user) and the own views of users with a
//! socket here, and emits an [`Update`] for each one newer than what was
//! last emitted. The gateway's own resync (a lagged broadcast receiver)
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

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fred::prelude::{KeysInterface, SetsInterface};
use parking_lot::Mutex;
use presence_core::{
    CalendarSource, CapState, CustomStatus, CustomStatusId, CustomStatusName, DeviceEvent,
    DisplayedStatus, Platform, PreferencesUpdate, PresenceError, PublicView, SelfStatus,
    StatusRequest, Timestamp, UserPresence, WorkspaceSettings,
};
use presence_protocol::cluster::{
    self as wire, AdminCommand, ClusterCommand, CommandOk, CommandResult, ControlMessage,
    NodeMessage, ShardCommand, StoredSelf, StoredView, UpdateMessage, UserCommand,
};
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::task::JoinHandle;

use super::client::RedisClient;
use super::error::RedisError;
use super::heartbeats::HEARTBEAT_CHUNK;
use super::keys::{Keys, heartbeat_member, shard_of};
use super::shard::LOAD_CHUNK;
use super::subscriber::{ResyncReason, SubscriberEvent};
use crate::backend::{
    Backend, BackendError, BackendResult, ConnId, ConnectInfo, PresenceSnapshot, SelfSnapshot,
    Session, SettingsPatch, SocketEnd, StatusCounts, Update, UserListing,
};
use crate::durable::{Profile, UserRecord};

/// Capacity of the [`Update`] broadcast channel.
const UPDATE_CHANNEL_CAPACITY: usize = 16_384;
/// Pause before building the subscriber again after it failed or closed.
const SUBSCRIBER_RETRY: Duration = Duration::from_millis(200);
/// How long a subscription probe may take to come back, and how many are
/// sent before the subscriber is rebuilt.
const PROBE_WAIT: Duration = Duration::from_millis(500);
const PROBE_TRIES: usize = 6;
/// How long socket count changes are gathered before one write.
const COUNT_COALESCE: Duration = Duration::from_millis(100);
/// Pause before retrying a resync whose reads failed.
const RESYNC_RETRY: Duration = Duration::from_millis(250);
/// Pause before retrying a registration of every live device that failed.
const REGISTRATION_RETRY: Duration = Duration::from_millis(500);
/// A request still unanswered after this long has its stored outcome
/// read from Redis (its pub/sub answer may have been lost).
const REPLY_CHECK_AFTER: Duration = Duration::from_millis(500);
/// How often the reply recovery looks at the requests still waiting.
const REPLY_CHECK_EVERY: Duration = Duration::from_millis(250);
/// Pause between appends of the same entry after an ambiguous failure.
const APPEND_RETRY: Duration = Duration::from_millis(100);
/// Pause between liveness refreshes while they fail (Redis unreachable):
/// the first one that succeeds is the refresh "as soon as Redis is back"
/// that H4 counts on.
const LIVENESS_RETRY: Duration = Duration::from_millis(250);
/// The stream entry's user for cluster-wide admin commands (the trait does
/// not say which admin asked).
const ADMIN_USER: &str = "admin";

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
    pub heartbeat_timeout: Duration,
    /// The node lease (H2), renewed every third of it. Default 10 s: a
    /// crashed node's devices go offline for everyone within about that.
    pub node_lease_ttl: Duration,
}

impl RedisBackendConfig {
    pub fn new(node_id: impl Into<String>, shards: u16) -> RedisBackendConfig {
        RedisBackendConfig {
            node_id: node_id.into(),
            shards: shards.max(1),
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            node_lease_ttl: Duration::from_secs(10),
        }
    }
}

/// The cluster-mode [`Backend`] (see the module documentation).
pub struct RedisBackend {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
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
    /// Per user: the last public and own versions emitted (W3). Also the
    /// set of users resynced after a pub/sub loss.
    seen: Mutex<HashMap<Arc<str>, Seen>>,
    /// This node's open sockets.
    live: Mutex<HashMap<ConnId, LiveSocket>>,
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

#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    public: u64,
    own: u64,
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
    /// [`Backend::ready`] tells which. Call
    /// [`RedisClient::ensure_meta`] first.
    pub async fn start(client: RedisClient, config: RedisBackendConfig) -> RedisBackend {
        let (updates, _) = broadcast::channel(UPDATE_CHANNEL_CAPACITY);
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
            seen: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
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
        let pump = tokio::spawn(run_pump(inner.clone()));
        let liveness = tokio::spawn(run_liveness(inner.clone()));
        let recovery = tokio::spawn(run_reply_recovery(inner.clone()));
        // Replies published before the subscriber listens would be lost:
        // give it the time of one request to start listening.
        inner.wait_subscribed(inner.config.request_timeout).await;
        inner.announce_start().await;
        RedisBackend {
            inner,
            tasks: Mutex::new(vec![pump, liveness, recovery]),
        }
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

    /// Requests answered from their stored outcome (their pub/sub answer
    /// was missed or late), and entries appended again with the same
    /// reply id after an ambiguous failure, since start.
    pub fn reply_stats(&self) -> (u64, u64) {
        let inner = &self.inner;
        (
            inner.replies_recovered.load(Ordering::Relaxed),
            inner.append_retries.load(Ordering::Relaxed),
        )
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

#[async_trait]
impl Backend for RedisBackend {
    async fn connect(&self, session: &Session) -> BackendResult<ConnectInfo> {
        let inner = &self.inner;
        inner.check_running()?;
        inner.live.lock().insert(
            session.conn,
            LiveSocket {
                user: session.user.clone(),
                device: session.device.clone(),
                platform: session.platform,
                profile: session.profile.clone(),
            },
        );
        let command = connect_command(&inner.config.node_id, session);
        let result = async {
            let ok = inner.request(&session.user, command).await?;
            let me = self_snapshot(&session.user, ok)?;
            let cluster = inner.cluster_state().await?;
            Ok(ConnectInfo {
                me,
                settings: cluster.settings,
                presence_active: cluster.cap.enabled,
            })
        }
        .await;
        if result.is_ok() {
            inner.count_changed.notify_one();
        } else {
            inner.live.lock().remove(&session.conn);
            // The leader may have applied the connect without us hearing
            // back: take it back so a refused connect leaves no ghost
            // device (if this append fails too, the device's heartbeat
            // lapses, since nothing refreshes it).
            let undo = disconnect_command(session, SocketEnd::Clean);
            let _ = inner.append(&session.user, undo, None).await;
        }
        result
    }

    async fn device_event(&self, session: &Session, event: DeviceEvent) -> BackendResult<()> {
        let command = ClusterCommand::User(UserCommand::DeviceEvent {
            device: session.device.clone(),
            event,
        });
        self.inner.request(&session.user, command).await.map(drop)
    }

    async fn calendar(
        &self,
        user: &str,
        event_id: String,
        busy: bool,
        source: CalendarSource,
    ) -> BackendResult<SelfSnapshot> {
        let command = ClusterCommand::User(UserCommand::Calendar {
            event_id,
            busy,
            source,
        });
        let ok = self.inner.request(user, command).await?;
        self_snapshot(user, ok)
    }

    async fn disconnect(&self, session: &Session, end: SocketEnd) -> BackendResult<()> {
        let removed = self.inner.live.lock().remove(&session.conn).is_some();
        if !removed {
            // Already disconnected (or never connected): nothing to tell.
            return Ok(());
        }
        self.inner.count_changed.notify_one();
        let command = disconnect_command(session, end);
        self.inner.request(&session.user, command).await.map(drop)
    }

    async fn set_status(
        &self,
        user: &str,
        profile: Option<&Profile>,
        request: StatusRequest,
    ) -> BackendResult<SelfSnapshot> {
        self.inner.touch_profile_quietly(user, profile).await?;
        let command = ClusterCommand::User(UserCommand::SetStatus { request });
        let ok = self.inner.request(user, command).await?;
        self_snapshot(user, ok)
    }

    async fn use_custom_status(
        &self,
        user: &str,
        profile: Option<&Profile>,
        id: &CustomStatusId,
    ) -> BackendResult<SelfSnapshot> {
        self.inner.touch_profile_quietly(user, profile).await?;
        let command = ClusterCommand::User(UserCommand::UseCustomStatus { id: id.clone() });
        let ok = self.inner.request(user, command).await?;
        self_snapshot(user, ok)
    }

    async fn set_preferences(
        &self,
        user: &str,
        update: PreferencesUpdate,
    ) -> BackendResult<SelfSnapshot> {
        let command = ClusterCommand::User(UserCommand::SetPreferences {
            auto_away: update.auto_away,
            idle_time_limit: update.idle_time_limit,
        });
        let ok = self.inner.request(user, command).await?;
        self_snapshot(user, ok)
    }

    async fn self_state(&self, user: &str) -> BackendResult<SelfSnapshot> {
        let inner = &self.inner;
        inner.check_running()?;
        let key = Keys::for_user(user, inner.config.shards).self_view(user);
        let stored: Option<String> = async {
            let value: Option<String> = inner.client.pool()?.get(key).await?;
            Ok::<_, RedisError>(value)
        }
        .await
        .map_err(unavailable)?;
        match stored {
            Some(json) => {
                let stored: StoredSelf = decode(&json, "a stored own view")?;
                Ok(SelfSnapshot {
                    user: Arc::from(user),
                    view: stored.view,
                    version: stored.version,
                })
            }
            None => {
                let settings = inner.cluster_state().await?.settings;
                Ok(SelfSnapshot {
                    user: Arc::from(user),
                    view: UserPresence::default().self_view(&settings),
                    version: 0,
                })
            }
        }
    }

    async fn touch_profile(&self, user: &str, profile: &Profile) -> BackendResult<()> {
        let command = ClusterCommand::User(UserCommand::TouchProfile {
            profile: wire_profile(profile),
        });
        self.inner.request(user, command).await.map(drop)
    }

    async fn presence(&self, users: &[Arc<str>]) -> BackendResult<Vec<PresenceSnapshot>> {
        let inner = &self.inner;
        inner.check_running()?;
        let views = inner.read_views(users).await?;
        let mut seen = inner.seen.lock();
        Ok(users
            .iter()
            .zip(views)
            .map(|(user, view)| {
                // Watched from now on (resyncs cover it), but what was read
                // is not what was *sent* to watchers: marking it would make
                // a lost update of this version look delivered.
                seen.entry(user.clone()).or_default();
                snapshot_of(user.clone(), view)
            })
            .collect())
    }

    async fn list_not_offline(&self, ids: Option<&[Arc<str>]>) -> BackendResult<Vec<UserListing>> {
        let inner = &self.inner;
        inner.check_running()?;
        let scanned = match ids {
            Some(ids) => inner.scan_users(ids.to_vec()).await?,
            None => inner.scan_users(inner.all_users().await?).await?,
        };
        Ok(scanned
            .into_iter()
            .filter(|u| u.presence.view.status != DisplayedStatus::Offline)
            .map(ScannedUser::listing)
            .collect())
    }

    async fn list_changed_since(
        &self,
        since: Timestamp,
        except: &str,
    ) -> BackendResult<Vec<UserListing>> {
        let inner = &self.inner;
        inner.check_running()?;
        let scanned = inner.scan_users(inner.all_users().await?).await?;
        Ok(scanned
            .into_iter()
            .filter(|u| &*u.presence.user != except)
            .filter(|u| u.presence.version >= changed_since_version(since))
            .map(ScannedUser::listing)
            .collect())
    }

    async fn user_by_username(&self, username: &str) -> BackendResult<Option<Arc<str>>> {
        let inner = &self.inner;
        inner.check_running()?;
        let scanned = inner.scan_users(inner.all_users().await?).await?;
        // A username can move to another user: the record written last
        // carries it now.
        Ok(scanned
            .into_iter()
            .filter_map(|u| {
                let record = u.record?;
                (record.profile.username.as_deref() == Some(username))
                    .then_some((record.updated_at, u.presence.user))
            })
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
            .map(|(_, user)| user))
    }

    /// The sum of every shard's `presence:{s}:counts`, which each leader
    /// commits with the views (so it is as fresh as a read of them); a
    /// scan of every user only while some shard has not written its
    /// counts yet (no leader since start, or data of an older version).
    async fn status_counts(&self) -> BackendResult<StatusCounts> {
        let inner = &self.inner;
        inner.check_running()?;
        let stored = inner
            .client
            .read_counts(inner.config.shards)
            .await
            .map_err(unavailable)?;
        if stored.iter().all(Option::is_some) {
            let mut counts = StatusCounts::default();
            for json in stored.into_iter().flatten() {
                let shard: wire::StoredCounts = decode(&json, "a shard's counts")?;
                counts.online += shard.online;
                counts.away += shard.away;
                counts.busy += shard.busy;
                counts.invisible += shard.invisible;
            }
            return Ok(counts);
        }
        let scanned = inner.scan_users(inner.all_users().await?).await?;
        let mut counts = StatusCounts::default();
        for user in scanned {
            match user.presence.view.status {
                DisplayedStatus::Online => counts.online += 1,
                DisplayedStatus::Away => counts.away += 1,
                DisplayedStatus::Busy => counts.busy += 1,
                DisplayedStatus::Offline => {
                    if user.own_status == Some(SelfStatus::Invisible) {
                        counts.invisible += 1;
                    }
                }
            }
        }
        Ok(counts)
    }

    async fn settings(&self) -> BackendResult<Arc<WorkspaceSettings>> {
        self.inner.check_running()?;
        Ok(self.inner.cluster_state().await?.settings)
    }

    async fn update_settings(&self, patch: SettingsPatch) -> BackendResult<Arc<WorkspaceSettings>> {
        let command = ClusterCommand::Admin(AdminCommand::UpdateSettings { patch });
        let ok = self.inner.admin_request(command).await?;
        let settings = ok.settings.ok_or_else(|| {
            BackendError::Unavailable("the leader's answer lacks settings".into())
        })?;
        Ok(Arc::new(settings))
    }

    async fn custom_statuses(&self) -> BackendResult<Vec<CustomStatus>> {
        self.inner.check_running()?;
        Ok(self.inner.cluster_state().await?.custom)
    }

    async fn create_custom_status(
        &self,
        name: CustomStatusName,
        status_type: DisplayedStatus,
    ) -> BackendResult<CustomStatus> {
        let command = ClusterCommand::Admin(AdminCommand::CreateCustomStatus {
            id: self.inner.new_custom_status_id(),
            name,
            status_type,
        });
        custom_status_of(self.inner.admin_request(command).await?)
    }

    async fn update_custom_status(
        &self,
        id: &CustomStatusId,
        name: Option<CustomStatusName>,
        status_type: Option<DisplayedStatus>,
    ) -> BackendResult<CustomStatus> {
        let command = ClusterCommand::Admin(AdminCommand::UpdateCustomStatus {
            id: id.clone(),
            name,
            status_type,
        });
        custom_status_of(self.inner.admin_request(command).await?)
    }

    async fn delete_custom_status(&self, id: &CustomStatusId) -> BackendResult<CustomStatus> {
        let command = ClusterCommand::Admin(AdminCommand::DeleteCustomStatus { id: id.clone() });
        custom_status_of(self.inner.admin_request(command).await?)
    }

    async fn take_user_token(
        &self,
        bucket: &'static str,
        user: &str,
        capacity: u32,
        interval: Duration,
    ) -> Option<Result<(), Duration>> {
        let inner = &self.inner;
        if !inner.client.is_connected() {
            // The change cannot be made anyway; do not wait for a timeout.
            return None;
        }
        match inner
            .client
            .take_token(inner.config.shards, bucket, user, capacity, interval)
            .await
        {
            Ok(None) => Some(Ok(())),
            Ok(Some(wait)) => Some(Err(wait)),
            Err(error) => {
                // Without Redis the change itself cannot be made; the
                // gateway's own limiter still bounds this node.
                tracing::debug!(%error, "redis backend: shared rate limit unavailable");
                None
            }
        }
    }

    async fn cap_state(&self) -> BackendResult<CapState> {
        // Always fresh: the count moves without control messages.
        self.inner.check_running()?;
        self.inner.invalidate_cluster();
        Ok(self.inner.cluster_state().await?.cap)
    }

    async fn enable_broadcast(&self) -> BackendResult<CapState> {
        let ok = self
            .inner
            .admin_request(ClusterCommand::Admin(AdminCommand::EnableBroadcast))
            .await?;
        ok.cap
            .ok_or_else(|| BackendError::Unavailable("the leader's answer lacks the cap".into()))
    }

    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.inner.updates.subscribe()
    }

    /// Subscribed, connected, and the node lease was renewed within its
    /// ttl: a connection that looks open but answers nothing (a silent
    /// partition) fails the last test within one ttl.
    async fn ready(&self) -> bool {
        let inner = &self.inner;
        let renewed = inner.lease_renewed_ms.load(Ordering::Acquire);
        let fresh = now_ms().saturating_sub(renewed) <= duration_ms(inner.config.node_lease_ttl);
        !inner.stopping.load(Ordering::Acquire)
            && inner.subscribed.load(Ordering::Acquire)
            && inner.client.is_connected()
            && fresh
    }

    async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // Deregister every device (D7: a drain is a clean end).
        let sockets: Vec<(ConnId, LiveSocket)> = inner.live.lock().drain().collect();
        for (conn, socket) in sockets {
            let session = Session {
                user: socket.user.clone(),
                device: socket.device.clone(),
                platform: socket.platform,
                conn,
                profile: socket.profile.clone(),
            };
            let command = disconnect_command(&session, SocketEnd::Clean);
            if let Err(error) = inner.append(&socket.user, command, None).await {
                tracing::warn!(%error, "redis backend: a device could not be deregistered at shutdown");
            }
        }
        // Report zero sockets so the cap count drops at once.
        let _ = inner
            .client
            .refresh_node(&inner.config.node_id, now_ms(), 0)
            .await;
        inner.stop.notify_waiters();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        inner.waiters.lock().clear();
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        for task in self.tasks.lock().iter() {
            task.abort();
        }
    }
}

// ---- Requests ----

impl Inner {
    /// Publishes a probe on shard 0's replies channel until this node's
    /// subscriber receives it (messages that arrive meanwhile are handled
    /// as usual); `false` if it never does within a few tries.
    async fn confirm_subscription(
        &self,
        subscriber: &mut super::subscriber::RedisSubscriber,
        channels: &HashMap<String, Channel>,
    ) -> bool {
        let probe = format!("probe-{:x}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let message = wire::ReplyMessage {
            node: self.config.node_id.clone(),
            r: probe.clone(),
            result: CommandResult::Ok(CommandOk::default()),
        };
        let payload = serde_json::to_string(&message).expect("a reply serialises");
        let channel = Keys::new(0).replies_channel();
        for _ in 0..PROBE_TRIES {
            if let Err(error) = self.client.publish(&channel, &payload).await {
                tracing::debug!(%error, "redis backend: the subscription probe was not published");
            }
            let deadline = tokio::time::Instant::now() + PROBE_WAIT;
            loop {
                let event = match tokio::time::timeout_at(deadline, subscriber.recv()).await {
                    Err(_) => break,
                    Ok(None) => return false,
                    Ok(Some(event)) => event,
                };
                match event {
                    SubscriberEvent::Message {
                        channel: on,
                        payload: got,
                    } => {
                        if on == channel && got == payload {
                            return true;
                        }
                        self.dispatch(channels, &on, &got);
                    }
                    // Subscribed again by the client: probe again.
                    SubscriberEvent::Resync(_) => break,
                }
            }
        }
        false
    }

    /// Tells every shard that this node (re)started without sockets, so
    /// the devices a previous run of it registered go at once rather than
    /// when its node lease lapses (H2). Best effort: a shard not told in
    /// time still expires them with the lease or their heartbeats.
    async fn announce_start(&self) {
        let node = self.config.node_id.clone();
        for shard in 0..self.config.shards {
            let command = ClusterCommand::Shard(ShardCommand::NodeStarted { node: node.clone() });
            if let Err(error) = self.append_on(shard, "", command, None).await {
                tracing::warn!(shard, %error, "redis backend: could not announce this node's start");
            }
        }
    }

    /// Waits up to `limit` for the subscriber to listen; whether it does.
    async fn wait_subscribed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.subscribed_changed.notified();
            if self.subscribed.load(Ordering::Acquire) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.subscribed.load(Ordering::Acquire);
            }
        }
    }

    fn check_running(&self) -> BackendResult<()> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(BackendError::ShuttingDown);
        }
        Ok(())
    }

    /// Appends `command` for `user` to the user's shard (admin commands to
    /// shard 0) and waits for the leader's answer.
    async fn request(&self, user: &str, command: ClusterCommand) -> BackendResult<CommandOk> {
        let shard = self.shard_for(user, &command);
        self.request_on(shard, user, command).await
    }

    /// Like [`request`](Self::request), on an explicit shard.
    ///
    /// The answer comes by pub/sub, or from the stored outcome when the
    /// reply recovery finds one first (the subscriber was away, or the
    /// answer is late): no subscription is needed to be answered.
    async fn request_on(
        &self,
        shard: u16,
        user: &str,
        command: ClusterCommand,
    ) -> BackendResult<CommandOk> {
        self.check_running()?;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reply = wire::reply_id(&self.config.node_id, self.nonce, n);
        let (tx, rx) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        self.waiters.lock().insert(
            reply.clone(),
            Waiter {
                tx,
                shard,
                since: tokio::time::Instant::now(),
            },
        );
        let guard = WaiterGuard {
            inner: self,
            reply: &reply,
        };
        let appended = self.append_until(shard, user, &command, &reply, deadline);
        tokio::pin!(appended);
        tokio::pin!(rx);
        let mut appending = true;
        // Until the entry is in the stream, the appends' deadline; then a
        // request timeout for the leader to answer, as before retries.
        let mut answer_deadline = deadline;
        let answer = loop {
            tokio::select! {
                answer = &mut rx => break Some(answer),
                appended = &mut appended, if appending => {
                    appending = false;
                    appended?;
                    answer_deadline = tokio::time::Instant::now() + self.config.request_timeout;
                }
                () = tokio::time::sleep_until(answer_deadline) => break None,
            }
        };
        drop(guard);
        let answer = match answer {
            Some(Ok(result)) => result,
            Some(Err(_)) => return Err(BackendError::ShuttingDown),
            // The last word: the outcome may have been committed just now.
            None => match self.stored_outcome(shard, &reply).await {
                Some(result) => result,
                None => {
                    return Err(BackendError::Unavailable(format!(
                        "no shard leader answered within {:?}",
                        self.config.request_timeout
                    )));
                }
            },
        };
        match answer {
            CommandResult::Ok(ok) => Ok(ok),
            CommandResult::Error(e) => Err(error_from_reply(&e.code, &e.message)),
        }
    }

    /// Appends the request's entry, and appends it again (marked as a
    /// retry, same reply id) after each ambiguous failure until one
    /// succeeds or `deadline` passes. Fails at once only when the first
    /// append was never sent (Redis unreachable): then nothing can have
    /// been applied.
    async fn append_until(
        &self,
        shard: u16,
        user: &str,
        command: &ClusterCommand,
        reply: &str,
        deadline: tokio::time::Instant,
    ) -> BackendResult<()> {
        let mut retry = false;
        loop {
            if !self.client.is_connected() {
                if !retry {
                    return Err(BackendError::Unavailable("redis is unreachable".into()));
                }
            } else {
                let entry = wire::StreamEntry {
                    user: user.to_owned(),
                    command: command.clone(),
                    node: self.config.node_id.clone(),
                    reply: Some(reply.to_owned()),
                    retry,
                };
                match self.client.append(shard, &entry.to_fields()).await {
                    Ok(_) => return Ok(()),
                    Err(error) => {
                        tracing::debug!(%error, reply, "redis backend: an append failed; appending it again");
                    }
                }
                if !retry {
                    self.append_retries.fetch_add(1, Ordering::Relaxed);
                }
                retry = true;
            }
            if tokio::time::Instant::now() + APPEND_RETRY >= deadline {
                // The request's own deadline answers it (or the outcome, if
                // an append reached Redis after all).
                return std::future::pending().await;
            }
            tokio::time::sleep(APPEND_RETRY).await;
        }
    }

    /// The stored outcome of one request, if a leader committed it
    /// (`None` also when Redis cannot be read).
    async fn stored_outcome(&self, shard: u16, reply: &str) -> Option<CommandResult> {
        let stored = self.client.read_reply_outcomes(shard, &[reply]).await;
        let json = stored.ok()?.into_iter().next().flatten()?;
        match serde_json::from_str(&json) {
            Ok(result) => Some(result),
            Err(error) => {
                tracing::warn!(%error, "redis backend: a stored outcome does not decode");
                None
            }
        }
    }

    /// An admin command on shard 0, then a [`ShardCommand::Sync`] through
    /// every other shard, so that when it returns every shard applies the
    /// change (S1, C3): users elsewhere show a renamed custom status, new
    /// settings, at once. A shard whose leader does not answer in time
    /// catches up at its next batch or sweep; the change itself is
    /// committed, so the admin still gets the answer.
    async fn admin_request(&self, command: ClusterCommand) -> BackendResult<CommandOk> {
        let ok = self.request(ADMIN_USER, command).await;
        // Whatever happened, the cluster-wide state may have moved.
        self.invalidate_cluster();
        let ok = ok?;
        let syncs = (1..self.config.shards).map(|shard| async move {
            (
                shard,
                self.request_on(shard, "", ClusterCommand::Shard(ShardCommand::Sync))
                    .await,
            )
        });
        for (shard, synced) in futures_util::future::join_all(syncs).await {
            if let Err(error) = synced {
                tracing::warn!(shard, %error, "an admin change is not yet applied on a shard");
            }
        }
        Ok(ok)
    }

    /// The shard of a command about `user`.
    fn shard_for(&self, user: &str, command: &ClusterCommand) -> u16 {
        if command.is_admin() {
            0
        } else {
            shard_of(user, self.config.shards)
        }
    }

    /// `XADD`s one entry; fails at once while Redis is unreachable.
    async fn append(
        &self,
        user: &str,
        command: ClusterCommand,
        reply: Option<String>,
    ) -> BackendResult<()> {
        let shard = self.shard_for(user, &command);
        self.append_on(shard, user, command, reply).await
    }

    /// `XADD`s one entry to `shard`'s stream.
    async fn append_on(
        &self,
        shard: u16,
        user: &str,
        command: ClusterCommand,
        reply: Option<String>,
    ) -> BackendResult<()> {
        if !self.client.is_connected() {
            return Err(BackendError::Unavailable("redis is unreachable".into()));
        }
        let entry = wire::StreamEntry {
            user: user.to_owned(),
            command,
            node: self.config.node_id.clone(),
            reply,
            retry: false,
        };
        self.client
            .append(shard, &entry.to_fields())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// Records a token's profile before a status change, without waiting
    /// (the stream keeps the order; the status change's answer covers it).
    async fn touch_profile_quietly(
        &self,
        user: &str,
        profile: Option<&Profile>,
    ) -> BackendResult<()> {
        self.check_running()?;
        match profile {
            Some(p) if !(p.username.is_none() && p.name.is_none()) => {
                let command = ClusterCommand::User(UserCommand::TouchProfile {
                    profile: wire_profile(p),
                });
                self.append(user, command, None).await
            }
            _ => Ok(()),
        }
    }

    fn new_custom_status_id(&self) -> CustomStatusId {
        let node = super::keys::fnv1a64(self.config.node_id.as_bytes()) & 0xffff_ffff;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        CustomStatusId(format!("cs{:x}{node:08x}{n:x}", now_ms()))
    }
}

/// Removes a waiter whatever way its request ends (answer, timeout, error,
/// cancelled caller).
struct WaiterGuard<'a> {
    inner: &'a Inner,
    reply: &'a str,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.inner.waiters.lock().remove(self.reply);
    }
}

// ---- Reads ----

/// One user as a directory scan reads them.
struct ScannedUser {
    presence: PresenceSnapshot,
    own_status: Option<SelfStatus>,
    record: Option<UserRecord>,
}

impl ScannedUser {
    fn listing(self) -> UserListing {
        UserListing {
            presence: self.presence,
            profile: self.record.map(|r| r.profile).unwrap_or_default(),
        }
    }
}

impl Inner {
    /// The stored views of `users`, in order (`None`: never seen).
    async fn read_views(&self, users: &[Arc<str>]) -> BackendResult<Vec<Option<StoredView>>> {
        let mut by_shard: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, user) in users.iter().enumerate() {
            by_shard
                .entry(shard_of(user, self.config.shards))
                .or_default()
                .push(i);
        }
        let mut out = vec![None; users.len()];
        for (shard, indexes) in by_shard {
            let names: Vec<&str> = indexes.iter().map(|&i| &*users[i]).collect();
            let raw = self
                .client
                .read_views(shard, &names)
                .await
                .map_err(unavailable)?;
            for (&i, json) in indexes.iter().zip(raw) {
                out[i] = json
                    .map(|json| decode::<StoredView>(&json, "a stored view"))
                    .transpose()?;
            }
        }
        Ok(out)
    }

    /// Every user of every shard (`SMEMBERS presence:{s}:users`).
    async fn all_users(&self) -> BackendResult<Vec<Arc<str>>> {
        let mut users = Vec::new();
        for shard in 0..self.config.shards {
            let members: Vec<String> = async {
                let members: Vec<String> = self
                    .client
                    .pool()?
                    .smembers(Keys::new(shard).users())
                    .await?;
                Ok::<_, RedisError>(members)
            }
            .await
            .map_err(unavailable)?;
            users.extend(members.into_iter().map(Arc::from));
        }
        users.sort_unstable();
        Ok(users)
    }

    /// View, own view and document of each of `users`, 500 per `MGET`.
    async fn scan_users(&self, users: Vec<Arc<str>>) -> BackendResult<Vec<ScannedUser>> {
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(LOAD_CHUNK) {
            let mut keys = Vec::with_capacity(chunk.len() * 3);
            for user in chunk {
                let k = Keys::for_user(user, self.config.shards);
                keys.push(k.view(user));
                keys.push(k.self_view(user));
                keys.push(k.user(user));
            }
            let values: Vec<Option<String>> = if self.client.is_cluster() {
                // Keys of several slots: one GET each, pipelined by fred.
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    let value: Option<String> = self
                        .client
                        .pool()
                        .map_err(unavailable)?
                        .get(key)
                        .await
                        .map_err(|e| unavailable(e.into()))?;
                    values.push(value);
                }
                values
            } else {
                async {
                    let values: Vec<Option<String>> = self.client.pool()?.mget(keys).await?;
                    Ok::<_, RedisError>(values)
                }
                .await
                .map_err(unavailable)?
            };
            let mut values = values.into_iter();
            for user in chunk {
                let (view, own, doc) = (values.next(), values.next(), values.next());
                let view = view
                    .flatten()
                    .map(|j| decode::<StoredView>(&j, "a stored view"))
                    .transpose()?;
                let own = own
                    .flatten()
                    .map(|j| decode::<StoredSelf>(&j, "a stored own view"))
                    .transpose()?;
                let record = doc
                    .flatten()
                    .map(|j| decode::<UserRecord>(&j, "a user document"))
                    .transpose()?;
                out.push(ScannedUser {
                    presence: snapshot_of(user.clone(), view),
                    own_status: own.map(|s| s.view.status),
                    record,
                });
            }
        }
        Ok(out)
    }

    /// Settings, custom statuses and cap, cached until a control message,
    /// an admin command or a resync says they may have changed.
    async fn cluster_state(&self) -> BackendResult<CachedCluster> {
        if let Some(cached) = self.cluster.lock().clone() {
            return Ok(cached);
        }
        let snapshot = self
            .client
            .read_cluster_state()
            .await
            .map_err(unavailable)?;
        let settings: WorkspaceSettings = match &snapshot.settings {
            Some(json) => decode(json, "the workspace settings")?,
            None => WorkspaceSettings::default(),
        };
        let mut custom = Vec::with_capacity(snapshot.custom_statuses.len());
        for (_, json) in &snapshot.custom_statuses {
            custom.push(decode::<CustomStatus>(json, "a custom status")?);
        }
        custom.sort_by_cached_key(|s: &CustomStatus| (s.name.unique_key(), s.id.clone()));
        let cap = match &snapshot.cap {
            Some(json) => decode(json, "the cap state")?,
            None => CapState::new(settings.cap),
        };
        let cached = CachedCluster {
            settings: Arc::new(settings),
            custom,
            cap,
        };
        *self.cluster.lock() = Some(cached.clone());
        Ok(cached)
    }

    fn invalidate_cluster(&self) {
        *self.cluster.lock() = None;
    }
}

/// A message of a replies channel: an answer (by far the most common) or
/// a replacement notice. Decoded directly as each shape rather than
/// through an untagged enum, whose buffering does not round-trip every
/// field type of an answer.
fn decode_node_message(payload: &str) -> Result<NodeMessage, serde_json::Error> {
    serde_json::from_str::<wire::ReplyMessage>(payload)
        .map(|reply| NodeMessage::Reply(Box::new(reply)))
        .or_else(|reply_error| {
            serde_json::from_str::<wire::ReplacedMessage>(payload)
                .map(NodeMessage::Replaced)
                .map_err(|_| reply_error)
        })
}

// ---- The pump: pub/sub → waiters and updates ----

#[derive(Clone, Copy)]
enum Channel {
    Updates,
    Replies,
    Control,
}

async fn run_pump(inner: Arc<Inner>) {
    let mut channels: HashMap<String, Channel> = HashMap::new();
    for shard in 0..inner.config.shards {
        let keys = Keys::new(shard);
        channels.insert(keys.updates_channel(), Channel::Updates);
        channels.insert(keys.replies_channel(), Channel::Replies);
    }
    channels.insert(Keys::control_channel(), Channel::Control);
    let names: Vec<String> = channels.keys().cloned().collect();
    let mut first = true;
    loop {
        let mut subscriber = match inner.client.subscriber().await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                tracing::warn!(%error, "redis backend: no subscriber yet; retrying");
                tokio::time::sleep(SUBSCRIBER_RETRY).await;
                continue;
            }
        };
        if let Err(error) = subscriber.subscribe(&names).await {
            tracing::warn!(%error, "redis backend: subscribing failed; retrying");
            tokio::time::sleep(SUBSCRIBER_RETRY).await;
            continue;
        }
        // SUBSCRIBE's answer may come before Redis routes messages to us:
        // only a message seen on the connection proves it listens.
        if !inner.confirm_subscription(&mut subscriber, &channels).await {
            tracing::warn!("redis backend: the subscription was not confirmed; subscribing again");
            subscriber.quit().await;
            tokio::time::sleep(SUBSCRIBER_RETRY).await;
            continue;
        }
        inner.subscribed.store(true, Ordering::Release);
        inner.subscribed_changed.notify_waiters();
        // A resync whose reads failed (Redis not fully back yet) is retried
        // until it completes.
        // When a resync whose reads failed is tried again; kept across
        // messages so a busy channel never postpones it.
        let mut resync_retry: Option<tokio::time::Instant> = None;
        let retry_after = |done: bool| (!done).then(|| tokio::time::Instant::now() + RESYNC_RETRY);
        if !first {
            // A new subscriber after the old one closed: like a reconnect.
            inner.recover_replies.notify_one();
            inner.refresh_soon.notify_one();
            inner.reregister.notify_one();
            resync_retry = retry_after(inner.resync(ResyncReason::Reconnected).await);
        }
        first = false;
        loop {
            tokio::select! {
                event = subscriber.recv() => match event {
                    Some(SubscriberEvent::Message { channel, payload }) => {
                        inner.dispatch(&channels, &channel, &payload);
                    }
                    Some(SubscriberEvent::Resync(reason)) => {
                        // Answers may have been lost with the connection or
                        // the lag: read the pending requests' outcomes now,
                        // without waiting for the subscription's proof
                        // (stored outcomes do not depend on it).
                        inner.recover_replies.notify_one();
                        if reason == ResyncReason::Reconnected {
                            // Redis may be back from an outage: refresh the
                            // node lease and heartbeats at once (H4).
                            inner.refresh_soon.notify_one();
                            // Read the stored views only once messages flow
                            // again, or a change between the read and the
                            // subscription would be lost.
                            if !inner.confirm_subscription(&mut subscriber, &channels).await {
                                break;
                            }
                            inner.reregister.notify_one();
                        }
                        resync_retry = retry_after(inner.resync(reason).await);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(resync_retry.unwrap_or_else(tokio::time::Instant::now)),
                    if resync_retry.is_some() => {
                    resync_retry = retry_after(inner.resync(ResyncReason::Lagged { missed: 0 }).await);
                }
            }
        }
        inner.subscribed.store(false, Ordering::Release);
        tracing::warn!("redis backend: the subscriber closed; building a new one");
        tokio::time::sleep(SUBSCRIBER_RETRY).await;
    }
}

impl Inner {
    /// Hands a pub/sub message to the handler of its channel's kind.
    fn dispatch(&self, channels: &HashMap<String, Channel>, channel: &str, payload: &str) {
        match channels.get(channel) {
            Some(kind) => self.handle_message(*kind, payload),
            None => tracing::debug!(%channel, "redis backend: a message on an unknown channel"),
        }
    }

    fn handle_message(&self, kind: Channel, payload: &str) {
        match kind {
            Channel::Replies => match decode_node_message(payload) {
                Ok(NodeMessage::Reply(reply)) if reply.node == self.config.node_id => {
                    if let Some(waiter) = self.waiters.lock().remove(&reply.r) {
                        let _ = waiter.tx.send(reply.result);
                    }
                }
                Ok(NodeMessage::Replaced(notice)) if notice.node == self.config.node_id => {
                    let _ = self.updates.send(Update::Replaced {
                        user: Arc::from(notice.user),
                        conn: ConnId(notice.replaced),
                    });
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "redis backend: an undecodable reply"),
            },
            Channel::Updates => match serde_json::from_str::<UpdateMessage>(payload) {
                Ok(update) => self.emit_update(update),
                Err(error) => tracing::warn!(%error, "redis backend: an undecodable update"),
            },
            Channel::Control => match serde_json::from_str::<ControlMessage>(payload) {
                Ok(control) => self.handle_control(control),
                Err(error) => {
                    tracing::warn!(%error, "redis backend: an undecodable control message")
                }
            },
        }
    }

    /// W3: emits each view only if newer than the last one emitted.
    fn emit_update(&self, update: UpdateMessage) {
        let user: Arc<str> = Arc::from(update.user.as_str());
        let (public, own) = {
            let mut seen = self.seen.lock();
            let known = seen.contains_key(&user);
            let entry = seen.entry(user.clone()).or_default();
            // A user this node never read nor heard of reads as offline at
            // version 0 here (and from the store): a leader's first view of
            // a new user that is still offline without text changes nothing
            // anyone here was shown.
            let unchanged_new_user = !known
                && update
                    .public
                    .as_ref()
                    .is_some_and(|v| v.status == DisplayedStatus::Offline && v.text.is_none());
            let public = update
                .public
                .filter(|_| update.version > entry.public && !unchanged_new_user);
            if public.is_some() {
                entry.public = update.version;
            }
            let own = update.self_view.filter(|_| update.version > entry.own);
            if own.is_some() {
                entry.own = update.version;
            }
            (public, own)
        };
        if let Some(view) = public {
            let _ = self.updates.send(Update::Presence {
                snapshot: Arc::new(PresenceSnapshot {
                    user: user.clone(),
                    view,
                    version: update.version,
                }),
                changed_at: SystemTime::now(),
            });
        }
        if let Some(view) = own {
            let _ = self.updates.send(Update::SelfState(Arc::new(SelfSnapshot {
                user,
                view,
                version: update.version,
            })));
        }
    }

    fn handle_control(&self, control: ControlMessage) {
        match control {
            ControlMessage::Broadcast { active } => {
                if let Some(cached) = self.cluster.lock().as_mut() {
                    cached.cap.enabled = active;
                }
                let _ = self.updates.send(Update::Broadcast { active });
            }
            ControlMessage::SettingsChanged { settings } => {
                let settings = Arc::new(settings);
                if let Some(cached) = self.cluster.lock().as_mut() {
                    cached.settings = settings.clone();
                    cached.cap.cap = settings.cap;
                }
                let _ = self.updates.send(Update::Settings(settings));
            }
            ControlMessage::CustomStatusesChanged { .. } => self.invalidate_cluster(),
        }
    }

    /// Pub/sub may have lost messages: re-read what this node watches and
    /// emit whatever is newer (H3). `false` if a read failed; the pump
    /// retries.
    async fn resync(&self, reason: ResyncReason) -> bool {
        tracing::info!(?reason, "redis backend: resynchronising");
        match reason {
            ResyncReason::Reconnected => {
                self.resyncs_reconnected.fetch_add(1, Ordering::Relaxed);
            }
            ResyncReason::Lagged { missed } => {
                self.resyncs_lagged.fetch_add(1, Ordering::Relaxed);
                self.lagged_messages.fetch_add(missed, Ordering::Relaxed);
            }
        }
        self.invalidate_cluster();
        let users: Vec<Arc<str>> = self.seen.lock().keys().cloned().collect();
        for chunk in users.chunks(LOAD_CHUNK) {
            match self.read_views(chunk).await {
                Ok(views) => {
                    for (user, view) in chunk.iter().zip(views) {
                        if let Some(view) = view {
                            self.emit_update(UpdateMessage {
                                user: user.to_string(),
                                version: view.version,
                                epoch: 0,
                                public: Some(view.view()),
                                self_view: None,
                            });
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "redis backend: resync read failed");
                    return false;
                }
            }
        }
        let local: Vec<Arc<str>> = {
            let live = self.live.lock();
            let mut users: Vec<Arc<str>> = live.values().map(|s| s.user.clone()).collect();
            users.sort_unstable();
            users.dedup();
            users
        };
        for user in local {
            let key = Keys::for_user(&user, self.config.shards).self_view(&user);
            let stored: Result<Option<String>, RedisError> = async {
                let value: Option<String> = self.client.pool()?.get(key).await?;
                Ok(value)
            }
            .await;
            match stored {
                Ok(Some(json)) => match serde_json::from_str::<StoredSelf>(&json) {
                    Ok(own) => self.emit_update(UpdateMessage {
                        user: user.to_string(),
                        version: own.version,
                        epoch: 0,
                        public: None,
                        self_view: Some(own.view),
                    }),
                    Err(error) => tracing::warn!(%error, "redis backend: a bad stored own view"),
                },
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "redis backend: resync read failed");
                    return false;
                }
            }
        }
        true
    }
}

// ---- Liveness: node lease, socket count, heartbeats, re-registration ----

async fn run_liveness(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(inner.config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The node lease is one command per node: renewed three times per ttl,
    // so one lost renewal never lets it lapse (H2).
    let mut lease_ticker = tokio::time::interval(inner.config.node_lease_ttl / 3);
    lease_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A registration that failed half way (Redis went again) is retried
    // until it completes; the retry's instant is kept across the loop's
    // other wake-ups, so frequent ticks never postpone it.
    let mut retry_registration: Option<tokio::time::Instant> = None;
    let retry_after = || Some(tokio::time::Instant::now() + REGISTRATION_RETRY);
    // H4: after a failed liveness write, the whole refresh (node lease and
    // every heartbeat) is tried again every LIVENESS_RETRY until Redis
    // answers, so deadlines move on as soon as it is back, not an interval
    // later.
    let mut retry_refresh: Option<tokio::time::Instant> = None;
    let refresh_after = |failed: bool, current: Option<tokio::time::Instant>| {
        failed.then(|| current.unwrap_or_else(|| tokio::time::Instant::now() + LIVENESS_RETRY))
    };
    loop {
        tokio::select! {
            _ = inner.stop.notified() => return,
            _ = ticker.tick() => {
                let result = inner.refresh_liveness().await;
                if let Err(error) = &result {
                    tracing::warn!(%error, "redis backend: liveness refresh failed");
                }
                retry_refresh = refresh_after(result.is_err(), retry_refresh);
            }
            _ = lease_ticker.tick() => {
                if !inner.stopping.load(Ordering::Acquire)
                    && let Err(error) = inner.refresh_lease(now_ms()).await
                {
                    tracing::warn!(%error, "redis backend: renewing the node lease failed");
                    retry_refresh = refresh_after(true, retry_refresh);
                }
            }
            _ = inner.count_changed.notified() => {
                // Coalesce a burst of connects into one write (X1: the cap
                // owner sees the count within a fraction of a second, not
                // a heartbeat interval later).
                tokio::time::sleep(COUNT_COALESCE).await;
                if !inner.stopping.load(Ordering::Acquire)
                    && let Err(error) = inner.refresh_lease(now_ms()).await
                {
                    tracing::warn!(%error, "redis backend: writing the socket count failed");
                    retry_refresh = refresh_after(true, retry_refresh);
                }
            }
            _ = inner.refresh_soon.notified() => {
                let failed = inner.refresh_liveness().await.is_err();
                retry_refresh = refresh_after(failed, None);
            }
            _ = tokio::time::sleep_until(retry_refresh.unwrap_or_else(tokio::time::Instant::now)),
                if retry_refresh.is_some() => {
                let failed = match inner.refresh_liveness().await {
                    Ok(()) => {
                        tracing::info!("redis backend: node lease and heartbeats refreshed after a failure");
                        false
                    }
                    Err(error) => {
                        tracing::debug!(%error, "redis backend: liveness refresh failed again");
                        true
                    }
                };
                retry_refresh = refresh_after(failed, None);
            }
            _ = inner.reregister.notified() => {
                retry_registration = (!inner.register_all().await).then(retry_after).flatten();
            }
            _ = tokio::time::sleep_until(retry_registration.unwrap_or_else(tokio::time::Instant::now)),
                if retry_registration.is_some() => {
                retry_registration = (!inner.register_all().await).then(retry_after).flatten();
            }
        }
    }
}

// ---- Reply recovery: stored outcomes of requests whose answer was missed ----

async fn run_reply_recovery(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(REPLY_CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let every_request = tokio::select! {
            _ = inner.stop.notified() => return,
            _ = inner.recover_replies.notified() => true,
            _ = ticker.tick() => false,
        };
        inner.recover_outcomes(every_request).await;
    }
}

impl Inner {
    /// Answers the waiting requests whose outcome a leader stored: every
    /// one (`every_request`, after a subscriber reconnect or lag) or those
    /// waiting longer than [`REPLY_CHECK_AFTER`]. One `MGET` per shard.
    async fn recover_outcomes(&self, every_request: bool) {
        let now = tokio::time::Instant::now();
        let mut by_shard: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (reply, waiter) in self.waiters.lock().iter() {
            if every_request || now.saturating_duration_since(waiter.since) >= REPLY_CHECK_AFTER {
                by_shard
                    .entry(waiter.shard)
                    .or_default()
                    .push(reply.clone());
            }
        }
        for (shard, replies) in by_shard {
            let stored = match self.client.read_reply_outcomes(shard, &replies).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::debug!(shard, %error, "redis backend: stored outcomes unreadable");
                    continue;
                }
            };
            for (reply, json) in replies.iter().zip(stored) {
                let Some(json) = json else { continue };
                let result: CommandResult = match serde_json::from_str(&json) {
                    Ok(result) => result,
                    Err(error) => {
                        tracing::warn!(%error, "redis backend: a stored outcome does not decode");
                        continue;
                    }
                };
                if let Some(waiter) = self.waiters.lock().remove(reply) {
                    self.replies_recovered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(reply, "redis backend: answered from the stored outcome");
                    let _ = waiter.tx.send(result);
                }
            }
        }
    }
}

impl Inner {
    /// One round: node lease and count (X1, H2), then every live device's
    /// heartbeat deadline (H1). A lapsed lease registers every device again.
    async fn refresh_liveness(&self) -> Result<(), RedisError> {
        if self.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = now_ms();
        let members = {
            let live = self.live.lock();
            let mut members: BTreeMap<u16, Vec<String>> = BTreeMap::new();
            for socket in live.values() {
                members
                    .entry(shard_of(&socket.user, self.config.shards))
                    .or_default()
                    .push(heartbeat_member(&socket.user, &socket.device.0));
            }
            members
        };
        self.refresh_lease(now).await?;
        let deadline = now + duration_ms(self.config.heartbeat_timeout);
        for (shard, mut members) in members {
            members.sort_unstable();
            members.dedup();
            let refresh = self
                .client
                .refresh_heartbeats(shard, deadline, &members)
                .await?;
            debug_assert!(refresh.commands <= members.len().div_ceil(HEARTBEAT_CHUNK));
            self.heartbeat_commands
                .fetch_add(refresh.commands as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Extends the node lease and stores the socket count (X1, H2); a
    /// lease that had lapsed registers every device again.
    async fn refresh_lease(&self, now: u64) -> Result<(), RedisError> {
        let count = self.live.lock().len() as u64;
        let lease_until = now + duration_ms(self.config.node_lease_ttl);
        let previous = self
            .client
            .refresh_node(&self.config.node_id, lease_until, count)
            .await?;
        self.lease_renewed_ms.store(now_ms(), Ordering::Release);
        if previous.is_some_and(|deadline| deadline <= now) {
            tracing::warn!(
                "redis backend: this node's lease had lapsed; registering its devices again"
            );
            if !self.register_all().await {
                self.reregister.notify_one();
            }
        }
        Ok(())
    }

    /// Appends a `Connect` for every live socket (H2, H3); `false` if an
    /// append failed (the caller retries the whole registration).
    async fn register_all(&self) -> bool {
        let sockets: Vec<(ConnId, LiveSocket)> = self
            .live
            .lock()
            .iter()
            .map(|(c, s)| (*c, s.clone()))
            .collect();
        for (conn, socket) in sockets {
            let session = Session {
                user: socket.user.clone(),
                device: socket.device.clone(),
                platform: socket.platform,
                conn,
                profile: socket.profile.clone(),
            };
            let command = connect_command(&self.config.node_id, &session);
            if let Err(error) = self.append(&socket.user, command, None).await {
                tracing::warn!(%error, "redis backend: registering a device again failed; retrying");
                return false;
            }
        }
        self.reregistrations.fetch_add(1, Ordering::Relaxed);
        true
    }
}

// ---- Helpers ----

fn connect_command(node: &str, session: &Session) -> ClusterCommand {
    ClusterCommand::User(UserCommand::Connect {
        device: session.device.clone(),
        platform: session.platform,
        conn: session.conn.0,
        node: node.to_owned(),
        profile: wire_profile(&session.profile),
    })
}

fn disconnect_command(session: &Session, end: SocketEnd) -> ClusterCommand {
    ClusterCommand::User(UserCommand::Disconnect {
        device: session.device.clone(),
        conn: session.conn.0,
        end: match end {
            SocketEnd::Clean => wire::SocketEnd::Clean,
            SocketEnd::Lost => wire::SocketEnd::Lost,
        },
    })
}

fn wire_profile(profile: &Profile) -> wire::Profile {
    wire::Profile {
        username: profile.username.clone(),
        name: profile.name.clone(),
    }
}

fn self_snapshot(user: &str, ok: CommandOk) -> BackendResult<SelfSnapshot> {
    let me = ok.me.ok_or_else(|| {
        BackendError::Unavailable("the leader's answer lacks the own view".into())
    })?;
    Ok(SelfSnapshot {
        user: Arc::from(user),
        view: me.view,
        version: me.version,
    })
}

fn custom_status_of(ok: CommandOk) -> BackendResult<CustomStatus> {
    ok.custom_status.ok_or_else(|| {
        BackendError::Unavailable("the leader's answer lacks the custom status".into())
    })
}

fn snapshot_of(user: Arc<str>, view: Option<StoredView>) -> PresenceSnapshot {
    match view {
        Some(stored) => PresenceSnapshot {
            user,
            view: stored.view(),
            version: stored.version,
        },
        None => PresenceSnapshot {
            user,
            view: PublicView {
                status: DisplayedStatus::Offline,
                text: None,
            },
            version: 0,
        },
    }
}

/// The lowest view version written at or after `since`: leaders make
/// versions from their clock, `max(previous + 1, now_ms · 1000)`
/// (`presence_core::next_version`), so a stored view's version tells when
/// it was last written.
fn changed_since_version(since: Timestamp) -> u64 {
    u64::try_from(since.as_millis())
        .unwrap_or(0)
        .saturating_mul(1000)
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

/// The first unsigned number in `text` after `after`, for rebuilding a
/// rule error's fields from the leader's message.
fn number_after(text: &str, after: &str) -> u64 {
    text.split_once(after)
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A leader's refusal as the [`BackendError`] the embedded backend would
/// have returned: the same code, and the same message wherever the
/// message's fields can be read back. Codes that are not rule errors
/// (`wrong_shard`, `invalid_command`) mean the cluster is misconfigured or
/// mid-failover: `backend_unavailable`.
pub fn error_from_reply(code: &str, message: &str) -> BackendError {
    let quoted = || message.split('\'').nth(1).unwrap_or_default().to_owned();
    let rule = match code {
        "status_text_too_long" => PresenceError::StatusTextTooLong {
            len: number_after(message, "is") as usize,
            max: number_after(message, "limit is") as usize,
        },
        "status_text_invalid" => PresenceError::StatusTextInvalid,
        "status_text_disabled" => PresenceError::StatusTextDisabled,
        "idle_time_limit_too_low" => PresenceError::IdleTimeLimitTooLow {
            seconds: number_after(message, "limit of"),
            min: number_after(message, "minimum of"),
        },
        "idle_time_limit_too_high" => PresenceError::IdleTimeLimitTooHigh {
            seconds: number_after(message, "limit of"),
            max: number_after(message, "maximum of"),
        },
        "invisible_disabled" => PresenceError::InvisibleDisabled,
        "unsupported_event" => {
            let platform = message
                .strip_prefix("a ")
                .and_then(|m| m.split(' ').next())
                .and_then(|p| serde_json::from_value(serde_json::Value::String(p.into())).ok());
            let event = serde_json::from_value(serde_json::Value::String(quoted())).ok();
            match (platform, event) {
                (Some(platform), Some(event)) => {
                    PresenceError::UnsupportedEvent { platform, event }
                }
                (Some(platform), None) => PresenceError::UnsupportedCalendarSource { platform },
                _ => PresenceError::UnsupportedCalendarSource {
                    platform: Platform::Web,
                },
            }
        }
        "expiry_not_in_future" => PresenceError::ExpiryNotInFuture,
        "expiry_too_far" => PresenceError::ExpiryTooFar {
            max_days: number_after(message, "at most"),
        },
        "expiry_without_change" => PresenceError::ExpiryWithoutChange,
        "empty_status_change" => PresenceError::EmptyStatusChange,
        "custom_status_name_taken" => PresenceError::CustomStatusNameTaken { name: quoted() },
        "custom_status_name_invalid" => PresenceError::CustomStatusNameInvalid {
            reason: "rejected by the shard leader",
        },
        "custom_status_not_found" => PresenceError::CustomStatusNotFound { id: quoted() },
        "broadcast_enable_refused" => PresenceError::BroadcastEnableRefused {
            count: number_after(message, "enabled:"),
            cap: number_after(message, "cap is"),
        },
        "calendar_disabled" => PresenceError::CalendarDisabled,
        "unknown_device" => PresenceError::UnknownDevice { device: quoted() },
        "calendar_event_id_invalid" => PresenceError::CalendarEventIdInvalid {
            max: number_after(message, "1-") as usize,
        },
        "too_many_calendar_events" => PresenceError::TooManyCalendarEvents {
            max: number_after(message, "limit") as usize,
        },
        _ => {
            return BackendError::Unavailable(format!(
                "the shard leader refused: {code}: {message}"
            ));
        }
    };
    BackendError::Rule(rule)
}

#[cfg(test)]
mod tests {
    use presence_core::{DeviceEvent, Platform, PresenceError};

    use super::error_from_reply;

    /// A leader's refusal comes back as the same rule error: same code,
    /// same message.
    #[test]
    fn rule_errors_survive_the_reply_round_trip() {
        let cases = [
            PresenceError::StatusTextTooLong { len: 130, max: 120 },
            PresenceError::StatusTextInvalid,
            PresenceError::StatusTextDisabled,
            PresenceError::IdleTimeLimitTooLow {
                seconds: 30,
                min: 60,
            },
            PresenceError::InvisibleDisabled,
            PresenceError::UnsupportedEvent {
                platform: Platform::Web,
                event: DeviceEvent::Lock,
            },
            PresenceError::UnsupportedCalendarSource {
                platform: Platform::Mobile,
            },
            PresenceError::ExpiryNotInFuture,
            PresenceError::ExpiryTooFar { max_days: 366 },
            PresenceError::IdleTimeLimitTooHigh {
                seconds: 90_000,
                max: 86_400,
            },
            PresenceError::ExpiryWithoutChange,
            PresenceError::EmptyStatusChange,
            PresenceError::CustomStatusNameTaken {
                name: "Lunch".into(),
            },
            PresenceError::CustomStatusNotFound { id: "cs1".into() },
            PresenceError::BroadcastEnableRefused { count: 7, cap: 5 },
            PresenceError::CalendarDisabled,
            PresenceError::UnknownDevice {
                device: "d1".into(),
            },
            PresenceError::CalendarEventIdInvalid { max: 200 },
            PresenceError::TooManyCalendarEvents { max: 32 },
        ];
        for error in cases {
            let back = error_from_reply(error.code(), &error.to_string());
            assert_eq!(back.code(), error.code(), "{error:?}");
            assert_eq!(back.to_string(), error.to_string(), "{error:?}");
        }
    }

    /// Codes that are not rule errors mean the cluster cannot answer.
    #[test]
    fn wrong_shard_and_invalid_command_are_backend_unavailable() {
        for code in ["wrong_shard", "invalid_command", "something_new"] {
            assert_eq!(error_from_reply(code, "x").code(), "backend_unavailable");
        }
    }
}

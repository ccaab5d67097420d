//! Following the primary through failovers (Sentinel and Redis Cluster),
//! and the *primary generation* that tells the rest of the node when the
//! primary changed.
//!
//! fred resolves the primary when a connection is opened and never again
//! while it stays up. After `SENTINEL FAILOVER` the old primary keeps
//! accepting writes from connected clients until Sentinel demotes it (8–20
//! s later with Redis 7): everything written there in between is lost.
//! After a Redis Cluster failover, fred follows `MOVED` for commands, but
//! sharded subscriptions and routing caches stay on the old node. So every
//! [`RedisClient`](super::RedisClient) on a Sentinel or Cluster URL runs a
//! watcher task that notices a change and moves every connection at once:
//!
//! - Sentinel: a pub/sub connection to every sentinel listens to our
//!   service's failover. The events that announce a failover *before* the
//!   promotion (`FAILOVER_STARTS`) hold writes at once: appends fail
//!   fast and leaders commit nothing until the sentinels name the new
//!   primary (at most [`FAILOVER_HOLD_LIMIT`]), because an entry that
//!   reaches the old primary after the promotion is lost even if a replica
//!   that is not promoted confirmed it. `+switch-master` wakes the
//!   watcher; every second the primary named by the sentinels is compared
//!   with the servers the command pool talks to, and each pooled
//!   connection is asked its `ROLE`; a command answered `READONLY`
//!   (reported by fred, which drops that connection) starts the same
//!   check.
//! - Redis Cluster: every second `CLUSTER SLOTS` is compared with the last
//!   answer; a change of any slot range's primary is a failover.
//!
//! On a change the watcher (1) takes the write side of the *gate*, so no
//! guarded operation ([`RedisClient::on_primary`]) is in flight, and bumps
//! the pending generation: guarded operations of the old generation now
//! fail with [`RedisError::PrimaryChanged`] without being sent; (2) forces
//! every pooled connection to reconnect (fred re-resolves the primary
//! through the sentinels, or refreshes the cluster's slot map) and checks
//! the pool is on the primary, then moves every subscriber and waits
//! (briefly) until each listens again; (3) publishes the new generation on
//! a `watch` channel ([`RedisClient::primary_generation`]). Stream readers
//! reconnect when they see it; shard leaders drop their in-memory state
//! and load the shard again from the new primary, where the subscribers
//! already hear what they republish. Appends wait for the replicas
//! (`stream.rs`) and are held while a change is followed.
//!
//! **Architecture Invariant:** a leader's commit and trim go through
//! [`RedisClient::on_primary`] with the generation its state was loaded
//! under, so nothing computed from a primary that failed over (and may
//! have lost writes) is ever written to the new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{
    Builder, Client, ClientLike, Config, EventInterface, Pool, PubsubInterface, Server,
    ServerConfig,
};
use fred::types::{ClusterHash, CustomCommand, Value};
use tokio::sync::{Notify, RwLock, watch};
use tokio::task::JoinHandle;

use super::client::{RedisClient, quit_in_background};
use super::error::RedisError;
use super::url::{HostPort, RedisEndpoint, Topology};

/// How often the watcher compares the pool with the sentinels or the
/// cluster's slot map, and asks each pooled connection its role.
pub const PRIMARY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Pause between attempts to move the pool while the new primary is not
/// reachable yet.
const FOLLOW_RETRY: Duration = Duration::from_millis(200);

/// How long writes are held after Sentinel announced that a failover
/// started, at most, waiting for the sentinels to name the new primary (a
/// failover that is aborted or slower than this resumes writes on the
/// primary the sentinels name then).
pub const FAILOVER_HOLD_LIMIT: Duration = Duration::from_secs(5);

/// How long a primary change waits for the subscribers to listen on the
/// new primary before leaders may publish there.
const RESUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// How often the sentinels are asked for the primary while writes are held.
const HOLD_POLL: Duration = Duration::from_millis(25);

/// Sentinel events that announce a failover of a primary *before* the
/// replica is promoted (Sentinel sends `REPLICAOF NO ONE` one timer tick,
/// 50–100 ms, after `+failover-state-send-slaveof-noone`). From then on the
/// old primary's writes are lost if they reach it after the promotion,
/// even if another replica acknowledged them: the nodes stop writing.
const FAILOVER_STARTS: [&str; 3] = [
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
];

/// The state shared by a client's operations and its watcher.
#[derive(Debug)]
pub(crate) struct Failover {
    /// Guarded operations hold the read side while they run; the watcher
    /// takes the write side to bump `pending`.
    gate: RwLock<()>,
    /// The generation being moved to (equal to the published one once the
    /// pool is on the new primary).
    pending: AtomicU64,
    /// The published generation: the pool talks to the primary of this
    /// generation.
    generation: watch::Sender<u64>,
    /// Wakes the watcher for a check at once (`+switch-master`,
    /// `READONLY`).
    wake: Notify,
    /// Set with a wake when Sentinel announced that a failover of this
    /// primary starts: the watcher holds writes until the sentinels name
    /// another one.
    hold: parking_lot::Mutex<Option<Server>>,
    /// How many primary changes were followed.
    followed: AtomicU64,
    /// Bumped after each check of the watcher (and the follow it led to).
    checked: watch::Sender<u64>,
    /// Whether a watcher runs (Sentinel, Redis Cluster).
    watched: std::sync::atomic::AtomicBool,
    /// The client's live subscribers: moved with the pool, before the new
    /// generation is published, so that they listen on the new primary
    /// when leaders republish and answer there.
    subscribers: parking_lot::Mutex<Vec<(u64, SubscriberClient, Arc<AtomicU64>)>>,
    next_subscriber: AtomicU64,
    /// Sentinel only: one entry per configured sentinel, the plain
    /// connection the watcher asks and whether our listener on it is
    /// subscribed to the failover events.
    sentinels: parking_lot::Mutex<Vec<SentinelLink>>,
    /// Set once every reachable sentinel was listened to (see
    /// [`RedisClient::hears_sentinels`]).
    heard_sentinels: std::sync::atomic::AtomicBool,
}

/// What a node knows of one sentinel.
#[derive(Debug)]
struct SentinelLink {
    /// The connection for `SENTINEL GET-MASTER-ADDR-BY-NAME`.
    probe: Client,
    /// The listener's connection.
    listener: SubscriberClient,
    /// Whether the listener subscribed to our channels (cleared while it
    /// reconnects).
    subscribed: Arc<std::sync::atomic::AtomicBool>,
}

impl SentinelLink {
    fn listening(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.listener.is_connected()
    }
}

impl Failover {
    pub(crate) fn new() -> Failover {
        Failover {
            gate: RwLock::new(()),
            pending: AtomicU64::new(0),
            generation: watch::channel(0).0,
            wake: Notify::new(),
            hold: parking_lot::Mutex::new(None),
            followed: AtomicU64::new(0),
            checked: watch::channel(0).0,
            watched: std::sync::atomic::AtomicBool::new(false),
            subscribers: parking_lot::Mutex::new(Vec::new()),
            next_subscriber: AtomicU64::new(0),
            sentinels: parking_lot::Mutex::new(Vec::new()),
            heard_sentinels: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Moves `client` with the pool from now on, until the returned
    /// registration is dropped.
    pub(crate) fn register(self: &Arc<Self>, client: SubscriberClient) -> Registration {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let resubscribed = Arc::new(AtomicU64::new(0));
        self.subscribers
            .lock()
            .push((id, client, resubscribed.clone()));
        Registration {
            failover: self.clone(),
            id,
            resubscribed,
        }
    }

    /// Asks the watcher to check the primary now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the watcher to hold writes for a failover of `primary` that
    /// starts.
    fn hold(&self, primary: Server) {
        *self.hold.lock() = Some(primary);
        self.wake.notify_one();
    }
}

impl RedisClient {
    /// The primary generation: `0` at connect, bumped once per primary
    /// change this client followed (a Sentinel failover, a Redis Cluster
    /// failover of any slot range), once every pooled connection talks to
    /// the new primary. Subscribers, stream readers and shard leaders
    /// watch it.
    pub fn primary_generation(&self) -> watch::Receiver<u64> {
        self.failover().generation.subscribe()
    }

    /// Asks the watcher to check at once whether the primary moved (a
    /// caller saw an error that a failover may explain). Cheap; checks
    /// that find nothing change nothing.
    pub fn check_primary_now(&self) {
        self.failover().wake();
    }

    /// Like [`check_primary_now`](Self::check_primary_now), and waits
    /// (at most `within`) until that check, and the change it found if
    /// any, is done. A leader whose commit failed calls it before taking
    /// its shard over again, so it does not load and answer on a primary
    /// the node is about to leave. Returns at once without a watcher.
    pub async fn settle_primary(&self, within: Duration) {
        let failover = self.failover();
        if !failover.watched.load(Ordering::Acquire) {
            return;
        }
        let mut checked = failover.checked.subscribe();
        let before = *checked.borrow_and_update();
        failover.wake();
        let _ = tokio::time::timeout(within, checked.wait_for(|n| *n > before + 1)).await;
    }

    /// With Sentinel: how many of the configured sentinels this node
    /// listens to right now, out of how many (`None` without Sentinel).
    pub fn sentinels_listened(&self) -> Option<(usize, usize)> {
        let sentinels = self.failover().sentinels.lock();
        if sentinels.is_empty() {
            return None;
        }
        let listening = sentinels.iter().filter(|s| s.listening()).count();
        Some((listening, sentinels.len()))
    }

    /// Whether this node hears the failover events it needs (for
    /// `/readyz`). Without Sentinel, always. With Sentinel: once, at
    /// start, every sentinel the node can reach (its plain connection is
    /// up) must also be listened to, and at least one: only the sentinel
    /// that runs a failover announces that it starts, and a node that
    /// misses the announcement writes to the old primary after the
    /// promotion, where another replica can still acknowledge what the new
    /// primary never receives. Later, a sentinel that is down or
    /// reconnecting does not make the node unready (every node would be at
    /// once); the one-second role check and `+switch-master` from the
    /// others still follow the failover, with a longer window.
    pub fn hears_sentinels(&self) -> bool {
        let failover = self.failover();
        if failover.heard_sentinels.load(Ordering::Acquire) {
            return true;
        }
        let sentinels = failover.sentinels.lock();
        if sentinels.is_empty() {
            return true;
        }
        let heard = sentinels.iter().any(SentinelLink::listening)
            && sentinels
                .iter()
                .all(|s| s.listening() || !s.probe.is_connected());
        if heard {
            failover.heard_sentinels.store(true, Ordering::Release);
        }
        heard
    }

    /// How many primary changes this client followed.
    pub fn primary_changes(&self) -> u64 {
        self.failover().followed.load(Ordering::Relaxed)
    }

    /// Runs `operation` only if the primary generation is still
    /// `generation` (and no change is being followed), and keeps the next
    /// change from starting until it finished: a write computed from what
    /// generation `generation` held never reaches another primary. Fails
    /// with [`RedisError::PrimaryChanged`] otherwise, without running it.
    pub async fn on_primary<T>(
        &self,
        generation: u64,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        let failover = self.failover();
        let _gate = failover.gate.read().await;
        if failover.pending.load(Ordering::Acquire) != generation {
            return Err(RedisError::PrimaryChanged);
        }
        operation.await
    }
}

impl RedisClient {
    /// Runs `operation` unless a primary change is being followed (writes
    /// are held: see [`FAILOVER_HOLD_LIMIT`]); fails with
    /// [`RedisError::PrimaryChanged`] then, without running it. A change
    /// waits for the operations already running.
    pub(crate) async fn unless_moving<T>(
        &self,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        let failover = self.failover();
        let _gate = failover.gate.read().await;
        if failover.pending.load(Ordering::Acquire) != *failover.generation.borrow() {
            return Err(RedisError::PrimaryChanged);
        }
        operation.await
    }
}

/// A subscriber moved with the pool; unregistered when dropped.
pub(crate) struct Registration {
    failover: Arc<Failover>,
    id: u64,
    /// Counts the subscriber's completed resubscriptions.
    resubscribed: Arc<AtomicU64>,
}

impl Registration {
    /// The subscriber listens on every channel again after a reconnect.
    pub(crate) fn resubscribed(&self) {
        self.resubscribed.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.failover
            .subscribers
            .lock()
            .retain(|(id, _, _)| *id != self.id);
    }
}

/// The watcher of one client; aborted (with its sentinel listeners) when
/// dropped.
pub(crate) struct Watcher {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the watcher for `endpoint` (nothing for a single server: it
/// cannot move). `builder` is the client's, for the sentinels' settings.
pub(crate) fn start(
    endpoint: &RedisEndpoint,
    cluster: bool,
    builder: &Builder,
    pool: Pool,
    failover: Arc<Failover>,
) -> Watcher {
    let mut tasks = Vec::new();
    // A READONLY answer: fred drops the connection; we check everything.
    for client in pool.clients() {
        let failover = failover.clone();
        client.on_error(move |(error, _server)| {
            let failover = failover.clone();
            async move {
                if error.details().contains("READONLY") {
                    failover.wake();
                }
                Ok(())
            }
        });
    }
    let probe = match &endpoint.topology {
        Topology::Sentinel {
            sentinels,
            service_name,
            ..
        } => {
            let mut sentinel_clients = Vec::new();
            let mut links = Vec::new();
            for host in sentinels {
                let built = sentinel_builder(builder, host).build().and_then(|probe| {
                    let listener = sentinel_builder(builder, host).build_subscriber_client()?;
                    Ok((probe, listener))
                });
                let (probe, listener) = match built {
                    Ok(clients) => clients,
                    Err(error) => {
                        tracing::warn!(%error, sentinel = %host.host, "redis: no sentinel client");
                        continue;
                    }
                };
                let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                tasks.push(tokio::spawn(listen_to_sentinel(
                    listener.clone(),
                    subscribed.clone(),
                    service_name.clone(),
                    failover.clone(),
                )));
                // Connected in the background; a sentinel that is down is
                // retried by fred's reconnect policy.
                drop(probe.connect());
                links.push(SentinelLink {
                    probe: probe.clone(),
                    listener,
                    subscribed,
                });
                sentinel_clients.push(probe);
            }
            *failover.sentinels.lock() = links;
            Probe::Sentinel {
                sentinels: sentinel_clients,
                service_name: service_name.clone(),
            }
        }
        _ if cluster => Probe::Cluster { slots: None },
        Topology::Standalone(_) | Topology::Cluster { .. } => return Watcher { tasks },
    };
    failover.watched.store(true, Ordering::Release);
    tasks.push(tokio::spawn(watch_primary(pool, failover, probe)));
    Watcher { tasks }
}

/// How the watcher learns that the primary moved.
enum Probe {
    Sentinel {
        /// Plain connections to each sentinel, for
        /// `SENTINEL GET-MASTER-ADDR-BY-NAME`.
        sentinels: Vec<Client>,
        service_name: String,
    },
    Cluster {
        /// The last `CLUSTER SLOTS` seen: `(first slot, last slot,
        /// primary)` sorted.
        slots: Option<Vec<(i64, i64, String)>>,
    },
}

impl Probe {
    /// The primary the sentinels name now (`None`: not Sentinel, or no
    /// sentinel answers).
    async fn named_primary(&self) -> Option<Server> {
        match self {
            Probe::Sentinel {
                sentinels,
                service_name,
            } => ask_sentinels(sentinels, service_name).await,
            Probe::Cluster { .. } => None,
        }
    }

    /// Whether the pool must move: `Ok(true)` when it talks to a server
    /// that is not the primary (or the slot map changed).
    async fn must_follow(&mut self, pool: &Pool) -> Result<bool, RedisError> {
        match self {
            Probe::Sentinel {
                sentinels,
                service_name,
            } => {
                let Some(primary) = ask_sentinels(sentinels, service_name).await else {
                    // No sentinel answers: nothing to compare with; the
                    // pool's own reconnects re-resolve when it breaks.
                    return Ok(false);
                };
                for client in pool.clients() {
                    for server in client.active_connections() {
                        if !same_server(&server, &primary) {
                            tracing::warn!(
                                %server,
                                primary = %format!("{}:{}", primary.host, primary.port),
                                "redis: a connection talks to a server that is no longer the primary"
                            );
                            return Ok(true);
                        }
                    }
                }
                for client in pool.clients() {
                    if !client.is_connected() {
                        continue;
                    }
                    let role: Value = client
                        .custom(
                            CustomCommand::new_static("ROLE", ClusterHash::Random, false),
                            Vec::<String>::new(),
                        )
                        .await?;
                    if !is_master_role(&role) {
                        tracing::warn!("redis: a connection's server says it is not a primary");
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Probe::Cluster { slots } => {
                let reply: Value = pool
                    .next()
                    .custom(
                        CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
                        vec!["SLOTS"],
                    )
                    .await?;
                let now = parse_cluster_slots(&reply);
                if now.is_empty() {
                    return Ok(false);
                }
                let changed = slots.as_ref().is_some_and(|before| *before != now);
                *slots = Some(now);
                if changed {
                    tracing::warn!("redis: the cluster's slot map changed primaries");
                }
                Ok(changed)
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Probe::Sentinel { sentinels, .. } = self {
            for sentinel in sentinels.drain(..) {
                quit_in_background(sentinel);
            }
        }
    }
}

/// The watcher's loop: a check every [`PRIMARY_CHECK_INTERVAL`] or when
/// woken; a change is followed.
async fn watch_primary(pool: Pool, failover: Arc<Failover>, mut probe: Probe) {
    let mut tick = tokio::time::interval(PRIMARY_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = failover.wake.notified() => {}
            _ = tick.tick() => {}
        }
        check(&pool, &failover, &mut probe).await;
        failover.checked.send_modify(|n| *n += 1);
    }
}

/// One check of the watcher (see [`watch_primary`]).
async fn check(pool: &Pool, failover: &Failover, probe: &mut Probe) {
    {
        let hold = failover.hold.lock().take();
        if let Some(old) = hold {
            // Several sentinels announce each step: only the first
            // announcement of a failover of the primary we use holds.
            let on_old = pool
                .clients()
                .iter()
                .any(|c| c.active_connections().iter().any(|s| same_server(s, &old)));
            if on_old {
                follow(pool, failover, probe, Some(old)).await;
                return;
            }
        }
        match probe.must_follow(pool).await {
            Ok(true) => follow(pool, failover, probe, None).await,
            Ok(false) => {}
            Err(error) => tracing::debug!(%error, "redis: primary check failed"),
        }
    }
}

/// Moves the pool to the new primary and publishes the new generation
/// (see the module documentation). With `old` (a failover announced, not
/// done yet), first holds writes until the sentinels name another primary
/// than `old`, for at most [`FAILOVER_HOLD_LIMIT`].
async fn follow(pool: &Pool, failover: &Failover, probe: &mut Probe, old: Option<Server>) {
    let target = {
        let _gate = failover.gate.write().await;
        failover.pending.fetch_add(1, Ordering::AcqRel) + 1
    };
    let started = tokio::time::Instant::now();
    if let Some(old) = old {
        tracing::warn!(
            generation = target,
            "redis: a failover starts; holding writes until the sentinels name the new primary"
        );
        while started.elapsed() < FAILOVER_HOLD_LIMIT {
            match probe.named_primary().await {
                Some(named) if !same_server(&named, &old) => break,
                _ => tokio::time::sleep(HOLD_POLL).await,
            }
        }
    }
    tracing::warn!(
        generation = target,
        "redis: the primary changed; moving every connection"
    );
    loop {
        let moved = tokio::time::timeout(Duration::from_secs(5), pool.force_reconnection()).await;
        match moved {
            Ok(Ok(())) => {
                // Settled when the check finds nothing left to move (for
                // a cluster, this records the new slot map).
                match probe.must_follow(pool).await {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(error) => tracing::debug!(%error, "redis: primary check failed"),
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "redis: reconnecting to the new primary failed")
            }
            Err(_) => tracing::warn!("redis: reconnecting to the new primary took over 5 s"),
        }
        tokio::time::sleep(FOLLOW_RETRY).await;
    }
    // The subscribers too (they resubscribe and report a resync), before
    // leaders load the shards again and publish (and answer requests) on
    // the new primary: wait until each listens again, for a while.
    let subscribers: Vec<(SubscriberClient, Arc<AtomicU64>)> = failover
        .subscribers
        .lock()
        .iter()
        .map(|(_, c, n)| (c.clone(), n.clone()))
        .collect();
    let moves = subscribers
        .iter()
        .map(|(subscriber, resubscribed)| async move {
            let before = resubscribed.load(Ordering::Acquire);
            let moved =
                tokio::time::timeout(Duration::from_secs(5), subscriber.force_reconnection()).await;
            if !matches!(moved, Ok(Ok(()))) {
                tracing::warn!("redis: a subscriber could not move to the new primary yet");
                return;
            }
            let deadline = tokio::time::Instant::now() + RESUBSCRIBE_WAIT;
            while resubscribed.load(Ordering::Acquire) == before
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    futures_util::future::join_all(moves).await;
    failover.followed.fetch_add(1, Ordering::Relaxed);
    failover.generation.send_replace(target);
    tracing::warn!(
        generation = target,
        took = ?started.elapsed(),
        "redis: every pooled connection is on the new primary"
    );
}

/// The primary's address according to the first sentinel that answers.
async fn ask_sentinels(sentinels: &[Client], service_name: &str) -> Option<Server> {
    for sentinel in sentinels {
        if !sentinel.is_connected() {
            continue;
        }
        let command = CustomCommand::new_static("SENTINEL", ClusterHash::Random, false);
        let reply: Result<Option<(String, u16)>, _> = sentinel
            .custom(command, vec!["GET-MASTER-ADDR-BY-NAME", service_name])
            .await;
        if let Ok(Some((host, port))) = reply {
            return Some(Server::new(host, port));
        }
    }
    None
}

/// Listens to one sentinel's events: a failover of our service that
/// starts holds writes; `+switch-master` wakes the watcher. Resubscribes
/// after every reconnect (fred).
async fn listen_to_sentinel(
    client: SubscriberClient,
    subscribed: Arc<std::sync::atomic::AtomicBool>,
    service_name: String,
    failover: Arc<Failover>,
) {
    let mut messages = client.message_rx();
    let _quit = QuitOnDrop(client.clone());
    let _connection = client.connect();
    let _manager = client.manage_subscriptions();
    // Not listening while the connection is re-established (fred
    // resubscribes then); events missed meanwhile are made up by a check.
    let mut reconnects = client.reconnect_rx();
    let mut channels = vec!["+switch-master"];
    channels.extend(FAILOVER_STARTS);
    loop {
        if client.wait_for_connect().await.is_ok()
            && client.subscribe(channels.clone()).await.is_ok()
        {
            break;
        }
        tokio::time::sleep(FOLLOW_RETRY).await;
    }
    subscribed.store(true, Ordering::Release);
    loop {
        let received = tokio::select! {
            received = messages.recv() => received,
            reconnected = reconnects.recv() => {
                match reconnected {
                    // Events may have been missed while it was down.
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        failover.wake();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                continue;
            }
        };
        match received {
            Ok(message) => {
                let text: String = message.value.convert().unwrap_or_default();
                // `<name> <old ip> <old port> <new ip> <new port>`, or
                // `<type> <name> <ip> <port> [@ <master name> <ip> <port>]`.
                if !text.split_whitespace().any(|word| word == service_name) {
                    continue;
                }
                let channel = message.channel.to_string();
                tracing::warn!(event = %channel, %text, "redis: sentinel event");
                if FAILOVER_STARTS.contains(&channel.as_str()) {
                    // The primary failed over is the event's last address.
                    let words: Vec<&str> = text.split_whitespace().collect();
                    let port = words.last().and_then(|p| p.parse::<u16>().ok());
                    match (words.len().checked_sub(2).map(|i| words[i]), port) {
                        (Some(host), Some(port)) => failover.hold(Server::new(host, port)),
                        _ => failover.wake(),
                    }
                } else {
                    failover.wake();
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => failover.wake(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Closes a subscriber when its task ends (or is aborted), so fred's
/// router does not keep reconnecting to the sentinel.
struct QuitOnDrop(SubscriberClient);

impl Drop for QuitOnDrop {
    fn drop(&mut self) {
        quit_in_background(self.0.clone());
    }
}

/// A builder for a direct connection to one sentinel, with the client's
/// timeouts and reconnect policy and the sentinels' own credentials.
fn sentinel_builder(builder: &Builder, host: &HostPort) -> Builder {
    let base = builder.get_config().cloned().unwrap_or_default();
    let (username, password) = match &base.server {
        ServerConfig::Sentinel {
            username, password, ..
        } => (username.clone(), password.clone()),
        _ => (None, None),
    };
    let config = Config {
        server: ServerConfig::Centralized {
            server: Server::new(host.host.clone(), host.port),
        },
        username,
        password,
        database: None,
        fail_fast: false,
        ..base
    };
    let mut sentinel = Builder::from_config(config);
    sentinel.set_performance_config(builder.get_performance_config().clone());
    sentinel.set_connection_config(builder.get_connection_config().clone());
    if let Some(policy) = builder.get_policy() {
        sentinel.set_policy(policy.clone());
    }
    sentinel
}

fn same_server(a: &Server, b: &Server) -> bool {
    a.port == b.port && a.host == b.host
}

/// `ROLE`'s first element is `master` on a primary.
fn is_master_role(reply: &Value) -> bool {
    match reply {
        Value::Array(items) => items.first().and_then(Value::as_str).as_deref() == Some("master"),
        _ => false,
    }
}

/// `CLUSTER SLOTS` as sorted `(first, last, "host:port" of the primary)`.
fn parse_cluster_slots(reply: &Value) -> Vec<(i64, i64, String)> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    let mut out: Vec<(i64, i64, String)> = ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(items) = range else {
                return None;
            };
            let first = items.first()?.as_i64()?;
            let last = items.get(1)?.as_i64()?;
            let Value::Array(primary) = items.get(2)? else {
                return None;
            };
            let host = primary.first()?.as_str()?.into_owned();
            let port = primary.get(1)?.as_i64()?;
            Some((first, last, format!("{host}:{port}")))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_slot_maps_parse() {
        let s = |t: &str| Value::String(t.into());
        assert!(is_master_role(&Value::Array(vec![
            s("master"),
            Value::Integer(10)
        ])));
        assert!(!is_master_role(&Value::Array(vec![
            s("slave"),
            s("127.0.0.1")
        ])));
        assert!(!is_master_role(&Value::Null));
        let range = |a: i64, b: i64, port: i64| {
            Value::Array(vec![
                Value::Integer(a),
                Value::Integer(b),
                Value::Array(vec![s("127.0.0.1"), Value::Integer(port), s("id")]),
                Value::Array(vec![s("127.0.0.1"), Value::Integer(port + 1), s("id2")]),
            ])
        };
        let reply = Value::Array(vec![range(5461, 10922, 7001), range(0, 5460, 7000)]);
        assert_eq!(
            parse_cluster_slots(&reply),
            [
                (0, 5460, "127.0.0.1:7000".to_owned()),
                (5461, 10922, "127.0.0.1:7001".to_owned())
            ]
        );
        assert!(parse_cluster_slots(&Value::Null).is_empty());
    }
}

//! Fan-out: who on this node wants which update, and the per-socket
//! outboxes that carry them.
//!
//! Presence is latest-state-wins, so an outbox does not queue updates: it
//! keeps at most one pending frame per watched user (the newest version)
//! plus the user's own latest state, and a short bounded queue of control
//! messages (acks, errors, snapshots, notices). A socket that cannot take
//! even that is closed rather than allowed to grow memory.
//!
//! **Architecture Invariant:** every update frame is serialised once per
//! node, then shared by reference among all the sockets that receive it.

use std::collections::VecDeque;

/// Hash maps keyed by user id: foldhash is several times faster than
/// SipHash on short strings and still seeded per process, so ids chosen
/// by clients cannot be precomputed to collide.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use parking_lot::{Mutex, RwLock};
use presence_backend::{ConnId, Interest};
use presence_core::DeviceId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SHARDS: usize = 64;

/// Why a socket is being closed by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The same device connected again; this socket lost.
    Replaced,
    /// The client did not read its messages fast enough.
    SlowConsumer,
    /// The server is draining (SIGTERM).
    ShuttingDown,
    /// The client kept flooding past the rate limit.
    Flooding,
    /// The client sent a frame larger than the limit.
    FrameTooLarge,
    /// The client said goodbye (`bye` or its own close frame).
    Ended,
    /// The connection failed or went silent.
    Lost,
    /// R2: the token expired and no `reauth` renewed it.
    TokenExpired,
    /// R2: a `reauth` carried an invalid token or another user's.
    ReauthRefused,
}

impl CloseReason {
    /// The WebSocket close code and reason text sent to the client.
    pub fn close_frame(self) -> (u16, &'static str) {
        match self {
            Self::Replaced => (4001, "replaced"),
            Self::SlowConsumer => (1008, "slow_consumer"),
            Self::ShuttingDown => (1001, "shutting_down"),
            Self::Flooding => (1008, "rate_limited"),
            Self::FrameTooLarge => (1009, "frame_too_large"),
            Self::Ended => (1000, "bye"),
            Self::Lost => (1001, "lost"),
            Self::TokenExpired => (presence_protocol::ws::CLOSE_TOKEN_EXPIRED, "token_expired"),
            Self::ReauthRefused => (
                presence_protocol::ws::CLOSE_REAUTH_REFUSED,
                "reauth_refused",
            ),
        }
    }
}

/// A pending update frame with what the writer needs to account for it.
#[derive(Clone, Debug)]
pub struct Frame {
    pub version: u64,
    pub json: Utf8Bytes,
    pub changed_at: Option<SystemTime>,
}

/// What the writer takes from an outbox in one go.
#[derive(Debug, Default)]
pub struct Drained {
    pub control: Vec<Utf8Bytes>,
    pub updates: Vec<Frame>,
}

/// One socket as the hub sees it.
pub struct Conn {
    pub id: ConnId,
    pub user: Arc<str>,
    pub device: DeviceId,
    outbox: Mutex<Outbox>,
    wake: Notify,
    close: Mutex<Option<CloseReason>>,
    closed: AtomicBool,
    closing: CancellationToken,
}

#[derive(Default)]
struct Outbox {
    control: VecDeque<Utf8Bytes>,
    /// Newest pending frame per watched user, in first-pending order.
    pending: HashMap<Arc<str>, Frame>,
    order: VecDeque<Arc<str>>,
    /// The user's own newest state.
    me: Option<Frame>,
    /// The newest own version handed out (in `ready` or a `me` frame).
    me_version: u64,
    /// Highest version handed to the writer per watched user.
    delivered: HashMap<Arc<str>, u64>,
}

impl Conn {
    pub fn new(id: ConnId, user: Arc<str>, device: DeviceId) -> Arc<Conn> {
        Arc::new(Conn {
            id,
            user,
            device,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            close: Mutex::new(None),
            closed: AtomicBool::new(false),
            closing: CancellationToken::new(),
        })
    }

    /// Queues a control message. Returns `false` (and closes the socket as
    /// a slow consumer) when the bounded queue is full.
    pub fn push_control(&self, json: Utf8Bytes, max_queue: usize) -> bool {
        {
            let mut outbox = self.outbox.lock();
            if outbox.control.len() >= max_queue {
                drop(outbox);
                self.request_close(CloseReason::SlowConsumer);
                return false;
            }
            outbox.control.push_back(json);
        }
        self.wake.notify_one();
        true
    }

    /// Offers an update about `user`; keeps only the newest version (W3).
    pub fn push_update(&self, user: &Arc<str>, frame: Frame) {
        {
            let mut outbox = self.outbox.lock();
            if outbox
                .delivered
                .get(user)
                .is_some_and(|v| *v >= frame.version)
            {
                return;
            }
            match outbox.pending.get_mut(user) {
                Some(pending) if pending.version >= frame.version => return,
                Some(pending) => *pending = frame,
                None => {
                    outbox.pending.insert(user.clone(), frame);
                    outbox.order.push_back(user.clone());
                }
            }
        }
        self.wake.notify_one();
    }

    /// Offers the user's own newest state.
    pub fn push_me(&self, frame: Frame) {
        {
            let mut outbox = self.outbox.lock();
            if outbox
                .me
                .as_ref()
                .is_some_and(|m| m.version > frame.version)
            {
                return;
            }
            outbox.me = Some(frame);
        }
        self.wake.notify_one();
    }

    /// Records the own version the socket already has (its `ready`).
    pub fn note_me_version(&self, version: u64) {
        let mut outbox = self.outbox.lock();
        outbox.me_version = outbox.me_version.max(version);
    }

    /// Forgets what was delivered about `user` (after an unsubscribe).
    pub fn forget(&self, user: &str) {
        let mut outbox = self.outbox.lock();
        outbox.delivered.remove(user);
        if outbox.pending.remove(user).is_some() {
            outbox.order.retain(|u| &**u != user);
        }
    }

    /// Takes everything pending: control messages first, then updates.
    pub fn drain(&self) -> Drained {
        let mut outbox = self.outbox.lock();
        let outbox = &mut *outbox;
        let mut drained = Drained {
            control: outbox.control.drain(..).collect(),
            updates: Vec::with_capacity(outbox.order.len() + 1),
        };
        if let Some(me) = outbox.me.take() {
            drained.updates.push(me);
        }
        while let Some(user) = outbox.order.pop_front() {
            if let Some(frame) = outbox.pending.remove(&user) {
                outbox.delivered.insert(user, frame.version);
                drained.updates.push(frame);
            }
        }
        drained
    }

    /// Waits until there is something to write or a close was requested.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Asks the socket's tasks to close it with `reason` (first reason wins).
    pub fn request_close(&self, reason: CloseReason) {
        let mut close = self.close.lock();
        if close.is_none() {
            *close = Some(reason);
        }
        drop(close);
        self.closed.store(true, Ordering::Release);
        self.closing.cancel();
        self.wake.notify_one();
    }

    /// Completes once a close was requested.
    pub async fn closing(&self) {
        self.closing.cancelled().await;
    }

    pub fn close_requested(&self) -> Option<CloseReason> {
        if !self.closed.load(Ordering::Acquire) {
            return None;
        }
        *self.close.lock()
    }
}

type ConnMap = HashMap<Arc<str>, Vec<Arc<Conn>>>;
/// F3: subscriptions held per user.
type BudgetMap = HashMap<Arc<str>, usize>;

/// The node's interest maps: who watches whom, and whose sockets are here.
pub struct Hub {
    watchers: Box<[RwLock<ConnMap>]>,
    owners: Box<[RwLock<ConnMap>]>,
    /// F3: subscriptions held per user across all their sockets here.
    budgets: Box<[Mutex<BudgetMap>]>,
    hasher: foldhash::fast::RandomState,
    active: AtomicBool,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        let shards = || {
            (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect()
        };
        Hub {
            watchers: shards(),
            owners: shards(),
            budgets: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: Default::default(),
            active: AtomicBool::new(true),
        }
    }

    /// Whether presence broadcasting is on (X2).
    pub fn presence_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn set_presence_active(&self, active: bool) {
        self.active.store(active, Ordering::Release);
    }

    /// Registers a user's own socket. Returns the sockets of the same device
    /// that it replaces.
    pub fn add_owner(&self, conn: &Arc<Conn>) -> Vec<Arc<Conn>> {
        let mut map = self.shard(&self.owners, &conn.user).write();
        let conns = map.entry(conn.user.clone()).or_default();
        let (replaced, kept): (Vec<_>, Vec<_>) =
            conns.drain(..).partition(|c| c.device == conn.device);
        *conns = kept;
        conns.push(conn.clone());
        replaced
    }

    pub fn remove_owner(&self, conn: &Arc<Conn>) {
        remove_from(self.shard(&self.owners, &conn.user), &conn.user, conn);
    }

    /// The sockets of `user` on this node.
    pub fn owners_of(&self, user: &str) -> Vec<Arc<Conn>> {
        self.shard(&self.owners, user)
            .read()
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// Every socket on this node.
    pub fn all_conns(&self) -> Vec<Arc<Conn>> {
        self.owners
            .iter()
            .flat_map(|s| s.read().values().flatten().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub fn watch(&self, user: &Arc<str>, conn: &Arc<Conn>) {
        self.shard(&self.watchers, user)
            .write()
            .entry(user.clone())
            .or_default()
            .push(conn.clone());
    }

    pub fn unwatch(&self, user: &Arc<str>, conn: &Arc<Conn>) {
        remove_from(self.shard(&self.watchers, user), user, conn);
    }

    /// F3: takes `n` subscriptions from `user`'s budget of `max` across all
    /// their sockets on this node. `Err(held)` (and nothing taken) when
    /// that would exceed it.
    pub fn reserve_subscriptions(
        &self,
        user: &Arc<str>,
        n: usize,
        max: usize,
    ) -> Result<(), usize> {
        if n == 0 {
            return Ok(());
        }
        let mut budgets = self.shard(&self.budgets, user).lock();
        let held = budgets.get(user).copied().unwrap_or(0);
        if held.saturating_add(n) > max {
            return Err(held);
        }
        budgets.insert(user.clone(), held + n);
        Ok(())
    }

    /// F3: gives `n` subscriptions back to `user`'s budget.
    pub fn release_subscriptions(&self, user: &str, n: usize) {
        if n == 0 {
            return;
        }
        let mut budgets = self.shard(&self.budgets, user).lock();
        if let Some(held) = budgets.get_mut(user) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                budgets.remove(user);
                shrink_if_sparse(&mut budgets);
            }
        }
    }

    /// F3: the subscriptions `user` holds on this node.
    pub fn subscriptions_of(&self, user: &str) -> usize {
        self.shard(&self.budgets, user)
            .lock()
            .get(user)
            .copied()
            .unwrap_or(0)
    }

    /// Runs `f` for every socket watching `user`.
    pub fn for_watchers(&self, user: &str, mut f: impl FnMut(&Arc<Conn>)) {
        if let Some(conns) = self.shard(&self.watchers, user).read().get(user) {
            conns.iter().for_each(&mut f);
        }
    }

    /// Every user watched on this node.
    pub fn watched_user_ids(&self) -> Vec<Arc<str>> {
        self.watchers
            .iter()
            .flat_map(|s| s.read().keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// How many distinct users have watchers on this node.
    pub fn watched_users(&self) -> usize {
        self.watchers.iter().map(|s| s.read().len()).sum()
    }

    /// Whether a socket here watches `user` or belongs to them.
    pub fn wants(&self, user: &str) -> bool {
        self.shard(&self.watchers, user).read().contains_key(user)
            || self.shard(&self.owners, user).read().contains_key(user)
    }

    fn shard<'a, T>(&self, shards: &'a [T], user: &str) -> &'a T {
        &shards[(self.hasher.hash_one(user) as usize) % shards.len()]
    }
}

/// The backend skips updates of users nobody on this node wants. A
/// watcher is registered ([`Hub::watch`]) before it reads what it shows,
/// so no update it needs is skipped.
impl Interest for Hub {
    fn wants(&self, user: &str) -> bool {
        Hub::wants(self, user)
    }
}

fn remove_from(shard: &RwLock<ConnMap>, user: &str, conn: &Arc<Conn>) {
    let mut map = shard.write();
    if let Some(conns) = map.get_mut(user) {
        conns.retain(|c| !Arc::ptr_eq(c, conn));
        if conns.is_empty() {
            map.remove(user);
            shrink_if_sparse(&mut map);
        } else if conns.capacity() > 2 * conns.len() + 4 {
            conns.shrink_to_fit();
        }
    }
}

/// F3: a hash map never gives its table back by itself; after a burst of
/// subscriptions ends (sockets closed) the tables would keep their peak
/// size. Shrinking once the map is a quarter full returns the memory at an
/// amortised constant cost per removal.
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(version: u64) -> Frame {
        Frame {
            version,
            json: Utf8Bytes::from(format!("v{version}")),
            changed_at: None,
        }
    }

    fn conn(device: &str) -> Arc<Conn> {
        Conn::new(
            ConnId(1),
            Arc::from("alice"),
            DeviceId::try_from(device).unwrap(),
        )
    }

    #[test]
    fn w3_outbox_keeps_only_the_newest_version_per_user() {
        let c = conn("d1");
        let bob: Arc<str> = Arc::from("bob");
        c.push_update(&bob, frame(2));
        c.push_update(&bob, frame(1));
        c.push_update(&bob, frame(3));
        let drained = c.drain();
        let versions: Vec<u64> = drained.updates.iter().map(|f| f.version).collect();
        assert_eq!(versions, vec![3]);
        // Once delivered, older versions are dropped.
        c.push_update(&bob, frame(3));
        assert!(c.drain().updates.is_empty());
    }

    #[test]
    fn control_queue_is_bounded_and_closes_slow_consumers() {
        let c = conn("d1");
        assert!(c.push_control(Utf8Bytes::from_static("a"), 2));
        assert!(c.push_control(Utf8Bytes::from_static("b"), 2));
        assert!(!c.push_control(Utf8Bytes::from_static("c"), 2));
        assert_eq!(c.close_requested(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn d1_same_device_replaces_older_socket() {
        let hub = Hub::new();
        let first = conn("d1");
        let other = conn("d2");
        assert!(hub.add_owner(&first).is_empty());
        assert!(hub.add_owner(&other).is_empty());
        let second = conn("d1");
        let replaced = hub.add_owner(&second);
        assert_eq!(replaced.len(), 1);
        assert!(Arc::ptr_eq(&replaced[0], &first));
        assert_eq!(hub.owners_of("alice").len(), 2);
    }

    #[test]
    fn f3_subscription_budget_is_per_user_across_sockets() {
        let hub = Hub::new();
        let alice: Arc<str> = Arc::from("alice");
        assert_eq!(hub.reserve_subscriptions(&alice, 600, 1000), Ok(()));
        assert_eq!(hub.reserve_subscriptions(&alice, 400, 1000), Ok(()));
        assert_eq!(hub.reserve_subscriptions(&alice, 1, 1000), Err(1000));
        let bob: Arc<str> = Arc::from("bob");
        assert_eq!(hub.reserve_subscriptions(&bob, 1000, 1000), Ok(()));
        hub.release_subscriptions("alice", 600);
        assert_eq!(hub.subscriptions_of("alice"), 400);
        assert_eq!(hub.reserve_subscriptions(&alice, 601, 1000), Err(400));
        hub.release_subscriptions("alice", 400);
        assert_eq!(hub.subscriptions_of("alice"), 0);
        assert_eq!(hub.reserve_subscriptions(&alice, usize::MAX, 1000), Err(0));
    }

    #[test]
    fn f3_maps_give_their_memory_back_when_watchers_leave() {
        let hub = Hub::new();
        let c = conn("d1");
        let users: Vec<Arc<str>> = (0..20_000).map(|i| Arc::from(format!("u{i}"))).collect();
        for u in &users {
            hub.watch(u, &c);
        }
        let peak: usize = hub.watchers.iter().map(|s| s.read().capacity()).sum();
        for u in &users {
            hub.unwatch(u, &c);
        }
        let after: usize = hub.watchers.iter().map(|s| s.read().capacity()).sum();
        assert_eq!(hub.watched_users(), 0);
        // What is left is the small floor every shard keeps.
        assert!(
            after <= SHARDS * 64 && after * 5 < peak,
            "capacity {peak} -> {after}"
        );
    }

    #[test]
    fn w2_only_watchers_receive() {
        let hub = Hub::new();
        let c = conn("d1");
        let bob: Arc<str> = Arc::from("bob");
        hub.watch(&bob, &c);
        let mut seen = 0;
        hub.for_watchers("bob", |_| seen += 1);
        hub.for_watchers("carol", |_| seen += 10);
        assert_eq!(seen, 1);
        hub.unwatch(&bob, &c);
        hub.for_watchers("bob", |_| seen += 1);
        assert_eq!(seen, 1);
        assert_eq!(hub.watched_users(), 0);
    }
}

//! Per-user rate limits shared by every gateway of a cluster, without a
//! Redis round trip per request: [`RedisRateLimits`].
//!
//! A user's sockets and REST calls may land on different gateways, so a
//! budget kept only in each gateway's memory would multiply by the number
//! of nodes. The shared bucket lives in Redis, in the user's shard slot,
//! as one number: the instant it is full again (the generic cell rate
//! algorithm, on Redis's clock). Asking Redis on every status change cost
//! two script calls per text change, each waited for, so each gateway
//! instead keeps a **local view** of every bucket it uses and settles it in
//! the background:
//!
//! - A request whose bucket view is *fresh* (learned from Redis within
//!   [`VIEW_TTL`]) and *not shared* is decided locally at once: taken from
//!   the view, and the token is *charged* to the shared bucket by the next
//!   settle round, which the request starts without waiting for it.
//! - A request whose view is unknown, stale or shared asks Redis, batched
//!   with every other such request into the next round. A refusal by the
//!   local view needs no question: other gateways only ever add debt, so
//!   the shared bucket is at least as empty.
//! - A settle round sends one script call per touched shard (all in
//!   flight together) that charges the tokens granted locally, grants the
//!   ones asked for, and returns each bucket's state, which becomes the
//!   view. A round starts as soon as something is pending and the previous
//!   round is done, so under load one round carries many requests.
//! - The bucket in Redis remembers which gateway charged it last. A
//!   gateway that learns another one charged it since it was last full
//!   marks its view *shared* for [`VIEW_TTL`]: a user active on several
//!   gateways at once is decided by Redis on each request (as before this
//!   design), and one whose sockets all sit on one gateway, as nearly all
//!   do, is decided locally.
//!
//! **Tolerance.** One gateway alone is exact: its view holds its own takes.
//! Across gateways, a gateway that has not yet learned that a bucket is
//! shared decides from its own view: it may grant what other gateways
//! took since its view was learned, until its first charge after theirs
//! comes back and tells it the bucket is shared (one Redis round trip of
//! grants, per gateway and switch), and a gateway that asks does not see
//! the charges of other gateways still on their way (another round trip).
//! Every granted token is charged to the shared bucket, so an overshoot is
//! paid back before the next token: over any longer window the
//! workspace-wide rate is exact.
//!
//! **Redis slow or away.** A request that asked waits at most
//! [`SHARED_LIMIT_WAIT`] for its round, then is decided from the local
//! view, and until a round succeeds again no request waits at all (nor
//! while the client is disconnected): the gateway still bounds what it
//! admits itself, exactly, and charges it once Redis answers (charges
//! carry their age, so old ones have mostly expired by then).
//!
//! **Memory.** A view is forgotten once its bucket is full again and the
//! view is stale, so the map holds the users active in the last few
//! seconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::RedisClient;
use super::error::RedisError;
use super::keys::{Keys, shard_of};
use super::scripts::SETTLE_RATE_BUCKETS;
use presence_backend::{BucketRate, SharedRateLimits};

/// How long a view learned from Redis is trusted for decisions without
/// asking again, and how long a bucket found shared is decided by Redis.
pub const VIEW_TTL: Duration = Duration::from_secs(2);
/// How long a request that asked Redis waits before deciding locally.
pub const SHARED_LIMIT_WAIT: Duration = Duration::from_millis(250);
/// Buckets per script call (Lua's `unpack` has a stack limit).
const KEYS_PER_CALL: usize = 500;
/// Pause before the next round after a round failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);
/// How often views that carry no information are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Shared per-user buckets in Redis, decided from local views settled in
/// the background (see the module documentation). Cheap to clone: clones
/// share the views and the settle task, which stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct RedisRateLimits {
    inner: Arc<Limits>,
}

/// Counts since start, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitStats {
    /// Settle rounds that called Redis.
    pub rounds: u64,
    /// Script calls sent (one per touched shard and round, or more for
    /// very many buckets).
    pub calls: u64,
    /// Requests decided from the local view because Redis did not answer
    /// in time or failed.
    pub local_fallbacks: u64,
}

struct Limits {
    client: RedisClient,
    shards: u16,
    /// This gateway's node id, stored with the buckets it charges.
    node: String,
    /// Views per user, then per bucket name (a user has one or two).
    views: Mutex<HashMap<Arc<str>, Vec<View>>>,
    /// Wakes the settle task for a request that asks Redis.
    wake: Arc<Notify>,
    /// One round at a time (the background task and `settle_now`).
    round: tokio::sync::Mutex<()>,
    stats: Mutex<RateLimitStats>,
    /// Set when a round failed or a request gave up waiting; cleared by
    /// the next round that succeeds. While set, nothing waits for Redis.
    redis_slow: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// This gateway's view of one shared bucket.
struct View {
    bucket: &'static str,
    rate: BucketRate,
    /// When the shared bucket is full again as far as this node knows:
    /// Redis's answer of the last round plus this node's takes since.
    full_at: Instant,
    /// When Redis last told the bucket's state (`None`: never).
    learned_at: Option<Instant>,
    /// Until when another gateway is known to use the bucket too: every
    /// request asks Redis meanwhile.
    shared_until: Option<Instant>,
    /// Tokens granted from the view and not yet sent to Redis, and when
    /// the first of them was granted.
    charged: u32,
    charged_since: Instant,
    /// Requests waiting for Redis to decide them in the next round.
    waiters: Vec<oneshot::Sender<Decision>>,
    /// Sent in a round that has not answered yet: not forgotten meanwhile.
    in_round: bool,
}

/// What a round decided for a request that asked.
#[derive(Debug)]
enum Decision {
    Granted,
    Refused(Duration),
    /// Redis failed: decide locally.
    Unknown,
}

/// One bucket's part of a round.
struct Pending {
    user: Arc<str>,
    bucket: &'static str,
    rate: BucketRate,
    charged: u32,
    charged_age: Duration,
    waiters: Vec<oneshot::Sender<Decision>>,
}

/// Redis's answer for one bucket.
#[derive(Clone, Copy, Debug)]
struct Settled {
    granted: u32,
    /// Time until the bucket is full again.
    debt: Duration,
    /// Another gateway charged the bucket since it was last full.
    shared: bool,
}

impl RedisRateLimits {
    /// Starts the settle task on the current tokio runtime for gateway
    /// `node`; `shards` is the cluster's shard count (buckets live in their
    /// user's shard slot).
    pub fn start(client: RedisClient, shards: u16, node: impl Into<String>) -> RedisRateLimits {
        let inner = Arc::new(Limits {
            client,
            shards: shards.max(1),
            node: node.into(),
            views: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            round: tokio::sync::Mutex::new(()),
            stats: Mutex::new(RateLimitStats::default()),
            redis_slow: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run_settler(Arc::downgrade(&inner)));
        *inner.task.lock() = Some(task);
        RedisRateLimits { inner }
    }

    /// Runs one settle round now (tests; the background task runs one as
    /// soon as anything is pending).
    pub async fn settle_now(&self) {
        self.inner.settle_round().await;
    }

    /// Counts since start.
    pub fn stats(&self) -> RateLimitStats {
        *self.inner.stats.lock()
    }

    /// Buckets this node holds a view of.
    pub fn views(&self) -> usize {
        self.inner.views.lock().values().map(Vec::len).sum()
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

#[async_trait]
impl SharedRateLimits for RedisRateLimits {
    async fn take(
        &self,
        bucket: &'static str,
        user: &str,
        rate: BucketRate,
    ) -> Result<(), Duration> {
        let limits = &self.inner;
        let now = Instant::now();
        let reachable = limits.client.is_connected() && !limits.redis_slow.load(Ordering::Acquire);
        let asked = {
            let mut views = limits.views.lock();
            let view = view_of(&mut views, user, bucket, rate, now);
            if !reachable || view.decides_alone(now) {
                // Without Redis the change cannot be made anyway; the view
                // still bounds this node. Charged either way: settled once
                // Redis answers.
                let taken = view.take_local(now, true);
                drop(views);
                if taken.is_ok() {
                    limits.wake.notify_one();
                }
                return taken;
            }
            // A refusal of the view holds for the shared bucket too.
            view.check(now)?;
            let (tx, rx) = oneshot::channel();
            view.waiters.push(tx);
            rx
        };
        limits.wake.notify_one();
        match tokio::time::timeout(SHARED_LIMIT_WAIT, asked).await {
            Ok(Ok(Decision::Granted)) => Ok(()),
            Ok(Ok(Decision::Refused(wait))) => Err(wait),
            Ok(Ok(Decision::Unknown)) | Ok(Err(_)) => {
                limits.take_fallback(user, bucket, rate, true)
            }
            // The round may still grant it in Redis: not charged again.
            Err(_) => {
                limits.redis_slow.store(true, Ordering::Release);
                limits.take_fallback(user, bucket, rate, false)
            }
        }
    }
}

impl Limits {
    /// Decides from the local view, when Redis could not.
    fn take_fallback(
        &self,
        user: &str,
        bucket: &'static str,
        rate: BucketRate,
        charge: bool,
    ) -> Result<(), Duration> {
        self.stats.lock().local_fallbacks += 1;
        tracing::debug!("redis rate limits: Redis did not decide in time; using this node's view");
        let now = Instant::now();
        let mut views = self.views.lock();
        view_of(&mut views, user, bucket, rate, now).take_local(now, charge)
    }

    /// Sends every charged token and every waiting request to Redis and
    /// applies the answers.
    async fn settle_round(&self) {
        let _one_at_a_time = self.round.lock().await;
        let pending = self.collect();
        if pending.is_empty() {
            return;
        }
        let sent_at = Instant::now();
        let mut by_shard: BTreeMap<u16, Vec<Pending>> = BTreeMap::new();
        for p in pending {
            by_shard
                .entry(shard_of(&p.user, self.shards))
                .or_default()
                .push(p);
        }
        let mut calls = Vec::new();
        for (shard, mut items) in by_shard {
            while !items.is_empty() {
                let rest = items.split_off(items.len().min(KEYS_PER_CALL));
                calls.push((shard, items));
                items = rest;
            }
        }
        {
            let mut stats = self.stats.lock();
            stats.rounds += 1;
            stats.calls += calls.len() as u64;
        }
        let answers = futures_util::future::join_all(
            calls
                .iter()
                .map(|(shard, items)| self.client.settle_rate_buckets(&self.node, *shard, items)),
        )
        .await;
        let failed = answers.iter().any(Result::is_err);
        self.redis_slow.store(failed, Ordering::Release);
        let mut views = self.views.lock();
        for ((_, items), answer) in calls.into_iter().zip(answers) {
            match answer {
                Ok(settled) => {
                    for (p, s) in items.into_iter().zip(settled) {
                        apply(&mut views, p, s, sent_at);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "redis rate limits: a settle call failed");
                    for p in items {
                        restore(&mut views, p, sent_at);
                    }
                }
            }
        }
    }

    /// Takes every view's charges and waiters out for a round.
    fn collect(&self) -> Vec<Pending> {
        let now = Instant::now();
        let mut pending = Vec::new();
        let mut views = self.views.lock();
        for (user, list) in views.iter_mut() {
            for view in list.iter_mut() {
                if view.charged == 0 && view.waiters.is_empty() {
                    continue;
                }
                pending.push(Pending {
                    user: user.clone(),
                    bucket: view.bucket,
                    rate: view.rate,
                    charged: std::mem::take(&mut view.charged),
                    charged_age: now.saturating_duration_since(view.charged_since),
                    waiters: std::mem::take(&mut view.waiters),
                });
                view.in_round = true;
            }
        }
        pending
    }

    /// Whether anything waits for a round.
    fn has_pending(&self) -> bool {
        self.views
            .lock()
            .values()
            .flatten()
            .any(|v| v.charged > 0 || !v.waiters.is_empty())
    }

    /// Forgets views that tell nothing a new one would not: full buckets
    /// whose view is stale, with nothing pending.
    fn sweep(&self, now: Instant) {
        self.views.lock().retain(|_, list| {
            list.retain(|v| {
                v.in_round
                    || v.charged > 0
                    || !v.waiters.is_empty()
                    || v.full_at > now
                    || v.is_fresh(now)
            });
            !list.is_empty()
        });
    }
}

impl View {
    fn new(bucket: &'static str, rate: BucketRate, now: Instant) -> View {
        View {
            bucket,
            rate,
            full_at: now,
            learned_at: None,
            shared_until: None,
            charged: 0,
            charged_since: now,
            waiters: Vec::new(),
            in_round: false,
        }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.learned_at
            .is_some_and(|at| now.saturating_duration_since(at) < VIEW_TTL)
    }

    /// Whether this node may decide without asking: a fresh view of a
    /// bucket no other gateway is known to use.
    fn decides_alone(&self, now: Instant) -> bool {
        self.is_fresh(now) && self.shared_until.is_none_or(|until| until <= now)
    }

    /// `Ok` if the view has a token at `now`, else how long until it has.
    fn check(&self, now: Instant) -> Result<(), Duration> {
        let debt = self.full_at.max(now) - now;
        let tolerance = self.rate.interval * (self.rate.capacity.max(1) - 1);
        if debt > tolerance {
            return Err(debt - tolerance);
        }
        Ok(())
    }

    /// Takes a token from the view; `charge` it to the shared bucket in the
    /// next round.
    fn take_local(&mut self, now: Instant, charge: bool) -> Result<(), Duration> {
        self.check(now)?;
        self.full_at = self.full_at.max(now) + self.rate.interval;
        if charge {
            if self.charged == 0 {
                self.charged_since = now;
            }
            self.charged += 1;
        }
        Ok(())
    }
}

/// `user`'s view of `bucket`, created full if there is none.
fn view_of<'a>(
    views: &'a mut HashMap<Arc<str>, Vec<View>>,
    user: &str,
    bucket: &'static str,
    rate: BucketRate,
    now: Instant,
) -> &'a mut View {
    if !views.contains_key(user) {
        views.insert(Arc::from(user), Vec::with_capacity(2));
    }
    let list = views.get_mut(user).expect("inserted above");
    let index = match list.iter().position(|v| v.bucket == bucket) {
        Some(index) => index,
        None => {
            list.push(View::new(bucket, rate, now));
            list.len() - 1
        }
    };
    let view = &mut list[index];
    view.rate = rate;
    view
}

/// Applies Redis's answer for one bucket: the view becomes Redis's state
/// plus what this node granted while the round ran, and the requests that
/// asked get their decisions.
fn apply(views: &mut HashMap<Arc<str>, Vec<View>>, p: Pending, s: Settled, sent_at: Instant) {
    let view = view_of(views, &p.user, p.bucket, p.rate, sent_at);
    let interval = p.rate.interval;
    let mut full_at = sent_at + s.debt;
    if view.charged > 0 {
        full_at = full_at.max(view.charged_since) + interval * view.charged;
    }
    view.full_at = full_at;
    view.learned_at = Some(sent_at);
    if s.shared {
        view.shared_until = Some(sent_at + VIEW_TTL);
    }
    view.in_round = false;
    // A refused request waits for the token after the granted ones.
    let burst = interval * p.rate.capacity.max(1);
    let wait = (s.debt + interval)
        .saturating_sub(burst)
        .max(Duration::from_micros(1));
    for (i, waiter) in p.waiters.into_iter().enumerate() {
        let decision = if (i as u64) < u64::from(s.granted) {
            Decision::Granted
        } else {
            Decision::Refused(wait)
        };
        let _ = waiter.send(decision);
    }
}

/// A round failed for this bucket: its charges go back to the view (sent
/// again next round) and its waiters decide locally.
fn restore(views: &mut HashMap<Arc<str>, Vec<View>>, p: Pending, now: Instant) {
    let view = view_of(views, &p.user, p.bucket, p.rate, now);
    if p.charged > 0 {
        let since = now.checked_sub(p.charged_age).unwrap_or(now);
        view.charged_since = if view.charged > 0 {
            view.charged_since.min(since)
        } else {
            since
        };
        view.charged += p.charged;
    }
    view.in_round = false;
    for waiter in p.waiters {
        let _ = waiter.send(Decision::Unknown);
    }
}

/// The background task: a round as soon as anything is pending and the
/// previous round is done.
async fn run_settler(limits: Weak<Limits>) {
    let mut last_sweep = Instant::now();
    loop {
        let Some(strong) = limits.upgrade() else {
            return;
        };
        if !strong.has_pending() {
            // Holding only a weak reference while asleep lets the limiter
            // drop.
            let wake = strong.wake.clone();
            drop(strong);
            let _woken_or_timed_out = tokio::time::timeout(SWEEP_INTERVAL, wake.notified()).await;
        } else {
            drop(strong);
        }
        let Some(strong) = limits.upgrade() else {
            return;
        };
        strong.settle_round().await;
        if strong.redis_slow.load(Ordering::Acquire) {
            // Charges stay pending while Redis fails: retry, not spin.
            tokio::time::sleep(RETRY_AFTER_FAILURE).await;
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) >= SWEEP_INTERVAL {
            strong.sweep(now);
            last_sweep = now;
        }
    }
}

impl RedisClient {
    /// One `settle_rate_buckets` call for `items`, all of `shard`, as
    /// gateway `node`.
    async fn settle_rate_buckets(
        &self,
        node: &str,
        shard: u16,
        items: &[Pending],
    ) -> Result<Vec<Settled>, RedisError> {
        let keys = Keys::new(shard);
        let mut names = Vec::with_capacity(items.len());
        let mut args = Vec::with_capacity(1 + items.len() * 5);
        args.push(node.to_owned());
        for p in items {
            names.push(keys.rate(p.bucket, &p.user));
            args.push(micros(p.rate.interval).max(1).to_string());
            args.push(p.rate.capacity.max(1).to_string());
            args.push(p.charged.to_string());
            args.push(micros(p.charged_age).to_string());
            args.push(p.waiters.len().to_string());
        }
        let reply = self.run_script(SETTLE_RATE_BUCKETS, names, args).await?;
        let numbers: Vec<u64> = reply
            .convert()
            .map_err(|e| RedisError::protocol(format!("settle_rate_buckets answered {e}")))?;
        if numbers.len() != items.len() * 3 {
            return Err(RedisError::protocol(format!(
                "settle_rate_buckets answered {} numbers for {} buckets",
                numbers.len(),
                items.len()
            )));
        }
        Ok(numbers
            .chunks_exact(3)
            .map(|answer| Settled {
                granted: u32::try_from(answer[0]).unwrap_or(u32::MAX),
                debt: Duration::from_micros(answer[1]),
                shared: answer[2] == 1,
            })
            .collect())
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

//! Rate limits: token buckets per user and per WebSocket connection.
//!
//! Every limit is a token bucket: it holds at most `capacity` tokens, each
//! accepted request takes one, and tokens come back at a steady rate. A
//! full bucket allows a burst of `capacity` requests; after that requests
//! are accepted at the refill rate, and a refused request learns how long
//! to wait ([`RetryAfter`]).
//!
//! The bucket is stored as the "generic cell rate algorithm": one instant,
//! the time at which the bucket will be full again. That is exact integer
//! arithmetic (no drifting float token counts), 16 bytes per bucket, and
//! makes "is this bucket full?" a single comparison — which is what lets
//! [`KeyedLimiter`] forget full buckets: a forgotten key starts again with
//! a full bucket, which is exactly the state it was in.
//!
//! Time is a parameter (`now: Instant`) everywhere, so tests need no sleeps
//! and the caller decides which clock to read.
//!
//! Who uses what (defaults in [`RateLimits`]):
//! - per user, across all their connections and REST calls: status-text
//!   changes and status changes ([`UserLimiters`]);
//! - per WebSocket connection: every client message (a [`TokenBucket`]
//!   owned by the connection task; no sharing, no lock).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A refused request: try again after this long. `Display` and
/// [`RetryAfter::header_secs`] give the value for a `Retry-After` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up and at least 1, as `Retry-After` wants.
    pub fn header_secs(self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry after {:.3} s", self.0.as_secs_f64())
    }
}

/// The shape of a token bucket: how many requests in a burst and how fast
/// tokens come back. Always valid: capacity ≥ 1, a finite positive rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    capacity: u32,
    /// Time to earn back one token (1 / refill rate).
    interval: Duration,
}

/// A [`Rate`] that cannot work: zero capacity, or a rate that is zero,
/// negative, not finite, or faster than one token per nanosecond.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("invalid rate: capacity {capacity}, refill {refill_per_sec} per second")]
pub struct InvalidRate {
    pub capacity: u32,
    pub refill_per_sec: f64,
}

impl Rate {
    /// A bucket of `capacity` tokens refilled at `refill_per_sec` tokens per
    /// second (fractions allowed: `5.0 / 60.0` is five per minute).
    pub fn new(capacity: u32, refill_per_sec: f64) -> Result<Rate, InvalidRate> {
        let invalid = InvalidRate {
            capacity,
            refill_per_sec,
        };
        if capacity == 0 || !refill_per_sec.is_finite() || refill_per_sec <= 0.0 {
            return Err(invalid);
        }
        let interval = Duration::try_from_secs_f64(refill_per_sec.recip()).map_err(|_| invalid)?;
        if interval.is_zero() {
            return Err(invalid);
        }
        Ok(Rate { capacity, interval })
    }

    /// `count` requests per `period`, all of them allowed in one burst:
    /// capacity `count`, one token back every `period / count`. Exact, unlike
    /// going through a float rate.
    pub fn per(count: u32, period: Duration) -> Result<Rate, InvalidRate> {
        let invalid = InvalidRate {
            capacity: count,
            refill_per_sec: f64::from(count) / period.as_secs_f64(),
        };
        if count == 0 {
            return Err(invalid);
        }
        let interval = period / count;
        if interval.is_zero() {
            return Err(invalid);
        }
        Ok(Rate {
            capacity: count,
            interval,
        })
    }

    /// Changes the burst size and keeps the refill rate.
    pub fn with_capacity(self, capacity: u32) -> Result<Rate, InvalidRate> {
        if capacity == 0 {
            return Err(InvalidRate {
                capacity,
                refill_per_sec: self.refill_per_sec(),
            });
        }
        Ok(Rate { capacity, ..self })
    }

    pub fn capacity(self) -> u32 {
        self.capacity
    }

    /// Tokens per second.
    pub fn refill_per_sec(self) -> f64 {
        self.interval.as_secs_f64().recip()
    }

    /// The time to earn back one token.
    pub fn refill_interval(self) -> Duration {
        self.interval
    }

    /// How long an empty bucket takes to become full: how long a key must
    /// stay quiet before [`KeyedLimiter`] may forget it.
    pub fn full_refill(self) -> Duration {
        self.interval * self.capacity
    }

    /// How far ahead of `now` the full-again instant may run while a token
    /// is still available (`capacity - 1` intervals).
    fn burst_tolerance(self) -> Duration {
        self.interval * (self.capacity - 1)
    }
}

/// One token bucket. It starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    rate: Rate,
    /// When the bucket will be full again if nothing more is taken. In the
    /// past (or now) means full.
    full_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket { rate, full_at: now }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token, or says how long until one is available. A refused
    /// request takes nothing, so hammering does not extend the wait.
    pub fn try_take(&mut self, now: Instant) -> Result<(), RetryAfter> {
        let full_at = self.full_at.max(now);
        let debt = full_at - now;
        let tolerance = self.rate.burst_tolerance();
        if debt > tolerance {
            return Err(RetryAfter(debt - tolerance));
        }
        self.full_at = full_at + self.rate.interval;
        Ok(())
    }

    /// Whole tokens available at `now`.
    pub fn available(&self, now: Instant) -> u32 {
        let debt = self.full_at.saturating_duration_since(now);
        // Tokens owed, rounded up: a token partly earned back is not there.
        let owed = debt.as_nanos().div_ceil(self.rate.interval.as_nanos());
        let owed = u32::try_from(owed).unwrap_or(u32::MAX);
        self.rate.capacity.saturating_sub(owed)
    }

    /// `true` once every token has come back: the bucket is then the same as
    /// a new one and may be dropped.
    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }
}

/// Sizing of a [`KeyedLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedLimiterConfig {
    /// Independent locks; more shards, less contention. At least 1.
    pub shards: usize,
    /// The most keys tracked at once, across all shards (rounded up to a
    /// multiple of `shards`). See [`KeyedLimiter`] for what happens beyond.
    pub max_keys: usize,
}

impl Default for KeyedLimiterConfig {
    fn default() -> Self {
        KeyedLimiterConfig {
            shards: 16,
            max_keys: 100_000,
        }
    }
}

/// A token bucket per key (per user), shared by every task of the process.
///
/// Keys are spread over `shards` maps, each behind its own
/// `parking_lot::Mutex` held only for one hash-map operation.
///
/// **Memory bound.** A shard never holds more than
/// `ceil(max_keys / shards)` buckets, so the limiter holds at most
/// `shards * ceil(max_keys / shards)` keys, each costing the key plus a
/// 16-byte instant and the map's own overhead. Full buckets carry no
/// information (a new bucket starts full), so they are dropped lazily: when
/// a new key would overflow its shard, the shard first drops every full
/// bucket. If it is still full — more keys than `max_keys` are actively
/// limited at once — it drops the buckets closest to full, down to 7/8 of
/// the shard's limit, so the O(n) sweep is paid at most once every n/8
/// insertions. Dropping a non-full bucket only ever makes the limiter more
/// lenient for that key, never stricter.
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_per_shard: usize,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<K, TokenBucket>>]>,
}

impl<K: fmt::Debug> fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("rate", &self.rate)
            .field("shards", &self.shards.len())
            .field("max_per_shard", &self.max_per_shard)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq> KeyedLimiter<K> {
    pub fn new(rate: Rate, config: KeyedLimiterConfig) -> KeyedLimiter<K> {
        let shards = config.shards.max(1);
        let max_per_shard = config.max_keys.div_ceil(shards).max(1);
        KeyedLimiter {
            rate,
            max_per_shard,
            hasher: RandomState::new(),
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The most keys this limiter will ever hold.
    pub fn max_keys(&self) -> usize {
        self.max_per_shard * self.shards.len()
    }

    /// Takes one token from `key`'s bucket. Borrowed keys (`&str` for
    /// `String`) are only turned into owned ones when a bucket is created.
    pub fn try_take<Q>(&self, key: &Q, now: Instant) -> Result<(), RetryAfter>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut shard = self.shard(key).lock();
        if let Some(bucket) = shard.get_mut(key) {
            return bucket.try_take(now);
        }
        if shard.len() >= self.max_per_shard {
            make_room(&mut shard, self.max_per_shard, now);
        }
        let mut bucket = TokenBucket::new(self.rate, now);
        let taken = bucket.try_take(now);
        shard.insert(key.to_owned(), bucket);
        taken
    }

    /// Forgets `key`, giving it a full bucket next time.
    pub fn reset<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).lock().remove(key);
    }

    /// Keys currently tracked (full buckets not yet swept included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every full bucket. Optional — inserts sweep on their own when
    /// needed — but a periodic call keeps idle memory low.
    pub fn evict_full(&self, now: Instant) {
        for shard in self.shards.iter() {
            shard.lock().retain(|_, bucket| !bucket.is_full(now));
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<HashMap<K, TokenBucket>> {
        // The shard count is small, so the modulo bias is irrelevant.
        let index = self.hasher.hash_one(key) as usize % self.shards.len();
        &self.shards[index]
    }
}

/// Which limit refused a request; also the `limit` label of
/// `presence_rate_limited_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    StatusText,
    Status,
    WsMessages,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Self::StatusText, Self::Status, Self::WsMessages];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StatusText => "status_text",
            Self::Status => "status",
            Self::WsMessages => "ws_messages",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every rate limit of the service. The defaults suit interactive clients:
/// a person does not change their status text more than a few times a
/// minute, and a well-behaved client sends a handful of messages a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Status-text changes per user: 5 per minute, all 5 at once if wanted.
    pub status_text: Rate,
    /// Status changes per user (status, custom status, calendar): 1 per
    /// second, bursts of 5.
    pub status: Rate,
    /// Client messages per WebSocket connection, of any type: 20 per second,
    /// bursts of 60 (a client resubscribing after a reconnect).
    pub ws_messages: Rate,
    /// Sizing of the per-user limiters.
    pub per_user: KeyedLimiterConfig,
}

impl Default for RateLimits {
    fn default() -> Self {
        let second = Duration::from_secs(1);
        let valid = |rate: Result<Rate, InvalidRate>| rate.expect("default rates are valid");
        RateLimits {
            status_text: valid(Rate::per(5, Duration::from_secs(60))),
            status: valid(Rate::per(1, second).and_then(|rate| rate.with_capacity(5))),
            ws_messages: valid(Rate::per(20, second).and_then(|rate| rate.with_capacity(60))),
            per_user: KeyedLimiterConfig::default(),
        }
    }
}

impl RateLimits {
    /// The bucket a new WebSocket connection gets for its messages.
    pub fn connection_bucket(&self, now: Instant) -> TokenBucket {
        TokenBucket::new(self.ws_messages, now)
    }
}

/// The per-user limiters, one process-wide instance.
#[derive(Debug)]
pub struct UserLimiters {
    pub status_text: KeyedLimiter<String>,
    pub status: KeyedLimiter<String>,
}

impl UserLimiters {
    pub fn new(limits: &RateLimits) -> UserLimiters {
        UserLimiters {
            status_text: KeyedLimiter::new(limits.status_text, limits.per_user),
            status: KeyedLimiter::new(limits.status, limits.per_user),
        }
    }

    /// Charges one status-text change to `user_id`.
    pub fn take_status_text(&self, user_id: &str, now: Instant) -> Result<(), RetryAfter> {
        self.status_text.try_take(user_id, now)
    }

    /// Charges one status change to `user_id`.
    pub fn take_status(&self, user_id: &str, now: Instant) -> Result<(), RetryAfter> {
        self.status.try_take(user_id, now)
    }

    /// Drops full buckets in both limiters; call it from a periodic task.
    pub fn evict_full(&self, now: Instant) {
        self.status_text.evict_full(now);
        self.status.evict_full(now);
    }
}

/// Frees space in a shard that reached `max` entries: full buckets first,
/// then, if that was not enough, the buckets closest to full.
fn make_room<K: Hash + Eq>(shard: &mut HashMap<K, TokenBucket>, max: usize, now: Instant) {
    shard.retain(|_, bucket| !bucket.is_full(now));
    if shard.len() < max {
        return;
    }
    let low_water = (max - max / 8).min(max - 1);
    let excess = shard.len() - low_water;
    let mut full_at: Vec<Instant> = shard.values().map(|bucket| bucket.full_at).collect();
    let (_, &mut threshold, _) = full_at.select_nth_unstable(excess - 1);
    // Ties may drop a few more than `excess`; that is only more lenient.
    shard.retain(|_, bucket| bucket.full_at > threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Capacity 3, one token back per second.
    fn three_per_second() -> Rate {
        Rate::per(1, secs(1)).unwrap().with_capacity(3).unwrap()
    }

    /// Takes tokens until refused; returns how many were granted (at most
    /// 1000) and the refusal.
    fn drain(bucket: &mut TokenBucket, now: Instant) -> (u32, RetryAfter) {
        for granted in 0..1000 {
            if let Err(retry) = bucket.try_take(now) {
                return (granted, retry);
            }
        }
        panic!("bucket never ran dry");
    }

    #[test]
    fn a_full_bucket_allows_a_burst_of_its_capacity() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(three_per_second(), t0);
        assert_eq!(bucket.available(t0), 3);
        assert_eq!(drain(&mut bucket, t0), (3, RetryAfter(secs(1))));
        assert_eq!(bucket.available(t0), 0);
    }

    #[test]
    fn tokens_come_back_at_the_refill_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(three_per_second(), t0);
        drain(&mut bucket, t0);
        assert_eq!(bucket.available(t0 + ms(999)), 0);
        assert_eq!(bucket.available(t0 + secs(1)), 1);
        assert_eq!(bucket.available(t0 + ms(2500)), 2);
        assert_eq!(
            bucket.available(t0 + secs(60)),
            3,
            "never more than capacity"
        );
        assert!(bucket.try_take(t0 + secs(1)).is_ok());
        assert_eq!(
            bucket.try_take(t0 + secs(1)),
            Err(RetryAfter(secs(1))),
            "the refilled token was used"
        );
        // A long pause refills to capacity, not beyond.
        assert_eq!(drain(&mut bucket, t0 + secs(100)).0, 3);
    }

    #[test]
    fn retry_after_is_the_exact_wait_for_the_next_token() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(three_per_second(), t0);
        drain(&mut bucket, t0);
        assert_eq!(bucket.try_take(t0 + ms(250)), Err(RetryAfter(ms(750))));
        // Refused requests take nothing: the wait does not grow.
        assert_eq!(bucket.try_take(t0 + ms(250)), Err(RetryAfter(ms(750))));
        assert_eq!(bucket.try_take(t0 + ms(900)), Err(RetryAfter(ms(100))));
        // Waiting exactly as told succeeds.
        assert!(bucket.try_take(t0 + ms(1000)).is_ok());
    }

    #[test]
    fn out_of_order_clock_readings_grant_nothing_extra() {
        // Tasks read the clock before taking the lock, so a limiter can see
        // an instant older than one it has already seen. The older reading
        // sees the bucket slightly emptier: the skew is charged, never
        // granted.
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(three_per_second(), t0 + ms(5));
        assert!(bucket.try_take(t0 + ms(5)).is_ok());
        assert_eq!(bucket.available(t0 + ms(5)), 2);
        assert_eq!(bucket.available(t0), 1);
        assert_eq!(drain(&mut bucket, t0), (1, RetryAfter(ms(5))));
    }

    #[test]
    fn retry_after_header_rounds_up_to_whole_seconds() {
        let check = |wait: Duration, header: u64| {
            assert_eq!(RetryAfter(wait).header_secs(), header, "{wait:?}");
        };
        check(Duration::ZERO, 1);
        check(Duration::from_nanos(1), 1);
        check(ms(999), 1);
        check(secs(1), 1);
        check(ms(1001), 2);
        check(secs(12), 12);
    }

    #[test]
    fn rates_reject_impossible_shapes() {
        let valid = |capacity: u32, refill: f64| Rate::new(capacity, refill).is_ok();
        assert!(valid(1, 1.0));
        assert!(valid(5, 5.0 / 60.0));
        assert!(valid(60, 20.0));
        assert!(!valid(0, 1.0));
        assert!(!valid(1, 0.0));
        assert!(!valid(1, -1.0));
        assert!(!valid(1, f64::NAN));
        assert!(!valid(1, f64::INFINITY));
        assert!(!valid(1, 1e12), "faster than one token per nanosecond");
        assert!(!valid(1, 1e-300), "an interval no Duration can hold");
        assert!(Rate::per(0, secs(1)).is_err());
        assert!(Rate::per(1, Duration::ZERO).is_err());
        assert!(three_per_second().with_capacity(0).is_err());

        let rate = Rate::new(60, 20.0).unwrap();
        assert_eq!(rate.capacity(), 60);
        assert_eq!(rate.refill_interval(), ms(50));
        assert_eq!(rate.full_refill(), secs(3));
        assert!((rate.refill_per_sec() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn defaults_match_the_documented_limits() {
        let limits = RateLimits::default();
        let shape = |rate: Rate| (rate.capacity(), rate.refill_interval());
        assert_eq!(shape(limits.status_text), (5, secs(12)), "5 per minute");
        assert_eq!(shape(limits.status), (5, secs(1)), "1/s, burst 5");
        assert_eq!(shape(limits.ws_messages), (60, ms(50)), "20/s, burst 60");
        assert_eq!(
            Rate::new(5, 5.0 / 60.0).unwrap().capacity(),
            limits.status_text.capacity()
        );

        let t0 = Instant::now();
        let mut connection = limits.connection_bucket(t0);
        assert_eq!(drain(&mut connection, t0), (60, RetryAfter(ms(50))));
    }

    #[test]
    fn keys_have_independent_buckets() {
        let t0 = Instant::now();
        let limiter =
            KeyedLimiter::<String>::new(three_per_second(), KeyedLimiterConfig::default());
        for _ in 0..3 {
            assert!(limiter.try_take("alice", t0).is_ok());
        }
        assert_eq!(limiter.try_take("alice", t0), Err(RetryAfter(secs(1))));
        for _ in 0..3 {
            assert!(limiter.try_take("bob", t0).is_ok());
        }
        assert!(limiter.try_take("alice", t0).is_err());
        assert_eq!(limiter.len(), 2);

        limiter.reset("alice");
        assert!(limiter.try_take("alice", t0).is_ok());
    }

    #[test]
    fn user_limiters_apply_the_per_user_limits() {
        let t0 = Instant::now();
        let limiters = UserLimiters::new(&RateLimits::default());
        for _ in 0..5 {
            assert!(limiters.take_status_text("u1", t0).is_ok());
        }
        assert_eq!(
            limiters.take_status_text("u1", t0),
            Err(RetryAfter(secs(12)))
        );
        assert!(limiters.take_status("u1", t0).is_ok(), "separate limit");
        assert!(limiters.take_status_text("u2", t0).is_ok(), "separate user");

        limiters.evict_full(t0 + secs(60));
        assert!(limiters.status_text.is_empty());
        assert!(limiters.status.is_empty());
    }

    #[test]
    fn full_buckets_are_forgotten_without_changing_behaviour() {
        let t0 = Instant::now();
        let limiter =
            KeyedLimiter::<String>::new(three_per_second(), KeyedLimiterConfig::default());
        assert!(limiter.try_take("alice", t0).is_ok());
        limiter.evict_full(t0 + ms(999));
        assert_eq!(limiter.len(), 1, "not full yet: still remembered");
        limiter.evict_full(t0 + secs(1));
        assert!(limiter.is_empty());
    }

    #[test]
    fn the_number_of_tracked_keys_stays_bounded() {
        let config = KeyedLimiterConfig {
            shards: 4,
            max_keys: 64,
        };
        let limiter = KeyedLimiter::<u32>::new(three_per_second(), config);
        assert_eq!(limiter.max_keys(), 64);
        let t0 = Instant::now();

        // Quiet keys: each bucket is full again one second after its only
        // request, so a sweep drops them all.
        for key in 0..10_000 {
            let now = t0 + ms(u64::from(key) * 10);
            assert!(limiter.try_take(&key, now).is_ok());
            assert!(limiter.len() <= 64, "{} keys after {key}", limiter.len());
        }

        // Active keys: all drained at the same instant, none ever full.
        let t1 = t0 + secs(1000);
        for key in 0..10_000 {
            for _ in 0..3 {
                assert!(limiter.try_take(&key, t1).is_ok(), "a new key starts full");
            }
            assert!(limiter.len() <= 64, "{} keys after {key}", limiter.len());
        }
    }

    #[test]
    fn overflow_evicts_the_buckets_closest_to_full() {
        let config = KeyedLimiterConfig {
            shards: 1,
            max_keys: 8,
        };
        let limiter = KeyedLimiter::<u32>::new(three_per_second(), config);
        let t0 = Instant::now();
        // Key 0 is the most recently drained (farthest from full); key 7
        // the least.
        for key in 0..8 {
            let now = t0 + ms(100 * u64::from(7 - key));
            for _ in 0..3 {
                limiter.try_take(&key, now).unwrap();
            }
        }
        assert_eq!(limiter.len(), 8);

        let now = t0 + secs(1);
        assert!(limiter.try_take(&100, now).is_ok());
        // Room was made down to 7 of 8, then the new key was added.
        assert_eq!(limiter.len(), 8);
        assert!(
            limiter.try_take(&0, now).is_err(),
            "busiest key still limited"
        );
        assert!(
            limiter.try_take(&7, now).is_ok(),
            "stalest key was forgotten"
        );
    }
}

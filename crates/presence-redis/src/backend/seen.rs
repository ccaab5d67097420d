//! The W3 filter of the gateway's Redis backend: per user, the last
//! public and own versions this node emitted, so an update is emitted only
//! if it is newer; and the set of users a resync re-reads after pub/sub
//! lost messages.
//!
//! **Bounded, in two parts.** *Tracked* users are the ones this node has a
//! reason to follow: users read with `Backend::presence` (every watcher
//! reads the users it watches before their updates reach it, and so do
//! REST reads) and users with a socket here (their own view). Only they
//! are resynced. Past [`SeenVersions::new`]'s capacity, the least recently
//! used tracked users without a socket here are forgotten, down to 7/8 of
//! the capacity in one pass (amortised O(1) per insertion). *Strangers*
//! are the users whose updates merely pass through (every gateway hears
//! every shard's updates): their versions are kept in a separate map of an
//! eighth of the capacity, least recently used first out, so the stream of
//! the whole cluster's changes can never push a watched user out.
//!
//! **W3 holds across forgetting.** Pub/sub delivers one user's updates in
//! version order (one fenced leader per shard at a time; a new leader, or
//! a leader after a Redis failover, publishes above every earlier
//! version), so a stale version can only come from a resync's read of the
//! stored view. A resync offers views only for users still tracked,
//! checked as it emits, so a forgotten user is never re-emitted from a
//! read. Each socket's outbox also keeps the highest version it delivered
//! per watched user (gateway `hub.rs`). The cost of forgetting: a tracked
//! user forgotten while still watched is not resynced by this backend
//! after a pub/sub loss until it is read again (the gateway re-reads every
//! watched user when its own receiver lags); the default capacity holds
//! every user 100 000 sockets can watch.

use std::collections::HashMap;
use std::sync::Arc;

/// Default capacity of tracked users: 100 000 sockets watching 5 users
/// each (about 100 bytes per user).
pub const DEFAULT_SEEN_CAPACITY: usize = 500_000;

/// Where an update comes from (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// A leader's publication: in version order per user.
    PubSub,
    /// A read of the stored view during a resync: may be older than what
    /// was emitted (a Redis failover lost the last commits).
    Resync,
}

/// What an update offers: its version and which views it carries.
#[derive(Clone, Copy, Debug)]
pub(super) struct Offer {
    pub(super) version: u64,
    /// It carries a public view.
    pub(super) public: bool,
    /// Its public view is offline without a text: what a user never seen
    /// here reads as.
    pub(super) public_is_blank: bool,
    /// It carries an own view.
    pub(super) own: bool,
}

/// Which views of an [`Offer`] to emit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Admitted {
    pub(super) public: bool,
    pub(super) own: bool,
}

/// Per-user versions emitted, bounded (see the module documentation).
#[derive(Debug)]
pub(super) struct SeenVersions {
    tracked: HashMap<Arc<str>, Entry>,
    strangers: HashMap<Arc<str>, Entry>,
    capacity: usize,
    stranger_capacity: usize,
    /// Advances on every use; an entry's `used` is the tick of its last use.
    tick: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    public: u64,
    own: u64,
    used: u64,
    /// Sockets of this user on this node: never forgotten while > 0.
    sockets: u32,
}

impl SeenVersions {
    /// An empty map that tracks at most `capacity` users (at least 8)
    /// besides the users with a socket here, and remembers the versions of
    /// an eighth as many strangers.
    pub(super) fn new(capacity: usize) -> SeenVersions {
        let capacity = capacity.max(8);
        SeenVersions {
            tracked: HashMap::new(),
            strangers: HashMap::new(),
            capacity,
            stranger_capacity: capacity / 8,
            tick: 0,
        }
    }

    /// `user` was read (`Backend::presence`): track them from now on. What
    /// was read is not what was *sent* to watchers, so no version is
    /// recorded (a lost update of this version must not look delivered).
    pub(super) fn read(&mut self, user: &Arc<str>) {
        self.track(user);
    }

    /// A socket of `user` opened here: tracked while it is open.
    pub(super) fn socket_opened(&mut self, user: &Arc<str>) {
        self.track(user).sockets += 1;
    }

    /// Whether `user` has a socket here (their own view is wanted).
    pub(super) fn has_socket(&self, user: &str) -> bool {
        self.tracked
            .get(user)
            .is_some_and(|entry| entry.sockets > 0)
    }

    /// A socket of `user` here closed (or its connect failed).
    pub(super) fn socket_closed(&mut self, user: &str) {
        if let Some(entry) = self.tracked.get_mut(user) {
            entry.sockets = entry.sockets.saturating_sub(1);
        }
    }

    /// W3: which views of `offer` about `user` to emit — only ones newer
    /// than the last emitted — recording them. Resync views of users not
    /// tracked are never emitted; a stranger's first blank public view is
    /// not either (it changes nothing anyone here was shown).
    pub(super) fn admit(&mut self, user: &str, offer: Offer, source: Source) -> Admitted {
        self.tick += 1;
        let tick = self.tick;
        let entry = match (self.tracked.get_mut(user), source) {
            (Some(entry), _) => entry,
            (None, Source::Resync) => return Admitted::default(),
            (None, Source::PubSub) => match self.strangers.get_mut(user) {
                Some(entry) => entry,
                None => {
                    if self.strangers.len() >= self.stranger_capacity {
                        forget_least_recently_used(&mut self.strangers, self.stranger_capacity);
                    }
                    let entry = self.strangers.entry(Arc::from(user)).or_default();
                    if offer.public_is_blank {
                        entry.used = tick;
                        return Admitted {
                            public: false,
                            own: offer.own && offer.version > entry.own,
                        }
                        .record(entry, offer.version);
                    }
                    entry
                }
            },
        };
        entry.used = tick;
        Admitted {
            public: offer.public && offer.version > entry.public,
            own: offer.own && offer.version > entry.own,
        }
        .record(entry, offer.version)
    }

    /// Every tracked user, for a resync.
    pub(super) fn tracked_users(&self) -> Vec<Arc<str>> {
        self.tracked.keys().cloned().collect()
    }

    /// Users whose versions are held now: `(tracked, strangers)`.
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.tracked.len(), self.strangers.len())
    }

    fn track(&mut self, user: &Arc<str>) -> &mut Entry {
        self.tick += 1;
        let tick = self.tick;
        if !self.tracked.contains_key(user) {
            if self.tracked.len() >= self.capacity {
                forget_least_recently_used(&mut self.tracked, self.capacity);
            }
            // A stranger read now keeps the versions already emitted.
            let known = self.strangers.remove(user).unwrap_or_default();
            self.tracked.insert(user.clone(), known);
        }
        let entry = self.tracked.get_mut(user).expect("inserted above");
        entry.used = tick;
        entry
    }
}

impl Admitted {
    /// Records the admitted views' version in `entry`.
    fn record(self, entry: &mut Entry, version: u64) -> Admitted {
        if self.public {
            entry.public = version;
        }
        if self.own {
            entry.own = version;
        }
        self
    }
}

/// Forgets the least recently used entries of `map` without a socket here,
/// down to 7/8 of `capacity` (minus the one about to be inserted).
fn forget_least_recently_used(map: &mut HashMap<Arc<str>, Entry>, capacity: usize) {
    let target = (capacity - capacity / 8).saturating_sub(1);
    let mut idle: Vec<(u64, Arc<str>)> = map
        .iter()
        .filter(|(_, e)| e.sockets == 0)
        .map(|(user, e)| (e.used, user.clone()))
        .collect();
    let excess = map.len().saturating_sub(target).min(idle.len());
    if excess == 0 {
        return;
    }
    if excess < idle.len() {
        idle.select_nth_unstable(excess - 1);
    }
    for (_, user) in idle.drain(..excess) {
        map.remove(&user);
    }
    if map.capacity() > 4 * map.len().max(16) {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(version: u64) -> Offer {
        Offer {
            version,
            public: true,
            public_is_blank: false,
            own: false,
        }
    }

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    /// W3: a tracked user's views are emitted only when newer, from
    /// pub/sub and from resync alike; a stranger's pub/sub updates too.
    #[test]
    fn w3_only_newer_versions_are_emitted() {
        let mut seen = SeenVersions::new(16);
        seen.read(&user("alice"));
        let cases = [
            ("alice", 5, Source::PubSub, true),
            ("alice", 5, Source::PubSub, false),
            ("alice", 4, Source::Resync, false),
            ("alice", 6, Source::Resync, true),
            ("alice", 3, Source::PubSub, false),
            ("dan", 5, Source::PubSub, true),
            ("dan", 4, Source::PubSub, false),
            ("dan", 9, Source::Resync, false),
        ];
        for (who, version, source, emitted) in cases {
            let admitted = seen.admit(who, offer(version), source);
            assert_eq!(admitted.public, emitted, "{who} v{version} from {source:?}");
        }
        let own = Offer {
            own: true,
            public: false,
            ..offer(6)
        };
        assert!(
            seen.admit("alice", own, Source::PubSub).own,
            "own views have their own floor"
        );
        assert!(!seen.admit("alice", own, Source::Resync).own);
        // A stranger read now keeps what was emitted about them.
        seen.read(&user("dan"));
        assert!(!seen.admit("dan", offer(5), Source::Resync).public);
    }

    /// Both maps stay within their capacity; users with a socket here are
    /// never forgotten; the least recently used go first; the whole
    /// cluster's traffic about strangers never pushes a tracked user out.
    #[test]
    fn w3_the_maps_are_bounded_and_keep_local_and_recent_users() {
        let mut seen = SeenVersions::new(64);
        let local = user("local");
        seen.socket_opened(&local);
        let recent = user("recent");
        for i in 0..1_000 {
            seen.read(&user(&format!("u{i}")));
            if i % 10 == 0 {
                seen.read(&recent);
            }
            assert!(seen.sizes().0 <= 64, "{:?} at {i}", seen.sizes());
        }
        let tracked = seen.tracked_users();
        assert!(tracked.contains(&local), "a user with a socket here stays");
        assert!(tracked.contains(&recent), "a recently read user stays");
        assert!(!tracked.contains(&user("u0")), "the oldest read went first");
        let before = seen.tracked_users();
        for i in 0..10_000 {
            let admitted = seen.admit(&format!("stranger{i}"), offer(1), Source::PubSub);
            assert!(admitted.public, "an update nobody here read still passes");
            assert!(seen.sizes().1 <= 8, "{:?} at {i}", seen.sizes());
        }
        let mut after = seen.tracked_users();
        let mut before = before;
        before.sort_unstable();
        after.sort_unstable();
        assert_eq!(before, after, "strangers never displace tracked users");
        seen.socket_closed("local");
        for i in 0..1_000 {
            seen.read(&user(&format!("v{i}")));
        }
        assert!(
            !seen.tracked_users().contains(&local),
            "closed sockets pin nothing"
        );
    }

    /// W3 across forgetting: once a user is forgotten, a resync's read of
    /// an older stored view (a failover lost the last commit) is not
    /// emitted after the newer version this node already emitted.
    #[test]
    fn w3_a_forgotten_user_gets_no_stale_view_from_a_resync() {
        let mut seen = SeenVersions::new(8);
        let bob = user("bob");
        seen.read(&bob);
        assert!(seen.admit("bob", offer(6), Source::PubSub).public);
        for i in 0..64 {
            seen.read(&user(&format!("u{i}")));
        }
        assert!(!seen.tracked_users().contains(&bob), "bob was forgotten");
        assert!(!seen.admit("bob", offer(5), Source::Resync).public);
        // Read again (a watcher subscribes): tracked, and newer pub/sub
        // versions flow as before.
        seen.read(&bob);
        assert!(seen.admit("bob", offer(7), Source::PubSub).public);
        assert!(!seen.admit("bob", offer(7), Source::Resync).public);
    }

    /// A first blank public view of a stranger is no update (they read as
    /// offline at version 0 here anyway); the next one is.
    #[test]
    fn w3_a_blank_first_view_of_an_unknown_user_is_not_emitted() {
        let mut seen = SeenVersions::new(8);
        let blank = |version| Offer {
            public_is_blank: true,
            ..offer(version)
        };
        assert!(!seen.admit("carol", blank(3), Source::PubSub).public);
        assert!(seen.admit("carol", blank(4), Source::PubSub).public);
        seen.read(&user("erin"));
        assert!(seen.admit("erin", blank(3), Source::PubSub).public);
    }
}

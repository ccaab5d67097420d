//! Connection budgets: how many sockets one user may hold on this node
//! (DESIGN X6) and how many client connections the node holds at all.
//!
//! Both are counted with permits: taking one reserves a slot, and dropping
//! it (when the socket or connection ends, however it ends) gives the slot
//! back. A refused request never holds a slot, so a user who is refused
//! never counts toward the presence cap either: the refusal happens before
//! the WebSocket upgrade, before the backend hears of the socket.
//!
//! The per-user budget is per node. In cluster mode a user whose sockets
//! land on `N` gateways may hold up to `N ×` the limit; what X6 asks (no
//! single user trips the cap) holds as long as the cap is above
//! `nodes × limit`, which operators size for (see `docs/cluster.md`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Per-user socket counts, sharded so concurrent upgrades of different
/// users rarely share a lock.
pub struct SocketBudget {
    per_user: usize,
    shards: Box<[Mutex<Counts>]>,
    hasher: foldhash::fast::FixedState,
}

/// Sockets per user in one shard of a [`SocketBudget`].
type Counts = HashMap<Arc<str>, usize>;

/// Shards of [`SocketBudget`]; a power of two.
const SHARDS: usize = 32;

/// One socket's slot in its user's budget; released on drop.
pub struct SocketPermit {
    budget: Arc<SocketBudget>,
    user: Arc<str>,
}

impl SocketBudget {
    /// A budget of `per_user` concurrent sockets for every user.
    pub fn new(per_user: usize) -> Arc<SocketBudget> {
        Arc::new(SocketBudget {
            per_user,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
        })
    }

    /// The most sockets one user may hold on this node.
    pub fn per_user(&self) -> usize {
        self.per_user
    }

    /// Reserves a slot for one more socket of `user`, or `None` when the
    /// user already holds [`SocketBudget::per_user`] sockets.
    pub fn try_acquire(self: &Arc<Self>, user: &Arc<str>) -> Option<SocketPermit> {
        let mut shard = self.shard(user).lock();
        let count = shard.entry(user.clone()).or_insert(0);
        if *count >= self.per_user {
            if *count == 0 {
                shard.remove(user);
            }
            return None;
        }
        *count += 1;
        Some(SocketPermit {
            budget: self.clone(),
            user: user.clone(),
        })
    }

    /// How many sockets `user` holds now.
    pub fn held_by(&self, user: &str) -> usize {
        self.shard(user).lock().get(user).copied().unwrap_or(0)
    }

    fn shard(&self, user: &str) -> &Mutex<Counts> {
        &self.shards[(self.hasher.hash_one(user) as usize) & (SHARDS - 1)]
    }

    fn release(&self, user: &str) {
        let mut shard = self.shard(user).lock();
        if let Some(count) = shard.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                // Forgetting users with no sockets keeps the map as small
                // as the set of connected users.
                shard.remove(user);
            }
        }
    }
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.budget.release(&self.user);
    }
}

/// A count of open connections with a ceiling.
pub struct ConnectionBudget {
    max: usize,
    open: AtomicUsize,
}

/// One connection's slot; released on drop.
pub struct ConnectionPermit {
    budget: Arc<ConnectionBudget>,
}

impl ConnectionBudget {
    pub fn new(max: usize) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            max,
            open: AtomicUsize::new(0),
        })
    }

    /// The ceiling.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot, or `None` when all [`ConnectionBudget::max`] are taken.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionPermit {
                budget: self.clone(),
            })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.budget.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x6_a_user_holds_at_most_the_limit_and_slots_come_back() {
        let budget = SocketBudget::new(2);
        let alice: Arc<str> = Arc::from("alice");
        let bob: Arc<str> = Arc::from("bob");
        let a1 = budget.try_acquire(&alice).expect("first socket");
        let a2 = budget.try_acquire(&alice).expect("second socket");
        assert!(budget.try_acquire(&alice).is_none(), "third is refused");
        assert!(budget.try_acquire(&bob).is_some(), "others are unaffected");
        assert_eq!(budget.held_by("alice"), 2);
        drop(a1);
        assert_eq!(budget.held_by("alice"), 1);
        let a3 = budget
            .try_acquire(&alice)
            .expect("a freed slot is reusable");
        drop((a2, a3));
        assert_eq!(budget.held_by("alice"), 0);
        assert!(budget.shards.iter().all(|s| s.lock().is_empty()));
    }

    #[test]
    fn x6_a_zero_budget_refuses_without_remembering_the_user() {
        let budget = SocketBudget::new(0);
        assert!(budget.try_acquire(&Arc::from("carol")).is_none());
        assert!(budget.shards.iter().all(|s| s.lock().is_empty()));
    }

    #[test]
    fn connection_budget_counts_up_to_its_ceiling() {
        let budget = ConnectionBudget::new(2);
        let first = budget.try_acquire().expect("one");
        let second = budget.try_acquire().expect("two");
        assert!(budget.try_acquire().is_none());
        assert_eq!(budget.open(), 2);
        drop(first);
        let third = budget.try_acquire().expect("a freed slot");
        drop((second, third));
        assert_eq!(budget.open(), 0);
    }
}

//! A3, X5 support: the shard's users per displayed status, kept by the
//! leader as users change and committed with the views
//! (`presence:{s}:counts`), so the online count and the `presence_users`
//! gauge are exact without scanning every user.

mod common;

use common::{Leader, status};
use presence_protocol::cluster::{SocketEnd, StoredCounts};

fn counts(online: u64, away: u64, busy: u64, invisible: u64) -> StoredCounts {
    StoredCounts {
        online,
        away,
        busy,
        invisible,
    }
}

/// The stored counts equal a recount of the stored views and own views.
fn assert_counts(leader: &Leader, expected: StoredCounts) {
    assert_eq!(leader.store.counts, Some(expected), "stored counts");
    assert_eq!(leader.state.counts(), expected, "the leader's counts");
}

#[test]
fn a3_counts_follow_every_change_and_are_committed_with_it() {
    let mut leader = Leader::new();
    // A new shard writes its (empty) counts in its first commit.
    assert_counts(&leader, counts(0, 0, 0, 0));

    let alice = leader.connect("alice", "d1", "web");
    assert_counts(&leader, counts(1, 0, 0, 0));
    leader.connect("bob", "d1", "desktop");
    leader.choose("bob", "busy");
    assert_counts(&leader, counts(1, 0, 1, 0));
    // A3: invisible shows offline and is counted apart, never online.
    leader.connect("carol", "d1", "mobile");
    leader.choose("carol", "invisible");
    assert_counts(&leader, counts(1, 0, 1, 1));
    // D2: idle makes alice away.
    leader.event("alice", "d1", "idle");
    assert_counts(&leader, counts(0, 1, 1, 1));
    // A1: a chosen status without a device counts nowhere.
    leader.set("dave", status(Some("busy"), Some("On a plane")));
    assert_counts(&leader, counts(0, 1, 1, 1));
    // D7: a clean close is offline at once.
    leader.disconnect("alice", "d1", alice, SocketEnd::Clean);
    assert_counts(&leader, counts(0, 0, 1, 1));
    leader.choose("carol", "online");
    assert_counts(&leader, counts(1, 0, 1, 0));
}

#[test]
fn w3_takeover_recounts_from_what_is_stored() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    leader.connect("bob", "d1", "web");
    leader.choose("bob", "away");
    leader.connect("carol", "d1", "web");
    leader.choose("carol", "invisible");
    let expected = counts(1, 1, 0, 1);
    assert_counts(&leader, expected);

    let next = leader.takeover();
    assert_eq!(next.state.counts(), expected);
    assert_eq!(next.store.counts, Some(expected));
}

#[test]
fn unchanged_counts_are_not_written_again() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    // A text change keeps alice online: nothing to write for the counts.
    leader.set("alice", status(None, Some("Reviewing")));
    assert!(leader.last.counts.is_none(), "{:?}", leader.last.counts);
    assert_counts(&leader, counts(1, 0, 0, 0));
}

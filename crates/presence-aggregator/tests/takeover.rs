//! Versions (W3), durability across leaders (M3) and the commit protocol:
//! cursor, replies, update messages, coalescing and merging of changes.

mod common;

use common::{Leader, T0, dev, secs, status};
use presence_aggregator::ShardChanges;
use presence_core::{DisplayedStatus, Timestamp};
use presence_protocol::cluster::{
    ClusterCommand, CommandResult, EntryError, INVALID_COMMAND, SocketEnd, StreamEntry, StreamId,
    UserCommand,
};

/// A shard with some history: several users, devices on two nodes, a
/// lost socket in its grace period, manual statuses and texts.
fn busy_shard() -> Leader {
    let mut leader = Leader::new();
    leader.connect_on("n1", "alice", "laptop", "desktop");
    leader.connect_on("n2", "alice", "phone", "mobile");
    leader.event("alice", "phone", "background");
    leader.set("alice", status(Some("busy"), Some("Presenting")));
    leader.connect_on("n1", "bob", "web", "web");
    leader.event("bob", "web", "activity");
    let conn = leader.connect_on("n2", "carol", "web", "web");
    leader.disconnect("carol", "web", conn, SocketEnd::Lost);
    leader.connect_on("n2", "dave", "web", "web");
    leader.choose("dave", "invisible");
    leader.tick(5);
    leader
}

#[test]
fn w3_every_committed_view_has_a_strictly_greater_version() {
    // The model store asserts it on every commit; drive many changes.
    let mut leader = Leader::new();
    let mut seen = Vec::new();
    let conn = leader.connect("alice", "d1", "desktop");
    for name in ["lock", "unlock", "sleep", "wake", "idle", "active"] {
        leader.event("alice", "d1", name);
        seen.push(leader.store.view("alice").unwrap().version);
    }
    leader.choose("alice", "away");
    leader.choose("alice", "online");
    leader.disconnect("alice", "d1", conn, SocketEnd::Lost);
    leader.tick(30);
    let versions: Vec<u64> = leader.store.updates.iter().map(|u| u.version).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "published versions grow: {versions:?}"
    );
    assert_eq!(leader.shown("alice"), DisplayedStatus::Offline);
}

#[test]
fn w3_versions_grow_even_when_the_clock_goes_back() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    let before = leader.store.view("alice").unwrap().version;
    leader.now = Timestamp::from_millis(T0.as_millis() - 3_600_000);
    leader.choose("alice", "busy");
    assert!(leader.store.view("alice").unwrap().version > before);
}

#[test]
fn m3_w3_reloaded_shard_has_identical_views_and_continues_with_greater_versions() {
    let old = busy_shard();
    old.assert_stored_matches();
    let mut new = old.takeover();
    // Nothing differs from what is stored: nothing to republish.
    assert!(new.last.users.is_empty(), "{:?}", new.last.users);
    for user in ["alice", "bob", "carol", "dave"] {
        assert_eq!(new.public(user), old.public(user), "{user}");
        assert_eq!(new.own(user), old.own(user), "{user}");
        assert_eq!(
            new.state.presence(user).unwrap().devices,
            old.state.presence(user).unwrap().devices,
            "{user}'s devices"
        );
    }
    assert_eq!(new.state.nodes().count(), 2);
    assert_eq!(
        new.state.device_owner("alice", &dev("phone")).map(|o| o.0),
        Some("n2")
    );
    // Timers resume: carol's grace period ends on time.
    assert_eq!(new.state.next_deadline(), old.state.next_deadline());
    new.tick(25);
    assert_eq!(new.shown("carol"), DisplayedStatus::Offline);
    // And versions continue above everything the old leader committed
    // (the store asserts it on each commit).
    let old_version = old.store.view("bob").unwrap().version;
    new.choose("bob", "away");
    assert!(new.store.view("bob").unwrap().version > old_version);
    // H2 works on the reloaded owner index.
    new.expire_nodes(&["n2"]);
    assert_eq!(new.store.device_ids("alice"), ["laptop"]);
    assert_eq!(new.shown("dave"), DisplayedStatus::Offline);
}

#[test]
fn w3_takeover_republishes_views_that_changed_while_no_leader_ran() {
    let old = busy_shard();
    // Ten minutes later: carol's grace ended, bob's idle timer fired.
    let new = old.takeover_at(old.now + secs(600));
    let republished: Vec<&str> = new.last.users.keys().map(String::as_str).collect();
    assert_eq!(republished, ["bob", "carol"]);
    assert_eq!(new.shown("bob"), DisplayedStatus::Away);
    assert_eq!(new.shown("carol"), DisplayedStatus::Offline);
    assert!(
        new.last.users["carol"]
            .devices
            .values()
            .all(Option::is_none)
    );
    new.assert_stored_matches();
}

#[test]
fn w3_takeover_after_a_clock_skewed_leader_still_issues_greater_versions() {
    let mut old = Leader::new();
    // The old leader's clock ran an hour ahead.
    old.now = old.now + secs(3600);
    old.connect("alice", "d1", "web");
    let mut new = old.takeover_at(T0);
    new.choose("alice", "busy");
    assert!(new.store.view("alice").unwrap().version > old.store.view("alice").unwrap().version);
}

#[test]
fn replies_carry_the_self_view_after_each_command_and_errors_in_order() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    let long = "x".repeat(130);
    let results = leader.batch(
        "n1",
        vec![
            (
                "alice",
                ClusterCommand::User(UserCommand::SetStatus {
                    request: status(Some("busy"), None),
                }),
            ),
            (
                "alice",
                ClusterCommand::User(UserCommand::SetStatus {
                    request: status(None, Some(&long)),
                }),
            ),
            (
                "alice",
                ClusterCommand::User(UserCommand::SetStatus {
                    request: status(Some("away"), None),
                }),
            ),
        ],
    );
    let me = |r: &CommandResult| match r {
        CommandResult::Ok(ok) => ok.me.clone().expect("self view"),
        CommandResult::Error(e) => panic!("{e:?}"),
    };
    assert_eq!(me(&results[0]).view.chosen.as_str(), "busy");
    match &results[1] {
        CommandResult::Error(e) => assert_eq!(e.code, "status_text_too_long"),
        ok => panic!("{ok:?}"),
    }
    assert_eq!(me(&results[2]).view.chosen.as_str(), "away");
    assert!(me(&results[0]).version < me(&results[2]).version);
    // One batch, one set of final values: the last status is committed
    // and published once.
    let change = &leader.last.users["alice"];
    assert_eq!(change.view.as_ref().unwrap().status, DisplayedStatus::Away);
    assert_eq!(
        change.view.as_ref().unwrap().version,
        me(&results[2]).version
    );
    assert_eq!(leader.last.update_messages(7).len(), 1);
    assert_eq!(leader.last.update_messages(7)[0].epoch, 7);
    // Replies go back to the node that asked.
    assert!(leader.last.replies.iter().all(|r| r.node == "n1"));
}

#[test]
fn cursor_follows_the_last_entry_and_bad_entries_are_skipped_and_answered() {
    let mut leader = Leader::new();
    let good = StreamEntry {
        user: "alice".into(),
        command: ClusterCommand::User(UserCommand::Connect {
            device: dev("d1"),
            platform: presence_core::Platform::Web,
            conn: 1,
            node: "n1".into(),
            profile: Default::default(),
        }),
        node: "n1".into(),
        reply: None,
        retry: false,
        profile: None,
    };
    let bad = StreamEntry::from_fields([
        ("u", "alice"),
        ("c", r#"{"type":"teleport"}"#),
        ("n", "n3"),
        ("r", "r42"),
    ]);
    let missing: Result<StreamEntry, EntryError> = StreamEntry::from_fields([("u", "alice")]);
    let entries = vec![
        (StreamId::new(10, 0), Ok(good)),
        (StreamId::new(10, 1), bad),
        (StreamId::new(11, 0), missing),
    ];
    let changes = leader.state.apply_raw_batch(entries, leader.now);
    assert_eq!(changes.cursor, Some(StreamId::new(11, 0)));
    assert_eq!(changes.replies.len(), 1);
    assert_eq!(changes.replies[0].node, "n3");
    assert_eq!(changes.replies[0].r, "r42");
    assert!(
        matches!(&changes.replies[0].result, CommandResult::Error(e) if e.code == INVALID_COMMAND)
    );
    leader.commit(changes);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    assert!(leader.store.users.contains("alice"));
    // A batch of entries that change nothing still moves the cursor.
    let noop = StreamEntry {
        user: "alice".into(),
        command: ClusterCommand::User(UserCommand::Disconnect {
            device: dev("d1"),
            conn: 99,
            end: SocketEnd::Clean,
        }),
        node: "n1".into(),
        reply: None,
        retry: false,
        profile: None,
    };
    let changes = leader
        .state
        .apply_batch([(StreamId::new(12, 0), noop)], leader.now);
    assert!(!changes.is_empty());
    assert!(changes.users.is_empty());
    assert_eq!(changes.cursor, Some(StreamId::new(12, 0)));
}

#[test]
fn refused_commands_of_unknown_users_leave_no_trace() {
    let mut leader = Leader::new();
    let long = "x".repeat(200);
    leader.set("ghost", status(None, Some(&long)));
    assert_eq!(leader.state.user_count(), 0);
    assert!(leader.store.users.is_empty());
    assert!(leader.last.users.is_empty());
}

#[test]
fn merged_changes_commit_like_the_sequence() {
    let mut sequential = busy_shard();
    let mut merged = busy_shard();
    let mut all = ShardChanges::default();
    let script = |leader: &mut Leader, sink: &mut dyn FnMut(&mut Leader, ShardChanges)| {
        leader.now = leader.now + secs(40);
        let changes = leader.state.advance(leader.now);
        sink(leader, changes);
        let changes = leader.state.expire_nodes(&["n1"], leader.now);
        sink(leader, changes);
        let changes = leader.state.advance(leader.now + secs(600));
        sink(leader, changes);
    };
    script(&mut sequential, &mut |l, c| l.commit(c));
    script(&mut merged, &mut |_, c| all.merge(c));
    merged.commit(all);
    assert_eq!(merged.store.views, sequential.store.views);
    assert_eq!(merged.store.selves, sequential.store.selves);
    assert_eq!(merged.store.devices, sequential.store.devices);
    assert_eq!(merged.store.hb, sequential.store.hb);
    assert_eq!(merged.store.records, sequential.store.records);
}

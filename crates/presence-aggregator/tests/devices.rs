//! Aggregation over devices through a shard leader (A1–A5, D1–D8, H2):
//! multi-device users whose sockets sit on different gateway nodes, with
//! every change committed to the model store and read back from it.

mod common;

use common::{Leader, dev, shown};
use presence_core::{DisplayedStatus, SelfStatus};
use presence_protocol::cluster::{ClusterCommand, CommandResult, SocketEnd, UserCommand};

/// Chooses `chosen` for alice, then connects the devices of `spec`: space
/// separated `platform@node`, each optionally followed by `:event` (one
/// device event) or `:lost` (its socket dropped). Checks what others see
/// and what alice sees, in memory and in the store.
fn check(chosen: &str, spec: &str, public: &str, own: SelfStatus) {
    let mut leader = Leader::new();
    leader.choose("alice", chosen);
    for (i, device) in spec.split_whitespace().enumerate() {
        let (device_spec, action) = device.split_once(':').unwrap_or((device, ""));
        let (platform, node) = device_spec.split_once('@').expect("platform@node");
        let id = format!("{platform}-{i}");
        let conn = leader.connect_on(node, "alice", &id, platform);
        match action {
            "" => {}
            "lost" => leader.disconnect("alice", &id, conn, SocketEnd::Lost),
            event => {
                let result = leader.event("alice", &id, event);
                assert!(
                    matches!(result, CommandResult::Ok(_)),
                    "{event}: {result:?}"
                );
            }
        }
    }
    let context = format!("chosen {chosen}, devices '{spec}'");
    assert_eq!(
        leader.shown("alice"),
        shown(public),
        "{context}: others see"
    );
    assert_eq!(leader.own_status("alice"), own, "{context}: alice sees");
    assert_eq!(
        leader.own("alice").chosen.as_str(),
        chosen,
        "{context}: choice kept"
    );
    leader.assert_stored_matches();
}

#[test]
#[rustfmt::skip] // One table row per line.
fn a1_to_a4_multi_device_users_across_nodes() {
    use SelfStatus as S;
    // A1: no device, whatever was chosen.
    check("online", "", "offline", S::Offline);
    check("busy", "", "offline", S::Offline);
    check("invisible", "", "offline", S::Offline);
    // A4: the best device wins, wherever its socket is.
    check("online", "web@n1", "online", S::Online);
    check("online", "desktop@n1:lock", "away", S::Away);
    check("online", "desktop@n1:lock web@n2", "online", S::Online);
    check("online", "desktop@n1:lock mobile@n2:background", "away", S::Away);
    check("online", "desktop@n1:lock mobile@n2:background web@n3", "online", S::Online);
    check("online", "web@n1:lost", "away", S::Away);
    check("online", "web@n1:lost mobile@n2", "online", S::Online);
    check("online", "desktop@n1:sleep web@n2:idle", "away", S::Away);
    // A2: a manual choice beats every device state.
    check("busy", "web@n1 desktop@n2", "busy", S::Busy);
    check("busy", "desktop@n1:lock", "busy", S::Busy);
    check("away", "web@n1 mobile@n2", "away", S::Away);
    // A3: invisible shows offline to others and invisible to the user.
    check("invisible", "web@n1", "offline", S::Invisible);
    check("invisible", "web@n1 desktop@n2:lock", "offline", S::Invisible);
}

#[test]
fn a3_invisible_hides_the_text_from_others_only() {
    let mut leader = Leader::new();
    leader.connect_on("n2", "alice", "d1", "web");
    let result = leader.set(
        "alice",
        common::status(Some("invisible"), Some("Heads down")),
    );
    assert!(matches!(result, CommandResult::Ok(_)));
    assert_eq!(leader.public("alice").text, None);
    assert_eq!(
        leader.own("alice").text.map(|t| t.as_str().to_owned()),
        Some("Heads down".to_owned())
    );
    assert_eq!(leader.store.view("alice").unwrap().text, None);
}

#[test]
fn d1_a_reconnect_from_another_node_starts_online_and_moves_the_owner() {
    let mut leader = Leader::new();
    leader.connect_on("n1", "alice", "d1", "desktop");
    leader.event("alice", "d1", "lock");
    assert_eq!(leader.shown("alice"), DisplayedStatus::Away);
    let conn = leader.connect_on("n2", "alice", "d1", "desktop");
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    assert_eq!(
        leader.state.device_owner("alice", &dev("d1")),
        Some(("n2", conn))
    );
    assert_eq!(leader.state.nodes().collect::<Vec<_>>(), ["n2"]);
    // The stored device says so too, for the next leader.
    let stored: presence_protocol::cluster::StoredDevice =
        serde_json::from_str(&leader.store.devices["alice"]["d1"]).unwrap();
    assert_eq!((stored.node.as_str(), stored.conn), ("n2", conn));
    assert!(!stored.device.locked);
}

#[test]
fn d7_disconnect_of_a_replaced_socket_is_ignored() {
    let mut leader = Leader::new();
    let old = leader.connect_on("n1", "alice", "d1", "web");
    let new = leader.connect_on("n2", "alice", "d1", "web");
    assert_ne!(old, new);
    // The old socket's late goodbye, clean or not, leaves the new one.
    leader.disconnect("alice", "d1", old, SocketEnd::Clean);
    leader.disconnect("alice", "d1", old, SocketEnd::Lost);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    assert_eq!(leader.store.device_ids("alice"), ["d1"]);
    assert!(
        leader.last.users.is_empty(),
        "nothing to commit: {:?}",
        leader.last
    );
    // The live socket's goodbye removes it.
    leader.disconnect("alice", "d1", new, SocketEnd::Clean);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Offline);
    assert!(leader.store.device_ids("alice").is_empty());
    assert!(leader.store.heartbeat_devices("alice").is_empty());
    assert_eq!(leader.state.nodes().count(), 0);
}

#[test]
fn d7_lost_socket_shows_away_for_the_grace_period_then_offline() {
    let mut leader = Leader::new();
    let conn = leader.connect("alice", "d1", "web");
    assert_eq!(leader.store.heartbeat_devices("alice"), ["d1"]);
    leader.disconnect("alice", "d1", conn, SocketEnd::Lost);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Away);
    // The grace period is timed by the leader, not by a heartbeat member.
    assert!(leader.store.heartbeat_devices("alice").is_empty());
    assert_eq!(
        leader.state.next_deadline(),
        Some(leader.now + common::secs(30))
    );
    leader.tick(29);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Away);
    leader.tick(1);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Offline);
    assert!(leader.store.device_ids("alice").is_empty());
    leader.assert_stored_matches();
}

#[test]
fn d7_reconnect_inside_the_grace_period_resumes_the_device() {
    let mut leader = Leader::new();
    let conn = leader.connect_on("n1", "alice", "d1", "web");
    leader.disconnect("alice", "d1", conn, SocketEnd::Lost);
    leader.tick(10);
    leader.connect_on("n2", "alice", "d1", "web");
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    assert_eq!(leader.store.heartbeat_devices("alice"), ["d1"]);
    leader.tick(60);
    assert_eq!(
        leader.shown("alice"),
        DisplayedStatus::Online,
        "no stale grace timer"
    );
}

#[test]
fn d8_unsupported_event_is_answered_with_its_code_and_changes_nothing() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    let before = leader.store.clone();
    match leader.event("alice", "d1", "lock") {
        CommandResult::Error(e) => assert_eq!(e.code, "unsupported_event"),
        ok => panic!("expected an error, got {ok:?}"),
    }
    assert!(leader.last.users.is_empty());
    assert_eq!(leader.store.views, before.views);
    // Events for a device that is not connected are refused too.
    match leader.event("alice", "nope", "activity") {
        CommandResult::Error(e) => assert_eq!(e.code, "unknown_device"),
        ok => panic!("expected an error, got {ok:?}"),
    }
}

#[test]
fn a5_lapsed_heartbeat_removes_the_device_at_once() {
    let mut leader = Leader::new();
    leader.connect_on("n1", "alice", "web", "web");
    leader.connect_on("n1", "alice", "phone", "mobile");
    // Only the phone's gateway keeps refreshing (as `ZADD XX GT` would).
    leader.now = leader.now + common::secs(20);
    let refreshed = leader.now.as_millis() + 30_000;
    *leader.store.hb.get_mut("alice\nphone").unwrap() = refreshed;
    leader.now = leader.now + common::secs(10);
    leader.sweep_heartbeats();
    assert_eq!(leader.store.device_ids("alice"), ["phone"]);
    assert_eq!(leader.store.heartbeat_devices("alice"), ["phone"]);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    // Not a grace period: the device is gone, not away.
    assert_eq!(leader.own("alice").devices, 1);
}

#[test]
fn a5_lapsed_member_of_an_unknown_device_is_deleted() {
    let mut leader = Leader::new();
    leader.store.hb.insert("ghost\nd9".to_owned(), 0);
    leader.sweep_heartbeats();
    assert!(leader.store.hb.is_empty());
    assert_eq!(leader.state.user_count(), 0, "no user is made up for it");
    assert!(!leader.store.users.contains("ghost"));
}

#[test]
fn h2_dead_node_loses_all_its_devices_across_users_and_no_others() {
    let mut leader = Leader::new();
    leader.connect_on("n1", "alice", "laptop", "desktop");
    leader.connect_on("n2", "alice", "phone", "mobile");
    leader.connect_on("n1", "bob", "web", "web");
    leader.connect_on("n2", "carol", "web", "web");
    // A lost device of the dead node goes too, grace or not.
    let conn = leader.connect_on("n1", "dave", "web", "web");
    leader.disconnect("dave", "web", conn, SocketEnd::Lost);
    leader.expire_nodes(&["n1"]);
    assert_eq!(leader.store.device_ids("alice"), ["phone"]);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    assert_eq!(leader.shown("bob"), DisplayedStatus::Offline);
    assert_eq!(leader.shown("carol"), DisplayedStatus::Online);
    assert_eq!(leader.shown("dave"), DisplayedStatus::Offline);
    assert!(leader.store.heartbeat_devices("bob").is_empty());
    assert_eq!(leader.state.nodes().collect::<Vec<_>>(), ["n2"]);
    leader.assert_stored_matches();
    // Expiring it again, or a node with no devices, changes nothing.
    leader.expire_nodes(&["n1", "n9"]);
    assert!(leader.last.is_empty());
}

#[test]
fn h2_nodes_missing_from_the_live_set_are_expired() {
    let mut leader = Leader::new();
    leader.connect_on("n1", "alice", "d1", "web");
    leader.connect_on("n2", "bob", "d1", "web");
    let live = ["n2".to_owned()].into_iter().collect();
    let changes = leader.state.expire_nodes_not_in(&live, leader.now);
    leader.commit(changes);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Offline);
    assert_eq!(leader.shown("bob"), DisplayedStatus::Online);
}

#[test]
fn h1_connect_sets_a_fresh_heartbeat_deadline_even_for_a_known_device() {
    let mut leader = Leader::new();
    leader.connect_on("n1", "alice", "d1", "web");
    leader.now = leader.now + common::secs(25);
    // The old socket's node died; the device reconnects elsewhere before
    // its old deadline lapses. The new deadline must not be the old one.
    leader.connect_on("n2", "alice", "d1", "web");
    assert_eq!(
        leader.store.hb["alice\nd1"],
        leader.now.as_millis() + 30_000
    );
    leader.now = leader.now + common::secs(10);
    leader.sweep_heartbeats();
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
}

#[test]
fn connect_records_the_profile_once() {
    let mut leader = Leader::new();
    let profile = presence_protocol::cluster::Profile {
        username: Some("alice".into()),
        name: Some("Alice".into()),
        utc_offset: None,
    };
    let connect = |conn| {
        ClusterCommand::User(UserCommand::Connect {
            device: dev("d1"),
            platform: presence_core::Platform::Web,
            conn,
            node: "n1".into(),
            profile: profile.clone(),
        })
    };
    leader.ok("alice", connect(1));
    let record = leader.last.users["alice"]
        .record
        .clone()
        .expect("profile stored");
    assert_eq!(record.profile.username.as_deref(), Some("alice"));
    leader.ok("alice", connect(2));
    assert!(
        leader.last.users["alice"].record.is_none(),
        "same profile: no write"
    );
    // An empty profile never erases the stored one.
    leader.ok(
        "alice",
        ClusterCommand::User(UserCommand::TouchProfile {
            profile: Default::default(),
        }),
    );
    assert!(leader.last.users.is_empty());
}

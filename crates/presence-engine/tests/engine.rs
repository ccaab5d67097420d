//! The engine's bookkeeping, driven directly: socket owners (D1, D7, H2),
//! timers (D7), counts (A3), the cap (X2, X4), custom-status fan-out
//! (C3), settings re-evaluation (S1) and versions (W3, I3). The rules
//! themselves are `presence-core`'s and tested there.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use presence_core::{
    CapState, ChosenStatus, Command, CustomStatusId, CustomStatusName, DeviceEvent, DeviceId,
    DisplayedStatus, Platform, Profile, SelfStatus, SettingsPatch, SocketEnd, StatusCounts,
    StatusRequest, Timestamp, WorkspaceSettings,
};
use presence_engine::{Announcement, CapOwner, Changes, Engine, EngineConfig, RestoredUser};

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const GRACE: Duration = Duration::from_secs(30);

fn engine(heartbeats: bool) -> Engine {
    engine_indexed(heartbeats, true)
}

/// With `indexed == false`, the engine finds a node's devices by a scan
/// (the embedded backend's setting): every answer must be the same.
fn engine_indexed(heartbeats: bool, indexed: bool) -> Engine {
    let config = EngineConfig {
        disconnect_grace: GRACE,
        device_timeout: heartbeats.then_some(Duration::from_secs(30)),
        index_devices_by_node: indexed,
    };
    Engine::new(
        config,
        WorkspaceSettings::default(),
        Vec::new(),
        Some(CapOwner::new(2)),
    )
}

fn dev(id: &str) -> DeviceId {
    DeviceId::try_from(id).unwrap()
}

fn connect(engine: &mut Engine, user: &str, device: &str, node: &str, conn: u64, at: Timestamp) {
    engine
        .connect(
            user,
            dev(device),
            Platform::Desktop,
            (node, conn),
            &Profile::default(),
            at,
        )
        .expect("connects");
}

fn choose(engine: &mut Engine, user: &str, status: ChosenStatus, at: Timestamp) {
    let request = StatusRequest {
        status: Some(status),
        ..StatusRequest::default()
    };
    engine
        .apply(user, Command::SetStatus(request), at)
        .expect("applies");
}

fn public_status(changes: &Changes, user: &str) -> Option<DisplayedStatus> {
    changes.users.get(user)?.public.as_ref().map(|v| v.status)
}

#[test]
fn d1_a_socket_replaced_on_another_node_is_reported_and_one_on_the_same_node_is_not() {
    for indexed in [true, false] {
        let mut engine = engine_indexed(false, indexed);
        connect(&mut engine, "ann", "d", "n1", 1, T0);
        engine.finish(T0);
        connect(&mut engine, "ann", "d", "n1", 2, T0);
        assert!(engine.finish(T0).replaced.is_empty());
        connect(&mut engine, "ann", "d", "n2", 3, T0);
        let changes = engine.finish(T0);
        assert_eq!(changes.replaced.len(), 1);
        assert_eq!(
            (&*changes.replaced[0].node, changes.replaced[0].conn),
            ("n1", 2)
        );
        let owner = engine.device_owner("ann", &dev("d")).expect("owned");
        assert_eq!((&*owner.node, owner.conn), ("n2", 3));
        assert_eq!(
            engine.nodes().collect::<Vec<_>>(),
            vec!["n2"],
            "indexed: {indexed}"
        );
    }
}

#[test]
fn d7_a_replaced_socket_ending_changes_nothing_and_a_lost_one_shows_away_for_the_grace() {
    let mut engine = engine(false);
    connect(&mut engine, "bob", "d", "n1", 1, T0);
    connect(&mut engine, "bob", "d", "n1", 2, T0);
    engine.finish(T0);
    engine
        .disconnect("bob", dev("d"), ("n1", 1), SocketEnd::Clean, T0)
        .expect("ignored");
    assert!(engine.finish(T0).users.is_empty());

    engine
        .disconnect("bob", dev("d"), ("n1", 2), SocketEnd::Lost, T0)
        .expect("applies");
    let changes = engine.finish(T0);
    assert_eq!(public_status(&changes, "bob"), Some(DisplayedStatus::Away));
    let grace_end = T0 + GRACE;
    assert_eq!(engine.next_deadline(), Some(grace_end));

    engine.advance(grace_end);
    let changes = engine.finish(grace_end);
    assert_eq!(
        public_status(&changes, "bob"),
        Some(DisplayedStatus::Offline)
    );
    assert_eq!(changes.users["bob"].devices.get(&dev("d")), Some(&None));
    assert_eq!(engine.next_deadline(), None);
    assert_eq!(engine.nodes().count(), 0, "the owner went with the device");
}

#[test]
fn h2_a_dead_node_loses_its_devices_and_no_others() {
    for indexed in [true, false] {
        let mut engine = engine_indexed(true, indexed);
        connect(&mut engine, "cat", "a", "n1", 1, T0);
        connect(&mut engine, "cat", "b", "n2", 1, T0);
        connect(&mut engine, "dan", "a", "n1", 2, T0);
        let changes = engine.finish(T0);
        assert_eq!(
            changes.users["cat"].heartbeats.len(),
            2,
            "connected devices get heartbeat deadlines"
        );
        let live: BTreeSet<String> = ["n2".to_owned()].into();
        engine.expire_nodes_not_in(&live, T0);
        let changes = engine.finish(T0);
        assert_eq!(
            public_status(&changes, "dan"),
            Some(DisplayedStatus::Offline)
        );
        assert_eq!(changes.users["cat"].heartbeats.get(&dev("a")), Some(&None));
        assert_eq!(engine.device_count(), 1, "indexed: {indexed}");
        assert_eq!(
            engine.nodes().collect::<Vec<_>>(),
            vec!["n2"],
            "indexed: {indexed}"
        );
    }
}

#[test]
fn h1_without_a_device_timeout_no_deadlines_are_handed_out() {
    let mut engine = engine(false);
    connect(&mut engine, "eve", "d", "n1", 1, T0);
    assert!(engine.finish(T0).users["eve"].heartbeats.is_empty());
}

#[test]
fn a3_counts_follow_every_batch_and_leave_out_offline_users() {
    let mut engine = engine(false);
    assert_eq!(
        engine.finish(T0).counts,
        Some(StatusCounts::default()),
        "the first batch reports the counts"
    );
    connect(&mut engine, "fay", "d", "n", 1, T0);
    connect(&mut engine, "gus", "d", "n", 2, T0);
    choose(&mut engine, "gus", ChosenStatus::Invisible, T0);
    choose(&mut engine, "hal", ChosenStatus::Busy, T0);
    let changes = engine.finish(T0);
    let expected = StatusCounts {
        online: 1,
        invisible: 1,
        ..StatusCounts::default()
    };
    assert_eq!(changes.counts, Some(expected));
    assert_eq!(engine.counts().online_total(), 1);
    engine.advance(T0);
    assert_eq!(
        engine.finish(T0).counts,
        None,
        "unchanged counts are not repeated"
    );
}

#[test]
fn x2_x4_the_cap_disables_once_and_enables_only_below_it() {
    let mut engine = engine(false);
    engine.observe_connections(3);
    let changes = engine.finish(T0);
    assert_eq!(
        changes.broadcast_transitions().collect::<Vec<_>>(),
        vec![false]
    );
    assert_eq!(changes.cap.map(|c| c.enabled), Some(false));
    engine.observe_connections(2);
    assert!(engine.enable_broadcast().is_err(), "2 is not below the cap");
    engine.observe_connections(1);
    let enabled = engine.enable_broadcast().expect("below the cap");
    assert_eq!(enabled.map(|c| (c.enabled, c.peak)), Some((true, 3)));
    let changes = engine.finish(T0);
    assert_eq!(
        changes.broadcast_transitions().collect::<Vec<_>>(),
        vec![true]
    );

    let mut without_cap = Engine::new(
        EngineConfig::default(),
        WorkspaceSettings::default(),
        Vec::new(),
        None,
    );
    without_cap.observe_connections(1000);
    assert_eq!(without_cap.enable_broadcast(), Ok(None));
    assert_eq!(without_cap.cap(), None::<CapState>);
}

#[test]
fn c3_renaming_a_custom_status_updates_its_users_and_deleting_keeps_the_text() {
    let mut engine = engine(false);
    let id = CustomStatusId::try_from("cs1").unwrap();
    let name = CustomStatusName::parse("In a meeting").expect("valid");
    engine
        .create_custom_status(id.clone(), name, DisplayedStatus::Busy, T0)
        .expect("created");
    connect(&mut engine, "ida", "d", "n", 1, T0);
    engine.use_custom_status("ida", &id, T0).expect("selected");
    let changes = engine.finish(T0);
    assert!(matches!(
        changes.announcements.as_slice(),
        [Announcement::CustomStatus(s)] if s.id == id
    ));
    assert_eq!(public_status(&changes, "ida"), Some(DisplayedStatus::Busy));

    let renamed = CustomStatusName::parse("Presenting").expect("valid");
    engine
        .update_custom_status(&id, Some(renamed), Some(DisplayedStatus::Away), T0)
        .expect("updated");
    let changes = engine.finish(T0);
    let public = changes.users["ida"].public.clone().expect("changed");
    assert_eq!(public.status, DisplayedStatus::Away);
    assert_eq!(
        public.text.map(|t| t.to_string()),
        Some("Presenting".to_owned())
    );
    assert!(changes.users["ida"].durable_changed);

    engine.delete_custom_status(&id, T0).expect("deleted");
    let changes = engine.finish(T0);
    assert!(
        changes.users["ida"].public.is_none(),
        "presence and text stay"
    );
    let me = engine.self_view("ida").expect("held");
    assert_eq!(me.custom_status, None);
    assert_eq!(
        me.text.map(|t| t.to_string()),
        Some("Presenting".to_owned())
    );
}

#[test]
fn s1_w3_changed_defaults_reevaluate_idle_devices_with_newer_versions() {
    let mut engine = engine(false);
    connect(&mut engine, "jim", "d", "n", 1, T0);
    engine
        .apply(
            "jim",
            Command::DeviceEvent {
                device: dev("d"),
                event: DeviceEvent::Idle,
            },
            T0,
        )
        .expect("idle");
    let before = engine.finish(T0).users["jim"].clone();
    assert_eq!(before.public.map(|v| v.status), Some(DisplayedStatus::Away));

    let patch = SettingsPatch {
        default_auto_away: Some(false),
        ..SettingsPatch::default()
    };
    let settings = engine.update_settings(&patch, T0);
    let changes = engine.finish(T0);
    assert_eq!(
        public_status(&changes, "jim"),
        Some(DisplayedStatus::Online)
    );
    let after = &changes.users["jim"];
    assert!(after.version > before.version);
    assert!(after.public_version > before.public_version);
    assert_eq!(
        changes.announcements,
        vec![Announcement::Settings(settings)]
    );
    assert!(engine.update_settings(&patch, T0) == *engine.settings());
    assert!(
        engine.finish(T0).announcements.is_empty(),
        "no change, no news"
    );
}

#[test]
fn i3_an_invisible_users_public_version_stays_while_their_own_moves() {
    let mut engine = engine(false);
    connect(&mut engine, "kim", "d", "n", 1, T0);
    choose(&mut engine, "kim", ChosenStatus::Invisible, T0);
    let first = engine.finish(T0).users["kim"].clone();
    choose(
        &mut engine,
        "kim",
        ChosenStatus::Invisible,
        T0 + Duration::from_secs(1),
    );
    let request = StatusRequest {
        text: Some("hidden".to_owned()),
        ..StatusRequest::default()
    };
    let later = T0 + Duration::from_secs(2);
    engine
        .apply("kim", Command::SetStatus(request), later)
        .expect("applies");
    let changes = engine.finish(later);
    let change = &changes.users["kim"];
    assert!(change.public.is_none());
    assert_eq!(change.public_version, first.public_version);
    assert!(change.version > first.version);
    assert_eq!(
        engine.self_view("kim").map(|v| v.status),
        Some(SelfStatus::Invisible)
    );
}

#[test]
fn a_refused_command_of_an_unknown_user_leaves_no_trace() {
    let mut engine = engine(false);
    let refused = engine.apply(
        "lou",
        Command::DeviceEvent {
            device: dev("nope"),
            event: DeviceEvent::Lock,
        },
        T0,
    );
    assert!(refused.is_err());
    let changes = engine.finish(T0);
    assert!(changes.users.is_empty());
    assert_eq!(engine.user_count(), 0);
}

#[test]
fn w3_a_restored_user_whose_stored_view_is_stale_is_handed_out_again_with_a_newer_version() {
    let mut engine = engine(false);
    let mut durable = presence_core::DurableState::default();
    durable.status.state.chosen = ChosenStatus::Busy;
    durable.version = 10;
    engine.restore(
        "max",
        RestoredUser {
            durable,
            committed: Some(presence_engine::Committed {
                public: None,
                self_view: None,
                version: 10,
            }),
            ..RestoredUser::default()
        },
    );
    engine.advance_everyone(T0);
    let changes = engine.finish(T0);
    let change = &changes.users[&Arc::<str>::from("max")];
    assert_eq!(
        change.public.as_ref().map(|v| v.status),
        Some(DisplayedStatus::Offline)
    );
    assert!(change.version > 10);
    assert!(!change.new_user, "a restored user is known");
}

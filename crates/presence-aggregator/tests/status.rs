//! Chosen status, text, expiry, settings and custom statuses through a
//! shard leader (T1–T6, S1, C1–C3, I2, K2), including the cluster-wide
//! admin commands shard 0's leader handles and their replication to the
//! other shards.

mod common;

use common::{Leader, T0, chosen, secs, status};
use presence_aggregator::ShardConfig;
use presence_core::{
    CustomStatus, CustomStatusId, CustomStatusName, DisplayedStatus, IdleTimeLimit, SelfStatus,
    Timestamp, WorkspaceSettings,
};
use presence_protocol::cluster::{
    AdminCommand, CalendarOrigin, ClusterCommand, CommandResult, ControlMessage, SettingsPatch,
    StatusRequestBody, UserCommand,
};

fn id(s: &str) -> CustomStatusId {
    CustomStatusId::try_from(s).unwrap()
}

fn name(s: &str) -> CustomStatusName {
    CustomStatusName::parse(s).unwrap()
}

fn text(leader: &Leader, user: &str) -> Option<String> {
    leader.public(user).text.map(|t| t.as_str().to_owned())
}

/// Sends a status request for alice (online on the web) and checks the
/// error code it is refused with, and that nothing changed.
fn check_refused(settings: WorkspaceSettings, request: StatusRequestBody, code: &str) {
    let mut leader = Leader::with_settings(settings);
    leader.connect("alice", "d1", "web");
    leader.choose("alice", "busy");
    let store = leader.store.clone();
    let version = leader.state.version("alice");
    match leader.set("alice", request.clone()) {
        CommandResult::Error(e) => {
            assert_eq!(e.code, code, "{request:?}");
            assert!(!e.message.is_empty());
        }
        ok => panic!("{request:?}: expected {code}, got {ok:?}"),
    }
    assert!(
        leader.last.users.is_empty(),
        "{request:?}: nothing to commit"
    );
    assert_eq!(leader.store.views, store.views);
    assert_eq!(leader.store.records, store.records);
    assert_eq!(leader.state.version("alice"), version);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
}

#[test]
#[rustfmt::skip] // One table row per line.
fn t1_t5_t6_i2_refused_requests_reply_with_their_code_and_change_nothing() {
    let default = WorkspaceSettings::default;
    let no_text = WorkspaceSettings { allow_custom_status_text: false, ..default() };
    let no_invisible = WorkspaceSettings { allow_invisible: false, ..default() };
    let long = "x".repeat(121);
    check_refused(default(), status(None, Some(&long)), "status_text_too_long");
    check_refused(default(), status(Some("away"), Some("tab\there")), "status_text_invalid");
    check_refused(no_text, status(None, Some("Lunch")), "status_text_disabled");
    check_refused(no_invisible, status(Some("invisible"), None), "invisible_disabled");
    check_refused(default(), status(None, None), "empty_status_change");
    let past = StatusRequestBody { expires_at: Some(T0), ..status(Some("away"), None) };
    check_refused(default(), past, "expiry_not_in_future");
}

#[test]
fn t2_t4_text_and_status_are_independent() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    leader.set("alice", status(None, Some("Out for lunch")));
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    assert_eq!(text(&leader, "alice").as_deref(), Some("Out for lunch"));
    leader.choose("alice", "busy");
    assert_eq!(
        text(&leader, "alice"),
        None,
        "T4: a built-in status clears the text"
    );
    leader.assert_stored_matches();
}

#[test]
fn t6_expiry_returns_to_the_previous_status_via_advance() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    leader.set("alice", status(Some("away"), Some("Walking the dog")));
    let request = StatusRequestBody {
        expires_at: Some(leader.now + secs(600)),
        ..status(Some("busy"), Some("Call"))
    };
    assert!(matches!(leader.set("alice", request), CommandResult::Ok(_)));
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
    assert_eq!(leader.state.next_deadline(), Some(leader.now + secs(600)));
    leader.tick(599);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
    leader.tick(1);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Away);
    assert_eq!(text(&leader, "alice").as_deref(), Some("Walking the dog"));
    // The expiry is durable: the document is written (M3).
    let record = leader.last.users["alice"].record.as_ref().expect("written");
    assert_eq!(record.state.status.state.chosen, chosen("away"));
    assert!(record.state.status.temporary.is_none());
    leader.assert_stored_matches();
}

#[test]
fn t6_expiry_that_passed_while_no_leader_ran_applies_on_takeover() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    let request = StatusRequestBody {
        expires_at: Some(leader.now + secs(60)),
        ..status(Some("busy"), None)
    };
    leader.set("alice", request);
    let next = leader.takeover_at(leader.now + secs(120));
    assert_eq!(next.shown("alice"), DisplayedStatus::Online);
    assert_eq!(
        next.store.view("alice").unwrap().status,
        DisplayedStatus::Online
    );
}

#[test]
fn m1_m2_manual_status_suspends_and_online_resumes_automatic() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "desktop");
    leader.choose("alice", "busy");
    leader.event("alice", "d1", "lock");
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
    leader.choose("alice", "online");
    assert_eq!(leader.shown("alice"), DisplayedStatus::Away);
}

#[test]
fn d2_server_idle_timer_runs_through_advance() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    leader.event("alice", "d1", "activity");
    leader.tick(299);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    leader.tick(1);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Away);
    leader.assert_stored_matches();
}

#[test]
fn s1_preference_change_replies_with_the_new_self_view() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    let ok = leader.ok(
        "alice",
        ClusterCommand::User(UserCommand::SetPreferences {
            auto_away: Some(false),
            idle_time_limit: Some(IdleTimeLimit::new(600).unwrap()),
        }),
    );
    let me = ok.me.expect("a self view");
    assert!(!me.view.preferences.auto_away);
    assert_eq!(me.view.preferences.idle_time_limit.seconds(), 600);
    assert!(
        leader.last.users["alice"].record.is_some(),
        "preferences are durable"
    );
}

#[test]
fn s1_changed_defaults_reevaluate_every_user_with_new_versions() {
    let mut leader = Leader::new();
    for user in ["alice", "bob"] {
        leader.connect(user, "d1", "web");
        leader.event(user, "d1", "idle");
    }
    // Bob chose his own preference; the default does not apply to him.
    leader.ok(
        "bob",
        ClusterCommand::User(UserCommand::SetPreferences {
            auto_away: Some(true),
            idle_time_limit: None,
        }),
    );
    assert_eq!(leader.shown("alice"), DisplayedStatus::Away);
    let version = leader.store.view("alice").unwrap().version;
    let settings = WorkspaceSettings {
        default_auto_away: false,
        ..WorkspaceSettings::default()
    };
    leader.reevaluate(settings.clone());
    assert_eq!(leader.shown("alice"), DisplayedStatus::Online);
    assert_eq!(leader.shown("bob"), DisplayedStatus::Away);
    assert!(leader.store.view("alice").unwrap().version > version);
    assert!(!leader.last.users.contains_key("bob") || leader.last.users["bob"].view.is_none());
    leader.assert_stored_matches();
    // The same settings again change nothing.
    leader.reevaluate(settings);
    assert!(leader.last.is_empty());
}

#[test]
fn s1_t5_update_settings_on_shard_0_is_stored_announced_and_applied() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    leader.event("alice", "d1", "idle");
    let patch = SettingsPatch {
        default_auto_away: Some(false),
        allow_custom_status_text: Some(false),
        ..SettingsPatch::default()
    };
    let ok = leader.ok(
        "admin",
        ClusterCommand::Admin(AdminCommand::UpdateSettings { patch }),
    );
    let settings = ok.settings.expect("the new settings");
    assert!(!settings.default_auto_away);
    assert_eq!(leader.state.settings(), &settings);
    assert_eq!(leader.last.cluster.settings.as_ref(), Some(&settings));
    assert_eq!(
        leader.store.control.last(),
        Some(&ControlMessage::SettingsChanged {
            settings: settings.clone()
        })
    );
    assert_eq!(
        leader.shown("alice"),
        DisplayedStatus::Online,
        "S1 re-evaluated"
    );
    assert!(
        !leader.state.users().any(|u| u == "admin"),
        "admins are not users of the shard"
    );
    // T5 now holds on this shard.
    match leader.set("alice", status(None, Some("Lunch"))) {
        CommandResult::Error(e) => assert_eq!(e.code, "status_text_disabled"),
        ok => panic!("{ok:?}"),
    }
    // A new leader reads the stored settings.
    let next = leader.takeover();
    assert_eq!(next.state.settings(), &settings);
}

#[test]
fn admin_commands_are_refused_outside_shard_0() {
    let config = ShardConfig {
        shard: 1,
        shards: 2,
        ..ShardConfig::default()
    };
    let mut leader = Leader::with_config(config, WorkspaceSettings::default());
    assert!(leader.state.cap().is_none(), "only shard 0 owns the cap");
    for command in [
        ClusterCommand::Admin(AdminCommand::EnableBroadcast),
        ClusterCommand::Admin(AdminCommand::UpdateSettings {
            patch: SettingsPatch::default(),
        }),
        ClusterCommand::Admin(AdminCommand::DeleteCustomStatus { id: id("x") }),
    ] {
        assert_eq!(leader.refused("admin", command), "wrong_shard");
    }
}

#[test]
fn user_commands_for_another_shards_user_are_refused() {
    let config = ShardConfig {
        shard: 0,
        shards: 4,
        ..ShardConfig::default()
    };
    let mut leader = Leader::with_config(config, WorkspaceSettings::default());
    let stranger = common::user_in_shard(3, 4);
    assert_eq!(
        leader.refused(
            &stranger,
            ClusterCommand::User(UserCommand::SetStatus {
                request: status(Some("busy"), None)
            })
        ),
        "wrong_shard"
    );
    assert_eq!(leader.state.user_count(), 0);
    let own = common::user_in_shard(0, 4);
    leader.connect(&own, "d1", "web");
    assert_eq!(leader.shown(&own), DisplayedStatus::Online);
}

#[test]
fn c1_c2_c3_custom_statuses_on_shard_0() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    leader.connect("bob", "d1", "web");
    let create = |n: &str, t| {
        ClusterCommand::Admin(AdminCommand::CreateCustomStatus {
            id: id(n),
            name: name(n),
            status_type: t,
        })
    };
    leader.ok("admin", create("Lunch", DisplayedStatus::Away));
    assert_eq!(
        leader.refused("admin", create("LUNCH", DisplayedStatus::Busy)),
        "custom_status_name_taken"
    );
    assert!(leader.store.custom_statuses.contains_key("Lunch"));
    // C2: selecting one sets the mapped presence and the name as text.
    leader.ok(
        "alice",
        ClusterCommand::User(UserCommand::UseCustomStatus { id: id("Lunch") }),
    );
    assert_eq!(leader.shown("alice"), DisplayedStatus::Away);
    assert_eq!(text(&leader, "alice").as_deref(), Some("Lunch"));
    assert_eq!(
        leader.refused(
            "bob",
            ClusterCommand::User(UserCommand::UseCustomStatus { id: id("nope") })
        ),
        "custom_status_not_found"
    );
    // C3: a rename and remap reaches its users, and only them.
    let ok = leader.ok(
        "admin",
        ClusterCommand::Admin(AdminCommand::UpdateCustomStatus {
            id: id("Lunch"),
            name: Some(name("Long lunch")),
            status_type: Some(DisplayedStatus::Busy),
        }),
    );
    assert_eq!(ok.custom_status.unwrap().name.as_str(), "Long lunch");
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
    assert_eq!(text(&leader, "alice").as_deref(), Some("Long lunch"));
    assert_eq!(leader.shown("bob"), DisplayedStatus::Online);
    assert!(leader.last.users["alice"].record.is_some());
    assert!(matches!(
        leader.store.control.last(),
        Some(ControlMessage::CustomStatusesChanged { changed, .. }) if changed.len() == 1
    ));
    // C3: deleting leaves the presence and the name as plain text.
    leader.ok(
        "admin",
        ClusterCommand::Admin(AdminCommand::DeleteCustomStatus { id: id("Lunch") }),
    );
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
    assert_eq!(text(&leader, "alice").as_deref(), Some("Long lunch"));
    assert_eq!(leader.own("alice").custom_status, None);
    assert!(leader.store.custom_statuses.is_empty());
    leader.assert_stored_matches();
}

fn custom(id_: &str, name_: &str, status_type: DisplayedStatus) -> CustomStatus {
    CustomStatus {
        id: id(id_),
        name: name(name_),
        status_type,
        updated_at: T0,
    }
}

#[test]
fn c3_other_shards_replicate_changes_and_deletions() {
    // A follower shard that loaded "Gym" when it took over.
    let mut store = common::Store::default();
    let gym = custom("cs1", "Gym", DisplayedStatus::Away);
    store
        .custom_statuses
        .insert("cs1".into(), serde_json::to_string(&gym).unwrap());
    let config = ShardConfig {
        shard: 1,
        shards: 2,
        ..ShardConfig::default()
    };
    let mut leader = Leader::from_store(config, store);
    let alice = &common::user_in_shard(1, 2);
    leader.connect(alice, "d1", "web");
    leader.ok(
        alice,
        ClusterCommand::User(UserCommand::UseCustomStatus { id: id("cs1") }),
    );
    assert_eq!(leader.shown(alice), DisplayedStatus::Away);
    // As announced on the control channel by shard 0.
    leader.custom_changed(custom("cs1", "Gym", DisplayedStatus::Offline));
    assert_eq!(
        leader.shown(alice),
        DisplayedStatus::Offline,
        "offline maps to invisible"
    );
    assert_eq!(leader.own_status(alice), SelfStatus::Invisible);
    leader.custom_deleted(&id("cs1"));
    assert_eq!(leader.own(alice).custom_status, None);
    assert_eq!(
        leader
            .own(alice)
            .text
            .map(|t| t.as_str().to_owned())
            .as_deref(),
        Some("Gym")
    );
    assert!(leader.state.custom_statuses().is_empty());
}

#[test]
fn c3_sync_applies_every_difference_once() {
    let mut leader = Leader::new();
    let changes = leader.state.sync_custom_statuses(
        vec![
            custom("a", "Gym", DisplayedStatus::Away),
            custom("b", "Focus", DisplayedStatus::Busy),
        ],
        leader.now,
    );
    leader.commit(changes);
    leader.connect("alice", "d1", "web");
    leader.ok(
        "alice",
        ClusterCommand::User(UserCommand::UseCustomStatus { id: id("a") }),
    );
    leader.connect("bob", "d1", "web");
    leader.ok(
        "bob",
        ClusterCommand::User(UserCommand::UseCustomStatus { id: id("b") }),
    );
    // "a" renamed, "b" deleted, missed on pub/sub; the runner re-reads.
    let changes = leader.state.sync_custom_statuses(
        vec![custom("a", "Gym time", DisplayedStatus::Away)],
        leader.now,
    );
    leader.commit(changes);
    assert_eq!(text(&leader, "alice").as_deref(), Some("Gym time"));
    assert_eq!(leader.own("bob").custom_status, None);
    assert_eq!(text(&leader, "bob").as_deref(), Some("Focus"));
    // Nothing new: nothing to do (updated_at alone is no change).
    let mut same = custom("a", "Gym time", DisplayedStatus::Away);
    same.updated_at = Timestamp::from_millis(T0.as_millis() + 5);
    let changes = leader.state.sync_custom_statuses(vec![same], leader.now);
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn k2_calendar_busy_until_the_last_event_ends() {
    let settings = WorkspaceSettings {
        calendar_integration: true,
        ..WorkspaceSettings::default()
    };
    let mut leader = Leader::with_settings(settings);
    leader.connect("alice", "d1", "desktop");
    let calendar = |event: &str, busy| {
        ClusterCommand::User(UserCommand::Calendar {
            event_id: event.to_owned(),
            busy,
            source: CalendarOrigin::Integration,
        })
    };
    leader.ok("alice", calendar("e1", true));
    leader.ok("alice", calendar("e2", true));
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
    leader.ok("alice", calendar("e1", false));
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
    let ok = leader.ok("alice", calendar("e2", false));
    assert_eq!(ok.me.unwrap().view.status, SelfStatus::Online);
    let web = ClusterCommand::User(UserCommand::Calendar {
        event_id: "e3".into(),
        busy: true,
        source: CalendarOrigin::Device(presence_core::Platform::Web),
    });
    assert_eq!(leader.refused("alice", web), "unsupported_event");
}

//! The presence cap through shard 0's leader (X1–X5): connection counts of
//! live nodes, transitions announced on the control channel, admin
//! re-enable through the stream, and the state surviving a takeover.

mod common;

use std::collections::BTreeSet;

use common::Leader;
use presence_core::{CapState, WorkspaceSettings};
use presence_protocol::cluster::{AdminCommand, ClusterCommand, ControlMessage, SettingsPatch};

fn observe(leader: &mut Leader, counts: &[(&str, u64)], live: &[&str]) {
    let counts: Vec<(String, u64)> = counts.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
    let live: BTreeSet<String> = live.iter().map(|n| (*n).to_owned()).collect();
    let changes = leader.state.observe_connections(&counts, &live, leader.now);
    leader.commit(changes);
}

fn stored_cap(leader: &Leader) -> CapState {
    serde_json::from_str(leader.store.cap.as_deref().expect("cap stored")).unwrap()
}

fn settings_with_cap(cap: u64) -> WorkspaceSettings {
    WorkspaceSettings {
        cap,
        ..WorkspaceSettings::default()
    }
}

#[test]
fn x1_x2_x3_exceeding_the_cap_disables_the_broadcast_and_announces_it() {
    let mut leader = Leader::with_settings(settings_with_cap(10));
    assert_eq!(
        stored_cap(&leader),
        CapState::new(10),
        "stored on first load"
    );
    observe(
        &mut leader,
        &[("n1", 6), ("n2", 4), ("gone", 50)],
        &["n1", "n2"],
    );
    assert!(
        leader.state.cap().unwrap().enabled,
        "the dead node's count is ignored"
    );
    assert!(leader.store.control.is_empty());
    observe(&mut leader, &[("n1", 7), ("n2", 4)], &["n1", "n2"]);
    let cap = leader.state.cap().unwrap();
    assert!(!cap.enabled);
    assert_eq!((cap.count, cap.peak), (11, 11));
    assert_eq!(
        leader.store.control,
        [ControlMessage::Broadcast { active: false }]
    );
    assert_eq!(stored_cap(&leader), cap);
}

#[test]
fn x4_enable_is_refused_until_below_the_cap_then_announced() {
    let mut leader = Leader::with_settings(settings_with_cap(10));
    observe(&mut leader, &[("n1", 20)], &["n1"]);
    assert_eq!(
        leader.refused(
            "admin",
            ClusterCommand::Admin(AdminCommand::EnableBroadcast)
        ),
        "broadcast_enable_refused"
    );
    observe(&mut leader, &[("n1", 3)], &["n1"]);
    assert!(
        !leader.state.cap().unwrap().enabled,
        "never re-enables by itself"
    );
    let ok = leader.ok(
        "admin",
        ClusterCommand::Admin(AdminCommand::EnableBroadcast),
    );
    assert!(ok.cap.unwrap().enabled);
    assert_eq!(
        leader.store.control.last(),
        Some(&ControlMessage::Broadcast { active: true })
    );
    assert!(stored_cap(&leader).enabled);
}

#[test]
fn x4_x5_a_new_cap_owner_keeps_the_disabled_state_and_peak() {
    let mut leader = Leader::with_settings(settings_with_cap(10));
    observe(&mut leader, &[("n1", 12)], &["n1"]);
    let next = leader.takeover();
    let cap = next.state.cap().unwrap();
    assert!(!cap.enabled);
    assert_eq!(cap.peak, 12);
    assert!(next.last.cluster.cap.is_none(), "nothing new to store");
}

#[test]
fn x1_lowering_the_cap_in_the_settings_disables_at_once() {
    let mut leader = Leader::with_settings(settings_with_cap(10));
    observe(&mut leader, &[("n1", 8)], &["n1"]);
    let ok = leader.ok(
        "admin",
        ClusterCommand::Admin(AdminCommand::UpdateSettings {
            patch: SettingsPatch {
                cap: Some(5),
                ..SettingsPatch::default()
            },
        }),
    );
    assert!(!ok.cap.unwrap().enabled);
    assert!(
        leader
            .store
            .control
            .contains(&ControlMessage::Broadcast { active: false })
    );
    assert_eq!(stored_cap(&leader).cap, 5);
}

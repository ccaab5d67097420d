//! Aggregation over devices (A1–A5): the chosen status × the device
//! aggregate, for others and for the user, with one to four devices.

mod common;

use common::{Sim, at, dev, secs};
use presence_core::{
    AwayReason, ChosenStatus, Command, DeviceStatus, DisplayedStatus, Platform, SelfStatus,
};

use ChosenStatus::{Away as ChooseAway, Busy as ChooseBusy, Invisible, Online as Auto};
use DisplayedStatus::{Away, Busy, Offline, Online};

/// Chooses `chosen`, then connects the devices of `spec` (see
/// `Sim::add_devices`), and checks what others see.
fn check(chosen: ChosenStatus, spec: &str, expected: DisplayedStatus) {
    let mut sim = Sim::new();
    sim.choose(chosen);
    sim.add_devices(spec);
    assert_eq!(
        sim.shown(),
        expected,
        "chosen {chosen}, devices '{spec}': others see"
    );
    assert_eq!(
        sim.user.counts_online(&sim.settings),
        expected != Offline,
        "chosen {chosen}, devices '{spec}': counted online"
    );
}

/// The full grid of chosen status × device aggregate: what others see
/// (`public_view`) and what the user sees (`self_view`). The aggregate is
/// `none` (""), `online` ("web") or `away` ("desktop:lock").
fn check_grid(chosen: ChosenStatus, spec: &str, public: DisplayedStatus, own: SelfStatus) {
    let mut sim = Sim::new();
    sim.set(common::req(Some(chosen), Some("Deep work"), None));
    sim.add_devices(spec);
    assert_eq!(
        sim.shown(),
        public,
        "chosen {chosen}, devices '{spec}': public"
    );
    assert_eq!(
        sim.self_status(),
        own,
        "chosen {chosen}, devices '{spec}': self"
    );
    assert_eq!(sim.self_view().chosen, chosen, "the choice is kept");
}

#[test]
fn a4_grid_chosen_by_aggregate_public_and_self_view() {
    check_grid(Auto, "", Offline, SelfStatus::Offline);
    check_grid(Auto, "web", Online, SelfStatus::Online);
    check_grid(Auto, "desktop:lock", Away, SelfStatus::Away);
    check_grid(ChooseAway, "", Offline, SelfStatus::Offline);
    check_grid(ChooseAway, "web", Away, SelfStatus::Away);
    check_grid(ChooseAway, "desktop:lock", Away, SelfStatus::Away);
    check_grid(ChooseBusy, "", Offline, SelfStatus::Offline);
    check_grid(ChooseBusy, "web", Busy, SelfStatus::Busy);
    check_grid(ChooseBusy, "desktop:lock", Busy, SelfStatus::Busy);
    check_grid(Invisible, "", Offline, SelfStatus::Offline);
    check_grid(Invisible, "web", Offline, SelfStatus::Invisible);
    check_grid(Invisible, "desktop:lock", Offline, SelfStatus::Invisible);
}

#[test]
#[rustfmt::skip] // One table row per line.
fn a1_no_device_means_offline() {
    check(Auto, "", Offline);
    check(ChooseAway, "", Offline);
    check(ChooseBusy, "", Offline);
    check(Invisible, "", Offline);
    check(Auto, "web:gone", Offline);
    check(ChooseBusy, "web:gone desktop:gone mobile:gone", Offline);
    check(ChooseAway, "desktop:lock+gone mobile:background+gone", Offline);
}

#[test]
fn a1_choice_is_kept_while_offline() {
    let mut sim = Sim::with_devices("web");
    sim.set(common::req(Some(ChooseBusy), Some("Deep work"), None));
    sim.disconnect("d0");
    assert_eq!(sim.shown(), Offline);
    assert_eq!(sim.shown_text(), None);
    assert_eq!(sim.user.durable.status.state.chosen, ChooseBusy);
    assert_eq!(sim.user.device_aggregate(&sim.settings), None);
    sim.connect("d1", Platform::Mobile);
    assert_eq!(sim.shown(), Busy);
    assert_eq!(sim.shown_text().as_deref(), Some("Deep work"));
}

#[test]
fn a2_manual_busy_beats_online_device() {
    check(ChooseBusy, "web", Busy);
    check(ChooseBusy, "web desktop mobile", Busy);
    check(ChooseBusy, "web:idle", Busy);
    check(ChooseBusy, "desktop:sleep mobile:background", Busy);
    check(ChooseBusy, "desktop:lost", Busy);
}

#[test]
fn a2_manual_away_beats_online_device() {
    check(ChooseAway, "web", Away);
    check(ChooseAway, "web desktop mobile web", Away);
    check(ChooseAway, "mobile:background", Away);
}

#[test]
fn a3_invisible_shows_offline_and_is_not_counted_online() {
    check(Invisible, "web", Offline);
    check(Invisible, "web desktop mobile", Offline);
    check(Invisible, "desktop:lock mobile:background", Offline);

    let mut sim = Sim::with_devices("web desktop");
    sim.set(common::req(Some(Invisible), Some("Heads down"), None));
    assert_eq!(sim.shown(), Offline);
    assert_eq!(sim.shown_text(), None, "no status text for others");
    assert!(!sim.user.counts_online(&sim.settings));
    assert_eq!(sim.self_status(), SelfStatus::Invisible);
    assert_eq!(sim.own_text().as_deref(), Some("Heads down"));
    assert_eq!(sim.self_view().connection, Online, "the devices are live");
}

#[test]
#[rustfmt::skip] // One table row per line.
fn a4_best_device_state_wins() {
    // One device.
    check(Auto, "web", Online);
    check(Auto, "desktop", Online);
    check(Auto, "mobile", Online);
    check(Auto, "web:idle", Away);
    check(Auto, "desktop:lock", Away);
    check(Auto, "desktop:sleep", Away);
    check(Auto, "mobile:background", Away);
    check(Auto, "desktop:lost", Away);
    // Two devices.
    check(Auto, "web web:idle", Online);
    check(Auto, "web:idle desktop", Online);
    check(Auto, "desktop:lock mobile", Online);
    check(Auto, "desktop:lock mobile:background", Away);
    check(Auto, "desktop:lost web", Online);
    check(Auto, "web:gone mobile:background", Away);
    // Three devices: the rows of the product document's table.
    check(Auto, "web desktop:lock mobile:gone", Online);
    check(Auto, "web:idle desktop:lock mobile:gone", Away);
    check(Auto, "web:gone desktop:gone mobile:gone", Offline);
    check(Auto, "web:idle desktop:sleep mobile:background", Away);
    // Four devices.
    check(Auto, "web:idle desktop:sleep mobile:background web", Online);
    check(Auto, "web:idle desktop:sleep mobile:background desktop:lost", Away);
    check(Auto, "web:idle+active desktop:sleep mobile:background desktop:lost", Online);
    check(Auto, "web:gone desktop:gone mobile:gone mobile:foreground", Online);
}

#[test]
fn a4_device_aggregate_reports_the_best_device() {
    let mut sim = Sim::new();
    assert_eq!(sim.aggregate(), None);
    sim.add_devices("desktop:lock");
    assert_eq!(
        sim.aggregate(),
        Some(DeviceStatus::Away(AwayReason::Locked))
    );
    sim.add_devices("mobile");
    assert_eq!(sim.aggregate(), Some(DeviceStatus::Online));
    assert_eq!(sim.self_view().devices, 2);
}

#[test]
fn a5_lapsed_heartbeat_disconnects_device() {
    let mut sim = Sim::with_devices("web");
    sim.apply(Command::Heartbeat {
        device: dev("d0"),
        deadline: at(30),
    });
    assert_eq!(sim.next_deadline(), Some(at(30)));
    sim.advance_to(at(29));
    assert_eq!(sim.shown(), Online);
    let outcome = sim.advance_to(at(30));
    assert!(outcome.public_changed);
    assert_eq!(sim.shown(), Offline);
    assert!(sim.user.devices.is_empty());
}

#[test]
fn a5_heartbeat_moves_the_deadline_on() {
    let mut sim = Sim::with_devices("web desktop:lock");
    // d1 beats once, d0 every 10 s.
    sim.apply(Command::Heartbeat {
        device: dev("d1"),
        deadline: at(30),
    });
    for beat in 1..=5 {
        sim.apply(Command::Heartbeat {
            device: dev("d0"),
            deadline: sim.now + secs(30),
        });
        sim.advance_to(at(beat * 10));
    }
    assert_eq!(sim.user.devices.len(), 1);
    assert!(sim.user.devices.contains_key(&dev("d0")));
    assert_eq!(sim.shown(), Online);
    sim.advance_by(secs(30));
    assert_eq!(sim.shown(), Offline);
}

#[test]
fn a5_heartbeat_already_lapsed_removes_the_device_at_once() {
    let mut sim = Sim::with_devices("web mobile:background");
    sim.apply(Command::Heartbeat {
        device: dev("d0"),
        deadline: sim.now,
    });
    assert_eq!(sim.shown(), Away, "only the background phone is left");
}

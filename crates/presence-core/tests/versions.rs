//! Per-user versions (W3): every visible change gets a larger version, so
//! clients and nodes can drop stale updates.

mod common;

use common::{LONG_GRACE, Sim, T0, at, cmd, req, secs};
use presence_core::{
    ChosenStatus, Command, DeviceEvent, Platform, Timestamp, UserPresence, next_version,
};

/// With the devices of `spec` connected, applies `command` and checks that
/// the version moves exactly when what others or the user see changes.
fn check(spec: &str, command: Command, bumps: bool) {
    let mut sim = Sim::with_devices(spec);
    sim.advance_by(secs(1));
    let before = sim.user.durable.version;
    let shown = format!("{command:?}");
    let outcome = sim.apply(command);
    assert_eq!(outcome.version, sim.user.durable.version, "{shown}");
    assert_eq!(
        outcome.changed(),
        bumps,
        "'{spec}' then {shown}: visible change"
    );
    if bumps {
        assert!(
            outcome.version > before,
            "'{spec}' then {shown}: version grows"
        );
    } else {
        assert_eq!(
            outcome.version, before,
            "'{spec}' then {shown}: version stays"
        );
    }
}

fn check_next(previous: u64, now_ms: i64, expected: u64) {
    assert_eq!(
        next_version(previous, Timestamp::from_millis(now_ms)),
        expected,
        "next_version({previous}, {now_ms})"
    );
}

#[test]
fn w3_version_moves_exactly_with_visible_changes() {
    use ChosenStatus::{Busy, Online};
    use DeviceEvent::{Activity, Idle, Lock};
    use Platform::{Desktop, Web};
    check("", cmd::connect("d0", Web), true);
    check("web", cmd::connect("d1", Desktop), true);
    check("web", cmd::connect("d0", Web), false);
    check("web:idle", cmd::connect("d0", Web), true);
    check("web", cmd::event("d0", Activity), false);
    check("web", cmd::event("d0", Idle), true);
    check("web:idle", cmd::event("d0", Idle), false);
    check("web:idle", cmd::event("d0", Activity), true);
    check("web desktop", cmd::event("d1", Lock), false);
    check("desktop", cmd::event("d0", Lock), true);
    check("web", cmd::heartbeat("d0", at(100)), false);
    check("web", cmd::status(Busy), true);
    check("", cmd::status(Busy), true);
    check("web", cmd::status(Online), false);
    check("web", cmd::text("Lunch"), true);
    check("web", cmd::clean("d0"), true);
    check("web", cmd::clean("nope"), false);
    check("web", cmd::lost("d0", at(100)), true);
    check("web", cmd::auto_away(false), true);
    check("web", cmd::custom_deleted("c0"), false);
}

#[test]
fn w3_version_grows_with_every_visible_change() {
    let mut sim = Sim::new();
    let mut last = sim.user.durable.version;
    let mut expect_growth = |outcome: presence_core::Outcome, what: &str| {
        assert!(outcome.changed(), "{what} is visible");
        assert!(
            outcome.version > last,
            "{what}: {} > {last}",
            outcome.version
        );
        last = outcome.version;
    };
    expect_growth(sim.connect("d0", Platform::Desktop), "connect");
    // Starting the idle timer is not visible by itself.
    assert!(!sim.event("d0", DeviceEvent::Activity).changed());
    expect_growth(sim.advance_by(secs(300)), "idle timer");
    expect_growth(sim.event("d0", DeviceEvent::Activity), "back");
    expect_growth(sim.choose(ChosenStatus::Busy), "busy");
    // Changes within the same millisecond, and with the clock going
    // backwards (another node's clock), still grow.
    expect_growth(sim.set(req(None, Some("a"), None)), "text a");
    expect_growth(sim.set(req(None, Some("b"), None)), "text b");
    sim.now = sim.now - secs(3600);
    expect_growth(sim.set(req(None, Some("c"), None)), "text c");
    expect_growth(sim.lose("d0", secs(30)), "lost");
    expect_growth(sim.advance_by(secs(30)), "grace over");
}

#[test]
fn w3_versions_jump_to_the_clock() {
    check_next(0, 0, 1);
    check_next(5, 0, 6);
    check_next(0, 1, 1000);
    check_next(0, 1_000, 1_000_000);
    check_next(1_000_000, 1_000, 1_000_001);
    check_next(7, -5, 8);
    check_next(u64::MAX - 1, 0, u64::MAX);
    let t0 = u64::try_from(T0.as_millis()).unwrap() * 1000;
    check_next(0, T0.as_millis(), t0);
}

#[test]
fn w3_restart_without_the_last_versions_still_goes_up() {
    let mut sim = Sim::with_devices("web");
    sim.choose(ChosenStatus::Busy);
    let stored = sim.user.durable.clone();
    // Device-only changes that were never stored.
    let mut highest = 0;
    for _ in 0..50 {
        highest = sim.event("d0", DeviceEvent::Idle).version;
        highest = highest.max(sim.event("d0", DeviceEvent::Active).version);
    }
    sim.lose("d0", LONG_GRACE);
    highest = highest.max(sim.user.durable.version);
    // The process restarts a second later from the stored document.
    sim.user = UserPresence::from_durable(stored);
    sim.advance_by(secs(1));
    let outcome = sim.connect("d0", Platform::Web);
    assert!(outcome.version > highest, "{} > {highest}", outcome.version);
}

/// I3: of the things an invisible user does (the F2 probe), none
/// moves what others see: not the public view, not its version.
#[test]
fn i3_public_version_stays_while_invisible() {
    use DeviceEvent::{Active, Idle, Lock, Unlock};
    use Platform::{Desktop, Mobile};
    let settings = presence_core::WorkspaceSettings {
        calendar_integration: true,
        ..Default::default()
    };
    let mut sim = Sim::with_settings(settings);
    sim.add_devices("desktop web");
    sim.choose(ChosenStatus::Invisible);
    let public = sim.public();
    let public_version = sim.user.durable.public_version;
    let calendar = |busy| Command::Calendar {
        event_id: "standup".into(),
        busy,
        source: presence_core::CalendarSource::Device(Desktop),
    };
    let steps: Vec<(&str, Command)> = vec![
        ("lock", cmd::event("d0", Lock)),
        ("unlock", cmd::event("d0", Unlock)),
        ("idle", cmd::event("d1", Idle)),
        ("active", cmd::event("d1", Active)),
        ("text", cmd::text("Secret plans")),
        ("second device", cmd::connect("d2", Mobile)),
        ("one of two devices leaves", cmd::clean("d2")),
        ("calendar event starts", calendar(true)),
        ("calendar event ends", calendar(false)),
        ("preferences", cmd::auto_away(false)),
        ("lost device", cmd::lost("d1", at(60))),
    ];
    for (what, command) in steps {
        sim.advance_by(secs(1));
        let outcome = sim.apply(command);
        assert!(!outcome.public_changed, "{what}: others see nothing");
        assert_eq!(outcome.public_version, public_version, "{what}");
        assert_eq!(sim.public(), public, "{what}");
    }
    // A text with an expiry, and the expiry itself.
    let outcome = sim.set(req(None, Some("Back soon"), Some(at(3600))));
    assert_eq!(outcome.public_version, public_version, "text with expiry");
    let outcome = sim.advance_to(at(3601));
    assert!(outcome.self_changed, "the expiry is visible to the user");
    assert_eq!(outcome.public_version, public_version, "expiry");
    assert_eq!(sim.public(), public);
    // Leaving invisible is a public change: the version moves at once.
    let outcome = sim.choose(ChosenStatus::Online);
    assert!(outcome.public_changed);
    assert!(outcome.public_version > public_version);
}

/// I3, W3: the public version moves exactly when the public view does, and
/// grows like the user's own version.
#[test]
fn i3_public_version_moves_exactly_with_the_public_view() {
    use ChosenStatus::Busy;
    use DeviceEvent::{Idle, Lock};
    use Platform::{Desktop, Web};
    let cases: Vec<(&str, Command)> = vec![
        ("", cmd::connect("d0", Web)),
        ("web", cmd::connect("d1", Desktop)),
        ("web", cmd::event("d0", Idle)),
        ("web desktop", cmd::event("d1", Lock)),
        ("web", cmd::status(Busy)),
        ("", cmd::status(Busy)),
        ("web", cmd::text("Lunch")),
        ("", cmd::text("Lunch")),
        ("web", cmd::auto_away(false)),
        ("web", cmd::clean("d0")),
    ];
    for (spec, command) in cases {
        let mut sim = Sim::with_devices(spec);
        sim.advance_by(secs(1));
        let before = sim.user.durable.public_version;
        let public = sim.public();
        let shown = format!("'{spec}' then {command:?}");
        let outcome = sim.apply(command);
        assert_eq!(outcome.public_changed, sim.public() != public, "{shown}");
        if outcome.public_changed {
            assert!(outcome.public_version > before, "{shown}");
        } else {
            assert_eq!(outcome.public_version, before, "{shown}");
        }
        assert_eq!(outcome.public_version, sim.user.durable.public_version);
    }
}

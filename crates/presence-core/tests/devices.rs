//! Device state (D1–D8): the platform matrix, the idle timer on the server
//! and on the client, explicit system events, sleep, lost links and
//! reconnects.

mod common;

use common::{LONG_GRACE, Sim, T0, at, dev, event, platform, secs};
use presence_core::{
    AwayReason, Command, Device, DeviceEvent, DeviceStatus, DisplayedStatus, IdleSource,
    IdleTimeLimit, Platform, PreferencesUpdate, PresenceError,
};

use AwayReason::{Asleep, Background, Disconnected, Idle, Locked};
use DeviceStatus::{Away, Online};

/// Applies `event` to a freshly connected device of `platform` and checks
/// the device's status afterwards, or the error code when the platform
/// cannot produce the event (D8). A rejected event changes nothing.
fn check_event(platform_name: &str, event_name: &str, expected: Result<DeviceStatus, &str>) {
    let (platform, event) = (platform(platform_name), event(event_name));
    let mut sim = Sim::new();
    sim.connect("d0", platform);
    let before = sim.user.clone();
    let result = sim.try_event("d0", event);
    match expected {
        Ok(status) => {
            assert!(result.is_ok(), "{platform_name} {event_name}: {result:?}");
            assert!(event.supported_on(platform));
            assert_eq!(
                sim.device_status("d0"),
                status,
                "{platform_name} {event_name}"
            );
        }
        Err(code) => {
            let err = result.expect_err(&format!("{platform_name} {event_name} must fail"));
            assert_eq!(err.code(), code, "{platform_name} {event_name}");
            assert_eq!(
                err,
                PresenceError::UnsupportedEvent { platform, event },
                "{platform_name} {event_name}"
            );
            assert!(!event.supported_on(platform));
            assert_eq!(sim.user, before, "{platform_name} {event_name}: unchanged");
            assert_eq!(sim.device_status("d0"), Online);
        }
    }
}

/// Connects one device at `T0` under the given auto-away preference,
/// applies `events` ("a+b", at `T0`), lets `idle_secs` pass and checks the
/// device's status. The idle time limit is the default 300 s.
fn check_timer(
    platform_name: &str,
    auto_away: bool,
    events: &str,
    idle_secs: u64,
    expected: DeviceStatus,
) {
    let mut sim = Sim::new();
    sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: Some(auto_away),
        idle_time_limit: None,
    }));
    sim.connect("d0", platform(platform_name));
    for name in events.split('+').filter(|n| !n.is_empty()) {
        sim.event("d0", event(name));
    }
    sim.advance_by(secs(idle_secs));
    assert_eq!(
        sim.device_status("d0"),
        expected,
        "{platform_name}, auto_away {auto_away}, '{events}', {idle_secs} s later"
    );
}

const UNSUPPORTED: &str = "unsupported_event";

#[test]
fn d8_platform_event_matrix() {
    check_event("web", "activity", Ok(Online));
    check_event("web", "idle", Ok(Away(Idle)));
    check_event("web", "active", Ok(Online));
    check_event("web", "lock", Err(UNSUPPORTED));
    check_event("web", "unlock", Err(UNSUPPORTED));
    check_event("web", "sleep", Err(UNSUPPORTED));
    check_event("web", "wake", Err(UNSUPPORTED));
    check_event("web", "background", Err(UNSUPPORTED));
    check_event("web", "foreground", Err(UNSUPPORTED));
    check_event("desktop", "activity", Ok(Online));
    check_event("desktop", "idle", Ok(Away(Idle)));
    check_event("desktop", "active", Ok(Online));
    check_event("desktop", "lock", Ok(Away(Locked)));
    check_event("desktop", "unlock", Ok(Online));
    check_event("desktop", "sleep", Ok(Away(Asleep)));
    check_event("desktop", "wake", Ok(Online));
    check_event("desktop", "background", Err(UNSUPPORTED));
    check_event("desktop", "foreground", Err(UNSUPPORTED));
    check_event("mobile", "activity", Err(UNSUPPORTED));
    check_event("mobile", "idle", Err(UNSUPPORTED));
    check_event("mobile", "active", Err(UNSUPPORTED));
    check_event("mobile", "lock", Err(UNSUPPORTED));
    check_event("mobile", "unlock", Err(UNSUPPORTED));
    check_event("mobile", "sleep", Err(UNSUPPORTED));
    check_event("mobile", "wake", Err(UNSUPPORTED));
    check_event("mobile", "background", Ok(Away(Background)));
    check_event("mobile", "foreground", Ok(Online));
}

#[test]
fn d8_web_cannot_lock() {
    let mut sim = Sim::with_devices("web");
    let err = sim.try_event("d0", DeviceEvent::Lock).unwrap_err();
    assert_eq!(err.code(), "unsupported_event");
    assert_eq!(err.to_string(), "a web device cannot report 'lock'");
}

#[test]
fn d8_matrix_agrees_with_device_apply() {
    let mut supported = 0;
    for platform in Platform::ALL {
        for event in DeviceEvent::ALL {
            let mut device = Device::connect(platform, T0);
            let before = device.clone();
            let result = device.apply(event, T0);
            assert_eq!(
                result.is_ok(),
                event.supported_on(platform),
                "{platform} {event}"
            );
            if result.is_err() {
                assert_eq!(
                    device, before,
                    "{platform} {event}: rejected events change nothing"
                );
            }
            supported += usize::from(event.supported_on(platform));
        }
    }
    assert_eq!(supported, 3 + 7 + 2);
}

#[test]
fn d8_unknown_device_is_rejected() {
    let mut sim = Sim::with_devices("web");
    let err = sim.try_event("nope", DeviceEvent::Idle).unwrap_err();
    assert_eq!(err.code(), "unknown_device");
}

#[test]
fn d1_new_connection_starts_online() {
    for platform in Platform::ALL {
        let mut sim = Sim::new();
        let outcome = sim.connect("d0", platform);
        assert_eq!(sim.device_status("d0"), Online, "{platform}");
        assert_eq!(outcome.public.status, DisplayedStatus::Online);
        assert!(outcome.public_changed);
    }
}

#[test]
fn d1_reconnect_starts_online_even_if_idle_before() {
    let mut sim = Sim::with_devices("web:idle");
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    sim.lose("d0", secs(30));
    sim.advance_by(secs(40));
    assert_eq!(sim.shown(), DisplayedStatus::Offline);
    sim.connect("d0", Platform::Web);
    assert_eq!(sim.shown(), DisplayedStatus::Online);
    // The idle client re-reports idle after reconnecting.
    sim.event("d0", DeviceEvent::Idle);
    assert_eq!(sim.shown(), DisplayedStatus::Away);
}

#[test]
fn d1_connect_replaces_a_device_with_the_same_id() {
    let mut sim = Sim::with_devices("desktop:lock+sleep");
    sim.connect("d0", Platform::Desktop);
    assert_eq!(sim.user.devices.len(), 1);
    assert_eq!(sim.device_status("d0"), Online);
}

#[test]
fn d2_idle_timer_table() {
    // The server timer starts with the first `activity`.
    check_timer("web", true, "", 100_000, Online);
    check_timer("desktop", true, "", 100_000, Online);
    check_timer("web", true, "activity", 299, Online);
    check_timer("web", true, "activity", 300, Away(Idle));
    check_timer("desktop", true, "activity", 300, Away(Idle));
    check_timer("desktop", true, "activity", 100_000, Away(Idle));
    // Only when auto-away is enabled (S1).
    check_timer("web", false, "activity", 300, Online);
    check_timer("desktop", false, "activity", 100_000, Online);
    // Client-reported idle and active.
    check_timer("web", true, "idle", 0, Away(Idle));
    check_timer("desktop", true, "idle", 0, Away(Idle));
    check_timer("web", true, "idle+active", 0, Online);
    check_timer("web", true, "idle+activity", 0, Online);
    check_timer("web", false, "idle", 0, Online);
    check_timer("desktop", false, "idle", 100_000, Online);
    // A client that reports idle itself runs no server timer.
    check_timer("web", true, "activity+idle+active", 100_000, Online);
    // Mobile has no idle detection at all.
    check_timer("mobile", true, "", 100_000, Online);
    check_timer("mobile", true, "foreground", 100_000, Online);
}

#[test]
fn d2_server_timer_starts_with_first_activity() {
    let mut sim = Sim::with_devices("web");
    assert_eq!(sim.next_deadline(), None, "no timer before any activity");
    sim.advance_to(at(100));
    sim.event("d0", DeviceEvent::Activity);
    assert_eq!(
        sim.user.devices[&dev("d0")].idle_source,
        IdleSource::ServerTimer {
            last_activity: at(100)
        }
    );
    assert_eq!(
        sim.next_deadline(),
        Some(at(400)),
        "the deadline is announced"
    );
    let outcome = sim.advance_to(at(399));
    assert!(!outcome.changed());
    assert_eq!(sim.shown(), DisplayedStatus::Online);
    let outcome = sim.advance_to(at(400));
    assert!(outcome.public_changed);
    assert_eq!(sim.device_status("d0"), Away(Idle));
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    assert_eq!(
        sim.next_deadline(),
        None,
        "an idle device has no idle deadline"
    );
}

#[test]
fn d2_activity_restarts_the_timer_and_returns_online() {
    let mut sim = Sim::with_devices("desktop:activity");
    sim.advance_to(at(200));
    sim.event("d0", DeviceEvent::Activity);
    assert_eq!(sim.next_deadline(), Some(at(500)));
    sim.advance_to(at(499));
    assert_eq!(sim.device_status("d0"), Online);
    sim.advance_to(at(500));
    assert_eq!(sim.device_status("d0"), Away(Idle));
    sim.advance_to(at(900));
    sim.event("d0", DeviceEvent::Activity);
    assert_eq!(sim.device_status("d0"), Online);
    assert_eq!(sim.next_deadline(), Some(at(1200)));
}

#[test]
fn d2_late_activity_report_never_moves_the_timer_back() {
    let mut sim = Sim::with_devices("web");
    sim.advance_to(at(200));
    sim.event("d0", DeviceEvent::Activity);
    // A report stamped earlier (out-of-order delivery) keeps the later one.
    sim.now = at(100);
    sim.event("d0", DeviceEvent::Activity);
    assert_eq!(sim.next_deadline(), Some(at(500)));
}

#[test]
fn d2_user_idle_time_limit_sets_the_deadline() {
    let mut sim = Sim::new();
    sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: None,
        idle_time_limit: Some(IdleTimeLimit::new(60).unwrap()),
    }));
    sim.add_devices("web:activity");
    assert_eq!(sim.next_deadline(), Some(at(60)));
    sim.advance_to(at(60));
    assert_eq!(sim.shown(), DisplayedStatus::Away);
}

#[test]
fn d2_mobile_never_idles() {
    let mut sim = Sim::with_devices("mobile");
    assert!(sim.try_event("d0", DeviceEvent::Idle).is_err());
    assert!(sim.try_event("d0", DeviceEvent::Activity).is_err());
    sim.advance_by(secs(100_000));
    assert_eq!(sim.shown(), DisplayedStatus::Online);
    assert_eq!(sim.next_deadline(), None);
    // Even an idle flag (say, from a stored device) does not make it away.
    let mut device = Device::connect(Platform::Mobile, T0);
    device.idle = true;
    device.idle_source = IdleSource::ServerTimer { last_activity: T0 };
    let prefs = sim.user.durable.preferences.resolve(&sim.settings);
    assert_eq!(device.status(&prefs), Online);
    assert_eq!(device.next_deadline(&prefs), None);
}

#[test]
fn d2_enabling_auto_away_applies_to_idle_devices_at_once() {
    let mut sim = Sim::new();
    sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: Some(false),
        idle_time_limit: None,
    }));
    sim.add_devices("web:idle");
    assert_eq!(sim.shown(), DisplayedStatus::Online);
    let outcome = sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: Some(true),
        idle_time_limit: None,
    }));
    assert!(outcome.public_changed);
    assert_eq!(sim.shown(), DisplayedStatus::Away);
}

#[test]
fn d3_lock_means_away_unlock_means_online() {
    let mut sim = Sim::with_devices("desktop");
    sim.event("d0", DeviceEvent::Lock);
    assert_eq!(sim.device_status("d0"), Away(Locked));
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    sim.event("d0", DeviceEvent::Unlock);
    assert_eq!(sim.device_status("d0"), Online);
    assert_eq!(sim.shown(), DisplayedStatus::Online);
}

#[test]
fn d3_unlock_counts_as_activity() {
    let mut sim = Sim::with_devices("desktop:activity+lock");
    sim.advance_to(at(250));
    sim.event("d0", DeviceEvent::Unlock);
    assert_eq!(sim.next_deadline(), Some(at(550)));
    // Unlocking an idle device brings it back.
    let mut sim = Sim::with_devices("desktop:idle+lock");
    sim.event("d0", DeviceEvent::Unlock);
    assert_eq!(sim.device_status("d0"), Online);
}

#[test]
fn d4_background_means_away_foreground_means_online() {
    let mut sim = Sim::with_devices("mobile");
    sim.event("d0", DeviceEvent::Background);
    assert_eq!(sim.device_status("d0"), Away(Background));
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    sim.event("d0", DeviceEvent::Foreground);
    assert_eq!(sim.shown(), DisplayedStatus::Online);
}

#[test]
fn d5_lock_and_background_apply_with_auto_away_disabled() {
    check_timer("desktop", false, "lock", 0, Away(Locked));
    check_timer("desktop", false, "lock+unlock", 0, Online);
    check_timer("desktop", false, "sleep", 0, Away(Asleep));
    check_timer("mobile", false, "background", 0, Away(Background));
    check_timer("mobile", false, "background+foreground", 0, Online);
    check_timer("desktop", false, "idle+lock", 0, Away(Locked));
    check_timer("desktop", false, "activity+lock", 100_000, Away(Locked));
}

#[test]
fn d6_sleep_then_lost_then_offline() {
    let mut sim = Sim::with_devices("desktop");
    sim.event("d0", DeviceEvent::Sleep);
    assert_eq!(sim.device_status("d0"), Away(Asleep));
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    sim.advance_to(at(10));
    sim.lose("d0", secs(30));
    assert_eq!(sim.device_status("d0"), Away(Disconnected));
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    assert_eq!(sim.next_deadline(), Some(at(40)));
    sim.advance_to(at(39));
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    let outcome = sim.advance_to(at(40));
    assert!(outcome.public_changed);
    assert_eq!(sim.shown(), DisplayedStatus::Offline);
    assert!(sim.user.devices.is_empty());
}

#[test]
fn d6_wake_returns_online() {
    let mut sim = Sim::with_devices("desktop:sleep");
    sim.event("d0", DeviceEvent::Wake);
    assert_eq!(sim.shown(), DisplayedStatus::Online);
}

#[test]
fn d7_clean_close_removes_the_device_at_once() {
    let mut sim = Sim::with_devices("web");
    let outcome = sim.disconnect("d0");
    assert_eq!(outcome.public.status, DisplayedStatus::Offline);
    assert!(sim.user.devices.is_empty());
    // Closing an unknown device is harmless.
    assert!(!sim.disconnect("d0").changed());
}

#[test]
fn d7_lost_link_shows_away_until_grace_then_removed() {
    let mut sim = Sim::with_devices("web");
    sim.lose("d0", secs(30));
    assert_eq!(sim.device_status("d0"), Away(Disconnected));
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    assert_eq!(sim.next_deadline(), Some(at(30)));
    sim.advance_to(at(29));
    assert_eq!(sim.user.devices.len(), 1);
    sim.advance_to(at(30));
    assert!(sim.user.devices.is_empty());
    assert_eq!(sim.shown(), DisplayedStatus::Offline);
}

#[test]
fn d7_reconnect_inside_grace_resumes_online() {
    let mut sim = Sim::with_devices("web");
    sim.lose("d0", secs(30));
    sim.advance_to(at(20));
    sim.connect("d0", Platform::Web);
    assert_eq!(sim.shown(), DisplayedStatus::Online);
    sim.advance_to(at(31));
    assert_eq!(
        sim.shown(),
        DisplayedStatus::Online,
        "the old grace is gone"
    );
    assert_eq!(sim.next_deadline(), None);
}

#[test]
fn d7_lost_link_on_one_device_leaves_the_others() {
    let mut sim = Sim::with_devices("web desktop");
    sim.lose("d1", LONG_GRACE);
    assert_eq!(sim.shown(), DisplayedStatus::Online);
    sim.disconnect("d0");
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    sim.advance_by(LONG_GRACE);
    assert_eq!(sim.shown(), DisplayedStatus::Offline);
}

#[test]
fn d7_lost_unknown_device_is_rejected() {
    let mut sim = Sim::new();
    let err = sim
        .try_apply(Command::Disconnect {
            device: dev("d0"),
            how: presence_core::Disconnect::Lost {
                grace_until: at(30),
            },
        })
        .unwrap_err();
    assert_eq!(err.code(), "unknown_device");
}

//! Manual and automatic presence (M1–M3), invisible (I1, I2) and the
//! auto-away preferences (S1, S2).

mod common;

use common::{Sim, T0, at, req, secs};
use presence_core::{
    CalendarSource, ChosenStatus, Command, CustomStatus, CustomStatusId, CustomStatusName,
    DEFAULT_IDLE_TIME_LIMIT_SECS, DisplayedStatus, DurableState, IdleTimeLimit,
    MAX_IDLE_TIME_LIMIT_SECS, MIN_IDLE_TIME_LIMIT_SECS, Platform, Preferences, PreferencesUpdate,
    SelfStatus, UserPresence, WorkspaceSettings,
};

use ChosenStatus::{Away as ChooseAway, Busy as ChooseBusy, Invisible, Online as Auto};
use DisplayedStatus::{Away, Busy, Offline, Online};

/// Chooses `chosen` with one web device and one desktop device connected,
/// then lets the devices of `spec` happen (`idle`, `lock`, … on `d0`/`d1`
/// written as `d0:idle d1:lock`) and `idle_secs` pass. Others still see the
/// manual status (M1), while the device aggregate records the events.
fn check_suspended(
    chosen: ChosenStatus,
    events: &str,
    idle_secs: u64,
    shown: DisplayedStatus,
    connection: DisplayedStatus,
) {
    let mut sim = Sim::with_devices("web:activity desktop:activity");
    sim.choose(chosen);
    for token in events.split_whitespace() {
        let (id, name) = token.split_once(':').expect("device:event");
        sim.event(id, common::event(name));
    }
    sim.advance_by(secs(idle_secs));
    let context = format!("chosen {chosen}, '{events}', {idle_secs} s");
    assert_eq!(sim.shown(), shown, "{context}: shown");
    assert_eq!(
        sim.self_view().connection,
        connection,
        "{context}: connection"
    );
}

/// Starts in `chosen` with the devices of `spec`, then chooses `online`:
/// the display must become the device aggregate at once (M2).
fn check_return_to_auto(chosen: ChosenStatus, spec: &str, expected: DisplayedStatus) {
    let mut sim = Sim::with_devices(spec);
    sim.choose(chosen);
    let outcome = sim.choose(Auto);
    assert_eq!(
        outcome.public.status, expected,
        "from {chosen} with '{spec}'"
    );
    assert_eq!(sim.self_view().chosen, Auto);
}

/// Checks a status request against `allow_invisible` with the user's
/// current chosen status `current` (I2).
fn check_invisible(
    allow_invisible: bool,
    current: ChosenStatus,
    requested: ChosenStatus,
    expected: Result<SelfStatus, &str>,
) {
    let mut sim = Sim::with_devices("web");
    sim.choose(current);
    sim.settings.allow_invisible = allow_invisible;
    let before = sim.user.clone();
    let result = sim.try_set(req(Some(requested), None, None));
    let context = format!("allow {allow_invisible}, {current} → {requested}");
    match expected {
        Ok(status) => {
            assert!(result.is_ok(), "{context}: {result:?}");
            assert_eq!(sim.self_status(), status, "{context}");
        }
        Err(code) => {
            assert_eq!(result.unwrap_err().code(), code, "{context}");
            assert_eq!(sim.user, before, "{context}: unchanged");
        }
    }
}

/// Validates an idle time limit (S2).
fn check_limit(seconds: u64, expected: Result<u64, &str>) {
    let result = IdleTimeLimit::new(seconds);
    match expected {
        Ok(s) => assert_eq!(result.map(IdleTimeLimit::seconds), Ok(s), "{seconds} s"),
        Err(code) => assert_eq!(result.unwrap_err().code(), code, "{seconds} s"),
    }
}

#[test]
fn m1_manual_status_suspends_auto_away() {
    check_suspended(ChooseBusy, "d0:idle d1:idle", 0, Busy, Away);
    check_suspended(ChooseBusy, "d1:lock", 0, Busy, Online);
    check_suspended(ChooseBusy, "d0:idle d1:sleep", 0, Busy, Away);
    check_suspended(ChooseBusy, "", 100_000, Busy, Away);
    check_suspended(ChooseAway, "", 0, Away, Online);
    // `active` puts d0 on its own idle detector: only d1 times out.
    check_suspended(ChooseAway, "d0:active", 100_000, Away, Online);
    check_suspended(Invisible, "d0:idle d1:lock", 0, Offline, Away);
    check_suspended(Invisible, "", 100_000, Offline, Away);
    // Automatic mode, for contrast: the display follows the devices.
    check_suspended(Auto, "d0:idle d1:idle", 0, Away, Away);
    check_suspended(Auto, "", 100_000, Away, Away);
    check_suspended(Auto, "d0:idle", 0, Online, Online);
}

#[test]
fn m1_device_events_are_recorded_but_display_does_not_move() {
    let mut sim = Sim::with_devices("desktop");
    sim.choose(ChooseBusy);
    let outcome = sim.event("d0", presence_core::DeviceEvent::Lock);
    assert!(!outcome.public_changed);
    assert!(
        outcome.self_changed,
        "the user sees their connection change"
    );
    assert_eq!(sim.shown(), Busy);
    assert!(sim.user.devices[&common::dev("d0")].locked);
}

#[test]
fn m2_choosing_online_returns_to_the_device_aggregate() {
    check_return_to_auto(ChooseBusy, "web", Online);
    check_return_to_auto(ChooseBusy, "web:idle", Away);
    check_return_to_auto(ChooseAway, "web", Online);
    check_return_to_auto(ChooseAway, "desktop:lock mobile", Online);
    check_return_to_auto(ChooseAway, "desktop:lock mobile:background", Away);
    check_return_to_auto(Invisible, "desktop:sleep", Away);
    check_return_to_auto(Invisible, "web desktop:sleep", Online);
    check_return_to_auto(ChooseBusy, "", Offline);
}

#[test]
fn m2_idle_timer_that_fired_while_manual_shows_at_once() {
    let mut sim = Sim::with_devices("web:activity");
    sim.choose(ChooseBusy);
    sim.advance_by(secs(1000));
    assert_eq!(sim.shown(), Busy);
    sim.choose(Auto);
    assert_eq!(sim.shown(), Away);
}

fn sample_durable() -> DurableState {
    let settings = WorkspaceSettings {
        calendar_integration: true,
        ..WorkspaceSettings::default()
    };
    let mut sim = Sim::with_settings(settings);
    sim.add_devices("desktop");
    sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: Some(false),
        idle_time_limit: Some(IdleTimeLimit::new(600).unwrap()),
    }));
    sim.apply(Command::UseCustomStatus(CustomStatus {
        id: CustomStatusId::try_from("vacation").unwrap(),
        name: CustomStatusName::parse("On Vacation 🏖️").unwrap(),
        status_type: DisplayedStatus::Away,
        updated_at: T0,
    }));
    sim.set(req(Some(ChooseBusy), Some("Deep work"), Some(at(3600))));
    sim.set(req(None, Some("Almost done"), Some(at(1800))));
    sim.apply(Command::Calendar {
        event_id: "standup".into(),
        busy: true,
        source: CalendarSource::Device(Platform::Desktop),
    });
    sim.user.durable.clone()
}

#[test]
fn m3_durable_state_round_trips_through_json() {
    let durable = sample_durable();
    assert!(durable.version > 0);
    let json = serde_json::to_string(&durable).unwrap();
    let back: DurableState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, durable);
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        json,
        "stable encoding"
    );
    // The default state round-trips too, and an empty document reads as it.
    let empty = DurableState::default();
    let json = serde_json::to_string(&empty).unwrap();
    assert_eq!(serde_json::from_str::<DurableState>(&json).unwrap(), empty);
    assert_eq!(serde_json::from_str::<DurableState>("{}").unwrap(), empty);
}

#[test]
fn m3_rebuilt_user_keeps_status_text_expiry_and_preferences() {
    let durable = sample_durable();
    let json = serde_json::to_string(&durable).unwrap();
    let mut sim = Sim::with_settings(WorkspaceSettings {
        calendar_integration: true,
        ..WorkspaceSettings::default()
    });
    sim.user = UserPresence::from_durable(serde_json::from_str(&json).unwrap());
    assert!(sim.user.devices.is_empty(), "devices are not durable");
    assert_eq!(sim.shown(), Offline);
    sim.connect("d9", Platform::Web);
    let view = sim.self_view();
    assert_eq!(view.chosen, ChooseBusy);
    assert_eq!(view.text.as_ref().map(|t| t.as_str()), Some("Almost done"));
    assert_eq!(view.expires_at, Some(at(1800)));
    assert!(!view.preferences.auto_away);
    assert_eq!(view.preferences.idle_time_limit.seconds(), 600);
    assert!(view.calendar_busy);
    assert_eq!(sim.shown(), Busy);
    // The expiry chain survived as well.
    sim.advance_to(at(1800));
    assert_eq!(sim.own_text().as_deref(), Some("Deep work"));
    sim.advance_to(at(3600));
    assert_eq!(sim.self_view().chosen, ChooseAway);
    assert_eq!(sim.own_text().as_deref(), Some("On Vacation 🏖️"));
    assert!(sim.user.durable.version > durable.version);
}

#[test]
fn m3_choice_survives_logout_and_login() {
    let mut sim = Sim::with_devices("web");
    sim.set(req(Some(ChooseAway), Some("Lunch"), None));
    sim.disconnect("d0");
    sim.advance_by(secs(86_400));
    sim.connect("d1", Platform::Mobile);
    assert_eq!(sim.shown(), Away);
    assert_eq!(sim.shown_text().as_deref(), Some("Lunch"));
}

#[test]
fn i1_invisible_is_set_status_invisible_and_shows_offline() {
    let mut sim = Sim::with_devices("web desktop mobile");
    sim.set(req(None, Some("Writing"), None));
    let outcome = sim.choose(Invisible);
    assert_eq!(outcome.public.status, Offline);
    assert_eq!(outcome.public.text, None);
    assert!(outcome.public_changed);
    assert_eq!(sim.self_status(), SelfStatus::Invisible);
    assert_eq!(sim.self_view().chosen, Invisible);
    assert_eq!(
        sim.own_text(),
        None,
        "choosing a status cleared the text (T4)"
    );
}

#[test]
fn i2_invisible_disabled_rejects_new_requests_only() {
    check_invisible(true, Auto, Invisible, Ok(SelfStatus::Invisible));
    check_invisible(true, ChooseBusy, Invisible, Ok(SelfStatus::Invisible));
    check_invisible(false, Auto, Invisible, Err("invisible_disabled"));
    check_invisible(false, ChooseBusy, Invisible, Err("invisible_disabled"));
    check_invisible(false, ChooseAway, Invisible, Err("invisible_disabled"));
    check_invisible(false, Auto, ChooseBusy, Ok(SelfStatus::Busy));
    // Already invisible: stays, may re-confirm, and may leave.
    check_invisible(false, Invisible, Invisible, Ok(SelfStatus::Invisible));
    check_invisible(false, Invisible, Auto, Ok(SelfStatus::Online));
    check_invisible(false, Invisible, ChooseAway, Ok(SelfStatus::Away));
}

#[test]
fn i2_already_invisible_users_stay_invisible() {
    let mut sim = Sim::with_devices("web");
    sim.choose(Invisible);
    sim.settings.allow_invisible = false;
    sim.set(req(None, Some("still here"), None));
    sim.disconnect("d0");
    sim.connect("d1", Platform::Desktop);
    sim.advance_by(secs(10_000));
    assert_eq!(sim.self_status(), SelfStatus::Invisible);
    assert_eq!(sim.shown(), Offline);
    // Once they leave invisible, they cannot go back.
    sim.choose(Auto);
    let err = sim.try_set(req(Some(Invisible), None, None)).unwrap_err();
    assert_eq!(err.code(), "invisible_disabled");
}

#[test]
fn i2_offline_custom_status_is_rejected_when_invisible_disabled() {
    let mut sim = Sim::with_devices("web");
    sim.settings.allow_invisible = false;
    let err = sim
        .try_apply(Command::UseCustomStatus(CustomStatus {
            id: CustomStatusId::try_from("ghost").unwrap(),
            name: CustomStatusName::parse("Ghost").unwrap(),
            status_type: DisplayedStatus::Offline,
            updated_at: T0,
        }))
        .unwrap_err();
    assert_eq!(err.code(), "invisible_disabled");
    assert_eq!(sim.shown(), Online);
}

#[test]
fn s1_defaults_come_from_the_workspace() {
    let settings = WorkspaceSettings::default();
    let prefs = Preferences::default().resolve(&settings);
    assert!(prefs.auto_away);
    assert_eq!(
        prefs.idle_time_limit.seconds(),
        DEFAULT_IDLE_TIME_LIMIT_SECS
    );
    assert_eq!(DEFAULT_IDLE_TIME_LIMIT_SECS, 300);
    assert!(settings.default_auto_away);
}

#[test]
fn s1_workspace_settings_defaults() {
    let defaults = WorkspaceSettings::default();
    assert!(defaults.allow_custom_status_text);
    assert!(defaults.allow_invisible);
    assert!(!defaults.calendar_integration);
    assert!(defaults.default_auto_away);
    assert_eq!(defaults.default_idle_time_limit.seconds(), 300);
    assert_eq!(defaults.cap, 200);
    // A stored settings document missing fields reads with the defaults.
    let partial: WorkspaceSettings = serde_json::from_str(r#"{"cap": 0}"#).unwrap();
    assert_eq!(
        partial,
        WorkspaceSettings {
            cap: 0,
            ..WorkspaceSettings::default()
        }
    );
    let json = serde_json::to_string(&defaults).unwrap();
    assert_eq!(
        serde_json::from_str::<WorkspaceSettings>(&json).unwrap(),
        defaults
    );
}

#[test]
fn s1_workspace_default_reaches_users_who_never_chose() {
    let mut sim = Sim::with_devices("web:activity");
    sim.settings.default_idle_time_limit = IdleTimeLimit::new(120).unwrap();
    assert_eq!(sim.next_deadline(), Some(at(120)));
    sim.settings.default_auto_away = false;
    assert_eq!(sim.next_deadline(), None);
    assert!(!sim.self_view().preferences.auto_away);
    // A user's own choice wins over the default.
    sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: Some(true),
        idle_time_limit: Some(IdleTimeLimit::new(900).unwrap()),
    }));
    sim.settings.default_idle_time_limit = IdleTimeLimit::new(60).unwrap();
    assert_eq!(sim.next_deadline(), Some(at(900)));
}

#[test]
fn s1_auto_away_disabled_keeps_idle_devices_online() {
    let mut sim = Sim::new();
    let outcome = sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: Some(false),
        idle_time_limit: None,
    }));
    assert!(outcome.durable_changed);
    sim.add_devices("web:activity desktop:idle");
    sim.advance_by(secs(100_000));
    assert_eq!(sim.shown(), Online);
    // Setting the same preference again changes nothing.
    let outcome = sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: Some(false),
        idle_time_limit: None,
    }));
    assert!(!outcome.durable_changed);
    assert!(!outcome.changed());
}

#[test]
fn s2_idle_time_limit_below_sixty_is_rejected() {
    check_limit(0, Err("idle_time_limit_too_low"));
    check_limit(1, Err("idle_time_limit_too_low"));
    check_limit(59, Err("idle_time_limit_too_low"));
    check_limit(60, Ok(60));
    check_limit(61, Ok(61));
    check_limit(300, Ok(300));
    check_limit(86_400, Ok(86_400));
    assert_eq!(MIN_IDLE_TIME_LIMIT_SECS, 60);
    let err = IdleTimeLimit::new(59).unwrap_err();
    assert_eq!(
        err.to_string(),
        "idle time limit of 59 s is below the minimum of 60 s"
    );
}

#[test]
fn s2_idle_time_limit_above_a_day_is_rejected() {
    check_limit(MAX_IDLE_TIME_LIMIT_SECS, Ok(86_400));
    check_limit(86_401, Err("idle_time_limit_too_high"));
    check_limit(u64::MAX, Err("idle_time_limit_too_high"));
    assert_eq!(
        IdleTimeLimit::with_floor(u64::MAX, 1).unwrap_err().code(),
        "idle_time_limit_too_high"
    );
    assert_eq!(
        IdleTimeLimit::new(86_401).unwrap_err().to_string(),
        "idle time limit of 86401 s is above the maximum of 86400 s"
    );
}

#[test]
fn s2_lower_floor_only_when_asked() {
    assert_eq!(IdleTimeLimit::with_floor(5, 1).unwrap().seconds(), 5);
    assert_eq!(
        IdleTimeLimit::with_floor(5, 10).unwrap_err().code(),
        "idle_time_limit_too_low"
    );
}

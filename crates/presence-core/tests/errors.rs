//! Every error a client can trigger: its stable code, its message, and
//! that a rejected command changes nothing.

mod common;

use std::collections::BTreeSet;

use common::{Sim, T0, at, cmd, req};
use presence_core::{
    CalendarSource, CapState, ChosenStatus, Command, CustomStatus, CustomStatusId,
    CustomStatusName, CustomStatusRegistry, DeviceEvent, DisplayedStatus, IdleTimeLimit,
    MAX_CALENDAR_EVENTS, Platform, PresenceError, WorkspaceSettings,
};

/// Applies `command` to a user with a web (`d0`), a desktop (`d1`) and a
/// mobile (`d2`) device under `settings`, and checks that it is rejected
/// with `code` and leaves the user exactly as before.
fn check(settings: &WorkspaceSettings, command: Command, code: &str) {
    let mut sim = Sim::with_settings(settings.clone());
    sim.add_devices("web desktop mobile");
    let before = sim.user.clone();
    let shown = format!("{command:?}");
    let err = sim.try_apply(command).expect_err(&shown);
    assert_eq!(err.code(), code, "{shown}");
    assert!(!err.to_string().is_empty());
    assert_eq!(sim.user, before, "{shown}: nothing changed");
}

fn defaults() -> WorkspaceSettings {
    WorkspaceSettings::default()
}

fn set(status: Option<ChosenStatus>, text: Option<&str>, expires_at: Option<i64>) -> Command {
    Command::SetStatus(req(
        status,
        text,
        expires_at.map(|ms| presence_core::Timestamp::from_millis(T0.as_millis() + ms)),
    ))
}

fn calendar(event_id: &str, busy: bool, source: CalendarSource) -> Command {
    Command::Calendar {
        event_id: event_id.to_owned(),
        busy,
        source,
    }
}

fn custom(status_type: DisplayedStatus) -> Command {
    Command::UseCustomStatus(CustomStatus {
        id: CustomStatusId::try_from("c0").unwrap(),
        name: CustomStatusName::parse("Away from keyboard").unwrap(),
        status_type,
        updated_at: T0,
    })
}

#[test]
#[rustfmt::skip] // One table row per line.
fn rejected_commands_change_nothing() {
    use ChosenStatus::{Busy, Invisible};
    use DeviceEvent::{Activity, Background, Idle, Lock};
    let def = defaults();
    let no_text = WorkspaceSettings {
        allow_custom_status_text: false,
        ..defaults()
    };
    let no_inv = WorkspaceSettings {
        allow_invisible: false,
        ..defaults()
    };
    let cal = WorkspaceSettings {
        calendar_integration: true,
        ..defaults()
    };
    let desktop = CalendarSource::Device(Platform::Desktop);
    let web = CalendarSource::Device(Platform::Web);
    let long = "x".repeat(121);

    check(&def, set(None, Some(&long), None), "status_text_too_long");
    check(&def, set(Some(Busy), Some("a\u{0}b"), None), "status_text_invalid");
    check(&no_text, set(None, Some("Lunch"), None), "status_text_disabled");
    check(&no_text, set(Some(Busy), Some("Lunch"), Some(60_000)), "status_text_disabled");
    check(&no_inv, set(Some(Invisible), None, None), "invisible_disabled");
    check(&no_inv, custom(DisplayedStatus::Offline), "invisible_disabled");
    check(&def, set(Some(Busy), None, Some(0)), "expiry_not_in_future");
    check(&def, set(Some(Busy), None, Some(-1)), "expiry_not_in_future");
    check(&def, set(None, None, Some(60_000)), "expiry_without_change");
    check(&def, set(None, None, None), "empty_status_change");
    check(&def, cmd::event("d0", Lock), "unsupported_event");
    check(&def, cmd::event("d2", Idle), "unsupported_event");
    check(&def, cmd::event("d1", Background), "unsupported_event");
    check(&cal, calendar("e", true, web), "unsupported_event");
    check(&def, calendar("e", true, desktop), "calendar_disabled");
    check(&cal, calendar("", true, desktop), "calendar_event_id_invalid");
    check(&cal, calendar("a\nb", false, desktop), "calendar_event_id_invalid");
    check(&def, cmd::event("nope", Activity), "unknown_device");
    check(&def, cmd::heartbeat("nope", at(30)), "unknown_device");
    check(&def, cmd::lost("nope", at(30)), "unknown_device");
}

#[test]
fn too_many_calendar_events_changes_nothing() {
    let mut sim = Sim::with_settings(WorkspaceSettings {
        calendar_integration: true,
        ..defaults()
    });
    sim.add_devices("desktop");
    for i in 0..MAX_CALENDAR_EVENTS {
        sim.apply(calendar(
            &format!("e{i}"),
            true,
            CalendarSource::Integration,
        ));
    }
    let before = sim.user.clone();
    let err = sim
        .try_apply(calendar("more", true, CalendarSource::Integration))
        .unwrap_err();
    assert_eq!(err.code(), "too_many_calendar_events");
    assert_eq!(sim.user, before);
}

#[test]
fn errors_outside_commands_have_codes() {
    assert_eq!(
        IdleTimeLimit::new(30).unwrap_err().code(),
        "idle_time_limit_too_low"
    );
    assert_eq!(
        CustomStatusName::parse("").unwrap_err().code(),
        "custom_status_name_invalid"
    );
    let mut registry = CustomStatusRegistry::default();
    let name = CustomStatusName::parse("Lunch").unwrap();
    registry
        .create(
            CustomStatusId::try_from("a").unwrap(),
            name.clone(),
            DisplayedStatus::Away,
            T0,
        )
        .unwrap();
    let before = registry.clone();
    let err = registry
        .create(
            CustomStatusId::try_from("b").unwrap(),
            name,
            DisplayedStatus::Busy,
            T0,
        )
        .unwrap_err();
    assert_eq!(err.code(), "custom_status_name_taken");
    assert_eq!(
        err.to_string(),
        "a custom status named 'Lunch' already exists"
    );
    assert_eq!(registry, before);
    let err = registry
        .delete(&CustomStatusId::try_from("zz").unwrap())
        .unwrap_err();
    assert_eq!(err.code(), "custom_status_not_found");
    let mut cap = CapState::new(1);
    cap.observe_count(2);
    let before = cap;
    assert_eq!(
        cap.request_enable().unwrap_err().code(),
        "broadcast_enable_refused"
    );
    assert_eq!(cap, before);
}

#[test]
fn error_codes_are_stable_and_unique() {
    let all = [
        (
            PresenceError::StatusTextTooLong { len: 121, max: 120 },
            "status_text_too_long",
        ),
        (PresenceError::StatusTextInvalid, "status_text_invalid"),
        (PresenceError::StatusTextDisabled, "status_text_disabled"),
        (
            PresenceError::IdleTimeLimitTooLow {
                seconds: 1,
                min: 60,
            },
            "idle_time_limit_too_low",
        ),
        (PresenceError::InvisibleDisabled, "invisible_disabled"),
        (
            PresenceError::UnsupportedEvent {
                platform: Platform::Web,
                event: DeviceEvent::Lock,
            },
            "unsupported_event",
        ),
        (
            PresenceError::UnsupportedCalendarSource {
                platform: Platform::Mobile,
            },
            "unsupported_event",
        ),
        (PresenceError::ExpiryNotInFuture, "expiry_not_in_future"),
        (
            PresenceError::ExpiryTooFar { max_days: 366 },
            "expiry_too_far",
        ),
        (
            PresenceError::IdleTimeLimitTooHigh {
                seconds: 86_401,
                max: 86_400,
            },
            "idle_time_limit_too_high",
        ),
        (PresenceError::ExpiryWithoutChange, "expiry_without_change"),
        (PresenceError::EmptyStatusChange, "empty_status_change"),
        (
            PresenceError::CustomStatusNameTaken { name: "x".into() },
            "custom_status_name_taken",
        ),
        (
            PresenceError::CustomStatusNameInvalid { reason: "empty" },
            "custom_status_name_invalid",
        ),
        (
            PresenceError::CustomStatusNotFound { id: "x".into() },
            "custom_status_not_found",
        ),
        (
            PresenceError::BroadcastEnableRefused { count: 3, cap: 2 },
            "broadcast_enable_refused",
        ),
        (PresenceError::CalendarDisabled, "calendar_disabled"),
        (
            PresenceError::UnknownDevice { device: "d".into() },
            "unknown_device",
        ),
        (
            PresenceError::CalendarEventIdInvalid { max: 256 },
            "calendar_event_id_invalid",
        ),
        (
            PresenceError::TooManyCalendarEvents { max: 64 },
            "too_many_calendar_events",
        ),
    ];
    let mut codes = BTreeSet::new();
    for (err, code) in &all {
        assert_eq!(err.code(), *code, "{err:?}");
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{code} is snake_case"
        );
        let message = err.to_string();
        assert!(
            !message.is_empty() && !message.ends_with('.'),
            "{message:?}"
        );
        codes.insert(*code);
    }
    // Two variants share `unsupported_event`; every other code is unique.
    assert_eq!(codes.len(), all.len() - 1);
}

//! The Outlook calendar integration (K1–K3).

mod common;

use common::{Sim, T0, dev, req, secs};
use presence_core::{
    CalendarSource, ChosenStatus, Command, CustomStatus, CustomStatusId, CustomStatusName,
    DeviceEvent, DisplayedStatus, MAX_CALENDAR_EVENT_ID_CHARS, MAX_CALENDAR_EVENTS, Platform,
    PreferencesUpdate, WorkspaceSettings,
};

use DisplayedStatus::{Away, Busy, Offline, Online};

fn calendar_on() -> WorkspaceSettings {
    WorkspaceSettings {
        calendar_integration: true,
        ..WorkspaceSettings::default()
    }
}

fn calendar(event_id: &str, busy: bool) -> Command {
    Command::Calendar {
        event_id: event_id.to_owned(),
        busy,
        source: CalendarSource::Device(Platform::Desktop),
    }
}

/// Runs `script` for a user in automatic mode with one desktop device and
/// the integration on, then checks what others see. Tokens: `+id` a busy
/// event starts, `-id` it ends, `=status` the user chooses a built-in
/// status, `text:words` the user sets only a text, `custom:type` the user
/// selects a custom status of that type.
fn check(script: &str, expected: DisplayedStatus) {
    let mut sim = Sim::with_settings(calendar_on());
    sim.add_devices("desktop");
    for token in script.split_whitespace() {
        if let Some(event_id) = token.strip_prefix('+') {
            sim.apply(calendar(event_id, true));
        } else if let Some(event_id) = token.strip_prefix('-') {
            sim.apply(calendar(event_id, false));
        } else if let Some(status) = token.strip_prefix('=') {
            let status = ChosenStatus::ALL
                .into_iter()
                .find(|s| s.as_str() == status)
                .expect("a chosen status");
            sim.choose(status);
        } else if let Some(text) = token.strip_prefix("text:") {
            sim.set(req(None, Some(text), None));
        } else if let Some(kind) = token.strip_prefix("custom:") {
            let status_type = DisplayedStatus::ALL
                .into_iter()
                .find(|s| s.as_str() == kind)
                .expect("a status type");
            sim.apply(Command::UseCustomStatus(CustomStatus {
                id: CustomStatusId::try_from("c0").unwrap(),
                name: CustomStatusName::parse("Custom").unwrap(),
                status_type,
                updated_at: T0,
            }));
        } else {
            panic!("unknown token {token:?}");
        }
        sim.advance_by(secs(60));
    }
    assert_eq!(sim.shown(), expected, "'{script}'");
    assert_eq!(
        sim.self_view().calendar_busy,
        sim.user.calendar_busy(),
        "'{script}'"
    );
}

/// Sends one calendar command to a user with one desktop device and checks
/// the error code, and that nothing changed.
fn check_rejected(settings: WorkspaceSettings, command: Command, code: &str) {
    let mut sim = Sim::with_settings(settings);
    sim.add_devices("desktop");
    let before = sim.user.clone();
    let shown = format!("{command:?}");
    let err = sim.try_apply(command).unwrap_err();
    assert_eq!(err.code(), code, "{shown}");
    assert_eq!(sim.user, before, "{shown}");
}

#[test]
fn k1_calendar_integration_is_off_by_default() {
    assert!(!WorkspaceSettings::default().calendar_integration);
    check_rejected(
        WorkspaceSettings::default(),
        calendar("standup", true),
        "calendar_disabled",
    );
    // Ends are always accepted, so switching it off never strands anyone.
    let mut sim = Sim::with_settings(calendar_on());
    sim.add_devices("desktop");
    sim.apply(calendar("standup", true));
    sim.settings.calendar_integration = false;
    sim.apply(calendar("standup", false));
    assert_eq!(sim.shown(), Online);
}

#[test]
fn k1_calendar_events_come_from_desktop_or_an_integration() {
    let from = |source| Command::Calendar {
        event_id: "standup".into(),
        busy: true,
        source,
    };
    check_rejected(
        calendar_on(),
        from(CalendarSource::Device(Platform::Web)),
        "unsupported_event",
    );
    check_rejected(
        calendar_on(),
        from(CalendarSource::Device(Platform::Mobile)),
        "unsupported_event",
    );
    for source in [
        CalendarSource::Device(Platform::Desktop),
        CalendarSource::Integration,
    ] {
        let mut sim = Sim::with_settings(calendar_on());
        sim.add_devices("web");
        sim.apply(from(source));
        assert_eq!(sim.shown(), Busy, "{source:?}");
    }
}

#[test]
fn k1_calendar_event_ids_are_validated() {
    let long = "e".repeat(MAX_CALENDAR_EVENT_ID_CHARS + 1);
    for bad in ["", "a\nb", "tab\t", long.as_str()] {
        check_rejected(
            calendar_on(),
            calendar(bad, true),
            "calendar_event_id_invalid",
        );
        check_rejected(
            calendar_on(),
            calendar(bad, false),
            "calendar_event_id_invalid",
        );
    }
    let mut sim = Sim::with_settings(calendar_on());
    sim.add_devices("desktop");
    sim.apply(calendar(&"e".repeat(MAX_CALENDAR_EVENT_ID_CHARS), true));
    assert_eq!(sim.shown(), Busy);
}

#[test]
fn k2_busy_event_sets_busy_and_restores_after() {
    check("", Online);
    check("+a", Busy);
    check("+a -a", Online);
    check("=away +a", Busy);
    check("=away +a -a", Away);
    check("=busy +a -a", Busy);
    check("text:Focus +a -a", Online);
    // The calendar does not override invisible.
    check("=invisible +a", Offline);
    check("=invisible +a -a", Offline);
}

#[test]
fn k2_user_choice_during_event_stands() {
    check("+a =away", Away);
    check("+a =away -a", Away);
    check("+a =online", Online);
    check("+a =online -a", Online);
    check("+a =invisible", Offline);
    check("+a =away -a +b", Busy);
    // Only choosing a status counts; a text alone is not a choice.
    check("+a text:Call", Busy);
    check("+a text:Call -a", Online);
    // Selecting a custom status is a choice too.
    check("+a custom:away", Away);
    check("+a custom:online", Online);
    check("+a custom:away -a", Away);
}

#[test]
fn k2_overlapping_events_keep_busy_until_the_last_ends() {
    check("+a +b", Busy);
    check("+a +b -a", Busy);
    check("+a +b -b", Busy);
    check("+a +b -a -b", Online);
    check("+a +b -b -a", Online);
    check("+a +a -a", Online);
    check("+a =away +b -a", Away);
    check("+a =away +b -a -b +c", Busy);
}

#[test]
fn k2_calendar_busy_shows_in_self_view() {
    let mut sim = Sim::with_settings(calendar_on());
    sim.add_devices("desktop");
    sim.apply(calendar("a", true));
    let view = sim.self_view();
    assert!(view.calendar_busy);
    assert_eq!(view.chosen, ChosenStatus::Online, "the choice is untouched");
    sim.apply(calendar("a", false));
    assert!(!sim.self_view().calendar_busy);
}

#[test]
fn k2_concurrent_events_are_bounded() {
    let mut sim = Sim::with_settings(calendar_on());
    sim.add_devices("desktop");
    for i in 0..MAX_CALENDAR_EVENTS {
        sim.apply(calendar(&format!("e{i}"), true));
    }
    let before = sim.user.clone();
    let err = sim.try_apply(calendar("one-too-many", true)).unwrap_err();
    assert_eq!(err.code(), "too_many_calendar_events");
    assert_eq!(sim.user, before);
    // A repeated start of a known event is not a new one.
    assert!(sim.try_apply(calendar("e0", true)).is_ok());
}

#[test]
fn k3_ending_an_unknown_event_is_a_no_op() {
    let mut sim = Sim::with_settings(calendar_on());
    sim.add_devices("desktop");
    let before = sim.user.clone();
    let outcome = sim.apply(calendar("video-call", false));
    assert!(!outcome.changed());
    assert!(!outcome.durable_changed);
    assert_eq!(sim.user, before);
}

#[test]
fn k3_only_busy_calendar_events_touch_calendar_claims() {
    let mut sim = Sim::with_settings(calendar_on());
    sim.add_devices("desktop mobile");
    sim.apply(calendar("standup", true));
    let claims = sim.user.durable.calendar.busy_events.clone();
    let commands = [
        Command::Connect {
            device: dev("d9"),
            platform: Platform::Web,
        },
        Command::DeviceEvent {
            device: dev("d0"),
            event: DeviceEvent::Lock,
        },
        Command::DeviceEvent {
            device: dev("d1"),
            event: DeviceEvent::Background,
        },
        Command::Heartbeat {
            device: dev("d0"),
            deadline: common::at(1000),
        },
        Command::SetStatus(req(None, Some("On a call"), None)),
        Command::SetPreferences(PreferencesUpdate {
            auto_away: Some(false),
            idle_time_limit: None,
        }),
        Command::CustomStatusDeleted(CustomStatusId::try_from("c0").unwrap()),
        Command::Disconnect {
            device: dev("d9"),
            how: presence_core::Disconnect::Clean,
        },
        calendar("unrelated-call", false),
    ];
    for command in commands {
        let shown = format!("{command:?}");
        sim.apply(command);
        assert_eq!(sim.user.durable.calendar.busy_events, claims, "{shown}");
        assert_eq!(sim.shown(), Busy, "{shown}");
    }
    sim.advance_by(secs(100));
    assert_eq!(sim.user.durable.calendar.busy_events, claims);
}

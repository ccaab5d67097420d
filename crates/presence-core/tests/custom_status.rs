//! Admin-defined custom statuses (C1–C3): the registry, selecting one,
//! and what renames, remaps and deletes do to the users who use it.

mod common;

use common::{Sim, T0, at, req};
use presence_core::{
    ChosenStatus, Command, CustomStatus, CustomStatusId, CustomStatusName, CustomStatusRegistry,
    DisplayedStatus, MAX_CUSTOM_STATUS_NAME_CHARS, SelfStatus,
};

use ChosenStatus::{Away as ChooseAway, Busy as ChooseBusy, Invisible, Online as Auto};
use DisplayedStatus::{Away, Busy, Offline, Online};

fn id(s: &str) -> CustomStatusId {
    CustomStatusId::try_from(s).unwrap()
}

fn name(s: &str) -> CustomStatusName {
    CustomStatusName::parse(s).unwrap()
}

/// A registry holding `names`, with ids `c0`, `c1`, … in order.
fn registry(names: &[&str]) -> CustomStatusRegistry {
    let mut registry = CustomStatusRegistry::default();
    for (i, n) in names.iter().enumerate() {
        registry
            .create(id(&format!("c{i}")), name(n), Away, T0)
            .unwrap();
    }
    registry
}

/// Validates a custom status name (C1).
fn check_name(raw: &str, expected: Result<&str, &str>) {
    match (CustomStatusName::parse(raw), expected) {
        (Ok(parsed), Ok(stored)) => assert_eq!(parsed.as_str(), stored, "{raw:?}"),
        (Err(err), Err(code)) => assert_eq!(err.code(), code, "{raw:?}"),
        (got, _) => panic!("{raw:?}: unexpected {got:?}"),
    }
}

/// Creates `new` in a registry already holding `existing` (C1: names are
/// unique ignoring case).
fn check_create(existing: &[&str], new: &str, expected: Result<(), &str>) {
    let mut registry = registry(existing);
    let result = registry.create(id("new"), name(new), Busy, at(1));
    match expected {
        Ok(()) => {
            let created = result.unwrap_or_else(|e| panic!("{new:?} after {existing:?}: {e}"));
            assert_eq!(created.name.as_str(), new);
            assert_eq!(registry.get(&id("new")).unwrap(), &created);
            assert_eq!(registry.len(), existing.len() + 1);
        }
        Err(code) => {
            assert_eq!(
                result.unwrap_err().code(),
                code,
                "{new:?} after {existing:?}"
            );
            assert_eq!(registry.len(), existing.len());
        }
    }
}

/// Selects a custom status of `status_type` with one web device connected
/// (C2): the presence follows the mapped type, the text is the name.
fn check_select(status_type: DisplayedStatus, chosen: ChosenStatus, shown: DisplayedStatus) {
    let mut sim = Sim::with_devices("web");
    let custom = CustomStatus {
        id: id("c0"),
        name: name("Working Remotely"),
        status_type,
        updated_at: T0,
    };
    let outcome = sim.apply(Command::UseCustomStatus(custom));
    let view = sim.self_view();
    assert_eq!(view.chosen, chosen, "{status_type}");
    assert_eq!(view.custom_status, Some(id("c0")));
    assert_eq!(sim.own_text().as_deref(), Some("Working Remotely"));
    assert_eq!(outcome.public.status, shown, "{status_type}");
    let public_text = (shown != Offline).then(|| "Working Remotely".to_owned());
    assert_eq!(sim.shown_text(), public_text, "{status_type}");
    assert!(outcome.durable_changed);
}

/// A user selects custom status `c0` ("In a Meeting", busy), the admin
/// updates it with `new_name`/`new_type`; checks the user's chosen status
/// and text afterwards (C3).
fn check_update(
    new_name: Option<&str>,
    new_type: Option<DisplayedStatus>,
    expected: (ChosenStatus, &str),
) {
    let mut registry = CustomStatusRegistry::default();
    let meeting = registry
        .create(id("c0"), name("In a Meeting"), Busy, T0)
        .unwrap();
    let mut sim = Sim::with_devices("web");
    sim.apply(Command::UseCustomStatus(meeting));
    let updated = registry
        .update(&id("c0"), new_name.map(name), new_type, at(5))
        .unwrap();
    assert_eq!(updated.updated_at, at(5));
    assert!(sim.user.uses_custom_status(&id("c0")));
    sim.apply(Command::CustomStatusChanged(updated));
    let view = sim.self_view();
    let got = (view.chosen, sim.own_text().unwrap_or_default());
    assert_eq!(
        (got.0, got.1.as_str()),
        expected,
        "{new_name:?} {new_type:?}"
    );
    assert_eq!(view.custom_status, Some(id("c0")), "still selected");
}

#[test]
fn c1_custom_status_name_validation() {
    let invalid = Err("custom_status_name_invalid");
    check_name("On Vacation", Ok("On Vacation"));
    check_name("  In a Meeting  ", Ok("In a Meeting"));
    check_name("🏖️ Beach", Ok("🏖️ Beach"));
    check_name("x", Ok("x"));
    let n120 = "n".repeat(MAX_CUSTOM_STATUS_NAME_CHARS);
    check_name(&n120, Ok(&n120));
    check_name(&"😀".repeat(120), Ok(&"😀".repeat(120)));
    check_name(&"n".repeat(121), invalid);
    check_name("", invalid);
    check_name("   ", invalid);
    check_name("a\nb", invalid);
    check_name("<b>bold</b>", invalid);
    check_name("Tom & Jerry", invalid);
    check_name("\"quoted\"", invalid);
    check_name("it's", invalid);
    check_name("a > b", invalid);
}

#[test]
fn c1_names_refuse_bidi_overrides_and_invisible_format_characters() {
    let invalid = Err("custom_status_name_invalid");
    for c in [
        '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{200B}', '\u{200C}', '\u{200D}',
        '\u{2060}', '\u{FEFF}', '\u{00AD}',
    ] {
        check_name(&format!("On{c} Vacation"), invalid);
        check_name(&format!("{c}Lunch"), invalid);
    }
    let err = CustomStatusName::parse("Lunch\u{202E}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "custom status name is invalid: the name contains bidirectional overrides or \
         invisible format characters"
    );
    check_name("👩🏽‍💻 Coding", Ok("👩🏽‍💻 Coding"));
}

#[test]
fn c1_names_are_unique_ignoring_case() {
    let taken = Err("custom_status_name_taken");
    check_create(&[], "On Vacation", Ok(()));
    check_create(&["On Vacation"], "In a Meeting", Ok(()));
    check_create(&["On Vacation"], "On Vacation", taken);
    check_create(&["On Vacation"], "on vacation", taken);
    check_create(&["On Vacation"], "ON VACATION", taken);
    check_create(&["On Vacation"], "On Vacation!", Ok(()));
    check_create(&["ÉTÉ"], "été", taken);
    check_create(&["On Vacation", "In a Meeting"], "in a MEETING", taken);
}

#[test]
fn c1_create_list_update_delete() {
    let mut registry = registry(&["zeta", "Alpha", "beta"]);
    assert!(!registry.is_empty());
    let listed: Vec<&str> = registry.list().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        listed,
        ["Alpha", "beta", "zeta"],
        "ordered by name, ignoring case"
    );

    // Renaming to another status's name is refused, to one's own in
    // another case is fine.
    let err = registry
        .update(&id("c0"), Some(name("ALPHA")), None, at(1))
        .unwrap_err();
    assert_eq!(err.code(), "custom_status_name_taken");
    let renamed = registry
        .update(&id("c0"), Some(name("Zeta")), Some(Busy), at(2))
        .unwrap();
    assert_eq!((renamed.name.as_str(), renamed.status_type), ("Zeta", Busy));
    assert_eq!(registry.get(&id("c0")).unwrap(), &renamed);
    // An update with nothing in it still touches the timestamp.
    let touched = registry.update(&id("c0"), None, None, at(3)).unwrap();
    assert_eq!((touched.name.as_str(), touched.updated_at), ("Zeta", at(3)));

    let deleted = registry.delete(&id("c1")).unwrap();
    assert_eq!(deleted.name.as_str(), "Alpha");
    assert_eq!(registry.len(), 2);
    // The name is free again.
    registry
        .create(id("c9"), name("alpha"), Online, at(4))
        .unwrap();

    for result in [
        registry.get(&id("nope")).map(|_| ()),
        registry.update(&id("nope"), None, None, at(5)).map(|_| ()),
        registry.delete(&id("nope")).map(|_| ()),
    ] {
        assert_eq!(result.unwrap_err().code(), "custom_status_not_found");
    }
}

#[test]
fn c1_registry_round_trips_through_json() {
    let registry = registry(&["On Vacation", "In a Meeting"]);
    let json = serde_json::to_string(&registry).unwrap();
    let back: CustomStatusRegistry = serde_json::from_str(&json).unwrap();
    assert_eq!(back, registry);
    let rebuilt = CustomStatusRegistry::from_statuses(registry.list().into_iter().cloned());
    assert_eq!(rebuilt, registry);
}

#[test]
fn c2_selecting_a_custom_status_sets_presence_and_text() {
    check_select(Online, Auto, Online);
    check_select(Away, ChooseAway, Away);
    check_select(Busy, ChooseBusy, Busy);
    check_select(Offline, Invisible, Offline);
}

#[test]
fn c2_offline_custom_status_is_invisible_for_the_user() {
    let mut sim = Sim::with_devices("web");
    sim.apply(Command::UseCustomStatus(CustomStatus {
        id: id("c0"),
        name: name("Do not disturb me at all"),
        status_type: Offline,
        updated_at: T0,
    }));
    assert_eq!(sim.self_status(), SelfStatus::Invisible);
    assert!(!sim.user.counts_online(&sim.settings));
}

#[test]
fn c2_online_custom_status_stays_automatic() {
    let mut sim = Sim::with_devices("web:idle");
    sim.apply(Command::UseCustomStatus(CustomStatus {
        id: id("c0"),
        name: name("Working Remotely"),
        status_type: Online,
        updated_at: T0,
    }));
    assert_eq!(sim.shown(), Away, "the idle device still counts");
    assert_eq!(sim.shown_text().as_deref(), Some("Working Remotely"));
}

#[test]
fn c2_choosing_anything_else_drops_the_custom_status() {
    let custom = CustomStatus {
        id: id("c0"),
        name: name("On Vacation"),
        status_type: Away,
        updated_at: T0,
    };
    let mut sim = Sim::with_devices("web");
    sim.apply(Command::UseCustomStatus(custom.clone()));
    sim.choose(ChooseBusy);
    assert_eq!(sim.self_view().custom_status, None);
    assert_eq!(sim.own_text(), None);

    sim.apply(Command::UseCustomStatus(custom));
    sim.set(req(None, Some("Back Monday"), None));
    assert_eq!(sim.self_view().custom_status, None);
    assert_eq!(sim.self_view().chosen, ChooseAway);
}

#[test]
fn c3_rename_and_remap_update_every_user() {
    check_update(Some("Meeting"), None, (ChooseBusy, "Meeting"));
    check_update(None, Some(Away), (ChooseAway, "In a Meeting"));
    check_update(None, Some(Online), (Auto, "In a Meeting"));
    check_update(None, Some(Offline), (Invisible, "In a Meeting"));
    check_update(Some("Call"), Some(Away), (ChooseAway, "Call"));
    check_update(Some("in a meeting"), None, (ChooseBusy, "in a meeting"));
    check_update(None, None, (ChooseBusy, "In a Meeting"));
}

#[test]
fn c3_update_reaches_a_state_an_expiry_will_restore() {
    let custom = CustomStatus {
        id: id("c0"),
        name: name("On Vacation"),
        status_type: Away,
        updated_at: T0,
    };
    let mut sim = Sim::with_devices("web");
    sim.apply(Command::UseCustomStatus(custom.clone()));
    sim.set(req(Some(ChooseBusy), Some("Quick call"), Some(at(60))));
    assert!(sim.user.uses_custom_status(&id("c0")));
    sim.apply(Command::CustomStatusChanged(CustomStatus {
        name: name("Vacation"),
        status_type: Busy,
        ..custom
    }));
    assert_eq!(
        sim.own_text().as_deref(),
        Some("Quick call"),
        "the top layer is not it"
    );
    sim.advance_to(at(60));
    assert_eq!(sim.self_view().chosen, ChooseBusy);
    assert_eq!(sim.own_text().as_deref(), Some("Vacation"));
}

#[test]
fn c3_other_users_are_untouched() {
    let mut sim = Sim::with_devices("web");
    sim.set(req(Some(ChooseAway), Some("In a Meeting"), None));
    let before = sim.user.clone();
    let outcome = sim.apply(Command::CustomStatusChanged(CustomStatus {
        id: id("c0"),
        name: name("Meeting"),
        status_type: Busy,
        updated_at: T0,
    }));
    assert!(!outcome.changed() && !outcome.durable_changed);
    let outcome = sim.apply(Command::CustomStatusDeleted(id("c0")));
    assert!(!outcome.changed() && !outcome.durable_changed);
    assert_eq!(sim.user, before);
}

#[test]
fn c3_delete_leaves_presence_and_name_as_plain_text() {
    let mut registry = registry(&["On Vacation"]);
    let vacation = registry.get(&id("c0")).unwrap().clone();
    let mut sim = Sim::with_devices("web");
    sim.apply(Command::UseCustomStatus(vacation));
    let deleted = registry.delete(&id("c0")).unwrap();
    let outcome = sim.apply(Command::CustomStatusDeleted(deleted.id));
    assert!(outcome.durable_changed);
    let view = sim.self_view();
    assert_eq!(view.custom_status, None);
    assert_eq!(view.chosen, ChooseAway);
    assert_eq!(sim.shown(), Away);
    assert_eq!(sim.shown_text().as_deref(), Some("On Vacation"));
    assert!(!sim.user.uses_custom_status(&id("c0")));
}

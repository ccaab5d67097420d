//! Status text (T1–T5) and expiries (T6).

mod common;

use common::{Sim, T0, at, req};
use presence_core::{
    ChosenStatus, Command, CustomStatus, CustomStatusId, CustomStatusName, DisplayedStatus,
    MAX_EXPIRY_DAYS, MAX_RESTORE_DEPTH, MAX_STATUS_TEXT_CHARS, SelfStatus, StatusLayer, StatusText,
    WorkspaceSettings,
};

use ChosenStatus::{Away as ChooseAway, Busy as ChooseBusy, Invisible, Online as Auto};
use DisplayedStatus::{Away, Busy, Offline, Online};

/// Parses `raw` as a status text: `Ok(Some(text))` for the stored text,
/// `Ok(None)` for "no text", `Err(code)` for a rejection (T1). Setting it
/// through `SetStatus` must agree.
fn check_text(raw: &str, expected: Result<Option<&str>, &str>) {
    let parsed = StatusText::parse(raw);
    let mut sim = Sim::with_devices("web");
    let before = sim.user.clone();
    let applied = sim.try_set(req(None, Some(raw), None));
    match expected {
        Ok(text) => {
            let parsed = parsed.unwrap_or_else(|e| panic!("{raw:?} rejected: {e}"));
            assert_eq!(parsed.as_ref().map(StatusText::as_str), text, "{raw:?}");
            assert!(applied.is_ok(), "{raw:?}");
            assert_eq!(sim.shown_text().as_deref(), text, "{raw:?}");
        }
        Err(code) => {
            assert_eq!(parsed.unwrap_err().code(), code, "{raw:?}");
            assert_eq!(applied.unwrap_err().code(), code, "{raw:?}");
            assert_eq!(sim.user, before, "{raw:?}: never silently truncated");
        }
    }
}

/// Chooses `chosen` with the text "Out for lunch" and the devices of
/// `spec`; checks whether others see the text (T3). The user always does.
fn check_visibility(chosen: ChosenStatus, spec: &str, others_see_text: bool) {
    let mut sim = Sim::with_devices(spec);
    sim.set(req(Some(chosen), Some("Out for lunch"), None));
    let expected = others_see_text.then(|| "Out for lunch".to_owned());
    assert_eq!(
        sim.shown_text(),
        expected,
        "chosen {chosen}, devices '{spec}'"
    );
    assert_eq!(sim.public().status == Offline, !others_see_text);
    assert_eq!(sim.own_text().as_deref(), Some("Out for lunch"));
}

/// Starts from the state `from`, sends `request` and checks the resulting
/// chosen status and text against `to` (T2, T4). Each is written
/// `status|text`: the status is a chosen status name, or `-` for none in a
/// request; without `|` there is no text (in a request: the field is left
/// out), and `busy|` is a request that clears the text.
fn check_choice(from: &str, request: &str, to: &str) {
    let mut sim = Sim::with_devices("web");
    let (status, text) = parse_choice(from);
    sim.set(req(status, text, None));
    let (status, text) = parse_choice(request);
    sim.set(req(status, text, None));
    let view = sim.self_view();
    let got = match &view.text {
        Some(text) => format!("{}|{}", view.chosen, text.as_str()),
        None => view.chosen.to_string(),
    };
    assert_eq!(got, to, "from {from:?}, request {request:?}");
}

/// Reads `status|text` (see [`check_choice`]).
fn parse_choice(s: &str) -> (Option<ChosenStatus>, Option<&str>) {
    let (status, text) = match s.split_once('|') {
        Some((status, text)) => (status, Some(text)),
        None => (s, None),
    };
    if status == "-" {
        return (None, text);
    }
    let status = ChosenStatus::ALL
        .into_iter()
        .find(|c| c.as_str() == status)
        .unwrap_or_else(|| panic!("bad status in {s:?}"));
    (Some(status), text)
}

/// Sends `request` with `allow_custom_status_text = false` (T5).
fn check_text_disabled(
    (status, text): (Option<ChosenStatus>, Option<&str>),
    expected: Result<Option<&str>, &str>,
) {
    let mut sim = Sim::with_settings(WorkspaceSettings {
        allow_custom_status_text: false,
        ..WorkspaceSettings::default()
    });
    sim.add_devices("web");
    let before = sim.user.clone();
    let result = sim.try_set(req(status, text, None));
    match expected {
        Ok(own) => {
            assert!(result.is_ok(), "{status:?} {text:?}: {result:?}");
            assert_eq!(sim.own_text().as_deref(), own);
        }
        Err(code) => {
            assert_eq!(result.unwrap_err().code(), code, "{status:?} {text:?}");
            assert_eq!(sim.user, before);
        }
    }
}

/// A status request expiring `offset_ms` after now (T6).
fn check_expiry_time(offset_ms: i64, expected: Result<(), &str>) {
    let mut sim = Sim::with_devices("web");
    let expires_at = presence_core::Timestamp::from_millis(sim.now.as_millis() + offset_ms);
    let result = sim.try_set(req(Some(ChooseBusy), None, Some(expires_at)));
    match expected {
        Ok(()) => {
            assert!(result.is_ok(), "{offset_ms} ms: {result:?}");
            assert_eq!(sim.self_view().expires_at, Some(expires_at));
        }
        Err(code) => {
            assert_eq!(result.unwrap_err().code(), code, "{offset_ms} ms");
            assert_eq!(sim.self_view().chosen, Auto);
        }
    }
}

fn repeat(s: &str, n: usize) -> String {
    s.repeat(n)
}

#[test]
fn t1_status_text_validation() {
    let too_long = Err("status_text_too_long");
    let invalid = Err("status_text_invalid");
    check_text("Out for lunch", Ok(Some("Out for lunch")));
    check_text("  padded  ", Ok(Some("padded")));
    check_text("\u{3000}wide space\u{a0}", Ok(Some("wide space")));
    check_text(" \n trimmed edges \t", Ok(Some("trimmed edges")));
    check_text("", Ok(None));
    check_text("    ", Ok(None));
    check_text("x", Ok(Some("x")));
    // Exactly 120 Unicode scalar values is fine, 121 is an error.
    let a120 = repeat("a", 120);
    check_text(&a120, Ok(Some(&a120)));
    check_text(&repeat("a", 121), too_long);
    check_text(&format!("  {a120}  "), Ok(Some(&a120)));
    check_text(&repeat("😀", 120), Ok(Some(&repeat("😀", 120))));
    check_text(&repeat("😀", 121), too_long);
    check_text(&repeat("é", 120), Ok(Some(&repeat("é", 120))));
    // "e" + combining acute accent: one grapheme, two scalar values.
    check_text(&repeat("e\u{301}", 60), Ok(Some(&repeat("e\u{301}", 60))));
    check_text(&format!("{}e", repeat("e\u{301}", 60)), too_long);
    // ZWJ sequences are allowed; each counts by its scalar values (7 here).
    check_text("👨‍👩‍👧‍👦", Ok(Some("👨‍👩‍👧‍👦")));
    check_text("🏳️‍🌈 Pride", Ok(Some("🏳️‍🌈 Pride")));
    check_text("👩🏽‍💻 coding", Ok(Some("👩🏽‍💻 coding")));
    check_text(&repeat("👨‍👩‍👧‍👦", 17), Ok(Some(&repeat("👨‍👩‍👧‍👦", 17))));
    check_text(&repeat("👨‍👩‍👧‍👦", 18), too_long);
    check_text("مرحبا بالعالم", Ok(Some("مرحبا بالعالم")));
    check_text("午餐中 🍜", Ok(Some("午餐中 🍜")));
    // Control characters inside the text are rejected.
    check_text("line\nbreak", invalid);
    check_text("tab\tinside", invalid);
    check_text("nul\0byte", invalid);
    check_text("bell\u{7}", invalid);
    check_text("del\u{7f}x", invalid);
    check_text("next\u{85}line", invalid);
    check_text("esc\u{1b}[31mred", invalid);
    // A control character wins over the length check.
    check_text(&format!("{a120}\n{a120}"), invalid);
}

#[test]
fn t1_bidi_overrides_and_invisible_format_characters_are_refused() {
    let invalid = Err("status_text_invalid");
    // Bidirectional embeddings, overrides and isolates (Trojan Source).
    for c in ['\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}'] {
        check_text(&format!("admin{c}txt.exe"), invalid);
    }
    for c in ['\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'] {
        check_text(&format!("in{c}side"), invalid);
    }
    // Invisible format characters: zero-width space/joiners between ASCII
    // letters, marks, word joiner, BOM, soft hyphen, fillers, separators.
    for c in [
        '\u{200B}',
        '\u{200C}',
        '\u{200D}',
        '\u{200E}',
        '\u{200F}',
        '\u{2060}',
        '\u{2061}',
        '\u{2064}',
        '\u{206F}',
        '\u{FEFF}',
        '\u{00AD}',
        '\u{034F}',
        '\u{061C}',
        '\u{115F}',
        '\u{3164}',
        '\u{FFA0}',
        '\u{180E}',
        '\u{2028}',
        '\u{2029}',
        '\u{FFF9}',
        '\u{1D173}',
        '\u{E0001}',
    ] {
        check_text(&format!("in{c}side"), invalid);
        if !c.is_whitespace() {
            // (Line and paragraph separators at the edges are trimmed.)
            check_text(&format!("{c}edge"), invalid);
            check_text(&format!("edge{c}"), invalid);
        }
    }
    // Only invisible characters: refused, not "no text" (they do not trim).
    check_text("\u{200B}\u{200B}", invalid);
    check_text("\u{FEFF}", invalid);
    // A joiner with an emoji on one side only is not a ZWJ sequence.
    check_text("😀\u{200D}a", invalid);
    check_text("a\u{200D}😀", invalid);
    check_text("😀\u{200D}", invalid);
    // Tag characters outside a flag tag sequence.
    check_text("x\u{E0067}\u{E007F}", invalid);
}

#[test]
fn t1_joiners_are_allowed_where_scripts_and_emoji_need_them() {
    // Emoji ZWJ sequences, with skin tones and the emoji presentation
    // selector, and the flag of Scotland (a tag sequence).
    for ok in [
        "👨‍👩‍👧‍👦",
        "🏳️‍🌈 Pride",
        "👩🏽‍💻 coding",
        "👁️‍🗨️",
        "❤️‍🔥",
        "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F} home",
        // Persian uses ZWNJ between letters; Devanagari uses ZWJ after a
        // virama.
        "می\u{200C}خواهم",
        "क्\u{200D}ष",
        // Variation selectors on symbols are visible presentation choices.
        "☎️ on a call",
    ] {
        check_text(ok, Ok(Some(ok)));
    }
}

#[test]
fn t1_too_long_error_names_the_lengths() {
    let err = StatusText::parse(&repeat("😀", 121)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("status text is 121 characters long; the limit is {MAX_STATUS_TEXT_CHARS}")
    );
}

#[test]
fn t1_stored_text_is_validated_when_read() {
    let ok: StatusText = serde_json::from_str("\"Deep work\"").unwrap();
    assert_eq!(ok.as_str(), "Deep work");
    assert!(serde_json::from_str::<StatusText>("\"\"").is_err());
    assert!(serde_json::from_str::<StatusText>("\"a\\nb\"").is_err());
    let long = format!("\"{}\"", repeat("a", 121));
    assert!(serde_json::from_str::<StatusText>(&long).is_err());
}

#[test]
fn t2_text_is_independent_of_presence() {
    check_choice("online", "-|Out for lunch", "online|Out for lunch");
    check_choice("online", "busy|Deep work mode", "busy|Deep work mode");
    check_choice("away|Lunch", "-|Still lunch", "away|Still lunch");
    let mut sim = Sim::with_devices("web");
    sim.set(req(Some(Auto), Some("Out for lunch"), None));
    assert_eq!(sim.shown(), Online);
    assert_eq!(sim.shown_text().as_deref(), Some("Out for lunch"));
    sim.event("d0", presence_core::DeviceEvent::Idle);
    assert_eq!(sim.shown(), Away);
    assert_eq!(sim.shown_text().as_deref(), Some("Out for lunch"));
}

#[test]
fn t3_text_hidden_from_others_while_offline() {
    check_visibility(Auto, "web", true);
    check_visibility(Auto, "web:idle", true);
    check_visibility(ChooseAway, "web", true);
    check_visibility(ChooseBusy, "desktop:lock", true);
    check_visibility(Auto, "", false);
    check_visibility(ChooseBusy, "", false);
    check_visibility(ChooseBusy, "web:gone", false);
    check_visibility(Invisible, "web", false);
    check_visibility(Invisible, "web desktop mobile", false);
    check_visibility(Invisible, "", false);
}

#[test]
fn t3_self_view_keeps_text_while_invisible() {
    let mut sim = Sim::with_devices("web");
    sim.set(req(Some(Invisible), Some("Heads down"), None));
    assert_eq!(sim.self_status(), SelfStatus::Invisible);
    assert_eq!(sim.own_text().as_deref(), Some("Heads down"));
    assert_eq!(sim.shown_text(), None);
    sim.choose(Auto);
    sim.set(req(None, Some("Back"), None));
    assert_eq!(sim.shown_text().as_deref(), Some("Back"));
}

#[test]
fn t4_choosing_a_status_clears_the_text() {
    check_choice("busy|Meeting", "online", "online");
    check_choice("busy|Meeting", "away", "away");
    check_choice("busy|Meeting", "busy", "busy");
    check_choice("busy|Meeting", "invisible", "invisible");
    check_choice("online|Lunch", "online", "online");
    // ... unless the same request sets one.
    check_choice("busy|Meeting", "away|Lunch", "away|Lunch");
    check_choice("busy|Meeting", "busy|Call", "busy|Call");
    check_choice("busy|Meeting", "away|", "away");
    check_choice("busy|Meeting", "away|  Coffee  ", "away|Coffee");
    // Setting only a text keeps the status.
    check_choice("busy|Meeting", "-|Call", "busy|Call");
    check_choice("busy|Meeting", "-|  Brb  ", "busy|Brb");
    check_choice("busy|Meeting", "-|", "busy");
    check_choice("invisible", "-|Hidden", "invisible|Hidden");
    check_choice("online|x", "-|y", "online|y");
    check_choice("away", "-|🏳️‍🌈", "away|🏳️‍🌈");
}

#[test]
fn t4_empty_request_is_rejected() {
    let mut sim = Sim::with_devices("web");
    let err = sim.try_set(req(None, None, None)).unwrap_err();
    assert_eq!(err.code(), "empty_status_change");
}

#[test]
fn t5_custom_text_disabled() {
    let disabled = Err("status_text_disabled");
    check_text_disabled((None, Some("Out for lunch")), disabled);
    check_text_disabled((Some(ChooseBusy), Some("Deep work")), disabled);
    check_text_disabled((Some(ChooseBusy), None), Ok(None));
    check_text_disabled((None, Some("")), Ok(None));
    check_text_disabled((Some(ChooseAway), Some("   ")), Ok(None));
    // An invalid text is reported as invalid, whatever the setting.
    check_text_disabled((None, Some("a\nb")), Err("status_text_invalid"));
}

#[test]
fn t5_custom_statuses_still_set_their_name() {
    let mut sim = Sim::with_settings(WorkspaceSettings {
        allow_custom_status_text: false,
        ..WorkspaceSettings::default()
    });
    sim.add_devices("web");
    sim.apply(Command::UseCustomStatus(CustomStatus {
        id: CustomStatusId::try_from("meeting").unwrap(),
        name: CustomStatusName::parse("In a Meeting").unwrap(),
        status_type: DisplayedStatus::Busy,
        updated_at: T0,
    }));
    assert_eq!(sim.shown(), Busy);
    assert_eq!(sim.shown_text().as_deref(), Some("In a Meeting"));
}

#[test]
fn t6_expiry_must_be_in_the_future() {
    check_expiry_time(-3_600_000, Err("expiry_not_in_future"));
    check_expiry_time(-1, Err("expiry_not_in_future"));
    check_expiry_time(0, Err("expiry_not_in_future"));
    check_expiry_time(1, Ok(()));
    check_expiry_time(3_600_000, Ok(()));
}

#[test]
fn t6_expiry_at_most_a_year_ahead() {
    let day = 24 * 3_600_000_i64;
    let max = MAX_EXPIRY_DAYS as i64 * day;
    check_expiry_time(30 * day, Ok(()));
    check_expiry_time(max, Ok(()));
    check_expiry_time(max + 1, Err("expiry_too_far"));
    // Year 9999 (the F8–F12 probe) is refused.
    check_expiry_time(253_402_300_799_999 - T0.as_millis(), Err("expiry_too_far"));
    let now = presence_core::Timestamp::from_millis(0);
    let err = presence_core::Expiry::new(presence_core::Timestamp::from_millis(max + 1), now)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("expires_at must be at most {MAX_EXPIRY_DAYS} days in the future")
    );
}

#[test]
fn t6_expiry_needs_something_to_expire() {
    let mut sim = Sim::with_devices("web");
    let err = sim.try_set(req(None, None, Some(at(60)))).unwrap_err();
    assert_eq!(err.code(), "expiry_without_change");
}

#[test]
fn t6_at_expiry_the_previous_state_comes_back() {
    let mut sim = Sim::with_devices("web");
    sim.set(req(Some(ChooseAway), Some("Lunch"), None));
    let before = sim.user.durable.status.clone();
    sim.set(req(Some(ChooseBusy), Some("Meeting"), Some(at(60))));
    assert_eq!(sim.next_deadline(), Some(at(60)), "the expiry is announced");
    assert_eq!(sim.self_view().expires_at, Some(at(60)));
    let outcome = sim.advance_to(at(59));
    assert!(!outcome.changed());
    assert_eq!(sim.shown(), Busy);
    let outcome = sim.advance_to(at(60));
    assert!(outcome.public_changed && outcome.durable_changed);
    assert_eq!(sim.user.durable.status, before);
    assert_eq!(sim.shown(), Away);
    assert_eq!(sim.shown_text().as_deref(), Some("Lunch"));
    assert_eq!(sim.self_view().expires_at, None);
    assert_eq!(sim.next_deadline(), None);
}

#[test]
fn t6_text_only_expiry_keeps_the_status() {
    let mut sim = Sim::with_devices("web");
    sim.choose(ChooseBusy);
    sim.set(req(None, Some("Back at 3"), Some(at(60))));
    assert_eq!(sim.shown(), Busy);
    sim.advance_to(at(61));
    assert_eq!(sim.shown(), Busy);
    assert_eq!(sim.shown_text(), None);
}

#[test]
fn t6_nested_expiries_unwind_in_order() {
    let mut sim = Sim::with_devices("web");
    sim.set(req(Some(Auto), Some("Base"), None));
    let base = sim.user.durable.status.clone();
    sim.set(req(Some(ChooseBusy), Some("Meeting"), Some(at(100))));
    let meeting = sim.user.durable.status.clone();
    sim.set(req(Some(ChooseAway), Some("Coffee"), Some(at(50))));
    assert_eq!(sim.next_deadline(), Some(at(50)));
    sim.advance_to(at(50));
    assert_eq!(sim.user.durable.status, meeting);
    assert_eq!(sim.next_deadline(), Some(at(100)));
    sim.advance_to(at(100));
    assert_eq!(sim.user.durable.status, base);
}

#[test]
fn t6_nested_expiry_outliving_the_one_below_skips_it() {
    let mut sim = Sim::with_devices("web");
    let base = sim.user.durable.status.clone();
    sim.set(req(Some(ChooseBusy), Some("Meeting"), Some(at(50))));
    sim.set(req(Some(ChooseAway), Some("Travel"), Some(at(100))));
    sim.advance_to(at(100));
    assert_eq!(
        sim.user.durable.status, base,
        "the meeting ended at 50 anyway"
    );
}

#[test]
fn t6_several_expiries_passing_at_once_all_unwind() {
    let mut sim = Sim::with_devices("web");
    let base = sim.user.durable.status.clone();
    sim.set(req(Some(ChooseBusy), None, Some(at(100))));
    sim.set(req(Some(ChooseAway), None, Some(at(50))));
    sim.set(req(Some(Invisible), None, Some(at(10))));
    sim.advance_to(at(1000));
    assert_eq!(sim.user.durable.status, base);
    assert_eq!(sim.shown(), Online);
}

#[test]
fn t6_expiry_runs_while_offline() {
    let mut sim = Sim::with_devices("web");
    sim.set(req(Some(ChooseBusy), None, Some(at(60))));
    sim.disconnect("d0");
    sim.advance_to(at(120));
    sim.connect("d1", presence_core::Platform::Web);
    assert_eq!(sim.shown(), Online);
}

#[test]
fn t6_permanent_choice_replaces_a_temporary_one() {
    let mut sim = Sim::with_devices("web");
    sim.set(req(Some(ChooseBusy), None, Some(at(60))));
    sim.choose(ChooseAway);
    assert_eq!(sim.self_view().expires_at, None);
    sim.advance_to(at(120));
    assert_eq!(sim.shown(), Away);
}

#[test]
fn t6_restore_chain_is_bounded() {
    let mut sim = Sim::with_devices("web");
    // Each new temporary status ends before the one below, so all nest.
    for i in 0..20u64 {
        sim.set(req(
            Some(ChooseBusy),
            Some(&format!("level {i}")),
            Some(at(1000 - i)),
        ));
        assert_eq!(
            restore_depth(&sim.user.durable.status),
            (i as usize + 1).min(MAX_RESTORE_DEPTH),
            "restore states held after {} nested expiries",
            i + 1,
        );
    }
    // Unwinding walks the kept states in order; the oldest kept one became
    // permanent.
    for i in (12..20u64).rev() {
        assert_eq!(sim.own_text(), Some(format!("level {i}")));
        sim.advance_to(at(1000 - i));
    }
    assert_eq!(sim.own_text().as_deref(), Some("level 11"));
    assert_eq!(sim.user.durable.status.temporary, None);
    sim.advance_to(at(2000));
    assert_eq!(sim.own_text().as_deref(), Some("level 11"));
}

/// How many states an expiry chain will restore, one after another.
fn restore_depth(layer: &StatusLayer) -> usize {
    let mut depth = 0;
    let mut layer = layer;
    while let Some(t) = &layer.temporary {
        depth += 1;
        layer = &t.restore;
    }
    depth
}

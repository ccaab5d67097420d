//! The presence cap (X1–X5): the broadcast switches itself off when the
//! cluster-wide connection count exceeds the cap, and only an admin
//! switches it back on.

use presence_core::{CapState, CapTransition, DEFAULT_CAP, WorkspaceSettings};

/// Runs `script` on a fresh `CapState::new(cap)` and checks `expected`.
///
/// The script is a list of operations: a number is a connection count the
/// cap owner observed, `cap:N` an admin changing the cap, `enable` an admin
/// asking to re-enable the broadcast. `expected` lists the notices sent
/// (X3: `disabled`/`enabled` are the transitions returned; `refused` is an
/// admin request turned down), then `=> on` or `=> off` for the final
/// state of the broadcast.
fn check(cap: u64, script: &str, expected: &str) {
    let mut state = CapState::new(cap);
    let mut got = Vec::new();
    for op in script.split_whitespace() {
        let transition = if op == "enable" {
            state.request_enable().unwrap_or_else(|err| {
                assert_eq!(err.code(), "broadcast_enable_refused");
                got.push("refused");
                None
            })
        } else if let Some(new_cap) = op.strip_prefix("cap:") {
            state.set_cap(new_cap.parse().unwrap())
        } else {
            state.observe_count(op.parse().unwrap())
        };
        match transition {
            Some(CapTransition::Disabled) => got.push("disabled"),
            Some(CapTransition::Enabled) => got.push("enabled"),
            None => {}
        }
    }
    got.push("=>");
    got.push(if state.enabled { "on" } else { "off" });
    assert_eq!(got.join(" "), expected, "cap {cap}, '{script}'");
}

#[test]
fn x1_cap_defaults_to_200_and_zero_means_unlimited() {
    assert_eq!(DEFAULT_CAP, 200);
    assert_eq!(CapState::default(), CapState::new(200));
    assert_eq!(WorkspaceSettings::default().cap, 200);
    check(200, "200", "=> on");
    check(0, "1000000", "=> on");
    check(0, "18446744073709551615", "=> on");
    check(200, "cap:0 100000", "=> on");
}

#[test]
fn x2_exceeding_the_cap_disables_the_broadcast() {
    check(200, "199", "=> on");
    check(200, "200", "=> on");
    check(200, "201", "disabled => off");
    check(1, "0 1 2", "disabled => off");
    check(200, "10000", "disabled => off");
    // Lowering the cap below the count disables it too.
    check(200, "100 cap:50", "disabled => off");
    check(200, "100 cap:100", "=> on");
    check(0, "100 cap:99", "disabled => off");
}

#[test]
fn x3_transitions_are_exactly_the_notices_to_send() {
    // One notice per transition, not one per observation.
    check(2, "3 4 5 cap:1", "disabled => off");
    check(2, "3 1 enable", "disabled enabled => on");
    check(2, "3 1 enable 3", "disabled enabled disabled => off");
    // Asking to enable an enabled broadcast sends nothing.
    check(2, "enable enable", "=> on");
    check(2, "3 0 enable enable", "disabled enabled => on");
    // A refusal is an answer to the admin, not a notice, and changes nothing.
    check(2, "3 enable enable", "disabled refused refused => off");
}

#[test]
fn x4_never_reenables_itself() {
    check(2, "3 0", "disabled => off");
    check(2, "3 0 1 2", "disabled => off");
    check(2, "3 cap:100", "disabled => off");
    check(2, "3 cap:0", "disabled => off");
}

#[test]
fn x4_reenable_refused_while_count_at_cap() {
    check(2, "3 enable", "disabled refused => off");
    check(2, "3 2 enable", "disabled refused => off");
    check(2, "3 1 enable", "disabled enabled => on");
    check(2, "3 cap:4 enable", "disabled enabled => on");
    check(2, "3 cap:3 enable", "disabled refused => off");
    // With the cap lifted (0), an admin may always re-enable.
    check(2, "3 cap:0 enable", "disabled enabled => on");
    let mut state = CapState::new(2);
    state.observe_count(3);
    let err = state.request_enable().unwrap_err();
    assert_eq!(
        err.to_string(),
        "presence broadcast cannot be enabled: 3 connections, cap is 2"
    );
}

#[test]
fn x5_count_cap_peak_and_enabled_are_readable() {
    let mut state = CapState::new(3);
    assert_eq!(
        (state.count, state.cap, state.peak, state.enabled),
        (0, 3, 0, true)
    );
    state.observe_count(2);
    state.observe_count(5);
    state.observe_count(1);
    assert_eq!(
        (state.count, state.cap, state.peak, state.enabled),
        (1, 3, 5, false)
    );
    state.set_cap(10);
    assert_eq!((state.cap, state.peak), (10, 5));
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(json, r#"{"cap":10,"count":1,"peak":5,"enabled":false}"#);
    assert_eq!(serde_json::from_str::<CapState>(&json).unwrap(), state);
}

//! Property tests: the rules hold for arbitrary sequences of commands and
//! time, not just for the cases in the tables.

mod common;

use common::{Sim, at, dev, req, secs};
use presence_core::{
    CalendarSource, CapState, CapTransition, ChosenStatus, Command, DeviceEvent, Disconnect,
    DisplayedStatus, MAX_RESTORE_DEPTH, Platform, PreferencesUpdate, PresenceError, SelfStatus,
    StatusLayer, WorkspaceSettings,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

/// Something that happens to a user: a command, or time passing.
#[derive(Clone, Debug)]
enum Op {
    Connect(u8, Platform),
    Event(u8, DeviceEvent),
    Clean(u8),
    /// Lost link with a grace period of this many seconds.
    Lost(u8, u16),
    /// A heartbeat deadline this many seconds from now.
    Heartbeat(u8, u16),
    /// Status, text, expiry in seconds from now (0 is invalid: not future).
    Set(Option<ChosenStatus>, Option<&'static str>, Option<u16>),
    Calendar(u8, bool),
    AutoAway(bool),
    Advance(u16),
}

/// Texts to choose from, including "clear" and an invalid one.
const TEXTS: [&str; 5] = ["", "Lunch", "  Deep work  ", "🏳️‍🌈", "bad\ntext"];
const VALID_TEXTS: [&str; 4] = ["", "Lunch", "  Deep work  ", "🏳️‍🌈"];

fn platform() -> impl Strategy<Value = Platform> {
    select(Platform::ALL.to_vec())
}

fn device_event() -> impl Strategy<Value = DeviceEvent> {
    select(DeviceEvent::ALL.to_vec())
}

fn chosen() -> impl Strategy<Value = ChosenStatus> {
    select(ChosenStatus::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4u8, platform()).prop_map(|(d, p)| Op::Connect(d, p)),
        6 => (0..4u8, device_event()).prop_map(|(d, e)| Op::Event(d, e)),
        1 => (0..4u8).prop_map(Op::Clean),
        1 => (0..4u8, 1..120u16).prop_map(|(d, s)| Op::Lost(d, s)),
        1 => (0..4u8, 0..120u16).prop_map(|(d, s)| Op::Heartbeat(d, s)),
        3 => (option::of(chosen()), option::of(select(TEXTS.to_vec())), option::of(0..600u16))
            .prop_map(|(s, t, e)| Op::Set(s, t, e)),
        1 => (0..3u8, any::<bool>()).prop_map(|(e, b)| Op::Calendar(e, b)),
        1 => any::<bool>().prop_map(Op::AutoAway),
        3 => (0..400u16).prop_map(Op::Advance),
    ]
}

fn sim() -> Sim {
    Sim::with_settings(WorkspaceSettings {
        calendar_integration: true,
        ..WorkspaceSettings::default()
    })
}

fn device_name(d: u8) -> String {
    format!("d{d}")
}

/// Runs one op; commands may be rejected (unknown device, unsupported
/// event, invalid text, …), which is part of what is being tested.
fn run(sim: &mut Sim, op: &Op) -> Result<(), PresenceError> {
    let command = match *op {
        Op::Connect(d, platform) => Command::Connect {
            device: dev(&device_name(d)),
            platform,
        },
        Op::Event(d, event) => Command::DeviceEvent {
            device: dev(&device_name(d)),
            event,
        },
        Op::Clean(d) => Command::Disconnect {
            device: dev(&device_name(d)),
            how: Disconnect::Clean,
        },
        Op::Lost(d, s) => Command::Disconnect {
            device: dev(&device_name(d)),
            how: Disconnect::Lost {
                grace_until: sim.now + secs(s.into()),
            },
        },
        Op::Heartbeat(d, s) => Command::Heartbeat {
            device: dev(&device_name(d)),
            deadline: sim.now + secs(s.into()),
        },
        Op::Set(status, text, expiry) => {
            Command::SetStatus(req(status, text, expiry.map(|s| sim.now + secs(s.into()))))
        }
        Op::Calendar(e, busy) => Command::Calendar {
            event_id: format!("event-{e}"),
            busy,
            source: CalendarSource::Integration,
        },
        Op::AutoAway(on) => Command::SetPreferences(PreferencesUpdate {
            auto_away: Some(on),
            idle_time_limit: None,
        }),
        Op::Advance(s) => {
            sim.advance_by(secs(s.into()));
            return Ok(());
        }
    };
    sim.try_apply(command).map(|_| ())
}

fn run_all(ops: &[Op]) -> Sim {
    let mut sim = sim();
    for op in ops {
        let _ = run(&mut sim, op);
    }
    sim
}

fn restore_depth(layer: &StatusLayer) -> usize {
    let mut depth = 0;
    let mut layer = layer;
    while let Some(t) = &layer.temporary {
        depth += 1;
        layer = &t.restore;
    }
    depth
}

/// One device: its platform and the events it reports, in order.
type DeviceScript = (Platform, Vec<DeviceEvent>);

/// Builds a user from `devices`, connecting them in `order` under the
/// names `prefix0`, `prefix1`, … (so the map order differs as well) and
/// applying their events either round-robin or device by device.
fn build(
    devices: &[DeviceScript],
    order: &[usize],
    prefix: &str,
    round_robin: bool,
    chosen: ChosenStatus,
    auto_away: bool,
) -> Sim {
    let mut sim = Sim::new();
    sim.apply(Command::SetPreferences(PreferencesUpdate {
        auto_away: Some(auto_away),
        idle_time_limit: None,
    }));
    let name = |slot: usize| format!("{prefix}{slot}");
    for (slot, &i) in order.iter().enumerate() {
        sim.connect(&name(slot), devices[i].0);
    }
    let supported = |i: usize| {
        let (platform, events) = &devices[i];
        events
            .iter()
            .copied()
            .filter(|e| e.supported_on(*platform))
            .collect::<Vec<_>>()
    };
    if round_robin {
        let longest = devices.iter().map(|d| d.1.len()).max().unwrap_or(0);
        for step in 0..longest {
            for (slot, &i) in order.iter().enumerate() {
                if let Some(&event) = supported(i).get(step) {
                    sim.event(&name(slot), event);
                }
            }
        }
    } else {
        for (slot, &i) in order.iter().enumerate() {
            for event in supported(i) {
                sim.event(&name(slot), event);
            }
        }
    }
    sim.choose(chosen);
    sim
}

fn devices_and_permutation() -> impl Strategy<Value = (Vec<DeviceScript>, Vec<usize>)> {
    vec((platform(), vec(device_event(), 0..6)), 1..=4).prop_flat_map(|devices| {
        let n = devices.len();
        (
            Just(devices),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        )
    })
}

#[derive(Clone, Copy, Debug)]
enum CapOp {
    Count(u64),
    Cap(u64),
    Enable,
}

fn cap_op() -> impl Strategy<Value = CapOp> {
    prop_oneof![
        3 => (0..400u64).prop_map(CapOp::Count),
        1 => (0..300u64).prop_map(CapOp::Cap),
        2 => Just(CapOp::Enable),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a4_display_does_not_depend_on_device_order(
        (devices, permutation) in devices_and_permutation(),
        chosen in chosen(),
        auto_away in any::<bool>(),
        idle_secs in 0..700u64,
    ) {
        let identity: Vec<usize> = (0..devices.len()).collect();
        let mut a = build(&devices, &identity, "a", true, chosen, auto_away);
        let mut b = build(&devices, &permutation, "b", false, chosen, auto_away);
        prop_assert_eq!(a.public(), b.public());
        prop_assert_eq!(a.self_view(), b.self_view());
        a.advance_by(secs(idle_secs));
        b.advance_by(secs(idle_secs));
        prop_assert_eq!(a.public(), b.public());
        prop_assert_eq!(a.self_view(), b.self_view());
        prop_assert_eq!(
            a.aggregate().map(|s| s.rank()),
            b.aggregate().map(|s| s.rank())
        );
    }

    #[test]
    fn d2_reapplying_the_same_event_is_idempotent(
        prefix in vec(op(), 0..30),
        device in 0..4u8,
        event in device_event(),
    ) {
        let mut sim = run_all(&prefix);
        let command = Command::DeviceEvent { device: dev(&device_name(device)), event };
        if sim.try_apply(command.clone()).is_ok() {
            let once = sim.user.clone();
            let outcome = sim.try_apply(command);
            prop_assert!(outcome.is_ok());
            let outcome = outcome.unwrap();
            prop_assert!(!outcome.changed());
            prop_assert!(!outcome.durable_changed);
            prop_assert_eq!(&sim.user, &once);
        }
    }

    #[test]
    fn t4_reapplying_the_same_status_request_is_idempotent(
        prefix in vec(op(), 0..30),
        status in option::of(chosen()),
        text in option::of(select(TEXTS.to_vec())),
        expiry in option::of(0..600u16),
        calendar_busy in any::<bool>(),
    ) {
        let mut sim = run_all(&prefix);
        if calendar_busy {
            let _ = run(&mut sim, &Op::Calendar(0, true));
        }
        let op = Op::Set(status, text, expiry);
        if run(&mut sim, &op).is_ok() {
            let once = sim.user.clone();
            prop_assert!(run(&mut sim, &op).is_ok());
            prop_assert_eq!(&sim.user, &once);
        }
    }

    #[test]
    fn a1_offline_iff_no_device_or_invisible(ops in vec(op(), 0..40)) {
        let mut sim = sim();
        for op in &ops {
            let _ = run(&mut sim, op);
            let offline = sim.shown() == DisplayedStatus::Offline;
            let expected = sim.user.devices.is_empty()
                || sim.user.effective_chosen() == ChosenStatus::Invisible;
            prop_assert_eq!(offline, expected, "after {:?}", op);
            prop_assert_eq!(sim.user.counts_online(&sim.settings), !offline);
            let own = sim.self_status();
            prop_assert_eq!(own == SelfStatus::Offline, sim.user.devices.is_empty());
            prop_assert_eq!(
                own == SelfStatus::Invisible,
                !sim.user.devices.is_empty()
                    && sim.user.effective_chosen() == ChosenStatus::Invisible
            );
        }
    }

    #[test]
    fn t3_text_never_visible_to_others_while_offline(ops in vec(op(), 0..40)) {
        let mut sim = sim();
        for op in &ops {
            let _ = run(&mut sim, op);
            let public = sim.public();
            if public.status == DisplayedStatus::Offline {
                prop_assert_eq!(&public.text, &None, "after {:?}", op);
            } else {
                prop_assert_eq!(&public.text, &sim.user.durable.status.state.text);
            }
            if sim.self_status() == SelfStatus::Invisible {
                prop_assert_eq!(&public.text, &None);
            }
        }
    }

    #[test]
    fn t6_expired_status_restores_exactly_the_state_before(
        prefix in vec(op(), 0..30),
        status in option::of(chosen()),
        text in option::of(select(VALID_TEXTS.to_vec())),
        expires_in in 1..600u16,
        late_by in 0..100u16,
    ) {
        prop_assume!(status.is_some() || text.is_some());
        let mut sim = run_all(&prefix);
        let mut without = sim.clone();
        let before = sim.user.durable.status.clone();
        let outcome = run(&mut sim, &Op::Set(status, text, Some(expires_in)));
        prop_assert!(outcome.is_ok(), "{:?}", outcome);
        let end = sim.now + secs(expires_in.into()) + secs(late_by.into());
        sim.advance_to(end);
        without.advance_to(end);
        // What would have been in effect without the temporary status.
        let expected = &without.user.durable.status;
        if before.temporary.is_none() {
            prop_assert_eq!(&sim.user.durable.status, &before);
        }
        if restore_depth(&before) < MAX_RESTORE_DEPTH {
            prop_assert_eq!(&sim.user.durable.status, expected);
        } else {
            // The oldest state of a full chain was made permanent.
            prop_assert_eq!(&sim.user.durable.status.state, &expected.state);
        }
    }

    #[test]
    fn d7_nothing_happens_before_the_next_deadline(ops in vec(op(), 0..40)) {
        let mut sim = sim();
        for op in &ops {
            let _ = run(&mut sim, op);
            let mut later = sim.clone();
            match sim.next_deadline() {
                Some(deadline) => {
                    prop_assert!(deadline > sim.now, "deadlines in the past are handled");
                    later.advance_to(deadline - std::time::Duration::from_millis(1));
                    prop_assert_eq!(&later.user, &sim.user, "before {:?}", deadline);
                    later.advance_to(deadline);
                    prop_assert_ne!(&later.user, &sim.user, "at {:?}", deadline);
                }
                None => {
                    later.advance_by(secs(30 * 86_400));
                    prop_assert_eq!(&later.user, &sim.user);
                }
            }
        }
    }

    #[test]
    fn w3_version_grows_with_every_visible_change_and_only_then(ops in vec(op(), 0..40)) {
        let mut sim = sim();
        for op in &ops {
            let before = sim.user.clone();
            let (public, own) = (sim.public(), sim.self_view());
            let result = run(&mut sim, op);
            let changed = sim.public() != public || sim.self_view() != own;
            if result.is_err() {
                prop_assert_eq!(&sim.user, &before, "a rejected {:?} changed the user", op);
            }
            if changed {
                prop_assert!(sim.user.durable.version > before.durable.version, "{:?}", op);
            } else {
                prop_assert_eq!(sim.user.durable.version, before.durable.version, "{:?}", op);
            }
        }
    }

    #[test]
    fn x4_cap_never_reenables_itself(
        cap in 0..300u64,
        ops in vec(cap_op(), 0..60),
    ) {
        let mut state = CapState::new(cap);
        let mut peak = 0;
        for op in ops {
            let before = state;
            let transition = match op {
                CapOp::Count(n) => {
                    peak = peak.max(n);
                    state.observe_count(n)
                }
                CapOp::Cap(c) => state.set_cap(c),
                CapOp::Enable => {
                    let refused =
                        !before.enabled && before.cap != 0 && before.count >= before.cap;
                    match state.request_enable() {
                        Ok(t) => {
                            prop_assert!(!refused);
                            t
                        }
                        Err(err) => {
                            prop_assert!(refused);
                            prop_assert_eq!(err.code(), "broadcast_enable_refused");
                            prop_assert_eq!(state, before);
                            None
                        }
                    }
                }
            };
            // X4: only an admin request re-enables, never while at the cap.
            if !before.enabled && state.enabled {
                prop_assert!(matches!(op, CapOp::Enable));
                prop_assert!(before.cap == 0 || before.count < before.cap);
            }
            // X3: the transitions returned are exactly the flips.
            let expected = match (before.enabled, state.enabled) {
                (true, false) => Some(CapTransition::Disabled),
                (false, true) => Some(CapTransition::Enabled),
                _ => None,
            };
            prop_assert_eq!(transition, expected);
            // X2: an enabled broadcast never runs over the cap.
            if state.enabled && state.cap != 0 {
                prop_assert!(state.count <= state.cap);
            }
            // X5
            prop_assert_eq!(state.peak, peak);
        }
    }
}

#[test]
fn properties_cover_real_timelines() {
    // A sanity check that the op language reaches interesting states: a
    // temporary busy status over an idle desktop and a lost phone.
    let ops = [
        Op::Connect(0, Platform::Desktop),
        Op::Connect(1, Platform::Mobile),
        Op::Event(0, DeviceEvent::Activity),
        Op::Set(Some(ChosenStatus::Busy), Some("Lunch"), Some(60)),
        Op::Lost(1, 30),
        Op::Advance(400),
    ];
    let sim = run_all(&ops);
    assert_eq!(sim.shown(), DisplayedStatus::Away);
    assert!(sim.now >= at(400));
    assert_eq!(sim.user.devices.len(), 1);
}

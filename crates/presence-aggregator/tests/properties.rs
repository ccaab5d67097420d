//! Property: a shard leader shows exactly what `presence-core` shows when
//! the same commands are applied straight to one `UserPresence` per user —
//! the way the embedded backend runs them — whatever the sequence,
//! including replaced sockets, dead nodes, lapsed heartbeats, time and
//! leader takeovers in between. Along the way the model store checks that
//! committed versions only grow (W3) and that what is stored equals what
//! the leader holds.

mod common;

use std::collections::BTreeMap;

use common::{Leader, secs};
use presence_core::{
    CalendarSource, ChosenStatus, Command, Context, DeviceEvent, DeviceId, Disconnect,
    IdleTimeLimit, Link, Platform, PreferencesUpdate, PublicView, SelfView, Timestamp,
    UserPresence, WorkspaceSettings,
};
use presence_protocol::cluster::{
    CalendarOrigin, ClusterCommand, SocketEnd, StatusRequestBody, UserCommand,
};
use proptest::prelude::*;
use proptest::sample::select;

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const DEVICES: [&str; 3] = ["d1", "d2", "d3"];
const NODES: [&str; 2] = ["n1", "n2"];
const GRACE_SECS: u64 = 30;

#[derive(Clone, Debug)]
enum Op {
    Connect {
        user: usize,
        device: usize,
        platform: Platform,
        node: usize,
    },
    Event {
        user: usize,
        device: usize,
        event: DeviceEvent,
    },
    Disconnect {
        user: usize,
        device: usize,
        stale: bool,
        clean: bool,
    },
    SetStatus {
        user: usize,
        status: Option<ChosenStatus>,
        text: Option<&'static str>,
        expires_in: Option<u64>,
    },
    Calendar {
        user: usize,
        event: usize,
        busy: bool,
    },
    Preferences {
        user: usize,
        auto_away: Option<bool>,
        limit: Option<u64>,
    },
    Advance(u64),
    NodeDies(usize),
    HeartbeatLapses {
        user: usize,
        device: usize,
    },
    Takeover,
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS.len();
    let device = 0..DEVICES.len();
    let texts = select(vec!["", "Lunch", "  padded  ", "bad\ntext", "🎉 party"]);
    prop_oneof![
        4 => (user.clone(), device.clone(), select(Platform::ALL.to_vec()), 0..NODES.len())
            .prop_map(|(user, device, platform, node)| Op::Connect { user, device, platform, node }),
        6 => (user.clone(), device.clone(), select(DeviceEvent::ALL.to_vec()))
            .prop_map(|(user, device, event)| Op::Event { user, device, event }),
        3 => (user.clone(), device.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(user, device, stale, clean)| Op::Disconnect { user, device, stale, clean }),
        3 => (
            user.clone(),
            proptest::option::of(select(ChosenStatus::ALL.to_vec())),
            proptest::option::of(texts),
            proptest::option::of(0..900u64),
        )
            .prop_map(|(user, status, text, expires_in)| Op::SetStatus { user, status, text, expires_in }),
        1 => (user.clone(), 0..2usize, any::<bool>())
            .prop_map(|(user, event, busy)| Op::Calendar { user, event, busy }),
        1 => (user.clone(), proptest::option::of(any::<bool>()), proptest::option::of(30..400u64))
            .prop_map(|(user, auto_away, limit)| Op::Preferences { user, auto_away, limit }),
        3 => (1..400u64).prop_map(Op::Advance),
        1 => (0..NODES.len()).prop_map(Op::NodeDies),
        1 => (user, device).prop_map(|(user, device)| Op::HeartbeatLapses { user, device }),
        1 => Just(Op::Takeover),
    ]
}

/// The reference: presence-core applied directly, one `UserPresence` and
/// one socket table per user, as the embedded backend does.
#[derive(Default)]
struct Reference {
    users: BTreeMap<&'static str, (UserPresence, Sockets)>,
}

/// Device → (node index, conn) of its live socket.
type Sockets = BTreeMap<DeviceId, (usize, u64)>;

impl Reference {
    fn apply(&mut self, user: &'static str, command: Command, ctx: Context<'_>) {
        let (presence, sockets) = self.users.entry(user).or_default();
        let _ = presence.apply(command, ctx);
        sockets.retain(|d, _| presence.devices.contains_key(d));
    }

    fn public(&self, user: &str, settings: &WorkspaceSettings) -> PublicView {
        self.users
            .get(user)
            .map(|(p, _)| p.public_view(settings))
            .unwrap_or_else(|| UserPresence::default().public_view(settings))
    }

    fn own(&self, user: &str, settings: &WorkspaceSettings) -> SelfView {
        self.users
            .get(user)
            .map(|(p, _)| p.self_view(settings))
            .unwrap_or_else(|| UserPresence::default().self_view(settings))
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let settings = WorkspaceSettings {
        calendar_integration: true,
        ..WorkspaceSettings::default()
    };
    let mut leader = Leader::with_settings(settings.clone());
    let mut reference = Reference::default();
    let mut next_conn = 1u64;
    for (step, op) in ops.into_iter().enumerate() {
        let now = leader.now;
        let ctx = Context {
            now,
            settings: &settings,
        };
        match op {
            Op::Connect {
                user,
                device,
                platform,
                node,
            } => {
                let conn = next_conn;
                next_conn += 1;
                let (user, device) = (USERS[user], DeviceId::try_from(DEVICES[device]).unwrap());
                leader.run_on(
                    NODES[node],
                    user,
                    ClusterCommand::User(UserCommand::Connect {
                        device: device.clone(),
                        platform,
                        conn,
                        node: NODES[node].to_owned(),
                        profile: Default::default(),
                    }),
                );
                reference.apply(
                    user,
                    Command::Connect {
                        device: device.clone(),
                        platform,
                    },
                    ctx,
                );
                reference
                    .users
                    .get_mut(user)
                    .unwrap()
                    .1
                    .insert(device, (node, conn));
            }
            Op::Event {
                user,
                device,
                event,
            } => {
                let (user, device) = (USERS[user], DeviceId::try_from(DEVICES[device]).unwrap());
                leader.run(
                    user,
                    ClusterCommand::User(UserCommand::DeviceEvent {
                        device: device.clone(),
                        event,
                    }),
                );
                reference.apply(user, Command::DeviceEvent { device, event }, ctx);
            }
            Op::Disconnect {
                user,
                device,
                stale,
                clean,
            } => {
                let (user, device) = (USERS[user], DeviceId::try_from(DEVICES[device]).unwrap());
                let entry = reference.users.entry(user).or_default();
                let live = entry.1.get(&device).map(|(_, c)| *c);
                // The goodbye comes from the node that held the socket.
                let node = entry.1.get(&device).map_or(0, |(n, _)| *n);
                // A stale goodbye comes from a socket that was replaced.
                let conn = match (live, stale) {
                    (Some(c), false) => c,
                    (Some(c), true) => c + 10_000,
                    (None, _) => 0,
                };
                leader.run_on(
                    NODES[node],
                    user,
                    ClusterCommand::User(UserCommand::Disconnect {
                        device: device.clone(),
                        conn,
                        end: if clean {
                            SocketEnd::Clean
                        } else {
                            SocketEnd::Lost
                        },
                    }),
                );
                let connected = entry
                    .0
                    .devices
                    .get(&device)
                    .is_some_and(|d| d.link == Link::Connected);
                if live == Some(conn) && connected {
                    let how = if clean {
                        Disconnect::Clean
                    } else {
                        Disconnect::Lost {
                            grace_until: now + secs(GRACE_SECS),
                        }
                    };
                    reference.apply(user, Command::Disconnect { device, how }, ctx);
                }
            }
            Op::SetStatus {
                user,
                status,
                text,
                expires_in,
            } => {
                let request = StatusRequestBody {
                    status,
                    text: text.map(str::to_owned),
                    expires_at: expires_in
                        .map(|s| Timestamp::from_millis(now.as_millis() + s as i64 * 1000)),
                };
                leader.run(
                    USERS[user],
                    ClusterCommand::User(UserCommand::SetStatus {
                        request: request.clone(),
                    }),
                );
                reference.apply(USERS[user], Command::SetStatus(request), ctx);
            }
            Op::Calendar { user, event, busy } => {
                let event_id = format!("event-{event}");
                leader.run(
                    USERS[user],
                    ClusterCommand::User(UserCommand::Calendar {
                        event_id: event_id.clone(),
                        busy,
                        source: CalendarOrigin::Integration,
                    }),
                );
                reference.apply(
                    USERS[user],
                    Command::Calendar {
                        event_id,
                        busy,
                        source: CalendarSource::Integration,
                    },
                    ctx,
                );
            }
            Op::Preferences {
                user,
                auto_away,
                limit,
            } => {
                // The gateway refuses limits below the floor (S2).
                let limit = limit.and_then(|s| IdleTimeLimit::new(s).ok());
                leader.run(
                    USERS[user],
                    ClusterCommand::User(UserCommand::SetPreferences {
                        auto_away,
                        idle_time_limit: limit,
                    }),
                );
                reference.apply(
                    USERS[user],
                    Command::SetPreferences(PreferencesUpdate {
                        auto_away,
                        idle_time_limit: limit,
                    }),
                    ctx,
                );
            }
            Op::Advance(s) => {
                leader.tick(s);
                let ctx = Context {
                    now: leader.now,
                    settings: &settings,
                };
                for (presence, sockets) in reference.users.values_mut() {
                    presence.advance(ctx);
                    sockets.retain(|d, _| presence.devices.contains_key(d));
                }
            }
            Op::NodeDies(node) => {
                leader.expire_nodes(&[NODES[node]]);
                let users: Vec<&'static str> = reference.users.keys().copied().collect();
                for user in users {
                    let doomed: Vec<DeviceId> = reference.users[user]
                        .1
                        .iter()
                        .filter(|(_, (n, _))| *n == node)
                        .map(|(d, _)| d.clone())
                        .collect();
                    for device in doomed {
                        let how = Disconnect::Clean;
                        reference.apply(user, Command::Disconnect { device, how }, ctx);
                    }
                }
            }
            Op::HeartbeatLapses { user, device } => {
                let (user, device) = (USERS[user], DEVICES[device]);
                let changes = leader.state.expire_heartbeats(&[(user, device)], now);
                leader.commit(changes);
                let device = DeviceId::try_from(device).unwrap();
                let how = Disconnect::Clean;
                reference.apply(user, Command::Disconnect { device, how }, ctx);
            }
            Op::Takeover => {
                leader = leader.takeover();
            }
        }
        for user in USERS {
            prop_assert_eq!(
                leader.public(user),
                reference.public(user, &settings),
                "step {}: what others see of {}",
                step,
                user
            );
            if let Some(own) = leader.state.self_view(user) {
                prop_assert_eq!(
                    own,
                    reference.own(user, &settings),
                    "step {}: {}'s own view",
                    step,
                    user
                );
            }
        }
        leader.assert_stored_matches();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a1_to_a5_d7_h2_shard_state_matches_presence_core(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

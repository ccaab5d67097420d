//! Shared builders for the presence-core test suite.
//!
//! Every test file is its own crate and uses a different subset of these
//! helpers, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::time::Duration;

use presence_core::{
    ChosenStatus, Command, Context, DeviceEvent, DeviceId, DeviceStatus, Disconnect,
    DisplayedStatus, Outcome, Platform, PresenceError, PublicView, SelfStatus, SelfView,
    StatusRequest, Timestamp, UserPresence, WorkspaceSettings,
};

/// The instant every simulation starts at (some day in November 2023).
pub const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A grace period long enough never to end during a test.
pub const LONG_GRACE: Duration = Duration::from_secs(24 * 3600);

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `T0` plus `s` seconds.
pub fn at(s: u64) -> Timestamp {
    T0 + secs(s)
}

pub fn dev(id: &str) -> DeviceId {
    DeviceId::try_from(id).unwrap()
}

/// A status request; `None` fields are left out of the request.
pub fn req(
    status: Option<ChosenStatus>,
    text: Option<&str>,
    expires_at: Option<Timestamp>,
) -> StatusRequest {
    StatusRequest {
        status,
        text: text.map(str::to_owned),
        expires_at,
    }
}

pub fn platform(name: &str) -> Platform {
    Platform::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .unwrap_or_else(|| panic!("unknown platform '{name}'"))
}

pub fn event(name: &str) -> DeviceEvent {
    DeviceEvent::ALL
        .into_iter()
        .find(|e| e.as_str() == name)
        .unwrap_or_else(|| panic!("unknown device event '{name}'"))
}

/// One user, a clock and the workspace settings: the rules driven the way
/// the service drives them, with the time under the test's control.
#[derive(Clone, Debug)]
pub struct Sim {
    pub user: UserPresence,
    pub settings: WorkspaceSettings,
    pub now: Timestamp,
    /// The number of devices [`Sim::add_devices`] has named so far.
    named_devices: usize,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        Self::with_settings(WorkspaceSettings::default())
    }

    pub fn with_settings(settings: WorkspaceSettings) -> Self {
        Self {
            user: UserPresence::default(),
            settings,
            now: T0,
            named_devices: 0,
        }
    }

    /// A simulation whose devices are described by `spec` (see
    /// [`Sim::add_devices`]).
    pub fn with_devices(spec: &str) -> Self {
        let mut sim = Self::new();
        sim.add_devices(spec);
        sim
    }

    pub fn ctx(&self) -> Context<'_> {
        Context {
            now: self.now,
            settings: &self.settings,
        }
    }

    pub fn try_apply(&mut self, command: Command) -> Result<Outcome, PresenceError> {
        let now = self.now;
        self.user.apply(
            command,
            Context {
                now,
                settings: &self.settings,
            },
        )
    }

    pub fn apply(&mut self, command: Command) -> Outcome {
        let shown = format!("{command:?}");
        self.try_apply(command)
            .unwrap_or_else(|e| panic!("{shown} was rejected: {e} ({})", e.code()))
    }

    pub fn connect(&mut self, id: &str, platform: Platform) -> Outcome {
        self.apply(Command::Connect {
            device: dev(id),
            platform,
        })
    }

    pub fn try_event(&mut self, id: &str, event: DeviceEvent) -> Result<Outcome, PresenceError> {
        self.try_apply(Command::DeviceEvent {
            device: dev(id),
            event,
        })
    }

    pub fn event(&mut self, id: &str, event: DeviceEvent) -> Outcome {
        self.apply(Command::DeviceEvent {
            device: dev(id),
            event,
        })
    }

    /// A clean close: logout or app quit (D7).
    pub fn disconnect(&mut self, id: &str) -> Outcome {
        self.apply(Command::Disconnect {
            device: dev(id),
            how: Disconnect::Clean,
        })
    }

    /// The socket dropped without a goodbye; the grace period is `grace`
    /// from now (D7).
    pub fn lose(&mut self, id: &str, grace: Duration) -> Outcome {
        let grace_until = self.now + grace;
        self.apply(Command::Disconnect {
            device: dev(id),
            how: Disconnect::Lost { grace_until },
        })
    }

    pub fn try_set(&mut self, request: StatusRequest) -> Result<Outcome, PresenceError> {
        self.try_apply(Command::SetStatus(request))
    }

    pub fn set(&mut self, request: StatusRequest) -> Outcome {
        self.apply(Command::SetStatus(request))
    }

    /// Picks a built-in status from the menu, nothing else.
    pub fn choose(&mut self, status: ChosenStatus) -> Outcome {
        self.set(req(Some(status), None, None))
    }

    /// Moves the clock by `by` and lets time pass.
    pub fn advance_by(&mut self, by: Duration) -> Outcome {
        let to = self.now + by;
        self.advance_to(to)
    }

    /// Moves the clock to `to` and lets time pass.
    pub fn advance_to(&mut self, to: Timestamp) -> Outcome {
        self.now = to;
        let now = self.now;
        self.user.advance(Context {
            now,
            settings: &self.settings,
        })
    }

    pub fn public(&self) -> PublicView {
        self.user.public_view(&self.settings)
    }

    /// What others see.
    pub fn shown(&self) -> DisplayedStatus {
        self.public().status
    }

    /// The status text others see.
    pub fn shown_text(&self) -> Option<String> {
        self.public().text.map(|t| t.as_str().to_owned())
    }

    pub fn self_view(&self) -> SelfView {
        self.user.self_view(&self.settings)
    }

    /// What the user sees of themselves.
    pub fn self_status(&self) -> SelfStatus {
        self.self_view().status
    }

    /// The text the user sees of themselves.
    pub fn own_text(&self) -> Option<String> {
        self.self_view().text.map(|t| t.as_str().to_owned())
    }

    pub fn aggregate(&self) -> Option<DeviceStatus> {
        self.user.device_aggregate(&self.settings)
    }

    pub fn device_status(&self, id: &str) -> DeviceStatus {
        let prefs = self.user.durable.preferences.resolve(&self.settings);
        self.user.devices[&dev(id)].status(&prefs)
    }

    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.user.next_deadline(&self.settings)
    }

    /// Connects devices described by a small language, one device per
    /// whitespace-separated token: `platform[:event+event…]`, where an
    /// event is a [`DeviceEvent`] name, `lost` (the socket dropped, grace
    /// still running) or `gone` (closed cleanly). Devices are named `d0`,
    /// `d1`, … in order. Example: `"web:idle desktop:lock+unlock mobile"`.
    pub fn add_devices(&mut self, spec: &str) {
        for token in spec.split_whitespace() {
            let id = format!("d{}", self.named_devices);
            self.named_devices += 1;
            let (platform_name, events) = token.split_once(':').unwrap_or((token, ""));
            self.connect(&id, platform(platform_name));
            for name in events.split('+').filter(|n| !n.is_empty()) {
                match name {
                    "lost" => {
                        self.lose(&id, LONG_GRACE);
                    }
                    "gone" => {
                        self.disconnect(&id);
                    }
                    _ => {
                        self.event(&id, event(name));
                    }
                }
            }
        }
    }
}

/// Short constructors for commands, so table rows fit on one line.
pub mod cmd {
    use presence_core::{
        ChosenStatus, Command, CustomStatusId, DeviceEvent, Disconnect, Platform,
        PreferencesUpdate, Timestamp,
    };

    use super::{dev, req};

    pub fn connect(id: &str, platform: Platform) -> Command {
        Command::Connect {
            device: dev(id),
            platform,
        }
    }

    pub fn event(id: &str, event: DeviceEvent) -> Command {
        Command::DeviceEvent {
            device: dev(id),
            event,
        }
    }

    pub fn clean(id: &str) -> Command {
        Command::Disconnect {
            device: dev(id),
            how: Disconnect::Clean,
        }
    }

    pub fn lost(id: &str, grace_until: Timestamp) -> Command {
        Command::Disconnect {
            device: dev(id),
            how: Disconnect::Lost { grace_until },
        }
    }

    pub fn heartbeat(id: &str, deadline: Timestamp) -> Command {
        Command::Heartbeat {
            device: dev(id),
            deadline,
        }
    }

    pub fn status(status: ChosenStatus) -> Command {
        Command::SetStatus(req(Some(status), None, None))
    }

    pub fn text(text: &str) -> Command {
        Command::SetStatus(req(None, Some(text), None))
    }

    pub fn auto_away(on: bool) -> Command {
        Command::SetPreferences(PreferencesUpdate {
            auto_away: Some(on),
            idle_time_limit: None,
        })
    }

    pub fn custom_deleted(id: &str) -> Command {
        Command::CustomStatusDeleted(CustomStatusId::try_from(id).unwrap())
    }
}

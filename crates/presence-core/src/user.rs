//! One user's presence: the durable part (chosen status, text, custom
//! status, expiry, calendar claims, preferences, version) and the live part
//! (devices). Commands go in through [`UserPresence::apply`], time passes
//! through [`UserPresence::advance`], and each returns an [`Outcome`] saying
//! what others and the user now see and whether anything changed.
//!
//! **Invariant:** the views are pure functions of the state; nothing here
//! reads a clock. Every time-dependent transition (idle timer, grace period,
//! heartbeat deadline, expiry) happens in `advance(now)` and is announced in
//! advance by `next_deadline`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{
    ChosenStatus, CustomStatus, CustomStatusId, Device, DeviceEvent, DeviceId, DeviceMap,
    DeviceStatus, DisplayedStatus, EffectivePreferences, Expiry, IdleTimeLimit, Link, Platform,
    Preferences, PresenceError, SelfStatus, StatusText, Timestamp, WorkspaceSettings,
};

/// T6: how many nested "restore to" states an expiry chain may hold. Older
/// temporary states beyond this become permanent.
pub const MAX_RESTORE_DEPTH: usize = 8;
/// K2: concurrent busy calendar events per user.
pub const MAX_CALENDAR_EVENTS: usize = 64;
/// K2: calendar event ids are opaque strings of at most this many characters.
pub const MAX_CALENDAR_EVENT_ID_CHARS: usize = 256;

/// What the rules need to know besides the user's own state.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub now: Timestamp,
    pub settings: &'a WorkspaceSettings,
}

/// The status part a user chooses by hand (M1–M3, T1–T5, C2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualState {
    pub chosen: ChosenStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<StatusText>,
    /// The admin-defined custom status the user selected, if any (C2, C3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<CustomStatusId>,
}

/// A manual state, possibly temporary (T6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusLayer {
    #[serde(flatten)]
    pub state: ManualState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary: Option<Temporary>,
}

/// T6: a state that ends at `until`, when `restore` comes back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Temporary {
    pub until: Expiry,
    pub restore: Box<StatusLayer>,
}

/// K2: the busy calendar events in progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarClaims {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub busy_events: BTreeSet<String>,
    /// The user chose a status while an event was in progress: their choice
    /// stands over the calendar until the last event ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_chose: bool,
}

/// The durable part of a user's presence (M3): everything that survives
/// restarts. Devices are deliberately not durable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    #[serde(default)]
    pub status: StatusLayer,
    #[serde(default)]
    pub calendar: CalendarClaims,
    #[serde(default)]
    pub preferences: Preferences,
    /// W3: grows with every change of either view; the version of what
    /// the user sees of themselves. See [`next_version`].
    #[serde(default)]
    pub version: u64,
    /// W3, I3: grows only when what others see changes; the version of the
    /// public view. An invisible user's public view never changes, so
    /// neither does this: polling it tells nobody when they act.
    #[serde(default)]
    pub public_version: u64,
}

/// A user's request to change their status (T1–T6, I2). On the cluster
/// wire `text` keeps its three states: absent (keep), `""` (clear), a
/// string (set, validated when applied); `expires_at` is milliseconds
/// since the Unix epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ChosenStatus>,
    /// Raw text as the client sent it; `Some("")` clears the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl StatusRequest {
    /// Whether the request sets a text (T4, T5): one that is not blank
    /// once trimmed. Clearing the text (`Some("")`) or leaving it alone
    /// (`None`) does not set one.
    pub fn sets_text(&self) -> bool {
        self.text.as_deref().is_some_and(|t| !t.trim().is_empty())
    }
}

/// A change to the user's own preferences; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreferencesUpdate {
    pub auto_away: Option<bool>,
    pub idle_time_limit: Option<IdleTimeLimit>,
}

/// How a device went away (D7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// Logout or app quit: the device is removed at once.
    Clean,
    /// The socket dropped without a goodbye: `away` until `grace_until`.
    Lost { grace_until: Timestamp },
}

/// How a socket ended (D7), as a gateway reports it; the engine turns it
/// into a [`Disconnect`] with the grace period. On the wire `"clean"` or
/// `"lost"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketEnd {
    /// `bye`, or a close frame from the client: the device is removed at
    /// once.
    Clean,
    /// The socket dropped or went silent: the device shows `away` for the
    /// grace period, measured from when the change is applied.
    Lost,
}

/// Where a calendar event comes from (K2): a desktop app's Outlook
/// integration, or a server-side integration through the REST API.
/// On the cluster wire `{"device": "desktop"}` or `"integration"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarSource {
    Device(Platform),
    Integration,
}

/// Everything that can happen to a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// D1: a new connection; replaces a device with the same id.
    Connect {
        device: DeviceId,
        platform: Platform,
    },
    /// D2–D6, D8.
    DeviceEvent {
        device: DeviceId,
        event: DeviceEvent,
    },
    /// D7.
    Disconnect { device: DeviceId, how: Disconnect },
    /// A5/H1: moves a device's heartbeat deadline.
    Heartbeat {
        device: DeviceId,
        deadline: Timestamp,
    },
    /// A2, A3, M1, M2, T1–T6, I2.
    SetStatus(StatusRequest),
    /// C2: select an admin-defined custom status.
    UseCustomStatus(CustomStatus),
    /// K1, K2: a busy calendar event starts (`busy`) or ends.
    Calendar {
        event_id: String,
        busy: bool,
        source: CalendarSource,
    },
    /// S1, S2.
    SetPreferences(PreferencesUpdate),
    /// C3: an admin renamed or remapped a custom status.
    CustomStatusChanged(CustomStatus),
    /// C3: an admin deleted a custom status.
    CustomStatusDeleted(CustomStatusId),
}

/// What everybody else sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicView {
    pub status: DisplayedStatus,
    /// T3: always `None` while the status is `offline`.
    pub text: Option<StatusText>,
}

/// What the user sees of themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfView {
    pub status: SelfStatus,
    pub text: Option<StatusText>,
    pub chosen: ChosenStatus,
    pub custom_status: Option<CustomStatusId>,
    pub expires_at: Option<Timestamp>,
    /// K2: a busy calendar event currently makes the user busy.
    pub calendar_busy: bool,
    /// The device aggregate alone (`online`, `away` or `offline`), what
    /// Rocket.Chat calls `connectionStatus`.
    pub connection: DisplayedStatus,
    pub devices: usize,
    pub preferences: EffectivePreferences,
}

/// The result of a command or of time passing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub public: PublicView,
    pub public_changed: bool,
    pub self_changed: bool,
    /// The chosen state, calendar claims or preferences changed and must be
    /// stored before acknowledging. Device changes alone never set this.
    pub durable_changed: bool,
    /// The version of the self view (moves on any change).
    pub version: u64,
    /// The version of the public view (moves only when it changes, I3).
    pub public_version: u64,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        self.public_changed || self.self_changed
    }
}

/// One user's complete presence state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub durable: DurableState,
    pub devices: DeviceMap,
}

impl UserPresence {
    pub fn from_durable(durable: DurableState) -> Self {
        Self {
            durable,
            devices: DeviceMap::new(),
        }
    }

    /// Applies one command. On error nothing changes.
    pub fn apply(&mut self, command: Command, ctx: Context<'_>) -> Result<Outcome, PresenceError> {
        let before_public = self.public_view(ctx.settings);
        let before_self = self.self_view(ctx.settings);
        let durable_changed = self.apply_inner(command, ctx)?;
        let time_changed = self.advance_inner(ctx);
        Ok(self.finish(
            before_public,
            before_self,
            durable_changed || time_changed,
            ctx,
        ))
    }

    /// Applies the passage of time up to `ctx.now`: idle timers (D2), grace
    /// periods (D7), heartbeat deadlines (A5) and expiries (T6).
    pub fn advance(&mut self, ctx: Context<'_>) -> Outcome {
        let before_public = self.public_view(ctx.settings);
        let before_self = self.self_view(ctx.settings);
        let durable_changed = self.advance_inner(ctx);
        self.finish(before_public, before_self, durable_changed, ctx)
    }

    /// The next moment at which [`advance`](Self::advance) would change
    /// something, if any.
    pub fn next_deadline(&self, settings: &WorkspaceSettings) -> Option<Timestamp> {
        let prefs = self.durable.preferences.resolve(settings);
        let devices = self
            .devices
            .values()
            .filter_map(|d| d.next_deadline(&prefs));
        let expiry = self.durable.status.temporary.as_ref().map(|t| t.until.at());
        devices.chain(expiry).min()
    }

    /// A2–A4 over the live devices: the best device status, or `None` when
    /// no device is connected (A1).
    pub fn device_aggregate(&self, settings: &WorkspaceSettings) -> Option<DeviceStatus> {
        let prefs = self.durable.preferences.resolve(settings);
        self.devices
            .values()
            .map(|d| d.status(&prefs))
            .max_by_key(|s| s.rank())
    }

    /// The status in force before devices are considered: the manual
    /// choice, with a calendar busy overlay (K2) unless the user chose
    /// during the event or is invisible.
    pub fn effective_chosen(&self) -> ChosenStatus {
        let chosen = self.durable.status.state.chosen;
        if self.calendar_busy() {
            ChosenStatus::Busy
        } else {
            chosen
        }
    }

    /// K2: whether a busy calendar event currently makes the user busy.
    pub fn calendar_busy(&self) -> bool {
        let claims = &self.durable.calendar;
        !claims.busy_events.is_empty()
            && !claims.user_chose
            && self.durable.status.state.chosen != ChosenStatus::Invisible
    }

    /// What everybody else sees (A1–A4, T3).
    pub fn public_view(&self, settings: &WorkspaceSettings) -> PublicView {
        let status = match (self.device_aggregate(settings), self.effective_chosen()) {
            (None, _) | (Some(_), ChosenStatus::Invisible) => DisplayedStatus::Offline,
            (Some(_), ChosenStatus::Busy) => DisplayedStatus::Busy,
            (Some(_), ChosenStatus::Away) => DisplayedStatus::Away,
            (Some(DeviceStatus::Online), ChosenStatus::Online) => DisplayedStatus::Online,
            (Some(DeviceStatus::Away(_)), ChosenStatus::Online) => DisplayedStatus::Away,
        };
        let text = match status {
            DisplayedStatus::Offline => None,
            _ => self.durable.status.state.text.clone(),
        };
        PublicView { status, text }
    }

    /// What the user sees of themselves (A3: `invisible`, not `offline`).
    pub fn self_view(&self, settings: &WorkspaceSettings) -> SelfView {
        let aggregate = self.device_aggregate(settings);
        let public = self.public_view(settings);
        let status = match (aggregate, self.effective_chosen(), public.status) {
            (None, _, _) => SelfStatus::Offline,
            (Some(_), ChosenStatus::Invisible, _) => SelfStatus::Invisible,
            (_, _, DisplayedStatus::Online) => SelfStatus::Online,
            (_, _, DisplayedStatus::Away) => SelfStatus::Away,
            (_, _, DisplayedStatus::Busy) => SelfStatus::Busy,
            (_, _, DisplayedStatus::Offline) => SelfStatus::Offline,
        };
        let state = &self.durable.status.state;
        SelfView {
            status,
            text: state.text.clone(),
            chosen: state.chosen,
            custom_status: state.custom_status.clone(),
            expires_at: self.durable.status.temporary.as_ref().map(|t| t.until.at()),
            calendar_busy: self.calendar_busy(),
            connection: match aggregate {
                None => DisplayedStatus::Offline,
                Some(DeviceStatus::Online) => DisplayedStatus::Online,
                Some(DeviceStatus::Away(_)) => DisplayedStatus::Away,
            },
            devices: self.devices.len(),
            preferences: self.durable.preferences.resolve(settings),
        }
    }

    /// Whether the user counts as online for the online count (A3:
    /// invisible users do not; neither do offline ones).
    pub fn counts_online(&self, settings: &WorkspaceSettings) -> bool {
        self.public_view(settings).status != DisplayedStatus::Offline
    }

    /// Whether the user currently uses the custom status `id` anywhere in
    /// their state, including states an expiry will restore (C3).
    pub fn uses_custom_status(&self, id: &CustomStatusId) -> bool {
        let mut layer = Some(&self.durable.status);
        while let Some(l) = layer {
            if l.state.custom_status.as_ref() == Some(id) {
                return true;
            }
            layer = l.temporary.as_ref().map(|t| &*t.restore);
        }
        false
    }

    fn apply_inner(&mut self, command: Command, ctx: Context<'_>) -> Result<bool, PresenceError> {
        match command {
            Command::Connect { device, platform } => {
                self.devices
                    .insert(device, Device::connect(platform, ctx.now));
                Ok(false)
            }
            Command::DeviceEvent { device, event } => {
                self.device_mut(&device)?.apply(event, ctx.now)?;
                Ok(false)
            }
            Command::Disconnect { device, how } => {
                match how {
                    Disconnect::Clean => {
                        self.devices.remove(&device);
                    }
                    Disconnect::Lost { grace_until } => {
                        self.device_mut(&device)?.link = Link::Lost { until: grace_until };
                    }
                }
                Ok(false)
            }
            Command::Heartbeat { device, deadline } => {
                self.device_mut(&device)?.heartbeat_deadline = Some(deadline);
                Ok(false)
            }
            Command::SetStatus(request) => self.set_status(request, ctx).map(|()| true),
            Command::UseCustomStatus(custom) => {
                let chosen = custom.status_type.as_chosen();
                if chosen == ChosenStatus::Invisible && !ctx.settings.allow_invisible {
                    return Err(PresenceError::InvisibleDisabled);
                }
                let state = ManualState {
                    chosen,
                    text: Some(StatusText::from_name(&custom.name)),
                    custom_status: Some(custom.id),
                };
                // K2: selecting a custom status during a busy calendar event
                // is a choice like `SetStatus` with a status, so it stands
                // over the calendar. (Without this the calendar kept the
                // user busy over the custom status they picked.)
                if !self.durable.calendar.busy_events.is_empty() {
                    self.durable.calendar.user_chose = true;
                }
                self.choose(state, None);
                Ok(true)
            }
            Command::Calendar {
                event_id,
                busy,
                source,
            } => self.calendar(event_id, busy, source, ctx),
            Command::SetPreferences(update) => {
                let prefs = &mut self.durable.preferences;
                let before = *prefs;
                if let Some(auto_away) = update.auto_away {
                    prefs.auto_away = Some(auto_away);
                }
                if let Some(limit) = update.idle_time_limit {
                    prefs.idle_time_limit = Some(limit);
                }
                Ok(*prefs != before)
            }
            Command::CustomStatusChanged(custom) => Ok(self.for_each_layer(|state| {
                if state.custom_status.as_ref() != Some(&custom.id) {
                    return false;
                }
                state.chosen = custom.status_type.as_chosen();
                state.text = Some(StatusText::from_name(&custom.name));
                true
            })),
            Command::CustomStatusDeleted(id) => Ok(self.for_each_layer(|state| {
                if state.custom_status.as_ref() != Some(&id) {
                    return false;
                }
                state.custom_status = None;
                true
            })),
        }
    }

    fn set_status(
        &mut self,
        request: StatusRequest,
        ctx: Context<'_>,
    ) -> Result<(), PresenceError> {
        if request.status.is_none() && request.text.is_none() {
            return Err(if request.expires_at.is_some() {
                PresenceError::ExpiryWithoutChange
            } else {
                PresenceError::EmptyStatusChange
            });
        }
        let text = request.text.as_deref().map(StatusText::parse).transpose()?;
        if request.sets_text() && !ctx.settings.allow_custom_status_text {
            return Err(PresenceError::StatusTextDisabled);
        }
        let current = &self.durable.status.state;
        if request.status == Some(ChosenStatus::Invisible)
            && current.chosen != ChosenStatus::Invisible
            && !ctx.settings.allow_invisible
        {
            return Err(PresenceError::InvisibleDisabled);
        }
        let expiry = request
            .expires_at
            .map(|at| Expiry::new(at, ctx.now))
            .transpose()?;
        let state = ManualState {
            chosen: request.status.unwrap_or(current.chosen),
            // T4: choosing a built-in status clears the text unless the
            // same request sets one; setting only a text keeps the status.
            text: text.flatten(),
            custom_status: None,
        };
        if request.status.is_some() && !self.durable.calendar.busy_events.is_empty() {
            self.durable.calendar.user_chose = true;
        }
        self.choose(state, expiry);
        Ok(())
    }

    /// Makes `state` the manual state: permanently, or until `expiry` (T6)
    /// when the state before it comes back.
    fn choose(&mut self, state: ManualState, expiry: Option<Expiry>) {
        let previous = std::mem::take(&mut self.durable.status);
        self.durable.status = match expiry {
            None => StatusLayer {
                state,
                temporary: None,
            },
            Some(until) => StatusLayer {
                state,
                temporary: Some(Temporary {
                    until,
                    restore: Box::new(restorable(previous, until)),
                }),
            },
        };
    }

    fn calendar(
        &mut self,
        event_id: String,
        busy: bool,
        source: CalendarSource,
        ctx: Context<'_>,
    ) -> Result<bool, PresenceError> {
        if let CalendarSource::Device(platform) = source
            && platform != Platform::Desktop
        {
            return Err(PresenceError::UnsupportedCalendarSource { platform });
        }
        let valid_id = !event_id.is_empty()
            && event_id.chars().count() <= MAX_CALENDAR_EVENT_ID_CHARS
            && !event_id.chars().any(char::is_control);
        if !valid_id {
            return Err(PresenceError::CalendarEventIdInvalid {
                max: MAX_CALENDAR_EVENT_ID_CHARS,
            });
        }
        let claims = &mut self.durable.calendar;
        if !busy {
            // Ends are always accepted, so turning the integration off never
            // leaves a user stuck in a meeting.
            let removed = claims.busy_events.remove(&event_id);
            if claims.busy_events.is_empty() {
                claims.user_chose = false;
            }
            return Ok(removed);
        }
        if !ctx.settings.calendar_integration {
            return Err(PresenceError::CalendarDisabled);
        }
        if claims.busy_events.contains(&event_id) {
            return Ok(false);
        }
        if claims.busy_events.len() >= MAX_CALENDAR_EVENTS {
            return Err(PresenceError::TooManyCalendarEvents {
                max: MAX_CALENDAR_EVENTS,
            });
        }
        claims.busy_events.insert(event_id);
        Ok(true)
    }

    /// Returns whether the durable state changed.
    fn advance_inner(&mut self, ctx: Context<'_>) -> bool {
        let prefs = self.durable.preferences.resolve(ctx.settings);
        self.devices.retain(|_, d| d.is_live(ctx.now));
        for device in self.devices.values_mut() {
            device.advance(ctx.now, &prefs);
        }
        let mut expired = false;
        while let Some(temporary) = &self.durable.status.temporary {
            if temporary.until.at() > ctx.now {
                break;
            }
            let restore = self
                .durable
                .status
                .temporary
                .take()
                .expect("checked above")
                .restore;
            self.durable.status = *restore;
            expired = true;
        }
        expired
    }

    fn finish(
        &mut self,
        before_public: PublicView,
        before_self: SelfView,
        durable_changed: bool,
        ctx: Context<'_>,
    ) -> Outcome {
        let public = self.public_view(ctx.settings);
        let public_changed = public != before_public;
        let self_changed = self.self_view(ctx.settings) != before_self;
        if public_changed || self_changed {
            self.durable.version = next_version(self.durable.version, ctx.now);
        }
        if public_changed {
            self.durable.public_version = next_version(self.durable.public_version, ctx.now);
        }
        Outcome {
            public,
            public_changed,
            self_changed,
            // Versions need no storing: they follow the clock (see
            // `next_version`), so only chosen state makes a write.
            durable_changed,
            version: self.durable.version,
            public_version: self.durable.public_version,
        }
    }

    fn device_mut(&mut self, device: &DeviceId) -> Result<&mut Device, PresenceError> {
        self.devices
            .get_mut(device)
            .ok_or_else(|| PresenceError::UnknownDevice {
                device: device.to_string(),
            })
    }

    /// Runs `f` on the manual state of every layer; returns whether any call
    /// returned `true` (changed something).
    fn for_each_layer(&mut self, mut f: impl FnMut(&mut ManualState) -> bool) -> bool {
        let mut changed = false;
        let mut layer = Some(&mut self.durable.status);
        while let Some(l) = layer {
            changed |= f(&mut l.state);
            layer = l.temporary.as_mut().map(|t| &mut *t.restore);
        }
        changed
    }
}

/// W3: the version after `previous` at `now`. Versions grow by at least one
/// per change and jump forward to the clock (in microseconds), so a process
/// that restarts without the last versions of devices-only changes still
/// issues larger versions than before.
pub fn next_version(previous: u64, now: Timestamp) -> u64 {
    let clock = u64::try_from(now.as_millis())
        .unwrap_or(0)
        .saturating_mul(1000);
    previous.saturating_add(1).max(clock)
}

/// The layer an expiry at `until` should restore: `previous`, minus any of
/// its own temporary states that end before `until` (they would have ended
/// by then anyway), with at most [`MAX_RESTORE_DEPTH`] nested levels.
fn restorable(mut previous: StatusLayer, until: Expiry) -> StatusLayer {
    while let Some(t) = &previous.temporary {
        if t.until > until {
            break;
        }
        previous = *previous.temporary.take().expect("checked above").restore;
    }
    // `previous` is the first restore state of the new chain; `depth`
    // counts the restore states up to and including `layer`. (This used to
    // keep one state more than MAX_RESTORE_DEPTH: the cut was made one
    // level too deep.)
    let mut depth = 1;
    let mut layer = &mut previous;
    while layer.temporary.is_some() {
        if depth >= MAX_RESTORE_DEPTH {
            // The oldest state we keep becomes permanent.
            layer.temporary = None;
            break;
        }
        depth += 1;
        layer = &mut *layer.temporary.as_mut().expect("checked above").restore;
    }
    previous
}

//! The embedded backend: every role in one process (DESIGN §2 "Embedded
//! default"), as a thin driver of `presence-engine`.
//!
//! One [`Engine`] holds every user (like a cluster with one shard, whose
//! engine also owns the workspace settings, custom statuses and cap).
//! Each request locks it, calls it at the clock's `now`, closes the batch
//! and turns the [`Changes`] into effects while still holding the lock:
//! updates on the broadcast channel, and writes to the [`DurableStore`]
//! that the caller awaits before it answers when durable state changed
//! (M3). Time-driven transitions (idle timers, grace periods, expiries)
//! run on one timer task that sleeps until the engine's next deadline.
//!
//! Why one engine and not one per lock shard: the engine must see every
//! user to re-evaluate settings and fan out custom statuses, and it owns
//! the cap; with several, each of those would be replicated across them
//! (what the cluster does over Redis, for reasons the embedded mode does
//! not have). A request holds the lock for microseconds; the only reads
//! that walk every user are the admin and Rocket.Chat directory listings.
//!
//! **Architecture Invariant:** updates are published while the engine's
//! lock is held, so the updates of one user leave in version order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use presence_core::{
    CalendarSource, CapState, ChosenStatus, Command, CustomStatus, CustomStatusId,
    CustomStatusName, DeviceEvent, DisplayedStatus, PreferencesUpdate, StatusRequest, Timestamp,
    UserPresence, WorkspaceSettings, next_version,
};
use presence_engine::{Announcement, CapOwner, Changes, Engine, EngineConfig, RestoredUser};
use tokio::sync::{Notify, broadcast};

use crate::durable::{DurableStore, PersistedCap, Profile, Write, WriteTicket};
use presence_backend::{
    Backend, BackendError, BackendResult, ConnectInfo, PresenceSnapshot, SelfSnapshot, Session,
    SettingsPatch, SocketEnd, StatusCounts, Update, UserListing,
};

/// A source of wall-clock time; tests may substitute their own.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Timestamp::from_millis(ms)
    }
}

/// Settings of the embedded backend.
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    /// D7: how long a device whose socket dropped shows `away`.
    pub disconnect_grace: Duration,
    /// Capacity of the update channel; receivers that fall further behind
    /// get `Lagged` and must resync.
    pub update_channel_capacity: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            disconnect_grace: Duration::from_secs(30),
            update_channel_capacity: 65_536,
        }
    }
}

/// The in-process backend.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

/// The one gateway node of the embedded mode, as the engine's socket
/// owners name it.
const LOCAL_NODE: &str = "local";

struct Inner {
    clock: Arc<dyn Clock>,
    store: Arc<dyn DurableStore>,
    state: Mutex<State>,
    updates: broadcast::Sender<Update>,
    timer_wakeup: Notify,
    stopped: AtomicBool,
    next_custom_id: AtomicU64,
}

/// Everything behind the lock.
struct State {
    engine: Engine,
    /// The workspace settings as handed to callers (the engine's).
    settings: Arc<WorkspaceSettings>,
    /// Open sockets, for the cap (X1).
    connections: u64,
    /// Username → user id (Rocket.Chat looks users up by name).
    usernames: HashMap<String, Arc<str>>,
    /// The deadline the timer task sleeps until, if it sleeps on one.
    armed: Option<Timestamp>,
}

impl MemoryBackend {
    /// Loads the durable data from `store` and starts the timer task.
    /// Must be called inside a tokio runtime.
    pub fn start(
        config: MemoryConfig,
        store: Arc<dyn DurableStore>,
        clock: Arc<dyn Clock>,
    ) -> BackendResult<MemoryBackend> {
        let snapshot = store.load()?;
        let settings = snapshot.settings.unwrap_or_default();
        let stored_cap = snapshot.cap.map(|persisted| CapState {
            enabled: persisted.cap_enabled,
            peak: persisted.peak,
            ..CapState::new(settings.cap)
        });
        let cap = CapOwner::restore(stored_cap, settings.cap);
        let next_custom_id = snapshot.custom_statuses.len() as u64;
        // One node ("local") that never dies: no per-node device index.
        let engine_config = EngineConfig {
            disconnect_grace: config.disconnect_grace,
            device_timeout: None,
            index_devices_by_node: false,
        };
        let mut engine = Engine::new(
            engine_config,
            settings.clone(),
            snapshot.custom_statuses,
            Some(cap),
        );
        let now = clock.now();
        let mut usernames = HashMap::new();
        for (id, record) in snapshot.users {
            if let Some(username) = &record.profile.username {
                usernames.insert(username.clone(), Arc::from(id.as_str()));
            }
            let mut durable = record.state;
            // Data stored before public versions existed: the version
            // watchers last saw is at most the user's version.
            if durable.public_version == 0 {
                durable.public_version = durable.version;
            }
            // W3: the stored versions are those of the last durable change,
            // but device-only changes after it were published with larger
            // versions, and the devices are gone now (the user shows
            // offline). Move past every version issued before the restart;
            // versions follow the clock, so this needs no write.
            durable.version = next_version(durable.version, now);
            // I3: an invisible user's public view was `offline` without
            // text before the restart and still is, so its version stays:
            // a restart reveals nothing about them. Anyone else's may have
            // changed with their devices, so it moves.
            if durable.status.state.chosen != ChosenStatus::Invisible {
                durable.public_version = next_version(durable.public_version, now);
            }
            // When the public view last changed, as far as anyone could
            // tell: the public version follows the clock in microseconds.
            // (The record's `updated_at` also moves on private changes.)
            let public_ms = i64::try_from(durable.public_version / 1000).unwrap_or(i64::MAX);
            let restored = RestoredUser {
                durable,
                profile: record.profile,
                devices: Vec::new(),
                committed: None,
                changed_at: Timestamp::from_millis(public_ms.min(now.as_millis())),
            };
            engine.restore(&id, restored);
        }
        // Expiries that passed while we were down take effect now.
        engine.advance_everyone(now);
        let (updates, _) = broadcast::channel(config.update_channel_capacity.max(16));
        let inner = Arc::new(Inner {
            clock,
            store,
            state: Mutex::new(State {
                engine,
                settings: Arc::new(settings),
                connections: 0,
                usernames,
                armed: None,
            }),
            updates,
            timer_wakeup: Notify::new(),
            stopped: AtomicBool::new(false),
            next_custom_id: AtomicU64::new(next_custom_id),
        });
        // Best effort: an expiry is recomputed on the next start too.
        drop(inner.with_engine(|_, _| ()).1);
        let backend = MemoryBackend { inner };
        tokio::spawn(backend.clone().run_timers());
        Ok(backend)
    }

    /// The timer task: sleeps until the engine's next deadline (or a
    /// wake-up because an earlier one appeared), then advances the engine.
    async fn run_timers(self) {
        let inner = &self.inner;
        while !inner.stopped.load(Ordering::Acquire) {
            let now = inner.clock.now();
            let next = {
                let mut state = inner.state.lock();
                let next = state.engine.next_deadline();
                state.armed = next.filter(|at| *at > now);
                next
            };
            match next {
                None => inner.timer_wakeup.notified().await,
                Some(at) if at > now => {
                    tokio::select! {
                        () = tokio::time::sleep(at.saturating_since(now)) => {}
                        () = inner.timer_wakeup.notified() => {}
                    }
                }
                Some(_) => {
                    let ((), ticket) = inner.with_engine(|state, now| state.engine.advance(now));
                    if let Err(e) = await_ticket(ticket).await {
                        tracing::warn!(error = %e, "timer transition failed to persist");
                    }
                }
            }
        }
    }

    /// Runs `command` for `user` (recording the token's `profile` first)
    /// and returns what the user now sees.
    async fn run(
        &self,
        user: &str,
        profile: Option<&Profile>,
        command: Command,
    ) -> BackendResult<SelfSnapshot> {
        let (result, ticket) = self.inner.with_engine(|state, now| {
            if let Some(profile) = profile {
                state.note_profile(user, profile);
            }
            state.engine.apply(user, command, now)?;
            Ok::<_, BackendError>(state.self_snapshot(user))
        });
        let me = result?;
        await_ticket(ticket).await?;
        Ok(me)
    }

    fn new_custom_id(&self) -> CustomStatusId {
        let n = self.inner.next_custom_id.fetch_add(1, Ordering::Relaxed);
        let now = self.inner.clock.now().as_millis();
        CustomStatusId::try_from(format!("cs{now:x}{n:x}"))
            .expect("a generated custom status id is short and printable")
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn connect(&self, session: &Session) -> BackendResult<ConnectInfo> {
        let (result, ticket) = self.inner.with_engine(|state, now| {
            state.connections += 1;
            state.engine.observe_connections(state.connections);
            state.note_profile(&session.user, &session.profile);
            let connected = state.engine.connect(
                &session.user,
                session.device.clone(),
                session.platform,
                (LOCAL_NODE, session.conn.0),
                &Profile::default(),
                now,
            );
            if connected.is_err() {
                state.connections -= 1;
            }
            connected.map(|()| {
                let me = state.self_snapshot(&session.user);
                let active = state.engine.cap().is_none_or(|cap| cap.enabled);
                (me, state.settings.clone(), active)
            })
        });
        let (me, settings, presence_active) = result?;
        // The device is registered; if its durable write failed, take it
        // back out so a refused connect leaves no ghost device or count.
        if let Err(e) = await_ticket(ticket).await {
            let _ = self.disconnect(session, SocketEnd::Clean).await;
            return Err(e);
        }
        Ok(ConnectInfo {
            me,
            settings,
            presence_active,
        })
    }

    async fn device_event(&self, session: &Session, event: DeviceEvent) -> BackendResult<()> {
        let command = Command::DeviceEvent {
            device: session.device.clone(),
            event,
        };
        self.run(&session.user, None, command).await.map(drop)
    }

    async fn calendar(
        &self,
        user: &str,
        event_id: String,
        busy: bool,
        source: CalendarSource,
    ) -> BackendResult<SelfSnapshot> {
        let command = Command::Calendar {
            event_id,
            busy,
            source,
        };
        self.run(user, None, command).await
    }

    async fn disconnect(&self, session: &Session, end: SocketEnd) -> BackendResult<()> {
        let (result, ticket) = self.inner.with_engine(|state, now| {
            // Saturating: a second disconnect of one socket must not wrap
            // the count to u64::MAX (which would disable the broadcast).
            state.connections = state.connections.saturating_sub(1);
            state.engine.observe_connections(state.connections);
            // A replaced socket, or a device that already left, is ignored.
            state.engine.disconnect(
                &session.user,
                session.device.clone(),
                (LOCAL_NODE, session.conn.0),
                end,
                now,
            )
        });
        result?;
        await_ticket(ticket).await
    }

    async fn set_status(
        &self,
        user: &str,
        profile: Option<&Profile>,
        request: StatusRequest,
    ) -> BackendResult<SelfSnapshot> {
        self.run(user, profile, Command::SetStatus(request)).await
    }

    async fn use_custom_status(
        &self,
        user: &str,
        profile: Option<&Profile>,
        id: &CustomStatusId,
    ) -> BackendResult<SelfSnapshot> {
        let (result, ticket) = self.inner.with_engine(|state, now| {
            if let Some(profile) = profile {
                state.note_profile(user, profile);
            }
            state.engine.use_custom_status(user, id, now)?;
            Ok::<_, BackendError>(state.self_snapshot(user))
        });
        let me = result?;
        await_ticket(ticket).await?;
        Ok(me)
    }

    async fn set_preferences(
        &self,
        user: &str,
        update: PreferencesUpdate,
    ) -> BackendResult<SelfSnapshot> {
        self.run(user, None, Command::SetPreferences(update)).await
    }

    async fn self_state(&self, user: &str) -> BackendResult<SelfSnapshot> {
        Ok(self.inner.state.lock().self_snapshot(user))
    }

    async fn touch_profile(&self, user: &str, profile: &Profile) -> BackendResult<()> {
        let ((), ticket) = self
            .inner
            .with_engine(|state, _| state.note_profile(user, profile));
        await_ticket(ticket).await
    }

    async fn put_profile(&self, user: &str, profile: &Profile) -> BackendResult<()> {
        let ((), ticket) = self.inner.with_engine(|state, _| {
            state.index_username(user, |engine| engine.put_profile(user, profile))
        });
        await_ticket(ticket).await
    }

    async fn presence(&self, users: &[Arc<str>]) -> BackendResult<Vec<PresenceSnapshot>> {
        let state = self.inner.state.lock();
        Ok(users
            .iter()
            .map(|user| state.presence_snapshot(user))
            .collect())
    }

    async fn list_not_offline(&self, ids: Option<&[Arc<str>]>) -> BackendResult<Vec<UserListing>> {
        let state = self.inner.state.lock();
        let listing = |id: &str| {
            let listing = state.listing(id)?;
            (listing.presence.view.status != DisplayedStatus::Offline).then_some(listing)
        };
        Ok(match ids {
            Some(ids) => ids.iter().filter_map(|id| listing(id)).collect(),
            None => state
                .engine
                .each_user()
                .filter_map(|user| listing(user.id))
                .collect(),
        })
    }

    async fn list_changed_since(
        &self,
        since: Timestamp,
        except: &str,
    ) -> BackendResult<Vec<UserListing>> {
        let state = self.inner.state.lock();
        Ok(state
            .engine
            .each_user()
            .filter(|user| user.changed_at >= since && &**user.id != except)
            .filter_map(|user| state.listing(user.id))
            .collect())
    }

    async fn user_by_username(&self, username: &str) -> BackendResult<Option<Arc<str>>> {
        Ok(self.inner.state.lock().usernames.get(username).cloned())
    }

    async fn status_counts(&self) -> BackendResult<StatusCounts> {
        Ok(self.inner.state.lock().engine.counts())
    }

    async fn settings(&self) -> BackendResult<Arc<WorkspaceSettings>> {
        Ok(self.inner.state.lock().settings.clone())
    }

    async fn update_settings(&self, patch: SettingsPatch) -> BackendResult<Arc<WorkspaceSettings>> {
        let ((), ticket) = self.inner.with_engine(|state, now| {
            state.engine.update_settings(&patch, now);
        });
        await_ticket(ticket).await?;
        Ok(self.inner.state.lock().settings.clone())
    }

    async fn custom_statuses(&self) -> BackendResult<Vec<CustomStatus>> {
        let state = self.inner.state.lock();
        Ok(state
            .engine
            .custom_statuses()
            .list()
            .into_iter()
            .cloned()
            .collect())
    }

    async fn create_custom_status(
        &self,
        name: CustomStatusName,
        status_type: DisplayedStatus,
    ) -> BackendResult<CustomStatus> {
        let id = self.new_custom_id();
        let (status, ticket) = self.inner.with_engine(|state, now| {
            state
                .engine
                .create_custom_status(id, name, status_type, now)
        });
        let status = status?;
        await_ticket(ticket).await?;
        Ok(status)
    }

    async fn update_custom_status(
        &self,
        id: &CustomStatusId,
        name: Option<CustomStatusName>,
        status_type: Option<DisplayedStatus>,
    ) -> BackendResult<CustomStatus> {
        let (status, ticket) = self.inner.with_engine(|state, now| {
            state
                .engine
                .update_custom_status(id, name, status_type, now)
        });
        let status = status?;
        await_ticket(ticket).await?;
        Ok(status)
    }

    async fn delete_custom_status(&self, id: &CustomStatusId) -> BackendResult<CustomStatus> {
        let (status, ticket) = self
            .inner
            .with_engine(|state, now| state.engine.delete_custom_status(id, now));
        let status = status?;
        await_ticket(ticket).await?;
        Ok(status)
    }

    async fn cap_state(&self) -> BackendResult<CapState> {
        let state = self.inner.state.lock();
        Ok(state.cap())
    }

    async fn enable_broadcast(&self) -> BackendResult<CapState> {
        let (result, ticket) = self
            .inner
            .with_engine(|state, _| state.engine.enable_broadcast().map(|_| state.cap()));
        let cap = result?;
        await_ticket(ticket).await?;
        Ok(cap)
    }

    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.inner.updates.subscribe()
    }

    async fn ready(&self) -> bool {
        !self.inner.stopped.load(Ordering::Acquire)
    }

    async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.timer_wakeup.notify_one();
        let cap = self.inner.state.lock().cap();
        let ticket = self.inner.store.write(vec![Write::Cap(persisted(&cap))]);
        if let Err(e) = ticket.await {
            tracing::warn!(error = %e, "could not persist the cap state at shutdown");
        }
    }
}

impl Inner {
    /// Runs `f` on the engine under the lock at the clock's `now`, then
    /// closes the batch and applies its changes (still under the lock).
    /// Returns `f`'s result and the ticket of the writes to await before
    /// answering, if any.
    fn with_engine<R>(
        &self,
        f: impl FnOnce(&mut State, Timestamp) -> R,
    ) -> (R, Option<WriteTicket>) {
        let mut state = self.state.lock();
        let now = self.clock.now();
        let result = f(&mut state, now);
        let changes = state.engine.finish(now);
        let ticket = self.apply_changes(&mut state, changes);
        let next = state.engine.next_deadline();
        if next.is_some_and(|at| state.armed.is_none_or(|armed| at < armed)) {
            state.armed = next;
            self.timer_wakeup.notify_one();
        }
        (result, ticket)
    }

    /// Publishes the updates of `changes` and submits their writes. Writes
    /// of durable state (M3) come back as a ticket to await; a record that
    /// only holds a new profile is written without waiting.
    fn apply_changes(&self, state: &mut State, changes: Changes) -> Option<WriteTicket> {
        let mut awaited = Vec::new();
        let mut unawaited = Vec::new();
        let mut settings = None;
        for announcement in &changes.announcements {
            match announcement {
                Announcement::Broadcast { active } => {
                    let _ = self.updates.send(Update::Broadcast { active: *active });
                    awaited.push(Write::Cap(persisted(&state.cap())));
                }
                Announcement::Settings(new) => {
                    let new = Arc::new(new.clone());
                    state.settings = new.clone();
                    awaited.push(Write::Settings((*new).clone()));
                    settings = Some(new);
                }
                Announcement::CustomStatus(status) => {
                    awaited.push(Write::CustomStatus(status.clone()));
                }
                Announcement::CustomStatusDeleted(id) => {
                    awaited.push(Write::DeleteCustomStatus(id.clone()));
                }
            }
        }
        for (id, change) in changes.users {
            if let Some(view) = change.public {
                let _ = self.updates.send(Update::Presence {
                    snapshot: Arc::new(PresenceSnapshot {
                        user: id.clone(),
                        view,
                        version: change.public_version,
                    }),
                    changed_at: SystemTime::now(),
                });
            }
            if let Some(view) = change.self_view {
                let _ = self.updates.send(Update::SelfState(Arc::new(SelfSnapshot {
                    user: id.clone(),
                    view,
                    version: change.version,
                })));
            }
            if let Some(record) = change.record {
                let write = Write::User {
                    id: id.to_string(),
                    record,
                };
                if change.durable_changed {
                    awaited.push(write);
                } else {
                    unawaited.push(write);
                }
            }
        }
        if let Some(settings) = settings {
            let _ = self.updates.send(Update::Settings(settings));
        }
        if !unawaited.is_empty() {
            drop(self.store.write(unawaited));
        }
        (!awaited.is_empty()).then(|| self.store.write(awaited))
    }
}

impl State {
    /// Records the profile a token carried and keeps the username index.
    fn note_profile(&mut self, user: &str, profile: &Profile) {
        self.index_username(user, |engine| engine.touch_profile(user, profile));
    }

    /// Runs `change` on `user`'s profile and keeps the username index.
    fn index_username(&mut self, user: &str, change: impl FnOnce(&mut Engine)) {
        let old = self
            .engine
            .user(user)
            .and_then(|u| u.profile.username.clone());
        change(&mut self.engine);
        let Some(entry) = self.engine.user(user) else {
            return;
        };
        let new = entry.profile.username.clone();
        if new == old {
            return;
        }
        let id = entry.id.clone();
        if let Some(old) = old
            && self.usernames.get(&old) == Some(&id)
        {
            // The old name may have moved to another user since.
            self.usernames.remove(&old);
        }
        if let Some(new) = new {
            self.usernames.insert(new, id);
        }
    }

    /// What `user` sees of themselves (defaults for an unknown user).
    fn self_snapshot(&self, user: &str) -> SelfSnapshot {
        let settings = self.engine.settings();
        match self.engine.user(user) {
            Some(u) => SelfSnapshot {
                user: u.id.clone(),
                view: u.presence.self_view(settings),
                version: u.presence.durable.version,
            },
            None => SelfSnapshot {
                user: Arc::from(user),
                view: UserPresence::default().self_view(settings),
                version: 0,
            },
        }
    }

    /// What others see of `user`, with the public version (I3: it moves
    /// only when the public view does).
    fn presence_snapshot(&self, user: &Arc<str>) -> PresenceSnapshot {
        let settings = self.engine.settings();
        match self.engine.user(user) {
            Some(u) => PresenceSnapshot {
                user: user.clone(),
                view: u.presence.public_view(settings),
                version: u.presence.durable.public_version,
            },
            None => PresenceSnapshot {
                user: user.clone(),
                view: UserPresence::default().public_view(settings),
                version: 0,
            },
        }
    }

    fn listing(&self, user: &str) -> Option<UserListing> {
        let u = self.engine.user(user)?;
        Some(UserListing {
            presence: PresenceSnapshot {
                user: u.id.clone(),
                view: u.presence.public_view(self.engine.settings()),
                version: u.presence.durable.public_version,
            },
            profile: u.profile.clone(),
        })
    }

    /// X5: the cap with the current count.
    fn cap(&self) -> CapState {
        let mut cap = self
            .engine
            .cap()
            .unwrap_or_else(|| CapState::new(self.settings.cap));
        cap.count = self.connections;
        cap
    }
}

fn persisted(cap: &CapState) -> PersistedCap {
    PersistedCap {
        cap_enabled: cap.enabled,
        peak: cap.peak,
    }
}

async fn await_ticket(ticket: Option<WriteTicket>) -> BackendResult<()> {
    match ticket {
        Some(ticket) => ticket.await.map_err(BackendError::from),
        None => Ok(()),
    }
}

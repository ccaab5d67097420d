//! The embedded backend: every role in one process (DESIGN §2 "Embedded
//! default"). Users live in sharded in-memory maps; each change runs the
//! `presence-core` rules under the user's shard lock, publishes the result
//! on the update channel and, when the chosen state changed, is written to
//! the [`DurableStore`] before the caller gets its answer (M3).
//!
//! Time-driven transitions (idle timers, grace periods, expiries) run on one
//! scheduler task that wakes at the earliest `next_deadline` of any user.
//!
//! **Architecture Invariant:** updates of one user are published while that
//! user's shard lock is held, so they leave in version order.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use presence_core::{
    CalendarSource, CapState, CapTransition, ChosenStatus, Command, Context, CustomStatus,
    CustomStatusId, CustomStatusName, CustomStatusRegistry, DeviceEvent, DeviceId, Disconnect,
    DisplayedStatus, PreferencesUpdate, PresenceError, SelfStatus, StatusRequest, Timestamp,
    UserPresence, WorkspaceSettings, next_version,
};
use tokio::sync::{Notify, broadcast};

use crate::backend::{
    Backend, BackendError, BackendResult, ConnId, ConnectInfo, PresenceSnapshot, SelfSnapshot,
    Session, SettingsPatch, SocketEnd, StatusCounts, Update, UserListing,
};
use crate::durable::{DurableStore, PersistedCap, Profile, UserRecord, Write, WriteTicket};

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
    /// Number of user shards (locks).
    pub shards: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            disconnect_grace: Duration::from_secs(30),
            update_channel_capacity: 65_536,
            shards: 64,
        }
    }
}

/// The in-process backend.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: MemoryConfig,
    clock: Arc<dyn Clock>,
    store: Arc<dyn DurableStore>,
    shards: Box<[Mutex<UserShard>]>,
    hasher: std::collections::hash_map::RandomState,
    settings: RwLock<Arc<WorkspaceSettings>>,
    custom: Mutex<CustomStatusRegistry>,
    cap: Mutex<CapState>,
    connections: AtomicU64,
    usernames: RwLock<HashMap<String, Arc<str>>>,
    counts: [AtomicI64; 4],
    updates: broadcast::Sender<Update>,
    timers: Mutex<BTreeSet<(Timestamp, Arc<str>)>>,
    timer_wakeup: Notify,
    stopped: AtomicBool,
    next_custom_id: AtomicU64,
}

type UserShard = HashMap<Arc<str>, UserEntry>;

struct UserEntry {
    presence: UserPresence,
    profile: Profile,
    /// The live socket of each device; a disconnect from another socket
    /// (one that was replaced) is ignored.
    /// (A user has few devices: a vector is smaller than a map.)
    conns: Vec<(DeviceId, ConnId)>,
    /// The deadline this user is queued at in `timers`, if any.
    scheduled: Option<Timestamp>,
    /// When the public view last changed.
    changed_at: Timestamp,
    /// The public status last counted in `counts`.
    counted: Option<Counted>,
}

impl UserEntry {
    /// What others see of this user, with the public version (I3: it
    /// moves only when the public view does).
    fn snapshot(&self, id: &Arc<str>, settings: &WorkspaceSettings) -> PresenceSnapshot {
        PresenceSnapshot {
            user: id.clone(),
            view: self.presence.public_view(settings),
            version: self.presence.durable.public_version,
        }
    }

    fn listing(&self, id: &Arc<str>, settings: &WorkspaceSettings) -> UserListing {
        UserListing {
            presence: self.snapshot(id, settings),
            profile: self.profile.clone(),
        }
    }

    fn new() -> Self {
        Self {
            presence: UserPresence::default(),
            profile: Profile::default(),
            conns: Vec::new(),
            scheduled: None,
            changed_at: Timestamp::default(),
            counted: None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Counted {
    Online = 0,
    Away = 1,
    Busy = 2,
    Invisible = 3,
}

impl MemoryBackend {
    /// Loads the durable data from `store` and starts the scheduler task.
    /// Must be called inside a tokio runtime.
    pub fn start(
        config: MemoryConfig,
        store: Arc<dyn DurableStore>,
        clock: Arc<dyn Clock>,
    ) -> BackendResult<MemoryBackend> {
        let snapshot = store.load()?;
        let settings = snapshot.settings.unwrap_or_default();
        let mut cap = CapState::new(settings.cap);
        if let Some(persisted) = snapshot.cap {
            cap.enabled = persisted.cap_enabled;
            cap.peak = persisted.peak;
        }
        let shards = (0..config.shards.max(1))
            .map(|_| Mutex::new(HashMap::new()))
            .collect();
        let (updates, _) = broadcast::channel(config.update_channel_capacity.max(16));
        let next_custom_id = snapshot.custom_statuses.len() as u64;
        let inner = Arc::new(Inner {
            config,
            clock,
            store,
            shards,
            hasher: Default::default(),
            settings: RwLock::new(Arc::new(settings)),
            custom: Mutex::new(CustomStatusRegistry::from_statuses(
                snapshot.custom_statuses,
            )),
            cap: Mutex::new(cap),
            connections: AtomicU64::new(0),
            usernames: RwLock::new(HashMap::new()),
            counts: Default::default(),
            updates,
            timers: Mutex::new(BTreeSet::new()),
            timer_wakeup: Notify::new(),
            stopped: AtomicBool::new(false),
            next_custom_id: AtomicU64::new(next_custom_id),
        });
        let now = inner.clock.now();
        let settings = inner.settings();
        for (id, record) in snapshot.users {
            let id: Arc<str> = Arc::from(id);
            if let Some(username) = &record.profile.username {
                inner.usernames.write().insert(username.clone(), id.clone());
            }
            let mut presence = UserPresence::from_durable(record.state);
            let durable = &mut presence.durable;
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
            let mut entry = UserEntry {
                presence,
                profile: record.profile,
                conns: Vec::new(),
                scheduled: None,
                changed_at: Timestamp::from_millis(public_ms.min(now.as_millis())),
                counted: None,
            };
            // Expiries that passed while we were down take effect now.
            let outcome = entry.presence.advance(Context {
                now,
                settings: &settings,
            });
            let mut shard = inner.shard(&id).lock();
            inner.schedule(&id, &mut entry, &settings);
            if outcome.durable_changed {
                // Best effort: the expiry is recomputed on the next start too.
                drop(inner.store.write(vec![inner.user_write(&id, &entry, now)]));
            }
            shard.insert(id, entry);
        }
        let backend = MemoryBackend { inner };
        tokio::spawn(backend.clone().run_timers());
        Ok(backend)
    }

    async fn run_timers(self) {
        let inner = &self.inner;
        while !inner.stopped.load(Ordering::Acquire) {
            let head = inner.timers.lock().first().map(|(t, _)| *t);
            let now = inner.clock.now();
            match head {
                None => inner.timer_wakeup.notified().await,
                Some(at) if at > now => {
                    let wait = at.saturating_since(now);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = inner.timer_wakeup.notified() => {}
                    }
                }
                Some(_) => {
                    let due: Vec<(Timestamp, Arc<str>)> = {
                        let mut timers = inner.timers.lock();
                        let mut due = Vec::new();
                        while let Some(first) = timers.first() {
                            if first.0 > now {
                                break;
                            }
                            due.push(timers.pop_first().expect("checked above"));
                        }
                        due
                    };
                    for (at, user) in due {
                        if let Err(e) = self.fire_timer(at, &user).await {
                            tracing::warn!(error = %e, "timer transition failed to persist");
                        }
                    }
                }
            }
        }
    }

    async fn fire_timer(&self, at: Timestamp, user: &Arc<str>) -> BackendResult<()> {
        let ticket = {
            let mut shard = self.inner.shard(user).lock();
            let Some(entry) = shard.get_mut(user) else {
                return Ok(());
            };
            if entry.scheduled != Some(at) {
                return Ok(()); // A stale duplicate; the entry was rescheduled.
            }
            entry.scheduled = None;
            let settings = self.inner.settings();
            let now = self.inner.clock.now();
            let ctx = Context {
                now,
                settings: &settings,
            };
            let outcome = entry.presence.advance(ctx);
            self.inner
                .after_change(user, entry, &outcome, &settings, now)
        };
        await_ticket(ticket).await
    }

    /// Runs `command` for `user` and returns what the user now sees.
    async fn run(
        &self,
        user: &str,
        profile: Option<&Profile>,
        command: Command,
    ) -> BackendResult<SelfSnapshot> {
        let (snapshot, ticket) = self.inner.with_user(user, profile, |inner, id, entry| {
            let settings = inner.settings();
            let now = inner.clock.now();
            let outcome = entry.presence.apply(
                command,
                Context {
                    now,
                    settings: &settings,
                },
            )?;
            let ticket = inner.after_change(id, entry, &outcome, &settings, now);
            Ok((inner.self_snapshot(id, entry, &settings), ticket))
        })?;
        await_ticket(ticket).await?;
        Ok(snapshot)
    }

    /// Applies `f` to every user that `matches`, as one admin operation.
    async fn for_users(
        &self,
        matches: impl Fn(&UserPresence) -> bool,
        command: impl Fn() -> Command,
    ) -> BackendResult<()> {
        let settings = self.inner.settings();
        let now = self.inner.clock.now();
        let mut tickets = Vec::new();
        for shard in self.inner.shards.iter() {
            let mut shard = shard.lock();
            for (id, entry) in shard.iter_mut() {
                if !matches(&entry.presence) {
                    continue;
                }
                let ctx = Context {
                    now,
                    settings: &settings,
                };
                if let Ok(outcome) = entry.presence.apply(command(), ctx) {
                    tickets.push(self.inner.after_change(id, entry, &outcome, &settings, now));
                }
            }
        }
        for ticket in tickets {
            await_ticket(ticket).await?;
        }
        Ok(())
    }

    /// Re-evaluates every user after a settings change: defaults of the
    /// preferences may have moved (S1), which changes idle devices.
    fn reevaluate_all(&self, old: &WorkspaceSettings, new: &WorkspaceSettings) {
        let now = self.inner.clock.now();
        for shard in self.inner.shards.iter() {
            let mut shard = shard.lock();
            for (id, entry) in shard.iter_mut() {
                let before_public = entry.presence.public_view(old);
                let before_self = entry.presence.self_view(old);
                let public_version = entry.presence.durable.public_version;
                let mut outcome = entry.presence.advance(Context { now, settings: new });
                outcome.public_changed |= outcome.public != before_public;
                outcome.self_changed |= entry.presence.self_view(new) != before_self;
                if outcome.changed() && outcome.version == entry.presence.durable.version {
                    let bumped = next_version(entry.presence.durable.version, now);
                    entry.presence.durable.version = bumped;
                    outcome.version = bumped;
                }
                if outcome.public_changed && outcome.public_version == public_version {
                    let bumped = next_version(public_version, now);
                    entry.presence.durable.public_version = bumped;
                    outcome.public_version = bumped;
                }
                drop(self.inner.after_change(id, entry, &outcome, new, now));
            }
        }
    }

    fn publish_cap(
        &self,
        transition: Option<CapTransition>,
        cap: &CapState,
    ) -> Option<WriteTicket> {
        let transition = transition?;
        let active = transition == CapTransition::Enabled;
        tracing::info!(
            active,
            count = cap.count,
            cap = cap.cap,
            "presence broadcast {}",
            if active { "enabled" } else { "disabled" }
        );
        let _ = self.inner.updates.send(Update::Broadcast { active });
        Some(self.inner.store.write(vec![Write::Cap(PersistedCap {
            cap_enabled: cap.enabled,
            peak: cap.peak,
        })]))
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
        let count = self.inner.connections.fetch_add(1, Ordering::AcqRel) + 1;
        let (transition, cap) = {
            let mut cap = self.inner.cap.lock();
            (cap.observe_count(count), *cap)
        };
        let cap_ticket = self.publish_cap(transition, &cap);
        let command = Command::Connect {
            device: session.device.clone(),
            platform: session.platform,
        };
        let result =
            self.inner
                .with_user(&session.user, Some(&session.profile), |inner, id, entry| {
                    let settings = inner.settings();
                    let now = inner.clock.now();
                    let ctx = Context {
                        now,
                        settings: &settings,
                    };
                    let outcome = entry.presence.apply(command, ctx)?;
                    entry.conns.retain(|(d, _)| *d != session.device);
                    entry.conns.push((session.device.clone(), session.conn));
                    let ticket = inner.after_change(id, entry, &outcome, &settings, now);
                    Ok((inner.self_snapshot(id, entry, &settings), ticket))
                });
        let (me, ticket) = match result {
            Ok(ok) => ok,
            Err(e) => {
                self.inner.connections.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        // The device is registered; if its durable write failed, take it
        // back out so a refused connect leaves no ghost device or count.
        let written = match await_ticket(ticket).await {
            Ok(()) => await_ticket(cap_ticket).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            let _ = self.disconnect(session, SocketEnd::Clean).await;
            return Err(e);
        }
        Ok(ConnectInfo {
            me,
            settings: self.inner.settings(),
            presence_active: cap.enabled,
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
        // Saturating: a second disconnect of one socket must not wrap the
        // count to u64::MAX (which would disable the broadcast).
        let _ = self
            .inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        {
            let mut cap = self.inner.cap.lock();
            let count = self.inner.connections.load(Ordering::Acquire);
            cap.observe_count(count);
        }
        let grace = self.inner.config.disconnect_grace;
        let result = self
            .inner
            .with_user(&session.user, None, |inner, id, entry| {
                let live = (session.device.clone(), session.conn);
                if !entry.conns.contains(&live) {
                    return Ok(None); // Replaced by a newer socket of the same device.
                }
                entry.conns.retain(|c| *c != live);
                let settings = inner.settings();
                let now = inner.clock.now();
                let how = match end {
                    SocketEnd::Clean => Disconnect::Clean,
                    SocketEnd::Lost => Disconnect::Lost {
                        grace_until: now + grace,
                    },
                };
                let command = Command::Disconnect {
                    device: session.device.clone(),
                    how,
                };
                let ctx = Context {
                    now,
                    settings: &settings,
                };
                let outcome = entry.presence.apply(command, ctx)?;
                Ok(inner.after_change(id, entry, &outcome, &settings, now))
            });
        match result {
            Ok(ticket) => await_ticket(ticket).await,
            // The device already left (its grace ended, or it was removed).
            Err(BackendError::Rule(PresenceError::UnknownDevice { .. })) => Ok(()),
            Err(e) => Err(e),
        }
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
        let custom = self.inner.custom.lock().get(id)?.clone();
        self.run(user, profile, Command::UseCustomStatus(custom))
            .await
    }

    async fn set_preferences(
        &self,
        user: &str,
        update: PreferencesUpdate,
    ) -> BackendResult<SelfSnapshot> {
        self.run(user, None, Command::SetPreferences(update)).await
    }

    async fn self_state(&self, user: &str) -> BackendResult<SelfSnapshot> {
        let settings = self.inner.settings();
        let shard = self.inner.shard(user).lock();
        Ok(match shard.get_key_value(user) {
            Some((id, entry)) => self.inner.self_snapshot(id, entry, &settings),
            None => {
                let presence = UserPresence::default();
                SelfSnapshot {
                    user: Arc::from(user),
                    view: presence.self_view(&settings),
                    version: 0,
                }
            }
        })
    }

    async fn touch_profile(&self, user: &str, profile: &Profile) -> BackendResult<()> {
        let ticket = self
            .inner
            .with_user(user, Some(profile), |_, _, _| Ok(()))
            .map(|()| None::<WriteTicket>)?;
        await_ticket(ticket).await
    }

    async fn presence(&self, users: &[Arc<str>]) -> BackendResult<Vec<PresenceSnapshot>> {
        let settings = self.inner.settings();
        Ok(users
            .iter()
            .map(|user| {
                let shard = self.inner.shard(user).lock();
                match shard.get(user) {
                    Some(entry) => entry.snapshot(user, &settings),
                    None => UserEntry::new().snapshot(user, &settings),
                }
            })
            .collect())
    }

    async fn list_not_offline(&self, ids: Option<&[Arc<str>]>) -> BackendResult<Vec<UserListing>> {
        let settings = self.inner.settings();
        let listing = |id: &Arc<str>, entry: &UserEntry| {
            let listing = entry.listing(id, &settings);
            (listing.presence.view.status != DisplayedStatus::Offline).then_some(listing)
        };
        let mut out = Vec::new();
        match ids {
            Some(ids) => {
                for id in ids {
                    let shard = self.inner.shard(id).lock();
                    if let Some(l) = shard.get(id).and_then(|e| listing(id, e)) {
                        out.push(l);
                    }
                }
            }
            None => {
                for shard in self.inner.shards.iter() {
                    let shard = shard.lock();
                    out.extend(shard.iter().filter_map(|(id, e)| listing(id, e)));
                }
            }
        }
        Ok(out)
    }

    async fn list_changed_since(
        &self,
        since: Timestamp,
        except: &str,
    ) -> BackendResult<Vec<UserListing>> {
        let settings = self.inner.settings();
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = shard.lock();
            for (id, entry) in shard.iter() {
                if entry.changed_at < since || &**id == except {
                    continue;
                }
                out.push(entry.listing(id, &settings));
            }
        }
        Ok(out)
    }

    async fn user_by_username(&self, username: &str) -> BackendResult<Option<Arc<str>>> {
        Ok(self.inner.usernames.read().get(username).cloned())
    }

    async fn status_counts(&self) -> BackendResult<StatusCounts> {
        let get = |c: Counted| self.inner.counts[c as usize].load(Ordering::Relaxed).max(0) as u64;
        Ok(StatusCounts {
            online: get(Counted::Online),
            away: get(Counted::Away),
            busy: get(Counted::Busy),
            invisible: get(Counted::Invisible),
        })
    }

    async fn settings(&self) -> BackendResult<Arc<WorkspaceSettings>> {
        Ok(self.inner.settings())
    }

    async fn update_settings(&self, patch: SettingsPatch) -> BackendResult<Arc<WorkspaceSettings>> {
        let (old, new) = {
            let mut guard = self.inner.settings.write();
            let old = guard.clone();
            let new = Arc::new(patch.apply_to(&old));
            *guard = new.clone();
            (old, new)
        };
        let (transition, cap) = {
            let mut cap = self.inner.cap.lock();
            (cap.set_cap(new.cap), *cap)
        };
        let cap_ticket = self.publish_cap(transition, &cap);
        let ticket = self
            .inner
            .store
            .write(vec![Write::Settings((*new).clone())]);
        self.reevaluate_all(&old, &new);
        let _ = self.inner.updates.send(Update::Settings(new.clone()));
        ticket.await?;
        await_ticket(cap_ticket).await?;
        Ok(new)
    }

    async fn custom_statuses(&self) -> BackendResult<Vec<CustomStatus>> {
        Ok(self
            .inner
            .custom
            .lock()
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
        let now = self.inner.clock.now();
        let (status, ticket) = {
            let mut registry = self.inner.custom.lock();
            let status = registry.create(id, name, status_type, now)?;
            let ticket = self
                .inner
                .store
                .write(vec![Write::CustomStatus(status.clone())]);
            (status, ticket)
        };
        ticket.await?;
        Ok(status)
    }

    async fn update_custom_status(
        &self,
        id: &CustomStatusId,
        name: Option<CustomStatusName>,
        status_type: Option<DisplayedStatus>,
    ) -> BackendResult<CustomStatus> {
        let now = self.inner.clock.now();
        let (status, ticket) = {
            let mut registry = self.inner.custom.lock();
            let status = registry.update(id, name, status_type, now)?;
            let ticket = self
                .inner
                .store
                .write(vec![Write::CustomStatus(status.clone())]);
            (status, ticket)
        };
        ticket.await?;
        let changed = status.clone();
        self.for_users(
            |p| p.uses_custom_status(id),
            || Command::CustomStatusChanged(changed.clone()),
        )
        .await?;
        Ok(status)
    }

    async fn delete_custom_status(&self, id: &CustomStatusId) -> BackendResult<CustomStatus> {
        let (status, ticket) = {
            let mut registry = self.inner.custom.lock();
            let status = registry.delete(id)?;
            let ticket = self
                .inner
                .store
                .write(vec![Write::DeleteCustomStatus(id.clone())]);
            (status, ticket)
        };
        ticket.await?;
        self.for_users(
            |p| p.uses_custom_status(id),
            || Command::CustomStatusDeleted(id.clone()),
        )
        .await?;
        Ok(status)
    }

    async fn cap_state(&self) -> BackendResult<CapState> {
        let mut cap = self.inner.cap.lock();
        cap.count = self.inner.connections.load(Ordering::Acquire);
        Ok(*cap)
    }

    async fn enable_broadcast(&self) -> BackendResult<CapState> {
        let (transition, cap) = {
            let mut cap = self.inner.cap.lock();
            let count = self.inner.connections.load(Ordering::Acquire);
            cap.observe_count(count);
            (cap.request_enable()?, *cap)
        };
        await_ticket(self.publish_cap(transition, &cap)).await?;
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
        let cap = *self.inner.cap.lock();
        let ticket = self.inner.store.write(vec![Write::Cap(PersistedCap {
            cap_enabled: cap.enabled,
            peak: cap.peak,
        })]);
        if let Err(e) = ticket.await {
            tracing::warn!(error = %e, "could not persist the cap state at shutdown");
        }
    }
}

impl Inner {
    fn settings(&self) -> Arc<WorkspaceSettings> {
        self.settings.read().clone()
    }

    fn shard(&self, user: &str) -> &Mutex<UserShard> {
        &self.shards[(self.hasher.hash_one(user) as usize) % self.shards.len()]
    }

    /// Runs `f` on `user`'s entry under its shard lock, creating the entry
    /// if needed, and records a changed profile.
    fn with_user<R>(
        &self,
        user: &str,
        profile: Option<&Profile>,
        f: impl FnOnce(&Inner, &Arc<str>, &mut UserEntry) -> BackendResult<R>,
    ) -> BackendResult<R> {
        let mut shard = self.shard(user).lock();
        let id = match shard.get_key_value(user) {
            Some((id, _)) => id.clone(),
            None => {
                let id: Arc<str> = Arc::from(user);
                shard.insert(id.clone(), UserEntry::new());
                id
            }
        };
        let entry = shard.get_mut(user).expect("present above");
        if let Some(profile) = profile
            && (profile.username.is_some() || profile.name.is_some())
            && entry.profile != *profile
        {
            if let Some(old) = &entry.profile.username {
                // The old name may have moved to another user since.
                let mut usernames = self.usernames.write();
                if usernames.get(old) == Some(&id) {
                    usernames.remove(old);
                }
            }
            if let Some(new) = &profile.username {
                self.usernames.write().insert(new.clone(), id.clone());
            }
            entry.profile = profile.clone();
            let now = self.clock.now();
            drop(self.store.write(vec![self.user_write(&id, entry, now)]));
        }
        f(self, &id, entry)
    }

    /// Publishes, counts, persists and reschedules after a change. Returns
    /// the write ticket to await before acknowledging, if anything durable
    /// changed. Call with the user's shard lock held.
    fn after_change(
        &self,
        id: &Arc<str>,
        entry: &mut UserEntry,
        outcome: &presence_core::Outcome,
        settings: &WorkspaceSettings,
        now: Timestamp,
    ) -> Option<WriteTicket> {
        if outcome.public_changed {
            entry.changed_at = now;
            let _ = self.updates.send(Update::Presence {
                snapshot: Arc::new(PresenceSnapshot {
                    user: id.clone(),
                    view: outcome.public.clone(),
                    version: outcome.public_version,
                }),
                changed_at: SystemTime::now(),
            });
        }
        if outcome.self_changed {
            let _ = self.updates.send(Update::SelfState(Arc::new(
                self.self_snapshot(id, entry, settings),
            )));
        }
        if outcome.changed() {
            self.recount(entry, settings);
        }
        self.schedule(id, entry, settings);
        outcome
            .durable_changed
            .then(|| self.store.write(vec![self.user_write(id, entry, now)]))
    }

    fn recount(&self, entry: &mut UserEntry, settings: &WorkspaceSettings) {
        let view = entry.presence.self_view(settings);
        let now = match view.status {
            SelfStatus::Online => Some(Counted::Online),
            SelfStatus::Away => Some(Counted::Away),
            SelfStatus::Busy => Some(Counted::Busy),
            SelfStatus::Invisible => Some(Counted::Invisible),
            SelfStatus::Offline => None,
        };
        if now != entry.counted {
            if let Some(old) = entry.counted {
                self.counts[old as usize].fetch_sub(1, Ordering::Relaxed);
            }
            if let Some(new) = now {
                self.counts[new as usize].fetch_add(1, Ordering::Relaxed);
            }
            entry.counted = now;
        }
    }

    fn schedule(&self, id: &Arc<str>, entry: &mut UserEntry, settings: &WorkspaceSettings) {
        let Some(deadline) = entry.presence.next_deadline(settings) else {
            return;
        };
        if entry.scheduled.is_some_and(|s| s <= deadline) {
            return; // An earlier wake-up is queued; it reschedules then.
        }
        entry.scheduled = Some(deadline);
        let mut timers = self.timers.lock();
        let earliest = timers.first().is_none_or(|(t, _)| deadline < *t);
        timers.insert((deadline, id.clone()));
        drop(timers);
        if earliest {
            self.timer_wakeup.notify_one();
        }
    }

    fn self_snapshot(
        &self,
        id: &Arc<str>,
        entry: &UserEntry,
        settings: &WorkspaceSettings,
    ) -> SelfSnapshot {
        SelfSnapshot {
            user: id.clone(),
            view: entry.presence.self_view(settings),
            version: entry.presence.durable.version,
        }
    }

    fn user_write(&self, id: &Arc<str>, entry: &UserEntry, now: Timestamp) -> Write {
        Write::User {
            id: id.to_string(),
            record: UserRecord {
                state: entry.presence.durable.clone(),
                profile: entry.profile.clone(),
                updated_at: now,
            },
        }
    }
}

async fn await_ticket(ticket: Option<WriteTicket>) -> BackendResult<()> {
    match ticket {
        Some(ticket) => ticket.await.map_err(BackendError::from),
        None => Ok(()),
    }
}

//! Watching a backend from a test: a [`Probe`] on the update stream that
//! checks W3 on every update it sees, session fixtures, and waits that end
//! on an event or fail after [`DEADLINE`] with what was seen instead.
//! Reads without an event (the cap count, status counts) are polled with
//! `presence_testkit::wait_until` and the same [`DEADLINE`].

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_backend::{
    Backend, BackendError, BackendResult, ConnId, PresenceSnapshot, Profile, SelfSnapshot, Session,
    Update,
};
use presence_core::{
    ChosenStatus, DeviceId, Platform, StatusRequest, Timestamp, WorkspaceSettings,
};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// The longest any single wait may take. Generous: a case normally sees
/// its event within milliseconds, and a cluster backend gets slack for its
/// aggregator and pub/sub hops.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// A subscriber to a backend's updates.
///
/// Every update it receives is checked against W3: for each user, the
/// versions of `Presence` updates strictly increase, and so do those of
/// `SelfState` updates. Updates a wait skips are kept, in order, for later
/// waits, so "the next update about X" means the next one *about X*.
pub struct Probe {
    backend: Arc<dyn Backend>,
    rx: Receiver<Update>,
    pending: VecDeque<Update>,
    public_versions: HashMap<Arc<str>, u64>,
    self_versions: HashMap<Arc<str>, u64>,
}

impl Probe {
    /// Subscribes now: every update from here on is seen.
    pub fn new(backend: &Arc<dyn Backend>) -> Probe {
        Probe {
            backend: backend.clone(),
            rx: backend.subscribe(),
            pending: VecDeque::new(),
            public_versions: HashMap::new(),
            self_versions: HashMap::new(),
        }
    }

    /// The next `Presence` update about `user`.
    pub async fn next_presence(&mut self, user: &str) -> PresenceSnapshot {
        self.presence_until(user, "any presence update", |_| true)
            .await
    }

    /// Consumes `Presence` updates about `user` until one satisfies `want`.
    pub async fn presence_until(
        &mut self,
        user: &str,
        what: &str,
        want: impl Fn(&PresenceSnapshot) -> bool,
    ) -> PresenceSnapshot {
        let what = format!("presence of {user}: {what}");
        loop {
            let update = self
                .take(
                    &what,
                    |u| matches!(u, Update::Presence { snapshot, .. } if &*snapshot.user == user),
                )
                .await;
            let Update::Presence { snapshot, .. } = update else {
                unreachable!("matched above")
            };
            if want(&snapshot) {
                return (*snapshot).clone();
            }
        }
    }

    /// The next `SelfState` update about `user`.
    pub async fn next_self(&mut self, user: &str) -> SelfSnapshot {
        self.self_until(user, "any self update", |_| true).await
    }

    /// Consumes `SelfState` updates about `user` until one satisfies `want`.
    pub async fn self_until(
        &mut self,
        user: &str,
        what: &str,
        want: impl Fn(&SelfSnapshot) -> bool,
    ) -> SelfSnapshot {
        let what = format!("self state of {user}: {what}");
        loop {
            let update = self
                .take(
                    &what,
                    |u| matches!(u, Update::SelfState(me) if &*me.user == user),
                )
                .await;
            let Update::SelfState(me) = update else {
                unreachable!("matched above")
            };
            if want(&me) {
                return (*me).clone();
            }
        }
    }

    /// The next `Broadcast` update (X2–X4): whether it is now active.
    pub async fn next_broadcast(&mut self) -> bool {
        match self
            .take("a broadcast update", |u| {
                matches!(u, Update::Broadcast { .. })
            })
            .await
        {
            Update::Broadcast { active } => active,
            _ => unreachable!("matched above"),
        }
    }

    /// The next `Settings` update.
    pub async fn next_settings(&mut self) -> Arc<WorkspaceSettings> {
        match self
            .take("a settings update", |u| matches!(u, Update::Settings(_)))
            .await
        {
            Update::Settings(settings) => settings,
            _ => unreachable!("matched above"),
        }
    }

    /// Reads `user`'s presence until it satisfies `want`, waiting for one of
    /// their `Presence` updates between reads. For states that time or a
    /// restart bring about, where the update may come before or after the
    /// probe exists.
    pub async fn settle_presence(
        &mut self,
        user: &str,
        what: &str,
        want: impl Fn(&PresenceSnapshot) -> bool,
    ) -> PresenceSnapshot {
        loop {
            let read = read_presence(&self.backend, user).await;
            self.check_read_version(user, read.version, true);
            if want(&read) {
                return read;
            }
            self.presence_until(user, &format!("{what} (read {read:?})"), |_| true)
                .await;
        }
    }

    /// Like [`settle_presence`](Self::settle_presence), for what `user`
    /// sees of themselves.
    pub async fn settle_self(
        &mut self,
        user: &str,
        what: &str,
        want: impl Fn(&SelfSnapshot) -> bool,
    ) -> SelfSnapshot {
        loop {
            let read = self.backend.self_state(user).await.expect("self_state");
            self.check_read_version(user, read.version, false);
            if want(&read) {
                return read;
            }
            self.self_until(user, &format!("{what} (read {read:?})"), |_| true)
                .await;
        }
    }

    /// Fails if a `Presence` update about `user` arrived and was not
    /// consumed. Call it after a later event that any such update would
    /// have preceded (see the sentinel users in the D7 and S1 cases).
    pub fn assert_no_pending_presence(&mut self, user: &str) {
        self.drain_ready();
        let stray = self
            .pending
            .iter()
            .find(|u| matches!(u, Update::Presence { snapshot, .. } if &*snapshot.user == user));
        assert!(stray.is_none(), "unexpected update about {user}: {stray:?}");
    }

    /// Takes the first update, pending or new, that `pick` accepts.
    async fn take(&mut self, what: &str, pick: impl Fn(&Update) -> bool) -> Update {
        if let Some(i) = self.pending.iter().position(&pick) {
            return self.pending.remove(i).expect("found above");
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let received = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(received) => received,
                Err(_) => panic!(
                    "no {what} within {DEADLINE:?}; updates seen and not consumed: {:#?}",
                    self.pending
                ),
            };
            let update = match received {
                Ok(update) => update,
                Err(RecvError::Lagged(n)) => panic!("the probe lagged by {n} updates"),
                Err(RecvError::Closed) => {
                    panic!("the update channel closed while waiting for {what}")
                }
            };
            self.check_w3(&update);
            if pick(&update) {
                return update;
            }
            self.pending.push_back(update);
        }
    }

    /// Moves updates that already arrived into `pending`.
    fn drain_ready(&mut self) {
        while let Ok(update) = self.rx.try_recv() {
            self.check_w3(&update);
            self.pending.push_back(update);
        }
    }

    /// W3: versions of one user's updates strictly increase.
    fn check_w3(&mut self, update: &Update) {
        let (kind, user, version, seen) = match update {
            Update::Presence { snapshot, .. } => (
                "presence",
                &snapshot.user,
                snapshot.version,
                &mut self.public_versions,
            ),
            Update::SelfState(me) => ("self", &me.user, me.version, &mut self.self_versions),
            Update::Broadcast { .. } | Update::Settings(_) | Update::Replaced { .. } => return,
        };
        let last = seen.entry(user.clone()).or_insert(0);
        assert!(
            version > *last,
            "W3: {kind} update of {user} has version {version}, not above {last}: {update:?}"
        );
        *last = version;
    }

    /// A read never goes behind an update already delivered.
    fn check_read_version(&self, user: &str, version: u64, public: bool) {
        let seen = if public {
            &self.public_versions
        } else {
            &self.self_versions
        };
        let last = seen.get(user).copied().unwrap_or(0);
        assert!(
            version >= last,
            "W3: a read of {user} has version {version}, behind the delivered {last}"
        );
    }
}

/// `user`'s presence as others see it.
pub async fn read_presence(backend: &Arc<dyn Backend>, user: &str) -> PresenceSnapshot {
    let mut all = backend.presence(&[id(user)]).await.expect("presence");
    assert_eq!(all.len(), 1);
    all.pop().expect("one snapshot")
}

/// Asserts that `result` is the presence-rule error with `code`.
pub fn expect_rule<T: Debug>(label: &str, result: BackendResult<T>, code: &str) {
    match result {
        Err(e @ BackendError::Rule(_)) => {
            assert_eq!(e.code(), code, "{label}: wrong code for {e}");
            assert!(!e.to_string().is_empty(), "{label}: a human message");
        }
        other => panic!("{label}: expected the rule error `{code}`, got {other:?}"),
    }
}

/// One socket of `user`'s device `device`, with a profile from `user`'s
/// token (`username` `<user>_name`, `name` `User <user>`). Every call
/// gets a new connection id.
pub fn socket(user: &str, device: &str, platform: Platform) -> Session {
    Session {
        user: id(user),
        device: DeviceId::try_from(device).unwrap(),
        platform,
        conn: next_conn(),
        profile: profile(user),
    }
}

/// A new socket of the same device (a reconnect).
pub fn reconnect(session: &Session) -> Session {
    Session {
        conn: next_conn(),
        ..session.clone()
    }
}

/// The profile [`socket`] gives `user`.
pub fn profile(user: &str) -> Profile {
    Profile {
        username: Some(format!("{user}_name")),
        name: Some(format!("User {user}")),
        utc_offset: None,
    }
}

pub fn id(user: &str) -> Arc<str> {
    Arc::from(user)
}

/// A status request; `None` fields are left out.
pub fn request(
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

/// Choosing `status`, nothing else.
pub fn choose(status: ChosenStatus) -> StatusRequest {
    request(Some(status), None, None)
}

/// The wall clock, as backends read it.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis();
    Timestamp::from_millis(i64::try_from(ms).expect("a sane clock"))
}

/// A timestamp strictly after every change made before the call, and not
/// after the current time: waits for the millisecond clock to tick.
pub async fn clock_tick() -> Timestamp {
    let start = now();
    loop {
        let t = now();
        if t > start {
            return t;
        }
        // Less than a millisecond: the clock's own resolution.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn next_conn() -> ConnId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
}

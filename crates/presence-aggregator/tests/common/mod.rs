//! A shard leader driven the way the Redis runner drives it, with Redis
//! replaced by [`Store`]: a model of the keys of `docs/cluster.md` that
//! applies [`ShardChanges`] exactly as the commit script must, passing
//! every value through JSON, and checks W3 on every commit.
//!
//! Every test file is its own crate and uses a different subset of these
//! helpers, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use presence_aggregator::{LoadedUser, ShardChanges, ShardConfig, ShardLoad, ShardState};
use presence_core::{
    CapState, ChosenStatus, CustomStatus, CustomStatusId, DeviceEvent, DeviceId, DisplayedStatus,
    Platform, PublicView, SelfStatus, SelfView, Timestamp, WorkspaceSettings,
};
use presence_engine::UserRecord;
use presence_protocol::cluster::{
    ClusterCommand, CommandOk, CommandResult, ControlMessage, ReplyMessage, SocketEnd,
    StatusRequestBody, StoredCounts, StoredDevice, StoredSelf, StoredView, StreamEntry, StreamId,
    UpdateMessage, UserCommand, heartbeat_member, split_heartbeat_member,
};

/// Some day in November 2023.
pub const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
pub const EPOCH: u64 = 1;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn dev(id: &str) -> DeviceId {
    DeviceId::try_from(id).unwrap()
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

pub fn chosen(name: &str) -> ChosenStatus {
    ChosenStatus::ALL
        .into_iter()
        .find(|c| c.as_str() == name)
        .unwrap_or_else(|| panic!("unknown chosen status '{name}'"))
}

pub fn shown(name: &str) -> DisplayedStatus {
    DisplayedStatus::ALL
        .into_iter()
        .find(|c| c.as_str() == name)
        .unwrap_or_else(|| panic!("unknown displayed status '{name}'"))
}

pub fn status(status: Option<&str>, text: Option<&str>) -> StatusRequestBody {
    StatusRequestBody {
        status: status.map(chosen),
        text: text.map(str::to_owned),
        expires_at: None,
    }
}

/// The first user id `user-<n>` that lands in `shard` of `shards`.
pub fn user_in_shard(shard: u16, shards: u16) -> String {
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| presence_protocol::cluster::shard_of(u, shards) == shard)
        .expect("some user lands in every shard")
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializes")
}

fn unjson<T: serde::de::DeserializeOwned>(raw: &str) -> T {
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
}

/// The Redis keys of one shard plus the cluster-wide ones, as strings.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub users: BTreeSet<String>,
    pub records: BTreeMap<String, String>,
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    /// `<uid>\n<device>` → deadline (ms).
    pub hb: BTreeMap<String, i64>,
    pub views: BTreeMap<String, String>,
    pub selves: BTreeMap<String, String>,
    pub cursor: Option<StreamId>,
    pub settings: Option<String>,
    pub custom_statuses: BTreeMap<String, String>,
    pub cap: Option<String>,
    /// `presence:{s}:counts`.
    pub counts: Option<StoredCounts>,
    /// Everything published, in order.
    pub updates: Vec<UpdateMessage>,
    pub replies: Vec<ReplyMessage>,
    pub control: Vec<ControlMessage>,
}

impl Store {
    /// Applies `changes` like the commit script, checking W3: every view
    /// written has a larger version than the one it replaces.
    pub fn commit(&mut self, changes: &ShardChanges) {
        if let Some(counts) = changes.counts {
            self.counts = Some(counts);
        }
        for (user, change) in &changes.users {
            if change.new_user {
                assert!(self.users.insert(user.clone()), "{user} added twice");
            }
            if let Some(record) = &change.record {
                self.records.insert(user.clone(), json(record));
            }
            let devices = self.devices.entry(user.clone()).or_default();
            for (device, value) in &change.devices {
                match value {
                    Some(d) => devices.insert(device.to_string(), json(d)),
                    None => devices.remove(device.as_str()),
                };
            }
            for (device, deadline) in &change.heartbeats {
                let member = heartbeat_member(user, device);
                match deadline {
                    Some(t) => self.hb.insert(member, t.as_millis()),
                    None => self.hb.remove(&member),
                };
            }
            if let Some(view) = &change.view {
                if let Some(old) = self.views.get(user) {
                    let old: StoredView = unjson(old);
                    assert!(
                        view.version > old.version,
                        "W3: {user}'s view went from v{} to v{}",
                        old.version,
                        view.version
                    );
                }
                self.views.insert(user.clone(), json(view));
            }
            if let Some(own) = &change.self_view {
                if let Some(old) = self.selves.get(user) {
                    let old: StoredSelf = unjson(old);
                    assert!(
                        own.version > old.version,
                        "W3: {user}'s self view went from v{} to v{}",
                        old.version,
                        own.version
                    );
                }
                self.selves.insert(user.clone(), json(own));
            }
            if change.record.is_some() || change.view.is_some() || change.self_view.is_some() {
                assert!(
                    self.users.contains(user),
                    "{user} written but not in the user set"
                );
            }
        }
        if let Some(cursor) = changes.cursor {
            assert!(
                self.cursor.is_none_or(|c| c < cursor),
                "the cursor moves forward"
            );
            self.cursor = Some(cursor);
        }
        let cluster = &changes.cluster;
        if let Some(settings) = &cluster.settings {
            self.settings = Some(json(settings));
        }
        for (id, status) in &cluster.custom_statuses {
            match status {
                Some(s) => self.custom_statuses.insert(id.to_string(), json(s)),
                None => self.custom_statuses.remove(id.as_str()),
            };
        }
        if let Some(cap) = &cluster.cap {
            self.cap = Some(json(cap));
        }
        // What goes over pub/sub goes through JSON too.
        for update in changes.update_messages(EPOCH) {
            self.updates.push(unjson(&json(&update)));
        }
        for reply in &changes.replies {
            self.replies.push(unjson(&json(reply)));
        }
        for message in &cluster.control {
            self.control.push(unjson(&json(message)));
        }
    }

    /// What a new leader reads on takeover.
    pub fn load(&self) -> ShardLoad {
        let users = self
            .users
            .iter()
            .map(|user| LoadedUser {
                user: user.clone(),
                record: self.records.get(user).map(|r| unjson::<UserRecord>(r)),
                devices: self
                    .devices
                    .get(user)
                    .into_iter()
                    .flatten()
                    .map(|(d, raw)| (dev(d), unjson::<StoredDevice>(raw)))
                    .collect(),
                view: self.views.get(user).map(|v| unjson(v)),
                self_view: self.selves.get(user).map(|s| unjson(s)),
            })
            .collect();
        ShardLoad {
            users,
            settings: self.settings.as_deref().map(unjson).unwrap_or_default(),
            custom_statuses: self
                .custom_statuses
                .values()
                .map(|s| unjson::<CustomStatus>(s))
                .collect(),
            cap: self.cap.as_deref().map(unjson::<CapState>),
        }
    }

    /// The stored public view of `user`.
    pub fn view(&self, user: &str) -> Option<StoredView> {
        self.views.get(user).map(|v| unjson(v))
    }

    /// The stored own view of `user`.
    pub fn self_view(&self, user: &str) -> Option<StoredSelf> {
        self.selves.get(user).map(|v| unjson(v))
    }

    /// The heartbeat members of `user`, as device ids.
    pub fn heartbeat_devices(&self, user: &str) -> Vec<String> {
        self.hb
            .keys()
            .filter_map(|m| split_heartbeat_member(m))
            .filter(|(u, _)| *u == user)
            .map(|(_, d)| d.to_owned())
            .collect()
    }

    /// The stored devices of `user`.
    pub fn device_ids(&self, user: &str) -> Vec<String> {
        self.devices
            .get(user)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Heartbeat members whose deadline is at or before `now`.
    pub fn lapsed(&self, now: Timestamp) -> Vec<(String, String)> {
        self.hb
            .iter()
            .filter(|(_, t)| **t <= now.as_millis())
            .filter_map(|(m, _)| split_heartbeat_member(m))
            .map(|(u, d)| (u.to_owned(), d.to_owned()))
            .collect()
    }
}

/// A shard leader, its store and a clock.
pub struct Leader {
    pub state: ShardState,
    pub store: Store,
    pub now: Timestamp,
    pub config: ShardConfig,
    next_conn: u64,
    /// The node each socket was opened on: a gateway reports the end of a
    /// socket from the node that held it.
    conn_nodes: std::collections::HashMap<u64, String>,
    next_entry: u64,
    /// The changes of the last call, for assertions.
    pub last: ShardChanges,
}

impl Leader {
    pub fn new() -> Self {
        Self::with_settings(WorkspaceSettings::default())
    }

    pub fn with_settings(settings: WorkspaceSettings) -> Self {
        Self::with_config(ShardConfig::default(), settings)
    }

    pub fn with_config(config: ShardConfig, settings: WorkspaceSettings) -> Self {
        let store = Store {
            settings: Some(json(&settings)),
            ..Store::default()
        };
        Self::from_store(config, store)
    }

    /// A leader that loads `store` at `T0`.
    pub fn from_store(config: ShardConfig, store: Store) -> Self {
        let (state, changes) = ShardState::load(config.clone(), store.load(), T0);
        let mut leader = Self {
            state,
            store,
            now: T0,
            config,
            next_conn: 1,
            conn_nodes: Default::default(),
            next_entry: 1,
            last: ShardChanges::default(),
        };
        leader.commit(changes);
        leader
    }

    /// A new leader taking the shard over from what is stored, at the
    /// same instant.
    pub fn takeover(&self) -> Leader {
        self.takeover_at(self.now)
    }

    pub fn takeover_at(&self, now: Timestamp) -> Leader {
        let (state, changes) = ShardState::load(self.config.clone(), self.store.load(), now);
        let mut leader = Leader {
            state,
            store: self.store.clone(),
            now,
            config: self.config.clone(),
            next_conn: self.next_conn,
            conn_nodes: self.conn_nodes.clone(),
            next_entry: self.next_entry,
            last: ShardChanges::default(),
        };
        leader.commit(changes);
        leader
    }

    pub fn commit(&mut self, changes: ShardChanges) {
        self.store.commit(&changes);
        self.last = changes;
    }

    /// Moves the clock on by `s` seconds and runs the due timers.
    pub fn tick(&mut self, s: u64) {
        self.now = self.now + secs(s);
        let changes = self.state.advance(self.now);
        self.commit(changes);
    }

    /// Appends `commands` as one batch of stream entries from `node`, each
    /// asking for a reply, and returns the replies in order.
    pub fn batch(
        &mut self,
        node: &str,
        commands: Vec<(&str, ClusterCommand)>,
    ) -> Vec<CommandResult> {
        let entries: Vec<(StreamId, StreamEntry)> = commands
            .into_iter()
            .map(|(user, command)| {
                let n = self.next_entry;
                self.next_entry += 1;
                let entry = StreamEntry {
                    user: user.to_owned(),
                    command,
                    node: node.to_owned(),
                    reply: Some(format!("r{n}")),
                    retry: false,
                    profile: None,
                };
                // Through the stream's field encoding, as the runner reads it.
                let entry = StreamEntry::from_fields(entry.to_fields()).expect("decodes");
                (StreamId::new(n, 0), entry)
            })
            .collect();
        let count = entries.len();
        let changes = self.state.apply_batch(entries, self.now);
        assert_eq!(changes.replies.len(), count, "every entry is answered");
        let results = changes.replies.iter().map(|r| r.result.clone()).collect();
        self.commit(changes);
        results
    }

    /// Runs one command for `user` from node `n1`.
    pub fn run(&mut self, user: &str, command: ClusterCommand) -> CommandResult {
        self.run_on("n1", user, command)
    }

    pub fn run_on(&mut self, node: &str, user: &str, command: ClusterCommand) -> CommandResult {
        self.batch(node, vec![(user, command)]).remove(0)
    }

    /// Runs a command that must succeed.
    pub fn ok(&mut self, user: &str, command: ClusterCommand) -> CommandOk {
        match self.run(user, command) {
            CommandResult::Ok(ok) => ok,
            CommandResult::Error(e) => panic!("{user}: {} ({})", e.code, e.message),
        }
    }

    /// Runs a command that must fail; returns the error code.
    pub fn refused(&mut self, user: &str, command: ClusterCommand) -> String {
        match self.run(user, command) {
            CommandResult::Ok(ok) => panic!("{user}: expected an error, got {ok:?}"),
            CommandResult::Error(e) => e.code,
        }
    }

    /// Connects `device` of `user` on `node` with a new socket; returns
    /// the socket's conn id.
    pub fn connect_on(&mut self, node: &str, user: &str, device: &str, platform_name: &str) -> u64 {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conn_nodes.insert(conn, node.to_owned());
        let command = ClusterCommand::User(UserCommand::Connect {
            device: dev(device),
            platform: platform(platform_name),
            conn,
            node: node.to_owned(),
            profile: Default::default(),
        });
        match self.run_on(node, user, command) {
            CommandResult::Ok(_) => conn,
            CommandResult::Error(e) => panic!("connect failed: {}", e.code),
        }
    }

    pub fn connect(&mut self, user: &str, device: &str, platform_name: &str) -> u64 {
        self.connect_on("n1", user, device, platform_name)
    }

    pub fn event(&mut self, user: &str, device: &str, name: &str) -> CommandResult {
        self.run(
            user,
            ClusterCommand::User(UserCommand::DeviceEvent {
                device: dev(device),
                event: event(name),
            }),
        )
    }

    /// The end of socket `conn`, reported by the node that held it.
    pub fn disconnect(&mut self, user: &str, device: &str, conn: u64, end: SocketEnd) {
        let node = self
            .conn_nodes
            .get(&conn)
            .cloned()
            .unwrap_or_else(|| "n1".to_owned());
        let command = ClusterCommand::User(UserCommand::Disconnect {
            device: dev(device),
            conn,
            end,
        });
        match self.run_on(&node, user, command) {
            CommandResult::Ok(_) => {}
            CommandResult::Error(e) => panic!("{user}: {} ({})", e.code, e.message),
        }
    }

    pub fn set(&mut self, user: &str, request: StatusRequestBody) -> CommandResult {
        self.run(
            user,
            ClusterCommand::User(UserCommand::SetStatus { request }),
        )
    }

    pub fn choose(&mut self, user: &str, name: &str) {
        let result = self.set(user, status(Some(name), None));
        assert!(matches!(result, CommandResult::Ok(_)), "{result:?}");
    }

    /// What others see of `user`, in memory.
    pub fn public(&self, user: &str) -> PublicView {
        self.state.public_view(user).unwrap_or(PublicView {
            status: DisplayedStatus::Offline,
            text: None,
        })
    }

    pub fn shown(&self, user: &str) -> DisplayedStatus {
        self.public(user).status
    }

    pub fn own(&self, user: &str) -> SelfView {
        self.state
            .self_view(user)
            .expect("the shard holds the user")
    }

    pub fn own_status(&self, user: &str) -> SelfStatus {
        self.own(user).status
    }

    /// Checks that the stored views equal the in-memory ones: what a
    /// gateway resyncing from Redis would read.
    pub fn assert_stored_matches(&self) {
        for user in self.state.users() {
            let stored = self.store.view(user).map(|v| v.view());
            assert_eq!(
                stored,
                self.state.public_view(user),
                "stored view of {user}"
            );
            let own = self.store.self_view(user).map(|s| s.view);
            assert_eq!(
                own,
                self.state.self_view(user),
                "stored self view of {user}"
            );
        }
    }

    /// Registers and immediately expires the lapsed heartbeat members as
    /// the runner's sweep does.
    pub fn sweep_heartbeats(&mut self) {
        let lapsed = self.store.lapsed(self.now);
        let changes = self.state.expire_heartbeats(&lapsed, self.now);
        self.commit(changes);
    }

    pub fn expire_nodes(&mut self, dead: &[&str]) {
        let changes = self.state.expire_nodes(dead, self.now);
        self.commit(changes);
    }

    pub fn reevaluate(&mut self, settings: WorkspaceSettings) {
        let changes = self.state.reevaluate(settings, self.now);
        self.commit(changes);
    }

    pub fn custom_changed(&mut self, status: CustomStatus) {
        let changes = self.state.custom_status_changed(status, self.now);
        self.commit(changes);
    }

    pub fn custom_deleted(&mut self, id: &CustomStatusId) {
        let changes = self.state.custom_status_deleted(id, self.now);
        self.commit(changes);
    }
}

impl Default for Leader {
    fn default() -> Self {
        Self::new()
    }
}

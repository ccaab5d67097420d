//! `RedisBackend` against a real redis-server, with the test playing the
//! shard leader: it reads the streams with `RedisClient::read` and
//! publishes crafted replies, updates and control messages with a raw
//! `PUBLISH`. (The conformance suite with a real aggregator runs in
//! `presence-aggregator`, which this crate cannot depend on.)

mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_backend::{Backend, ConnId, PresenceSnapshot, Profile, Session, Update};
use presence_core::{
    ChosenStatus, DeviceEvent, DeviceId, DisplayedStatus, Platform, PublicView, SelfStatus,
    StatusRequest, StatusText, Timestamp, UserPresence, WorkspaceSettings,
};
use presence_engine::UserRecord;
use presence_protocol::cluster::{
    self as wire, AdminCommand, ClusterCommand, CommandOk, CommandResult, ControlMessage,
    ReplyMessage, ShardCommand, StoredSelf, StoredView, UpdateMessage, UserCommand,
};
use presence_redis::{
    Keys, RedisBackend, RedisBackendConfig, RedisClient, StreamId, heartbeat_member, shard_of,
};
use presence_testkit::{RedisOptions, RedisServer, wait_until};
use redis_support::{calls_in, connect};
use tokio::sync::broadcast;

const SHARDS: u16 = 4;
const NODE: &str = "gw-1";
const WAIT: Duration = Duration::from_secs(5);

fn config() -> RedisBackendConfig {
    let mut config = RedisBackendConfig::new(NODE, SHARDS);
    config.request_timeout = Duration::from_millis(400);
    // The background round runs once at start; tests call `refresh_now`.
    config.heartbeat_interval = Duration::from_secs(3600);
    config
}

async fn start(server: &RedisServer, config: RedisBackendConfig) -> (RedisClient, RedisBackend) {
    let client = connect(server).await;
    client.ensure_meta(config.shards).await.unwrap();
    let backend = RedisBackend::start(client.clone(), config).await;
    wait_until(
        "the backend is ready",
        WAIT,
        async || backend.ready().await,
        |&ready| ready,
    )
    .await;
    (client, backend)
}

/// Waits for the next entry of `shard` after `after`.
async fn next_entry(
    client: &RedisClient,
    shard: u16,
    after: &mut StreamId,
) -> (wire::StreamEntry, StreamId) {
    loop {
        let entries = client
            .read(shard, *after, 1, Some(Duration::from_secs(2)))
            .await
            .unwrap();
        let entry = entries
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no entry in shard {shard} after {after}"));
        *after = entry.id;
        let decoded = wire::StreamEntry::from_fields(entry.fields.clone()).unwrap();
        // Every shard first hears that the node started (H2).
        if !matches!(
            decoded.command,
            ClusterCommand::Shard(ShardCommand::NodeStarted { .. })
        ) {
            return (decoded, entry.id);
        }
    }
}

fn publish(server: &RedisServer, channel: &str, message: &impl serde::Serialize) {
    server.command(&["PUBLISH", channel, &serde_json::to_string(message).unwrap()]);
}

fn own_view() -> presence_core::SelfView {
    UserPresence::default().self_view(&WorkspaceSettings::default())
}

fn ok_me(version: u64) -> CommandResult {
    CommandResult::Ok(CommandOk {
        me: Some(StoredSelf {
            version,
            view: own_view(),
        }),
        ..CommandOk::default()
    })
}

fn session(user: &str, device: &str, conn: u64) -> Session {
    Session {
        user: Arc::from(user),
        device: DeviceId::try_from(device).unwrap(),
        platform: Platform::Web,
        conn: ConnId(conn),
        profile: Profile {
            username: Some(format!("{user}-name")),
            name: None,
            utc_offset: None,
        },
    }
}

/// Answers every entry of every shard that asks, with `ok_me(1)`.
fn auto_leader(client: RedisClient) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursors = vec![StreamId::default(); usize::from(SHARDS)];
        loop {
            let mut idle = true;
            for shard in 0..SHARDS {
                let entries = client
                    .read(shard, cursors[usize::from(shard)], 100, None)
                    .await
                    .unwrap_or_default();
                for entry in entries {
                    idle = false;
                    cursors[usize::from(shard)] = entry.id;
                    let decoded = wire::StreamEntry::from_fields(entry.fields).unwrap();
                    if let Some(r) = decoded.reply {
                        let reply = ReplyMessage {
                            node: decoded.node,
                            r,
                            result: ok_me(1),
                        };
                        let channel = Keys::new(shard).node_channel(&reply.node);
                        let json = serde_json::to_string(&reply).unwrap();
                        // The async client: a blocking publish per reply
                        // stalls the runtime the backend shares.
                        let _ = client.publish(&channel, &json).await;
                    }
                }
            }
            if idle {
                // A polling interval of this stand-in leader (it reads
                // every shard without blocking), not a wait for an event.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
}

async fn next_update(rx: &mut broadcast::Receiver<Update>) -> Update {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an update in time")
        .expect("the update channel is open")
}

/// Commands go to the user's shard stream with `u`, `c`, `n` and `r`; the
/// leader's reply resolves the waiting call.
#[tokio::test]
async fn commands_land_in_the_users_shard_with_a_reply_id() {
    let server = RedisServer::start();
    let (client, backend) = start(&server, config()).await;
    let backend = Arc::new(backend);
    let user = "alice";
    let shard = shard_of(user, SHARDS);

    let call = tokio::spawn({
        let backend = backend.clone();
        async move {
            let request = StatusRequest {
                status: Some(ChosenStatus::Busy),
                text: Some("Presenting".into()),
                expires_at: None,
            };
            backend.set_status("alice", None, request).await
        }
    });
    let mut after = StreamId::default();
    let (entry, _) = next_entry(&client, shard, &mut after).await;
    assert_eq!(entry.user, user);
    assert_eq!(entry.node, NODE);
    let ClusterCommand::User(UserCommand::SetStatus { request }) = &entry.command else {
        panic!("expected set_status, got {:?}", entry.command);
    };
    assert_eq!(request.status, Some(ChosenStatus::Busy));
    assert_eq!(request.text.as_deref(), Some("Presenting"));
    let r = entry.reply.clone().expect("set_status asks for a reply");

    // A reply for another node with the same id goes to that node's
    // channel, not ours.
    let foreign = ReplyMessage {
        node: "gw-2".into(),
        r: r.clone(),
        result: CommandResult::error("status_text_too_long", "nope"),
    };
    publish(&server, &Keys::new(shard).node_channel("gw-2"), &foreign);
    let reply = ReplyMessage {
        node: NODE.into(),
        r,
        result: ok_me(7),
    };
    publish(&server, &Keys::new(shard).node_channel(NODE), &reply);
    let me = call.await.unwrap().unwrap();
    assert_eq!((&*me.user, me.version), ("alice", 7));
    assert_eq!(me.view, own_view());

    // Admin commands go to shard 0, whoever they are about.
    let call = tokio::spawn({
        let backend = backend.clone();
        async move { backend.enable_broadcast().await }
    });
    let mut after0 = StreamId::default();
    let (entry, _) = next_entry(&client, 0, &mut after0).await;
    assert_eq!(
        entry.command,
        ClusterCommand::Admin(AdminCommand::EnableBroadcast)
    );
    let cap = presence_core::CapState::new(200);
    let reply = ReplyMessage {
        node: NODE.into(),
        r: entry.reply.unwrap(),
        result: CommandResult::Ok(CommandOk {
            cap: Some(cap),
            ..CommandOk::default()
        }),
    };
    publish(&server, &Keys::new(0).node_channel(NODE), &reply);
    assert_eq!(call.await.unwrap().unwrap(), cap);
    backend.shutdown().await;
}

/// Replies are addressed to the node that asked: the backend listens on
/// its own channel of each shard (`presence:{s}:node:<node>`), never on a
/// channel that carries every node's answers; an answer published to
/// another node's channel does not resolve its request, its own does.
#[tokio::test]
async fn replies_come_on_the_asking_nodes_own_channels() {
    let server = RedisServer::start();
    let (client, backend) = start(&server, config()).await;
    let backend = Arc::new(backend);
    let channels = match server.query(&["PUBSUB", "CHANNELS", "presence:*"]) {
        presence_testkit::resp::Reply::Array(Some(items)) => items
            .into_iter()
            .filter_map(|item| match item {
                presence_testkit::resp::Reply::Bulk(Some(b)) => String::from_utf8(b).ok(),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<String>>(),
        other => panic!("PUBSUB CHANNELS answered {other:?}"),
    };
    let mut expected: std::collections::BTreeSet<String> = (0..SHARDS)
        .flat_map(|s| {
            [
                Keys::new(s).updates_channel(),
                Keys::new(s).node_channel(NODE),
            ]
        })
        .collect();
    expected.insert(Keys::control_channel());
    assert_eq!(channels, expected);

    let shard = shard_of("bob", SHARDS);
    let call = tokio::spawn({
        let backend = backend.clone();
        async move {
            backend
                .set_preferences("bob", presence_core::PreferencesUpdate::default())
                .await
        }
    });
    let mut after = StreamId::default();
    let (entry, _) = next_entry(&client, shard, &mut after).await;
    let r = entry.reply.expect("a reply is wanted");
    // Addressed to this node but sent to another node's channel: unseen.
    let misrouted = ReplyMessage {
        node: NODE.into(),
        r: r.clone(),
        result: CommandResult::error("status_text_disabled", "misrouted"),
    };
    publish(&server, &Keys::new(shard).node_channel("gw-2"), &misrouted);
    let reply = ReplyMessage {
        node: NODE.into(),
        r,
        result: ok_me(4),
    };
    publish(&server, &Keys::new(shard).node_channel(NODE), &reply);
    let me = call.await.unwrap().expect("answered on its own channel");
    assert_eq!(me.version, 4);
    backend.shutdown().await;
}

/// One `XADD` per change: a status change whose token carries a profile
/// is a single stream entry holding both (no `TouchProfile` before it).
#[tokio::test]
async fn a_status_change_and_its_profile_are_one_stream_entry() {
    let server = RedisServer::start();
    let (client, backend) = start(&server, config()).await;
    let backend = Arc::new(backend);
    let shard = shard_of("alice", SHARDS);
    let call = tokio::spawn({
        let backend = backend.clone();
        async move {
            let profile = Profile {
                username: Some("al".into()),
                name: Some("Alice".into()),
                utc_offset: None,
            };
            let request = StatusRequest {
                status: Some(ChosenStatus::Away),
                text: None,
                expires_at: None,
            };
            backend.set_status("alice", Some(&profile), request).await
        }
    });
    let mut after = StreamId::default();
    let (entry, _) = next_entry(&client, shard, &mut after).await;
    assert!(
        matches!(
            entry.command,
            ClusterCommand::User(UserCommand::SetStatus { .. })
        ),
        "the first entry is the change itself, got {:?}",
        entry.command
    );
    let profile = entry.profile.clone().expect("the profile is in the entry");
    assert_eq!(profile.username.as_deref(), Some("al"));
    assert_eq!(profile.name.as_deref(), Some("Alice"));
    let reply = ReplyMessage {
        node: NODE.into(),
        r: entry.reply.expect("set_status asks for a reply"),
        result: ok_me(3),
    };
    publish(&server, &Keys::new(shard).node_channel(NODE), &reply);
    call.await.unwrap().unwrap();
    let rest = client.read(shard, after, 10, None).await.unwrap();
    assert!(rest.is_empty(), "one XADD for the change: {rest:?}");
    backend.shutdown().await;
}

/// A refusal keeps its rule code; no answer is `backend_unavailable` after
/// the request timeout.
#[tokio::test]
async fn refusals_keep_their_code_and_silence_times_out_to_backend_unavailable() {
    let server = RedisServer::start();
    let (client, backend) = start(&server, config()).await;
    let backend = Arc::new(backend);
    let s = session("bob", "d1", 1);
    let shard = shard_of("bob", SHARDS);

    let call = tokio::spawn({
        let (backend, s) = (backend.clone(), s.clone());
        async move { backend.device_event(&s, DeviceEvent::Lock).await }
    });
    let mut after = StreamId::default();
    let (entry, _) = next_entry(&client, shard, &mut after).await;
    assert_eq!(
        entry.command,
        ClusterCommand::User(UserCommand::DeviceEvent {
            device: DeviceId::try_from("d1").unwrap(),
            event: DeviceEvent::Lock
        })
    );
    let reply = ReplyMessage {
        node: NODE.into(),
        r: entry.reply.unwrap(),
        result: CommandResult::error("unsupported_event", "a web device cannot report 'lock'"),
    };
    publish(&server, &Keys::new(shard).node_channel(NODE), &reply);
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(error.code(), "unsupported_event");
    assert_eq!(error.to_string(), "a web device cannot report 'lock'");

    let started = Instant::now();
    // Nobody answers this one: the request times out.
    let error = backend
        .device_event(&s, DeviceEvent::Activity)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "backend_unavailable");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    backend.shutdown().await;
}

/// W3: updates become `Update`s; versions not newer than the last seen
/// are dropped, per view.
#[tokio::test]
async fn w3_updates_become_updates_and_stale_versions_are_dropped() {
    let server = RedisServer::start();
    let (_client, backend) = start(&server, config()).await;
    let mut rx = backend.subscribe();
    let channel = Keys::for_user("carol", SHARDS).updates_channel();
    let busy = PublicView {
        status: DisplayedStatus::Busy,
        text: Some(StatusText::parse("Focus").unwrap().unwrap()),
    };
    let message = |version: u64, public: bool, own: bool| UpdateMessage {
        user: "carol".into(),
        version,
        epoch: 1,
        committed_at_us: None,
        public: public.then(|| busy.clone()),
        self_view: own.then(own_view),
    };

    publish(&server, &channel, &message(3, true, true));
    let Update::Presence { snapshot, .. } = next_update(&mut rx).await else {
        panic!("expected a presence update")
    };
    assert_eq!(
        *snapshot,
        PresenceSnapshot {
            user: Arc::from("carol"),
            view: busy.clone(),
            version: 3
        }
    );
    let Update::SelfState(me) = next_update(&mut rx).await else {
        panic!("expected a self update")
    };
    assert_eq!(me.version, 3);

    // Stale and repeated versions are dropped; a newer one goes through.
    publish(&server, &channel, &message(2, true, true));
    publish(&server, &channel, &message(3, true, false));
    publish(&server, &channel, &message(4, false, true));
    let Update::SelfState(me) = next_update(&mut rx).await else {
        panic!("expected the v4 self update, not a stale one")
    };
    assert_eq!(me.version, 4);
    publish(&server, &channel, &message(4, true, false));
    let Update::Presence { snapshot, .. } = next_update(&mut rx).await else {
        panic!("expected the v4 presence update")
    };
    assert_eq!(snapshot.version, 4);
    assert!(rx.try_recv().is_err(), "nothing else was emitted");
    backend.shutdown().await;
}

/// Which users a test gateway wants.
#[derive(Default)]
struct Wanted(parking_lot::Mutex<std::collections::HashSet<String>>);

impl presence_backend::Interest for Wanted {
    fn wants(&self, user: &str) -> bool {
        self.0.lock().contains(user)
    }
}

/// W2: a commit's updates arrive as one message; the lines of users no
/// socket here wants are skipped before their JSON is decoded (a line
/// that is not even JSON is skipped silently), the others are emitted.
#[tokio::test]
async fn w2_updates_of_users_nobody_here_wants_are_skipped_before_decoding() {
    let server = RedisServer::start();
    let (_client, backend) = start(&server, config()).await;
    let wanted = Arc::new(Wanted::default());
    wanted.0.lock().insert("erin".to_owned());
    backend.set_interest(wanted.clone());
    let mut rx = backend.subscribe();
    let away = PublicView {
        status: DisplayedStatus::Away,
        text: None,
    };
    let update = |user: &str, version: u64| UpdateMessage {
        user: user.into(),
        version,
        epoch: 1,
        committed_at_us: None,
        public: Some(away.clone()),
        self_view: None,
    };
    let channel = Keys::for_user("erin", SHARDS).updates_channel();
    let batch = format!(
        "frank\t{{not json\n{}",
        wire::encode_update_batch(&[update("erin", 2)])
    );
    server.command(&["PUBLISH", &channel, &batch]);
    let Update::Presence { snapshot, .. } = next_update(&mut rx).await else {
        panic!("expected erin's update")
    };
    assert_eq!((&*snapshot.user, snapshot.version), ("erin", 2));
    assert_eq!(backend.skipped_updates(), 1, "frank's line was skipped");

    // Once a socket here watches frank, his updates are decoded.
    wanted.0.lock().insert("frank".to_owned());
    let batch = wire::encode_update_batch(&[update("frank", 5), update("gus", 1)]);
    server.command(&["PUBLISH", &channel, &batch]);
    let Update::Presence { snapshot, .. } = next_update(&mut rx).await else {
        panic!("expected frank's update")
    };
    assert_eq!((&*snapshot.user, snapshot.version), ("frank", 5));
    assert_eq!(backend.skipped_updates(), 2, "gus's line was skipped");
    assert!(rx.try_recv().is_err(), "nothing else was emitted");
    backend.shutdown().await;
}

/// W1's delivery latency starts at the commit: an update carries the
/// leader's commit time and the backend hands it on as the update's
/// `changed_at`, not the moment the message arrived here.
#[tokio::test]
async fn w1_an_update_carries_its_commit_time() {
    let server = RedisServer::start();
    let (_client, backend) = start(&server, config()).await;
    let mut rx = backend.subscribe();
    let committed = std::time::SystemTime::now() - Duration::from_millis(250);
    let committed_us = committed
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let update = UpdateMessage {
        user: "dave".into(),
        version: 9,
        epoch: 1,
        committed_at_us: Some(committed_us),
        public: Some(PublicView {
            status: DisplayedStatus::Away,
            text: None,
        }),
        self_view: None,
    };
    publish(
        &server,
        &Keys::for_user("dave", SHARDS).updates_channel(),
        &update,
    );
    let Update::Presence { changed_at, .. } = next_update(&mut rx).await else {
        panic!("expected a presence update")
    };
    assert_eq!(
        changed_at,
        std::time::UNIX_EPOCH + Duration::from_micros(committed_us),
        "the commit time, to the microsecond"
    );
    backend.shutdown().await;
}

/// W3 with a bounded map: reads of many users and updates about many
/// more never make the backend hold more than its capacity, users with a
/// socket here stay tracked (their own views are still filtered), and a
/// stale version is still dropped after a newer one.
#[tokio::test]
async fn w3_the_versions_map_is_bounded() {
    let server = RedisServer::start();
    let mut config = config();
    config.seen_capacity = 64;
    let (client, backend) = start(&server, config).await;
    let backend = Arc::new(backend);
    let leader = auto_leader(client.clone());
    backend.connect(&session("erin", "d1", 1)).await.unwrap();
    let users: Vec<Arc<str>> = (0..500).map(|i| Arc::from(format!("reader-{i}"))).collect();
    for chunk in users.chunks(50) {
        backend.presence(chunk).await.unwrap();
    }
    let mut rx = backend.subscribe();
    let message = |user: &str, version: u64| UpdateMessage {
        user: user.into(),
        version,
        epoch: 1,
        committed_at_us: None,
        public: Some(PublicView {
            status: DisplayedStatus::Busy,
            text: None,
        }),
        self_view: None,
    };
    for i in 0..300 {
        let user = format!("passer-{i}");
        publish(
            &server,
            &Keys::for_user(&user, SHARDS).updates_channel(),
            &message(&user, 1),
        );
    }
    // Then erin, who has a socket here: newer, then stale.
    let channel = Keys::for_user("erin", SHARDS).updates_channel();
    publish(&server, &channel, &message("erin", u64::MAX - 1));
    publish(&server, &channel, &message("erin", 5));
    publish(&server, &channel, &message("erin", u64::MAX));
    let mut erin = Vec::new();
    while erin.last() != Some(&u64::MAX) {
        if let Update::Presence { snapshot, .. } = next_update(&mut rx).await
            && &*snapshot.user == "erin"
        {
            erin.push(snapshot.version);
        }
    }
    assert_eq!(
        erin,
        vec![u64::MAX - 1, u64::MAX],
        "the stale v5 was dropped"
    );
    let (tracked, strangers) = backend.seen_users();
    assert!(tracked <= 64 + 1, "{tracked} tracked users");
    assert!(strangers <= 8, "{strangers} strangers");
    leader.abort();
    backend.shutdown().await;
}

/// X3 and settings: control messages become `Broadcast` and `Settings`.
#[tokio::test]
async fn x3_control_messages_become_broadcast_and_settings_updates() {
    let server = RedisServer::start();
    let (_client, backend) = start(&server, config()).await;
    let mut rx = backend.subscribe();
    let control = Keys::control_channel();

    publish(
        &server,
        &control,
        &ControlMessage::Broadcast { active: false },
    );
    assert!(matches!(
        next_update(&mut rx).await,
        Update::Broadcast { active: false }
    ));
    let settings = WorkspaceSettings {
        allow_invisible: false,
        ..WorkspaceSettings::default()
    };
    publish(
        &server,
        &control,
        &ControlMessage::SettingsChanged {
            settings: settings.clone(),
        },
    );
    let Update::Settings(got) = next_update(&mut rx).await else {
        panic!("expected a settings update")
    };
    assert_eq!(*got, settings);
    backend.shutdown().await;
}

/// H1: one `ZADD` per 500 live devices per shard per round, moving the
/// deadlines the leader registered.
#[tokio::test]
async fn h1_heartbeats_are_refreshed_in_chunks_of_500() {
    let server = RedisServer::start();
    let mut config = config();
    config.shards = 1;
    // 1001 connects wait for one test leader at once; on a loaded CI
    // machine that takes longer than the suite's 400 ms. This test is
    // about chunking, not timeouts.
    config.request_timeout = WAIT;
    let (client, backend) = start(&server, config).await;
    let leader = auto_leader(client.clone());
    let backend = Arc::new(backend);
    let sessions: Vec<Session> = (0..1001)
        .map(|i| session(&format!("user-{i}"), "web", i))
        .collect();
    let mut calls_in_flight = Vec::new();
    for s in sessions.clone() {
        let backend = backend.clone();
        calls_in_flight.push(tokio::spawn(async move { backend.connect(&s).await }));
    }
    for call in calls_in_flight {
        call.await.unwrap().unwrap();
    }
    assert_eq!(backend.connections(), 1001);
    // What the leader would have added for each connect.
    let hb = Keys::new(0).heartbeats();
    for s in &sessions {
        server.command(&["ZADD", &hb, "1", &heartbeat_member(&s.user, &s.device)]);
    }

    wait_until(
        "the socket count is stored",
        WAIT,
        async || server.command(&["HGET", &Keys::conns(), NODE]),
        |count| count == "1001",
    )
    .await;
    server.command(&["CONFIG", "RESETSTAT"]);
    let before = backend.heartbeat_commands();
    backend.refresh_now().await.unwrap();
    assert_eq!(backend.heartbeat_commands() - before, 3);
    // Redis saw those 3, plus the node lease's ZADD of each `refresh_node`:
    // the round's, and any count write (X1, sent on change after a short
    // coalescing pause) that lands in the window. Each `refresh_node` is
    // one ZADD and one HSET, so the HSETs count them.
    let stats = server.command(&["INFO", "commandstats"]);
    let node_refreshes = calls_in(&stats, "hset");
    assert!(node_refreshes >= 1, "the round refreshed the node lease");
    assert_eq!(calls_in(&stats, "zadd"), 3 + node_refreshes);
    let lowest = server.command(&["ZRANGE", &hb, "0", "0", "WITHSCORES"]);
    let score: f64 = lowest.lines().last().unwrap().trim().parse().unwrap_or(0.0);
    assert!(score > 1_700_000_000_000.0, "deadlines moved: {lowest}");
    // X1: the node's socket count is stored with its lease.
    assert_eq!(server.command(&["HGET", &Keys::conns(), NODE]), "1001");
    leader.abort();
    backend.shutdown().await;
}

/// H2: when `refresh_node` finds the node lease lapsed, every live device
/// is registered again with a `Connect`.
#[tokio::test]
async fn h2_a_lapsed_node_lease_registers_every_device_again() {
    let server = RedisServer::start();
    let mut config = config();
    config.shards = 1;
    let (client, backend) = start(&server, config).await;
    let leader = auto_leader(client.clone());
    for (i, user) in ["dave", "erin"].into_iter().enumerate() {
        backend
            .connect(&session(user, "desk", i as u64 + 10))
            .await
            .unwrap();
    }
    backend.refresh_now().await.unwrap();
    assert_eq!(backend.reregistrations(), 0);
    leader.abort();
    let mut after = client
        .read(0, StreamId::default(), 1000, None)
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;

    // The lease lapsed (a partition, a stall): its deadline is in the past.
    server.command(&["ZADD", &Keys::nodes(), "1", NODE]);
    backend.refresh_now().await.unwrap();
    assert_eq!(backend.reregistrations(), 1);
    let mut registered = Vec::new();
    for _ in 0..2 {
        let (entry, _) = next_entry(&client, 0, &mut after).await;
        let ClusterCommand::User(UserCommand::Connect { conn, node, .. }) = entry.command else {
            panic!("expected a connect, got {:?}", entry.command);
        };
        assert_eq!(node, NODE);
        assert!(entry.reply.is_none());
        registered.push((entry.user, conn));
    }
    registered.sort();
    assert_eq!(
        registered,
        [("dave".to_string(), 10), ("erin".to_string(), 11)]
    );
    backend.shutdown().await;
}

/// Reads decode the stored views and documents; unknown users are offline
/// at version 0.
#[tokio::test]
async fn reads_decode_stored_views_documents_and_cluster_state() {
    let server = RedisServer::start();
    let (_client, backend) = start(&server, config()).await;
    let busy = PublicView {
        status: DisplayedStatus::Busy,
        text: Some(StatusText::parse("Focus").unwrap().unwrap()),
    };
    let store_user = |user: &str, view: &PublicView, version: u64, own: SelfStatus| {
        let keys = Keys::for_user(user, SHARDS);
        server.command(&["SADD", &keys.users(), user]);
        let stored = serde_json::to_string(&StoredView::new(view, version)).unwrap();
        server.command(&["SET", &keys.view(user), &stored]);
        let mut me = own_view();
        me.status = own;
        let me = serde_json::to_string(&StoredSelf { version, view: me }).unwrap();
        server.command(&["SET", &keys.self_view(user), &me]);
        let record = UserRecord {
            state: Default::default(),
            profile: Profile {
                username: Some(format!("{user}-name")),
                name: None,
                utc_offset: None,
            },
            updated_at: Timestamp::from_millis(version as i64 / 1000),
        };
        let record = serde_json::to_string(&record).unwrap();
        server.command(&["SET", &keys.user(user), &record]);
    };
    let offline = PublicView {
        status: DisplayedStatus::Offline,
        text: None,
    };
    store_user("frank", &busy, 5_000_000, SelfStatus::Busy);
    store_user("grace", &offline, 2_000_000, SelfStatus::Invisible);

    let users: Vec<Arc<str>> = vec![Arc::from("frank"), Arc::from("nobody")];
    let got = backend.presence(&users).await.unwrap();
    assert_eq!(got[0].view, busy);
    assert_eq!(got[0].version, 5_000_000);
    assert_eq!((got[1].view.clone(), got[1].version), (offline.clone(), 0));

    let me = backend.self_state("frank").await.unwrap();
    assert_eq!((me.view.status, me.version), (SelfStatus::Busy, 5_000_000));
    let unknown = backend.self_state("nobody").await.unwrap();
    assert_eq!(unknown.version, 0);

    let listed = backend.list_not_offline(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(&*listed[0].presence.user, "frank");
    assert_eq!(listed[0].profile.username.as_deref(), Some("frank-name"));
    let changed = backend
        .list_changed_since(Timestamp::from_millis(2_000), "nobody")
        .await
        .unwrap();
    assert_eq!(changed.len(), 2);
    // Versions come from the leader's clock (ms · 1000).
    let changed = backend
        .list_changed_since(Timestamp::from_millis(3_000), "nobody")
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        backend
            .user_by_username("grace-name")
            .await
            .unwrap()
            .as_deref(),
        Some("grace")
    );
    assert_eq!(backend.user_by_username("who").await.unwrap(), None);
    let counts = backend.status_counts().await.unwrap();
    assert_eq!((counts.busy, counts.invisible, counts.online), (1, 1, 0));

    // Cluster-wide state: defaults while absent, then what shard 0 stored,
    // re-read after a control message invalidates the cache.
    assert_eq!(
        *backend.settings().await.unwrap(),
        WorkspaceSettings::default()
    );
    let settings = WorkspaceSettings {
        cap: 5,
        ..WorkspaceSettings::default()
    };
    server.command(&[
        "SET",
        &Keys::settings(),
        &serde_json::to_string(&settings).unwrap(),
    ]);
    let status = presence_core::CustomStatus {
        id: presence_core::CustomStatusId::try_from("cs1").unwrap(),
        name: presence_core::CustomStatusName::parse("Lunch").unwrap(),
        status_type: DisplayedStatus::Away,
        updated_at: Timestamp::from_millis(1),
    };
    server.command(&[
        "HSET",
        &Keys::custom_statuses(),
        "cs1",
        &serde_json::to_string(&status).unwrap(),
    ]);
    let mut rx = backend.subscribe();
    publish(
        &server,
        &Keys::control_channel(),
        &ControlMessage::CustomStatusesChanged {
            changed: vec![status.clone()],
            deleted: vec![],
        },
    );
    wait_until(
        "custom statuses re-read",
        WAIT,
        async || backend.custom_statuses().await.unwrap(),
        |statuses| *statuses == vec![status.clone()],
    )
    .await;
    assert_eq!(backend.settings().await.unwrap().cap, 5);
    assert!(rx.try_recv().is_err());
    let cap = backend.cap_state().await.unwrap();
    assert_eq!((cap.cap, cap.enabled), (5, true));
    backend.shutdown().await;
}

/// H3: with Redis gone calls fail at once with `backend_unavailable` and
/// readiness drops; after a restart the backend is ready again, serves
/// reads, and registers its live devices again.
#[tokio::test]
async fn h3_redis_down_fails_fast_and_recovers_after_restart() {
    let mut server = RedisServer::start();
    let mut config = config();
    config.shards = 1;
    let (client, backend) = start(&server, config).await;
    let leader = auto_leader(client.clone());
    backend.connect(&session("heidi", "web", 1)).await.unwrap();
    leader.abort();
    let users: Vec<Arc<str>> = vec![Arc::from("heidi")];
    let before_kill = client
        .read(0, StreamId::default(), 100, None)
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;

    server.kill9();
    wait_until(
        "readiness drops",
        WAIT,
        async || backend.ready().await,
        |&ready| !ready,
    )
    .await;
    let started = Instant::now();
    let error = backend.presence(&users).await.unwrap_err();
    assert_eq!(error.code(), "backend_unavailable");
    let error = backend
        .device_event(&session("heidi", "web", 1), DeviceEvent::Activity)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "backend_unavailable");
    assert!(started.elapsed() < Duration::from_secs(2), "failed fast");

    let registered = backend.reregistrations();
    server.restart();
    wait_until(
        "ready after the restart",
        Duration::from_secs(10),
        async || backend.ready().await,
        |&ready| ready,
    )
    .await;
    wait_until(
        "reads work again",
        WAIT,
        async || backend.presence(&users).await,
        Result::is_ok,
    )
    .await
    .expect("accepted above");
    wait_until(
        format_args!("devices registered again (more than {registered} times)"),
        WAIT,
        async || backend.reregistrations(),
        |&now| now > registered,
    )
    .await;
    // The re-registration put heidi's device into the stream again.
    wait_until(
        "a new connect for heidi in the stream",
        WAIT,
        async || {
            let entries = client.read(0, before_kill, 10, None).await?;
            Ok::<_, presence_redis::RedisError>(
                entries
                    .into_iter()
                    .filter_map(|e| wire::StreamEntry::from_fields(e.fields).ok())
                    .map(|e| (e.user, e.command))
                    .collect::<Vec<_>>(),
            )
        },
        |read| {
            read.as_ref().is_ok_and(|entries| {
                entries.iter().any(|(user, command)| {
                    user == "heidi"
                        && matches!(command, ClusterCommand::User(UserCommand::Connect { .. }))
                })
            })
        },
    )
    .await
    .expect("accepted above");
    backend.shutdown().await;
}

/// Shutdown deregisters every device (a clean end), leaves the node
/// registry, and later calls are refused with `shutting_down`.
#[tokio::test]
async fn shutdown_deregisters_devices_and_refuses_calls() {
    let server = RedisServer::start();
    let mut config = config();
    config.shards = 1;
    let (client, backend) = start(&server, config).await;
    let leader = auto_leader(client.clone());
    backend.connect(&session("ivan", "web", 3)).await.unwrap();
    leader.abort();
    backend.shutdown().await;
    let entries = client.read(0, StreamId::default(), 10, None).await.unwrap();
    let last = wire::StreamEntry::from_fields(entries.last().unwrap().fields.clone()).unwrap();
    assert_eq!(
        last.command,
        ClusterCommand::User(UserCommand::Disconnect {
            device: DeviceId::try_from("web").unwrap(),
            conn: 3,
            end: wire::SocketEnd::Clean
        })
    );
    assert!(!backend.ready().await);
    let error = backend.self_state("ivan").await.unwrap_err();
    assert_eq!(error.code(), "shutting_down");
    // H2: a clean leave is not a lapse: the node leaves the registry (its
    // count no longer adds to the cap).
    assert_eq!(server.command(&["HEXISTS", &Keys::conns(), NODE]), "0");
    assert_eq!(server.command(&["ZSCORE", &Keys::nodes(), NODE]), "(nil)");
}

/// H3: after the subscriber reconnects, the views of users this node
/// watches are read again and whatever changed while messages were lost
/// is emitted.
#[tokio::test]
async fn h3_resync_after_a_reconnect_emits_views_missed_meanwhile() {
    let mut server = RedisServer::start_with(RedisOptions {
        aof: true,
        ..RedisOptions::default()
    });
    let (_client, backend) = start(&server, config()).await;
    let users: Vec<Arc<str>> = vec![Arc::from("judy")];
    assert_eq!(backend.presence(&users).await.unwrap()[0].version, 0);
    let mut rx = backend.subscribe();

    // The leader changed judy, but the update was never delivered.
    let online = PublicView {
        status: DisplayedStatus::Online,
        text: None,
    };
    let stored = serde_json::to_string(&StoredView::new(&online, 9)).unwrap();
    server.command(&["SET", &Keys::for_user("judy", SHARDS).view("judy"), &stored]);
    server.restart();

    let Update::Presence { snapshot, .. } = next_update(&mut rx).await else {
        panic!("expected judy's missed update")
    };
    assert_eq!((&*snapshot.user, snapshot.version), ("judy", 9));
    assert_eq!(snapshot.view, online);
    backend.shutdown().await;
}

/// A connect nobody answers is `backend_unavailable`, is not counted, and
/// is taken back with a clean disconnect so no ghost device stays.
#[tokio::test]
async fn an_unanswered_connect_is_taken_back() {
    let server = RedisServer::start();
    let mut config = config();
    config.shards = 1;
    let (client, backend) = start(&server, config).await;
    let error = backend
        .connect(&session("kim", "web", 42))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "backend_unavailable");
    assert_eq!(backend.connections(), 0);
    let entries = client.read(0, StreamId::default(), 10, None).await.unwrap();
    let commands: Vec<ClusterCommand> = entries
        .into_iter()
        .map(|e| wire::StreamEntry::from_fields(e.fields).unwrap().command)
        .collect();
    assert_eq!(
        commands[0],
        ClusterCommand::Shard(ShardCommand::NodeStarted { node: NODE.into() })
    );
    let commands = &commands[1..];
    assert!(matches!(
        commands[0],
        ClusterCommand::User(UserCommand::Connect { conn: 42, .. })
    ));
    assert_eq!(
        commands[1],
        ClusterCommand::User(UserCommand::Disconnect {
            device: DeviceId::try_from("web").unwrap(),
            conn: 42,
            end: wire::SocketEnd::Clean
        })
    );
    backend.shutdown().await;
}

/// A leader's first view of a new user that is still offline without text
/// is no change for anyone here (they read as offline at version 0); once
/// the user is known, an offline view is a change like any other.
#[tokio::test]
async fn w3_the_first_offline_view_of_an_unknown_user_is_not_an_update() {
    let server = RedisServer::start();
    let (_client, backend) = start(&server, config()).await;
    let mut rx = backend.subscribe();
    let channel = Keys::for_user("newbie", SHARDS).updates_channel();
    let view = |status| PublicView { status, text: None };
    let message = |version: u64, status| UpdateMessage {
        user: "newbie".into(),
        version,
        epoch: 1,
        committed_at_us: None,
        public: Some(view(status)),
        self_view: None,
    };

    publish(&server, &channel, &message(10, DisplayedStatus::Offline));
    publish(&server, &channel, &message(11, DisplayedStatus::Online));
    let Update::Presence { snapshot, .. } = next_update(&mut rx).await else {
        panic!("expected a presence update")
    };
    assert_eq!(
        (snapshot.view.status, snapshot.version),
        (DisplayedStatus::Online, 11)
    );
    publish(&server, &channel, &message(12, DisplayedStatus::Offline));
    let Update::Presence { snapshot, .. } = next_update(&mut rx).await else {
        panic!("expected a presence update")
    };
    assert_eq!(
        (snapshot.view.status, snapshot.version),
        (DisplayedStatus::Offline, 12)
    );
    backend.shutdown().await;
}

/// X1: the socket count reaches Redis shortly after a connect or a
/// disconnect, not a heartbeat interval (here an hour) later.
#[tokio::test]
async fn x1_the_socket_count_is_stored_soon_after_it_changes() {
    let server = RedisServer::start();
    let mut config = config();
    config.shards = 1;
    let (client, backend) = start(&server, config).await;
    let leader = auto_leader(client.clone());
    let count = || server.command(&["HGET", &Keys::conns(), NODE]);
    let a = session("lea", "web", 1);
    let b = session("max", "web", 2);
    backend.connect(&a).await.unwrap();
    backend.connect(&b).await.unwrap();
    wait_until("two sockets stored", WAIT, async || count(), |n| n == "2").await;
    backend
        .disconnect(&a, presence_backend::SocketEnd::Clean)
        .await
        .unwrap();
    wait_until("one socket stored", WAIT, async || count(), |n| n == "1").await;
    leader.abort();
    backend.shutdown().await;
}

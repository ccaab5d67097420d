//! H4 (issue 9 item 5): time during which Redis itself is unreachable does
//! not count toward device or node deadlines. After an outage longer than
//! the node lease (20 s) or even the heartbeat timeout (60 s), users whose
//! sockets never dropped never show `offline` to anyone and keep their
//! status text; a node that really died during the outage still shows its
//! users offline at most 15 s after Redis returns.
//!
//! Real processes with the default timings (refresh every 10 s, node
//! lease 10 s, heartbeat timeout 30 s): one redis-server with
//! `appendfsync always`, three presenced nodes. The outage is a crash:
//! redis-server is killed with SIGKILL and started again on the same port
//! from its AOF, so every client sees its connections reset, nothing
//! answers meanwhile, and the data (deadlines included) comes back as it
//! was. (SIGSTOP would only pause it: its clock and key expiry would go
//! on, but connections would hang rather than fail; a TCP proxy cut would
//! leave the server up for anyone not behind it.)
//!
//! Node c is a gateway only (it leads no shard) and reaches Redis through
//! a TCP proxy that is healed 3 s after Redis is back: a gateway whose
//! reconnection lags the leaders' (jittered backoff up to 2 s, a slower
//! path). Without the leaders' hold-off (`presence-aggregator`
//! `holdoff.rs`) the leaders, back first, would find node c's lease and
//! its devices' heartbeats lapsed and show its users offline; with it
//! they wait a refresh interval, and node c refreshes first.
//!
//! Every socket is read all along (which also answers the server's
//! pings), and every frame a watcher receives is checked: an `offline`
//! frame for a user whose socket stayed up is a flap, a frame without
//! their text is a lost text.

use std::time::Duration;

use presence_e2e::{Server, ServerOptions, Ws, token};
use presence_testkit::{RedisOptions, RedisServer, TcpProxy};
use serde_json::{Value, json};
use tokio::time::Instant;

const SHARDS: u16 = 4;
/// H4: a node that died during the outage shows its users offline within
/// this long after Redis is back.
const DEAD_NODE_BOUND: Duration = Duration::from_secs(15);
/// How long every socket is watched after Redis is back: past the leaders'
/// hold-off (one refresh interval, 10 s) and a few sweeps after it.
const WATCH_AFTER_RETURN: Duration = Duration::from_secs(20);
/// How much later than the leaders node c gets Redis back.
const LAGGING_GATEWAY: Duration = Duration::from_secs(3);

/// A user with an open socket and what everyone must keep seeing of them.
struct User {
    name: &'static str,
    node: usize,
    status: &'static str,
    text: Option<&'static str>,
}

/// Two users per node: manual statuses with texts (busy users' text is
/// what vanished before), automatic online ones with and without text.
const USERS: [User; 6] = [
    User {
        name: "ann",
        node: 0,
        status: "busy",
        text: Some("In a call"),
    },
    User {
        name: "ben",
        node: 0,
        status: "online",
        text: None,
    },
    User {
        name: "cat",
        node: 1,
        status: "away",
        text: Some("Lunch"),
    },
    User {
        name: "dan",
        node: 1,
        status: "busy",
        text: Some("Focus time"),
    },
    User {
        name: "eve",
        node: 2,
        status: "online",
        text: Some("Working from home"),
    },
    User {
        name: "fay",
        node: 2,
        status: "busy",
        text: Some("Presenting"),
    },
];

fn user(name: &str) -> &'static User {
    USERS.iter().find(|u| u.name == name).expect("a test user")
}

fn text_of(frame: &Value) -> Option<&str> {
    frame["text"].as_str().filter(|t| !t.is_empty())
}

/// A socket read all along; a watcher's presence frames about the test
/// users are kept.
struct Socket {
    ws: Ws,
    label: String,
    node: usize,
    frames: Vec<Value>,
}

impl Socket {
    /// Reads whatever arrives within `window`.
    async fn pump(&mut self, window: Duration) {
        self.ws.expect_none(window, |_| false).await;
        while self.ws.has_backlog(|_| true) {
            let frame = self.ws.next().await.expect("a frame from the backlog");
            let about_a_user = frame["type"] == "presence"
                && frame.get("me").is_none()
                && USERS.iter().any(|u| frame["user"] == u.name);
            if about_a_user {
                self.frames.push(frame);
            }
        }
    }

    /// The latest view of `name` this watcher was shown.
    fn last_view(&self, name: &str) -> Option<&Value> {
        self.frames.iter().rev().find(|f| f["user"] == name)
    }
}

/// What the watchers saw that they should not have.
#[derive(Debug, Default)]
struct Flaps {
    /// `offline` frames for users whose socket stayed up.
    offline: Vec<String>,
    /// Frames that lost the user's text (or showed another status).
    wrong: Vec<String>,
}

impl Flaps {
    /// Checks every frame `watchers` received about `users`.
    fn of(watchers: &[Socket], users: &[&User]) -> Flaps {
        let mut flaps = Flaps::default();
        for w in watchers {
            for frame in &w.frames {
                let Some(u) = users.iter().find(|u| frame["user"] == u.name) else {
                    continue;
                };
                let line = format!("{} saw {frame}", w.label);
                if frame["status"] == "offline" {
                    flaps.offline.push(line);
                } else if frame["status"] != u.status || text_of(frame) != u.text {
                    flaps.wrong.push(line);
                }
            }
        }
        flaps
    }
}

async fn start_node(url: &str, id: &str, gateway_only: bool) -> Server {
    let mut options = ServerOptions::default()
        .relaxed_limits()
        .arg("--redis", url)
        .arg("--shards", SHARDS)
        .arg("--node-id", id);
    if gateway_only {
        options = options.arg("--role", "gateway");
    }
    let node = Server::start_with(options).await;
    node.wait_ready(Duration::from_secs(10)).await;
    node
}

/// Reads every socket, round robin, for `span`.
async fn pump_all(sockets: &mut [Socket], span: Duration) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        for s in sockets.iter_mut() {
            s.pump(Duration::from_millis(20)).await;
        }
    }
}

/// A cluster of three nodes on one Redis with AOF, the users connected
/// with their statuses, and a watcher of every user on every node, all
/// having seen every user's state.
struct Setup {
    redis: RedisServer,
    /// Between node c and Redis.
    proxy: TcpProxy,
    nodes: Vec<Server>,
    /// The users' own sockets, then the watchers.
    users: Vec<Socket>,
    watchers: Vec<Socket>,
}

impl Setup {
    async fn start() -> Setup {
        let redis = RedisServer::start_with(RedisOptions {
            aof: true,
            extra_args: vec!["--appendfsync".into(), "always".into()],
            ..RedisOptions::default()
        });
        let url = redis.url();
        let proxy = TcpProxy::start(redis.addr());
        let nodes = vec![
            start_node(&url, "node-a", false).await,
            start_node(&url, "node-b", false).await,
            start_node(&proxy.redis_url(), "node-c", true).await,
        ];
        let mut users = Vec::new();
        for u in &USERS {
            let mut ws = nodes[u.node]
                .connect(u.name, &format!("{}-desktop", u.name), "desktop")
                .await;
            let mut request = json!({"type": "set_status", "status": u.status});
            if let Some(text) = u.text {
                request["text"] = json!(text);
            }
            ws.ok(request).await;
            users.push(Socket {
                ws,
                label: u.name.to_owned(),
                node: u.node,
                frames: Vec::new(),
            });
        }
        let names: Vec<&str> = USERS.iter().map(|u| u.name).collect();
        let mut watchers = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let mut ws = node
                .connect(&format!("watcher-{i}"), "watching", "web")
                .await;
            let snapshot = ws.subscribe(&names).await;
            let mut socket = Socket {
                ws,
                label: format!("watcher on node {i}"),
                node: i,
                frames: Vec::new(),
            };
            socket.frames.extend(snapshot);
            watchers.push(socket);
        }
        let mut setup = Setup {
            redis,
            proxy,
            nodes,
            users,
            watchers,
        };
        setup.converge().await;
        setup
    }

    /// Waits until every watcher shows every user as expected.
    async fn converge(&mut self) {
        let start = Instant::now();
        loop {
            pump_all(&mut self.watchers, Duration::from_millis(100)).await;
            pump_all(&mut self.users, Duration::from_millis(20)).await;
            let all = self.watchers.iter().all(|w| {
                USERS.iter().all(|u| {
                    w.last_view(u.name)
                        .is_some_and(|v| v["status"] == u.status && text_of(v) == u.text)
                })
            });
            if all {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "watchers never showed every user's state"
            );
        }
    }

    /// Every socket, users' and watchers'.
    fn sockets(&mut self) -> Vec<&mut Socket> {
        self.users
            .iter_mut()
            .chain(self.watchers.iter_mut())
            .collect()
    }

    async fn pump(&mut self, span: Duration) {
        let end = Instant::now() + span;
        while Instant::now() < end {
            for s in self.sockets() {
                s.pump(Duration::from_millis(20)).await;
            }
        }
    }

    /// Redis crashes (kill -9); node c's path to it is cut too.
    fn redis_down(&mut self) {
        self.redis.kill9();
        self.proxy.cut();
    }

    /// Redis starts again from its AOF; node c gets it back
    /// [`LAGGING_GATEWAY`] later, its sockets read meanwhile. Returns when
    /// Redis was back.
    async fn redis_back(&mut self) -> Instant {
        self.redis.restart();
        let back = Instant::now();
        self.pump(LAGGING_GATEWAY).await;
        self.proxy.heal();
        back
    }

    /// Forgets what the watchers saw so far.
    fn clear_frames(&mut self) {
        for w in &mut self.watchers {
            w.frames.clear();
        }
    }
}

/// A Redis outage of `outage`: kill -9, keep every socket busy reading,
/// start it again from its AOF, watch for `WATCH_AFTER_RETURN`. No flap,
/// no lost text, every choice still stored, and the sockets still work.
async fn outage_shows_no_false_offline(outage: Duration) {
    let mut setup = Setup::start().await;
    setup.clear_frames();

    setup.redis_down();
    let down = Instant::now();
    setup.pump(outage).await;
    let back = setup.redis_back().await;
    let downtime = back - down;
    for node in &setup.nodes {
        node.wait_ready(Duration::from_secs(15)).await;
    }
    let ready_after = back.elapsed();
    let left = WATCH_AFTER_RETURN.saturating_sub(back.elapsed());
    setup.pump(left).await;

    let users: Vec<&User> = USERS.iter().collect();
    let flaps = Flaps::of(&setup.watchers, &users);
    let frames: usize = setup.watchers.iter().map(|w| w.frames.len()).sum();
    eprintln!(
        "h4 outage of {downtime:?}: nodes ready {ready_after:?} after redis was back; \
         watched {:?} after; {frames} frames about the users; {} offline flaps, {} frames with a lost text or status",
        back.elapsed(),
        flaps.offline.len(),
        flaps.wrong.len()
    );
    assert!(
        flaps.offline.is_empty(),
        "false offline: {:#?}",
        flaps.offline
    );
    assert!(
        flaps.wrong.is_empty(),
        "lost text or status: {:#?}",
        flaps.wrong
    );

    // Nothing lost: every node reads every user's state back, and every
    // socket still works (a change is accepted on each user's socket).
    for node in &setup.nodes {
        for u in &USERS {
            let path = format!("/v1/users/{}/presence", u.name);
            let (code, body) = Server::call(node.get(&path, &token("observer", false))).await;
            assert_eq!(code, 200, "{body}");
            assert!(
                body["status"] == u.status && text_of(&body) == u.text,
                "{} on REST: {body}",
                u.name
            );
        }
    }
    for s in &mut setup.users {
        let u = user(&s.label);
        let request = json!({"type": "set_status", "status": u.status, "text": "after"});
        let answer = s.ws.request(request).await;
        assert_eq!(answer["type"], "ack", "{}: {answer}", u.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn h4_redis_outage_20s_shows_no_false_offline() {
    outage_shows_no_false_offline(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h4_redis_outage_60s_shows_no_false_offline() {
    outage_shows_no_false_offline(Duration::from_secs(60)).await;
}

/// H4's other half: node c is killed (-9) during a 20 s Redis outage. Its
/// users' sockets are gone with it, so within 15 s of Redis's return the
/// watchers on the other nodes show them offline (the leaders' hold-off
/// must not keep a dead node's users online for long); the users of a and
/// b never flap.
#[tokio::test(flavor = "multi_thread")]
async fn h4_node_killed_during_outage_goes_offline_within_15s_of_return() {
    let mut setup = Setup::start().await;
    setup.clear_frames();

    setup.redis_down();
    let down = Instant::now();
    setup.pump(Duration::from_secs(5)).await;
    // Node c dies while Redis is down: it cannot deregister anything.
    setup.nodes[2].kill9().await;
    setup.users.retain(|s| s.node != 2);
    setup.watchers.retain(|s| s.node != 2);
    setup.pump(Duration::from_secs(15)).await;
    let back = setup.redis_back().await;
    let downtime = back - down;

    let dead: Vec<&User> = USERS.iter().filter(|u| u.node == 2).collect();
    let offline_after = loop {
        setup.pump(Duration::from_millis(100)).await;
        let all_offline = setup.watchers.iter().all(|w| {
            dead.iter().all(|u| {
                w.last_view(u.name)
                    .is_some_and(|v| v["status"] == "offline" && text_of(v).is_none())
            })
        });
        if all_offline {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < DEAD_NODE_BOUND + Duration::from_secs(15),
            "node c's users never went offline for the watchers"
        );
    };
    // Watch a little longer: the live users must not flap meanwhile.
    let left = WATCH_AFTER_RETURN.saturating_sub(back.elapsed());
    setup.pump(left).await;
    let alive: Vec<&User> = USERS.iter().filter(|u| u.node != 2).collect();
    let flaps = Flaps::of(&setup.watchers, &alive);
    eprintln!(
        "h4 node killed during an outage of {downtime:?}: its users offline for every watcher {offline_after:?} after redis was back \
         (bound {DEAD_NODE_BOUND:?}); {} offline flaps and {} wrong frames of the live users",
        flaps.offline.len(),
        flaps.wrong.len()
    );
    assert!(
        offline_after <= DEAD_NODE_BOUND,
        "node c's users went offline {offline_after:?} after redis was back"
    );
    assert!(
        flaps.offline.is_empty(),
        "false offline: {:#?}",
        flaps.offline
    );
    assert!(
        flaps.wrong.is_empty(),
        "lost text or status: {:#?}",
        flaps.wrong
    );
}

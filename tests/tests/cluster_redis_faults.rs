//! Failure tests of cluster mode (issue 4), part 2: Redis itself fails.
//! Each test starts its own redis-server(s) and real `presenced` nodes,
//! breaks Redis or the path to it (a restart with AOF, killed pub/sub
//! connections and a lagging subscriber, a partition by a TCP proxy), and
//! checks what every watcher sees at the end and
//! that no acknowledged choice is lost (DESIGN §2 H1–H3, §1 M3, W3).
//!
//! Waiting is polling of an observable (a frame, an HTTP answer, a Redis
//! key, `/metrics`) with a deadline, never a bare sleep.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use presence_e2e::{Server, ServerOptions, Watcher, Ws, token};
use presence_redis::{Keys, heartbeat_member, shard_of};
use presence_testkit::{RedisOptions, RedisServer, Reply, TcpProxy, resp, wait_until};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Shards of every test cluster: a few, so every node leads some.
const SHARDS: u16 = 4;

/// Cluster flags of one node on `url`, with rate limits out of the way
/// (these tests change statuses in bursts).
fn node_options(url: &str, id: &str) -> ServerOptions {
    ServerOptions::default()
        .relaxed_limits()
        .arg("--redis", url)
        .arg("--shards", SHARDS)
        .arg("--node-id", id)
}

/// Starts one node with `flags` and waits until it is ready.
async fn start_node(url: &str, id: &str, flags: &[(&str, &str)]) -> Server {
    let mut options = node_options(url, id);
    for (flag, value) in flags {
        options = options.arg(flag, value);
    }
    let node = Server::start_with(options).await;
    node.wait_ready(Duration::from_secs(10)).await;
    node
}

/// How long `wait` (a `wait_until`) took.
async fn timed<T>(wait: impl Future<Output = T>) -> Duration {
    let start = Instant::now();
    wait.await;
    start.elapsed()
}

/// The HTTP status of an unauthenticated GET (`/healthz`, `/readyz`); 0 if
/// the node does not answer at all.
async fn http_status(node: &Server, path: &str) -> u16 {
    let request = node
        .http()
        .get(node.url(path))
        .timeout(Duration::from_secs(3));
    match request.send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// The value of `name` (a counter or gauge without labels) in a node's
/// `/metrics`; 0 when absent.
async fn metric(node: &Server, name: &str) -> f64 {
    let Ok(response) = node.http().get(node.url("/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Resyncs of a gateway's Redis subscriber after a reconnect and after a
/// lag, in `/metrics`.
const RESYNCS_RECONNECTED: &str = r#"presence_resyncs_total{reason="redis_reconnected"}"#;
const RESYNCS_LAGGED: &str = r#"presence_resyncs_total{reason="redis_lagged"}"#;

/// `metric` on each node.
async fn metrics_of(nodes: &[&Server], name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for node in nodes {
        values.push(metric(node, name).await);
    }
    values
}

/// What others see of `user`, read over REST on `node`.
async fn rest_presence(node: &Server, user: &str) -> (u16, Value) {
    let path = format!("/v1/users/{user}/presence");
    Server::call(node.get(&path, &token("observer", false))).await
}

/// What `user` sees of themselves (`GET /v1/me`) on `node`.
async fn rest_me(node: &Server, user: &str) -> (u16, Value) {
    Server::call(node.get("/v1/me", &token(user, false))).await
}

/// `PUT /v1/me/status` as `user` on `node`.
async fn rest_set_status(node: &Server, user: &str, status: &str, text: &str) -> (u16, Value) {
    let body = json!({"status": status, "text": text});
    Server::call(node.put("/v1/me/status", &token(user, false)).json(&body)).await
}

/// The `text` of a frame or view: `None` when absent, null or empty.
fn text_of(value: &Value) -> Option<&str> {
    value["text"].as_str().filter(|t| !t.is_empty())
}

/// Whether `view` shows `status` with `text`.
fn shows(view: &Value, status: &str, text: Option<&str>) -> bool {
    view["status"] == status && text_of(view) == text
}

/// Watchers of these tests also wait for a user's view to settle.
trait Converges {
    async fn converges(&mut self, user: &str, status: &str, text: Option<&str>) -> Duration;
}

impl Converges for Watcher {
    /// Waits until the latest view of `user` shows `status` and `text`,
    /// and still does after a settling window; returns how long it took.
    async fn converges(&mut self, user: &str, status: &str, text: Option<&str>) -> Duration {
        let start = Instant::now();
        loop {
            self.pump(Duration::from_millis(50)).await;
            if shows(self.view(user), status, text) {
                self.pump(Duration::from_millis(100)).await;
                if shows(self.view(user), status, text) {
                    return start.elapsed();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "watcher never converged on {user} = {status} {text:?}; last view {}",
                self.view(user)
            );
        }
    }
}

/// Sends `set_status` on a socket until it is acknowledged (the service
/// may still be recovering); returns the ack and how long it took.
async fn set_status_until_accepted(ws: &mut Ws, status: &str, text: &str) -> (Value, Duration) {
    let start = Instant::now();
    let answer = wait_until(
        format_args!("set_status {status} {text:?} to be accepted"),
        Duration::from_secs(15),
        async || {
            let change = json!({"type": "set_status", "status": status, "text": text});
            let answer = ws.request(change).await;
            if answer["type"] == "error" {
                assert_eq!(
                    answer["code"], "backend_unavailable",
                    "only unavailability may refuse a valid change: {answer}"
                );
            }
            answer
        },
        |answer| answer["type"] != "error",
    )
    .await;
    (answer, start.elapsed())
}

/// The stored view of `user` (what others see), read from Redis itself.
fn stored_view(redis: &RedisServer, user: &str) -> Option<Value> {
    let key = Keys::for_user(user, SHARDS).view(user);
    serde_json::from_str(&redis.command(&["GET", &key])).ok()
}

/// A heartbeat deadline of `user`'s `device` in Redis (ms), if any.
fn heartbeat_deadline(redis: &RedisServer, user: &str, device: &str) -> Option<u64> {
    let key = Keys::new(shard_of(user, SHARDS)).heartbeats();
    let member = heartbeat_member(user, device);
    redis.command(&["ZSCORE", &key, &member]).parse().ok()
}

fn aof_always() -> RedisOptions {
    RedisOptions {
        aof: true,
        extra_args: vec!["--appendfsync".into(), "always".into()],
        ..RedisOptions::default()
    }
}

// ---- 1. Redis restarted (AOF) ----

/// H3, M3: Redis goes away and comes back with its AOF. While it is down
/// sockets stay open, writes answer `backend_unavailable`, `/healthz`
/// stays 200 and `/readyz` turns 503. After it is back every choice made
/// before is still there, the gateways refresh their devices again (the
/// users with open sockets are still online), changes made right after
/// are accepted, and watchers on every node converge on the final state.
#[tokio::test(flavor = "multi_thread")]
async fn h3_m3_redis_restart_with_aof_loses_no_choice_and_every_node_recovers() {
    let mut redis = RedisServer::start_with(aof_always());
    let url = redis.url();
    // A node lease shorter than the outage: when Redis is back, leaders
    // find every node's lease lapsed and drop their devices, so the
    // gateways must register their live devices again (H2, H3).
    // The refresh interval is at the backend's 500 ms registration retry
    // on purpose: ticks as frequent as the retry must not postpone it.
    let flags = [
        ("--device-refresh-interval", "500ms"),
        ("--node-lease-ttl", "3s"),
    ];
    let nodes = [
        start_node(&url, "node-a", &flags).await,
        start_node(&url, "node-b", &flags).await,
        start_node(&url, "node-c", &flags).await,
    ];
    let [a, b, c] = &nodes;
    let watched = ["alice", "bob", "carol", "dave"];
    let mut watchers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        watchers.push(Watcher::start(node, &format!("watcher-{i}"), &watched).await);
    }
    let mut alice = a.connect("alice", "alice-desktop", "desktop").await;
    let mut bob = b.connect("bob", "bob-web", "web").await;
    let mut carol = c.connect("carol", "carol-phone", "mobile").await;

    // Choices before the restart: a status and text per user, bob's
    // preferences, dave's choice without any device (kept, A1).
    alice
        .ok(json!({"type": "set_status", "status": "busy", "text": "Deep work"}))
        .await;
    bob.ok(json!({"type": "set_status", "status": "away", "text": "Lunch"}))
        .await;
    carol
        .ok(json!({"type": "set_status", "status": "invisible"}))
        .await;
    b.preferences("bob", json!({"auto_away": false, "idle_time_limit": 600}))
        .await;
    let (code, body) = rest_set_status(c, "dave", "busy", "On a plane").await;
    assert_eq!(code, 200, "{body}");
    for w in &mut watchers {
        w.converges("alice", "busy", Some("Deep work")).await;
        w.converges("bob", "away", Some("Lunch")).await;
        w.converges("carol", "offline", None).await;
    }
    let alice_beat = heartbeat_deadline(&redis, "alice", "alice-desktop").expect("alice beats");

    // Redis goes away (SHUTDOWN flushes the AOF; clients see the
    // connections close).
    redis.stop();
    let down = Instant::now();
    for node in &nodes {
        wait_until(
            "/readyz 503 while redis is down",
            Duration::from_secs(10),
            async || http_status(node, "/readyz").await,
            |&status| status == 503,
        )
        .await;
        assert_eq!(
            http_status(node, "/healthz").await,
            200,
            "healthz never depends on redis"
        );
    }
    // Sockets stay open; writes are refused with a clear error, without
    // waiting for a leader's answer (the request timeout, 5 s).
    let asked = Instant::now();
    alice
        .refused(
            json!({"type": "set_status", "status": "away", "text": "lost?"}),
            "backend_unavailable",
        )
        .await;
    let refused_after = asked.elapsed();
    assert!(
        refused_after < Duration::from_millis(4900),
        "a write while redis is down fails before the request timeout, not after {refused_after:?}"
    );
    let (code, body) = rest_set_status(b, "bob", "online", "nope").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "backend_unavailable", "{body}");

    // Redis comes back with its AOF.
    redis.restart();
    let downtime = down.elapsed();
    let back = Instant::now();
    let mut ready_after = Duration::ZERO;
    for node in &nodes {
        ready_after = ready_after.max(
            timed(wait_until(
                "/readyz 200 after redis is back",
                Duration::from_secs(10),
                async || http_status(node, "/readyz").await,
                |&status| status == 200,
            ))
            .await,
        );
    }

    // The gateways register their live devices again and refresh their
    // heartbeats (H1, H3): the users with open sockets are online again.
    let reregistered = timed(wait_until(
        "alice, bob and carol registered again (one device each)",
        Duration::from_secs(10),
        async || {
            [
                rest_me(c, "alice").await.1["devices"].clone(),
                rest_me(a, "bob").await.1["devices"].clone(),
                rest_me(b, "carol").await.1["devices"].clone(),
            ]
        },
        |devices| devices.iter().all(|d| *d == 1),
    ))
    .await;
    let refreshed = timed(wait_until(
        format_args!("alice's heartbeat deadline to move past {alice_beat} after the restart"),
        Duration::from_secs(10),
        async || heartbeat_deadline(&redis, "alice", "alice-desktop"),
        |deadline| deadline.is_some_and(|d| d > alice_beat),
    ))
    .await;

    // Nothing chosen was lost (M3), and nothing refused was applied.
    let (_, entry) = rest_presence(b, "alice").await;
    assert!(shows(&entry, "busy", Some("Deep work")), "alice: {entry}");
    let (_, entry) = rest_presence(c, "bob").await;
    assert!(shows(&entry, "away", Some("Lunch")), "bob: {entry}");
    let (_, entry) = rest_presence(a, "carol").await;
    assert!(
        shows(&entry, "offline", None),
        "carol is invisible: {entry}"
    );
    let (_, me) = rest_me(a, "carol").await;
    assert_eq!(me["status"], "invisible", "carol's own view: {me}");
    let (_, me) = rest_me(a, "dave").await;
    assert_eq!(me["chosen"], "busy", "dave's choice is kept: {me}");
    assert_eq!(me["text"], "On a plane", "{me}");
    let (code, prefs) = Server::call(a.get("/v1/me/preferences", &token("bob", false))).await;
    assert_eq!(code, 200, "{prefs}");
    assert_eq!(prefs["auto_away"], false, "{prefs}");
    assert_eq!(prefs["idle_time_limit"], 600, "{prefs}");
    for w in &mut watchers {
        w.converges("alice", "busy", Some("Deep work")).await;
        w.converges("bob", "away", Some("Lunch")).await;
    }

    // Changes right after Redis is back are accepted and reach everyone.
    let (_, first_write) = set_status_until_accepted(&mut alice, "online", "back").await;
    bob.ok(json!({"type": "set_status", "status": "busy", "text": "after restart"}))
        .await;
    carol
        .ok(json!({"type": "set_status", "status": "online"}))
        .await;
    let (code, body) = rest_set_status(a, "dave", "away", "Landed").await;
    assert_eq!(code, 200, "{body}");
    alice.expect_me(|me| me["text"] == "back").await;
    for w in &mut watchers {
        w.converges("alice", "online", Some("back")).await;
        w.converges("bob", "busy", Some("after restart")).await;
        w.converges("carol", "online", None).await;
    }
    for node in &nodes {
        let (_, entry) = rest_presence(node, "dave").await;
        assert!(
            shows(&entry, "offline", None),
            "dave has no device: {entry}"
        );
    }
    let (_, me) = rest_me(b, "dave").await;
    assert_eq!(me["chosen"], "away", "{me}");
    eprintln!(
        "redis restart: a write refused after {refused_after:?} while down; down {downtime:?}; nodes ready {ready_after:?} after it was back; \
         devices registered again after {reregistered:?}, heartbeats refreshed {refreshed:?} later; first write accepted after {first_write:?} \
         (from {:?} after restart)",
        back.elapsed()
    );
}

// ---- 3. A gateway partitioned from Redis ----

/// How the proxy between node a and Redis breaks the path.
#[derive(Clone, Copy, Debug)]
enum Partition {
    /// Connections are closed and new ones refused: Redis "went away".
    HardCut,
    /// Every byte is swallowed and nothing is closed: only deadlines and
    /// the unresponsive-connection check can tell.
    Blackhole,
}

/// Node a reaches Redis through a [`TcpProxy`]; nodes b and c directly.
/// While a is cut off, its devices expire for watchers elsewhere (H1, H2),
/// its own sockets stay open and get `backend_unavailable` for writes,
/// `/healthz` stays 200 and `/readyz` 503. After the heal its devices are
/// registered again without the clients reconnecting (H3), its watchers
/// resync what changed meanwhile, and the user's choice is intact (M3).
async fn gateway_partitioned_then_healed(partition: Partition) {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr());
    let flags = [
        ("--device-refresh-interval", "1s"),
        ("--device-timeout", "3s"),
        ("--node-lease-ttl", "3s"),
    ];
    let a = start_node(&proxy.redis_url(), "node-a", &flags).await;
    let b = start_node(&redis.url(), "node-b", &flags).await;
    let c = start_node(&redis.url(), "node-c", &flags).await;
    let watched = ["alice", "bob"];
    let mut wa = Watcher::start(&a, "watcher-a", &watched).await;
    let mut wb = Watcher::start(&b, "watcher-b", &watched).await;
    let mut wc = Watcher::start(&c, "watcher-c", &watched).await;
    let mut alice = a.connect("alice", "alice-desktop", "desktop").await;
    let mut bob = b.connect("bob", "bob-web", "web").await;
    alice
        .ok(json!({"type": "set_status", "status": "busy", "text": "Focus"}))
        .await;
    for w in [&mut wa, &mut wb, &mut wc] {
        w.converges("alice", "busy", Some("Focus")).await;
        w.converges("bob", "online", None).await;
    }

    let cut = Instant::now();
    match partition {
        Partition::HardCut => proxy.cut(),
        Partition::Blackhole => proxy.blackhole(),
    }
    // Elsewhere alice's only device expires: offline, no text (A1, A5).
    let mut offline_after = Duration::ZERO;
    for w in [&mut wb, &mut wc] {
        offline_after = offline_after.max(w.converges("alice", "offline", None).await);
    }
    // The cut-off node stays alive. Behind a hard cut it is not ready;
    // behind a blackhole its readiness flickers (see
    // `h3_readyz_stays_503_while_blackholed_from_redis`), so only the hard
    // cut asserts it here.
    let not_ready = match partition {
        Partition::HardCut => Some(
            timed(wait_until(
                "/readyz 503 on the cut-off node",
                Duration::from_secs(15),
                async || http_status(&a, "/readyz").await,
                |&status| status == 503,
            ))
            .await,
        ),
        Partition::Blackhole => None,
    };
    assert_eq!(http_status(&a, "/healthz").await, 200);
    // Its sockets stay open; writes get a clear error.
    let asked = Instant::now();
    alice
        .refused(
            json!({"type": "set_status", "status": "away", "text": "unsaved"}),
            "backend_unavailable",
        )
        .await;
    let refused_after = asked.elapsed();
    // Changes elsewhere go on.
    bob.ok(json!({"type": "set_status", "status": "away", "text": "Meeting"}))
        .await;
    for w in [&mut wb, &mut wc] {
        w.converges("bob", "away", Some("Meeting")).await;
    }

    proxy.heal();
    let healed = Instant::now();
    let partitioned = cut.elapsed();
    let ready_after = timed(wait_until(
        "/readyz 200 after the heal",
        Duration::from_secs(15),
        async || http_status(&a, "/readyz").await,
        |&status| status == 200,
    ))
    .await;
    // Alice's device is registered again without her reconnecting: her
    // choice shows again everywhere (H3, M3).
    let mut back_after = Duration::ZERO;
    for w in [&mut wb, &mut wc] {
        w.converges("alice", "busy", Some("Focus")).await;
        back_after = back_after.max(healed.elapsed());
    }
    // The cut-off node's watcher resyncs what it missed.
    wa.converges("bob", "away", Some("Meeting")).await;
    wa.converges("alice", "busy", Some("Focus")).await;
    let resynced_after = healed.elapsed();
    // The same socket writes again.
    let (_, first_write) = set_status_until_accepted(&mut alice, "online", "back").await;
    for w in [&mut wa, &mut wb, &mut wc] {
        w.converges("alice", "online", Some("back")).await;
    }
    let (_, me) = rest_me(&b, "alice").await;
    assert_eq!(
        me["devices"], 1,
        "one device, the one that never reconnected: {me}"
    );
    eprintln!(
        "{partition:?}: cut off for {partitioned:?}; alice offline elsewhere after {offline_after:?}; \
         /readyz 503 after {not_ready:?} (hard cut only); a write refused after {refused_after:?}; after the heal: \
         ready {ready_after:?}, alice back elsewhere {back_after:?}, watcher on a resynced \
         {resynced_after:?}, first write accepted {first_write:?} after trying"
    );
}

/// H1, H2, H3 with connections closed and refused (RST/FIN).
#[tokio::test(flavor = "multi_thread")]
async fn h1_h2_h3_gateway_cut_off_from_redis_expires_its_devices_and_restores_them_after_heal() {
    gateway_partitioned_then_healed(Partition::HardCut).await;
}

/// H1, H2, H3 with a silent partition: nothing is closed, bytes vanish;
/// the gateway must notice by itself (command deadlines, the
/// unresponsive-connection check).
#[tokio::test(flavor = "multi_thread")]
async fn h1_h2_h3_gateway_behind_a_silent_blackhole_expires_its_devices_and_restores_them_after_heal()
 {
    gateway_partitioned_then_healed(Partition::Blackhole).await;
}

// ---- 2. Pub/sub connections killed, a subscriber lagging ----

/// The pub/sub connections Redis has now and how many channels each
/// listens to (`CLIENT LIST TYPE pubsub`).
fn subscribers(redis: std::net::SocketAddr) -> Vec<u64> {
    let list = resp::query(redis, &["CLIENT", "LIST", "TYPE", "pubsub"])
        .expect("CLIENT LIST")
        .to_string();
    list.lines()
        .filter_map(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("sub="))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

/// Kills every pub/sub connection, then waits until `nodes` subscribers
/// listen to `channels` channels each again; returns how long that took.
async fn kill_pubsub_and_wait_resubscribed(
    redis: std::net::SocketAddr,
    nodes: usize,
    channels: u64,
) -> Duration {
    let killed = resp::query(redis, &["CLIENT", "KILL", "TYPE", "pubsub"]).expect("CLIENT KILL");
    assert!(
        matches!(killed, Reply::Integer(n) if n as usize >= nodes),
        "killed {killed} pub/sub connections, expected {nodes}"
    );
    timed(wait_until(
        format_args!("{nodes} pub/sub connections with {channels} channels each"),
        Duration::from_secs(10),
        async || subscribers(redis),
        |subs| subs.len() == nodes && subs.iter().all(|&n| n == channels),
    ))
    .await
}

/// One user changing their status over and over through their own socket
/// until `stop`, counting acknowledged changes in `acks`; returns the last
/// text acknowledged and the last text sent (which may have been applied
/// or not when it was not acknowledged).
async fn keep_changing(
    mut ws: Ws,
    user: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (Ws, String, Option<String>, Option<String>, usize) {
    let mut round = 0;
    let mut acked = None;
    let mut last_sent = None;
    let mut refused = 0;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        round += 1;
        let status = if round % 2 == 0 { "busy" } else { "away" };
        let text = format!("{user} r{round}");
        let answer = ws
            .request(json!({"type": "set_status", "status": status, "text": text}))
            .await;
        last_sent = Some(text.clone());
        if answer["type"] == "error" {
            // A reply lost with its pub/sub connection: the change may or
            // may not have been committed.
            assert_eq!(answer["code"], "backend_unavailable", "{answer}");
            refused += 1;
        } else {
            acked = Some(text);
            acks.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }
    (ws, user, acked, last_sent, refused)
}

/// H3, W3: pub/sub is at-most-once. Every node's subscriber connection is
/// killed (`CLIENT KILL TYPE pubsub`) several times while statuses
/// change, and one gateway's subscriber is made to fall behind a burst:
/// watchers on every node still end on exactly the stored state, and no
/// acknowledged change is lost.
#[tokio::test(flavor = "multi_thread")]
async fn h3_w3_pubsub_killed_and_lagging_watchers_resync_to_the_stored_state() {
    let t0 = Instant::now();
    let redis = RedisServer::start();
    let url = redis.url();
    let a = start_node(&url, "node-a", &[]).await;
    let b = start_node(&url, "node-b", &[]).await;
    // The lag victim only serves clients: pausing it moves no shard.
    let c = start_node(&url, "node-c", &[("--role", "gateway")]).await;
    let users: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();
    let watched: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut watchers = vec![
        Watcher::start(&a, "watcher-a", &watched).await,
        Watcher::start(&b, "watcher-b", &watched).await,
        Watcher::start(&c, "watcher-c", &watched).await,
    ];
    let channels = {
        let subs = subscribers(redis.addr());
        assert_eq!(subs.len(), 3, "one subscriber per node: {subs:?}");
        subs[0]
    };

    // Statuses change on every user's socket while the pub/sub
    // connections are killed three times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut changers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        let ws = node.connect(user, &format!("{user}-web"), "web").await;
        let changer = keep_changing(ws, user.clone(), stop.clone(), acks.clone());
        changers.push(tokio::spawn(changer));
    }
    let mut resubscribed = Vec::new();
    for _ in 0..3 {
        // Let a few changes through between the kills: as many
        // acknowledgements as there are users.
        let before = acks.load(std::sync::atomic::Ordering::Acquire);
        wait_until(
            format_args!("{} more changes acknowledged", users.len()),
            Duration::from_secs(10),
            async || acks.load(std::sync::atomic::Ordering::Acquire),
            |&acked| acked >= before + users.len(),
        )
        .await;
        resubscribed.push(kill_pubsub_and_wait_resubscribed(redis.addr(), 3, channels).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut sockets = HashMap::new();
    let mut refused_total = 0;
    for changer in changers {
        let (ws, user, acked, last_sent, refused) = changer.await.expect("changer");
        refused_total += refused;
        // No acknowledged change is lost: the stored state is the last
        // acknowledged one, or a later one whose answer was lost.
        let (_, stored) = rest_presence(&a, &user).await;
        let stored_text = text_of(&stored).map(str::to_owned);
        assert!(
            stored_text == acked || stored_text == last_sent,
            "{user}: stored {stored}, last acknowledged {acked:?}, last sent {last_sent:?}"
        );
        sockets.insert(user, ws);
    }
    // Every watcher ends on the stored state.
    for user in &users {
        let (_, stored) = rest_presence(&b, user).await;
        let status = stored["status"].as_str().expect("status").to_owned();
        for w in &mut watchers {
            w.converges(user, &status, text_of(&stored)).await;
        }
    }

    // A change published while the subscribers are away: only the resync
    // after they are back can deliver it.
    let nodes = [&a, &b, &c];
    let before = metrics_of(&nodes, RESYNCS_RECONNECTED).await;
    let target = &users[0];
    let killed = resp::query(redis.addr(), &["CLIENT", "KILL", "TYPE", "pubsub"]).expect("kill");
    assert!(matches!(killed, Reply::Integer(3)), "{killed}");
    let ws = sockets.get_mut(target).expect("socket");
    ws.send(json!({"type": "set_status", "status": "busy", "text": "while unsubscribed"}))
        .await;
    // Read from Redis itself: a read through a node would hide the update
    // from that node's watchers (see
    // `w3_a_read_through_a_node_does_not_hide_a_lost_update_from_its_watchers`).
    wait_until(
        "the change to be stored (busy, \"while unsubscribed\")",
        Duration::from_secs(10),
        async || stored_view(&redis, target),
        |view| {
            view.as_ref()
                .is_some_and(|v| shows(v, "busy", Some("while unsubscribed")))
        },
    )
    .await;
    for w in &mut watchers {
        w.converges(target, "busy", Some("while unsubscribed"))
            .await;
    }
    // Every node counted the resync (the export runs once a second).
    let mut after_kill = Vec::new();
    for (node, was) in nodes.iter().zip(&before) {
        wait_until(
            format_args!("{RESYNCS_RECONNECTED} in /metrics to pass {was}"),
            Duration::from_secs(5),
            async || metric(node, RESYNCS_RECONNECTED).await,
            |count| count > was,
        )
        .await;
        after_kill.push(metric(node, RESYNCS_RECONNECTED).await);
    }

    // Lag: node c is paused while a burst of messages it must read (and
    // ignore: replies to another node) piles up on its pub/sub
    // connection, followed by a real change; resumed, it reads the burst
    // faster than it can handle it.
    let lagged_before = metrics_of(&nodes, RESYNCS_LAGGED).await;
    let lost_before = metrics_of(&nodes, "presence_pubsub_lagged_total").await;
    let pid = c.pid().expect("node c runs");
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let addr = redis.addr();
    // Node c's own channel: it reads every message there.
    let channel = Keys::new(1).node_channel("node-c");
    let burst = 60_000;
    tokio::task::spawn_blocking(move || {
        let junk = r#"{"node":"nobody","r":"0","result":{"ok":{}}}"#;
        let mut conn = resp::Connection::open(addr).expect("connect");
        for _ in 0..burst {
            conn.send(&["PUBLISH", &channel, junk]).expect("publish");
        }
        for _ in 0..burst {
            conn.read_reply().expect("reply");
        }
    })
    .await
    .expect("burst");
    let lag_target = &users[1];
    // Sent without waiting for the answer: the burst makes every node's
    // subscriber lag, and a reply dropped with the lag times out
    // (`backend_unavailable`) although the change is committed.
    sockets
        .get_mut(lag_target)
        .expect("socket")
        .send(json!({"type": "set_status", "status": "busy", "text": "behind the burst"}))
        .await;
    wait_until(
        "the change to be stored (busy, \"behind the burst\")",
        Duration::from_secs(10),
        async || stored_view(&redis, lag_target),
        |view| {
            view.as_ref()
                .is_some_and(|v| shows(v, "busy", Some("behind the burst")))
        },
    )
    .await;
    signal("-CONT");
    for w in &mut watchers {
        w.converges(lag_target, "busy", Some("behind the burst"))
            .await;
    }
    // Whether the burst made a subscriber lag depends on scheduling (a
    // hidden pub/sub buffer flag would make it certain); when it did,
    // /metrics says so (within its one-second export). Printed, not
    // asserted.
    let lagged = metrics_of(&nodes, RESYNCS_LAGGED).await;
    let lost = metrics_of(&nodes, "presence_pubsub_lagged_total").await;
    eprintln!(
        "pub/sub ({:?}): resubscribed after kills in {resubscribed:?}; {refused_total} changes refused \
         (answers lost with the connection); reconnect resyncs per node {before:?} -> \
         {after_kill:?}; burst: lag resyncs {lagged_before:?} -> {lagged:?}, messages lost \
         {lost_before:?} -> {lost:?}",
        t0.elapsed()
    );
}

/// W3, H3: reading a user through a node (REST, a query, a subscribe
/// snapshot) must not stop that node from pushing the user's newer state
/// to its watchers. Here the update's pub/sub message is lost (every
/// subscriber killed), the change is read over REST on the watcher's node
/// before that node resubscribes, and the resync after the resubscription
/// must still deliver it.
#[tokio::test(flavor = "multi_thread")]
async fn w3_a_read_through_a_node_does_not_hide_a_lost_update_from_its_watchers() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = start_node(&url, "node-a", &[]).await;
    let b = start_node(&url, "node-b", &[]).await;
    let mut watcher = Watcher::start(&a, "watcher", &["alice"]).await;
    let mut alice = b.connect("alice", "alice-web", "web").await;
    alice
        .ok(json!({"type": "set_status", "status": "busy", "text": "one"}))
        .await;
    watcher.converges("alice", "busy", Some("one")).await;

    let killed = resp::query(redis.addr(), &["CLIENT", "KILL", "TYPE", "pubsub"]).expect("kill");
    assert!(matches!(killed, Reply::Integer(2)), "{killed}");
    // Not waiting for the answer: it travels on a killed connection too.
    alice
        .send(json!({"type": "set_status", "status": "busy", "text": "two"}))
        .await;
    // The watcher's node serves a read of the new state before its
    // subscriber is back (reconnection waits at least 100 ms).
    wait_until(
        "node a to read the new state (busy, \"two\")",
        Duration::from_secs(10),
        async || rest_presence(&a, "alice").await.1,
        |entry| shows(entry, "busy", Some("two")),
    )
    .await;
    watcher.converges("alice", "busy", Some("two")).await;
}

// ---- 4. Sentinel failover ----
// Moved to `cluster_redis_ha.rs` (issue 9): five failovers in a row, 0
// acknowledged changes lost, writes refused ≤ 3 s, read paths converged
// ≤ 5 s, over Sentinel and over Redis Cluster.

/// H3 and `/readyz` ("backend reachable"): a gateway whose Redis
/// connections are silently blackholed is not ready, for as long as the
/// partition lasts, not just for the moments between a connection given
/// up as unresponsive and the next one the blackhole accepts.
#[tokio::test(flavor = "multi_thread")]
async fn h3_readyz_stays_503_while_blackholed_from_redis() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr());
    let flags = [("--device-refresh-interval", "1s")];
    let a = start_node(&proxy.redis_url(), "node-a", &flags).await;
    let _b = start_node(&redis.url(), "node-b", &flags).await;
    proxy.blackhole();
    wait_until(
        "/readyz 503 behind the blackhole",
        Duration::from_secs(15),
        async || http_status(&a, "/readyz").await,
        |&status| status == 503,
    )
    .await;
    // Sampled every 100 ms for 6 s (two unresponsive-connection cycles):
    // the pauses prove that readiness does not come back, they wait for
    // nothing.
    let mut ready_samples = 0;
    for _ in 0..60 {
        if http_status(&a, "/readyz").await == 200 {
            ready_samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready_samples, 0,
        "ready in {ready_samples} of 60 samples while blackholed"
    );
}

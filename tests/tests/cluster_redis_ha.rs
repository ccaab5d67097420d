//! Redis high availability (issue 9 items 1–3): failovers of a real Redis
//! under steady acknowledged traffic from several users on three real
//! `presenced` nodes. Each test runs five failovers in a row and, for each
//! one, checks DESIGN R1 and W4 and the §6 targets:
//!
//! - **0 acknowledged changes lost**: after the failover, each user's
//!   document on the new primary holds their last acknowledged change (or
//!   a later one whose answer was an error: a refused change may still be
//!   applied, an acknowledged one must be);
//! - **writes refused ≤ 3 s**: users who keep changing through the
//!   failover never wait longer than that between two acknowledgements;
//! - **every read path converged ≤ 5 s** (W4): REST on every node and
//!   every watcher on every node show the stored state.
//!
//! Half of the users stop changing right after the promotion (in
//! turns): their last acknowledged change is one the old primary may
//! still have taken, the case that was lost before.
//!
//! Waiting is polling of an observable with a deadline, never a bare sleep
//! (the pauses between changes are a user's pace).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use presence_e2e::{Server, ServerOptions, Watcher, Ws, token};
use presence_redis::Keys;
use presence_testkit::{RedisCluster, RedisServer, SentinelCluster, wait_until};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Shards of every test cluster: a few, so every node leads some.
const SHARDS: u16 = 4;
/// Failovers per test.
const FAILOVERS: usize = 5;
/// Users changing their status, spread over the nodes.
const USERS: usize = 6;
/// The targets of DESIGN §6.
const WRITE_GAP_TARGET: Duration = Duration::from_secs(3);
const CONVERGENCE_TARGET: Duration = Duration::from_secs(5);

/// R1, W4 under `SENTINEL FAILOVER` (a primary, two replicas, three
/// sentinels; the nodes use `redis+sentinel://` and the default
/// `--redis-replica-acks` of 1).
///
/// Two settings measure other topologies (docs/operations.md), with every
/// assertion but the write gap's kept:
/// `PRESENCE_HA_SENTINEL_REPLICAS=1` runs the minimal setup of one
/// replica, where writes wait for the former primary to be demoted and to
/// resync (the gap is printed, not asserted), and
/// `PRESENCE_HA_SENTINEL_DEFAULTS=1` keeps Sentinel's 10 s `INFO` period.
#[tokio::test(flavor = "multi_thread")]
async fn r1_sentinel_failovers_lose_no_acknowledged_change() {
    let replicas: usize = std::env::var("PRESENCE_HA_SENTINEL_REPLICAS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let defaults = std::env::var_os("PRESENCE_HA_SENTINEL_DEFAULTS").is_some();
    let sentinel = tokio::task::spawn_blocking(move || {
        let sentinel = SentinelCluster::start_with_replicas(replicas);
        if !defaults {
            // The former primary is demoted ~2 s after a failover instead
            // of 8–20 s, so five failovers fit in a test; it still accepts
            // writes meanwhile, which is what the nodes must not use.
            sentinel.speed_up_reconfiguration();
        }
        sentinel
    })
    .await
    .expect("sentinels start");
    let ha = Arc::new(SentinelHa(sentinel));
    // With one replica, `WAIT 1` refuses writes until the former primary
    // is a replica again: reported, not a target.
    let gap_target = (replicas >= 2).then_some(WRITE_GAP_TARGET);
    run_failovers(ha, &format!("sentinel ({replicas} replicas)"), gap_target).await;
}

/// R1, W4 under `CLUSTER FAILOVER` on a replica (Redis Cluster, three
/// primaries with a replica each), each time of the primary serving
/// another user's shard.
#[tokio::test(flavor = "multi_thread")]
async fn r1_redis_cluster_replica_failovers_lose_no_acknowledged_change() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start_with_replicas(3, 1))
        .await
        .expect("redis cluster starts");
    let ha = Arc::new(ClusterHa(cluster));
    run_failovers(ha, "cluster", Some(WRITE_GAP_TARGET)).await;
}

/// What a test needs from a Redis HA setup.
trait Ha: Send + Sync + 'static {
    fn url(&self) -> String;
    /// Fails over the primary serving `key` (Sentinel: the primary);
    /// returns once the new primary is promoted.
    fn failover(&self, key: &str) -> Duration;
    /// Waits until the setup could fail over again (replicas linked).
    fn settle(&self);
    /// The server that is now the primary for `key`.
    fn primary_for(&self, key: &str) -> &RedisServer;
}

struct SentinelHa(SentinelCluster);

impl Ha for SentinelHa {
    fn url(&self) -> String {
        self.0.url()
    }

    fn failover(&self, _key: &str) -> Duration {
        self.0.failover().1
    }

    fn settle(&self) {
        self.0.wait_topology_known();
    }

    fn primary_for(&self, _key: &str) -> &RedisServer {
        self.0.primary()
    }
}

struct ClusterHa(RedisCluster);

impl Ha for ClusterHa {
    fn url(&self) -> String {
        self.0.url()
    }

    fn failover(&self, key: &str) -> Duration {
        self.0.failover(key).2
    }

    fn settle(&self) {
        self.0.wait_replicas_linked();
    }

    fn primary_for(&self, key: &str) -> &RedisServer {
        self.0.owner_of(key)
    }
}

/// The figures of one failover.
#[derive(Debug)]
struct Round {
    promotion: Duration,
    acked: usize,
    refused: usize,
    lost: usize,
    /// Writes refused (longest time between two acknowledgements of a
    /// user who kept changing), not counting waits for lost replies.
    write_gap: Duration,
    /// The same, counting them.
    raw_write_gap: Duration,
    /// Requests answered `backend_unavailable` after the request timeout
    /// because the leader's reply was lost (issue 9 item 4).
    lost_replies: usize,
    converged: Duration,
}

/// Five failovers under traffic; `gap_target` is the longest write gap
/// asserted (`None`: only printed).
async fn run_failovers(ha: Arc<dyn Ha>, what: &str, gap_target: Option<Duration>) {
    let t0 = Instant::now();
    let url = ha.url();
    let flags = [("--device-refresh-interval", "1s")];
    let nodes = [
        start_node(&url, "node-a", &flags).await,
        start_node(&url, "node-b", &flags).await,
        start_node(&url, "node-c", &flags).await,
    ];
    wait_for_spread(&ha, &["node-a", "node-b", "node-c"]).await;
    let users: Vec<String> = (0..USERS).map(|i| format!("user{i}")).collect();
    let watched: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut watchers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        watchers.push(Watcher::start(node, &format!("watcher-{i}"), &watched).await);
    }
    let mut sockets = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let ws = nodes[i % nodes.len()]
            .connect(user, &format!("{user}-desktop"), "desktop")
            .await;
        sockets.push(ws);
    }
    let mut rounds = Vec::new();
    for round in 0..FAILOVERS {
        // Every user changes; half of them (in turns) stop right after
        // the promotion, the others go on until they were acknowledged
        // again well after it.
        let stop_early = Arc::new(AtomicBool::new(false));
        let stop_late = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let mut changers = Vec::new();
        for (i, (user, ws)) in users.iter().zip(sockets.drain(..)).enumerate() {
            let early = (i + round) % 2 == 0;
            let stop = if early { &stop_early } else { &stop_late };
            changers.push(tokio::spawn(record_changes(
                ws,
                user.clone(),
                round,
                stop.clone(),
                !early,
                acks.clone(),
            )));
        }
        // Traffic (as many changes acknowledged this round as there are
        // users), then the failover in the middle of it: the primary of this round's
        // user's shard (Sentinel: the only primary).
        wait_until(
            format_args!("{USERS} changes acknowledged in round {round}"),
            Duration::from_secs(10),
            async || acks.load(Ordering::Acquire),
            |&acked| acked >= USERS,
        )
        .await;
        let key = Keys::for_user(&users[round % USERS], SHARDS).user(&users[round % USERS]);
        let promotion = {
            let (ha, key) = (ha.clone(), key.clone());
            tokio::task::spawn_blocking(move || ha.failover(&key))
                .await
                .expect("failover")
        };
        stop_early.store(true, Ordering::Release);
        // Pace: the others keep changing for a while after the promotion.
        // A span of traffic the scenario asks for, not a wait for an event
        // (the late changers go on until acknowledged after it anyway).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop_late.store(true, Ordering::Release);
        let mut logs = Vec::new();
        for changer in changers {
            let (ws, user, log, keeps_going) = changer.await.expect("changer");
            sockets.push(ws);
            logs.push((user, log, keeps_going));
        }

        // R1: what every user's document on the new primary holds.
        let mut lost = 0;
        let (mut acked, mut refused) = (0, 0);
        let mut write_gap = Duration::ZERO;
        let mut raw_write_gap = Duration::ZERO;
        let mut lost_replies = 0;
        for (user, log, keeps_going) in &logs {
            acked += log.iter().filter(|c| c.acked).count();
            refused += log.iter().filter(|c| !c.acked).count();
            let key = Keys::for_user(user, SHARDS).user(user);
            let doc = ha.primary_for(&key).command(&["GET", &key]);
            let survivor = log
                .iter()
                .rposition(|c| doc.contains(&format!("\"{}\"", c.text)));
            let last_acked = log.iter().rposition(|c| c.acked);
            match (survivor, last_acked) {
                (_, None) => {}
                (Some(s), Some(a)) if s >= a => {}
                (s, Some(a)) => {
                    let after = s.map_or(0, |s| s + 1);
                    let n = log[after..].iter().filter(|c| c.acked).count();
                    eprintln!(
                        "{what} round {round}: {user} lost its acknowledged {:?} \
                         (stored: {doc})",
                        log[a].text
                    );
                    lost += n;
                }
            }
            if *keeps_going {
                let (raw, adjusted) = longest_gap(log);
                raw_write_gap = raw_write_gap.max(raw);
                write_gap = write_gap.max(adjusted);
            }
            lost_replies += log.iter().filter(|c| c.reply_lost).count();
        }

        // W4: every watcher and REST on every node show the stored state.
        let mut expected = HashMap::new();
        for user in &users {
            let key = Keys::for_user(user, SHARDS).view(user);
            let stored: Value = serde_json::from_str(&ha.primary_for(&key).command(&["GET", &key]))
                .expect("a stored view");
            expected.insert(user.clone(), stored);
        }
        let converged = converge(&nodes, &mut watchers, &users, &expected).await;
        let figures = Round {
            promotion,
            acked,
            refused,
            lost,
            write_gap,
            raw_write_gap,
            lost_replies,
            converged,
        };
        eprintln!("{what} failover {}: {figures:?}", round + 1);
        rounds.push(figures);
        let ha = ha.clone();
        tokio::task::spawn_blocking(move || ha.settle())
            .await
            .expect("settle");
    }
    let lost: usize = rounds.iter().map(|r| r.lost).sum();
    let acked: usize = rounds.iter().map(|r| r.acked).sum();
    let refused: usize = rounds.iter().map(|r| r.refused).sum();
    let promotion = rounds.iter().map(|r| r.promotion).max().unwrap_or_default();
    let gap = rounds.iter().map(|r| r.write_gap).max().unwrap_or_default();
    let raw_gap = rounds
        .iter()
        .map(|r| r.raw_write_gap)
        .max()
        .unwrap_or_default();
    let lost_replies: usize = rounds.iter().map(|r| r.lost_replies).sum();
    let converged = rounds.iter().map(|r| r.converged).max().unwrap_or_default();
    eprintln!(
        "{what}: {FAILOVERS} failovers in {:?} (slowest promotion {promotion:?}): \
         {acked} acknowledged changes, {lost} lost, {refused} refused; \
         longest write gap {gap:?} ({raw_gap:?} with {lost_replies} lost replies waited out); \
         slowest convergence {converged:?}",
        t0.elapsed()
    );
    assert_eq!(lost, 0, "acknowledged changes were lost: {rounds:#?}");
    // Replies are truthful across pub/sub reconnects (issue 9 item 4):
    // no request waits out its timeout, so the raw gap is the one asserted.
    assert_eq!(
        lost_replies, 0,
        "requests waited out their timeout for a reply: {rounds:#?}"
    );
    if let Some(target) = gap_target {
        assert!(
            raw_gap <= target,
            "writes were refused for {raw_gap:?} ({gap:?} without lost replies): {rounds:#?}"
        );
    }
    assert!(
        converged <= CONVERGENCE_TARGET,
        "read paths converged only after {converged:?}: {rounds:#?}"
    );
}

/// One change a user asked for.
struct Change {
    sent: Instant,
    answered: Instant,
    text: String,
    acked: bool,
    /// Refused because the leader's reply never came (lost across a
    /// pub/sub reconnect), after the request timeout.
    reply_lost: bool,
}

/// Changes `user`'s status (one every ~20 ms) until `stop`; with
/// `until_acked`, goes on after `stop` until one change is acknowledged
/// (so the write gap is measured to the end of the refusals). Counts the
/// changes acknowledged in `acks`. Returns the socket and every change
/// with its outcome.
async fn record_changes(
    mut ws: Ws,
    user: String,
    round: usize,
    stop: Arc<AtomicBool>,
    until_acked: bool,
    acks: Arc<AtomicUsize>,
) -> (Ws, String, Vec<Change>, bool) {
    let mut log = Vec::new();
    let mut n = 0;
    let started = Instant::now();
    loop {
        if stop.load(Ordering::Acquire) {
            let acked_after_stop = log.last().is_some_and(|c: &Change| c.acked);
            if !until_acked || acked_after_stop {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{user}: no change accepted for 30 s"
            );
        }
        n += 1;
        let status = if n % 2 == 0 { "busy" } else { "away" };
        let text = format!("{user} f{round} c{n}");
        let sent = Instant::now();
        let answer = ws
            .request(json!({"type": "set_status", "status": status, "text": text}))
            .await;
        let acked = answer["type"] != "error";
        if acked {
            acks.fetch_add(1, Ordering::Release);
        } else {
            assert_eq!(
                answer["code"], "backend_unavailable",
                "only unavailability may refuse a valid change: {answer}"
            );
        }
        let reply_lost = !acked
            && answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("no shard leader answered"));
        if reply_lost {
            eprintln!(
                "{user}: a change was refused after {:?}: {answer}",
                sent.elapsed()
            );
        }
        log.push(Change {
            sent,
            answered: Instant::now(),
            text,
            acked,
            reply_lost,
        });
        // The pace of a busy user, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (ws, user, log, until_acked)
}

/// The longest time between two consecutive acknowledgements of one
/// round (which spans the failover): `(raw, without lost replies)`. The
/// second leaves out the time spent waiting for a reply that was lost
/// across a pub/sub reconnect (the gateway waits out its request timeout,
/// 5 s): truthful replies across reconnects are issue 9 item 4, built
/// separately; this test measures how long *Redis* refused writes.
fn longest_gap(log: &[Change]) -> (Duration, Duration) {
    let (mut raw, mut adjusted) = (Duration::ZERO, Duration::ZERO);
    let mut last_ack: Option<Instant> = None;
    let mut waited_for_lost_replies = Duration::ZERO;
    for change in log {
        if change.reply_lost {
            waited_for_lost_replies += change.answered - change.sent;
        }
        if let Some(since) = last_ack {
            let gap = change.answered - since;
            if change.acked || std::ptr::eq(change, log.last().expect("not empty")) {
                raw = raw.max(gap);
                adjusted = adjusted.max(gap.saturating_sub(waited_for_lost_replies));
            }
        }
        if change.acked {
            last_ack = Some(change.answered);
            waited_for_lost_replies = Duration::ZERO;
        }
    }
    (raw, adjusted)
}

/// Polls until every node's REST and every watcher show `expected` for
/// every user; returns how long that took (fails after 15 s).
async fn converge(
    nodes: &[Server],
    watchers: &mut [Watcher],
    users: &[String],
    expected: &HashMap<String, Value>,
) -> Duration {
    let start = Instant::now();
    let read_paths_disagreeing = async || {
        let mut differ = Vec::new();
        for w in watchers.iter_mut() {
            w.pump(Duration::from_millis(20)).await;
            for user in users {
                let want = &expected[user];
                if !same_view(w.view(user), want) {
                    differ.push(format!("watcher {user}: {}", w.view(user)));
                }
            }
        }
        for node in nodes {
            for user in users {
                let (status, view) = rest_presence(node, user).await;
                if status != 200 || !same_view(&view, &expected[user]) {
                    differ.push(format!("rest {user}: {status} {view}"));
                }
            }
        }
        differ
    };
    wait_until(
        format_args!("every read path to show the stored state {expected:?}"),
        Duration::from_secs(15),
        read_paths_disagreeing,
        Vec::is_empty,
    )
    .await;
    start.elapsed()
}

/// Whether two views show the same status and text.
fn same_view(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| {
        v["text"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    a["status"] == b["status"] && text(a) == text(b)
}

/// Cluster flags of one node on `url`, rate limits out of the way.
async fn start_node(url: &str, id: &str, flags: &[(&str, &str)]) -> Server {
    let mut options = ServerOptions::default()
        .relaxed_limits()
        .arg("--redis", url)
        .arg("--shards", SHARDS)
        .arg("--node-id", id);
    for (flag, value) in flags {
        options = options.arg(flag, value);
    }
    let node = Server::start_with(options).await;
    node.wait_ready(Duration::from_secs(10)).await;
    node
}

/// H5: waits until every shard is led by the node the aggregators' rule
/// assigns it to, so that no planned handoff of nodes started one after the
/// other falls into the first failover (its gap would add to the write gap).
async fn wait_for_spread(ha: &Arc<dyn Ha>, ids: &[&str]) {
    let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    let target = presence_aggregator::target_leaders(SHARDS, &ids);
    wait_until(
        format_args!("the shards spread as {target:?}"),
        Duration::from_secs(30),
        async || {
            (0..SHARDS)
                .map(|shard| {
                    let key = Keys::new(shard).lease();
                    ha.primary_for(&key).command(&["GET", &key])
                })
                .collect::<Vec<_>>()
        },
        |leases| {
            leases
                .iter()
                .zip(&target)
                .all(|(lease, node)| lease.rsplit_once(':').is_some_and(|(n, _)| n == node))
        },
    )
    .await;
}

/// What others see of `user`, read over REST on `node`.
async fn rest_presence(node: &Server, user: &str) -> (u16, Value) {
    let path = format!("/v1/users/{user}/presence");
    Server::call(node.get(&path, &token("observer", false))).await
}

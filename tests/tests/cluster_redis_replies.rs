//! R1 in cluster mode, truthful replies (issue 9 item 4): a request that
//! was applied is acknowledged as applied, even when the pub/sub
//! connection that carries the leader's answer is killed while the
//! request is in flight. The gateway reads the stored outcome of a request
//! whose answer may have been missed (`presence:{s}:reply:<id>`, written by
//! the leader's fenced commit with the change), so no request is answered
//! `backend_unavailable` while Redis is up, and the answer comes within a
//! second.
//!
//! Real processes: one redis-server, three presenced nodes; the pub/sub
//! connections are killed with `CLIENT KILL TYPE pubsub`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use presence_e2e::{Server, ServerOptions, Ws, token};
use presence_testkit::{RedisServer, Reply, resp, wait_until};
use serde_json::{Value, json};
use tokio::time::Instant;

const SHARDS: u16 = 4;
/// The bound on an answer across a pub/sub reconnect.
const REPLY_BOUND: Duration = Duration::from_secs(1);

async fn start_node(url: &str, id: &str) -> Server {
    let options = ServerOptions::default()
        .relaxed_limits()
        .arg("--redis", url)
        .arg("--shards", SHARDS)
        .arg("--node-id", id);
    let node = Server::start_with(options).await;
    node.wait_ready(Duration::from_secs(10)).await;
    node
}

/// How many pub/sub connections Redis has (`CLIENT LIST TYPE pubsub`).
fn pubsub_connections(redis: std::net::SocketAddr) -> usize {
    resp::query(redis, &["CLIENT", "LIST", "TYPE", "pubsub"])
        .expect("CLIENT LIST")
        .to_string()
        .lines()
        .filter(|line| line.contains("sub="))
        .count()
}

/// What one user's socket did: every request's text, answer and latency.
struct Sent {
    text: String,
    answer: Value,
    took: Duration,
}

/// Changes `user`'s status over and over until `stop`, recording every
/// answer.
async fn keep_changing(mut ws: Ws, user: String, stop: Arc<AtomicBool>) -> (String, Vec<Sent>) {
    let mut sent = Vec::new();
    let mut round = 0;
    while !stop.load(Ordering::Acquire) {
        round += 1;
        let status = if round % 2 == 0 { "busy" } else { "away" };
        let text = format!("{user} r{round}");
        let asked = Instant::now();
        let answer = ws
            .request(json!({"type": "set_status", "status": status, "text": text}))
            .await;
        sent.push(Sent {
            text,
            answer,
            took: asked.elapsed(),
        });
    }
    drop(ws);
    (user, sent)
}

/// R1: several users change their status on three nodes while every
/// pub/sub connection is killed again and again. Every request is
/// answered `ack`, within a second, and every acknowledged change is
/// applied (the stored state is the last one acknowledged).
#[tokio::test(flavor = "multi_thread")]
async fn r1_pubsub_kill_with_requests_in_flight_gives_no_false_errors() {
    let t0 = Instant::now();
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes = [
        start_node(&url, "node-a").await,
        start_node(&url, "node-b").await,
        start_node(&url, "node-c").await,
    ];
    let users: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();
    eprintln!("r1: three nodes ready after {:?}", t0.elapsed());
    let stop = Arc::new(AtomicBool::new(false));
    let mut changers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        let ws = node.connect(user, &format!("{user}-web"), "web").await;
        changers.push(tokio::spawn(keep_changing(ws, user.clone(), stop.clone())));
    }

    // Kill every pub/sub connection over and over for a while, each time
    // once all three nodes listen again and traffic flowed a little: each
    // kill finds requests between their append and their answer.
    let mut kills: i64 = 0;
    let mut killed_connections: i64 = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        wait_until(
            "the three nodes to subscribe again",
            Duration::from_secs(10),
            async || pubsub_connections(redis.addr()),
            |&connections| connections >= 3,
        )
        .await;
        // Traffic between the kills, over spans that vary so the kills
        // land at different points of requests in flight: the scenario's
        // pacing, not a wait for an event.
        tokio::time::sleep(Duration::from_millis(100 + 50 * (kills as u64 % 4))).await;
        let killed =
            resp::query(redis.addr(), &["CLIENT", "KILL", "TYPE", "pubsub"]).expect("CLIENT KILL");
        if let Reply::Integer(n) = killed {
            killed_connections += n;
        }
        kills += 1;
    }
    stop.store(true, Ordering::Release);
    eprintln!("r1: kills done after {:?}", t0.elapsed());

    let mut requests = 0;
    let mut errors = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut over_100ms = 0;
    let mut last_acked = Vec::new();
    for changer in changers {
        let (user, sent) = changer.await.expect("changer");
        requests += sent.len();
        for s in &sent {
            slowest = slowest.max(s.took);
            if s.took > Duration::from_millis(100) {
                over_100ms += 1;
            }
            if s.answer["type"] != "ack" {
                errors.push(format!("{user} '{}': {}", s.text, s.answer));
            }
        }
        let last = sent.last().expect("at least one request").text.clone();
        last_acked.push((user, last));
    }
    eprintln!(
        "r1: {requests} set_status requests over {kills} pub/sub kills ({killed_connections} connections); \
         errors {}; slowest answer {slowest:?}; {over_100ms} answers took over 100 ms",
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "false errors while redis was up: {errors:#?}"
    );
    assert!(
        slowest <= REPLY_BOUND,
        "an answer took {slowest:?} across a pub/sub reconnect (bound {REPLY_BOUND:?})"
    );
    assert!(
        killed_connections >= 3 * kills,
        "every kill found the three subscribers"
    );
    // Every acknowledged change was applied: each user's stored state is
    // the last one acknowledged (every request was).
    for (user, text) in last_acked {
        let (code, body) = Server::call(nodes[0].get(
            &format!("/v1/users/{user}/presence"),
            &token("observer", false),
        ))
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["text"], text.as_str(), "{user}: {body}");
    }
}

//! `fanout`: changes at a fixed rate, each delivered to the users watching
//! it; reports delivery latency per change, what was delivered of what was
//! expected, whether every watcher ended on every publisher's last state,
//! and the CPU of every process (servers, Redis, the bench itself).
//!
//! **Every change is stamped.** Publisher `p` numbers its changes 1, 2, …
//! and records when it sent each one. What a change carries (`--change`):
//! - `text`: `set_status` with the text `s<n>`: the sequence travels in the
//!   change, so each delivered frame is timed against the send of exactly
//!   the change it shows (this is also the costly path: a text change is
//!   rate-limited twice);
//! - `status`: `set_status` alternating `busy` (odd `n`) and `online`
//!   (even `n`), no text;
//! - `device`: the web device alternating `idle` (odd, shown `away`) and
//!   `active` (even, `online`), which never touches the durable store.
//!
//! For `status` and `device` the frame shows only the parity of `n`; the
//! watcher takes the latest change of that parity sent when the frame
//! arrived and newer than the last it matched. That is exact while the
//! latency stays under two of the publisher's periods (`users / rate`,
//! printed), which the report checks; beyond that, use `text`.
//!
//! A change counts when it was sent inside the measured window; its
//! deliveries count whenever they arrive, up to `--drain` after the
//! publishers stop. Changes a server superseded before delivering them
//! (W3 coalescing under load) are counted as coalesced, not delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::procstat::CpuMeter;
use crate::server::{ServerArgs, Target};
use crate::ws;

/// What each change is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChangeKind {
    /// A device event (`idle`/`active`).
    Device,
    /// A chosen status (`busy`/`online`), no text.
    Status,
    /// A status text carrying the change's sequence.
    Text,
}

/// Where the publishers' sockets are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// All on the first node (watchers are still spread).
    One,
    /// Spread over the nodes, each one node over from the watchers of
    /// the same index.
    Spread,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Users whose status changes (one web device each).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Watching sockets (one user each).
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Users each watcher subscribes to; watchers per user is
    /// watchers × subscriptions ÷ users.
    #[arg(long, default_value_t = 10)]
    subscriptions: usize,
    /// Changes per second, across all users.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// What each change is.
    #[arg(long, value_enum, default_value_t = ChangeKind::Text)]
    change: ChangeKind,
    /// Where the publishers' sockets are (with `--cluster`).
    #[arg(long, value_enum, default_value_t = Layout::Spread)]
    publishers_on: Layout,
    /// Measured duration.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Unmeasured run-in before the measurement.
    #[arg(long, default_value = "2s")]
    warmup: humantime::Duration,
    /// How long to wait for late deliveries after the publishers stop.
    #[arg(long, default_value = "5s")]
    drain: humantime::Duration,
    /// Run on a cluster of this many presenced nodes on one redis-server
    /// the bench starts (0: one embedded node). Watchers are spread over
    /// the nodes, so every change crosses Redis (stream → shard leader →
    /// pub/sub) and most deliveries cross nodes.
    #[arg(long, default_value_t = 0)]
    cluster: usize,
    /// The redis-server binary for `--cluster`.
    #[arg(long, default_value = "redis-server")]
    redis_server: std::path::PathBuf,
    /// With `--cluster`: also start a replica of the redis-server (what a
    /// Sentinel deployment has), so `--redis-replica-acks` can be measured.
    #[arg(long)]
    redis_replica: bool,
    /// With `--cluster`: the nodes' `--redis-replica-acks` (their default
    /// on a plain `redis://` URL is 0).
    #[arg(long)]
    redis_replica_acks: Option<u32>,
    #[command(flatten)]
    server: ServerArgs,
}

/// One publisher: when each of its changes was sent.
struct Publisher {
    /// By sequence (index 0 unused): ns since `Shared::origin`; 0 = not
    /// sent.
    sent_at: Vec<AtomicU64>,
    /// The last sequence sent.
    last: AtomicU64,
    /// Watchers subscribed to this publisher.
    watchers: usize,
}

struct Shared {
    origin: Instant,
    kind: ChangeKind,
    publishers: Vec<Publisher>,
    /// The measured window, ns since `origin` (`u64::MAX` until set).
    window_from: AtomicU64,
    window_to: AtomicU64,
    /// Deliveries of changes sent inside the window.
    delivered: AtomicU64,
    /// Changes inside the window a watcher never saw because a later one
    /// superseded it first.
    coalesced: AtomicU64,
    /// Frames that matched no change (or an older one than already seen).
    unmatched: AtomicU64,
    /// Frames of any change, inside the window or not (the drain watches
    /// it settle).
    frames: AtomicU64,
    /// Error frames the publishers received (refused changes).
    refused: AtomicU64,
}

impl Shared {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn in_window(&self, at: u64) -> bool {
        at >= self.window_from.load(Ordering::Acquire)
            && at <= self.window_to.load(Ordering::Acquire)
    }

    /// The change of publisher `p` that a frame showing `status`/`text`
    /// is, given the last one this watcher matched.
    fn match_frame(
        &self,
        p: usize,
        status: Option<&str>,
        text: Option<&str>,
        last: u64,
    ) -> Option<u64> {
        let publisher = &self.publishers[p];
        match self.kind {
            ChangeKind::Text => {
                let seq: u64 = text?.strip_prefix('s')?.parse().ok()?;
                (seq > last && seq <= publisher.last.load(Ordering::Acquire)).then_some(seq)
            }
            ChangeKind::Status | ChangeKind::Device => {
                let odd = match (self.kind, status?) {
                    (ChangeKind::Status, "busy") | (ChangeKind::Device, "away") => true,
                    (_, "online") => false,
                    _ => return None,
                };
                let sent = publisher.last.load(Ordering::Acquire);
                let seq = if (sent % 2 == 1) == odd {
                    sent
                } else {
                    sent.checked_sub(1)?
                };
                (seq > last).then_some(seq)
            }
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let limits = [
        "--socket-messages-per-second",
        "1000000",
        "--socket-messages-burst",
        "1000000",
        "--status-changes-per-second",
        "1000000",
        "--status-changes-burst",
        "1000000",
        "--text-changes-per-minute",
        "10000000",
    ];
    let (redis, nodes) = start_nodes(&args, &limits).await?;
    let node_of = |i: usize| nodes[i % nodes.len()].clone();
    for node in &nodes {
        println!("server {} (pid {:?})", node.addr, node.pid);
    }
    let period = Duration::from_secs_f64(args.users as f64 / args.rate as f64);
    let per_user = args.watchers * args.subscriptions / args.users.max(1);
    println!(
        "{} node(s); {} users, {} watchers × {} subscriptions ≈ {} watchers per user; \
         {} {} changes/s (each user every {:.1} ms); publishers on {}",
        nodes.len(),
        args.users,
        args.watchers,
        args.subscriptions,
        per_user,
        args.rate,
        args.change
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned()),
        period.as_secs_f64() * 1000.0,
        args.publishers_on
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned()),
    );

    // Who watches whom, decided up front so expectations are exact.
    let subscriptions: Vec<Vec<usize>> = (0..args.watchers)
        .map(|w| {
            let mut users: Vec<usize> = (0..args.subscriptions)
                .map(|k| (w * args.subscriptions + k) % args.users)
                .collect();
            users.dedup();
            users
        })
        .collect();
    let mut watchers_of = vec![0usize; args.users];
    for users in &subscriptions {
        for &p in users {
            watchers_of[p] += 1;
        }
    }
    let total = args.warmup.as_secs_f64() + args.duration.as_secs_f64() + 1.0;
    let capacity = (total / period.as_secs_f64()).ceil() as usize + 16;
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        kind: args.change,
        publishers: watchers_of
            .iter()
            .map(|&watchers| Publisher {
                sent_at: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
                last: AtomicU64::new(0),
                watchers,
            })
            .collect(),
        window_from: AtomicU64::new(u64::MAX),
        window_to: AtomicU64::new(u64::MAX),
        delivered: AtomicU64::new(0),
        coalesced: AtomicU64::new(0),
        unmatched: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });

    let histograms = Arc::new(Mutex::new(Vec::new()));
    // Per watcher, at the end: (publisher, last sequence seen).
    let finals = Arc::new(Mutex::new(Vec::new()));
    let mut watcher_tasks = Vec::new();
    for (w, users) in subscriptions.iter().enumerate() {
        let node = node_of(w);
        let mut socket = ws::connect(
            &node.ws_url(&format!("w{w}"), "web"),
            &node.token(&format!("watcher{w}")),
        )
        .await
        .with_context(|| format!("watcher {w}"))?;
        let list: Vec<String> = users.iter().map(|p| format!("\"pub{p}\"")).collect();
        let subscribe = format!(
            r#"{{"type":"subscribe","ref":"s","users":[{}]}}"#,
            list.join(",")
        );
        socket.send(Message::text(subscribe)).await?;
        loop {
            let frame = socket.next().await.context("watcher closed")??;
            if frame.to_text().is_ok_and(|t| t.contains("\"snapshot\"")) {
                break;
            }
        }
        let (shared, histograms, finals) = (shared.clone(), histograms.clone(), finals.clone());
        let mut last: Vec<(usize, u64)> = users.iter().map(|&p| (p, 0)).collect();
        watcher_tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            while let Some(Ok(frame)) = socket.next().await {
                let now = shared.now();
                let Ok(text) = frame.to_text() else { continue };
                let Some(p) = ws::field(text, "user")
                    .and_then(|u| u.strip_prefix("pub"))
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                let Some(slot) = last.iter_mut().find(|(q, _)| *q == p) else {
                    continue;
                };
                let status = ws::field(text, "status");
                if status == Some("offline")
                    || shared.publishers[p].last.load(Ordering::Acquire) == 0
                {
                    // The publishers connecting before their first change,
                    // or closing their sockets at the end.
                    continue;
                }
                shared.frames.fetch_add(1, Ordering::Relaxed);
                let matched = shared.match_frame(
                    p,
                    ws::field(text, "status"),
                    ws::field(text, "text"),
                    slot.1,
                );
                let Some(seq) = matched else {
                    shared.unmatched.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let sent_at = &shared.publishers[p].sent_at;
                let skipped = (slot.1 + 1..seq)
                    .filter(|&n| shared.in_window(sent_at[n as usize].load(Ordering::Acquire)))
                    .count() as u64;
                shared.coalesced.fetch_add(skipped, Ordering::Relaxed);
                slot.1 = seq;
                let sent = sent_at[seq as usize].load(Ordering::Acquire);
                if shared.in_window(sent) {
                    hist.saturating_record((now.saturating_sub(sent) / 1000).max(1));
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            histograms.lock().await.push(hist);
            finals.lock().await.push(last);
        }));
    }

    let mut publishers = Vec::new();
    for p in 0..args.users {
        let node = match args.publishers_on {
            Layout::One => nodes[0].clone(),
            Layout::Spread => node_of(p + 1),
        };
        let socket = ws::connect(
            &node.ws_url(&format!("p{p}"), "web"),
            &node.token(&format!("pub{p}")),
        )
        .await
        .with_context(|| format!("publisher {p}"))?;
        let (sink, mut stream) = socket.split();
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if frame
                    .to_text()
                    .is_ok_and(|t| t.starts_with(r#"{"type":"error""#))
                {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        publishers.push(sink);
    }

    // Each publisher changes every `period`, offset so the load is even.
    let stop = Arc::new(AtomicBool::new(false));
    let mut driver_tasks = Vec::new();
    for (p, mut sink) in publishers.into_iter().enumerate() {
        let (shared, stop) = (shared.clone(), stop.clone());
        let offset = period.mul_f64(p as f64 / args.users as f64);
        driver_tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + offset;
            let mut ticks = tokio::time::interval_at(start, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let publisher = &shared.publishers[p];
            let mut seq = 0u64;
            loop {
                ticks.tick().await;
                if stop.load(Ordering::Relaxed) || seq as usize + 1 >= publisher.sent_at.len() {
                    break;
                }
                seq += 1;
                let frame = match (shared.kind, seq % 2 == 1) {
                    (ChangeKind::Text, _) => format!(r#"{{"type":"set_status","text":"s{seq}"}}"#),
                    (ChangeKind::Status, true) => {
                        r#"{"type":"set_status","status":"busy"}"#.to_owned()
                    }
                    (ChangeKind::Status, false) => {
                        r#"{"type":"set_status","status":"online"}"#.to_owned()
                    }
                    (ChangeKind::Device, true) => r#"{"type":"idle"}"#.to_owned(),
                    (ChangeKind::Device, false) => r#"{"type":"active"}"#.to_owned(),
                };
                publisher.sent_at[seq as usize].store(shared.now(), Ordering::Release);
                publisher.last.store(seq, Ordering::Release);
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        }));
    }

    tokio::time::sleep(args.warmup.into()).await;
    let mut processes: Vec<(String, Option<u32>)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("presenced {i}"), n.pid))
        .collect();
    if let Some(redis) = &redis {
        processes.push(("redis-server".to_owned(), redis.pid()));
        redis.reset_stats().await?;
    }
    processes.push(("presence-bench".to_owned(), None));
    let cpu = CpuMeter::start(processes);
    shared.window_from.store(shared.now(), Ordering::Release);
    tokio::time::sleep(args.duration.into()).await;
    shared.window_to.store(shared.now(), Ordering::Release);
    let cpu = cpu.finish();
    let redis_calls = match &redis {
        Some(redis) => Some(redis.command_calls().await?),
        None => None,
    };
    stop.store(true, Ordering::Release);
    for task in driver_tasks {
        let _ = task.await;
    }
    // Late deliveries: until frames stop arriving for a second, or the
    // drain time is up.
    let drain_until = Instant::now() + Duration::from(args.drain);
    let mut seen = shared.frames.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < drain_until && quiet_since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = shared.frames.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
    }
    let rss: Vec<Option<u64>> = nodes.iter().map(|n| n.rss_kib()).collect();
    drop(nodes);
    for task in watcher_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    // What was expected: every change sent inside the window, to each of
    // its publisher's watchers.
    let (from, to) = (
        shared.window_from.load(Ordering::Acquire),
        shared.window_to.load(Ordering::Acquire),
    );
    let elapsed = (to - from) as f64 / 1e9;
    let mut changes = 0u64;
    let mut expected = 0u64;
    for publisher in &shared.publishers {
        let n = publisher
            .sent_at
            .iter()
            .filter(|at| shared.in_window(at.load(Ordering::Acquire)))
            .count() as u64;
        changes += n;
        expected += n * publisher.watchers as u64;
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for h in histograms.lock().await.iter() {
        total.add(h)?;
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    println!(
        "changes: {changes} in {elapsed:.1} s = {:.0}/s ({} refused); deliveries: {delivered} of {expected} expected ({:.2} %), {} coalesced, {} unmatched frames",
        changes as f64 / elapsed,
        shared.refused.load(Ordering::Relaxed),
        delivered as f64 * 100.0 / expected.max(1) as f64,
        shared.coalesced.load(Ordering::Relaxed),
        shared.unmatched.load(Ordering::Relaxed),
    );
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "delivery latency ms (each frame against the send of its change): p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(0.999),
        total.max() as f64 / 1000.0
    );
    if args.change != ChangeKind::Text && total.max() as f64 / 1e6 >= 2.0 * period.as_secs_f64() {
        println!(
            "warning: latency reached two publisher periods ({:.1} ms): parity matching is not exact past that; use --change text",
            2.0 * period.as_secs_f64() * 1000.0
        );
    }
    // Every watcher on every publisher's last state.
    let finals = finals.lock().await;
    let pairs: usize = finals.iter().map(Vec::len).sum();
    let on_last = finals
        .iter()
        .flatten()
        .filter(|(p, seq)| *seq == shared.publishers[*p].last.load(Ordering::Acquire))
        .count();
    println!(
        "watchers on each publisher's last change: {on_last} of {pairs} (watcher, publisher) pairs"
    );
    let thousands = changes as f64 / 1000.0;
    for (name, percent) in cpu {
        match percent {
            Some(percent) => println!(
                "CPU {name}: {percent:.0}% of one core ({:.0} ms per 1,000 changes)",
                percent / 100.0 * elapsed * 1000.0 / thousands.max(f64::EPSILON)
            ),
            None => println!("CPU {name}: unknown"),
        }
    }
    for (i, rss) in rss.iter().enumerate() {
        if let Some(rss) = rss {
            println!("RSS presenced {i} at the end: {rss} KiB");
        }
    }
    if let Some(calls) = redis_calls {
        let all: u64 = calls.iter().map(|(_, n)| n).sum();
        let top: Vec<String> = calls
            .iter()
            .take(8)
            .map(|(name, n)| format!("{name} {:.2}", *n as f64 / changes.max(1) as f64))
            .collect();
        println!(
            "redis commands per change: {:.2} ({})",
            all as f64 / changes.max(1) as f64,
            top.join(", ")
        );
    }
    Ok(())
}

/// The node the bench talks to, or with `--cluster N` a redis-server and N
/// nodes on it (every node with the same flags).
async fn start_nodes(
    args: &Args,
    limits: &[&str],
) -> anyhow::Result<(Option<crate::redis_memory::RedisServer>, Vec<Arc<Target>>)> {
    if args.cluster == 0 {
        return Ok((
            None,
            vec![Arc::new(Target::start(&args.server, limits).await?)],
        ));
    }
    let redis = crate::redis_memory::RedisServer::start(&args.redis_server).await?;
    let replica = if args.redis_replica {
        let replica =
            crate::redis_memory::RedisServer::start_replica_of(&args.redis_server, redis.addr)
                .await?;
        println!("redis replica {} of {}", replica.addr, redis.addr);
        Some(replica)
    } else {
        None
    };
    let url = format!("redis://{}", redis.addr);
    let acks = args.redis_replica_acks.map(|n| n.to_string());
    let mut nodes = Vec::with_capacity(args.cluster);
    for i in 0..args.cluster {
        let id = format!("bench-{i}");
        let mut extra: Vec<&str> = limits.to_vec();
        extra.extend(["--redis", &url, "--node-id", &id]);
        if let Some(acks) = &acks {
            extra.extend(["--redis-replica-acks", acks]);
        }
        nodes.push(Arc::new(Target::start(&args.server, &extra).await?));
    }
    // Killed with the primary, when the bench ends.
    if let Some(replica) = replica {
        redis.keep(replica);
    }
    let shards = redis.wait_for_leases(Duration::from_secs(30)).await?;
    println!(
        "redis {}; every one of {shards} shards has a leader",
        redis.addr
    );
    Ok((Some(redis), nodes))
}

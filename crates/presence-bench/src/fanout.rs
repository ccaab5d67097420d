//! `fanout`: status changes at a fixed rate, each delivered to the users
//! watching it; reports delivery latency percentiles and throughput.
//!
//! Publishers are web devices that alternate `idle` and `active`, so every
//! message changes what watchers see (online ↔ away) without touching the
//! durable store. Each publisher stamps the time it sent its latest change;
//! a watcher receiving that user's update records now − stamp. Changes of
//! one user are spaced far wider than the latency, so the match is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args as ClapArgs;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::server::{ServerArgs, Target};
use crate::ws;

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
    /// Status changes per second, across all users.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Measured duration.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Unmeasured run-in before the measurement.
    #[arg(long, default_value = "2s")]
    warmup: humantime::Duration,
    /// Run on a cluster of this many presenced nodes on one redis-server
    /// the bench starts (0: one embedded node). Watchers and publishers
    /// are spread over the nodes, so every change crosses Redis (stream →
    /// shard leader → pub/sub) and most deliveries cross nodes.
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

struct Shared {
    origin: Instant,
    /// Per publisher: when its latest change was sent (ns since origin).
    sent_at: Vec<AtomicU64>,
    measuring: AtomicBool,
    deliveries: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let limits = [
        "--socket-messages-per-second",
        "1000000",
        "--socket-messages-burst",
        "1000000",
    ];
    let (_redis, nodes) = start_nodes(&args, &limits).await?;
    let target = nodes[0].clone();
    let node_of = |i: usize| nodes[i % nodes.len()].clone();
    let per_user = args.watchers * args.subscriptions / args.users.max(1);
    for node in &nodes {
        println!("server {} (pid {:?})", node.addr, node.pid);
    }
    println!(
        "{} node(s); {} users, {} watchers × {} subscriptions = {} watchers per user; {} changes/s",
        nodes.len(),
        args.users,
        args.watchers,
        args.subscriptions,
        per_user,
        args.rate
    );
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        sent_at: (0..args.users).map(|_| AtomicU64::new(0)).collect(),
        measuring: AtomicBool::new(false),
        deliveries: AtomicU64::new(0),
    });

    let histograms = Arc::new(Mutex::new(Vec::new()));
    let mut watcher_tasks = Vec::new();
    for w in 0..args.watchers {
        let node = node_of(w);
        let mut socket = ws::connect(
            &node.ws_url(&format!("w{w}"), "web"),
            &node.token(&format!("watcher{w}")),
        )
        .await
        .with_context(|| format!("watcher {w}"))?;
        let users: Vec<String> = (0..args.subscriptions)
            .map(|k| format!("\"pub{}\"", (w * args.subscriptions + k) % args.users))
            .collect();
        let subscribe = format!(
            r#"{{"type":"subscribe","ref":"s","users":[{}]}}"#,
            users.join(",")
        );
        socket.send(Message::text(subscribe)).await?;
        loop {
            let frame = socket.next().await.context("watcher closed")??;
            if frame.to_text().is_ok_and(|t| t.contains("\"snapshot\"")) {
                break;
            }
        }
        let shared = shared.clone();
        let histograms = histograms.clone();
        watcher_tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            while let Some(Ok(frame)) = socket.next().await {
                let Ok(text) = frame.to_text() else { continue };
                if !shared.measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let Some(user) = ws::field(text, "user") else {
                    continue;
                };
                let Some(index) = user
                    .strip_prefix("pub")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                let sent = shared.sent_at[index].load(Ordering::Acquire);
                let now = shared.origin.elapsed().as_nanos() as u64;
                let micros = now.saturating_sub(sent) / 1000;
                hist.saturating_record(micros.max(1));
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
            }
            histograms.lock().await.push(hist);
        }));
    }

    let mut publishers = Vec::new();
    for p in 0..args.users {
        // Publishers sit one node over from the watchers of the same index.
        let node = node_of(p + 1);
        let socket = ws::connect(
            &node.ws_url(&format!("p{p}"), "web"),
            &node.token(&format!("pub{p}")),
        )
        .await
        .with_context(|| format!("publisher {p}"))?;
        let (sink, mut stream) = socket.split();
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        publishers.push(sink);
    }

    // Each publisher changes every `period`, offset so the load is even.
    let period = Duration::from_secs_f64(args.users as f64 / args.rate as f64);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut driver_tasks = Vec::new();
    for (p, mut sink) in publishers.into_iter().enumerate() {
        let shared = shared.clone();
        let stop = stop.clone();
        let sent = sent.clone();
        let offset = period.mul_f64(p as f64 / args.users as f64);
        driver_tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + offset;
            let mut ticks = tokio::time::interval_at(start, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut idle = false;
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                idle = !idle;
                let frame = if idle {
                    r#"{"type":"idle"}"#
                } else {
                    r#"{"type":"active"}"#
                };
                let now = shared.origin.elapsed().as_nanos() as u64;
                shared.sent_at[p].store(now, Ordering::Release);
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
                if shared.measuring.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = sink.close().await;
        }));
    }

    tokio::time::sleep(args.warmup.into()).await;
    let cpu_ticks = || -> Option<u64> { nodes.iter().map(|n| target_cpu_ticks(n)).sum() };
    let cpu_before = cpu_ticks();
    shared.measuring.store(true, Ordering::Release);
    let measured_from = Instant::now();
    tokio::time::sleep(args.duration.into()).await;
    shared.measuring.store(false, Ordering::Release);
    let elapsed = measured_from.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks();
    stop.store(true, Ordering::Release);
    let rss = target.rss_kib();
    drop(target);
    drop(nodes);
    for task in driver_tasks {
        let _ = task.await;
    }
    for task in watcher_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for h in histograms.lock().await.iter() {
        total.add(h)?;
    }
    let changes = sent.load(Ordering::Relaxed);
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    println!(
        "changes: {changes} in {elapsed:.1} s = {:.0}/s; deliveries: {deliveries} = {:.0}/s (expected ≈ {})",
        changes as f64 / elapsed,
        deliveries as f64 / elapsed,
        changes as usize * per_user
    );
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "delivery latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(0.999),
        total.max() as f64 / 1000.0
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let ticks_per_sec = 100.0;
        let cpu = (after - before) as f64 / ticks_per_sec / elapsed * 100.0;
        println!("server CPU (all nodes): {cpu:.0}% of one core");
    }
    if let Some(rss) = rss {
        println!("server RSS at the end: {rss} KiB");
    }
    Ok(())
}

/// utime + stime of the server process, in clock ticks.
fn target_cpu_ticks(target: &Target) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", target.pid?)).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
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

//! `scale`: the scale model of issue 12 on one machine — many concurrent
//! sockets over several gateway processes on one Redis, many users with
//! durable state, then `kill -9` of one gateway and the reconnect storm.
//!
//! One process may hold at most ~20,000 open files here, so neither side
//! fits in one process: the gateways are `--gateways` real `presenced`
//! processes (each listening on its own loopback address, 127.0.0.2, .3, …,
//! which also spreads the clients' port space), and the clients run in
//! `scale-worker` child processes of this binary, each holding at most
//! `--sockets-per-worker` sockets. The coordinator talks to its workers
//! over their stdin/stdout with one line per command or report.
//!
//! Phases, each reported as it ends:
//! 1. **durable**: `--durable-users` users connect, set a status with a
//!    text (acknowledged once the leader committed it) and leave;
//! 2. **connect**: `--sockets` users connect one web device each, socket
//!    `i` on gateway `i mod G`, and subscribe to `--subscriptions` other
//!    users; then at rest: RSS per socket per gateway (against each
//!    gateway's RSS before the sockets), Redis memory, Redis commands per
//!    second over `--rest`;
//! 3. **kill**: gateway `--kill` gets SIGKILL. Watchers on the other
//!    gateways of users whose socket was there must see them `offline`
//!    (target: within 15 s); the killed gateway's clients reconnect to the
//!    others with full-jitter exponential backoff; counted: every socket
//!    back, answers other than success and rate limiting (target: none),
//!    the time until every one is back, and until watchers see the
//!    reconnected users online again.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::redis_memory::RedisServer;
use crate::server::{SECRET, ServerArgs, Target};
use crate::ws;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Gateway processes (`presenced --redis`), on 127.0.0.2, .3, ….
    #[arg(long, default_value_t = 6)]
    gateways: usize,
    /// Concurrent sockets, one user each.
    #[arg(long, default_value_t = 100_000)]
    sockets: usize,
    /// Users each socket watches.
    #[arg(long, default_value_t = 5)]
    subscriptions: usize,
    /// Users who set a status and leave before the sockets connect.
    #[arg(long, default_value_t = 1_000_000)]
    durable_users: usize,
    /// Sockets per client process (each process stays under the
    /// open-files limit).
    #[arg(long, default_value_t = 15_000)]
    sockets_per_worker: usize,
    /// Connections opened at the same time per worker.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// How long to watch the system at rest.
    #[arg(long, default_value = "30s")]
    rest: humantime::Duration,
    /// The gateway to kill (its index), or none with `--no-kill`.
    #[arg(long, default_value_t = 0)]
    kill: usize,
    #[arg(long)]
    no_kill: bool,
    /// Reconnect the killed gateway's clients at once. By default they
    /// wait until watchers saw all of their users offline (or
    /// `--offline-timeout` passed), so that both the offline detection
    /// and the storm are measured; at once, a user who is back before the
    /// gateway's death is detected never shows offline (D1 replaces the
    /// device), which is what real clients get.
    #[arg(long)]
    reconnect_at_once: bool,
    /// Longest wait for watchers to see the killed gateway's users offline.
    #[arg(long, default_value = "60s")]
    offline_timeout: humantime::Duration,
    /// Longest wait for the kill phase to complete.
    #[arg(long, default_value = "180s")]
    kill_timeout: humantime::Duration,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: std::path::PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

/// The arguments of one client process (started by `scale`).
#[derive(Debug, ClapArgs)]
pub struct WorkerArgs {
    /// Every gateway's address, in order.
    #[arg(long, value_delimiter = ',')]
    gateways: Vec<std::net::SocketAddr>,
    /// The sockets of this worker: `from..to`.
    #[arg(long)]
    from: usize,
    #[arg(long)]
    to: usize,
    /// All sockets (subscriptions point anywhere in `0..sockets`).
    #[arg(long)]
    sockets: usize,
    #[arg(long)]
    subscriptions: usize,
    #[arg(long)]
    concurrency: usize,
    /// With `--durable`: set a status and leave, instead of staying.
    #[arg(long)]
    durable: bool,
}

fn user(i: usize) -> String {
    format!("u{i:07}")
}

fn token(user: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = presence_gateway::auth::MintClaims {
        sub: user.to_owned(),
        admin: false,
        username: Some(format!("{user}.name")),
        name: None,
        ttl: Duration::from_secs(24 * 3600),
    };
    Ok(presence_gateway::auth::mint_hs256(
        SECRET.as_bytes(),
        &claims,
        now,
    )?)
}

fn url(addr: std::net::SocketAddr, device: &str) -> String {
    format!("ws://{addr}/v1/ws?device_id={device}&platform=web")
}

/// The users socket `i` watches: spread, never itself.
fn watched(i: usize, sockets: usize, subscriptions: usize) -> Vec<usize> {
    (1..=subscriptions)
        .map(|k| (i + k * 7919) % sockets)
        .filter(|&j| j != i)
        .collect()
}

// ---------------------------------------------------------------- coordinator

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Worker {
    async fn start(args: &[String]) -> anyhow::Result<Worker> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("scale-worker")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            lines,
        })
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// The next line that starts with `prefix`, its words after it.
    async fn expect(&mut self, prefix: &str, within: Duration) -> anyhow::Result<Vec<u64>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .with_context(|| format!("no `{prefix}` from a worker within {within:?}"))?
                .context("a worker exited")?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect());
            }
            eprintln!("worker: {line}");
        }
    }
}

/// Starts one worker per `per` sockets of `0..count`, each with `extra`.
async fn start_workers(
    args: &Args,
    gateways: &str,
    count: usize,
    extra: &[&str],
) -> anyhow::Result<Vec<Worker>> {
    let mut workers = Vec::new();
    let per = args.sockets_per_worker.max(1);
    let mut from = 0;
    while from < count {
        let to = (from + per).min(count);
        let mut worker_args: Vec<String> = [
            "--gateways",
            gateways,
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--sockets",
            &args.sockets.to_string(),
            "--subscriptions",
            &args.subscriptions.to_string(),
            "--concurrency",
            &args.concurrency.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        worker_args.extend(extra.iter().map(|s| s.to_string()));
        workers.push(Worker::start(&worker_args).await?);
        from = to;
    }
    Ok(workers)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let redis = RedisServer::start(&args.redis_server).await?;
    let redis_url = format!("redis://{}", redis.addr);
    let mut gateways = Vec::new();
    for g in 0..args.gateways {
        let listen = format!("127.0.0.{}:0", g + 2);
        let id = format!("gw-{g}");
        let extra = ["--redis", &redis_url, "--node-id", &id];
        gateways.push(Target::start_on(&args.server, &listen, &extra).await?);
    }
    let shards = redis.wait_for_leases(Duration::from_secs(60)).await?;
    let list: Vec<String> = gateways.iter().map(|g| g.addr.to_string()).collect();
    let list = list.join(",");
    println!(
        "redis {} ({shards} shards), {} gateways: {list}",
        redis.addr, args.gateways
    );

    // 1. Durable users.
    if args.durable_users > 0 {
        let t = Instant::now();
        let mut workers = start_workers(
            &Args {
                sockets: args.durable_users,
                ..clone_args(&args)
            },
            &list,
            args.durable_users,
            &["--durable"],
        )
        .await?;
        let mut done = 0;
        for worker in &mut workers {
            let words = worker.expect("durable ", Duration::from_secs(3600)).await?;
            done += words.first().copied().unwrap_or(0);
        }
        let memory = redis.memory_report().await?;
        println!(
            "durable: {done} of {} users set a status and left in {:.0} s; redis {memory}",
            args.durable_users,
            t.elapsed().as_secs_f64()
        );
    }

    // 2. Sockets, then rest. The durable phase leaves freed memory that
    // jemalloc returns over the next seconds, so a baseline taken now
    // would be too high: the gateways restart (SIGTERM, as in a rolling
    // update) and the baseline is that of fresh processes, on a Redis
    // that holds the durable users.
    if args.durable_users > 0 {
        let rss: Vec<String> = gateways
            .iter()
            .map(|g| g.rss_kib().map_or("?".to_owned(), |k| format!("{k}")))
            .collect();
        println!(
            "after the durable phase: gateway RSS {} KiB; restarting them",
            rss.join(", ")
        );
        for gateway in &mut gateways {
            gateway.stop(Duration::from_secs(30)).await?;
        }
        gateways.clear();
        for g in 0..args.gateways {
            let listen = format!("127.0.0.{}:0", g + 2);
            let id = format!("gw-{g}");
            let extra = ["--redis", &redis_url, "--node-id", &id];
            gateways.push(Target::start_on(&args.server, &listen, &extra).await?);
        }
        redis.wait_for_leases(Duration::from_secs(60)).await?;
        // Let the shard spread settle (H5) and the start-up allocations
        // be purged before the baseline.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let list: Vec<String> = gateways.iter().map(|g| g.addr.to_string()).collect();
    let list = list.join(",");
    let rss_before: Vec<Option<u64>> = gateways.iter().map(|g| g.rss_kib()).collect();
    let t = Instant::now();
    let mut workers = start_workers(&args, &list, args.sockets, &[]).await?;
    let (mut connected, mut failed) = (0, 0);
    for worker in &mut workers {
        let words = worker
            .expect("connected ", Duration::from_secs(3600))
            .await?;
        connected += words.first().copied().unwrap_or(0);
        failed += words.get(1).copied().unwrap_or(0);
    }
    println!(
        "connect: {connected} sockets connected and subscribed ({failed} failed) in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    redis.reset_stats().await?;
    let rest = Duration::from(args.rest);
    let redis_cpu = crate::procstat::cpu_ticks(redis.pid());
    tokio::time::sleep(rest).await;
    let redis_cpu = redis_cpu
        .zip(crate::procstat::cpu_ticks(redis.pid()))
        .map(|(a, b)| (b - a) as f64 / rest.as_secs_f64());
    let calls = redis.command_calls().await?;
    let all: u64 = calls.iter().map(|(_, n)| n).sum();
    let top: Vec<String> = calls
        .iter()
        .take(6)
        .map(|(name, n)| format!("{name} {:.0}/s", *n as f64 / rest.as_secs_f64()))
        .collect();
    println!(
        "at rest: redis {:.0} commands/s ({}), CPU {:.0}% of one core; redis {}",
        all as f64 / rest.as_secs_f64(),
        top.join(", "),
        redis_cpu.unwrap_or(f64::NAN),
        redis.memory_report().await?
    );
    for (g, gateway) in gateways.iter().enumerate() {
        let on = (0..args.sockets).filter(|i| i % args.gateways == g).count();
        let (Some(before), Some(after)) = (rss_before[g], gateway.rss_kib()) else {
            continue;
        };
        println!(
            "gateway {g}: {on} sockets, RSS {before} → {after} KiB = {:.2} KiB per socket (the shards it leads included)",
            after.saturating_sub(before) as f64 / on.max(1) as f64
        );
    }

    // 3. Kill one gateway.
    if !args.no_kill {
        let killed = args.kill % args.gateways;
        let pid = gateways[killed].pid.context("the gateway's pid")?;
        let on = (0..args.sockets)
            .filter(|i| i % args.gateways == killed)
            .count();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        let t = Instant::now();
        for worker in &mut workers {
            worker.send(&format!("kill {killed}")).await?;
        }
        println!("kill: SIGKILL to gateway {killed} (pid {pid}, {on} sockets)");
        let deadline = Duration::from(args.kill_timeout);
        let mut reconnecting = false;
        if args.reconnect_at_once {
            for worker in &mut workers {
                worker.send("reconnect").await?;
            }
            reconnecting = true;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut totals = [0u64; 10];
            let mut offline_min = u64::MAX;
            for worker in &mut workers {
                worker.send("report").await?;
                let words = worker.expect("report ", Duration::from_secs(30)).await?;
                // Counts add up; of the times, the latest is the largest.
                for (k, (total, w)) in totals.iter_mut().zip(&words).enumerate() {
                    if [2, 5, 9].contains(&k) {
                        *total = (*total).max(*w);
                    } else {
                        *total += w;
                    }
                }
                offline_min = offline_min.min(words.get(10).copied().unwrap_or(u64::MAX));
            }
            let offline_first = if offline_min == u64::MAX {
                0
            } else {
                offline_min
            };
            let [
                pairs,
                offline,
                offline_max,
                lost,
                back,
                back_max,
                rate_limited,
                errors,
                online,
                online_max,
            ] = totals;
            if !reconnecting
                && (offline == pairs || t.elapsed() > Duration::from(args.offline_timeout))
            {
                println!(
                    "kill: watchers saw {offline} of {pairs} (watcher, user) pairs offline, the first {:.1} s and the last {:.1} s after the kill; the clients reconnect now",
                    offline_first as f64 / 1000.0,
                    offline_max as f64 / 1000.0
                );
                for worker in &mut workers {
                    worker.send("reconnect").await?;
                }
                reconnecting = true;
                continue;
            }
            let complete = back == lost && (online == offline || args.reconnect_at_once);
            if (reconnecting && complete) || t.elapsed() > deadline {
                println!(
                    "kill: watchers saw {offline} of {pairs} (watcher, user) pairs offline, the first {:.1} s and the last {:.1} s after the kill",
                    offline_first as f64 / 1000.0,
                    offline_max as f64 / 1000.0
                );
                println!(
                    "kill: {back} of {lost} sockets back on other gateways, the last {:.1} s after the kill; {rate_limited} rate-limit answers, {errors} other errors",
                    back_max as f64 / 1000.0
                );
                println!(
                    "kill: watchers saw {online} of {pairs} pairs online again, the last {:.1} s after the kill{}",
                    online_max as f64 / 1000.0,
                    if complete { "" } else { " (timed out)" }
                );
                break;
            }
        }
    }
    for worker in &mut workers {
        let _ = worker.send("quit").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), worker.child.wait()).await;
    }
    println!(
        "scale model done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn clone_args(args: &Args) -> Args {
    Args {
        gateways: args.gateways,
        sockets: args.sockets,
        subscriptions: args.subscriptions,
        durable_users: args.durable_users,
        sockets_per_worker: args.sockets_per_worker,
        concurrency: args.concurrency,
        rest: args.rest,
        kill: args.kill,
        no_kill: args.no_kill,
        reconnect_at_once: args.reconnect_at_once,
        offline_timeout: args.offline_timeout,
        kill_timeout: args.kill_timeout,
        redis_server: args.redis_server.clone(),
        server: args.server.clone(),
    }
}

// --------------------------------------------------------------------- worker

/// What a worker counts after a kill; reported summed by the coordinator.
#[derive(Default)]
struct KillStats {
    /// (watcher, user-on-the-killed-gateway) pairs where the watcher is
    /// not itself on the killed gateway.
    pairs: AtomicU64,
    offline: AtomicU64,
    /// `u64::MAX` until the first.
    offline_min_ms: AtomicU64,
    offline_max_ms: AtomicU64,
    online: AtomicU64,
    online_max_ms: AtomicU64,
    /// Sockets that were on the killed gateway, and those back.
    lost: AtomicU64,
    back: AtomicU64,
    back_max_ms: AtomicU64,
    rate_limited: AtomicU64,
    errors: AtomicU64,
}

struct Kill {
    gateway: usize,
    at: Instant,
}

struct WorkerState {
    args: WorkerArgs,
    kill: std::sync::OnceLock<Kill>,
    /// Turns true when the killed gateway's clients may reconnect.
    reconnect: tokio::sync::watch::Sender<bool>,
    stats: KillStats,
    quit: AtomicBool,
}

impl WorkerState {
    fn since_kill_ms(&self) -> u64 {
        self.kill
            .get()
            .map_or(0, |k| k.at.elapsed().as_millis() as u64)
    }
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let durable = args.durable;
    let state = Arc::new(WorkerState {
        args,
        kill: std::sync::OnceLock::new(),
        reconnect: tokio::sync::watch::channel(false).0,
        stats: KillStats {
            offline_min_ms: AtomicU64::new(u64::MAX),
            ..KillStats::default()
        },
        quit: AtomicBool::new(false),
    });
    let out = Arc::new(Mutex::new(std::io::stdout()));
    if durable {
        let done = durable_users(&state).await?;
        let mut out = out.lock().await;
        writeln!(out, "durable {done}")?;
        out.flush()?;
        return Ok(());
    }
    let gate = Arc::new(Semaphore::new(state.args.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in state.args.from..state.args.to {
        let (state, gate, ready) = (state.clone(), gate.clone(), ready_tx.clone());
        tokio::spawn(async move { socket(state, gate, ready, i).await });
    }
    drop(ready_tx);
    let (mut connected, mut failed) = (0u64, 0u64);
    for _ in state.args.from..state.args.to {
        match ready_rx.recv().await {
            Some(true) => connected += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    {
        let mut out = out.lock().await;
        writeln!(out, "connected {connected} {failed}")?;
        out.flush()?;
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["kill", g] => {
                let gateway: usize = g.parse()?;
                let _ = state.kill.set(Kill {
                    gateway,
                    at: Instant::now(),
                });
                let a = &state.args;
                let g_count = a.gateways.len();
                let (mut pairs, mut lost) = (0, 0);
                for i in a.from..a.to {
                    if i % g_count == gateway {
                        lost += 1;
                        continue;
                    }
                    pairs += watched(i, a.sockets, a.subscriptions)
                        .into_iter()
                        .filter(|j| j % g_count == gateway)
                        .count() as u64;
                }
                state.stats.pairs.store(pairs, Ordering::Release);
                state.stats.lost.store(lost, Ordering::Release);
            }
            ["report"] => {
                let s = &state.stats;
                let words = [
                    &s.pairs,
                    &s.offline,
                    &s.offline_max_ms,
                    &s.lost,
                    &s.back,
                    &s.back_max_ms,
                    &s.rate_limited,
                    &s.errors,
                    &s.online,
                    &s.online_max_ms,
                    &s.offline_min_ms,
                ]
                .map(|a| a.load(Ordering::Acquire).to_string());
                let mut out = out.lock().await;
                writeln!(out, "report {}", words.join(" "))?;
                out.flush()?;
            }
            ["reconnect"] => {
                state.reconnect.send_replace(true);
            }
            ["quit"] => break,
            _ => bail!("unknown command {line:?}"),
        }
    }
    state.quit.store(true, Ordering::Release);
    Ok(())
}

/// Users `from..to` connect, set a status with a text, wait for the ack
/// and leave, `concurrency` at a time.
async fn durable_users(state: &Arc<WorkerState>) -> anyhow::Result<u64> {
    let gate = Arc::new(Semaphore::new(state.args.concurrency.max(1)));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in state.args.from..state.args.to {
        let permit = gate.clone().acquire_owned().await?;
        let (state, done) = (state.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let name = format!("d{i:07}");
            let gateway = state.args.gateways[i % state.args.gateways.len()];
            let Ok(token) = token(&name) else { return };
            let Ok(mut socket) = ws::connect(&url(gateway, "web"), &token).await else {
                return;
            };
            let frame = r#"{"type":"set_status","ref":"d","status":"busy","text":"In a meeting until 3 pm"}"#;
            if socket.send(Message::text(frame)).await.is_err() {
                return;
            }
            while let Ok(Some(Ok(reply))) =
                tokio::time::timeout(Duration::from_secs(30), socket.next()).await
            {
                if reply.to_text().is_ok_and(|t| t.contains("\"type\":\"ack\"")) {
                    done.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            let _ = socket.close(None).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(done.load(Ordering::Relaxed))
}

/// One socket for its whole life: connect, subscribe, read; after a
/// disconnect caused by the kill, reconnect to another gateway with
/// full-jitter exponential backoff.
async fn socket(
    state: Arc<WorkerState>,
    gate: Arc<Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<bool>,
    i: usize,
) {
    let a = &state.args;
    let name = user(i);
    let g_count = a.gateways.len();
    let watched = watched(i, a.sockets, a.subscriptions);
    let Ok(token) = token(&name) else {
        let _ = ready.send(false);
        return;
    };
    let subscribe = format!(
        r#"{{"type":"subscribe","ref":"s","users":[{}]}}"#,
        watched
            .iter()
            .map(|&j| format!("\"{}\"", user(j)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut gateway = i % g_count;
    let mut first = true;
    let mut attempt = 0u32;
    // Per watched user on the killed gateway: seen offline, seen back.
    let mut offline_seen = vec![false; watched.len()];
    let mut online_seen = vec![false; watched.len()];
    loop {
        let connected = {
            let _permit = gate.acquire().await;
            match ws::connect(&url(a.gateways[gateway], &format!("dev{i}")), &token).await {
                Ok(mut socket) => match socket.send(Message::text(subscribe.clone())).await {
                    Ok(()) => Ok(socket),
                    Err(e) => Err(anyhow::Error::from(e)),
                },
                Err(e) => Err(e),
            }
        };
        let mut socket = match connected {
            Ok(socket) => socket,
            Err(error) => {
                if first {
                    let _ = ready.send(false);
                    return;
                }
                let limited = error
                    .downcast_ref::<tungstenite::Error>()
                    .is_some_and(|e| matches!(e, tungstenite::Error::Http(r) if r.status() == 429));
                if limited {
                    state.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                } else {
                    state.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                attempt += 1;
                backoff(attempt).await;
                continue;
            }
        };
        if first {
            first = false;
            let _ = ready.send(true);
        } else {
            state.stats.back.fetch_add(1, Ordering::Relaxed);
            state
                .stats
                .back_max_ms
                .fetch_max(state.since_kill_ms(), Ordering::Relaxed);
            attempt = 0;
        }
        loop {
            let frame = tokio::select! {
                frame = socket.next() => frame,
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if state.quit.load(Ordering::Acquire) {
                        let _ = socket.close(None).await;
                        return;
                    }
                    continue;
                }
            };
            let Some(Ok(frame)) = frame else { break };
            let Some(kill) = state.kill.get() else {
                continue;
            };
            if i % g_count == kill.gateway {
                // Pairs are counted for watchers that stayed up.
                continue;
            }
            let Ok(text) = frame.to_text() else { continue };
            if !text.starts_with(r#"{"type":"presence""#) {
                continue;
            }
            let (Some(who), Some(status)) = (ws::field(text, "user"), ws::field(text, "status"))
            else {
                continue;
            };
            let Some(k) = watched
                .iter()
                .position(|&j| j % g_count == kill.gateway && user(j) == who)
            else {
                continue;
            };
            let ms = kill.at.elapsed().as_millis() as u64;
            if status == "offline" && !offline_seen[k] {
                offline_seen[k] = true;
                state.stats.offline.fetch_add(1, Ordering::Relaxed);
                state.stats.offline_max_ms.fetch_max(ms, Ordering::Relaxed);
                state.stats.offline_min_ms.fetch_min(ms, Ordering::Relaxed);
            } else if status != "offline" && offline_seen[k] && !online_seen[k] {
                online_seen[k] = true;
                state.stats.online.fetch_add(1, Ordering::Relaxed);
                state.stats.online_max_ms.fetch_max(ms, Ordering::Relaxed);
            }
        }
        if state.quit.load(Ordering::Acquire) {
            return;
        }
        // The gateway went away: wait for the go, then the next one that
        // is up.
        if state.kill.get().is_some() {
            let mut go = state.reconnect.subscribe();
            let _ = go.wait_for(|go| *go).await;
        }
        let killed = state.kill.get().map(|k| k.gateway);
        gateway = (gateway + 1) % g_count;
        if Some(gateway) == killed {
            gateway = (gateway + 1) % g_count;
        }
        attempt += 1;
        backoff(attempt).await;
    }
}

/// Full jitter: a uniform wait in `[0, min(10 s, 100 ms × 2^attempt))`.
async fn backoff(attempt: u32) {
    let cap = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(10))
        .min(Duration::from_secs(10));
    // A cheap uniform draw; the bench needs spread, not cryptography.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos()) as u64;
    let x = nanos
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 11;
    let wait = cap.mul_f64((x % 1_000_000) as f64 / 1_000_000.0);
    tokio::time::sleep(wait).await;
}

//! `redis-memory`: how much Redis memory cluster mode needs per user.
//!
//! Starts its own `redis-server` (loopback, free port, `--save ''
//! --appendonly no`) and one `presenced --redis` node, waits until the node
//! holds every shard lease, and reads `INFO memory` `used_memory` as the
//! baseline. Then, the way real clients do it (WebSocket connect, then
//! `set_status` with a text, acknowledged once the shard leader committed
//! it):
//!
//! 1. **live**: `--live-users` users connect one device each and set their
//!    status, and the sockets stay open → bytes per user with one live
//!    device (durable document, views, device hash, heartbeat member).
//! 2. **durable**: those sockets close (clean close: the devices go at
//!    once) → bytes per user with durable state only (a user who set a
//!    status and logged off).
//! 3. **durable at scale** (`--durable-users`, optional): more users each
//!    connect, set their status and close, `--concurrency` at a time, so
//!    the count is not bounded by open files → bytes per user with durable
//!    state only, measured at that count.
//!
//! At the end it times `GET /metrics`, whose `presence_users` gauge reads
//! every user document in cluster mode.
//!
//! Each reading waits until `used_memory` stops moving (the leaders apply
//! and trim their streams asynchronously).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::server::{ServerArgs, Target};
use crate::ws;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Users who connect one device each, set a status and stay connected.
    #[arg(long, default_value_t = 10_000)]
    live_users: usize,
    /// Further users who connect, set a status and disconnect (0 = skip).
    #[arg(long, default_value_t = 0)]
    durable_users: usize,
    /// The status every user chooses.
    #[arg(long, default_value = "busy")]
    status: String,
    /// The status text every user sets.
    #[arg(long, default_value = "In a meeting until 3 pm")]
    text: String,
    /// Users connecting at the same time.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let redis = RedisServer::start(&args.redis_server).await?;
    let url = format!("redis://{}", redis.addr);
    let target = Arc::new(
        Target::start(&args.server, &["--redis", &url, "--node-id", "bench"])
            .await
            .context("starting presenced --redis")?,
    );
    println!(
        "redis {} ({}), presenced {} (pid {:?})",
        redis.addr,
        redis.command(&["INFO", "server"]).await.map_or_else(
            |_| "version unknown".to_owned(),
            |info| info_field(&info, "redis_version").unwrap_or("?").to_owned()
        ),
        target.addr,
        target.pid
    );
    let shards = redis.wait_for_leases(Duration::from_secs(30)).await?;
    println!("node holds all {shards} shard leases");

    let base = redis.settled_memory(shards).await?;
    println!("baseline: {}", base.describe());

    let frame = serde_json::json!({
        "type": "set_status",
        "ref": "m",
        "status": args.status,
        "text": args.text,
    })
    .to_string();
    let frame: Arc<str> = frame.into();

    // 1. live
    let started = Instant::now();
    let (close, closed) = watch::channel(false);
    let sockets =
        connect_and_set(&target, &frame, args.live_users, args.concurrency, &closed).await?;
    println!(
        "{} users connected and set their status in {:.1} s",
        args.live_users,
        started.elapsed().as_secs_f64()
    );
    let live = redis.settled_memory(shards).await?;
    println!("live: {}", live.describe());

    // 2. durable (the same users, disconnected)
    let _ = close.send(true);
    for task in sockets {
        let _ = task.await;
    }
    let durable = redis.settled_memory(shards).await?;
    println!("durable: {}", durable.describe());

    println!();
    report(
        "users with one live device",
        args.live_users,
        base.used,
        live.used,
    );
    report(
        "users with durable state only",
        args.live_users,
        base.used,
        durable.used,
    );

    // 3. durable at scale
    if args.durable_users > 0 {
        let started = Instant::now();
        let first = args.live_users;
        let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
        let mut pending = Vec::with_capacity(args.durable_users);
        for i in first..first + args.durable_users {
            let permit = gate.clone().acquire_owned().await?;
            let target = target.clone();
            let frame = frame.clone();
            pending.push(tokio::spawn(async move {
                let mut socket = connect_one(&target, &frame, i).await?;
                let _ = socket.close(None).await;
                while let Some(Ok(_)) = socket.next().await {}
                drop(permit);
                anyhow::Ok(())
            }));
        }
        for task in pending {
            task.await??;
        }
        println!(
            "{} more users connected, set their status and left in {:.1} s",
            args.durable_users,
            started.elapsed().as_secs_f64()
        );
        let scale = redis.settled_memory(shards).await?;
        println!("durable at scale: {}", scale.describe());
        report(
            "users with durable state only, at scale",
            args.live_users + args.durable_users,
            base.used,
            scale.used,
        );
    }
    // In cluster mode, /metrics counts users by status (presence_users)
    // from every user document in Redis: its cost grows with the users.
    let users = args.live_users + args.durable_users;
    for _ in 0..3 {
        let started = Instant::now();
        let bytes = http_get(target.addr, "/metrics").await?;
        println!(
            "GET /metrics with {users} users in Redis: {:.0} ms ({bytes} bytes)",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    drop(target);
    Ok(())
}

/// A plain HTTP/1.0 GET; returns the response's size.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<usize> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    if !response.starts_with(b"HTTP/1.0 200") && !response.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&response[..response.len().min(100)])
        );
    }
    Ok(response.len())
}

fn report(what: &str, users: usize, before: u64, after: u64) {
    let per = after.saturating_sub(before) as f64 / users.max(1) as f64;
    println!(
        "{what}: {users} users, used_memory {before} → {after} B: {per:.0} B per user = {:.1} MiB per 100k users",
        per * 100_000.0 / (1024.0 * 1024.0)
    );
}

/// Connects users `0..count` (one web device each) and sets their
/// status. Each socket then lives in a task that reads it (so the server's
/// pings are answered) until `close` turns true, then closes it cleanly.
async fn connect_and_set(
    target: &Arc<Target>,
    frame: &Arc<str>,
    count: usize,
    concurrency: usize,
    close: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let target = target.clone();
        let frame = frame.clone();
        pending.push(tokio::spawn(async move {
            let socket = connect_one(&target, &frame, i).await;
            drop(permit);
            socket
        }));
    }
    let mut sockets = Vec::with_capacity(count);
    for task in pending {
        let mut socket = task.await??;
        let mut close = close.clone();
        sockets.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = close.wait_for(|c| *c) => break,
                    frame = socket.next() => if !matches!(frame, Some(Ok(_))) { return },
                }
            }
            let _ = socket.close(None).await;
            while let Some(Ok(_)) = socket.next().await {}
        }));
    }
    Ok(sockets)
}

/// One user as a real client: a token with a profile, a WebSocket with a
/// UUID-shaped device id, `set_status`, and the `ack` that says the shard
/// leader committed it.
async fn connect_one(target: &Target, frame: &str, i: usize) -> anyhow::Result<ws::Socket> {
    // Rocket.Chat user ids are 17 characters.
    let user = format!("rc{i:015}");
    let device = format!("{:08x}-5e1f-4c0a-9b7d-{:012x}", i as u32, i);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = presence_gateway::auth::MintClaims {
        sub: user.clone(),
        admin: false,
        username: Some(format!("firstname.lastname{i}")),
        name: Some(format!("Firstname Lastname {i}")),
        ttl: Duration::from_secs(3600),
    };
    let token = presence_gateway::auth::mint_hs256(target.secret.as_bytes(), &claims, now)?;
    let mut socket = ws::connect(&target.ws_url(&device, "web"), &token)
        .await
        .with_context(|| format!("connecting {user}"))?;
    socket.send(Message::text(frame)).await?;
    loop {
        let reply = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .with_context(|| format!("no answer to {user}'s set_status"))?
            .context("socket closed before the ack")??;
        let Ok(text) = reply.to_text() else { continue };
        if text.contains("\"type\":\"ack\"") {
            return Ok(socket);
        }
        if text.contains("\"type\":\"error\"") {
            bail!("set_status of {user} refused: {text}");
        }
    }
}

/// Memory figures from `INFO memory`, plus the key count.
struct Memory {
    used: u64,
    rss: u64,
    keys: u64,
    /// Entries left in the shards' event streams (applied ones are
    /// trimmed by the leaders).
    stream_entries: u64,
}

impl Memory {
    fn describe(&self) -> String {
        format!(
            "used_memory {} B ({:.1} MiB), used_memory_rss {:.1} MiB, {} keys, {} stream entries",
            self.used,
            self.used as f64 / (1024.0 * 1024.0),
            self.rss as f64 / (1024.0 * 1024.0),
            self.keys,
            self.stream_entries
        )
    }
}

/// A redis-server of our own, killed on drop (with any replica it keeps).
pub(crate) struct RedisServer {
    pub(crate) addr: std::net::SocketAddr,
    _child: Child,
    replicas: std::sync::Mutex<Vec<RedisServer>>,
}

impl RedisServer {
    pub(crate) async fn start(bin: &std::path::Path) -> anyhow::Result<RedisServer> {
        RedisServer::start_with(bin, &[]).await
    }

    /// A replica of `primary`; returns once its link is up.
    pub(crate) async fn start_replica_of(
        bin: &std::path::Path,
        primary: std::net::SocketAddr,
    ) -> anyhow::Result<RedisServer> {
        let port = primary.port().to_string();
        let replica = RedisServer::start_with(bin, &["--replicaof", "127.0.0.1", &port]).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !replica
            .command(&["INFO", "replication"])
            .await?
            .contains("master_link_status:up")
        {
            if Instant::now() > deadline {
                bail!("the replica did not link to its primary");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(replica)
    }

    /// Keeps `replica` alive as long as this server; returns nothing to
    /// hold.
    pub(crate) fn keep(&self, replica: RedisServer) {
        self.replicas.lock().expect("replicas lock").push(replica);
    }

    async fn start_with(bin: &std::path::Path, extra: &[&str]) -> anyhow::Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let (program, before) = crate::procstat::in_own_session(bin);
        let child = Command::new(program)
            .args(before)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = RedisServer {
            addr: ([127, 0, 0, 1], port).into(),
            _child: child,
            replicas: std::sync::Mutex::new(Vec::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match server.command(&["PING"]).await {
                Ok(reply) if reply == "PONG" => return Ok(server),
                _ if Instant::now() > deadline => bail!("redis-server did not answer PING"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self._child.id()
    }

    /// Calls per command since the last `CONFIG RESETSTAT` (or start),
    /// from `INFO commandstats`, largest first.
    pub(crate) async fn command_calls(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let info = self.command(&["INFO", "commandstats"]).await?;
        let mut calls: Vec<(String, u64)> = info
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let n = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), n))
            })
            .collect();
        calls.sort_by_key(|c| std::cmp::Reverse(c.1));
        Ok(calls)
    }

    /// `used_memory`, RSS and keys, as one line.
    pub(crate) async fn memory_report(&self) -> anyhow::Result<String> {
        Ok(self.memory().await?.describe())
    }

    /// `CONFIG RESETSTAT`: command counts start again from zero.
    pub(crate) async fn reset_stats(&self) -> anyhow::Result<()> {
        self.command(&["CONFIG", "RESETSTAT"]).await.map(drop)
    }

    /// One command on a fresh connection; the reply as text (RESP simple
    /// string, integer or bulk string).
    async fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let stream = TcpStream::connect(self.addr).await?;
        let mut stream = BufReader::new(stream);
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        let line = line.trim_end();
        match line.split_at_checked(1) {
            Some(("+" | ":", rest)) => Ok(rest.to_owned()),
            Some(("$", "-1")) => Ok(String::new()),
            Some(("$", len)) => {
                let len: usize = len.parse()?;
                let mut body = vec![0; len + 2];
                stream.read_exact(&mut body).await?;
                body.truncate(len);
                Ok(String::from_utf8(body)?)
            }
            _ => bail!("redis replied {line:?} to {args:?}"),
        }
    }

    async fn memory(&self) -> anyhow::Result<Memory> {
        let info = self.command(&["INFO", "memory"]).await?;
        let field = |name: &str| -> anyhow::Result<u64> {
            info_field(&info, name)
                .with_context(|| format!("INFO memory has no {name}"))?
                .parse()
                .with_context(|| format!("INFO memory {name}"))
        };
        Ok(Memory {
            used: field("used_memory")?,
            rss: field("used_memory_rss")?,
            keys: self.command(&["DBSIZE"]).await?.parse()?,
            stream_entries: self.stream_entries().await?,
        })
    }

    async fn stream_entries(&self) -> anyhow::Result<u64> {
        let shards: u32 = self
            .command(&["HGET", "presence:meta", "shards"])
            .await?
            .parse()
            .unwrap_or(0);
        let mut total = 0;
        for s in 0..shards {
            let key = format!("presence:{{{s}}}:events");
            total += self.command(&["XLEN", &key]).await?.parse::<u64>()?;
        }
        Ok(total)
    }

    /// Reads `used_memory` every half second until the leaders trimmed
    /// what they applied from their streams (at most one entry left per
    /// shard; they trim every 5 s) and it moved less than 0.1 % over
    /// three readings (at most 60 s). Prints what the untrimmed backlog
    /// cost, if there was one.
    async fn settled_memory(&self, shards: u32) -> anyhow::Result<Memory> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = self.memory().await?;
        let mut steady = 0;
        let mut backlog: Option<Memory> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.memory().await?;
            let moved = now.used.abs_diff(last.used) as f64 / last.used.max(1) as f64;
            steady = if moved < 0.001 { steady + 1 } else { 0 };
            last = now;
            let trimmed = last.stream_entries <= u64::from(shards);
            if steady >= 3 && !trimmed && backlog.is_none() {
                backlog = Some(Memory { ..last });
            }
            if (steady >= 3 && trimmed) || Instant::now() > deadline {
                break;
            }
        }
        if let Some(before) = backlog {
            let entries = before.stream_entries.saturating_sub(last.stream_entries);
            println!(
                "  (before the leaders trimmed their streams: {} entries, used_memory {} B, ≈ {:.0} B per entry)",
                before.stream_entries,
                before.used,
                before.used.saturating_sub(last.used) as f64 / entries.max(1) as f64
            );
        }
        Ok(last)
    }

    /// Waits until every shard (`presence:meta` `shards`) has a lease;
    /// returns the shard count.
    pub(crate) async fn wait_for_leases(&self, timeout: Duration) -> anyhow::Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let shards: u32 = self
                .command(&["HGET", "presence:meta", "shards"])
                .await?
                .parse()
                .unwrap_or(0);
            if shards > 0 {
                let mut held = 0;
                for s in 0..shards {
                    let key = format!("presence:{{{s}}}:lease");
                    if self.command(&["EXISTS", &key]).await? == "1" {
                        held += 1;
                    }
                }
                if held == shards {
                    return Ok(shards);
                }
            }
            if Instant::now() > deadline {
                bail!("the node did not take every shard within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

//! [`SentinelCluster`]: a Redis primary, one replica (or more, with
//! [`SentinelCluster::start_with_replicas`]) and three sentinels on
//! loopback, for failover tests.
//!
//! Sentinels are `redis-server <config> --sentinel` (Debian's package has
//! no separate `redis-sentinel` binary; the server binary is the same
//! program). Each gets a generated, writable configuration file in its own
//! temporary directory (Sentinel rewrites it as it learns the topology):
//!
//! ```text
//! sentinel monitor mymaster 127.0.0.1 <primary port> 2
//! sentinel down-after-milliseconds mymaster 1000
//! sentinel failover-timeout mymaster 5000
//! ```
//!
//! [`SentinelCluster::start`] returns once the replica's link is up and
//! every sentinel knows the primary, the replica and the two other
//! sentinels, so a failover can start at once. Every wait polls with a
//! deadline; nothing sleeps a fixed time.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::redis_server::{RedisOptions, RedisServer, free_port};
use crate::resp::{self, Reply};
use crate::wait::wait_until_blocking;

/// The monitored service's name.
pub const SENTINEL_SERVICE: &str = "mymaster";

/// How long the topology may take to settle (start, discovery, failover).
const TOPOLOGY_DEADLINE: Duration = Duration::from_secs(30);

/// How many fresh ports a sentinel tries when its port was taken.
const PORT_ATTEMPTS: usize = 5;

/// A primary, a replica and three sentinels, killed on drop.
#[derive(Debug)]
pub struct SentinelCluster {
    /// The servers in start order: `[0]` started as the primary, `[1]` as
    /// its replica. After a failover the roles are swapped; see
    /// [`primary`](Self::primary).
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

impl SentinelCluster {
    /// Starts the primary, the replica and three sentinels (quorum 2) and
    /// waits until the topology is known to every sentinel.
    pub fn start() -> SentinelCluster {
        SentinelCluster::start_with_replicas(1)
    }

    /// Like [`start`](Self::start) with `replicas` replicas (at least 1).
    /// With two, a failover leaves the new primary a replica at once (the
    /// other one, which Sentinel points at it as part of the failover),
    /// without waiting for the former primary to be demoted.
    pub fn start_with_replicas(replicas: usize) -> SentinelCluster {
        assert!(replicas >= 1, "a failover needs a replica");
        // A full sync starts at once instead of after the default 5 s
        // wait for more replicas (either server may be the primary).
        let no_sync_delay = || vec!["--repl-diskless-sync-delay".into(), "0".into()];
        let primary = RedisServer::start_with(RedisOptions {
            extra_args: no_sync_delay(),
            ..RedisOptions::default()
        });
        let mut servers = vec![primary];
        for _ in 0..replicas {
            let mut replica_args = no_sync_delay();
            replica_args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                servers[0].port().to_string(),
            ]);
            let replica = RedisServer::start_with(RedisOptions {
                extra_args: replica_args,
                ..RedisOptions::default()
            });
            wait_until_blocking(
                "the replica's link to the primary to be up",
                TOPOLOGY_DEADLINE,
                || info_field(&replica, "replication", "master_link_status"),
                |link| link.as_deref() == Some("up"),
            );
            servers.push(replica);
        }
        let sentinels = (0..3).map(|_| Sentinel::start(servers[0].port())).collect();
        let cluster = SentinelCluster { servers, sentinels };
        cluster.wait_topology_known();
        cluster
    }

    /// `redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/mymaster`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_SERVICE}", hosts.join(","))
    }

    /// The sentinels' addresses.
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(Sentinel::addr).collect()
    }

    /// Makes Sentinel notice role changes within about a second instead of
    /// ten (`SENTINEL DEBUG INFO-PERIOD 1000 PUBLISH-PERIOD 500`): a
    /// former primary is then demoted (and its clients killed) about 2–3 s
    /// after a failover instead of 8–20 s, so failovers can follow each
    /// other. The window in which the former primary still accepts writes
    /// remains, only shorter.
    pub fn speed_up_reconfiguration(&self) {
        for i in 0..self.sentinels.len() {
            let reply = self.sentinel_query(
                i,
                &[
                    "SENTINEL",
                    "DEBUG",
                    "INFO-PERIOD",
                    "1000",
                    "PUBLISH-PERIOD",
                    "500",
                ],
            );
            assert!(!reply.is_error(), "SENTINEL DEBUG refused: {reply}");
        }
    }

    /// Kills sentinel `i` (`kill -9`); the others go on. Its address
    /// stays in [`url`](Self::url), as a configured sentinel that is down.
    pub fn kill_sentinel(&mut self, i: usize) {
        let sentinel = &mut self.sentinels[i];
        let _ = sentinel.child.kill();
        let _ = sentinel.child.wait();
    }

    /// The data servers, in start order (`[0]` started as the primary).
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// Mutable access to the servers (to kill or restart one).
    pub fn servers_mut(&mut self) -> &mut [RedisServer] {
        &mut self.servers
    }

    /// The port of the primary according to the first sentinel that
    /// answers.
    pub fn primary_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| s.primary_port())
            .expect("a sentinel knows the primary")
    }

    /// The server that is the primary now (per the sentinels).
    pub fn primary(&self) -> &RedisServer {
        let port = self.primary_port();
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .expect("the primary is one of ours")
    }

    /// The server that is the replica now (per the sentinels).
    pub fn replica(&self) -> &RedisServer {
        let port = self.primary_port();
        self.servers
            .iter()
            .find(|s| s.port() != port)
            .expect("two servers")
    }

    /// Sends one command to sentinel `i` (0–2) and returns the reply.
    pub fn sentinel_query(&self, i: usize, args: &[&str]) -> Reply {
        resp::query(self.sentinels[i].addr(), args)
            .unwrap_or_else(|e| panic!("sentinel command {args:?} failed: {e}"))
    }

    /// `SENTINEL FAILOVER mymaster` and waits until every sentinel names
    /// the former replica as the primary and it says `role:master`.
    /// Returns the new primary's port and how long that took.
    ///
    /// The former primary keeps running as a primary (and accepting
    /// writes from clients still connected to it) until Sentinel
    /// reconfigures it: Redis 7's Sentinel does that only after it has
    /// seen it report `role:master` for 8 s (`SENTINEL_PUBLISH_PERIOD * 4`)
    /// on its 10 s `INFO` cycle, i.e. 8–20 s later; then it sends it
    /// `REPLICAOF` and `CLIENT KILL TYPE normal|pubsub`. See
    /// [`wait_demoted`](Self::wait_demoted).
    pub fn failover(&self) -> (u16, Duration) {
        let start = Instant::now();
        let old = self.primary_port();
        let reply = self.sentinel_query(0, &["SENTINEL", "FAILOVER", SENTINEL_SERVICE]);
        assert!(!reply.is_error(), "SENTINEL FAILOVER refused: {reply}");
        let named = wait_until_blocking(
            format_args!("every sentinel to name a new primary instead of port {old}"),
            TOPOLOGY_DEADLINE,
            || -> Vec<Option<u16>> { self.sentinels.iter().map(|s| s.primary_port()).collect() },
            |named| {
                named[0].is_some_and(|port| port != old) && named.iter().all(|n| *n == named[0])
            },
        );
        let new = named[0].expect("checked above");
        let promoted = self.servers.iter().find(|s| s.port() == new).expect("ours");
        wait_until_blocking(
            format_args!("the new primary (port {new}) to say role:master"),
            TOPOLOGY_DEADLINE,
            || info_field(promoted, "replication", "role"),
            |role| role.as_deref() == Some("master"),
        );
        (new, start.elapsed())
    }

    /// Waits until the server on `old_port` (a former primary) replicates
    /// from the current primary with its link up; returns how long that
    /// took.
    pub fn wait_demoted(&self, old_port: u16) -> Duration {
        let start = Instant::now();
        let new = self.primary_port();
        let demoted = self
            .servers
            .iter()
            .find(|s| s.port() == old_port)
            .expect("ours");
        wait_until_blocking(
            format_args!("the former primary to replicate from port {new} with its link up"),
            TOPOLOGY_DEADLINE,
            || {
                (
                    info_field(demoted, "replication", "master_port"),
                    info_field(demoted, "replication", "master_link_status"),
                )
            },
            |(port, link)| *port == Some(new.to_string()) && link.as_deref() == Some("up"),
        );
        start.elapsed()
    }

    /// Waits until every sentinel knows the two other sentinels and every
    /// other server as a healthy replica of the primary.
    pub fn wait_topology_known(&self) {
        // Per sentinel: how many other sentinels and healthy replicas it knows.
        wait_until_blocking(
            "every sentinel to know the others and the replicas",
            TOPOLOGY_DEADLINE,
            || -> Vec<(Option<usize>, usize)> {
                self.sentinels
                    .iter()
                    .map(|s| {
                        let others = s.query(&["SENTINEL", "SENTINELS", SENTINEL_SERVICE]);
                        let replicas = s.query(&["SENTINEL", "REPLICAS", SENTINEL_SERVICE]);
                        (array_len(&others), healthy_replicas(&replicas))
                    })
                    .collect()
            },
            |known| {
                known.iter().all(|&(others, replicas)| {
                    others == Some(self.sentinels.len() - 1) && replicas == self.servers.len() - 1
                })
            },
        );
    }
}

/// One sentinel process, killed on drop.
#[derive(Debug)]
struct Sentinel {
    port: u16,
    dir: TempDir,
    child: Child,
}

impl Sentinel {
    fn start(primary_port: u16) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("presence-sentinel-")
            .tempdir()
            .expect("creating a temporary directory for a sentinel");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            if let Some(child) = launch_sentinel(dir.path(), port, primary_port) {
                return Sentinel { port, dir, child };
            }
        }
        panic!("a sentinel found its port taken {PORT_ATTEMPTS} times in a row");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn query(&self, args: &[&str]) -> Reply {
        resp::query(self.addr(), args).unwrap_or(Reply::Error("unreachable".into()))
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`'s port.
    fn primary_port(&self) -> Option<u16> {
        match self.query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE]) {
            Reply::Array(Some(items)) if items.len() == 2 => items[1].to_string().parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// Writes the configuration and spawns the sentinel; `None` if its port
/// was taken. Panics on other failures.
fn launch_sentinel(dir: &Path, port: u16, primary_port: u16) -> Option<Child> {
    let config = dir.join("sentinel.conf");
    let log = dir.join("sentinel.log");
    let text = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         daemonize no\n\
         dir {dir}\n\
         logfile {log}\n\
         sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary_port} 2\n\
         sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
         sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
         sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
        dir = dir.display(),
        log = log.display(),
    );
    fs::write(&config, text).expect("writing sentinel.conf");
    let stdio = fs::File::create(dir.join("sentinel.stdio")).expect("creating sentinel.stdio");
    let stderr = stdio.try_clone().expect("cloning a file handle");
    let mut child = match Command::new("redis-server")
        .arg(&config)
        .arg("--sentinel")
        .stdin(Stdio::null())
        .stdout(stdio)
        .stderr(stderr)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("`redis-server` is not installed: apt-get install redis-server")
        }
        Err(e) => panic!("could not start a sentinel: {e}"),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + TOPOLOGY_DEADLINE;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = read_logs(dir);
            if text.contains("Address already in use") {
                return None;
            }
            panic!("a sentinel on port {port} exited during start-up ({status}):\n{text}");
        }
        if let Ok(reply) = resp::query(addr, &["INFO", "server"])
            && reply
                .to_string()
                .lines()
                .any(|l| l.trim() == format!("process_id:{}", child.id()))
        {
            return Some(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "a sentinel on port {port} did not answer in time:\n{}",
                read_logs(dir)
            );
        }
        // Polling interval, not a delay.
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn read_logs(dir: &Path) -> String {
    let stdio = fs::read_to_string(dir.join("sentinel.stdio")).unwrap_or_default();
    let log = fs::read_to_string(dir.join("sentinel.log")).unwrap_or_default();
    format!("{stdio}{log}")
}

/// A field of `INFO <section>`, or `None` if the server does not answer.
fn info_field(server: &RedisServer, section: &str, field: &str) -> Option<String> {
    let info = resp::query(server.addr(), &["INFO", section]).ok()?;
    let prefix = format!("{field}:");
    info.to_string()
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_owned))
}

fn array_len(reply: &Reply) -> Option<usize> {
    match reply {
        Reply::Array(Some(items)) => Some(items.len()),
        _ => None,
    }
}

/// Replicas in a `SENTINEL REPLICAS` reply whose flags are just `slave`
/// (not down, not disconnected) and whose link to the primary is up.
fn healthy_replicas(reply: &Reply) -> usize {
    let Reply::Array(Some(replicas)) = reply else {
        return 0;
    };
    replicas
        .iter()
        .filter(|r| {
            let Reply::Array(Some(fields)) = r else {
                return false;
            };
            let get = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0].to_string() == name)
                    .and_then(|kv| kv.get(1))
                    .map(ToString::to_string)
            };
            get("flags").as_deref() == Some("slave")
                && get("master-link-status").as_deref() == Some("ok")
        })
        .count()
}

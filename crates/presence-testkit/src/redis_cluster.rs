//! A Redis Cluster on loopback: `N` primaries (`--cluster-enabled yes`,
//! each in its own directory, so each keeps its own `nodes.conf`), joined
//! and given every slot by `redis-cli --cluster create`. Ready once every
//! node reports `cluster_state:ok`; killed on drop with its servers.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::{RedisOptions, RedisServer};

/// How long the cluster may take to agree on its slots.
const READY_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct RedisCluster {
    servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` (at least 3, as Redis Cluster requires) and
    /// assigns the 16 384 slots evenly.
    pub fn start(primaries: usize) -> RedisCluster {
        assert!(primaries >= 3, "redis cluster needs at least 3 primaries");
        let servers: Vec<RedisServer> = (0..primaries)
            .map(|_| {
                RedisServer::start_with(RedisOptions {
                    extra_args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ]
                    .map(String::from)
                    .to_vec(),
                    ..RedisOptions::default()
                })
            })
            .collect();
        let addrs: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("running redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { servers };
        let deadline = Instant::now() + READY_DEADLINE;
        while !cluster
            .servers
            .iter()
            .all(|s| s.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The primaries, in start order.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The server that serves `key`'s slot (`CLUSTER KEYSLOT`, then the
    /// node whose `CLUSTER NODES` line lists that slot as `myself`).
    pub fn owner_of(&self, key: &str) -> &RedisServer {
        let slot: u16 = self.servers[0]
            .command(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot number");
        self.servers
            .iter()
            .find(|s| serves_slot(&s.command(&["CLUSTER", "NODES"]), slot))
            .expect("a node serves every slot")
    }
}

/// Whether the `myself` line of `CLUSTER NODES` lists `slot`.
fn serves_slot(nodes: &str, slot: u16) -> bool {
    let Some(line) = nodes.lines().find(|l| l.contains("myself")) else {
        return false;
    };
    line.split_whitespace().skip(8).any(|range| {
        let (from, to) = range.split_once('-').unwrap_or((range, range));
        match (from.parse::<u16>(), to.parse::<u16>()) {
            (Ok(from), Ok(to)) => (from..=to).contains(&slot),
            _ => false,
        }
    })
}

//! A Redis Cluster on loopback: `N` primaries (`--cluster-enabled yes`,
//! each in its own directory, so each keeps its own `nodes.conf`), and
//! optionally replicas for each, joined and given every slot by
//! `redis-cli --cluster create`. Ready once every node reports
//! `cluster_state:ok` (and, with replicas, every replica's link is up);
//! killed on drop with its servers. [`RedisCluster::failover`] runs
//! `CLUSTER FAILOVER` on a replica, as an operator would.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::{RedisOptions, RedisServer};
use crate::wait::wait_until_blocking;

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
        RedisCluster::start_with_replicas(primaries, 0)
    }

    /// Starts `primaries` (at least 3) with `replicas` replicas each.
    /// `redis-cli --cluster create` chooses which server replicates which
    /// primary; [`servers`](Self::servers) holds them all.
    pub fn start_with_replicas(primaries: usize, replicas: usize) -> RedisCluster {
        assert!(primaries >= 3, "redis cluster needs at least 3 primaries");
        let servers: Vec<RedisServer> = (0..primaries * (1 + replicas))
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
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("running redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { servers };
        wait_until_blocking(
            "every node to report cluster_state:ok",
            READY_DEADLINE,
            || cluster.nodes_not_ok(),
            Vec::is_empty,
        );
        cluster.wait_replicas_linked();
        cluster
    }

    /// `CLUSTER FAILOVER` on a replica of the primary that serves `key`,
    /// then waits until every node names that replica as the slot's
    /// primary. Returns the old and the new primary's ports and how long
    /// the promotion took.
    pub fn failover(&self, key: &str) -> (u16, u16, Duration) {
        let start = Instant::now();
        let old = self.owner_of(key);
        let old_id = old.command(&["CLUSTER", "MYID"]).trim().to_owned();
        let replica = self
            .servers
            .iter()
            .find(|s| {
                s.command(&["CLUSTER", "NODES"])
                    .lines()
                    .any(|l| l.contains("myself") && l.contains(&old_id) && l.contains("slave"))
            })
            .expect("the key's primary has a replica");
        let reply = replica.command(&["CLUSTER", "FAILOVER"]);
        assert!(reply.contains("OK"), "CLUSTER FAILOVER refused: {reply}");
        let slot: u16 = self.servers[0]
            .command(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot number");
        let replica_id = replica.command(&["CLUSTER", "MYID"]).trim().to_owned();
        wait_until_blocking(
            format_args!(
                "every node to name port {} primary of slot {slot}",
                replica.port()
            ),
            READY_DEADLINE,
            || {
                self.servers
                    .iter()
                    .filter(|s| {
                        !names_primary(&s.command(&["CLUSTER", "NODES"]), &replica_id, slot)
                    })
                    .map(RedisServer::port)
                    .collect::<Vec<_>>()
            },
            Vec::is_empty,
        );
        (old.port(), replica.port(), start.elapsed())
    }

    /// Waits until every replica's link to its primary is up.
    pub fn wait_replicas_linked(&self) {
        wait_until_blocking(
            "every replica's link to its primary to be up",
            READY_DEADLINE,
            || {
                self.servers
                    .iter()
                    .filter(|s| {
                        let info = s.command(&["INFO", "replication"]);
                        !(info.contains("role:master") || info.contains("master_link_status:up"))
                    })
                    .map(RedisServer::port)
                    .collect::<Vec<_>>()
            },
            Vec::is_empty,
        );
    }

    /// The ports of the nodes whose `CLUSTER INFO` is not yet
    /// `cluster_state:ok`.
    fn nodes_not_ok(&self) -> Vec<u16> {
        self.servers
            .iter()
            .filter(|s| !s.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            .map(RedisServer::port)
            .collect()
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

    /// Every server (primaries and replicas), in start order.
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

/// Whether `CLUSTER NODES` names node `id` a primary serving `slot`.
fn names_primary(nodes: &str, id: &str, slot: u16) -> bool {
    nodes.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.first() == Some(&id)
            && fields.get(2).is_some_and(|f| f.contains("master"))
            && fields.iter().skip(8).any(|range| in_range(range, slot))
    })
}

fn in_range(range: &str, slot: u16) -> bool {
    let (from, to) = range.split_once('-').unwrap_or((range, range));
    match (from.parse::<u16>(), to.parse::<u16>()) {
        (Ok(from), Ok(to)) => (from..=to).contains(&slot),
        _ => false,
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

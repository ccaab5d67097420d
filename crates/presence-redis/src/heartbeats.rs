//! Liveness in Redis: device heartbeats (H1) and node leases (H2).
//!
//! - Each shard's `presence:{s}:hb` zset maps `<uid>\n<device>` to the
//!   device's heartbeat deadline (ms since the Unix epoch). The shard's
//!   leader adds a member when a device connects and removes it when the
//!   device goes; gateways only *move deadlines forward*, with
//!   `ZADD … XX GT` in chunks of [`HEARTBEAT_CHUNK`] members, so a refresh
//!   never resurrects a device the leader removed and a late refresh never
//!   shortens a newer deadline.
//! - `presence:{0}:nodes` maps each gateway's node id to its node lease
//!   deadline, and `presence:{0}:conns` to its open sockets (X1). Leaders
//!   remove every device of a node whose lease lapsed.
//!
//! Deadlines are compared with the caller's `now_ms`; every node must keep
//! its clock in sync (NTP), or use [`RedisClient::server_time_ms`] as the
//! common clock. The 30 s heartbeat timeout dwarfs ordinary skew.

use std::collections::HashMap;

use fred::prelude::{ClientLike, HashesInterface, Value};
use fred::types::sorted_sets::Ordering;
use fred::types::{ClusterHash, CustomCommand, SetOptions};

use super::client::RedisClient;
use super::error::RedisError;
use super::keys::{Keys, parse_heartbeat_member};
use super::scripts::REFRESH_NODE;

/// At most this many members per `ZADD` of a refresh (H1: at most one
/// command per 500 devices per interval).
pub const HEARTBEAT_CHUNK: usize = 500;

/// What a heartbeat refresh did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatRefresh {
    /// `ZADD` commands sent (`ceil(members / 500)`), pipelined in one
    /// round trip.
    pub commands: usize,
    /// Members whose deadline moved (unknown members and later deadlines
    /// already stored are left alone).
    pub updated: u64,
}

/// One heartbeat member with its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatEntry {
    /// `<uid>\n<device>`.
    pub member: String,
    pub deadline_ms: u64,
}

impl HeartbeatEntry {
    /// `(user, device)`, or `None` for a member not written by
    /// [`heartbeat_member`](super::heartbeat_member).
    pub fn user_and_device(&self) -> Option<(&str, &str)> {
        parse_heartbeat_member(&self.member)
    }
}

/// A gateway node as the node registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: String,
    /// The node lease deadline (ms).
    pub deadline_ms: u64,
    /// Open sockets it last reported (0 if it never did).
    pub connections: u64,
}

impl RedisClient {
    /// Moves the deadline of every listed member of shard `shard` to
    /// `deadline_ms`, if the member exists and its deadline is earlier
    /// (`ZADD presence:{s}:hb XX GT CH`), [`HEARTBEAT_CHUNK`] members per
    /// command, all commands in one pipeline.
    pub async fn refresh_heartbeats(
        &self,
        shard: u16,
        deadline_ms: u64,
        members: &[String],
    ) -> Result<HeartbeatRefresh, RedisError> {
        if members.is_empty() {
            return Ok(HeartbeatRefresh::default());
        }
        let key = Keys::new(shard).heartbeats();
        let score = deadline_ms as f64;
        let started = std::time::Instant::now();
        let pool = self.pool()?;
        let pipeline = pool.next_connected().pipeline();
        let mut commands = 0;
        for chunk in members.chunks(HEARTBEAT_CHUNK) {
            let values: Vec<(f64, &str)> = chunk.iter().map(|m| (score, m.as_str())).collect();
            let () = fred::prelude::SortedSetsInterface::zadd(
                &pipeline,
                key.as_str(),
                Some(SetOptions::XX),
                Some(Ordering::GreaterThan),
                true,
                false,
                values,
            )
            .await?;
            commands += 1;
        }
        let changed: Vec<u64> = pipeline.all().await?;
        super::stats::store_write("heartbeats", started.elapsed());
        Ok(HeartbeatRefresh {
            commands,
            updated: changed.iter().sum(),
        })
    }

    /// Up to `limit` members of shard `shard` whose deadline is at or before
    /// `now_ms`, earliest first: the devices the leader must remove (A5).
    pub async fn lapsed_heartbeats(
        &self,
        shard: u16,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<HeartbeatEntry>, RedisError> {
        let scored = self
            .zrange_by_score(
                &Keys::new(shard).heartbeats(),
                "-inf",
                &now_ms.to_string(),
                Some(limit),
            )
            .await?;
        Ok(scored
            .into_iter()
            .map(|(member, deadline_ms)| HeartbeatEntry {
                member,
                deadline_ms,
            })
            .collect())
    }

    /// Registers or extends node `node`'s lease to `deadline_ms` and stores
    /// its open socket count, atomically. Returns the previous deadline:
    /// `None` on first registration, and a deadline in the past if the
    /// lease had lapsed, in which case leaders may have removed the node's
    /// devices and the gateway must register them again (H3).
    pub async fn refresh_node(
        &self,
        node: &str,
        deadline_ms: u64,
        connections: u64,
    ) -> Result<Option<u64>, RedisError> {
        let reply = self
            .run_script(
                REFRESH_NODE,
                vec![Keys::nodes(), Keys::conns()],
                vec![
                    node.to_owned(),
                    deadline_ms.to_string(),
                    connections.to_string(),
                ],
            )
            .await?;
        match reply {
            Value::Null => Ok(None),
            other => Ok(Some(score_to_ms(other)?)),
        }
    }

    /// Nodes whose lease runs past `now_ms`, with their socket counts
    /// (X1: the cap owner sums these).
    pub async fn live_nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>, RedisError> {
        self.nodes_between(&format!("({now_ms}"), "+inf").await
    }

    /// Nodes whose lease lapsed at or before `now_ms` (H2: their devices
    /// must go).
    pub async fn lapsed_nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>, RedisError> {
        self.nodes_between("-inf", &now_ms.to_string()).await
    }

    /// How long the Redis server holding shard `shard` has been up
    /// (`INFO server`, `uptime_in_seconds`), sent to the node that owns
    /// the shard's slot on Redis Cluster. A leader that starts or takes a
    /// shard over right after a Redis restart treats the restart as an
    /// outage it did not see (H4): it holds off the heartbeat and node
    /// lease sweeps until gateways have had a refresh interval since.
    pub async fn server_uptime(&self, shard: u16) -> Result<std::time::Duration, RedisError> {
        let slot = fred::util::redis_keyslot(Keys::new(shard).lease().as_bytes());
        let command = CustomCommand::new_static("INFO", ClusterHash::Custom(slot), false);
        let info: String = self.pool()?.custom(command, vec!["server"]).await?;
        info.lines()
            .find_map(|line| line.strip_prefix("uptime_in_seconds:"))
            .and_then(|secs| secs.trim().parse().ok())
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| RedisError::protocol("INFO server has no uptime_in_seconds"))
    }

    /// Removes `node` from the registry (lease, count and the record of
    /// its counted lapse). Called by the liveness owner (shard 0's leader)
    /// for nodes lapsed long enough that every leader has removed their
    /// devices, and by a node that shuts down cleanly (a leave is not a
    /// lapse); a node that comes back simply registers again (and, holding
    /// sockets, registers its devices again).
    pub async fn forget_node(&self, node: &str) -> Result<(), RedisError> {
        let pool = self.pool()?;
        let pipeline = pool.next_connected().pipeline();
        let () = fred::prelude::SortedSetsInterface::zrem(&pipeline, Keys::nodes(), node).await?;
        let () = pipeline.hdel(Keys::conns(), node).await?;
        let () = pipeline.hdel(Keys::lapses(), node).await?;
        let _: Vec<u64> = pipeline.all().await?;
        Ok(())
    }

    async fn nodes_between(&self, min: &str, max: &str) -> Result<Vec<NodeInfo>, RedisError> {
        // The conns hash is small (one field per node): read it whole.
        let nodes_key = Keys::nodes();
        let (scored, conns) =
            tokio::try_join!(self.zrange_by_score(&nodes_key, min, max, None), async {
                let conns: HashMap<String, u64> = self.pool()?.hgetall(Keys::conns()).await?;
                Ok::<_, RedisError>(conns)
            })?;
        Ok(scored
            .into_iter()
            .map(|(node, deadline_ms)| NodeInfo {
                connections: conns.get(&node).copied().unwrap_or(0),
                node,
                deadline_ms,
            })
            .collect())
    }

    /// `ZRANGEBYSCORE key min max WITHSCORES [LIMIT 0 limit]`.
    async fn zrange_by_score(
        &self,
        key: &str,
        min: &str,
        max: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, u64)>, RedisError> {
        let mut args: Vec<String> = vec![
            key.to_owned(),
            min.to_owned(),
            max.to_owned(),
            "WITHSCORES".into(),
        ];
        if let Some(limit) = limit {
            args.extend(["LIMIT".into(), "0".into(), limit.to_string()]);
        }
        let command = CustomCommand::new_static("ZRANGEBYSCORE", ClusterHash::FirstKey, false);
        let flat: Vec<Value> = self.pool()?.custom(command, args).await?;
        if !flat.len().is_multiple_of(2) {
            return Err(RedisError::protocol(
                "ZRANGEBYSCORE WITHSCORES is not pairs",
            ));
        }
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(member), Some(score)) = (flat.next(), flat.next()) {
            let member: String = member
                .convert()
                .map_err(|e| RedisError::protocol(format!("zset member: {e}")))?;
            out.push((member, score_to_ms(score)?));
        }
        Ok(out)
    }
}

/// A zset score (ms) as Redis prints it, e.g. `"1700000000000"`.
fn score_to_ms(value: Value) -> Result<u64, RedisError> {
    let score: f64 = match value {
        Value::Double(d) => d,
        Value::Integer(i) => i as f64,
        other => other
            .as_string()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| RedisError::protocol("a zset score is not a number"))?,
    };
    if !(score.is_finite() && score >= 0.0) {
        return Err(RedisError::protocol(format!(
            "zset score {score} is not a deadline"
        )));
    }
    Ok(score as u64)
}

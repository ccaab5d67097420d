//! The console's cluster page in cluster mode: live nodes, and each
//! shard's lease holder, stream length and (for the shards this node
//! leads) stream lag, read from Redis for `GET /v1/admin/cluster`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use presence_gateway::console::cluster::{ClusterReader, ClusterView, NodeView, ShardView};
use presence_redis::{RedisClient, RedisError};

/// This node's own view of the shards it leads: for each shard, its
/// stream lag if this node holds the shard's lease, else `None`.
pub type LocalLag = Arc<dyn Fn() -> Vec<Option<u64>> + Send + Sync>;

/// How many unapplied entries are counted, at most, for a shard this node
/// does not lead: the page reloads every 3 s, and a backlog is when it is
/// read, so each read stays small.
const LAG_CAP: u64 = 1_000;

/// The cluster as this node reads it from Redis.
pub struct RedisCluster {
    pub client: RedisClient,
    pub node: String,
    pub shards: u16,
    /// `None` on gateway-only nodes, which lead no shard.
    pub local_lag: Option<LocalLag>,
}

#[async_trait::async_trait]
impl ClusterReader for RedisCluster {
    async fn read(&self) -> Result<ClusterView, String> {
        read_cluster(self).await.map_err(|e| e.to_string())
    }
}

async fn read_cluster(source: &RedisCluster) -> Result<ClusterView, RedisError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut nodes: Vec<NodeView> = source
        .client
        .live_nodes(now_ms)
        .await?
        .into_iter()
        .map(|n| NodeView {
            id: n.node,
            connections: n.connections,
            lease_deadline_ms: n.deadline_ms,
        })
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let lag = source.local_lag.as_ref().map(|f| f()).unwrap_or_default();
    let mut shards = Vec::with_capacity(usize::from(source.shards));
    for shard in 0..source.shards {
        let lease = source.client.lease_holder(shard).await?;
        let stream_length = source.client.stream_len(shard).await?;
        shards.push(ShardView {
            shard,
            epoch: lease.as_ref().map(|l| l.epoch),
            leader: lease.map(|l| l.node),
            stream_length,
            stream_lag: match lag.get(usize::from(shard)).copied().flatten() {
                Some(local) => Some(local),
                None => Some(source.client.unapplied_entries(shard, LAG_CAP).await?),
            },
        });
    }
    Ok(ClusterView {
        mode: "cluster",
        node: Some(source.node.clone()),
        nodes,
        shards,
    })
}

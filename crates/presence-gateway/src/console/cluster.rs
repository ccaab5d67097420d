//! `GET /v1/admin/cluster` (admin, read-only): the cluster as the console's
//! cluster page shows it — live nodes with their socket counts, and each
//! shard's leader (the lease holder and its epoch), event stream length
//! and, for the shards this node leads, the stream lag.
//!
//! The REST API had no such read; it lives here because only the console
//! asks for it. `presenced` adds a [`ClusterSource`] to the router as an
//! extension in cluster mode; without one the server is embedded and the
//! answer says so.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Extension;
use axum::{Json, Router, routing::get};
use presence_store::redis::RedisClient;
use serde::Serialize;

use crate::app::App;
use crate::error::ApiError;
use crate::rest::Admin;

/// This node's own view of the shards it leads: for each shard, its
/// stream lag if this node holds the shard's lease, else `None`.
pub type LocalLag = Arc<dyn Fn() -> Vec<Option<u64>> + Send + Sync>;

/// Where the cluster view is read from (cluster mode only).
#[derive(Clone)]
pub struct ClusterSource {
    pub client: RedisClient,
    pub node: String,
    pub shards: u16,
    /// `None` on gateway-only nodes, which lead no shard.
    pub local_lag: Option<LocalLag>,
}

/// The answer of `GET /v1/admin/cluster`.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    /// `embedded` (one process, no Redis) or `cluster`.
    pub mode: &'static str,
    /// The node that answered.
    pub node: Option<String>,
    /// Nodes whose lease is live, by id.
    pub nodes: Vec<NodeView>,
    /// Every shard, in order.
    pub shards: Vec<ShardView>,
}

/// One live node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub id: String,
    /// Sockets it last reported (X1).
    pub connections: u64,
    /// When its node lease lapses unless renewed (ms since the epoch).
    pub lease_deadline_ms: u64,
}

/// One shard.
#[derive(Clone, Debug, Serialize)]
pub struct ShardView {
    pub shard: u16,
    /// The node holding the shard's lease, if any.
    pub leader: Option<String>,
    pub epoch: Option<u64>,
    /// Entries in the shard's event stream (`XLEN`).
    pub stream_length: u64,
    /// Entries not yet applied by the leader; known only on the leader.
    pub stream_lag: Option<u64>,
}

/// The route; merged into the console's routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/v1/admin/cluster", get(cluster))
}

async fn cluster(
    _admin: Admin,
    source: Option<Extension<ClusterSource>>,
) -> Result<Json<ClusterView>, ApiError> {
    let Some(Extension(source)) = source else {
        return Ok(Json(ClusterView {
            mode: "embedded",
            node: None,
            nodes: Vec::new(),
            shards: Vec::new(),
        }));
    };
    read(&source).await.map(Json).map_err(|e| {
        ApiError::unavailable("backend_unavailable", format!("reading the cluster: {e}"))
    })
}

async fn read(source: &ClusterSource) -> Result<ClusterView, presence_store::redis::RedisError> {
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
            stream_lag: lag.get(usize::from(shard)).copied().flatten(),
        });
    }
    Ok(ClusterView {
        mode: "cluster",
        node: Some(source.node.clone()),
        nodes,
        shards,
    })
}

//! `GET /v1/admin/cluster` (admin, read-only): the cluster as the console's
//! cluster page shows it — live nodes with their socket counts, and each
//! shard's leader (the lease holder and its epoch), event stream length
//! and stream lag (the leader's own figure on the node that leads the
//! shard, else the entries after the stored cursor).
//!
//! The REST API had no such read; it lives here because only the console
//! asks for it. `presenced` adds a [`ClusterSource`] to the router as an
//! extension in cluster mode; without one the server is embedded and the
//! answer says so.

use std::sync::Arc;

use axum::extract::Extension;
use axum::{Json, Router, routing::get};
use serde::Serialize;

use crate::app::App;
use crate::error::ApiError;
use crate::rest::Admin;

/// Reads the cluster as [`ClusterView`] (implemented by `presenced` on
/// Redis).
#[async_trait::async_trait]
pub trait ClusterReader: Send + Sync + 'static {
    /// The cluster now, or why it cannot be read.
    async fn read(&self) -> Result<ClusterView, String>;
}

/// Where the cluster view is read from (cluster mode only).
#[derive(Clone)]
pub struct ClusterSource(pub Arc<dyn ClusterReader>);

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
    /// Entries not yet applied by the leader: the leader's own figure when
    /// this node leads the shard, else the entries after the stored
    /// cursor, counted up to 1,000 (`None`: not known).
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
    source.0.read().await.map(Json).map_err(|e| {
        ApiError::unavailable("backend_unavailable", format!("reading the cluster: {e}"))
    })
}

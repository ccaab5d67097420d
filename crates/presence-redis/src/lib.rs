//! `presence-redis`: the Redis layer of cluster mode (docs/cluster.md): the keyspace,
//! the connection, the Lua scripts, and one typed method per operation the
//! aggregator and the gateway's Redis backend need.
//!
//! How data flows through it:
//!
//! ```text
//!  gateway ── append ──────────────► presence:{s}:events ──► StreamReader::read ── leader
//!          ── refresh_heartbeats ──► presence:{s}:hb          (applies with presence-core)
//!          ── refresh_node ────────► presence:{0}:nodes/conns        │
//!                                                                    ▼
//!  gateway ◄─ RedisSubscriber::recv ◄─ presence:{s}:updates ◄── commit (fenced by the lease)
//!          ── read_views (resync) ──► presence:{s}:view:<uid>
//! ```
//!
//! - [`keys`]: [`shard_of`] and [`Keys`], the name of every key and
//!   channel; every per-shard name carries the hash tag `{s}`.
//! - [`RedisConfig`] / [`RedisClient::connect`]: URL forms (standalone,
//!   TLS, cluster seeds, Sentinel), timeouts, bounded queues, reconnect
//!   backoff; Redis Cluster is detected.
//! - The operations, one file per concept, all methods of [`RedisClient`]:
//!   leases ([`lease`](RedisClient::acquire_lease)), the fenced
//!   [`commit`](RedisClient::commit), the event stream
//!   ([`append`](RedisClient::append), [`StreamReader`]), heartbeats and
//!   node leases ([`refresh_heartbeats`](RedisClient::refresh_heartbeats),
//!   [`refresh_node`](RedisClient::refresh_node)), and shard reads
//!   ([`ensure_meta`](RedisClient::ensure_meta),
//!   [`load_shard`](RedisClient::load_shard),
//!   [`read_cluster_state`](RedisClient::read_cluster_state),
//!   [`read_views`](RedisClient::read_views)), and the stored outcomes of
//!   requests ([`read_reply_outcomes`](RedisClient::read_reply_outcomes),
//!   `replies.rs`: truthful replies).
//! - [`RedisRateLimits`] (`ratelimit.rs`): the per-user rate-limit
//!   buckets every gateway shares, decided from local views that
//!   background rounds settle with Redis.
//! - [`RedisSubscriber`]: pub/sub with lag and reconnects surfaced as
//!   [`SubscriberEvent::Resync`].
//! - [`RedisBackend`] (`backend/`, one file per concept): the gateway's [`Backend`](presence_backend::Backend)
//!   in cluster mode, built on all of the above.
//! - [`RedisError`]: transport failures have the code
//!   `backend_unavailable`.
//! - `failover.rs`: with Sentinel or Redis Cluster, a watcher follows the
//!   primary through failovers and publishes the *primary generation*
//!   ([`RedisClient::primary_generation`]); leaders write only under the
//!   generation they loaded ([`RedisClient::on_primary`]); appends wait for
//!   replicas ([`RedisClient::replica_acks`]) so an acknowledged change
//!   survives a failover (R1).
//!
//! Scripts live in `lua/*.lua`, loaded with `SCRIPT LOAD` at connect and
//! called with `EVALSHA` (reloaded once on `NOSCRIPT`).

#![forbid(unsafe_code)]

pub mod backend;
mod client;
mod commit;
mod error;
mod failover;
mod heartbeats;
pub mod keys;
mod lease;
mod ratelimit;
mod replies;
mod scripts;
mod shard_reads;
mod stats;
mod stream;
mod subscriber;
mod url;

pub use backend::{RedisBackend, RedisBackendConfig, ReplyStats};
pub use client::{Backoff, RedisClient, RedisConfig};
pub use commit::{CommitBatch, CommitOp, CommitOutcome};
pub use error::RedisError;
pub use failover::{FAILOVER_HOLD_LIMIT, PRIMARY_CHECK_INTERVAL};
pub use heartbeats::{HEARTBEAT_CHUNK, HeartbeatEntry, HeartbeatRefresh, NodeInfo};
pub use keys::{Keys, heartbeat_member, parse_heartbeat_member, shard_of};
pub use lease::{Lease, lease_value};
pub use ratelimit::{RateLimitStats, RedisRateLimits, SHARED_LIMIT_WAIT, VIEW_TTL};
pub use shard_reads::{ClusterSnapshot, LOAD_CHUNK, ShardSnapshot, StoredUser};
pub use stats::{
    ERROR_KINDS, LATENCY_BOUNDS, RedisStats, RedisStatsSnapshot, StoreWriteKind,
    StoreWriteObserver, observe_store_writes, redis_stats,
};
pub use stream::{StreamEntry, StreamId, StreamReader};
pub use subscriber::{RedisSubscriber, ResyncReason, SubscriberEvent};
pub use url::{DEFAULT_PORT, DEFAULT_SENTINEL_PORT, HostPort, RedisEndpoint, Topology};

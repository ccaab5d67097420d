//! `presence-aggregator`: the pure heart of a cluster shard leader.
//!
//! In cluster mode (DESIGN §2, `docs/cluster.md`) each shard of users has
//! one aggregator leader. Gateways append commands to the shard's Redis
//! stream; the leader applies them with `presence-engine` (the same
//! per-shard state machine the embedded backend drives) and commits what
//! changed in one fenced script. This crate is everything in between that
//! does not touch Redis or a runtime:
//!
//! - [`ShardState`] (`shard.rs`): a shard's [`presence_engine::Engine`]
//!   (users, devices, socket owners, node index, timers, counts, and on
//!   shard 0 the cap, [`CapOwner`]) plus what only a leader has: the
//!   stream cursor, loading from Redis, answers to requests and their
//!   retries. Stream entries, time, lapsed heartbeats, dead nodes,
//!   settings and custom status changes go in; [`ShardChanges`] come out.
//! - `commands.rs`: the stream's user, admin and shard-wide commands
//!   applied to the engine, each kind by its own handler.
//! - [`ShardChanges`] (`changes.rs`): the engine's changes in Redis shapes,
//!   the final values to write (user documents, devices, heartbeat
//!   members, views, cursor, cluster-wide state) and the messages to
//!   publish (updates, replies, control).
//!
//! Those are deterministic given `now`, so they are tested without Redis,
//! clocks or sleeps. The async runner drives them against Redis:
//!
//! - [`Aggregator::start`] (`runner.rs`): competes for every shard's lease
//!   and runs a leader for each shard it holds; [`AggregatorHandle`] stops
//!   it and exposes [`AggregatorStats`] (`stats.rs`).
//! - `leader.rs`: one held shard — takeover, stream loop, timers, sweeps,
//!   trim, lease renewal with a monotonic validity deadline.
//! - `redis_codec.rs`: [`ShardChanges`] → fenced `CommitBatch`es (which also
//!   store each reply's outcome, `presence:{s}:reply:<id>`), and stored
//!   JSON → [`ShardLoad`].
//! - `retries.rs`: before a batch, the stored outcomes of the entries that
//!   are retries, so a request appended twice is applied once.
//! - `membership.rs` and `assignment.rs`: H5, the live aggregator nodes
//!   and the even spread of the shards over them that every node computes
//!   alike ([`target_leaders`]); leaders hand off shards assigned
//!   elsewhere, and a clean shutdown hands off every shard.
//! - `holdoff.rs`: H4, no heartbeat or node lease sweep until gateways
//!   have had a refresh interval of connectivity after Redis was
//!   unreachable or restarted.
//!
//! # Driving a shard (what the runner does)
//!
//! 1. **Takeover.** With the lease held, read `presence:{s}:cursor`, the
//!    user ids of `presence:{s}:users` and, per user, the document,
//!    devices, view and self view; the settings and custom statuses; on
//!    shard 0 `presence:cap`. Call [`ShardState::load`] and commit its
//!    changes. Then sweep once (step 3) before reading the stream from
//!    the cursor.
//! 2. **Stream.** Read entries after the cursor (`XREAD` with a block
//!    timeout no later than [`ShardState::next_deadline`]), decode each
//!    with `StreamEntry::from_fields`, hand the stored outcomes of the
//!    retries among them to [`ShardState::remember_outcomes`] and call
//!    [`ShardState::apply_raw_batch`]; commit.
//! 3. **Sweeps**, every few seconds (the expiries only once the H4
//!    hold-off after a Redis outage is over): `ZRANGEBYSCORE presence:{s}:hb -inf
//!    <now>` → [`ShardState::expire_heartbeats`]; the live nodes of
//!    `presence:nodes` → [`ShardState::expire_nodes_not_in`]; on shard 0
//!    the live nodes' counts of `presence:conns` →
//!    [`ShardState::observe_connections`]. Commit each (or
//!    [`ShardChanges::merge`] them into one commit).
//! 4. **Timers.** When `now` reaches [`ShardState::next_deadline`], call
//!    [`ShardState::advance`]; commit.
//! 5. **Shard 0's announcements** (other shards): on `presence:control`
//!    `settings_changed` → [`ShardState::reevaluate`],
//!    `custom_statuses_changed` → [`ShardState::custom_status_changed`] /
//!    [`ShardState::custom_status_deleted`]; and, because pub/sub loses
//!    messages, re-read both keys now and then and call `reevaluate` /
//!    [`ShardState::sync_custom_statuses`] (both are no-ops when nothing
//!    differs).
//!
//! **Commit** = one fenced script per [`ShardChanges`] (skip it when
//! [`ShardChanges::is_empty`]): per user `SADD users` if `new_user`, `SET`
//! the document, `HSET`/`HDEL` devices, `ZADD`/`ZREM` heartbeat members,
//! `SET` view and self view; the cursor; shard 0's cluster-wide keys;
//! then `PUBLISH` [`ShardChanges::update_messages`], the replies and the
//! control messages. **Architecture Invariant:** a [`ShardState`] is only
//! valid while its changes reach Redis in order. If a commit is fenced or
//! its outcome unknown (timeout, connection lost), drop the `ShardState`
//! and take over again from Redis; never retry a later batch on top of a
//! lost one.
#![forbid(unsafe_code)]

mod assignment;
mod changes;
mod commands;
mod holdoff;
mod leader;
mod membership;
mod redis_codec;
mod retries;
mod runner;
mod shard;
mod stats;

pub use assignment::target_leaders;
pub use changes::{ClusterChanges, ShardChanges, UserChange};
pub use presence_engine::CapOwner;
pub use redis_codec::commit_batches;
pub use runner::{Aggregator, AggregatorConfig, AggregatorHandle};
pub use shard::{LoadedUser, ShardConfig, ShardLoad, ShardState};
pub use stats::{AggregatorStats, StatsSnapshot};

#[cfg(test)]
mod tests {
    /// The async runner keeps a shard in a task and moves changes to the
    /// commit path.
    #[test]
    fn shard_state_and_changes_are_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<crate::ShardState>();
        assert_send::<crate::ShardChanges>();
        assert_send::<crate::CapOwner>();
    }
}

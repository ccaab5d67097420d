//! Shard leases: at most one aggregator leader per shard at a time.
//!
//! The lease is `presence:{s}:lease = "<node>:<epoch>"` with a TTL; the
//! epoch comes from `INCR presence:{s}:epoch`, so it strictly increases
//! with every acquisition and a deposed leader's value never matches again
//! (even when the same node wins the shard back). Every write of a leader
//! is fenced by the whole value ([`RedisClient::commit`]).
//!
//! The caller's side of the protocol (docs/cluster.md): renew every
//! `ttl / 3`; keep `valid_until = (instant the renew was *sent*) + ttl -
//! margin`; past `valid_until`, stop committing and drop the shard even
//! without having heard that the lease is gone.

use std::fmt;
use std::time::Duration;

use fred::prelude::ClientLike;
use fred::types::{ClusterHash, CustomCommand};

use super::client::RedisClient;
use super::error::RedisError;
use super::keys::Keys;
use super::scripts::{ACQUIRE_LEASE, RELEASE_LEASE, RENEW_LEASE};

/// A held lease: the value stored in `presence:{s}:lease` is
/// `"<node>:<epoch>"` ([`Lease::value`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    pub node: String,
    pub epoch: u64,
}

impl Lease {
    pub fn new(node: impl Into<String>, epoch: u64) -> Lease {
        Lease {
            node: node.into(),
            epoch,
        }
    }

    /// The stored value, which the commit script compares whole.
    pub fn value(&self) -> String {
        lease_value(&self.node, self.epoch)
    }

    /// Parses a stored value; the epoch follows the *last* `:`, so node
    /// ids may contain colons.
    pub fn parse(value: &str) -> Option<Lease> {
        let (node, epoch) = value.rsplit_once(':')?;
        Some(Lease::new(node, epoch.parse().ok()?))
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.epoch)
    }
}

/// `"<node>:<epoch>"`, the lease value of `node` at `epoch`.
pub fn lease_value(node: &str, epoch: u64) -> String {
    format!("{node}:{epoch}")
}

impl RedisClient {
    /// Takes shard `shard`'s lease for `ttl` if nobody holds it; returns the
    /// new epoch, or `None` if it is held (by anyone, this node included).
    pub async fn acquire_lease(
        &self,
        shard: u16,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, RedisError> {
        check_node(node)?;
        let keys = Keys::new(shard);
        let reply = self
            .run_script(
                ACQUIRE_LEASE,
                vec![keys.lease(), keys.epoch()],
                vec![node.to_owned(), ttl_ms(ttl)?],
            )
            .await?;
        reply
            .convert::<Option<u64>>()
            .map_err(|e| RedisError::protocol(format!("acquire_lease answered {e}")))
    }

    /// Extends the lease to `ttl` from now if it still is `node:epoch`;
    /// `false` if it expired or another epoch holds it (the caller is
    /// deposed and must drop the shard).
    pub async fn renew_lease(
        &self,
        shard: u16,
        node: &str,
        epoch: u64,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let keys = Keys::new(shard);
        let reply = self
            .run_script(
                RENEW_LEASE,
                vec![keys.lease()],
                vec![lease_value(node, epoch), ttl_ms(ttl)?],
            )
            .await?;
        flag(reply, "renew_lease")
    }

    /// Gives the lease up (clean shutdown) so another node takes the shard
    /// at once instead of after the TTL; `false` if it was no longer ours.
    pub async fn release_lease(
        &self,
        shard: u16,
        node: &str,
        epoch: u64,
    ) -> Result<bool, RedisError> {
        let keys = Keys::new(shard);
        let reply = self
            .run_script(
                RELEASE_LEASE,
                vec![keys.lease()],
                vec![lease_value(node, epoch)],
            )
            .await?;
        flag(reply, "release_lease")
    }

    /// Who holds shard `shard`'s lease now (for diagnostics and tests).
    pub async fn lease_holder(&self, shard: u16) -> Result<Option<Lease>, RedisError> {
        use fred::prelude::KeysInterface;
        let value: Option<String> = self.pool()?.get(Keys::new(shard).lease()).await?;
        Ok(value.as_deref().and_then(Lease::parse))
    }
}

/// Aggregator membership (H5): every node that runs the aggregator role
/// keeps a deadline in `presence:{0}:aggregators`; the members whose
/// deadline is in the future decide the target spread of the shards.
impl RedisClient {
    /// Registers or extends aggregator node `node`'s membership to
    /// `deadline_ms` (wall-clock ms).
    pub async fn join_aggregators(&self, node: &str, deadline_ms: u64) -> Result<(), RedisError> {
        use fred::prelude::SortedSetsInterface;
        check_node(node)?;
        let () = self
            .pool()?
            .zadd(
                Keys::aggregators(),
                None,
                None,
                false,
                false,
                (deadline_ms as f64, node),
            )
            .await?;
        Ok(())
    }

    /// Removes `node` from the aggregator membership at once (a planned
    /// leave: the other nodes take its shards without waiting for its
    /// deadline to pass).
    pub async fn leave_aggregators(&self, node: &str) -> Result<(), RedisError> {
        use fred::prelude::SortedSetsInterface;
        let () = self.pool()?.zrem(Keys::aggregators(), node).await?;
        Ok(())
    }

    /// The aggregator nodes whose membership runs past `now_ms`, sorted.
    pub async fn live_aggregators(&self, now_ms: u64) -> Result<Vec<String>, RedisError> {
        let args = vec![Keys::aggregators(), format!("({now_ms}"), "+inf".to_owned()];
        let command = CustomCommand::new_static("ZRANGEBYSCORE", ClusterHash::FirstKey, false);
        let mut nodes: Vec<String> = self.pool()?.custom(command, args).await?;
        nodes.sort_unstable();
        Ok(nodes)
    }

    /// Removes the aggregator members whose deadline passed before
    /// `before_ms` (nodes gone for good); returns how many.
    pub async fn forget_lapsed_aggregators(&self, before_ms: u64) -> Result<u64, RedisError> {
        let args = vec![
            Keys::aggregators(),
            "-inf".to_owned(),
            format!("({before_ms}"),
        ];
        let command = CustomCommand::new_static("ZREMRANGEBYSCORE", ClusterHash::FirstKey, false);
        let removed: u64 = self.pool()?.custom(command, args).await?;
        Ok(removed)
    }

    /// The holder of every shard's lease, `0..shards`, read at once (one
    /// `GET` per shard, concurrently: the keys live in different slots).
    /// The distinct shards led are the `Some`s.
    pub async fn lease_holders(&self, shards: u16) -> Result<Vec<Option<Lease>>, RedisError> {
        let reads = (0..shards).map(|shard| self.lease_holder(shard));
        futures_util::future::try_join_all(reads).await
    }

    /// The node lease deadlines whose lapse was already counted
    /// (`presence:{0}:lapses`, node → deadline ms).
    pub async fn counted_lapses(
        &self,
    ) -> Result<std::collections::HashMap<String, u64>, RedisError> {
        use fred::prelude::HashesInterface;
        let counted: std::collections::HashMap<String, u64> =
            self.pool()?.hgetall(Keys::lapses()).await?;
        Ok(counted)
    }

    /// Records that the lapse of `node`'s lease with deadline
    /// `deadline_ms` was counted.
    pub async fn record_lapse(&self, node: &str, deadline_ms: u64) -> Result<(), RedisError> {
        use fred::prelude::HashesInterface;
        let () = self
            .pool()?
            .hset(Keys::lapses(), (node, deadline_ms.to_string()))
            .await?;
        Ok(())
    }
}

fn check_node(node: &str) -> Result<(), RedisError> {
    if node.is_empty() || node.chars().any(char::is_control) {
        return Err(RedisError::Config(format!(
            "node id {node:?} must be non-empty and free of control characters"
        )));
    }
    Ok(())
}

fn ttl_ms(ttl: Duration) -> Result<String, RedisError> {
    let ms = ttl.as_millis();
    if ms == 0 {
        return Err(RedisError::Config(
            "a lease ttl must be at least 1 ms".into(),
        ));
    }
    Ok(ms.to_string())
}

/// A script's `1`/`0` answer.
pub(crate) fn flag(reply: fred::prelude::Value, script: &str) -> Result<bool, RedisError> {
    match reply.convert::<i64>() {
        Ok(1) => Ok(true),
        Ok(0) => Ok(false),
        other => Err(RedisError::protocol(format!("{script} answered {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_round_trip_with_colons_in_node_ids() {
        let cases = [("node-a", 1), ("host:8080:abc", 42), ("n", u64::MAX)];
        for (node, epoch) in cases {
            let lease = Lease::new(node, epoch);
            assert_eq!(lease.value(), format!("{node}:{epoch}"));
            assert_eq!(lease.to_string(), lease.value());
            assert_eq!(Lease::parse(&lease.value()), Some(lease));
        }
        assert_eq!(Lease::parse("no-epoch"), None);
        assert_eq!(Lease::parse("node:x"), None);
    }
}

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

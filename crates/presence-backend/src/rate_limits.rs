//! Per-user rate limits that every gateway of a deployment shares: the
//! narrow trait the gateway charges status changes to when the backend is
//! a cluster ([`SharedRateLimits`]), kept apart from [`Backend`](crate::Backend) so
//! that rate limiting is not a backend concern.
//!
//! One process (embedded mode) has no shared buckets at all: the gateway's
//! own limiter is exact there. In cluster mode a user's sockets and REST
//! calls may land on several gateways, so the budget must be the same on
//! all of them; `presence_redis::RedisRateLimits` keeps it in Redis and
//! answers from a local view of it, settled in the background (its module
//! says how close to exact that is).

use std::time::Duration;

use async_trait::async_trait;

/// The shape of one shared bucket: `capacity` tokens, one earned back
/// every `interval` (a generic cell rate algorithm bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketRate {
    /// Tokens in a full bucket (at least 1).
    pub capacity: u32,
    /// Time to earn back one token (more than zero).
    pub interval: Duration,
}

/// Per-user token buckets shared by every gateway of a cluster.
#[async_trait]
pub trait SharedRateLimits: Send + Sync + 'static {
    /// Takes one token from `user`'s bucket named `bucket` (one bucket per
    /// name and user across the deployment): `Ok(())` if taken, or how
    /// long to wait for one. Always answers, and soon: an implementation
    /// that cannot reach its shared store decides from what it knows.
    async fn take(
        &self,
        bucket: &'static str,
        user: &str,
        rate: BucketRate,
    ) -> Result<(), Duration>;
}

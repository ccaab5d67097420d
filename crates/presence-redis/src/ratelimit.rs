//! Per-user rate limits shared by every gateway of a cluster.
//!
//! A user's sockets and REST calls may land on different gateways, so a
//! per-user budget kept in each gateway's memory would multiply by the
//! number of nodes. The bucket lives in Redis instead, in the user's shard
//! slot, as one number: the instant it is full again (the generic cell rate
//! algorithm, on Redis's clock so gateways' clocks do not matter). Taking
//! a token is one `EVALSHA`; a full bucket's key has expired, so idle users
//! cost nothing.

use std::time::Duration;

use super::client::RedisClient;
use super::error::RedisError;
use super::keys::{Keys, shard_of};
use super::scripts::TAKE_TOKEN;

impl RedisClient {
    /// Takes one token from `user`'s bucket `bucket` (`capacity` tokens,
    /// one earned back every `interval`): `None` if taken, or how long to
    /// wait for one.
    pub async fn take_token(
        &self,
        shards: u16,
        bucket: &str,
        user: &str,
        capacity: u32,
        interval: Duration,
    ) -> Result<Option<Duration>, RedisError> {
        let keys = Keys::new(shard_of(user, shards));
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let reply = self
            .run_script(
                TAKE_TOKEN,
                vec![keys.rate(bucket, user)],
                vec![interval_us.to_string(), capacity.max(1).to_string()],
            )
            .await?;
        let wait_us: u64 = reply
            .convert()
            .map_err(|e| RedisError::protocol(format!("take_token answered {e}")))?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us)))
    }
}

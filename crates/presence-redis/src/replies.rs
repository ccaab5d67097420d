//! Stored outcomes of requests (truthful replies, `docs/cluster.md`).
//!
//! A leader's fenced commit stores the answer to every stream entry that
//! carried a reply id under `presence:{s}:reply:<id>` (see
//! [`Keys::reply`]), in the same script as the change it answers. Two
//! readers need them back:
//!
//! - a gateway whose pub/sub answer may have been lost (its subscriber
//!   reconnected, or the answer is late) reads the outcomes of its
//!   pending requests, one `MGET` per shard, and answers from them;
//! - a leader about to apply an entry the gateway appended again (a
//!   retry after an ambiguous `XADD`) reads the outcome of its id and
//!   answers with it instead of applying the command twice.
//!
//! Every key of one call is in one shard's slot, so the `MGET` works on
//! Redis Cluster too.

use fred::prelude::KeysInterface;

use super::client::RedisClient;
use super::error::RedisError;
use super::keys::Keys;
use super::shard_reads::LOAD_CHUNK;

impl RedisClient {
    /// The stored outcomes (JSON `CommandResult`) of reply ids `ids` of
    /// shard `shard`, in order; `None` where no leader committed an answer
    /// yet (or it expired).
    pub async fn read_reply_outcomes<S: AsRef<str>>(
        &self,
        shard: u16,
        ids: &[S],
    ) -> Result<Vec<Option<String>>, RedisError> {
        let keys = Keys::new(shard);
        let mut outcomes = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LOAD_CHUNK) {
            let names: Vec<String> = chunk.iter().map(|id| keys.reply(id.as_ref())).collect();
            let values: Vec<Option<String>> = if names.len() == 1 {
                // `MGET` with one key answers a bare value, not an array.
                let value: Option<String> = self.pool()?.get(&names[0]).await?;
                vec![value]
            } else {
                self.pool()?.mget(names).await?
            };
            outcomes.extend(values);
        }
        Ok(outcomes)
    }
}

//! The runner's half of "a retried request is applied once": before a
//! batch is applied, read the stored outcomes (`presence:{s}:reply:<id>`)
//! of the entries that are retries, and hand them to the
//! [`ShardState`](crate::ShardState), which answers those with them
//! instead of applying them again.
//!
//! Only retries are looked up: a first append carries a reply id no
//! leader has seen (ids are unique per node, process and request), so the
//! ordinary path costs no extra round trip.

use presence_protocol::cluster::{CommandResult, EntryError, StreamEntry, StreamId};
use presence_store::redis::{RedisClient, RedisError};

/// The stored outcome of every retry in `entries` that has one.
pub(crate) async fn stored_outcomes_of_retries(
    client: &RedisClient,
    shard: u16,
    entries: &[(StreamId, Result<StreamEntry, EntryError>)],
) -> Result<Vec<(String, CommandResult)>, RedisError> {
    let ids: Vec<&str> = entries
        .iter()
        .filter_map(|(_, entry)| match entry {
            Ok(StreamEntry {
                retry: true,
                reply: Some(r),
                ..
            }) => Some(r.as_str()),
            _ => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let stored = client.read_reply_outcomes(shard, &ids).await?;
    Ok(ids
        .into_iter()
        .zip(stored)
        .filter_map(|(id, json)| {
            let json = json?;
            match serde_json::from_str(&json) {
                Ok(result) => Some((id.to_owned(), result)),
                Err(error) => {
                    tracing::warn!(shard, reply = id, %error, "a stored outcome does not decode");
                    None
                }
            }
        })
        .collect())
}

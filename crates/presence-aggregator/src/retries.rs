//! The runner's half of "a retried request is applied once": before a
//! batch is applied, read the stored outcomes (`presence:{s}:reply:<id>`)
//! of the entries that may have been applied before, and hand them to the
//! [`ShardState`](crate::ShardState), which answers those with them
//! instead of applying them again.
//!
//! Which entries are looked up:
//! - every retry: its first append may have been applied by this or an
//!   earlier leader;
//! - every first append, for [`FIRST_APPEND_LOOKUP`] after a takeover: a
//!   first append that Redis ran late (its `XADD` timed out in the
//!   gateway, which retried) can arrive after its retry was applied. The
//!   leader that applied the retry remembers that in memory; a leader that
//!   took over since does not, and finds the retry's outcome in Redis
//!   instead. Outcomes live [`REPLY_OUTCOME_TTL_MS`], so after that long a
//!   late first append has nothing left to find, and the ordinary path
//!   costs no extra round trip again.

use std::time::Duration;

use presence_protocol::cluster::{
    CommandResult, EntryError, REPLY_OUTCOME_TTL_MS, StreamEntry, StreamId,
};
use presence_redis::{RedisClient, RedisError};

/// How long after a takeover first appends are looked up too: as long as
/// Redis keeps an outcome.
pub(crate) const FIRST_APPEND_LOOKUP: Duration = Duration::from_millis(REPLY_OUTCOME_TTL_MS);

/// The reply ids in `entries` whose earlier outcome must be looked up:
/// every retry's, and with `first_appends` every other entry's too.
pub(crate) fn ids_to_look_up(
    entries: &[(StreamId, Result<StreamEntry, EntryError>)],
    first_appends: bool,
) -> Vec<&str> {
    entries
        .iter()
        .filter_map(|(_, entry)| match entry {
            Ok(StreamEntry {
                retry,
                reply: Some(r),
                ..
            }) if *retry || first_appends => Some(r.as_str()),
            _ => None,
        })
        .collect()
}

/// The stored outcome of every entry of `entries` that
/// [`ids_to_look_up`] names and that has one.
pub(crate) async fn stored_outcomes(
    client: &RedisClient,
    shard: u16,
    entries: &[(StreamId, Result<StreamEntry, EntryError>)],
    first_appends: bool,
) -> Result<Vec<(String, CommandResult)>, RedisError> {
    let ids = ids_to_look_up(entries, first_appends);
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

#[cfg(test)]
mod tests {
    use presence_protocol::cluster::{ClusterCommand, StreamEntry, StreamId, UserCommand};

    use super::ids_to_look_up;

    fn entry(
        reply: Option<&str>,
        retry: bool,
    ) -> (StreamId, Result<StreamEntry, super::EntryError>) {
        let entry = StreamEntry {
            user: "alice".into(),
            command: ClusterCommand::User(UserCommand::UseCustomStatus {
                id: presence_core::CustomStatusId::try_from("x").unwrap(),
            }),
            node: "gw-1".into(),
            reply: reply.map(str::to_owned),
            retry,
            profile: None,
        };
        (StreamId::new(1, 0), Ok(entry))
    }

    /// R1: retries always; first appends only in the window after a
    /// takeover; entries nobody waits for never.
    #[test]
    fn r1_which_entries_are_looked_up() {
        let entries = [
            entry(Some("a"), false),
            entry(Some("b"), true),
            entry(None, false),
        ];
        assert_eq!(ids_to_look_up(&entries, false), ["b"]);
        assert_eq!(ids_to_look_up(&entries, true), ["a", "b"]);
    }
}

//! The fenced commit: how a shard leader writes.
//!
//! A leader collects what changed after applying a batch of stream entries
//! in a [`CommitBatch`] (user documents, device hashes, views, the shard's
//! user set, heartbeat members, the new stream cursor, and the messages to
//! publish) and sends it as *one* script call. The script compares the
//! shard's lease with the value the leader holds, the whole
//! `"<node>:<epoch>"` string, and writes and publishes nothing unless they
//! are equal (H2, docs/cluster.md "Commit").
//!
//! **Architecture Invariant:** a deposed leader cannot change anything:
//! the check and the writes are one atomic script, so there is no moment
//! between "the lease is mine" and "written" for another node to take it.
//!
//! **Architecture Invariant:** a commit is all or nothing: the script
//! validates every operation (key types included) before the first write,
//! because Redis does not undo a script's writes when a later command of
//! the script fails.

use super::client::RedisClient;
use super::error::RedisError;
use super::keys::{Keys, shard_of_key};
use super::lease::flag;
use super::scripts::COMMIT;
use super::stream::StreamId;

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Every write was applied and every message published.
    Committed,
    /// The lease is gone or holds another value: nothing was written or
    /// published. The caller is no longer the leader and must drop the
    /// shard (and count `presence_fenced_writes_rejected_total`).
    Fenced,
}

/// One write (or publish) of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOp {
    /// `SET key value` (replaces any value, of any type).
    Set { key: String, value: String },
    /// `SET key value PX ttl_ms`: a value that expires (a reply's stored
    /// outcome).
    SetExpiring {
        key: String,
        value: String,
        ttl_ms: u64,
    },
    /// `DEL key`.
    Delete { key: String },
    /// `HSET key field value`.
    HashSet {
        key: String,
        field: String,
        value: String,
    },
    /// `HDEL key field`.
    HashDelete { key: String, field: String },
    /// `SADD key member`.
    SetAdd { key: String, member: String },
    /// `SREM key member`.
    SetRemove { key: String, member: String },
    /// `ZADD key score member` (scores are ms deadlines).
    ZsetAdd {
        key: String,
        score: u64,
        member: String,
    },
    /// `ZREM key member`.
    ZsetRemove { key: String, member: String },
    /// `PUBLISH channel message` (`SPUBLISH` on Redis Cluster), after the
    /// writes of the same commit are visible.
    Publish { channel: String, message: String },
}

impl CommitOp {
    /// The key (or channel) the operation names.
    pub fn key(&self) -> &str {
        match self {
            CommitOp::Set { key, .. }
            | CommitOp::SetExpiring { key, .. }
            | CommitOp::Delete { key }
            | CommitOp::HashSet { key, .. }
            | CommitOp::HashDelete { key, .. }
            | CommitOp::SetAdd { key, .. }
            | CommitOp::SetRemove { key, .. }
            | CommitOp::ZsetAdd { key, .. }
            | CommitOp::ZsetRemove { key, .. } => key,
            CommitOp::Publish { channel, .. } => channel,
        }
    }
}

/// The writes and publishes of one commit, applied in the order they were
/// added, then the cursor. Every key must be in the committing shard (use
/// [`Keys`]); [`RedisClient::commit`] refuses the batch otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitBatch {
    ops: Vec<CommitOp>,
    cursor: Option<StreamId>,
}

impl CommitBatch {
    pub fn new() -> CommitBatch {
        CommitBatch::default()
    }

    /// `SET key value`.
    pub fn set_string(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.push(CommitOp::Set {
            key: key.into(),
            value: value.into(),
        })
    }

    /// `SET key value PX ttl_ms` (`ttl_ms` at least 1).
    pub fn set_expiring(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        ttl_ms: u64,
    ) -> &mut Self {
        self.push(CommitOp::SetExpiring {
            key: key.into(),
            value: value.into(),
            ttl_ms: ttl_ms.max(1),
        })
    }

    /// `DEL key`.
    pub fn delete_key(&mut self, key: impl Into<String>) -> &mut Self {
        self.push(CommitOp::Delete { key: key.into() })
    }

    /// `HSET key field value`.
    pub fn hash_set(
        &mut self,
        key: impl Into<String>,
        field: impl Into<String>,
        value: impl Into<String>,
    ) -> &mut Self {
        self.push(CommitOp::HashSet {
            key: key.into(),
            field: field.into(),
            value: value.into(),
        })
    }

    /// `HDEL key field`.
    pub fn hash_delete(&mut self, key: impl Into<String>, field: impl Into<String>) -> &mut Self {
        self.push(CommitOp::HashDelete {
            key: key.into(),
            field: field.into(),
        })
    }

    /// `SADD key member`.
    pub fn set_add(&mut self, key: impl Into<String>, member: impl Into<String>) -> &mut Self {
        self.push(CommitOp::SetAdd {
            key: key.into(),
            member: member.into(),
        })
    }

    /// `SREM key member`.
    pub fn set_remove(&mut self, key: impl Into<String>, member: impl Into<String>) -> &mut Self {
        self.push(CommitOp::SetRemove {
            key: key.into(),
            member: member.into(),
        })
    }

    /// `ZADD key score member`.
    pub fn zset_add(
        &mut self,
        key: impl Into<String>,
        score: u64,
        member: impl Into<String>,
    ) -> &mut Self {
        self.push(CommitOp::ZsetAdd {
            key: key.into(),
            score,
            member: member.into(),
        })
    }

    /// `ZREM key member`.
    pub fn zset_remove(&mut self, key: impl Into<String>, member: impl Into<String>) -> &mut Self {
        self.push(CommitOp::ZsetRemove {
            key: key.into(),
            member: member.into(),
        })
    }

    /// Publishes `message` on `channel` (e.g. [`Keys::updates_channel`]).
    pub fn publish(&mut self, channel: impl Into<String>, message: impl Into<String>) -> &mut Self {
        self.push(CommitOp::Publish {
            channel: channel.into(),
            message: message.into(),
        })
    }

    /// Stores `id` as the shard's stream cursor (`presence:{s}:cursor`),
    /// the last entry this commit covers.
    pub fn cursor(&mut self, id: StreamId) -> &mut Self {
        self.cursor = Some(id);
        self
    }

    pub fn ops(&self) -> &[CommitOp] {
        &self.ops
    }

    pub fn new_cursor(&self) -> Option<StreamId> {
        self.cursor
    }

    /// Whether the batch writes nothing (a commit of it still checks the
    /// lease).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.cursor.is_none()
    }

    fn push(&mut self, op: CommitOp) -> &mut Self {
        self.ops.push(op);
        self
    }
}

impl RedisClient {
    /// Applies `batch` to shard `shard` if its lease still holds exactly
    /// `lease_value` (`"<node>:<epoch>"`, see
    /// [`Lease::value`](super::Lease::value)): one script call, atomic, all
    /// or nothing.
    ///
    /// Errors: [`RedisError::CrossShard`] (before sending anything) if a key
    /// is outside the shard; [`RedisError::Server`] if an operation cannot
    /// apply (e.g. a key of the wrong type), in which case nothing was
    /// written; transport errors as usual (the outcome is then unknown:
    /// the leader re-reads or gives the shard up).
    pub async fn commit(
        &self,
        shard: u16,
        lease_value: &str,
        batch: &CommitBatch,
    ) -> Result<CommitOutcome, RedisError> {
        let keys = Keys::new(shard);
        let publish = if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let (script_keys, args) = encode(&keys, lease_value, publish, batch)?;
        let reply = self.run_script(COMMIT, script_keys, args).await?;
        Ok(if flag(reply, "commit")? {
            CommitOutcome::Committed
        } else {
            CommitOutcome::Fenced
        })
    }
}

/// The script's `KEYS` (lease first, then every distinct key in order of
/// first use) and `ARGV` (lease value, publish command, operations).
fn encode(
    keys: &Keys,
    lease_value: &str,
    publish: &str,
    batch: &CommitBatch,
) -> Result<(Vec<String>, Vec<String>), RedisError> {
    let mut script_keys = vec![keys.lease()];
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    index.insert(keys.lease(), 1);
    let mut args = Vec::with_capacity(2 + batch.ops.len() * 4 + 3);
    args.push(lease_value.to_owned());
    args.push(publish.to_owned());

    let mut key_index = |key: &str| -> Result<String, RedisError> {
        if shard_of_key(key) != Some(keys.shard()) {
            return Err(RedisError::CrossShard {
                key: key.to_owned(),
                shard: keys.shard(),
            });
        }
        let next = script_keys.len() + 1;
        let i = *index.entry(key.to_owned()).or_insert_with(|| {
            script_keys.push(key.to_owned());
            next
        });
        Ok(i.to_string())
    };

    // Consecutive `SET`s (views, own views and documents of a batch's
    // users) go as one `mset`: one Redis command instead of one each.
    let mut sets: Vec<(String, &str)> = Vec::new();
    for op in &batch.ops {
        let k = key_index(op.key())?;
        if !matches!(op, CommitOp::Set { .. }) {
            flush_sets(&mut args, &mut sets);
        }
        match op {
            CommitOp::Set { value, .. } => sets.push((k, value)),
            CommitOp::SetExpiring { value, ttl_ms, .. } => {
                args.extend(["setpx".into(), k, value.clone(), ttl_ms.to_string()])
            }
            CommitOp::Delete { .. } => args.extend(["del".into(), k]),
            CommitOp::HashSet { field, value, .. } => {
                args.extend(["hset".into(), k, field.clone(), value.clone()])
            }
            CommitOp::HashDelete { field, .. } => args.extend(["hdel".into(), k, field.clone()]),
            CommitOp::SetAdd { member, .. } => args.extend(["sadd".into(), k, member.clone()]),
            CommitOp::SetRemove { member, .. } => args.extend(["srem".into(), k, member.clone()]),
            CommitOp::ZsetAdd { score, member, .. } => {
                args.extend(["zadd".into(), k, score.to_string(), member.clone()])
            }
            CommitOp::ZsetRemove { member, .. } => args.extend(["zrem".into(), k, member.clone()]),
            CommitOp::Publish { message, .. } => args.extend(["pub".into(), k, message.clone()]),
        }
    }
    let cursor = batch.cursor.map(|c| c.to_string());
    if let Some(cursor) = &cursor {
        let k = key_index(&keys.cursor())?;
        sets.push((k, cursor));
    }
    flush_sets(&mut args, &mut sets);
    Ok((script_keys, args))
}

/// Appends the pending `SET`s as one `set`, or several as one `mset`.
fn flush_sets(args: &mut Vec<String>, sets: &mut Vec<(String, &str)>) {
    match sets.len() {
        0 => {}
        1 => {
            let (k, value) = sets.pop().expect("one set");
            args.extend(["set".into(), k, value.to_owned()]);
        }
        n => {
            args.reserve(2 + 2 * n);
            args.extend(["mset".into(), n.to_string()]);
            for (k, value) in sets.drain(..) {
                args.extend([k, value.to_owned()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_names_each_key_once_and_lease_first() {
        let keys = Keys::new(2);
        let mut batch = CommitBatch::new();
        batch
            .set_string(keys.user("a"), "{}")
            .set_add(keys.users(), "a")
            .zset_add(keys.heartbeats(), 1_700_000_000_000, "a\nweb")
            .set_string(keys.user("a"), "{\"v\":2}")
            .publish(keys.updates_channel(), "m")
            .set_expiring(keys.reply("r1@n"), "{\"ok\":{}}", 30_000)
            .cursor(StreamId::new(5, 1));
        let (k, a) = encode(&keys, "n:1", "PUBLISH", &batch).unwrap();
        assert_eq!(
            k,
            [
                "presence:{2}:lease",
                "presence:{2}:user:a",
                "presence:{2}:users",
                "presence:{2}:hb",
                "presence:{2}:updates",
                "presence:{2}:reply:r1@n",
                "presence:{2}:cursor",
            ]
        );
        assert_eq!(
            a,
            [
                "n:1",
                "PUBLISH",
                "set",
                "2",
                "{}",
                "sadd",
                "3",
                "a",
                "zadd",
                "4",
                "1700000000000",
                "a\nweb",
                "set",
                "2",
                "{\"v\":2}",
                "pub",
                "5",
                "m",
                "setpx",
                "6",
                "{\"ok\":{}}",
                "30000",
                "set",
                "7",
                "5-1",
            ]
        );
    }

    /// Consecutive `SET`s travel as one `mset` (with the cursor when it
    /// follows them); a single one stays a `set`, and any other operation
    /// in between keeps the order.
    #[test]
    fn consecutive_sets_are_sent_as_one_mset() {
        let keys = Keys::new(0);
        let mut batch = CommitBatch::new();
        batch
            .set_string(keys.view("a"), "va")
            .set_string(keys.self_view("a"), "sa")
            .hash_set(keys.devices("a"), "web", "d")
            .set_string(keys.view("b"), "vb")
            .publish(keys.updates_channel(), "m")
            .set_string(keys.counts(), "c")
            .cursor(StreamId::new(9, 0));
        let (_, a) = encode(&keys, "n:1", "PUBLISH", &batch).unwrap();
        assert_eq!(
            a,
            [
                "n:1", "PUBLISH", //
                "mset", "2", "2", "va", "3", "sa", //
                "hset", "4", "web", "d", //
                "set", "5", "vb", //
                "pub", "6", "m", //
                "mset", "2", "7", "c", "8", "9-0",
            ]
        );
    }

    #[test]
    fn a_key_of_another_shard_is_refused_before_sending() {
        let cases = [
            Keys::new(3).user("a"),
            "presence:meta".to_owned(),
            Keys::nodes(),
            "presence:{02}:user:a".to_owned(),
        ];
        for key in cases {
            let mut batch = CommitBatch::new();
            batch
                .set_string(Keys::new(2).user("ok"), "1")
                .delete_key(key.clone());
            match encode(&Keys::new(2), "n:1", "PUBLISH", &batch) {
                Err(RedisError::CrossShard { key: k, shard: 2 }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        // Shard 0's commit may write cluster-wide state: it lives in {0}.
        let mut batch = CommitBatch::new();
        batch
            .set_string(Keys::cap(), "{}")
            .publish(Keys::control_channel(), "x");
        encode(&Keys::new(0), "n:1", "PUBLISH", &batch).unwrap();
    }
}

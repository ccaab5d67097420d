//! Each shard's event stream, `presence:{s}:events`: the durable feed of
//! commands from gateways to the shard's leader.
//!
//! Gateways [`append`](RedisClient::append) (`XADD … MAXLEN ~ cap`); the
//! leader [`read`](StreamReader::read)s after its cursor, commits (the
//! commit stores the new cursor), then [`trim`](RedisClient::trim)s what
//! it applied. A new leader resumes from the stored cursor, so nothing
//! appended is lost by a failover. The `MAXLEN` cap only matters while a
//! shard has no leader for a long time.
//!
//! R1 across a Redis failover: with `replica_acks` N > 0, every `XADD` is
//! followed on the same connection (in Redis Cluster, to the same node:
//! `WAIT` is routed by the stream key's slot) by `WAIT N timeout`, and the
//! append fails unless N replicas confirmed. A gateway answers a request
//! only after its append returned, so every acknowledged change is in the
//! stream on a replica a failover would promote; if the leader's commit of
//! it was lost with the old primary, the next leader applies it again
//! from the stored cursor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::{Client, ClientLike, KeysInterface, Options, StreamsInterface, Value};
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::watch;

use super::client::{RedisClient, quit_in_background};
use super::error::RedisError;
use super::keys::Keys;

/// A stream entry id, `<ms>-<seq>`: the protocol's type, one for every
/// crate (the cursor the leader stores is the id the gateway's `XADD`
/// returned).
pub use presence_protocol::cluster::StreamId;

/// One stream entry: its id and its field/value pairs, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(String, String)>,
}

impl StreamEntry {
    /// The value of the first field named `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RedisClient {
    /// Appends an entry to shard `shard`'s stream (`XADD presence:{s}:events
    /// MAXLEN ~ <stream_max_len> * …`) and returns its id. `fields` are
    /// field/value pairs in order, e.g. the protocol's
    /// `StreamEntry::to_fields()`.
    pub async fn append<K: AsRef<str>, V: AsRef<str>>(
        &self,
        shard: u16,
        fields: &[(K, V)],
    ) -> Result<StreamId, RedisError> {
        if fields.is_empty() {
            return Err(RedisError::Config("a stream entry needs a field".into()));
        }
        let cap = i64::try_from(self.config().stream_max_len).unwrap_or(i64::MAX);
        let pairs: Vec<(String, String)> = fields
            .iter()
            .map(|(f, v)| (f.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        // Held while a failover is followed: an entry that reached the old
        // primary after the promotion would be lost even if a replica that
        // is not promoted confirmed it.
        let started = std::time::Instant::now();
        let appended = self.unless_moving(self.append_now(shard, pairs, cap)).await;
        if appended.is_ok() {
            super::stats::store_write("append", started.elapsed());
        }
        if let Err(error) = &appended
            && error.is_unavailable()
        {
            self.check_primary_now();
        }
        appended
    }

    async fn append_now(
        &self,
        shard: u16,
        pairs: Vec<(String, String)>,
        cap: i64,
    ) -> Result<StreamId, RedisError> {
        let key = Keys::new(shard).events();
        let acks = self.replica_acks();
        let pool = self.pool()?;
        if acks == 0 {
            let id: String = pool
                .xadd(key, false, ("MAXLEN", "~", cap), "*", pairs)
                .await?;
            return Ok(id.parse()?);
        }
        // One connection, one pipeline: WAIT covers the writes sent before
        // it on its own connection, so it must follow the XADD there.
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let wait = (self.config().replica_ack_timeout).min(self.config().command_timeout / 2);
        let timeout_ms = u64::try_from(wait.as_millis().max(1)).unwrap_or(u64::MAX);
        let pipeline = pool.next().pipeline();
        let _: () = pipeline
            .xadd(&key, false, ("MAXLEN", "~", cap), "*", pairs)
            .await?;
        let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false);
        let _: () = pipeline
            .custom(wait, vec![u64::from(acks), timeout_ms])
            .await?;
        let (id, acked): (String, u64) = pipeline.all().await?;
        if acked < u64::from(acks) {
            let error = RedisError::NotReplicated {
                acked,
                wanted: u64::from(acks),
            };
            super::stats::redis_stats().error(&error);
            return Err(error);
        }
        Ok(id.parse()?)
    }

    /// Up to `count` entries after `after`, from the pool. With `block`,
    /// waits up to that long for the first one, holding a pooled
    /// connection meanwhile: a leader should read through its own
    /// [`StreamReader`] instead.
    pub async fn read(
        &self,
        shard: u16,
        after: StreamId,
        count: u64,
        block: Option<Duration>,
    ) -> Result<Vec<StreamEntry>, RedisError> {
        let pool = self.pool()?;
        xread(
            pool.next_connected(),
            self.config().command_timeout,
            shard,
            after,
            count,
            block,
        )
        .await
    }

    /// Deletes every entry before `min_id` (`XTRIM … MINID min_id`; the
    /// entry `min_id` itself stays). Returns how many were deleted.
    pub async fn trim(&self, shard: u16, min_id: StreamId) -> Result<u64, RedisError> {
        let deleted: u64 = self
            .pool()?
            .xtrim(
                Keys::new(shard).events(),
                ("MINID", "=", min_id.to_string()),
            )
            .await?;
        Ok(deleted)
    }

    /// How many entries shard `shard`'s stream holds (`XLEN`).
    pub async fn stream_len(&self, shard: u16) -> Result<u64, RedisError> {
        Ok(self.pool()?.xlen(Keys::new(shard).events()).await?)
    }

    /// How many entries of shard `shard`'s stream its leader has not
    /// applied yet, as far as Redis knows: the entries after the stored
    /// cursor (`presence:{s}:cursor`, written by each commit), counted up to
    /// `cap` (an answer of `cap` means at least that many). A leader's own
    /// figure is fresher: it also knows what it applied but has not
    /// committed yet.
    pub async fn unapplied_entries(&self, shard: u16, cap: u64) -> Result<u64, RedisError> {
        let keys = Keys::new(shard);
        let cursor: Option<String> = self.pool()?.get(keys.cursor()).await?;
        let after = match cursor {
            Some(text) => text.parse()?,
            None => StreamId::ZERO,
        };
        Ok(self.read(shard, after, cap, None).await?.len() as u64)
    }
}

/// A connection of its own for blocking stream reads (see
/// [`RedisClient::stream_reader`]). Reconnects by itself like the pool.
///
/// It follows the primary: before a read, if the primary generation moved
/// since the last one, the connection is dropped and the primary resolved
/// again, so it never keeps reading from a demoted server.
pub struct StreamReader {
    client: Client,
    command_timeout: Duration,
    generation: watch::Receiver<u64>,
    /// The generation the connection was last resolved under.
    seen: AtomicU64,
}

impl StreamReader {
    pub(crate) fn new(
        client: Client,
        command_timeout: Duration,
        generation: watch::Receiver<u64>,
    ) -> StreamReader {
        let seen = AtomicU64::new(*generation.borrow());
        StreamReader {
            client,
            command_timeout,
            generation,
            seen,
        }
    }

    /// Up to `count` entries of shard `shard` after `after`
    /// (`XREAD COUNT count [BLOCK ms] STREAMS presence:{s}:events after`).
    /// With `block`, waits up to that long for the first entry; an empty
    /// result means none came. The command's deadline is `block` plus the
    /// command timeout.
    pub async fn read(
        &self,
        shard: u16,
        after: StreamId,
        count: u64,
        block: Option<Duration>,
    ) -> Result<Vec<StreamEntry>, RedisError> {
        let generation = *self.generation.borrow();
        if self.seen.swap(generation, Ordering::AcqRel) != generation {
            let reconnect = self.client.force_reconnection();
            tokio::time::timeout(self.command_timeout, reconnect)
                .await
                .map_err(|_| RedisError::Timeout("reconnecting to the new primary".into()))??;
        }
        xread(
            &self.client,
            self.command_timeout,
            shard,
            after,
            count,
            block,
        )
        .await
    }

    /// Closes the connection.
    pub async fn quit(&self) {
        let _ = self.client.quit().await;
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        quit_in_background(self.client.clone());
    }
}

async fn xread(
    client: &Client,
    command_timeout: Duration,
    shard: u16,
    after: StreamId,
    count: u64,
    block: Option<Duration>,
) -> Result<Vec<StreamEntry>, RedisError> {
    let key = Keys::new(shard).events();
    // BLOCK 0 would wait forever: at least 1 ms.
    let block_ms = block.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX).max(1));
    let timeout = command_timeout + block.unwrap_or_default();
    let reply: Value = client
        .with_options(&Options {
            timeout: Some(timeout),
            ..Options::default()
        })
        .xread(Some(count.max(1)), block_ms, key, after.to_string())
        .await?;
    parse_xread(reply)
}

/// `XREAD`'s answer for one stream (RESP2): nil (nothing), or
/// `[[key, [[id, [f, v, …]], …]]]`.
fn parse_xread(reply: Value) -> Result<Vec<StreamEntry>, RedisError> {
    let streams = match reply {
        Value::Null => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        other => return Err(unexpected(&other)),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut key_and_entries) = stream else {
            return Err(unexpected(&stream));
        };
        let entries = match (key_and_entries.pop(), key_and_entries.len()) {
            (Some(Value::Array(entries)), 1) => entries,
            _ => {
                return Err(RedisError::protocol(
                    "an XREAD stream is not [key, entries]",
                ));
            }
        };
        for entry in entries {
            out.push(parse_entry(entry)?);
        }
    }
    Ok(out)
}

fn parse_entry(entry: Value) -> Result<StreamEntry, RedisError> {
    let Value::Array(mut parts) = entry else {
        return Err(unexpected(&entry));
    };
    if parts.len() != 2 {
        return Err(RedisError::protocol("a stream entry is not [id, fields]"));
    }
    let fields = parts.pop().expect("two items");
    let id: String = parts
        .pop()
        .expect("two items")
        .convert()
        .map_err(|e| RedisError::protocol(format!("stream id: {e}")))?;
    let flat: Vec<String> = match fields {
        Value::Null => Vec::new(),
        fields => fields
            .convert()
            .map_err(|e| RedisError::protocol(format!("stream fields: {e}")))?,
    };
    if !flat.len().is_multiple_of(2) {
        return Err(RedisError::protocol("stream fields are not pairs"));
    }
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(f), Some(v)) = (flat.next(), flat.next()) {
        pairs.push((f, v));
    }
    Ok(StreamEntry {
        id: id.parse()?,
        fields: pairs,
    })
}

fn unexpected(value: &Value) -> RedisError {
    RedisError::protocol(format!("unexpected XREAD reply {:?}", value.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_print_and_order_like_redis() {
        let cases = [
            ("0-0", StreamId::ZERO),
            ("1700000000000-7", StreamId::new(1_700_000_000_000, 7)),
        ];
        for (text, id) in cases {
            assert_eq!(text.parse::<StreamId>().unwrap(), id);
            assert_eq!(id.to_string(), text);
        }
        assert!(StreamId::new(1, 9) < StreamId::new(2, 0));
        assert!(StreamId::new(2, 1) > StreamId::new(2, 0));
        // A bare `<ms>` means sequence 0, as in Redis's own commands.
        assert_eq!("7".parse::<StreamId>().unwrap(), StreamId::new(7, 0));
        for bad in ["", "a-1", "1-", "-1", "1-2-3"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn xread_replies_parse() {
        let s = |t: &str| Value::String(t.into());
        let reply = Value::Array(vec![Value::Array(vec![
            s("presence:{0}:events"),
            Value::Array(vec![
                Value::Array(vec![
                    s("1-0"),
                    Value::Array(vec![s("u"), s("alice"), s("c"), s("{}")]),
                ]),
                Value::Array(vec![s("1-1"), Value::Array(vec![s("u"), s("bob")])]),
            ]),
        ])]);
        let entries = parse_xread(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, StreamId::new(1, 0));
        assert_eq!(entries[0].field("c"), Some("{}"));
        assert_eq!(entries[1].fields, [("u".to_owned(), "bob".to_owned())]);
        assert!(parse_xread(Value::Null).unwrap().is_empty());
    }
}

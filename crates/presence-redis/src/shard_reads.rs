//! Reading a shard's stored state: the cluster's shard count, everything a
//! new leader loads on takeover, and the views gateways read on resync.

use std::collections::HashMap;

use fred::prelude::{HashesInterface, KeysInterface, SetsInterface, Value};

use super::client::RedisClient;
use super::error::RedisError;
use super::keys::Keys;
use super::stream::StreamId;

/// Users per pipeline when loading a shard (two commands each), and keys
/// per `MGET` when reading views: large enough to amortise round trips,
/// small enough that no single reply stalls Redis.
pub const LOAD_CHUNK: usize = 500;

/// Everything stored for one shard, as a new leader loads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// The last applied stream id (`presence:{s}:cursor`); `None` if the
    /// shard never committed one (read the stream from the start).
    pub cursor: Option<StreamId>,
    /// Every user of `presence:{s}:users`, sorted by id.
    pub users: Vec<StoredUser>,
}

/// One user's stored keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredUser {
    pub user: String,
    /// `presence:{s}:user:<uid>`: the durable document (JSON).
    pub doc: Option<String>,
    /// `presence:{s}:view:<uid>`: what others see (JSON), to compare with
    /// the recomputed view after takeover.
    pub view: Option<String>,
    /// `presence:{s}:self:<uid>`: the user's own view (JSON).
    pub self_view: Option<String>,
    /// `presence:{s}:devices:<uid>`: device id → device JSON, sorted by id.
    pub devices: Vec<(String, String)>,
}

/// The cluster-wide state shard 0's leader writes (all in shard 0's slot),
/// as stored: every leader and gateway reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// `presence:{0}:settings`: workspace settings (JSON).
    pub settings: Option<String>,
    /// `presence:{0}:custom-statuses`: id → custom status (JSON), sorted
    /// by id.
    pub custom_statuses: Vec<(String, String)>,
    /// `presence:{0}:cap`: the cap state (JSON).
    pub cap: Option<String>,
}

impl RedisClient {
    /// Records the shard count in `presence:meta` if no node did yet, and
    /// refuses to go on if the stored count differs
    /// ([`RedisError::ShardCountMismatch`]): users would be looked up in
    /// the wrong shards. Call it once at start, before anything else.
    pub async fn ensure_meta(&self, shards: u16) -> Result<(), RedisError> {
        if shards == 0 {
            return Err(RedisError::Config(
                "the shard count must be at least 1".into(),
            ));
        }
        let pool = self.pool()?;
        let _: bool = pool.hsetnx(Keys::meta(), "shards", shards).await?;
        let stored: Option<String> = pool.hget(Keys::meta(), "shards").await?;
        let stored: u16 = stored
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| RedisError::protocol(format!("presence:meta shards is {stored:?}")))?;
        if stored != shards {
            return Err(RedisError::ShardCountMismatch {
                stored,
                configured: shards,
            });
        }
        Ok(())
    }

    /// Loads shard `shard` for a takeover: the cursor and the user set,
    /// then each user's document, views and devices, [`LOAD_CHUNK`] users
    /// per pipelined round trip.
    ///
    /// Not a snapshot in time: call it while holding the lease, when only
    /// this node writes the shard's users (gateways write only the stream
    /// and heartbeat deadlines, which this does not read).
    pub async fn load_shard(&self, shard: u16) -> Result<ShardSnapshot, RedisError> {
        let keys = Keys::new(shard);
        let pool = self.pool()?;
        let client = pool.next_connected();
        let pipeline = client.pipeline();
        let () = pipeline.get(keys.cursor()).await?;
        let () = pipeline.smembers(keys.users()).await?;
        let (cursor, mut users): (Option<String>, Vec<String>) = pipeline.all().await?;
        let cursor = cursor.map(|c| c.parse()).transpose()?;
        users.sort_unstable();

        let mut stored = Vec::with_capacity(users.len());
        for chunk in users.chunks(LOAD_CHUNK) {
            let pipeline = client.pipeline();
            for user in chunk {
                let () = pipeline
                    .mget(vec![keys.user(user), keys.view(user), keys.self_view(user)])
                    .await?;
                let () = pipeline.hgetall(keys.devices(user)).await?;
            }
            let replies: Vec<Value> = pipeline.all().await?;
            if replies.len() != chunk.len() * 2 {
                return Err(RedisError::protocol("a load pipeline lost replies"));
            }
            let mut replies = replies.into_iter();
            for user in chunk {
                let (docs, devices) = (replies.next(), replies.next());
                let (Some(docs), Some(devices)) = (docs, devices) else {
                    unreachable!("the length was checked")
                };
                let [doc, view, self_view]: [Option<String>; 3] = docs
                    .convert::<Vec<Option<String>>>()
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| RedisError::protocol("MGET of a user's keys"))?;
                let devices: HashMap<String, String> = match devices {
                    Value::Null => HashMap::new(),
                    devices => devices
                        .convert()
                        .map_err(|e| RedisError::protocol(format!("HGETALL devices: {e}")))?,
                };
                let mut devices: Vec<(String, String)> = devices.into_iter().collect();
                devices.sort_unstable();
                stored.push(StoredUser {
                    user: user.clone(),
                    doc,
                    view,
                    self_view,
                    devices,
                });
            }
        }
        Ok(ShardSnapshot {
            cursor,
            users: stored,
        })
    }

    /// Reads the cluster-wide state (settings, custom statuses, cap) in one
    /// pipelined round trip.
    pub async fn read_cluster_state(&self) -> Result<ClusterSnapshot, RedisError> {
        let pool = self.pool()?;
        let pipeline = pool.next_connected().pipeline();
        let () = pipeline.get(Keys::settings()).await?;
        let () = pipeline.hgetall(Keys::custom_statuses()).await?;
        let () = pipeline.get(Keys::cap()).await?;
        let (settings, custom_statuses, cap): (
            Option<String>,
            HashMap<String, String>,
            Option<String>,
        ) = pipeline.all().await?;
        let mut custom_statuses: Vec<(String, String)> = custom_statuses.into_iter().collect();
        custom_statuses.sort_unstable();
        Ok(ClusterSnapshot {
            settings,
            custom_statuses,
            cap,
        })
    }

    /// The stored view (`presence:{s}:view:<uid>`) of each of `users`, all
    /// of shard `shard`, in order; `None` for users never seen. `MGET`s of
    /// at most [`LOAD_CHUNK`] keys.
    pub async fn read_views<S: AsRef<str>>(
        &self,
        shard: u16,
        users: &[S],
    ) -> Result<Vec<Option<String>>, RedisError> {
        let keys = Keys::new(shard);
        let mut views = Vec::with_capacity(users.len());
        for chunk in users.chunks(LOAD_CHUNK) {
            let view_keys: Vec<String> = chunk.iter().map(|u| keys.view(u.as_ref())).collect();
            let chunk_views: Vec<Option<String>> = self.pool()?.mget(view_keys).await?;
            views.extend(chunk_views);
        }
        Ok(views)
    }

    /// `presence:{s}:counts` of every shard `0..shards`, in one pipeline
    /// (each key is in its own slot, so no `MGET`).
    pub async fn read_counts(&self, shards: u16) -> Result<Vec<Option<String>>, RedisError> {
        use fred::prelude::KeysInterface;
        let pool = self.pool()?;
        let pipeline = pool.next_connected().pipeline();
        for shard in 0..shards {
            let () = pipeline.get(Keys::new(shard).counts()).await?;
        }
        let counts: Vec<Option<String>> = pipeline.all().await?;
        Ok(counts)
    }
}

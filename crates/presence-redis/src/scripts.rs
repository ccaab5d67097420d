//! The Lua scripts of cluster mode and how they run.
//!
//! Each script is loaded once with `SCRIPT LOAD` when the client connects
//! (on every primary of a cluster) and then called by its SHA-1 with
//! `EVALSHA`, so a commit sends its operations, not the script's text.
//! Redis forgets scripts when it restarts (or on `SCRIPT FLUSH`); the
//! answer is then `NOSCRIPT`, and [`RedisClient::run_script`] loads the
//! script again and retries once, transparently. A script runs atomically
//! and touches only keys of one slot (all named in `KEYS`), so it works
//! unchanged on Redis Cluster.
//!
//! | script | keys | what it does |
//! |---|---|---|
//! | `acquire_lease` | lease, epoch | if no lease: `INCR` epoch, `SET` lease `"<node>:<epoch>" PX ttl` |
//! | `renew_lease` | lease | `PEXPIRE` if the value is still ours |
//! | `release_lease` | lease | `DEL` if the value is still ours |
//! | `commit` | lease + the batch's keys | check the lease value, validate, then write and publish |
//! | `refresh_node` | nodes, conns | node deadline + socket count; returns the previous deadline |
//! | `settle_rate_buckets` | a shard's rate buckets | GCRA on Redis's clock: charge a gateway's granted tokens, grant the ones asked for, say how full each bucket is |

use fred::prelude::{Key, LuaInterface, Pool, Value};

use super::client::RedisClient;
use super::error::RedisError;

/// One script's source, named for error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Script {
    pub name: &'static str,
    pub source: &'static str,
    /// Whether a run is a store write, reported to the
    /// [`StoreWriteObserver`](super::StoreWriteObserver) under `name`.
    pub store_write: bool,
}

pub(crate) const ACQUIRE_LEASE: Script = Script {
    name: "acquire_lease",
    source: include_str!("lua/acquire_lease.lua"),
    store_write: false,
};
pub(crate) const RENEW_LEASE: Script = Script {
    name: "renew_lease",
    source: include_str!("lua/renew_lease.lua"),
    store_write: false,
};
pub(crate) const RELEASE_LEASE: Script = Script {
    name: "release_lease",
    source: include_str!("lua/release_lease.lua"),
    store_write: false,
};
pub(crate) const COMMIT: Script = Script {
    name: "commit",
    source: include_str!("lua/commit.lua"),
    store_write: true,
};
pub(crate) const REFRESH_NODE: Script = Script {
    name: "refresh_node",
    source: include_str!("lua/refresh_node.lua"),
    store_write: false,
};

pub(crate) const SETTLE_RATE_BUCKETS: Script = Script {
    name: "settle_rate_buckets",
    source: include_str!("lua/settle_rate_buckets.lua"),
    store_write: false,
};

/// Every script, in the order they are loaded.
const ALL: [Script; 6] = [
    ACQUIRE_LEASE,
    RENEW_LEASE,
    RELEASE_LEASE,
    COMMIT,
    REFRESH_NODE,
    SETTLE_RATE_BUCKETS,
];

/// The SHA-1 of every script, as `SCRIPT LOAD` answered it.
pub(crate) struct Scripts {
    shas: Vec<(&'static str, String)>,
}

impl Scripts {
    /// Loads every script (on every primary of a cluster).
    pub(crate) async fn load(pool: &Pool) -> Result<Scripts, RedisError> {
        let mut shas = Vec::with_capacity(ALL.len());
        for script in ALL {
            let sha: String = pool.script_load_cluster(script.source).await?;
            shas.push((script.name, sha));
        }
        Ok(Scripts { shas })
    }

    fn sha(&self, script: Script) -> &str {
        self.shas
            .iter()
            .find(|(name, _)| *name == script.name)
            .map(|(_, sha)| sha.as_str())
            .expect("every script is loaded at connect")
    }
}

impl RedisClient {
    /// `EVALSHA` of `script`; on `NOSCRIPT`, `SCRIPT LOAD` and one retry.
    ///
    /// Retrying is safe: `NOSCRIPT` means the script did not run.
    pub(crate) async fn run_script(
        &self,
        script: Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        let sha = self.scripts().sha(script);
        // Moved into fred's refcounted strings, so the copy kept for a
        // retry costs a reference count per argument, not their bytes.
        let keys: Vec<Key> = keys.into_iter().map(Key::from).collect();
        let args: Vec<Value> = args.into_iter().map(Value::from).collect();
        let started = std::time::Instant::now();
        let ran = self.run_script_once_reloaded(script, sha, keys, args).await;
        if ran.is_ok() && script.store_write {
            super::stats::store_write(script.name, started.elapsed());
        }
        ran
    }

    async fn run_script_once_reloaded(
        &self,
        script: Script,
        sha: &str,
        keys: Vec<Key>,
        args: Vec<Value>,
    ) -> Result<Value, RedisError> {
        let pool = self.pool()?;
        let first: Result<Value, RedisError> = pool
            .evalsha(sha, keys.clone(), args.clone())
            .await
            .map_err(RedisError::from);
        match first {
            Err(e) if e.is_noscript() => {
                tracing::info!(
                    script = script.name,
                    "redis: script missing (NOSCRIPT); loading it again"
                );
                self.count_script_reload();
                let _: String = pool.script_load_cluster(script.source).await?;
                match pool.evalsha(sha, keys, args).await {
                    Ok(value) => Ok(value),
                    Err(e) => match RedisError::from(e) {
                        e if e.is_noscript() => {
                            // Still missing after the reload: now it is an
                            // error (the first NOSCRIPT was a reload).
                            let error = RedisError::NoScript {
                                script: script.name,
                            };
                            super::stats::redis_stats().error(&error);
                            Err(error)
                        }
                        e => Err(e),
                    },
                }
            }
            other => other,
        }
    }
}

//! Directory reads: the scans of every shard's user set behind
//! `list_not_offline(None)`, `list_changed_since`, `user_by_username`
//! and the `status_counts` fallback. `SMEMBERS` per shard, then the
//! views, own views and documents, 500 users per round trip: O(users)
//! per call (see the module documentation of [`super`]).

use std::sync::Arc;

use fred::prelude::{KeysInterface, SetsInterface};
use presence_core::{SelfStatus, Timestamp};
use presence_protocol::cluster::{StoredSelf, StoredView};

use crate::error::RedisError;
use crate::keys::Keys;
use crate::shard_reads::LOAD_CHUNK;
use presence_backend::{BackendResult, PresenceSnapshot, UserListing};
use presence_engine::UserRecord;

use super::stored_reads::snapshot_of;
use super::{Inner, decode, unavailable};

// ---- Reads ----

/// One user as a directory scan reads them.
pub(super) struct ScannedUser {
    pub(super) presence: PresenceSnapshot,
    pub(super) own_status: Option<SelfStatus>,
    pub(super) record: Option<UserRecord>,
}

impl ScannedUser {
    pub(super) fn listing(self) -> UserListing {
        UserListing {
            presence: self.presence,
            profile: self.record.map(|r| r.profile).unwrap_or_default(),
        }
    }
}

impl Inner {
    /// Every user of every shard (`SMEMBERS presence:{s}:users`).
    pub(super) async fn all_users(&self) -> BackendResult<Vec<Arc<str>>> {
        let mut users = Vec::new();
        for shard in 0..self.config.shards {
            let members: Vec<String> = async {
                let members: Vec<String> = self
                    .client
                    .pool()?
                    .smembers(Keys::new(shard).users())
                    .await?;
                Ok::<_, RedisError>(members)
            }
            .await
            .map_err(unavailable)?;
            users.extend(members.into_iter().map(Arc::from));
        }
        users.sort_unstable();
        Ok(users)
    }

    /// View, own view and document of each of `users`, 500 per `MGET`.
    pub(super) async fn scan_users(&self, users: Vec<Arc<str>>) -> BackendResult<Vec<ScannedUser>> {
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(LOAD_CHUNK) {
            let mut keys = Vec::with_capacity(chunk.len() * 3);
            for user in chunk {
                let k = Keys::for_user(user, self.config.shards);
                keys.push(k.view(user));
                keys.push(k.self_view(user));
                keys.push(k.user(user));
            }
            let values: Vec<Option<String>> = if self.client.is_cluster() {
                // Keys of several slots: one GET each, pipelined by fred.
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    let value: Option<String> = self
                        .client
                        .pool()
                        .map_err(unavailable)?
                        .get(key)
                        .await
                        .map_err(|e| unavailable(e.into()))?;
                    values.push(value);
                }
                values
            } else {
                async {
                    let values: Vec<Option<String>> = self.client.pool()?.mget(keys).await?;
                    Ok::<_, RedisError>(values)
                }
                .await
                .map_err(unavailable)?
            };
            let mut values = values.into_iter();
            for user in chunk {
                let (view, own, doc) = (values.next(), values.next(), values.next());
                let view = view
                    .flatten()
                    .map(|j| decode::<StoredView>(&j, "a stored view"))
                    .transpose()?;
                let own = own
                    .flatten()
                    .map(|j| decode::<StoredSelf>(&j, "a stored own view"))
                    .transpose()?;
                let record = doc
                    .flatten()
                    .map(|j| decode::<UserRecord>(&j, "a user document"))
                    .transpose()?;
                out.push(ScannedUser {
                    presence: snapshot_of(user.clone(), view),
                    own_status: own.map(|s| s.view.status),
                    record,
                });
            }
        }
        Ok(out)
    }
}

/// The lowest view version written at or after `since`: leaders make
/// versions from their clock, `max(previous + 1, now_ms · 1000)`
/// (`presence_core::next_version`), so a stored view's version tells when
/// it was last written.
pub(super) fn changed_since_version(since: Timestamp) -> u64 {
    u64::try_from(since.as_millis())
        .unwrap_or(0)
        .saturating_mul(1000)
}

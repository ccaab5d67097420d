//! The codec between the pure shard state and Redis: [`ShardChanges`]
//! into fenced [`CommitBatch`]es (the JSON of every stored value and
//! published message), and what Redis holds into a [`ShardLoad`].
//!
//! A commit writes at most `max_users` users; larger changes (a settings
//! change re-evaluating a whole shard) are split into several batches, and
//! only the *last* one carries the stream cursor, the replies and the
//! cluster-wide writes, so the cursor never moves past entries whose
//! effects are not all written.

use presence_core::{CapState, CustomStatus, DeviceId, WorkspaceSettings};
use presence_engine::UserRecord;
use presence_protocol::cluster::{StoredDevice, StoredSelf, StoredView};
use presence_redis::{ClusterSnapshot, CommitBatch, Keys, ShardSnapshot, heartbeat_member};

use crate::changes::update_batch;
use crate::{LoadedUser, ShardChanges, ShardLoad, UserChange};

/// Why a stored value cannot be loaded.
#[derive(Debug)]
pub struct DecodeError(pub String);

/// The commit batches for `changes`, published with lease `epoch` and
/// stamped with the commit time `committed_at_us` (the leader's wall
/// clock as it commits, µs since the Unix epoch), each writing at most
/// `max_users` users (at least one batch if `changes` is not empty).
pub fn commit_batches(
    shard: u16,
    epoch: u64,
    committed_at_us: u64,
    changes: &ShardChanges,
    max_users: usize,
) -> Vec<CommitBatch> {
    let keys = Keys::new(shard);
    let users: Vec<(&String, &UserChange)> = changes.users.iter().collect();
    let chunks: Vec<&[(&String, &UserChange)]> = if users.is_empty() {
        vec![&[]]
    } else {
        users.chunks(max_users.max(1)).collect()
    };
    let last = chunks.len() - 1;
    let mut batches = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut batch = CommitBatch::new();
        for (user, change) in chunk {
            write_user_members(&mut batch, &keys, user, change);
        }
        // The strings last and together: the commit sends consecutive
        // `SET`s as one `MSET`.
        for (user, change) in chunk {
            write_user_strings(&mut batch, &keys, user, change);
        }
        let users = chunk.iter().map(|(user, change)| (user.as_str(), *change));
        if let Some(updates) = update_batch(users, epoch, committed_at_us) {
            batch.publish(keys.updates_channel(), updates);
        }
        if i == last {
            write_tail(&mut batch, &keys, changes);
        }
        batches.push(batch);
    }
    batches
}

/// What `load_shard` and `read_cluster_state` returned, decoded. The cap
/// is only read for shard 0.
pub fn shard_load(
    shard: u16,
    snapshot: ShardSnapshot,
    cluster: ClusterSnapshot,
) -> Result<ShardLoad, DecodeError> {
    let mut users = Vec::with_capacity(snapshot.users.len());
    for stored in snapshot.users {
        let user = stored.user;
        // A document that does not parse would lose the user's chosen
        // status (M3) if replaced: refuse the takeover instead.
        let record = stored
            .doc
            .as_deref()
            .map(from_json::<UserRecord>)
            .transpose()
            .map_err(|e| DecodeError(format!("user document of '{user}': {e}")))?;
        let view = lenient::<StoredView>(stored.view.as_deref(), "view", &user);
        let self_view = lenient::<StoredSelf>(stored.self_view.as_deref(), "self view", &user);
        let devices = stored
            .devices
            .into_iter()
            .filter_map(|(id, json)| {
                // Only valid ids are ever stored; a field that is not one
                // names no device.
                let id = DeviceId::try_from(id).ok()?;
                lenient::<StoredDevice>(Some(&json), "device", &user).map(|d| (id, d))
            })
            .collect();
        users.push(LoadedUser {
            user,
            record,
            devices,
            view,
            self_view,
        });
    }
    let settings = cluster
        .settings
        .as_deref()
        .map(from_json::<WorkspaceSettings>)
        .transpose()
        .map_err(|e| DecodeError(format!("workspace settings: {e}")))?
        .unwrap_or_default();
    let custom_statuses = cluster
        .custom_statuses
        .iter()
        .filter_map(|(id, json)| lenient::<CustomStatus>(Some(json), "custom status", id))
        .collect();
    let cap = if shard == 0 {
        lenient::<CapState>(cluster.cap.as_deref(), "cap", "presence:{0}:cap")
    } else {
        None
    };
    Ok(ShardLoad {
        users,
        settings,
        custom_statuses,
        cap,
    })
}

/// The settings (`None` if absent or unreadable) and custom statuses of a
/// cluster snapshot, for shards that follow shard 0's announcements.
pub fn cluster_state(cluster: &ClusterSnapshot) -> (Option<WorkspaceSettings>, Vec<CustomStatus>) {
    let settings = lenient::<WorkspaceSettings>(
        cluster.settings.as_deref(),
        "settings",
        "presence:{0}:settings",
    );
    let statuses = cluster
        .custom_statuses
        .iter()
        .filter_map(|(id, json)| lenient::<CustomStatus>(Some(json), "custom status", id))
        .collect();
    (settings, statuses)
}

/// A user's members of sets, hashes and sorted sets: the shard's user
/// set, devices and heartbeats.
fn write_user_members(batch: &mut CommitBatch, keys: &Keys, user: &str, change: &UserChange) {
    if change.new_user {
        batch.set_add(keys.users(), user);
    }
    for (device, stored) in change.device_upserts() {
        batch.hash_set(keys.devices(user), device.as_str(), to_json(stored));
    }
    for device in change.device_removals() {
        batch.hash_delete(keys.devices(user), device.as_str());
    }
    for (device, deadline) in change.heartbeat_adds() {
        let score = u64::try_from(deadline.as_millis()).unwrap_or(0);
        batch.zset_add(keys.heartbeats(), score, heartbeat_member(user, device));
    }
    for device in change.heartbeat_removes() {
        batch.zset_remove(keys.heartbeats(), heartbeat_member(user, device));
    }
}

/// A user's string keys: the document and both views.
fn write_user_strings(batch: &mut CommitBatch, keys: &Keys, user: &str, change: &UserChange) {
    if let Some(record) = &change.record {
        batch.set_string(keys.user(user), to_json(record));
    }
    if let Some(view) = &change.view {
        batch.set_string(keys.view(user), to_json(view));
    }
    if let Some(self_view) = &change.self_view {
        batch.set_string(keys.self_view(user), to_json(self_view));
    }
}

/// The cursor, the cluster-wide writes, the replies (stored, and
/// published to the node that asked) and the control messages: everything that must not be
/// written before every user.
fn write_tail(batch: &mut CommitBatch, keys: &Keys, changes: &ShardChanges) {
    if let Some(cursor) = changes.cursor {
        batch.cursor(cursor);
    }
    let cluster = &changes.cluster;
    if let Some(settings) = &cluster.settings {
        batch.set_string(Keys::settings(), to_json(settings));
    }
    for (id, status) in &cluster.custom_statuses {
        match status {
            Some(status) => batch.hash_set(Keys::custom_statuses(), id.as_str(), to_json(status)),
            None => batch.hash_delete(Keys::custom_statuses(), id.as_str()),
        };
    }
    if let Some(cap) = &cluster.cap {
        batch.set_string(Keys::cap(), to_json(cap));
    }
    if let Some(counts) = &changes.counts {
        batch.set_string(keys.counts(), to_json(counts));
    }
    for notice in &changes.notices {
        batch.publish(keys.node_channel(&notice.node), to_json(notice));
    }
    for reply in &changes.replies {
        // Stored with the change it answers (truthful replies): a gateway
        // that misses the message reads it, a retry is answered from it.
        batch.set_expiring(
            keys.reply(&reply.r),
            to_json(&reply.result),
            presence_protocol::cluster::REPLY_OUTCOME_TTL_MS,
        );
        batch.publish(keys.node_channel(&reply.node), to_json(reply));
    }
    for control in &cluster.control {
        batch.publish(Keys::control_channel(), to_json(control));
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("stored and published values always serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(json)
}

/// Parses a value that the new leader can do without: a broken one is
/// logged and treated as absent (it is rewritten on the user's next
/// change).
fn lenient<T: serde::de::DeserializeOwned>(
    json: Option<&str>,
    what: &str,
    owner: &str,
) -> Option<T> {
    match from_json(json?) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(what, owner, %error, "ignoring a stored value that does not parse");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use presence_core::{DisplayedStatus, PublicView};
    use presence_protocol::cluster::{StoredView, decode_update_batch};
    use presence_redis::CommitOp;

    use super::commit_batches;
    use crate::{ShardChanges, UserChange};

    /// W1: every update a commit publishes carries the commit time, in
    /// every batch of a change split over several; each commit publishes
    /// its users' updates in one message.
    #[test]
    fn w1_every_published_update_carries_the_commit_time() {
        let mut changes = ShardChanges::default();
        for user in ["ann", "ben", "cy"] {
            let view = PublicView {
                status: DisplayedStatus::Online,
                text: None,
            };
            changes.users.insert(
                user.to_owned(),
                UserChange {
                    view: Some(StoredView::new(&view, 7)),
                    ..UserChange::default()
                },
            );
        }
        let batches = commit_batches(2, 5, 1_700_000_000_000_123, &changes, 2);
        assert_eq!(batches.len(), 2, "three users, two per batch");
        let (mut messages, mut published) = (0, 0);
        for batch in &batches {
            for op in batch.ops() {
                let CommitOp::Publish { message, .. } = op else {
                    continue;
                };
                let updates = decode_update_batch(message).expect("a batch of updates");
                for update in &updates {
                    assert_eq!(update.committed_at_us, Some(1_700_000_000_000_123));
                    assert_eq!(update.epoch, 5);
                }
                messages += 1;
                published += updates.len();
            }
        }
        assert_eq!((messages, published), (2, 3), "one message per batch");
    }
}

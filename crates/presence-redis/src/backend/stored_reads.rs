//! Reads of what the leaders store: the views of given users (one `MGET`
//! per shard), and the cluster-wide settings, custom statuses and cap,
//! cached until a control message, an admin command or a resync says
//! they may have changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use presence_core::{CapState, CustomStatus, DisplayedStatus, PublicView, WorkspaceSettings};
use presence_protocol::cluster::StoredView;

use crate::keys::shard_of;
use presence_backend::{BackendResult, PresenceSnapshot};

use super::{CachedCluster, Inner, decode, unavailable};

impl Inner {
    /// The stored views of `users`, in order (`None`: never seen).
    pub(super) async fn read_views(
        &self,
        users: &[Arc<str>],
    ) -> BackendResult<Vec<Option<StoredView>>> {
        let mut by_shard: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, user) in users.iter().enumerate() {
            by_shard
                .entry(shard_of(user, self.config.shards))
                .or_default()
                .push(i);
        }
        let mut out = vec![None; users.len()];
        for (shard, indexes) in by_shard {
            let names: Vec<&str> = indexes.iter().map(|&i| &*users[i]).collect();
            let raw = self
                .client
                .read_views(shard, &names)
                .await
                .map_err(unavailable)?;
            for (&i, json) in indexes.iter().zip(raw) {
                out[i] = json
                    .map(|json| decode::<StoredView>(&json, "a stored view"))
                    .transpose()?;
            }
        }
        Ok(out)
    }

    /// Settings, custom statuses and cap, cached until a control message,
    /// an admin command or a resync says they may have changed.
    pub(super) async fn cluster_state(&self) -> BackendResult<CachedCluster> {
        if let Some(cached) = self.cluster.lock().clone() {
            return Ok(cached);
        }
        let snapshot = self
            .client
            .read_cluster_state()
            .await
            .map_err(unavailable)?;
        let settings: WorkspaceSettings = match &snapshot.settings {
            Some(json) => decode(json, "the workspace settings")?,
            None => WorkspaceSettings::default(),
        };
        let mut custom = Vec::with_capacity(snapshot.custom_statuses.len());
        for (_, json) in &snapshot.custom_statuses {
            custom.push(decode::<CustomStatus>(json, "a custom status")?);
        }
        custom.sort_by_cached_key(|s: &CustomStatus| (s.name.unique_key(), s.id.clone()));
        let cap = match &snapshot.cap {
            Some(json) => decode(json, "the cap state")?,
            None => CapState::new(settings.cap),
        };
        let cached = CachedCluster {
            settings: Arc::new(settings),
            custom,
            cap,
        };
        *self.cluster.lock() = Some(cached.clone());
        Ok(cached)
    }

    pub(super) fn invalidate_cluster(&self) {
        *self.cluster.lock() = None;
    }
}

pub(super) fn snapshot_of(user: Arc<str>, view: Option<StoredView>) -> PresenceSnapshot {
    match view {
        Some(stored) => PresenceSnapshot {
            user,
            view: stored.view(),
            version: stored.version,
        },
        None => PresenceSnapshot {
            user,
            view: PublicView {
                status: DisplayedStatus::Offline,
                text: None,
            },
            version: 0,
        },
    }
}

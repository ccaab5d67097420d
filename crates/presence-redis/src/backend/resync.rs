//! Resync (H3): pub/sub loses messages on reconnect and lag, so the pump
//! re-reads the stored views of what this node tracks and emits whatever
//! is newer than what it emitted (versions make it idempotent, W3).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fred::prelude::KeysInterface;
use presence_protocol::cluster::{StoredSelf, UpdateMessage};

use crate::error::RedisError;
use crate::keys::Keys;
use crate::shard_reads::LOAD_CHUNK;
use crate::subscriber::ResyncReason;

use super::Inner;
use super::seen::Source;

impl Inner {
    /// Pub/sub may have lost messages: re-read what this node watches and
    /// emit whatever is newer (H3). `false` if a read failed; the pump
    /// retries.
    pub(super) async fn resync(&self, reason: ResyncReason) -> bool {
        tracing::info!(?reason, "redis backend: resynchronising");
        match reason {
            ResyncReason::Reconnected => {
                self.resyncs_reconnected.fetch_add(1, Ordering::Relaxed);
            }
            ResyncReason::Lagged { missed } => {
                self.resyncs_lagged.fetch_add(1, Ordering::Relaxed);
                self.lagged_messages.fetch_add(missed, Ordering::Relaxed);
            }
        }
        self.invalidate_cluster();
        let users: Vec<Arc<str>> = self.seen.lock().tracked_users();
        for chunk in users.chunks(LOAD_CHUNK) {
            match self.read_views(chunk).await {
                Ok(views) => {
                    for (user, view) in chunk.iter().zip(views) {
                        if let Some(view) = view {
                            self.emit_update(
                                UpdateMessage {
                                    user: user.to_string(),
                                    version: view.version,
                                    epoch: 0,
                                    committed_at_us: None,
                                    public: Some(view.view()),
                                    self_view: None,
                                },
                                Source::Resync,
                            );
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "redis backend: resync read failed");
                    return false;
                }
            }
        }
        let local: Vec<Arc<str>> = {
            let live = self.live.lock();
            let mut users: Vec<Arc<str>> = live.values().map(|s| s.user.clone()).collect();
            users.sort_unstable();
            users.dedup();
            users
        };
        for user in local {
            let key = Keys::for_user(&user, self.config.shards).self_view(&user);
            let stored: Result<Option<String>, RedisError> = async {
                let value: Option<String> = self.client.pool()?.get(key).await?;
                Ok(value)
            }
            .await;
            match stored {
                Ok(Some(json)) => match serde_json::from_str::<StoredSelf>(&json) {
                    Ok(own) => self.emit_update(
                        UpdateMessage {
                            user: user.to_string(),
                            version: own.version,
                            epoch: 0,
                            committed_at_us: None,
                            public: None,
                            self_view: Some(own.view),
                        },
                        Source::Resync,
                    ),
                    Err(error) => tracing::warn!(%error, "redis backend: a bad stored own view"),
                },
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "redis backend: resync read failed");
                    return false;
                }
            }
        }
        true
    }
}

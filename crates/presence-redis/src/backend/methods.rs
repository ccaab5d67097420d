//! [`Backend`](presence_backend::Backend) for [`RedisBackend`]: each method of the trait as a
//! command appended to a shard stream (and the answer waited for), a
//! read of what the leaders store, or a directory scan.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use fred::prelude::KeysInterface;
use presence_core::{
    CalendarSource, CapState, CustomStatus, CustomStatusId, CustomStatusName, DeviceEvent,
    DisplayedStatus, PreferencesUpdate, SelfStatus, StatusRequest, Timestamp, UserPresence,
    WorkspaceSettings,
};
use presence_protocol::cluster::{
    self as wire, AdminCommand, ClusterCommand, CommandOk, StoredSelf, UserCommand,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::error::RedisError;
use crate::keys::Keys;
use presence_backend::{
    Backend, BackendError, BackendResult, ConnId, ConnectInfo, Interest, PresenceSnapshot,
    SelfSnapshot, Session, SettingsPatch, SocketEnd, StatusCounts, Update, UserListing,
};
use presence_core::Profile;

use super::directory::{ScannedUser, changed_since_version};
use super::stored_reads::snapshot_of;
use super::{LiveSocket, RedisBackend, decode, duration_ms, now_ms, unavailable};

#[async_trait]
impl Backend for RedisBackend {
    async fn connect(&self, session: &Session) -> BackendResult<ConnectInfo> {
        let inner = &self.inner;
        inner.check_running()?;
        inner.live.lock().insert(
            session.conn,
            LiveSocket {
                user: session.user.clone(),
                device: session.device.clone(),
                platform: session.platform,
                profile: session.profile.clone(),
            },
        );
        // Its own view is tracked (W3, resync) while the socket is open.
        inner.seen.lock().socket_opened(&session.user);
        let command = connect_command(&inner.config.node_id, session);
        let result = async {
            let ok = inner.request(&session.user, command).await?;
            let me = self_snapshot(&session.user, ok)?;
            let cluster = inner.cluster_state().await?;
            Ok(ConnectInfo {
                me,
                settings: cluster.settings,
                presence_active: cluster.cap.enabled,
            })
        }
        .await;
        if result.is_ok() {
            inner.count_changed.notify_one();
        } else {
            inner.live.lock().remove(&session.conn);
            inner.seen.lock().socket_closed(&session.user);
            // The leader may have applied the connect without us hearing
            // back: take it back so a refused connect leaves no ghost
            // device (if this append fails too, the device's heartbeat
            // lapses, since nothing refreshes it).
            let undo = disconnect_command(session, SocketEnd::Clean);
            let _ = inner.append(&session.user, undo, None).await;
        }
        result
    }

    async fn device_event(&self, session: &Session, event: DeviceEvent) -> BackendResult<()> {
        let command = ClusterCommand::User(UserCommand::DeviceEvent {
            device: session.device.clone(),
            event,
        });
        self.inner.request(&session.user, command).await.map(drop)
    }

    async fn calendar(
        &self,
        user: &str,
        event_id: String,
        busy: bool,
        source: CalendarSource,
    ) -> BackendResult<SelfSnapshot> {
        let command = ClusterCommand::User(UserCommand::Calendar {
            event_id,
            busy,
            source,
        });
        let ok = self.inner.request(user, command).await?;
        self_snapshot(user, ok)
    }

    async fn disconnect(&self, session: &Session, end: SocketEnd) -> BackendResult<()> {
        let removed = self.inner.live.lock().remove(&session.conn).is_some();
        if !removed {
            // Already disconnected (or never connected): nothing to tell.
            return Ok(());
        }
        self.inner.count_changed.notify_one();
        self.inner.seen.lock().socket_closed(&session.user);
        let command = disconnect_command(session, end);
        self.inner.request(&session.user, command).await.map(drop)
    }

    async fn set_status(
        &self,
        user: &str,
        profile: Option<&Profile>,
        request: StatusRequest,
    ) -> BackendResult<SelfSnapshot> {
        let command = ClusterCommand::User(UserCommand::SetStatus { request });
        let ok = self
            .inner
            .request_with_profile(user, command, profile)
            .await?;
        self_snapshot(user, ok)
    }

    async fn use_custom_status(
        &self,
        user: &str,
        profile: Option<&Profile>,
        id: &CustomStatusId,
    ) -> BackendResult<SelfSnapshot> {
        let command = ClusterCommand::User(UserCommand::UseCustomStatus { id: id.clone() });
        let ok = self
            .inner
            .request_with_profile(user, command, profile)
            .await?;
        self_snapshot(user, ok)
    }

    async fn set_preferences(
        &self,
        user: &str,
        update: PreferencesUpdate,
    ) -> BackendResult<SelfSnapshot> {
        let command = ClusterCommand::User(UserCommand::SetPreferences {
            auto_away: update.auto_away,
            idle_time_limit: update.idle_time_limit,
        });
        let ok = self.inner.request(user, command).await?;
        self_snapshot(user, ok)
    }

    async fn self_state(&self, user: &str) -> BackendResult<SelfSnapshot> {
        let inner = &self.inner;
        inner.check_running()?;
        let key = Keys::for_user(user, inner.config.shards).self_view(user);
        let stored: Option<String> = async {
            let value: Option<String> = inner.client.pool()?.get(key).await?;
            Ok::<_, RedisError>(value)
        }
        .await
        .map_err(unavailable)?;
        match stored {
            Some(json) => {
                let stored: StoredSelf = decode(&json, "a stored own view")?;
                Ok(SelfSnapshot {
                    user: Arc::from(user),
                    view: stored.view,
                    version: stored.version,
                })
            }
            None => {
                let settings = inner.cluster_state().await?.settings;
                Ok(SelfSnapshot {
                    user: Arc::from(user),
                    view: UserPresence::default().self_view(&settings),
                    version: 0,
                })
            }
        }
    }

    async fn touch_profile(&self, user: &str, profile: &Profile) -> BackendResult<()> {
        let command = ClusterCommand::User(UserCommand::TouchProfile {
            profile: wire_profile(profile),
        });
        self.inner.request(user, command).await.map(drop)
    }

    async fn put_profile(&self, user: &str, profile: &Profile) -> BackendResult<()> {
        let command = ClusterCommand::User(UserCommand::PutProfile {
            profile: wire_profile(profile),
        });
        self.inner.request(user, command).await.map(drop)
    }

    async fn presence(&self, users: &[Arc<str>]) -> BackendResult<Vec<PresenceSnapshot>> {
        let inner = &self.inner;
        inner.check_running()?;
        let views = inner.read_views(users).await?;
        let mut seen = inner.seen.lock();
        Ok(users
            .iter()
            .zip(views)
            .map(|(user, view)| {
                // Watched from now on (resyncs cover it); see `seen.rs`.
                seen.read(user);
                snapshot_of(user.clone(), view)
            })
            .collect())
    }

    async fn list_not_offline(&self, ids: Option<&[Arc<str>]>) -> BackendResult<Vec<UserListing>> {
        let inner = &self.inner;
        inner.check_running()?;
        let scanned = match ids {
            Some(ids) => inner.scan_users(ids.to_vec()).await?,
            None => inner.scan_users(inner.all_users().await?).await?,
        };
        Ok(scanned
            .into_iter()
            .filter(|u| u.presence.view.status != DisplayedStatus::Offline)
            .map(ScannedUser::listing)
            .collect())
    }

    async fn list_changed_since(
        &self,
        since: Timestamp,
        except: &str,
    ) -> BackendResult<Vec<UserListing>> {
        let inner = &self.inner;
        inner.check_running()?;
        let scanned = inner.scan_users(inner.all_users().await?).await?;
        Ok(scanned
            .into_iter()
            .filter(|u| &*u.presence.user != except)
            .filter(|u| u.presence.version >= changed_since_version(since))
            .map(ScannedUser::listing)
            .collect())
    }

    async fn user_by_username(&self, username: &str) -> BackendResult<Option<Arc<str>>> {
        let inner = &self.inner;
        inner.check_running()?;
        let scanned = inner.scan_users(inner.all_users().await?).await?;
        // A username can move to another user: the record written last
        // carries it now.
        Ok(scanned
            .into_iter()
            .filter_map(|u| {
                let record = u.record?;
                (record.profile.username.as_deref() == Some(username))
                    .then_some((record.updated_at, u.presence.user))
            })
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
            .map(|(_, user)| user))
    }

    /// The sum of every shard's `presence:{s}:counts`, which each leader
    /// commits with the views (so it is as fresh as a read of them); a
    /// scan of every user only while some shard has not written its
    /// counts yet (no leader since start, or data of an older version).
    async fn status_counts(&self) -> BackendResult<StatusCounts> {
        let inner = &self.inner;
        inner.check_running()?;
        let stored = inner
            .client
            .read_counts(inner.config.shards)
            .await
            .map_err(unavailable)?;
        if stored.iter().all(Option::is_some) {
            let mut counts = StatusCounts::default();
            for json in stored.into_iter().flatten() {
                let shard: wire::StoredCounts = decode(&json, "a shard's counts")?;
                counts.online += shard.online;
                counts.away += shard.away;
                counts.busy += shard.busy;
                counts.invisible += shard.invisible;
            }
            return Ok(counts);
        }
        let scanned = inner.scan_users(inner.all_users().await?).await?;
        let mut counts = StatusCounts::default();
        for user in scanned {
            match user.presence.view.status {
                DisplayedStatus::Online => counts.online += 1,
                DisplayedStatus::Away => counts.away += 1,
                DisplayedStatus::Busy => counts.busy += 1,
                DisplayedStatus::Offline => {
                    if user.own_status == Some(SelfStatus::Invisible) {
                        counts.invisible += 1;
                    }
                }
            }
        }
        Ok(counts)
    }

    async fn settings(&self) -> BackendResult<Arc<WorkspaceSettings>> {
        self.inner.check_running()?;
        Ok(self.inner.cluster_state().await?.settings)
    }

    async fn update_settings(&self, patch: SettingsPatch) -> BackendResult<Arc<WorkspaceSettings>> {
        let command = ClusterCommand::Admin(AdminCommand::UpdateSettings { patch });
        let ok = self.inner.admin_request(command).await?;
        let settings = ok.settings.ok_or_else(|| {
            BackendError::Unavailable("the leader's answer lacks settings".into())
        })?;
        Ok(Arc::new(settings))
    }

    async fn custom_statuses(&self) -> BackendResult<Vec<CustomStatus>> {
        self.inner.check_running()?;
        Ok(self.inner.cluster_state().await?.custom)
    }

    async fn create_custom_status(
        &self,
        name: CustomStatusName,
        status_type: DisplayedStatus,
    ) -> BackendResult<CustomStatus> {
        let command = ClusterCommand::Admin(AdminCommand::CreateCustomStatus {
            id: self.inner.new_custom_status_id(),
            name,
            status_type,
        });
        custom_status_of(self.inner.admin_request(command).await?)
    }

    async fn update_custom_status(
        &self,
        id: &CustomStatusId,
        name: Option<CustomStatusName>,
        status_type: Option<DisplayedStatus>,
    ) -> BackendResult<CustomStatus> {
        let command = ClusterCommand::Admin(AdminCommand::UpdateCustomStatus {
            id: id.clone(),
            name,
            status_type,
        });
        custom_status_of(self.inner.admin_request(command).await?)
    }

    async fn delete_custom_status(&self, id: &CustomStatusId) -> BackendResult<CustomStatus> {
        let command = ClusterCommand::Admin(AdminCommand::DeleteCustomStatus { id: id.clone() });
        custom_status_of(self.inner.admin_request(command).await?)
    }

    async fn cap_state(&self) -> BackendResult<CapState> {
        // Always fresh: the count moves without control messages.
        self.inner.check_running()?;
        self.inner.invalidate_cluster();
        Ok(self.inner.cluster_state().await?.cap)
    }

    async fn enable_broadcast(&self) -> BackendResult<CapState> {
        let ok = self
            .inner
            .admin_request(ClusterCommand::Admin(AdminCommand::EnableBroadcast))
            .await?;
        ok.cap
            .ok_or_else(|| BackendError::Unavailable("the leader's answer lacks the cap".into()))
    }

    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.inner.updates.subscribe()
    }

    fn set_interest(&self, interest: Arc<dyn Interest>) {
        *self.inner.interest.write() = Some(interest);
    }

    /// Subscribed, connected, the node lease renewed within its ttl (a
    /// connection that looks open but answers nothing, a silent partition,
    /// fails this within one ttl), and with Sentinel, listening to the
    /// sentinels' failover events ([`hears_sentinels`](crate::RedisClient::hears_sentinels)): a
    /// node that serves before it hears them can write to a primary that
    /// was just failed over.
    async fn ready(&self) -> bool {
        let inner = &self.inner;
        let renewed = inner.lease_renewed_ms.load(Ordering::Acquire);
        let fresh = now_ms().saturating_sub(renewed) <= duration_ms(inner.config.node_lease_ttl);
        !inner.stopping.load(Ordering::Acquire)
            && inner.subscribed.load(Ordering::Acquire)
            && inner.client.is_connected()
            && fresh
            && inner.client.hears_sentinels()
    }

    async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // Deregister every device (D7: a drain is a clean end).
        let sockets: Vec<(ConnId, LiveSocket)> = inner.live.lock().drain().collect();
        for (conn, socket) in sockets {
            let session = Session {
                user: socket.user.clone(),
                device: socket.device.clone(),
                platform: socket.platform,
                conn,
                profile: socket.profile.clone(),
            };
            let command = disconnect_command(&session, SocketEnd::Clean);
            if let Err(error) = inner.append(&socket.user, command, None).await {
                tracing::warn!(%error, "redis backend: a device could not be deregistered at shutdown");
            }
        }
        inner.stop.notify_waiters();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        // Leave the node registry (its lease and socket count), once no
        // task can refresh it again: the cap count drops at once, and a
        // clean leave is not counted as a lapse (H2).
        if let Err(error) = inner.client.forget_node(&inner.config.node_id).await {
            tracing::warn!(%error, "redis backend: could not leave the node registry");
        }
        inner.waiters.lock().clear();
    }
}

// ---- Helpers ----

pub(super) fn connect_command(node: &str, session: &Session) -> ClusterCommand {
    ClusterCommand::User(UserCommand::Connect {
        device: session.device.clone(),
        platform: session.platform,
        conn: session.conn.0,
        node: node.to_owned(),
        profile: wire_profile(&session.profile),
    })
}

pub(super) fn disconnect_command(session: &Session, end: SocketEnd) -> ClusterCommand {
    ClusterCommand::User(UserCommand::Disconnect {
        device: session.device.clone(),
        conn: session.conn.0,
        end: match end {
            SocketEnd::Clean => wire::SocketEnd::Clean,
            SocketEnd::Lost => wire::SocketEnd::Lost,
        },
    })
}

pub(super) fn wire_profile(profile: &Profile) -> wire::Profile {
    profile.clone()
}

pub(super) fn self_snapshot(user: &str, ok: CommandOk) -> BackendResult<SelfSnapshot> {
    let me = ok.me.ok_or_else(|| {
        BackendError::Unavailable("the leader's answer lacks the own view".into())
    })?;
    Ok(SelfSnapshot {
        user: Arc::from(user),
        view: me.view,
        version: me.version,
    })
}

pub(super) fn custom_status_of(ok: CommandOk) -> BackendResult<CustomStatus> {
    ok.custom_status.ok_or_else(|| {
        BackendError::Unavailable("the leader's answer lacks the custom status".into())
    })
}

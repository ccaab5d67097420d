//! The backend boundary: everything the gateway asks of "the rest of the
//! cluster". The embedded `MemoryBackend` (crate `presence-embedded`) answers in
//! process; the Redis backend answers through Redis and the aggregator.
//! The gateway only ever sees this trait, so switching backends never
//! touches WebSocket or REST code.
//!
//! Changes come back as a stream of [`Update`]s on a broadcast channel.
//! Receivers that lag must resynchronise the users they watch with
//! [`Backend::presence`]; versions (W3) make that idempotent.

pub mod rate_limits;

pub use rate_limits::{BucketRate, SharedRateLimits};

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use presence_core::{
    CalendarSource, CapState, CustomStatus, CustomStatusId, CustomStatusName, DeviceEvent,
    DeviceId, DisplayedStatus, Platform, PreferencesUpdate, PresenceError, PublicView, SelfView,
    StatusRequest, Timestamp, WorkspaceSettings,
};
use thiserror::Error;
use tokio::sync::broadcast;

/// A user's profile (defined in `presence-core`).
pub use presence_core::Profile;

/// Identifies one socket across the cluster, so a late disconnect of a
/// replaced socket never removes its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// One connected device as the gateway knows it.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: Arc<str>,
    pub device: DeviceId,
    pub platform: Platform,
    pub conn: ConnId,
    pub profile: Profile,
}

/// How a socket ended (D7; defined in `presence-core`).
pub use presence_core::SocketEnd;

/// What others see of one user, with its version (W3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceSnapshot {
    pub user: Arc<str>,
    pub view: PublicView,
    pub version: u64,
}

/// What a user sees of themselves, with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfSnapshot {
    pub user: Arc<str>,
    pub view: SelfView,
    pub version: u64,
}

/// A user as a directory listing shows them (Rocket.Chat `users.presence`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserListing {
    pub presence: PresenceSnapshot,
    pub profile: Profile,
}

/// What `connect` returns: everything the `ready` message needs.
#[derive(Clone, Debug)]
pub struct ConnectInfo {
    pub me: SelfSnapshot,
    pub settings: Arc<WorkspaceSettings>,
    pub presence_active: bool,
}

/// A change pushed to every gateway.
#[derive(Clone, Debug)]
pub enum Update {
    /// What others see of `user` changed.
    Presence {
        snapshot: Arc<PresenceSnapshot>,
        /// When the change was decided, for the delivery-latency histogram.
        changed_at: SystemTime,
    },
    /// What `user` sees of themselves changed; goes to their own sockets.
    SelfState(Arc<SelfSnapshot>),
    /// X2–X4: the broadcast was disabled or re-enabled.
    Broadcast { active: bool },
    /// The workspace settings changed.
    Settings(Arc<WorkspaceSettings>),
    /// D1 across nodes: this node's socket `conn` of `user` was replaced by
    /// a socket of the same device on another node; close it with the
    /// `replaced` notice.
    Replaced { user: Arc<str>, conn: ConnId },
}

/// A change to the workspace settings (defined in `presence-core`).
pub use presence_core::SettingsPatch;

/// How many users show each status (defined in `presence-core`).
pub use presence_core::StatusCounts;

#[derive(Debug, Error)]
pub enum BackendError {
    /// A presence rule refused the request; the code goes to the client.
    #[error(transparent)]
    Rule(#[from] PresenceError),
    /// The durable store failed; the change may not be stored (the
    /// store's own error, as text: this crate knows no store).
    #[error("the data store failed: {0}")]
    Store(String),
    /// The backend cannot be reached right now (cluster mode).
    #[error("the presence backend is unavailable: {0}")]
    Unavailable(String),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
}

impl BackendError {
    /// The stable machine code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rule(e) => e.code(),
            Self::Store(_) => "store_unavailable",
            Self::Unavailable(_) => "backend_unavailable",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// Which users this node's sockets want updates about: the users they
/// watch and the users they belong to. A cluster backend hears every
/// shard's updates and decodes only those of users wanted here.
pub trait Interest: Send + Sync + 'static {
    /// Whether a socket here watches `user` or belongs to `user`. Must
    /// turn true before the gateway reads what it then shows (W2, W4): a
    /// watcher registers, then reads.
    fn wants(&self, user: &str) -> bool;
}

/// Everything the gateway needs from the presence backend.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A new socket (D1). Counts towards the cap (X1).
    async fn connect(&self, session: &Session) -> BackendResult<ConnectInfo>;
    /// A device event (D2–D8).
    async fn device_event(&self, session: &Session, event: DeviceEvent) -> BackendResult<()>;
    /// A calendar event from a device or an integration (K1, K2).
    async fn calendar(
        &self,
        user: &str,
        event_id: String,
        busy: bool,
        source: CalendarSource,
    ) -> BackendResult<SelfSnapshot>;
    /// The socket ended (D7). Ignored for a socket that was replaced.
    async fn disconnect(&self, session: &Session, end: SocketEnd) -> BackendResult<()>;

    /// Sets `user`'s status and/or text (T1–T6, I2, A2, A3, M1, M2). The
    /// change is durable when this returns.
    async fn set_status(
        &self,
        user: &str,
        profile: Option<&Profile>,
        request: StatusRequest,
    ) -> BackendResult<SelfSnapshot>;
    /// C2: selects an admin-defined custom status.
    async fn use_custom_status(
        &self,
        user: &str,
        profile: Option<&Profile>,
        id: &CustomStatusId,
    ) -> BackendResult<SelfSnapshot>;
    /// S1, S2.
    async fn set_preferences(
        &self,
        user: &str,
        update: PreferencesUpdate,
    ) -> BackendResult<SelfSnapshot>;
    /// What `user` sees of themselves.
    async fn self_state(&self, user: &str) -> BackendResult<SelfSnapshot>;
    /// Records the profile a token or client carried: each field it says
    /// something about replaces the stored one, the others are kept.
    async fn touch_profile(&self, user: &str, profile: &Profile) -> BackendResult<()>;
    /// R3: replaces `user`'s stored profile whole (an admin's upsert, or a
    /// directory sync); durable when this returns. Tokens that carry
    /// profile claims still override the fields they name.
    async fn put_profile(&self, user: &str, profile: &Profile) -> BackendResult<()>;

    /// What others see of each of `users` (unknown users are offline at
    /// version 0), in the order asked.
    async fn presence(&self, users: &[Arc<str>]) -> BackendResult<Vec<PresenceSnapshot>>;
    /// Users with profiles: those of `ids` that are not offline.
    async fn list_not_offline(&self, ids: Option<&[Arc<str>]>) -> BackendResult<Vec<UserListing>>;
    /// Users whose public view changed at or after `since`, except `except`.
    async fn list_changed_since(
        &self,
        since: Timestamp,
        except: &str,
    ) -> BackendResult<Vec<UserListing>>;
    /// The user id carrying this username, if known.
    async fn user_by_username(&self, username: &str) -> BackendResult<Option<Arc<str>>>;
    /// Users per displayed status.
    async fn status_counts(&self) -> BackendResult<StatusCounts>;

    async fn settings(&self) -> BackendResult<Arc<WorkspaceSettings>>;
    async fn update_settings(&self, patch: SettingsPatch) -> BackendResult<Arc<WorkspaceSettings>>;

    async fn custom_statuses(&self) -> BackendResult<Vec<CustomStatus>>;
    async fn create_custom_status(
        &self,
        name: CustomStatusName,
        status_type: DisplayedStatus,
    ) -> BackendResult<CustomStatus>;
    /// C3: also updates every user who has it selected.
    async fn update_custom_status(
        &self,
        id: &CustomStatusId,
        name: Option<CustomStatusName>,
        status_type: Option<DisplayedStatus>,
    ) -> BackendResult<CustomStatus>;
    /// C3: its users keep their presence and the name as plain text.
    async fn delete_custom_status(&self, id: &CustomStatusId) -> BackendResult<CustomStatus>;

    /// X5.
    async fn cap_state(&self) -> BackendResult<CapState>;
    /// X4.
    async fn enable_broadcast(&self) -> BackendResult<CapState>;

    /// A receiver of every change from now on (with an [`Interest`] set:
    /// of every change of a user it wants, and every cluster-wide one).
    fn subscribe(&self) -> broadcast::Receiver<Update>;
    /// Tells the backend which users the gateway wants updates about. A
    /// backend may skip the others' [`Update::Presence`] and
    /// [`Update::SelfState`]; by default it passes on everything.
    fn set_interest(&self, _interest: Arc<dyn Interest>) {}
    /// Whether the backend can serve requests (for `/readyz`).
    async fn ready(&self) -> bool;
    /// Flushes durable data and stops background work.
    async fn shutdown(&self);
}

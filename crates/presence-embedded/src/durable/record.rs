//! What is stored: one record per user, the workspace settings, one record
//! per custom status, and the persisted part of the presence cap. Values
//! are JSON, so a record written by an older build still decodes when a
//! field is added with a default.

pub use presence_core::Profile;
use presence_core::{CustomStatus, CustomStatusId, WorkspaceSettings};
/// The user record is the engine's output (defined in `presence-engine`).
pub use presence_engine::UserRecord;
use serde::{Deserialize, Serialize};

/// The part of the presence cap (X1–X5) that must survive restarts. The
/// enabled flag above all: X4 says broadcasting never re-enables itself, so
/// a restart must not quietly turn it back on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedCap {
    pub cap_enabled: bool,
    pub peak: u64,
}

/// Everything in a store, as [`DurableStore::load`](super::DurableStore::load)
/// returns it. `users` is ordered by user id and `custom_statuses` by
/// status id. `None` means "never written": the caller applies defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub users: Vec<(String, UserRecord)>,
    pub settings: Option<WorkspaceSettings>,
    pub custom_statuses: Vec<CustomStatus>,
    pub cap: Option<PersistedCap>,
}

/// One change inside a batch. Puts replace the whole record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    User {
        id: String,
        record: UserRecord,
    },
    Settings(WorkspaceSettings),
    /// Creates or replaces the status with this id.
    CustomStatus(CustomStatus),
    /// Deleting an id that does not exist is not an error.
    DeleteCustomStatus(CustomStatusId),
    Cap(PersistedCap),
}

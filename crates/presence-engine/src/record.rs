//! [`UserRecord`]: everything durable about one user, as the engine hands
//! it out to be stored (the embedded backend's local store, or the user
//! document `presence:{s}:user:<uid>` in cluster mode). Stored as JSON, so
//! a record written by an older build still decodes when a field is added
//! with a default.

use presence_core::{DurableState, Profile, Timestamp};
use serde::{Deserialize, Serialize};

/// Everything durable about one user (M3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Chosen status, text, expiry chain, calendar claims, preferences and
    /// the presence version (W3).
    pub state: DurableState,
    #[serde(default)]
    pub profile: Profile,
    /// When the service last changed this record.
    pub updated_at: Timestamp,
}

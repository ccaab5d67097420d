//! What a user's token says about them (username, display name), kept with
//! their durable state for display. One type for every layer: the
//! gateway reads it from the token, the cluster commands carry it, the
//! engine keeps it with the user, and the durable record stores it.

use serde::{Deserialize, Serialize};

/// A user's username and display name, as their token last said. An empty
/// profile (both absent) never overwrites a stored one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Profile {
    /// Whether the token said nothing about the user.
    pub fn is_empty(&self) -> bool {
        self.username.is_none() && self.name.is_none()
    }
}

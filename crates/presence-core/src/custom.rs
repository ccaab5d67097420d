//! Admin-defined custom statuses (C1–C3): a name and the presence type it
//! maps to. The registry enforces unique, case-insensitive names; applying
//! a custom status to a user lives in [`crate::UserPresence`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{CustomStatusId, CustomStatusName, DisplayedStatus, PresenceError, Timestamp};

/// One admin-defined custom status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomStatus {
    pub id: CustomStatusId,
    pub name: CustomStatusName,
    /// The presence it selects (C2); `offline` selects invisible.
    pub status_type: DisplayedStatus,
    pub updated_at: Timestamp,
}

/// All custom statuses of the workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomStatusRegistry {
    by_id: BTreeMap<CustomStatusId, CustomStatus>,
}

impl CustomStatusRegistry {
    pub fn from_statuses(statuses: impl IntoIterator<Item = CustomStatus>) -> Self {
        Self {
            by_id: statuses.into_iter().map(|s| (s.id.clone(), s)).collect(),
        }
    }

    pub fn get(&self, id: &CustomStatusId) -> Result<&CustomStatus, PresenceError> {
        self.by_id
            .get(id)
            .ok_or_else(|| PresenceError::CustomStatusNotFound { id: id.to_string() })
    }

    /// All statuses ordered by name (case-insensitively), then id.
    pub fn list(&self) -> Vec<&CustomStatus> {
        let mut all: Vec<&CustomStatus> = self.by_id.values().collect();
        all.sort_by_cached_key(|s| (s.name.unique_key(), s.id.clone()));
        all
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// C1: adds a status; the name must not be taken, ignoring case.
    pub fn create(
        &mut self,
        id: CustomStatusId,
        name: CustomStatusName,
        status_type: DisplayedStatus,
        now: Timestamp,
    ) -> Result<CustomStatus, PresenceError> {
        self.ensure_name_free(&name, None)?;
        let status = CustomStatus {
            id: id.clone(),
            name,
            status_type,
            updated_at: now,
        };
        self.by_id.insert(id, status.clone());
        Ok(status)
    }

    /// C1/C3: renames and/or remaps a status. The caller then applies the
    /// returned status to every user who has it selected.
    pub fn update(
        &mut self,
        id: &CustomStatusId,
        name: Option<CustomStatusName>,
        status_type: Option<DisplayedStatus>,
        now: Timestamp,
    ) -> Result<CustomStatus, PresenceError> {
        self.get(id)?;
        if let Some(name) = &name {
            self.ensure_name_free(name, Some(id))?;
        }
        let status = self.by_id.get_mut(id).expect("checked above");
        if let Some(name) = name {
            status.name = name;
        }
        if let Some(status_type) = status_type {
            status.status_type = status_type;
        }
        status.updated_at = now;
        Ok(status.clone())
    }

    /// C1/C3: removes a status and returns it.
    pub fn delete(&mut self, id: &CustomStatusId) -> Result<CustomStatus, PresenceError> {
        self.by_id
            .remove(id)
            .ok_or_else(|| PresenceError::CustomStatusNotFound { id: id.to_string() })
    }

    fn ensure_name_free(
        &self,
        name: &CustomStatusName,
        except: Option<&CustomStatusId>,
    ) -> Result<(), PresenceError> {
        let key = name.unique_key();
        let taken = self
            .by_id
            .values()
            .any(|s| Some(&s.id) != except && s.name.unique_key() == key);
        if taken {
            return Err(PresenceError::CustomStatusNameTaken {
                name: name.as_str().to_owned(),
            });
        }
        Ok(())
    }
}

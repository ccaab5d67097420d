//! The on-disk layout of `presence.redb`: tables, keys, value encoding.
//!
//! | table             | key                  | value                          |
//! |-------------------|----------------------|--------------------------------|
//! | `meta`            | `"schema_version"`   | `u64`, currently [`SCHEMA_VERSION`] |
//! | `users`           | user id              | JSON [`UserRecord`]            |
//! | `settings`        | `"workspace"`        | JSON `WorkspaceSettings`       |
//! | `settings`        | `"cap"`              | JSON [`PersistedCap`]          |
//! | `custom_statuses` | custom status id     | JSON `CustomStatus`            |
//!
//! **Architecture Invariant:** the `meta` table and its `schema_version`
//! key keep this exact type forever, so every build can tell whether it
//! may read a file. Anything else may change with a schema bump.

use redb::TableDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(doc)]
use super::{PersistedCap, UserRecord};
use super::{StoreError, Write};

/// The schema this build writes, and the newest it can read.
pub const SCHEMA_VERSION: u64 = 1;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(super) const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
pub(super) const CUSTOM_STATUSES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("custom_statuses");

pub(super) const SCHEMA_VERSION_KEY: &str = "schema_version";
pub(super) const WORKSPACE_SETTINGS_KEY: &str = "workspace";
pub(super) const CAP_KEY: &str = "cap";

/// The tables a batch writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Table {
    Users,
    Settings,
    CustomStatuses,
}

impl Table {
    pub(super) fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Settings => "settings",
            Table::CustomStatuses => "custom_statuses",
        }
    }
}

/// One encoded change, ready for the commit thread.
#[derive(Debug)]
pub(super) enum Op {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: String,
    },
}

impl Op {
    /// Roughly what the op adds to a transaction, for bounding groups.
    pub(super) fn size(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
        }
    }
}

/// Encodes a batch on the caller's thread; fails without side effects if
/// any record does not encode.
pub(super) fn encode(batch: Vec<Write>) -> Result<Vec<Op>, StoreError> {
    batch.into_iter().map(encode_one).collect()
}

/// Decodes one stored value, naming the table and key if it is corrupt.
pub(super) fn decode<T: DeserializeOwned>(
    table: Table,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::CorruptRecord {
        table: table.name(),
        key: key.to_owned(),
        reason: err.to_string(),
    })
}

fn encode_one(write: Write) -> Result<Op, StoreError> {
    Ok(match write {
        Write::User { id, record } => {
            let value = to_json(&record, || format!("the record of user {id:?}"))?;
            Op::Put {
                table: Table::Users,
                key: id,
                value,
            }
        }
        Write::Settings(settings) => Op::Put {
            table: Table::Settings,
            key: WORKSPACE_SETTINGS_KEY.to_owned(),
            value: to_json(&settings, || "the workspace settings".to_owned())?,
        },
        Write::CustomStatus(status) => {
            let value = to_json(&status, || {
                format!("custom status {:?}", status.id.as_str())
            })?;
            Op::Put {
                table: Table::CustomStatuses,
                key: status.id.into(),
                value,
            }
        }
        Write::DeleteCustomStatus(id) => Op::Delete {
            table: Table::CustomStatuses,
            key: id.into(),
        },
        Write::Cap(cap) => Op::Put {
            table: Table::Settings,
            key: CAP_KEY.to_owned(),
            value: to_json(&cap, || "the presence cap state".to_owned())?,
        },
    })
}

fn to_json(value: &impl Serialize, what: impl FnOnce() -> String) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Encode {
        what: what(),
        reason: err.to_string(),
    })
}

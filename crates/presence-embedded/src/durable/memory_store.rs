//! A [`DurableStore`] that keeps everything in memory: for tests and for
//! runs without a data directory. Same semantics as the redb store, minus
//! surviving the process.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use presence_core::{CustomStatus, CustomStatusId, WorkspaceSettings};

use super::{DurableStore, PersistedCap, Snapshot, StoreError, UserRecord, Write, WriteTicket};

/// Non-persistent store. A batch is applied under one lock, so batches are
/// atomic and ordered, and its ticket is resolved before `write` returns.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing here panics while holding the lock, and the state is
        // consistent between batches anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DurableStore for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let state = self.state();
        Ok(Snapshot {
            users: state
                .users
                .iter()
                .map(|(id, record)| (id.clone(), record.clone()))
                .collect(),
            settings: state.settings.clone(),
            custom_statuses: state.custom_statuses.values().cloned().collect(),
            cap: state.cap,
        })
    }

    fn write(&self, batch: Vec<Write>) -> WriteTicket {
        let mut state = self.state();
        if state.closed {
            return WriteTicket::resolved(Err(StoreError::Closed));
        }
        for write in batch {
            state.apply(write);
        }
        WriteTicket::resolved(Ok(()))
    }

    fn shutdown(&self) {
        self.state().closed = true;
    }
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, UserRecord>,
    settings: Option<WorkspaceSettings>,
    custom_statuses: BTreeMap<CustomStatusId, CustomStatus>,
    cap: Option<PersistedCap>,
    closed: bool,
}

impl State {
    fn apply(&mut self, write: Write) {
        match write {
            Write::User { id, record } => {
                self.users.insert(id, record);
            }
            Write::Settings(settings) => self.settings = Some(settings),
            Write::CustomStatus(status) => {
                self.custom_statuses.insert(status.id.clone(), status);
            }
            Write::DeleteCustomStatus(id) => {
                self.custom_statuses.remove(&id);
            }
            Write::Cap(cap) => self.cap = Some(cap),
        }
    }
}

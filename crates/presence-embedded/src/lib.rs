//! `presence-embedded`: the embedded backend, every role of presence in one
//! process (the zero-setup default of DESIGN §2).
//!
//! - [`memory`]: [`MemoryBackend`], a thin driver of `presence-engine`
//!   that answers the gateway's [`Backend`](presence_backend::Backend)
//!   trait in process.
//! - [`durable`]: the durable user data of DESIGN.md M3 (chosen status,
//!   text, preferences, profile, workspace settings, custom statuses, the
//!   cap's enabled flag), stored in a local redb file with group commit,
//!   or in memory for tests.
#![forbid(unsafe_code)]

pub mod durable;
pub mod memory;

pub use memory::{Clock, MemoryBackend, MemoryConfig, SystemClock};

pub use durable::{
    CommitObserver, DurableStore, MemoryStore, PersistedCap, RedbOptions, RedbStore, Snapshot,
    StoreError, UserRecord, Write, WriteTicket,
};

impl From<StoreError> for presence_backend::BackendError {
    fn from(error: StoreError) -> Self {
        presence_backend::BackendError::Store(error.to_string())
    }
}

//! `presence-store`: where presence state lives outside a process.
//!
//! - [`durable`]: the durable user data of DESIGN.md M3 and the "embedded
//!   default" (chosen status, text, preferences, profile, workspace
//!   settings, custom statuses, the cap's enabled flag), stored in a local
//!   redb file with group commit, or in memory for tests.
#![forbid(unsafe_code)]

pub mod durable;

pub use durable::{
    CommitObserver, DurableStore, MemoryStore, PersistedCap, Profile, RedbOptions, RedbStore,
    Snapshot, StoreError, UserRecord, Write, WriteTicket,
};

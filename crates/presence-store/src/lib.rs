//! `presence-store`: where presence state lives outside a process.
//!
//! - [`durable`]: the durable user data of DESIGN.md M3 and the "embedded
//!   default" (chosen status, text, preferences, profile, workspace
//!   settings, custom statuses, the cap's enabled flag), stored in a local
//!   redb file with group commit, or in memory for tests.
//! - [`backend`]: the [`Backend`] trait the gateway talks to, whatever
//!   runs behind it.
//! - [`memory`]: the embedded backend: every role in one process.
//! - [`redis`]: the Redis foundation of cluster mode: keys, connection,
//!   fenced scripts, streams, heartbeats, pub/sub.
#![forbid(unsafe_code)]

pub mod backend;
pub mod durable;
pub mod memory;
pub mod rate_limits;
pub mod redis;

pub use backend::{
    Backend, BackendError, BackendResult, ConnId, ConnectInfo, Interest, PresenceSnapshot,
    SelfSnapshot, Session, SettingsPatch, SocketEnd, StatusCounts, Update, UserListing,
};
pub use memory::{Clock, MemoryBackend, MemoryConfig, SystemClock};
pub use rate_limits::{BucketRate, SharedRateLimits};

pub use durable::{
    CommitObserver, DurableStore, MemoryStore, PersistedCap, Profile, RedbOptions, RedbStore,
    Snapshot, StoreError, UserRecord, Write, WriteTicket,
};

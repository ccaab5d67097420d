//! `presence-engine`: the per-shard presence state machine, written once
//! for both modes.
//!
//! `presence-core` decides what one user's status is. Around it, a shard
//! of users needs bookkeeping that both the embedded backend and a
//! cluster shard leader do the same way, so it lives here and only here:
//!
//! - [`Engine`] (`engine.rs`): users, devices and the socket holding each
//!   (`owners.rs`: the per-node device index for H2), each user's next
//!   timer (`timers.rs`: D2 idle, D7 grace, T6 expiry), the users per
//!   status (A3), the presence cap (X1–X4, [`CapOwner`] in `cap.rs`),
//!   custom statuses and their fan-out to users (C1–C3), re-evaluation of
//!   every user when the workspace settings move (S1, I2, K1, T5), and
//!   versions (W3).
//! - [`Changes`] (`changes.rs`): what one batch changed, as final values
//!   per user plus workspace-wide [`Announcement`]s; `batch.rs` computes
//!   them by comparing each touched user with what was handed out before.
//! - [`UserRecord`] (`record.rs`): the durable record of one user.
//!
//! The engine is pure and clock-free like `presence-core`: time comes in
//! as arguments, nothing does I/O. Drivers:
//!
//! - the embedded backend (`presence-store`'s `MemoryBackend`) holds one
//!   engine with every user behind a lock, calls it per request and turns
//!   the changes into updates and durable writes;
//! - a cluster shard leader (`presence-aggregator`'s `ShardState`) holds
//!   one engine per shard it leads, feeds it stream entries and sweeps,
//!   and commits the changes to Redis in one fenced script.
#![forbid(unsafe_code)]

mod batch;
mod cap;
mod changes;
mod engine;
mod owners;
mod record;
mod timers;

pub use cap::CapOwner;
pub use changes::{Announcement, Changes, OwnedDevice, Owner, Replaced, UserChange};
pub use engine::{Committed, Engine, EngineConfig, EngineUser, RestoredUser};
pub use record::UserRecord;

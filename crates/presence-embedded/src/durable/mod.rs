//! Durable user data (DESIGN.md M3, "Embedded default").
//!
//! The service keeps every user's chosen status, text, preferences and
//! profile, the workspace settings, the admin-defined custom statuses and
//! the presence cap's enabled flag in memory, and mirrors each change here
//! *before* it acknowledges the client. After a restart it rebuilds its
//! state from one [`DurableStore::load`].
//!
//! Data flow:
//!
//! ```text
//!   service ── store.write(vec![Write, ..]) ──► WriteTicket ── .await ──► ack the client
//!                  │ encode to JSON on the caller's thread
//!                  ▼
//!          FIFO queue ──► commit thread: drain up to N batches,
//!                         one redb write transaction, fsync, resolve tickets
//! ```
//!
//! Two implementations pass one conformance suite
//! (`tests/durable_conformance.rs`):
//! - [`RedbStore`]: a single redb file, `<data-dir>/presence.redb`, written
//!   by one dedicated thread with group commit, so a thousand concurrent
//!   writers cost one fsync.
//! - [`MemoryStore`]: the same semantics, without persistence.
//!
//! **Architecture Invariant:** a [`WriteTicket`] resolves `Ok` only once its
//! batch is committed and fsynced; batches become durable in submission
//! order; a batch is all-or-nothing.

mod error;
mod layout;
mod memory_store;
mod record;
mod redb_store;
mod ticket;
mod writer;

use std::time::Duration;

pub use error::StoreError;
pub use layout::SCHEMA_VERSION;
pub use memory_store::MemoryStore;
pub use record::{PersistedCap, Profile, Snapshot, UserRecord, Write};
pub use redb_store::{FILE_NAME, RedbOptions, RedbStore};
pub use ticket::WriteTicket;

/// Called after every successful commit with how long the transaction took
/// (from `begin_write` to the end of the fsync) and how many batches it
/// carried. It runs on the commit thread: it must be quick and must not
/// block or panic.
pub type CommitObserver = Box<dyn Fn(Duration, usize) + Send + Sync>;

/// Where the durable user data lives.
///
/// Callers may rely on:
/// - **Durable on `Ok`:** a ticket resolves `Ok(())` only after its whole
///   batch is committed (and, for persistent stores, fsynced).
/// - **FIFO:** a batch submitted earlier is durable no later than a batch
///   submitted later, and later batches overwrite earlier ones.
/// - **Atomic batches:** a batch is visible completely or not at all.
/// - **Never hangs:** after [`shutdown`](Self::shutdown) (or if the store
///   fails) every pending and future ticket resolves with an error.
/// - Dropping a ticket does not cancel its write.
pub trait DurableStore: Send + Sync + 'static {
    /// Reads everything. Blocking; call it at startup (or from a blocking
    /// task). Sees every batch whose ticket resolved `Ok`; batches still
    /// pending may or may not be visible. A record that does not decode
    /// fails the whole load with [`StoreError::CorruptRecord`] naming its
    /// table and key.
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Submits one atomic batch. Never blocks; await the ticket before
    /// acknowledging the client.
    fn write(&self, batch: Vec<Write>) -> WriteTicket;

    /// Makes every batch submitted before this call durable, then refuses
    /// new writes with [`StoreError::Closed`]. Blocks until done (for
    /// [`RedbStore`], until its commit thread has exited). Idempotent.
    /// `load` keeps working.
    fn shutdown(&self);
}

//! Group commit: the one thread that writes to the redb file.
//!
//! Submitters push encoded batches onto a FIFO queue and get a ticket back.
//! The commit thread blocks for the first batch, then drains whatever else
//! is already queued (up to the group limits) into one write transaction
//! with immediate durability, commits (one fsync) and resolves every ticket
//! of the group with the same result. While it commits, new batches queue
//! up and form the next group, so the fsync rate stays constant however
//! many writers there are, and latency stays about two commits at worst.
//!
//! The queue itself is unbounded: its depth is what the service has in
//! flight, which the service bounds (each write awaits its ticket before
//! the client is acknowledged).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, Table as RedbTable};
use tokio::sync::oneshot;

use super::layout::{CUSTOM_STATUSES, Op, SETTINGS, Table, USERS};
use super::{CommitObserver, StoreError, WriteTicket};

/// How much one transaction may carry. The first batch of a group always
/// goes in, however large.
#[derive(Clone, Copy, Debug)]
pub(super) struct GroupLimits {
    pub(super) max_batches: usize,
    pub(super) max_bytes: usize,
}

/// The handle to the commit thread.
pub(super) struct CommitThread {
    queue: mpsc::Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl CommitThread {
    pub(super) fn spawn(
        db: Arc<Database>,
        limits: GroupLimits,
        on_commit: Option<CommitObserver>,
    ) -> std::io::Result<Self> {
        let (queue, inbox) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("presence-store-commit".to_owned())
            .spawn(move || run(&db, &inbox, limits, on_commit.as_deref()))?;
        Ok(Self {
            queue,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(super) fn submit(&self, ops: Vec<Op>) -> WriteTicket {
        let (done, ticket) = WriteTicket::pending();
        let bytes = ops.iter().map(Op::size).sum();
        let job = Job { ops, bytes, done };
        if let Err(mpsc::SendError(Message::Batch(job))) = self.queue.send(Message::Batch(job)) {
            // The thread has exited: shut down, or it died.
            let _ = job.done.send(Err(StoreError::Closed));
        }
        ticket
    }

    /// Commits everything queued so far, stops the thread and waits for it.
    pub(super) fn shutdown(&self) {
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(handle) = thread.take() else {
            return;
        };
        // If the thread already died, the send fails and the join reports it.
        let _ = self.queue.send(Message::Shutdown);
        if handle.join().is_err() {
            tracing::error!(
                "the data store commit thread panicked; unacknowledged writes are lost"
            );
        }
    }
}

enum Message {
    Batch(Job),
    Shutdown,
}

struct Job {
    ops: Vec<Op>,
    bytes: usize,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The commit thread's loop. Returning drops the queue's receiver, which
/// resolves every batch still queued (and every later one) as `Closed`.
fn run(
    db: &Database,
    inbox: &mpsc::Receiver<Message>,
    limits: GroupLimits,
    on_commit: Option<&(dyn Fn(Duration, usize) + Send + Sync)>,
) {
    let mut group: Vec<Job> = Vec::new();
    loop {
        let Ok(first) = inbox.recv() else {
            return;
        };
        let mut stop = false;
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Batch(job) => {
                    bytes += job.bytes;
                    group.push(job);
                }
                Message::Shutdown => {
                    stop = true;
                    break;
                }
            }
            if group.len() < limits.max_batches && bytes < limits.max_bytes {
                next = inbox.try_recv().ok();
            }
        }
        if !group.is_empty() {
            commit_group(db, &mut group, on_commit);
        }
        if stop {
            return;
        }
    }
}

fn commit_group(
    db: &Database,
    group: &mut Vec<Job>,
    on_commit: Option<&(dyn Fn(Duration, usize) + Send + Sync)>,
) {
    let batches = group.len();
    let result = if group.iter().all(|job| job.ops.is_empty()) {
        // Only barriers: everything before them is already durable.
        Ok(())
    } else {
        let started = Instant::now();
        let result = write_group(db, group);
        let elapsed = started.elapsed();
        match &result {
            Ok(()) => {
                tracing::trace!(?elapsed, batches, "data store commit");
                if let Some(observe) = on_commit {
                    observe(elapsed, batches);
                }
            }
            Err(err) => tracing::warn!(error = %err, batches, "data store commit failed"),
        }
        result
    };
    for job in group.drain(..) {
        // The submitter may have dropped its ticket; the write stands.
        let _ = job.done.send(result.clone());
    }
}

/// One transaction for the whole group. On any error the transaction is
/// dropped, which aborts it: nothing of the group becomes visible.
fn write_group(db: &Database, group: &[Job]) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(StoreError::commit)?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::commit)?;
    {
        let mut tables = OpenTables {
            users: txn.open_table(USERS).map_err(StoreError::commit)?,
            settings: txn.open_table(SETTINGS).map_err(StoreError::commit)?,
            custom_statuses: txn
                .open_table(CUSTOM_STATUSES)
                .map_err(StoreError::commit)?,
        };
        for op in group.iter().flat_map(|job| &job.ops) {
            tables.apply(op).map_err(StoreError::commit)?;
        }
    }
    txn.commit().map_err(StoreError::commit)
}

type BytesTable<'txn> = RedbTable<'txn, &'static str, &'static [u8]>;

/// The tables of one write transaction.
struct OpenTables<'txn> {
    users: BytesTable<'txn>,
    settings: BytesTable<'txn>,
    custom_statuses: BytesTable<'txn>,
}

impl<'txn> OpenTables<'txn> {
    fn apply(&mut self, op: &Op) -> Result<(), redb::StorageError> {
        match op {
            Op::Put { table, key, value } => {
                self.table(*table).insert(key.as_str(), value.as_slice())?;
            }
            Op::Delete { table, key } => {
                self.table(*table).remove(key.as_str())?;
            }
        }
        Ok(())
    }

    fn table(&mut self, table: Table) -> &mut BytesTable<'txn> {
        match table {
            Table::Users => &mut self.users,
            Table::Settings => &mut self.settings,
            Table::CustomStatuses => &mut self.custom_statuses,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Commit failures cannot be provoked through a real file, so these
    //! tests put redb on a backend whose fsync fails on demand.

    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};

    use redb::backends::InMemoryBackend;
    use redb::{ReadableDatabase, ReadableTableMetadata, StorageBackend};

    use super::*;

    #[derive(Debug, Default)]
    struct FlakyBackend {
        inner: InMemoryBackend,
        fail_sync: Arc<AtomicBool>,
    }

    impl StorageBackend for FlakyBackend {
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            self.inner.read(offset, out)
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }

        fn sync_data(&self) -> io::Result<()> {
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fsync failure"));
            }
            self.inner.sync_data()
        }

        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.inner.write(offset, data)
        }
    }

    fn put(key: &str) -> Op {
        Op::Put {
            table: Table::Users,
            key: key.to_owned(),
            value: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_failed_commit_fails_every_batch_of_its_group_and_shows_none_of_it() {
        let backend = FlakyBackend::default();
        let fail_sync = Arc::clone(&backend.fail_sync);
        let db = Database::builder().create_with_backend(backend).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(USERS).unwrap();
        txn.commit().unwrap();

        fail_sync.store(true, Ordering::SeqCst);
        let mut tickets = Vec::new();
        let mut group: Vec<Job> = ["a", "b", "c"]
            .into_iter()
            .map(|key| {
                let (done, ticket) = WriteTicket::pending();
                tickets.push(ticket);
                Job {
                    ops: vec![put(key)],
                    bytes: 0,
                    done,
                }
            })
            .collect();
        commit_group(&db, &mut group, None);

        for ticket in tickets {
            let result = ticket.wait_blocking();
            assert!(
                matches!(result, Err(StoreError::Commit { .. })),
                "{result:?}"
            );
        }
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(USERS).unwrap().len().unwrap(), 0);
    }
}

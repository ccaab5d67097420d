//! The persistent [`DurableStore`]: one redb file per data directory.
//!
//! Opening checks the schema version before touching anything, then makes
//! sure every table exists, so reads never meet a missing table. Reads run
//! on the caller's thread in their own read transaction; writes go through
//! the group-commit thread in [`super::writer`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableError};

use super::layout::{
    self, CAP_KEY, CUSTOM_STATUSES, META, SCHEMA_VERSION, SCHEMA_VERSION_KEY, SETTINGS, Table,
    USERS, WORKSPACE_SETTINGS_KEY,
};
use super::writer::{CommitThread, GroupLimits};
use super::{CommitObserver, DurableStore, Snapshot, StoreError, Write, WriteTicket};

/// The file inside the data directory.
pub const FILE_NAME: &str = "presence.redb";

/// How a [`RedbStore`] runs. `Default` is right for the service; set
/// `on_commit` to feed the "data-store write latency" metric.
pub struct RedbOptions {
    /// Called after each successful commit; see [`CommitObserver`].
    pub on_commit: Option<CommitObserver>,
    /// redb's page cache limit. Default 64 MiB.
    pub cache_bytes: usize,
    /// At most this many batches share one transaction. Default 1024.
    pub max_group_batches: usize,
    /// A group stops growing once its encoded size reaches this. Default 4 MiB.
    pub max_group_bytes: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            on_commit: None,
            cache_bytes: 64 << 20,
            max_group_batches: 1024,
            max_group_bytes: 4 << 20,
        }
    }
}

impl fmt::Debug for RedbOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbOptions")
            .field("on_commit", &self.on_commit.as_ref().map(|_| "Fn"))
            .field("cache_bytes", &self.cache_bytes)
            .field("max_group_batches", &self.max_group_batches)
            .field("max_group_bytes", &self.max_group_bytes)
            .finish()
    }
}

/// Durable store in `<dir>/presence.redb`.
///
/// Only one `RedbStore` (in any process) may have a directory open; the
/// file lock is released when the store is dropped. Dropping it also
/// flushes every submitted write, as [`DurableStore::shutdown`] does.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    writer: CommitThread,
}

impl RedbStore {
    /// Opens (or creates) the store in `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, RedbOptions::default())
    }

    /// Opens (or creates) the store in `dir`, creating the directory too.
    ///
    /// Fails with [`StoreError::Locked`] if another process has it open and
    /// [`StoreError::SchemaTooNew`] if a newer build wrote it. After a crash
    /// redb repairs the file here, which reads all of it.
    pub fn open_with(dir: &Path, options: RedbOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|err| StoreError::open(dir, err))?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .map_err(|err| match err {
                DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
                    StoreError::Locked { path: path.clone() }
                }
                other => StoreError::open(&path, other),
            })?;
        let found = read_schema_version(&db, &path)?;
        if let Some(found) = found.filter(|&found| found > SCHEMA_VERSION) {
            return Err(StoreError::SchemaTooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        create_tables(&db).map_err(|err| StoreError::open(&path, err))?;

        let db = Arc::new(db);
        let limits = GroupLimits {
            max_batches: options.max_group_batches.max(1),
            max_bytes: options.max_group_bytes.max(1),
        };
        let writer = CommitThread::spawn(Arc::clone(&db), limits, options.on_commit)
            .map_err(|err| StoreError::open(&path, err))?;
        tracing::info!(
            path = %path.display(),
            schema_version = SCHEMA_VERSION,
            created = found.is_none(),
            "data store opened"
        );
        Ok(Self { db, path, writer })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl DurableStore for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::read)?;
        let users_table = txn.open_table(USERS).map_err(StoreError::read)?;
        let settings_table = txn.open_table(SETTINGS).map_err(StoreError::read)?;
        let custom_table = txn.open_table(CUSTOM_STATUSES).map_err(StoreError::read)?;

        let mut users = Vec::new();
        for entry in users_table.iter().map_err(StoreError::read)? {
            let (key, value) = entry.map_err(StoreError::read)?;
            let id = key.value();
            users.push((
                id.to_owned(),
                layout::decode(Table::Users, id, value.value())?,
            ));
        }
        let mut custom_statuses = Vec::new();
        for entry in custom_table.iter().map_err(StoreError::read)? {
            let (key, value) = entry.map_err(StoreError::read)?;
            custom_statuses.push(layout::decode(
                Table::CustomStatuses,
                key.value(),
                value.value(),
            )?);
        }
        let setting = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            let value = settings_table.get(key).map_err(StoreError::read)?;
            Ok(value.map(|value| value.value().to_vec()))
        };
        let settings = setting(WORKSPACE_SETTINGS_KEY)?
            .map(|bytes| layout::decode(Table::Settings, WORKSPACE_SETTINGS_KEY, &bytes))
            .transpose()?;
        let cap = setting(CAP_KEY)?
            .map(|bytes| layout::decode(Table::Settings, CAP_KEY, &bytes))
            .transpose()?;

        Ok(Snapshot {
            users,
            settings,
            custom_statuses,
            cap,
        })
    }

    fn write(&self, batch: Vec<Write>) -> WriteTicket {
        match layout::encode(batch) {
            Ok(ops) => self.writer.submit(ops),
            Err(err) => WriteTicket::resolved(Err(err)),
        }
    }

    fn shutdown(&self) {
        self.writer.shutdown();
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.writer.shutdown();
    }
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The schema version of an existing file, or `None` for a new one. Reads
/// only, so a file of a newer schema is left untouched.
fn read_schema_version(db: &Database, path: &Path) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read().map_err(|err| StoreError::open(path, err))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(StoreError::open(path, err)),
    };
    let version = meta
        .get(SCHEMA_VERSION_KEY)
        .map_err(|err| StoreError::open(path, err))?;
    Ok(version.map(|version| version.value()))
}

/// Creates whatever tables are missing and records the schema version.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        if meta.get(SCHEMA_VERSION_KEY)?.is_none() {
            meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
        }
        txn.open_table(USERS)?;
        txn.open_table(SETTINGS)?;
        txn.open_table(CUSTOM_STATUSES)?;
    }
    txn.commit()?;
    Ok(())
}

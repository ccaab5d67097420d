//! Everything that can go wrong with a durable store, each variant naming
//! what and where. Errors are `Clone` because one failed group commit is
//! reported to every batch in the group.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

/// The underlying cause, shared between every ticket that reports it.
pub type Source = Arc<dyn Error + Send + Sync>;

#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory or file could not be created or opened.
    #[error("cannot open the data store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Source,
    },

    /// Another process (or another handle in this one) has the file open.
    #[error(
        "the data store {path} is already open in another process; \
         only one presenced may use a data directory at a time"
    )]
    Locked { path: PathBuf },

    /// The file was written by a newer build with a schema this one cannot read.
    #[error(
        "the data store {path} has schema version {found}, but this build \
         supports at most {supported}; run a newer presenced"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },

    /// A stored value does not decode.
    #[error("corrupt record in table `{table}` at key {key:?}: {reason}")]
    CorruptRecord {
        table: &'static str,
        key: String,
        reason: String,
    },

    /// A record could not be encoded; the batch was not submitted.
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },

    /// Reading the store failed.
    #[error("cannot read the data store: {source}")]
    Read {
        #[source]
        source: Source,
    },

    /// The write transaction failed; nothing of its group is visible.
    ///
    /// After an I/O error redb refuses every later transaction (its cause
    /// reads `PreviousIo`) until the store is reopened: treat this error
    /// as "the store is broken", not as a transient failure.
    #[error("cannot commit to the data store: {source}")]
    Commit {
        #[source]
        source: Source,
    },

    /// The store was shut down (or its commit thread stopped) before this
    /// write was committed.
    #[error("the data store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn open(
        path: impl Into<PathBuf>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Open {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn read(source: impl Error + Send + Sync + 'static) -> Self {
        Self::Read {
            source: Arc::new(source),
        }
    }

    pub(crate) fn commit(source: impl Error + Send + Sync + 'static) -> Self {
        Self::Commit {
            source: Arc::new(source),
        }
    }
}

//! What only the redb store promises: the data survives reopening, one
//! process per directory, corrupt and newer files are refused clearly, and
//! concurrent batches share commits.

mod durable_support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use durable_support::{changed_settings, custom_status, disabled_cap, user_record, user_write};
use presence_core::DisplayedStatus;
use presence_embedded::durable::{FILE_NAME, SCHEMA_VERSION};
use presence_embedded::{DurableStore, RedbOptions, RedbStore, StoreError, Write};
use redb::{Database, TableDefinition};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[tokio::test]
async fn m3_records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    store
        .write(vec![
            user_write("alice", 1),
            Write::Settings(changed_settings()),
            Write::CustomStatus(custom_status("cs", "Driving", DisplayedStatus::Busy)),
            Write::Cap(disabled_cap(300)),
        ])
        .await
        .unwrap();
    let before = store.load().unwrap();
    drop(store);

    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), before);
}

#[test]
fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/data");
    let store = RedbStore::open(&nested).unwrap();
    assert_eq!(store.path(), nested.join(FILE_NAME));
    assert!(store.path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m3_concurrent_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    let tasks: Vec<_> = (0..50u64)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .write(vec![user_write(&format!("user-{writer:02}"), writer)])
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    drop(store);

    let store = RedbStore::open(dir.path()).unwrap();
    let users = store.load().unwrap().users;
    let expected: Vec<_> = (0..50u64)
        .map(|writer| (format!("user-{writer:02}"), user_record(writer)))
        .collect();
    assert_eq!(users, expected);
}

#[test]
fn dropping_the_store_flushes_pending_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let tickets: Vec<_> = (0..100u64)
        .map(|seed| store.write(vec![user_write(&format!("u{seed:03}"), seed)]))
        .collect();
    drop(store);
    for ticket in tickets {
        ticket.wait_blocking().unwrap();
    }

    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap().users.len(), 100);
}

#[test]
fn a_second_open_of_the_same_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = RedbStore::open(dir.path()).unwrap();

    let err = RedbStore::open(dir.path()).unwrap_err();
    let StoreError::Locked { path } = &err else {
        panic!("expected Locked, got {err:?}");
    };
    assert_eq!(path, &dir.path().join(FILE_NAME));
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "the message names the file: {err}"
    );

    drop(first);
    RedbStore::open(dir.path()).expect("the lock is released on drop");
}

#[test]
fn a_corrupt_record_fails_load_naming_table_and_key() {
    // (table, key, garbage written under it)
    let cases: &[(&str, &str, &[u8])] = &[
        ("users", "bob", b"\xff\x00 not json"),
        ("users", "carol", b"{\"state\": 42}"),
        ("settings", "workspace", b"{\"cap\": \"many\"}"),
        ("settings", "cap", b""),
        ("custom_statuses", "cs-1", b"[]"),
    ];
    for &(table, key, garbage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        store
            .write(vec![user_write("alice", 1)])
            .wait_blocking()
            .unwrap();
        drop(store);
        put_raw(dir.path(), table, key, garbage);

        let store = RedbStore::open(dir.path()).unwrap();
        match store.load() {
            Err(StoreError::CorruptRecord {
                table: t, key: k, ..
            }) => assert_eq!((t, k.as_str()), (table, key)),
            other => panic!("{table}/{key}: expected CorruptRecord, got {other:?}"),
        }
    }
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open(dir.path()).unwrap());
    let newer = SCHEMA_VERSION + 1;
    set_schema_version(dir.path(), newer);

    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported, .. }
            if found == newer && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(schema_version(dir.path()), Some(newer));
}

#[test]
fn a_new_file_records_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open(dir.path()).unwrap());
    assert_eq!(schema_version(dir.path()), Some(SCHEMA_VERSION));
}

#[test]
fn group_commit_puts_queued_batches_in_one_transaction() {
    // (batches submitted at once, max batches per group, most commits allowed)
    check_grouping(200, 1024, 2);
    check_grouping(200, 10, 21);
    check_grouping(200, 1, 200);
}

/// Submits `batches` single-record batches while the commit thread is held
/// inside its first commit, then checks how many commits carried them.
fn check_grouping(batches: usize, max_group_batches: usize, most_commits: usize) {
    let commits = Arc::new(AtomicUsize::new(0));
    let committed_batches = Arc::new(AtomicUsize::new(0));
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(Some(gate));
    let options = RedbOptions {
        on_commit: Some(Box::new({
            let commits = Arc::clone(&commits);
            let committed_batches = Arc::clone(&committed_batches);
            move |_elapsed, batches| {
                commits.fetch_add(1, Ordering::SeqCst);
                committed_batches.fetch_add(batches, Ordering::SeqCst);
                // Hold the first commit until every batch is queued.
                if let Some(gate) = gate.lock().unwrap().take() {
                    gate.recv().unwrap();
                }
            }
        })),
        max_group_batches,
        ..RedbOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_with(dir.path(), options).unwrap();

    let tickets: Vec<_> = (0..batches as u64)
        .map(|seed| store.write(vec![user_write(&format!("u{seed:04}"), seed)]))
        .collect();
    release.send(()).unwrap();
    for ticket in tickets {
        ticket.wait_blocking().unwrap();
    }

    let commits = commits.load(Ordering::SeqCst);
    assert_eq!(committed_batches.load(Ordering::SeqCst), batches);
    assert!(
        commits <= most_commits,
        "{batches} batches (max {max_group_batches} per group) took {commits} commits"
    );
    assert_eq!(store.load().unwrap().users.len(), batches);
}

/// Writes `bytes` under `key` in `table` with redb directly, bypassing the store.
fn put_raw(dir: &Path, table: &str, key: &str, bytes: &[u8]) {
    let db = Database::create(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let definition = match table {
            "users" => USERS,
            "settings" => SETTINGS,
            other => TableDefinition::new(other),
        };
        txn.open_table(definition)
            .unwrap()
            .insert(key, bytes)
            .unwrap();
    }
    txn.commit().unwrap();
}

fn set_schema_version(dir: &Path, version: u64) {
    let db = Database::create(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("schema_version", version)
        .unwrap();
    txn.commit().unwrap();
}

fn schema_version(dir: &Path) -> Option<u64> {
    use redb::ReadableDatabase;
    let db = Database::create(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get("schema_version").unwrap().map(|v| v.value())
}

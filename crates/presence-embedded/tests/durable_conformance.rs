//! The contract of `DurableStore`, run against every implementation: each
//! case below becomes `memory::<case>` and `redb::<case>`.

mod durable_support;

use std::sync::Arc;

use durable_support::{changed_settings, custom_status, disabled_cap, user_record, user_write};
use presence_core::{CustomStatusId, DisplayedStatus, WorkspaceSettings};
use presence_embedded::{DurableStore, PersistedCap, Snapshot, StoreError, Write};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(std::sync::Arc::new(presence_embedded::MemoryStore::new())).await;
                }
            )*
        }
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = presence_embedded::RedbStore::open(dir.path()).unwrap();
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

conformance![
    a_new_store_is_empty,
    write_then_load_returns_exactly_the_records,
    a_later_write_overwrites_the_record,
    deleting_a_custom_status_removes_only_it,
    settings_and_cap_round_trip,
    batches_apply_in_submission_order,
    m3_many_concurrent_writers_all_succeed,
    a_dropped_ticket_does_not_cancel_its_write,
    an_empty_batch_resolves,
    writes_after_shutdown_fail_and_earlier_ones_stand,
];

async fn a_new_store_is_empty(store: Arc<dyn DurableStore>) {
    assert_eq!(store.load().unwrap(), Snapshot::default());
}

async fn write_then_load_returns_exactly_the_records(store: Arc<dyn DurableStore>) {
    let busy = custom_status("cs-1", "In a meeting", DisplayedStatus::Busy);
    let lunch = custom_status("cs-2", "Lunch 🍕", DisplayedStatus::Away);
    store
        .write(vec![
            user_write("carol", 3),
            user_write("alice", 1),
            Write::CustomStatus(lunch.clone()),
            Write::Settings(changed_settings()),
        ])
        .await
        .unwrap();
    store
        .write(vec![
            user_write("bob", 2),
            Write::CustomStatus(busy.clone()),
            Write::Cap(disabled_cap(250)),
        ])
        .await
        .unwrap();

    let expected = Snapshot {
        users: vec![
            ("alice".to_owned(), user_record(1)),
            ("bob".to_owned(), user_record(2)),
            ("carol".to_owned(), user_record(3)),
        ],
        settings: Some(changed_settings()),
        custom_statuses: vec![busy, lunch],
        cap: Some(disabled_cap(250)),
    };
    assert_eq!(store.load().unwrap(), expected);
}

async fn a_later_write_overwrites_the_record(store: Arc<dyn DurableStore>) {
    store.write(vec![user_write("alice", 1)]).await.unwrap();
    store.write(vec![user_write("alice", 2)]).await.unwrap();
    // Within one batch, too, the last write wins.
    store
        .write(vec![user_write("bob", 3), user_write("bob", 4)])
        .await
        .unwrap();

    let users = store.load().unwrap().users;
    assert_eq!(
        users,
        vec![
            ("alice".to_owned(), user_record(2)),
            ("bob".to_owned(), user_record(4)),
        ]
    );
}

async fn deleting_a_custom_status_removes_only_it(store: Arc<dyn DurableStore>) {
    let keep = custom_status("keep", "Commuting", DisplayedStatus::Away);
    let gone = custom_status("gone", "On leave", DisplayedStatus::Offline);
    store
        .write(vec![
            Write::CustomStatus(keep.clone()),
            Write::CustomStatus(gone),
        ])
        .await
        .unwrap();
    store
        .write(vec![
            Write::DeleteCustomStatus(CustomStatusId::try_from("gone").unwrap()),
            // Deleting what does not exist is not an error.
            Write::DeleteCustomStatus(CustomStatusId::try_from("never-existed").unwrap()),
        ])
        .await
        .unwrap();

    assert_eq!(store.load().unwrap().custom_statuses, vec![keep]);
}

async fn settings_and_cap_round_trip(store: Arc<dyn DurableStore>) {
    let enabled = PersistedCap {
        cap_enabled: true,
        peak: 10,
    };
    store
        .write(vec![
            Write::Settings(WorkspaceSettings::default()),
            Write::Cap(enabled),
        ])
        .await
        .unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.settings, Some(WorkspaceSettings::default()));
    assert_eq!(snapshot.cap, Some(enabled));

    store
        .write(vec![
            Write::Settings(changed_settings()),
            Write::Cap(disabled_cap(201)),
        ])
        .await
        .unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.settings, Some(changed_settings()));
    assert_eq!(snapshot.cap, Some(disabled_cap(201)));
}

async fn batches_apply_in_submission_order(store: Arc<dyn DurableStore>) {
    // Submit everything first, then wait: the queue, not the awaiting,
    // must keep the order.
    let tickets: Vec<_> = (0..200)
        .map(|seed| store.write(vec![user_write("alice", seed)]))
        .collect();
    for ticket in tickets {
        ticket.await.unwrap();
    }
    assert_eq!(
        store.load().unwrap().users,
        vec![("alice".to_owned(), user_record(199))]
    );
}

async fn m3_many_concurrent_writers_all_succeed(store: Arc<dyn DurableStore>) {
    const WRITERS: u64 = 50;
    const WRITES_EACH: u64 = 10;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for n in 0..WRITES_EACH {
                    let id = format!("user-{writer:02}-{n:02}");
                    store
                        .write(vec![user_write(&id, writer * 100 + n)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let users = store.load().unwrap().users;
    assert_eq!(users.len() as u64, WRITERS * WRITES_EACH);
    for (id, record) in users {
        let (writer, n) = id["user-".len()..].split_once('-').unwrap();
        let seed = writer.parse::<u64>().unwrap() * 100 + n.parse::<u64>().unwrap();
        assert_eq!(record, user_record(seed), "{id}");
    }
}

async fn a_dropped_ticket_does_not_cancel_its_write(store: Arc<dyn DurableStore>) {
    drop(store.write(vec![user_write("alice", 1)]));
    store.write(vec![user_write("bob", 2)]).await.unwrap();
    assert_eq!(store.load().unwrap().users.len(), 2);
}

async fn an_empty_batch_resolves(store: Arc<dyn DurableStore>) {
    store.write(Vec::new()).await.unwrap();
    assert_eq!(store.load().unwrap(), Snapshot::default());
}

async fn writes_after_shutdown_fail_and_earlier_ones_stand(store: Arc<dyn DurableStore>) {
    let before = store.write(vec![user_write("alice", 1)]);
    store.shutdown();
    assert!(before.await.is_ok(), "shutdown flushes what came before");

    let after = store.write(vec![user_write("bob", 2)]).await;
    assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
    store.shutdown(); // Idempotent.
    assert!(matches!(
        store.write(Vec::new()).await,
        Err(StoreError::Closed)
    ));

    assert_eq!(
        store.load().unwrap().users,
        vec![("alice".to_owned(), user_record(1))]
    );
}

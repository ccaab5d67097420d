//! M3 under the harshest restart: `kill -9` while writes are in flight.
//!
//! The test re-executes its own binary in "writer" mode (selected by an
//! environment variable). The writer keeps writing user records from
//! several threads and prints `written <id>` after each ticket resolves,
//! i.e. after it would have acknowledged a client. The parent waits for
//! enough acknowledgements, kills the writer with SIGKILL mid-stream, then
//! reopens the store and checks that every acknowledged record is there.

mod durable_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use durable_support::{user_record, user_write};
use presence_embedded::{DurableStore, RedbStore, StoreError};

const TEST_NAME: &str = "m3_acknowledged_writes_survive_kill_9";
/// Set in the child: the data directory it writes to.
const WRITER_DIR_ENV: &str = "PRESENCE_STORE_KILL_TEST_WRITER_DIR";
const WRITER_THREADS: u64 = 4;
/// Acknowledgements the parent waits for before it kills the writer.
const ACKS_BEFORE_KILL: usize = 300;
/// A writer whose parent went away stops on its own after this long.
const WRITER_LIFETIME: Duration = Duration::from_secs(120);

#[test]
fn m3_acknowledged_writes_survive_kill_9() {
    if let Some(dir) = std::env::var_os(WRITER_DIR_ENV) {
        run_writer(Path::new(&dir));
    }

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(WRITER_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (acks, acked) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("written ") {
                let _ = acks.send(id.to_owned());
            }
        }
    });

    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match acked.recv_timeout(left) {
            Ok(id) => acknowledged.push(id),
            Err(_) => {
                let _ = child.kill();
                panic!("the writer acknowledged only {} writes", acknowledged.len());
            }
        }
    }

    // While the writer holds the directory, nobody else may open it.
    let locked = RedbStore::open(dir.path());
    assert!(
        matches!(locked, Err(StoreError::Locked { .. })),
        "{locked:?}"
    );

    child.kill().unwrap(); // SIGKILL: no destructors, no flush.
    child.wait().unwrap();
    reader.join().unwrap();
    // Lines printed before the kill are acknowledgements too.
    acknowledged.extend(acked.try_iter());

    let store = RedbStore::open(dir.path()).unwrap();
    let stored: BTreeMap<_, _> = store.load().unwrap().users.into_iter().collect();
    for id in &acknowledged {
        assert_eq!(
            stored.get(id),
            Some(&user_record(seed_of(id))),
            "acknowledged write {id} lost ({} acknowledged, {} stored)",
            acknowledged.len(),
            stored.len()
        );
    }
}

/// The child: writes forever from several threads, printing each ack.
fn run_writer(dir: &Path) -> ! {
    let store = Arc::new(RedbStore::open(dir).unwrap());
    for thread in 0..WRITER_THREADS {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for n in 0.. {
                let id = format!("t{thread}-{n:08}");
                let seed = seed_of(&id);
                store
                    .write(vec![user_write(&id, seed)])
                    .wait_blocking()
                    .unwrap();
                let mut out = std::io::stdout().lock();
                if writeln!(out, "written {id}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    // The parent is gone.
                    std::process::exit(1);
                }
            }
        });
    }
    std::thread::sleep(WRITER_LIFETIME);
    std::process::exit(1);
}

fn seed_of(id: &str) -> u64 {
    let (thread, n) = id[1..].split_once('-').unwrap();
    thread.parse::<u64>().unwrap() * 1_000_000_000 + n.parse::<u64>().unwrap()
}

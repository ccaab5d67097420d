//! `wait_until` and `wait_until_blocking`: they return the first value
//! accepted, and a timeout names what was awaited and the last value seen.

use std::time::Duration;

use presence_testkit::{wait_until, wait_until_blocking};

#[tokio::test]
async fn wait_until_returns_the_first_accepted_value() {
    let mut reads = 0;
    let value = wait_until(
        "the fifth read",
        Duration::from_secs(1),
        async || {
            reads += 1;
            reads
        },
        |&n| n >= 5,
    )
    .await;
    assert_eq!(value, 5);
}

#[tokio::test]
async fn wait_until_reads_once_when_the_state_is_already_there() {
    let mut reads = 0;
    wait_until(
        "anything",
        Duration::from_secs(1),
        async || {
            reads += 1;
        },
        |_| true,
    )
    .await;
    assert_eq!(reads, 1);
}

#[tokio::test]
async fn wait_until_names_what_it_awaited_and_the_last_value_on_timeout() {
    let started = tokio::time::Instant::now();
    let waited = tokio::spawn(wait_until(
        "the count to reach 3",
        Duration::from_millis(50),
        async || 7_u32,
        |&n| n == 3,
    ));
    let panic = waited.await.expect_err("it times out").into_panic();
    assert_eq!(
        message(panic),
        "timed out after 50ms waiting for the count to reach 3; last seen: 7"
    );
    assert!(started.elapsed() >= Duration::from_millis(50), "not before");
}

#[test]
fn wait_until_blocking_returns_the_first_accepted_value() {
    let mut reads = 0;
    let value = wait_until_blocking(
        "the third read",
        Duration::from_secs(5),
        || {
            reads += 1;
            reads
        },
        |&n| n == 3,
    );
    assert_eq!(value, 3);
}

#[test]
fn wait_until_blocking_names_what_it_awaited_and_the_last_value_on_timeout() {
    let panic = std::panic::catch_unwind(|| {
        wait_until_blocking(
            "a key to exist",
            Duration::from_millis(20),
            || Some("expired"),
            Option::is_none,
        )
    })
    .expect_err("it times out");
    assert_eq!(
        message(panic),
        "timed out after 20ms waiting for a key to exist; last seen: Some(\"expired\")"
    );
}

fn message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(text) => *text,
        Err(panic) => panic
            .downcast::<&str>()
            .map(|s| (*s).to_owned())
            .unwrap_or_default(),
    }
}

//! Waiting for a state that has no event to wait on: read it until it is
//! what the test expects, or fail naming what was awaited and what was
//! last seen.
//!
//! A test that can wait for an event (an update on a channel, a frame on a
//! socket) should: that ends the moment the thing happens. Some states have
//! no event — a count behind an HTTP endpoint, a key's TTL, a node's
//! `/readyz`, a metric — and the test has to read them again until they
//! change. These helpers are that loop, written once:
//!
//! - [`wait_until`] (async) reads with an `async` closure and returns the
//!   first value `done` accepts;
//! - [`wait_until_blocking`] is the same for synchronous reads (helpers of
//!   this crate, tests without a runtime).
//!
//! The pause between reads starts at [`FIRST_PAUSE`] and doubles up to
//! [`MAX_PAUSE`]: a state that is already there, or arrives at once, costs
//! a millisecond; a slow one costs a read every 50 ms. The pause is a
//! polling interval, never a wait for something to settle: the loop ends
//! at the first read that shows the state.
//!
//! On timeout both panic with `timed out after <within> waiting for <what>;
//! last seen: <value>`, so a failure says what did not happen and what
//! happened instead.
//!
//! The async version measures its deadline with [`tokio::time::Instant`],
//! so it also works under `tokio::time::pause()`: with paused time the
//! pauses between reads advance the clock instead of sleeping.

use std::fmt::{Debug, Display};
use std::time::Duration;

/// The first pause between two reads.
pub const FIRST_PAUSE: Duration = Duration::from_millis(1);

/// The longest pause between two reads.
pub const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Reads with `read` until `done` accepts the value, and returns that value.
///
/// Panics if no read within `within` is accepted, with a message naming
/// `what` was awaited and the last value read. The last read may start
/// just before the deadline, so the whole wait can take `within` plus one
/// read.
///
/// ```ignore
/// let count = wait_until("a connection count of 2", DEADLINE,
///     async || backend.cap_state().await.unwrap().count,
///     |&count| count == 2,
/// ).await;
/// ```
pub async fn wait_until<T: Debug>(
    what: impl Display,
    within: Duration,
    mut read: impl AsyncFnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            timed_out(&what, within, &value);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// [`wait_until`] for a synchronous `read`: the pauses block the thread.
pub fn wait_until_blocking<T: Debug>(
    what: impl Display,
    within: Duration,
    mut read: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let value = read();
        if done(&value) {
            return value;
        }
        if std::time::Instant::now() >= deadline {
            timed_out(&what, within, &value);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

fn timed_out(what: &dyn Display, within: Duration, last: &dyn Debug) -> ! {
    panic!("timed out after {within:?} waiting for {what}; last seen: {last:?}")
}

//! The receipt of one submitted batch.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::StoreError;

/// Resolves once its batch is durable (`Ok`) or has failed (`Err`).
///
/// Await it in async code; call [`wait_blocking`](Self::wait_blocking)
/// from a plain thread. Dropping it does not cancel the write. If the store
/// goes away before answering, it resolves to [`StoreError::Closed`]; it
/// never hangs.
#[must_use = "a write is durable only once its ticket resolves Ok"]
#[derive(Debug)]
pub struct WriteTicket {
    rx: oneshot::Receiver<Result<(), StoreError>>,
}

impl WriteTicket {
    /// A ticket and the sender that resolves it.
    pub(crate) fn pending() -> (oneshot::Sender<Result<(), StoreError>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self { rx })
    }

    /// A ticket that is already resolved.
    pub(crate) fn resolved(result: Result<(), StoreError>) -> Self {
        let (tx, ticket) = Self::pending();
        // The receiver is alive in `ticket`, so this cannot fail.
        let _ = tx.send(result);
        ticket
    }

    /// Blocks the current thread until the batch is durable or failed.
    ///
    /// # Panics
    ///
    /// When called from inside an async runtime; `.await` the ticket there.
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        self.rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }
}

impl Future for WriteTicket {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|received| received.unwrap_or(Err(StoreError::Closed)))
    }
}

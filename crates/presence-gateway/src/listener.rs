//! The accept path: the loop that takes TCP connections off a listener and
//! serves HTTP/1 (and WebSocket upgrades) on them.
//!
//! It exists because `axum::serve` leaves out what a server facing the
//! internet needs (issue 10, F0 and F4):
//!
//! - **Socket options.** Every accepted socket gets `TCP_NODELAY` (without
//!   it, once a client's delayed ACK meets Nagle's algorithm, a small
//!   frame waits up to 40 ms behind the previous one) and TCP keepalive
//!   (so a peer that vanished without a FIN is found by the kernel).
//! - **A connection budget.** At most `max_connections` client connections
//!   are open at once, WebSockets included: the permit travels inside the
//!   connection's IO, so an upgraded socket keeps its slot until it closes.
//!   Past the budget a connection gets `503` with `Retry-After` (a few are
//!   answered at a time, the rest closed at once), never an `EMFILE`.
//! - **Timeouts.** A connection must send complete request headers within
//!   `handshake_timeout`, and an idle keep-alive connection is closed after
//!   the same time (hyper's header timer runs whenever it waits for the
//!   next request). Slowloris and silent connections hold nothing longer.
//! - **Frames axum cannot see.** Each connection's IO carries a
//!   [`FrameMeter`] (in the requests' extensions too): once the WebSocket
//!   handler starts it, continuation frames are counted as they are read
//!   (F5, see [`crate::frame_meter`]).
//! - **Accept errors.** When the process runs out of file descriptors (or
//!   memory for sockets) the loop backs off briefly instead of spinning,
//!   and keeps serving what it holds.
//!
//! Shutdown: when the `shutdown` future resolves the loop stops accepting,
//! asks every connection to finish its current request and close, and
//! waits for them (at most `handshake_timeout`). Upgraded sockets are not
//! connections any more by then; [`crate::app::App::drain`] closes them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{CONNECTION, RETRY_AFTER};
use axum::http::{HeaderValue, Request, Response};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::budget::{ConnectionBudget, ConnectionPermit};
use crate::error::ApiError;
use crate::frame_meter::{CONTINUATION_FLOOD, FrameMeter};
use crate::metrics::{Metrics, RefusalReason};

/// How one listener serves its connections.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Complete request headers must arrive within this; an idle
    /// keep-alive connection is closed after it too.
    pub handshake_timeout: Duration,
    /// TCP keepalive: idle time before the first probe. Probes follow
    /// every [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`] times.
    pub keepalive_idle: Duration,
}

/// Interval of TCP keepalive probes after the first.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered keepalive probes before the kernel drops a connection.
pub const KEEPALIVE_RETRIES: u32 = 3;

/// Connections past the budget that are answered with a 503 at the same
/// time; any more are closed without an answer.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long a connection past the budget may take to send its request
/// before it is closed without the 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// What `Retry-After` a connection past the budget is told, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// How long the loop pauses after the process ran out of descriptors or
/// socket memory, before it accepts again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then closes
/// the connections gracefully. Returns only on shutdown.
///
/// `budget` counts the open connections (its ceiling is the listener's
/// `max_connections`); the API listener shares it with
/// [`crate::app::App::connections`] so `/metrics` can report it.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    budget: Arc<ConnectionBudget>,
    config: ListenerConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let max_connections = budget.max();
    let refusals = ConnectionBudget::new(MAX_REFUSALS_IN_FLIGHT);
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout)
        .keep_alive(true);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    on_accept_error(&e, &metrics).await;
                    continue;
                }
            },
        };
        configure(&stream, &config);
        match budget.try_acquire() {
            Some(permit) => {
                let meter = FrameMeter::new();
                let io = TokioIo::new(Accepted::new(stream, permit, meter.clone()));
                // Handlers find the connection's meter in the request's
                // extensions (the WebSocket upgrade starts it).
                let service = TowerToHyperService::new(router.clone().map_request(
                    move |request: Request<Incoming>| {
                        let mut request = request.map(Body::new);
                        request.extensions_mut().insert(meter.clone());
                        request
                    },
                ));
                let connection = http.serve_connection(io, service).with_upgrades();
                let stop = stop.clone();
                let metrics = metrics.clone();
                tracker.spawn(async move {
                    let mut connection = pin!(connection);
                    let result = tokio::select! {
                        result = connection.as_mut() => result,
                        () = stop.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(e) = result
                        && e.is_timeout()
                    {
                        metrics.connections_timed_out.inc();
                    }
                });
            }
            None => {
                metrics
                    .connections_refused(RefusalReason::MaxConnections)
                    .inc();
                // Past the budget: answer a few with a 503 so clients know
                // to come back; close the rest at once.
                if let Some(permit) = refusals.try_acquire() {
                    tracker.spawn(refuse(stream, permit, max_connections));
                }
            }
        }
    }
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(config.handshake_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections did not finish in time");
    }
}

/// Sets the accepted socket's options. Failures are logged: a socket
/// without them still works, only worse.
fn configure(stream: &TcpStream, config: &ListenerConfig) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(config.keepalive_idle)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "could not set TCP keepalive");
    }
}

/// Accept errors: running out of descriptors or socket memory pauses the
/// loop (the pending connection waits in the backlog); anything else is
/// about one connection that already went away.
async fn on_accept_error(e: &io::Error, metrics: &Metrics) {
    let exhausted = matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if exhausted {
        metrics.accept_errors.inc();
        // One line per five seconds of a lasting shortage, not ten a second.
        if metrics.accept_errors.get() % 50 == 1 {
            tracing::warn!(error = %e, "accept failed: out of resources; pausing");
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    } else {
        tracing::debug!(error = %e, "accept failed");
    }
}

/// Answers one connection past the budget with `503` and closes it.
async fn refuse(stream: TcpStream, permit: ConnectionPermit, max: usize) {
    let service = hyper::service::service_fn(move |_request: Request<Incoming>| async move {
        let mut response = ApiError::unavailable(
            "too_many_connections",
            format!("this node holds its maximum of {max} connections; retry shortly"),
        )
        .into_response();
        let headers = response.headers_mut();
        headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        Ok::<Response<Body>, Infallible>(response)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false);
    let io = TokioIo::new(Accepted::new(stream, permit, FrameMeter::default()));
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT * 2, http.serve_connection(io, service)).await;
}

/// An accepted connection: the stream, its slot in the budget (taken as
/// long as the stream lives: through a WebSocket upgrade, hyper hands
/// this value to the socket) and its [`FrameMeter`].
struct Accepted {
    /// `None` only while dropping.
    stream: Option<TcpStream>,
    permit: Option<ConnectionPermit>,
    meter: FrameMeter,
    /// Set when the meter ended a flood: the close frame the socket task
    /// sends must not be destroyed by a reset, so the stream is drained
    /// briefly before it is closed.
    linger: bool,
}

/// How long a flooding connection is drained after its close frame.
const FLOOD_LINGER: Duration = Duration::from_millis(500);

impl Accepted {
    fn new(stream: TcpStream, permit: ConnectionPermit, meter: FrameMeter) -> Accepted {
        Accepted {
            stream: Some(stream),
            permit: Some(permit),
            meter,
            linger: false,
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        if !self.linger {
            return;
        }
        let (Some(mut stream), Ok(runtime)) =
            (self.stream.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let permit = self.permit.take();
        runtime.spawn(async move {
            let _permit = permit;
            let mut sink = [0u8; 4096];
            let drain = async {
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(FLOOD_LINGER, drain).await;
        });
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let stream = match self.stream() {
            Ok(stream) => stream,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let result = Pin::new(stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && self.meter.on_read(&buf.filled()[before..]).is_err()
        {
            self.linger = true;
            return Poll::Ready(Err(io::Error::other(CONTINUATION_FLOOD)));
        }
        result
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.meter.on_write();
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.meter.on_write();
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options are set on the accepted socket itself (the end-to-end
    /// test `f0_accepted_sockets_have_nodelay` checks the running binary).
    #[tokio::test]
    async fn f0_configure_sets_nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap());
        configure(&accepted, &ListenerConfig::default());
        assert!(accepted.nodelay().unwrap());
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(sock.keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(sock.keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
    }
}

//! The WebSocket endpoint `GET /v1/ws` (DESIGN §3).
//!
//! Each socket gets two tasks: the reader (this module's `read_loop`)
//! parses client frames, applies limits and calls the backend; the writer
//! (`write_loop`) drains the socket's outbox, pings, and closes. They share
//! the socket's [`Conn`]; either side ends the socket by requesting a close.
//!
//! How a socket ends decides D7: `bye` or a client close frame removes the
//! device at once; an error, EOF or silence past the heartbeat timeout
//! leaves it `away` for the grace period.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use presence_backend::{Profile, Session, SocketEnd};
use presence_core::{CalendarSource, DeviceId, Platform, UserId, UtcOffset};
use presence_protocol::ws::{
    ClientFrame, ClientMessage, parse_client_message, parse_client_message_within,
};
use serde::Deserialize;

use crate::app::App;
use crate::auth::{self, AuthError};
use crate::budget::SocketPermit;
use crate::error::ApiError;
use crate::frame_meter::{CONTINUATION_FLOOD, FrameMeter};
use crate::frames;
use crate::hub::{CloseReason, Conn};
use crate::metrics::RefusalReason;
use crate::ratelimit::{Limit, TokenBucket};

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/v1/ws", get(upgrade))
}

/// Query parameters of the upgrade request.
#[derive(Debug, Default, Deserialize)]
struct Params {
    token: Option<String>,
    device_id: Option<String>,
    platform: Option<String>,
    /// R3: the client's UTC offset in hours (`5.5`), as Rocket.Chat
    /// clients report it at login; kept with the user's profile.
    utc_offset: Option<f64>,
}

/// What `Retry-After` a user refused for holding too many sockets is told:
/// a slot frees when one of their sockets closes, which a server cannot
/// predict; a client should not retry in a tight loop.
const SOCKET_RETRY_AFTER_SECS: u64 = 5;

async fn upgrade(
    State(app): State<Arc<App>>,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    meter: Option<Extension<FrameMeter>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(Query(params)) = query else {
        return ApiError::bad_request("invalid_query", "the query string could not be parsed")
            .into_response();
    };
    if app.is_draining() {
        return ApiError::unavailable("shutting_down", "the server is shutting down")
            .into_response();
    }
    let token = auth::bearer_token(&headers).or(params.token.as_deref());
    let (identity, valid_until) = match token.map(|t| app.auth.verify_session(t)) {
        Some(Ok(verified)) => verified,
        Some(Err(e)) => return ApiError::from(e).into_response(),
        None => return ApiError::from(AuthError::TokenMissing).into_response(),
    };
    let platform = match params.platform.as_deref() {
        Some("web") => Platform::Web,
        Some("desktop") => Platform::Desktop,
        Some("mobile") => Platform::Mobile,
        _ => {
            return ApiError::bad_request(
                "invalid_platform",
                "platform must be one of web, desktop, mobile",
            )
            .into_response();
        }
    };
    let utc_offset = match params.utc_offset.map(UtcOffset::from_hours) {
        None => None,
        Some(Ok(offset)) => Some(offset),
        Some(Err(e)) => {
            return ApiError::bad_request("invalid_query", format!("utc_offset: {e}"))
                .into_response();
        }
    };
    let device = match params.device_id.map(DeviceId::try_from) {
        Some(Ok(id)) => id,
        Some(Err(e)) => return ApiError::from(e).into_response(),
        None => DeviceId::try_from(format!("anon-{}", uuid::Uuid::new_v4().simple()))
            .expect("an anonymous device id is short and plain"),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::bad_request("websocket_required", "this endpoint speaks WebSocket")
                .into_response();
        }
    };
    let user: Arc<str> = identity.user_id.as_arc().clone();
    // X6: a user's sockets are bounded, and a refused one never reaches
    // the backend, so it never counts toward the presence cap.
    let Some(permit) = app.socket_budget.try_acquire(&user) else {
        app.metrics
            .connections_refused(RefusalReason::SocketsPerUser)
            .inc();
        let refusal = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sockets",
            format!(
                "this user already holds {} sockets on this server; close one first",
                app.socket_budget.per_user()
            ),
        );
        let mut response = refusal.into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(SOCKET_RETRY_AFTER_SECS));
        return response;
    };
    // F5: from here on the connection's IO counts continuation frames,
    // which tungstenite reassembles out of the socket task's sight.
    if let Some(Extension(meter)) = &meter {
        let bucket = app.config.rate_limits.connection_bucket(Instant::now());
        if let Err(e) = meter.start(bucket) {
            return ApiError::bad_request("upgrade_not_alone", e.to_string()).into_response();
        }
    }
    let session = Session {
        user,
        device,
        platform,
        conn: app.next_conn_id(),
        profile: Profile {
            username: identity.username,
            name: identity.name,
            utc_offset,
        },
    };
    let config = &app.config;
    let app2 = app.clone();
    ws.max_frame_size(config.max_frame_bytes)
        .max_message_size(config.max_frame_bytes)
        .read_buffer_size(config.socket_buffer_bytes)
        .write_buffer_size(config.socket_buffer_bytes)
        .max_write_buffer_size(config.socket_buffer_bytes.max(config.max_frame_bytes) * 8)
        .on_upgrade(move |socket| {
            let tracker = app2.sockets.clone();
            tracker.track_future(run_socket(app2, session, valid_until, socket, permit))
        })
}

/// One socket's life: register the device, then hand the socket to a task
/// of its own that serves frames and finally deregisters it.
///
/// Opening runs in axum's upgrade task, which then ends; the long-lived
/// task owns one boxed [`OpenSocket`] and a small `serve` future, so an
/// idle socket costs little (DESIGN §6: memory per idle connection).
async fn run_socket(
    app: Arc<App>,
    session: Session,
    valid_until: auth::ValidUntil,
    mut socket: WebSocket,
    permit: SocketPermit,
) {
    let tracker = app.sockets.clone();
    let authority = auth::SocketAuthority::new(valid_until);
    if let Some(reader) = Box::pin(open_socket(app, session, authority, &mut socket)).await {
        tracker.spawn(serve_socket(Box::new(OpenSocket {
            reader,
            socket,
            _permit: permit,
        })));
    }
}

/// What an open socket's task owns.
struct OpenSocket {
    reader: Reader,
    socket: WebSocket,
    /// The socket's slot in its user's budget (X6), freed when it ends.
    _permit: SocketPermit,
}

async fn serve_socket(mut open: Box<OpenSocket>) {
    let OpenSocket { reader, socket, .. } = &mut *open;
    let end = reader.serve(socket).await;
    // The socket and its budget slot outlive the goodbye to the backend.
    let OpenSocket {
        reader,
        socket: _socket,
        _permit,
    } = *open;
    Box::pin(close_socket(reader, end)).await;
}

/// Registers the device with the backend, queues `ready`, and replaces an
/// older socket of the same device. `None` when the backend refused.
async fn open_socket(
    app: Arc<App>,
    session: Session,
    authority: auth::SocketAuthority,
    socket: &mut WebSocket,
) -> Option<Reader> {
    let info = match app.backend.connect(&session).await {
        Ok(info) => info,
        Err(e) => {
            let frame = ApiError::from(e).ws_frame(None);
            let _ = socket.send(Message::Text(frame)).await;
            let _ = socket
                .send(close_message(1011, "backend_unavailable"))
                .await;
            return None;
        }
    };
    let conn = Conn::new(session.conn, session.user.clone(), session.device.clone());
    conn.note_me_version(info.me.version);
    conn.push_control(
        frames::ready(&info, &session, &app.config),
        app.config.max_control_queue,
    );
    for old in app.hub.add_owner(&conn) {
        old.push_control(frames::notice("replaced"), app.config.max_control_queue);
        old.request_close(CloseReason::Replaced);
    }
    app.metrics.connections(session.platform).inc();
    tracing::debug!(
        user = %session.user,
        device = %session.device,
        platform = %session.platform,
        "socket open"
    );
    Some(Reader {
        bucket: app.config.rate_limits.connection_bucket(Instant::now()),
        app,
        conn,
        session,
        subscriptions: HashSet::new(),
        strikes: 0,
        authority,
    })
}

/// Forgets the socket's subscriptions and tells the backend how it ended.
async fn close_socket(mut reader: Reader, end: SocketEnd) {
    let app = &reader.app;
    let conn = &reader.conn;
    let held = reader.subscriptions.len();
    app.hub.release_subscriptions(&reader.session.user, held);
    for user in reader.subscriptions.drain() {
        app.hub.unwatch(&user, conn);
    }
    // F3: give the set's table back too (the reader lives a little longer).
    reader.subscriptions.shrink_to_fit();
    app.hub.remove_owner(conn);
    // A socket the server closed while draining is deregistered like a
    // goodbye; every other server-side close leaves the device lost (D7).
    let end = match conn.close_requested() {
        Some(CloseReason::ShuttingDown) => SocketEnd::Clean,
        _ => end,
    };
    if let Err(e) = app.backend.disconnect(&reader.session, end).await {
        tracing::warn!(error = %e, "disconnect failed");
    }
    app.metrics.connections(reader.session.platform).dec();
}

struct Reader {
    app: Arc<App>,
    conn: Arc<Conn>,
    session: Session,
    subscriptions: HashSet<Arc<str>>,
    bucket: TokenBucket,
    /// Messages refused by the rate limit since the last accepted one.
    strikes: u32,
    /// R2: when the token ends; renewed by `reauth`.
    authority: auth::SocketAuthority,
}

/// A client that keeps sending this many messages past its limit without
/// pause is disconnected.
const MAX_STRIKES: u32 = 100;

/// After a failed write, how many already-sent frames are examined for a
/// goodbye, and how long to wait for each (see `end_after_write_failure`).
const MAX_FRAMES_AFTER_WRITE_FAILURE: usize = 16;
const GOODBYE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// What the socket loop does next.
enum Step {
    Continue,
    End(SocketEnd),
    /// Writing to the client failed; how the socket ended is still open.
    WriteFailed,
}

impl Reader {
    /// The socket's one task: reads client frames, writes the outbox,
    /// pings, and notices silence. One task per socket (not a reader and a
    /// writer) keeps an idle socket to one small future; message handling
    /// is boxed so its state exists only while a message is handled.
    async fn serve(&mut self, socket: &mut WebSocket) -> SocketEnd {
        let heartbeat_timeout = self.app.config.heartbeat_timeout;
        let mut ticks = tokio::time::interval(self.app.config.ping_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut last_heard = Instant::now();
        loop {
            let token_wake = self.authority.next_wake();
            let step = tokio::select! {
                biased;
                () = self.conn.wait() => Box::pin(self.flush(socket)).await,
                frame = socket.next() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(message)) => Box::pin(self.on_frame(message)).await,
                        Some(Err(e)) => Box::pin(self.on_read_error(socket, &e)).await,
                        None => Step::End(SocketEnd::Lost),
                    }
                }
                _ = ticks.tick() => {
                    if last_heard.elapsed() >= heartbeat_timeout {
                        tracing::debug!(user = %self.session.user, "socket silent; closing");
                        self.conn.request_close(CloseReason::Lost);
                        Box::pin(self.flush(socket)).await;
                        Step::End(SocketEnd::Lost)
                    } else {
                        Box::pin(self.send_ping(socket)).await
                    }
                }
                () = auth::sleep_until(token_wake) => self.on_token_timer(),
            };
            let step = match step {
                Step::WriteFailed => {
                    Step::End(Box::pin(self.end_after_write_failure(socket)).await)
                }
                step => step,
            };
            if let Step::End(end) = step {
                if end == SocketEnd::Clean {
                    self.conn.request_close(CloseReason::Ended);
                    Box::pin(self.flush(socket)).await;
                }
                return end;
            }
        }
    }

    /// A write failed. That often means the client already said goodbye
    /// and left: an app that quits sends its close frame (or `bye`) and
    /// drops the connection, and the reset that follows fails our next
    /// write before the frame is read. Read what already arrived before
    /// calling the socket lost, so a clean goodbye still removes the device
    /// at once (D7). (Before, such a device showed `away` for the whole
    /// grace period.)
    async fn end_after_write_failure(&mut self, socket: &mut WebSocket) -> SocketEnd {
        for _ in 0..MAX_FRAMES_AFTER_WRITE_FAILURE {
            match tokio::time::timeout(GOODBYE_WAIT, socket.next()).await {
                Ok(Some(Ok(Message::Close(_)))) => return SocketEnd::Clean,
                Ok(Some(Ok(Message::Text(text)))) if is_bye(&text) => return SocketEnd::Clean,
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        SocketEnd::Lost
    }

    /// Every frame a client sends (text, binary, ping, pong) is charged to
    /// the socket's message budget, so a flood of any kind is closed like
    /// a text flood (F5). Fragments are reassembled by tungstenite, within
    /// `max_frame_bytes`, before they get here.
    async fn on_frame(&mut self, message: Message) -> Step {
        if let Message::Close(_) = message {
            return Step::End(SocketEnd::Clean);
        }
        if !self.admit(&message) {
            return Step::Continue;
        }
        match message {
            Message::Text(text) => {
                if self.handle_text(&text).await.is_break() {
                    return Step::End(SocketEnd::Clean);
                }
            }
            Message::Binary(_) => {
                let refused =
                    ApiError::refused("binary_not_supported", "frames must be JSON text frames");
                self.reply_error(&refused, None);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
        Step::Continue
    }

    /// Takes one message from the socket's budget. A refused text or
    /// binary frame is answered `rate_limited` (with the text frame's
    /// `ref`); a refused ping or pong silently. A client that keeps going
    /// past the limit is closed (1008).
    fn admit(&mut self, message: &Message) -> bool {
        if self.bucket.try_take(Instant::now()).is_ok() {
            self.strikes = 0;
            return true;
        }
        self.strikes += 1;
        self.app.metrics.rate_limited(Limit::WsMessages).inc();
        let refused = ApiError::refused("rate_limited", "too many messages; slow down");
        match message {
            Message::Text(text) => {
                // Every frame with a `ref` gets one reply that echoes it,
                // even a refused one (the protocol's promise).
                let ref_ = match parse_client_message(text) {
                    Ok(frame) => frame.ref_,
                    Err(e) => e.ref_,
                };
                self.reply_error(&refused, ref_);
            }
            Message::Binary(_) => {
                self.reply_error(&refused, None);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {
                self.reject("rate_limited");
            }
        }
        if self.strikes >= MAX_STRIKES {
            self.conn.request_close(CloseReason::Flooding);
        }
        false
    }

    /// A read failed. A frame over the size limit or one that breaks the
    /// protocol is answered with the RFC 6455 close code and a reason
    /// (1009, 1007, 1002) before the connection ends, so the client sees
    /// why instead of a bare TCP close (1006); anything else (a reset, an
    /// I/O error) leaves the device lost (D7).
    async fn on_read_error(&mut self, socket: &mut WebSocket, e: &axum::Error) -> Step {
        let Some(violation) = Violation::of(e) else {
            return Step::End(SocketEnd::Lost);
        };
        tracing::debug!(user = %self.session.user, error = %e, "protocol violation; closing");
        let (code, reason) = violation.close_frame();
        self.reject(reason);
        if violation == Violation::TooBig {
            self.conn.request_close(CloseReason::FrameTooLarge);
            Box::pin(self.flush(socket)).await;
            return Step::End(SocketEnd::Lost);
        }
        if let Step::Continue = Box::pin(self.flush(socket)).await {
            let close = socket.send(close_message(code, reason));
            let _ = tokio::time::timeout(self.app.config.write_timeout, close).await;
        }
        Step::End(SocketEnd::Lost)
    }

    /// Writes everything pending, then the close frame if one was asked
    /// for. A client that cannot take it within the write timeout is
    /// dropped as a slow consumer.
    async fn flush(&self, socket: &mut WebSocket) -> Step {
        let app = &self.app;
        let drained = self.conn.drain();
        let batch = async {
            for json in drained.control {
                socket.feed(Message::Text(json)).await?;
            }
            for frame in &drained.updates {
                socket.feed(Message::Text(frame.json.clone())).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(app.config.write_timeout, batch).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Step::WriteFailed,
            Err(_) => {
                app.metrics.ws_slow_consumers_dropped.inc();
                self.conn.request_close(CloseReason::SlowConsumer);
                return Step::End(SocketEnd::Lost);
            }
        }
        let now = SystemTime::now();
        for frame in &drained.updates {
            if let Some(at) = frame.changed_at {
                app.metrics.updates_delivered.inc();
                let latency = now.duration_since(at).unwrap_or_default();
                app.metrics
                    .update_delivery_seconds
                    .observe(latency.as_secs_f64());
            }
        }
        match self.conn.close_requested() {
            Some(reason) => {
                let (code, text) = reason.close_frame();
                let close = socket.send(close_message(code, text));
                if let Ok(Ok(())) = tokio::time::timeout(app.config.write_timeout, close).await
                    && reason != CloseReason::Ended
                {
                    linger(socket).await;
                }
                Step::End(match reason {
                    CloseReason::Ended => SocketEnd::Clean,
                    _ => SocketEnd::Lost,
                })
            }
            None => Step::Continue,
        }
    }

    /// R2: tells the client its token expires soon, or closes the socket
    /// (4002) once it has.
    fn on_token_timer(&mut self) -> Step {
        match self.authority.on_wake(tokio::time::Instant::now()) {
            Some(auth::AuthorityEvent::Expiring { expires_at_millis }) => {
                let at = presence_core::Timestamp::from_millis(expires_at_millis);
                let notice = presence_protocol::ws::ServerMessage::token_expiring(at);
                self.push(Utf8Bytes::from(notice.to_json()));
            }
            Some(auth::AuthorityEvent::Expired) => {
                tracing::debug!(user = %self.session.user, "token expired; closing");
                self.conn.request_close(CloseReason::TokenExpired);
            }
            None => {}
        }
        Step::Continue
    }

    async fn send_ping(&self, socket: &mut WebSocket) -> Step {
        let ping = socket.send(Message::Ping(Default::default()));
        match tokio::time::timeout(self.app.config.write_timeout, ping).await {
            Ok(Ok(())) => Step::Continue,
            Ok(Err(_)) => Step::WriteFailed,
            Err(_) => {
                self.app.metrics.ws_slow_consumers_dropped.inc();
                Step::End(SocketEnd::Lost)
            }
        }
    }

    /// Handles one text frame. `Break` means the client said goodbye.
    async fn handle_text(&mut self, text: &str) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        // The parser checks ids and the length of user lists (the socket's
        // limits), before anything reaches the backend.
        let limits = frames::limits(&self.app.config);
        let ClientFrame { ref_, message } = match parse_client_message_within(text, &limits) {
            Ok(frame) => frame,
            Err(e) => {
                // Counted under its type when it has one (a frame refused
                // for its fields), else as `unknown`.
                let kind = e.message_type.map_or("unknown", |t| t.as_str());
                self.app.metrics.ws_message(kind).inc();
                let ref_ = e.ref_.clone();
                self.reply_error(&ApiError::from(e), ref_);
                return Continue(());
            }
        };
        self.app.metrics.ws_message(message.type_name()).inc();
        if matches!(message, ClientMessage::Bye) {
            return Break(());
        }
        match self.handle_message(message, ref_.clone()).await {
            Ok(true) => {
                if let Some(r) = ref_ {
                    self.push(frames::ack(&r));
                }
            }
            Ok(false) => {}
            Err(e) => self.reply_error(&e, ref_),
        }
        Continue(())
    }

    /// Returns whether the message should be acknowledged (snapshots are
    /// their own answer).
    async fn handle_message(
        &mut self,
        message: ClientMessage,
        ref_: Option<String>,
    ) -> Result<bool, ApiError> {
        let app = self.app.clone();
        let user = &self.session.user;
        if self.authority.has_expired(tokio::time::Instant::now()) {
            // R2: nothing is applied past the token's end, even if the
            // timer that closes the socket has not run yet.
            self.conn.request_close(CloseReason::TokenExpired);
            return Err(AuthError::TokenExpired.into());
        }
        if let Some(event) = message.device_event() {
            app.backend.device_event(&self.session, event).await?;
            return Ok(true);
        }
        match message {
            ClientMessage::SetStatus(change) => {
                let request = change.into_request();
                crate::status_change_limits::check_status_change(&app, user, &request).await?;
                app.backend
                    .set_status(user, Some(&self.session.profile), request)
                    .await?;
                Ok(true)
            }
            ClientMessage::UseCustomStatus { id } => {
                crate::status_change_limits::check_status_change(&app, user, &Default::default())
                    .await?;
                app.backend
                    .use_custom_status(user, Some(&self.session.profile), &id)
                    .await?;
                Ok(true)
            }
            ClientMessage::Calendar { event_id, busy } => {
                let source = CalendarSource::Device(self.session.platform);
                app.backend.calendar(user, event_id, busy, source).await?;
                Ok(true)
            }
            ClientMessage::Subscribe { users } => {
                let users = shared(users);
                // The snapshot answers every user asked, once, in the order
                // asked, including users already watched (it used to list
                // only the new ones, in hash order, so re-subscribing
                // answered with an empty snapshot).
                let mut seen = HashSet::new();
                let asked: Vec<Arc<str>> = users
                    .into_iter()
                    .filter(|u| seen.insert(u.clone()))
                    .collect();
                let new: Vec<Arc<str>> = asked
                    .iter()
                    .filter(|u| !self.subscriptions.contains(*u))
                    .cloned()
                    .collect();
                if self.subscriptions.len() + new.len() > app.config.max_subscriptions {
                    return Err(ApiError::refused(
                        "too_many_subscriptions",
                        format!(
                            "a socket may watch at most {} users",
                            app.config.max_subscriptions
                        ),
                    ));
                }
                let per_user = app.config.max_subscriptions_per_user;
                if let Err(held) = app.hub.reserve_subscriptions(user, new.len(), per_user) {
                    return Err(ApiError::refused(
                        "too_many_subscriptions",
                        format!(
                            "a user may watch at most {per_user} users across all their \
                             sockets; {held} are watched"
                        ),
                    ));
                }
                for u in &new {
                    app.hub.watch(u, &self.conn);
                    self.subscriptions.insert(u.clone());
                }
                let snapshots = app.backend.presence(&asked).await?;
                self.push(frames::snapshot(&snapshots, ref_.as_deref()));
                Ok(false)
            }
            ClientMessage::Unsubscribe { users } => {
                let users = shared(users);
                let mut released = 0;
                for u in users {
                    if self.subscriptions.remove(&u) {
                        app.hub.unwatch(&u, &self.conn);
                        self.conn.forget(&u);
                        released += 1;
                    }
                }
                app.hub.release_subscriptions(user, released);
                Ok(true)
            }
            ClientMessage::Reauth { token } => {
                match self.authority.reauth(&app.auth, user, &token) {
                    Ok(()) => Ok(true),
                    Err(refused) => {
                        self.conn.request_close(CloseReason::ReauthRefused);
                        Err(refused.into())
                    }
                }
            }
            ClientMessage::Query { users } => {
                let users = shared(users);
                let snapshots = app.backend.presence(&users).await?;
                self.push(frames::snapshot(&snapshots, ref_.as_deref()));
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    fn push(&self, json: Utf8Bytes) {
        self.conn
            .push_control(json, self.app.config.max_control_queue);
    }

    fn reply_error(&self, error: &ApiError, ref_: Option<String>) {
        self.reject(error.code);
        self.push(error.ws_frame(ref_.as_deref()));
    }

    fn reject(&self, code: &'static str) {
        self.app.metrics.rejected(code);
    }
}

/// Refuses a request that names more than `max` users (`too_many_users`).
pub fn check_user_count(count: usize, max: usize) -> Result<(), ApiError> {
    if count > max {
        return Err(ApiError::refused(
            "too_many_users",
            format!("at most {max} users per request"),
        ));
    }
    Ok(())
}

/// The users of a WebSocket message (checked by the parser) as the backend
/// and the hub key them.
fn shared(users: Vec<UserId>) -> Vec<Arc<str>> {
    users.into_iter().map(Arc::from).collect()
}

fn is_bye(text: &str) -> bool {
    parse_client_message(text).is_ok_and(|f| matches!(f.message, ClientMessage::Bye))
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// After the server's close frame, reads (and drops) what the client still
/// sends until its own close frame, the end of the stream, or a short
/// bound. Closing the TCP connection with unread data makes the kernel
/// send a reset, which can destroy our close frame before the client reads
/// it; a flooding client would then see 1006 instead of why it was closed.
async fn linger(socket: &mut WebSocket) {
    let drain = async {
        for _ in 0..LINGER_MAX_FRAMES {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Bounds of [`linger`]: the client answers a close at once if it listens.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_millis(500);
const LINGER_MAX_FRAMES: usize = 4096;

/// A client frame that breaks RFC 6455 or our size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Violation {
    /// A frame or message over `max_frame_bytes`.
    TooBig,
    /// A text frame (or close reason) that is not UTF-8.
    InvalidUtf8,
    /// Anything else the protocol forbids: unmasked frames, reserved bits
    /// or opcodes, fragmented or oversized control frames, a continuation
    /// with nothing to continue, data after the close frame…
    Protocol,
    /// Continuation frames past the socket's budget, counted by the
    /// connection's [`FrameMeter`].
    Flood,
}

impl Violation {
    /// Classifies a read error. axum hides tungstenite's error type, so
    /// this reads tungstenite's messages (the end-to-end tests in
    /// `tests/tests/abuse_frames.rs` pin them).
    fn of(e: &axum::Error) -> Option<Violation> {
        let text = e.to_string();
        if text.starts_with("Space limit exceeded") {
            Some(Violation::TooBig)
        } else if text.contains(CONTINUATION_FLOOD) {
            Some(Violation::Flood)
        } else if text.starts_with("UTF-8 encoding error") {
            Some(Violation::InvalidUtf8)
        } else if text.starts_with("WebSocket protocol error")
            && !text.contains("reset without closing handshake")
        {
            Some(Violation::Protocol)
        } else {
            None
        }
    }

    /// The close code (RFC 6455 §7.4.1) and the reason, which is also the
    /// error code counted in `presence_rejected_messages_total`.
    fn close_frame(self) -> (u16, &'static str) {
        match self {
            Violation::TooBig => (1009, "frame_too_large"),
            Violation::InvalidUtf8 => (1007, "invalid_utf8"),
            Violation::Protocol => (1002, "protocol_error"),
            Violation::Flood => (1008, "rate_limited"),
        }
    }
}

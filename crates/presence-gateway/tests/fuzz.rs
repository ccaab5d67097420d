//! Property tests that fuzz the gateway's input surface on stable Rust.
//!
//! Arbitrary bytes, and arbitrary JSON shaped like each message the gateway
//! accepts, go through the real parsers and handlers: the native REST and
//! Rocket.Chat routers (called in process with `tower::ServiceExt::oneshot`)
//! and the WebSocket handler (a real socket to a gateway served on
//! `127.0.0.1:0`), all on the embedded backend. Every answer must be a
//! success or an error whose code is listed in `docs/errors.md`; nothing
//! panics, nothing answers 5xx, and a socket survives every bad frame.
//!
//! Shaped JSON matters more than random bytes: a random byte string is
//! refused by the JSON parser long before it reaches a handler, while an
//! object with the right `type` and field names, holding values of every
//! JSON type, reaches the field checks, the rule checks in `presence-core`
//! and the backend.
//!
//! Each target runs `FUZZ_CASES` cases (10 000 by default, as CI runs
//! them); set `PROPTEST_CASES` to run more locally.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use futures_util::{SinkExt, StreamExt};
use presence_embedded::{MemoryBackend, MemoryConfig, MemoryStore, SystemClock};
use presence_gateway::app::App;
use presence_gateway::auth::{AuthConfig, Authenticator};
use presence_gateway::config::GatewayConfig;
use presence_gateway::metrics::Metrics;
use presence_gateway::ratelimit::{Rate, RateLimits};
use presence_protocol::ws::MessageType;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceExt;

/// Cases per target, as CI runs them.
const FUZZ_CASES: u32 = 10_000;
const SECRET: [u8; 32] = [42; 32];

// ---- Targets ----

/// Native REST: every route, arbitrary bodies and bodies shaped like the
/// route's own, as an admin and as a plain user.
#[test]
fn fuzz_native_rest_answers_only_documented_codes() {
    let h = Harness::get();
    run(rest_case(NATIVE_ROUTES), |case| {
        let (status, body) = h.rest(&case);
        check_native_answer(&case, status, &body)
    });
}

/// Rocket.Chat-compatible REST: the same, with its headers and its error
/// shape `{success: false, error, errorType?}`.
#[test]
fn fuzz_rocketchat_rest_answers_only_documented_codes() {
    let h = Harness::get();
    run(rest_case(ROCKETCHAT_ROUTES), |case| {
        let (status, body) = h.rest(&case);
        check_rocketchat_answer(&case, status, &body)
    });
}

/// WebSocket: text frames with arbitrary text and JSON shaped like each
/// client message, and binary frames with arbitrary bytes. After each
/// case a probe `query` with a fresh `ref` must be answered on the same
/// socket, and every frame before its answer must be a documented error,
/// an `ack`, or a server frame of the protocol.
#[test]
fn fuzz_websocket_frames_answer_only_documented_codes() {
    let h = Harness::get();
    let socket = Mutex::new(None::<Ws>);
    let probes = std::sync::atomic::AtomicU64::new(0);
    run(ws_case(), |frame| {
        let n = probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut socket = socket.lock().unwrap();
        h.rt.block_on(h.ws_exchange(&mut socket, frame, n))
    });
}

/// The WebSocket message parser alone, on arbitrary text: it never panics
/// and every refusal carries a documented code.
#[test]
fn fuzz_websocket_parser_refuses_with_documented_codes() {
    let codes = documented_codes();
    let text = prop_oneof![
        any::<String>(),
        shaped_ws_message().prop_map(|v| v.to_string())
    ];
    run(
        text,
        |text| match presence_protocol::ws::parse_client_message(&text) {
            Ok(_) => Ok(()),
            Err(e) if codes.contains(e.code) => Ok(()),
            Err(e) => Err(format!(
                "undocumented parser code {:?} for {text:?}",
                e.code
            )),
        },
    );
}

// ---- Cases ----

/// One REST call.
#[derive(Clone, Debug)]
struct RestCase {
    method: Method,
    path: String,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    admin: bool,
}

/// A route: method, path (with `{id}` for an arbitrary path segment), and
/// the field names of its body.
type Route = (&'static str, &'static str, &'static [&'static str]);

const NATIVE_ROUTES: &[Route] = &[
    ("GET", "/v1/users/{id}/presence", &[]),
    ("POST", "/v1/presence/query", &["users"]),
    ("GET", "/v1/presence/online-count", &[]),
    ("GET", "/v1/me", &[]),
    ("PUT", "/v1/me/status", &["status", "text", "expires_at"]),
    ("POST", "/v1/me/custom-status", &["id"]),
    ("GET", "/v1/me/preferences", &[]),
    (
        "PATCH",
        "/v1/me/preferences",
        &["auto_away", "idle_time_limit"],
    ),
    ("POST", "/v1/me/calendar", &["event_id", "busy"]),
    ("GET", "/v1/admin/settings", &[]),
    (
        "PATCH",
        "/v1/admin/settings",
        &[
            "allow_custom_status_text",
            "allow_invisible",
            "calendar_integration",
            "default_auto_away",
            "default_idle_time_limit",
            "cap",
        ],
    ),
    ("GET", "/v1/admin/custom-statuses", &[]),
    (
        "POST",
        "/v1/admin/custom-statuses",
        &["name", "status_type"],
    ),
    (
        "PATCH",
        "/v1/admin/custom-statuses/{id}",
        &["name", "status_type"],
    ),
    ("DELETE", "/v1/admin/custom-statuses/{id}", &[]),
    ("GET", "/v1/admin/cap", &[]),
    ("POST", "/v1/admin/cap/enable", &[]),
    (
        "PUT",
        "/v1/admin/users/{id}/status",
        &["status", "text", "expires_at"],
    ),
    (
        "PUT",
        "/v1/admin/users/{id}/profile",
        &["username", "name", "utc_offset"],
    ),
    ("PUT", "/v1/admin/users/profiles", &["profiles"]),
    ("GET", "/v1/{id}", &[]),
    ("POST", "/v1/users/{id}", &["users"]),
];

const ROCKETCHAT_ROUTES: &[Route] = &[
    ("POST", "/api/v1/method.call/userSetUtcOffset", &["message"]),
    (
        "POST",
        "/api/v1/users.setStatus",
        &["status", "message", "userId", "username"],
    ),
    ("GET", "/api/v1/users.getStatus?userId={id}", &[]),
    ("GET", "/api/v1/users.getStatus?username={id}", &[]),
    ("GET", "/api/v1/users.presence?from={id}", &[]),
    ("GET", "/api/v1/users.presence?ids={id}", &[]),
    ("GET", "/api/v1/custom-user-status.list?query={id}", &[]),
    (
        "GET",
        "/api/v1/custom-user-status.list?count={id}&offset={id}&sort={id}",
        &[],
    ),
    (
        "POST",
        "/api/v1/custom-user-status.create",
        &["name", "statusType"],
    ),
    (
        "POST",
        "/api/v1/custom-user-status.update",
        &["_id", "name", "statusType"],
    ),
    (
        "POST",
        "/api/v1/custom-user-status.delete",
        &["customUserStatusId"],
    ),
    ("GET", "/api/v1/presence.getConnections", &[]),
    ("POST", "/api/v1/presence.enableBroadcast", &[]),
    ("GET", "/api/v1/{id}", &[]),
];

/// Names every shaped object may also carry, to reach the unknown-field
/// checks with names that exist elsewhere.
const STRAY_FIELDS: &[&str] = &["type", "ref", "users", "status", "id", "busy", "__proto__"];

/// Every WebSocket message type with the fields it takes (the protocol's
/// one list), and one type that does not exist.
fn ws_types() -> Vec<(&'static str, &'static [&'static str])> {
    let nonsense: (&'static str, &'static [&'static str]) = ("nonsense", &["x"]);
    MessageType::ALL
        .into_iter()
        .map(|t| (t.as_str(), t.fields()))
        .chain([nonsense])
        .collect()
}

fn rest_case(routes: &'static [Route]) -> impl Strategy<Value = RestCase> {
    let route = proptest::sample::select(routes);
    (route, path_segment(), body_for_any(), any::<bool>(), 0..4u8).prop_flat_map(
        |((method, path, fields), segment, raw, admin, content)| {
            let path = path.replace("{id}", &segment);
            let method = Method::from_bytes(method.as_bytes()).expect("known method");
            let shaped = shaped_object(fields).prop_map(|v| v.to_string().into_bytes());
            let body = prop_oneof![
                1 => Just(Vec::new()),
                2 => Just(raw),
                5 => shaped,
            ];
            let content_type = match content {
                0 => None,
                1 => Some("text/plain"),
                _ => Some("application/json"),
            };
            body.prop_map(move |body| RestCase {
                method: method.clone(),
                path: path.clone(),
                body,
                content_type,
                admin,
            })
        },
    )
}

/// A path segment or query value: usually a plausible id, sometimes
/// arbitrary percent-encoded text.
fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,12}",
        any::<String>().prop_map(|s| percent_encode(&s)),
        Just("%FF%FE".to_owned()),
        Just("%".to_owned()),
        Just("a".repeat(300)),
    ]
}

fn body_for_any() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<String>().prop_map(String::into_bytes),
        json_value(3).prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// A WebSocket frame to send.
#[derive(Clone, Debug)]
enum WsFrame {
    Text(String),
    Binary(Vec<u8>),
}

fn ws_case() -> impl Strategy<Value = WsFrame> {
    prop_oneof![
        1 => any::<String>().prop_map(WsFrame::Text),
        1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(WsFrame::Binary),
        8 => shaped_ws_message().prop_map(|v| WsFrame::Text(v.to_string())),
    ]
}

/// A JSON object with a message `type` and, mostly, that type's field
/// names holding arbitrary values, sometimes a `ref`, sometimes a stray
/// field.
fn shaped_ws_message() -> impl Strategy<Value = Value> {
    let kind = proptest::sample::select(ws_types());
    kind.prop_flat_map(|(name, fields)| {
        let type_value = prop_oneof![
            8 => Just(Value::from(name)),
            1 => json_value(1),
        ];
        let reference = prop_oneof![
            2 => Just(None),
            1 => json_value(1).prop_map(Some),
        ];
        (type_value, shaped_object(fields), reference).prop_map(|(kind, object, reference)| {
            let mut object = match object {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            object.insert("type".into(), kind);
            if let Some(r) = reference {
                object.insert("ref".into(), r);
            }
            Value::Object(object)
        })
    })
}

/// An object whose keys are drawn from `fields` (plus, rarely, a stray
/// name) with values that are mostly plausible for the field and
/// sometimes any JSON at all.
fn shaped_object(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let names: Vec<&'static str> = fields.iter().chain(STRAY_FIELDS).copied().collect();
    let weights: Vec<u32> = fields
        .iter()
        .map(|_| 8)
        .chain(STRAY_FIELDS.iter().map(|_| 1))
        .collect();
    let entry = (0..names.len()).prop_flat_map(move |_| {
        let names = names.clone();
        let weights = weights.clone();
        let pick = proptest::sample::select(
            (0..names.len())
                .flat_map(|i| std::iter::repeat_n(i, weights[i] as usize))
                .collect::<Vec<_>>(),
        );
        (pick, plausible_value()).prop_map(move |(i, v)| (names[i].to_owned(), v))
    });
    proptest::collection::vec(entry, 0..5)
        .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<String, Value>>()))
}

/// Values that pass some checks and fail others: statuses, texts near
/// the limits, format characters, timestamps near now and far away, huge
/// and negative numbers, id lists, and arbitrary JSON.
fn plausible_value() -> impl Strategy<Value = Value> {
    let now = unix_now();
    prop_oneof![
        proptest::sample::select(vec![
            "online",
            "away",
            "busy",
            "invisible",
            "offline",
            "ONLINE",
            "",
            " ",
        ])
        .prop_map(Value::from),
        "[ -~]{0,130}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        proptest::sample::select(vec![
            "\u{202e}evil",
            "a\u{200b}b",
            "\u{feff}",
            "\u{0007}",
            "😀😀",
            "  padded  ",
        ])
        .prop_map(Value::from),
        (-100_000i64..100_000_000).prop_map(move |delta| Value::from(rfc3339(now as i64 + delta))),
        "[0-9T:Z+-]{0,30}".prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (0u64..100_000).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        proptest::collection::vec("[a-z0-9]{0,8}", 0..6)
            .prop_map(|ids| Value::from(ids.into_iter().map(Value::from).collect::<Vec<_>>())),
        json_value(2),
    ]
}

/// Any JSON value up to `depth` levels of nesting.
fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(depth, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---- Checks ----

/// The codes `docs/errors.md` documents: every code in backticks in the
/// first column of its tables.
fn documented_codes() -> &'static BTreeSet<String> {
    static CODES: OnceLock<BTreeSet<String>> = OnceLock::new();
    CODES.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
        let text = std::fs::read_to_string(path).expect("docs/errors.md lists the error codes");
        let codes: BTreeSet<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split('`').next())
            .map(str::to_owned)
            .collect();
        assert!(codes.len() > 20, "docs/errors.md lists too few codes");
        codes
    })
}

fn check_native_answer(case: &RestCase, status: StatusCode, body: &[u8]) -> Result<(), String> {
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        return Err(format!(
            "{status} for {case:?}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    if status.is_success() {
        return Ok(());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{status} with a non-JSON body ({e}) for {case:?}"))?;
    let code = value["error"]["code"]
        .as_str()
        .ok_or_else(|| format!("{status} without error.code: {value} for {case:?}"))?;
    if value["error"]["message"].as_str().is_none_or(str::is_empty) {
        return Err(format!("{status} without a message: {value} for {case:?}"));
    }
    if !documented_codes().contains(code) {
        return Err(format!(
            "undocumented code {code:?} ({status}) for {case:?}"
        ));
    }
    Ok(())
}

fn check_rocketchat_answer(case: &RestCase, status: StatusCode, body: &[u8]) -> Result<(), String> {
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        return Err(format!(
            "{status} for {case:?}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{status} with a non-JSON body ({e}) for {case:?}"))?;
    if status.is_success() {
        return if value["success"] == json!(true) {
            Ok(())
        } else {
            Err(format!(
                "{status} without success: true: {value} for {case:?}"
            ))
        };
    }
    if value["success"] != json!(false) && value["status"] != json!("error") {
        return Err(format!(
            "{status} is not a Rocket.Chat error: {value} for {case:?}"
        ));
    }
    if let Some(kind) = value.get("errorType") {
        let kind = kind.as_str().unwrap_or_default();
        // Rocket.Chat's own types, or `error-` + a native code.
        let native = kind
            .strip_prefix("error-")
            .map(|code| code.replace('-', "_"))
            .is_some_and(|code| documented_codes().contains(&code));
        if !native && !documented_codes().contains(kind) {
            return Err(format!(
                "undocumented errorType {kind:?} ({status}) for {case:?}"
            ));
        }
    }
    Ok(())
}

/// Frames a server may send in answer to anything.
fn check_ws_frame(text: &str, sent: &WsFrame) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("non-JSON frame {text:?} ({e})"))?;
    match value["type"].as_str() {
        Some("error") => {
            let code = value["code"].as_str().unwrap_or_default();
            if documented_codes().contains(code) {
                Ok(value)
            } else {
                Err(format!("undocumented code {code:?} after {sent:?}"))
            }
        }
        Some("ack" | "snapshot" | "presence" | "notice" | "ready") => Ok(value),
        other => Err(format!(
            "unexpected frame type {other:?}: {text} after {sent:?}"
        )),
    }
}

// ---- The gateway under test ----

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Harness {
    rt: Runtime,
    router: Router,
    addr: SocketAddr,
    admin_token: String,
    user_token: String,
}

impl Harness {
    /// One gateway per test process, on the embedded backend, with rate
    /// limits high enough that cases reach the handlers.
    fn get() -> &'static Harness {
        static HARNESS: OnceLock<Harness> = OnceLock::new();
        HARNESS.get_or_init(Harness::start)
    }

    fn start() -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (router, addr) = rt.block_on(async {
            let backend = MemoryBackend::start(
                MemoryConfig::default(),
                Arc::new(MemoryStore::new()),
                Arc::new(SystemClock),
            )
            .expect("backend");
            let auth = Authenticator::new(AuthConfig::Hs256 {
                secret: SECRET.to_vec(),
            })
            .expect("authenticator");
            let plenty = Rate::per(1_000_000, Duration::from_secs(1))
                .and_then(|r| r.with_capacity(1_000_000))
                .expect("rate");
            let config = GatewayConfig {
                rate_limits: RateLimits {
                    status_text: plenty,
                    status: plenty,
                    ws_messages: plenty,
                    ..RateLimits::default()
                },
                ..GatewayConfig::default()
            };
            let app = App::new(Arc::new(backend), auth, Metrics::new(), config);
            app.start_dispatcher().await;
            let router = app.router();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            // The real accept loop, so frames also pass the frame meter.
            let served = router.clone();
            let (connections, config, metrics) = (
                app.connections.clone(),
                app.config.listener(),
                app.metrics.clone(),
            );
            tokio::spawn(presence_gateway::listener::serve(
                listener,
                served,
                connections,
                config,
                metrics,
                std::future::pending(),
            ));
            (router, addr)
        });
        Harness {
            rt,
            router,
            addr,
            admin_token: token("fuzz-admin", true),
            user_token: token("fuzz-user", false),
        }
    }

    fn rest(&self, case: &RestCase) -> (StatusCode, Vec<u8>) {
        let (user, token) = if case.admin {
            ("fuzz-admin", &self.admin_token)
        } else {
            ("fuzz-user", &self.user_token)
        };
        let mut request = Request::builder()
            .method(case.method.clone())
            .uri(&case.path)
            .header("authorization", format!("Bearer {token}"))
            .header("x-user-id", user)
            .header("x-auth-token", token.as_str());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let request = match request.body(Body::from(case.body.clone())) {
            Ok(request) => request,
            // A path that is not a valid URI never reaches the server.
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    br#"{"error":{"code":"invalid_query","message":"-"}}"#.to_vec(),
                );
            }
        };
        self.rt.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, body.to_vec())
        })
    }

    /// Sends `frame` on the socket (opening one if needed), then a probe
    /// `query` with ref `probe-n`, and checks every frame up to the probe's
    /// snapshot. A `bye` or close is allowed to end the socket; the next
    /// case opens a new one.
    async fn ws_exchange(
        &self,
        socket: &mut Option<Ws>,
        frame: WsFrame,
        n: u64,
    ) -> Result<(), String> {
        if socket.is_none() {
            *socket = Some(self.open_socket().await?);
        }
        let ws = socket.as_mut().expect("opened above");
        let message = match &frame {
            WsFrame::Text(text) => Message::text(text.clone()),
            WsFrame::Binary(bytes) => Message::binary(bytes.clone()),
        };
        ws.send(message).await.map_err(|e| format!("send: {e}"))?;
        let probe = format!("probe-{n}");
        let query = json!({"type": "query", "users": ["fuzz-user"], "ref": probe});
        if ws.send(Message::text(query.to_string())).await.is_err() {
            return self.ended_by(socket, &frame);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let next = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| format!("no answer to the probe after {frame:?}"))?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    let value = check_ws_frame(&text, &frame)?;
                    if value["type"] == "snapshot" && value["ref"] == probe.as_str() {
                        return Ok(());
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(close))) => {
                    let code = close.as_ref().map(|c| u16::from(c.code));
                    *socket = None;
                    // Only a goodbye may end the socket.
                    return if is_bye(&frame) {
                        Ok(())
                    } else {
                        Err(format!("socket closed ({code:?}) after {frame:?}"))
                    };
                }
                Some(Ok(other)) => return Err(format!("unexpected {other:?} after {frame:?}")),
                Some(Err(_)) | None => return self.ended_by(socket, &frame),
            }
        }
    }

    fn ended_by(&self, socket: &mut Option<Ws>, frame: &WsFrame) -> Result<(), String> {
        *socket = None;
        if is_bye(frame) {
            Ok(())
        } else {
            Err(format!("socket ended after {frame:?}"))
        }
    }

    async fn open_socket(&self) -> Result<Ws, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}/v1/ws?device_id=fuzz&platform=desktop", self.addr);
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.user_token)
                .parse()
                .map_err(|_| "header".to_owned())?,
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // The first frame is `ready`.
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains("\"ready\"") => Ok(ws),
            other => Err(format!("no ready frame: {other:?}")),
        }
    }
}

/// Whether the frame may end the socket: a `bye` the parser accepts (a
/// goodbye), or a `reauth` the parser accepts, whose token is refused
/// (R2: the socket closes with 4003; the fuzz never holds a fresh token).
fn is_bye(frame: &WsFrame) -> bool {
    match frame {
        WsFrame::Text(text) => presence_protocol::ws::parse_client_message(text)
            .is_ok_and(|f| matches!(f.message.type_name(), "bye" | "reauth")),
        WsFrame::Binary(_) => false,
    }
}

// ---- Helpers ----

/// Runs `FUZZ_CASES` cases (or `PROPTEST_CASES`) of `strategy` through
/// `test`, failing with the shrunk case.
fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FUZZ_CASES);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        test(value).map_err(proptest::test_runner::TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn token(user: &str, admin: bool) -> String {
    let mut claims = json!({"sub": user, "exp": unix_now() + 3600});
    if admin {
        claims["roles"] = json!(["admin"]);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&SECRET).expect("key"),
    )
    .expect("token")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix.clamp(0, 253_402_300_799))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

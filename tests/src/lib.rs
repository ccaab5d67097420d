//! The end-to-end harness: starts real `presenced` processes on free
//! loopback ports with temporary data directories, and drives them with
//! real WebSocket and HTTP clients.
//!
//! Waiting is always for an event (a frame, a line on stdout, an HTTP
//! answer) with a deadline, never a bare sleep.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The HS256 secret every test server uses.
pub const SECRET: &str = "e2e-test-secret-that-is-at-least-32-bytes-long";

/// The `presenced` binary, built once per test process so a test never
/// runs a stale binary.
pub fn presenced_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("PRESENCED_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps")
            .to_path_buf();
        let release = profile_dir.ends_with("release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "-p", "presenced"]);
        if release {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build -p presenced");
        assert!(status.success(), "cargo build -p presenced failed");
        profile_dir.join("presenced")
    })
    .clone()
}

/// Options for one server process.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Extra flags after `serve`.
    pub args: Vec<String>,
    /// Reuse this data directory (for restart tests).
    pub data_dir: Option<PathBuf>,
}

impl ServerOptions {
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.to_owned());
        self.args.push(value.to_string());
        self
    }

    /// Raises the per-user and per-socket rate limits far above what a rule
    /// test sends, so tests that change a status many times never meet
    /// them. The limits themselves are tested with their defaults.
    pub fn relaxed_limits(self) -> Self {
        self.arg("--status-changes-burst", 10_000)
            .arg("--status-changes-per-second", 10_000)
            .arg("--text-changes-per-minute", 100_000)
            .arg("--socket-messages-burst", 10_000)
            .arg("--socket-messages-per-second", 10_000)
    }
}

/// How many nodes a [`Server`] runs: 1 (embedded, the default), or the
/// value of `E2E_CLUSTER` (e.g. `E2E_CLUSTER=3`): that many `presenced`
/// nodes in cluster mode on a redis-server of their own. The same tests
/// then run unchanged against a cluster, with sockets and HTTP requests
/// spread over the nodes round-robin, so a watcher and the user it watches
/// are usually on different nodes.
pub fn cluster_nodes() -> usize {
    std::env::var("E2E_CLUSTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(0)
}

/// Shards of an `E2E_CLUSTER` cluster: a few, so every node leads some.
const CLUSTER_SHARDS: u32 = 4;

/// One running `presenced` process.
struct Node {
    child: Option<Child>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    /// The node id in cluster mode.
    id: Option<String>,
}

/// A running `presenced`, or in cluster mode (`E2E_CLUSTER`) a redis-server
/// and several `presenced` nodes. Killed when dropped.
pub struct Server {
    nodes: Vec<Node>,
    /// The first node's address.
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    options: ServerOptions,
    http: reqwest::Client,
    /// Round-robin over the nodes for sockets and HTTP requests.
    next_node: std::sync::atomic::AtomicUsize,
    /// SIGTERM was sent: requests go to the first node only.
    draining: std::sync::atomic::AtomicBool,
    /// The cluster's redis-server (cluster mode only); dropped after the
    /// nodes.
    redis: Option<presence_testkit::RedisServer>,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(ServerOptions::default()).await
    }

    pub async fn start_with(options: ServerOptions) -> Server {
        let (temp, data_dir) = match &options.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::tempdir().expect("temp dir");
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        // A test that brings its own `--redis` builds its own cluster.
        let own_cluster = options.args.iter().any(|a| a == "--redis");
        let redis =
            (cluster_nodes() > 0 && !own_cluster).then(presence_testkit::RedisServer::start);
        let mut server = Server {
            nodes: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            _temp: temp,
            options,
            http: reqwest::Client::new(),
            next_node: Default::default(),
            draining: Default::default(),
            redis,
        };
        server.spawn_nodes().await;
        server
    }

    async fn spawn_nodes(&mut self) {
        // A test that brings its own `--redis` runs one process per Server.
        let count = if self.redis.is_some() {
            cluster_nodes()
        } else {
            1
        };
        let mut nodes = Vec::with_capacity(count);
        for i in 0..count {
            let mut args = Vec::new();
            let mut id = None;
            if let Some(redis) = &self.redis {
                // Stable across restarts, like a StatefulSet's pod names:
                // a restarted node tells the leaders to drop the devices
                // its previous run held.
                let node_id = format!("e2e-node-{i}");
                args.extend([
                    "--redis".to_owned(),
                    redis.url(),
                    "--shards".to_owned(),
                    CLUSTER_SHARDS.to_string(),
                    "--node-id".to_owned(),
                    node_id.clone(),
                ]);
                id = Some(node_id);
            }
            let data_dir = if count == 1 {
                self.data_dir.clone()
            } else {
                self.data_dir.join(format!("node-{i}"))
            };
            let (child, addr, metrics_addr) = spawn(&data_dir, &self.options, &args).await;
            nodes.push(Node {
                child: Some(child),
                addr,
                metrics_addr,
                id,
            });
        }
        self.addr = nodes[0].addr;
        self.nodes = nodes;
        if let Some(redis) = &self.redis {
            for node in &self.nodes {
                wait_ready(&self.http, node.addr, DEADLINE).await;
            }
            let ids: Vec<String> = self.nodes.iter().filter_map(|n| n.id.clone()).collect();
            wait_for_spread(redis, &ids).await;
        }
    }

    /// Waits until every node answers `/readyz` with 200, failing after
    /// `within` for a node.
    pub async fn wait_ready(&self, within: Duration) {
        for node in &self.nodes {
            wait_ready(&self.http, node.addr, within).await;
        }
    }

    /// The node the next socket or request goes to: round-robin over the
    /// nodes still running (a drained node without sockets exits at once).
    fn pick(&self) -> SocketAddr {
        let count = self.nodes.len();
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            // Nodes without sockets finish draining at once and exit; the
            // first node got the first socket and drains for the window.
            return self.nodes[0].addr;
        }
        for _ in 0..count {
            let i = self
                .next_node
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let node = &self.nodes[i % count];
            if count == 1 || node.child.as_ref().and_then(Child::id).is_some_and(running) {
                return node.addr;
            }
        }
        self.nodes[0].addr
    }

    /// Whether this server is a cluster of several nodes.
    pub fn is_cluster(&self) -> bool {
        self.redis.is_some()
    }

    /// The cluster's redis-server, in cluster mode.
    pub fn redis(&self) -> Option<&presence_testkit::RedisServer> {
        self.redis.as_ref()
    }

    /// The address of the separate ops listener, if `--metrics-listen` was
    /// given (first node).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.nodes[0].metrics_addr
    }

    /// The node ids of a cluster, in start order.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().filter_map(|n| n.id.clone()).collect()
    }

    /// The URL of `path` on one of the nodes (round-robin in a cluster).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.pick(), path)
    }

    /// Mints a token for `user`.
    pub fn token(&self, user: &str, admin: bool) -> String {
        token(user, admin)
    }

    /// The process id of the first node, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.nodes[0].child.as_ref().and_then(Child::id)
    }

    /// Sends `signal` (e.g. `"STOP"`, `"CONT"`, `"KILL"`) to every node.
    pub fn signal(&self, signal: &str) {
        for node in &self.nodes {
            if let Some(pid) = node.child.as_ref().and_then(Child::id) {
                let status = std::process::Command::new("kill")
                    .args([&format!("-{signal}"), &pid.to_string()])
                    .status()
                    .expect("kill");
                assert!(status.success(), "kill -{signal} {pid}");
            }
        }
    }

    /// Kills every node with SIGKILL and waits for them.
    pub async fn kill9(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                child.kill().await.expect("kill -9");
            }
        }
    }

    /// Sends SIGTERM to every node and waits for them to exit; returns the
    /// exit code (the first node's; every node must agree).
    pub async fn sigterm(&mut self) -> Option<i32> {
        self.send_sigterm();
        self.wait_exit().await
    }

    /// Sends SIGTERM to every node without waiting, so a test can watch
    /// the drain.
    pub fn send_sigterm(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for node in &self.nodes {
            let pid = node
                .child
                .as_ref()
                .and_then(Child::id)
                .expect("presenced is running");
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("kill -TERM");
            assert!(status.success());
        }
    }

    /// Waits for every node to exit; returns the exit code, which must be
    /// the same for all.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let mut codes = Vec::new();
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .expect("presenced exits after SIGTERM")
                .expect("wait");
            codes.push(exit.code());
        }
        let first = *codes.first()?;
        assert!(codes.iter().all(|c| *c == first), "exit codes {codes:?}");
        first
    }

    /// Starts the processes again on the same data directory (new ports; in
    /// a cluster, the same redis-server and node ids).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.draining
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.spawn_nodes().await;
    }

    /// An HTTP request builder with the user's bearer token.
    pub fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(token)
    }

    pub fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(token)
    }

    pub fn put(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path)).bearer_auth(token)
    }

    pub fn patch(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.patch(self.url(path)).bearer_auth(token)
    }

    pub fn delete(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(token)
    }

    /// A plain client for requests that set their own headers.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request and returns the HTTP status and the JSON body
    /// (`Value::Null` when the body is empty or not JSON).
    pub async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = tokio::time::timeout(DEADLINE, request.send())
            .await
            .expect("HTTP answer before the deadline")
            .expect("HTTP request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("HTTP body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `PATCH /v1/admin/settings` as an admin; panics unless accepted.
    pub async fn admin_settings(&self, patch: Value) -> Value {
        let request = self.patch("/v1/admin/settings", &admin_token());
        let (status, body) = Self::call(request.json(&patch)).await;
        assert_eq!(status, 200, "settings {patch} refused: {body}");
        body
    }

    /// `PATCH /v1/me/preferences` as `user`; panics unless accepted.
    pub async fn preferences(&self, user: &str, patch: Value) -> Value {
        let request = self.patch("/v1/me/preferences", &token(user, false));
        let (status, body) = Self::call(request.json(&patch)).await;
        assert_eq!(status, 200, "preferences {patch} refused: {body}");
        body
    }

    /// Creates an admin-defined custom status (C1); returns its id.
    pub async fn create_custom_status(&self, name: &str, status_type: &str) -> String {
        let request = self.post("/v1/admin/custom-statuses", &admin_token());
        let body = json!({"name": name, "status_type": status_type});
        let (status, answer) = Self::call(request.json(&body)).await;
        assert!(
            status == 200 || status == 201,
            "creating custom status {body} failed: {status} {answer}"
        );
        answer["id"]
            .as_str()
            .unwrap_or_else(|| panic!("custom status has an id: {answer}"))
            .to_owned()
    }

    /// The WebSocket URL with this query string.
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws?{query}", self.pick())
    }

    /// Tries an upgrade that the server must refuse; returns the HTTP status
    /// and JSON body of the refusal.
    pub async fn refused_upgrade(&self, query: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut request = self.ws_url(query).into_client_request().expect("url");
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        let result = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
            .await
            .expect("an answer to the upgrade");
        match result {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                (status, body)
            }
            Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
            Ok(_) => panic!("upgrade with {query} was accepted"),
        }
    }

    /// Connects a device of `user` over WebSocket and waits for `ready`.
    pub async fn connect(&self, user: &str, device: &str, platform: &str) -> Ws {
        let url = format!(
            "ws://{}/v1/ws?device_id={device}&platform={platform}",
            self.pick()
        );
        let mut ws = Ws::connect_with_token(&url, &token(user, false))
            .await
            .expect("websocket connects");
        ws.ready = Some(ws.expect_type("ready").await);
        ws
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                let _ = child.start_kill();
            }
        }
    }
}

/// Whether process `pid` runs (exists and is not a zombie waiting to be
/// reaped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// H5: waits until every shard's lease is held by the node the
/// aggregators' rule assigns it to, so shard leadership does not move
/// during the test that follows (nodes started one after the other would
/// otherwise hand shards over in its first seconds).
async fn wait_for_spread(redis: &presence_testkit::RedisServer, ids: &[String]) {
    let shards = CLUSTER_SHARDS as u16;
    let target = presence_aggregator::target_leaders(shards, ids);
    presence_testkit::wait_until(
        format_args!("the shards spread as {target:?}"),
        DEADLINE,
        async || {
            (0..shards)
                .map(|s| redis.command(&["GET", &presence_redis::Keys::new(s).lease()]))
                .collect::<Vec<_>>()
        },
        |leases| {
            leases
                .iter()
                .zip(&target)
                .all(|(lease, node)| lease.rsplit_once(':').is_some_and(|(n, _)| n == node))
        },
    )
    .await;
}

/// Polls `/readyz` until the node answers 200 (a cluster node is ready once
/// it listens to the update and reply channels), failing after `within`.
async fn wait_ready(http: &reqwest::Client, addr: SocketAddr, within: Duration) {
    let url = format!("http://{addr}/readyz");
    presence_testkit::wait_until(
        format_args!("{url} to answer 200"),
        within,
        async || {
            let answer = http.get(&url).timeout(Duration::from_secs(2)).send();
            answer.await.map(|r| r.status())
        },
        |status| status.as_ref().is_ok_and(|s| *s == 200),
    )
    .await
    .expect("accepted above");
}

/// Starts one `presenced`; returns it with its address and, with
/// `--metrics-listen`, the address of its ops listener.
async fn spawn(
    data_dir: &Path,
    options: &ServerOptions,
    extra: &[String],
) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut command = Command::new(presenced_bin());
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--jwt-secret", SECRET])
        .args(&options.args)
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawning presenced");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut metrics_addr = None;
    let addr = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("reading stdout") {
            if let Some(url) = line.strip_prefix("presenced metrics on http://") {
                metrics_addr = Some(url.trim().parse::<SocketAddr>().expect("metrics address"));
            }
            if let Some(url) = line.strip_prefix("presenced listening on http://") {
                return url.trim().parse::<SocketAddr>().expect("listen address");
            }
        }
        panic!("presenced exited before listening");
    })
    .await
    .expect("presenced starts listening");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr, metrics_addr)
}

/// A token of the user `admin`, who has the admin role.
pub fn admin_token() -> String {
    token("admin", true)
}

/// Mints an HS256 token with the test secret, valid for an hour.
pub fn token(user: &str, admin: bool) -> String {
    token_issued_at(user, admin, unix_now_secs())
}

/// Mints an HS256 token issued at `issued_at` (Unix seconds) and valid for
/// an hour from then; an `issued_at` two hours ago gives an expired token.
pub fn token_issued_at(user: &str, admin: bool, issued_at: u64) -> String {
    let now = issued_at;
    let claims = presence_gateway::auth::MintClaims {
        sub: user.to_owned(),
        admin,
        username: Some(format!("{user}.name")),
        name: Some(format!("User {user}")),
        ttl: Duration::from_secs(3600),
    };
    presence_gateway::auth::mint_hs256(SECRET.as_bytes(), &claims, now).expect("mint token")
}

/// Seconds since the Unix epoch.
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The RFC 3339 timestamp (UTC, milliseconds) `offset_ms` from now; a
/// negative offset lies in the past. For `expires_at` (T6).
pub fn rfc3339_from_now(offset_ms: i64) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let ms = now_ms + offset_ms;
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A WebSocket client that reads JSON frames with deadlines.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `ready` frame, once received.
    pub ready: Option<Value>,
    next_ref: u64,
    /// Frames read while looking for something else, in order.
    backlog: std::collections::VecDeque<Value>,
}

impl Ws {
    /// Opens a socket with `Authorization: Bearer <token>`.
    pub async fn connect_with_token(
        url: &str,
        token: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Ws {
            stream,
            ready: None,
            next_ref: 0,
            backlog: Default::default(),
        })
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send frame");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("send frame");
    }

    /// Sends `value` with a fresh `ref` and returns the answer carrying that
    /// ref (`ack`, `error` or `snapshot`).
    pub async fn request(&mut self, mut value: Value) -> Value {
        self.next_ref += 1;
        let r = format!("r{}", self.next_ref);
        value["ref"] = json!(r);
        self.send(value).await;
        self.expect(|f| f["ref"] == json!(r)).await
    }

    /// Sends `value` with a fresh `ref` and panics unless the answer is an
    /// `error` with `code`; returns the error frame.
    pub async fn refused(&mut self, value: Value, code: &str) -> Value {
        let answer = self.request(value.clone()).await;
        assert_eq!(answer["type"], "error", "{value} was not refused: {answer}");
        assert_eq!(answer["code"], code, "{value} refused with another code");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "errors carry a human message: {answer}"
        );
        answer
    }

    /// Waits for an `error` frame with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        self.expect(|f| f["type"] == "error" && f["code"] == code)
            .await
    }

    /// Waits for an update of the user's own state (`presence` with `me`)
    /// whose `me` satisfies `pred`; returns `me`. Own updates before it
    /// that do not match are superseded states and are discarded, so a
    /// later wait never matches a stale one.
    pub async fn expect_me(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let frame = self
            .expect_superseding(
                |f| f["type"] == "presence" && f["me"].is_object(),
                |f| pred(&f["me"]),
            )
            .await;
        frame["me"].clone()
    }

    /// Waits for an update about `user` (as a watcher sees it, without
    /// `me`) with `status`. Updates about `user` before it are superseded
    /// states and are discarded, so a later wait never matches a stale one.
    pub async fn expect_update(&mut self, user: &str, status: &str) -> Value {
        self.expect_superseding(
            |f| f["type"] == "presence" && f["user"] == user && f.get("me").is_none(),
            |f| f["status"] == status,
        )
        .await
    }

    /// The next update about `user` as a watcher sees it, whatever it says.
    pub async fn next_update(&mut self, user: &str) -> Value {
        self.expect_superseding(
            |f| f["type"] == "presence" && f["user"] == user && f.get("me").is_none(),
            |_| true,
        )
        .await
    }

    /// Waits for a frame of `class` that satisfies `pred`, discarding the
    /// frames of `class` before it; other frames stay in the backlog.
    async fn expect_superseding(
        &mut self,
        class: impl Fn(&Value) -> bool,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut kept = std::collections::VecDeque::new();
        let mut found = None;
        while let Some(frame) = self.backlog.pop_front() {
            if found.is_some() || !class(&frame) {
                kept.push_back(frame);
            } else if pred(&frame) {
                found = Some(frame);
            }
        }
        self.backlog = kept;
        if let Some(frame) = found {
            return frame;
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Ok(Some(v)) if class(&v) && pred(&v) => return v,
                Ok(Some(v)) if class(&v) => {}
                Ok(Some(v)) => self.backlog.push_back(v),
                Ok(None) => panic!("socket closed while waiting; backlog: {:?}", self.backlog),
                Err(()) => panic!("no matching frame in time; backlog: {:?}", self.backlog),
            }
        }
    }

    /// `subscribe` and return the snapshot's entries.
    pub async fn subscribe(&mut self, users: &[&str]) -> Vec<Value> {
        let answer = self
            .request(json!({"type": "subscribe", "users": users}))
            .await;
        assert_eq!(answer["type"], "snapshot", "subscribe refused: {answer}");
        answer["users"].as_array().expect("entries").clone()
    }

    /// `query` one user and return their entry.
    pub async fn query(&mut self, user: &str) -> Value {
        let answer = self
            .request(json!({"type": "query", "users": [user]}))
            .await;
        assert_eq!(answer["type"], "snapshot", "query refused: {answer}");
        answer["users"][0].clone()
    }

    /// Whether a frame already read but not yet consumed satisfies `pred`.
    pub fn has_backlog(&self, pred: impl Fn(&Value) -> bool) -> bool {
        self.backlog.iter().any(pred)
    }

    /// `ready.me`: what the user saw of themselves when the socket opened.
    pub fn ready_me(&self) -> &Value {
        &self.ready.as_ref().expect("ready received")["me"]
    }

    /// Like [`request`](Self::request) but panics unless the answer is an ack.
    pub async fn ok(&mut self, value: Value) -> Value {
        let answer = self.request(value.clone()).await;
        assert_ne!(answer["type"], "error", "{value} was refused: {answer}");
        answer
    }

    /// The next frame, or `None` if the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        self.read_frame(DEADLINE)
            .await
            .expect("a frame before the deadline")
    }

    /// Reads frames until one satisfies `pred`; earlier frames that do not
    /// match stay in the backlog for later reads.
    pub async fn expect(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).expect("index");
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Ok(Some(v)) if pred(&v) => return v,
                Ok(Some(v)) => self.backlog.push_back(v),
                Ok(None) => panic!("socket closed while waiting; backlog: {:?}", self.backlog),
                Err(()) => panic!("no matching frame in time; backlog: {:?}", self.backlog),
            }
        }
    }

    pub async fn expect_type(&mut self, ty: &str) -> Value {
        self.expect(|f| f["type"] == ty).await
    }

    /// Waits for a `presence` frame about `user` with `status`.
    pub async fn expect_presence(&mut self, user: &str, status: &str) -> Value {
        self.expect(|f| f["type"] == "presence" && f["user"] == user && f["status"] == status)
            .await
    }

    /// Asserts no frame matching `pred` arrives within `window`. Use only to
    /// prove an absence, after a positive event proved delivery works.
    pub async fn expect_none(&mut self, window: Duration, pred: impl Fn(&Value) -> bool) {
        assert!(
            !self.backlog.iter().any(&pred),
            "unexpected frame in backlog: {:?}",
            self.backlog
        );
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.read_frame(left).await {
                Ok(Some(v)) => {
                    assert!(!pred(&v), "unexpected frame: {v}");
                    self.backlog.push_back(v);
                }
                Ok(None) | Err(()) => return,
            }
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let next = tokio::time::timeout(left, self.stream.next())
                .await
                .expect("socket closes before the deadline");
            match next {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Closes the socket cleanly (a client close frame) and completes the
    /// closing handshake: reads until the server's close frame, so the TCP
    /// connection ends with a FIN. Dropping it with unread data would send
    /// a reset, which can discard the close frame on the server before it
    /// is read, turning a clean close into a lost connection (D7).
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        let _ = tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }

    /// Sends a close frame and drops the connection at once, without
    /// reading anything: an app that quits. Unread frames make the kernel
    /// end the connection with a reset.
    pub async fn close_and_drop(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// Drops the TCP connection without a close frame (network loss).
    pub fn drop_connection(self) {
        drop(self);
    }

    async fn read_frame(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        loop {
            let next = tokio::time::timeout(wait, self.stream.next())
                .await
                .map_err(|_| ())?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Ok(Some(
                        serde_json::from_str(&text).expect("server sends JSON"),
                    ));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// A watching socket and the latest view of each watched user it was
/// shown (the subscribe snapshot, then every update in order).
pub struct Watcher {
    pub ws: Ws,
    pub views: std::collections::HashMap<String, Value>,
}

impl Watcher {
    /// Connects `name` to `node` and subscribes to `users`.
    pub async fn start(node: &Server, name: &str, users: &[&str]) -> Watcher {
        let mut ws = node.connect(name, "watching", "web").await;
        let entries = ws.subscribe(users).await;
        let views = entries
            .into_iter()
            .map(|e| (e["user"].as_str().expect("user").to_owned(), e))
            .collect();
        Watcher { ws, views }
    }

    /// Reads every frame that arrives within `window` and records the
    /// updates.
    pub async fn pump(&mut self, window: Duration) {
        self.ws.expect_none(window, |_| false).await;
        while self.ws.has_backlog(|_| true) {
            let frame = self.ws.next().await.expect("a frame from the backlog");
            if frame["type"] == "presence" && frame.get("me").is_none() {
                let user = frame["user"].as_str().expect("user").to_owned();
                self.views.insert(user, frame);
            }
        }
    }

    /// The latest view of `user` shown to this watcher.
    pub fn view(&self, user: &str) -> &Value {
        self.views.get(user).unwrap_or(&Value::Null)
    }
}

//! The accept path under abuse, against the real binary (issue 10):
//! socket options on accepted sockets (F0), the per-user socket budget
//! (X6, F1), the per-node connection budget (F1), header and idle
//! timeouts against slowloris (F4), and running out of file descriptors.
//!
//! Every test talks to the first node (`server.addr`) explicitly: the
//! budgets are per node, and a round-robin over a cluster's nodes would
//! spread what a test means to concentrate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use presence_e2e::{DEADLINE, Server, ServerOptions, Ws, admin_token, token};
use presence_testkit::wait_until;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The value of the first sample line that starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{metrics}"))
}

async fn metrics(addr: SocketAddr) -> String {
    let response = tokio::time::timeout(DEADLINE, reqwest::get(format!("http://{addr}/metrics")))
        .await
        .expect("metrics answer in time")
        .expect("metrics request");
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics body")
}

/// Sends one keep-alive request on `stream` and reads the complete answer,
/// so the server has surely accepted (and configured) the connection.
async fn request_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed before the answer");
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return text.into_owned();
                }
            }
        }
    })
    .await
    .expect("an answer in time")
}

/// The server's end of the TCP connection whose client end is `client`,
/// duplicated into this process with `pidfd_getfd` (the server is our
/// child, so we may).
fn server_side_socket(pid: u32, server: SocketAddr, client: SocketAddr) -> std::os::fd::OwnedFd {
    // /proc/net/tcp: "sl local_address rem_address st ... uid timeout inode".
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let hex = |addr: SocketAddr| format!("0100007F:{:04X}", addr.port());
    let inode = table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[1] == hex(server) && fields[2] == hex(client)).then(|| fields[9].to_owned())
        })
        .unwrap_or_else(|| panic!("no server-side socket {server} <- {client}"));
    let target = format!("socket:[{inode}]");
    let fd = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's fds")
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|link| link.to_string_lossy() == target)
        })
        .and_then(|entry| entry.file_name().to_string_lossy().parse::<i32>().ok())
        .expect("the server holds the socket");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    let pidfd =
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("pidfd_open");
    rustix::process::pidfd_getfd(&pidfd, fd, rustix::process::PidfdGetfdFlags::empty())
        .expect("pidfd_getfd")
}

fn assert_nodelay_and_keepalive(pid: u32, server: SocketAddr, client: SocketAddr, what: &str) {
    let socket = server_side_socket(pid, server, client);
    assert!(
        rustix::net::sockopt::tcp_nodelay(&socket).expect("TCP_NODELAY"),
        "{what}: the accepted socket has no TCP_NODELAY"
    );
    assert!(
        rustix::net::sockopt::socket_keepalive(&socket).expect("SO_KEEPALIVE"),
        "{what}: the accepted socket has no keepalive"
    );
}

#[tokio::test]
async fn f0_accepted_sockets_have_nodelay() {
    let server =
        Server::start_with(ServerOptions::default().arg("--metrics-listen", "127.0.0.1:0")).await;
    let pid = server.pid().expect("running");

    // A plain HTTP connection on the API listener.
    let mut http = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        request_on(&mut http, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_nodelay_and_keepalive(pid, server.addr, http.local_addr().unwrap(), "HTTP");

    // A WebSocket: the same socket after the upgrade.
    let url = format!("ws://{}/v1/ws?device_id=d1&platform=web", server.addr);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("f0-alice", false))
            .parse()
            .unwrap(),
    );
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let (_ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade");
    assert_nodelay_and_keepalive(pid, server.addr, client, "WebSocket");

    // The metrics listener alike.
    let metrics_addr = server.metrics_addr().expect("metrics listener");
    let mut ops = TcpStream::connect(metrics_addr).await.unwrap();
    assert!(
        request_on(&mut ops, "/metrics")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_nodelay_and_keepalive(pid, metrics_addr, ops.local_addr().unwrap(), "metrics");
}

/// Connects `user`'s device on `addr` and waits for `ready`.
async fn connect_on(
    addr: SocketAddr,
    user: &str,
    device: &str,
) -> Result<Ws, (u16, Option<String>, Value)> {
    let url = format!("ws://{addr}/v1/ws?device_id={device}&platform=web");
    match Ws::connect_with_token(&url, &token(user, false)).await {
        Ok(mut ws) => {
            ws.ready = Some(ws.expect_type("ready").await);
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((response.status().as_u16(), retry, body))
        }
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

/// Polls the cap state (X5) until `pred` holds; returns it.
async fn cap_until(server: &Server, pred: impl Fn(&Value) -> bool) -> Value {
    let (_, cap) = wait_until(
        "the cap state to match",
        DEADLINE,
        async || Server::call(server.get("/v1/admin/cap", &admin_token())).await,
        |(status, cap)| *status == 200 && pred(cap),
    )
    .await;
    cap
}

/// Connects `user`'s `device` on `addr` until the server stops refusing
/// with `refusal` (a freed slot takes a moment to be counted out); any
/// other refusal fails at once.
async fn connect_once_freed(addr: SocketAddr, user: &str, device: &str, refusal: u16) -> Ws {
    let mut socket = None;
    wait_until(
        format_args!("a socket for {user} instead of {refusal}"),
        DEADLINE,
        async || match connect_on(addr, user, device).await {
            Ok(ws) => {
                socket = Some(ws);
                Ok(())
            }
            Err(refused) if refused.0 == refusal => Err(refused),
            Err(refused) => panic!("refused with something else: {refused:?}"),
        },
        Result::is_ok,
    )
    .await
    .expect("accepted above");
    socket.expect("set with Ok")
}

#[tokio::test]
async fn x6_one_user_cannot_trip_the_cap() {
    let server = Server::start_with(
        ServerOptions::default()
            .arg("--cap", 10)
            .arg("--max-sockets-per-user", 4)
            .arg("--metrics-listen", "127.0.0.1:0"),
    )
    .await;
    let addr = server.addr;
    let mut watcher = connect_on(addr, "x6-watcher", "w").await.expect("watcher");
    watcher.subscribe(&["x6-target"]).await;

    // Mallory opens her four sockets; the next twenty are refused before
    // the upgrade, with a clear status and code.
    let mut mallory = Vec::new();
    for i in 0..4 {
        mallory.push(
            connect_on(addr, "x6-mallory", &format!("m{i}"))
                .await
                .expect("within budget"),
        );
    }
    for i in 4..24 {
        let (status, retry, body) = connect_on(addr, "x6-mallory", &format!("m{i}"))
            .await
            .err()
            .expect("past the budget");
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["code"], "too_many_sockets", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains('4'),
            "{body}"
        );
        assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)));
    }

    // Refused sockets never counted: five connections, far below the cap,
    // and presence stays on for everyone.
    let cap = cap_until(&server, |cap| cap["count"] == 5).await;
    assert_eq!(cap["enabled"], true, "{cap}");
    assert_eq!(cap["peak"], 5, "refused sockets never counted: {cap}");
    let mut target = connect_on(addr, "x6-target", "t").await.expect("target");
    target
        .ok(json!({"type": "set_status", "status": "busy"}))
        .await;
    watcher.expect_update("x6-target", "busy").await;

    let text = metrics(server.metrics_addr().unwrap()).await;
    assert_eq!(
        sample(
            &text,
            r#"presence_connections_refused_total{reason="sockets_per_user"}"#
        ),
        20.0
    );

    // A closed socket gives its slot back.
    mallory.pop().unwrap().close().await;
    let again = connect_once_freed(addr, "x6-mallory", "m-again", 429).await;
    drop(again);
    // Other users are unaffected throughout.
    connect_on(addr, "x6-someone-else", "s")
        .await
        .expect("another user connects");
}

/// Opens `n` TCP connections to `addr` that never send a byte.
async fn silent_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    held
}

#[tokio::test]
async fn f1_past_max_connections_upgrades_get_503_with_retry_after() {
    let server = Server::start_with(
        ServerOptions::default()
            .arg("--max-connections", 20)
            .arg("--handshake-timeout", "60s")
            .arg("--metrics-listen", "127.0.0.1:0"),
    )
    .await;
    let addr = server.addr;
    let ops = server.metrics_addr().unwrap();
    let mut held = silent_connections(addr, 20).await;
    // The accept queue is first in, first out: once the server counts
    // twenty, the next connection is past the budget.
    wait_until(
        "the server to count 20 connections",
        DEADLINE,
        async || sample(&metrics(ops).await, "presence_tcp_connections "),
        |&count| count >= 20.0,
    )
    .await;

    let (status, retry, body) = connect_on(addr, "f1-alice", "a")
        .await
        .err()
        .expect("no socket past the budget");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    let response = reqwest::get(server.url("/healthz"))
        .await
        .expect("an answer");
    assert_eq!(response.status(), 503);

    let text = metrics(ops).await;
    assert_eq!(sample(&text, "presence_tcp_connections_limit "), 20.0);
    assert!(
        sample(
            &text,
            r#"presence_connections_refused_total{reason="max_connections"}"#
        ) >= 2.0
    );

    // Freed slots serve again.
    held.truncate(10);
    let mut socket = connect_once_freed(addr, "f1-alice", "a", 503).await;
    socket
        .ok(json!({"type": "set_status", "status": "away"}))
        .await;
    drop(held);
}

/// How a slow client ended: the server closed it (EOF or reset) after
/// this long, or it was still open at `limit`.
async fn time_until_closed(mut stream: TcpStream, drip: bool, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let header = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
    let mut sent = 0;
    let mut buf = [0u8; 256];
    while start.elapsed() < limit {
        if drip {
            // One byte every 100 ms; the header never ends.
            let byte = header.get(sent).copied().unwrap_or(b'a');
            if stream.write_all(&[byte]).await.is_err() {
                return Some(start.elapsed());
            }
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {} // A 408 or similar before the close.
            Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn f4_slowloris_holds_nothing() {
    let timeout = Duration::from_secs(2);
    let server = Server::start_with(
        ServerOptions::default()
            .arg("--handshake-timeout", "2s")
            .arg("--metrics-listen", "127.0.0.1:0"),
    )
    .await;
    let addr = server.addr;
    let ops = server.metrics_addr().unwrap();
    // 150 silent connections and 150 that send their headers byte by byte.
    let limit = timeout + DEADLINE;
    let mut attackers = Vec::new();
    for i in 0..300 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        attackers.push(tokio::spawn(time_until_closed(stream, i % 2 == 1, limit)));
    }

    // Meanwhile legitimate clients are served: requests and a socket.
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < timeout {
        let response =
            tokio::time::timeout(DEADLINE, reqwest::get(format!("http://{addr}/healthz")))
                .await
                .expect("a legitimate request is answered in time")
                .expect("request");
        assert_eq!(response.status(), 200);
        served += 1;
        // The pace of a legitimate client during the attack, not a wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = connect_on(addr, "f4-alice", "a")
        .await
        .expect("a socket during the attack");
    ws.ok(json!({"type": "set_status", "status": "busy"})).await;

    let mut slowest = Duration::ZERO;
    for attacker in attackers {
        let closed = attacker
            .await
            .unwrap()
            .expect("the server closed every slow connection");
        slowest = slowest.max(closed);
    }
    println!(
        "f4: 300 slow connections closed after at most {:.2} s (timeout {} s); {served} legitimate requests served meanwhile",
        slowest.as_secs_f64(),
        timeout.as_secs()
    );
    assert!(
        slowest >= timeout - Duration::from_millis(200),
        "closed early: {slowest:?}"
    );
    let text = metrics(ops).await;
    assert!(
        sample(&text, "presence_connections_timed_out_total ") >= 300.0,
        "{text}"
    );
    // Only the socket is still held.
    assert!(sample(&text, "presence_tcp_connections ") <= 2.0);
    drop(ws);
}

#[tokio::test]
async fn f4_idle_keep_alive_connections_are_closed() {
    let server =
        Server::start_with(ServerOptions::default().arg("--handshake-timeout", "1s")).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        request_on(&mut stream, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let idle = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .expect("the idle connection is closed before the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    println!(
        "f4: idle keep-alive connection closed after {:.2} s",
        idle.elapsed().as_secs_f64()
    );
    assert!(idle.elapsed() >= Duration::from_millis(900));
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // Fields after the name start at 3 (state); utime is 14, stime 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn f1_accept_loop_survives_running_out_of_file_descriptors() {
    let server = Server::start_with(ServerOptions::default()).await;
    let pid = server.pid().expect("running");
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = open + 16;
    let status = std::process::Command::new("prlimit")
        .args([format!("--pid={pid}"), format!("--nofile={limit}:{limit}")])
        .status()
        .expect("prlimit");
    assert!(status.success());

    // Far more connections than descriptors left: accept fails with EMFILE
    // while they wait in the backlog.
    let held = silent_connections(server.addr, 60).await;
    wait_until(
        format_args!("the server to hold its limit of {limit} descriptors"),
        DEADLINE,
        async || {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count()
        },
        |&open| open >= limit,
    )
    .await;
    let before = cpu_ticks(pid);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await; // Measuring CPU over a window.
    let ticks = cpu_ticks(pid) - before;
    let elapsed = window.elapsed().as_secs_f64();
    println!("f1: {ticks} CPU ticks in {elapsed:.2} s with the open-files limit reached");
    // A spinning loop burns a whole core (100 ticks a second).
    assert!(
        ticks < 40,
        "the accept loop spins at EMFILE: {ticks} ticks in {elapsed:.2} s"
    );

    // Descriptors come back: the server serves again.
    drop(held);
    wait_until(
        "the server to answer /healthz with 200 again",
        DEADLINE,
        async || {
            tokio::time::timeout(Duration::from_secs(2), async {
                let mut stream = TcpStream::connect(server.addr).await.ok()?;
                Some(request_on(&mut stream, "/healthz").await)
            })
            .await
            .ok()
            .flatten()
        },
        |answer| {
            answer
                .as_ref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        },
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let answer = request_on(&mut stream, "/metrics").await;
    assert!(
        sample(&answer, "presence_accept_errors_total ") >= 1.0,
        "{answer}"
    );
}

//! WebSocket frames under abuse, against the real binary (issue 10, F5):
//! every frame a client sends counts toward the socket's message limit,
//! and protocol violations close with the RFC 6455 code and a reason.
//!
//! Violations are written as raw bytes on a socket upgraded by hand, since
//! no well-behaved client library will produce them.

use std::net::SocketAddr;

use presence_e2e::{DEADLINE, Server, ServerOptions, token};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A WebSocket upgraded by hand: raw frames out, raw frames in.
struct RawWs {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawWs {
    async fn connect(addr: SocketAddr, user: &str) -> RawWs {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /v1/ws?device_id=raw&platform=web HTTP/1.1\r\nHost: {addr}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {}\r\n\r\n",
            token(user, false)
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut ws = RawWs {
            stream,
            buffer: Vec::new(),
        };
        let head = tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(end) = ws.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&ws.buffer[..end]).into_owned();
                    ws.buffer.drain(..end + 4);
                    return head;
                }
                assert!(ws.fill().await, "closed during the handshake");
            }
        })
        .await
        .expect("handshake answer");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Writes one frame: `first` is FIN/RSV/opcode, masked unless `masked`
    /// is false.
    async fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may already have closed; what it answered is read next.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Reads frames until the server's close frame; returns its code and
    /// reason, or `None` if the connection ended without one.
    async fn close_frame(&mut self) -> Option<(u16, String)> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some((opcode, payload, used)) = parse_frame(&self.buffer) {
                    self.buffer.drain(..used);
                    if opcode == 0x8 {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
                    }
                    continue;
                }
                if !self.fill().await {
                    return None;
                }
            }
        })
        .await
        .expect("the server ends the socket before the deadline")
    }
}

/// One unmasked server frame from the front of `buf`: opcode, payload and
/// bytes used.
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= start + len).then(|| (opcode, buf[start..start + len].to_vec(), start + len))
}

/// What a case sends (name, first byte, payload, masked) and the close it
/// expects (code, reason).
type Violation<'a> = (&'a str, u8, &'a [u8], bool, u16, &'a str);

#[tokio::test]
async fn f5_protocol_violations_close_with_the_rfc_code_and_a_reason() {
    let server = Server::start().await;
    let fin = 0x80;
    let too_big = vec![b'a'; 20 * 1024];
    let cases: [Violation; 9] = [
        (
            "unmasked frame",
            fin | TEXT,
            b"{}",
            false,
            1002,
            "protocol_error",
        ),
        (
            "reserved bit",
            fin | 0x40 | TEXT,
            b"{}",
            true,
            1002,
            "protocol_error",
        ),
        (
            "reserved opcode",
            fin | 0x3,
            b"{}",
            true,
            1002,
            "protocol_error",
        ),
        ("fragmented ping", PING, b"", true, 1002, "protocol_error"),
        (
            "lone continuation",
            fin | CONTINUATION,
            b"x",
            true,
            1002,
            "protocol_error",
        ),
        (
            "control frame over 125 bytes",
            fin | PING,
            &[0u8; 126],
            true,
            1002,
            "protocol_error",
        ),
        (
            "invalid UTF-8 text",
            fin | TEXT,
            b"{\"type\":\"\xff\xfe\"}",
            true,
            1007,
            "invalid_utf8",
        ),
        (
            "invalid UTF-8 close reason",
            fin | 0x8,
            b"\x03\xe8\xff",
            true,
            1007,
            "invalid_utf8",
        ),
        (
            "frame over the limit",
            fin | TEXT,
            &too_big,
            true,
            1009,
            "frame_too_large",
        ),
    ];
    for (what, first, payload, masked, code, reason) in cases {
        let mut ws = RawWs::connect(server.addr, "f5-raw").await;
        ws.send(first, payload, masked).await;
        let close = ws.close_frame().await;
        assert_eq!(
            close,
            Some((code, reason.to_owned())),
            "{what}: expected close {code} {reason}"
        );
    }
}

#[tokio::test]
async fn f5_a_fragmented_message_is_served_like_a_whole_one() {
    let server = Server::start().await;
    let mut ws = RawWs::connect(server.addr, "f5-fragments").await;
    let frame = json!({"type": "query", "users": ["f5-fragments"], "ref": "q"}).to_string();
    let (a, b) = frame.as_bytes().split_at(10);
    ws.send(TEXT, a, true).await;
    ws.send(0x80 | PING, b"in between", true).await;
    ws.send(0x80 | CONTINUATION, b, true).await;
    let snapshot = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&ws.buffer) {
                ws.buffer.drain(..used);
                if opcode == TEXT && String::from_utf8_lossy(&payload).contains("\"snapshot\"") {
                    return String::from_utf8(payload).unwrap();
                }
                continue;
            }
            assert!(ws.fill().await, "closed");
        }
    })
    .await
    .expect("a snapshot");
    assert!(snapshot.contains("\"ref\":\"q\""), "{snapshot}");
}

/// Sends `count` frames of one kind without reading, then expects the
/// server to have closed the socket with 1008 (policy violation).
async fn flood(server: &Server, user: &str, opcode: u8) -> (u16, String) {
    let mut ws = RawWs::connect(server.addr, user).await;
    let started = std::time::Instant::now();
    for _ in 0..2_000 {
        ws.send(0x80 | opcode, b"x", true).await;
    }
    let close = ws
        .close_frame()
        .await
        .expect("a close frame, not a bare TCP close");
    println!(
        "f5: {user}: closed {:?} after {:.2} s",
        close,
        started.elapsed().as_secs_f64()
    );
    close
}

#[tokio::test]
async fn f5_binary_flood_is_closed() {
    let server = Server::start().await;
    let (code, _) = flood(&server, "f5-binary", BINARY).await;
    assert_eq!(code, 1008);
}

#[tokio::test]
async fn f5_ping_flood_is_closed() {
    let server = Server::start().await;
    let (code, reason) = flood(&server, "f5-ping", PING).await;
    assert_eq!((code, reason.as_str()), (1008, "rate_limited"));
}

#[tokio::test]
async fn f5_pong_flood_is_closed() {
    let server = Server::start().await;
    let (code, reason) = flood(&server, "f5-pong", PONG).await;
    assert_eq!((code, reason.as_str()), (1008, "rate_limited"));
}

#[tokio::test]
async fn f5_every_kind_of_frame_shares_one_budget() {
    // 60 frames of burst: pings use it up, and the text after them is
    // refused although no text was sent before.
    let server = Server::start_with(
        ServerOptions::default()
            .arg("--socket-messages-burst", 10)
            .arg("--socket-messages-per-second", 0.5),
    )
    .await;
    let mut ws = presence_e2e::Ws::connect_with_token(
        &format!("ws://{}/v1/ws?device_id=d&platform=web", server.addr),
        &token("f5-mixed", false),
    )
    .await
    .expect("connects");
    ws.expect_type("ready").await;
    for _ in 0..10 {
        ws.send_raw(Message::Ping(Default::default())).await;
    }
    ws.refused(json!({"type": "query", "users": ["x"]}), "rate_limited")
        .await;
}

#[tokio::test]
async fn f5_continuation_flood_is_closed() {
    // Empty continuation frames complete no message: before, the server
    // parsed them forever. Now each one counts.
    let server = Server::start().await;
    let mut ws = RawWs::connect(server.addr, "f5-continuation").await;
    ws.send(TEXT, b"{", true).await; // A message that never ends.
    let started = std::time::Instant::now();
    for _ in 0..2_000 {
        ws.send(CONTINUATION, b"", true).await;
    }
    let close = ws.close_frame().await;
    println!(
        "f5: continuation flood closed {:?} after {:.2} s",
        close,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(close, Some((1008, "rate_limited".to_owned())));
    // The server is fine, and a normal socket works.
    let mut ws = presence_e2e::Ws::connect_with_token(
        &format!("ws://{}/v1/ws?device_id=d&platform=web", server.addr),
        &token("f5-after", false),
    )
    .await
    .expect("connects");
    ws.expect_type("ready").await;
    ws.request(json!({"type": "query", "users": ["f5-continuation"]}))
        .await;
}

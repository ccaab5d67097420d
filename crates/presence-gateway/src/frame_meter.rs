//! Counting the WebSocket frames tungstenite never shows us (issue 10, F5).
//!
//! axum hands the socket task whole messages: the continuation frames of
//! a fragmented message are reassembled out of sight. A client could send
//! empty continuation frames forever (each costs the server a parse, none
//! completes a message, and an occasional pong keeps the socket alive), so
//! they must be counted where the bytes are: in the connection's IO, which
//! the accept loop ([`crate::listener`]) owns.
//!
//! Each accepted connection carries a [`FrameMeter`]. While the connection
//! speaks HTTP it looks for the blank line that ends a request head in the
//! bytes read since the last response was written, and keeps whatever
//! follows it (at most [`MAX_HEAD_BYTES`]; nothing for a client that waits
//! for answers, so it allocates nothing). When the WebSocket handler
//! accepts an upgrade it calls [`FrameMeter::start`]: the bytes after the
//! head (frames a client sent before the handshake answer, which RFC 6455
//! forbids but an attacker may do) are parsed first, and every byte read
//! afterwards is parsed as it arrives. The meter is therefore exactly in step with
//! tungstenite. An upgrade whose head cannot be found (pipelined behind
//! another request, or an oversized head) is refused.
//!
//! Only continuation frames are counted here, against a budget of the same
//! size as the socket's message limit; every other frame is a message the
//! socket task counts itself. Past the budget the read fails with
//! [`CONTINUATION_FLOOD`], which the socket task answers with close 1008.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::ratelimit::TokenBucket;

/// The message of the read error that ends a continuation flood.
pub const CONTINUATION_FLOOD: &str = "continuation frame flood";

/// The most request-head bytes remembered before an upgrade.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One connection's meter, shared by its IO and its request handlers.
#[derive(Clone, Default)]
pub struct FrameMeter(Arc<Shared>);

#[derive(Default)]
struct Shared {
    phase: Mutex<Phase>,
    /// Set once the connection left HTTP, so writes (every frame sent to
    /// a socket) skip the lock.
    upgraded: AtomicBool,
}

#[derive(Default)]
enum Phase {
    /// HTTP, since the last response write: how much of the blank line
    /// that ends a request head was matched, and the bytes read after it
    /// (none, for a client that waits for the answer).
    Http(HeadScan),
    /// WebSocket: frames are parsed as they arrive.
    Frames(FrameCounter),
    /// Nothing to meter (after a flood, or on a listener without sockets).
    #[default]
    Off,
}

/// Why [`FrameMeter::start`] refused.
#[derive(Debug, thiserror::Error)]
#[error("the upgrade request's head could not be found; send it alone, first")]
pub struct HeadNotFound;

impl FrameMeter {
    /// A meter for a new HTTP connection.
    pub fn new() -> FrameMeter {
        FrameMeter(Arc::new(Shared {
            phase: Mutex::new(Phase::Http(HeadScan::default())),
            upgraded: AtomicBool::new(false),
        }))
    }

    /// The connection is becoming a WebSocket: count its continuation
    /// frames against `bucket` from the end of the request head on.
    pub fn start(&self, bucket: TokenBucket) -> Result<(), HeadNotFound> {
        let mut phase = self.0.phase.lock();
        let Phase::Http(HeadScan {
            after_head: Some(early),
            overflow: false,
            ..
        }) = &*phase
        else {
            return Err(HeadNotFound);
        };
        let early = early.clone();
        let mut counter = FrameCounter::new(bucket);
        let flooded = counter.feed(&early, Instant::now()).is_err();
        *phase = if flooded {
            Phase::Off
        } else {
            Phase::Frames(counter)
        };
        self.0.upgraded.store(true, Ordering::Release);
        Ok(())
    }

    /// Bytes were read from the client. `Err` when they complete a
    /// continuation frame past the budget.
    pub fn on_read(&self, bytes: &[u8]) -> Result<(), Flood> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut phase = self.0.phase.lock();
        match &mut *phase {
            Phase::Http(scan) => {
                scan.feed(bytes);
                Ok(())
            }
            Phase::Frames(counter) => {
                let result = counter.feed(bytes, Instant::now());
                if result.is_err() {
                    *phase = Phase::Off;
                }
                result
            }
            Phase::Off => Ok(()),
        }
    }

    /// The server writes a response: the next request starts after it.
    pub fn on_write(&self) {
        if self.0.upgraded.load(Ordering::Acquire) {
            return;
        }
        let mut phase = self.0.phase.lock();
        if let Phase::Http(scan) = &mut *phase {
            *scan = HeadScan::default();
        }
    }
}

/// Finds the end of a request head (the first blank line) in the bytes
/// read since the last response, keeping only what follows it. Nothing is
/// allocated for a client that waits for the answer to its request.
#[derive(Default)]
struct HeadScan {
    /// How many bytes of `\r\n\r\n` the latest bytes matched.
    matched: u8,
    /// Bytes after the blank line, once it was seen.
    after_head: Option<Vec<u8>>,
    /// More than [`MAX_HEAD_BYTES`] followed the head.
    overflow: bool,
}

impl HeadScan {
    fn feed(&mut self, mut bytes: &[u8]) {
        if self.after_head.is_none() {
            const END: &[u8; 4] = b"\r\n\r\n";
            let mut used = bytes.len();
            for (i, &b) in bytes.iter().enumerate() {
                self.matched = if b == END[usize::from(self.matched)] {
                    self.matched + 1
                } else if b == b'\r' {
                    1
                } else {
                    0
                };
                if self.matched == 4 {
                    self.after_head = Some(Vec::new());
                    used = i + 1;
                    break;
                }
            }
            bytes = &bytes[used..];
        }
        if let Some(after) = &mut self.after_head
            && !bytes.is_empty()
        {
            if after.len() + bytes.len() > MAX_HEAD_BYTES {
                self.overflow = true;
            } else {
                after.extend_from_slice(bytes);
            }
        }
    }
}

/// A continuation flood was detected.
#[derive(Debug)]
pub struct Flood;

/// An incremental parser of client frame headers (RFC 6455 §5.2).
struct FrameCounter {
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
    bucket: TokenBucket,
}

impl FrameCounter {
    fn new(bucket: TokenBucket) -> FrameCounter {
        FrameCounter {
            header: [0; 14],
            have: 0,
            skip: 0,
            bucket,
        }
    }

    fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Result<(), Flood> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let Some(length) = self.header_complete() else {
                continue;
            };
            let continuation = self.header[0] & 0x0f == 0;
            self.have = 0;
            self.skip = length;
            if continuation && self.bucket.try_take(now).is_err() {
                return Err(Flood);
            }
        }
        Ok(())
    }

    /// The payload length once the whole header is in.
    fn header_complete(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        let (extended, needed) = match self.header[1] & 0x7f {
            126 => (2, 4 + mask),
            127 => (8, 10 + mask),
            _ => (0, 2 + mask),
        };
        if self.have < needed {
            return None;
        }
        Some(match extended {
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            8 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
            _ => u64::from(self.header[1] & 0x7f),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Rate;

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend_from_slice(payload);
        out
    }

    fn meter_after_upgrade(burst: u32, early: &[u8]) -> FrameMeter {
        let meter = FrameMeter::new();
        let mut head = b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        head.extend_from_slice(early);
        meter.on_read(&head).unwrap();
        let bucket = TokenBucket::new(Rate::new(burst, 0.001).unwrap(), Instant::now());
        meter.start(bucket).expect("head found");
        meter
    }

    #[test]
    fn f5_continuation_frames_are_counted_wherever_the_reads_split_them() {
        let meter = meter_after_upgrade(3, &[]);
        // Every other kind passes freely, in any split of the bytes.
        let mut stream = frame(0x01, &[b'a'; 300]); // A text fragment.
        for _ in 0..10 {
            stream.extend(frame(0x89, b"ping"));
        }
        stream.extend(frame(0x00, &[b'b'; 70_000])); // Continuation 1.
        stream.extend(frame(0x00, b"")); // 2.
        stream.extend(frame(0x80, b"end")); // 3, the last allowed.
        for chunk in stream.chunks(7) {
            meter.on_read(chunk).expect("within the budget");
        }
        assert!(
            meter.on_read(&frame(0x00, b"")).is_err(),
            "the fourth is a flood"
        );
    }

    #[test]
    fn f5_frames_sent_before_the_handshake_answer_are_counted_too() {
        let mut early = Vec::new();
        for _ in 0..3 {
            early.extend(frame(0x00, b""));
        }
        let meter = meter_after_upgrade(3, &early);
        assert!(meter.on_read(&frame(0x00, b"")).is_err());
    }

    #[test]
    fn f5_an_upgrade_pipelined_behind_another_request_is_refused() {
        let meter = FrameMeter::new();
        // The upgrade's head was read before the previous answer went out.
        meter
            .on_read(b"GET /healthz HTTP/1.1\r\n\r\nGET /v1/ws HTTP/1.1\r\n\r\n")
            .unwrap();
        meter.on_write();
        let bucket = TokenBucket::new(Rate::new(3, 1.0).unwrap(), Instant::now());
        assert!(meter.start(bucket).is_err());
    }

    #[test]
    fn f5_an_oversized_head_is_refused_and_writes_forget_the_head() {
        let meter = FrameMeter::new();
        meter.on_read(&vec![b'a'; MAX_HEAD_BYTES + 1]).unwrap();
        let bucket = TokenBucket::new(Rate::new(3, 1.0).unwrap(), Instant::now());
        assert!(meter.start(bucket).is_err());
        meter.on_write();
        meter.on_read(b"GET /v1/ws HTTP/1.1\r\n\r\n").unwrap();
        assert!(meter.start(bucket).is_ok());
    }
}

//! [`TcpProxy`]: a TCP forwarder on a free loopback port that a test can
//! cut and heal, to put a network partition between one process and
//! another (a gateway and its Redis) without touching either.
//!
//! ```text
//!  client ──► proxy (127.0.0.1:<free>) ──► target
//!               open:      bytes flow both ways
//!               cut:       every connection is closed at once; new ones
//!                          are accepted and closed (the peer sees EOF or
//!                          a reset: "the server went away")
//!               blackhole: nothing is closed, every byte is swallowed in
//!                          both directions, new connections are accepted
//!                          and swallowed too (a silent partition: only a
//!                          deadline or keepalive finds it)
//!               heal:      new connections flow again; connections
//!                          swallowed by a blackhole are closed (bytes were
//!                          lost, so they cannot carry on)
//! ```
//!
//! Plain threads and blocking sockets: two threads per connection, which
//! is nothing for the handful of connections a test makes, and no async
//! runtime is needed by the caller. Everything stops when the value is
//! dropped.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the proxy waits to connect to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes both ways.
    Open,
    /// Close every connection; accept and close new ones.
    Cut,
    /// Swallow every byte; accept and swallow new connections.
    Blackhole,
}

/// A TCP proxy to one target, killed on drop (see the module
/// documentation).
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    mode: Mutex<ProxyMode>,
    conns: Mutex<Vec<Arc<Conn>>>,
    stop: AtomicBool,
    /// Connections accepted since start, whatever happened to them.
    accepted: AtomicUsize,
}

/// One accepted connection and, when forwarded, its upstream half.
#[derive(Debug)]
struct Conn {
    client: TcpStream,
    upstream: Option<TcpStream>,
    /// Bytes are read and dropped instead of forwarded.
    swallow: AtomicBool,
    /// Pump threads still running (2 when forwarding, 1 when swallowing
    /// a connection accepted during a blackhole).
    running: AtomicUsize,
}

impl Conn {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(upstream) = &self.upstream {
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    fn is_done(&self) -> bool {
        self.running.load(Ordering::Acquire) == 0
    }
}

impl TcpProxy {
    /// Starts forwarding from a free loopback port to `target`. The target
    /// need not be up: connections made while it is down are closed.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding 127.0.0.1:0 for a TCP proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target,
            mode: Mutex::new(ProxyMode::Open),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawning the proxy's accept thread")
        };
        TcpProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:<port>/0`: the proxy as a Redis URL.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.addr.port())
    }

    /// The target the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.lock().expect("proxy lock")
    }

    /// A hard cut: closes every connection now (both sides see the
    /// connection end), and closes new ones as soon as they are accepted,
    /// until [`heal`](Self::heal).
    pub fn cut(&self) {
        let mut mode = self.shared.mode.lock().expect("proxy lock");
        *mode = ProxyMode::Cut;
        for conn in self.shared.conns.lock().expect("proxy lock").drain(..) {
            conn.close();
        }
    }

    /// A silent partition: every connection stays open but every byte is
    /// dropped, in both directions; new connections are accepted and
    /// swallowed too. Only timeouts and keepalives can tell.
    pub fn blackhole(&self) {
        let mut mode = self.shared.mode.lock().expect("proxy lock");
        *mode = ProxyMode::Blackhole;
        for conn in self.shared.conns.lock().expect("proxy lock").iter() {
            conn.swallow.store(true, Ordering::Release);
        }
    }

    /// Ends a cut or a blackhole: new connections are forwarded again.
    /// Connections that were swallowing bytes are closed (what they carried
    /// is lost); connections that were never disturbed carry on.
    pub fn heal(&self) {
        let mut mode = self.shared.mode.lock().expect("proxy lock");
        *mode = ProxyMode::Open;
        self.shared
            .conns
            .lock()
            .expect("proxy lock")
            .retain(|conn| {
                if conn.swallow.load(Ordering::Acquire) {
                    conn.close();
                    false
                } else {
                    true
                }
            });
    }

    /// Connections currently open through the proxy (forwarded or
    /// swallowed).
    pub fn open_connections(&self) -> usize {
        let mut conns = self.shared.conns.lock().expect("proxy lock");
        conns.retain(|c| !c.is_done());
        conns.len()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Acquire)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for conn in self.shared.conns.lock().expect("proxy lock").drain(..) {
            conn.close();
        }
        // Wake the blocking accept so the thread sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = incoming else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::AcqRel);
        let _ = client.set_nodelay(true);
        let mode = *shared.mode.lock().expect("proxy lock");
        match mode {
            ProxyMode::Cut => {
                let _ = client.shutdown(Shutdown::Both);
            }
            ProxyMode::Blackhole => swallow(client, &shared),
            ProxyMode::Open => forward(client, &shared),
        }
    }
}

/// Accepts a connection during a blackhole: reads and drops everything.
fn swallow(client: TcpStream, shared: &Arc<Shared>) {
    let Ok(reader) = client.try_clone() else {
        return;
    };
    let conn = Arc::new(Conn {
        client,
        upstream: None,
        swallow: AtomicBool::new(true),
        running: AtomicUsize::new(1),
    });
    shared.conns.lock().expect("proxy lock").push(conn.clone());
    spawn_pump(reader, None, conn);
}

fn forward(client: TcpStream, shared: &Arc<Shared>) {
    let upstream = match TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) {
        Ok(upstream) => upstream,
        Err(_) => {
            // The target is down: so is the proxy, as far as the client sees.
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let clones = (
        client.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
        upstream.try_clone(),
    );
    let (Ok(client_r), Ok(client_w), Ok(upstream_r), Ok(upstream_w)) = clones else {
        return;
    };
    let conn = Arc::new(Conn {
        client,
        upstream: Some(upstream),
        swallow: AtomicBool::new(false),
        running: AtomicUsize::new(2),
    });
    {
        // Registered under the mode lock: a cut or blackhole that raced
        // with this accept still sees the connection.
        let mode = shared.mode.lock().expect("proxy lock");
        match *mode {
            ProxyMode::Open => {}
            ProxyMode::Cut => {
                conn.close();
                return;
            }
            ProxyMode::Blackhole => conn.swallow.store(true, Ordering::Release),
        }
        shared.conns.lock().expect("proxy lock").push(conn.clone());
    }
    spawn_pump(client_r, Some(upstream_w), conn.clone());
    spawn_pump(upstream_r, Some(client_w), conn);
}

/// Copies `from` to `to` until either side ends, dropping the bytes while
/// the connection swallows.
fn spawn_pump(mut from: TcpStream, mut to: Option<TcpStream>, conn: Arc<Conn>) {
    thread::Builder::new()
        .name("proxy-pump".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            let result: io::Result<()> = (|| {
                loop {
                    let n = from.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    if conn.swallow.load(Ordering::Acquire) {
                        continue;
                    }
                    if let Some(to) = &mut to {
                        to.write_all(&buf[..n])?;
                    }
                }
            })();
            match (result, &to) {
                // A clean end of one direction: pass the FIN on.
                (Ok(()), Some(to)) if !conn.swallow.load(Ordering::Acquire) => {
                    let _ = to.shutdown(Shutdown::Write);
                }
                _ => conn.close(),
            }
            conn.running.fetch_sub(1, Ordering::AcqRel);
        })
        .expect("spawning a proxy thread");
}

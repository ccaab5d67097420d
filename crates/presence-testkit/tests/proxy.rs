//! The partition proxy: forwards, cuts, blackholes and heals, in front of
//! a real redis-server.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use presence_testkit::resp::Connection;
use presence_testkit::{ProxyMode, RedisServer, Reply, TcpProxy, wait_until_blocking};

/// How long a test waits for something the proxy does at once.
const DEADLINE: Duration = Duration::from_secs(5);

fn ping(conn: &mut Connection) -> std::io::Result<Reply> {
    conn.call(&["PING"])
}

#[test]
fn proxy_forwards_commands_both_ways() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr());
    assert_eq!(proxy.target(), redis.addr());
    assert_eq!(proxy.mode(), ProxyMode::Open);
    assert_eq!(
        proxy.redis_url(),
        format!("redis://127.0.0.1:{}/0", proxy.addr().port())
    );
    let mut conn = Connection::open(proxy.addr()).unwrap();
    assert_eq!(ping(&mut conn).unwrap().to_string(), "PONG");
    // A reply larger than one read buffer arrives whole.
    let big = "x".repeat(100_000);
    conn.call(&["SET", "k", &big]).unwrap();
    assert_eq!(conn.call(&["GET", "k"]).unwrap().to_string(), big);
    assert_eq!(proxy.open_connections(), 1);
    assert_eq!(proxy.accepted(), 1);
}

#[test]
fn proxy_cut_closes_connections_and_refuses_new_ones_until_healed() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr());
    let mut conn = Connection::open(proxy.addr()).unwrap();
    ping(&mut conn).unwrap();

    proxy.cut();
    assert_eq!(proxy.mode(), ProxyMode::Cut);
    // The established connection ends at once: no reply, an error rather
    // than a timeout.
    let started = Instant::now();
    assert!(ping(&mut conn).is_err(), "a cut connection still answers");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a cut is not a hang"
    );
    // New connections are accepted and closed.
    let mut fresh = Connection::open(proxy.addr()).unwrap();
    assert!(
        ping(&mut fresh).is_err(),
        "a new connection answered during a cut"
    );
    // Redis itself was never disturbed.
    assert_eq!(redis.command(&["PING"]), "PONG");

    proxy.heal();
    assert_eq!(proxy.mode(), ProxyMode::Open);
    let mut healed = Connection::open(proxy.addr()).unwrap();
    assert_eq!(ping(&mut healed).unwrap().to_string(), "PONG");
}

#[test]
fn proxy_blackhole_swallows_bytes_silently_then_heal_closes_the_swallowed_connections() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr());
    let mut conn = Connection::open(proxy.addr()).unwrap();
    ping(&mut conn).unwrap();

    proxy.blackhole();
    assert_eq!(proxy.mode(), ProxyMode::Blackhole);
    // The command is swallowed: no answer and no error, only a timeout.
    conn.set_read_timeout(Duration::from_millis(300)).unwrap();
    let error = ping(&mut conn).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "a blackholed connection failed loudly: {error}"
    );
    // A new connection is accepted (the handshake succeeds) and swallowed.
    let mut fresh = Connection::open(proxy.addr()).unwrap();
    fresh.set_read_timeout(Duration::from_millis(300)).unwrap();
    assert!(ping(&mut fresh).is_err());
    // Redis never saw the swallowed command's key.
    conn.send(&["SET", "swallowed", "1"]).unwrap();
    assert_eq!(proxy.open_connections(), 2);

    proxy.heal();
    // The swallowed connections are closed: they lost bytes.
    conn.set_read_timeout(DEADLINE).unwrap();
    let error = conn.read_reply().unwrap_err();
    assert!(
        !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "a swallowed connection stayed open after heal"
    );
    wait_until_blocking(
        "the swallowed connections to end",
        DEADLINE,
        || proxy.open_connections(),
        |&open| open == 0,
    );
    let mut healed = Connection::open(proxy.addr()).unwrap();
    assert_eq!(ping(&mut healed).unwrap().to_string(), "PONG");
    assert_eq!(redis.command(&["EXISTS", "swallowed"]), "0");
}

#[test]
fn proxy_closes_connections_when_the_target_is_down() {
    let mut redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr());
    let mut conn = Connection::open(proxy.addr()).unwrap();
    ping(&mut conn).unwrap();
    redis.kill9();
    assert!(ping(&mut conn).is_err(), "the target's end passes through");
    let mut fresh = Connection::open(proxy.addr()).unwrap();
    assert!(ping(&mut fresh).is_err());
    redis.restart();
    let mut back = Connection::open(proxy.addr()).unwrap();
    assert_eq!(ping(&mut back).unwrap().to_string(), "PONG");
}

#[test]
fn proxy_stops_listening_and_closes_everything_on_drop() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.addr());
    let addr = proxy.addr();
    let mut conn = Connection::open(addr).unwrap();
    ping(&mut conn).unwrap();
    drop(proxy);
    assert!(ping(&mut conn).is_err());
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(
        refused.is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused),
        "the port still listens after drop"
    );
}

//! The Redis harness itself: start, talk, restart, crash, several at once.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use presence_testkit::resp::{self, Connection};
use presence_testkit::{RedisOptions, RedisServer, Reply, free_port};

/// AOF that is fsynced on every write, so even `SIGKILL` loses nothing.
fn aof_always() -> RedisOptions {
    RedisOptions {
        aof: true,
        extra_args: vec!["--appendfsync".into(), "always".into()],
        ..RedisOptions::default()
    }
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
}

#[test]
fn redis_starts_on_a_free_port_and_answers_ping() {
    let redis = RedisServer::start();
    assert_ne!(redis.port(), 6379, "never the default port");
    assert_eq!(redis.command(&["PING"]), "PONG");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
    assert_eq!(redis.addr().port(), redis.port());
    assert!(redis.log().contains("Ready to accept connections"));
    // The harness's settings are in force.
    assert_eq!(redis.command(&["CONFIG", "GET", "save"]), "save\n");
    assert_eq!(
        redis.command(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
    assert_eq!(
        redis.command(&["CONFIG", "GET", "dir"]),
        format!("dir\n{}", redis.dir().display())
    );
}

#[test]
fn redis_set_and_get_through_raw_commands() {
    let redis = RedisServer::start();
    assert_eq!(redis.command(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(redis.command(&["GET", "greeting"]), "hello world");
    assert_eq!(redis.query(&["GET", "missing"]), Reply::Bulk(None));
    assert_eq!(redis.command(&["INCR", "n"]), "1");
    redis.command(&["RPUSH", "list", "a", "b"]);
    assert_eq!(redis.command(&["LRANGE", "list", "0", "-1"]), "a\nb");
    let wrong = redis.query(&["INCR", "list"]);
    assert!(
        matches!(&wrong, Reply::Error(e) if e.starts_with("WRONGTYPE")),
        "{wrong:?}"
    );
    // The free function reaches the same server.
    let reply = resp::query(redis.addr(), &["GET", "greeting"]).unwrap();
    assert_eq!(reply, Reply::Bulk(Some(b"hello world".to_vec())));
}

#[test]
#[should_panic(expected = "WRONGTYPE")]
fn redis_command_panics_on_an_error_reply() {
    let redis = RedisServer::start();
    redis.command(&["SET", "k", "v"]);
    redis.command(&["LPUSH", "k", "x"]);
}

#[test]
fn redis_debug_sleep_is_allowed_from_loopback() {
    let redis = RedisServer::start();
    assert_eq!(redis.command(&["DEBUG", "SLEEP", "0"]), "OK");
}

#[test]
fn redis_aof_restart_keeps_a_key() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..RedisOptions::default()
    });
    let (port, pid) = (redis.port(), redis.pid());
    redis.command(&["SET", "chosen", "busy"]);
    redis.restart();
    assert_eq!(redis.port(), port, "same port");
    assert_ne!(redis.pid(), pid, "a new process");
    assert_eq!(redis.command(&["GET", "chosen"]), "busy");
    assert!(Path::new(&redis.dir()).join("appendonlydir").is_dir());
}

#[test]
fn redis_restart_without_aof_starts_empty() {
    let mut redis = RedisServer::start();
    redis.command(&["SET", "k", "v"]);
    redis.restart();
    assert_eq!(redis.query(&["GET", "k"]), Reply::Bulk(None));
}

#[test]
fn redis_kill9_then_restart_comes_back_with_fsynced_data() {
    let mut redis = RedisServer::start_with(aof_always());
    redis.command(&["SET", "chosen", "away"]);
    redis.kill9();
    assert!(!redis.is_running());
    assert!(refuses_connections(redis.port()), "the process is gone");
    redis.restart();
    assert!(redis.is_running());
    assert_eq!(redis.command(&["GET", "chosen"]), "away");
}

#[test]
fn redis_stop_then_restart() {
    let mut redis = RedisServer::start_with(aof_always());
    redis.command(&["SET", "k", "v"]);
    redis.stop();
    assert!(!redis.is_running());
    assert!(refuses_connections(redis.port()));
    redis.stop(); // Idempotent.
    redis.restart();
    assert_eq!(redis.command(&["GET", "k"]), "v");
}

#[test]
fn redis_two_servers_run_side_by_side() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    a.command(&["SET", "where", "a"]);
    b.command(&["SET", "where", "b"]);
    assert_eq!(a.command(&["GET", "where"]), "a");
    assert_eq!(b.command(&["GET", "where"]), "b");
}

#[test]
fn redis_drop_kills_the_process_and_removes_its_directory() {
    let redis = RedisServer::start();
    let (port, pid, dir) = (redis.port(), redis.pid().unwrap(), redis.dir().to_owned());
    drop(redis);
    assert!(refuses_connections(port));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "reaped");
    assert!(!dir.exists());
}

#[test]
fn redis_client_kill_type_pubsub_drops_subscribers() {
    let redis = RedisServer::start();
    let mut subscriber = Connection::open(redis.addr()).unwrap();
    let confirmation = subscriber.call(&["SUBSCRIBE", "presence:control"]).unwrap();
    assert_eq!(confirmation.to_string(), "subscribe\npresence:control\n1");
    assert_eq!(redis.command(&["PUBLISH", "presence:control", "hi"]), "1");
    assert_eq!(
        subscriber.read_reply().unwrap().to_string(),
        "message\npresence:control\nhi"
    );
    assert_eq!(redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]), "1");
    subscriber.set_read_timeout(Duration::from_secs(5)).unwrap();
    let closed = subscriber.read_reply().unwrap_err();
    assert!(
        matches!(
            closed.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
        ),
        "{closed}"
    );
}

#[test]
#[should_panic(expected = "apt-get install redis-server")]
fn redis_missing_binary_panics_with_the_install_command() {
    RedisServer::start_with(RedisOptions {
        program: "/nonexistent/redis-server".into(),
        ..RedisOptions::default()
    });
}

#[test]
#[should_panic(expected = "exited during start-up")]
fn redis_bad_arguments_panic_with_the_log() {
    RedisServer::start_with(RedisOptions {
        extra_args: vec!["--no-such-option".into(), "1".into()],
        ..RedisOptions::default()
    });
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}

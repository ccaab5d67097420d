//! `presence-testkit`: helpers for tests that need a real Redis, and the
//! wait-until loop of every test.
//!
//! DESIGN §5: "The real Redis is Debian's `redis-server` (7.x); tests spawn
//! their own instances on free ports." This crate is how:
//!
//! - [`RedisServer`] starts `redis-server` on a free loopback port with its
//!   own temporary directory, waits until it answers `PING`, and kills it
//!   when dropped. It can be restarted on the same port and directory (AOF
//!   restart tests) or killed with `SIGKILL` (crash tests).
//! - [`resp`] is a raw RESP2 client of a hundred lines, for tests that poke
//!   Redis behind the back of the code under test (`CLIENT KILL TYPE
//!   pubsub`, `DEBUG SLEEP`, reading a key) without depending on the client
//!   library that code uses.
//! - [`free_port`] finds a free loopback port.
//! - [`TcpProxy`] forwards a port to another and can cut or blackhole the
//!   traffic and heal it again (partition tests).
//! - [`SentinelCluster`] runs a primary, one or more replicas and three
//!   sentinels (`redis-server --sentinel`) for failover tests;
//!   [`RedisCluster`] runs a Redis Cluster, with replicas if asked, and
//!   fails a primary over to its replica (`CLUSTER FAILOVER`).
//! - [`wait_until`] and [`wait_until_blocking`] read a state that has no
//!   event to wait on until it is what the test expects, and fail naming
//!   what was awaited and the last value seen: the one wait-until loop
//!   every test uses.
//!
//! Everything here panics on failure with a message that says what to do:
//! that is what a test helper should do, and why this crate is only ever a
//! dev-dependency.
//!
//! Servers never use port 6379 and never read a configuration file, so a
//! system Redis on the same machine neither helps nor hurts.
#![forbid(unsafe_code)]

mod proxy;
mod redis_cluster;
mod redis_server;
pub mod resp;
mod sentinel;
pub mod wait;

pub use proxy::{ProxyMode, TcpProxy};
pub use redis_cluster::RedisCluster;
pub use redis_server::{RedisOptions, RedisServer, START_DEADLINE, free_port};
pub use resp::Reply;
pub use sentinel::{SENTINEL_SERVICE, SentinelCluster};
pub use wait::{wait_until, wait_until_blocking};

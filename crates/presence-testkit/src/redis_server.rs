//! One `redis-server` process per [`RedisServer`], on a free loopback port,
//! with its data in a temporary directory that lives as long as the value.
//!
//! Readiness is an event, not a delay: after spawning, the server is polled
//! with a raw `PING` until it answers `+PONG` (and `INFO` confirms the
//! answer came from *our* process), or the process exits, or
//! [`START_DEADLINE`] passes.
//!
//! The process runs in the test's process group, so when nextest kills a
//! test that timed out it kills the server too; a normal end of test kills
//! it in `Drop`.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::resp::{self, Reply};

/// How long a server may take to answer its first `PING`, and to exit
/// after `SHUTDOWN`.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// How many fresh ports [`RedisServer::start_with`] tries when another
/// process grabs the free port between choosing it and binding it.
const PORT_ATTEMPTS: usize = 5;

/// Where the process's own stdout and stderr go, next to `redis.log`.
const STDIO_FILE: &str = "redis.stdio";

/// How a [`RedisServer`] runs.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `--appendonly yes`: writes survive [`RedisServer::restart`] (and,
    /// with `--appendfsync always` in `extra_args`, [`RedisServer::kill9`]).
    pub aof: bool,
    /// More `redis-server` arguments, appended last so they override the
    /// harness's own, e.g. `["--appendfsync", "always"]`.
    pub extra_args: Vec<String>,
    /// The executable; `redis-server` from `PATH` by default.
    pub program: PathBuf,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            aof: false,
            extra_args: Vec::new(),
            program: PathBuf::from("redis-server"),
        }
    }
}

/// A `redis-server` child process, killed on drop.
///
/// Started with `--bind 127.0.0.1 --port <free> --save "" --appendonly
/// yes|no --dir <tempdir> --daemonize no`, logging to `redis.log` in its
/// directory, and with `DEBUG` allowed from loopback (`DEBUG SLEEP` makes a
/// slow Redis for timeout tests).
#[derive(Debug)]
pub struct RedisServer {
    options: RedisOptions,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without persistence. Panics if `redis-server` is not
    /// installed or does not come up within [`START_DEADLINE`].
    pub fn start() -> RedisServer {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with `options`. Panics like [`start`](Self::start).
    pub fn start_with(options: RedisOptions) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("presence-redis-")
            .tempdir()
            .expect("creating a temporary directory for redis-server");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match launch(&options, port, dir.path()) {
                Ok(child) => {
                    return RedisServer {
                        options,
                        port,
                        dir,
                        child: Some(child),
                    };
                }
                Err(PortTaken) => continue,
            }
        }
        panic!("redis-server found its port taken {PORT_ATTEMPTS} times in a row");
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's working directory (AOF files, RDB, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (it may have crashed or been shut down
    /// by a command).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// Stops the server gracefully (`SHUTDOWN`: the AOF is flushed), then
    /// starts it again on the same port and directory and waits until it
    /// answers. After [`kill9`](Self::kill9) or [`stop`](Self::stop) it
    /// just starts it. Panics if the port was taken meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        match launch(&self.options, self.port, self.dir.path()) {
            Ok(child) => self.child = Some(child),
            Err(PortTaken) => panic!(
                "cannot restart redis-server: port {} was taken while it was down",
                self.port
            ),
        }
    }

    /// Stops the server gracefully and waits for the process to exit
    /// (at most [`START_DEADLINE`], then it is killed and this panics).
    /// Clients see the connection close, as when Redis is restarted.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return; // Already gone (crashed, or shut down by a command).
        }
        // The server closes the connection without a reply on success; an
        // error reply ("Errors trying to SHUTDOWN") shows up as a timeout.
        let _ = resp::query(self.addr(), &["SHUTDOWN"]);
        if wait_for_exit(&mut child, START_DEADLINE).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "redis-server on port {} did not exit within {START_DEADLINE:?} after SHUTDOWN; killed it. Log:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// Kills the server with `SIGKILL`: no AOF flush, connections drop
    /// without a goodbye. [`restart`](Self::restart) brings it back.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one command on a fresh connection and returns the reply as
    /// text (see [`Reply`]'s `Display`). Panics on an error reply or if
    /// the server cannot be reached; use [`query`](Self::query) to look at
    /// error replies.
    pub fn command(&self, args: &[&str]) -> String {
        match self.query(args) {
            Reply::Error(e) => panic!("redis answered {args:?} with an error: {e}"),
            reply => reply.to_string(),
        }
    }

    /// Sends one command on a fresh connection and returns the reply,
    /// error replies included. Panics if the server cannot be reached.
    pub fn query(&self, args: &[&str]) -> Reply {
        resp::query(self.addr(), args)
            .unwrap_or_else(|e| panic!("redis command {args:?} to port {} failed: {e}", self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A loopback port that was free a moment ago. Another process may take it
/// before the caller binds it; [`RedisServer`] retries with a new one.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// The port was taken by the time the server tried to bind it.
struct PortTaken;

/// Spawns the server and waits until it answers. Panics on every failure
/// except a port taken by someone else.
fn launch(options: &RedisOptions, port: u16, dir: &Path) -> Result<Child, PortTaken> {
    let log = dir.join("redis.log");
    // Configuration errors go to stderr before the log file is opened.
    let stdio = fs::File::create(dir.join(STDIO_FILE)).expect("creating redis-server's stdio file");
    let stderr = stdio.try_clone().expect("cloning a file handle");
    let mut command = Command::new(&options.program);
    command
        .args(["--bind", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--save", ""])
        .args(["--appendonly", if options.aof { "yes" } else { "no" }])
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no"])
        .arg("--logfile")
        .arg(&log)
        .args(["--enable-debug-command", "local"])
        .args(&options.extra_args)
        .stdin(Stdio::null())
        .stdout(stdio)
        .stderr(stderr);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`{}` is not installed: tests that use Redis start Debian's redis-server. \
             Install it with `apt-get install redis-server` (CI's .ci/run does).",
            options.program.display()
        ),
        Err(e) => panic!("could not start `{}`: {e}", options.program.display()),
    };
    let deadline = Instant::now() + START_DEADLINE;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return exited_during_start(status, port, dir);
        }
        if answers_ping(port) && served_by(port, child.id()) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "redis-server on port {port} did not answer PING within {START_DEADLINE:?}. Log:\n{}",
                read_log(dir)
            );
        }
        // Polling interval, not a delay: the loop ends at the first PONG.
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn exited_during_start(status: ExitStatus, port: u16, dir: &Path) -> Result<Child, PortTaken> {
    let log = read_log(dir);
    if log.contains("Address already in use") {
        return Err(PortTaken);
    }
    panic!("redis-server on port {port} exited during start-up ({status}). Log:\n{log}");
}

/// A raw inline `PING`: `+PONG` means ready (`-LOADING` while the AOF is
/// read is not).
fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let attempt = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        io::Write::write_all(&mut stream, b"PING\r\n")?;
        let mut reply = [0; 7];
        io::Read::read_exact(&mut stream, &mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

/// Whether the server on `port` is process `pid` (and not some other server
/// that happens to hold the port while ours fails to bind it).
fn served_by(port: u16, pid: u32) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(info) = resp::query(addr, &["INFO", "server"]) else {
        return false;
    };
    info.to_string()
        .lines()
        .any(|line| line.trim() == format!("process_id:{pid}"))
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// The log file, preceded by anything the process printed itself.
fn read_log(dir: &Path) -> String {
    let stdio = fs::read_to_string(dir.join(STDIO_FILE)).unwrap_or_default();
    let log = fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    format!("{stdio}{log}")
}

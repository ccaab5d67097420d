//! What the bench reads about processes from `/proc`: CPU time and RSS of
//! the servers, Redis and the bench itself, and how it starts servers in
//! a session of their own.
//!
//! Why a session of their own: this kernel groups CPU time per Linux
//! session (autogroup), so a load generator that shares a session with
//! the servers it drives gets a smaller share of the machine than they
//! do, starves, and its own delays show up as server latency. Servers are
//! started through `setsid` (util-linux; it execs in place, so the pid is
//! the server's), each in its own session, and the bench reports its own
//! CPU next to theirs so a reader can tell which side was the bottleneck.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100
/// on every Linux this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of `pid` (or of this process with `None`), in ticks.
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The program to start a server with, and the arguments before its own:
/// `setsid <bin>` when `setsid` exists, else `<bin>` alone.
pub fn in_own_session(bin: &std::path::Path) -> (std::path::PathBuf, Vec<std::ffi::OsString>) {
    let setsid = ["/usr/bin/setsid", "/bin/setsid"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    match setsid {
        Some(setsid) => (setsid, vec![bin.as_os_str().to_owned()]),
        None => (bin.to_path_buf(), Vec::new()),
    }
}

/// CPU use of a set of named processes over a window.
pub struct CpuMeter {
    started: Instant,
    processes: Vec<(String, Option<u32>, Option<u64>)>,
}

impl CpuMeter {
    /// Starts measuring `processes` (name, pid; `None` is the bench).
    pub fn start(processes: Vec<(String, Option<u32>)>) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            processes: processes
                .into_iter()
                .map(|(name, pid)| {
                    let ticks = cpu_ticks(pid);
                    (name, pid, ticks)
                })
                .collect(),
        }
    }

    /// Per process: its name and its CPU since `start` in % of one core.
    pub fn finish(&self) -> Vec<(String, Option<f64>)> {
        let seconds = self.started.elapsed().as_secs_f64();
        self.processes
            .iter()
            .map(|(name, pid, before)| {
                let percent = match (before, cpu_ticks(*pid)) {
                    (Some(before), Some(after)) => Some(
                        after.saturating_sub(*before) as f64 / TICKS_PER_SECOND / seconds * 100.0,
                    ),
                    _ => None,
                };
                (name.clone(), percent)
            })
            .collect()
    }
}

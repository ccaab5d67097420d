//! `presence-bench`: measures `presenced` the way DESIGN §6 states its
//! targets.
//!
//! - `idle`: RSS per idle WebSocket connection.
//! - `fanout`: status-change delivery latency to watchers at a fixed
//!   change rate (p50/p99), and the deliveries per second achieved.
//! - `redis-memory`: Redis memory per user in cluster mode.
//!
//! By default each command starts its own `presenced` (the release binary
//! next to this one) with an ephemeral store, so one command is one
//! reproducible measurement; `--url`/`--pid` target a running server.

mod procstat;
mod server;
mod ws;

mod fanout;
mod idle;
mod redis_memory;
mod scale;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "presence-bench", version, about)]
struct Cli {
    /// Threads running the bench's clients (default: one per core). The
    /// bench reports its own CPU; if it nears 100 % per thread, it was the
    /// bottleneck, not the server.
    #[arg(long, global = true)]
    client_threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// RSS of presenced per idle WebSocket connection.
    Idle(idle::Args),
    /// Delivery latency of status changes to subscribed watchers.
    Fanout(fanout::Args),
    /// Redis memory per user in cluster mode (its own redis-server).
    RedisMemory(redis_memory::Args),
    /// The scale model: many sockets over several gateways on one Redis,
    /// durable users, then `kill -9` of a gateway and the reconnect storm.
    Scale(scale::Args),
    /// A client process of `scale` (started by it).
    #[command(hide = true)]
    ScaleWorker(scale::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: could not raise the open-files limit: {e}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.client_threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Idle(args) => idle::run(args).await,
            Command::Fanout(args) => fanout::run(args).await,
            Command::RedisMemory(args) => redis_memory::run(args).await,
            Command::Scale(args) => scale::run(args).await,
            Command::ScaleWorker(args) => scale::worker(args).await,
        }
    })
}

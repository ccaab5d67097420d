//! `idle`: how much memory presenced needs per idle WebSocket connection.
//!
//! Connects a warm-up batch, reads the server's RSS, connects the measured
//! batch (each socket a different user, as in a real workspace), waits for
//! the server to settle, reads the RSS again and divides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use crate::server::{ServerArgs, Target};
use crate::ws;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Idle connections to measure.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections opened before the baseline reading.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Connections opened at the same time.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let target = Arc::new(Target::start(&args.server, &[]).await?);
    println!("server {} (pid {:?})", target.addr, target.pid);
    open(&target, 0, args.warmup, args.concurrency).await?;
    settle().await;
    let before = target.rss_kib();
    let started = Instant::now();
    open(&target, args.warmup, args.connections, args.concurrency).await?;
    let took = started.elapsed();
    settle().await;
    let after = target.rss_kib();
    println!(
        "opened {} idle connections in {:.1} s ({:.0}/s)",
        args.connections,
        took.as_secs_f64(),
        args.connections as f64 / took.as_secs_f64()
    );
    match (before, after) {
        (Some(before), Some(after)) => {
            let per = (after.saturating_sub(before)) as f64 / args.connections as f64;
            println!(
                "server RSS: {before} KiB with {} warm-up sockets",
                args.warmup
            );
            println!(
                "server RSS: {after} KiB with {} sockets",
                args.warmup + args.connections
            );
            println!("RSS per idle connection: {per:.2} KiB");
        }
        _ => println!("server RSS unavailable (pass --pid for a running server)"),
    }
    Ok(())
}

/// Opens sockets `first..first + count`, each kept alive by a task that
/// reads it (so pings are answered) until the process exits.
async fn open(
    target: &Arc<Target>,
    first: usize,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut pending = Vec::with_capacity(count);
    for i in first..first + count {
        let permit = gate.clone().acquire_owned().await?;
        let target = target.clone();
        pending.push(tokio::spawn(async move {
            let user = format!("idle{i}");
            let url = target.ws_url(&format!("dev{i}"), "web");
            let socket = ws::connect(&url, &target.token(&user)).await;
            drop(permit);
            let mut socket = socket?;
            tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} });
            anyhow::Ok(())
        }));
    }
    for task in pending {
        task.await??;
    }
    Ok(())
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

//! `presenced`: the presence service binary.
//!
//! `presenced serve` (the default) runs the gateway with the embedded
//! backend: every role in one process, durable data in `--data-dir`.
//! `presenced token` mints development tokens. Every flag has a
//! `PRESENCE_*` environment variable; `presenced --help` lists them.

mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use presence_gateway::app::App;
use presence_gateway::auth::{self, Authenticator, MintClaims};
use presence_gateway::metrics::Metrics;
use presence_store::{
    Backend, DurableStore, MemoryBackend, MemoryStore, RedbOptions, RedbStore, SettingsPatch,
    SystemClock,
};
use tokio::net::TcpListener;

use crate::config::{Cli, Command, LogFormat, ServeArgs, TokenArgs};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => token(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let store: Arc<dyn DurableStore> = if args.ephemeral {
        tracing::warn!("--ephemeral: durable data is kept in memory only and lost on exit");
        Arc::new(MemoryStore::new())
    } else {
        let histogram = metrics.store_write_seconds.clone();
        let options = RedbOptions {
            on_commit: Some(Box::new(move |elapsed, _batches| {
                histogram.observe(elapsed.as_secs_f64());
            })),
            ..RedbOptions::default()
        };
        let store = RedbStore::open_with(&args.data_dir, options)
            .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
        Arc::new(store)
    };
    let auth_config = config::auth_config(&args)?;
    let authenticator = Authenticator::new(auth_config).context("loading the JWT key")?;
    let backend = MemoryBackend::start(args.memory_config(), store, Arc::new(SystemClock))
        .context("loading durable data")?;
    let gateway = args.gateway_config()?;
    if let Some(cap) = args.cap {
        let patch = SettingsPatch {
            cap: Some(cap),
            ..SettingsPatch::default()
        };
        backend
            .update_settings(patch)
            .await
            .context("applying --cap")?;
    }
    let backend: Arc<dyn Backend> = Arc::new(backend);
    let app = App::new(backend, authenticator, metrics, gateway);
    app.start_dispatcher().await;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port of `--listen :0`.
    println!("presenced listening on http://{addr}");
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "presenced started");

    let router = app.router().into_make_service();
    let shutdown_app = app.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining sockets");
        shutdown_app.drain().await;
    });
    server.await.context("serving HTTP")?;
    tracing::info!("presenced stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = config::resolve_secret(args.jwt_secret.as_deref(), &args.data_dir, false)?;
    let Some(secret) = secret else {
        bail!(
            "no JWT secret: pass --jwt-secret, set PRESENCE_JWT_SECRET, or start \
             `presenced serve` once so it creates {}/jwt-secret",
            args.data_dir.display()
        );
    };
    let claims = MintClaims {
        sub: args.user,
        admin: args.admin,
        username: args.username,
        name: args.name,
        ttl: args.ttl.into(),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = auth::mint_hs256(&secret, &claims, now)?;
    println!("{token}");
    Ok(())
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// A process may hold many sockets: raise the soft open-files limit to the
/// hard limit (DESIGN §6).
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-files limit raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
}

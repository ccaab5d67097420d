//! The server under test: started here, or an existing one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The secret of servers the bench starts.
pub const SECRET: &str = "presence-bench-secret-at-least-32-bytes";

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address of a running presenced (host:port); default: start one.
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// PID of the running presenced, to read its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// HS256 secret of the running presenced.
    #[arg(long, default_value = SECRET)]
    pub secret: String,
    /// The presenced binary to start (default: next to this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Extra flags for the started presenced (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

pub struct Target {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    pub secret: String,
    _child: Option<Child>,
}

impl Target {
    pub async fn start(args: &ServerArgs, extra: &[&str]) -> anyhow::Result<Target> {
        Target::start_on(args, "127.0.0.1:0", extra).await
    }

    /// As [`Target::start`], listening on `listen` (e.g. `127.0.0.3:0`).
    pub async fn start_on(
        args: &ServerArgs,
        listen: &str,
        extra: &[&str],
    ) -> anyhow::Result<Target> {
        if let Some(addr) = args.addr {
            return Ok(Target {
                addr,
                pid: args.pid,
                secret: args.secret.clone(),
                _child: None,
            });
        }
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("bench binary has a directory")?
                .join("presenced"),
        };
        // A session of its own, so the bench is not starved (procstat.rs).
        let (program, before) = crate::procstat::in_own_session(&bin);
        let mut child = Command::new(program)
            .args(before)
            .args(["serve", "--listen", listen, "--ephemeral"])
            .args(["--jwt-secret", SECRET, "--log-format", "json", "--cap", "0"])
            .args(extra)
            .args(&args.server_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next_line().await? else {
                bail!("presenced exited before listening");
            };
            if let Some(url) = line.strip_prefix("presenced listening on http://") {
                break url.trim().parse()?;
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Target {
            addr,
            pid: child.id(),
            secret: SECRET.to_owned(),
            _child: Some(child),
        })
    }

    /// Stops a started server gracefully (SIGTERM, as Kubernetes does) and
    /// waits for it to exit.
    pub async fn stop(&mut self, within: Duration) -> anyhow::Result<()> {
        let (Some(pid), Some(child)) = (self.pid, self._child.as_mut()) else {
            return Ok(());
        };
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        tokio::time::timeout(within, child.wait())
            .await
            .with_context(|| {
                format!("presenced (pid {pid}) still running {within:?} after SIGTERM")
            })??;
        Ok(())
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::procstat::rss_kib(self.pid?)
    }

    pub fn token(&self, user: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = presence_gateway::auth::MintClaims {
            sub: user.to_owned(),
            admin: false,
            username: None,
            name: None,
            ttl: Duration::from_secs(24 * 3600),
        };
        presence_gateway::auth::mint_hs256(self.secret.as_bytes(), &claims, now)
            .expect("minting a bench token")
    }

    pub fn ws_url(&self, device: &str, platform: &str) -> String {
        format!(
            "ws://{}/v1/ws?device_id={device}&platform={platform}",
            self.addr
        )
    }
}

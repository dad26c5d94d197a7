//! A private `redis-server` for the embedded defaults: audio, transcripts and history
//! live in Redis Streams, so `earshot up` on a laptop with no `--redis` runs one of its
//! own as a child — its own port, its data under the state folder, stopped with it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the child may take to answer PING. It starts in milliseconds; an AOF
/// replay of a long local history can take a few seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between readiness probes.
const READY_POLL: Duration = Duration::from_millis(25);

/// A running private Redis; killed when dropped.
pub(crate) struct PrivateRedis {
    child: tokio::process::Child,
    url: String,
}

impl PrivateRedis {
    /// Whether `redis-server` is on the PATH.
    pub(crate) fn available() -> bool {
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("redis-server").is_file()))
    }

    /// Starts `redis-server` on a free loopback port with its data in `state_dir/redis`
    /// (append-only file, so acknowledged audio survives a restart) and waits until it
    /// answers PING.
    pub(crate) async fn start(state_dir: &Path) -> anyhow::Result<PrivateRedis> {
        let dir = absolute(&state_dir.join("redis"))?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port().context("finding a free port for the private Redis")?;
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(&dir)
            // Not a daemon: it must die with us.
            .args(["--daemonize", "no"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server")?;
        let mut redis = PrivateRedis { child, url: format!("redis://127.0.0.1:{port}") };
        redis.wait_ready(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        Ok(redis)
    }

    /// The URL components and the relay use.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    async fn wait_ready(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the private redis-server exited at start ({status})");
            }
            if ping(addr).await {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the private redis-server did not answer within {READY_TIMEOUT:?}");
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(tokio::time::timeout(READY_POLL * 4, s.read_exact(&mut buf)).await, Ok(Ok(_))) && &buf == b"+PONG\r\n"
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    // Someone may take it before redis-server binds; then the start fails and says so.
    drop(listener);
    Ok(port)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir().context("reading the working directory")?.join(path))
}

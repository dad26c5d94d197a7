//! The load side's WebSocket client: connections spread over 127.0.0.x source
//! addresses (one address pair has only ~28k ephemeral ports), a monotonic clock shared
//! by publishers and receivers, and bounded waits everywhere.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// A client connection.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Longest the bench waits for a connection to open (TCP, upgrade, the server's OPEN).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections opened at once by the scenarios that hold many: enough to keep a server
/// busy; with 256 at once Pushpin answers 502 to some upgrades (its zurl/proxy path),
/// so every system gets 64.
pub(crate) const CONNECT_CONCURRENCY: usize = 64;

/// Source addresses connections rotate over when the server is on loopback: 16 of them
/// give ~450k ephemeral ports towards one server port, far above the largest scenario.
const SOURCE_ADDRESSES: u8 = 16;

/// Read buffer of a client connection, in bytes. tungstenite's default is 128 KiB per
/// connection; 100k idle connections would then cost the load side gigabytes for nothing.
const CLIENT_READ_BUFFER_BYTES: usize = 8 * 1024;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on the bench's monotonic clock (one clock for senders and receivers, so
/// latencies need no clock sync).
pub(crate) fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Opens WebSockets to one server, spreading them over source addresses.
pub(crate) struct Dialer {
    addr: SocketAddr,
    host: String,
    sources: Vec<IpAddr>,
    next: AtomicUsize,
    retried: AtomicUsize,
}

impl Dialer {
    /// A dialer for `base` (`ws://host:port` or `http://host:port`). Only loopback
    /// servers: a load test never leaves this machine.
    pub(crate) fn new(base: &str) -> anyhow::Result<Self> {
        let host = base
            .split("://")
            .nth(1)
            .ok_or_else(|| anyhow!("{base}: expected ws://host:port"))?
            .trim_end_matches('/')
            .to_owned();
        let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&host)
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} resolves to nothing"))?;
        if !addr.ip().is_loopback() {
            bail!("{host} is not a loopback address: the bench only loads servers on this machine");
        }
        let sources = match addr.ip() {
            IpAddr::V4(_) => (1..=SOURCE_ADDRESSES)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect(),
            IpAddr::V6(v6) => vec![IpAddr::V6(v6)],
        };
        Ok(Dialer {
            addr,
            host,
            sources,
            next: AtomicUsize::new(0),
            retried: AtomicUsize::new(0),
        })
    }

    /// Opens a WebSocket to `path` (path and query), within [`CONNECT_TIMEOUT`].
    /// An upgrade the server answers with a 5xx status is retried (after
    /// [`RETRY_BACKOFF`], at most [`UPGRADE_RETRIES`] times) and counted in
    /// [`Dialer::retried`]: the scenario goes on and the table says how often.
    pub(crate) async fn connect(&self, path: &str) -> anyhow::Result<Ws> {
        let mut attempt = 0;
        loop {
            let result = tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner(path))
                .await
                .map_err(|_| anyhow!("connecting {} timed out", redact(path)))?;
            match result {
                Err(e) if attempt < UPGRADE_RETRIES && server_error(&e) => {
                    attempt += 1;
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    /// Upgrades retried after a 5xx answer so far.
    pub(crate) fn retried(&self) -> usize {
        self.retried.load(Ordering::Relaxed)
    }

    async fn connect_inner(&self, path: &str) -> anyhow::Result<Ws> {
        let mut last_err = None;
        // A source address whose ports ran out is skipped for the next one.
        for _ in 0..self.sources.len() {
            let src = self.sources[self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len()];
            let sock = if src.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Err(e) = sock.bind(SocketAddr::new(src, 0)) {
                last_err = Some(anyhow!(e).context(format!("binding {src}:0")));
                continue;
            }
            let stream = match sock.connect(self.addr).await {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                    last_err = Some(anyhow!(e));
                    continue;
                }
                Err(e) => return Err(anyhow!(e).context(format!("connecting {}", self.addr))),
            };
            stream.set_nodelay(true)?;
            let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER_BYTES);
            let url = format!("ws://{}{path}", self.host);
            let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
                .await
                .with_context(|| format!("upgrading {}", redact(path)))?;
            return Ok(ws);
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no source address")))
    }
}

/// Times one upgrade is retried after a 5xx answer.
const UPGRADE_RETRIES: usize = 20;
/// Pause before such a retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Whether an upgrade failed with a 5xx HTTP status (the server, or a proxy's backend,
/// had a transient failure), as opposed to a refusal or a broken connection.
fn server_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
            Some(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status().is_server_error()
        )
    })
}

/// A path with its token removed, for error messages.
fn redact(path: &str) -> String {
    match path.split_once("token=") {
        Some((head, _)) => format!("{head}token=…"),
        None => path.to_owned(),
    }
}

/// A capture agent's stream over a dialed connection: `earshot_agent`'s ingest client,
/// the same one `earshot stream` and the tests use.
pub(crate) type Agent = earshot_agent::Session<TcpStream>;

/// Handshakes 16 kHz mono PCM (the bench's audio) on `ws`.
pub(crate) async fn handshake(ws: Ws) -> anyhow::Result<Agent> {
    Ok(earshot_agent::Session::handshake(ws, earshot_agent::PcmFormat::MONO_16K).await?)
}

/// Mints a token for `scope` on `meetings` with the server's signing secret.
pub(crate) fn token(secret: &str, scope: &str, meetings: &[&str]) -> String {
    earshot_testkit::ws::token_with_ttl(secret, scope, meetings, TOKEN_TTL_S)
}

/// Lifetime of minted tokens, in seconds: longer than any full run.
const TOKEN_TTL_S: u64 = 3600;

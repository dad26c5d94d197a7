//! The public listener's connections, from accept to upgrade: the cap on connections
//! not yet upgraded, the PROXY header of a trusted proxy, TLS, then HTTP/1.1 under the
//! header deadline, the keep-alive timeout and the header cap, each request routed with
//! the client's real address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::client_addr::{Cidr, TrustedProxies};
use crate::http_limits::{self, ConnWatch, HttpLimits, TrackedBody, Watched};
use crate::proxy_protocol::{self, Prefixed};
use crate::public::PublicRouter;
use crate::serve::accept_until_stopped;
use crate::tls::Tls;

/// What a connection over the pending cap gets before it is closed (plain HTTP only;
/// a TLS client would not understand it). `Retry-After` as the WebSocket caps say it.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 5\r\ncontent-length: 33\r\nconnection: close\r\n\r\ntoo many connections in progress\n";

/// Settings of the public listener's connections: TLS, trusted proxies, HTTP limits.
#[derive(clap::Args, Debug, Clone)]
pub struct PublicListenerConfig {
    /// Proxies (comma-separated IPs or CIDR blocks, e.g. `10.0.0.0/8,::1`) whose
    /// `Forwarded`/`X-Forwarded-For` or PROXY protocol header names the client; the
    /// per-IP cap and logs then use that address. From other peers the headers are ignored.
    #[arg(long, env = "EARSHOT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,
    /// PEM certificate chain: serve HTTPS and `wss://` on the public port (with `--tls-key`);
    /// reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "EARSHOT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "EARSHOT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Deadline for a request's header in milliseconds, from accept (TLS handshake and
    /// PROXY header included) or from a later request's first byte; past it the
    /// connection is closed.
    #[arg(long, env = "EARSHOT_HEADER_READ_TIMEOUT_MS", default_value_t = http_limits::DEFAULT_HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,
    /// Idle time of a keep-alive connection between requests in milliseconds before it is closed.
    #[arg(long, env = "EARSHOT_KEEP_ALIVE_TIMEOUT_MS", default_value_t = http_limits::DEFAULT_KEEP_ALIVE_TIMEOUT_MS)]
    pub keep_alive_timeout_ms: u64,
    /// Most bytes of a request's start line and headers (more: 431).
    #[arg(long, env = "EARSHOT_MAX_HEADER_BYTES", default_value_t = http_limits::DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Most bytes of a request body (a larger `Content-Length`: 413 before it is read).
    #[arg(long, env = "EARSHOT_MAX_BODY_BYTES", default_value_t = http_limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u64,
    /// Most connections at once that have not upgraded to a WebSocket (more: 503, closed).
    #[arg(long, env = "EARSHOT_MAX_PENDING_CONNECTIONS", default_value_t = http_limits::DEFAULT_MAX_PENDING_CONNECTIONS)]
    pub max_pending_connections: usize,
}

impl Default for PublicListenerConfig {
    fn default() -> Self {
        PublicListenerConfig {
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            header_read_timeout_ms: http_limits::DEFAULT_HEADER_READ_TIMEOUT_MS,
            keep_alive_timeout_ms: http_limits::DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
            max_header_bytes: http_limits::DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: http_limits::DEFAULT_MAX_BODY_BYTES,
            max_pending_connections: http_limits::DEFAULT_MAX_PENDING_CONNECTIONS,
        }
    }
}

impl PublicListenerConfig {
    /// The HTTP limits in their units.
    pub(crate) fn limits(&self) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(self.keep_alive_timeout_ms),
            max_header_bytes: self.max_header_bytes,
            max_pending_connections: self.max_pending_connections.max(1),
        }
    }
}

/// Any byte stream a connection ends up as (plain TCP or TLS, after a PROXY header).
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The public listener: one per server.
pub(crate) struct PublicListener {
    pub(crate) router: Arc<PublicRouter>,
    pub(crate) limits: HttpLimits,
    pub(crate) trusted: Arc<TrustedProxies>,
    pub(crate) tls: Option<Arc<Tls>>,
    pending: Arc<Semaphore>,
}

impl PublicListener {
    pub(crate) fn new(router: Arc<PublicRouter>, limits: HttpLimits, trusted: TrustedProxies, tls: Option<Arc<Tls>>) -> Self {
        let pending = Arc::new(Semaphore::new(limits.max_pending_connections));
        PublicListener { router, limits, trusted: Arc::new(trusted), tls, pending }
    }

    /// Accepts until `stop` turns true, each connection on its own task holding `drain`.
    pub(crate) async fn accept_loop(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<bool>, drain: mpsc::Sender<()>) {
        while let Some((stream, peer)) = accept_until_stopped(&listener, &mut stop).await {
            let Ok(permit) = self.pending.clone().try_acquire_owned() else {
                tracing::warn!(peer = %peer, limit = self.limits.max_pending_connections, "connection refused: too many not yet upgraded");
                if self.tls.is_none() {
                    // Best effort, without waiting: the socket buffer of a fresh connection has room.
                    let _ = stream.try_write(BUSY_RESPONSE);
                }
                continue;
            };
            let this = self.clone();
            let drain = drain.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                this.serve(stream, peer, stop).await;
                drop(permit);
                drop(drain);
            });
        }
    }

    /// Serves one connection until it closes, upgrades or overstays a deadline.
    async fn serve(&self, stream: TcpStream, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
        let watch = ConnWatch::new();
        let limits = self.limits;
        // The PROXY header and the TLS handshake count against the header deadline.
        let (io, conn_client) = match tokio::time::timeout(limits.header_read_timeout, self.prepare(stream, peer)).await {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "connection closed before its first request");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "connection closed: no request within the header deadline");
                return;
            }
        };
        let router = self.router.clone();
        let trusted = self.trusted.clone();
        let w = watch.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let in_flight = w.request_started();
            let client = trusted.client(req.headers(), conn_client);
            let router = router.clone();
            async move {
                let resp = router.handle(req, client).await;
                Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, in_flight)))
            }
        });
        let mut builder = http1::Builder::new();
        builder.max_buf_size(limits.read_buffer_bytes()).max_header_size(limits.max_header_bytes);
        let conn = builder.serve_connection(TokioIo::new(Watched::new(io, watch.clone())), service).with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            why = watch.expired(&limits) => {
                tracing::debug!(peer = %peer, client = %conn_client, reason = ?why, "connection closed by its deadline");
                return;
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = watch.expired(&limits) => return,
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, peer = %peer, client = %conn_client, "connection ended with an error");
        }
    }

    /// Reads a trusted proxy's PROXY header (if any) and does the TLS handshake (if
    /// configured); returns the stream and the connection's client address.
    async fn prepare(&self, mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<(Box<dyn Io>, SocketAddr)> {
        let mut client = peer;
        let mut replay = Vec::new();
        if self.trusted.contains(peer.ip()) {
            let (source, rest) = proxy_protocol::read_header(&mut stream).await?;
            if let Some(source) = source {
                client = source;
            }
            replay = rest;
        }
        let io = Prefixed::new(replay, stream);
        match &self.tls {
            Some(tls) => Ok((Box::new(tls.acceptor().accept(io).await?), client)),
            None => Ok((Box::new(io), client)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_response_declares_its_body_length() {
        let text = std::str::from_utf8(BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
    }
}

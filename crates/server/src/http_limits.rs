//! HTTP hygiene on the public listener: a deadline for each request's header, an idle
//! keep-alive timeout, a header-size cap (431), a declared-body cap (413) and a cap on
//! connections that have not upgraded yet. Without them a client that sends half a
//! header and then nothing (slowloris) holds a descriptor forever, and none of the
//! WebSocket caps ever counts it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Default deadline for a request's header, in milliseconds, counted from the
/// connection's accept (TLS handshake and PROXY header included) or from the first byte
/// of a later request. A real client sends its header in one packet; 10 s covers a
/// phone on a bad network, and is a sixth of nginx's `client_header_timeout` (60 s), so
/// a slowloris holds each socket six times shorter.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;

/// Default most bytes of a request's start line and headers (more: 431). Browsers send
/// 1-4 KiB including cookies; 16 KiB leaves room for a long token in the query.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Default most bytes of a declared request body (`Content-Length`; more: 413 before a
/// byte of it is read). The largest body any route takes is a WebSocket-over-HTTP
/// event batch (the ws-session component's `MAX_BODY_BYTES`, 16 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Default idle time of a keep-alive connection between requests, in milliseconds,
/// before it is closed. Browsers keep idle connections about as long (Chrome: 300 s,
/// Firefox 115 s) but reopen one cheaply; 60 s frees the descriptor of a tab left open.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_MS: u64 = 60_000;

/// Default most connections that have not (yet) upgraded to a WebSocket, at once; more
/// are answered 503 and closed. Each costs a descriptor and up to [`READ_BUFFER_BYTES`];
/// 2048 is far more than the page loads and handshakes of a busy deployment at one
/// instant, and bounds what a flood of idle sockets pins (2048 × 64 KiB = 128 MiB).
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 2048;

/// Most bytes hyper buffers per connection while reading, in bytes (its `max_buf_size`;
/// hyper's own default is 400 KiB). Four times the header cap, so a header up to the cap
/// always parses and is answered 431 past it, without 400 KiB per idle socket.
pub(crate) const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The limits of one public listener, in their units.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_pending_connections: usize,
}

impl HttpLimits {
    /// hyper's read buffer bound for these limits: never below what one header needs.
    pub(crate) fn read_buffer_bytes(&self) -> usize {
        READ_BUFFER_BYTES.max(self.max_header_bytes.saturating_mul(2))
    }
}

/// Whether a request's declared body exceeds `max` bytes (answered 413 unread).
pub(crate) fn declared_body_too_large(headers: &http::HeaderMap, max: u64) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max)
}

const PHASE_HEAD: u8 = 0;
const PHASE_IN_FLIGHT: u8 = 1;
const PHASE_IDLE: u8 = 2;

/// Where one connection is in its request cycle, shared by its reads, its service
/// calls and its watchdog. Atomics, not a lock: after an upgrade every WebSocket read
/// still passes through [`Watched`].
pub(crate) struct ConnWatch {
    start: Instant,
    phase: AtomicU8,
    /// Milliseconds after `start` when the current phase began.
    since_ms: AtomicU64,
    in_flight: AtomicU64,
    /// Wakes the watchdog at every change of phase, so a deadline computed for the old
    /// phase (10 s for a header) never outlives it (a 1.5 s keep-alive after it).
    changed: tokio::sync::Notify,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// The request header did not arrive in time.
    Header,
    /// No request came within the keep-alive timeout.
    Idle,
}

impl ConnWatch {
    /// A connection accepted now: its first header is due within the header deadline.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnWatch {
            start: Instant::now(),
            phase: AtomicU8::new(PHASE_HEAD),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: on an idle connection they start the next request's header.
    fn bytes_read(&self) {
        if self.phase.load(Ordering::Relaxed) == PHASE_IDLE
            && self.phase.compare_exchange(PHASE_IDLE, PHASE_HEAD, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request's header is complete and its handler runs; until [`InFlight`] drops.
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.phase.store(PHASE_IN_FLIGHT, Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// Resolves when the connection has overstayed its current phase.
    pub(crate) async fn expired(&self, limits: &HttpLimits) -> Expired {
        loop {
            let since = Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
            let (limit, why) = match self.phase.load(Ordering::Relaxed) {
                PHASE_HEAD => (limits.header_read_timeout, Expired::Header),
                PHASE_IDLE => (limits.keep_alive_timeout, Expired::Idle),
                // A handler is running (a backend call has its own timeout): wait for it to end.
                _ => {
                    tokio::select! {
                        _ = self.changed.notified() => {}
                        _ = tokio::time::sleep(limits.header_read_timeout) => {}
                    }
                    continue;
                }
            };
            let deadline = since + limit;
            let now = self.start.elapsed();
            if now >= deadline {
                // The phase may have moved on while we computed; only a stale one expires.
                if Duration::from_millis(self.since_ms.load(Ordering::Relaxed)) == since
                    && self.phase.load(Ordering::Relaxed) != PHASE_IN_FLIGHT
                {
                    return why;
                }
                continue;
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(deadline - now) => {}
            }
        }
    }
}

/// One request being handled; when the last one's response has been written (its body
/// dropped), the connection is idle.
pub(crate) struct InFlight(Arc<ConnWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let w = &self.0;
        if w.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            w.since_ms.store(w.now_ms(), Ordering::Relaxed);
            w.phase.store(PHASE_IDLE, Ordering::Relaxed);
            w.changed.notify_one();
        }
    }
}

/// A response body that keeps its request [`InFlight`] until hyper has sent it all.
pub(crate) struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        TrackedBody { inner, _in_flight: in_flight }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's byte stream, telling its [`ConnWatch`] when bytes arrive.
pub(crate) struct Watched<S> {
    inner: S,
    watch: Arc<ConnWatch>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, watch: Arc<ConnWatch>) -> Self {
        Watched { inner, watch }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.bytes_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header_ms: u64, idle_ms: u64) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(header_ms),
            keep_alive_timeout: Duration::from_millis(idle_ms),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_pending_connections: DEFAULT_MAX_PENDING_CONNECTIONS,
        }
    }

    #[test]
    fn declared_bodies_over_the_cap_are_spotted() {
        let mut h = http::HeaderMap::new();
        assert!(!declared_body_too_large(&h, 10), "no Content-Length: nothing declared");
        h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("10"));
        assert!(!declared_body_too_large(&h, 10));
        h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("104857600"));
        assert!(declared_body_too_large(&h, 10));
    }

    #[tokio::test]
    async fn a_silent_connection_expires_at_the_header_deadline() {
        let w = ConnWatch::new();
        let t = Instant::now();
        assert_eq!(w.expired(&limits(500, 5_000)).await, Expired::Header);
        assert!(t.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_handled_request_then_silence_expires_as_idle_and_bytes_restart_the_header_clock() {
        let w = ConnWatch::new();
        let l = limits(200, 600);
        drop(w.request_started());
        let t = Instant::now();
        assert_eq!(w.expired(&l).await, Expired::Idle);
        assert!(t.elapsed() >= Duration::from_millis(600));

        let w = ConnWatch::new();
        drop(w.request_started());
        w.bytes_read();
        assert_eq!(w.expired(&l).await, Expired::Header, "a started header is due sooner than the idle timeout");
    }

    #[tokio::test]
    async fn a_request_that_arrives_while_the_header_clock_runs_moves_the_deadline_to_the_idle_timeout() {
        // The watchdog starts waiting for the first header (10 s); the request comes and
        // is answered; the connection must then expire at the 300 ms keep-alive, not at 10 s.
        let w = ConnWatch::new();
        let l = limits(10_000, 300);
        let t = Instant::now();
        let watcher = {
            let w = w.clone();
            tokio::spawn(async move { w.expired(&l).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(w.request_started());
        let why = tokio::time::timeout(Duration::from_secs(3), watcher).await.expect("still waiting on the header deadline").unwrap();
        assert_eq!(why, Expired::Idle);
        assert!(t.elapsed() >= Duration::from_millis(350));
    }

    #[tokio::test]
    async fn a_running_request_never_expires() {
        let w = ConnWatch::new();
        let l = limits(100, 100);
        let _busy = w.request_started();
        let r = tokio::time::timeout(Duration::from_millis(600), w.expired(&l)).await;
        assert!(r.is_err(), "expired while a handler was running");
    }
}

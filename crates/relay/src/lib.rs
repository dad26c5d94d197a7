//! Earshot's thin native relay: it terminates client WebSockets and speaks
//! WebSocket-over-HTTP with GRIP to the backend (the embedded components in-process,
//! or any HTTP base URL), exactly as Pushpin and Fastly Fanout do, plus a GRIP publish
//! endpoint and Redis-backed fan-out shared by any number of relays.

pub mod backend;
mod close;
pub mod hub;
mod lifetime;
pub mod limits;
mod publish;
mod queue;
mod request;
mod session;
mod upgrade;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use backend::{Backend, BackendError, BackendFuture, HttpBackend};
pub use hub::Hub;
pub use upgrade::is_websocket_upgrade;

/// Messages queued per connection before it counts as a slow consumer (4008). At
/// 50 messages/s of meeting events and transcript lines this is 20 s of backlog — a
/// live client never gets near it — and bounds a stalled socket's memory.
pub const SEND_QUEUE_MESSAGES: usize = 1024;

/// Payload bytes queued per connection before it counts as a slow consumer (4008).
/// The message bound alone lets a stalled socket pin 1024 × the largest message; 16 MiB
/// is twice the largest backend response ([`backend::MAX_BACKEND_RESPONSE_BYTES`]), so
/// one whole response (a history replay) always fits behind a backlog, while 1024
/// ordinary events (a few hundred bytes each) are far below it.
pub const SEND_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Queue bound per connection, in messages.
    pub send_queue_messages: usize,
    /// Queue bound per connection, in payload bytes.
    pub send_queue_bytes: usize,
    /// Largest client message read, in bytes (larger ones close the socket with 1009).
    pub max_message_bytes: usize,
    /// Key for signing `Grip-Sig` on backend requests (none: unsigned).
    pub grip_sig_key: Option<String>,
    /// Most WebSockets from one IP (more: HTTP 429 before upgrading).
    pub max_connections_per_ip: usize,
    /// Most WebSockets in total (more: HTTP 503 before upgrading).
    pub max_connections_total: usize,
    /// Browser origins allowed besides same-origin and no-Origin clients (`*`: any).
    pub allowed_origins: Vec<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            send_queue_messages: SEND_QUEUE_MESSAGES,
            send_queue_bytes: SEND_QUEUE_BYTES,
            max_message_bytes: earshot_protocol::limits::RELAY_MAX_MESSAGE_BYTES,
            grip_sig_key: None,
            max_connections_per_ip: limits::DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_connections_total: limits::DEFAULT_MAX_CONNECTIONS_TOTAL,
            allowed_origins: Vec::new(),
        }
    }
}

/// Shows an error with its whole `source()` chain (`outer: inner: root`), so a log line
/// keeps the cause that a bare `%e` would drop.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// State shared by every session of one relay.
pub(crate) struct RelayShared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: RelayConfig,
    grip_key: Option<jwt_simple::prelude::HS256Key>,
    /// The current `Grip-Sig` and when it was signed (see [`GRIP_SIG_REUSE`]).
    grip_sig: std::sync::Mutex<Option<(std::time::Instant, http::HeaderValue)>>,
    conn_seq: AtomicU64,
    pub(crate) limits: limits::ConnectionLimits,
    /// Live sessions, for the metrics endpoint and the shutdown drain.
    open_sessions: AtomicU64,
    /// Token expiry deadlines and the `jti` index of live connections.
    pub(crate) lifetimes: Arc<lifetime::Lifetimes>,
}

/// How long a `Grip-Sig` stays valid, in seconds (Pushpin's signatures last an hour too).
const GRIP_SIG_TTL_S: u64 = 60 * 60;

/// How long one signature is reused for the requests of every connection. Signing a JWT
/// (claims JSON, HMAC-SHA256, base64) per request was a cost on the hop for nothing: the
/// token proves the request comes from the relay, not which request it is. A minute
/// keeps every token sent at least 59 minutes from its expiry.
const GRIP_SIG_REUSE: std::time::Duration = std::time::Duration::from_secs(60);

impl RelayShared {
    pub(crate) fn new(backend: Arc<dyn Backend>, hub: Arc<Hub>, config: RelayConfig) -> Self {
        let grip_key = config
            .grip_sig_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(|k| jwt_simple::prelude::HS256Key::from_bytes(k.as_bytes()));
        RelayShared {
            limits: limits::ConnectionLimits::new(config.max_connections_per_ip, config.max_connections_total),
            backend,
            hub,
            config,
            grip_key,
            grip_sig: std::sync::Mutex::new(None),
            conn_seq: AtomicU64::new(1),
            open_sessions: AtomicU64::new(0),
            lifetimes: Arc::default(),
        }
    }

    /// The send-queue bound of every connection.
    pub(crate) fn queue_bound(&self) -> queue::QueueBound {
        queue::QueueBound { messages: self.config.send_queue_messages, bytes: self.config.send_queue_bytes }
    }

    /// Counts a session as open until the returned guard drops (even on a panic).
    pub(crate) fn session_opened(self: &Arc<Self>) -> OpenSession {
        self.open_sessions.fetch_add(1, Ordering::Relaxed);
        OpenSession(self.clone())
    }

    pub(crate) fn next_conn_seq(&self) -> u64 {
        self.conn_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The `Grip-Sig` header value, when a signing key is configured: signed at most
    /// every [`GRIP_SIG_REUSE`].
    pub(crate) fn grip_sig(&self) -> Option<http::HeaderValue> {
        use jwt_simple::prelude::*;
        let key = self.grip_key.as_ref()?;
        let mut current = self.grip_sig.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((signed, sig)) = current.as_ref() {
            if signed.elapsed() < GRIP_SIG_REUSE {
                return Some(sig.clone());
            }
        }
        let claims = Claims::create(jwt_simple::prelude::Duration::from_secs(GRIP_SIG_TTL_S)).with_issuer("earshot");
        let sig = http::HeaderValue::from_str(&key.authenticate(claims).ok()?).ok()?;
        *current = Some((std::time::Instant::now(), sig.clone()));
        Some(sig)
    }
}

/// One open session in [`RelayShared`]'s count.
pub(crate) struct OpenSession(Arc<RelayShared>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.open_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A relay: hand it upgrade requests and publish requests.
#[derive(Clone)]
pub struct Relay {
    shared: Arc<RelayShared>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Relay {
    /// A relay in front of `backend`, fanning out through `hub`; sessions close with
    /// 1001 when `shutdown` turns true.
    pub fn new(
        backend: Arc<dyn Backend>,
        hub: Arc<Hub>,
        config: RelayConfig,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let shared = Arc::new(RelayShared::new(backend, hub, config));
        // The expiry task and the revocation listener need a runtime; a relay built outside
        // one (unit tests of its parts) enforces no token lifetime.
        if tokio::runtime::Handle::try_current().is_ok() {
            shared.lifetimes.start(&shared.hub);
        }
        Relay { shared, shutdown }
    }

    /// The fan-out hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// WebSocket sessions open right now.
    pub fn open_sessions(&self) -> u64 {
        self.shared.open_sessions.load(Ordering::Relaxed)
    }
}

//! Why an ingest stream failed, layered so a caller can act on it: fix the request, retry
//! the connection, or report the server's close.

use std::time::Duration;

use earshot_protocol::close::CloseCode;
use tokio_tungstenite::tungstenite;

use crate::session::Totals;

/// Why the agent could not connect, handshake, stream or close.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The base URL is not `ws://`, `wss://`, `http://` or `https://`.
    #[error("{base:?} must start with ws:// (or http://)")]
    BadScheme {
        /// The base URL as given.
        base: String,
    },
    /// The URL is not one a WebSocket request can be made to.
    #[error("bad url {url}: {source}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What tungstenite said about it.
        source: tungstenite::Error,
    },
    /// The token cannot travel in an `Authorization` header.
    #[error("the token contains characters an HTTP header cannot carry")]
    TokenNotHeaderSafe,
    /// No WebSocket within the connect timeout.
    #[error("no WebSocket connection to {url} within {after:?}")]
    ConnectTimeout {
        /// Where to.
        url: String,
        /// How long the agent waited.
        after: Duration,
    },
    /// The server answered the upgrade with an HTTP status (429, 503, 401, …).
    #[error("the server refused the WebSocket upgrade: HTTP {status}")]
    UpgradeRefused {
        /// The status the server answered.
        status: tungstenite::http::StatusCode,
    },
    /// TCP or the WebSocket handshake failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// Where to.
        url: String,
        /// The underlying failure.
        source: tungstenite::Error,
    },
    /// The connection failed or ended without a close frame.
    #[error("{0}")]
    Lost(String),
    /// The server closed the WebSocket (any code before `closed`, or not 1000 after it).
    #[error("closed by server: {code} {reason}")]
    Closed {
        /// The close code (1005 when the frame carried none).
        code: u16,
        /// The close reason.
        reason: String,
        /// What the agent had sent by then.
        sent: Totals,
    },
    /// No `handshake_ack` within the wait.
    #[error("no handshake_ack within {after:?}")]
    HandshakeAckTimeout {
        /// How long the agent waited.
        after: Duration,
    },
    /// No `closed` within the wait after `close_stream` (acks restart it).
    #[error("no `closed` from the server within {after:?} of close_stream")]
    ClosedTimeout {
        /// How long the agent waited after the last message.
        after: Duration,
    },
    /// `closed` came but the close frame did not.
    #[error("the server sent `closed` ({stored}) but no close frame within {after:?}")]
    CloseFrameTimeout {
        /// The totals `closed` reported.
        stored: Totals,
        /// How long the agent waited.
        after: Duration,
    },
    /// A frame larger than the server's `max_frame_bytes` (the caller cut it wrong).
    #[error("a frame of {size} bytes is larger than the server's max_frame_bytes ({max_size})")]
    FrameTooLarge {
        /// The frame's size.
        size: usize,
        /// The server's limit.
        max_size: usize,
    },
    /// The server's `max_frame_bytes` cannot hold one sample frame.
    #[error("the server's max_frame_bytes ({max_frame_bytes}) is smaller than one sample frame ({block_align} bytes)")]
    FrameLimitTooSmall {
        /// The server's limit.
        max_frame_bytes: usize,
        /// Bytes of one sample frame.
        block_align: usize,
    },
    /// Reading the audio input failed.
    #[error("reading the input: {0}")]
    Input(#[source] std::io::Error),
    /// The OS refused the input reader thread.
    #[error("starting the input reader: {0}")]
    Spawn(#[source] std::io::Error),
}

impl AgentError {
    /// Whether the server did not answer within one of the bounded waits.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            AgentError::ConnectTimeout { .. }
                | AgentError::HandshakeAckTimeout { .. }
                | AgentError::ClosedTimeout { .. }
                | AgentError::CloseFrameTimeout { .. }
        )
    }

    /// Whether there was no usable WebSocket (refused, upgrade refused, dropped).
    pub fn is_connection(&self) -> bool {
        matches!(self, AgentError::UpgradeRefused { .. } | AgentError::Connect { .. } | AgentError::Lost(_))
    }

    /// The server's close code, when the server closed the stream.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            AgentError::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What to do about a close code (DESIGN.md "Close codes"), as a parenthesised hint, or
/// nothing when the code needs no advice.
pub fn close_hint(code: u16) -> &'static str {
    match CloseCode::from_code(code) {
        Some(CloseCode::PolicyViolation) => " (check the token: scope `ingest`, this meeting, the server's secret)",
        Some(CloseCode::TryAgainLater) => " (rate limited: try again in a few seconds)",
        Some(CloseCode::InternalError) => " (server or Redis failure: retry with backoff)",
        Some(CloseCode::GoingAway) => " (server shutting down: reconnect)",
        _ => "",
    }
}

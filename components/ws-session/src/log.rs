//! One JSON object a line on stdout (DESIGN.md "Logs"): every line of a connection carries
//! `meeting_id`, `source` and `connection_id`, and state transitions carry `state`, which the
//! host lifts into its log stream. Tokens never reach a line: paths go through
//! `earshot_auth::redact_query`, and of a token only its `sub` is recorded.

use earshot_protocol::Source;
use serde_json::{Map, Value};

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal life of a connection.
    Info,
    /// The client did something wrong, or a best-effort side effect failed.
    Warn,
    /// A backend (Redis, key-value store, configuration) failed.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The connection states DESIGN.md names, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// An OPEN arrived; authentication runs.
    Connecting,
    /// Accepted (ingest: awaiting the handshake; subscriber: subscribed).
    Connected,
    /// The ingest handshake was acknowledged.
    HandshakeComplete,
    /// The first PCM frame was appended.
    PcmStreaming,
    /// The connection ended and its presence was cleared.
    CleanupComplete,
}

impl State {
    /// The name in the `state` field.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::HandshakeComplete => "handshake_complete",
            State::PcmStreaming => "pcm_streaming",
            State::CleanupComplete => "cleanup_complete",
        }
    }
}

/// What every line of one connection carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogContext {
    /// The component writing the line (`ingest`, `subscribe`).
    pub component: &'static str,
    /// The meeting, when the route named a valid one.
    pub meeting_id: Option<String>,
    /// The ingest source (`None` on subscriber routes, where the line still carries `source: null`).
    pub source: Option<Source>,
    /// The relay's `Connection-Id`.
    pub connection_id: String,
    /// The token's subject, once known.
    pub sub: Option<String>,
}

impl LogContext {
    /// Starts a line at `level` saying `msg`.
    pub fn line(&self, level: Level, msg: &str) -> Line {
        let mut map = Map::new();
        map.insert("level".into(), level.as_str().into());
        map.insert("component".into(), self.component.into());
        map.insert("msg".into(), msg.into());
        map.insert("meeting_id".into(), self.meeting_id.clone().into());
        map.insert("source".into(), self.source.map(|s| s.as_str()).into());
        map.insert("connection_id".into(), self.connection_id.clone().into());
        if let Some(sub) = &self.sub {
            map.insert("sub".into(), sub.clone().into());
        }
        Line(map)
    }

    /// A state-transition line at `info`.
    pub fn transition(&self, state: State, msg: &str) -> Line {
        self.line(Level::Info, msg).with("state", state.as_str())
    }
}

/// One log line being built.
#[derive(Debug, Clone, PartialEq)]
pub struct Line(Map<String, Value>);

impl Line {
    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Line {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The JSON object.
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

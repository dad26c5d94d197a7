//! One JSON object a line on stdout (DESIGN.md "Logs"): `level`, `component`, `msg`, and for
//! a segment its `meeting_id` and `source`, which the host lifts into its log stream.
//! Segment text never reaches a line (transcripts are meeting content); its length does.

use serde_json::{Map, Value};

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Interim segments: many a second per source, off at the default log level.
    Debug,
    /// A stored segment.
    Info,
    /// A rejected segment, or a best-effort step (state, publish) that failed.
    Warn,
    /// A backend (Redis, key-value store) failed and the segment was lost.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One log line being built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line(Map<String, Value>);

impl Line {
    /// A line of `component` at `level` saying `msg`.
    pub(crate) fn new(component: &str, level: Level, msg: &str) -> Line {
        let mut map = Map::new();
        map.insert("level".into(), level.as_str().into());
        map.insert("component".into(), component.into());
        map.insert("msg".into(), msg.into());
        Line(map)
    }

    /// Adds a field.
    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Line {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The JSON object.
    pub(crate) fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

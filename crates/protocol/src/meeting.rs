//! Meeting events on channel `meeting:{id}` (DESIGN.md; presence first, analytics later).

use serde::{Deserialize, Serialize};

use crate::ids::Source;

/// An event subscribers of `/api/v1/ws/meetings/{id}` receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MeetingEvent {
    /// A capture agent's source connected.
    SourceConnected {
        /// Meeting id.
        meeting_id: String,
        /// Which source.
        source: Source,
        /// The ingest connection.
        connection_id: String,
        /// When, unix milliseconds.
        at_ms: u64,
    },
    /// A capture agent's source disconnected.
    SourceDisconnected {
        /// Meeting id.
        meeting_id: String,
        /// Which source.
        source: Source,
        /// The ingest connection.
        connection_id: String,
        /// When, unix milliseconds.
        at_ms: u64,
        /// Why (`close_stream`, `idle`, `client closed`, `disconnected`…).
        reason: String,
    },
}

impl MeetingEvent {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("meeting events serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_events_have_type_source_and_time() {
        let e = MeetingEvent::SourceConnected { meeting_id: "m1".into(), source: Source::Sys, connection_id: "c".into(), at_ms: 5 };
        assert_eq!(e.to_json(), r#"{"type":"source_connected","meeting_id":"m1","source":"sys","connection_id":"c","at_ms":5}"#);
    }
}

//! Meeting events on channel `meeting:{id}` (DESIGN.md; presence first, analytics later).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::Source;

/// Who streams one source of a meeting right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The ingest connection.
    pub connection_id: String,
    /// When it connected, unix milliseconds.
    pub since_ms: u64,
}

/// A meeting's presence record in the key-value store (key [`crate::ids::presence_key`]):
/// source → its current ingest connection; a source that is not streaming is absent.
pub type Presence = BTreeMap<Source, PresenceEntry>;

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

/// A meeting's transcript state in the key-value store (`meeting_state_key`), written
/// by the transcripts component and read for the subscribe snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingState {
    /// Offset of the newest final segment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transcript_offset: Option<String>,
    /// Final segments appended so far.
    #[serde(default)]
    pub final_segments: u64,
    /// Last update, unix milliseconds.
    #[serde(default)]
    pub updated_ms: u64,
}

/// Key-value key of a meeting's [`MeetingState`].
pub fn meeting_state_key(meeting: &crate::ids::MeetingId) -> String {
    format!("meeting:{meeting}:state")
}

/// A meeting is known once a capture agent has connected to it (it has a presence
/// record) or a transcript was accepted for it (it has a state record).
pub fn is_known_meeting(has_presence: bool, has_state: bool) -> bool {
    has_presence || has_state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_events_have_type_source_and_time() {
        let e = MeetingEvent::SourceConnected { meeting_id: "m1".into(), source: Source::Sys, connection_id: "c".into(), at_ms: 5 };
        assert_eq!(e.to_json(), r#"{"type":"source_connected","meeting_id":"m1","source":"sys","connection_id":"c","at_ms":5}"#);
    }

    #[test]
    fn presence_is_a_map_keyed_by_source() {
        let mut p = Presence::new();
        p.insert(Source::Mic, PresenceEntry { connection_id: "c1".into(), since_ms: 7 });
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"mic":{"connection_id":"c1","since_ms":7}}"#);
        assert_eq!(serde_json::from_str::<Presence>(&json).unwrap(), p);
    }
}

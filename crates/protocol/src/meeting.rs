//! Meeting events on channel `meeting:{id}` (DESIGN.md): presence, the subscribe snapshot,
//! voice activity and talk-time statistics.

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
    /// The meeting as it stands, sent once to each new subscriber before any live event.
    Snapshot {
        /// Meeting id.
        meeting_id: String,
        /// The sources streaming now, in source order.
        sources: Vec<SourcePresence>,
        /// Offset of the newest final transcript segment (`null`: none yet).
        last_transcript_offset: Option<String>,
        /// Talk statistics so far (`null`: no audio analysed yet).
        talk: Option<TalkSummary>,
    },
    /// Voice activity began on a source.
    SpeechStarted {
        /// Meeting id.
        meeting_id: String,
        /// Which source.
        source: Source,
        /// Start of the speech, stream milliseconds (since the session's first sample).
        at_ms: u64,
        /// The same instant as unix milliseconds (session start + `at_ms`).
        wall_ms: u64,
    },
    /// Voice activity ended on a source.
    SpeechEnded {
        /// Meeting id.
        meeting_id: String,
        /// Which source.
        source: Source,
        /// End of the speech, stream milliseconds (since the session's first sample).
        at_ms: u64,
        /// Length of the speech segment, milliseconds (it began at `at_ms - duration_ms`).
        duration_ms: u64,
        /// The end as unix milliseconds (session start + `at_ms`).
        wall_ms: u64,
    },
    /// Talk-time statistics, at most every [`STATS_INTERVAL_MS`] per meeting and once
    /// whenever a source's stream ends.
    Stats {
        /// Meeting id.
        meeting_id: String,
        /// The figures.
        #[serde(flatten)]
        talk: TalkSummary,
    },
    /// The meeting ended (its last source left and none came back within the grace
    /// period, or `POST /api/v1/meetings/{id}/end`): sent once per meeting.
    MeetingEnded {
        /// Meeting id.
        meeting_id: String,
        /// Why it ended.
        reason: crate::meeting_end::EndReason,
        /// Duration, talk time per source, segment count.
        #[serde(flatten)]
        totals: crate::meeting_end::MeetingTotals,
    },
}

/// One streaming source in a [`MeetingEvent::Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePresence {
    /// Which source.
    pub source: Source,
    /// Its ingest connection.
    pub connection_id: String,
    /// Connected since, unix milliseconds.
    pub since_ms: u64,
}

/// A meeting's talk statistics over the window `[wall_ms - window_ms, wall_ms)`: from the
/// meeting's first analysed audio (or the oldest speech still on record) to now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TalkSummary {
    /// Length of the window, milliseconds.
    pub window_ms: u64,
    /// Talk time per source inside the window, milliseconds (every source listed).
    pub talk_ms: BTreeMap<Source, u64>,
    /// Time two sources talk at once, milliseconds.
    pub overlap_ms: u64,
    /// Time no source talks, milliseconds.
    pub silence_ms: u64,
    /// End of the window, unix milliseconds.
    pub wall_ms: u64,
}

/// Shortest time between two periodic [`MeetingEvent::Stats`] of one meeting, in
/// milliseconds. Talk shares move slowly: five seconds keeps a dashboard live while a
/// meeting with both sources streaming costs one event and one key-value election per
/// five seconds, whoever emits it.
pub const STATS_INTERVAL_MS: u64 = 5_000;

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
    fn analytics_events_have_their_shapes() {
        let talk = TalkSummary {
            window_ms: 3_000,
            talk_ms: BTreeMap::from([(Source::Mic, 2_000), (Source::Sys, 0)]),
            overlap_ms: 0,
            silence_ms: 1_000,
            wall_ms: 9,
        };
        let stats = MeetingEvent::Stats { meeting_id: "m1".into(), talk: talk.clone() };
        assert_eq!(
            stats.to_json(),
            r#"{"type":"stats","meeting_id":"m1","window_ms":3000,"talk_ms":{"mic":2000,"sys":0},"overlap_ms":0,"silence_ms":1000,"wall_ms":9}"#
        );
        assert_eq!(serde_json::from_str::<MeetingEvent>(&stats.to_json()).unwrap(), stats);
        let snapshot = MeetingEvent::Snapshot {
            meeting_id: "m1".into(),
            sources: vec![SourcePresence { source: Source::Mic, connection_id: "c1".into(), since_ms: 5 }],
            last_transcript_offset: None,
            talk: None,
        };
        assert_eq!(
            snapshot.to_json(),
            r#"{"type":"snapshot","meeting_id":"m1","sources":[{"source":"mic","connection_id":"c1","since_ms":5}],"last_transcript_offset":null,"talk":null}"#
        );
        let ended = MeetingEvent::SpeechEnded { meeting_id: "m1".into(), source: Source::Sys, at_ms: 1_000, duration_ms: 990, wall_ms: 7 };
        assert_eq!(
            ended.to_json(),
            r#"{"type":"speech_ended","meeting_id":"m1","source":"sys","at_ms":1000,"duration_ms":990,"wall_ms":7}"#
        );
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

//! Transcript segments: what speech-to-text workers publish (Redis channel
//! `earshot:transcripts` or `POST /api/v1/meetings/{id}/transcript`) and what
//! `/api/v1/ws/transcript/{id}` subscribers receive.

use serde::{Deserialize, Serialize};

use crate::grip::Item;
use crate::ids::{transcript_channel, IdError, MeetingId, Source};

/// Redis channel the transcripts component (a Spin Redis trigger) listens on.
pub const INTAKE_CHANNEL: &str = "earshot:transcripts";

/// Longest segment text, in bytes: a minute of fast speech is ~1,000 characters;
/// 4 KiB leaves room for any real segment and refuses abuse.
pub const MAX_TEXT_BYTES: usize = 4 * 1024;

/// Largest intake message, in bytes (a segment plus its JSON framing).
pub const MAX_SEGMENT_BYTES: usize = 16 * 1024;

/// Segments kept per meeting (`XADD … MAXLEN ~`): a long meeting produces a few
/// thousand final segments; older ones are reported as truncated history.
pub const TRANSCRIPT_STREAM_MAXLEN: u64 = 10_000;

/// Most history segments replayed to one subscriber on connect, oldest first.
pub const MAX_REPLAY_SEGMENTS: usize = 1_000;

/// A segment as a worker sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Meeting id.
    pub meeting_id: String,
    /// Audio source it was transcribed from.
    pub source: Source,
    /// Recognised text.
    pub text: String,
    /// Final (kept in history) or interim (live only).
    pub is_final: bool,
    /// Start, milliseconds into the source's stream.
    pub start_ms: u64,
    /// End, milliseconds into the source's stream.
    pub end_ms: u64,
    /// Speaker label, if the worker diarises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// Confidence in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// Why a segment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Not JSON, or not the segment shape.
    #[error("malformed segment: {0}")]
    Malformed(String),
    /// Larger than [`MAX_SEGMENT_BYTES`].
    #[error("segment too large")]
    TooLarge,
    /// `meeting_id` breaks the id grammar.
    #[error("invalid meeting id")]
    InvalidMeetingId,
    /// Text longer than [`MAX_TEXT_BYTES`].
    #[error("text too long")]
    TextTooLong,
    /// `end_ms` before `start_ms`.
    #[error("end_ms before start_ms")]
    BadTimes,
    /// Confidence outside [0, 1].
    #[error("confidence out of range")]
    BadConfidence,
}

impl Segment {
    /// Parses and validates one intake message.
    pub fn parse(bytes: &[u8]) -> Result<(Self, MeetingId), SegmentError> {
        if bytes.len() > MAX_SEGMENT_BYTES {
            return Err(SegmentError::TooLarge);
        }
        let seg: Segment = serde_json::from_slice(bytes).map_err(|e| SegmentError::Malformed(e.to_string().chars().take(100).collect()))?;
        let meeting = seg.validate()?;
        Ok((seg, meeting))
    }

    /// Checks the fields; returns the parsed meeting id.
    pub fn validate(&self) -> Result<MeetingId, SegmentError> {
        let meeting = MeetingId::parse(&self.meeting_id).map_err(|_| SegmentError::InvalidMeetingId)?;
        if self.text.len() > MAX_TEXT_BYTES {
            return Err(SegmentError::TextTooLong);
        }
        if self.end_ms < self.start_ms {
            return Err(SegmentError::BadTimes);
        }
        if self.confidence.is_some_and(|c| !(0.0..=1.0).contains(&c)) {
            return Err(SegmentError::BadConfidence);
        }
        Ok(meeting)
    }
}

/// A message on `/api/v1/ws/transcript/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptMessage {
    /// A segment; `offset` is its id in the meeting's transcript stream (absent for
    /// interim segments, which are not kept).
    Transcript {
        /// Stream id, the resume token for `?since=`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<String>,
        /// The segment.
        #[serde(flatten)]
        segment: Segment,
    },
    /// The requested `since` is older than the retained history: segments between it
    /// and `first_offset` are gone.
    HistoryTruncated {
        /// The offset the client asked to resume after.
        since: String,
        /// The oldest offset still retained.
        first_offset: String,
    },
}

impl TranscriptMessage {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("transcript messages serialize")
    }
}

/// Redis Stream holding a meeting's final segments.
pub fn transcript_stream_key(meeting: &MeetingId) -> String {
    format!("transcript:{meeting}")
}

/// Field of a transcript stream entry holding the segment JSON.
pub const SEGMENT_FIELD: &str = "segment";

/// Whether `s` is a valid resume offset (a Redis stream id `<ms>-<seq>`).
pub fn valid_offset(s: &str) -> bool {
    s.len() <= 41
        && s.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
        })
}

/// Path prefix of the HTTP intake route, `POST /api/v1/meetings/{id}/transcript`.
pub const INTAKE_PATH_PREFIX: &str = "/api/v1/meetings/";

/// Last path segment of the HTTP intake route.
pub const INTAKE_PATH_SUFFIX: &str = "/transcript";

/// The meeting named by an HTTP intake path (`/api/v1/meetings/{id}/transcript`, one
/// trailing slash tolerated): [`IdError::UnknownRoute`] for any other path,
/// [`IdError::InvalidMeetingId`] when the id breaks the grammar.
pub fn parse_intake_path(path: &str) -> Result<MeetingId, IdError> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let id = path
        .strip_prefix(INTAKE_PATH_PREFIX)
        .and_then(|rest| rest.strip_suffix(INTAKE_PATH_SUFFIX))
        .filter(|id| !id.contains('/'))
        .ok_or(IdError::UnknownRoute)?;
    MeetingId::parse(id)
}

/// The 200 reply of the HTTP intake route: the stored segment's offset, `null` for an
/// interim segment (not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeReply {
    /// Stream id of the stored segment.
    pub offset: Option<String>,
}

impl Segment {
    /// The JSON text, as stored in a transcript stream entry ([`SEGMENT_FIELD`]).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("segments serialize")
    }
}

/// The GRIP item that delivers `segment` live to `/api/v1/ws/transcript/{id}`
/// subscribers (channel [`transcript_channel`]): item id = `offset` (a stored segment),
/// none for an interim one; content = [`TranscriptMessage::Transcript`].
pub fn live_item(meeting: &MeetingId, offset: Option<String>, segment: Segment) -> Item {
    let content = TranscriptMessage::Transcript { offset: offset.clone(), segment }.to_json();
    Item { id: offset, ..Item::text(transcript_channel(meeting), content) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"meeting_id":"m1","source":"mic","text":"hello","is_final":true,"start_ms":0,"end_ms":900,"speaker":"A","confidence":0.9}"#;

    #[test]
    fn parses_and_validates() {
        let (seg, m) = Segment::parse(OK.as_bytes()).unwrap();
        assert_eq!((m.as_str(), seg.text.as_str()), ("m1", "hello"));
        let bad = |s: &str| Segment::parse(s.as_bytes()).unwrap_err();
        assert!(matches!(bad("nope"), SegmentError::Malformed(_)));
        assert_eq!(bad(&OK.replace("\"m1\"", "\"../x\"")), SegmentError::InvalidMeetingId);
        assert_eq!(bad(&OK.replace("\"start_ms\":0", "\"start_ms\":1000")).to_string(), "end_ms before start_ms");
        assert_eq!(bad(&OK.replace("0.9", "1.5")), SegmentError::BadConfidence);
        assert_eq!(bad(&OK.replace("hello", &"x".repeat(MAX_TEXT_BYTES + 1))), SegmentError::TextTooLong);
        assert!(matches!(bad(&OK.replace("\"mic\"", "\"spk\"")), SegmentError::Malformed(_)));
    }

    #[test]
    fn messages_carry_offset_and_segment_flat() {
        let (seg, _) = Segment::parse(OK.as_bytes()).unwrap();
        let json = TranscriptMessage::Transcript { offset: Some("5-0".into()), segment: seg }.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!((v["type"].as_str(), v["offset"].as_str(), v["text"].as_str()), (Some("transcript"), Some("5-0"), Some("hello")));
        assert!(valid_offset("1700000000000-12"));
        for bad in ["", "-", "1-", "a-1", "1-1-1", "1"] {
            assert!(!valid_offset(bad), "{bad}");
        }
    }

    #[test]
    fn intake_paths_name_one_meeting() {
        assert_eq!(parse_intake_path("/api/v1/meetings/m1/transcript").unwrap().as_str(), "m1");
        assert_eq!(parse_intake_path("/api/v1/meetings/m1/transcript/").unwrap().as_str(), "m1");
        assert_eq!(parse_intake_path("/api/v1/meetings/a%2Fb/transcript"), Err(IdError::InvalidMeetingId));
        assert_eq!(parse_intake_path("/api/v1/meetings/../transcript"), Err(IdError::InvalidMeetingId));
        for other in ["/api/v1/meetings/m1", "/api/v1/meetings/a/b/transcript", "/api/v1/meetings//transcript/x", "/api/v1/ws/transcript/m1"] {
            assert_eq!(parse_intake_path(other), Err(IdError::UnknownRoute), "{other}");
        }
        assert_eq!(serde_json::to_string(&IntakeReply { offset: None }).unwrap(), r#"{"offset":null}"#);
    }

    #[test]
    fn live_items_carry_the_offset_as_id() {
        let (seg, m) = Segment::parse(OK.as_bytes()).unwrap();
        let item = live_item(&m, Some("7-1".into()), seg.clone());
        assert_eq!((item.channel.as_str(), item.id.as_deref()), ("transcript:m1", Some("7-1")));
        let crate::grip::WsPayload::Text(text) = item.ws_payload().unwrap() else { panic!("text item") };
        assert_eq!(text, TranscriptMessage::Transcript { offset: Some("7-1".into()), segment: seg.clone() }.to_json());
        let interim = live_item(&m, None, seg);
        assert_eq!(interim.id, None);
        assert!(!serde_json::to_string(&interim).unwrap().contains("offset"));
    }
}

//! The pipeline every segment goes through, whichever surface received it: validate →
//! `XADD transcript:{id}` (final segments only; the stream id is the segment's offset) →
//! meeting state (final only) → publish on `transcript:{id}`. Storing comes before
//! publishing, so a subscriber never sees an offset that history does not hold.

use std::fmt;

use earshot_protocol::ids::{presence_key, MAX_MEETING_ID_LEN};
use earshot_protocol::meeting::{is_known_meeting, meeting_state_key};
use earshot_protocol::transcript::{
    live_item, transcript_stream_key, valid_offset, Segment, SegmentError, MAX_SEGMENT_BYTES,
    SEGMENT_FIELD, TRANSCRIPT_STREAM_MAXLEN,
};
use earshot_protocol::{MeetingId, Source};
use serde_json::Value;

use crate::effects::{EffectError, Effects};
use crate::log::{Level, Line};
use crate::publish::publish;
use crate::settings::IntakeSettings;
use crate::state;

/// Longest `source` value a rejection line quotes back, in characters: valid ones are 3–6.
const MAX_LOGGED_SOURCE_CHARS: usize = 16;

/// Which surface a segment arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Redis channel `earshot:transcripts` (the `transcripts` component).
    Redis,
    /// `POST /api/v1/meetings/{id}/transcript` (the `transcripts-http` component).
    Http,
}

impl Via {
    /// The `via` field of log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Redis => "redis",
            Via::Http => "http",
        }
    }

    /// The component that receives segments this way (the `component` field of log lines).
    pub fn component(self) -> &'static str {
        match self {
            Via::Redis => "transcripts",
            Via::Http => "transcripts-http",
        }
    }
}

/// One segment to take in.
#[derive(Debug, Clone, Copy)]
pub struct Intake<'a> {
    /// The message or request body, unparsed.
    pub payload: &'a [u8],
    /// Where it came from.
    pub via: Via,
    /// The meeting the HTTP path names: the segment's `meeting_id` must be this one.
    pub path_meeting: Option<&'a MeetingId>,
    /// The token's subject (HTTP), for the log.
    pub sub: Option<&'a str>,
}

/// A segment taken in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its meeting.
    pub meeting: MeetingId,
    /// Its source.
    pub source: Source,
    /// Final (stored) or interim (published only).
    pub is_final: bool,
    /// Its id in `transcript:{meeting}`; `None` for an interim segment.
    pub offset: Option<String>,
}

/// Why a segment was refused; the sender's fault, logged at `warn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a valid segment (size, JSON shape, meeting id, text length, times, confidence).
    Segment(SegmentError),
    /// Its `meeting_id` is not the meeting of the HTTP path.
    MeetingMismatch,
    /// No capture agent ever connected to the meeting and no transcript was stored for it.
    UnknownMeeting,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Segment(e) => e.fmt(f),
            Rejection::MeetingMismatch => f.write_str("meeting_id does not match the path"),
            Rejection::UnknownMeeting => f.write_str("unknown meeting"),
        }
    }
}

/// Why a segment was not taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The segment is refused (logged at `warn`).
    #[error("{0}")]
    Rejected(Rejection),
    /// The key-value store, Redis or the configuration failed and the segment was lost
    /// (logged at `error`; the detail is for logs only).
    #[error("segment not stored: {0}")]
    Unavailable(String),
}

/// Takes in one segment at `now_ms`. Every outcome is logged here, once.
pub(crate) async fn process(
    input: &Intake<'_>,
    settings: &IntakeSettings,
    effects: &mut impl Effects,
    now_ms: u64,
) -> Result<Accepted, IntakeError> {
    let (segment, meeting) = match Segment::parse(input.payload) {
        Ok(parsed) => parsed,
        Err(e) => {
            let (meeting_id, source) = claimed(input.payload);
            let line = base_line(input, Level::Warn, "segment rejected", meeting_id, source)
                .with("reason", e.to_string())
                .with("bytes", input.payload.len());
            effects.log(line.into_value());
            return Err(IntakeError::Rejected(Rejection::Segment(e)));
        }
    };
    let line = |level: Level, msg: &str| {
        base_line(
            input,
            level,
            msg,
            Some(meeting.to_string()),
            Some(segment.source.as_str().to_owned()),
        )
        .with("is_final", segment.is_final)
    };
    if input.path_meeting.is_some_and(|path| *path != meeting) {
        return Err(rejected(effects, line(Level::Warn, "segment rejected"), input, Rejection::MeetingMismatch));
    }
    match known(effects, &meeting) {
        Ok(true) => {}
        Ok(false) => {
            return Err(rejected(effects, line(Level::Warn, "segment rejected"), input, Rejection::UnknownMeeting));
        }
        Err(e) => return Err(failed(effects, line(Level::Error, "segment not stored"), e)),
    }

    let offset = if segment.is_final {
        let offset = match store(settings, effects, &meeting, &segment) {
            Ok(offset) => offset,
            Err(e) => return Err(failed(effects, line(Level::Error, "segment not stored"), e)),
        };
        // The segment is in history whatever happens to the state record: a failure here
        // leaves `last_transcript_offset` stale, which the stream itself corrects.
        let key = meeting_state_key(&meeting);
        let mut update = |current: Option<&[u8]>| Some(state::advance(current, &offset, now_ms));
        if let Err(e) = effects.kv_update(&key, &mut update) {
            let l = line(Level::Warn, "meeting state not updated")
                .with("offset", offset.as_str())
                .with("detail", e.0);
            effects.log(l.into_value());
        }
        Some(offset)
    } else {
        None
    };

    let item = live_item(&meeting, offset.clone(), segment.clone());
    let published = match publish(settings, effects, &item).await {
        Ok(()) => true,
        Err(e) => {
            let l = line(Level::Warn, "publish failed")
                .with("channel", item.channel.as_str())
                .with("offset", offset.clone())
                .with("detail", e.to_string());
            effects.log(l.into_value());
            false
        }
    };

    let level = if segment.is_final {
        Level::Info
    } else {
        Level::Debug
    };
    let l = line(level, "segment accepted")
        .with("offset", offset.clone())
        .with("start_ms", segment.start_ms)
        .with("end_ms", segment.end_ms)
        .with("text_bytes", segment.text.len())
        .with("published", published);
    effects.log(l.into_value());
    Ok(Accepted {
        meeting,
        source: segment.source,
        is_final: segment.is_final,
        offset,
    })
}

/// Logs `line` with the rejection's reason (and the path's meeting, on HTTP).
fn rejected(
    effects: &mut impl Effects,
    line: Line,
    input: &Intake<'_>,
    rejection: Rejection,
) -> IntakeError {
    let mut line = line.with("reason", rejection.to_string());
    if let Some(path) = input.path_meeting {
        line = line.with("path_meeting_id", path.as_str());
    }
    effects.log(line.into_value());
    IntakeError::Rejected(rejection)
}

/// Logs `line` with the backend failure's detail.
fn failed(effects: &mut impl Effects, line: Line, e: EffectError) -> IntakeError {
    effects.log(line.with("detail", e.0.clone()).into_value());
    IntakeError::Unavailable(e.0)
}

/// Whether the meeting has a presence record (an ingest connection connected) or a state
/// record (a transcript was stored).
fn known(effects: &mut impl Effects, meeting: &MeetingId) -> Result<bool, EffectError> {
    let has_presence = effects.kv_get(&presence_key(meeting))?.is_some();
    let has_state = has_presence || effects.kv_get(&meeting_state_key(meeting))?.is_some();
    Ok(is_known_meeting(has_presence, has_state))
}

/// Appends a final segment to the meeting's transcript stream; its offset.
fn store(
    settings: &IntakeSettings,
    effects: &mut impl Effects,
    meeting: &MeetingId,
    segment: &Segment,
) -> Result<String, EffectError> {
    if !settings.has_redis() {
        return Err(EffectError(
            "redis_url is not set: final segments cannot be stored".into(),
        ));
    }
    let offset = effects.redis_xadd(
        &transcript_stream_key(meeting),
        TRANSCRIPT_STREAM_MAXLEN,
        SEGMENT_FIELD,
        segment.to_json().as_bytes(),
        settings.transcript_retention_s,
    )?;
    if valid_offset(&offset) {
        Ok(offset)
    } else {
        Err(EffectError(format!("redis XADD: unexpected id {offset:?}")))
    }
}

/// The start of every segment line.
fn base_line(
    input: &Intake<'_>,
    level: Level,
    msg: &str,
    meeting_id: Option<String>,
    source: Option<String>,
) -> Line {
    let mut line = Line::new(input.via.component(), level, msg)
        .with("meeting_id", meeting_id)
        .with("source", source)
        .with("via", input.via.as_str());
    if let Some(sub) = input.sub {
        line = line.with("sub", sub);
    }
    line
}

/// The `meeting_id` and `source` a refused payload claims, when it is a JSON object of
/// bounded size, clipped so a hostile value cannot bloat the log.
fn claimed(payload: &[u8]) -> (Option<String>, Option<String>) {
    if payload.len() > MAX_SEGMENT_BYTES {
        return (None, None);
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(payload) else {
        return (None, None);
    };
    let text = |key: &str, max: usize| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(max).collect::<String>())
    };
    (
        text("meeting_id", MAX_MEETING_ID_LEN),
        text("source", MAX_LOGGED_SOURCE_CHARS),
    )
}

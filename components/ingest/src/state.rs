//! What an ingest connection remembers between requests (its `Meta-*` fields beyond the
//! shared ones): the audio session, what was appended and acknowledged, when the client was
//! last heard, and the talk-time detector.

use earshot_vad::Vad;
use earshot_ws_session::meta::{Fields, MetaError, StateFields};

/// Field names (after the `Meta-` prefix).
pub(crate) mod field {
    /// The audio session id, once the handshake is acknowledged.
    pub(crate) const SESSION: &str = "session";
    /// Frames durably appended.
    pub(crate) const FRAMES: &str = "frames";
    /// Bytes durably appended.
    pub(crate) const BYTES: &str = "bytes";
    /// `frames` as of the last ack sent.
    pub(crate) const ACKED_FRAMES: &str = "acked-frames";
    /// When the last ack went out, unix milliseconds (0: never).
    pub(crate) const LAST_ACK_MS: &str = "last-ack-ms";
    /// Last handshake, keepalive or frame, unix milliseconds.
    pub(crate) const LAST_ACTIVITY_MS: &str = "last-activity-ms";
    /// The detector's PCM format, `<sample_rate>/<channels>`.
    pub(crate) const VAD_FORMAT: &str = "vad-format";
    /// The detector's state (`earshot_vad::Vad::to_state_string`).
    pub(crate) const VAD: &str = "vad";
    /// The session's first analysed sample, unix milliseconds: stream time 0.
    pub(crate) const AUDIO_START_MS: &str = "audio-start-ms";
    /// When this connection next stands for electing the periodic stats emitter, unix
    /// milliseconds.
    pub(crate) const STATS_DUE_MS: &str = "stats-due-ms";
}

/// An ingest connection's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamState {
    /// The audio session id, once the handshake is acknowledged.
    pub(crate) session_id: Option<String>,
    /// Frames durably appended.
    pub(crate) frames: u64,
    /// Bytes durably appended.
    pub(crate) bytes: u64,
    /// `frames` as of the last ack sent.
    pub(crate) acked_frames: u64,
    /// When the last ack went out, unix milliseconds (0: never).
    pub(crate) last_ack_ms: u64,
    /// Last handshake, keepalive or frame (at first: the OPEN), unix milliseconds.
    pub(crate) last_activity_ms: u64,
    /// The voice-activity detector, once a handshake named a format it takes.
    pub(crate) vad: Option<Vad>,
    /// Unix milliseconds of the session's first analysed sample.
    pub(crate) audio_start_ms: Option<u64>,
    /// When this connection next stands for the periodic stats, unix milliseconds.
    pub(crate) stats_due_ms: Option<u64>,
}

impl StateFields for StreamState {
    fn opened(now_ms: u64) -> StreamState {
        StreamState {
            session_id: None,
            frames: 0,
            bytes: 0,
            acked_frames: 0,
            last_ack_ms: 0,
            last_activity_ms: now_ms,
            vad: None,
            audio_start_ms: None,
            stats_due_ms: None,
        }
    }

    fn write(&self, out: &mut Vec<(&'static str, String)>) {
        if let Some(session) = &self.session_id {
            out.push((field::SESSION, session.clone()));
        }
        let numbers = [
            (field::FRAMES, self.frames),
            (field::BYTES, self.bytes),
            (field::ACKED_FRAMES, self.acked_frames),
            (field::LAST_ACK_MS, self.last_ack_ms),
            (field::LAST_ACTIVITY_MS, self.last_activity_ms),
        ];
        out.extend(numbers.iter().map(|(name, n)| (*name, n.to_string())));
        if let Some(vad) = &self.vad {
            let format = format!("{}/{}", vad.sample_rate(), vad.channels());
            out.push((field::VAD_FORMAT, format));
            out.push((field::VAD, vad.to_state_string()));
        }
        let optional = [
            (field::AUDIO_START_MS, self.audio_start_ms),
            (field::STATS_DUE_MS, self.stats_due_ms),
        ];
        for (name, value) in optional {
            if let Some(n) = value {
                out.push((name, n.to_string()));
            }
        }
    }

    fn read(fields: &Fields<'_>) -> Result<StreamState, MetaError> {
        let vad = match (fields.get(field::VAD_FORMAT)?, fields.get(field::VAD)?) {
            (None, None) => None,
            (Some(format), Some(state)) => Some(parse_vad(&format, &state)?),
            (Some(_), None) => return Err(MetaError::Missing(field::VAD)),
            (None, Some(_)) => return Err(MetaError::Missing(field::VAD_FORMAT)),
        };
        Ok(StreamState {
            session_id: fields.get(field::SESSION)?,
            frames: fields.number(field::FRAMES)?,
            bytes: fields.number(field::BYTES)?,
            acked_frames: fields.number(field::ACKED_FRAMES)?,
            last_ack_ms: fields.number(field::LAST_ACK_MS)?,
            last_activity_ms: fields.number(field::LAST_ACTIVITY_MS)?,
            vad,
            audio_start_ms: fields.optional_number(field::AUDIO_START_MS)?,
            stats_due_ms: fields.optional_number(field::STATS_DUE_MS)?,
        })
    }
}

/// Restores the detector from its format (`<rate>/<channels>`) and state string.
fn parse_vad(format: &str, state: &str) -> Result<Vad, MetaError> {
    let (rate, channels) = format
        .split_once('/')
        .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)))
        .ok_or(MetaError::Invalid(field::VAD_FORMAT))?;
    Vad::from_state_string(state, rate, channels).map_err(|_| MetaError::Invalid(field::VAD))
}

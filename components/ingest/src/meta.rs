//! A connection's state between requests. Components are stateless per request, so the state
//! rides on the connection itself: every reply sets `Set-Meta-<name>` headers and the relay
//! sends them back as `Meta-<name>` on the connection's next request (WebSocket-over-HTTP),
//! stripping any `Meta-*` a client sent. Values are visible ASCII: anything else (and `%`) is
//! percent-encoded.

use earshot_protocol::Source;
use earshot_vad::Vad;

/// Prefix of the request headers carrying state.
pub(crate) const REQUEST_PREFIX: &str = "meta-";
/// Prefix of the response headers setting state.
pub(crate) const RESPONSE_PREFIX: &str = "set-meta-";

/// Field names (after the prefix).
pub(crate) mod field {
    /// [`super::Phase`].
    pub(crate) const STATE: &str = "state";
    /// Meeting id the connection was accepted for.
    pub(crate) const MEETING: &str = "meeting";
    /// Ingest source (`mic`/`sys`); absent on subscriber routes.
    pub(crate) const SOURCE: &str = "source";
    /// The token's subject, for the log.
    pub(crate) const SUB: &str = "sub";
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
    /// When the connection was accepted, unix milliseconds.
    pub(crate) const OPENED_MS: &str = "opened-ms";
    /// Subscriber routes: what the next request owes the client before the channel's
    /// hold is released ([`super::Followup`]): `replay:<offset>`, `snapshot`, or `none`.
    pub(crate) const FOLLOWUP: &str = "followup";
    /// Ingest: the detector's PCM format, `<sample_rate>/<channels>`.
    pub(crate) const VAD_FORMAT: &str = "vad-format";
    /// Ingest: the detector's state (`earshot_vad::Vad::to_state_string`).
    pub(crate) const VAD: &str = "vad";
    /// Ingest: the session's first analysed sample, unix milliseconds: stream time 0.
    pub(crate) const AUDIO_START_MS: &str = "audio-start-ms";
    /// Ingest: when this connection next stands for electing the periodic stats emitter,
    /// unix milliseconds.
    pub(crate) const STATS_DUE_MS: &str = "stats-due-ms";
}

/// [`field::FOLLOWUP`] when nothing is owed. A field that goes from set to unset is sent
/// with a value rather than dropped, because the relay keeps the last value it was given
/// and proxies differ on whether an empty `Set-Meta-*` clears one.
const FOLLOWUP_NONE: &str = "none";
/// [`field::FOLLOWUP`] while the meeting snapshot is owed.
const FOLLOWUP_SNAPSHOT: &str = "snapshot";
/// Prefix of [`field::FOLLOWUP`] while a transcript replay is owed; the offset follows.
const FOLLOWUP_REPLAY: &str = "replay:";

/// What a subscriber's next request must send before releasing the hold its OPEN reply
/// put on the channel (the relay calls again as soon as the subscription is effective).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Followup {
    /// The transcript segments after this offset.
    Replay(String),
    /// The meeting snapshot.
    Snapshot,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted; an ingest connection awaits its handshake, a subscriber is subscribed.
    Connected,
    /// Handshake acknowledged, no frame yet.
    HandshakeComplete,
    /// At least one frame appended.
    PcmStreaming,
    /// Closed (by either side) or refused; later requests change nothing.
    Closed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Connected => "connected",
            Phase::HandshakeComplete => "handshake_complete",
            Phase::PcmStreaming => "pcm_streaming",
            Phase::Closed => "closed",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Connected,
            Phase::HandshakeComplete,
            Phase::PcmStreaming,
            Phase::Closed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// Everything remembered about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) phase: Phase,
    pub(crate) meeting: String,
    pub(crate) source: Option<Source>,
    pub(crate) sub: String,
    pub(crate) session_id: Option<String>,
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    pub(crate) acked_frames: u64,
    pub(crate) last_ack_ms: u64,
    pub(crate) last_activity_ms: u64,
    pub(crate) opened_ms: u64,
    /// Subscriber routes: what the next request owes the client.
    pub(crate) followup: Option<Followup>,
    /// Ingest: the voice-activity detector, once a handshake named a format it takes.
    pub(crate) vad: Option<Vad>,
    /// Ingest: unix milliseconds of the session's first analysed sample.
    pub(crate) audio_start_ms: Option<u64>,
    /// Ingest: when this connection next stands for the periodic stats, unix milliseconds.
    pub(crate) stats_due_ms: Option<u64>,
}

/// Why the state on a request cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MetaError {
    /// A field the state needs is absent.
    #[error("missing meta field {0}")]
    Missing(&'static str),
    /// A field does not parse.
    #[error("invalid meta field {0}")]
    Invalid(&'static str),
}

impl Meta {
    /// A freshly accepted connection at `now_ms`.
    pub(crate) fn opened(meeting: &str, source: Option<Source>, sub: &str, now_ms: u64) -> Meta {
        Meta {
            phase: Phase::Connected,
            meeting: meeting.to_owned(),
            source,
            sub: sub.to_owned(),
            session_id: None,
            frames: 0,
            bytes: 0,
            acked_frames: 0,
            last_ack_ms: 0,
            last_activity_ms: now_ms,
            opened_ms: now_ms,
            followup: None,
            vad: None,
            audio_start_ms: None,
            stats_due_ms: None,
        }
    }

    /// The `Set-Meta-*` response headers carrying this state (all of it, every time, so a
    /// reply never depends on what an earlier one set).
    pub(crate) fn to_headers(&self) -> Vec<(String, String)> {
        let numbers = [
            (field::FRAMES, self.frames),
            (field::BYTES, self.bytes),
            (field::ACKED_FRAMES, self.acked_frames),
            (field::LAST_ACK_MS, self.last_ack_ms),
            (field::LAST_ACTIVITY_MS, self.last_activity_ms),
            (field::OPENED_MS, self.opened_ms),
        ];
        let mut fields: Vec<(&str, String)> = vec![
            (field::STATE, self.phase.as_str().to_owned()),
            (field::MEETING, self.meeting.clone()),
            (field::SUB, self.sub.clone()),
        ];
        if let Some(source) = self.source {
            fields.push((field::SOURCE, source.as_str().to_owned()));
        }
        if let Some(session) = &self.session_id {
            fields.push((field::SESSION, session.clone()));
        }
        fields.extend(numbers.iter().map(|(name, n)| (*name, n.to_string())));
        if self.source.is_none() {
            let followup = match &self.followup {
                None => FOLLOWUP_NONE.to_owned(),
                Some(Followup::Snapshot) => FOLLOWUP_SNAPSHOT.to_owned(),
                Some(Followup::Replay(offset)) => format!("{FOLLOWUP_REPLAY}{offset}"),
            };
            fields.push((field::FOLLOWUP, followup));
        }
        if let Some(vad) = &self.vad {
            let format = format!("{}/{}", vad.sample_rate(), vad.channels());
            fields.push((field::VAD_FORMAT, format));
            fields.push((field::VAD, vad.to_state_string()));
        }
        let optional = [
            (field::AUDIO_START_MS, self.audio_start_ms),
            (field::STATS_DUE_MS, self.stats_due_ms),
        ];
        for (name, value) in optional {
            if let Some(n) = value {
                fields.push((name, n.to_string()));
            }
        }
        fields
            .into_iter()
            .map(|(name, value)| (format!("{RESPONSE_PREFIX}{name}"), encode(&value)))
            .collect()
    }

    /// Reads the state from a request's `Meta-*` headers (`header(name)` looks a header up
    /// case-insensitively). `Ok(None)`: the request carries no state (an OPEN).
    pub(crate) fn from_headers<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Meta>, MetaError> {
        let get = |name: &'static str| -> Result<Option<String>, MetaError> {
            match header(&format!("{REQUEST_PREFIX}{name}")) {
                None | Some("") => Ok(None),
                Some(v) => decode(v).map(Some).ok_or(MetaError::Invalid(name)),
            }
        };
        let Some(state) = get(field::STATE)? else {
            return Ok(None);
        };
        let phase = Phase::parse(&state).ok_or(MetaError::Invalid(field::STATE))?;
        let required = |name: &'static str| get(name)?.ok_or(MetaError::Missing(name));
        let number = |name: &'static str| -> Result<u64, MetaError> {
            required(name)?
                .parse()
                .map_err(|_| MetaError::Invalid(name))
        };
        let optional_number = |name: &'static str| -> Result<Option<u64>, MetaError> {
            get(name)?
                .map(|v| v.parse().map_err(|_| MetaError::Invalid(name)))
                .transpose()
        };
        let followup = match get(field::FOLLOWUP)?.as_deref() {
            None | Some(FOLLOWUP_NONE) => None,
            Some(FOLLOWUP_SNAPSHOT) => Some(Followup::Snapshot),
            Some(v) => match v.strip_prefix(FOLLOWUP_REPLAY) {
                Some(offset) if !offset.is_empty() => Some(Followup::Replay(offset.to_owned())),
                _ => return Err(MetaError::Invalid(field::FOLLOWUP)),
            },
        };
        let vad = match (get(field::VAD_FORMAT)?, get(field::VAD)?) {
            (None, None) => None,
            (Some(format), Some(state)) => Some(parse_vad(&format, &state)?),
            (Some(_), None) => return Err(MetaError::Missing(field::VAD)),
            (None, Some(_)) => return Err(MetaError::Missing(field::VAD_FORMAT)),
        };
        let source = match get(field::SOURCE)? {
            None => None,
            Some(s) => Some(Source::parse(&s).map_err(|_| MetaError::Invalid(field::SOURCE))?),
        };
        Ok(Some(Meta {
            phase,
            meeting: required(field::MEETING)?,
            source,
            sub: get(field::SUB)?.unwrap_or_default(),
            session_id: get(field::SESSION)?,
            frames: number(field::FRAMES)?,
            bytes: number(field::BYTES)?,
            acked_frames: number(field::ACKED_FRAMES)?,
            last_ack_ms: number(field::LAST_ACK_MS)?,
            last_activity_ms: number(field::LAST_ACTIVITY_MS)?,
            opened_ms: number(field::OPENED_MS)?,
            followup,
            vad,
            audio_start_ms: optional_number(field::AUDIO_START_MS)?,
            stats_due_ms: optional_number(field::STATS_DUE_MS)?,
        }))
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

/// Percent-encodes everything outside visible ASCII, and `%` itself.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode`]; `None` for a malformed escape or bytes that are not UTF-8.
pub(crate) fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

//! A connection's state between requests. Components are stateless per request, so the state
//! rides on the connection itself: every reply sets `Set-Meta-<name>` headers and the relay
//! sends them back as `Meta-<name>` on the connection's next request (WebSocket-over-HTTP),
//! stripping any `Meta-*` a client sent. Values are visible ASCII: anything else (and `%`) is
//! percent-encoded.

use earshot_protocol::Source;

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
        }))
    }
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

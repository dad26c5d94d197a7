//! Identifiers and routes (DESIGN.md): meeting ids, audio sources, the three WebSocket
//! routes, and the channel and stream names derived from them.

use std::fmt;

/// Longest meeting id, in bytes (DESIGN.md: 1–128 characters of `[A-Za-z0-9._-]`).
pub const MAX_MEETING_ID_LEN: usize = 128;

/// A validated meeting id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeetingId(String);

/// Why an id, source or route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty, too long, or outside `[A-Za-z0-9._-]`.
    #[error("invalid meeting id")]
    InvalidMeetingId,
    /// Not `mic`, `sys` or `system`.
    #[error("invalid source")]
    InvalidSource,
    /// The ingest route needs `?source=`.
    #[error("missing source")]
    MissingSource,
    /// A query parameter given twice.
    #[error("repeated parameter `{0}`")]
    RepeatedParameter(&'static str),
    /// Not one of the WebSocket routes.
    #[error("unknown route")]
    UnknownRoute,
}

impl MeetingId {
    /// Validates `s` against DESIGN.md's grammar. `.` and `..` alone are refused so an
    /// id can never name a path segment upward.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=MAX_MEETING_ID_LEN).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && s != "."
            && s != "..";
        if ok {
            Ok(MeetingId(s.to_owned()))
        } else {
            Err(IdError::InvalidMeetingId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeetingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An audio source of a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The microphone.
    Mic,
    /// System audio (alias `system`).
    #[serde(alias = "system")]
    Sys,
}

impl Source {
    /// Parses `mic`, `sys` or `system`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        match s {
            "mic" => Ok(Source::Mic),
            "sys" | "system" => Ok(Source::Sys),
            _ => Err(IdError::InvalidSource),
        }
    }

    /// The canonical name (`mic` or `sys`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mic => "mic",
            Source::Sys => "sys",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Path prefix of every WebSocket route.
pub const WS_PREFIX: &str = "/api/v1/ws/";

/// The `Sec-WebSocket-Protocol` value naming this protocol. A browser that carries its token
/// as `bearer.<token>` offers it alongside, so the server can select a protocol without
/// echoing the token back.
pub const SUBPROTOCOL: &str = "earshot.v1";

/// One of the three WebSocket routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsRoute {
    /// `/api/v1/ws/ingest/meetings/{id}?source=` — a capture agent's audio.
    Ingest {
        /// Meeting.
        meeting: MeetingId,
        /// Source.
        source: Source,
    },
    /// `/api/v1/ws/meetings/{id}` — meeting events.
    Meeting {
        /// Meeting.
        meeting: MeetingId,
    },
    /// `/api/v1/ws/transcript/{id}?since=` — transcript history then live.
    Transcript {
        /// Meeting.
        meeting: MeetingId,
        /// Resume after this offset.
        since: Option<String>,
    },
}

/// Every value of query parameter `name` (percent-decoded).
pub fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn single(query: Option<&str>, name: &'static str) -> Result<Option<String>, IdError> {
    let mut values = query_values(query, name);
    match values.len() {
        0 => Ok(None),
        1 => Ok(values.pop()),
        _ => Err(IdError::RepeatedParameter(name)),
    }
}

impl WsRoute {
    /// Parses a request path and query.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Self, IdError> {
        let rest = path.strip_prefix(WS_PREFIX).ok_or(IdError::UnknownRoute)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["ingest", "meetings", id] => {
                let meeting = MeetingId::parse(id)?;
                let source = single(query, "source")?.ok_or(IdError::MissingSource)?;
                Ok(WsRoute::Ingest { meeting, source: Source::parse(&source)? })
            }
            ["meetings", id] => Ok(WsRoute::Meeting { meeting: MeetingId::parse(id)? }),
            ["transcript", id] => Ok(WsRoute::Transcript { meeting: MeetingId::parse(id)?, since: single(query, "since")? }),
            _ => Err(IdError::UnknownRoute),
        }
    }

    /// The meeting the route is about.
    pub fn meeting(&self) -> &MeetingId {
        match self {
            WsRoute::Ingest { meeting, .. } | WsRoute::Meeting { meeting } | WsRoute::Transcript { meeting, .. } => meeting,
        }
    }
}

/// Channel of a meeting's events.
pub fn meeting_channel(meeting: &MeetingId) -> String {
    format!("meeting:{meeting}")
}

/// Channel of a meeting's live transcript.
pub fn transcript_channel(meeting: &MeetingId) -> String {
    format!("transcript:{meeting}")
}

/// Redis Stream holding a source's PCM frames.
pub fn audio_stream_key(meeting: &MeetingId, source: Source) -> String {
    format!("audio:{meeting}:{source}")
}

/// Field names of one entry of an audio stream (`XADD <audio_stream_key> … seq <n> bytes <len>
/// session <id> pcm <data>`), as transcription workers read them: `seq` counts the session's
/// frames from 1, `bytes` is the length of `pcm`, `session` the handshake's `session_id`.
pub const AUDIO_FIELD_SEQ: &str = "seq";
/// See [`AUDIO_FIELD_SEQ`].
pub const AUDIO_FIELD_BYTES: &str = "bytes";
/// See [`AUDIO_FIELD_SEQ`].
pub const AUDIO_FIELD_SESSION: &str = "session";
/// See [`AUDIO_FIELD_SEQ`].
pub const AUDIO_FIELD_PCM: &str = "pcm";

/// Key-value key of a meeting's presence record ([`crate::meeting::Presence`]).
pub fn presence_key(meeting: &MeetingId) -> String {
    format!("meeting:{meeting}:presence")
}

/// Key (Redis sorted set, or key-value entry without Redis) of the ingest rate limit's
/// sliding log for one (meeting, source).
pub fn ingest_rate_limit_key(meeting: &MeetingId, source: Source) -> String {
    format!("ratelimit:ingest:{meeting}:{source}")
}

/// Prefix of the Redis pub/sub channel that carries GRIP channel `c` between relays
/// (`earshot:grip:<c>`), so Earshot's traffic never collides with other Redis users.
pub const GRIP_REDIS_PREFIX: &str = "earshot:grip:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_ids_follow_the_grammar() {
        assert!(MeetingId::parse("m1").is_ok());
        assert!(MeetingId::parse("A.b_c-9").is_ok());
        assert!(MeetingId::parse(&"x".repeat(128)).is_ok());
        for bad in ["", "..", ".", "a/b", "a b", "é", "a%2e", &"x".repeat(129)] {
            assert_eq!(MeetingId::parse(bad), Err(IdError::InvalidMeetingId), "{bad:?}");
        }
    }

    #[test]
    fn routes_parse_with_their_parameters() {
        assert_eq!(
            WsRoute::parse("/api/v1/ws/ingest/meetings/m1", Some("source=system&token=x")).unwrap(),
            WsRoute::Ingest { meeting: MeetingId::parse("m1").unwrap(), source: Source::Sys }
        );
        assert_eq!(WsRoute::parse("/api/v1/ws/ingest/meetings/m1", None), Err(IdError::MissingSource));
        assert_eq!(WsRoute::parse("/api/v1/ws/ingest/meetings/m1", Some("source=spk")), Err(IdError::InvalidSource));
        assert_eq!(
            WsRoute::parse("/api/v1/ws/ingest/meetings/m1", Some("source=mic&source=sys")),
            Err(IdError::RepeatedParameter("source"))
        );
        assert_eq!(
            WsRoute::parse("/api/v1/ws/transcript/m1", Some("since=1-0")).unwrap(),
            WsRoute::Transcript { meeting: MeetingId::parse("m1").unwrap(), since: Some("1-0".into()) }
        );
        assert!(matches!(WsRoute::parse("/api/v1/ws/meetings/m1", None), Ok(WsRoute::Meeting { .. })));
        assert_eq!(WsRoute::parse("/api/v1/ws/meetings/m1/x", None), Err(IdError::UnknownRoute));
        assert_eq!(WsRoute::parse("/api/v1/ws/meetings/..", None), Err(IdError::InvalidMeetingId));
    }

    #[test]
    fn derived_names() {
        let m = MeetingId::parse("m1").unwrap();
        assert_eq!(presence_key(&m), "meeting:m1:presence");
        assert_eq!(ingest_rate_limit_key(&m, Source::Sys), "ratelimit:ingest:m1:sys");
        assert_eq!(audio_stream_key(&m, Source::Mic), "audio:m1:mic");
    }
}

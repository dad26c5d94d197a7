//! How the ingest component tells transcription workers about audio sessions, and the
//! Redis keys the workers coordinate through (DESIGN.md "Transcription worker").
//!
//! At a capture stream's handshake the ingest component adds `{meeting}:{source}` to the
//! set [`ACTIVE_STREAMS_KEY`], the session id to the stream's set of open sessions
//! ([`open_sessions_key`]) and appends an `open` event to [`SESSIONS_STREAM_KEY`]; at the
//! stream's end it removes the session from the open set and appends a `close` event. A
//! worker blocks on the events stream for new sessions and reads the active set to pick up
//! streams whose worker died. Only the worker that drained a stream whose open set is empty
//! removes it from the active set, so a stream is never forgotten while audio is unread.

use crate::ids::{MeetingId, Source};

/// Redis set of `{meeting}:{source}` streams with an open session or unread audio.
pub const ACTIVE_STREAMS_KEY: &str = "earshot:asr:active";

/// Redis Stream of session events (`meeting`, `source`, `session`, `event` fields).
pub const SESSIONS_STREAM_KEY: &str = "earshot:asr:sessions";

/// Entries kept in [`SESSIONS_STREAM_KEY`] (`XADD … MAXLEN ~`): workers read events within
/// a block timeout of their arrival, so the stream only needs to bridge a worker's restart;
/// 10,000 events are hours of meetings starting and ending and a few hundred KiB.
pub const SESSIONS_STREAM_MAXLEN: u64 = 10_000;

/// Field of a session event: the meeting id.
pub const EVENT_FIELD_MEETING: &str = "meeting";
/// Field of a session event: the source (`mic` or `sys`).
pub const EVENT_FIELD_SOURCE: &str = "source";
/// Field of a session event: the ingest session id (the handshake's `session_id`).
pub const EVENT_FIELD_SESSION: &str = "session";
/// Field of a session event: [`EVENT_OPEN`] or [`EVENT_CLOSE`].
pub const EVENT_FIELD_EVENT: &str = "event";
/// A session's handshake completed: audio follows.
pub const EVENT_OPEN: &str = "open";
/// A session ended (close_stream, idle, disconnect, error): no more audio from it.
pub const EVENT_CLOSE: &str = "close";

/// One announcement as one atomic step. `KEYS[1]`: the active-streams set, `KEYS[2]`: the
/// stream's open-sessions set, `KEYS[3]`: the session events stream; `ARGV`: member,
/// session id, event (`open`|`close`), events MAXLEN, meeting, source. Atomic so a worker
/// never sees an `open` event for a session that is not yet in the open set, nor a stream
/// whose last session closed while the close event is still missing. Returns the event id.
pub const ANNOUNCE_SCRIPT: &str = r#"
if ARGV[3] == 'open' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[2], ARGV[2])
end
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
  'meeting', ARGV[5], 'source', ARGV[6], 'session', ARGV[2], 'event', ARGV[3])
"#;

/// `KEYS` of [`ANNOUNCE_SCRIPT`] for a session of `(meeting, source)`.
pub fn announce_keys(meeting: &MeetingId, source: Source) -> [String; 3] {
    [
        ACTIVE_STREAMS_KEY.to_owned(),
        open_sessions_key(meeting, source),
        SESSIONS_STREAM_KEY.to_owned(),
    ]
}

/// `ARGV` of [`ANNOUNCE_SCRIPT`]: session `session` of `(meeting, source)` had `event`
/// ([`EVENT_OPEN`] or [`EVENT_CLOSE`]).
pub fn announce_args(
    meeting: &MeetingId,
    source: Source,
    session: &str,
    event: &str,
) -> [String; 6] {
    [
        active_member(meeting, source),
        session.to_owned(),
        event.to_owned(),
        SESSIONS_STREAM_MAXLEN.to_string(),
        meeting.to_string(),
        source.as_str().to_owned(),
    ]
}

/// The member of [`ACTIVE_STREAMS_KEY`] naming one audio stream.
pub fn active_member(meeting: &MeetingId, source: Source) -> String {
    format!("{meeting}:{source}")
}

/// Parses an [`active_member`] back (meeting ids never contain `:`).
pub fn parse_active_member(member: &str) -> Option<(MeetingId, Source)> {
    let (meeting, source) = member.rsplit_once(':')?;
    Some((MeetingId::parse(meeting).ok()?, Source::parse(source).ok()?))
}

/// Redis set of a stream's open ingest session ids: empty once every session ended.
pub fn open_sessions_key(meeting: &MeetingId, source: Source) -> String {
    format!("earshot:asr:open:{meeting}:{source}")
}

/// Redis key of a stream's lease: the id of the one worker transcribing it, with an expiry.
pub fn lease_key(meeting: &MeetingId, source: Source) -> String {
    format!("asr:lease:{meeting}:{source}")
}

/// Redis hash of a stream's committed transcription position (`id`, `bytes`, `ms`,
/// `final_end_ms`): where a worker resumes and which finals were already published.
pub fn position_key(meeting: &MeetingId, source: Source) -> String {
    format!("asr:position:{meeting}:{source}")
}

/// Speaker label of segments transcribed from the microphone: the capture agent's own user.
pub const SPEAKER_USER: &str = "user";
/// Speaker label of segments transcribed from system audio: everyone else in the meeting.
pub const SPEAKER_OTHERS: &str = "others";

/// The `speaker` a transcription worker puts on a source's segments (one speaker per
/// source: the worker does not diarise).
pub fn speaker_label(source: Source) -> &'static str {
    match source {
        Source::Mic => SPEAKER_USER,
        Source::Sys => SPEAKER_OTHERS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_members_round_trip() {
        let m = MeetingId::parse("team.sync-1").unwrap();
        let member = active_member(&m, Source::Sys);
        assert_eq!(member, "team.sync-1:sys");
        assert_eq!(parse_active_member(&member), Some((m, Source::Sys)));
        assert_eq!(parse_active_member("nocolon"), None);
        assert_eq!(parse_active_member("m1:speaker"), None);
        assert_eq!(parse_active_member("a b:mic"), None);
    }

    #[test]
    fn each_source_has_its_speaker() {
        assert_eq!(speaker_label(Source::Mic), "user");
        assert_eq!(speaker_label(Source::Sys), "others");
    }
}

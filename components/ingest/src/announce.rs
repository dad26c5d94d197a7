//! The session announcement to the transcription workers (`earshot_protocol::asr`): at the
//! handshake a capture stream becomes active and its session open; at the stream's end the
//! session closes. Workers block on the events instead of polling audio keys. The script
//! (`earshot_protocol::asr::ANNOUNCE_SCRIPT`) lives in the protocol crate so the workers'
//! tests run the very same one against a real Redis.

use earshot_protocol::asr::{announce_args, announce_keys, EVENT_CLOSE, EVENT_OPEN};
use earshot_protocol::{MeetingId, Source};

use crate::effects::{EffectError, IngestEffects};

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEvent {
    /// The handshake completed: audio follows.
    Open,
    /// The stream ended, whatever the reason.
    Close,
}

impl SessionEvent {
    /// The event's name on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionEvent::Open => EVENT_OPEN,
            SessionEvent::Close => EVENT_CLOSE,
        }
    }
}

/// One announcement: a session of `(meeting, source)` opened or closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcement<'a> {
    /// The meeting.
    pub(crate) meeting: &'a MeetingId,
    /// The source.
    pub(crate) source: Source,
    /// The ingest session id (the handshake's `session_id`).
    pub(crate) session: &'a str,
    /// Open or close.
    pub(crate) event: SessionEvent,
}

impl Announcement<'_> {
    /// The script's keys, in `KEYS` order.
    pub(crate) fn keys(&self) -> [String; 3] {
        announce_keys(self.meeting, self.source)
    }

    /// The script's arguments, in `ARGV` order.
    pub(crate) fn args(&self) -> [String; 6] {
        announce_args(self.meeting, self.source, self.session, self.event.as_str())
    }
}

/// Announces `announcement` through the host's Redis.
pub(crate) fn announce<E: IngestEffects>(
    effects: &mut E,
    announcement: &Announcement<'_>,
) -> Result<(), EffectError> {
    effects.redis_announce(announcement)
}

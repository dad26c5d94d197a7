//! The meeting's life in Redis (`earshot_protocol::meeting_end`): each accepted connection
//! joins the meeting's live set (cancelling a pending end) and leaves it at cleanup (the
//! last one out schedules the end a grace period later, for the native sweepers to claim);
//! speech time adds to the meeting's totals; audio streams expire a retention period after
//! their last write. Advisory like presence: a failure is logged and never ends the stream,
//! though a lost leave means the meeting only ends by `POST …/end`.

use earshot_protocol::ids::audio_stream_key;
use earshot_protocol::meeting_end::{expire_call, join_call, leave_call, talk_call, ScriptCall};
use earshot_protocol::{MeetingId, Source};
use earshot_ws_session::log::{Level, LogContext};

use crate::effects::IngestEffects;
use crate::settings::Settings;

/// `connection_id` of `meeting` was accepted at `now_ms`.
pub(crate) fn joined(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    log: &LogContext,
    meeting: &MeetingId,
    connection_id: &str,
    now_ms: u64,
) {
    run(settings, effects, log, "meeting join failed", join_call(meeting, connection_id, now_ms));
}

/// `connection_id` of `source` ended at `now_ms`.
pub(crate) fn left(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    log: &LogContext,
    meeting: &MeetingId,
    source: Source,
    connection_id: &str,
    now_ms: u64,
) {
    let call = leave_call(
        meeting,
        source,
        connection_id,
        now_ms,
        settings.meeting_end_grace_ms,
        settings.audio_retention_ms,
    );
    run(settings, effects, log, "meeting leave failed", call);
}

/// `source` spoke `duration_ms` (a finished speech segment).
pub(crate) fn talked(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    log: &LogContext,
    meeting: &MeetingId,
    source: Source,
    duration_ms: u64,
) {
    let call = talk_call(meeting, source, duration_ms);
    run(settings, effects, log, "meeting talk total failed", call);
}

/// A session's first frame created (or extended) the audio stream: from now on it expires.
pub(crate) fn audio_written(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    log: &LogContext,
    meeting: &MeetingId,
    source: Source,
) {
    let call = expire_call(audio_stream_key(meeting, source), settings.audio_retention_ms);
    run(settings, effects, log, "audio expiry failed", call);
}

fn run(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    log: &LogContext,
    what: &str,
    call: ScriptCall,
) {
    // Without Redis there is no audio and no sweeper: meetings never end by themselves.
    if !settings.has_redis() {
        return;
    }
    if let Err(e) = effects.redis_script(&call) {
        let line = log.line(Level::Error, what).with("detail", e.0);
        effects.log(line.into_value());
    }
}

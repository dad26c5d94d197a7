//! Who is streaming which source of a meeting: the presence record in the key-value store
//! (`meeting:{id}:presence`, [`earshot_protocol::meeting::Presence`]) plus a
//! [`MeetingEvent`] on the meeting's channel for every change. Presence is advisory: a store
//! failure is logged and never ends the audio stream.

use earshot_protocol::ids::{meeting_channel, presence_key};
use earshot_protocol::meeting::{MeetingEvent, Presence, PresenceEntry};
use earshot_protocol::{MeetingId, Source};

use crate::effects::IngestEffects;
use crate::publish::publish;
use crate::settings::Settings;
use earshot_ws_session::log::{Level, LogContext};

/// One change to a meeting's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    /// `connection_id` now streams `source`, replacing whoever did.
    Connected {
        source: Source,
        connection_id: &'a str,
        since_ms: u64,
    },
    /// `connection_id` stopped streaming `source`.
    Disconnected {
        source: Source,
        connection_id: &'a str,
    },
}

/// The presence record after `change`, or `None` when it stays as it is. A disconnect only
/// removes the entry if it is still this connection's: a reconnect of the same source may
/// already have replaced it. An unreadable record is replaced.
pub(crate) fn apply(current: Option<&[u8]>, change: &Change<'_>) -> Option<Vec<u8>> {
    let mut presence: Presence = current
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    match change {
        Change::Connected {
            source,
            connection_id,
            since_ms,
        } => {
            presence.insert(
                *source,
                PresenceEntry {
                    connection_id: (*connection_id).to_owned(),
                    since_ms: *since_ms,
                },
            );
        }
        Change::Disconnected {
            source,
            connection_id,
        } => match presence.get(source) {
            Some(entry) if entry.connection_id == *connection_id => {
                presence.remove(source);
            }
            _ => return None,
        },
    }
    Some(serde_json::to_vec(&presence).expect("presence serializes"))
}

/// One ingest connection's stream: whose presence changes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stream<'a> {
    pub(crate) meeting: &'a MeetingId,
    pub(crate) source: Source,
    pub(crate) connection_id: &'a str,
}

/// Records that `stream` is live since `now_ms` and announces it on the meeting's channel.
pub(crate) fn connected(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    log: &LogContext,
    stream: Stream<'_>,
    now_ms: u64,
) {
    let Stream {
        meeting,
        source,
        connection_id,
    } = stream;
    record(
        effects,
        log,
        meeting,
        &Change::Connected {
            source,
            connection_id,
            since_ms: now_ms,
        },
    );
    let event = MeetingEvent::SourceConnected {
        meeting_id: meeting.to_string(),
        source,
        connection_id: connection_id.to_owned(),
        at_ms: now_ms,
    };
    publish(
        settings,
        effects,
        log,
        &meeting_channel(meeting),
        event.to_json(),
    );
}

/// Records that `stream` ended at `now_ms` and announces why.
pub(crate) fn disconnected(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    log: &LogContext,
    stream: Stream<'_>,
    now_ms: u64,
    reason: &str,
) {
    let Stream {
        meeting,
        source,
        connection_id,
    } = stream;
    record(
        effects,
        log,
        meeting,
        &Change::Disconnected {
            source,
            connection_id,
        },
    );
    let event = MeetingEvent::SourceDisconnected {
        meeting_id: meeting.to_string(),
        source,
        connection_id: connection_id.to_owned(),
        at_ms: now_ms,
        reason: reason.to_owned(),
    };
    publish(
        settings,
        effects,
        log,
        &meeting_channel(meeting),
        event.to_json(),
    );
}

fn record(
    effects: &mut impl IngestEffects,
    log: &LogContext,
    meeting: &MeetingId,
    change: &Change<'_>,
) {
    if let Err(e) = effects.kv_update(&presence_key(meeting), &mut |current| {
        apply(current, change)
    }) {
        let line = log
            .line(Level::Error, "presence update failed")
            .with("detail", e.0);
        effects.log(line.into_value());
    }
}

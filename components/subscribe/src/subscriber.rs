//! Subscriber routes: `/ws/meetings/{id}` (channel `meeting:{id}`) and `/ws/transcript/{id}`
//! (channel `transcript:{id}`). Accepting subscribes the connection through GRIP; from then
//! on the relay delivers the channel's messages itself and this component only hears from
//! the connection when the client speaks, which it must not (except keepalives).
//!
//! What a subscriber must see before anything live — the meeting snapshot, the transcript
//! history after `?since=` — is sent on a follow-up request behind the relay's hold: the OPEN
//! reply holds and subscribes the channel, the relay calls again once the subscription is
//! effective, and that reply sends what is owed, then releases the held live messages
//! (`history.rs` explains why that seam has no gap and, for the transcript, no duplicate).
//! A GRIP proxy without Earshot's hold extension (Pushpin, Fanout) ignores the hold and does
//! not call back at once: there the owed messages go out on the connection's next request
//! (the client's first keepalive), after any live message that came first.
//!
//! - Meetings: the snapshot (who streams now, since when; the last transcript offset; the
//!   talk statistics so far) is read after the subscription took effect, so no change is
//!   lost between them; a change racing the read can show both in the snapshot and as a
//!   live event — presence events are idempotent, so that is harmless.
//! - Transcript without `since`: live only, no hold, no Redis. With `since` (a stream
//!   offset; `0-0` for everything retained): the history after it, then live. Without a
//!   configured Redis there is no history (the transcripts component keeps it in Redis), so
//!   `since` is accepted and the connection is live only, with a warning in the log.

use earshot_protocol::close::{
    BAD_REQUEST_PREFIX, REASON_HISTORY_UNAVAILABLE, REASON_INVALID_SINCE,
    REASON_MEETING_STATE_UNAVAILABLE, REASON_SUBSCRIBER_BINARY, REASON_SUBSCRIBER_TEXT,
};
use earshot_protocol::grip::Control;
use earshot_protocol::ids::{meeting_channel, presence_key, transcript_channel};
use earshot_protocol::ingest::ClientMessage;
use earshot_protocol::meeting::{
    meeting_state_key, MeetingEvent, MeetingState, Presence, SourcePresence,
};
use earshot_protocol::transcript::transcript_stream_key;
use earshot_protocol::{CloseCode, Event, MeetingId, WsRoute};

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use earshot_ws_session::effects::EffectError;
use earshot_ws_session::log::{Level, State};
use earshot_ws_session::session::{Component, Scope, Session};
use earshot_ws_session::settings::{ConnSettings, TokenSettings};
use earshot_ws_session::talk;

use crate::effects::SubscribeEffects;
use crate::history::{self, MAX_REPLAY_SEGMENTS};
use crate::state::{Followup, SubscriberState};

/// The subscriber routes as a socket component, over host capabilities `E`.
pub(crate) struct Subscribe<E>(PhantomData<E>);

impl<E: SubscribeEffects> Component for Subscribe<E> {
    const NAME: &'static str = "subscribe";
    const SCOPE: Scope = Scope::Subscribe;
    type Settings = ConnSettings;
    type Effects = E;
    type State = SubscriberState;

    fn token_settings(settings: &ConnSettings) -> &TokenSettings {
        &settings.token
    }

    fn serves(route: &WsRoute) -> bool {
        matches!(route, WsRoute::Meeting { .. } | WsRoute::Transcript { .. })
    }

    fn open(s: &mut Session<'_, Self>, sub: &str) {
        Subscriber(s).open(sub);
    }

    /// What a subscriber is owed goes out before its events are looked at, unless the
    /// client is already gone.
    fn resumed(s: &mut Session<'_, Self>, ending: bool) {
        if !ending {
            Subscriber(s).followup();
        }
    }

    fn text(s: &mut Session<'_, Self>, text: &str) {
        Subscriber(s).text(text);
    }

    fn binary(s: &mut Session<'_, Self>, _data: &[u8]) {
        Subscriber(s).binary();
    }
}

/// One request of a subscriber connection: the shared session, seen from this route.
struct Subscriber<'s, 'a, E: SubscribeEffects>(&'s mut Session<'a, Subscribe<E>>);

impl<'a, E: SubscribeEffects> Deref for Subscriber<'_, 'a, E> {
    type Target = Session<'a, Subscribe<E>>;

    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl<E: SubscribeEffects> DerefMut for Subscriber<'_, '_, E> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
    }
}

impl<E: SubscribeEffects> Subscriber<'_, '_, E> {
    /// An authenticated OPEN: accept and subscribe to the route's channel, holding it when
    /// something is owed first.
    fn open(&mut self, sub: &str) {
        let (channel, followup) = match self.route {
            WsRoute::Meeting { meeting } => (meeting_channel(meeting), Some(Followup::Snapshot)),
            WsRoute::Transcript { meeting, since } => {
                let followup = match since {
                    Some(since) if !history::valid_since(since, self.now_ms) => {
                        let reason = format!("{BAD_REQUEST_PREFIX}{REASON_INVALID_SINCE}");
                        return self.refuse(CloseCode::ProtocolError, &reason, None);
                    }
                    Some(_) if !self.settings.has_redis() => {
                        let line = self.log.line(
                            Level::Warn,
                            "no transcript history without redis: live only",
                        );
                        self.emit(line);
                        None
                    }
                    Some(since) => Some(Followup::Replay(since.clone())),
                    None => None,
                };
                (transcript_channel(meeting), followup)
            }
            WsRoute::Ingest { .. } => unreachable!("the shell routes only subscriber routes here"),
        };
        self.accept(sub);
        if followup.is_some() {
            self.out.push(Event::Text(
                Control::Hold {
                    channel: channel.clone(),
                }
                .to_text(),
            ));
        }
        self.out.push(Event::Text(
            Control::Subscribe {
                channel: channel.clone(),
            }
            .to_text(),
        ));
        self.state().ext.followup = followup;
        let line = self
            .log
            .transition(State::Connected, "connected")
            .with("channel", channel);
        self.emit(line);
    }

    /// Sends what the connection is owed (snapshot or history) and releases the hold, on the
    /// first request after the OPEN.
    fn followup(&mut self) {
        let Some(followup) = self.state().ext.followup.take() else {
            return;
        };
        match (followup, self.route) {
            (Followup::Snapshot, WsRoute::Meeting { meeting }) => self.send_snapshot(meeting),
            (Followup::Replay(since), WsRoute::Transcript { meeting, .. }) => {
                self.replay(meeting, &since)
            }
            // The state names another route's follow-up: nothing sensible to send, and the
            // hold must not stay.
            (_, route) => {
                let channel = match route {
                    WsRoute::Meeting { meeting } => meeting_channel(meeting),
                    WsRoute::Transcript { meeting, .. } => transcript_channel(meeting),
                    WsRoute::Ingest { .. } => return,
                };
                self.out.push(Event::Text(
                    Control::Release {
                        channel,
                        after: None,
                    }
                    .to_text(),
                ));
            }
        }
    }

    /// The meeting snapshot, then everything held.
    fn send_snapshot(&mut self, meeting: &MeetingId) {
        let snapshot = match self.snapshot(meeting) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                let line = self
                    .log
                    .line(Level::Error, "meeting state unreadable")
                    .with("detail", e.0);
                self.emit(line);
                return self.close(CloseCode::InternalError, REASON_MEETING_STATE_UNAVAILABLE);
            }
        };
        self.out.push(Event::Text(snapshot.to_json()));
        self.out.push(Event::Text(
            Control::Release {
                channel: meeting_channel(meeting),
                after: None,
            }
            .to_text(),
        ));
    }

    /// Reads the snapshot from the presence record, the meeting state and the talk record.
    /// Unreadable records count as absent; an unreachable store is an error (an empty
    /// snapshot would be a lie).
    fn snapshot(&mut self, meeting: &MeetingId) -> Result<MeetingEvent, EffectError> {
        let presence: Presence = self
            .effects
            .kv_get(&presence_key(meeting))?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let state: MeetingState = self
            .effects
            .kv_get(&meeting_state_key(meeting))?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let record = talk::read(self.effects.kv_get(&talk::talk_key(meeting))?.as_deref());
        Ok(MeetingEvent::Snapshot {
            meeting_id: meeting.to_string(),
            sources: presence
                .into_iter()
                .map(|(source, entry)| SourcePresence {
                    source,
                    connection_id: entry.connection_id,
                    since_ms: entry.since_ms,
                })
                .collect(),
            last_transcript_offset: state.last_transcript_offset,
            talk: record.map(|r| talk::summary(&r, self.now_ms, 0)),
        })
    }

    /// The transcript segments after `since`, oldest first, then the release of everything
    /// held that is newer than the last one sent.
    fn replay(&mut self, meeting: &MeetingId, since: &str) {
        let history = match self.effects.redis_history(
            &transcript_stream_key(meeting),
            since,
            MAX_REPLAY_SEGMENTS + 1,
        ) {
            Ok(history) => history,
            Err(e) => {
                let line = self
                    .log
                    .line(Level::Error, "transcript history unreadable")
                    .with("detail", e.0);
                self.emit(line);
                return self.close(CloseCode::InternalError, REASON_HISTORY_UNAVAILABLE);
            }
        };
        let replay = history::plan(since, history, MAX_REPLAY_SEGMENTS);
        if !replay.unreadable.is_empty() {
            let line = self
                .log
                .line(Level::Warn, "unreadable transcript entries skipped")
                .with("offsets", replay.unreadable.clone());
            self.emit(line);
        }
        let line = self
            .log
            .line(Level::Info, "transcript history replayed")
            .with("since", since)
            .with("messages", replay.messages.len())
            .with("after", replay.after.as_str());
        self.emit(line);
        for message in replay.messages {
            self.out.push(Event::Text(message.to_json()));
        }
        self.out.push(Event::Text(
            Control::Release {
                channel: transcript_channel(meeting),
                after: Some(replay.after),
            }
            .to_text(),
        ));
    }

    /// A text message: `{"type":"keepalive"}` is fine, anything else closes 1003.
    fn text(&mut self, text: &str) {
        if ClientMessage::parse(text) != Ok(ClientMessage::Keepalive) {
            self.close(CloseCode::Unsupported, REASON_SUBSCRIBER_TEXT);
        }
    }

    /// A binary message: closes 1003.
    fn binary(&mut self) {
        self.close(CloseCode::Unsupported, REASON_SUBSCRIBER_BINARY);
    }
}

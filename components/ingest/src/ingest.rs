//! The ingest route (DESIGN.md "Ingest protocol"): rate limit and presence at OPEN, then
//! handshake → PCM frames appended to the source's Redis Stream (and analysed for talk
//! time, `analytics.rs`) → acks → `close_stream`, with the handshake and idle timeouts run
//! on the relay's keep-alive requests.

use earshot_protocol::close::{
    REASON_AUDIO_STORE_UNAVAILABLE, REASON_BINARY_BEFORE_HANDSHAKE, REASON_DUPLICATE_HANDSHAKE,
    REASON_HANDSHAKE_TIMEOUT, REASON_IDLE, REASON_RATE_LIMITED, REASON_RATE_LIMITER_UNAVAILABLE,
    REASON_STREAM_CLOSED, REASON_TOO_BIG,
};
use earshot_protocol::ids::{
    audio_stream_key, AUDIO_FIELD_BYTES, AUDIO_FIELD_PCM, AUDIO_FIELD_SEQ, AUDIO_FIELD_SESSION,
};
use earshot_protocol::ingest::{ClientMessage, ServerMessage};
use earshot_protocol::limits::{AUDIO_STREAM_MAXLEN, MAX_FRAME_BYTES};
use earshot_protocol::{CloseCode, Event, MeetingId, Source, WsRoute};

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use earshot_ws_session::log::{Level, State};
use earshot_ws_session::meta::Phase;
use earshot_ws_session::session::{header, Component, Scope, Session};
use earshot_ws_session::settings::TokenSettings;
use serde_json::Value;

use crate::announce::{self, Announcement, SessionEvent};
use crate::effects::IngestEffects;
use crate::meeting_life;
use crate::presence::{self, Stream};
use crate::ratelimit::{self, Admission};
use crate::settings::Settings;
use crate::state::StreamState;

/// Shortest time between two acks, in milliseconds. An ack per 20 ms frame would double the
/// messages on the wire for nothing; four a second keep a client's unacknowledged backlog
/// (what it must resend after a reconnect) under a quarter second, well inside DESIGN.md's
/// "at least every second" even when a pending ack waits for the relay's 1 s keep-alive.
/// (Pushpin raises `Keep-Alive-Interval` to at least 20 s; there the ack of the last frames
/// before audio stops waits for the next request, while flowing audio is acked as here.)
pub(crate) const ACK_MIN_INTERVAL_MS: u64 = 250;

/// Random bytes in a session id: 128 bits, so ids never collide across sessions.
pub(crate) const SESSION_ID_BYTES: usize = 16;

/// Close and presence reasons of the ingest route (the ones clients act on are in
/// `earshot_protocol::close`).
pub(crate) mod reason {
    /// 1011: no randomness for a session id.
    pub(crate) const SESSION_ID_UNAVAILABLE: &str = "session id unavailable";
    /// Presence reason after `close_stream`.
    pub(crate) const CLOSE_STREAM: &str = "close_stream";
}

/// The capture agents' route as a socket component, over host capabilities `E`.
pub(crate) struct Ingest<E>(PhantomData<E>);

impl<E: IngestEffects> Component for Ingest<E> {
    const NAME: &'static str = "ingest";
    const SCOPE: Scope = Scope::Ingest;
    type Settings = Settings;
    type Effects = E;
    type State = StreamState;

    fn token_settings(settings: &Settings) -> &TokenSettings {
        &settings.conn.token
    }

    fn serves(route: &WsRoute) -> bool {
        matches!(route, WsRoute::Ingest { .. })
    }

    fn open(s: &mut Session<'_, Self>, sub: &str) {
        let WsRoute::Ingest { meeting, source } = s.route else {
            unreachable!("the shell routes only the ingest route here");
        };
        Capture(s).open(meeting, *source, sub);
    }

    fn resumed(s: &mut Session<'_, Self>, _ending: bool) {
        Capture(s).timeouts();
    }

    fn text(s: &mut Session<'_, Self>, text: &str) {
        Capture(s).text(text);
    }

    fn binary(s: &mut Session<'_, Self>, data: &[u8]) {
        Capture(s).binary(data);
    }

    /// Audio already stored but not yet acknowledged is acknowledged before the close, so
    /// the client knows exactly what survived.
    fn closing(s: &mut Session<'_, Self>) {
        Capture(s).flush_ack(true);
    }

    /// The stream is over: close the talk analytics, clear presence (announcing `why`).
    fn cleanup(s: &mut Session<'_, Self>, why: &str) -> Vec<(&'static str, Value)> {
        let mut capture = Capture(s);
        capture.finish_analytics();
        capture.announce_close();
        let s = &mut *capture.0;
        let WsRoute::Ingest { meeting, source } = s.route else {
            unreachable!("the shell routes only the ingest route here");
        };
        let stream = Stream {
            meeting,
            source: *source,
            connection_id: s.connection_id,
        };
        presence::disconnected(s.settings, s.effects, &s.log, stream, s.now_ms, why);
        meeting_life::left(
            s.settings,
            s.effects,
            &s.log,
            meeting,
            *source,
            s.connection_id,
            s.now_ms,
        );
        let state = &s.state().ext;
        vec![
            ("frames", state.frames.into()),
            ("bytes", state.bytes.into()),
        ]
    }

    /// A live stream's reply: its turn at the periodic stats, a pending ack if due, and the
    /// relay's keep-alive, which runs the timeouts and flushes acks while the client is quiet.
    fn finish(s: &mut Session<'_, Self>) {
        let mut capture = Capture(s);
        capture.periodic_stats();
        capture.flush_ack(false);
        let interval = earshot_protocol::limits::KEEP_ALIVE_INTERVAL_S.to_string();
        capture
            .headers
            .push((header::KEEP_ALIVE_INTERVAL.to_owned(), interval));
    }
}

/// One request of an ingest connection: the shared session, seen from the ingest route.
pub(crate) struct Capture<'s, 'a, E: IngestEffects>(pub(crate) &'s mut Session<'a, Ingest<E>>);

impl<'a, E: IngestEffects> Deref for Capture<'_, 'a, E> {
    type Target = Session<'a, Ingest<E>>;

    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl<E: IngestEffects> DerefMut for Capture<'_, '_, E> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
    }
}

impl<E: IngestEffects> Capture<'_, '_, E> {
    /// An authenticated OPEN: admit it against the rate limit, accept, announce presence.
    fn open(&mut self, meeting: &MeetingId, source: Source, sub: &str) {
        let s = &mut *self.0;
        match ratelimit::admit(
            s.settings,
            s.effects,
            meeting,
            source,
            s.connection_id,
            s.now_ms,
        ) {
            Ok(Admission::Admitted) => {}
            Ok(Admission::Refused) => {
                return self.refuse(CloseCode::TryAgainLater, REASON_RATE_LIMITED, None)
            }
            Err(e) => {
                return self.refuse(
                    CloseCode::InternalError,
                    REASON_RATE_LIMITER_UNAVAILABLE,
                    Some(e.0),
                )
            }
        }
        self.accept(sub);
        let stream = Stream {
            meeting,
            source,
            connection_id: self.connection_id,
        };
        let s = &mut *self.0;
        presence::connected(s.settings, s.effects, &s.log, stream, s.now_ms);
        meeting_life::joined(
            s.settings,
            s.effects,
            &s.log,
            meeting,
            s.connection_id,
            s.now_ms,
        );
        let line = self.log.transition(State::Connected, "connected");
        self.emit(line);
    }

    /// Closes a stream whose handshake or activity deadline has passed. Checked before the
    /// request's events: a late handshake or frame does not undo a missed deadline.
    fn timeouts(&mut self) {
        let now = self.now_ms;
        let state = self.state();
        let (phase, opened, last_activity) =
            (state.phase, state.opened_ms, state.ext.last_activity_ms);
        match phase {
            Phase::Connected
                if now.saturating_sub(opened) >= self.settings.handshake_timeout_ms =>
            {
                self.close(CloseCode::ProtocolError, REASON_HANDSHAKE_TIMEOUT);
            }
            Phase::HandshakeComplete | Phase::PcmStreaming
                if now.saturating_sub(last_activity) >= self.settings.idle_timeout_ms =>
            {
                self.close(CloseCode::Normal, REASON_IDLE);
            }
            _ => {}
        }
    }

    /// A text message from the capture agent.
    fn text(&mut self, text: &str) {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(e) => return self.close(e.close_code(), &e.to_string()),
        };
        match message {
            ClientMessage::Handshake(_) if self.state().phase != Phase::Connected => {
                self.close(CloseCode::ProtocolError, REASON_DUPLICATE_HANDSHAKE);
            }
            ClientMessage::Handshake(format) => {
                let session_id = match self.effects.random_hex(SESSION_ID_BYTES) {
                    Ok(id) => id,
                    Err(e) => {
                        let line = self
                            .log
                            .line(Level::Error, "no randomness")
                            .with("detail", e.0);
                        self.emit(line);
                        return self
                            .close(CloseCode::InternalError, reason::SESSION_ID_UNAVAILABLE);
                    }
                };
                if let Err(e) = self.announce(&session_id, SessionEvent::Open) {
                    let line = self
                        .log
                        .line(Level::Error, "session announcement failed")
                        .with("detail", e.0);
                    self.emit(line);
                    // Audio nobody will transcribe is not what the client asked for, and
                    // Redis failing here fails the first frame too: 1011, retry with backoff.
                    return self.close(CloseCode::InternalError, REASON_AUDIO_STORE_UNAVAILABLE);
                }
                let ack = ServerMessage::HandshakeAck {
                    connection_id: self.connection_id.to_owned(),
                    session_id: session_id.clone(),
                    max_frame_bytes: MAX_FRAME_BYTES,
                };
                self.out.push(Event::Text(ack.to_json()));
                let now = self.now_ms;
                let state = self.state();
                state.phase = Phase::HandshakeComplete;
                state.ext.session_id = Some(session_id.clone());
                state.ext.last_activity_ms = now;
                let line = self
                    .log
                    .transition(State::HandshakeComplete, "handshake complete")
                    .with("session_id", session_id)
                    .with("sample_rate", format.sample_rate)
                    .with("channels", format.channels);
                self.emit(line);
                self.start_analytics(format.sample_rate, format.channels);
            }
            ClientMessage::Keepalive => {
                let now = self.now_ms;
                self.state().ext.last_activity_ms = now;
            }
            ClientMessage::CloseStream => {
                let state = self.state();
                let (frames, bytes) = (state.ext.frames, state.ext.bytes);
                // The final totals make any pending ack redundant.
                state.ext.acked_frames = frames;
                self.out.push(Event::Text(
                    ServerMessage::Closed { frames, bytes }.to_json(),
                ));
                self.close_because(
                    CloseCode::Normal,
                    REASON_STREAM_CLOSED,
                    reason::CLOSE_STREAM,
                );
            }
        }
    }

    /// A PCM frame: appended to `audio:{meeting}:{source}`, counted once Redis confirmed it.
    fn binary(&mut self, pcm: &[u8]) {
        if self.state().phase == Phase::Connected {
            return self.close(CloseCode::ProtocolError, REASON_BINARY_BEFORE_HANDSHAKE);
        }
        if pcm.len() > MAX_FRAME_BYTES {
            return self.close(CloseCode::TooBig, REASON_TOO_BIG);
        }
        if !self.settings.has_redis() {
            let line = self
                .log
                .line(Level::Error, "audio store unavailable")
                .with("detail", "redis_url is not set");
            self.emit(line);
            return self.close(CloseCode::InternalError, REASON_AUDIO_STORE_UNAVAILABLE);
        }
        let WsRoute::Ingest { meeting, source } = self.route else {
            unreachable!("ingest handlers run on the ingest route");
        };
        let state = self.state();
        let seq = (state.ext.frames + 1).to_string();
        let len = pcm.len().to_string();
        let session = state.ext.session_id.clone().unwrap_or_default();
        let fields: [(&str, &[u8]); 4] = [
            (AUDIO_FIELD_SEQ, seq.as_bytes()),
            (AUDIO_FIELD_BYTES, len.as_bytes()),
            (AUDIO_FIELD_SESSION, session.as_bytes()),
            (AUDIO_FIELD_PCM, pcm),
        ];
        if let Err(e) = self.effects.redis_xadd(
            &audio_stream_key(meeting, *source),
            AUDIO_STREAM_MAXLEN,
            &fields,
        ) {
            let line = self
                .log
                .line(Level::Error, "audio append failed")
                .with("detail", e.0);
            self.emit(line);
            return self.close(CloseCode::InternalError, REASON_AUDIO_STORE_UNAVAILABLE);
        }
        if self.state().ext.frames == 0 {
            let s = &mut *self.0;
            meeting_life::audio_written(s.settings, s.effects, &s.log, meeting, *source);
        }
        let now = self.now_ms;
        let state = self.state();
        state.ext.frames += 1;
        state.ext.bytes += pcm.len() as u64;
        state.ext.last_activity_ms = now;
        if state.phase == Phase::HandshakeComplete {
            state.phase = Phase::PcmStreaming;
            let line = self.log.transition(State::PcmStreaming, "pcm streaming");
            self.emit(line);
        }
        // Only audio Redis has goes into the talk time.
        self.analyse(pcm);
    }

    /// Announces `event` of audio session `session_id` to the transcription workers
    /// (`announce`). Without Redis there is no audio to transcribe and nothing to announce.
    fn announce(
        &mut self,
        session_id: &str,
        event: SessionEvent,
    ) -> Result<(), crate::effects::EffectError> {
        if !self.settings.has_redis() {
            return Ok(());
        }
        let WsRoute::Ingest { meeting, source } = self.0.route else {
            unreachable!("ingest handlers run on the ingest route");
        };
        let announcement = Announcement {
            meeting,
            source: *source,
            session: session_id,
            event,
        };
        announce::announce(self.0.effects, &announcement)
    }

    /// The stream is over: a session that completed its handshake is announced closed, so
    /// a worker finishes the stream once it read the audio to its end. A failure is logged,
    /// never fatal: the worker then ends the stream at its abandon bound.
    fn announce_close(&mut self) {
        let Some(session_id) = self.state().ext.session_id.clone() else {
            return;
        };
        if let Err(e) = self.announce(&session_id, SessionEvent::Close) {
            let line = self
                .log
                .line(Level::Error, "session announcement failed")
                .with("detail", e.0);
            self.emit(line);
        }
    }

    /// Sends `ack` with the totals when they advanced since the last one and either `force`
    /// is set or [`ACK_MIN_INTERVAL_MS`] has passed; otherwise the ack stays pending for a
    /// later request (at the latest the relay's keep-alive).
    fn flush_ack(&mut self, force: bool) {
        let now = self.now_ms;
        let state = self.state();
        let due = force || now.saturating_sub(state.ext.last_ack_ms) >= ACK_MIN_INTERVAL_MS;
        if state.ext.frames > state.ext.acked_frames && due {
            let ack = ServerMessage::Ack {
                frames: state.ext.frames,
                bytes: state.ext.bytes,
            };
            state.ext.acked_frames = state.ext.frames;
            state.ext.last_ack_ms = now;
            self.out.push(Event::Text(ack.to_json()));
        }
    }
}

//! Talk-time analytics of the ingest route: an energy-based voice-activity detector
//! (`earshot_vad`) per stream, fed every frame Redis confirmed, its state carried in the
//! connection's `Meta-*` between requests. Speech starts and ends go to the meeting's channel
//! and into the meeting's talk record (`talk.rs`); `stats` go out at most every
//! [`STATS_INTERVAL_MS`] per meeting (one emitter elected by compare-and-swap) and once
//! whenever a stream ends. Advisory like presence: no failure here ends the audio stream.
//!
//! Clocks: events carry stream time (`at_ms`, milliseconds since the session's first
//! sample, exact whatever the batching) and wall time (`wall_ms` = the unix time that first
//! sample was analysed + `at_ms`). The meeting's statistics run on wall time, so the
//! sources of a meeting share one clock.

use earshot_protocol::ids::meeting_channel;
use earshot_protocol::meeting::{MeetingEvent, STATS_INTERVAL_MS};
use earshot_protocol::{MeetingId, Source, WsRoute};
use earshot_vad::{Vad, VadEvent};

use earshot_ws_session::log::Level;
use earshot_ws_session::talk::{self, Election, TalkChange};

use crate::effects::IngestEffects;
use crate::ingest::Capture;
use crate::meeting_life;
use crate::publish::publish;

impl<E: IngestEffects> Capture<'_, '_, E> {
    /// The stream's meeting and source (analytics run on the ingest route only).
    fn stream(&self) -> (MeetingId, Source) {
        match self.route {
            WsRoute::Ingest { meeting, source } => (meeting.clone(), *source),
            _ => unreachable!("analytics run on the ingest route"),
        }
    }

    /// At the handshake: a detector for the stream's format. A format the detector does
    /// not take (it is narrower than the ingest protocol) turns analytics off for the
    /// session, with a warning; the audio still flows.
    pub(crate) fn start_analytics(&mut self, sample_rate: u32, channels: u32) {
        let vad = u16::try_from(channels)
            .map_err(|_| format!("{channels} channels"))
            .and_then(|ch| Vad::new(sample_rate, ch).map_err(|e| e.to_string()));
        match vad {
            Ok(vad) => self.state().ext.vad = Some(vad),
            Err(detail) => {
                let line = self
                    .log
                    .line(Level::Warn, "talk analytics off for this stream")
                    .with("detail", detail);
                self.emit(line);
            }
        }
    }

    /// A frame Redis confirmed: through the detector; what it completes is announced.
    pub(crate) fn analyse(&mut self, pcm: &[u8]) {
        let now = self.now_ms;
        let state = self.state();
        let Some(vad) = state.ext.vad.as_mut() else {
            return;
        };
        let events = vad.push(pcm);
        let first = state.ext.audio_start_ms.is_none();
        let start = *state.ext.audio_start_ms.get_or_insert(now);
        if first {
            state.ext.stats_due_ms = Some(now.saturating_add(STATS_INTERVAL_MS));
            let (_, source) = self.stream();
            self.record_talk(TalkChange::SessionStarted {
                source,
                at_ms: start,
            });
        }
        for event in events {
            self.speech(start, event);
        }
    }

    /// The stream ended (any reason): the detector closes an open speech segment at the
    /// end of its audio, and the meeting's statistics go out.
    pub(crate) fn finish_analytics(&mut self) {
        let state = self.state();
        let (Some(vad), Some(start)) = (state.ext.vad.as_mut(), state.ext.audio_start_ms) else {
            return;
        };
        let events = vad.finish();
        let audio_until = start.saturating_add(vad.stream_ms());
        state.ext.stats_due_ms = None;
        for event in events {
            self.speech(start, event);
        }
        let (meeting, _) = self.stream();
        let now = self.now_ms;
        // Mark the emission, so a periodic one does not follow right away.
        if let Err(e) = self
            .effects
            .kv_update(&talk::stats_at_key(&meeting), &mut |_| {
                Some(now.to_string().into_bytes())
            })
        {
            self.analytics_failed("stats election failed", e.0);
        }
        self.emit_stats(audio_until);
    }

    /// Once per request of a streaming connection: stands for the periodic `stats` when
    /// its turn is due, and emits them if elected.
    pub(crate) fn periodic_stats(&mut self) {
        let now = self.now_ms;
        let state = self.state();
        let (Some(vad), Some(start), Some(due)) = (
            state.ext.vad.as_ref(),
            state.ext.audio_start_ms,
            state.ext.stats_due_ms,
        ) else {
            return;
        };
        if now < due {
            return;
        }
        let audio_until = start.saturating_add(vad.stream_ms());
        let (meeting, _) = self.stream();
        let mut decision = None;
        let outcome = self
            .effects
            .kv_update(&talk::stats_at_key(&meeting), &mut |current| {
                let (election, next) = talk::elect(current, now, STATS_INTERVAL_MS);
                decision = Some(election);
                next
            });
        let next_due = match (outcome, decision) {
            (Ok(()), Some(Election::Won)) => {
                self.emit_stats(audio_until);
                now.saturating_add(STATS_INTERVAL_MS)
            }
            (Ok(()), Some(Election::Lost { last_ms })) => last_ms.saturating_add(STATS_INTERVAL_MS),
            (Ok(()), None) => now.saturating_add(STATS_INTERVAL_MS),
            (Err(e), _) => {
                self.analytics_failed("stats election failed", e.0);
                now.saturating_add(STATS_INTERVAL_MS)
            }
        };
        self.state().ext.stats_due_ms = Some(next_due);
    }

    /// Publishes the meeting's `stats` as of now (and of the caller's audio, which may run
    /// ahead of the wall clock).
    fn emit_stats(&mut self, audio_until_ms: u64) {
        let (meeting, _) = self.stream();
        let record = match self.effects.kv_get(&talk::talk_key(&meeting)) {
            Ok(bytes) => talk::read(bytes.as_deref()),
            Err(e) => return self.analytics_failed("talk record unreadable", e.0),
        };
        let Some(record) = record else {
            return;
        };
        let event = MeetingEvent::Stats {
            meeting_id: meeting.to_string(),
            talk: talk::summary(&record, self.now_ms, audio_until_ms),
        };
        let s = &mut *self.0;
        publish(
            s.settings,
            s.effects,
            &s.log,
            &meeting_channel(&meeting),
            event.to_json(),
        );
    }

    /// A detector event: recorded and announced.
    fn speech(&mut self, start_ms: u64, event: VadEvent) {
        let (meeting, source) = self.stream();
        let meeting_id = meeting.to_string();
        let (change, announced) = match event {
            VadEvent::SpeechStarted { at_ms } => {
                let wall_ms = start_ms.saturating_add(at_ms);
                (
                    TalkChange::SpeechStarted {
                        source,
                        at_ms: wall_ms,
                    },
                    MeetingEvent::SpeechStarted {
                        meeting_id,
                        source,
                        at_ms,
                        wall_ms,
                    },
                )
            }
            VadEvent::SpeechEnded { at_ms, duration_ms } => {
                let wall_ms = start_ms.saturating_add(at_ms);
                (
                    TalkChange::SpeechEnded {
                        source,
                        start_ms: wall_ms.saturating_sub(duration_ms),
                        end_ms: wall_ms,
                    },
                    MeetingEvent::SpeechEnded {
                        meeting_id,
                        source,
                        at_ms,
                        duration_ms,
                        wall_ms,
                    },
                )
            }
        };
        self.record_talk(change);
        let s = &mut *self.0;
        if let TalkChange::SpeechEnded {
            start_ms, end_ms, ..
        } = change
        {
            let duration_ms = end_ms.saturating_sub(start_ms);
            meeting_life::talked(s.settings, s.effects, &s.log, &meeting, source, duration_ms);
        }
        publish(
            s.settings,
            s.effects,
            &s.log,
            &meeting_channel(&meeting),
            announced.to_json(),
        );
    }

    fn record_talk(&mut self, change: TalkChange) {
        let (meeting, _) = self.stream();
        if let Err(e) = self
            .effects
            .kv_update(&talk::talk_key(&meeting), &mut |current| {
                Some(talk::apply(current, change))
            })
        {
            self.analytics_failed("talk record update failed", e.0);
        }
    }

    fn analytics_failed(&mut self, msg: &str, detail: String) {
        let line = self.log.line(Level::Error, msg).with("detail", detail);
        self.emit(line);
    }
}

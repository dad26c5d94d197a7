//! The per-source detector: windows, decisions, noise floor and hysteresis.

use crate::format::{validate, FormatError};
use crate::level::WindowAccumulator;
use crate::thresholds::{
    ABSOLUTE_FLOOR_DBFS, ANALYSIS_WINDOW_MS, HANGOVER_MS, INITIAL_NOISE_FLOOR_DBFS,
    NOISE_FLOOR_FALL_DB_PER_S, NOISE_FLOOR_RISE_DB_PER_S, SPEECH_MARGIN_DB, SPEECH_START_MS,
    ZCR_CEILING_PER_MILLE,
};

/// A change of voice activity, timed in stream milliseconds since the first pushed sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VadEvent {
    /// Speech began at `at_ms` (the first window of the run that confirmed it).
    SpeechStarted {
        /// Start of the segment, in stream milliseconds.
        at_ms: u64,
    },
    /// Speech ended at `at_ms` (the end of the segment's last speech window).
    SpeechEnded {
        /// End of the segment, in stream milliseconds.
        at_ms: u64,
        /// Length of the segment, in milliseconds: it started at `at_ms - duration_ms`.
        duration_ms: u64,
    },
}

impl VadEvent {
    /// The segment an end event closes, as `(start_ms, end_ms)`; `None` for a start.
    pub fn speech_interval(&self) -> Option<(u64, u64)> {
        match *self {
            VadEvent::SpeechStarted { .. } => None,
            VadEvent::SpeechEnded { at_ms, duration_ms } => Some((at_ms - duration_ms, at_ms)),
        }
    }
}

/// Where the hysteresis stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No segment open; `speech_run` frames of consecutive speech windows end at the
    /// last analysed window (not yet long enough to start one).
    Quiet { speech_run: u64 },
    /// A segment is open since `start_frame`; `silence_run` frames of consecutive
    /// non-speech windows end at the last analysed window (not yet long enough to end it).
    Speech { start_frame: u64, silence_run: u64 },
}

/// The bytes of a sample frame split across two pushes (at most one frame minus a byte).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Carry {
    pub(crate) bytes: [u8; 3],
    pub(crate) len: u8,
}

impl Carry {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// An energy-based voice-activity detector for one PCM source (16-bit little-endian,
/// mono or interleaved stereo). See the crate documentation for the algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vad {
    pub(crate) sample_rate: u32,
    pub(crate) channels: u16,
    /// Whole sample frames pushed so far: the stream clock.
    pub(crate) frames: u64,
    /// Talk time of the segments already ended, in milliseconds.
    pub(crate) talk_ms: u64,
    /// Adaptive noise floor, in millidecibels relative to full scale.
    pub(crate) noise_floor_mdb: i32,
    pub(crate) phase: Phase,
    pub(crate) window: WindowAccumulator,
    pub(crate) carry: Carry,
}

impl Vad {
    /// A detector for a fresh stream of `sample_rate` Hz and `channels` interleaved channels.
    pub fn new(sample_rate: u32, channels: u16) -> Result<Self, FormatError> {
        validate(sample_rate, channels)?;
        Ok(Vad {
            sample_rate,
            channels,
            frames: 0,
            talk_ms: 0,
            noise_floor_mdb: INITIAL_NOISE_FLOOR_DBFS * 1000,
            phase: Phase::Quiet { speech_run: 0 },
            window: WindowAccumulator::default(),
            carry: Carry::default(),
        })
    }

    /// Sample rate of the stream, in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Interleaved channels of the stream.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Feeds the next bytes of the stream and returns the events they complete, in order.
    ///
    /// Chunks need not hold whole frames or whole windows: a sample frame split across
    /// pushes (an odd trailing byte, or part of a stereo frame) is kept until the next
    /// push completes it, and a window spanning pushes is finished by the next push, so
    /// the events do not depend on how the stream was cut. Windows are decided when
    /// complete, so an event can come up to one window after the audio that caused it.
    pub fn push(&mut self, pcm_s16le: &[u8]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        let frame_bytes = self.frame_bytes();
        let mut rest = pcm_s16le;
        if self.carry.len > 0 {
            let have = usize::from(self.carry.len);
            let need = frame_bytes - have;
            if rest.len() < need {
                self.carry.bytes[have..have + rest.len()].copy_from_slice(rest);
                self.carry.len += rest.len() as u8;
                return events;
            }
            let mut frame = [0u8; 4];
            frame[..have].copy_from_slice(self.carry.as_slice());
            frame[have..frame_bytes].copy_from_slice(&rest[..need]);
            self.carry = Carry::default();
            self.add_frame(&frame[..frame_bytes], &mut events);
            rest = &rest[need..];
        }
        let mut frames = rest.chunks_exact(frame_bytes);
        for frame in &mut frames {
            self.add_frame(frame, &mut events);
        }
        let tail = frames.remainder();
        self.carry.bytes[..tail.len()].copy_from_slice(tail);
        self.carry.len = tail.len() as u8;
        events
    }

    /// Ends the stream: decides the trailing partial window, closes an open segment at
    /// the end of its last speech window (the stream end unless a pause was already
    /// under way) and returns the resulting events. Bytes of an incomplete trailing
    /// frame are dropped, and a speech run too short to start a segment is discarded.
    /// Pushing afterwards continues the same clock with a new window grid.
    pub fn finish(&mut self) -> Vec<VadEvent> {
        let mut events = Vec::new();
        self.close_window(&mut events);
        self.carry = Carry::default();
        if let Phase::Speech {
            start_frame,
            silence_run,
        } = self.phase
        {
            self.end_segment(start_frame, self.frames - silence_run, &mut events);
        }
        self.phase = Phase::Quiet { speech_run: 0 };
        events
    }

    /// Talk time so far, in milliseconds: the ended segments plus the open one up to the
    /// end of its last speech window.
    pub fn talk_ms(&self) -> u64 {
        let open = match self.phase {
            Phase::Quiet { .. } => 0,
            Phase::Speech {
                start_frame,
                silence_run,
            } => self.ms(self.analysed_frames() - silence_run) - self.ms(start_frame),
        };
        self.talk_ms + open
    }

    /// Length of the audio pushed so far (whole sample frames), in milliseconds.
    pub fn stream_ms(&self) -> u64 {
        self.ms(self.frames)
    }

    /// Whether a speech segment is open (started and not yet ended).
    pub fn in_speech(&self) -> bool {
        matches!(self.phase, Phase::Speech { .. })
    }

    /// Bytes of one sample frame (all channels).
    pub(crate) fn frame_bytes(&self) -> usize {
        2 * usize::from(self.channels)
    }

    /// Frames of one full analysis window.
    pub(crate) fn window_frames(&self) -> u32 {
        self.sample_rate * ANALYSIS_WINDOW_MS / 1000
    }

    /// Frames of speech needed to start a segment.
    pub(crate) fn start_frames(&self) -> u64 {
        self.frames_for_ms(SPEECH_START_MS)
    }

    /// Frames of non-speech needed to end a segment.
    pub(crate) fn hangover_frames(&self) -> u64 {
        self.frames_for_ms(HANGOVER_MS)
    }

    /// Frames already decided (the stream clock minus the open window).
    pub(crate) fn analysed_frames(&self) -> u64 {
        self.frames - u64::from(self.window.frames)
    }

    fn frames_for_ms(&self, ms: u32) -> u64 {
        (u64::from(self.sample_rate) * u64::from(ms)).div_ceil(1000)
    }

    fn ms(&self, frames: u64) -> u64 {
        frames.saturating_mul(1000) / u64::from(self.sample_rate)
    }

    fn add_frame(&mut self, frame: &[u8], events: &mut Vec<VadEvent>) {
        // Channels are averaged: a silent channel halves the level (-6 dB) but keeps
        // the other channel's zero-crossing rate, so one noisy channel is still noise.
        let sum: i32 = frame
            .chunks_exact(2)
            .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
            .sum();
        self.window.add(sum / i32::from(self.channels));
        self.frames += 1;
        if self.window.frames >= self.window_frames() {
            self.close_window(events);
        }
    }

    /// Decides the open window (if any) and advances the hysteresis.
    fn close_window(&mut self, events: &mut Vec<VadEvent>) {
        let window = std::mem::take(&mut self.window);
        if window.frames == 0 {
            return;
        }
        let n = u64::from(window.frames);
        let end = self.frames;
        let level = window.level_mdbfs();
        let speech = level >= ABSOLUTE_FLOOR_DBFS * 1000
            && level >= self.noise_floor_mdb + SPEECH_MARGIN_DB * 1000
            && window.zcr_at_most(ZCR_CEILING_PER_MILLE);
        if !speech {
            self.adapt_floor(level, n);
        }
        self.phase = match self.phase {
            Phase::Quiet { speech_run } if speech => {
                let run = speech_run + n;
                if run >= self.start_frames() {
                    let start_frame = end - run;
                    events.push(VadEvent::SpeechStarted {
                        at_ms: self.ms(start_frame),
                    });
                    Phase::Speech {
                        start_frame,
                        silence_run: 0,
                    }
                } else {
                    Phase::Quiet { speech_run: run }
                }
            }
            Phase::Quiet { .. } => Phase::Quiet { speech_run: 0 },
            Phase::Speech { start_frame, .. } if speech => Phase::Speech {
                start_frame,
                silence_run: 0,
            },
            Phase::Speech {
                start_frame,
                silence_run,
            } => {
                let run = silence_run + n;
                if run >= self.hangover_frames() {
                    self.end_segment(start_frame, end - run, events);
                    Phase::Quiet { speech_run: 0 }
                } else {
                    Phase::Speech {
                        start_frame,
                        silence_run: run,
                    }
                }
            }
        };
    }

    fn end_segment(&mut self, start_frame: u64, end_frame: u64, events: &mut Vec<VadEvent>) {
        let at_ms = self.ms(end_frame);
        let duration_ms = at_ms - self.ms(start_frame);
        self.talk_ms += duration_ms;
        events.push(VadEvent::SpeechEnded { at_ms, duration_ms });
    }

    /// Moves the noise floor towards a non-speech window's level, by at most the rise
    /// or fall rate times the window's duration.
    fn adapt_floor(&mut self, level_mdb: i32, frames: u64) {
        let step = |db_per_s: i32| {
            let mdb =
                u64::from(db_per_s.unsigned_abs()) * 1000 * frames / u64::from(self.sample_rate);
            i32::try_from(mdb).unwrap_or(i32::MAX)
        };
        let delta = level_mdb - self.noise_floor_mdb;
        self.noise_floor_mdb += if delta > 0 {
            delta.min(step(NOISE_FLOOR_RISE_DB_PER_S))
        } else {
            delta.max(-step(NOISE_FLOOR_FALL_DB_PER_S))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{interleave, noise, silence, to_bytes, tone, Run};
    use crate::thresholds::SILENCE_LEVEL_DBFS;

    const FRAME_20MS: usize = 640; // 16 kHz mono

    fn started(at_ms: u64) -> VadEvent {
        VadEvent::SpeechStarted { at_ms }
    }

    fn ended(at_ms: u64, duration_ms: u64) -> VadEvent {
        VadEvent::SpeechEnded { at_ms, duration_ms }
    }

    /// 1 s tone, 1 s digital silence, 1 s tone, mono.
    fn tone_silence_tone(rate: u32) -> Vec<u8> {
        let mut s = tone(rate, 1000, 440.0, 8000);
        s.extend(silence(rate, 1000));
        s.extend(tone(rate, 1000, 440.0, 8000));
        to_bytes(&s)
    }

    #[test]
    fn tone_is_one_segment() {
        let run = Run::mono16k()
            .chunks(FRAME_20MS)
            .go(&to_bytes(&tone(16_000, 1000, 440.0, 8000)));
        assert_eq!(run.events(), vec![started(0), ended(1000, 1000)]);
        // Started is confirmed by the window ending at SPEECH_START_MS, i.e. in the
        // 20 ms frame that ends at 60 ms; Ended only comes from finish().
        assert_eq!(run.emitted[0].0, 60);
        assert_eq!(run.talk_ms, 1000);
    }

    #[test]
    fn silence_and_quiet_sounds_give_no_events() {
        for samples in [
            silence(16_000, 3000),
            noise(16_000, 3000, 300, 1),   // about -45.5 dBFS white noise
            tone(16_000, 3000, 440.0, 50), // about -59 dBFS: under the absolute floor
        ] {
            let run = Run::mono16k().chunks(FRAME_20MS).go(&to_bytes(&samples));
            assert_eq!(run.events(), vec![]);
            assert_eq!(run.talk_ms, 0);
            assert_eq!(run.stream_ms, 3000);
        }
    }

    #[test]
    fn loud_white_noise_is_rejected_by_zero_crossings() {
        let samples = noise(16_000, 3000, 20_000, 7);
        // Energy alone would call it speech: about -8 dBFS, far over any threshold.
        let mut w = WindowAccumulator::default();
        samples[..160].iter().for_each(|&s| w.add(i32::from(s)));
        assert!(w.level_mdbfs() > -10_000);
        let run = Run::mono16k().chunks(FRAME_20MS).go(&to_bytes(&samples));
        assert_eq!(run.events(), vec![]);
    }

    #[test]
    fn tone_silence_tone_16k_in_20ms_frames() {
        let run = Run::mono16k()
            .chunks(FRAME_20MS)
            .go(&tone_silence_tone(16_000));
        assert_eq!(
            run.events(),
            vec![
                started(0),
                ended(1000, 1000),
                started(2000),
                ended(3000, 1000)
            ]
        );
        // When each event is returned, in stream ms after the push that returned it:
        // starts after SPEECH_START_MS (in the frame ending 20 ms later on the 20 ms
        // grid), the first end after HANGOVER_MS, the last one from finish().
        let when: Vec<u64> = run.emitted.iter().map(|(t, _)| *t).collect();
        assert_eq!(when, vec![60, 1300, 2060, 3000]);
        assert_eq!(run.talk_ms, 2000);
        assert_eq!(run.stream_ms, 3000);
    }

    #[test]
    fn events_do_not_depend_on_chunking_or_state_round_trips() {
        let audio = tone_silence_tone(16_000);
        let reference = Run::mono16k().chunks(FRAME_20MS).go(&audio);
        for chunk in [1, 3, 224 /* 7 ms */, 333, 4096, audio.len()] {
            for round_trip in [false, true] {
                let run = Run::mono16k()
                    .chunks(chunk)
                    .round_trip(round_trip)
                    .go(&audio);
                assert_eq!(
                    run.events(),
                    reference.events(),
                    "chunk {chunk}, round trip {round_trip}"
                );
                assert_eq!(run.state, reference.state, "chunk {chunk}");
                assert_eq!(run.talk_ms, 2000);
            }
        }
    }

    #[test]
    fn other_sample_rates_give_the_same_times() {
        for rate in [8_000, 24_000, 32_000, 44_100, 48_000] {
            let frame = rate as usize / 50 * 2; // 20 ms mono
            let run = Run::new(rate, 1)
                .chunks(frame)
                .round_trip(true)
                .go(&tone_silence_tone(rate));
            assert_eq!(
                run.events(),
                vec![
                    started(0),
                    ended(1000, 1000),
                    started(2000),
                    ended(3000, 1000)
                ],
                "{rate} Hz"
            );
            assert_eq!(run.talk_ms, 2000, "{rate} Hz");
        }
    }

    #[test]
    fn stereo_is_downmixed() {
        let rate = 16_000;
        let both = to_bytes(&interleave(
            &tone(rate, 1000, 300.0, 8000),
            &tone(rate, 1000, 300.0, 8000),
        ));
        let left_only = to_bytes(&interleave(
            &tone(rate, 1000, 300.0, 8000),
            &silence(rate, 1000),
        ));
        // White noise on one channel stays noise after the downmix.
        let noisy = to_bytes(&interleave(
            &noise(rate, 1000, 20_000, 3),
            &silence(rate, 1000),
        ));
        for (audio, want) in [
            (&both, vec![started(0), ended(1000, 1000)]),
            (&left_only, vec![started(0), ended(1000, 1000)]),
            (&noisy, vec![]),
        ] {
            for chunk in [1280, 333] {
                let run = Run::new(rate, 2)
                    .chunks(chunk)
                    .round_trip(chunk == 333)
                    .go(audio);
                assert_eq!(run.events(), want);
            }
        }
    }

    #[test]
    fn short_bursts_and_short_pauses() {
        let rate = 16_000;
        // A 40 ms click never starts a segment; a 50 ms one does.
        let mut s = tone(rate, 40, 440.0, 8000);
        s.extend(silence(rate, 500));
        s.extend(tone(rate, 50, 440.0, 8000));
        s.extend(silence(rate, 500));
        let run = Run::mono16k().chunks(FRAME_20MS).go(&to_bytes(&s));
        assert_eq!(run.events(), vec![started(540), ended(590, 50)]);

        // A 200 ms pause is inside the hangover: one segment, the pause counted as talk.
        let mut s = tone(rate, 500, 440.0, 8000);
        s.extend(silence(rate, 200));
        s.extend(tone(rate, 500, 440.0, 8000));
        let run = Run::mono16k().chunks(FRAME_20MS).go(&to_bytes(&s));
        assert_eq!(run.events(), vec![started(0), ended(1200, 1200)]);
    }

    #[test]
    fn finish_ends_at_the_last_speech_window() {
        let mut s = tone(16_000, 1000, 440.0, 8000);
        s.extend(silence(16_000, 100));
        let mut vad = Vad::new(16_000, 1).unwrap();
        assert_eq!(vad.push(&to_bytes(&s)), vec![started(0)]);
        assert!(vad.in_speech());
        assert_eq!(vad.talk_ms(), 1000);
        assert_eq!(vad.finish(), vec![ended(1000, 1000)]);
        assert!(!vad.in_speech());
        assert_eq!(vad.finish(), vec![]);
        // A trailing partial window is decided by finish().
        let mut vad = Vad::new(16_000, 1).unwrap();
        let tone_1005ms = to_bytes(&tone(16_000, 1005, 440.0, 8000));
        assert_eq!(tone_1005ms.len(), (16_000 + 80) * 2);
        assert_eq!(vad.push(&tone_1005ms), vec![started(0)]);
        assert_eq!((vad.stream_ms(), vad.talk_ms()), (1005, 1000));
        assert_eq!(vad.finish(), vec![ended(1005, 1005)]);
    }

    #[test]
    fn split_sample_frames_are_carried_over() {
        let bytes = to_bytes(&tone(16_000, 100, 440.0, 8000));
        let mut whole = Vad::new(16_000, 1).unwrap();
        whole.push(&bytes[..4]);
        let mut split = Vad::new(16_000, 1).unwrap();
        split.push(&bytes[..3]);
        assert_eq!(split.stream_ms(), 0);
        assert_eq!(split.frames, 1);
        split.push(&bytes[3..4]);
        assert_eq!(split, whole);
    }

    #[test]
    fn noise_floor_adapts_on_non_speech_windows() {
        let rate = 16_000;
        // 2 s of digital silence: the floor falls 10 dB/s from -50 to -70 dBFS.
        let mut vad = Vad::new(rate, 1).unwrap();
        vad.push(&to_bytes(&silence(rate, 2000)));
        assert_eq!(vad.noise_floor_mdb, -70_000);
        // ...and keeps falling to the silence level, never below.
        vad.push(&to_bytes(&silence(rate, 10_000)));
        assert_eq!(vad.noise_floor_mdb, SILENCE_LEVEL_DBFS * 1000);

        // 3 s of loud white noise (non-speech by ZCR): the floor rises 1 dB/s.
        let mut vad = Vad::new(rate, 1).unwrap();
        vad.push(&to_bytes(&noise(rate, 3000, 20_000, 5)));
        assert_eq!(vad.noise_floor_mdb, -47_000);

        // A -45 dBFS tone is under the first threshold (-40 dBFS) and is learnt as
        // noise; after a second of silence the threshold is the absolute floor and the
        // same tone is speech.
        let quiet = tone(rate, 1000, 440.0, 260);
        let run = Run::mono16k().chunks(FRAME_20MS).go(&to_bytes(&quiet));
        assert_eq!(run.events(), vec![]);
        let mut s = silence(rate, 1000);
        s.extend(&quiet);
        let run = Run::mono16k().chunks(FRAME_20MS).go(&to_bytes(&s));
        assert_eq!(run.events(), vec![started(1000), ended(2000, 1000)]);
    }

    #[test]
    fn formats_are_checked() {
        assert_eq!(Vad::new(7_999, 1), Err(FormatError::SampleRate(7_999)));
        assert_eq!(Vad::new(96_000, 1), Err(FormatError::SampleRate(96_000)));
        assert_eq!(Vad::new(16_000, 0), Err(FormatError::Channels(0)));
        assert_eq!(Vad::new(16_000, 3), Err(FormatError::Channels(3)));
    }

    #[test]
    fn speech_interval_of_events() {
        assert_eq!(started(5).speech_interval(), None);
        assert_eq!(ended(3000, 1000).speech_interval(), Some((2000, 3000)));
    }
}

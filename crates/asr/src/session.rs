//! Streaming around a non-streaming model: the VAD finds utterances, interims are
//! re-decodes of the open utterance at a bounded cadence, and the final is one more pass
//! when the VAD sees the utterance end (or it reaches the length limit and is split at its
//! quietest point). Silence never reaches the model.

use std::sync::Arc;

use earshot_asr_engine::{EngineError, Hypothesis, Session, SessionSpec};
use earshot_vad::{Vad, VadEvent, ANALYSIS_WINDOW_MS, SPEECH_START_MS};

use crate::decode::Pass;
use crate::engine::Shared;

/// Audio kept before the VAD's speech start, in milliseconds: the detector dates speech
/// at its first loud window, and soft onsets (an "s", an "h") come before it.
pub const PRE_ROLL_MS: u64 = 200;

/// Audio kept after the VAD's speech end, in milliseconds: trailing consonants fade below
/// the threshold. The end is reported after a 300 ms hangover, so this much has arrived.
pub const POST_ROLL_MS: u64 = 200;

/// Shortest open utterance worth an interim pass, in milliseconds: less is not a word yet.
pub const MIN_INTERIM_AUDIO_MS: u64 = 600;

/// Tokens at the end of the last interim an interim pass decodes afresh; the ones
/// before are fed as already decoded (one batched decoder step instead of one step per
/// token). A second more of audio changes the last word or two; the final is always a
/// fresh decode, so an early mistake the prefix keeps never reaches the transcript.
pub const INTERIM_REVISED_TOKENS: usize = 3;

/// Energy is compared over windows of this length, in milliseconds, when choosing where to
/// split an over-long utterance: a pause between words, not a gap between two samples.
pub const SPLIT_WINDOW_MS: u64 = 100;

/// An over-long utterance is split in its last part only, after this fraction (in
/// percent) of the limit, so the piece finalised is long enough to carry context.
pub const SPLIT_SEARCH_FROM_PERCENT: u64 = 50;

const SAMPLES_PER_MS: u64 = crate::SAMPLE_RATE as u64 / 1000;

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Utterances the VAD found.
    pub utterances: u64,
    /// Finals published.
    pub finals: u64,
    /// Interims published.
    pub interims: u64,
    /// Interims put off because the engine was busy (tried again at the next push).
    pub interims_deferred: u64,
    /// Finals dropped as invented (silence, noise, below the log-probability floor).
    pub dropped: u64,
    /// Utterances split because they reached the length limit.
    pub splits: u64,
    /// Passes whose decode looped and was cut.
    pub loops: u64,
    /// Model passes run (interims and finals).
    pub passes: u64,
    /// Wall time spent in the model, in milliseconds.
    pub model_ms: u64,
}

/// The utterance being heard.
#[derive(Debug, Clone)]
struct Utterance {
    /// First sample fed to the model (pre-roll included), absolute.
    audio_start: u64,
    /// Where speech started, absolute milliseconds (the hypotheses' `start_ms`).
    speech_start_ms: u64,
    /// Absolute sample at which the last interim pass was made.
    last_interim_at: u64,
    /// Text of the last interim published (an unchanged one is not repeated).
    last_interim: String,
    /// Interims were published for this utterance.
    published_interim: bool,
    /// Tokens of the last interim pass (the next one starts from them).
    interim_tokens: Vec<u32>,
}

/// A streaming session of the local Whisper engine over one audio stream.
pub struct WhisperSession {
    shared: Arc<Shared>,
    spec: SessionSpec,
    vad: Vad,
    /// A byte of a sample split across pushes.
    odd_byte: Option<u8>,
    /// Audio from `buf_start` on, −1..1.
    buf: Vec<f32>,
    /// Absolute sample index of `buf[0]` (counted from the stream's first sample).
    buf_start: u64,
    /// Absolute sample index one past the last pushed.
    end: u64,
    utterance: Option<Utterance>,
    settled_ms: u64,
    closed: bool,
    stats: SessionStats,
}

impl std::fmt::Debug for WhisperSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperSession")
            .field("spec", &self.spec)
            .field("end_ms", &(self.end / SAMPLES_PER_MS))
            .field("stats", &self.stats)
            .finish()
    }
}

impl WhisperSession {
    pub(crate) fn new(shared: Arc<Shared>, spec: SessionSpec) -> Self {
        let start = spec.start_ms * SAMPLES_PER_MS;
        WhisperSession {
            shared,
            vad: Vad::new(crate::SAMPLE_RATE, 1).expect("16 kHz mono is a valid VAD format"),
            odd_byte: None,
            buf: Vec::new(),
            buf_start: start,
            end: start,
            utterance: None,
            settled_ms: spec.start_ms,
            spec,
            closed: false,
            stats: SessionStats::default(),
        }
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Absolute milliseconds of a VAD time (the VAD counts from this session's start).
    fn vad_ms(&self, at_ms: u64) -> u64 {
        self.spec.start_ms + at_ms
    }

    fn samples(&self, from: u64, to: u64) -> &[f32] {
        let lo = from.saturating_sub(self.buf_start) as usize;
        let hi = (to.saturating_sub(self.buf_start) as usize).min(self.buf.len());
        &self.buf[lo.min(hi)..hi]
    }

    fn append(&mut self, pcm: &[u8]) {
        let mut rest = pcm;
        if let Some(b) = self.odd_byte.take() {
            if let Some((&first, tail)) = rest.split_first() {
                self.buf
                    .push(f32::from(i16::from_le_bytes([b, first])) / 32768.0);
                rest = tail;
            } else {
                self.odd_byte = Some(b);
            }
        }
        let mut samples = rest.chunks_exact(2);
        self.buf
            .extend((&mut samples).map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0));
        if let [b] = samples.remainder() {
            self.odd_byte = Some(*b);
        }
        self.end = self.buf_start + self.buf.len() as u64;
    }

    fn pass(
        &mut self,
        from: u64,
        to: u64,
        pad_ms: u64,
        prefix: &[u32],
    ) -> Result<Pass, EngineError> {
        let pass = self
            .shared
            .pass(self.samples(from, to), pad_ms, prefix)
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        self.stats.passes += 1;
        self.stats.model_ms +=
            (pass.timings.mel_ms + pass.timings.encode_ms + pass.timings.decode_ms) as u64;
        if pass.looped {
            self.stats.loops += 1;
        }
        tracing::debug!(
            meeting_id = %self.spec.meeting_id,
            source = %self.spec.source,
            audio_ms = (to - from) / SAMPLES_PER_MS,
            encode_ms = pass.timings.encode_ms,
            decode_ms = pass.timings.decode_ms,
            tokens = pass.timings.tokens,
            avg_logprob = pass.avg_logprob,
            no_speech_prob = pass.no_speech_prob,
            "whisper pass"
        );
        Ok(pass)
    }

    /// Decodes the utterance from its start to `to` (absolute sample) and returns its
    /// final, if it is speech; the utterance is closed.
    fn finalise(&mut self, to: u64, speech_end_ms: u64) -> Result<Option<Hypothesis>, EngineError> {
        let Some(utt) = self.utterance.take() else {
            return Ok(None);
        };
        let pass = self.pass(utt.audio_start, to, self.shared.config.final_pad_ms, &[])?;
        let end_ms = speech_end_ms.max(utt.speech_start_ms);
        if self.shared.is_invented(&pass) {
            self.stats.dropped += 1;
            tracing::info!(
                meeting_id = %self.spec.meeting_id,
                source = %self.spec.source,
                start_ms = utt.speech_start_ms,
                end_ms,
                avg_logprob = pass.avg_logprob,
                no_speech_prob = pass.no_speech_prob,
                "final dropped as not speech"
            );
            // Interims already out need a final to be replaced by: an empty one retracts them.
            return Ok(utt.published_interim.then(|| Hypothesis {
                text: String::new(),
                is_final: true,
                start_ms: utt.speech_start_ms,
                end_ms,
                words: None,
                confidence: Some(0.0),
            }));
        }
        self.stats.finals += 1;
        Ok(Some(Hypothesis {
            text: pass.text,
            is_final: true,
            start_ms: utt.speech_start_ms,
            end_ms,
            words: None,
            confidence: Some(pass.avg_logprob.exp().clamp(0.0, 1.0)),
        }))
    }

    /// Where to split the open utterance: the quietest [`SPLIT_WINDOW_MS`] in the last
    /// part of the limit, as an absolute sample.
    fn split_point(&self, utt_start: u64) -> u64 {
        let limit = self.shared.config.max_utterance_ms * SAMPLES_PER_MS;
        let window = (SPLIT_WINDOW_MS * SAMPLES_PER_MS) as usize;
        let from = utt_start + limit * SPLIT_SEARCH_FROM_PERCENT / 100;
        let audio = self.samples(from, utt_start + limit);
        let step = (ANALYSIS_WINDOW_MS as u64 * SAMPLES_PER_MS) as usize;
        let mut best = (f32::INFINITY, audio.len().saturating_sub(window) / 2);
        let mut at = 0;
        while at + window <= audio.len() {
            let energy: f32 = audio[at..at + window].iter().map(|s| s * s).sum();
            if energy < best.0 {
                best = (energy, at);
            }
            at += step;
        }
        from + (best.1 + window / 2) as u64
    }

    fn on_vad(&mut self, event: VadEvent, out: &mut Vec<Hypothesis>) -> Result<(), EngineError> {
        match event {
            VadEvent::SpeechStarted { at_ms } => {
                let speech_start_ms = self.vad_ms(at_ms);
                let audio_start = (speech_start_ms.saturating_sub(PRE_ROLL_MS) * SAMPLES_PER_MS)
                    .max(self.buf_start);
                self.stats.utterances += 1;
                self.utterance = Some(Utterance {
                    audio_start,
                    speech_start_ms,
                    last_interim_at: speech_start_ms * SAMPLES_PER_MS,
                    last_interim: String::new(),
                    published_interim: false,
                    interim_tokens: Vec::new(),
                });
            }
            VadEvent::SpeechEnded { at_ms, .. } => {
                let speech_end_ms = self.vad_ms(at_ms);
                let to = ((speech_end_ms + POST_ROLL_MS) * SAMPLES_PER_MS).min(self.end);
                out.extend(self.finalise(to, speech_end_ms)?);
            }
        }
        Ok(())
    }

    /// Splits an utterance that reached the limit, then maybe publishes an interim.
    fn while_speaking(&mut self, out: &mut Vec<Hypothesis>) -> Result<(), EngineError> {
        let config = self.shared.config.clone();
        let Some(utt) = self.utterance.as_ref() else {
            return Ok(());
        };
        let limit = config.max_utterance_ms * SAMPLES_PER_MS;
        if self.end - utt.audio_start >= limit {
            let split = self.split_point(utt.audio_start);
            let split_ms = split / SAMPLES_PER_MS;
            self.stats.splits += 1;
            out.extend(self.finalise(split, split_ms)?);
            self.utterance = Some(Utterance {
                audio_start: split,
                speech_start_ms: split_ms,
                last_interim_at: split,
                last_interim: String::new(),
                published_interim: false,
                interim_tokens: Vec::new(),
            });
            return Ok(());
        }
        let interval = config.interim_interval_ms * SAMPLES_PER_MS;
        let due = config.interims
            && self.end - utt.last_interim_at >= interval
            && self.end - utt.audio_start >= MIN_INTERIM_AUDIO_MS * SAMPLES_PER_MS;
        if !due {
            return Ok(());
        }
        // Still due at the next push: the interim waits for idle capacity, it is not lost.
        if self.shared.busy() {
            self.stats.interims_deferred += 1;
            return Ok(());
        }
        let (from, start_ms) = (utt.audio_start, utt.speech_start_ms);
        let keep = utt
            .interim_tokens
            .len()
            .saturating_sub(INTERIM_REVISED_TOKENS);
        let prefix = utt.interim_tokens[..keep].to_vec();
        let pass = self.pass(from, self.end, config.interim_pad_ms, &prefix)?;
        let end_ms = self.end / SAMPLES_PER_MS;
        let invented = self.shared.is_invented(&pass);
        let utt = self.utterance.as_mut().expect("utterance is open");
        utt.last_interim_at = self.end;
        if !invented {
            utt.interim_tokens = pass.tokens.clone();
        }
        if invented || pass.text == utt.last_interim {
            return Ok(());
        }
        utt.last_interim = pass.text.clone();
        utt.published_interim = true;
        self.stats.interims += 1;
        out.push(Hypothesis {
            text: pass.text,
            is_final: false,
            start_ms,
            end_ms,
            words: None,
            confidence: Some(pass.avg_logprob.exp().clamp(0.0, 1.0)),
        });
        Ok(())
    }

    /// Drops audio no future pass needs and moves the settled position.
    fn trim(&mut self) {
        let keep_from = match &self.utterance {
            Some(utt) => utt.audio_start,
            // A speech start is reported after SPEECH_START_MS and one window, dated back to
            // its first window; the pre-roll goes back further still.
            None => self.end.saturating_sub(
                (PRE_ROLL_MS + u64::from(SPEECH_START_MS + 2 * ANALYSIS_WINDOW_MS))
                    * SAMPLES_PER_MS,
            ),
        };
        let keep_from = keep_from.max(self.buf_start);
        self.settled_ms = self.settled_ms.max(keep_from / SAMPLES_PER_MS);
        let drop = (keep_from - self.buf_start) as usize;
        if drop > 0 {
            self.buf.drain(..drop.min(self.buf.len()));
            self.buf_start = keep_from;
        }
    }
}

impl Session for WhisperSession {
    fn push(&mut self, pcm_s16le: &[u8]) -> Result<Vec<Hypothesis>, EngineError> {
        if self.closed {
            return Err(EngineError::Closed);
        }
        self.append(pcm_s16le);
        let mut out = Vec::new();
        for event in self.vad.push(pcm_s16le) {
            self.on_vad(event, &mut out)?;
        }
        self.while_speaking(&mut out)?;
        self.trim();
        Ok(out)
    }

    fn flush(&mut self) -> Result<Vec<Hypothesis>, EngineError> {
        if self.closed {
            return Err(EngineError::Closed);
        }
        self.closed = true;
        let mut out = Vec::new();
        for event in self.vad.finish() {
            self.on_vad(event, &mut out)?;
        }
        // The VAD closes an open segment in finish(); this covers a split remainder.
        if let Some(utt) = self.utterance.clone() {
            out.extend(self.finalise(
                self.end,
                (self.end / SAMPLES_PER_MS).max(utt.speech_start_ms),
            )?);
        }
        self.settled_ms = self.settled_ms.max(self.end / SAMPLES_PER_MS);
        self.buf.clear();
        self.buf_start = self.end;
        Ok(out)
    }

    fn settled_ms(&self) -> u64 {
        self.settled_ms
    }
}

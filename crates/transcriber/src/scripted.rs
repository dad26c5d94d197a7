//! `ScriptedEngine`: a deterministic **test double** of the engine collaborator (no model),
//! so the worker's tests can assert exact segments. It hears an "utterance" in every run of
//! non-zero samples that is followed by [`ScriptedConfig::end_silence_ms`] of zero samples,
//! names it after its first sample's value (`utt<value>`), and times it to the sample: the
//! final spans the first to the last non-zero sample. While an utterance is open it emits an
//! interim every [`ScriptedConfig::interim_every_ms`] of audio, counted in samples, so what
//! it says does not depend on how the audio was batched. The real engines' tests are
//! theirs (`earshot-asr`, the Deepgram bridge).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use earshot_asr_engine::{
    Engine, EngineError, Hypothesis, Session, SessionSpec, BYTES_PER_SAMPLE, SAMPLE_RATE_HZ,
};

/// Samples per millisecond at the engine's rate.
const SAMPLES_PER_MS: u64 = SAMPLE_RATE_HZ as u64 / 1000;

/// How the double behaves.
#[derive(Debug, Clone, Copy)]
pub struct ScriptedConfig {
    /// Zero samples, in ms, that end an utterance.
    pub end_silence_ms: u64,
    /// Audio, in ms from the utterance's start, between two interims.
    pub interim_every_ms: u64,
    /// Time each `push` takes (a stand-in for model time), to make a worker fall behind.
    pub push_delay: Duration,
}

impl Default for ScriptedConfig {
    fn default() -> Self {
        ScriptedConfig {
            end_silence_ms: 200,
            interim_every_ms: 200,
            push_delay: Duration::ZERO,
        }
    }
}

/// The test double of an engine (see the module docs).
#[derive(Debug, Default)]
pub struct ScriptedEngine {
    config: ScriptedConfig,
    opened: Arc<Mutex<Vec<SessionSpec>>>,
}

impl ScriptedEngine {
    /// A double with `config`.
    pub fn new(config: ScriptedConfig) -> Self {
        ScriptedEngine {
            config,
            opened: Arc::default(),
        }
    }

    /// Every session opened so far, in order (where each started: `start_ms`).
    pub fn opened(&self) -> Vec<SessionSpec> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Engine for ScriptedEngine {
    fn name(&self) -> &str {
        "scripted-test-double"
    }

    fn open(&self, spec: &SessionSpec) -> Result<Box<dyn Session>, EngineError> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(spec.clone());
        Ok(Box::new(ScriptedSession {
            config: self.config,
            sample: spec.start_ms * SAMPLES_PER_MS,
            carry: None,
            utterance: None,
            closed: false,
        }))
    }
}

/// An utterance being heard.
#[derive(Debug, Clone, Copy)]
struct Utterance {
    value: i16,
    start: u64,
    /// One past the last non-zero sample.
    end: u64,
    next_interim: u64,
}

/// A session of the double.
#[derive(Debug)]
struct ScriptedSession {
    config: ScriptedConfig,
    /// Absolute index of the next sample.
    sample: u64,
    /// First byte of a sample split across pushes.
    carry: Option<u8>,
    utterance: Option<Utterance>,
    closed: bool,
}

fn ms(sample: u64) -> u64 {
    sample / SAMPLES_PER_MS
}

/// An utterance of this sample value is one the double "drops as not speech" at its end,
/// as Whisper's invention filter does: interims while it lasts, then an empty final that
/// takes them back.
pub const INVENTED: i16 = -1;

impl Utterance {
    fn hypothesis(&self, is_final: bool) -> Hypothesis {
        let retracted = is_final && self.value == INVENTED;
        Hypothesis {
            text: if retracted {
                String::new()
            } else {
                format!("utt{}", self.value)
            },
            is_final,
            start_ms: ms(self.start),
            end_ms: ms(self.end),
            words: None,
            confidence: Some(0.9),
        }
    }
}

impl ScriptedSession {
    fn hear(&mut self, s: i16, out: &mut Vec<Hypothesis>) {
        let n = self.sample;
        self.sample += 1;
        let silence = self.config.end_silence_ms * SAMPLES_PER_MS;
        let every = self.config.interim_every_ms.max(1) * SAMPLES_PER_MS;
        match (&mut self.utterance, s) {
            (None, 0) => {}
            (None, value) => {
                self.utterance = Some(Utterance {
                    value,
                    start: n,
                    end: n + 1,
                    next_interim: n + every,
                });
            }
            (Some(u), 0) if n + 1 - u.end >= silence => {
                out.push(u.hypothesis(true));
                self.utterance = None;
            }
            (Some(u), value) => {
                if value != 0 {
                    u.end = n + 1;
                }
                if n + 1 >= u.next_interim {
                    u.next_interim += every;
                    out.push(u.hypothesis(false));
                }
            }
        }
    }
}

impl Session for ScriptedSession {
    fn push(&mut self, pcm: &[u8]) -> Result<Vec<Hypothesis>, EngineError> {
        if self.closed {
            return Err(EngineError::Closed);
        }
        std::thread::sleep(self.config.push_delay);
        let mut out = Vec::new();
        let mut bytes = pcm.iter().copied();
        if let Some(first) = self.carry.take() {
            match bytes.next() {
                Some(second) => self.hear(i16::from_le_bytes([first, second]), &mut out),
                None => self.carry = Some(first),
            }
        }
        let rest: Vec<u8> = bytes.collect();
        let mut chunks = rest.chunks_exact(BYTES_PER_SAMPLE);
        for c in &mut chunks {
            self.hear(i16::from_le_bytes([c[0], c[1]]), &mut out);
        }
        if let [last] = chunks.remainder() {
            self.carry = Some(*last);
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<Vec<Hypothesis>, EngineError> {
        if self.closed {
            return Err(EngineError::Closed);
        }
        self.closed = true;
        Ok(self
            .utterance
            .take()
            .map(|u| vec![u.hypothesis(true)])
            .unwrap_or_default())
    }

    fn settled_ms(&self) -> u64 {
        match &self.utterance {
            Some(u) => ms(u.start),
            None => ms(self.sample),
        }
    }
}

/// `ms` of constant samples `value` (0: silence), 16 kHz s16le mono.
pub fn tone(value: i16, ms: u64) -> Vec<u8> {
    let samples = ms * SAMPLES_PER_MS;
    (0..samples).flat_map(|_| value.to_le_bytes()).collect()
}

/// Plays the ingest component's part in Redis for tests without the wasm components: the
/// same announcement script (`earshot_protocol::asr::ANNOUNCE_SCRIPT`) and the same audio
/// entries (`XADD audio:{m}:{s} MAXLEN ~ … * seq bytes session pcm`).
pub struct IngestStandIn {
    con: redis::Connection,
    meeting: earshot_protocol::MeetingId,
    source: earshot_protocol::Source,
    session: String,
    seq: u64,
}

impl IngestStandIn {
    /// Announces a new session `session` of `(meeting, source)` at the Redis at `url`.
    pub fn open(url: &str, meeting: &str, source: &str, session: &str) -> redis::RedisResult<Self> {
        let con = redis::Client::open(url)?.get_connection()?;
        let invalid = |what: &str| {
            redis::RedisError::from((redis::ErrorKind::Client, "invalid", what.to_owned()))
        };
        let mut s = IngestStandIn {
            con,
            meeting: earshot_protocol::MeetingId::parse(meeting).map_err(|_| invalid(meeting))?,
            source: earshot_protocol::Source::parse(source).map_err(|_| invalid(source))?,
            session: session.to_owned(),
            seq: 0,
        };
        s.announce(earshot_protocol::asr::EVENT_OPEN)?;
        Ok(s)
    }

    fn announce(&mut self, event: &str) -> redis::RedisResult<()> {
        use earshot_protocol::asr::{announce_args, announce_keys, ANNOUNCE_SCRIPT};
        let keys = announce_keys(&self.meeting, self.source);
        let args = announce_args(&self.meeting, self.source, &self.session, event);
        redis::cmd("EVAL")
            .arg(ANNOUNCE_SCRIPT)
            .arg(keys.len())
            .arg(&keys[..])
            .arg(&args[..])
            .query::<String>(&mut self.con)
            .map(drop)
    }

    /// Appends `pcm` as frames of `frame_bytes`, as ingest stores a client's frames.
    pub fn audio(&mut self, pcm: &[u8], frame_bytes: usize) -> redis::RedisResult<()> {
        use earshot_protocol::ids::{
            audio_stream_key, AUDIO_FIELD_BYTES, AUDIO_FIELD_PCM, AUDIO_FIELD_SEQ,
            AUDIO_FIELD_SESSION,
        };
        let key = audio_stream_key(&self.meeting, self.source);
        for frame in pcm.chunks(frame_bytes.max(1)) {
            self.seq += 1;
            redis::cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(earshot_protocol::limits::AUDIO_STREAM_MAXLEN)
                .arg("*")
                .arg(AUDIO_FIELD_SEQ)
                .arg(self.seq)
                .arg(AUDIO_FIELD_BYTES)
                .arg(frame.len())
                .arg(AUDIO_FIELD_SESSION)
                .arg(&self.session)
                .arg(AUDIO_FIELD_PCM)
                .arg(frame)
                .query::<String>(&mut self.con)?;
        }
        Ok(())
    }

    /// Announces the session's end.
    pub fn close(mut self) -> redis::RedisResult<()> {
        self.announce(earshot_protocol::asr::EVENT_CLOSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finals(h: &[Hypothesis]) -> Vec<(String, u64, u64)> {
        h.iter()
            .filter(|h| h.is_final)
            .map(|h| (h.text.clone(), h.start_ms, h.end_ms))
            .collect()
    }

    #[test]
    fn utterances_are_timed_to_the_sample_whatever_the_batching() {
        let mut audio = tone(0, 100);
        audio.extend(tone(7, 500));
        audio.extend(tone(0, 300));
        audio.extend(tone(9, 100));
        let engine = ScriptedEngine::default();
        let mut whole = engine.open(&SessionSpec::new("m", "mic")).unwrap();
        let mut all = whole.push(&audio).unwrap();
        assert_eq!(whole.settled_ms(), 900, "the open utterance is not settled");
        all.extend(whole.flush().unwrap());
        assert_eq!(
            finals(&all),
            [
                ("utt7".to_owned(), 100, 600),
                ("utt9".to_owned(), 900, 1000)
            ]
        );
        let interims = all.iter().filter(|h| !h.is_final).count();
        assert_eq!(
            interims, 3,
            "every 200 ms from the start: at 300, 500 and 700 ms (in the closing silence)"
        );

        let mut odd = engine.open(&SessionSpec::new("m", "mic")).unwrap();
        let mut pieces = Vec::new();
        for chunk in audio.chunks(333) {
            pieces.extend(odd.push(chunk).unwrap());
        }
        pieces.extend(odd.flush().unwrap());
        assert_eq!(
            pieces, all,
            "odd chunks, split samples: the same hypotheses"
        );
        assert!(odd.push(&[0, 0]).is_err(), "closed after flush");
    }

    #[test]
    fn a_resumed_session_counts_from_its_start() {
        let engine = ScriptedEngine::default();
        let mut s = engine
            .open(&SessionSpec::new("m", "sys").starting_at(2_000))
            .unwrap();
        let mut audio = tone(3, 100);
        audio.extend(tone(0, 200));
        let h = s.push(&audio).unwrap();
        assert_eq!(finals(&h), [("utt3".to_owned(), 2_000, 2_100)]);
        assert_eq!(s.settled_ms(), 2_300);
        assert_eq!(engine.opened()[0].start_ms, 2_000);
    }
}

//! The local Whisper engine: a loaded model, its thread pool and settings, shared by
//! every session it opens.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use earshot_asr_engine::{Engine, EngineError, Session, SessionSpec};

use crate::decode::{Decoder, Pass};
use crate::mel::MelFrontend;
use crate::model::{Dims, Model};
use crate::model_dir::{self, Layout, ModelError};
use crate::session::WhisperSession;
use crate::tokenizer::Tokenizer;

/// Interim hypotheses at most this often per stream, in milliseconds of audio: a pass
/// costs an encoder run (tens of milliseconds for a few seconds of tiny.en on 2 cores), so
/// one a second keeps several streams real-time while the page still updates visibly.
pub const DEFAULT_INTERIM_INTERVAL_MS: u64 = 1_000;

/// Longest utterance decoded as one, in milliseconds; a longer one is split at its quietest
/// point. Whisper's window is 30 s, but the encoder's cost grows with the audio and a
/// final every ≤ 15 s keeps latency bounded during a monologue.
pub const DEFAULT_MAX_UTTERANCE_MS: u64 = 15_000;

/// Features of a final pass are zero-padded to at least this much audio, in milliseconds.
/// Whisper was trained on 30 s windows; very short unpadded inputs make it guess (and
/// loop: unpadded, 3 of the bench's 12 clips ran to the token budget), while padding costs
/// encoder time. On the bench's 12 clips 10 s, 6 s and 4 s all gave 15.1 % WER, but 6 s
/// raised `tests/speech.rs`'s mic WER from within 25 % to 29.4 % ("nine" → "I did", "whole
/// team" → "phone team"), so 10 s stays.
pub const DEFAULT_FINAL_PAD_MS: u64 = 10_000;

/// Interim passes are padded to at least this much audio, in milliseconds (they are
/// replaced by the final, so they trade accuracy for speed).
pub const DEFAULT_INTERIM_PAD_MS: u64 = 0;

/// Whisper's no-speech threshold: with a low log-probability, a no-speech probability
/// above it marks the pass as silence.
pub const DEFAULT_NO_SPEECH_THRESHOLD: f32 = 0.6;

/// Whisper's log-probability threshold (mean per token), paired with the no-speech test.
pub const DEFAULT_LOGPROB_THRESHOLD: f32 = -1.0;

/// A pass whose mean token log-probability is below this is dropped whatever the
/// no-speech probability: the model is guessing (real speech on tiny.en scores above −0.8).
pub const DEFAULT_MIN_LOGPROB: f32 = -1.5;

/// Settings of the local engine.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperConfig {
    /// Threads the model runs on (one pool shared by all sessions of the engine).
    pub threads: usize,
    /// Whether sessions publish interim hypotheses at all.
    pub interims: bool,
    /// See [`DEFAULT_INTERIM_INTERVAL_MS`].
    pub interim_interval_ms: u64,
    /// See [`DEFAULT_MAX_UTTERANCE_MS`].
    pub max_utterance_ms: u64,
    /// See [`DEFAULT_FINAL_PAD_MS`].
    pub final_pad_ms: u64,
    /// See [`DEFAULT_INTERIM_PAD_MS`].
    pub interim_pad_ms: u64,
    /// See [`DEFAULT_NO_SPEECH_THRESHOLD`].
    pub no_speech_threshold: f32,
    /// See [`DEFAULT_LOGPROB_THRESHOLD`].
    pub logprob_threshold: f32,
    /// See [`DEFAULT_MIN_LOGPROB`].
    pub min_logprob: f32,
}

impl Default for WhisperConfig {
    fn default() -> Self {
        WhisperConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            interims: true,
            interim_interval_ms: DEFAULT_INTERIM_INTERVAL_MS,
            max_utterance_ms: DEFAULT_MAX_UTTERANCE_MS,
            final_pad_ms: DEFAULT_FINAL_PAD_MS,
            interim_pad_ms: DEFAULT_INTERIM_PAD_MS,
            no_speech_threshold: DEFAULT_NO_SPEECH_THRESHOLD,
            logprob_threshold: DEFAULT_LOGPROB_THRESHOLD,
            min_logprob: DEFAULT_MIN_LOGPROB,
        }
    }
}

/// Shortest utterance limit accepted, in milliseconds: below it splits would cut words.
const MIN_MAX_UTTERANCE_MS: u64 = 2_000;

/// Longest utterance limit accepted, in milliseconds: the encoder sees at most 30 s.
const MAX_MAX_UTTERANCE_MS: u64 = 29_000;

impl WhisperConfig {
    fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| ModelError::Json {
            path: PathBuf::from("<config>"),
            reason,
        };
        if self.threads == 0 {
            return Err(bad("threads must be at least 1".into()));
        }
        if !(MIN_MAX_UTTERANCE_MS..=MAX_MAX_UTTERANCE_MS).contains(&self.max_utterance_ms) {
            return Err(bad(format!(
                "max_utterance_ms {} outside {MIN_MAX_UTTERANCE_MS}..={MAX_MAX_UTTERANCE_MS}",
                self.max_utterance_ms
            )));
        }
        Ok(())
    }
}

/// The shared half of the engine.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) model: Model,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) mel: MelFrontend,
    pub(crate) suppress: Vec<f32>,
    pub(crate) suppress_begin: Vec<u32>,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) config: WhisperConfig,
    /// Passes running or queued on the pool, over every session of the engine.
    pub(crate) in_flight: AtomicUsize,
}

/// Counts a pass in [`Shared::in_flight`] for as long as it lives (errors included).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// One pass over `samples`, on the engine's pool, padded to `pad_ms`, decoding on
    /// from `prefix` (see [`Decoder::run`]).
    pub(crate) fn pass(
        &self,
        samples: &[f32],
        pad_ms: u64,
        prefix: &[u32],
    ) -> candle_core::Result<Pass> {
        let decoder = Decoder {
            model: &self.model,
            tokenizer: &self.tokenizer,
            mel: &self.mel,
            suppress: &self.suppress,
            suppress_begin: &self.suppress_begin,
        };
        let min_frames = (pad_ms as usize * crate::SAMPLE_RATE as usize / 1000) / crate::mel::HOP;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _counted = InFlight(&self.in_flight);
        self.pool.install(|| decoder.run(samples, min_frames, prefix))
    }

    /// Whether as many passes as the pool has threads are running or queued: an interim
    /// now would delay them (finals among them), so interims use only spare capacity and
    /// are the first work dropped under load. (At any pass in flight, two sources talking
    /// at once on 2 threads starved each other's interims: `tests/speech.rs`.)
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) >= self.config.threads
    }

    /// Whether a pass is Whisper inventing text (silence, noise, a loop).
    pub(crate) fn is_invented(&self, pass: &Pass) -> bool {
        let c = &self.config;
        pass.text.is_empty()
            || pass.avg_logprob < c.min_logprob
            || (pass.no_speech_prob > c.no_speech_threshold
                && pass.avg_logprob < c.logprob_threshold)
    }
}

/// Whisper on the CPU: loads a model directory once and opens sessions over it.
#[derive(Clone)]
pub struct WhisperEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WhisperEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperEngine")
            .field("name", &self.shared.name)
            .field("dims", &self.shared.model.dims())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl WhisperEngine {
    /// Loads the model in `dir` (CTranslate2 or Hugging Face layout).
    pub fn load(dir: &Path, config: WhisperConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let raw = model_dir::load(dir)?;
        let layout = raw.layout;
        let tokenizer = Tokenizer::load(dir)?;
        let mut suppress_ids = raw.suppress.clone();
        let suppress_begin = raw.suppress_begin.clone();
        let model = Model::from_raw(raw)?;
        let dims = model.dims();
        // Every special token from <|startoftranscript|> on (languages, tasks, no-speech,
        // timestamps) is control, never text; only <|endoftext|> may be emitted.
        suppress_ids.extend(tokenizer.special.start_of_transcript..dims.vocab as u32);
        let mut suppress = vec![0f32; dims.vocab];
        for id in suppress_ids {
            if let Some(s) = suppress.get_mut(id as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        let mel = MelFrontend::new(dims.n_mels, crate::SAMPLE_RATE)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("whisper-{i}"))
            .build()
            .map_err(|e| ModelError::Json {
                path: PathBuf::from("<config>"),
                reason: format!("cannot start {} threads: {e}", config.threads),
            })?;
        let folder = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "whisper".to_string());
        let name = if folder.starts_with("whisper") {
            folder
        } else {
            format!("whisper-{folder}")
        };
        tracing::info!(
            model = %dir.display(),
            layout = ?layout,
            d_model = dims.d_model,
            layers = dims.encoder_layers,
            threads = config.threads,
            "whisper model loaded"
        );
        Ok(WhisperEngine {
            shared: Arc::new(Shared {
                name,
                model,
                tokenizer,
                mel,
                suppress,
                suppress_begin,
                pool,
                config,
                in_flight: AtomicUsize::new(0),
            }),
        })
    }

    /// The model's sizes.
    pub fn dims(&self) -> Dims {
        self.shared.model.dims()
    }

    /// The settings in force.
    pub fn config(&self) -> &WhisperConfig {
        &self.shared.config
    }

    /// Transcribes one stretch of 16 kHz mono audio (−1..1) in a single pass, padded as a
    /// final is; no VAD, no filtering. For benchmarks and tools.
    pub fn transcribe(&self, samples: &[f32]) -> Result<Pass, EngineError> {
        self.shared
            .pass(samples, self.shared.config.final_pad_ms, &[])
            .map_err(|e| EngineError::Inference(e.to_string()))
    }

    /// A session with the concrete type (for callers that want its statistics).
    pub fn open_session(&self, spec: &SessionSpec) -> WhisperSession {
        WhisperSession::new(self.shared.clone(), spec.clone())
    }

    /// Layout of the model folder at `dir`, without loading it.
    pub fn layout_of(dir: &Path) -> Result<Layout, ModelError> {
        model_dir::detect_layout(dir)
    }
}

impl Engine for WhisperEngine {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn open(&self, spec: &SessionSpec) -> Result<Box<dyn Session>, EngineError> {
        Ok(Box::new(self.open_session(spec)))
    }
}

impl From<ModelError> for EngineError {
    fn from(e: ModelError) -> Self {
        EngineError::Setup(e.to_string())
    }
}

//! Local speech-to-text for Earshot: Whisper on the CPU in pure Rust (candle), streamed
//! around the VAD, behind the [`earshot_asr_engine`] interface (re-exported here).
//!
//! ```no_run
//! use earshot_asr::{Engine, Session, SessionSpec, WhisperConfig, WhisperEngine};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = WhisperEngine::load("/models/whisper-tiny.en".as_ref(), WhisperConfig::default())?;
//! let mut session = engine.open(&SessionSpec::new("meeting-1", "mic"))?;
//! let pcm: Vec<u8> = Vec::new(); // 16 kHz s16le mono, as ingest stores it
//! for hypothesis in session.push(&pcm)? {
//!     println!("{hypothesis}");
//! }
//! for hypothesis in session.flush()? {
//!     println!("{hypothesis}");
//! }
//! # Ok(()) }
//! ```
//!
//! # How it streams
//!
//! Whisper is not a streaming model. Each session runs the project's energy VAD
//! ([`earshot_vad::Vad`]) over the audio; silence is never sent to the model. While an
//! utterance is open, at most one interim pass per [`WhisperConfig::interim_interval_ms`]
//! of audio (and at most one per `push`, so a worker catching up on a backlog skips
//! interims first; and none while the engine already runs as many passes as it has
//! threads, so under load interims wait for spare capacity and finals go first) encodes just the audio
//! present. When the VAD reports the end, one more
//! pass (features padded to [`WhisperConfig::final_pad_ms`]) gives the final. An utterance
//! reaching [`WhisperConfig::max_utterance_ms`] is finalised at its quietest 100 ms in the
//! second half, and the rest continues as a new utterance.
//!
//! A final is dropped when Whisper is inventing: the no-speech probability above
//! [`WhisperConfig::no_speech_threshold`] with a mean token log-probability below
//! [`WhisperConfig::logprob_threshold`] (Whisper's own rule), or a mean log-probability
//! below [`WhisperConfig::min_logprob`]. If interims of a dropped utterance were already
//! returned, an empty final retracts them. A decode that loops ("thank you. thank you.
//! thank you.") is cut to one copy of the loop.
//!
//! Hypothesis times come from the VAD (speech start and end, in stream milliseconds), not
//! from Whisper's timestamps: greedy decoding runs without timestamp tokens (faster), so
//! there are no per-word times (`words` is `None`); `confidence` is the exponential of
//! the mean token log-probability.
//!
//! # Model folders
//!
//! CTranslate2/faster-whisper (`model.bin` binary v6, float16/32, `config.json`,
//! `tokenizer.json`) and Hugging Face (`model.safetensors`, `config.json`,
//! `tokenizer.json`). `scripts/fetch-model.sh` fills [`default_model_dir`] with tiny.en.
//! Nothing is downloaded at build or run time.

mod decode;
mod engine;
mod mel;
mod model;
mod model_dir;
mod session;
mod tokenizer;
pub mod wer;

pub use decode::{
    Pass, PassTimings, LOOP_COPIES, MAX_DECODE_TOKENS, MAX_LOOP_PERIOD, MAX_TOKENS_PER_SECOND,
    MIN_LOOP_TOKENS, TOKEN_SLACK,
};
pub use earshot_asr_engine::{
    pcm_ms, Engine, EngineError, Hypothesis, Session, SessionSpec, Word, BYTES_PER_SAMPLE,
};
pub use engine::{
    WhisperConfig, WhisperEngine, DEFAULT_FINAL_PAD_MS, DEFAULT_INTERIM_INTERVAL_MS,
    DEFAULT_INTERIM_PAD_MS, DEFAULT_LOGPROB_THRESHOLD, DEFAULT_MAX_UTTERANCE_MS,
    DEFAULT_MIN_LOGPROB, DEFAULT_NO_SPEECH_THRESHOLD,
};
pub use model::Dims;
pub use model_dir::{Layout, ModelError};
pub use session::{
    SessionStats, WhisperSession, INTERIM_REVISED_TOKENS, MIN_INTERIM_AUDIO_MS, POST_ROLL_MS, PRE_ROLL_MS,
    SPLIT_SEARCH_FROM_PERCENT, SPLIT_WINDOW_MS,
};

/// Sample rate the model and every session take, in Hz.
pub const SAMPLE_RATE: u32 = earshot_asr_engine::SAMPLE_RATE_HZ;

/// Environment variable naming the model folder (the fetch script honours it too).
pub const MODEL_DIR_ENV: &str = "EARSHOT_MODEL_DIR";

/// Where `scripts/fetch-model.sh` puts tiny.en: `$EARSHOT_MODEL_DIR`, else
/// `$HOME/.cache/earshot/models/whisper-tiny.en` (outside any clone, shared by them).
pub fn default_model_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(dir.into());
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(std::path::Path::new(&home).join(".cache/earshot/models/whisper-tiny.en"))
}

/// 16-bit little-endian PCM as −1..1 floats (a trailing odd byte is ignored).
pub fn pcm_to_f32(pcm_s16le: &[u8]) -> Vec<f32> {
    pcm_s16le
        .chunks_exact(2)
        .map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0)
        .collect()
}

//! The speech-to-text engine interface of Earshot.
//!
//! An [`Engine`] opens one streaming recognition [`Session`] per `(meeting, source)`
//! audio stream. The transcription worker pushes the stream's PCM into the session as
//! ingest stored it (16 kHz, signed 16-bit little-endian, mono: [`SAMPLE_RATE_HZ`]),
//! publishes every [`Hypothesis`] the session returns, and flushes the session at the
//! stream's end. Interim hypotheses of an utterance come before its final one and are
//! replaced by it; times are milliseconds into the source's stream, counted from the
//! stream's first sample (a session resumed mid-stream is told where it starts, see
//! [`SessionSpec::start_ms`]).
//!
//! The worker knows nothing engine-specific: the local Whisper engine (`earshot-asr`)
//! and a bridge to a streaming service implement the same two traits. Calls may block
//! (a local engine runs the model inside `push`), so an async caller runs them on a
//! blocking thread.

use std::fmt;

/// Sample rate every session takes, in Hz: what ingest stores and Whisper was trained on.
pub const SAMPLE_RATE_HZ: u32 = 16_000;

/// Bytes of one sample of the input: signed 16-bit little-endian, one channel.
pub const BYTES_PER_SAMPLE: usize = 2;

/// Length of `bytes` of input PCM, in milliseconds (whole samples only).
pub fn pcm_ms(bytes: usize) -> u64 {
    (bytes / BYTES_PER_SAMPLE) as u64 * 1000 / u64::from(SAMPLE_RATE_HZ)
}

/// Which audio stream a session transcribes, and from where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// Meeting the stream belongs to (for logs and for engines that tag requests).
    pub meeting_id: String,
    /// Source of the stream within the meeting (`mic` or `sys`).
    pub source: String,
    /// Stream position of the first byte that will be pushed, in milliseconds: zero for
    /// a fresh stream, the committed position when a worker resumes one, so hypothesis
    /// times stay times into the whole stream.
    pub start_ms: u64,
}

impl SessionSpec {
    /// A spec for a stream transcribed from its first sample.
    pub fn new(meeting_id: impl Into<String>, source: impl Into<String>) -> Self {
        SessionSpec {
            meeting_id: meeting_id.into(),
            source: source.into(),
            start_ms: 0,
        }
    }

    /// The same stream, resumed at `start_ms` milliseconds.
    pub fn starting_at(mut self, start_ms: u64) -> Self {
        self.start_ms = start_ms;
        self
    }
}

/// One recognised word, when the engine times words.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// The word as written (punctuation attached, no surrounding spaces).
    pub text: String,
    /// Start, in milliseconds into the source's stream.
    pub start_ms: u64,
    /// End, in milliseconds into the source's stream.
    pub end_ms: u64,
    /// The engine's confidence in the word, 0 to 1, when it gives one.
    pub confidence: Option<f32>,
}

/// What the engine heard in one stretch of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// The transcript of the stretch (trimmed; never empty).
    pub text: String,
    /// `false` for an interim guess that a later hypothesis of the same utterance
    /// replaces, `true` for the utterance's last word on it.
    pub is_final: bool,
    /// Start of the stretch, in milliseconds into the source's stream.
    pub start_ms: u64,
    /// End of the stretch, in milliseconds into the source's stream.
    pub end_ms: u64,
    /// Per-word times, when the engine gives them.
    pub words: Option<Vec<Word>>,
    /// The engine's confidence in the whole hypothesis, 0 to 1, when it gives one.
    pub confidence: Option<f32>,
}

/// Why an engine or a session failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model or engine configuration cannot be used (missing file, bad tensor, bad
    /// setting): not worth retrying with the same inputs.
    #[error("engine setup failed: {0}")]
    Setup(String),
    /// Running the model failed on this audio.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The service refused the credentials (never retried: a retry storm would not help).
    #[error("engine refused the credentials: {0}")]
    Unauthorized(String),
    /// The link to a remote engine failed; the caller may retry with backoff.
    #[error("engine unreachable: {0}")]
    Transport(String),
    /// The session was already flushed or failed before; open a new one.
    #[error("session is closed")]
    Closed,
}

impl EngineError {
    /// Whether retrying the same call later can succeed (transport failures only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, EngineError::Transport(_))
    }
}

/// A speech-to-text engine: a factory of streaming sessions, shared by every stream a
/// worker transcribes.
pub trait Engine: Send + Sync {
    /// Short name for logs and metrics (`whisper-tiny.en`, `deepgram`).
    fn name(&self) -> &str;

    /// Opens a session for one audio stream.
    fn open(&self, spec: &SessionSpec) -> Result<Box<dyn Session>, EngineError>;
}

/// A streaming recognition session over one `(meeting, source)` audio stream.
pub trait Session: Send {
    /// Feeds the next PCM bytes of the stream (16 kHz s16le mono, any length, a sample
    /// may be split across calls) and returns the hypotheses ready now, in stream order.
    fn push(&mut self, pcm_s16le: &[u8]) -> Result<Vec<Hypothesis>, EngineError>;

    /// Returns hypotheses that became ready without new audio (a remote engine's late
    /// results); engines that only work inside `push` return none.
    fn poll(&mut self) -> Result<Vec<Hypothesis>, EngineError> {
        Ok(Vec::new())
    }

    /// Ends the stream: finishes the open utterance and returns the last hypotheses.
    /// The session is closed afterwards.
    fn flush(&mut self) -> Result<Vec<Hypothesis>, EngineError>;

    /// Stream position, in milliseconds, before which no later hypothesis needs audio:
    /// a worker that commits this position and dies loses no words when another worker
    /// resumes the stream from it. It never moves backwards.
    fn settled_ms(&self) -> u64;
}

impl fmt::Display for Hypothesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_final { "final" } else { "interim" };
        write!(
            f,
            "[{kind} {}-{} ms] {}",
            self.start_ms, self.end_ms, self.text
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_ms_counts_whole_samples() {
        assert_eq!(pcm_ms(32_000), 1000);
        assert_eq!(pcm_ms(32_001), 1000);
        assert_eq!(pcm_ms(31), 0);
    }

    #[test]
    fn spec_resumes_mid_stream() {
        let spec = SessionSpec::new("m1", "mic").starting_at(4_500);
        assert_eq!(spec.start_ms, 4_500);
        assert_eq!(spec.source, "mic");
    }

    #[test]
    fn only_transport_errors_retry() {
        assert!(EngineError::Transport("reset".into()).is_retryable());
        assert!(!EngineError::Unauthorized("401".into()).is_retryable());
        assert!(!EngineError::Closed.is_retryable());
    }
}

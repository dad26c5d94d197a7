//! Deepgram live speech-to-text behind Earshot's engine interface (`earshot-asr-engine`).
//!
//! A [`DeepgramEngine`] opens one WebSocket to Deepgram's `/v1/listen` per
//! [`SessionSpec`](earshot_asr_engine::SessionSpec) (`encoding=linear16`, 16 kHz, mono,
//! interim results, endpointing, utterance ends, VAD events; model, language, key terms and
//! diarisation from [`DeepgramConfig`]) with `Authorization: Token <key>`. Audio goes out as
//! binary frames (never an empty one), `KeepAlive` while none flows, `Finalize` then
//! `CloseStream` at the stream's end.
//!
//! Mapping: a `Results` with `is_final=false` is an interim hypothesis; one with
//! `is_final=true` is final for its span and becomes a final hypothesis (an utterance may
//! be several finals; `speech_final` and `UtteranceEnd` only mark where it ended and are
//! logged). Empty transcripts produce no hypothesis, but an empty final still settles its
//! audio. Times are Deepgram's socket seconds, offset by the audio sent before the socket
//! opened and by `SessionSpec::start_ms`, in ms into the source's stream.
//!
//! Resilience: on a dropped socket or a close asking for a retry (1011 `NET-0001`, 1001,
//! 1012–1014) the session reconnects with doubling backoff, a bounded number of times, and
//! replays the audio since the last final, so no words are lost and times stay continuous;
//! [`Session::settled_ms`](earshot_asr_engine::Session::settled_ms) is the end of the last
//! final. A handshake answered 401/403 fails `open` with `EngineError::Unauthorized` after
//! exactly one attempt. The key never reaches a log or a `Debug` output.

mod config;
mod session;
mod stream;
mod wire;

pub use config::{
    ApiKey, DeepgramConfig, DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINTING_MS,
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_MAX_UNSETTLED_MS, DEFAULT_MODEL,
    DEFAULT_RECONNECT_ATTEMPTS, DEFAULT_RECONNECT_BACKOFF, DEFAULT_UTTERANCE_END_MS, LISTEN_PATH,
    MAX_AUDIO_FRAME_MS, MAX_KEEPALIVE_INTERVAL, MAX_RECONNECT_BACKOFF, MIN_UTTERANCE_END_MS,
};
pub use session::{DeepgramEngine, DeepgramSession};

/// Environment variable the CLI reads the API key from (never a flag: flags show in `ps`).
pub const API_KEY_ENV: &str = "DEEPGRAM_API_KEY";

/// Environment variable for the base URL (self-hosted Deepgram), beside `--deepgram-url`.
pub const BASE_URL_ENV: &str = "DEEPGRAM_URL";

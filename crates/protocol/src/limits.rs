//! Limits and defaults shared by the relay and the components; each with its unit and
//! the reason for its value.

/// Largest PCM frame a capture agent may send, in bytes. 20–100 ms frames of 16 kHz
/// mono s16 are 640–3,200 bytes; 64 KiB (2 s of audio) leaves room for 48 kHz stereo
/// at 100 ms while keeping one frame far below a component's memory.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Largest WebSocket message the relay reads at all, in bytes: above this the socket
/// is closed 1009 before the message is buffered, whatever the route.
pub const RELAY_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Default time for a capture agent to send its handshake, in milliseconds (DESIGN.md).
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// Default time without audio or keepalive before an ingest socket closes, in
/// milliseconds (DESIGN.md).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 10_000;

/// Default rate limit: connections allowed per (meeting, source) within the window
/// (DESIGN.md: more than 5 in 10 s is refused).
pub const DEFAULT_RATE_LIMIT_COUNT: u32 = 5;

/// Default rate-limit window, in milliseconds (DESIGN.md).
pub const DEFAULT_RATE_LIMIT_WINDOW_MS: u64 = 10_000;

/// How often the relay calls the backend for a quiet connection, in seconds
/// (`Keep-Alive-Interval`), so timeouts fire without client traffic. One second
/// bounds the handshake/idle timeout error to one second.
pub const KEEP_ALIVE_INTERVAL_S: u64 = 1;

/// Longest `content` of one WebSocket-over-HTTP event the decoder accepts, in bytes:
/// the relay's message cap plus headroom for the close code.
pub const MAX_EVENT_BYTES: usize = RELAY_MAX_MESSAGE_BYTES + 1024;

/// Entries kept per audio stream (Redis `XADD … MAXLEN ~`): 30 minutes of 20 ms
/// frames. Transcription workers read within seconds; the bound keeps a forgotten
/// meeting from filling Redis.
pub const AUDIO_STREAM_MAXLEN: u64 = 90_000;

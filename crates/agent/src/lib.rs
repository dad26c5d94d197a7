//! The capture agent's side of Earshot: read 16-bit PCM WAV files ([`wav`]), connect to
//! the ingest route ([`connect`]), speak the ingest protocol ([`session`]: handshake,
//! frames, keepalives, acks, `close_stream` → `closed` → close 1000), stream an input at
//! real time ([`stream`], paced by [`pacing`]), refresh its token before it expires
//! ([`refresh`]) and make known test audio ([`demo`]).
//!
//! One client for every caller: `earshot stream`, the benchmark (over its own sockets)
//! and the integration tests. Errors are [`AgentError`], one variant per way to fail.

pub mod connect;
pub mod demo;
pub mod error;
pub mod pacing;
pub mod refresh;
pub mod session;
pub mod stream;
pub mod wav;

pub use connect::{connect, ingest_url};
pub use error::AgentError;
pub use pacing::Pacing;
pub use refresh::TokenSource;
pub use session::{Accepted, Event, Session, Totals};
pub use stream::{stream_input, Input, Outcome, Progress};
pub use wav::PcmFormat;

//! The distributed transcription worker of Earshot (DESIGN.md "Transcription worker").
//!
//! A [`Worker`] finds active audio streams (the ingest component announces sessions, see
//! `earshot_protocol::asr`), leases each `(meeting, source)` in Redis so exactly one worker
//! transcribes it however many run, reads `audio:{meeting}:{source}` from the stream's
//! committed position in bounded batches, feeds an [`earshot_asr_engine::Engine`] session
//! and publishes every hypothesis as a `earshot_protocol::transcript::Segment` on
//! `earshot:transcripts`, with `speaker` from `earshot_protocol::asr::speaker_label`
//! (`mic` → `user`, the capture agent's own user; `sys` → `others`).
//!
//! **Exactly once.** Publishing a final and committing the position is one Lua script
//! ([`store::COMMIT_SCRIPT`]) that first checks the lease is still this worker's (fencing)
//! and that the final ends after the last final published (a final's identity is its audio
//! position), so a worker that dies mid-utterance loses nothing (its successor resumes from
//! the committed position, at or before the open utterance) and no final is published twice.
//!
//! **Bounded.** A stream's task holds one batch of audio and the entry boundaries since its
//! last commit; its lag behind the newest audio is in [`Worker::stats`] and logged when it
//! passes [`WorkerConfig::lag_warn`].

mod config;
mod error;
mod stats;
pub mod store;
mod stream;
mod worker;

#[cfg(any(test, feature = "test-double"))]
pub mod scripted;

pub use config::*;
pub use error::TranscriberError;
pub use stats::{StreamStats, WorkerStats};
pub use store::Position;
pub use worker::Worker;

#[cfg(test)]
mod tests;

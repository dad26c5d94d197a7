//! Transcript intake, the one place a speech-to-text segment is processed whichever way it
//! arrived (Redis channel `earshot:transcripts` → the `transcripts` component;
//! `POST /api/v1/meetings/{id}/transcript` → the `transcripts-http` component):
//! validate → `XADD transcript:{id}` (final segments; the stream id is the offset) →
//! meeting state in the key-value store → publish on GRIP channel `transcript:{id}`.
//!
//! Layout: the pipeline (`intake`), the meeting-state update (`state`), publishing
//! (`publish`), settings and log lines are pure and reach the world only through
//! [`effects::Effects`]; the Spin shell (`spin`, wasm only) implements it over Spin's
//! key-value store, outbound Redis and outbound HTTP.

// Natively only the pure modules build (for `cargo test`); some items serve the shell alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod effects;
mod intake;
mod log;
mod publish;
mod settings;
mod state;

#[cfg(target_arch = "wasm32")]
pub mod spin;

#[cfg(test)]
mod tests;

pub use intake::{Accepted, Intake, IntakeError, Rejection, Via};
pub use settings::{IntakeSettings, SettingsError, DEFAULT_TRANSCRIPT_RETENTION_S};

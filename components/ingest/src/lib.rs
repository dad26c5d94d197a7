//! The ingest component: the WebSocket-over-HTTP backend (Pushpin's protocol, with GRIP) of
//! the capture agents' route, `/api/v1/ws/ingest/meetings/{id}?source=`. The relay holds the
//! sockets and calls this component once per batch of WebSocket events; the component
//! authenticates, rate-limits, runs the ingest protocol, appends PCM to Redis Streams, keeps
//! presence, measures talk time and announces all of it on the meeting's channel.
//!
//! Layout: the connection's life (auth, `Meta-*` state, logs, close) is
//! `earshot_ws_session`'s; this crate is what the ingest route adds — the protocol (`ingest`,
//! with the state it keeps in `state`), talk analytics (`analytics`), `ratelimit`,
//! `presence`, the meeting's life in Redis (`meeting_life`: its end, totals, audio expiry), `publish`, the session announcement to the transcription workers
//! (`announce`) and its `settings` — reaching the world only through
//! [`effects::IngestEffects`]. The Spin shell (`spin/`: HTTP entry point and the effects over
//! key-value, Redis and outbound HTTP) is built for wasm only, so the pure part unit-tests
//! natively.

// Natively only the pure modules build (for `cargo test`); some of their items are used by
// the wasm-only shell alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod analytics;
mod announce;
mod effects;
mod ingest;
mod meeting_life;
mod presence;
mod publish;
mod ratelimit;
mod settings;
mod state;

#[cfg(target_arch = "wasm32")]
mod spin;

#[cfg(test)]
mod tests;

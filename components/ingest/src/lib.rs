//! The ingest component: the WebSocket-over-HTTP backend (Pushpin's protocol, with GRIP) of
//! every `/api/v1/ws/*` route. The relay holds the sockets and calls this component once per
//! batch of WebSocket events; the component authenticates, rate-limits, runs the ingest
//! protocol, appends PCM to Redis Streams, measures talk time, and subscribes browsers to
//! channels (with transcript history and a meeting snapshot first).
//!
//! Layout: the pure connection state machine (`session` with `ingest`, `analytics` and
//! `subscriber`) and its helpers (`auth`, `ratelimit`, `presence`, `talk`, `history`,
//! `publish`, `meta`, `gripsig`, `settings`, `log`) know nothing of Spin and reach the world
//! only through [`effects::Effects`]; the Spin shell (`spin/`: HTTP entry point and the
//! effects over key-value, Redis and outbound HTTP) is built for wasm only, so the pure part
//! unit-tests natively.

// Natively only the pure modules build (for `cargo test`); some of their items are used by
// the wasm-only shell alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod analytics;
mod auth;
mod effects;
mod gripsig;
mod history;
mod ingest;
mod log;
mod meta;
mod presence;
mod publish;
mod ratelimit;
mod session;
mod settings;
mod subscriber;
mod talk;

#[cfg(target_arch = "wasm32")]
mod spin;

#[cfg(test)]
mod tests;

//! The subscribe component: the WebSocket-over-HTTP backend (Pushpin's protocol, with GRIP)
//! of the subscriber routes, `/api/v1/ws/meetings/{id}` (meeting events) and
//! `/api/v1/ws/transcript/{id}?since=` (live transcript after its history). The relay holds
//! the sockets and calls this component once per batch of WebSocket events; the component
//! authenticates, subscribes the connection to its channel and sends what is owed before
//! anything live (the meeting snapshot, the transcript history), behind the relay's hold.
//!
//! Layout: the connection's life (auth, `Meta-*` state, logs, close) is
//! `earshot_ws_session`'s; this crate is what the subscriber routes add (`subscriber`, with
//! the history replay in `history` and the state it keeps in `state`), reaching the world
//! only through [`effects::SubscribeEffects`]. The Spin shell (`spin/`) is built for wasm
//! only, so the pure part unit-tests natively.

// Natively only the pure modules build (for `cargo test`); some of their items are used by
// the wasm-only shell alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod effects;
mod history;
mod state;
mod subscriber;

#[cfg(target_arch = "wasm32")]
mod spin;

#[cfg(test)]
mod tests;

//! The WebSocket-over-HTTP connection (Pushpin's protocol, with GRIP) that both socket
//! components share: `ingest` (the capture agents' route) and `subscribe` (the subscriber
//! routes). The relay holds the sockets and calls a component once per batch of events; this
//! crate runs everything about such a request that does not depend on the route — the
//! request/reply state machine (`session`: OPEN → authenticate → the component's accept,
//! resume from `Meta-*`, close and cleanup), token checks (`auth`), the connection's state
//! between requests (`meta`), the relay's signature (`gripsig`), the log lines (`log`), the
//! variables both read (`settings`), the meeting's talk record (`talk`, written by ingest, read
//! by subscribe's snapshot) and, on wasm, the Spin shell (`shell`). A component plugs in by
//! implementing [`session::Component`].
//!
//! A crate of its own rather than part of `earshot-component-common`: that one serves every
//! component (health, auth, web, transcripts), and this one brings token verification, JWT
//! and voice-activity code only the two socket components need.

pub mod auth;
pub mod effects;
pub mod gripsig;
pub mod log;
pub mod meta;
pub mod session;
pub mod settings;
pub mod talk;

#[cfg(target_arch = "wasm32")]
pub mod shell;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lifetime_tests;

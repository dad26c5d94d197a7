//! What the Earshot Spin components share, so each writes it once: the request parts and the
//! bounded body reader (`request`), JSON replies and the trait an HTTP surface's error type
//! implements (`response`), the one-line-per-request log (`request_log`), the `default`
//! key-value store with compare-and-swap (`kv`), the lazily opened Redis connection
//! (`redis`), GRIP publishing (`grip`), and the error and update types a component's `Effects`
//! trait exchanges with its shell (`effects`).
//!
//! Only `effects` and `grip`'s transport choice are pure; everything else talks to Spin and builds for wasm
//! only, so natively (unit tests of ingest and transcript-intake) the crate is those two.

pub mod effects;
pub mod grip;

#[cfg(target_arch = "wasm32")]
pub mod kv;
#[cfg(target_arch = "wasm32")]
pub mod redis;
#[cfg(target_arch = "wasm32")]
pub mod request;
#[cfg(target_arch = "wasm32")]
pub mod request_log;
#[cfg(target_arch = "wasm32")]
pub mod response;

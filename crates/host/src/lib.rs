//! Earshot's embedded Spin host: reads `spin.toml` and runs the application's .wasm
//! components under wasmtime (the engine Spin uses), implementing the Spin host
//! interfaces they import over SQLite key-value, real Redis and the environment.

mod app;
mod bindings;
pub mod cache;
pub mod error;
mod guest_log;
pub mod kv;
pub mod manifest;
pub mod outbound;
mod outbound_http;
pub mod redis_out;
pub mod routes;
mod spin_host;
mod state;
pub mod variables;

pub use app::{plain, App, ComponentSummary, HostConfig, GUEST_CALL_TIMEOUT, MAX_CONCURRENT_INSTANCES};
pub use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

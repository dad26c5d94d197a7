//! Earshot's embedded Spin host: reads `spin.toml` and runs the application's .wasm
//! components under wasmtime (the engine Spin uses), implementing the Spin host
//! interfaces they import over SQLite key-value, real Redis and the environment.
//!
//! Layout: `app` loads and wires; `engine` configures wasmtime; `instance_pool` queues
//! requests at the instance cap; `trigger_http` and
//! `trigger_redis` serve the two trigger types; `host::{kv, redis, variables}` are the
//! guest-facing interfaces over the backends in `kv`, `redis_out` and `variables`.

mod app;
mod bindings;
pub mod cache;
mod engine;
pub mod error;
mod guest_log;
mod host;
pub mod instance_pool;
pub mod kv;
pub mod manifest;
pub mod outbound;
mod outbound_http;
pub mod redis_out;
pub mod routes;
mod state;
mod trigger_http;
mod trigger_redis;
pub mod variables;

pub use app::{App, ComponentSummary, HostConfig, KV_STORE_LABELS};
pub use engine::{GUEST_CALL_TIMEOUT, MAX_CONCURRENT_INSTANCES};
pub use instance_pool::{InstanceBusy, InstancePoolConfig};
pub use trigger_http::{plain, BUSY_BODY, BUSY_RETRY_AFTER_S};
pub use trigger_redis::RedisTriggerPlan;
pub use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

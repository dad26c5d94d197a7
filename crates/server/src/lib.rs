//! The Earshot server as a library: `earshot up` is a thin `main` over it, and tests
//! start it in-process on port 0.
//!
//! Two listeners: the **public** one carries WebSocket upgrades (to the relay) and the
//! app's HTTP routes (to the components, in-process or remote); the **internal** one
//! (loopback by default) carries the GRIP publish endpoint and `/metrics`, so neither
//! is reachable through whatever proxies the public port.

mod build;
pub mod client_addr;
mod config;
mod embedded;
pub mod http_limits;
mod internal;
mod meetings;
mod metrics;
mod private_redis;
pub mod proxy_protocol;
mod public;
pub mod public_listener;
mod response;
pub mod secrets;
mod serve;
pub mod tls;
pub mod transcription;

pub use build::build_components;
pub use config::{ServerConfig, DEFAULT_INTERNAL_LISTEN, DEFAULT_LISTEN};
pub use public_listener::PublicListenerConfig;
pub use serve::{Server, DRAIN_TIMEOUT};

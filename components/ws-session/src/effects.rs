//! The capabilities the shared connection code needs from its host: reading the key-value
//! store (the revocation list) and writing log lines. Each component's own `Effects` trait
//! extends this one with what its route needs (Redis streams, publishing, randomness).

use serde_json::Value;

pub use earshot_component_common::effects::{EffectError, Update};

/// What every socket component asks of its host.
pub trait Effects {
    /// Reads an entry of the `default` key-value store.
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError>;

    /// Writes one log line.
    fn log(&mut self, line: Value);
}

//! The capabilities the intake pipeline needs from its host, named by one trait: the Spin
//! shell implements it over the key-value store, outbound Redis and outbound HTTP
//! (`spin.rs`), the unit tests over memory.

use serde_json::Value;

pub(crate) use earshot_component_common::effects::{EffectError, Update};

/// What the pipeline asks of its host.
pub(crate) trait Effects {
    /// Reads an entry of the `default` key-value store.
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError>;

    /// Replaces an entry of the `default` key-value store with `update(current)` by
    /// compare-and-swap: when another writer got in between, `update` runs again on the
    /// newer value.
    fn kv_update(&mut self, key: &str, update: &mut Update<'_>) -> Result<(), EffectError>;

    /// `XADD key MAXLEN ~ maxlen * field value` and, when `ttl_s` > 0, `EXPIRE key ttl_s`,
    /// as one atomic step (a stream is never left without its retention); the new entry's id
    /// once Redis confirmed it.
    fn redis_xadd(
        &mut self,
        key: &str,
        maxlen: u64,
        field: &str,
        value: &[u8],
        ttl_s: u64,
    ) -> Result<String, EffectError>;

    /// `PUBLISH channel payload`.
    fn redis_publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), EffectError>;

    /// POSTs a GRIP publish body (JSON) to `url`; `Ok` once the endpoint answered 2xx.
    async fn http_publish(&mut self, url: &str, body: Vec<u8>) -> Result<(), EffectError>;

    /// Writes one log line.
    fn log(&mut self, line: Value);
}

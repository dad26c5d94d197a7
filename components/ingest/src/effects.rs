//! The capabilities the ingest route needs from its host beyond the shared ones
//! (`earshot_ws_session::effects::Effects`: reading the key-value store, the log): the Spin
//! shell implements them over the key-value store, outbound Redis and outbound HTTP
//! (`spin::backend`), the unit tests over memory. Everything that decides something — which
//! backend, which close code — stays on the pure side of this line.

use earshot_ws_session::effects::Effects;

use crate::announce::Announcement;
use crate::settings::RateLimit;

pub(crate) use earshot_ws_session::effects::{EffectError, Update};

/// What the ingest route asks of its host.
pub(crate) trait IngestEffects: Effects {
    /// Replaces an entry of the `default` key-value store with `update(current)`, atomically
    /// (compare-and-swap): when another writer got in between, `update` runs again on the
    /// newer value, so whatever `update` decided in its last run is what happened.
    fn kv_update(&mut self, key: &str, update: &mut Update<'_>) -> Result<(), EffectError>;

    /// Runs the sliding-log script (`ratelimit::SCRIPT`) on Redis sorted set `key` for
    /// `member`; `true` when the connection was admitted (and recorded).
    fn redis_admit(
        &mut self,
        key: &str,
        member: &str,
        limit: RateLimit,
    ) -> Result<bool, EffectError>;

    /// `XADD key MAXLEN ~ maxlen * <fields…>`; `Ok` only once Redis confirmed the entry.
    fn redis_xadd(
        &mut self,
        key: &str,
        maxlen: u64,
        fields: &[(&str, &[u8])],
    ) -> Result<(), EffectError>;

    /// Runs the announcement script (`earshot_protocol::asr::ANNOUNCE_SCRIPT`) for `announcement`; `Ok` only once
    /// Redis confirmed it.
    fn redis_announce(&mut self, announcement: &Announcement<'_>) -> Result<(), EffectError>;

    /// Runs one of `earshot_protocol::meeting_end`'s scripts; `Ok` once Redis ran it.
    fn redis_script(
        &mut self,
        call: &earshot_protocol::meeting_end::ScriptCall,
    ) -> Result<(), EffectError>;

    /// `PUBLISH channel payload`.
    fn redis_publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), EffectError>;

    /// POSTs a GRIP publish body (JSON) to `url`. It may go out after this request's reply is
    /// built; its failure is the implementation's to log, it never fails the connection.
    fn http_publish(&mut self, url: &str, body: Vec<u8>);

    /// `bytes` random bytes from a CSPRNG, hex-encoded.
    fn random_hex(&mut self, bytes: usize) -> Result<String, EffectError>;
}

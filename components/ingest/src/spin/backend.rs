//! The ingest route's effects over Spin: the `default` key-value store through
//! `wasi:keyvalue` (store and atomics: real compare-and-swap), outbound Redis
//! (`fermyon:spin/redis`, one connection per request, opened on first use) and outbound HTTP
//! for GRIP publishing.

use earshot_component_common::kv::Kv;
use earshot_component_common::redis::{binary, int, Redis};
use serde_json::Value;
use spin_sdk::redis::{RedisParameter, RedisResult};

use earshot_ws_session::effects::Effects;

use earshot_protocol::asr::ANNOUNCE_SCRIPT;
use earshot_protocol::meeting_end::ScriptCall;

use crate::announce::Announcement;
use crate::effects::{EffectError, IngestEffects, Update};
use crate::ratelimit::SCRIPT;
use crate::settings::{RateLimit, Settings};

/// The effects of one request.
pub(crate) struct SpinBackend<'a> {
    kv: Kv,
    redis: Redis<'a>,
    http_publishes: Vec<(String, Vec<u8>)>,
}

impl<'a> SpinBackend<'a> {
    pub(crate) fn new(settings: &'a Settings) -> Self {
        SpinBackend {
            kv: Kv::new(),
            redis: Redis::new(&settings.conn.redis_url),
            http_publishes: Vec::new(),
        }
    }

    /// The publishes queued by [`Effects::http_publish`], to send once the reply is built.
    pub(crate) fn take_http_publishes(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.http_publishes)
    }
}

impl Effects for SpinBackend<'_> {
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError> {
        self.kv.get(key)
    }

    fn log(&mut self, line: Value) {
        println!("{line}");
    }
}

impl IngestEffects for SpinBackend<'_> {
    fn kv_update(&mut self, key: &str, update: &mut Update<'_>) -> Result<(), EffectError> {
        self.kv.update(key, update)
    }

    fn redis_admit(
        &mut self,
        key: &str,
        member: &str,
        limit: RateLimit,
    ) -> Result<bool, EffectError> {
        let args = [
            binary(SCRIPT),
            int(1),
            binary(key),
            int(limit.window_ms),
            int(u64::from(limit.count)),
            binary(member),
        ];
        match self
            .redis
            .connection()?
            .execute("EVAL", &args)
            .map_err(|e| EffectError(format!("redis EVAL: {e}")))?
            .as_slice()
        {
            [RedisResult::Int64(1)] => Ok(true),
            [RedisResult::Int64(0)] => Ok(false),
            other => Err(EffectError(format!(
                "redis EVAL: unexpected reply {other:?}"
            ))),
        }
    }

    fn redis_xadd(
        &mut self,
        key: &str,
        maxlen: u64,
        fields: &[(&str, &[u8])],
    ) -> Result<(), EffectError> {
        let mut args = vec![
            binary(key),
            binary("MAXLEN"),
            binary("~"),
            int(maxlen),
            binary("*"),
        ];
        for (name, value) in fields {
            args.push(binary(name));
            args.push(RedisParameter::Binary(value.to_vec()));
        }
        match self
            .redis
            .connection()?
            .execute("XADD", &args)
            .map_err(|e| EffectError(format!("redis XADD: {e}")))?
            .as_slice()
        {
            // The new entry's id: Redis has the frame.
            [RedisResult::Binary(_) | RedisResult::Status(_)] => Ok(()),
            other => Err(EffectError(format!(
                "redis XADD: unexpected reply {other:?}"
            ))),
        }
    }

    fn redis_announce(&mut self, announcement: &Announcement<'_>) -> Result<(), EffectError> {
        let keys = announcement.keys();
        let mut args = vec![binary(ANNOUNCE_SCRIPT), int(keys.len() as u64)];
        args.extend(keys.iter().map(|k| binary(k)));
        args.extend(announcement.args().iter().map(|a| binary(a)));
        match self
            .redis
            .connection()?
            .execute("EVAL", &args)
            .map_err(|e| EffectError(format!("redis EVAL (announce): {e}")))?
            .as_slice()
        {
            // The event's id: Redis has the announcement.
            [RedisResult::Binary(_) | RedisResult::Status(_)] => Ok(()),
            other => Err(EffectError(format!(
                "redis EVAL (announce): unexpected reply {other:?}"
            ))),
        }
    }

    fn redis_script(&mut self, call: &ScriptCall) -> Result<(), EffectError> {
        let mut args = vec![binary(call.script), int(call.keys.len() as u64)];
        args.extend(call.keys.iter().map(|k| binary(k)));
        args.extend(call.args.iter().map(|a| binary(a)));
        self.redis
            .connection()?
            .execute("EVAL", &args)
            .map_err(|e| EffectError(format!("redis EVAL (meeting): {e}")))?;
        Ok(())
    }

    fn redis_publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), EffectError> {
        self.redis.publish(channel, payload)
    }

    fn http_publish(&mut self, url: &str, body: Vec<u8>) {
        self.http_publishes.push((url.to_owned(), body));
    }

    fn random_hex(&mut self, bytes: usize) -> Result<String, EffectError> {
        let mut buf = vec![0u8; bytes];
        getrandom::fill(&mut buf).map_err(|e| EffectError(format!("random source: {e}")))?;
        Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
    }
}

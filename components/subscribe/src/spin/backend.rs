//! The subscriber routes' effects over Spin: the `default` key-value store (revocations, the
//! snapshot's records) and outbound Redis (`fermyon:spin/redis`, one connection per request,
//! opened on first use) for the transcript history.

use earshot_component_common::kv::Kv;
use earshot_component_common::redis::{binary, int, Redis};
use earshot_ws_session::effects::{EffectError, Effects};
use earshot_ws_session::settings::ConnSettings;
use serde_json::Value;
use spin_sdk::redis::RedisResult;

use crate::effects::SubscribeEffects;
use crate::history::{self, Flat, History};

/// The effects of one request.
pub(crate) struct SpinBackend<'a> {
    kv: Kv,
    redis: Redis<'a>,
}

impl<'a> SpinBackend<'a> {
    pub(crate) fn new(settings: &'a ConnSettings) -> Self {
        SpinBackend {
            kv: Kv::new(),
            redis: Redis::new(&settings.redis_url),
        }
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

impl SubscribeEffects for SpinBackend<'_> {
    fn redis_history(
        &mut self,
        key: &str,
        after: &str,
        count: usize,
    ) -> Result<History, EffectError> {
        let args = [
            binary(history::SCRIPT),
            int(1),
            binary(key),
            binary(after),
            int(count as u64),
            binary(earshot_protocol::transcript::SEGMENT_FIELD),
        ];
        let reply = self
            .redis
            .connection()?
            .execute("EVAL", &args)
            .map_err(|e| EffectError(format!("redis EVAL (history): {e}")))?;
        let flat = reply
            .into_iter()
            .map(|value| match value {
                RedisResult::Nil => Flat::Nil,
                RedisResult::Int64(i) => Flat::Int(i),
                RedisResult::Binary(b) => Flat::Bytes(b),
                RedisResult::Status(s) => Flat::Bytes(s.into_bytes()),
            })
            .collect();
        history::parse_reply(flat).map_err(|e| EffectError(format!("redis EVAL (history): {e}")))
    }
}

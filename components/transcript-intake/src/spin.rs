//! The Spin shell: [`intake`] runs the pipeline with [`Effects`] over Spin's `default`
//! key-value store (`wasi:keyvalue` store and atomics: real compare-and-swap), outbound Redis
//! (`fermyon:spin/redis`, one connection per segment, opened on first use) and outbound HTTP
//! for GRIP publishing. Both transcript components call [`intake`] and nothing else of it.

use std::time::{SystemTime, UNIX_EPOCH};

use earshot_component_common::grip;
use earshot_component_common::kv::Kv;
use earshot_component_common::redis::{binary, int, Redis};
use serde_json::Value;
use spin_sdk::redis::{RedisParameter, RedisResult};
use spin_sdk::variables;

use crate::effects::{EffectError, Effects, Update};
use crate::intake::{process, Accepted, Intake, IntakeError};
use crate::log::{Level, Line};
use crate::settings::IntakeSettings;

/// Takes in one segment (see the crate docs): validates, stores, updates the meeting state
/// and publishes it, logging the outcome.
pub async fn intake(input: Intake<'_>) -> Result<Accepted, IntakeError> {
    let settings = match load_settings() {
        Ok(settings) => settings,
        Err(detail) => {
            let line = Line::new(input.via.component(), Level::Error, "intake misconfigured")
                .with("via", input.via.as_str())
                .with("detail", detail.clone());
            println!("{}", line.into_value());
            return Err(IntakeError::Unavailable(detail));
        }
    };
    let mut backend = SpinBackend::new(&settings);
    process(&input, &settings, &mut backend, now_ms()).await
}

fn load_settings() -> Result<IntakeSettings, String> {
    IntakeSettings::from_lookup(|name| match variables::get(name) {
        Ok(value) => Ok(Some(value)),
        Err(variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(format!("{e:?}")),
    })
    .map_err(|e| e.to_string())
}

/// Wall-clock unix milliseconds (WASI `wall-clock`); 0 if the clock is before 1970, which
/// only dates the state record wrongly.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Appends a final and sets the stream's retention in one atomic step. `KEYS[1]`: the
/// transcript stream; `ARGV`: MAXLEN, field, segment JSON, retention in seconds (0: none).
/// Every final refreshes the expiry, so a transcript lives its retention after the meeting's
/// last words, not after its first.
const STORE_SCRIPT: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return id
";

/// The effects of one segment.
struct SpinBackend<'a> {
    kv: Kv,
    redis: Redis<'a>,
}

impl<'a> SpinBackend<'a> {
    fn new(settings: &'a IntakeSettings) -> Self {
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

    fn kv_update(&mut self, key: &str, update: &mut Update<'_>) -> Result<(), EffectError> {
        self.kv.update(key, update)
    }

    fn redis_xadd(
        &mut self,
        key: &str,
        maxlen: u64,
        field: &str,
        value: &[u8],
        ttl_s: u64,
    ) -> Result<String, EffectError> {
        let args = [
            binary(STORE_SCRIPT),
            int(1),
            binary(key),
            int(maxlen),
            binary(field),
            RedisParameter::Binary(value.to_vec()),
            int(ttl_s),
        ];
        let reply = self
            .redis
            .connection()?
            .execute("EVAL", &args)
            .map_err(|e| EffectError(format!("redis XADD: {e}")))?;
        match reply.as_slice() {
            [RedisResult::Binary(id)] => String::from_utf8(id.clone())
                .map_err(|_| EffectError("redis XADD: id is not UTF-8".into())),
            [RedisResult::Status(id)] => Ok(id.clone()),
            other => Err(EffectError(format!(
                "redis XADD: unexpected reply {other:?}"
            ))),
        }
    }

    fn redis_publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), EffectError> {
        self.redis.publish(channel, payload)
    }

    async fn http_publish(&mut self, url: &str, body: Vec<u8>) -> Result<(), EffectError> {
        grip::http_publish(url, body).await
    }

    fn log(&mut self, line: Value) {
        println!("{line}");
    }
}

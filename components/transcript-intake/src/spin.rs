//! The Spin shell: [`intake`] runs the pipeline with [`Effects`] over Spin's `default`
//! key-value store (`wasi:keyvalue` store and atomics: real compare-and-swap), outbound Redis
//! (`fermyon:spin/redis`, one connection per segment, opened on first use) and outbound HTTP
//! for GRIP publishing. Both transcript components call [`intake`] and nothing else of it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
use spin_sdk::variables;
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use crate::effects::{EffectError, Effects, Update};
use crate::intake::{process, Accepted, Intake, IntakeError};
use crate::log::{Level, Line};
use crate::settings::IntakeSettings;

/// The key-value store every Earshot component shares.
const KV_STORE: &str = "default";

/// Compare-and-swap attempts before giving up, per update. A meeting's state record is
/// contended by the segments of that meeting arriving on both surfaces at once: a handful;
/// sixteen straight losses means the store is misbehaving, not busy.
const MAX_CAS_ATTEMPTS: usize = 16;

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

/// The effects of one segment.
struct SpinBackend<'a> {
    settings: &'a IntakeSettings,
    bucket: Option<store::Bucket>,
    redis: Option<Connection>,
}

impl<'a> SpinBackend<'a> {
    fn new(settings: &'a IntakeSettings) -> Self {
        SpinBackend {
            settings,
            bucket: None,
            redis: None,
        }
    }

    fn bucket(&mut self) -> Result<&store::Bucket, EffectError> {
        if self.bucket.is_none() {
            self.bucket = Some(store::open(KV_STORE).map_err(|e| kv_error("open", &e))?);
        }
        Ok(self.bucket.as_ref().expect("just opened"))
    }

    fn redis(&mut self) -> Result<&Connection, EffectError> {
        if self.settings.redis_url.is_empty() {
            return Err(EffectError("redis_url is not set".into()));
        }
        if self.redis.is_none() {
            let conn = Connection::open(&self.settings.redis_url)
                .map_err(|e| EffectError(format!("redis connect: {e}")))?;
            self.redis = Some(conn);
        }
        Ok(self.redis.as_ref().expect("just opened"))
    }
}

fn kv_error(op: &str, e: &store::Error) -> EffectError {
    EffectError(format!("key-value {op}: {e:?}"))
}

fn binary(s: &str) -> RedisParameter {
    RedisParameter::Binary(s.as_bytes().to_vec())
}

impl Effects for SpinBackend<'_> {
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError> {
        self.bucket()?.get(key).map_err(|e| kv_error("get", &e))
    }

    fn kv_update(&mut self, key: &str, update: &mut Update<'_>) -> Result<(), EffectError> {
        let bucket = self.bucket()?;
        let mut cas = atomics::Cas::new(bucket, key).map_err(|e| kv_error("cas", &e))?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = cas.current().map_err(|e| kv_error("cas current", &e))?;
            let Some(next) = update(current.as_deref()) else {
                return Ok(());
            };
            match atomics::swap(cas, &next) {
                Ok(()) => return Ok(()),
                // Someone else wrote first: the fresh handle holds their value; decide again.
                Err(atomics::CasError::CasFailed(fresh)) => cas = fresh,
                Err(atomics::CasError::StoreError(e)) => return Err(kv_error("swap", &e)),
            }
        }
        Err(EffectError(format!(
            "key-value swap of {key}: lost {MAX_CAS_ATTEMPTS} races in a row"
        )))
    }

    fn redis_xadd(
        &mut self,
        key: &str,
        maxlen: u64,
        field: &str,
        value: &[u8],
    ) -> Result<String, EffectError> {
        let args = [
            binary(key),
            binary("MAXLEN"),
            binary("~"),
            RedisParameter::Int64(i64::try_from(maxlen).unwrap_or(i64::MAX)),
            binary("*"),
            binary(field),
            RedisParameter::Binary(value.to_vec()),
        ];
        let reply = self
            .redis()?
            .execute("XADD", &args)
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
        self.redis()?
            .publish(channel, payload)
            .map_err(|e| EffectError(format!("redis PUBLISH: {e}")))
    }

    /// The detail never names the URL, which may carry credentials.
    async fn http_publish(&mut self, url: &str, body: Vec<u8>) -> Result<(), EffectError> {
        // An explicit length: without it the body goes out chunked, which Pushpin's publish
        // endpoint refuses (411 Length Required).
        let request = Request::builder()
            .method(Method::Post)
            .uri(url)
            .header("content-type", "application/json")
            .header("content-length", body.len().to_string())
            .body(body)
            .build();
        let response: Response = spin_sdk::http::send(request)
            .await
            .map_err(|e| EffectError(format!("POST grip_publish_url: {e}")))?;
        let status = *response.status();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(EffectError(format!("POST grip_publish_url: HTTP {status}")))
        }
    }

    fn log(&mut self, line: Value) {
        println!("{line}");
    }
}

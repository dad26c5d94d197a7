//! [`Effects`] over Spin: the `default` key-value store through `wasi:keyvalue` (store and
//! atomics: real compare-and-swap), outbound Redis (`fermyon:spin/redis`, one connection per
//! request, opened on first use) and outbound HTTP for GRIP publishing.

use serde_json::Value;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use crate::effects::{EffectError, Effects, Update};
use crate::history::{self, Flat, History};
use crate::ratelimit::SCRIPT;
use crate::settings::{RateLimit, Settings};

/// The key-value store every Earshot component shares.
const KV_STORE: &str = "default";

/// Compare-and-swap attempts before giving up, per update. A key is contended by the
/// connections of one meeting (presence) or one (meeting, source) (rate limit): a handful at
/// once; sixteen straight losses means the store is misbehaving, not busy.
const MAX_CAS_ATTEMPTS: usize = 16;

/// The effects of one request.
pub(crate) struct SpinBackend<'a> {
    settings: &'a Settings,
    bucket: Option<store::Bucket>,
    redis: Option<Connection>,
    http_publishes: Vec<(String, Vec<u8>)>,
}

impl<'a> SpinBackend<'a> {
    pub(crate) fn new(settings: &'a Settings) -> Self {
        SpinBackend {
            settings,
            bucket: None,
            redis: None,
            http_publishes: Vec::new(),
        }
    }

    /// The publishes queued by [`Effects::http_publish`], to send once the reply is built.
    pub(crate) fn take_http_publishes(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.http_publishes)
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

fn int(n: u64) -> RedisParameter {
    RedisParameter::Int64(i64::try_from(n).unwrap_or(i64::MAX))
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
            .redis()?
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
            .redis()?
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
            .redis()?
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

    fn redis_publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), EffectError> {
        self.redis()?
            .publish(channel, payload)
            .map_err(|e| EffectError(format!("redis PUBLISH: {e}")))
    }

    fn http_publish(&mut self, url: &str, body: Vec<u8>) {
        self.http_publishes.push((url.to_owned(), body));
    }

    fn random_hex(&mut self, bytes: usize) -> Result<String, EffectError> {
        let mut buf = vec![0u8; bytes];
        getrandom::fill(&mut buf).map_err(|e| EffectError(format!("random source: {e}")))?;
        Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn log(&mut self, line: Value) {
        println!("{line}");
    }
}

/// POSTs a GRIP publish body to `url`; `Err` with a log detail unless the endpoint answered
/// 2xx. The detail never names the URL, which may carry credentials.
pub(crate) async fn http_publish(url: &str, body: Vec<u8>) -> Result<(), String> {
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
        .map_err(|e| format!("POST grip_publish_url: {e}"))?;
    let status = *response.status();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("POST grip_publish_url: HTTP {status}"))
    }
}

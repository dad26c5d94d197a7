//! The route over Spin: token check, totals from Redis, the end script, the reply.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use earshot_auth::{bearer_token, revocation_key, AuthError, RevocationRecord, Scope, Verifier};
use earshot_component_common::grip;
use earshot_component_common::redis::{binary, int, Redis};
use earshot_component_common::request::RequestParts;
use earshot_component_common::request_log::RequestLog;
use earshot_component_common::response::{json_response, HttpFailure};
use earshot_protocol::ids::IdError;
use earshot_protocol::meeting_end::{
    end_call, totals_key, EndAnnouncement, EndMode, EndReason, EndReply, MeetingTotals, ScriptCall,
};
use earshot_protocol::transcript::transcript_stream_key;
use earshot_protocol::MeetingId;
use spin_sdk::http::{Method, Response};
use spin_sdk::key_value::Store;
use spin_sdk::redis::RedisResult;
use spin_sdk::variables;

use crate::EndError;

impl HttpFailure for EndError {
    fn status(&self) -> u16 {
        EndError::status(self)
    }

    fn reason(&self) -> String {
        EndError::reason(self)
    }

    fn detail(&self) -> Option<&str> {
        EndError::detail(self)
    }

    fn header(&self) -> Option<(&'static str, &'static str)> {
        EndError::header(self)
    }
}

/// Answers an end request for `meeting` (the path as [`crate::parse_end_path`] parsed it),
/// recording the outcome in `log`.
pub async fn serve(meeting: Result<MeetingId, IdError>, parts: &RequestParts, log: &mut RequestLog) -> Response {
    match end(meeting, parts, log).await {
        Ok(response) => response,
        Err(err) => {
            log.failed(&err);
            err.response()
        }
    }
}

async fn end(meeting: Result<MeetingId, IdError>, parts: &RequestParts, log: &mut RequestLog) -> Result<Response, EndError> {
    let meeting = meeting.map_err(|_| EndError::BadRequest("invalid meeting id".into()))?;
    log.set("meeting_id", meeting.to_string());
    if parts.method != Method::Post {
        return Err(EndError::MethodNotAllowed);
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| EndError::Misconfigured("system clock before 1970".into()))?;
    let sub = authenticate(parts, &meeting, now_ms / 1_000)?;
    log.set("sub", sub);

    let redis_url = var("redis_url")?;
    if redis_url.is_empty() {
        return Err(EndError::Unavailable("meeting end needs Redis: redis_url is not set".into()));
    }
    let grip_publish_url = var("grip_publish_url")?;
    let webhook = !var("webhook_url")?.trim().is_empty();
    let public_url = var("public_url")?;
    let mut redis = Redis::new(&redis_url);
    let unavailable = |e: earshot_component_common::effects::EffectError| EndError::Unavailable(e.0);
    let conn = redis.connection().map_err(unavailable)?;

    let fields = hash(conn.execute("HGETALL", &[binary(&totals_key(&meeting))]).map_err(|e| EndError::Unavailable(format!("redis HGETALL: {e}")))?);
    if fields.is_empty() {
        // No capture agent ever joined (or its record expired): nothing to end.
        return Err(EndError::UnknownMeeting);
    }
    let segments = match conn.execute("XLEN", &[binary(&transcript_stream_key(&meeting))]).map_err(|e| EndError::Unavailable(format!("redis XLEN: {e}")))?.as_slice() {
        [RedisResult::Int64(n)] => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    let totals = MeetingTotals::from_hash(&fields, Some(now_ms), now_ms, segments);
    let via_redis = grip_publish_url.is_empty();
    let announce = EndAnnouncement::build(&meeting, EndReason::Requested, &totals, via_redis, webhook, &public_url);
    let call = end_call(&meeting, EndMode::Now, now_ms, &announce);
    let won = match conn.execute("EVAL", &eval_args(&call)).map_err(|e| EndError::Unavailable(format!("redis EVAL (end): {e}")))?.as_slice() {
        [RedisResult::Int64(1)] => true,
        [RedisResult::Int64(_)] => false,
        other => return Err(EndError::Unavailable(format!("redis EVAL (end): unexpected reply {other:?}"))),
    };
    log.set("ended", won.to_string());
    if won && !via_redis {
        if let Ok(item) = serde_json::from_str(&announce.item) {
            let body = serde_json::to_vec(&earshot_protocol::grip::PublishRequest { items: vec![item] }).expect("publish requests serialize");
            if let Err(e) = grip::http_publish(&grip_publish_url, body).await {
                log.set("publish_detail", e.0);
            }
        }
    }
    Ok(json_response(200, &EndReply { ended: won, totals: won.then_some(totals) }))
}

fn eval_args(call: &ScriptCall) -> Vec<spin_sdk::redis::RedisParameter> {
    let mut args = vec![binary(call.script), int(call.keys.len() as u64)];
    args.extend(call.keys.iter().map(|k| binary(k)));
    args.extend(call.args.iter().map(|a| binary(a)));
    args
}

/// An `HGETALL` reply as a map.
fn hash(reply: Vec<RedisResult>) -> BTreeMap<String, String> {
    let text = |r: &RedisResult| match r {
        RedisResult::Binary(b) => String::from_utf8(b.clone()).ok(),
        RedisResult::Status(s) => Some(s.clone()),
        RedisResult::Int64(n) => Some(n.to_string()),
        _ => None,
    };
    reply.chunks(2).filter_map(|pair| match pair {
        [k, v] => Some((text(k)?, text(v)?)),
        _ => None,
    }).collect()
}

fn var(name: &str) -> Result<String, EndError> {
    match variables::get(name) {
        Ok(value) => Ok(value),
        Err(variables::Error::Undefined(_)) => Ok(String::new()),
        Err(e) => Err(EndError::Misconfigured(format!("variable {name}: {e:?}"))),
    }
}

/// The subject of a caller allowed to end `meeting`: `Authorization: Bearer` only (an
/// agent's API, and a query-string token ends up in access logs), scope `ingest` — whoever
/// may stream the meeting may say it is over — and not revoked.
fn authenticate(parts: &RequestParts, meeting: &MeetingId, now_unix: u64) -> Result<String, EndError> {
    let headers: Vec<&str> = parts.header_values("authorization").collect();
    let token = match headers.as_slice() {
        [] => return Err(denied(AuthError::Missing)),
        [one] => bearer_token(one).filter(|t| !t.is_empty()).ok_or(denied(AuthError::Missing))?,
        _ => return Err(denied(AuthError::Ambiguous)),
    };
    let verifier = Verifier::from_settings(&var("jwt_algorithm")?, &var("jwt_secret")?, &var("jwt_public_key")?, &var("jwt_audience")?)
        .map_err(|e| EndError::Misconfigured(e.to_string()))?;
    let verified = verifier.verify(token, now_unix).map_err(denied)?;
    if let Some(jti) = &verified.jti {
        let stored = Store::open_default()
            .and_then(|store| store.get(&revocation_key(jti)))
            .map_err(|e| EndError::Unavailable(format!("key-value get: {e:?}")))?;
        RevocationRecord::status(stored.as_deref(), now_unix).check().map_err(denied)?;
    }
    verified.authorize(Scope::Ingest, Some(meeting.as_str())).map_err(denied)?;
    Ok(verified.sub)
}

fn denied(e: AuthError) -> EndError {
    match e {
        AuthError::ScopeNotGranted(_) | AuthError::MeetingNotGranted => EndError::Forbidden(e.to_string()),
        _ => EndError::Unauthorized(e.to_string()),
    }
}

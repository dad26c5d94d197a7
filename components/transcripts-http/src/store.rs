//! The two stores the meeting routes read and clear: the `default` key-value store and
//! Redis (`redis_url`), over Spin's interfaces.

use earshot_component_common::effects::EffectError;
use earshot_protocol::ids::presence_key;
use earshot_protocol::meeting::{is_known_meeting, meeting_state_key};
use earshot_protocol::MeetingId;
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
use spin_sdk::variables;
use spin_sdk::wit::wasi::keyvalue::store::{self, Bucket};

use crate::api::ApiError;

/// The key-value store every component shares.
pub(crate) fn kv() -> Result<Bucket, ApiError> {
    store::open(earshot_component_common::kv::KV_STORE)
        .map_err(|e| ApiError::Unavailable(format!("key-value open: {e:?}")))
}

/// Whether the meeting exists: a capture agent connected to it (presence record) or a
/// transcript was stored for it (state record), as intake decides it.
pub(crate) fn known(kv: &Bucket, meeting: &MeetingId) -> Result<bool, ApiError> {
    let exists = |key: String| {
        kv.exists(&key)
            .map_err(|e| ApiError::Unavailable(format!("key-value exists: {e:?}")))
    };
    let has_presence = exists(presence_key(meeting))?;
    let has_state = has_presence || exists(meeting_state_key(meeting))?;
    Ok(is_known_meeting(has_presence, has_state))
}

/// Every key of the store, following the cursor.
pub(crate) fn kv_keys(kv: &Bucket) -> Result<Vec<String>, EffectError> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = kv
            .list_keys(cursor.as_deref())
            .map_err(|e| EffectError(format!("key-value list-keys: {e:?}")))?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            _ => return Ok(keys),
        }
    }
}

/// The `redis_url` variable (empty: no Redis).
pub(crate) fn redis_url() -> Result<String, ApiError> {
    match variables::get("redis_url") {
        Ok(url) => Ok(url.trim().to_owned()),
        Err(variables::Error::Undefined(_)) => Ok(String::new()),
        Err(e) => Err(ApiError::Misconfigured(format!("variable redis_url: {e:?}"))),
    }
}

/// A Redis connection.
pub(crate) fn redis(url: &str) -> Result<Connection, EffectError> {
    Connection::open(url).map_err(|e| EffectError(format!("redis connect: {e}")))
}

/// Runs `command` with text arguments.
pub(crate) fn execute(
    conn: &Connection,
    command: &str,
    args: &[&str],
) -> Result<Vec<RedisResult>, EffectError> {
    let args: Vec<RedisParameter> = args
        .iter()
        .map(|a| RedisParameter::Binary(a.as_bytes().to_vec()))
        .collect();
    conn.execute(command, &args)
        .map_err(|e| EffectError(format!("redis {command}: {e}")))
}

/// An integer reply.
pub(crate) fn int_reply(command: &str, reply: &[RedisResult]) -> Result<u64, EffectError> {
    match reply {
        [RedisResult::Int64(n)] => Ok(u64::try_from(*n).unwrap_or(0)),
        other => Err(EffectError(format!("redis {command}: unexpected reply {other:?}"))),
    }
}

/// A text value of a reply.
pub(crate) fn text(value: RedisResult) -> Option<String> {
    match value {
        RedisResult::Binary(b) => String::from_utf8(b).ok(),
        RedisResult::Status(s) => Some(s),
        _ => None,
    }
}

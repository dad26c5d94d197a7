//! Everything the worker does in Redis: leases, the committed position, fenced publishing,
//! the end of a stream, and reading audio. Each step that must not interleave with another
//! worker's is one Lua script (Redis runs a script without running other commands between).

use std::time::Duration;

use earshot_protocol::asr::{
    active_member, lease_key, open_sessions_key, position_key, ACTIVE_STREAMS_KEY,
};
use earshot_protocol::ids::{audio_stream_key, AUDIO_FIELD_PCM};
use earshot_protocol::{MeetingId, Source};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::Value;

use crate::config::{BLOCKING_REPLY_SLACK, COMMAND_TIMEOUT};
use crate::error::TranscriberError;

/// Renews a lease only if this worker still holds it (compare-and-pexpire). `KEYS[1]`:
/// lease; `ARGV`: worker id, TTL in ms. Returns 1 when renewed, 0 when another worker (or
/// nobody) holds it.
pub const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Releases a lease only if this worker holds it. `KEYS[1]`: lease; `ARGV[1]`: worker id.
pub const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Publishes a segment and commits the position as one fenced step.
///
/// `KEYS[1]`: lease, `KEYS[2]`: position hash; `ARGV`: worker id, channel, segment JSON (empty:
/// commit the position only), kind (`final`, `interim` or `position`), the segment's
/// `end_ms`, and the resume position: entry id, stream bytes, stream ms.
///
/// **Fencing.** Nothing happens unless the lease still names this worker (returns -1), so a
/// worker that lost its lease (stalled past the TTL, then woke up) publishes nothing.
///
/// **Duplicates.** A final's identity is its audio position: the hash keeps the `end_ms` of
/// the last final published (`final_end_ms`), and a final or interim that does not end after
/// it is suppressed (returns 0). A worker that resumes a stream re-reads audio from the
/// committed position, which is at or before the end of the last final; whatever it hears
/// again there ends no later than that final and is dropped here, atomically with the
/// check, so no final is published twice however workers die and resume.
///
/// **Nothing lost.** The resume position only ever moves forward and is at or before the
/// engine's settled point, so the audio of every utterance without a published final is
/// still ahead of it.
pub const COMMIT_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local result = 1
if ARGV[4] ~= 'position' then
  local last_final = tonumber(redis.call('HGET', KEYS[2], 'final_end_ms') or '-1')
  if tonumber(ARGV[5]) <= last_final then
    result = 0
  else
    redis.call('PUBLISH', ARGV[2], ARGV[3])
    if ARGV[4] == 'final' then
      redis.call('HSET', KEYS[2], 'final_end_ms', ARGV[5])
    end
  end
end
if ARGV[4] ~= 'interim' then
  local bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '-1')
  if tonumber(ARGV[7]) > bytes then
    redis.call('HSET', KEYS[2], 'id', ARGV[6], 'bytes', ARGV[7], 'ms', ARGV[8])
  end
end
return result
"#;

/// Ends a stream: releases the lease and drops it from the active set, but only if this
/// worker holds the lease and (unless forced) every session of the stream was announced
/// closed and no audio arrived after what the worker read.
///
/// `KEYS`: lease, open-sessions set, active set, audio stream; `ARGV`: worker id, active
/// member, last entry id read, `1` to force (abandon a stream never announced closed).
/// Returns 1 when ended, 0 when the stream goes on, -1 when the lease is not this worker's.
pub const FINISH_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if ARGV[4] ~= '1' then
  if redis.call('SCARD', KEYS[2]) > 0 then
    return 0
  end
  local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
  if #last > 0 and last[1][1] ~= ARGV[3] then
    return 0
  end
else
  redis.call('DEL', KEYS[2])
end
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"#;

/// The Redis keys of one `(meeting, source)` audio stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamKeys {
    pub(crate) meeting: MeetingId,
    pub(crate) source: Source,
    pub(crate) audio: String,
    pub(crate) lease: String,
    pub(crate) position: String,
    pub(crate) open_sessions: String,
    pub(crate) member: String,
}

impl StreamKeys {
    pub(crate) fn new(meeting: MeetingId, source: Source) -> Self {
        StreamKeys {
            audio: audio_stream_key(&meeting, source),
            lease: lease_key(&meeting, source),
            position: position_key(&meeting, source),
            open_sessions: open_sessions_key(&meeting, source),
            member: active_member(&meeting, source),
            meeting,
            source,
        }
    }
}

/// A committed transcription position: where a resuming worker starts, and the end of the
/// last final published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Id of the last audio entry before the resume point (`0-0`: the stream's start).
    pub entry_id: String,
    /// Stream bytes before the resume point.
    pub bytes: u64,
    /// The resume point, in stream milliseconds.
    pub ms: u64,
    /// End of the last final published, in stream milliseconds (`None`: no final yet).
    pub final_end_ms: Option<u64>,
}

impl Position {
    /// The start of a stream nothing was transcribed of.
    pub fn start() -> Self {
        Position {
            entry_id: "0-0".to_owned(),
            bytes: 0,
            ms: 0,
            final_end_ms: None,
        }
    }
}

/// What a fenced commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// Published (or, for a position-only commit, stored).
    Done,
    /// The segment's audio was already covered by a published final: suppressed.
    Duplicate,
}

/// What a commit carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitKind {
    Final,
    Interim,
    Position,
}

impl CommitKind {
    fn as_str(self) -> &'static str {
        match self {
            CommitKind::Final => "final",
            CommitKind::Interim => "interim",
            CommitKind::Position => "position",
        }
    }
}

/// A stream entry as Redis sent it: its id and its fields in order.
pub(crate) type RawEntry = (String, Vec<(String, Vec<u8>)>);

/// One audio entry as read: its id and PCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AudioEntry {
    pub(crate) id: String,
    pub(crate) pcm: Vec<u8>,
}

/// Opens a connection for non-blocking commands that reconnects by itself after a failure.
pub(crate) async fn command_connection(
    client: &redis::Client,
) -> Result<ConnectionManager, TranscriberError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_connection_timeout(Some(COMMAND_TIMEOUT));
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(TranscriberError::redis("connect"))
}

/// Opens a connection for blocking reads of up to `block` (one per reader: a blocked
/// `XREAD` holds its connection).
pub(crate) async fn blocking_connection(
    client: &redis::Client,
    block: Duration,
) -> Result<MultiplexedConnection, TranscriberError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(block + BLOCKING_REPLY_SLACK));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(TranscriberError::redis("connect"))
}

/// Milliseconds for Redis (`PX`, script arguments), at least 1.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `SET lease <worker> NX PX ttl`: whether this worker now holds the stream.
pub(crate) async fn acquire(
    con: &mut impl redis::aio::ConnectionLike,
    keys: &StreamKeys,
    worker: &str,
    ttl: Duration,
) -> Result<bool, TranscriberError> {
    let reply: Value = redis::cmd("SET")
        .arg(&keys.lease)
        .arg(worker)
        .arg("NX")
        .arg("PX")
        .arg(millis(ttl))
        .query_async(con)
        .await
        .map_err(TranscriberError::redis("SET NX lease"))?;
    match reply {
        Value::Okay => Ok(true),
        Value::Nil => Ok(false),
        other => Err(TranscriberError::reply("SET NX lease", &other)),
    }
}

/// Runs `script` with `keys` and `args`, expecting an integer.
async fn eval_int(
    con: &mut impl redis::aio::ConnectionLike,
    what: &'static str,
    script: &str,
    keys: &[&str],
    args: &[&[u8]],
) -> Result<i64, TranscriberError> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    for a in args {
        cmd.arg(*a);
    }
    let reply: Value = cmd
        .query_async(con)
        .await
        .map_err(TranscriberError::redis(what))?;
    match reply {
        Value::Int(n) => Ok(n),
        other => Err(TranscriberError::reply(what, &other)),
    }
}

/// Renews the lease if still held ([`RENEW_SCRIPT`]).
pub(crate) async fn renew(
    con: &mut impl redis::aio::ConnectionLike,
    keys: &StreamKeys,
    worker: &str,
    ttl: Duration,
) -> Result<bool, TranscriberError> {
    let ttl = millis(ttl).to_string();
    let n = eval_int(
        con,
        "renew lease",
        RENEW_SCRIPT,
        &[&keys.lease],
        &[worker.as_bytes(), ttl.as_bytes()],
    )
    .await?;
    Ok(n == 1)
}

/// Releases the lease if still held ([`RELEASE_SCRIPT`]).
pub(crate) async fn release(
    con: &mut impl redis::aio::ConnectionLike,
    keys: &StreamKeys,
    worker: &str,
) -> Result<bool, TranscriberError> {
    let n = eval_int(
        con,
        "release lease",
        RELEASE_SCRIPT,
        &[&keys.lease],
        &[worker.as_bytes()],
    )
    .await?;
    Ok(n == 1)
}

/// The stream's committed position ([`Position::start`] when none).
pub(crate) async fn load_position(
    con: &mut impl redis::aio::ConnectionLike,
    keys: &StreamKeys,
) -> Result<Position, TranscriberError> {
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&keys.position)
        .query_async(con)
        .await
        .map_err(TranscriberError::redis("HGETALL position"))?;
    let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
    let mut position = Position::start();
    if let (Some(id), Some(bytes), Some(ms)) = (fields.get("id"), number("bytes"), number("ms")) {
        position.entry_id = id.clone();
        position.bytes = bytes;
        position.ms = ms;
    }
    position.final_end_ms = number("final_end_ms");
    Ok(position)
}

/// The resume point a commit proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    pub(crate) entry_id: String,
    pub(crate) bytes: u64,
    pub(crate) ms: u64,
}

/// Publishes `payload` of `kind` on `channel` and/or commits `resume` ([`COMMIT_SCRIPT`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit(
    con: &mut impl redis::aio::ConnectionLike,
    keys: &StreamKeys,
    worker: &str,
    channel: &str,
    payload: &[u8],
    kind: CommitKind,
    end_ms: u64,
    resume: &Resume,
) -> Result<Committed, TranscriberError> {
    let end_ms = end_ms.to_string();
    let bytes = resume.bytes.to_string();
    let ms = resume.ms.to_string();
    let n = eval_int(
        con,
        "commit",
        COMMIT_SCRIPT,
        &[&keys.lease, &keys.position],
        &[
            worker.as_bytes(),
            channel.as_bytes(),
            payload,
            kind.as_str().as_bytes(),
            end_ms.as_bytes(),
            resume.entry_id.as_bytes(),
            bytes.as_bytes(),
            ms.as_bytes(),
        ],
    )
    .await?;
    match n {
        1 => Ok(Committed::Done),
        0 => Ok(Committed::Duplicate),
        _ => Err(TranscriberError::LeaseLost),
    }
}

/// What [`finish`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The stream ended: lease released, dropped from the active set.
    Ended,
    /// A session is still open or audio arrived: the stream goes on.
    GoesOn,
}

/// Ends the stream if it is over ([`FINISH_SCRIPT`]).
pub(crate) async fn finish(
    con: &mut impl redis::aio::ConnectionLike,
    keys: &StreamKeys,
    worker: &str,
    last_read: &str,
    force: bool,
) -> Result<Finish, TranscriberError> {
    let n = eval_int(
        con,
        "finish stream",
        FINISH_SCRIPT,
        &[
            &keys.lease,
            &keys.open_sessions,
            ACTIVE_STREAMS_KEY,
            &keys.audio,
        ],
        &[
            worker.as_bytes(),
            keys.member.as_bytes(),
            last_read.as_bytes(),
            if force { b"1" } else { b"0" },
        ],
    )
    .await?;
    match n {
        1 => Ok(Finish::Ended),
        0 => Ok(Finish::GoesOn),
        _ => Err(TranscriberError::LeaseLost),
    }
}

/// Whether the stream has open sessions (read-only; the decision is [`finish`]'s).
pub(crate) async fn has_open_sessions(
    con: &mut impl redis::aio::ConnectionLike,
    keys: &StreamKeys,
) -> Result<bool, TranscriberError> {
    let n: u64 = redis::cmd("SCARD")
        .arg(&keys.open_sessions)
        .query_async(con)
        .await
        .map_err(TranscriberError::redis("SCARD open sessions"))?;
    Ok(n > 0)
}

/// Id of the stream's newest entry, if any (`XREVRANGE key + - COUNT 1`).
pub(crate) async fn newest_id(
    con: &mut impl redis::aio::ConnectionLike,
    key: &str,
) -> Result<Option<String>, TranscriberError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(con)
        .await
        .map_err(TranscriberError::redis("XREVRANGE"))?;
    let entries = parse_entries("XREVRANGE", reply)?;
    Ok(entries.into_iter().next().map(|(id, _)| id))
}

/// `XREAD COUNT count BLOCK block STREAMS key after`: up to `count` entries after `after`,
/// waiting up to `block` for the first; none on timeout.
pub(crate) async fn xread(
    con: &mut impl redis::aio::ConnectionLike,
    key: &str,
    after: &str,
    count: usize,
    block: Duration,
) -> Result<Vec<RawEntry>, TranscriberError> {
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(millis(block))
        .arg("STREAMS")
        .arg(key)
        .arg(after)
        .query_async(con)
        .await
        .map_err(TranscriberError::redis("XREAD"))?;
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for stream in streams {
                let Value::Array(parts) = stream else {
                    return Err(TranscriberError::reply("XREAD", &stream));
                };
                let mut parts = parts.into_iter();
                let (Some(_name), Some(entries), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(TranscriberError::Reply {
                        what: "XREAD",
                        detail: "a stream that is not [name, entries]".into(),
                    });
                };
                out.extend(parse_entries("XREAD", entries)?);
            }
            Ok(out)
        }
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_name, entries) in streams {
                out.extend(parse_entries("XREAD", entries)?);
            }
            Ok(out)
        }
        other => Err(TranscriberError::reply("XREAD", &other)),
    }
}

/// Audio entries of an `XREAD` (their `pcm` field; an entry without one carries no audio).
pub(crate) fn audio_entries(entries: Vec<RawEntry>) -> Vec<AudioEntry> {
    entries
        .into_iter()
        .map(|(id, fields)| {
            let pcm = fields
                .into_iter()
                .find(|(k, _)| k == AUDIO_FIELD_PCM)
                .map(|(_, v)| v)
                .unwrap_or_default();
            AudioEntry { id, pcm }
        })
        .collect()
}

/// An array of `[id, [field, value, …]]` entries.
fn parse_entries(what: &'static str, value: Value) -> Result<Vec<RawEntry>, TranscriberError> {
    let Value::Array(entries) = value else {
        return Err(TranscriberError::reply(what, &value));
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return Err(TranscriberError::reply(what, &entry));
            };
            let mut parts = parts.into_iter();
            let (Some(Value::BulkString(id)), Some(Value::Array(flat)), None) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(TranscriberError::Reply {
                    what,
                    detail: "an entry that is not [id, fields]".into(),
                });
            };
            let id = String::from_utf8_lossy(&id).into_owned();
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                match (k, v) {
                    (Value::BulkString(k), Value::BulkString(v)) => {
                        fields.push((String::from_utf8_lossy(&k).into_owned(), v));
                    }
                    _ => {
                        return Err(TranscriberError::Reply {
                            what,
                            detail: format!("entry {id}: a field that is not two strings"),
                        })
                    }
                }
            }
            Ok((id, fields))
        })
        .collect()
}

/// The millisecond part of a stream id (`<ms>-<seq>`): when Redis appended the entry.
pub(crate) fn id_ms(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_in_order_with_binary_values() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"5-1".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"seq".to_vec()),
                Value::BulkString(b"1".to_vec()),
                Value::BulkString(b"pcm".to_vec()),
                Value::BulkString(vec![0xff, 0x00]),
            ]),
        ])]);
        let entries = audio_entries(parse_entries("t", reply).unwrap());
        assert_eq!(
            entries,
            vec![AudioEntry {
                id: "5-1".into(),
                pcm: vec![0xff, 0x00]
            }]
        );
        assert!(parse_entries("t", Value::Nil).is_err());
        assert_eq!(id_ms("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(id_ms("0-0"), Some(0));
        assert_eq!(id_ms("junk"), None);
    }
}

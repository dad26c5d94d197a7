//! `DELETE /api/v1/meetings/{id}` (scope `admin`): removes everything the meeting left in
//! Redis and the key-value store ([`earshot_export::footprint`]), Redis first: the
//! key-value records are what makes a meeting known, so if a step fails the meeting still
//! answers and the DELETE can be repeated. Afterwards every route answers 404 for it (until
//! a capture agent connects to it again, which starts a new meeting of that id). One audit
//! line records who deleted what.

use earshot_auth::VerifiedToken;
use earshot_component_common::effects::EffectError;
use earshot_export::footprint;
use earshot_protocol::MeetingId;
use serde_json::json;
use spin_sdk::redis::{Connection, RedisResult};

use crate::api::ApiError;
use crate::store;

/// Keys asked of Redis per `SCAN` step: large enough that a big keyspace takes few round
/// trips, small enough that one step never stalls Redis (it is a hint, not a limit).
const SCAN_COUNT: &str = "1000";

/// What a deletion removed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Deleted {
    /// Redis keys deleted (and set members removed).
    pub(crate) redis: u64,
    /// Key-value entries deleted.
    pub(crate) kv: u64,
    /// The meeting's events deleted from the workers' session events stream (entries of a
    /// shared key, so not counted as keys).
    pub(crate) session_events: u64,
}

/// Deletes the meeting for the holder of `token`; 404 when nothing of it was left.
pub(crate) fn delete(meeting: &MeetingId, token: &VerifiedToken) -> Result<Deleted, ApiError> {
    let mut deleted = Deleted::default();
    let outcome = sweep(meeting, &mut deleted);
    let (level, msg) = match &outcome {
        Ok(()) if deleted.redis + deleted.kv == 0 => ("info", "meeting delete: nothing to delete"),
        Ok(()) => ("info", "meeting deleted"),
        Err(_) => ("error", "meeting delete failed"),
    };
    let mut line = json!({
        "level": level,
        "component": "transcripts-http",
        "msg": msg,
        "audit": "meeting.delete",
        "meeting_id": meeting.as_str(),
        "sub": token.sub,
        "jti": token.jti,
        "redis_keys_deleted": deleted.redis,
        "kv_keys_deleted": deleted.kv,
        "session_events_deleted": deleted.session_events,
    });
    if let Err(e) = &outcome {
        line["detail"] = json!(e.0);
    }
    println!("{line}");
    match outcome {
        Ok(()) if deleted.redis + deleted.kv == 0 => Err(ApiError::UnknownMeeting),
        Ok(()) => Ok(deleted),
        Err(e) => Err(ApiError::Unavailable(e.0)),
    }
}

fn sweep(meeting: &MeetingId, deleted: &mut Deleted) -> Result<(), EffectError> {
    let url = store::redis_url().map_err(|e| EffectError(format!("{e:?}")))?;
    if !url.is_empty() {
        let conn = store::redis(&url)?;
        sweep_redis(&conn, meeting, deleted)?;
    }
    sweep_kv(meeting, deleted)
}

fn sweep_redis(conn: &Connection, meeting: &MeetingId, deleted: &mut Deleted) -> Result<(), EffectError> {
    let keys = footprint::redis_keys(meeting);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    deleted.redis += store::int_reply("DEL", &store::execute(conn, "DEL", &refs)?)?;

    let (set, members) = footprint::redis_set_members(meeting);
    let mut args = vec![set];
    args.extend(members.iter().map(String::as_str));
    deleted.redis += store::int_reply("SREM", &store::execute(conn, "SREM", &args)?)?;

    let (pending, member) = footprint::pending_end(meeting);
    deleted.redis += store::int_reply("ZREM", &store::execute(conn, "ZREM", &[pending, &member])?)?;
    let (due, pattern) = footprint::webhooks_due(meeting);
    let mut cursor = "0".to_owned();
    loop {
        let reply = store::execute(conn, "ZSCAN", &[due, &cursor, "MATCH", &pattern, "COUNT", SCAN_COUNT])?;
        let mut values = reply.into_iter();
        cursor = values
            .next()
            .and_then(store::text)
            .ok_or_else(|| EffectError("redis ZSCAN: no cursor".into()))?;
        // Member, score, member, score…
        let found: Vec<String> = values
            .step_by(2)
            .filter_map(store::text)
            .filter(|delivery| footprint::owns_delivery(meeting, delivery))
            .collect();
        if !found.is_empty() {
            let mut args = vec![due];
            args.extend(found.iter().map(String::as_str));
            deleted.redis += store::int_reply("ZREM", &store::execute(conn, "ZREM", &args)?)?;
        }
        if cursor == "0" {
            break;
        }
    }

    let (events, field) = footprint::session_events();
    let count = footprint::SESSION_EVENTS_PAGE.to_string();
    let mut start = "-".to_owned();
    loop {
        let reply = store::execute(
            conn,
            "EVAL",
            &[footprint::SESSION_EVENTS_SCRIPT, "1", events, &start, &count, field, meeting.as_str()],
        )?;
        let (removed, last, read) = match reply.as_slice() {
            [RedisResult::Int64(removed), last, RedisResult::Int64(read)] => (*removed, store::text(last.clone()), *read),
            other => return Err(EffectError(format!("redis EVAL (session events): unexpected reply {other:?}"))),
        };
        deleted.session_events += u64::try_from(removed).unwrap_or(0);
        match last {
            Some(last) if usize::try_from(read).unwrap_or(0) >= footprint::SESSION_EVENTS_PAGE => start = format!("({last}"),
            _ => break,
        }
    }

    for pattern in footprint::redis_patterns(meeting) {
        let mut cursor = "0".to_owned();
        loop {
            let reply = store::execute(conn, "SCAN", &[&cursor, "MATCH", &pattern, "COUNT", SCAN_COUNT])?;
            let mut values = reply.into_iter();
            cursor = values
                .next()
                .and_then(store::text)
                .ok_or_else(|| EffectError("redis SCAN: no cursor".into()))?;
            let found: Vec<String> = values
                .filter_map(store::text)
                .filter(|key| footprint::owns_redis_key(meeting, key))
                .collect();
            if !found.is_empty() {
                let refs: Vec<&str> = found.iter().map(String::as_str).collect();
                deleted.redis += store::int_reply("DEL", &store::execute(conn, "DEL", &refs)?)?;
            }
            if cursor == "0" {
                break;
            }
        }
    }
    Ok(())
}

fn sweep_kv(meeting: &MeetingId, deleted: &mut Deleted) -> Result<(), EffectError> {
    let kv = store::kv().map_err(|e| EffectError(format!("{e:?}")))?;
    let mut keys = footprint::kv_keys(meeting);
    for key in store::kv_keys(&kv)? {
        if footprint::owns_kv_key(meeting, &key) && !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in keys {
        let exists = kv
            .exists(&key)
            .map_err(|e| EffectError(format!("key-value exists: {e:?}")))?;
        if exists {
            kv.delete(&key)
                .map_err(|e| EffectError(format!("key-value delete: {e:?}")))?;
            deleted.kv += 1;
        }
    }
    Ok(())
}


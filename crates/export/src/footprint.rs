//! Everything a meeting leaves behind, so `DELETE /api/v1/meetings/{id}` can remove it all:
//! Redis keys by exact name (audio streams, transcript history, the transcription workers'
//! per-stream keys, the rate limit, the meeting-end records), its key families found by
//! `SCAN` (per-meeting records, webhook deliveries), its members of the workers'
//! active-streams set, of the meetings due to end and of the webhooks due, its events in the
//! workers' session events stream; and every
//! key-value entry under `meeting:{id}:` (presence, transcript state, talk record, stats
//! election, and whatever per-meeting record comes next) or `ratelimit:ingest:{id}:`.
//!
//! Meeting ids are `[A-Za-z0-9._-]` only, so they never carry a glob metacharacter, and they
//! never contain `:`, so no other meeting's key shares a prefix ending in `:`. A `.` does
//! not end an id, so what a pattern ending in `{id}.*` finds is checked before it goes.

use earshot_protocol::asr::{
    active_member, lease_key, open_sessions_key, position_key, ACTIVE_STREAMS_KEY, EVENT_FIELD_MEETING,
    SESSIONS_STREAM_KEY,
};
use earshot_protocol::ids::{audio_stream_key, ingest_rate_limit_key, presence_key};
use earshot_protocol::meeting::meeting_state_key;
use earshot_protocol::meeting_end::{meeting_keys, PENDING_ENDS_KEY, WEBHOOK_DUE_KEY};
use earshot_protocol::transcript::transcript_stream_key;
use earshot_protocol::{MeetingId, Source};

/// Every source a meeting can have.
const SOURCES: [Source; 2] = [Source::Mic, Source::Sys];

/// The meeting's Redis keys, by exact name.
pub fn redis_keys(meeting: &MeetingId) -> Vec<String> {
    let mut keys = vec![transcript_stream_key(meeting)];
    for source in SOURCES {
        keys.push(audio_stream_key(meeting, source));
        keys.push(lease_key(meeting, source));
        keys.push(position_key(meeting, source));
        keys.push(open_sessions_key(meeting, source));
        keys.push(ingest_rate_limit_key(meeting, source));
    }
    keys.extend(meeting_keys(meeting));
    keys
}

/// `SCAN MATCH` patterns of the meeting's other Redis key families: per-meeting records
/// (`meeting:{id}:*`), the meeting-end records (`earshot:meeting:{id}:*`: live sources,
/// totals, the ended marker) and webhook deliveries (`earshot:webhook:{id}.<ended_ms>`).
/// A pattern can match another meeting's key (`m1.*` matches meeting `m1.5`'s), so every
/// key found is checked with [`owns_redis_key`] before it is deleted.
pub fn redis_patterns(meeting: &MeetingId) -> Vec<String> {
    vec![
        format!("meeting:{meeting}:*"),
        format!("earshot:meeting:{meeting}:*"),
        format!("earshot:webhook:{meeting}.*"),
    ]
}

/// Whether Redis key `key`, found by one of [`redis_patterns`], belongs to the meeting.
pub fn owns_redis_key(meeting: &MeetingId, key: &str) -> bool {
    let under = |prefix: String| key.strip_prefix(prefix.as_str()).is_some_and(|rest| !rest.is_empty());
    under(format!("meeting:{meeting}:"))
        || under(format!("earshot:meeting:{meeting}:"))
        || key
            .strip_prefix("earshot:webhook:")
            .is_some_and(|delivery| owns_delivery(meeting, delivery))
}

/// Whether webhook delivery id `delivery` (`{meeting}.{ended_ms}`) announces the meeting.
pub fn owns_delivery(meeting: &MeetingId, delivery: &str) -> bool {
    delivery
        .strip_prefix(meeting.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
}

/// The sorted set of meetings due to end and the meeting's member: a deleted meeting must
/// not end (and announce itself) afterwards.
pub fn pending_end(meeting: &MeetingId) -> (&'static str, String) {
    (PENDING_ENDS_KEY, meeting.to_string())
}

/// The sorted set of due webhook deliveries and the `ZSCAN MATCH` pattern of the meeting's
/// (members found are checked with [`owns_delivery`]).
pub fn webhooks_due(meeting: &MeetingId) -> (&'static str, String) {
    (WEBHOOK_DUE_KEY, format!("{meeting}.*"))
}

/// The set holding the meeting's members, and those members.
pub fn redis_set_members(meeting: &MeetingId) -> (&'static str, Vec<String>) {
    (ACTIVE_STREAMS_KEY, SOURCES.iter().map(|s| active_member(meeting, *s)).collect())
}

/// Session events read per call of [`SESSION_EVENTS_SCRIPT`]: the events stream is capped
/// at ~10,000 entries, so ten calls at most, each a few milliseconds of Redis time.
pub const SESSION_EVENTS_PAGE: usize = 1_000;

/// Deletes the meeting's entries from one page of the workers' session events stream.
/// `KEYS[1]`: the stream; `ARGV`: range start (`-` or `(<id>`), count, the meeting field,
/// the meeting id. Reply: entries deleted, the last id read (`nil`: none), entries read.
pub const SESSION_EVENTS_SCRIPT: &str = r"
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local deleted, last = 0, false
for _, e in ipairs(entries) do
  last = e[1]
  local fields = e[2]
  for j = 1, #fields, 2 do
    if fields[j] == ARGV[3] then
      if fields[j + 1] == ARGV[4] then
        redis.call('XDEL', KEYS[1], e[1])
        deleted = deleted + 1
      end
      break
    end
  end
end
return { deleted, last, #entries }
";

/// The session events stream and the field naming an event's meeting (its entries name
/// the meeting in a value, not in a key, so only the script above finds them).
pub fn session_events() -> (&'static str, &'static str) {
    (SESSIONS_STREAM_KEY, EVENT_FIELD_MEETING)
}

/// Key-value entries the meeting has by exact name (also found by [`owns_kv_key`]; listed
/// so they go even where a store cannot list its keys).
pub fn kv_keys(meeting: &MeetingId) -> Vec<String> {
    let mut keys = vec![presence_key(meeting), meeting_state_key(meeting)];
    keys.extend(SOURCES.iter().map(|s| ingest_rate_limit_key(meeting, *s)));
    keys
}

/// Whether key-value entry `key` belongs to the meeting.
pub fn owns_kv_key(meeting: &MeetingId, key: &str) -> bool {
    [format!("meeting:{meeting}:"), format!("ratelimit:ingest:{meeting}:")]
        .iter()
        .any(|prefix| key.starts_with(prefix.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_names_the_meeting_and_no_other() {
        let m = MeetingId::parse("m1").unwrap();
        let keys = redis_keys(&m);
        assert!(keys.contains(&"audio:m1:sys".to_owned()) && keys.contains(&"transcript:m1".to_owned()));
        assert!(keys.contains(&"asr:position:m1:mic".to_owned()) && keys.contains(&"earshot:asr:open:m1:sys".to_owned()));
        assert!(keys.contains(&"earshot:meeting:m1:totals".to_owned()));
        assert_eq!(keys.len(), 14);
        assert_eq!(pending_end(&m).1, "m1");
        assert_eq!(webhooks_due(&m).1, "m1.*");
        assert!(owns_delivery(&m, "m1.1700000000000") && !owns_delivery(&m, "m1.5.17") && !owns_delivery(&m, "m10.17"));
        assert_eq!(redis_patterns(&m), ["meeting:m1:*", "earshot:meeting:m1:*", "earshot:webhook:m1.*"]);
        for key in ["meeting:m1:x", "earshot:meeting:m1:totals", "earshot:webhook:m1.1700000000000"] {
            assert!(owns_redis_key(&m, key), "{key}");
        }
        for key in ["meeting:m1:", "earshot:meeting:m10:live", "earshot:webhook:m1.5.1700000000000", "earshot:webhook:m1.", "earshot:webhook:m1x.1"] {
            assert!(!owns_redis_key(&m, key), "{key}");
        }
        assert_eq!(redis_set_members(&m).1, ["m1:mic", "m1:sys"]);
        for key in ["meeting:m1:presence", "meeting:m1:talk", "meeting:m1:stats-at", "ratelimit:ingest:m1:mic"] {
            assert!(owns_kv_key(&m, key), "{key}");
        }
        for key in ["meeting:m10:presence", "meeting:m1", "revoked:m1", "ratelimit:ingest:m1x:mic", "xmeeting:m1:state"] {
            assert!(!owns_kv_key(&m, key), "{key}");
        }
        assert!(kv_keys(&m).iter().all(|k| owns_kv_key(&m, k)));
    }
}

//! The end of a meeting (issue 12): the Redis keys and scripts through which the ingest
//! component, the `POST /api/v1/meetings/{id}/end` route and the native sweepers agree that
//! a meeting ended exactly once, the `meeting_ended` totals, and the `meeting.ended` webhook
//! body.
//!
//! A meeting ends when its last ingest connection left and none joined within the grace
//! period, or when a client asks. Ingest keeps the meeting's live connections in a Redis
//! set ([`live_key`]); when the last one leaves, [`LEAVE_SCRIPT`] schedules the end in the
//! sorted set [`PENDING_ENDS_KEY`] (score: the deadline, unix ms) and a join removes it
//! ([`JOIN_SCRIPT`]). Sweepers (any number, in any process) claim due entries with
//! [`END_SCRIPT`], which sets the meeting's end marker with `SET NX` and — in the same
//! atomic step — publishes the `meeting_ended` event and queues the webhook delivery: the
//! one that set the marker is the only one that announces the end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{MeetingId, Source};

/// Default grace period after the last source left before the meeting ends, in seconds.
/// A capture agent that loses its network reconnects with backoff within seconds; a
/// laptop that sleeps through a lid close or a Wi-Fi hand-over takes tens of seconds.
/// A minute covers both, and a webhook consumer waits at most a minute for the end.
pub const DEFAULT_MEETING_END_GRACE_S: u64 = 60;

/// Default lifetime of a meeting's audio streams after their last write, in seconds.
/// Workers transcribe within seconds and re-transcribing is a same-day operation; a day
/// keeps a day's audio for that while raw speech, the most sensitive data Earshot holds,
/// never outlives the transcripts (kept far longer, as text).
pub const DEFAULT_AUDIO_RETENTION_S: u64 = 86_400;

/// How long the end marker, the totals and the live set of a meeting are kept, in
/// milliseconds. The marker is what makes the end happen once: it must outlive any
/// late disconnect of the meeting. Thirty days, the transcripts' default retention.
pub const MEETING_RECORD_TTL_MS: u64 = 30 * 86_400 * 1_000;

/// How long a queued webhook delivery is kept, in milliseconds: far beyond the last
/// retry, so an undelivered one is still there to inspect for a week.
pub const WEBHOOK_RECORD_TTL_MS: u64 = 7 * 86_400 * 1_000;

/// Redis sorted set of meetings whose last source left: member the meeting id, score the
/// unix milliseconds at which it ends unless a source joins first.
pub const PENDING_ENDS_KEY: &str = "earshot:meetings:pending-end";

/// Redis sorted set of webhook deliveries: member the delivery id, score the unix
/// milliseconds of its next attempt.
pub const WEBHOOK_DUE_KEY: &str = "earshot:webhooks:due";

/// Redis set of a meeting's live ingest connection ids.
pub fn live_key(meeting: &MeetingId) -> String {
    format!("earshot:meeting:{meeting}:live")
}

/// Redis hash of a meeting's running totals: `started_ms` (first connection),
/// `last_left_ms` (latest disconnect), `talk_ms:<source>` (speech, milliseconds).
pub fn totals_key(meeting: &MeetingId) -> String {
    format!("earshot:meeting:{meeting}:totals")
}

/// Redis key holding the unix milliseconds at which a meeting ended, once it did.
pub fn ended_key(meeting: &MeetingId) -> String {
    format!("earshot:meeting:{meeting}:ended")
}

/// Redis hash of one webhook delivery: `body` (the signed JSON) and `attempts`.
pub fn webhook_key(delivery_id: &str) -> String {
    format!("earshot:webhook:{delivery_id}")
}

/// Every Redis key this module keeps for `meeting` (its deletion removes these too).
pub fn meeting_keys(meeting: &MeetingId) -> [String; 3] {
    [live_key(meeting), totals_key(meeting), ended_key(meeting)]
}

/// Field of [`totals_key`]: the first connection, unix ms.
pub const TOTALS_STARTED_MS: &str = "started_ms";
/// Field of [`totals_key`]: the latest disconnect, unix ms.
pub const TOTALS_LAST_LEFT_MS: &str = "last_left_ms";

/// Field of [`totals_key`] counting `source`'s speech, milliseconds.
pub fn talk_field(source: Source) -> String {
    format!("talk_ms:{source}")
}

/// One Redis script run: `EVAL script len(keys) keys… args…`. Both the components (Spin
/// outbound Redis) and native code (the `redis` crate) run these, so each script exists once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCall {
    /// The Lua source.
    pub script: &'static str,
    /// `KEYS`.
    pub keys: Vec<String>,
    /// `ARGV`.
    pub args: Vec<String>,
}

/// A connection joined: `KEYS[1]` live set, `KEYS[2]` pending ends, `KEYS[3]` totals;
/// `ARGV`: connection id, meeting id, now ms, record TTL ms. Cancels a pending end and
/// records the meeting's start once. Returns the live connection count.
pub const JOIN_SCRIPT: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HSETNX', KEYS[3], 'started_ms', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return redis.call('SCARD', KEYS[1])
"#;

/// A connection left: `KEYS[1]` live set, `KEYS[2]` pending ends, `KEYS[3]` totals,
/// `KEYS[4]` the end marker, `KEYS[5]` the connection's audio stream; `ARGV`: connection
/// id, meeting id, now ms, end deadline ms, record TTL ms, audio TTL ms. The audio expires
/// a retention period after its last session; when no connection is left and the meeting
/// has not ended, its end is scheduled. Returns 1 when it was.
pub const LEAVE_SCRIPT: &str = r#"
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], 'last_left_ms', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[5], ARGV[6])
if redis.call('SCARD', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
  return 1
end
return 0
"#;

/// Speech on a source ended: `KEYS[1]` totals; `ARGV`: field, milliseconds, record TTL ms.
pub const TALK_SCRIPT: &str = r#"
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
return redis.call('PEXPIRE', KEYS[1], ARGV[3])
"#;

/// Sets a key's lifetime: `KEYS[1]`; `ARGV[1]` milliseconds (an audio stream's first
/// frame of a session: the stream exists from then on).
pub const EXPIRE_SCRIPT: &str = r#"
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
"#;

/// Ends a meeting, once. `KEYS[1]` pending ends, `KEYS[2]` end marker, `KEYS[3]` webhook
/// due set, `KEYS[4]` the delivery's hash; `ARGV`: meeting id, mode (`due`: only if its
/// pending end is due; `now`: unconditionally), now ms, marker TTL ms, Redis channel of
/// the event (empty: the caller publishes over HTTP), the event's GRIP item, delivery id
/// (empty: no webhook), webhook body, delivery TTL ms. The `SET NX` on the marker decides;
/// the winner's event and delivery go out in the same atomic step, so an end is announced
/// exactly once. Returns 1 for the winner, 0 otherwise.
pub const END_SCRIPT: &str = r#"
if ARGV[2] == 'due' then
  local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not deadline or tonumber(deadline) > tonumber(ARGV[3]) then return 0 end
end
redis.call('ZREM', KEYS[1], ARGV[1])
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return 0 end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[4], 'body', ARGV[8], 'attempts', 0)
  redis.call('PEXPIRE', KEYS[4], ARGV[9])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[7])
end
return 1
"#;

/// [`JOIN_SCRIPT`] for `connection_id` joining `meeting` at `now_ms`.
pub fn join_call(meeting: &MeetingId, connection_id: &str, now_ms: u64) -> ScriptCall {
    ScriptCall {
        script: JOIN_SCRIPT,
        keys: vec![live_key(meeting), PENDING_ENDS_KEY.to_owned(), totals_key(meeting)],
        args: vec![connection_id.to_owned(), meeting.to_string(), now_ms.to_string(), MEETING_RECORD_TTL_MS.to_string()],
    }
}

/// [`LEAVE_SCRIPT`] for `connection_id` of `source` leaving `meeting` at `now_ms`, the end
/// due `grace_ms` later, its audio kept `audio_ttl_ms`.
pub fn leave_call(meeting: &MeetingId, source: Source, connection_id: &str, now_ms: u64, grace_ms: u64, audio_ttl_ms: u64) -> ScriptCall {
    ScriptCall {
        script: LEAVE_SCRIPT,
        keys: vec![
            live_key(meeting),
            PENDING_ENDS_KEY.to_owned(),
            totals_key(meeting),
            ended_key(meeting),
            crate::ids::audio_stream_key(meeting, source),
        ],
        args: vec![
            connection_id.to_owned(),
            meeting.to_string(),
            now_ms.to_string(),
            now_ms.saturating_add(grace_ms).to_string(),
            MEETING_RECORD_TTL_MS.to_string(),
            audio_ttl_ms.to_string(),
        ],
    }
}

/// [`TALK_SCRIPT`]: `source` of `meeting` spoke `duration_ms` more.
pub fn talk_call(meeting: &MeetingId, source: Source, duration_ms: u64) -> ScriptCall {
    ScriptCall {
        script: TALK_SCRIPT,
        keys: vec![totals_key(meeting)],
        args: vec![talk_field(source), duration_ms.to_string(), MEETING_RECORD_TTL_MS.to_string()],
    }
}

/// [`EXPIRE_SCRIPT`]: `key` lives `ttl_ms` from now.
pub fn expire_call(key: String, ttl_ms: u64) -> ScriptCall {
    ScriptCall { script: EXPIRE_SCRIPT, keys: vec![key], args: vec![ttl_ms.to_string()] }
}

/// When an end is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndMode {
    /// A sweeper: only if the meeting's pending end is due.
    Due,
    /// `POST …/end`: now, whatever is pending.
    Now,
}

/// What [`END_SCRIPT`] announces when it wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndAnnouncement {
    /// Redis channel of the event (`earshot:grip:meeting:{id}`); `None`: published over
    /// HTTP by the caller after a win.
    pub redis_channel: Option<String>,
    /// The event's GRIP item, JSON.
    pub item: String,
    /// The webhook delivery, when one is configured: its id and body.
    pub webhook: Option<(String, String)>,
}

impl EndAnnouncement {
    /// What ending `meeting` with `totals` announces: the `meeting_ended` event as a GRIP
    /// item on `meeting:{id}` (published by the script when `via_redis`), and, when
    /// `webhook` is configured, the `meeting.ended` body (`public_url` may be empty).
    pub fn build(meeting: &MeetingId, reason: EndReason, totals: &MeetingTotals, via_redis: bool, webhook: bool, public_url: &str) -> EndAnnouncement {
        let channel = crate::ids::meeting_channel(meeting);
        let item = crate::grip::Item::text(&channel, ended_event(meeting, reason, totals).to_json());
        let webhook = webhook.then(|| {
            let body = MeetingEndedWebhook::new(meeting, reason, totals, public_url);
            (body.delivery_id.clone(), body.to_json())
        });
        EndAnnouncement {
            redis_channel: via_redis.then(|| format!("{}{channel}", crate::ids::GRIP_REDIS_PREFIX)),
            item: serde_json::to_string(&item).expect("publish items serialize"),
            webhook,
        }
    }
}

/// [`END_SCRIPT`] for `meeting` at `now_ms`.
pub fn end_call(meeting: &MeetingId, mode: EndMode, now_ms: u64, announce: &EndAnnouncement) -> ScriptCall {
    let (delivery_id, body) = announce.webhook.clone().unwrap_or_default();
    ScriptCall {
        script: END_SCRIPT,
        keys: vec![
            PENDING_ENDS_KEY.to_owned(),
            ended_key(meeting),
            WEBHOOK_DUE_KEY.to_owned(),
            webhook_key(if delivery_id.is_empty() { "none" } else { &delivery_id }),
        ],
        args: vec![
            meeting.to_string(),
            match mode {
                EndMode::Due => "due",
                EndMode::Now => "now",
            }
            .to_owned(),
            now_ms.to_string(),
            MEETING_RECORD_TTL_MS.to_string(),
            announce.redis_channel.clone().unwrap_or_default(),
            announce.item.clone(),
            delivery_id,
            body,
            WEBHOOK_RECORD_TTL_MS.to_string(),
        ],
    }
}

/// Why a meeting ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The last source left and none came back within the grace period.
    GraceExpired,
    /// `POST /api/v1/meetings/{id}/end`.
    Requested,
}

/// A meeting's totals at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingTotals {
    /// First ingest connection, unix milliseconds.
    pub started_ms: u64,
    /// The end: the last source's disconnect (grace expired) or the request, unix ms.
    pub ended_ms: u64,
    /// `ended_ms - started_ms`.
    pub duration_ms: u64,
    /// Speech per source, milliseconds (every source listed).
    pub talk_ms: BTreeMap<Source, u64>,
    /// Final transcript segments stored so far (up to the transcript stream's bound;
    /// a worker still transcribing the last audio may add more after the end).
    pub segment_count: u64,
}

impl MeetingTotals {
    /// The totals from the [`totals_key`] hash (`fields`, as `HGETALL` returns them) and
    /// the segment count, ending at `ended_ms` (for a grace end: `None`, the last leave).
    pub fn from_hash(fields: &BTreeMap<String, String>, ended_ms: Option<u64>, now_ms: u64, segment_count: u64) -> MeetingTotals {
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
        let ended_ms = ended_ms.or_else(|| number(TOTALS_LAST_LEFT_MS)).unwrap_or(now_ms);
        let started_ms = number(TOTALS_STARTED_MS).unwrap_or(ended_ms).min(ended_ms);
        let talk_ms = [Source::Mic, Source::Sys].into_iter().map(|s| (s, number(&talk_field(s)).unwrap_or(0))).collect();
        MeetingTotals { started_ms, ended_ms, duration_ms: ended_ms - started_ms, talk_ms, segment_count }
    }
}

/// The `meeting_ended` event on channel `meeting:{id}` (also a
/// [`crate::meeting::MeetingEvent`] variant, so subscribers parse one type).
pub fn ended_event(meeting: &MeetingId, reason: EndReason, totals: &MeetingTotals) -> crate::meeting::MeetingEvent {
    crate::meeting::MeetingEvent::MeetingEnded { meeting_id: meeting.to_string(), reason, totals: totals.clone() }
}

/// Event type of the webhook body.
pub const WEBHOOK_EVENT: &str = "meeting.ended";

/// The body of a `meeting.ended` webhook delivery (signed, `Earshot-Signature`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingEndedWebhook {
    /// Always [`WEBHOOK_EVENT`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The delivery's id, also in `Earshot-Delivery-Id`: the same on every retry.
    pub delivery_id: String,
    /// Meeting id.
    pub meeting_id: String,
    /// Why it ended.
    pub reason: EndReason,
    /// The figures.
    pub totals: MeetingTotals,
    /// Where the transcript is exported as JSON (`<public_url>/api/v1/meetings/{id}/transcript?format=json`;
    /// a path when no `public_url` is configured).
    pub export_url: String,
}

impl MeetingEndedWebhook {
    /// The body for `meeting`'s end; `public_url` (may be empty) prefixes the export path.
    pub fn new(meeting: &MeetingId, reason: EndReason, totals: &MeetingTotals, public_url: &str) -> MeetingEndedWebhook {
        MeetingEndedWebhook {
            kind: WEBHOOK_EVENT.to_owned(),
            delivery_id: delivery_id(meeting, totals.ended_ms),
            meeting_id: meeting.to_string(),
            reason,
            totals: totals.clone(),
            export_url: format!("{}{}", public_url.trim_end_matches('/'), export_path(meeting)),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("webhook bodies serialize")
    }
}

/// The path of a meeting's JSON transcript export.
pub fn export_path(meeting: &MeetingId) -> String {
    format!("/api/v1/meetings/{meeting}/transcript?format=json")
}

/// The id of the delivery announcing `meeting`'s end at `ended_ms`: a meeting ends once,
/// so this names one delivery, whoever builds it.
pub fn delivery_id(meeting: &MeetingId, ended_ms: u64) -> String {
    format!("{meeting}.{ended_ms}")
}

/// The path of the end route, `/api/v1/meetings/{id}/end`, parsed.
pub fn parse_end_path(path: &str) -> Option<Result<MeetingId, crate::ids::IdError>> {
    let id = path.strip_prefix("/api/v1/meetings/")?.strip_suffix("/end")?;
    if id.contains('/') {
        return None;
    }
    Some(MeetingId::parse(id))
}

/// The reply of `POST /api/v1/meetings/{id}/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndReply {
    /// `true` when this request ended the meeting; `false` when it had already ended.
    pub ended: bool,
    /// The totals announced (only when `ended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<MeetingTotals>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m1() -> MeetingId {
        MeetingId::parse("m1").unwrap()
    }

    #[test]
    fn totals_come_from_the_hash() {
        let fields = BTreeMap::from([
            ("started_ms".to_owned(), "1000".to_owned()),
            ("last_left_ms".to_owned(), "61000".to_owned()),
            ("talk_ms:mic".to_owned(), "2500".to_owned()),
        ]);
        let grace = MeetingTotals::from_hash(&fields, None, 99_000, 3);
        assert_eq!((grace.started_ms, grace.ended_ms, grace.duration_ms, grace.segment_count), (1000, 61_000, 60_000, 3));
        assert_eq!(grace.talk_ms, BTreeMap::from([(Source::Mic, 2500), (Source::Sys, 0)]));
        let now = MeetingTotals::from_hash(&fields, Some(70_000), 70_000, 0);
        assert_eq!(now.duration_ms, 69_000);
        // A meeting nobody joined ends with nothing: zero duration, never an underflow.
        let empty = MeetingTotals::from_hash(&BTreeMap::new(), Some(5), 5, 0);
        assert_eq!((empty.started_ms, empty.duration_ms), (5, 0));
    }

    #[test]
    fn the_event_and_the_webhook_have_their_shapes() {
        let totals = MeetingTotals {
            started_ms: 1,
            ended_ms: 11,
            duration_ms: 10,
            talk_ms: BTreeMap::from([(Source::Mic, 4), (Source::Sys, 0)]),
            segment_count: 2,
        };
        assert_eq!(
            ended_event(&m1(), EndReason::GraceExpired, &totals).to_json(),
            r#"{"type":"meeting_ended","meeting_id":"m1","reason":"grace_expired","started_ms":1,"ended_ms":11,"duration_ms":10,"talk_ms":{"mic":4,"sys":0},"segment_count":2}"#
        );
        let hook = MeetingEndedWebhook::new(&m1(), EndReason::Requested, &totals, "https://earshot.example/");
        assert_eq!(hook.delivery_id, "m1.11");
        assert_eq!(hook.export_url, "https://earshot.example/api/v1/meetings/m1/transcript?format=json");
        let json: serde_json::Value = serde_json::from_str(&hook.to_json()).unwrap();
        assert_eq!(json["type"], "meeting.ended");
        assert_eq!(json["reason"], "requested");
        assert_eq!(json["totals"]["talk_ms"]["mic"], 4);
        assert_eq!(MeetingEndedWebhook::new(&m1(), EndReason::Requested, &totals, "").export_url, export_path(&m1()));
    }

    #[test]
    fn end_paths_parse() {
        assert_eq!(parse_end_path("/api/v1/meetings/m1/end"), Some(Ok(m1())));
        assert!(matches!(parse_end_path("/api/v1/meetings/a%20b/end"), Some(Err(_))));
        assert_eq!(parse_end_path("/api/v1/meetings/m1/transcript"), None);
        assert_eq!(parse_end_path("/api/v1/meetings/a/b/end"), None);
    }

    #[test]
    fn the_announcement_is_a_grip_item_on_the_meeting_channel() {
        let totals = MeetingTotals::from_hash(&BTreeMap::new(), Some(9), 9, 0);
        let a = EndAnnouncement::build(&m1(), EndReason::Requested, &totals, true, true, "");
        assert_eq!(a.redis_channel.as_deref(), Some("earshot:grip:meeting:m1"));
        let item: crate::grip::Item = serde_json::from_str(&a.item).unwrap();
        assert_eq!(item.channel, "meeting:m1");
        let (id, body) = a.webhook.unwrap();
        assert_eq!(id, "m1.9");
        assert!(body.contains(r#""type":"meeting.ended""#));
        let quiet = EndAnnouncement::build(&m1(), EndReason::Requested, &totals, false, false, "");
        assert_eq!((quiet.redis_channel, quiet.webhook), (None, None));
    }

    #[test]
    fn the_end_call_passes_an_absent_webhook_as_empty() {
        let call = end_call(&m1(), EndMode::Due, 5, &EndAnnouncement { redis_channel: None, item: "{}".into(), webhook: None });
        assert_eq!(call.args[1], "due");
        assert_eq!(call.args[4], "");
        assert_eq!(call.args[6], "");
        assert_eq!(call.keys[1], "earshot:meeting:m1:ended");
    }
}

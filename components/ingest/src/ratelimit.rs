//! The ingest rate limit (DESIGN.md "Close codes", 1013): at most `rate_limit_count`
//! accepted connections per (meeting, source) within any `rate_limit_window_ms`.
//!
//! **Algorithm: a sliding-window log.** The limiter keeps the admission time of every
//! connection accepted in the last window; a new connection first drops entries older than
//! the window, then is admitted (and recorded) only if fewer than `count` remain. Refused
//! attempts are not recorded, so a client hammering a full window does not extend its own
//! ban, and only accepted connections count.
//!
//! **Why a log and not a counter.** A fixed-window counter (`INCR` + `EXPIRE`) admits up to
//! twice the limit around a window edge (`count` at the end of one window, `count` more at
//! the start of the next); a sliding log is exact for any window placement. Its cost — one
//! entry per accepted connection, at most `count` per key — is nothing at these limits.
//!
//! **Why it is atomic.** Several relays and component instances admit connections for the
//! same key at once, so check-and-record must be one indivisible step:
//! - with Redis, one Lua script ([`SCRIPT`]) run by `EVAL`: Redis runs a script without
//!   interleaving other commands, and the script reads Redis's own clock (`TIME`), so hosts
//!   with skewed clocks still share one timeline;
//! - without Redis, a compare-and-swap loop on a key-value entry ([`slide`] computes the next
//!   value; `Effects::kv_update` retries it on a newer value when another writer won).
//!
//! Both record the connection id as the entry's identity, so a relay retrying the same OPEN
//! is counted once.

use earshot_protocol::ids::ingest_rate_limit_key;
use earshot_protocol::{MeetingId, Source};

use crate::effects::{EffectError, IngestEffects};
use crate::settings::{RateLimit, Settings};

/// The sliding log on Redis. `KEYS[1]`: sorted set of connection id → admission time (ms);
/// `ARGV`: window (ms), limit, connection id. Returns 1 when admitted, 0 when refused. The
/// key expires one window after the last admission, when every entry would be stale anyway.
pub(crate) const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"#;

/// Whether a connection may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Under the limit; recorded.
    Admitted,
    /// At the limit: close 1013.
    Refused,
}

/// Admits or refuses connection `connection_id` to (meeting, source) at `now_ms`: through
/// Redis when one is configured (its failure is an error, never a silent admit), else through
/// the key-value store.
pub(crate) fn admit(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    meeting: &MeetingId,
    source: Source,
    connection_id: &str,
    now_ms: u64,
) -> Result<Admission, EffectError> {
    let key = ingest_rate_limit_key(meeting, source);
    let limit = settings.rate_limit;
    if settings.has_redis() {
        return Ok(if effects.redis_admit(&key, connection_id, limit)? {
            Admission::Admitted
        } else {
            Admission::Refused
        });
    }
    let mut decision = Admission::Refused;
    effects.kv_update(&key, &mut |current| {
        let (admission, next) = slide(current, connection_id, now_ms, limit);
        decision = admission;
        next
    })?;
    Ok(decision)
}

/// One step of the key-value sliding log: the decision for `connection_id` at `now_ms` given
/// the stored log, and the log to store (`None`: refused, nothing to write). The stored value
/// is a JSON array of `[admitted_ms, connection_id]`; an unreadable one counts as empty, so a
/// corrupt entry cannot lock a source out.
pub(crate) fn slide(
    current: Option<&[u8]>,
    connection_id: &str,
    now_ms: u64,
    limit: RateLimit,
) -> (Admission, Option<Vec<u8>>) {
    let mut log: Vec<(u64, String)> = current
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    let oldest_kept = now_ms.saturating_sub(limit.window_ms);
    log.retain(|(at, _)| *at > oldest_kept);
    if !log.iter().any(|(_, id)| id == connection_id) {
        if log.len() >= limit.count as usize {
            return (Admission::Refused, None);
        }
        log.push((now_ms, connection_id.to_owned()));
    }
    let bytes = serde_json::to_vec(&log).expect("a list of numbers and strings serializes");
    (Admission::Admitted, Some(bytes))
}

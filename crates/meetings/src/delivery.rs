//! One `meeting.ended` delivery's life: queued by the end script (hash
//! `earshot:webhook:{id}` with its body, member of `earshot:webhooks:due` scored by its next
//! attempt), claimed by one sweeper per attempt ([`CLAIM_SCRIPT`]: the attempt's lease moves
//! the score ahead, so nobody else takes it while it is in flight, and a sweeper that dies
//! mid-attempt only delays it), then removed on a 2xx or rescheduled with exponential
//! backoff — until [`RetryPolicy::max_attempts`], when it is dropped, logged and counted.
//! Delivery is at least once: a receiver that answered 2xx but whose answer was lost sees
//! the same `Earshot-Delivery-Id` again.

use std::time::Duration;

/// Attempts per delivery, the first included. With [`BACKOFF_BASE`] doubling up to
/// [`BACKOFF_MAX`], eight attempts span about four minutes: a receiver restarting or
/// redeploying is back by then, and a receiver down longer is an outage for an operator,
/// which the log line and `/metrics` show.
pub const MAX_ATTEMPTS: u32 = 8;

/// Wait after the first failed attempt; each further failure doubles it. One second rides
/// out a blip without hammering a receiver that is struggling.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest wait between two attempts: two minutes keeps the last attempts of the schedule
/// within minutes of the end, while still giving a receiver room to recover.
pub const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// Longest one attempt may take (connect, send, answer). A receiver should answer at once
/// and do its work afterwards; ten seconds is generous for that.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How far a claim pushes the delivery's next attempt ahead: longer than an attempt can
/// take, so a live sender always settles it first, and short enough that a sender that
/// died holding it is replaced soon.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// When to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub max_attempts: u32,
    /// First wait.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: MAX_ATTEMPTS, base: BACKOFF_BASE, max: BACKOFF_MAX }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based), or `None` when it was the
    /// last one.
    pub fn after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(factor).min(self.max))
    }
}

/// Claims delivery `ARGV[1]` if due at `ARGV[2]` (unix ms): `KEYS[1]` the due set,
/// `KEYS[2]` its hash; `ARGV[3]` the lease, ms. Moves its next attempt a lease ahead, counts
/// the attempt and returns `{attempt, body}`; nil when it is not due (another sweeper has
/// it) or gone (its record expired: dropped from the set).
pub const CLAIM_SCRIPT: &str = r#"
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return false end
local body = redis.call('HGET', KEYS[2], 'body')
if not body then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return false
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
local attempt = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
return {attempt, body}
"#;

/// Settles an attempt: `KEYS[1]` the due set, `KEYS[2]` the hash; `ARGV[1]` the delivery
/// id, `ARGV[2]` the next attempt's unix ms, or `done` (delivered or abandoned: removed).
pub const SETTLE_SCRIPT: &str = r#"
if ARGV[2] == 'done' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 1
"#;

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Anything else (status, timeout, refused connection), for the log.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_stops_after_the_last_attempt() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..MAX_ATTEMPTS).map(|a| p.after(a).unwrap().as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(p.after(MAX_ATTEMPTS), None);
        let capped = RetryPolicy { max_attempts: 40, ..p };
        assert_eq!(capped.after(30), Some(BACKOFF_MAX));
    }
}

//! Every limit of the worker, with its unit and the reason for its default.

use std::time::Duration;

use crate::error::TranscriberError;

/// How long a lease lives without renewal: 10 s. A dead worker's streams wait at most this
/// long for another worker, so it is short; it must still outlast a renewal that a busy
/// machine delays (see [`DEFAULT_RENEW_INTERVAL`]).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// How often a held lease is renewed: 3 s, a third of the TTL, so two renewals in a row can
/// fail (a Redis hiccup, a stalled thread) before the lease lapses.
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(3);

/// Audio entries read per `XREAD` (`COUNT`): 50, one second of ingest's 20 ms frames. The
/// worker holds at most one batch of a stream in memory (50 × `MAX_FRAME_BYTES` at worst),
/// whatever its backlog.
pub const DEFAULT_BATCH_ENTRIES: usize = 50;

/// How long one `XREAD` blocks for new audio or session events: 1 s. An idle stream's task
/// wakes this often to check whether its sessions ended, and a worker's shutdown waits at
/// most this long for a blocked read.
pub const DEFAULT_BLOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// No audio for this long while a session is still open ends the open utterance (the engine
/// session is flushed, its final published): 2 s. A capture agent that stops sending
/// mid-sentence (muted, paused) gets its words now rather than at the stream's end.
pub const DEFAULT_IDLE_FLUSH: Duration = Duration::from_secs(2);

/// No audio for this long ends the stream even though a session was never announced
/// closed: 10 min. Ingest closes a silent session after its 10 s idle timeout, so only a
/// lost `close` (a relay that died mid-request) gets here; the bound frees the lease.
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(600);

/// Lag beyond which a stream is logged as falling behind: 2 s, the bound for finals
/// behind real time.
pub const DEFAULT_LAG_WARN: Duration = Duration::from_secs(2);

/// Streams one worker transcribes at once: 8. A local model on two cores keeps up with a
/// handful of real-time streams; the rest is left to other workers (or the next sweep).
pub const DEFAULT_MAX_STREAMS: usize = 8;

/// Settled audio after which the position is committed even without a final: 5 s of
/// silence, so a worker resuming a long quiet stretch does not re-read all of it.
pub const DEFAULT_COMMIT_EVERY: Duration = Duration::from_secs(5);

/// How long a shutting-down worker waits for its streams to release their leases: 5 s (an
/// engine call in flight finishes first); after that the leases lapse on their own.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Headroom on a blocking read's response timeout beyond its `BLOCK`: 2 s, so a slow reply
/// of a busy Redis is not mistaken for a dead connection.
pub const BLOCKING_REPLY_SLACK: Duration = Duration::from_secs(2);

/// Response timeout of non-blocking commands (scripts, renewals): 2 s; a Redis slower than
/// this is treated as failing and the stream is retried by a later sweep.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Redis URL (`redis://host:port`).
    pub redis_url: String,
    /// The worker's id in leases; `None` picks `<host>-<pid>-<random>`.
    pub worker_id: Option<String>,
    /// Lease lifetime without renewal ([`DEFAULT_LEASE_TTL`]); also how often the active set
    /// is swept for streams whose lease lapsed.
    pub lease_ttl: Duration,
    /// Lease renewal period ([`DEFAULT_RENEW_INTERVAL`]); less than half of `lease_ttl`.
    pub renew_interval: Duration,
    /// Audio entries per read ([`DEFAULT_BATCH_ENTRIES`]).
    pub batch_entries: usize,
    /// Blocking read timeout ([`DEFAULT_BLOCK_TIMEOUT`]).
    pub block_timeout: Duration,
    /// Silence after which the open utterance is finished ([`DEFAULT_IDLE_FLUSH`]).
    pub idle_flush: Duration,
    /// Silence after which a never-closed stream is given up ([`DEFAULT_ABANDON_AFTER`]).
    pub abandon_after: Duration,
    /// Lag logged as falling behind ([`DEFAULT_LAG_WARN`]).
    pub lag_warn: Duration,
    /// Streams transcribed at once ([`DEFAULT_MAX_STREAMS`]).
    pub max_streams: usize,
    /// Settled audio committed without a final ([`DEFAULT_COMMIT_EVERY`]).
    pub commit_every: Duration,
    /// Wait for leases to be released at shutdown ([`DEFAULT_SHUTDOWN_GRACE`]).
    pub shutdown_grace: Duration,
}

impl WorkerConfig {
    /// The defaults above, for the Redis at `redis_url`.
    pub fn new(redis_url: impl Into<String>) -> Self {
        WorkerConfig {
            redis_url: redis_url.into(),
            worker_id: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            renew_interval: DEFAULT_RENEW_INTERVAL,
            batch_entries: DEFAULT_BATCH_ENTRIES,
            block_timeout: DEFAULT_BLOCK_TIMEOUT,
            idle_flush: DEFAULT_IDLE_FLUSH,
            abandon_after: DEFAULT_ABANDON_AFTER,
            lag_warn: DEFAULT_LAG_WARN,
            max_streams: DEFAULT_MAX_STREAMS,
            commit_every: DEFAULT_COMMIT_EVERY,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// Refuses settings that would break the lease or the bounds.
    pub fn validate(&self) -> Result<(), TranscriberError> {
        let bad = |why: &str| Err(TranscriberError::Config(why.to_owned()));
        if self.lease_ttl < Duration::from_millis(100) {
            return bad("lease_ttl must be at least 100 ms");
        }
        if self.renew_interval.is_zero() || self.renew_interval * 2 > self.lease_ttl {
            return bad("renew_interval must be positive and at most half of lease_ttl");
        }
        if self.batch_entries == 0 || self.max_streams == 0 {
            return bad("batch_entries and max_streams must be positive");
        }
        if self.block_timeout < Duration::from_millis(1) || self.block_timeout >= self.lease_ttl {
            return bad("block_timeout must be at least 1 ms and below lease_ttl");
        }
        if self.abandon_after < self.idle_flush {
            return bad("abandon_after must not be below idle_flush");
        }
        if self.worker_id.as_deref().is_some_and(str::is_empty) {
            return bad("worker_id must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_refused() {
        let ok = WorkerConfig::new("redis://127.0.0.1:6379");
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.renew_interval = c.lease_ttl;
        assert!(c.validate().is_err(), "renewal as slow as the TTL lapses");
        let mut c = ok.clone();
        c.batch_entries = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.block_timeout = c.lease_ttl;
        assert!(c.validate().is_err());
        let mut c = ok;
        c.worker_id = Some(String::new());
        assert!(c.validate().is_err());
    }
}

//! The component's variables (spin.toml `[variables]`), read per request so a changed value
//! takes effect without a redeploy: the shared ones (`earshot_ws_session::settings`) and the
//! ingest protocol's own. Parsing is pure; the Spin shell supplies the lookup.

use earshot_protocol::limits::{
    DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RATE_LIMIT_COUNT,
    DEFAULT_RATE_LIMIT_WINDOW_MS,
};
use earshot_protocol::meeting_end::{DEFAULT_AUDIO_RETENTION_S, DEFAULT_MEETING_END_GRACE_S};
use earshot_ws_session::settings::{ConnSettings, SettingsError, Variables};

/// The ingest rate limit: at most `count` accepted connections per (meeting, source) within
/// any `window_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) count: u32,
    pub(crate) window_ms: u64,
}

/// Everything the component is configured with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Tokens, Redis (empty: no audio store, key-value rate limiting), `Grip-Sig`.
    pub(crate) conn: ConnSettings,
    /// GRIP publish endpoint (`http://relay/publish/`); empty: publish through Redis.
    pub(crate) grip_publish_url: String,
    /// Time for a capture agent's handshake, milliseconds.
    pub(crate) handshake_timeout_ms: u64,
    /// Silence (no audio, no keepalive) that ends a stream, milliseconds.
    pub(crate) idle_timeout_ms: u64,
    /// The ingest rate limit.
    pub(crate) rate_limit: RateLimit,
    /// Time after the last source left before the meeting ends, milliseconds
    /// (`meeting_end_grace_s`).
    pub(crate) meeting_end_grace_ms: u64,
    /// Lifetime of an audio stream after its last session, milliseconds
    /// (`audio_retention_s`).
    pub(crate) audio_retention_ms: u64,
}

impl Settings {
    /// Reads every variable through `lookup` (`Ok(None)`: undefined), applying the documented
    /// default to undefined or empty ones.
    pub(crate) fn from_lookup(
        lookup: impl FnMut(&'static str) -> Result<Option<String>, String>,
    ) -> Result<Settings, SettingsError> {
        let mut vars = Variables(lookup);
        let conn = ConnSettings::from_variables(&mut vars)?;
        let grip_publish_url = vars.text("grip_publish_url", "")?.trim().to_owned();
        let handshake_timeout_ms =
            vars.positive("handshake_timeout_ms", DEFAULT_HANDSHAKE_TIMEOUT_MS)?;
        let idle_timeout_ms = vars.positive("idle_timeout_ms", DEFAULT_IDLE_TIMEOUT_MS)?;
        let count = vars.positive("rate_limit_count", u64::from(DEFAULT_RATE_LIMIT_COUNT))?;
        let window_ms = vars.positive("rate_limit_window_ms", DEFAULT_RATE_LIMIT_WINDOW_MS)?;
        let grace_s = vars.positive("meeting_end_grace_s", DEFAULT_MEETING_END_GRACE_S)?;
        let retention_s = vars.positive("audio_retention_s", DEFAULT_AUDIO_RETENTION_S)?;
        Ok(Settings {
            conn,
            grip_publish_url,
            handshake_timeout_ms,
            idle_timeout_ms,
            rate_limit: RateLimit {
                count: u32::try_from(count)
                    .map_err(|_| SettingsError::NotPositive("rate_limit_count"))?,
                window_ms,
            },
            meeting_end_grace_ms: grace_s.saturating_mul(1_000),
            audio_retention_ms: retention_s.saturating_mul(1_000),
        })
    }

    /// Whether a Redis is configured.
    pub(crate) fn has_redis(&self) -> bool {
        self.conn.has_redis()
    }
}

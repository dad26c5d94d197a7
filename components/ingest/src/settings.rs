//! The component's variables (spin.toml `[variables]`), read per request so a changed value
//! takes effect without a redeploy. Parsing is pure; the Spin shell supplies the lookup.

use earshot_auth::{DEFAULT_AUDIENCE, MIN_SECRET_BYTES};
use earshot_protocol::limits::{
    DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RATE_LIMIT_COUNT,
    DEFAULT_RATE_LIMIT_WINDOW_MS,
};

/// The token variables, as `earshot_auth::Verifier::from_settings` takes them.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSettings {
    pub(crate) algorithm: String,
    pub(crate) secret: String,
    pub(crate) public_key: String,
    pub(crate) audience: String,
}

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
    pub(crate) token: TokenSettings,
    /// Redis URL; empty: no Redis (no audio store, key-value rate limiting).
    pub(crate) redis_url: String,
    /// GRIP publish endpoint (`http://relay/publish/`); empty: publish through Redis.
    pub(crate) grip_publish_url: String,
    /// Key of the relay's `Grip-Sig` JWT (HS256); empty: requests are not signed.
    pub(crate) grip_sig_key: String,
    /// Time for a capture agent's handshake, milliseconds.
    pub(crate) handshake_timeout_ms: u64,
    /// Silence (no audio, no keepalive) that ends a stream, milliseconds.
    pub(crate) idle_timeout_ms: u64,
    /// The ingest rate limit.
    pub(crate) rate_limit: RateLimit,
}

/// A variable that cannot be used; never shows a value (some are secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SettingsError {
    /// The host could not produce the variable.
    #[error("variable {name}: {detail}")]
    Unreadable { name: &'static str, detail: String },
    /// Not a positive whole number.
    #[error("variable {0} is not a positive whole number")]
    NotPositive(&'static str),
    /// An HMAC key shorter than its hash (RFC 7518 §3.2), brute-forceable from one signature.
    #[error("variable {name} is {len} bytes; at least {min} are required")]
    KeyTooShort {
        name: &'static str,
        len: usize,
        min: usize,
    },
}

impl Settings {
    /// Reads every variable through `lookup` (`Ok(None)`: undefined), applying the documented
    /// default to undefined or empty ones.
    pub(crate) fn from_lookup(
        mut lookup: impl FnMut(&'static str) -> Result<Option<String>, String>,
    ) -> Result<Settings, SettingsError> {
        let mut text = |name: &'static str, default: &str| -> Result<String, SettingsError> {
            match lookup(name) {
                Ok(Some(v)) if !v.trim().is_empty() => Ok(v),
                Ok(_) => Ok(default.to_owned()),
                Err(detail) => Err(SettingsError::Unreadable { name, detail }),
            }
        };
        let token = TokenSettings {
            algorithm: text("jwt_algorithm", "HS256")?,
            secret: text("jwt_secret", "")?,
            public_key: text("jwt_public_key", "")?,
            audience: text("jwt_audience", DEFAULT_AUDIENCE)?,
        };
        let redis_url = text("redis_url", "")?.trim().to_owned();
        let grip_publish_url = text("grip_publish_url", "")?.trim().to_owned();
        let grip_sig_key = text("grip_sig_key", "")?;
        if !grip_sig_key.is_empty() && grip_sig_key.len() < MIN_SECRET_BYTES {
            return Err(SettingsError::KeyTooShort {
                name: "grip_sig_key",
                len: grip_sig_key.len(),
                min: MIN_SECRET_BYTES,
            });
        }
        let handshake_timeout_ms = positive(
            "handshake_timeout_ms",
            &text(
                "handshake_timeout_ms",
                &DEFAULT_HANDSHAKE_TIMEOUT_MS.to_string(),
            )?,
        )?;
        let idle_timeout_ms = positive(
            "idle_timeout_ms",
            &text("idle_timeout_ms", &DEFAULT_IDLE_TIMEOUT_MS.to_string())?,
        )?;
        let count = positive(
            "rate_limit_count",
            &text("rate_limit_count", &DEFAULT_RATE_LIMIT_COUNT.to_string())?,
        )?;
        let window_ms = positive(
            "rate_limit_window_ms",
            &text(
                "rate_limit_window_ms",
                &DEFAULT_RATE_LIMIT_WINDOW_MS.to_string(),
            )?,
        )?;
        Ok(Settings {
            token,
            redis_url,
            grip_publish_url,
            grip_sig_key,
            handshake_timeout_ms,
            idle_timeout_ms,
            rate_limit: RateLimit {
                count: u32::try_from(count)
                    .map_err(|_| SettingsError::NotPositive("rate_limit_count"))?,
                window_ms,
            },
        })
    }

    /// Whether a Redis is configured.
    pub(crate) fn has_redis(&self) -> bool {
        !self.redis_url.is_empty()
    }
}

fn positive(name: &'static str, value: &str) -> Result<u64, SettingsError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SettingsError::NotPositive(name)),
    }
}

//! The sweeper's settings and the bounds it runs within, each with its unit and reason.

use std::time::Duration;

/// How often a sweeper looks for due meeting ends and webhook deliveries. Ends are due a
/// grace period (a minute by default) after the last leave, so a quarter second adds
/// nothing anyone notices, and one `ZRANGEBYSCORE` per set per quarter second is nothing
/// to Redis.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Most meeting ends (and, separately, deliveries) claimed per poll: bounds one poll's
/// work; anything left is due again at the next poll.
pub(crate) const BATCH: isize = 100;

/// Shortest webhook signing secret, in bytes: 128 bits, below which an HMAC key can be
/// guessed.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;

/// Where `meeting.ended` goes and how it is signed.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The receiver's URL (`http://` or `https://`).
    pub url: String,
    /// HMAC-SHA256 key of `Earshot-Signature`.
    pub secret: String,
}

impl std::fmt::Debug for WebhookConfig {
    /// The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig").field("url", &self.url).field("secret", &"<redacted>").finish()
    }
}

/// Settings of one sweeper.
#[derive(Debug, Clone)]
pub struct SweeperConfig {
    /// The Redis the components use.
    pub redis_url: String,
    /// The webhook, when configured (`webhook_url` and `webhook_secret`).
    pub webhook: Option<WebhookConfig>,
    /// Public base URL for the webhook's `export_url` (empty: a path).
    pub public_url: String,
    /// The components' `grip_publish_url` (empty: events go out by Redis `PUBLISH`, inside
    /// the end script).
    pub grip_publish_url: String,
    /// The delivery schedule.
    pub retry: crate::delivery::RetryPolicy,
}

impl SweeperConfig {
    /// A sweeper of `redis_url` with no webhook.
    pub fn new(redis_url: impl Into<String>) -> SweeperConfig {
        SweeperConfig {
            redis_url: redis_url.into(),
            webhook: None,
            public_url: String::new(),
            grip_publish_url: String::new(),
            retry: crate::delivery::RetryPolicy::default(),
        }
    }

    /// The webhook from the application variables `webhook_url` and `webhook_secret`
    /// (empty URL: none). A URL without a usable secret is refused: an unsigned webhook
    /// could not be told from a forged one.
    pub fn with_webhook_variables(mut self, url: &str, secret: &str) -> Result<SweeperConfig, crate::MeetingsError> {
        let url = url.trim();
        if url.is_empty() {
            self.webhook = None;
            return Ok(self);
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(crate::MeetingsError::Config("webhook_url must be an http:// or https:// URL".into()));
        }
        if secret.len() < MIN_WEBHOOK_SECRET_BYTES {
            return Err(crate::MeetingsError::Config(format!(
                "webhook_url is set, so webhook_secret must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes"
            )));
        }
        self.webhook = Some(WebhookConfig { url: url.to_owned(), secret: secret.to_owned() });
        Ok(self)
    }
}

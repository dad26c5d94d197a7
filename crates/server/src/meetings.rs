//! The meeting-end sweeper (`earshot-meetings`) in `earshot up`: with Redis, every server
//! runs one beside its listeners — any number share one Redis, and each end is announced
//! once — configured from the app's variables (`webhook_url`, `webhook_secret`,
//! `public_url`, `grip_publish_url`, `webhook_max_attempts`), or from `SPIN_VARIABLE_*` with a remote backend.

use anyhow::Context;
use earshot_host::App;
use earshot_meetings::{Sweeper, SweeperConfig};

/// The sweeper this server runs: none without Redis (ingest then schedules no ends).
pub(crate) fn sweeper(redis_url: Option<&str>, app: Option<&App>) -> anyhow::Result<Option<Sweeper>> {
    let Some(redis_url) = redis_url else { return Ok(None) };
    let var = |name: &str| -> String {
        match app {
            Some(app) => app.variable(name).unwrap_or_default().to_owned(),
            None => std::env::var(earshot_host::variables::env_name(name)).unwrap_or_default(),
        }
    };
    let mut config = SweeperConfig::new(redis_url).with_webhook_variables(&var("webhook_url"), &var("webhook_secret"))?;
    config.public_url = var("public_url");
    config.grip_publish_url = var("grip_publish_url");
    if let Some(attempts) = Some(var("webhook_max_attempts")).filter(|v| !v.trim().is_empty()) {
        config.retry.max_attempts = attempts
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("webhook_max_attempts must be a positive integer, not {attempts:?}"))?;
    }
    Ok(Some(Sweeper::new(config)?))
}

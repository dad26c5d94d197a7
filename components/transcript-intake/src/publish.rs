//! Publishing a segment to its GRIP channel (the relay fans it out to every subscribed
//! `/ws/transcript/{id}` connection) over whichever transport is configured, as the ingest
//! component does: `grip_publish_url` when set, else Redis `PUBLISH earshot:grip:<channel>`.

use earshot_protocol::grip::{Item, PublishRequest};
use earshot_protocol::ids::GRIP_REDIS_PREFIX;

use crate::effects::{EffectError, Effects};
use crate::settings::IntakeSettings;

/// Why a publish did not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PublishError {
    /// The transport failed (detail for the log).
    #[error("{0}")]
    Failed(String),
    /// Neither transport is configured.
    #[error("neither grip_publish_url nor redis_url is set")]
    NoTransport,
}

impl From<EffectError> for PublishError {
    fn from(e: EffectError) -> Self {
        PublishError::Failed(e.0)
    }
}

/// Publishes `item`.
pub(crate) async fn publish(
    settings: &IntakeSettings,
    effects: &mut impl Effects,
    item: &Item,
) -> Result<(), PublishError> {
    if !settings.grip_publish_url.is_empty() {
        let body = serde_json::to_vec(&PublishRequest {
            items: vec![item.clone()],
        })
        .expect("publish requests serialize");
        Ok(effects
            .http_publish(&settings.grip_publish_url, body)
            .await?)
    } else if settings.has_redis() {
        let payload = serde_json::to_vec(item).expect("publish items serialize");
        let channel = format!("{GRIP_REDIS_PREFIX}{}", item.channel);
        Ok(effects.redis_publish(&channel, &payload)?)
    } else {
        Err(PublishError::NoTransport)
    }
}

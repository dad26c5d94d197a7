//! Publishing a segment to its GRIP channel (the relay fans it out to every subscribed
//! `/ws/transcript/{id}` connection) over whichever transport is configured, as the ingest
//! component does: `grip_publish_url` when set, else Redis `PUBLISH earshot:grip:<channel>`.

use earshot_component_common::grip::Delivery;
use earshot_protocol::grip::Item;

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

/// Publishes `item` by its [`Delivery`].
pub(crate) async fn publish(
    settings: &IntakeSettings,
    effects: &mut impl Effects,
    item: &Item,
) -> Result<(), PublishError> {
    match Delivery::of(&settings.grip_publish_url, settings.has_redis(), item) {
        Delivery::Http { url, body } => Ok(effects.http_publish(url, body).await?),
        Delivery::Redis { channel, payload } => Ok(effects.redis_publish(&channel, &payload)?),
        Delivery::Nowhere => Err(PublishError::NoTransport),
    }
}

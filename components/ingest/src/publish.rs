//! Publishing to a GRIP channel (the relay fans it out to every subscribed connection), over
//! whichever transport is configured. Best effort: a failure is logged and never fails the
//! connection that caused the event.

use earshot_protocol::grip::{Item, PublishRequest};
use earshot_protocol::ids::GRIP_REDIS_PREFIX;

use crate::effects::Effects;
use crate::log::{Level, LogContext};
use crate::settings::Settings;

/// Publishes text `content` to `channel`: to `grip_publish_url` (GRIP `POST /publish/`) when
/// set, else by Redis `PUBLISH earshot:grip:<channel>` of the item (how relays behind a load
/// balancer share channels), else nowhere, with a warning.
pub(crate) fn publish(
    settings: &Settings,
    effects: &mut impl Effects,
    log: &LogContext,
    channel: &str,
    content: String,
) {
    let item = Item::text(channel, content);
    if !settings.grip_publish_url.is_empty() {
        let body = serde_json::to_vec(&PublishRequest { items: vec![item] })
            .expect("publish requests serialize");
        effects.http_publish(&settings.grip_publish_url, body);
    } else if settings.has_redis() {
        let payload = serde_json::to_vec(&item).expect("publish items serialize");
        if let Err(e) = effects.redis_publish(&format!("{GRIP_REDIS_PREFIX}{channel}"), &payload) {
            let line = log
                .line(Level::Warn, "publish failed")
                .with("channel", channel)
                .with("detail", e.0);
            effects.log(line.into_value());
        }
    } else {
        let line = log
            .line(
                Level::Warn,
                "publish skipped: neither grip_publish_url nor redis_url is set",
            )
            .with("channel", channel);
        effects.log(line.into_value());
    }
}

//! Publishing to a GRIP channel (the relay fans it out to every subscribed connection), over
//! whichever transport is configured (`earshot_component_common::grip`). Best effort: a
//! failure is logged and never fails the connection that caused the event.

use earshot_component_common::grip::Delivery;
use earshot_protocol::grip::Item;

use crate::effects::IngestEffects;
use crate::settings::Settings;
use earshot_ws_session::log::{Level, LogContext};

/// Publishes text `content` to `channel` by its [`Delivery`]: the HTTP publish is queued for
/// after the reply; with neither transport configured it goes nowhere, with a warning.
pub(crate) fn publish(
    settings: &Settings,
    effects: &mut impl IngestEffects,
    log: &LogContext,
    channel: &str,
    content: String,
) {
    let item = Item::text(channel, content);
    match Delivery::of(&settings.grip_publish_url, settings.has_redis(), &item) {
        Delivery::Http { url, body } => effects.http_publish(url, body),
        Delivery::Redis {
            channel: redis_channel,
            payload,
        } => {
            if let Err(e) = effects.redis_publish(&redis_channel, &payload) {
                let line = log
                    .line(Level::Warn, "publish failed")
                    .with("channel", channel)
                    .with("detail", e.0);
                effects.log(line.into_value());
            }
        }
        Delivery::Nowhere => {
            let line = log
                .line(
                    Level::Warn,
                    "publish skipped: neither grip_publish_url nor redis_url is set",
                )
                .with("channel", channel);
            effects.log(line.into_value());
        }
    }
}

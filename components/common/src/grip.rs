//! Publishing to a GRIP channel (the relay fans an item out to every connection subscribed to
//! it) over whichever transport is configured: `grip_publish_url` (GRIP `POST /publish/`) when
//! set, else Redis `PUBLISH earshot:grip:<channel>` (how relays behind a load balancer share
//! channels).

use earshot_protocol::grip::{Item, PublishRequest};
use earshot_protocol::ids::GRIP_REDIS_PREFIX;

/// How one item goes out, body encoded; the caller sends it (now, or once its reply is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// POST `body` (a GRIP publish request) to `url`: see [`http_publish`].
    Http {
        /// The configured `grip_publish_url`.
        url: &'a str,
        /// JSON `{"items": [item]}`.
        body: Vec<u8>,
    },
    /// `PUBLISH channel payload` on Redis.
    Redis {
        /// `earshot:grip:<item channel>`.
        channel: String,
        /// The item's JSON.
        payload: Vec<u8>,
    },
    /// Neither `grip_publish_url` nor `redis_url` is set.
    Nowhere,
}

impl<'a> Delivery<'a> {
    /// The delivery of `item` given `grip_publish_url` (empty when unset) and whether Redis is
    /// configured.
    pub fn of(grip_publish_url: &'a str, has_redis: bool, item: &Item) -> Delivery<'a> {
        if !grip_publish_url.is_empty() {
            let body = serde_json::to_vec(&PublishRequest {
                items: vec![item.clone()],
            })
            .expect("publish requests serialize");
            Delivery::Http {
                url: grip_publish_url,
                body,
            }
        } else if has_redis {
            Delivery::Redis {
                channel: format!("{GRIP_REDIS_PREFIX}{}", item.channel),
                payload: serde_json::to_vec(item).expect("publish items serialize"),
            }
        } else {
            Delivery::Nowhere
        }
    }
}

/// POSTs a GRIP publish body to `url`; `Err` with a log detail unless the endpoint answered
/// 2xx. The detail never names the URL, which may carry credentials.
#[cfg(target_arch = "wasm32")]
pub async fn http_publish(url: &str, body: Vec<u8>) -> Result<(), crate::effects::EffectError> {
    use crate::effects::EffectError;
    use spin_sdk::http::{Method, Request, Response};

    // An explicit length: without it the body goes out chunked, which Pushpin's publish
    // endpoint refuses (411 Length Required).
    let request = Request::builder()
        .method(Method::Post)
        .uri(url)
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .body(body)
        .build();
    let response: Response = spin_sdk::http::send(request)
        .await
        .map_err(|e| EffectError(format!("POST grip_publish_url: {e}")))?;
    let status = *response.status();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(EffectError(format!("POST grip_publish_url: HTTP {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_url_wins_over_redis() {
        let item = Item::text("transcript:m1", "hi");
        let Delivery::Http { url, body } = Delivery::of("http://pushpin/publish/", true, &item)
        else {
            panic!("expected an HTTP delivery");
        };
        assert_eq!(url, "http://pushpin/publish/");
        let sent: PublishRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent.items, vec![item]);
    }

    #[test]
    fn redis_channel_is_prefixed() {
        let item = Item::text("transcript:m1", "hi");
        let Delivery::Redis { channel, payload } = Delivery::of("", true, &item) else {
            panic!("expected a Redis delivery");
        };
        assert_eq!(channel, "earshot:grip:transcript:m1");
        assert_eq!(serde_json::from_slice::<Item>(&payload).unwrap(), item);
    }

    #[test]
    fn nowhere_without_a_transport() {
        let item = Item::text("c", "x");
        assert_eq!(Delivery::of("", false, &item), Delivery::Nowhere);
    }
}

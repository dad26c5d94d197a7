//! GRIP over WebSocket-over-HTTP: control messages a backend embeds in TEXT events
//! (`c:` prefix), and the publish format (`POST /publish/`, Redis fan-out).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Prefix of a control message in a TEXT event from the backend.
pub const CONTROL_PREFIX: &str = "c:";

/// The extension a backend answers with to turn GRIP on. `message-prefix=""` means
/// ordinary messages carry no `m:` prefix (Pushpin's convention), so only `c:` is special.
pub const GRIP_EXTENSION: &str = "grip; message-prefix=\"\"";

/// A GRIP control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Control {
    /// Deliver messages published to `channel` to this connection.
    Subscribe {
        /// Channel name.
        channel: String,
    },
    /// Stop delivering `channel`.
    Unsubscribe {
        /// Channel name.
        channel: String,
    },
    /// Stop forwarding client messages to the backend.
    Detach,
    /// Earshot extension (ignored by other GRIP proxies): hold this connection's live
    /// items of `channel` and call the backend again as soon as the subscription is
    /// effective, so it can replay history before anything live is delivered.
    Hold {
        /// Channel name.
        channel: String,
    },
    /// Earshot extension: deliver the held items of `channel` whose id is greater than
    /// `after` (a Redis stream id), then live ones; drop later items with an id at or
    /// below it. Together with `hold` this gives a gap-free, duplicate-free seam
    /// between history and live.
    Release {
        /// Channel name.
        channel: String,
        /// Last id the backend already delivered (absent: deliver everything held).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Send `content` to the client after `timeout` seconds of silence.
    KeepAlive {
        /// Message to send (absent: cancel).
        #[serde(default)]
        content: Option<String>,
        /// Seconds of silence before sending it.
        #[serde(default)]
        timeout: Option<u64>,
    },
}

impl Control {
    /// The TEXT event content carrying this control message.
    pub fn to_text(&self) -> String {
        format!("{CONTROL_PREFIX}{}", serde_json::to_string(self).expect("control messages serialize"))
    }

    /// Parses a TEXT event content if it is a control message (`None` if it is not
    /// one; `Some(Err)` if it is one but malformed).
    pub fn parse(text: &str) -> Option<Result<Self, serde_json::Error>> {
        text.strip_prefix(CONTROL_PREFIX).map(serde_json::from_str)
    }
}

/// `ws-message` format of a publish item: text `content` or base64 `content-bin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WsMessageFormat {
    /// Text message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Binary message, base64.
    #[serde(default, rename = "content-bin", skip_serializing_if = "Option::is_none")]
    pub content_bin: Option<String>,
}

/// The formats of a publish item (only `ws-message` concerns WebSockets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Formats {
    /// WebSocket message.
    #[serde(default, rename = "ws-message", skip_serializing_if = "Option::is_none")]
    pub ws_message: Option<WsMessageFormat>,
}

/// One published item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Target channel.
    pub channel: String,
    /// Optional item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Payload per transport.
    pub formats: Formats,
}

/// The body of `POST /publish/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// Items to publish.
    pub items: Vec<Item>,
}

/// Orders two item ids: Redis stream ids (`<ms>-<seq>`) numerically, anything else
/// as text. Returns whether `id` comes strictly after `after`.
pub fn id_after(id: &str, after: &str) -> bool {
    fn parse(s: &str) -> Option<(u64, u64)> {
        let (a, b) = s.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
    match (parse(id), parse(after)) {
        (Some(x), Some(y)) => x > y,
        _ => id > after,
    }
}

/// A WebSocket message ready to send to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsPayload {
    /// Text frame.
    Text(String),
    /// Binary frame.
    Binary(Vec<u8>),
}

/// Why an item could not become a WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No `ws-message` format.
    #[error("item has no ws-message format")]
    NoWsMessage,
    /// Neither or both of `content` and `content-bin`.
    #[error("ws-message needs exactly one of content, content-bin")]
    Ambiguous,
    /// `content-bin` is not base64.
    #[error("content-bin is not base64")]
    BadBase64,
}

impl Item {
    /// A text item for `channel`.
    pub fn text(channel: impl Into<String>, content: impl Into<String>) -> Self {
        Item {
            channel: channel.into(),
            id: None,
            formats: Formats { ws_message: Some(WsMessageFormat { content: Some(content.into()), content_bin: None }) },
        }
    }

    /// The WebSocket message this item carries.
    pub fn ws_payload(&self) -> Result<WsPayload, PublishError> {
        let ws = self.formats.ws_message.as_ref().ok_or(PublishError::NoWsMessage)?;
        match (&ws.content, &ws.content_bin) {
            (Some(t), None) => Ok(WsPayload::Text(t.clone())),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(WsPayload::Binary)
                .map_err(|_| PublishError::BadBase64),
            _ => Err(PublishError::Ambiguous),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_have_pushpins_shape() {
        let sub = Control::Subscribe { channel: "meeting:m1".into() };
        assert_eq!(sub.to_text(), r#"c:{"type":"subscribe","channel":"meeting:m1"}"#);
        assert_eq!(Control::parse(&sub.to_text()).unwrap().unwrap(), sub);
        assert!(Control::parse("hello").is_none());
        assert!(Control::parse("c:{bad").unwrap().is_err());
        let ka = Control::parse(r#"c:{"type":"keep-alive","content":"{}","timeout":30}"#).unwrap().unwrap();
        assert_eq!(ka, Control::KeepAlive { content: Some("{}".into()), timeout: Some(30) });
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(id_after("10-0", "9-5"));
        assert!(id_after("9-10", "9-9"));
        assert!(!id_after("9-9", "9-9"));
        assert!(!id_after("1-0", "2-0"));
        let hold = Control::parse(r#"c:{"type":"release","channel":"t","after":"5-0"}"#).unwrap().unwrap();
        assert_eq!(hold, Control::Release { channel: "t".into(), after: Some("5-0".into()) });
    }

    #[test]
    fn publish_items_decode_text_and_binary() {
        let req: PublishRequest = serde_json::from_str(
            r#"{"items":[{"channel":"a","formats":{"ws-message":{"content":"hi"}}},
                         {"channel":"b","formats":{"ws-message":{"content-bin":"AAEC"}}},
                         {"channel":"c","formats":{"http-stream":{"content":"x"}}}]}"#,
        )
        .unwrap();
        assert_eq!(req.items[0].ws_payload(), Ok(WsPayload::Text("hi".into())));
        assert_eq!(req.items[1].ws_payload(), Ok(WsPayload::Binary(vec![0, 1, 2])));
        assert_eq!(req.items[2].ws_payload(), Err(PublishError::NoWsMessage));
    }
}

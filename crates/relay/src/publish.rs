//! The GRIP publish endpoint (`POST /publish/`), as Pushpin serves it.

use bytes::Bytes;
use earshot_protocol::grip::PublishRequest;
use http_body_util::{BodyExt, Full};

use crate::Relay;

/// Largest publish body, in bytes: a batch of transcript segments or events.
pub(crate) const MAX_PUBLISH_BODY_BYTES: usize = 1024 * 1024;

fn reply(status: http::StatusCode, body: String) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

impl Relay {
    /// Publishes every item of a GRIP publish request.
    pub async fn publish<B>(&self, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.method() != http::Method::POST {
            return reply(http::StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into());
        }
        let body = match http_body_util::Limited::new(req.into_body(), MAX_PUBLISH_BODY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return reply(http::StatusCode::PAYLOAD_TOO_LARGE, "publish body too large\n".into()),
        };
        let request: PublishRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return reply(http::StatusCode::BAD_REQUEST, format!("invalid publish request: {e}\n")),
        };
        for item in &request.items {
            if let Err(e) = item.ws_payload() {
                return reply(http::StatusCode::BAD_REQUEST, format!("item for {}: {e}\n", item.channel));
            }
        }
        for item in &request.items {
            if let Err(e) = self.shared.hub.publish(item).await {
                tracing::error!(error = %crate::ErrorChain(&e), channel = %item.channel, "publish failed");
                return reply(http::StatusCode::SERVICE_UNAVAILABLE, "publish failed\n".into());
            }
        }
        reply(http::StatusCode::OK, "Published\n".into())
    }
}

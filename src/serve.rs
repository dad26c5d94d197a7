//! One listener, three kinds of request: WebSocket upgrades go to the relay, GRIP
//! publishes to the hub, everything else to the HTTP triggers (in-process or remote).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use earshot_host::{App, HyperOutgoingBody};
use earshot_protocol::ids::WS_PREFIX;
use earshot_relay::{is_websocket_upgrade, Backend, HttpBackend, Relay};
use http_body_util::{BodyExt, Full};

/// Largest request body proxied to a remote backend, in bytes.
const MAX_PROXY_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Routes each request to its handler.
pub(crate) struct Router {
    pub(crate) app: Option<Arc<App>>,
    pub(crate) remote: Option<HttpBackend>,
    pub(crate) relay: Relay,
    pub(crate) publish_key: Option<String>,
}

fn boxed(resp: http::Response<Full<Bytes>>) -> http::Response<HyperOutgoingBody> {
    resp.map(|b| b.map_err(|never| -> wasmtime_wasi_http::Error { match never {} }).boxed_unsync())
}

fn status(code: http::StatusCode, text: &'static str) -> http::Response<HyperOutgoingBody> {
    boxed(
        http::Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(text.as_bytes())))
            .expect("static response"),
    )
}

impl Router {
    /// Handles one request from `peer`.
    pub(crate) async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> http::Response<HyperOutgoingBody> {
        let path = req.uri().path();
        if path.starts_with(WS_PREFIX) && is_websocket_upgrade(&req) {
            return boxed(self.relay.upgrade(req, peer).await);
        }
        if path == "/metrics" {
            if !self.may_publish(&req, peer) {
                return status(http::StatusCode::UNAUTHORIZED, "metrics need Authorization: Bearer <publish key>\n");
            }
            let body = crate::metrics::render(&self.relay);
            return boxed(
                http::Response::builder()
                    .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(body)))
                    .expect("valid response"),
            );
        }
        if path == "/publish/" || path == "/publish" {
            if !self.may_publish(&req, peer) {
                return status(http::StatusCode::UNAUTHORIZED, "publish needs Authorization: Bearer <publish key>\n");
            }
            return boxed(self.relay.publish(req).await);
        }
        if let Some(app) = &self.app {
            return app.handle_http(req, Some(peer)).await;
        }
        match &self.remote {
            Some(remote) => self.proxy(remote, req).await,
            None => status(http::StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Loopback peers (the components publishing to their own relay, a local scraper)
    /// may publish and read metrics; anyone else needs the publish key.
    fn may_publish<B>(&self, req: &http::Request<B>, peer: SocketAddr) -> bool {
        if peer.ip().is_loopback() {
            return true;
        }
        let Some(key) = self.publish_key.as_deref().filter(|k| !k.is_empty()) else { return false };
        req.headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()))
    }

    async fn proxy(&self, remote: &HttpBackend, req: http::Request<hyper::body::Incoming>) -> http::Response<HyperOutgoingBody> {
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_PROXY_BODY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return status(http::StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        };
        match remote.call(http::Request::from_parts(parts, body)).await {
            Ok(resp) => boxed(resp.map(Full::new)),
            Err(e) => {
                tracing::error!(error = %e, "remote backend failed");
                status(http::StatusCode::BAD_GATEWAY, "backend unavailable\n")
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

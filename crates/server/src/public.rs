//! The public listener: WebSocket upgrades go to the relay, everything else to the
//! app's HTTP routes (in-process or remote). The internal endpoints are not here, and
//! WebSocket-over-HTTP event posts only when a GRIP proxy is configured in front.

use std::net::SocketAddr;
use std::sync::Arc;

use earshot_host::{App, HyperOutgoingBody};
use earshot_protocol::ids::WS_PREFIX;
use earshot_relay::{is_websocket_upgrade, Backend, HttpBackend, Relay};
use http_body_util::{BodyExt, Full};

use crate::response::{boxed, not_found, status};

/// Paths that exist only on the internal listener. Answered 404 here even if a
/// component's wildcard route would take them, so they never leak onto the public port.
const INTERNAL_PATHS: [&str; 3] = ["/publish/", "/publish", "/metrics"];

/// Routes each request of the public listener to its handler.
pub(crate) struct PublicRouter {
    pub(crate) app: Option<Arc<App>>,
    pub(crate) remote: Option<HttpBackend>,
    pub(crate) relay: Relay,
    /// Whether `POST /api/v1/ws/*` (WebSocket-over-HTTP) reaches the backend from here.
    pub(crate) ws_over_http: bool,
    /// Largest request body taken, in bytes (`--max-body-bytes`).
    pub(crate) max_body_bytes: u64,
}

impl PublicRouter {
    /// Handles one request from `peer` (the client's address, behind trusted proxies too).
    pub(crate) async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> http::Response<HyperOutgoingBody> {
        if crate::http_limits::declared_body_too_large(req.headers(), self.max_body_bytes) {
            // Refused before a byte of the body is read; the connection cannot be reused.
            let mut resp = status(http::StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            return resp;
        }
        let path = req.uri().path();
        if path.starts_with(WS_PREFIX) {
            if is_websocket_upgrade(&req) {
                return boxed(self.relay.upgrade(req, peer).await);
            }
            if !self.ws_over_http {
                return not_found();
            }
        }
        if INTERNAL_PATHS.contains(&path) {
            return not_found();
        }
        if let Some(app) = &self.app {
            return app.handle_http(req, Some(peer)).await;
        }
        match &self.remote {
            Some(remote) => self.proxy(remote, req).await,
            None => not_found(),
        }
    }

    async fn proxy(&self, remote: &HttpBackend, req: http::Request<hyper::body::Incoming>) -> http::Response<HyperOutgoingBody> {
        let (parts, body) = req.into_parts();
        // A chunked body declares no length: bounded while it is read.
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let body = match http_body_util::Limited::new(body, limit).collect().await {
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

//! The internal listener: `POST /publish/` (GRIP publish into the hub) and
//! `GET /metrics`. Bound to loopback by default and never shared with the public
//! listener, so a proxy in front of the public port cannot reach either.

use std::net::SocketAddr;

use bytes::Bytes;
use earshot_host::HyperOutgoingBody;
use earshot_relay::Relay;
use http_body_util::Full;

use crate::response::{boxed, constant_time_eq, not_found, status};

/// Routes requests of the internal listener.
pub(crate) struct InternalRouter {
    pub(crate) relay: Relay,
    /// Bearer key peers other than loopback must present.
    pub(crate) publish_key: Option<String>,
    /// The in-process transcription worker's figures (lag per stream among them).
    pub(crate) asr_stats: crate::transcription::StatsSlot,
    /// The meeting-end sweeper's figures (webhook deliveries and failures among them).
    pub(crate) meeting_stats: Option<std::sync::Arc<earshot_meetings::SweeperStats>>,
}

impl InternalRouter {
    /// Handles one request from `peer`.
    pub(crate) async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> http::Response<HyperOutgoingBody> {
        let path = req.uri().path();
        let is_publish = path == "/publish/" || path == "/publish";
        if path != "/metrics" && !is_publish {
            return not_found();
        }
        if !self.may_access(&req, peer) {
            return status(http::StatusCode::UNAUTHORIZED, "internal endpoints need Authorization: Bearer <publish key>\n");
        }
        if is_publish {
            return boxed(self.relay.publish(req).await);
        }
        boxed(
            http::Response::builder()
                .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(crate::metrics::render(&self.relay, self.asr_stats.get().map(|s| &**s), self.meeting_stats.as_deref()))))
                .expect("valid response"),
        )
    }

    /// Loopback peers (the components publishing to their own relay, a local scraper)
    /// may use the internal endpoints; when the internal listener is bound wider,
    /// anyone else needs the publish key.
    fn may_access<B>(&self, req: &http::Request<B>, peer: SocketAddr) -> bool {
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
}

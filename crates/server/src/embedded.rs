//! The embedded host as a relay backend: WebSocket-over-HTTP requests go straight
//! into the components, with no TCP hop.

use std::sync::Arc;

use bytes::Bytes;
use earshot_host::App;
use earshot_relay::{Backend, BackendError, BackendFuture};
use http_body_util::{BodyExt, Full};

/// Largest component response the relay reads, in bytes (same bound as over HTTP).
const MAX_RESPONSE_BYTES: usize = earshot_relay::backend::MAX_BACKEND_RESPONSE_BYTES;

/// Calls the app in-process.
pub(crate) struct Embedded(pub(crate) Arc<App>);

impl Backend for Embedded {
    fn call(&self, req: http::Request<Bytes>) -> BackendFuture<'_> {
        Box::pin(async move {
            let req = req.map(|b| Full::new(b).map_err(|never| -> wasmtime_wasi_http::Error { match never {} }));
            let resp = tokio::time::timeout(earshot_relay::backend::BACKEND_TIMEOUT, self.0.handle_http(req, None))
                .await
                .map_err(|_| BackendError::Timeout)?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|_| BackendError::TooLarge)?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

//! Where WebSocket-over-HTTP requests go: the embedded host in-process, or any HTTP
//! base URL (a real `spin up`, a Fermyon/SpinKube deployment). One trait, so the
//! relay has one code path for both.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached or broke the exchange; the cause is the source.
    #[error("backend unreachable")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend took longer than [`BACKEND_TIMEOUT`].
    #[error("backend timed out")]
    Timeout,
    /// The response body was larger than [`MAX_BACKEND_RESPONSE_BYTES`].
    #[error("backend response too large")]
    TooLarge,
}

/// A future returned by [`Backend::call`].
pub type BackendFuture<'a> = Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, BackendError>> + Send + 'a>>;

/// Longest a backend call may take. Components answer in milliseconds; beyond this
/// the connection is closed 1011 rather than left hanging.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest backend response body read, in bytes: a batch of events for one client.
pub const MAX_BACKEND_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Something that answers WebSocket-over-HTTP requests.
pub trait Backend: Send + Sync + 'static {
    /// Sends one request (path and query in the URI, relative) and returns the response.
    fn call(&self, req: http::Request<Bytes>) -> BackendFuture<'_>;
}

/// A backend reached over HTTP at a base URL.
pub struct HttpBackend {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpBackend {
    /// A backend at `base` (e.g. `http://127.0.0.1:3000`).
    pub fn new(base: &str) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        HttpBackend { base: base.trim_end_matches('/').to_owned(), client }
    }
}

impl Backend for HttpBackend {
    fn call(&self, req: http::Request<Bytes>) -> BackendFuture<'_> {
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("{}{pq}", self.base)
                .parse()
                .map_err(|e: http::uri::InvalidUri| BackendError::Unreachable(e.into()))?;
            parts.headers.remove(http::header::HOST);
            let req = http::Request::from_parts(parts, Full::new(body));
            let resp = tokio::time::timeout(BACKEND_TIMEOUT, self.client.request(req))
                .await
                .map_err(|_| BackendError::Timeout)?
                .map_err(|e| BackendError::Unreachable(e.into()))?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_BACKEND_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|_| BackendError::TooLarge)?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

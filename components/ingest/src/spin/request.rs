//! The HTTP surface's plumbing: the request parts the shell looks at, the body limit, and the
//! one error type whose variants map to status codes here and nowhere else. Connection-level
//! failures are never HTTP errors: they are CLOSE events in a 200 reply.

use earshot_protocol::limits::RELAY_MAX_MESSAGE_BYTES;
use futures::StreamExt;
use spin_sdk::http::{IncomingRequest, Method, Response};

/// Largest request body accepted, in bytes: sixteen relay-maximum messages. The relay keeps
/// one request per connection outstanding and batches what queued meanwhile; its queue is far
/// smaller than this, so only a broken or hostile caller reaches the limit, and it is refused
/// before a 64 MiB instance fills up.
pub(crate) const MAX_BODY_BYTES: usize = 16 * RELAY_MAX_MESSAGE_BYTES;

/// Everything the shell needs from the request except the body.
pub(crate) struct RequestParts {
    pub(crate) method: Method,
    /// Path without the query.
    pub(crate) path: String,
    /// Path and query as received; log it only through [`RequestParts::redacted_path`].
    path_with_query: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl RequestParts {
    /// Copies method, path and headers out of the request.
    pub(crate) fn of(req: &IncomingRequest) -> RequestParts {
        let path_with_query = req.path_with_query().unwrap_or_else(|| "/".to_owned());
        let path = path_with_query
            .split_once('?')
            .map_or(path_with_query.as_str(), |(p, _)| p)
            .to_owned();
        RequestParts {
            method: req.method(),
            path,
            path_with_query,
            headers: req.headers().entries(),
        }
    }

    /// The query string, if any.
    pub(crate) fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, q)| q)
    }

    /// Path and query with every token redacted, for logs.
    pub(crate) fn redacted_path(&self) -> String {
        earshot_auth::redact_query(&self.path_with_query)
    }

    /// The first value of header `name` (case-insensitive) that is valid UTF-8.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .find_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// All values of header `name` (case-insensitive) that are valid UTF-8.
    pub(crate) fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (by `Content-Length` up front, and
/// by counting while streaming, so an oversized body is never buffered).
pub(crate) async fn read_body(
    req: IncomingRequest,
    parts: &RequestParts,
) -> Result<Vec<u8>, HttpError> {
    let declared = parts
        .header_values("content-length")
        .next()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(HttpError::PayloadTooLarge);
    }
    let mut stream = req.into_body_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| HttpError::BadRequest("unreadable request body".into()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(HttpError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Every way a request can fail at the HTTP level.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// 400: not a WebSocket-over-HTTP request (content type, events, Connection-Id).
    BadRequest(String),
    /// 401: `Grip-Sig` missing or invalid.
    Unauthorized(String),
    /// 404: not a WebSocket route.
    NotFound,
    /// 405: WebSocket-over-HTTP is POST only.
    MethodNotAllowed,
    /// 413: body larger than [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 500: the variables are unusable (detail for the log).
    Misconfigured(String),
    /// 500: anything else (detail for the log).
    Internal(String),
}

impl HttpError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::Unauthorized(_) => 401,
            HttpError::NotFound => 404,
            HttpError::MethodNotAllowed => 405,
            HttpError::PayloadTooLarge => 413,
            HttpError::Misconfigured(_) | HttpError::Internal(_) => 500,
        }
    }

    /// The `error` string of the response body.
    pub(crate) fn reason(&self) -> String {
        match self {
            HttpError::BadRequest(r) | HttpError::Unauthorized(r) => r.clone(),
            HttpError::NotFound => "not found".into(),
            HttpError::MethodNotAllowed => "method not allowed".into(),
            HttpError::PayloadTooLarge => "request body too large".into(),
            HttpError::Misconfigured(_) => "ingest misconfigured".into(),
            HttpError::Internal(_) => "internal error".into(),
        }
    }

    /// What the log gets beyond the reason.
    pub(crate) fn detail(&self) -> Option<&str> {
        match self {
            HttpError::Misconfigured(d) | HttpError::Internal(d) => Some(d),
            _ => None,
        }
    }

    /// `{"error": "<reason>"}` with the status.
    pub(crate) fn into_response(self) -> Response {
        let body = serde_json::to_vec(&serde_json::json!({ "error": self.reason() }))
            .expect("json serializes");
        let mut response = Response::builder()
            .status(self.status())
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(body)
            .build();
        match self {
            HttpError::MethodNotAllowed => response.set_header("allow", "POST"),
            HttpError::Unauthorized(_) => response.set_header("www-authenticate", "Grip-Sig"),
            _ => {}
        }
        response
    }
}

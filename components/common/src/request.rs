//! What a component looks at in a request before the body, and the body itself read under a
//! size limit.

use futures::StreamExt;
use spin_sdk::http::{IncomingRequest, Method};

/// Everything a component needs from the request except the body, taken before the body is
/// streamed.
pub struct RequestParts {
    /// The HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Path and query as received; it may carry a token, so it is logged only through
    /// [`RequestParts::redacted_path`].
    path_with_query: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl RequestParts {
    /// Copies method, path and headers out of the request.
    pub fn of(req: &IncomingRequest) -> RequestParts {
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
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, q)| q)
    }

    /// Path and query with every token redacted, for logs.
    pub fn redacted_path(&self) -> String {
        earshot_auth::redact_query(&self.path_with_query)
    }

    /// The first value of header `name` (case-insensitive) that is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .find_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// All values of header `name` (case-insensitive) that are valid UTF-8.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why [`read_body`] gave up; each surface's error type maps it to its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (413).
    TooLarge,
    /// The stream failed (400).
    Unreadable,
}

impl BodyError {
    /// The `error` string of the response body.
    pub fn reason(self) -> &'static str {
        match self {
            BodyError::TooLarge => "request body too large",
            BodyError::Unreadable => "unreadable request body",
        }
    }
}

/// Reads the body, refusing more than `max_bytes` (by `Content-Length` up front, and by
/// counting while streaming, so an oversized body is never buffered).
pub async fn read_body(
    req: IncomingRequest,
    parts: &RequestParts,
    max_bytes: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = parts
        .header_values("content-length")
        .next()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut stream = req.into_body_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        if body.len() + chunk.len() > max_bytes {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

//! The HTTP surface's plumbing: the request parts routes look at, the body limit, JSON
//! responses, and the one error type whose variants map to status codes here and nowhere else.

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, Method, Response};

/// Largest request body accepted, in bytes. The biggest legitimate body is an introspect or revoke
/// carrying a token of `earshot_auth::MAX_TOKEN_BYTES` (8 KiB) or an issue request with a few
/// hundred meeting ids; 16 KiB covers both with JSON framing to spare.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// Everything a route needs from the request except the body, taken before the body is streamed.
pub(crate) struct RequestParts {
    /// The HTTP method.
    pub(crate) method: Method,
    /// Path without the query.
    pub(crate) path: String,
    /// Path and query as received; log it only through `earshot_auth::redact_query`.
    pub(crate) path_with_query: String,
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

    /// All values of header `name` (case-insensitive) that are valid UTF-8.
    pub(crate) fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (by `Content-Length` up front, and by
/// counting while streaming, so an oversized body is never buffered).
pub(crate) async fn read_body(
    req: IncomingRequest,
    parts: &RequestParts,
) -> Result<Vec<u8>, ApiError> {
    let declared = parts
        .header_values("content-length")
        .next()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut stream = req.into_body_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest("unreadable request body".into()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a JSON body. Serde's message is shown to the client only when `explain` is set: on
/// routes whose body holds a token it could quote part of the input back, so it stays out.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8], explain: bool) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(if explain {
            format!("invalid request body: {e}")
        } else {
            "invalid request body".to_owned()
        })
    })
}

/// A JSON response. Token material must never be cached by intermediaries (RFC 6749 §5.1).
pub(crate) fn json_response(status: u16, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("response shapes always serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(bytes)
        .build()
}

/// Every way a request can fail; `Display`-free on purpose: [`ApiError::reason`] is what the
/// client sees, [`ApiError::detail`] what only the log sees.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400 with the given reason.
    BadRequest(String),
    /// 401 with the given reason.
    Unauthorized(String),
    /// 404: no such route.
    NotFound,
    /// 405: the routes are POST only.
    MethodNotAllowed,
    /// 413: body larger than [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 503: a feature switched off by configuration (the reason says which).
    Disabled(&'static str),
    /// 503: the key-value store failed (detail for the log).
    Storage(String),
    /// 500: the token variables are unusable (detail for the log).
    Misconfigured(String),
    /// 500: anything else (detail for the log).
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::PayloadTooLarge => 413,
            ApiError::Disabled(_) | ApiError::Storage(_) => 503,
            ApiError::Misconfigured(_) | ApiError::Internal(_) => 500,
        }
    }

    /// The `error` string of the response body.
    pub(crate) fn reason(&self) -> String {
        match self {
            ApiError::BadRequest(r) | ApiError::Unauthorized(r) => r.clone(),
            ApiError::NotFound => "not found".into(),
            ApiError::MethodNotAllowed => "method not allowed".into(),
            ApiError::PayloadTooLarge => "request body too large".into(),
            ApiError::Disabled(r) => (*r).into(),
            ApiError::Storage(_) => "storage unavailable".into(),
            ApiError::Misconfigured(_) => "auth misconfigured".into(),
            ApiError::Internal(_) => "internal error".into(),
        }
    }

    /// What the log gets beyond the reason.
    pub(crate) fn detail(&self) -> Option<&str> {
        match self {
            ApiError::Storage(d) | ApiError::Misconfigured(d) | ApiError::Internal(d) => Some(d),
            _ => None,
        }
    }

    /// `{"error": "<reason>"}` with the status.
    pub(crate) fn into_response(self) -> Response {
        let mut response = json_response(
            self.status(),
            &serde_json::json!({ "error": self.reason() }),
        );
        match self {
            ApiError::MethodNotAllowed => response.set_header("allow", "POST"),
            ApiError::Unauthorized(_) => response.set_header("www-authenticate", "Bearer"),
            _ => {}
        }
        response
    }
}

impl From<earshot_auth::AuthError> for ApiError {
    fn from(e: earshot_auth::AuthError) -> ApiError {
        ApiError::Unauthorized(e.to_string())
    }
}

impl From<spin_sdk::key_value::Error> for ApiError {
    fn from(e: spin_sdk::key_value::Error) -> ApiError {
        ApiError::Storage(format!("{e:?}"))
    }
}

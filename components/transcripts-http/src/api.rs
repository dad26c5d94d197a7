//! The HTTP surface's plumbing: the request parts the route looks at, the body limit, JSON
//! responses, and the one error type whose variants map to status codes here and nowhere else.

use earshot_protocol::transcript::{SegmentError, MAX_SEGMENT_BYTES};
use futures::StreamExt;
use serde_json::Value;
use spin_sdk::http::{IncomingRequest, Method, Response};
use transcript_intake::Rejection;

/// Largest request body accepted, in bytes: one segment, the same bound as a Redis intake
/// message ([`MAX_SEGMENT_BYTES`]), refused before it is buffered.
pub(crate) const MAX_BODY_BYTES: usize = MAX_SEGMENT_BYTES;

/// Everything the route needs from the request except the body.
pub(crate) struct RequestParts {
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

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (by `Content-Length` up front, and
/// by counting while streaming, so an oversized body is never buffered).
pub(crate) async fn read_body(
    req: IncomingRequest,
    parts: &RequestParts,
) -> Result<Vec<u8>, ApiError> {
    let declared = parts
        .header_values("content-length")
        .next()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge("request body too large"));
    }
    let mut stream = req.into_body_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest("unreadable request body".into()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge("request body too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON response, never cached.
pub(crate) fn json_response(status: u16, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("response shapes always serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(bytes)
        .build()
}

/// Every way a request can fail: [`ApiError::reason`] is what the client sees,
/// [`ApiError::detail`] what only the log sees.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: bad meeting id in the path, invalid segment, or a segment for another meeting.
    BadRequest(String),
    /// 401: no usable token (missing, malformed, bad signature, expired, revoked…).
    Unauthorized(String),
    /// 403: a valid token without scope `publish` or without this meeting.
    Forbidden(String),
    /// 404: not the intake route.
    NotFound,
    /// 404: no capture agent ever connected to the meeting and nothing was stored for it.
    UnknownMeeting,
    /// 405: the route is POST only.
    MethodNotAllowed,
    /// 413: the body, or the segment's text, is larger than its limit.
    PayloadTooLarge(&'static str),
    /// 503: Redis or the key-value store failed (detail for the log); retry later.
    Unavailable(String),
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
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound | ApiError::UnknownMeeting => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::Unavailable(_) => 503,
            ApiError::Misconfigured(_) | ApiError::Internal(_) => 500,
        }
    }

    /// The `error` string of the response body.
    pub(crate) fn reason(&self) -> String {
        match self {
            ApiError::BadRequest(r) | ApiError::Unauthorized(r) | ApiError::Forbidden(r) => {
                r.clone()
            }
            ApiError::NotFound => "not found".into(),
            ApiError::UnknownMeeting => "unknown meeting".into(),
            ApiError::MethodNotAllowed => "method not allowed".into(),
            ApiError::PayloadTooLarge(r) => (*r).into(),
            ApiError::Unavailable(_) => "storage unavailable".into(),
            ApiError::Misconfigured(_) => "auth misconfigured".into(),
            ApiError::Internal(_) => "internal error".into(),
        }
    }

    /// What the log gets beyond the reason.
    pub(crate) fn detail(&self) -> Option<&str> {
        match self {
            ApiError::Unavailable(d) | ApiError::Misconfigured(d) | ApiError::Internal(d) => {
                Some(d)
            }
            _ => None,
        }
    }

    /// `{"error": "<reason>"}` with the status.
    pub(crate) fn into_response(self) -> Response {
        let body: Value = serde_json::json!({ "error": self.reason() });
        let mut response = json_response(self.status(), &body);
        match self {
            ApiError::MethodNotAllowed => response.set_header("allow", "POST"),
            ApiError::Unauthorized(_) => response.set_header("www-authenticate", "Bearer"),
            ApiError::Unavailable(_) => response.set_header("retry-after", "1"),
            _ => {}
        }
        response
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        match rejection {
            Rejection::Segment(SegmentError::TooLarge) => {
                ApiError::PayloadTooLarge("segment too large")
            }
            Rejection::Segment(SegmentError::TextTooLong) => {
                ApiError::PayloadTooLarge("text too long")
            }
            Rejection::UnknownMeeting => ApiError::UnknownMeeting,
            other @ (Rejection::Segment(_) | Rejection::MeetingMismatch) => {
                ApiError::BadRequest(other.to_string())
            }
        }
    }
}

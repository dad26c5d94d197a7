//! The HTTP surface's plumbing: the body limit and the one error type whose variants map to
//! status codes here and nowhere else (every route of the component). Request parts, the body reader and JSON replies are
//! `earshot_component_common`'s.

use earshot_component_common::request::BodyError;
pub(crate) use earshot_component_common::request::RequestParts;
use earshot_component_common::response::HttpFailure;
use earshot_protocol::transcript::{SegmentError, MAX_SEGMENT_BYTES};
use transcript_intake::Rejection;

/// Largest request body accepted, in bytes: one segment, the same bound as a Redis intake
/// message ([`MAX_SEGMENT_BYTES`]), refused before it is buffered.
pub(crate) const MAX_BODY_BYTES: usize = MAX_SEGMENT_BYTES;

/// Every way a request can fail: [`HttpFailure::reason`] is what the client sees,
/// [`HttpFailure::detail`] what only the log sees.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: bad meeting id in the path, invalid segment, a segment for another meeting, or
    /// a bad export query.
    BadRequest(String),
    /// 401: no usable token (missing, malformed, bad signature, expired, revoked…).
    Unauthorized(String),
    /// 403: a valid token without the route's scope or without this meeting.
    Forbidden(String),
    /// 404: not a route of this component.
    NotFound,
    /// 404: no capture agent ever connected to the meeting and nothing was stored for it
    /// (or it was deleted).
    UnknownMeeting,
    /// 405: not a method of the route; the methods it has (the `Allow` header).
    MethodNotAllowed(&'static str),
    /// 413: the body, or the segment's text, is larger than its limit.
    PayloadTooLarge(&'static str),
    /// 503: Redis or the key-value store failed (detail for the log); retry later.
    Unavailable(String),
    /// 500: the token variables are unusable (detail for the log).
    Misconfigured(String),
    /// 500: anything else (detail for the log).
    Internal(String),
}

impl HttpFailure for ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound | ApiError::UnknownMeeting => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::Unavailable(_) => 503,
            ApiError::Misconfigured(_) | ApiError::Internal(_) => 500,
        }
    }

    fn reason(&self) -> String {
        match self {
            ApiError::BadRequest(r) | ApiError::Unauthorized(r) | ApiError::Forbidden(r) => {
                r.clone()
            }
            ApiError::NotFound => "not found".into(),
            ApiError::UnknownMeeting => "unknown meeting".into(),
            ApiError::MethodNotAllowed(_) => "method not allowed".into(),
            ApiError::PayloadTooLarge(r) => (*r).into(),
            ApiError::Unavailable(_) => "storage unavailable".into(),
            ApiError::Misconfigured(_) => "auth misconfigured".into(),
            ApiError::Internal(_) => "internal error".into(),
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            ApiError::Unavailable(d) | ApiError::Misconfigured(d) | ApiError::Internal(d) => {
                Some(d)
            }
            _ => None,
        }
    }

    fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            ApiError::MethodNotAllowed(allow) => Some(("allow", allow)),
            ApiError::Unauthorized(_) => Some(("www-authenticate", "Bearer")),
            ApiError::Unavailable(_) => Some(("retry-after", "1")),
            _ => None,
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge => ApiError::PayloadTooLarge(e.reason()),
            BodyError::Unreadable => ApiError::BadRequest(e.reason().into()),
        }
    }
}

impl From<earshot_export::QueryError> for ApiError {
    fn from(e: earshot_export::QueryError) -> ApiError {
        ApiError::BadRequest(e.to_string())
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

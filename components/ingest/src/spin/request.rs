//! The HTTP surface's plumbing: the body limit and the one error type whose variants map to
//! status codes here and nowhere else (request parts, the body reader and the JSON error reply
//! are `earshot_component_common`'s). Connection-level failures are never HTTP errors: they
//! are CLOSE events in a 200 reply.

use earshot_component_common::request::BodyError;
pub(crate) use earshot_component_common::request::RequestParts;
use earshot_component_common::response::HttpFailure;
use earshot_protocol::limits::RELAY_MAX_MESSAGE_BYTES;

/// Largest request body accepted, in bytes: sixteen relay-maximum messages. The relay keeps
/// one request per connection outstanding and batches what queued meanwhile; its queue is far
/// smaller than this, so only a broken or hostile caller reaches the limit, and it is refused
/// before a 64 MiB instance fills up.
pub(crate) const MAX_BODY_BYTES: usize = 16 * RELAY_MAX_MESSAGE_BYTES;

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

impl HttpFailure for HttpError {
    fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::Unauthorized(_) => 401,
            HttpError::NotFound => 404,
            HttpError::MethodNotAllowed => 405,
            HttpError::PayloadTooLarge => 413,
            HttpError::Misconfigured(_) | HttpError::Internal(_) => 500,
        }
    }

    fn reason(&self) -> String {
        match self {
            HttpError::BadRequest(r) | HttpError::Unauthorized(r) => r.clone(),
            HttpError::NotFound => "not found".into(),
            HttpError::MethodNotAllowed => "method not allowed".into(),
            HttpError::PayloadTooLarge => BodyError::TooLarge.reason().into(),
            HttpError::Misconfigured(_) => "ingest misconfigured".into(),
            HttpError::Internal(_) => "internal error".into(),
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            HttpError::Misconfigured(d) | HttpError::Internal(d) => Some(d),
            _ => None,
        }
    }

    fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            HttpError::MethodNotAllowed => Some(("allow", "POST")),
            HttpError::Unauthorized(_) => Some(("www-authenticate", "Grip-Sig")),
            _ => None,
        }
    }
}

impl From<BodyError> for HttpError {
    fn from(e: BodyError) -> HttpError {
        match e {
            BodyError::TooLarge => HttpError::PayloadTooLarge,
            BodyError::Unreadable => HttpError::BadRequest(e.reason().into()),
        }
    }
}

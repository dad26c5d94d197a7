//! The HTTP surface's plumbing: the body limit, JSON request bodies, and the one error type
//! whose variants map to status codes here and nowhere else. Request parts, the body reader
//! and JSON replies are `earshot_component_common`'s.

use earshot_component_common::request::BodyError;
pub(crate) use earshot_component_common::request::RequestParts;
pub(crate) use earshot_component_common::response::json_response;
use earshot_component_common::response::HttpFailure;
use serde::de::DeserializeOwned;

/// Largest request body accepted, in bytes. The biggest legitimate body is an introspect or revoke
/// carrying a token of `earshot_auth::MAX_TOKEN_BYTES` (8 KiB) or an issue request with a few
/// hundred meeting ids; 16 KiB covers both with JSON framing to spare.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

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

/// Every way a request can fail; `Display`-free on purpose: [`HttpFailure::reason`] is what
/// the client sees, [`HttpFailure::detail`] what only the log sees.
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

impl HttpFailure for ApiError {
    fn status(&self) -> u16 {
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

    fn reason(&self) -> String {
        match self {
            ApiError::BadRequest(r) | ApiError::Unauthorized(r) => r.clone(),
            ApiError::NotFound => "not found".into(),
            ApiError::MethodNotAllowed => "method not allowed".into(),
            ApiError::PayloadTooLarge => BodyError::TooLarge.reason().into(),
            ApiError::Disabled(r) => (*r).into(),
            ApiError::Storage(_) => "storage unavailable".into(),
            ApiError::Misconfigured(_) => "auth misconfigured".into(),
            ApiError::Internal(_) => "internal error".into(),
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            ApiError::Storage(d) | ApiError::Misconfigured(d) | ApiError::Internal(d) => Some(d),
            _ => None,
        }
    }

    fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            ApiError::MethodNotAllowed => Some(("allow", "POST")),
            ApiError::Unauthorized(_) => Some(("www-authenticate", "Bearer")),
            _ => None,
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge => ApiError::PayloadTooLarge,
            BodyError::Unreadable => ApiError::BadRequest(e.reason().into()),
        }
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

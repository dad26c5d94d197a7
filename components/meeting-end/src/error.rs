//! The end route's one error type: its variants map to statuses here and nowhere else.

/// Every way an end request fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndError {
    /// 400: the path's meeting id is invalid.
    BadRequest(String),
    /// 401: no usable token.
    Unauthorized(String),
    /// 403: a valid token without scope `ingest` or without this meeting.
    Forbidden(String),
    /// 404: no capture agent ever connected to the meeting.
    UnknownMeeting,
    /// 405: the route is POST only.
    MethodNotAllowed,
    /// 503: Redis is unreachable or not configured (detail for the log); retry later.
    Unavailable(String),
    /// 500: the token variables are unusable (detail for the log).
    Misconfigured(String),
}

impl EndError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            EndError::BadRequest(_) => 400,
            EndError::Unauthorized(_) => 401,
            EndError::Forbidden(_) => 403,
            EndError::UnknownMeeting => 404,
            EndError::MethodNotAllowed => 405,
            EndError::Unavailable(_) => 503,
            EndError::Misconfigured(_) => 500,
        }
    }

    /// What the client reads in `{"error": …}`.
    pub fn reason(&self) -> String {
        match self {
            EndError::BadRequest(r) | EndError::Unauthorized(r) | EndError::Forbidden(r) => r.clone(),
            EndError::UnknownMeeting => "unknown meeting".into(),
            EndError::MethodNotAllowed => "method not allowed".into(),
            EndError::Unavailable(_) => "storage unavailable".into(),
            EndError::Misconfigured(_) => "auth misconfigured".into(),
        }
    }

    /// What only the log gets.
    pub fn detail(&self) -> Option<&str> {
        match self {
            EndError::Unavailable(d) | EndError::Misconfigured(d) => Some(d),
            _ => None,
        }
    }

    /// The header the failure adds.
    pub fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            EndError::MethodNotAllowed => Some(("allow", "POST")),
            EndError::Unauthorized(_) => Some(("www-authenticate", "Bearer")),
            EndError::Unavailable(_) => Some(("retry-after", "1")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons() {
        assert_eq!(EndError::UnknownMeeting.status(), 404);
        assert_eq!(EndError::Unavailable("redis down".into()).reason(), "storage unavailable");
        assert_eq!(EndError::Unavailable("redis down".into()).detail(), Some("redis down"));
        assert_eq!(EndError::Forbidden("scope".into()).status(), 403);
        assert_eq!(EndError::MethodNotAllowed.header(), Some(("allow", "POST")));
    }
}

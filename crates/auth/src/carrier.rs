//! Where a token travels on a request, and keeping it out of logs.

use crate::error::AuthError;
use crate::MAX_TOKEN_BYTES;

/// Query parameter that may carry the token (`?token=`).
pub const TOKEN_QUERY_PARAM: &str = "token";

/// Prefix of a `Sec-WebSocket-Protocol` entry that carries the token (`bearer.<token>`).
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// What [`redact_query`] writes in place of a token.
pub const REDACTED: &str = "REDACTED";

/// Finds the request's token in exactly one carrier: the `token` query parameter (URL-decoded),
/// `Authorization: Bearer <t>`, or a `bearer.<t>` subprotocol entry. Two carriers, a repeated
/// parameter or two `bearer.` entries are [`AuthError::Ambiguous`]; none is
/// [`AuthError::Missing`]. A non-Bearer `Authorization` header is not a carrier.
pub fn extract_token(
    query: Option<&str>,
    authorization: Option<&str>,
    websocket_protocol: Option<&str>,
) -> Result<String, AuthError> {
    let mut found: Option<String> = None;
    let mut offer = |candidate: String| -> Result<(), AuthError> {
        if found.replace(candidate).is_some() {
            return Err(AuthError::Ambiguous);
        }
        Ok(())
    };

    if let Some(query) = query {
        let query = query.strip_prefix('?').unwrap_or(query);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == TOKEN_QUERY_PARAM {
                offer(value.into_owned())?;
            }
        }
    }
    if let Some(token) = authorization.and_then(bearer_token) {
        offer(token.to_owned())?;
    }
    if let Some(protocols) = websocket_protocol {
        for entry in protocols.split(',') {
            if let Some(token) = entry.trim().strip_prefix(BEARER_SUBPROTOCOL_PREFIX) {
                offer(token.to_owned())?;
            }
        }
    }

    match found {
        None => Err(AuthError::Missing),
        Some(t) if t.is_empty() => Err(AuthError::Missing),
        Some(t) if t.len() > MAX_TOKEN_BYTES => Err(AuthError::TooLarge),
        Some(t) => Ok(t),
    }
}

/// The credentials of an `Authorization: Bearer <t>` header (scheme case-insensitive, RFC 7235);
/// `None` for other schemes.
pub fn bearer_token(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Returns `uri_or_query` with every `token` query value replaced by [`REDACTED`], for logging.
/// Accepts a full URI, a path with query, or a bare query string.
pub fn redact_query(uri_or_query: &str) -> String {
    let (prefix, rest) = match uri_or_query.split_once('?') {
        Some((path, rest)) => (Some(path), rest),
        None => (None, uri_or_query),
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let redacted = query
        .split('&')
        .map(|pair| {
            let raw_key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let is_token = form_urlencoded::parse(raw_key.as_bytes())
                .next()
                .is_some_and(|(k, _)| k == TOKEN_QUERY_PARAM);
            if is_token {
                format!("{raw_key}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut out = String::with_capacity(uri_or_query.len());
    if let Some(path) = prefix {
        out.push_str(path);
        out.push('?');
    }
    out.push_str(&redacted);
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_each_carrier() {
        assert_eq!(
            extract_token(Some("token=a.b.c"), None, None).unwrap(),
            "a.b.c"
        );
        assert_eq!(
            extract_token(Some("?source=mic&token=a%2Eb.c"), None, None).unwrap(),
            "a.b.c"
        );
        assert_eq!(
            extract_token(None, Some("Bearer a.b.c"), None).unwrap(),
            "a.b.c"
        );
        assert_eq!(
            extract_token(None, Some("bearer  a.b.c "), None).unwrap(),
            "a.b.c"
        );
        assert_eq!(
            extract_token(None, None, Some("earshot.v1, bearer.a.b.c")).unwrap(),
            "a.b.c"
        );
    }

    #[test]
    fn missing_when_no_carrier_or_empty() {
        assert_eq!(extract_token(None, None, None), Err(AuthError::Missing));
        assert_eq!(
            extract_token(Some("source=mic"), None, None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            extract_token(Some("token="), None, None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            extract_token(None, Some("Bearer"), None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            extract_token(None, Some("Basic dXNlcjpwYXNz"), None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            extract_token(None, None, Some("earshot.v1")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn ambiguous_when_repeated_or_two_carriers() {
        assert_eq!(
            extract_token(Some("token=a&token=b"), None, None),
            Err(AuthError::Ambiguous)
        );
        // Same value twice is still two carriers.
        assert_eq!(
            extract_token(Some("token=a&tok%65n=a"), None, None),
            Err(AuthError::Ambiguous)
        );
        assert_eq!(
            extract_token(Some("token=a"), Some("Bearer a"), None),
            Err(AuthError::Ambiguous)
        );
        assert_eq!(
            extract_token(None, Some("Bearer a"), Some("bearer.a")),
            Err(AuthError::Ambiguous)
        );
        assert_eq!(
            extract_token(None, None, Some("bearer.a, bearer.b")),
            Err(AuthError::Ambiguous)
        );
        // Even an empty second carrier makes the choice ambiguous.
        assert_eq!(
            extract_token(Some("token="), Some("Bearer a"), None),
            Err(AuthError::Ambiguous)
        );
    }

    #[test]
    fn oversized_token_rejected() {
        let query = format!("token={}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            extract_token(Some(&query), None, None),
            Err(AuthError::TooLarge)
        );
    }

    #[test]
    fn redaction_hides_every_token_value() {
        assert_eq!(
            redact_query("/api/v1/ws/meetings/m1?token=abc.def&since=3"),
            "/api/v1/ws/meetings/m1?token=REDACTED&since=3"
        );
        assert_eq!(
            redact_query("token=a&tok%65n=b&x=token"),
            "token=REDACTED&tok%65n=REDACTED&x=token"
        );
        assert_eq!(
            redact_query("http://h/p?a=1&token=s3cr3t#frag"),
            "http://h/p?a=1&token=REDACTED#frag"
        );
        assert_eq!(redact_query("/api/v1/health"), "/api/v1/health");
        assert!(!redact_query("/x?token=s3cr3t").contains("s3cr3t"));
    }
}

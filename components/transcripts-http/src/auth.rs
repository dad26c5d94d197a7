//! Who may call a route: an `Authorization: Bearer <JWT>` verified with the shared
//! `earshot_auth::Verifier` (variables `jwt_algorithm`, `jwt_secret`, `jwt_public_key`,
//! `jwt_audience`, as the socket components read them), not revoked, with the route's scope
//! (`publish` to hand in a segment, `subscribe` to export, `admin` to delete) for the path's
//! meeting, exactly as the subscriber routes check theirs (ws-session's `authenticate`).
//!
//! The header is the only carrier: these are API calls, not a browser's WebSocket, and a
//! token in a query string ends up in proxies' access logs.

use earshot_auth::{
    bearer_token, revocation_key, AuthError, RevocationRecord, Scope, VerifiedToken, Verifier,
};
use earshot_protocol::MeetingId;
use spin_sdk::key_value::Store;
use spin_sdk::variables;

use crate::api::{ApiError, RequestParts};

/// The verified token of a caller granted `scope` for `meeting` at `now_unix`.
pub(crate) fn authenticate(
    parts: &RequestParts,
    scope: Scope,
    meeting: &MeetingId,
    now_unix: u64,
) -> Result<VerifiedToken, ApiError> {
    let headers: Vec<&str> = parts.header_values("authorization").collect();
    let token = match headers.as_slice() {
        [] => return Err(denied(AuthError::Missing)),
        [one] => bearer_token(one)
            .filter(|t| !t.is_empty())
            .ok_or(denied(AuthError::Missing))?,
        // Two Authorization headers are two carriers: which one counts is undefined.
        _ => return Err(denied(AuthError::Ambiguous)),
    };
    let verified = verifier()?.verify(token, now_unix).map_err(denied)?;
    if let Some(jti) = &verified.jti {
        let stored = Store::open_default()
            .and_then(|store| store.get(&revocation_key(jti)))
            .map_err(|e| ApiError::Unavailable(format!("key-value get: {e:?}")))?;
        RevocationRecord::status(stored.as_deref(), now_unix)
            .check()
            .map_err(denied)?;
    }
    verified
        .authorize(scope, Some(meeting.as_str()))
        .map_err(denied)?;
    Ok(verified)
}

/// 403 for a valid token that does not cover the request, 401 for anything else.
fn denied(e: AuthError) -> ApiError {
    match e {
        AuthError::ScopeNotGranted(_) | AuthError::MeetingNotGranted => {
            ApiError::Forbidden(e.to_string())
        }
        _ => ApiError::Unauthorized(e.to_string()),
    }
}

fn verifier() -> Result<Verifier, ApiError> {
    let var = |name: &str| match variables::get(name) {
        Ok(value) => Ok(value),
        Err(variables::Error::Undefined(_)) => Ok(String::new()),
        Err(e) => Err(ApiError::Misconfigured(format!("variable {name}: {e:?}"))),
    };
    Verifier::from_settings(
        &var("jwt_algorithm")?,
        &var("jwt_secret")?,
        &var("jwt_public_key")?,
        &var("jwt_audience")?,
    )
    .map_err(|e| ApiError::Misconfigured(e.to_string()))
}

//! Authentication of a WebSocket's OPEN (DESIGN.md "Tokens"): one carrier, a verified token,
//! not revoked, with the route's scope and meeting; and of a live connection's `refresh`
//! (the same checks on a fresher token of the same subject). Between the two, the relay
//! closes the connection at the token's `exp` or when its `jti` is revoked.

use earshot_auth::{
    extract_token, revocation_key, AuthError, ConfigError, RevocationRecord, Scope, VerifiedToken,
    Verifier, BEARER_SUBPROTOCOL_PREFIX,
};
use earshot_protocol::ids::SUBPROTOCOL;
use earshot_protocol::MeetingId;

use crate::effects::{EffectError, Effects};
use crate::settings::TokenSettings;

/// Where the client may have put its token: the replayed handshake.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The request's query string (`?token=`).
    pub query: Option<String>,
    /// Every `Authorization` header value.
    pub authorization: Vec<String>,
    /// Every `Sec-WebSocket-Protocol` header value, joined with `, `.
    pub protocols: Option<String>,
}

/// Why an OPEN was not authenticated.
#[derive(Debug)]
pub enum AuthFailure {
    /// The client's fault: close 1008 `auth failed: <reason>`.
    Denied(AuthError),
    /// The token variables are unusable: the backend's fault (1011).
    Misconfigured(ConfigError),
    /// The revocation list could not be read: fail closed, retryable (1011).
    StoreUnavailable(EffectError),
}

/// Authenticates the OPEN of a connection to `meeting` that needs `scope`, at `now_unix`.
pub fn authenticate(
    credentials: &Credentials,
    settings: &TokenSettings,
    scope: Scope,
    meeting: &MeetingId,
    now_unix: u64,
    effects: &mut impl Effects,
) -> Result<VerifiedToken, AuthFailure> {
    let authorization = match credentials.authorization.as_slice() {
        [] => None,
        [one] => Some(one.as_str()),
        // Two Authorization headers are two carriers.
        _ => return Err(AuthFailure::Denied(AuthError::Ambiguous)),
    };
    let token = extract_token(
        credentials.query.as_deref(),
        authorization,
        credentials.protocols.as_deref(),
    )
    .map_err(AuthFailure::Denied)?;
    verify(&token, settings, scope, meeting, now_unix, effects)
}

/// Verifies a `refresh` of a live connection to `meeting` (scope `scope`) held by `sub`:
/// the fresher token must pass every check of an OPEN, be for the same subject, and not be
/// expired now — without the clock leeway an OPEN gets, since the point is to outlive the
/// old token, not to match it.
pub fn authenticate_refresh(
    token: &str,
    sub: &str,
    settings: &TokenSettings,
    scope: Scope,
    meeting: &MeetingId,
    now_ms: u64,
    effects: &mut impl Effects,
) -> Result<VerifiedToken, RefreshFailure> {
    let verified = verify(token, settings, scope, meeting, now_ms / 1000, effects)
        .map_err(RefreshFailure::Auth)?;
    if verified.exp.saturating_mul(1000) <= now_ms {
        return Err(RefreshFailure::Auth(AuthFailure::Denied(
            AuthError::Expired,
        )));
    }
    if verified.sub != sub {
        return Err(RefreshFailure::OtherSubject);
    }
    Ok(verified)
}

/// Why a refresh was refused.
#[derive(Debug)]
pub enum RefreshFailure {
    /// The token failed a check an OPEN makes too.
    Auth(AuthFailure),
    /// A valid token, but for another subject than the connection's (close 1008).
    OtherSubject,
}

/// The checks of one token: signature and claims, the revocation list, scope and meeting.
fn verify(
    token: &str,
    settings: &TokenSettings,
    scope: Scope,
    meeting: &MeetingId,
    now_unix: u64,
    effects: &mut impl Effects,
) -> Result<VerifiedToken, AuthFailure> {
    let verifier = Verifier::from_settings(
        &settings.algorithm,
        &settings.secret,
        &settings.public_key,
        &settings.audience,
    )
    .map_err(AuthFailure::Misconfigured)?;
    let verified = verifier
        .verify(token, now_unix)
        .map_err(AuthFailure::Denied)?;
    if let Some(jti) = &verified.jti {
        let stored = effects
            .kv_get(&revocation_key(jti))
            .map_err(AuthFailure::StoreUnavailable)?;
        RevocationRecord::status(stored.as_deref(), now_unix)
            .check()
            .map_err(AuthFailure::Denied)?;
    }
    verified
        .authorize(scope, Some(meeting.as_str()))
        .map_err(AuthFailure::Denied)?;
    Ok(verified)
}

/// The `Sec-WebSocket-Protocol` to answer with, given what the client offered: Earshot's own
/// protocol when offered; else the `bearer.<token>` entry, because a browser that used it only
/// to carry the token fails the upgrade unless one offered protocol is selected (so the
/// client would never see the close code); else none.
pub fn select_subprotocol(offered: Option<&str>) -> Option<String> {
    let entries: Vec<&str> = offered?
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.contains(&SUBPROTOCOL) {
        return Some(SUBPROTOCOL.to_owned());
    }
    entries
        .into_iter()
        .find(|e| e.starts_with(BEARER_SUBPROTOCOL_PREFIX))
        .map(str::to_owned)
}

//! Token issuance (HS256 with `jwt_secret` only: asymmetric deployments mint tokens elsewhere).

use std::fmt;

use jwt_simple::prelude::{Audiences, Duration, HS256Key, JWTClaims, MACLike};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, IssueError};
use crate::scope::{MeetingGrant, Scope, ALL_MEETINGS};
use crate::verify::{audience_or_default, hs256_key};
use crate::{DEFAULT_TOKEN_TTL_S, MAX_TOKEN_BYTES};

/// Longest meeting id in bytes (DESIGN.md, "Ingest protocol": 1–128 of `[A-Za-z0-9._-]`).
const MAX_MEETING_ID_BYTES: usize = 128;

/// What to put in a new token: the body of `POST /api/v1/auth/token`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// Subject the token is issued to.
    pub sub: String,
    /// Space-separated scopes; at least one.
    pub scope: String,
    /// Meeting ids, or `["*"]` for all; empty grants none.
    #[serde(default)]
    pub meetings: Vec<String>,
    /// Requested lifetime in seconds; [`DEFAULT_TOKEN_TTL_S`] when absent, capped by the issuer.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// A freshly signed token; `Debug` hides the token itself.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`, unix seconds.
    pub exp: u64,
    /// Its `iat`, unix seconds.
    pub iat: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &crate::REDACTED)
            .field("jti", &self.jti)
            .field("exp", &self.exp)
            .field("iat", &self.iat)
            .finish()
    }
}

/// The Earshot claims as written into issued tokens.
#[derive(Serialize)]
struct IssuedClaims {
    scope: String,
    meetings: Vec<String>,
}

/// Signs HS256 tokens with `jwt_secret` for one audience.
pub struct Issuer {
    key: HS256Key,
    audience: String,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Builds an issuer from `jwt_secret` (at least [`crate::MIN_SECRET_BYTES`]) and
    /// `jwt_audience` (empty means `earshot`).
    pub fn from_settings(secret: &str, audience: &str) -> Result<Issuer, ConfigError> {
        Ok(Issuer {
            key: hs256_key(secret)?,
            audience: audience_or_default(audience),
        })
    }

    /// Signs a token for `request` at `now_unix` with lifetime `min(ttl_s, max_ttl_s)` and the
    /// caller's random `jti` (the library has no RNG so it stays deterministic).
    pub fn issue(
        &self,
        request: &IssueRequest,
        now_unix: u64,
        max_ttl_s: u64,
        jti: String,
    ) -> Result<IssuedToken, IssueError> {
        if request.sub.trim().is_empty() {
            return Err(IssueError::InvalidField("sub"));
        }
        let scopes =
            Scope::parse_list(&request.scope).map_err(|_| IssueError::InvalidField("scope"))?;
        if scopes.is_empty() {
            return Err(IssueError::InvalidField("scope"));
        }
        if !request
            .meetings
            .iter()
            .all(|m| m == ALL_MEETINGS || is_meeting_id(m))
        {
            return Err(IssueError::InvalidField("meetings"));
        }
        let meetings = MeetingGrant::from_ids(request.meetings.clone()).to_claim();
        let ttl_s = request.ttl_s.unwrap_or(DEFAULT_TOKEN_TTL_S).min(max_ttl_s);
        if ttl_s == 0 {
            return Err(IssueError::InvalidField("ttl_s"));
        }
        if jti.is_empty() {
            return Err(IssueError::InvalidField("jti"));
        }
        let exp = now_unix
            .checked_add(ttl_s)
            .ok_or(IssueError::InvalidField("ttl_s"))?;
        // Built by hand rather than with `Claims::create`, which reads the library's clock.
        let claims = JWTClaims {
            issued_at: Some(Duration::from_secs(now_unix)),
            expires_at: Some(Duration::from_secs(exp)),
            invalid_before: None,
            issuer: None,
            subject: Some(request.sub.clone()),
            audiences: Some(Audiences::AsString(self.audience.clone())),
            jwt_id: Some(jti.clone()),
            nonce: None,
            custom: IssuedClaims {
                scope: Scope::join(&scopes),
                meetings,
            },
        };
        let token = self
            .key
            .authenticate(claims)
            .map_err(|_| IssueError::Signing)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(IssueError::TooLarge);
        }
        Ok(IssuedToken {
            token,
            jti,
            exp,
            iat: now_unix,
        })
    }
}

/// DESIGN.md meeting id syntax: 1–128 characters of `[A-Za-z0-9._-]`, except `.` and `..`,
/// which no route accepts (they name path segments; `earshot_protocol::MeetingId` refuses
/// them), so a grant for them could never be used.
fn is_meeting_id(id: &str) -> bool {
    (1..=MAX_MEETING_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != "."
        && id != ".."
}

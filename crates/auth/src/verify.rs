//! Token verification: signature with the one configured algorithm, then the Earshot claims.

use std::fmt;

use jwt_simple::prelude::{
    Audiences, Base64UrlSafeNoPadding, Duration, ECDSAP256PublicKeyLike, ES256PublicKey,
    Ed25519PublicKey, EdDSAPublicKeyLike, HS256Key, JWTClaims, MACLike, Token, VerificationOptions,
};
use jwt_simple::reexports::ct_codecs::Decoder;
use jwt_simple::JWTError;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{AuthError, ConfigError};
use crate::revocation::revocation_key;
use crate::scope::{MeetingGrant, Scope};
use crate::{CLOCK_LEEWAY_S, DEFAULT_AUDIENCE, MAX_TOKEN_BYTES, MIN_SECRET_BYTES};

/// The signing algorithm a deployment pins; tokens naming any other `alg` are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// HMAC-SHA256 with the shared `jwt_secret` (the default).
    Hs256,
    /// Ed25519 signatures checked with `jwt_public_key`.
    EdDsa,
    /// ECDSA P-256 signatures checked with `jwt_public_key`.
    Es256,
}

impl KeyAlgorithm {
    /// Parses `jwt_algorithm` (case-insensitive; empty means HS256).
    pub fn parse(name: &str) -> Result<KeyAlgorithm, ConfigError> {
        match name.trim().to_ascii_uppercase().as_str() {
            "" | "HS256" => Ok(KeyAlgorithm::Hs256),
            "EDDSA" | "ED25519" => Ok(KeyAlgorithm::EdDsa),
            "ES256" => Ok(KeyAlgorithm::Es256),
            _ => Err(ConfigError::UnsupportedAlgorithm(name.trim().to_owned())),
        }
    }

    /// The JOSE `alg` name.
    pub fn jwt_name(self) -> &'static str {
        match self {
            KeyAlgorithm::Hs256 => "HS256",
            KeyAlgorithm::EdDsa => "EdDSA",
            KeyAlgorithm::Es256 => "ES256",
        }
    }

    /// Whether a token header's `alg` names this algorithm (RFC 9864 also spells EdDSA `Ed25519`).
    fn accepts(self, alg: &str) -> bool {
        alg == self.jwt_name() || (self == KeyAlgorithm::EdDsa && alg == "Ed25519")
    }
}

enum VerifyingKey {
    Hs256(HS256Key),
    EdDsa(Ed25519PublicKey),
    Es256(ES256PublicKey),
}

/// Verifies tokens against one key and audience; build it once per request from the variables.
pub struct Verifier {
    key: VerifyingKey,
    audience: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm())
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier from the `jwt_algorithm`, `jwt_secret`, `jwt_public_key` and
    /// `jwt_audience` variables; empty algorithm/audience mean HS256/`earshot`.
    pub fn from_settings(
        algorithm: &str,
        secret: &str,
        public_key_pem: &str,
        audience: &str,
    ) -> Result<Verifier, ConfigError> {
        let algorithm = KeyAlgorithm::parse(algorithm)?;
        let key = match algorithm {
            KeyAlgorithm::Hs256 => VerifyingKey::Hs256(hs256_key(secret)?),
            KeyAlgorithm::EdDsa => {
                let pem = public_key_pem_text(public_key_pem, algorithm)?;
                VerifyingKey::EdDsa(
                    Ed25519PublicKey::from_pem(&pem)
                        .map_err(|_| ConfigError::InvalidPublicKey(algorithm.jwt_name()))?,
                )
            }
            KeyAlgorithm::Es256 => {
                let pem = public_key_pem_text(public_key_pem, algorithm)?;
                VerifyingKey::Es256(
                    ES256PublicKey::from_pem(&pem)
                        .map_err(|_| ConfigError::InvalidPublicKey(algorithm.jwt_name()))?,
                )
            }
        };
        Ok(Verifier {
            key,
            audience: audience_or_default(audience),
        })
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.key {
            VerifyingKey::Hs256(_) => KeyAlgorithm::Hs256,
            VerifyingKey::EdDsa(_) => KeyAlgorithm::EdDsa,
            VerifyingKey::Es256(_) => KeyAlgorithm::Es256,
        }
    }

    /// The audience a token must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Verifies `token` at `now_unix` (seconds): size, algorithm, signature, time, audience and
    /// the Earshot claims. Revocation is the caller's check (it needs the key-value store).
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<VerifiedToken, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        // Pin the algorithm before any key is touched: `none`, HS384/HS512 with the same secret
        // and HS256-signed-with-the-public-key confusion all stop here.
        let metadata = Token::decode_metadata(token).map_err(|_| AuthError::Malformed)?;
        if !self.algorithm().accepts(metadata.algorithm()) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        // The library's own clock is never consulted: `artificial_time` is the caller's `now`.
        let options = VerificationOptions {
            artificial_time: Some(Duration::from_secs(now_unix)),
            time_tolerance: Some(Duration::from_secs(CLOCK_LEEWAY_S)),
            max_token_length: Some(MAX_TOKEN_BYTES),
            ..Default::default()
        };
        let verified = match &self.key {
            VerifyingKey::Hs256(k) => k.verify_token::<ExtraClaims>(token, Some(options)),
            VerifyingKey::EdDsa(k) => k.verify_token::<ExtraClaims>(token, Some(options)),
            VerifyingKey::Es256(k) => k.verify_token::<ExtraClaims>(token, Some(options)),
        };
        let claims = verified.map_err(|e| classify(&e, token))?;
        self.read_claims(claims)
    }

    fn read_claims(&self, claims: JWTClaims<ExtraClaims>) -> Result<VerifiedToken, AuthError> {
        let exp = claims
            .expires_at
            .ok_or(AuthError::MissingClaim("exp"))?
            .as_secs();
        let sub = claims
            .subject
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        let audience_ok = match &claims.audiences {
            // The contract's default: a token without `aud` is meant for `earshot`.
            None => self.audience == DEFAULT_AUDIENCE,
            Some(Audiences::AsString(aud)) => *aud == self.audience,
            Some(Audiences::AsSet(auds)) => auds.contains(&self.audience),
        };
        if !audience_ok {
            return Err(AuthError::WrongAudience);
        }
        if claims.jwt_id.as_deref() == Some("") {
            return Err(AuthError::InvalidClaim("jti"));
        }
        let scopes = match &claims.custom.scope {
            None => Vec::new(),
            Some(Value::String(s)) => Scope::parse_list(s)?,
            Some(_) => return Err(AuthError::InvalidClaim("scope")),
        };
        let meetings = MeetingGrant::from_claim(claims.custom.meetings.as_ref())?;
        Ok(VerifiedToken {
            sub,
            jti: claims.jwt_id,
            exp,
            iat: claims.issued_at.map(|t| t.as_secs()),
            nbf: claims.invalid_before.map(|t| t.as_secs()),
            aud: self.audience.clone(),
            scopes,
            meetings,
        })
    }
}

/// The claims of a token that verified; what a route checks with [`VerifiedToken::authorize`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedToken {
    /// Subject (`sub`): who the token was issued to.
    pub sub: String,
    /// Token id (`jti`), the revocation handle; tokens without one cannot be revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Expiry (`exp`), unix seconds.
    pub exp: u64,
    /// Issued-at (`iat`), unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not-before (`nbf`), unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The configured audience the token was accepted for.
    pub aud: String,
    /// Granted scopes, sorted and de-duplicated.
    #[serde(rename = "scope", serialize_with = "serialize_scopes")]
    pub scopes: Vec<Scope>,
    /// Granted meetings.
    pub meetings: MeetingGrant,
}

impl VerifiedToken {
    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The scopes as the space-separated `scope` claim.
    pub fn scope_string(&self) -> String {
        Scope::join(&self.scopes)
    }

    /// Checks that the token grants `needed` and, when given, `meeting`. Scopes do not imply
    /// one another: `admin` alone cannot ingest.
    pub fn authorize(&self, needed: Scope, meeting: Option<&str>) -> Result<(), AuthError> {
        if !self.has_scope(needed) {
            return Err(AuthError::ScopeNotGranted(needed));
        }
        match meeting {
            Some(m) if !self.meetings.allows(m) => Err(AuthError::MeetingNotGranted),
            _ => Ok(()),
        }
    }

    /// The key-value key under which this token's revocation would be stored.
    pub fn revocation_key(&self) -> Option<String> {
        self.jti.as_deref().map(revocation_key)
    }
}

fn serialize_scopes<S: serde::Serializer>(scopes: &[Scope], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&Scope::join(scopes))
}

/// The Earshot claims beyond the registered ones, kept as raw JSON so a wrong type is reported
/// as `invalid claim: <name>` rather than as an unreadable token.
#[derive(Deserialize)]
struct ExtraClaims {
    #[serde(default, deserialize_with = "present")]
    scope: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    meetings: Option<Value>,
}

/// Keeps an explicit `null` as `Some(Null)` so it is rejected like any other wrong type.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

pub(crate) fn hs256_key(secret: &str) -> Result<HS256Key, ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::SecretTooShort {
            len: secret.len(),
            min: MIN_SECRET_BYTES,
        });
    }
    Ok(HS256Key::from_bytes(secret.as_bytes()))
}

pub(crate) fn audience_or_default(audience: &str) -> String {
    match audience.trim() {
        "" => DEFAULT_AUDIENCE.to_owned(),
        aud => aud.to_owned(),
    }
}

/// PEM text from a variable; environment variables often carry newlines as a literal `\n`.
fn public_key_pem_text(pem: &str, algorithm: KeyAlgorithm) -> Result<String, ConfigError> {
    let pem = pem.trim();
    if pem.is_empty() {
        return Err(ConfigError::MissingPublicKey(algorithm.jwt_name()));
    }
    Ok(pem.replace("\\n", "\n"))
}

/// Maps a jwt-simple failure to the client-facing reason.
fn classify(err: &jwt_simple::Error, token: &str) -> AuthError {
    if let Some(e) = err.downcast_ref::<JWTError>() {
        return match e {
            JWTError::InvalidAuthenticationTag | JWTError::InvalidSignature => {
                AuthError::BadSignature
            }
            JWTError::AlgorithmMismatch => AuthError::AlgorithmNotAllowed,
            JWTError::TokenHasExpired => AuthError::Expired,
            JWTError::TokenNotValidYet | JWTError::ClockDrift => AuthError::NotYetValid,
            JWTError::TokenTooLong | JWTError::HeaderTooLarge => AuthError::TooLarge,
            _ => AuthError::Malformed,
        };
    }
    if err.downcast_ref::<serde_json::Error>().is_some() {
        // The header already parsed in `verify`, so this is the claims set, which jwt-simple
        // reads only after the signature checked out: name the offending claim.
        return diagnose_claims(token);
    }
    AuthError::Malformed
}

/// Finds the registered claim whose JSON type jwt-simple refused.
fn diagnose_claims(token: &str) -> AuthError {
    let Some(payload) = token.split('.').nth(1) else {
        return AuthError::Malformed;
    };
    let Ok(bytes) = Base64UrlSafeNoPadding::decode_to_vec(payload, None) else {
        return AuthError::Malformed;
    };
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&bytes) else {
        return AuthError::Malformed;
    };
    for name in ["exp", "nbf", "iat"] {
        match claims.get(name) {
            None => {}
            Some(v) if v.as_u64().is_some() || v.as_f64().is_some_and(|f| f >= 0.0) => {}
            Some(_) => return AuthError::InvalidClaim(name),
        }
    }
    for name in ["sub", "jti", "iss", "nonce"] {
        if let Some(v) = claims.get(name) {
            if !(v.is_string() || v.is_null()) {
                return AuthError::InvalidClaim(name);
            }
        }
    }
    if let Some(aud) = claims.get("aud") {
        let ok = match aud {
            Value::String(_) | Value::Null => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return AuthError::InvalidClaim("aud");
        }
    }
    AuthError::Malformed
}

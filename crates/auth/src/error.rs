//! Errors at the library's edges. None of them ever holds a token or a secret.

use crate::scope::Scope;

/// Why a token was not accepted; `Display` is the short reason a client sees after `auth failed: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No carrier held a token (or the one carrier held an empty value).
    #[error("missing token")]
    Missing,
    /// More than one carrier, or a repeated `token` parameter: which one counts is undefined.
    #[error("ambiguous token")]
    Ambiguous,
    /// Longer than [`crate::MAX_TOKEN_BYTES`]; rejected before parsing.
    #[error("token too large")]
    TooLarge,
    /// Not a compact JWS (three base64url parts, JSON header and claims).
    #[error("malformed token")]
    Malformed,
    /// The signature or MAC does not match the configured key.
    #[error("bad signature")]
    BadSignature,
    /// The header names an algorithm other than the configured one (`none`, HS512, key confusion).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// `exp` (plus leeway) is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` (minus leeway) is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not include the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("missing claim: {0}")]
    MissingClaim(&'static str),
    /// A claim is present but has the wrong type or an unknown value.
    #[error("invalid claim: {0}")]
    InvalidClaim(&'static str),
    /// The token is valid but lacks the scope the route needs.
    #[error("scope not granted: {0}")]
    ScopeNotGranted(Scope),
    /// The token is valid but does not cover the meeting.
    #[error("meeting not granted")]
    MeetingNotGranted,
    /// The token's `jti` is on the revocation list.
    #[error("token revoked")]
    Revoked,
}

/// Why the token settings (variables) cannot be used; values shown are never secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `jwt_algorithm` names an algorithm Earshot does not support.
    #[error("unsupported jwt_algorithm `{0}` (expected HS256, EdDSA or ES256)")]
    UnsupportedAlgorithm(String),
    /// `jwt_secret` is shorter than [`crate::MIN_SECRET_BYTES`].
    #[error("jwt_secret is {len} bytes; at least {min} are required")]
    SecretTooShort {
        /// Length of the configured secret.
        len: usize,
        /// Required minimum.
        min: usize,
    },
    /// An asymmetric algorithm is configured but `jwt_public_key` is empty.
    #[error("jwt_public_key is required for {0}")]
    MissingPublicKey(&'static str),
    /// `jwt_public_key` is not a PEM public key of the configured algorithm.
    #[error("jwt_public_key is not a valid {0} public key (PEM)")]
    InvalidPublicKey(&'static str),
}

/// Why a token could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// A request field is empty, unknown or out of range; the field name is given.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
    /// The signed token would exceed [`crate::MAX_TOKEN_BYTES`] (too many meetings).
    #[error("token too large")]
    TooLarge,
    /// Signing failed inside the JWT library.
    #[error("signing failed")]
    Signing,
}

//! Earshot tokens: the one library every component uses to verify, authorize, issue, carry and
//! revoke JWTs (contract: DESIGN.md, "Tokens").
//!
//! Pure and deterministic: the caller passes the current time (unix seconds) and, when issuing,
//! the random `jti`, so the same code runs natively, in wasm components and in tests.

#![warn(missing_docs)]

mod carrier;
mod error;
mod issue;
mod revocation;
mod scope;
mod verify;

pub use carrier::{
    bearer_token, extract_token, redact_query, BEARER_SUBPROTOCOL_PREFIX, REDACTED,
    TOKEN_QUERY_PARAM,
};
pub use error::{AuthError, ConfigError, IssueError};
pub use issue::{IssueRequest, IssuedToken, Issuer};
pub use revocation::{
    issued_key, revocation_key, IssuedRecord, RevocationRecord, RevocationStatus,
};
pub use scope::{MeetingGrant, Scope, ALL_MEETINGS};
pub use verify::{KeyAlgorithm, VerifiedToken, Verifier};

/// Audience expected (and issued) when `jwt_audience` is not configured; also the audience
/// assumed for a token that carries no `aud` claim.
pub const DEFAULT_AUDIENCE: &str = "earshot";

/// Minimum `jwt_secret` length in bytes: RFC 7518 §3.2 requires an HS256 key at least as long as
/// the hash output (256 bits); anything shorter is brute-forceable offline from one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest token accepted, in bytes, checked before any parsing. Earshot's own tokens are
/// 300–600 bytes; 8 KiB leaves room for a long `meetings` list yet stays under the common 8 KiB
/// HTTP header-line limit, so anything larger could not travel in `Authorization` anyway.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. Tokens come from this
/// deployment's auth component or an NTP-synced identity provider, whose clocks agree to well
/// under a second; 5 s absorbs that while an expired token lives at most 5 s longer.
pub const CLOCK_LEEWAY_S: u64 = 5;

/// Upper bound on `max_token_ttl_s` when it is not configured, in seconds: one day, so a leaked
/// token is useful for a bounded time and the revocation list stays small.
pub const DEFAULT_MAX_TOKEN_TTL_S: u64 = 24 * 60 * 60;

/// Lifetime of an issued token when the request names none, in seconds: one hour covers a
/// meeting; agents fetch a fresh token per connection.
pub const DEFAULT_TOKEN_TTL_S: u64 = 60 * 60;

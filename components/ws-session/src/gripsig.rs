//! `Grip-Sig`: proof that a request comes from the relay. With `grip_sig_key` set, the relay
//! signs every WebSocket-over-HTTP request with a short-lived HS256 JWT (Pushpin's
//! convention); without a valid one the component answers 401, so nobody who can reach the
//! component directly can forge `Meta-*` state or a `Connection-Id`.

use jwt_simple::prelude::{Duration, HS256Key, MACLike, NoCustomClaims, VerificationOptions};

/// The request header.
pub const HEADER: &str = "grip-sig";

/// Clock skew tolerated on the signature's `exp`, seconds. Relay and component run on hosts
/// whose clocks NTP keeps within a second; the default of jwt-simple (15 minutes) would let a
/// captured signature live that much longer.
pub const LEEWAY_S: u64 = 5;

/// Longest `Grip-Sig` accepted, bytes: the relay's tokens are ~150 bytes (`iss`, `exp`).
pub const MAX_BYTES: usize = 1024;

/// Why a request's signature was refused (the 401's reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GripSigError {
    /// No `Grip-Sig` header.
    #[error("missing Grip-Sig")]
    Missing,
    /// More than one `Grip-Sig` header.
    #[error("ambiguous Grip-Sig")]
    Ambiguous,
    /// Not an HS256 JWT signed with the key, or too long.
    #[error("invalid Grip-Sig")]
    Invalid,
    /// Signed, but without an `exp`: such a signature would be valid forever.
    #[error("Grip-Sig without exp")]
    NoExpiry,
    /// Signed, but expired.
    #[error("Grip-Sig expired")]
    Expired,
}

/// Checks the `Grip-Sig` header values of a request against `key` at `now_unix` (seconds).
pub fn verify(key: &str, values: &[&str], now_unix: u64) -> Result<(), GripSigError> {
    let token = match values {
        [] => return Err(GripSigError::Missing),
        [one] => one.trim(),
        _ => return Err(GripSigError::Ambiguous),
    };
    if token.is_empty() {
        return Err(GripSigError::Missing);
    }
    if token.len() > MAX_BYTES {
        return Err(GripSigError::Invalid);
    }
    let options = VerificationOptions {
        // The caller's clock, never the library's.
        artificial_time: Some(Duration::from_secs(now_unix)),
        time_tolerance: Some(Duration::from_secs(LEEWAY_S)),
        max_token_length: Some(MAX_BYTES),
        ..Default::default()
    };
    let claims = HS256Key::from_bytes(key.as_bytes())
        .verify_token::<NoCustomClaims>(token, Some(options))
        .map_err(|e| match e.downcast_ref::<jwt_simple::JWTError>() {
            Some(jwt_simple::JWTError::TokenHasExpired) => GripSigError::Expired,
            _ => GripSigError::Invalid,
        })?;
    if claims.expires_at.is_none() {
        return Err(GripSigError::NoExpiry);
    }
    Ok(())
}

//! The admin key guard on issuing and revoke-by-jti.

use constant_time_eq::constant_time_eq_32;
use hmac_sha256::Hash;

use crate::api::{ApiError, RequestParts};

/// Header carrying the admin key as an alternative to `Authorization: Bearer`.
const ADMIN_KEY_HEADER: &str = "x-admin-key";

/// Requires the admin key in `Authorization: Bearer <key>` or `X-Admin-Key` (exactly one).
/// An empty `admin_key` turns the guarded feature off: 503 with `disabled_reason`.
pub(crate) fn require_admin(
    parts: &RequestParts,
    admin_key: &str,
    disabled_reason: &'static str,
) -> Result<(), ApiError> {
    if admin_key.is_empty() {
        return Err(ApiError::Disabled(disabled_reason));
    }
    let presented: Vec<&str> = parts
        .header_values("authorization")
        .filter_map(earshot_auth::bearer_token)
        .chain(parts.header_values(ADMIN_KEY_HEADER).map(str::trim))
        .collect();
    match presented.as_slice() {
        [] => Err(ApiError::Unauthorized("admin key required".into())),
        [key] if key_matches(key, admin_key) => Ok(()),
        [_] => Err(ApiError::Unauthorized("invalid admin key".into())),
        _ => Err(ApiError::Unauthorized("ambiguous admin key".into())),
    }
}

/// Compares SHA-256 digests in constant time, so timing reveals neither content nor length.
fn key_matches(presented: &str, expected: &str) -> bool {
    constant_time_eq_32(
        &Hash::hash(presented.as_bytes()),
        &Hash::hash(expected.as_bytes()),
    )
}

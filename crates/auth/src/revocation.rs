//! The revocation list in the key-value store: `revoked:{jti}` → [`RevocationRecord`], kept until
//! the token could no longer verify anyway, plus `issued:{jti}` → [`IssuedRecord`] so an admin
//! can revoke by `jti` alone.

use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::CLOCK_LEEWAY_S;

/// Key-value key marking `jti` as revoked.
pub fn revocation_key(jti: &str) -> String {
    format!("revoked:{jti}")
}

/// Key-value key remembering an issued token's expiry.
pub fn issued_key(jti: &str) -> String {
    format!("issued:{jti}")
}

/// Stored under [`revocation_key`]: the revoked token's `exp`, after which the entry is useless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// The revoked token's `exp`, unix seconds.
    pub exp: u64,
}

impl RevocationRecord {
    /// Whether the record must still be honoured at `now_unix`: the token verifies until
    /// `exp + CLOCK_LEEWAY_S`, so the record lives exactly as long.
    pub fn in_force(&self, now_unix: u64) -> bool {
        now_unix <= self.exp.saturating_add(CLOCK_LEEWAY_S)
    }

    /// The stored bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of integers always serializes")
    }

    /// Reads a stored value (or its absence) at `now_unix`. An unreadable record fails closed.
    pub fn status(stored: Option<&[u8]>, now_unix: u64) -> RevocationStatus {
        let Some(bytes) = stored else {
            return RevocationStatus::NotRevoked;
        };
        match serde_json::from_slice::<RevocationRecord>(bytes) {
            Ok(record) if !record.in_force(now_unix) => RevocationStatus::Lapsed,
            _ => RevocationStatus::Revoked,
        }
    }
}

/// What the revocation list says about one `jti`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    /// No record: the token stands.
    NotRevoked,
    /// A record in force: reject with [`AuthError::Revoked`].
    Revoked,
    /// A record past the token's expiry: the token stands (it can no longer verify anyway) and
    /// the caller should delete the entry.
    Lapsed,
}

impl RevocationStatus {
    /// `Err(Revoked)` when revoked, else `Ok(())`.
    pub fn check(self) -> Result<(), AuthError> {
        match self {
            RevocationStatus::Revoked => Err(AuthError::Revoked),
            RevocationStatus::NotRevoked | RevocationStatus::Lapsed => Ok(()),
        }
    }
}

/// Stored under [`issued_key`] by the issuer until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// Subject the token was issued to.
    pub sub: String,
    /// The token's `exp`, unix seconds.
    pub exp: u64,
}

impl IssuedRecord {
    /// The stored bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of a string and an integer always serializes")
    }

    /// Parses stored bytes; `None` if unreadable.
    pub fn from_json(bytes: &[u8]) -> Option<IssuedRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_honoured_until_exp_plus_leeway_then_lapses() {
        let rec = RevocationRecord { exp: 1_000 };
        let bytes = rec.to_json();
        let status = |stored: Option<&[u8]>, now| RevocationRecord::status(stored, now);
        assert_eq!(status(None, 1_000), RevocationStatus::NotRevoked);
        assert_eq!(status(Some(&bytes), 999), RevocationStatus::Revoked);
        assert_eq!(
            status(Some(&bytes), 1_000 + CLOCK_LEEWAY_S),
            RevocationStatus::Revoked
        );
        assert_eq!(
            status(Some(&bytes), 1_001 + CLOCK_LEEWAY_S),
            RevocationStatus::Lapsed
        );
        assert_eq!(status(Some(b"garbage"), 0), RevocationStatus::Revoked);
        assert_eq!(RevocationStatus::Revoked.check(), Err(AuthError::Revoked));
        assert_eq!(RevocationStatus::Lapsed.check(), Ok(()));
        assert_eq!(revocation_key("abc"), "revoked:abc");
        assert_eq!(issued_key("abc"), "issued:abc");
    }
}

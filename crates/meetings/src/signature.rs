//! `Earshot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` — the
//! timestamped scheme Stripe and Svix use. The timestamp is signed with the body, so a
//! receiver that refuses timestamps older than [`DEFAULT_TOLERANCE_S`] (and remembers the
//! `Earshot-Delivery-Id`s it accepted within that window) refuses every replay.

/// The signature header.
pub const HEADER: &str = "earshot-signature";

/// The idempotency header: one id per delivery, the same on every retry.
pub const DELIVERY_ID_HEADER: &str = "earshot-delivery-id";

/// How old a signature a receiver should still accept, in seconds: Stripe's default,
/// five minutes, covers clock skew and a slow network, yet a captured request is useless
/// soon after.
pub const DEFAULT_TOLERANCE_S: u64 = 300;

/// The header value signing `body` at `unix_s` with `secret`.
pub fn sign(secret: &[u8], unix_s: u64, body: &[u8]) -> String {
    format!("t={unix_s},v1={}", hex(&mac(secret, unix_s, body)))
}

fn mac(secret: &[u8], unix_s: u64, body: &[u8]) -> [u8; 32] {
    let mut signed = format!("{unix_s}.").into_bytes();
    signed.extend_from_slice(body);
    hmac_sha256::HMAC::mac(&signed, secret)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=…,v1=…`.
    #[error("malformed signature header")]
    Malformed,
    /// Signed longer ago than the tolerance (or in the future beyond it): a replay.
    #[error("signature timestamp outside the tolerance")]
    Stale,
    /// No `v1` matches the body.
    #[error("signature mismatch")]
    Mismatch,
}

/// Checks `header` against `body` at `now_s`, for receivers written in Rust. Several `v1`
/// values (a secret being rotated) pass if any matches; the comparison is constant-time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now_s: u64, tolerance_s: u64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => candidates.push(v.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_s.abs_diff(t) > tolerance_s {
        return Err(SignatureError::Stale);
    }
    let expected = hex(&mac(secret, t, body));
    let matches = candidates.iter().any(|c| constant_time_eq(c.as_bytes(), expected.as_bytes()));
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_timestamp_with_the_body() {
        // HMAC-SHA256("key", "1.{}"), computed independently (Python's hmac module).
        assert_eq!(sign(b"key", 1, b"{}"), "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224");
        let h = sign(b"secret-secret-16", 1_000, b"body");
        assert_eq!(verify(b"secret-secret-16", &h, b"body", 1_000, 300), Ok(()));
        assert_eq!(verify(b"secret-secret-16", &h, b"body", 1_301, 300), Err(SignatureError::Stale));
        assert_eq!(verify(b"secret-secret-16", &h, b"bodY", 1_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other-secret-161", &h, b"body", 1_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"k", "v1=00", b"", 0, 300), Err(SignatureError::Malformed));
        assert_eq!(verify(b"k", "t=x,v1=00", b"", 0, 300), Err(SignatureError::Malformed));
    }
}

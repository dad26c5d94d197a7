//! A token's lifetime on a live socket: the refresh a client sends before its token's `exp`,
//! the answer, the `Meta-*` fields through which the components tell the relay when a
//! connection's token expires and which `jti` it holds, and the revocation notice every relay
//! listens for. The token is checked by the components (they hold the keys and the
//! revocation list); the relay only keeps the deadline and the `jti` index.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// `Meta-*` field (after the prefix) holding the connection's token `exp`, unix seconds.
/// The relay arms its expiry timer from it at OPEN and re-arms it on every change.
pub const META_TOKEN_EXP: &str = "token-exp";

/// `Meta-*` field (after the prefix) holding the connection's token `jti` (empty: the token
/// has none and cannot be revoked by id). The relay indexes connections by it.
pub const META_JTI: &str = "jti";

/// GRIP channel on which `POST /api/v1/auth/revoke` announces a revoked `jti`
/// ([`Revocation`]). Published like any channel message (Redis `earshot:grip:auth:revoked`,
/// or the relay's `/publish/` without Redis); every relay subscribes to it once. Meeting ids
/// cannot contain `:`, so no meeting channel can collide with it.
pub const REVOCATION_CHANNEL: &str = "auth:revoked";

/// 1008 reason at a live connection's token expiry.
pub const REASON_TOKEN_EXPIRED: &str = "auth failed: token expired";
/// 1008 reason when a connection's token is revoked while it is open.
pub const REASON_TOKEN_REVOKED: &str = "auth failed: token revoked";
/// 1008 reason (after `auth failed: `) for a refresh token of another subject.
pub const REASON_REFRESH_OTHER_SUBJECT: &str = "refresh for another subject";

/// `type` of the client's refresh message.
pub const REFRESH_TYPE: &str = "refresh";

/// A client's `{"type":"refresh","token":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRequest {
    /// The fresher token; `None` when the message carries no string `token`.
    pub token: Option<String>,
}

impl RefreshRequest {
    /// The refresh request in `text`, or `None` when `text` is not a refresh message (it is
    /// then the route's own business).
    pub fn parse(text: &str) -> Option<RefreshRequest> {
        // Cheap test first: audio routes see keepalives and handshakes far more often.
        if !text.contains(REFRESH_TYPE) {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let obj = value.as_object()?;
        if obj.get("type")?.as_str()? != REFRESH_TYPE {
            return None;
        }
        let token = obj.get("token").and_then(|t| t.as_str()).filter(|t| !t.is_empty()).map(str::to_owned);
        Some(RefreshRequest { token })
    }

    /// The JSON text a client sends.
    pub fn to_json(token: &str) -> String {
        serde_json::json!({ "type": REFRESH_TYPE, "token": token }).to_string()
    }
}

/// The answer to an accepted refresh: `{"type":"refreshed","exp":…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "refreshed")]
pub struct Refreshed {
    /// The connection's new expiry, unix seconds.
    pub exp: u64,
}

impl Refreshed {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("refreshed serializes")
    }

    /// Reads a server message, if it is this one.
    pub fn parse(text: &str) -> Option<Refreshed> {
        serde_json::from_str(text).ok()
    }
}

/// A revoked `jti`, as published on [`REVOCATION_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The revoked token id.
    pub jti: String,
    /// Until when the revocation matters (the token's `exp`, unix seconds): relays remember
    /// the `jti` that long, so the token cannot come back on them by OPEN or refresh even
    /// where the revocation list of the key-value store is not shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

impl Revocation {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("revocations serialize")
    }

    /// Reads a published revocation; `None` when malformed or without a `jti`.
    pub fn parse(text: &str) -> Option<Revocation> {
        serde_json::from_str::<Revocation>(text).ok().filter(|r| !r.jti.is_empty())
    }
}

/// The `exp` claim of a compact JWT, read WITHOUT verifying it: for a client planning when to
/// refresh its own token, never for a decision about someone else's.
pub fn unverified_exp(token: &str) -> Option<u64> {
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_messages_are_recognised_and_others_are_not() {
        assert_eq!(RefreshRequest::parse(r#"{"type":"refresh","token":"a.b.c"}"#), Some(RefreshRequest { token: Some("a.b.c".into()) }));
        assert_eq!(RefreshRequest::parse(&RefreshRequest::to_json("t")), Some(RefreshRequest { token: Some("t".into()) }));
        assert_eq!(RefreshRequest::parse(r#"{"type":"refresh"}"#), Some(RefreshRequest { token: None }));
        assert_eq!(RefreshRequest::parse(r#"{"type":"refresh","token":7}"#), Some(RefreshRequest { token: None }));
        assert_eq!(RefreshRequest::parse(r#"{"type":"refresh","token":""}"#), Some(RefreshRequest { token: None }));
        assert_eq!(RefreshRequest::parse(r#"{"type":"keepalive"}"#), None);
        assert_eq!(RefreshRequest::parse(r#"{"type":"keepalive","note":"refresh"}"#), None);
        assert_eq!(RefreshRequest::parse("refresh"), None);
    }

    #[test]
    fn refreshed_and_revocation_have_their_documented_shape() {
        assert_eq!(Refreshed { exp: 42 }.to_json(), r#"{"type":"refreshed","exp":42}"#);
        assert_eq!(Refreshed::parse(r#"{"type":"refreshed","exp":42}"#), Some(Refreshed { exp: 42 }));
        assert_eq!(Refreshed::parse(r#"{"type":"ack","frames":1,"bytes":2}"#), None);
        let r = Revocation { jti: "j1".into(), exp: None };
        assert_eq!(r.to_json(), r#"{"jti":"j1"}"#);
        assert_eq!(Revocation::parse(&r.to_json()), Some(r));
        let r = Revocation { jti: "j1".into(), exp: Some(9) };
        assert_eq!(r.to_json(), r#"{"jti":"j1","exp":9}"#);
        assert_eq!(Revocation::parse(&r.to_json()), Some(r));
        assert_eq!(Revocation::parse(r#"{"jti":""}"#), None);
        assert_eq!(Revocation::parse("nope"), None);
    }

    #[test]
    fn exp_is_read_from_the_claims_part() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"a","exp":1700000000}"#);
        assert_eq!(unverified_exp(&format!("eyJhbGciOiJIUzI1NiJ9.{claims}.sig")), Some(1_700_000_000));
        assert_eq!(unverified_exp("not-a-jwt"), None);
        assert_eq!(unverified_exp("a.!!!.c"), None);
    }
}

//! The closes the relay sends: a code and a reason, each one it originates predefined
//! here so no close is spelled out twice (DESIGN.md "Close codes" is the contract).
//! Closes the backend asks for pass through with the backend's own code and reason.

use std::borrow::Cow;

use earshot_protocol::close::{
    fit_reason, REASON_INVALID_UTF8, REASON_PROTOCOL_ERROR, REASON_SHUTTING_DOWN, REASON_SLOW_CONSUMER, REASON_TOO_BIG,
};
use earshot_protocol::lifetime::{REASON_TOKEN_EXPIRED, REASON_TOKEN_REVOKED};
use earshot_protocol::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Reason sent with 1011 when the backend cannot be reached or timed out.
pub(crate) const REASON_BACKEND_UNAVAILABLE: &str = "backend unavailable";
/// Reason sent with 1011 when the backend answered, but not with usable events
/// (a non-200 status, a malformed body) or its task died.
pub(crate) const REASON_BACKEND_FAILURE: &str = "backend failure";

/// Reason sent with 1011 when the backend answered 503: every component instance
/// stayed busy until the request's queue deadline passed (the host is overloaded).
pub(crate) const REASON_BACKEND_BUSY: &str = "backend busy: instance queue deadline passed";

/// A close frame the relay sends: code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Close {
    /// The numeric code; a `u16` rather than [`CloseCode`] because a GRIP backend may
    /// close with any code and the relay passes it through unchanged.
    code: u16,
    reason: Cow<'static, str>,
}

impl Close {
    /// A close with one of Earshot's codes and a fixed reason.
    fn fixed(code: CloseCode, reason: &'static str) -> Self {
        Close { code: code.code(), reason: Cow::Borrowed(reason) }
    }

    /// 1000, no reason: the backend ended the connection with DISCONNECT.
    pub(crate) fn normal() -> Self {
        Close::fixed(CloseCode::Normal, "")
    }

    /// 1001 `relay shutting down`: the relay is stopping; reconnect.
    pub(crate) fn shutting_down() -> Self {
        Close::fixed(CloseCode::GoingAway, REASON_SHUTTING_DOWN)
    }

    /// 4008 `slow consumer`: the connection's send queue is full.
    pub(crate) fn slow_consumer() -> Self {
        Close::fixed(CloseCode::SlowConsumer, REASON_SLOW_CONSUMER)
    }

    /// 1011 `backend unavailable`: the backend could not be reached.
    pub(crate) fn backend_unavailable() -> Self {
        Close::fixed(CloseCode::InternalError, REASON_BACKEND_UNAVAILABLE)
    }

    /// 1011 `backend failure`: the backend answered with something unusable.
    pub(crate) fn backend_failure() -> Self {
        Close::fixed(CloseCode::InternalError, REASON_BACKEND_FAILURE)
    }

    /// 1011 `backend busy: instance queue deadline passed`: the backend answered 503.
    pub(crate) fn backend_busy() -> Self {
        Close::fixed(CloseCode::InternalError, REASON_BACKEND_BUSY)
    }

    /// 1008 `auth failed: token expired`: the connection's token reached its `exp`
    /// without a refresh.
    pub(crate) fn token_expired() -> Self {
        Close::fixed(CloseCode::PolicyViolation, REASON_TOKEN_EXPIRED)
    }

    /// 1008 `auth failed: token revoked`: the connection's `jti` was revoked.
    pub(crate) fn token_revoked() -> Self {
        Close::fixed(CloseCode::PolicyViolation, REASON_TOKEN_REVOKED)
    }

    /// 1009 `frame too large`: a client message over the relay's cap.
    pub(crate) fn too_big() -> Self {
        Close::fixed(CloseCode::TooBig, REASON_TOO_BIG)
    }

    /// 1007 `invalid UTF-8`: a text frame that is not UTF-8.
    pub(crate) fn invalid_utf8() -> Self {
        Close::fixed(CloseCode::InvalidPayload, REASON_INVALID_UTF8)
    }

    /// 1002 `protocol error`: the client broke RFC 6455 framing.
    pub(crate) fn protocol_error() -> Self {
        Close::fixed(CloseCode::ProtocolError, REASON_PROTOCOL_ERROR)
    }

    /// The close a backend's CLOSE event asks for (no code: 1000, as RFC 6455 reads an
    /// empty close).
    pub(crate) fn from_backend(code: Option<u16>, reason: String) -> Self {
        Close { code: code.unwrap_or(CloseCode::Normal.code()), reason: Cow::Owned(reason) }
    }

    /// The numeric code.
    pub(crate) fn code(&self) -> u16 {
        self.code
    }

    /// The reason, as given (the frame carries it truncated to fit).
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether this is a slow-consumer close, whose backlog must not be flushed.
    pub(crate) fn is_slow_consumer(&self) -> bool {
        self.code == CloseCode::SlowConsumer.code()
    }

    /// The close frame on the wire.
    pub(crate) fn to_message(&self) -> Message {
        Message::Close(Some(CloseFrame {
            code: WsCloseCode::from(self.code),
            reason: fit_reason(&self.reason).to_owned().into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire contract of README.md's close-code table.
    #[test]
    fn predefined_closes_match_the_contract() {
        let wire = |c: Close| (c.code(), c.reason().to_owned());
        assert_eq!(wire(Close::normal()), (1000, String::new()));
        assert_eq!(wire(Close::shutting_down()), (1001, "relay shutting down".into()));
        assert_eq!(wire(Close::protocol_error()), (1002, "protocol error".into()));
        assert_eq!(wire(Close::invalid_utf8()), (1007, "invalid UTF-8".into()));
        assert_eq!(wire(Close::token_expired()), (1008, "auth failed: token expired".into()));
        assert_eq!(wire(Close::token_revoked()), (1008, "auth failed: token revoked".into()));
        assert_eq!(wire(Close::too_big()), (1009, "frame too large".into()));
        assert_eq!(wire(Close::backend_unavailable()), (1011, "backend unavailable".into()));
        assert_eq!(wire(Close::backend_failure()), (1011, "backend failure".into()));
        assert_eq!(wire(Close::backend_busy()), (1011, "backend busy: instance queue deadline passed".into()));
        assert_eq!(wire(Close::slow_consumer()), (4008, "slow consumer".into()));
        assert!(Close::slow_consumer().is_slow_consumer());
        assert_eq!(wire(Close::from_backend(None, String::new())), (1000, String::new()));
        assert_eq!(wire(Close::from_backend(Some(4321), "custom".into())), (4321, "custom".into()));
    }

    #[test]
    fn frames_carry_a_fitted_reason() {
        let Message::Close(Some(frame)) = Close::from_backend(Some(1008), "é".repeat(100)).to_message() else { panic!() };
        assert_eq!(u16::from(frame.code), 1008);
        assert!(frame.reason.len() <= earshot_protocol::close::MAX_REASON_BYTES);
    }
}

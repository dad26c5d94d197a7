//! WebSocket close codes (DESIGN.md "Close codes"), each with its documented reason.

/// A close code Earshot sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal end, idle timeout.
    Normal,
    /// 1001: relay shutting down; reconnect.
    GoingAway,
    /// 1002: protocol violation (binary before handshake, bad handshake).
    ProtocolError,
    /// 1003: unsupported data (binary on a subscriber route, unsupported encoding).
    Unsupported,
    /// 1007: a text message (or close reason) that is not UTF-8 (RFC 6455 §8.1).
    InvalidPayload,
    /// 1008: auth failed.
    PolicyViolation,
    /// 1009: frame larger than `max_frame_bytes`.
    TooBig,
    /// 1011: backend or Redis failure; retry with backoff.
    InternalError,
    /// 1013: rate limited; try again later.
    TryAgainLater,
    /// 4008: slow consumer, the connection's send queue is full.
    SlowConsumer,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TryAgainLater => 1013,
            CloseCode::SlowConsumer => 4008,
        }
    }

    /// The code for a number, if Earshot uses it.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::GoingAway,
            1002 => CloseCode::ProtocolError,
            1003 => CloseCode::Unsupported,
            1007 => CloseCode::InvalidPayload,
            1008 => CloseCode::PolicyViolation,
            1009 => CloseCode::TooBig,
            1011 => CloseCode::InternalError,
            1013 => CloseCode::TryAgainLater,
            4008 => CloseCode::SlowConsumer,
            _ => return None,
        })
    }
}

/// Reason sent with 1001.
pub const REASON_SHUTTING_DOWN: &str = "relay shutting down";
/// Reason sent with 1013.
pub const REASON_RATE_LIMITED: &str = "Try again later";
/// Reason sent with 4008.
pub const REASON_SLOW_CONSUMER: &str = "slow consumer";
/// Reason sent with 1002 when no handshake arrived in time.
pub const REASON_HANDSHAKE_TIMEOUT: &str = "handshake timeout";
/// Reason sent with 1000 when the stream went idle.
pub const REASON_IDLE: &str = "idle";
/// Reason sent with 1009.
pub const REASON_TOO_BIG: &str = "frame too large";
/// Reason sent with 1007 for a text message or close reason that is not UTF-8.
pub const REASON_INVALID_UTF8: &str = "invalid UTF-8";
/// Reason sent with 1002 when the client breaks RFC 6455 framing (an unmasked frame,
/// reserved bits or opcodes, a fragmented or oversized control frame, a stray
/// continuation): the relay's WebSocket layer refuses it before any component sees it.
pub const REASON_PROTOCOL_ERROR: &str = "protocol error";
/// Prefix of every 1008 reason.
pub const AUTH_FAILED_PREFIX: &str = "auth failed: ";
/// Prefix of the 1002 reason for a route with an invalid meeting id or source
/// (`bad request: invalid meeting id`).
pub const BAD_REQUEST_PREFIX: &str = "bad request: ";
/// Reason sent with 1002 for audio before the handshake.
pub const REASON_BINARY_BEFORE_HANDSHAKE: &str = "binary before handshake";
/// Reason sent with 1002 for a second handshake.
pub const REASON_DUPLICATE_HANDSHAKE: &str = "duplicate handshake";
/// Reason sent with 1000 after `close_stream`.
pub const REASON_STREAM_CLOSED: &str = "stream closed";
/// Reason sent with 1011 when audio cannot be appended (Redis absent or failing).
pub const REASON_AUDIO_STORE_UNAVAILABLE: &str = "audio store unavailable";
/// Reason sent with 1011 when the configured Redis cannot run the rate limiter.
pub const REASON_RATE_LIMITER_UNAVAILABLE: &str = "rate limiter unavailable";
/// Reason (after [`BAD_REQUEST_PREFIX`]) sent with 1002 when `?since=` is not a stream
/// offset (`bad request: invalid since`).
pub const REASON_INVALID_SINCE: &str = "invalid since";
/// Reason sent with 1011 when the configured Redis cannot replay transcript history.
pub const REASON_HISTORY_UNAVAILABLE: &str = "transcript history unavailable";
/// Reason sent with 1011 when the meeting's state cannot be read for the snapshot.
pub const REASON_MEETING_STATE_UNAVAILABLE: &str = "meeting state unavailable";
/// Reason sent with 1003 for a text message other than keepalive on a subscriber route.
pub const REASON_SUBSCRIBER_TEXT: &str = "subscribers send no messages";
/// Reason sent with 1003 for a binary message on a subscriber route.
pub const REASON_SUBSCRIBER_BINARY: &str = "binary not accepted on subscriber routes";

/// Longest close reason in bytes: a close frame's payload is at most 125 bytes,
/// two of which carry the code.
pub const MAX_REASON_BYTES: usize = 123;

/// Truncates `reason` to fit a close frame, on a character boundary.
pub fn fit_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in [
            CloseCode::Normal,
            CloseCode::GoingAway,
            CloseCode::ProtocolError,
            CloseCode::Unsupported,
            CloseCode::InvalidPayload,
            CloseCode::PolicyViolation,
            CloseCode::TooBig,
            CloseCode::InternalError,
            CloseCode::TryAgainLater,
            CloseCode::SlowConsumer,
        ] {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(1006), None);
    }

    #[test]
    fn reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let fitted = fit_reason(&long);
        assert!(fitted.len() <= MAX_REASON_BYTES);
        assert!(long.starts_with(fitted));
    }
}

//! The ingest protocol (DESIGN.md "Ingest protocol"): what a capture agent sends and
//! what it gets back.

use serde::{Deserialize, Serialize};

use crate::close::CloseCode;

/// The only protocol version.
pub const PROTOCOL_VERSION: u32 = 1;
/// The only PCM encoding.
pub const ENCODING_PCM_S16LE: &str = "pcm_s16le";
/// Sample rates a capture agent may declare, in Hz (the common telephony to studio rates).
pub const SAMPLE_RATES: [u32; 6] = [8_000, 16_000, 24_000, 32_000, 44_100, 48_000];
/// Most channels per stream (mono or stereo).
pub const MAX_CHANNELS: u32 = 2;

/// The handshake's audio format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handshake {
    /// Protocol version (1).
    pub protocol: u32,
    /// PCM encoding (`pcm_s16le`).
    pub encoding: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u32,
}

/// A text message from a capture agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Opens the stream.
    Handshake(Handshake),
    /// Keeps an idle stream open.
    Keepalive,
    /// Ends the stream cleanly.
    CloseStream,
}

/// Why a client message was refused, with the close code it earns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not a JSON object with a string `type`.
    #[error("malformed message")]
    Malformed,
    /// A `type` this protocol does not define.
    #[error("unknown message type")]
    UnknownType,
    /// A handshake with missing, extra or wrongly typed fields.
    #[error("bad handshake: {0}")]
    BadHandshake(String),
    /// A handshake for another protocol version.
    #[error("unsupported protocol version")]
    UnsupportedProtocol,
    /// A format Earshot does not take.
    #[error("unsupported audio format: {0}")]
    UnsupportedFormat(String),
}

impl MessageError {
    /// The close code DESIGN.md assigns (1003 for unsupported data, else 1002).
    pub fn close_code(&self) -> CloseCode {
        match self {
            MessageError::UnsupportedFormat(_) => CloseCode::Unsupported,
            _ => CloseCode::ProtocolError,
        }
    }
}

impl ClientMessage {
    /// Parses and validates one text message.
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| MessageError::Malformed)?;
        let obj = value.as_object().ok_or(MessageError::Malformed)?;
        let kind = obj.get("type").and_then(|t| t.as_str()).ok_or(MessageError::Malformed)?;
        match kind {
            "handshake" => {
                let mut fields = obj.clone();
                fields.remove("type");
                let hs: Handshake = serde_json::from_value(serde_json::Value::Object(fields))
                    .map_err(|e| MessageError::BadHandshake(short(&e.to_string())))?;
                hs.validate()?;
                Ok(ClientMessage::Handshake(hs))
            }
            "keepalive" => Ok(ClientMessage::Keepalive),
            "close_stream" => Ok(ClientMessage::CloseStream),
            _ => Err(MessageError::UnknownType),
        }
    }
}

impl ClientMessage {
    /// The JSON text (what a capture agent sends; [`ClientMessage::parse`] reads it back).
    pub fn to_json(&self) -> String {
        match self {
            ClientMessage::Handshake(h) => {
                let mut v = serde_json::to_value(h).expect("a handshake always serializes");
                if let serde_json::Value::Object(fields) = &mut v {
                    fields.insert("type".into(), "handshake".into());
                }
                v.to_string()
            }
            ClientMessage::Keepalive => serde_json::json!({"type": "keepalive"}).to_string(),
            ClientMessage::CloseStream => serde_json::json!({"type": "close_stream"}).to_string(),
        }
    }
}

fn short(s: &str) -> String {
    crate::close::fit_reason(s).chars().take(80).collect()
}

impl Handshake {
    /// Checks the declared format against what Earshot takes.
    pub fn validate(&self) -> Result<(), MessageError> {
        if self.protocol != PROTOCOL_VERSION {
            return Err(MessageError::UnsupportedProtocol);
        }
        if self.encoding != ENCODING_PCM_S16LE {
            return Err(MessageError::UnsupportedFormat("encoding".into()));
        }
        if !SAMPLE_RATES.contains(&self.sample_rate) {
            return Err(MessageError::UnsupportedFormat("sample_rate".into()));
        }
        if !(1..=MAX_CHANNELS).contains(&self.channels) {
            return Err(MessageError::UnsupportedFormat("channels".into()));
        }
        Ok(())
    }

    /// Bytes of one sample frame (all channels).
    pub fn bytes_per_sample_frame(&self) -> u32 {
        2 * self.channels
    }
}

/// A text message from Earshot to a capture agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The handshake is accepted.
    HandshakeAck {
        /// This WebSocket connection.
        connection_id: String,
        /// This audio session (one per handshake).
        session_id: String,
        /// Largest binary frame accepted.
        max_frame_bytes: usize,
    },
    /// Frames and bytes durably appended so far.
    Ack {
        /// Frames appended.
        frames: u64,
        /// Bytes appended.
        bytes: u64,
    },
    /// The stream is closed; final totals.
    Closed {
        /// Frames appended.
        frames: u64,
        /// Bytes appended.
        bytes: u64,
    },
}

impl ServerMessage {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_handshake() {
        let m = ClientMessage::parse(r#"{"type":"handshake","protocol":1,"encoding":"pcm_s16le","sample_rate":16000,"channels":1}"#);
        assert!(matches!(m, Ok(ClientMessage::Handshake(h)) if h.sample_rate == 16000));
        assert_eq!(ClientMessage::parse(r#"{"type":"keepalive"}"#), Ok(ClientMessage::Keepalive));
        assert_eq!(ClientMessage::parse(r#"{"type":"close_stream"}"#), Ok(ClientMessage::CloseStream));
    }

    #[test]
    fn refuses_bad_messages_with_the_right_code() {
        let cases = [
            ("not json", CloseCode::ProtocolError),
            ("[1]", CloseCode::ProtocolError),
            (r#"{"type":"dance"}"#, CloseCode::ProtocolError),
            (r#"{"type":"handshake"}"#, CloseCode::ProtocolError),
            (r#"{"type":"handshake","protocol":"1","encoding":"pcm_s16le","sample_rate":16000,"channels":1}"#, CloseCode::ProtocolError),
            (r#"{"type":"handshake","protocol":2,"encoding":"pcm_s16le","sample_rate":16000,"channels":1}"#, CloseCode::ProtocolError),
            (r#"{"type":"handshake","protocol":1,"encoding":"opus","sample_rate":16000,"channels":1}"#, CloseCode::Unsupported),
            (r#"{"type":"handshake","protocol":1,"encoding":"pcm_s16le","sample_rate":12345,"channels":1}"#, CloseCode::Unsupported),
            (r#"{"type":"handshake","protocol":1,"encoding":"pcm_s16le","sample_rate":16000,"channels":9}"#, CloseCode::Unsupported),
        ];
        for (text, code) in cases {
            assert_eq!(ClientMessage::parse(text).unwrap_err().close_code(), code, "{text}");
        }
    }

    #[test]
    fn client_messages_round_trip() {
        let hs = Handshake { protocol: 1, encoding: ENCODING_PCM_S16LE.into(), sample_rate: 48_000, channels: 2 };
        for m in [ClientMessage::Handshake(hs), ClientMessage::Keepalive, ClientMessage::CloseStream] {
            assert_eq!(ClientMessage::parse(&m.to_json()), Ok(m.clone()), "{}", m.to_json());
        }
        assert_eq!(ClientMessage::Keepalive.to_json(), r#"{"type":"keepalive"}"#);
        assert_eq!(ClientMessage::CloseStream.to_json(), r#"{"type":"close_stream"}"#);
    }

    #[test]
    fn server_messages_have_the_design_shape() {
        let ack = ServerMessage::Ack { frames: 3, bytes: 960 }.to_json();
        assert_eq!(ack, r#"{"type":"ack","frames":3,"bytes":960}"#);
        let hs = ServerMessage::HandshakeAck { connection_id: "c".into(), session_id: "s".into(), max_frame_bytes: 10 }.to_json();
        assert_eq!(hs, r#"{"type":"handshake_ack","connection_id":"c","session_id":"s","max_frame_bytes":10}"#);
    }
}

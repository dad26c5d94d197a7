//! One ingest session over an open WebSocket (DESIGN.md "Ingest protocol"): handshake,
//! binary PCM frames, keepalives, acks, `close_stream` → `closed` → close 1000. Every wait
//! is bounded; every close the server sends becomes [`AgentError::Closed`] with its code
//! and reason. Generic over the socket, so the CLI, the bench (its own source-address
//! dialer) and the tests all drive the same client.

use std::time::Duration;

use earshot_protocol::close::CloseCode;
use earshot_protocol::ingest::{ClientMessage, Handshake, ServerMessage, ENCODING_PCM_S16LE, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::AgentError;
use crate::refresh::{Refresher, TokenSource};
use crate::wav::PcmFormat;
use earshot_protocol::lifetime::{RefreshRequest, Refreshed};

/// Longest wait for `handshake_ack`: the server's own handshake timeout is 5 s, so by
/// 10 s it has either answered or closed; the rest covers a cold backend.
pub const HANDSHAKE_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence from the server after `close_stream` before `closed`: the server may
/// still be appending a backlog (a stream sent as fast as possible), so every ack
/// restarts this wait.
pub const CLOSED_QUIET_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the close frame after `closed`.
pub const CLOSE_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed send, how long to look for the close frame that explains it.
const CLOSE_EXPLAIN_GRACE: Duration = Duration::from_secs(2);
/// Longest wait to hand our close reply to the socket after the server's close frame: a
/// local write, so a second means the peer is gone and the reply does not matter.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// The close code of a close frame that carries none (RFC 6455 §7.1.5).
const NO_STATUS_CODE: u16 = 1005;

/// Frames and bytes, as the protocol counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Binary frames.
    pub frames: u64,
    /// Bytes of PCM in them.
    pub bytes: u64,
}

impl Totals {
    /// These totals plus one frame of `len` bytes.
    pub fn plus_frame(self, len: usize) -> Totals {
        Totals { frames: self.frames + 1, bytes: self.bytes + len as u64 }
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} frames / {} bytes", self.frames, self.bytes)
    }
}

/// What `handshake_ack` said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The WebSocket connection's id (logs, presence events).
    pub connection_id: String,
    /// This audio session's id (one per handshake).
    pub session_id: String,
    /// Largest binary frame the server takes.
    pub max_frame_bytes: usize,
}

/// A server message after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Frames and bytes durably stored so far.
    Ack(Totals),
    /// The answer to `close_stream`: the final totals.
    Closed(Totals),
}

/// What one read from the socket yielded.
enum Incoming {
    Server(ServerMessage),
    Close { code: u16, reason: String },
    /// The connection failed or ended without a close frame.
    Lost(String),
}

/// A handshaken ingest stream.
pub struct Session<S> {
    ws: WebSocketStream<S>,
    accepted: Accepted,
    format: PcmFormat,
    sent: Totals,
    acked: Totals,
    /// Where fresher tokens come from, when the stream refreshes its own.
    refresher: Option<Refresher>,
    /// The `exp` of the last `refreshed` the server sent.
    refreshed: Option<u64>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Sends the handshake for `format` on `ws` and waits (at most
    /// [`HANDSHAKE_ACK_TIMEOUT`]) for `handshake_ack`.
    pub async fn handshake(ws: WebSocketStream<S>, format: PcmFormat) -> Result<Self, AgentError> {
        let mut session = Session {
            ws,
            accepted: Accepted::default(),
            format,
            sent: Totals::default(),
            acked: Totals::default(),
            refresher: None,
            refreshed: None,
        };
        let handshake = ClientMessage::Handshake(Handshake {
            protocol: PROTOCOL_VERSION,
            encoding: ENCODING_PCM_S16LE.to_owned(),
            sample_rate: format.sample_rate,
            channels: u32::from(format.channels),
        });
        session.send(Message::text(handshake.to_json())).await?;
        let deadline = tokio::time::Instant::now() + HANDSHAKE_ACK_TIMEOUT;
        loop {
            let incoming = tokio::time::timeout_at(deadline, session.recv())
                .await
                .map_err(|_| AgentError::HandshakeAckTimeout { after: HANDSHAKE_ACK_TIMEOUT })?;
            match incoming {
                Incoming::Server(ServerMessage::HandshakeAck { connection_id, session_id, max_frame_bytes }) => {
                    session.accepted = Accepted { connection_id, session_id, max_frame_bytes };
                    return Ok(session);
                }
                Incoming::Server(_) => {}
                Incoming::Close { code, reason } => return Err(AgentError::Closed { code, reason, sent: session.sent }),
                Incoming::Lost(e) => return Err(AgentError::Lost(format!("before handshake_ack: {e}"))),
            }
        }
    }

    /// What the server's `handshake_ack` said.
    pub fn accepted(&self) -> &Accepted {
        &self.accepted
    }

    /// The format the handshake declared.
    pub fn format(&self) -> PcmFormat {
        self.format
    }

    /// Frames and bytes sent so far.
    pub fn sent(&self) -> Totals {
        self.sent
    }

    /// The highest totals the server acknowledged so far (acks and `closed`).
    pub fn acked(&self) -> Totals {
        self.acked
    }

    /// Sends one binary frame of PCM (at most the server's `max_frame_bytes`).
    pub async fn send_frame(&mut self, pcm: Vec<u8>) -> Result<(), AgentError> {
        let max_size = self.accepted.max_frame_bytes;
        if pcm.len() > max_size {
            return Err(AgentError::FrameTooLarge { size: pcm.len(), max_size });
        }
        let len = pcm.len();
        self.send(Message::binary(pcm)).await?;
        self.sent = self.sent.plus_frame(len);
        Ok(())
    }

    /// Sends `{"type":"keepalive"}`, which holds a quiet stream open past the idle timeout.
    pub async fn keepalive(&mut self) -> Result<(), AgentError> {
        self.send(Message::text(ClientMessage::Keepalive.to_json())).await
    }

    /// Refreshes the connection's token `current` from `source` before it expires (see
    /// [`crate::refresh`]); [`crate::stream_input`] does it on time. `false` when `current`
    /// has no readable `exp`, so there is nothing to plan by.
    pub fn set_token_source(&mut self, current: &str, source: Box<dyn TokenSource>) -> bool {
        self.refresher = Refresher::new(current, source);
        self.refresher.is_some()
    }

    /// When the next refresh is due, if the session refreshes its token.
    pub fn refresh_due(&self) -> Option<tokio::time::Instant> {
        self.refresher.as_ref().map(Refresher::due)
    }

    /// The `exp` the server last confirmed with `refreshed`.
    pub fn refreshed_exp(&self) -> Option<u64> {
        self.refreshed
    }

    /// Sends `{"type":"refresh","token":…}`; the server answers `refreshed` (seen in
    /// [`Session::refreshed_exp`]) or closes 1008 with the reason.
    pub async fn refresh(&mut self, token: &str) -> Result<(), AgentError> {
        self.send(Message::text(RefreshRequest::to_json(token))).await
    }

    /// Asks the token source for a fresher token and sends it. `Ok(Ok(exp))`: sent, the new
    /// token expires at `exp`; `Ok(Err(why))`: the source failed (asked again shortly, the
    /// stream goes on until the current token's `exp`); `Err`: the socket failed.
    pub async fn refresh_from_source(&mut self) -> Result<Result<u64, String>, AgentError> {
        let Some(refresher) = self.refresher.as_mut() else {
            return Ok(Err("no token source".into()));
        };
        match refresher.next_token().await {
            Ok(token) => {
                let exp = refresher.exp();
                self.refresh(&token).await?;
                Ok(Ok(exp))
            }
            Err(why) => Ok(Err(why)),
        }
    }

    /// Sends `{"type":"close_stream"}` only; [`Session::wait_closed`] then waits for the
    /// answer (or read it with [`Session::next_event`]).
    pub async fn request_close(&mut self) -> Result<(), AgentError> {
        self.send(Message::text(ClientMessage::CloseStream.to_json())).await
    }

    /// The next ack or `closed`, without a time limit (select it against your own timers;
    /// it is cancel-safe). A close frame is [`AgentError::Closed`].
    pub async fn next_event(&mut self) -> Result<Event, AgentError> {
        loop {
            match self.recv().await {
                Incoming::Server(ServerMessage::Ack { frames, bytes }) => return Ok(Event::Ack(Totals { frames, bytes })),
                Incoming::Server(ServerMessage::Closed { frames, bytes }) => return Ok(Event::Closed(Totals { frames, bytes })),
                Incoming::Server(ServerMessage::HandshakeAck { .. }) => {}
                Incoming::Close { code, reason } => return Err(AgentError::Closed { code, reason, sent: self.sent }),
                Incoming::Lost(e) => return Err(AgentError::Lost(e)),
            }
        }
    }

    /// Waits for `closed` after `close_stream`; acks on the way restart the
    /// [`CLOSED_QUIET_TIMEOUT`] wait. Returns the totals the server stored.
    pub async fn wait_closed(&mut self) -> Result<Totals, AgentError> {
        loop {
            let event = tokio::time::timeout(CLOSED_QUIET_TIMEOUT, self.next_event())
                .await
                .map_err(|_| AgentError::ClosedTimeout { after: CLOSED_QUIET_TIMEOUT })?;
            if let Event::Closed(stored) = event? {
                return Ok(stored);
            }
        }
    }

    /// After `closed` (totals `stored`): waits for the close frame, which must be 1000.
    pub async fn wait_close_frame(mut self, stored: Totals) -> Result<(), AgentError> {
        let close = async {
            loop {
                match self.recv().await {
                    Incoming::Close { code, reason } => return Ok((code, reason)),
                    Incoming::Lost(e) => return Err(e),
                    Incoming::Server(_) => {}
                }
            }
        };
        match tokio::time::timeout(CLOSE_FRAME_TIMEOUT, close).await {
            Ok(Ok((code, _))) if code == CloseCode::Normal.code() => Ok(()),
            Ok(Ok((code, reason))) => Err(AgentError::Closed { code, reason, sent: self.sent }),
            Ok(Err(e)) => Err(AgentError::Lost(format!("after `closed`: {e}"))),
            Err(_) => {
                let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, self.ws.close(None)).await;
                Err(AgentError::CloseFrameTimeout { stored, after: CLOSE_FRAME_TIMEOUT })
            }
        }
    }

    /// Ends the stream as the protocol says: `close_stream`, `closed`, close 1000.
    /// Returns the totals the server stored (compare them with [`Session::sent`]).
    pub async fn close_stream(mut self) -> Result<Totals, AgentError> {
        self.request_close().await?;
        let stored = self.wait_closed().await?;
        self.wait_close_frame(stored).await?;
        Ok(stored)
    }

    /// The WebSocket itself, for tests that go on beyond the protocol.
    pub fn into_inner(self) -> WebSocketStream<S> {
        self.ws
    }

    /// The next server message, close frame or loss; other text and control frames are
    /// skipped. Cancel-safe: the only await is the socket's own `next`.
    async fn recv(&mut self) -> Incoming {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Some(Refreshed { exp }) = Refreshed::parse(&text) {
                        self.refreshed = Some(exp);
                        if let Some(r) = self.refresher.as_mut() {
                            r.confirmed(exp);
                        }
                        continue;
                    }
                    // Text that is not a message of this protocol is not ours to judge.
                    if let Ok(m) = serde_json::from_str::<ServerMessage>(&text) {
                        if let ServerMessage::Ack { frames, bytes } | ServerMessage::Closed { frames, bytes } = m {
                            self.acked = Totals { frames, bytes };
                        }
                        return Incoming::Server(m);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite queued the close reply; flush it so the server sees it.
                    let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, self.ws.flush()).await;
                    return match frame {
                        Some(CloseFrame { code, reason }) => Incoming::Close { code: u16::from(code), reason: reason.to_string() },
                        None => Incoming::Close { code: NO_STATUS_CODE, reason: String::new() },
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Incoming::Lost(e.to_string()),
                None => return Incoming::Lost("connection ended without a close frame".into()),
            }
        }
    }

    /// Sends one message; if that fails, the close frame that explains it (if any) is
    /// the error.
    async fn send(&mut self, message: Message) -> Result<(), AgentError> {
        let Err(e) = self.ws.send(message).await else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + CLOSE_EXPLAIN_GRACE;
        while let Ok(incoming) = tokio::time::timeout_at(deadline, self.recv()).await {
            match incoming {
                Incoming::Close { code, reason } => return Err(AgentError::Closed { code, reason, sent: self.sent }),
                Incoming::Lost(_) => break,
                Incoming::Server(_) => {}
            }
        }
        Err(AgentError::Lost(format!("sending failed: {e}")))
    }
}

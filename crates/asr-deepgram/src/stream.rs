//! One session's link to Deepgram, run as a task on the session's own thread: sends the
//! queued audio, keep-alives while none flows, `Finalize` then `CloseStream` at the end;
//! turns `Results` into hypotheses; on a dropped socket (or close 1011, `NET-0001`)
//! reconnects with backoff and replays the audio since the last final.
//!
//! Timeline: Deepgram times are seconds from the socket's first audio byte. The task keeps
//! the audio since the last final (`unsettled`, starting at stream byte `unsettled_base`,
//! counted from the session's first pushed byte). A new socket starts by replaying
//! `unsettled`, so its time zero is `unsettled_base`: a socket's times plus
//! `socket_base` plus `SessionSpec::start_ms` are times into the source's stream.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use earshot_asr_engine::{
    EngineError, Hypothesis, SessionSpec, Word, BYTES_PER_SAMPLE, SAMPLE_RATE_HZ,
};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};
use url::Url;

use crate::config::{DeepgramConfig, MAX_AUDIO_FRAME_MS};
use crate::wire::{self, Results, ServerMessage};

/// Bytes of one second of input audio.
const BYTES_PER_SECOND: u64 = SAMPLE_RATE_HZ as u64 * BYTES_PER_SAMPLE as u64;

/// How long a socket that failed on a send is still read, in ms: results Deepgram sent
/// before the drop may still sit in the receive buffer, and a final read there need not be
/// replayed (nor published twice).
const DRAIN_AFTER_DROP: Duration = Duration::from_millis(200);

/// How long the closing handshake with Deepgram may take after its last message.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// What the session asks of its task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Audio to send, in stream order (never empty).
    Audio(Vec<u8>),
    /// The stream ended: send the rest, `Finalize`, `CloseStream`, wait for the close.
    Finish,
}

/// What the task tells its session.
#[derive(Debug)]
pub(crate) enum Event {
    /// A hypothesis, in stream order.
    Hypothesis(Hypothesis),
    /// A final covered the stream up to this position, in ms into the source's stream.
    Settled(u64),
    /// The session failed; nothing more follows.
    Failed(EngineError),
    /// `flush` is done: Deepgram sent its last results and closed.
    Finished,
}

/// Shared by every session of one engine.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The settings.
    pub(crate) config: DeepgramConfig,
    /// `/v1/listen` with its query.
    pub(crate) url: Url,
    /// TLS settings for `wss://` (webpki roots, ring), `None` for `ws://`.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How one socket's life ended.
enum Ending {
    /// Deepgram closed after `CloseStream`: the stream is done.
    Finished,
    /// The session was dropped without `flush`.
    Abandoned,
    /// The socket dropped or Deepgram closed it asking for a retry: reconnect.
    Dropped(String),
    /// The session cannot go on.
    Fatal(EngineError),
}

/// The task's state (one per session).
pub(crate) struct Stream {
    shared: Arc<Shared>,
    spec: SessionSpec,
    commands: mpsc::UnboundedReceiver<Command>,
    events: std_mpsc::Sender<Event>,
    /// Audio since the last final, replayed on a new socket.
    unsettled: Vec<u8>,
    /// Stream byte (from the session's first byte) of `unsettled[0]`.
    unsettled_base: u64,
    /// Bytes of `unsettled` already sent on the current socket.
    sent: usize,
    /// Stream byte at which the current socket's time zero lies.
    socket_base: u64,
    /// `flush` was asked for.
    finishing: bool,
    /// A `Results` arrived on the current socket (resets the reconnect budget).
    progressed: bool,
}

impl Stream {
    /// A task for `spec` that reads `commands` and reports on `events`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        spec: SessionSpec,
        commands: mpsc::UnboundedReceiver<Command>,
        events: std_mpsc::Sender<Event>,
    ) -> Self {
        Stream {
            shared,
            spec,
            commands,
            events,
            unsettled: Vec::new(),
            unsettled_base: 0,
            sent: 0,
            socket_base: 0,
            finishing: false,
            progressed: false,
        }
    }

    /// Connects once (the outcome goes to `ready`: a refused key fails `open` right away),
    /// then serves the session until it finishes, fails or is dropped.
    pub(crate) async fn run(mut self, ready: std_mpsc::Sender<Result<(), EngineError>>) {
        let mut socket = match connect(&self.shared, &self.spec).await {
            Ok(socket) => {
                let _ = ready.send(Ok(()));
                socket
            }
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let mut attempts = 0u32;
        loop {
            self.progressed = false;
            let reason = match self.drive(socket).await {
                Ending::Finished => {
                    info!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, "deepgram stream closed");
                    let _ = self.events.send(Event::Finished);
                    return;
                }
                Ending::Abandoned => return,
                Ending::Fatal(error) => {
                    warn!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, %error, "deepgram session failed");
                    let _ = self.events.send(Event::Failed(error));
                    return;
                }
                Ending::Dropped(reason) => reason,
            };
            if self.progressed {
                attempts = 0;
            }
            socket = loop {
                attempts += 1;
                if attempts > self.shared.config.reconnect_attempts {
                    let error = EngineError::Transport(format!(
                        "Deepgram connection lost ({reason}); gave up after {} reconnect attempts",
                        self.shared.config.reconnect_attempts
                    ));
                    warn!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, %error, "deepgram session failed");
                    let _ = self.events.send(Event::Failed(error));
                    return;
                }
                let wait = self.shared.config.backoff(attempts);
                warn!(
                    meeting_id = %self.spec.meeting_id, source = %self.spec.source,
                    %reason, attempt = attempts, wait_ms = wait.as_millis() as u64,
                    replay_bytes = self.unsettled.len(), "deepgram socket lost, reconnecting"
                );
                tokio::time::sleep(wait).await;
                match connect(&self.shared, &self.spec).await {
                    Ok(socket) => break socket,
                    Err(error) if !error.is_retryable() => {
                        let _ = self.events.send(Event::Failed(error));
                        return;
                    }
                    Err(error) => {
                        warn!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, %error, "deepgram reconnect failed");
                    }
                }
            };
            // The new socket's time zero is the first unsettled byte: replay from there.
            self.socket_base = self.unsettled_base;
            self.sent = 0;
        }
    }

    /// Serves one socket until it ends.
    async fn drive(&mut self, socket: Socket) -> Ending {
        let (mut sink, mut stream) = socket.split();
        let keepalive = self.shared.config.keepalive_interval;
        let mut last_sent = Instant::now();
        let mut close_deadline: Option<Instant> = None;
        loop {
            if let Err(e) = self.send_pending(&mut sink, &mut last_sent).await {
                return self
                    .drain_after_drop(&mut stream, format!("send failed: {e}"))
                    .await;
            }
            if self.finishing && close_deadline.is_none() {
                for control in [wire::FINALIZE, wire::CLOSE_STREAM] {
                    if let Err(e) = sink.send(Message::text(control)).await {
                        return self
                            .drain_after_drop(&mut stream, format!("send failed: {e}"))
                            .await;
                    }
                }
                debug!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, "sent Finalize and CloseStream");
                close_deadline = Some(Instant::now() + self.shared.config.flush_timeout);
            }
            tokio::select! {
                command = self.commands.recv(), if !self.finishing => match command {
                    Some(Command::Audio(pcm)) => self.queue(pcm),
                    Some(Command::Finish) => self.finishing = true,
                    None => {
                        // Dropped without flush: tell Deepgram to stop billing this socket.
                        let _ = sink.send(Message::text(wire::CLOSE_STREAM)).await;
                        return Ending::Abandoned;
                    }
                },
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                    Some(Ok(Message::Close(frame))) => {
                        let ending = self.on_close(frame.as_ref().map(|f| (u16::from(f.code), f.reason.as_str())), close_deadline.is_some());
                        let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.close()).await;
                        return ending;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ending::Dropped(format!("read failed: {e}")),
                    None => return Ending::Dropped("socket closed without a close frame".into()),
                },
                _ = sleep_until(last_sent + keepalive), if close_deadline.is_none() => {
                    if let Err(e) = sink.send(Message::text(wire::KEEP_ALIVE)).await {
                        return self.drain_after_drop(&mut stream, format!("keep-alive failed: {e}")).await;
                    }
                    debug!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, "sent KeepAlive");
                    last_sent = Instant::now();
                },
                _ = sleep_until(close_deadline.unwrap_or_else(Instant::now)), if close_deadline.is_some() => {
                    return Ending::Fatal(EngineError::Transport(format!(
                        "Deepgram did not close within {:?} of CloseStream",
                        self.shared.config.flush_timeout
                    )));
                }
            }
        }
    }

    /// Sends every queued byte in frames of at most [`MAX_AUDIO_FRAME_MS`].
    async fn send_pending(
        &mut self,
        sink: &mut SplitSink<Socket, Message>,
        last_sent: &mut Instant,
    ) -> Result<(), tungstenite::Error> {
        let frame_bytes = (MAX_AUDIO_FRAME_MS * BYTES_PER_SECOND / 1000) as usize;
        while self.sent < self.unsettled.len() {
            let end = (self.sent + frame_bytes).min(self.unsettled.len());
            let frame = self.unsettled[self.sent..end].to_vec();
            sink.send(Message::binary(frame)).await?;
            self.sent = end;
            *last_sent = Instant::now();
        }
        Ok(())
    }

    /// Adds pushed audio to the replay buffer, keeping it within `max_unsettled_ms`.
    fn queue(&mut self, pcm: Vec<u8>) {
        self.unsettled.extend_from_slice(&pcm);
        let limit = (self.shared.config.max_unsettled_ms * BYTES_PER_SECOND / 1000) as usize;
        if self.unsettled.len() > limit {
            // Only audio Deepgram already has may go: dropping unsent audio would tear a
            // hole in the socket's timeline.
            let excess = (self.unsettled.len() - limit).min(self.sent) & !(BYTES_PER_SAMPLE - 1);
            if excess > 0 {
                warn!(
                    meeting_id = %self.spec.meeting_id, source = %self.spec.source,
                    dropped_ms = excess as u64 * 1000 / BYTES_PER_SECOND,
                    "no final from Deepgram for too long; oldest replay audio dropped (a reconnect now could lose words)"
                );
                self.advance_settled(excess);
            }
        }
    }

    /// Drops `bytes` from the front of the replay buffer.
    fn advance_settled(&mut self, bytes: usize) {
        self.unsettled.drain(..bytes);
        self.unsettled_base += bytes as u64;
        self.sent -= bytes;
    }

    /// Handles one text frame from Deepgram.
    fn on_text(&mut self, text: &str) {
        let message = match wire::parse(text) {
            Ok(message) => message,
            Err(error) => {
                warn!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, %error, "unreadable message from Deepgram ignored");
                return;
            }
        };
        match message {
            ServerMessage::Results(results) => self.on_results(results),
            ServerMessage::UtteranceEnd(end) => {
                debug!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, last_word_end = ?end.last_word_end.map(|s| self.stream_ms(s)), "UtteranceEnd");
            }
            ServerMessage::SpeechStarted(started) => {
                debug!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, at_ms = ?started.timestamp.map(|s| self.stream_ms(s)), "SpeechStarted");
            }
            ServerMessage::Metadata(metadata) => {
                info!(
                    meeting_id = %self.spec.meeting_id, source = %self.spec.source,
                    request_id = metadata.request_id.as_deref().unwrap_or(""),
                    duration_s = metadata.duration.unwrap_or_default(), "deepgram metadata"
                );
            }
            ServerMessage::Unknown => {
                debug!(meeting_id = %self.spec.meeting_id, source = %self.spec.source, "message of an unknown type ignored");
            }
        }
    }

    /// Maps a `Results` to a hypothesis and, for a final, settles its audio.
    fn on_results(&mut self, results: Results) {
        self.progressed = true;
        if let Some(hypothesis) = self.hypothesis(&results) {
            if self.events.send(Event::Hypothesis(hypothesis)).is_err() {
                return;
            }
        }
        if results.is_final {
            let end = self.socket_base + secs_to_bytes(results.start + results.duration);
            if end > self.unsettled_base {
                let settled =
                    ((end - self.unsettled_base) as usize).min(self.sent) & !(BYTES_PER_SAMPLE - 1);
                self.advance_settled(settled);
            }
            let settled_ms = self.spec.start_ms + self.unsettled_base * 1000 / BYTES_PER_SECOND;
            let _ = self.events.send(Event::Settled(settled_ms));
        }
    }

    /// The hypothesis a `Results` stands for; `None` when its transcript is empty.
    ///
    /// Mapping: `is_final=false` is an interim guess (replaced by a later result over the
    /// same audio); `is_final=true` is final for its span and becomes a final hypothesis,
    /// so one utterance may end up as several finals. `speech_final` (the endpointer's
    /// utterance end) changes nothing here: the span was final already.
    fn hypothesis(&self, results: &Results) -> Option<Hypothesis> {
        let best = results.channel.alternatives.first()?;
        let text = best.transcript.trim();
        if text.is_empty() {
            return None;
        }
        let words = best
            .words
            .iter()
            .map(|w| Word {
                text: w.punctuated_word.clone().unwrap_or_else(|| w.word.clone()),
                start_ms: self.stream_ms(w.start),
                end_ms: self.stream_ms(w.end),
                confidence: w.confidence.map(|c| c as f32),
            })
            .collect::<Vec<_>>();
        Some(Hypothesis {
            text: text.to_owned(),
            is_final: results.is_final,
            start_ms: self.stream_ms(results.start),
            end_ms: self.stream_ms(results.start + results.duration),
            words: (!words.is_empty()).then_some(words),
            confidence: best.confidence.map(|c| c as f32),
        })
    }

    /// A time on the current socket, in ms into the source's stream.
    fn stream_ms(&self, socket_secs: f64) -> u64 {
        let base_secs = self.socket_base as f64 / BYTES_PER_SECOND as f64;
        self.spec.start_ms + ((base_secs + socket_secs.max(0.0)) * 1000.0).round() as u64
    }

    /// Decides what a close frame from Deepgram means.
    fn on_close(&self, frame: Option<(u16, &str)>, close_sent: bool) -> Ending {
        let (code, reason) = frame.unwrap_or((u16::from(CloseCode::Status), ""));
        if close_sent && code == u16::from(CloseCode::Normal) {
            return Ending::Finished;
        }
        // 1011 is Deepgram's `NET-0001` (no audio in time) and its internal errors; the
        // rest are the server going away: all worth a new socket.
        let retry = [1000, 1001, 1005, 1006, 1011, 1012, 1013, 1014];
        if retry.contains(&code) {
            Ending::Dropped(format!("Deepgram closed with {code} {reason}"))
        } else {
            // 1008 `DATA-0000` (undecodable audio) and the like: the same audio would fail again.
            Ending::Fatal(EngineError::Setup(format!(
                "Deepgram closed the stream with {code}: {reason}"
            )))
        }
    }

    /// After a failed send: reads what Deepgram sent before the drop, then reports it.
    async fn drain_after_drop(
        &mut self,
        stream: &mut SplitStream<Socket>,
        reason: String,
    ) -> Ending {
        let deadline = Instant::now() + DRAIN_AFTER_DROP;
        while let Ok(Some(Ok(message))) = timeout(deadline - Instant::now(), stream.next()).await {
            if let Message::Text(text) = message {
                self.on_text(text.as_str());
            }
        }
        Ending::Dropped(reason)
    }
}

/// Socket seconds as whole-sample bytes.
fn secs_to_bytes(secs: f64) -> u64 {
    (secs.max(0.0) * f64::from(SAMPLE_RATE_HZ)).round() as u64 * BYTES_PER_SAMPLE as u64
}

/// One handshake with Deepgram: `Authorization: Token <key>` on the listen URL.
async fn connect(shared: &Shared, spec: &SessionSpec) -> Result<Socket, EngineError> {
    let mut request = shared
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| EngineError::Setup(format!("bad Deepgram URL: {e}")))?;
    let mut auth = HeaderValue::from_str(&format!("Token {}", shared.config.api_key.expose()))
        .map_err(|_| {
            EngineError::Setup("the Deepgram API key holds characters a header cannot carry".into())
        })?;
    auth.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, auth);
    let connector = match &shared.tls {
        Some(tls) => Connector::Rustls(tls.clone()),
        None => Connector::Plain,
    };
    let host = shared.url.host_str().unwrap_or("").to_owned();
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector));
    match timeout(shared.config.connect_timeout, attempt).await {
        Err(_) => Err(EngineError::Transport(format!(
            "Deepgram at {host} did not complete the handshake within {:?}",
            shared.config.connect_timeout
        ))),
        Ok(Ok((socket, response))) => {
            let request_id = response
                .headers()
                .get("dg-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            info!(meeting_id = %spec.meeting_id, source = %spec.source, %host, request_id, "deepgram socket open");
            Ok(socket)
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let detail = response
                .headers()
                .get("dg-error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| {
                    response
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                })
                .unwrap_or_default();
            Err(handshake_error(status.as_u16(), &host, detail.trim()))
        }
        Ok(Err(e)) => Err(EngineError::Transport(format!(
            "Deepgram at {host} unreachable: {e}"
        ))),
    }
}

/// The error for a handshake Deepgram answered with `status` instead of 101.
fn handshake_error(status: u16, host: &str, detail: &str) -> EngineError {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    match status {
        401 | 403 => EngineError::Unauthorized(format!(
            "Deepgram at {host} refused the API key (HTTP {status}{detail}); check DEEPGRAM_API_KEY"
        )),
        408 | 429 | 500..=599 => {
            EngineError::Transport(format!("Deepgram at {host} answered HTTP {status}{detail}"))
        }
        _ => EngineError::Setup(format!(
            "Deepgram at {host} rejected the request (HTTP {status}{detail}): check the model, language and options"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_statuses_map_to_error_kinds() {
        assert!(matches!(
            handshake_error(401, "h", ""),
            EngineError::Unauthorized(_)
        ));
        assert!(matches!(
            handshake_error(403, "h", "x"),
            EngineError::Unauthorized(_)
        ));
        assert!(handshake_error(503, "h", "").is_retryable());
        assert!(handshake_error(429, "h", "").is_retryable());
        assert!(
            matches!(handshake_error(400, "h", "bad model"), EngineError::Setup(m) if m.contains("bad model"))
        );
    }

    #[test]
    fn seconds_become_whole_sample_bytes() {
        assert_eq!(secs_to_bytes(1.0), 32_000);
        assert_eq!(secs_to_bytes(0.2), 6_400);
        assert_eq!(secs_to_bytes(-1.0), 0);
        assert_eq!(secs_to_bytes(0.000_031), 0);
    }
}

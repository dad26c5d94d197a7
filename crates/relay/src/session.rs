//! One client WebSocket bridged to the backend with WebSocket-over-HTTP: events
//! batched into exactly one outstanding request, `Set-Meta-*` state carried along,
//! GRIP control messages applied, channel messages written through a bounded queue.
//!
//! [`Session`] is the connection's state; [`run`] feeds it one [`Input`] at a time
//! (a client frame, a backend response, a keep-alive tick, a close request, shutdown)
//! and each input has its own method. The socket is any `Sink`/`Stream` of
//! tungstenite messages, so unit tests drive a session over channels.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use earshot_protocol::events::{decode_events, Event};
use earshot_protocol::grip::Control;
use futures::{Sink, Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::backend::BackendError;
use crate::close::Close;
use crate::hub::{request_close, CloseRequest, Subscriber};
use crate::lifetime;
use crate::queue::{send_queue, Outbound, QueueSender};
use crate::request::{apply_set_meta, build_request, Template};
use crate::writer::{write_loop, CLOSE_HANDSHAKE_TIMEOUT};
use crate::{ErrorChain, RelayShared};

/// Pause between reads of a client whose parser is stuck on a protocol error while
/// the close frame goes out: polling again at once would spin.
const DRAIN_RETRY: Duration = Duration::from_millis(10);

/// What the upgrade step learned from the backend's answer to OPEN.
pub(crate) struct Accepted {
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) grip: bool,
    pub(crate) events: Vec<Event>,
}

/// Log fields of a connection.
#[derive(Clone)]
pub(crate) struct Fields {
    pub(crate) connection_id: String,
    pub(crate) meeting_id: String,
    pub(crate) source: String,
    pub(crate) path: String,
}

/// The client's side of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Client {
    /// Frames are read and forwarded.
    Reading,
    /// The client closed, vanished or broke the protocol: nothing more is read. A
    /// client that broke the protocol has `earned` a close that tells it why.
    Gone { earned: Option<Close> },
}

/// What the backend knows of the connection's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendView {
    /// It thinks the connection is live: tell it DISCONNECT at the end.
    Live,
    /// It ended the connection or was sent CLOSE/DISCONNECT.
    Told,
    /// It failed; calling it again would only wait out another failure.
    Failed,
}

impl BackendView {
    fn told(&mut self) {
        if *self == BackendView::Live {
            *self = BackendView::Told;
        }
    }
}

/// The outcome of applying a backend response's events.
enum Applied {
    /// Keep going.
    Continue,
    /// The backend sent CLOSE or DISCONNECT.
    BackendClosed(Close),
    /// The send queue was full.
    Overflow,
}

type BackendResult = Result<http::Response<Bytes>, BackendError>;

/// One thing that happened to a session.
enum Input {
    /// A frame, a read error, or the end of the client's stream.
    Client(Option<Result<Message, WsError>>),
    /// The outstanding backend request finished (or its task died).
    Backend(Result<BackendResult, JoinError>),
    /// Nothing was sent to the backend for the keep-alive interval.
    KeepAliveDue,
    /// The hub or the writer asked for a close (slow consumer).
    CloseRequested(Close),
    /// The relay is shutting down.
    Shutdown,
}

/// One connection's state between inputs.
struct Session<R> {
    shared: Arc<RelayShared>,
    template: Template,
    fields: Fields,
    /// This connection's key in the hub.
    conn_seq: u64,
    meta: BTreeMap<String, String>,
    keep_alive: Option<Duration>,
    /// The backend turned GRIP on: `c:` text messages are control, not content.
    grip: bool,
    subscriptions: HashSet<String>,
    /// The backend asked (`c:detach`) not to be sent client messages any more.
    detached: bool,
    /// Client events waiting for the next request.
    pending: Vec<Event>,
    /// The one outstanding backend request.
    inflight: Option<JoinHandle<BackendResult>>,
    last_request: Instant,
    /// A `c:hold` wants the backend called again once the subscription is effective.
    followup: bool,
    client: Client,
    backend: BackendView,
    /// Why the backend or the relay ended the session; `None` while it runs.
    ended: Option<Close>,
    queue: QueueSender,
    close_tx: Arc<watch::Sender<CloseRequest>>,
    close_rx: watch::Receiver<CloseRequest>,
    stream: R,
    shutdown: watch::Receiver<bool>,
}

/// Runs a session over `sink`/`stream` until the client, the backend or the relay ends it.
pub(crate) async fn run<S, R>(
    shared: Arc<RelayShared>,
    sink: S,
    stream: R,
    template: Template,
    fields: Fields,
    accepted: Accepted,
    shutdown: watch::Receiver<bool>,
) where
    S: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let _open = shared.session_opened();
    let bound = shared.queue_bound();
    let (queue, queue_rx) = send_queue(bound);
    let (close_tx, close_rx) = watch::channel::<CloseRequest>(None);
    let close_tx = Arc::new(close_tx);
    let writer = tokio::spawn(write_loop(sink, queue_rx, close_rx.clone(), close_tx.clone(), bound));
    let mut session = Session {
        conn_seq: shared.next_conn_seq(),
        shared,
        template,
        fields,
        meta: accepted.meta,
        keep_alive: accepted.keep_alive,
        grip: accepted.grip,
        subscriptions: HashSet::new(),
        detached: false,
        pending: Vec::new(),
        inflight: None,
        last_request: Instant::now(),
        followup: false,
        client: Client::Reading,
        backend: BackendView::Live,
        ended: None,
        queue,
        close_tx,
        close_rx,
        stream,
        shutdown,
    };
    session.shared.lifetimes.track(session.conn_seq, &session.meta, &session.close_tx);
    session.on_backend_events(accepted.events);
    while let Some(input) = session.next_input().await {
        session.handle(input);
    }
    session.finish(writer).await;
}

impl<R> Session<R>
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    /// Starts the next request if one is due, then waits for the next input; `None`
    /// when the session is over.
    async fn next_input(&mut self) -> Option<Input> {
        if self.ended.is_some() {
            return None;
        }
        self.dispatch().await;
        let reading = self.client == Client::Reading;
        if !reading && self.inflight.is_none() && self.pending.is_empty() {
            // The client is gone and the backend has heard everything it sent.
            return None;
        }
        let keep_alive_at = self.keep_alive.map(|k| self.last_request + k);
        // Disjoint borrows: the futures below each hold one field.
        let Session { stream, inflight, close_rx, shutdown, .. } = self;
        let waiting = inflight.is_some();
        Some(tokio::select! {
            msg = stream.next(), if reading => Input::Client(msg),
            res = async { inflight.as_mut().expect("guarded").await }, if waiting => Input::Backend(res),
            _ = async { tokio::time::sleep_until(keep_alive_at.expect("guarded")).await },
                if keep_alive_at.is_some() && !waiting && reading => Input::KeepAliveDue,
            close = requested_close(close_rx) => Input::CloseRequested(close),
            _ = shutdown.wait_for(|s| *s) => Input::Shutdown,
        })
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Client(Some(Ok(Message::Text(t)))) => self.on_client_text(t.to_string()),
            Input::Client(Some(Ok(Message::Binary(b)))) => self.on_client_binary(b.to_vec()),
            // The WebSocket layer answers pings itself and a pong only proves liveness,
            // which reading already does: neither is the backend's business.
            Input::Client(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
            Input::Client(Some(Ok(Message::Close(frame)))) => self.on_client_close(frame),
            Input::Client(Some(Err(e))) => self.on_client_error(&e),
            Input::Client(None) => self.on_client_gone(None),
            Input::Backend(res) => self.on_backend_response(res),
            Input::KeepAliveDue => self.on_keep_alive_tick(),
            Input::CloseRequested(close) => self.end(close),
            Input::Shutdown => self.on_shutdown(),
        }
    }

    /// Sends the next request when none is outstanding and there is a reason to:
    /// a hold's follow-up, queued client events, or the keep-alive interval.
    async fn dispatch(&mut self) {
        if self.inflight.is_some() {
            return;
        }
        if self.followup {
            // The backend replays history after a hold only once live items of the
            // channel are sure to be held, not missed.
            self.shared.hub.sync().await;
            self.followup = false;
        } else if self.pending.is_empty() && !self.keep_alive_due() {
            return;
        }
        self.send_request();
    }

    fn keep_alive_due(&self) -> bool {
        self.keep_alive.is_some_and(|k| self.last_request.elapsed() >= k)
    }

    /// Starts a request carrying every queued event (none: a keep-alive call).
    fn send_request(&mut self) {
        let events = std::mem::take(&mut self.pending);
        if events.iter().any(ends_connection) {
            self.backend.told();
        }
        let req = build_request(&self.shared, &self.template, &self.fields.connection_id, &self.meta, &events);
        let backend = self.shared.backend.clone();
        self.inflight = Some(tokio::spawn(async move { backend.call(req).await }));
        self.last_request = Instant::now();
    }

    /// Ends the session with `close` (a close the client earned earlier still wins).
    fn end(&mut self, close: Close) {
        self.ended.get_or_insert(close);
    }

    fn on_client_text(&mut self, text: String) {
        if !self.detached {
            self.pending.push(Event::Text(text));
        }
    }

    fn on_client_binary(&mut self, bytes: Vec<u8>) {
        if !self.detached {
            self.pending.push(Event::Binary(bytes));
        }
    }

    /// The client's close frame goes to the backend as CLOSE; the WebSocket layer has
    /// already answered it.
    fn on_client_close(&mut self, frame: Option<CloseFrame>) {
        let (code, reason) = frame.map_or((None, String::new()), |f| (Some(u16::from(f.code)), f.reason.to_string()));
        self.pending.push(Event::Close { code, reason });
        self.client = Client::Gone { earned: None };
    }

    /// A read error: the client broke the WebSocket layer itself (it earns a close
    /// frame, so it learns why instead of seeing a dropped connection) or is gone.
    fn on_client_error(&mut self, e: &WsError) {
        let earned = close_for_read_error(e);
        match &earned {
            Some(close) => {
                // Not `e` itself for UTF-8 errors: its text quotes the client's bytes.
                let detail = if matches!(e, WsError::Utf8(_)) { close.reason().to_owned() } else { e.to_string() };
                tracing::info!(
                    connection_id = %self.fields.connection_id,
                    meeting_id = %self.fields.meeting_id,
                    source = %self.fields.source,
                    close_code = close.code(),
                    detail = %detail,
                    "client broke the WebSocket protocol"
                );
            }
            None => tracing::debug!(connection_id = %self.fields.connection_id, error = %ErrorChain(e), "client connection error"),
        }
        self.on_client_gone(earned);
    }

    /// The client vanished (or broke the protocol): the backend hears DISCONNECT.
    fn on_client_gone(&mut self, earned: Option<Close>) {
        self.pending.push(Event::Disconnect);
        self.client = Client::Gone { earned };
    }

    fn on_backend_response(&mut self, res: Result<BackendResult, JoinError>) {
        self.inflight = None;
        let id = &self.fields.connection_id;
        match res {
            Ok(Ok(resp)) if resp.status() == http::StatusCode::OK => {
                let renewed = lifetime::renews(resp.headers(), &self.meta);
                apply_set_meta(resp.headers(), &mut self.meta);
                if renewed {
                    self.shared.lifetimes.track(self.conn_seq, &self.meta, &self.close_tx);
                }
                match decode_events(resp.body()) {
                    Ok(events) => self.on_backend_events(events),
                    Err(e) => {
                        tracing::error!(connection_id = %id, error = %ErrorChain(&e), "backend sent malformed events");
                        self.on_backend_failure(Close::backend_failure());
                    }
                }
            }
            Ok(Ok(resp)) if resp.status() == http::StatusCode::SERVICE_UNAVAILABLE => {
                tracing::error!(connection_id = %id, status = 503, "backend busy: the request waited past its queue deadline");
                self.on_backend_failure(Close::backend_busy());
            }
            Ok(Ok(resp)) => {
                tracing::error!(connection_id = %id, status = resp.status().as_u16(), "backend refused a request");
                self.on_backend_failure(Close::backend_failure());
            }
            Ok(Err(e)) => {
                tracing::error!(connection_id = %id, error = %ErrorChain(&e), "backend call failed");
                self.on_backend_failure(Close::backend_unavailable());
            }
            Err(e) => {
                tracing::error!(connection_id = %id, error = %ErrorChain(&e), "backend task failed");
                self.on_backend_failure(Close::backend_failure());
            }
        }
    }

    fn on_backend_failure(&mut self, close: Close) {
        self.backend = BackendView::Failed;
        self.end(close);
    }

    /// Applies the events of a backend response (or of its answer to OPEN).
    fn on_backend_events(&mut self, events: Vec<Event>) {
        match self.apply_events(events) {
            Applied::Continue => {}
            Applied::BackendClosed(close) => {
                self.backend.told();
                self.end(close);
            }
            Applied::Overflow => self.end(Close::slow_consumer()),
        }
    }

    /// Applies a response's events in order: messages to the send queue, GRIP control
    /// messages to the hub and the writer, CLOSE/DISCONNECT end the connection.
    fn apply_events(&mut self, events: Vec<Event>) -> Applied {
        // Holds first, so no live item can slip out between a subscribe and its hold.
        if self.grip {
            for ev in &events {
                if let Event::Text(t) = ev {
                    if let Some(Ok(Control::Hold { channel })) = Control::parse(t) {
                        if self.queue.try_send(Outbound::Hold(channel)).is_err() {
                            return Applied::Overflow;
                        }
                        self.followup = true;
                    }
                }
            }
        }
        for ev in events {
            let out = match ev {
                Event::Text(t) => match self.grip.then(|| Control::parse(&t)).flatten() {
                    Some(control) => match self.apply_control(control) {
                        Some(out) => out,
                        None => continue,
                    },
                    None => Outbound::Message(Message::text(t)),
                },
                Event::Binary(b) => Outbound::Message(Message::binary(b)),
                Event::Close { code, reason } => return Applied::BackendClosed(Close::from_backend(code, reason)),
                Event::Disconnect => return Applied::BackendClosed(Close::normal()),
                Event::Open | Event::Ping(_) | Event::Pong(_) => continue,
            };
            if self.queue.try_send(out).is_err() {
                return Applied::Overflow;
            }
        }
        Applied::Continue
    }

    /// Applies one GRIP control message; returns what the writer must see of it.
    fn apply_control(&mut self, control: Result<Control, serde_json::Error>) -> Option<Outbound> {
        match control {
            Ok(Control::Subscribe { channel }) => {
                if self.subscriptions.insert(channel.clone()) {
                    let subscriber = Subscriber { out: self.queue.clone(), close: self.close_tx.clone() };
                    self.shared.hub.subscribe(&channel, self.conn_seq, subscriber);
                }
            }
            Ok(Control::Unsubscribe { channel }) => {
                if self.subscriptions.remove(&channel) {
                    self.shared.hub.unsubscribe(&channel, self.conn_seq);
                }
            }
            Ok(Control::Detach) => self.detached = true,
            // Applied before the other events (see `apply_events`).
            Ok(Control::Hold { .. }) => {}
            Ok(Control::Release { channel, after }) => return Some(Outbound::Release { channel, after }),
            // The relay's own keep-alive interval (from OPEN) already keeps the backend
            // call going; a client-facing keep-alive is not implemented.
            Ok(Control::KeepAlive { .. }) => {}
            Err(e) => tracing::warn!(connection_id = %self.fields.connection_id, error = %e, "malformed GRIP control message"),
        }
        None
    }

    fn on_keep_alive_tick(&mut self) {
        if self.inflight.is_none() {
            self.send_request();
        }
    }

    fn on_shutdown(&mut self) {
        self.end(Close::shutting_down());
    }

    /// Leaves the hub, has the writer send the close, tells the backend the connection
    /// ended (unless it knows or failed), and waits for the close handshake.
    async fn finish(self, writer: JoinHandle<()>) {
        let Session { shared, template, fields, conn_seq, meta, subscriptions, inflight, client, mut backend, ended, queue, close_tx, mut stream, .. } =
            self;
        for ch in &subscriptions {
            shared.hub.unsubscribe(ch, conn_seq);
        }
        shared.lifetimes.forget(conn_seq);
        let earned = match client {
            Client::Gone { earned } => Some(earned),
            Client::Reading => None,
        };
        let client_gone = earned.is_some();
        if let Some(close) = earned.flatten().or(ended) {
            request_close(&close_tx, close);
        }
        // What the writer sends: this session's close, or one the hub asked for first.
        let close = close_tx.borrow().clone();
        // The writer ends once no sender is left (the hub's went with the unsubscribes).
        drop(queue);
        // One outstanding request at a time: let the current one finish, then, if the
        // backend has not learnt that the connection ended, tell it (presence, counters).
        if let Some(h) = inflight {
            if let Ok(Ok(resp)) = h.await {
                if resp.status() == http::StatusCode::OK && decode_events(resp.body()).is_ok_and(|evs| evs.iter().any(ends_connection)) {
                    backend.told();
                }
            }
        }
        if backend == BackendView::Live {
            let req = build_request(&shared, &template, &fields.connection_id, &meta, &[Event::Disconnect]);
            if let Err(e) = shared.backend.call(req).await {
                tracing::debug!(connection_id = %fields.connection_id, error = %ErrorChain(&e), "backend missed DISCONNECT");
            }
        }
        if client_gone && close.is_none() {
            let _ = writer.await;
        } else {
            let (_, ()) = tokio::join!(writer, linger(&mut stream));
        }
        let close = close.unwrap_or_else(Close::normal);
        tracing::info!(
            connection_id = %fields.connection_id,
            meeting_id = %fields.meeting_id,
            source = %fields.source,
            path = %fields.path,
            close_code = close.code(),
            close_reason = %close.reason(),
            state = "closed",
            "websocket closed"
        );
    }
}

/// Reads the client while the close frame goes out: closing a socket with unread
/// client data (say the rest of an oversized message) makes the kernel send RST, and
/// the client would see a dropped connection instead of our close code. Reading stops
/// at the client's own close, at its end of stream, or after the close-handshake bound.
async fn linger<R>(stream: &mut R)
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        loop {
            match stream.next().await {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
                Some(Err(_)) => tokio::time::sleep(DRAIN_RETRY).await,
            }
        }
    })
    .await;
}

/// Whether an event tells the backend the connection is over.
fn ends_connection(e: &Event) -> bool {
    matches!(e, Event::Close { .. } | Event::Disconnect)
}

/// Resolves with the first close the hub or the writer asks for.
async fn requested_close(rx: &mut watch::Receiver<CloseRequest>) -> Close {
    let close = rx.wait_for(Option::is_some).await.ok().and_then(|c| c.clone());
    match close {
        Some(close) => close,
        // The session holds the sender, so this cannot happen; never resolve.
        None => std::future::pending().await,
    }
}

/// The close a client's read error earns while the socket can still carry one: 1009 for a
/// message over the relay's cap, 1007 for text that is not UTF-8 (RFC 6455 §8.1), 1002 for
/// broken framing (unmasked, reserved bits or opcodes, bad control or continuation frames).
/// `None` when the client is simply gone (reset, end of stream, I/O error): nobody to tell.
fn close_for_read_error(e: &WsError) -> Option<Close> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        WsError::Capacity(_) => Some(Close::too_big()),
        WsError::Utf8(_) => Some(Close::invalid_utf8()),
        WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::ReceivedAfterClosing | ProtocolError::SendAfterClosing,
        ) => None,
        WsError::Protocol(_) => Some(Close::protocol_error()),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! One client WebSocket bridged to the backend with WebSocket-over-HTTP: events
//! batched into exactly one outstanding request, `Set-Meta-*` state carried along,
//! GRIP control messages applied, channel messages written through a bounded queue.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use earshot_protocol::close::{fit_reason, REASON_INVALID_UTF8, REASON_PROTOCOL_ERROR, REASON_SHUTTING_DOWN, REASON_TOO_BIG};
use earshot_protocol::events::{decode_events, encode_events, Event, CONTENT_TYPE};
use earshot_protocol::grip::Control;
use earshot_protocol::CloseCode;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::backend::BackendError;
use crate::hub::{CloseRequest, Outbound, Subscriber};
use crate::RelayShared;

/// How long the relay waits for a client to answer its close frame before dropping
/// the TCP connection: enough for any live client, short enough for shutdown.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Live sessions, for the metrics endpoint and the shutdown drain.
pub(crate) static OPEN_SESSIONS: AtomicU64 = AtomicU64::new(0);

/// What the upgrade step learned from the backend's answer to OPEN.
pub(crate) struct Accepted {
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) grip: bool,
    pub(crate) events: Vec<Event>,
}

/// The parts of the client's handshake replayed on every backend request.
pub(crate) struct Template {
    pub(crate) uri: http::Uri,
    pub(crate) headers: http::HeaderMap,
}

/// Log fields of a connection.
#[derive(Clone)]
pub(crate) struct Fields {
    pub(crate) connection_id: String,
    pub(crate) meeting_id: String,
    pub(crate) source: String,
    pub(crate) path: String,
}

/// Reads `Set-Meta-*` headers of a backend response into `meta`.
pub(crate) fn apply_set_meta(headers: &http::HeaderMap, meta: &mut BTreeMap<String, String>) {
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("set-meta-") {
            if let Ok(v) = value.to_str() {
                meta.insert(key.to_owned(), v.to_owned());
            }
        }
    }
}

/// Builds one backend request carrying `events`.
pub(crate) fn build_request(
    shared: &RelayShared,
    template: &Template,
    connection_id: &str,
    meta: &BTreeMap<String, String>,
    events: &[Event],
) -> http::Request<Bytes> {
    let mut req = http::Request::new(Bytes::from(encode_events(events)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = template.uri.clone();
    let headers = req.headers_mut();
    headers.extend(template.headers.clone());
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = http::HeaderValue::from_str(connection_id) {
        headers.insert("connection-id", v);
    }
    headers.insert("sec-websocket-extensions", http::HeaderValue::from_static("grip"));
    for (k, v) in meta {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(format!("meta-{k}").as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    if let Some(sig) = shared.grip_sig() {
        if let Ok(v) = http::HeaderValue::from_str(&sig) {
            headers.insert("grip-sig", v);
        }
    }
    req
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code: WsCloseCode::from(code), reason: fit_reason(reason).to_owned().into() }))
}

/// Runs a session until the client, the backend or the relay ends it.
pub(crate) async fn run(
    shared: Arc<RelayShared>,
    ws: Ws,
    template: Template,
    fields: Fields,
    accepted: Accepted,
    mut shutdown: watch::Receiver<bool>,
) {
    OPEN_SESSIONS.fetch_add(1, Ordering::Relaxed);
    let conn_seq = shared.next_conn_seq();
    let (sink, mut stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel::<Outbound>(shared.config.send_queue_messages);
    let (close_tx, close_rx) = watch::channel::<CloseRequest>(None);
    let close_tx = Arc::new(close_tx);
    let writer = tokio::spawn(write_loop(sink, out_rx, close_rx.clone(), close_tx.clone(), shared.config.send_queue_messages));

    let mut meta = accepted.meta;
    let keep_alive = accepted.keep_alive;
    let grip = accepted.grip;
    let mut subscriptions: HashSet<String> = HashSet::new();
    let mut detached = false;
    let mut pending: Vec<Event> = Vec::new();
    let mut inflight: Option<tokio::task::JoinHandle<Result<http::Response<Bytes>, BackendError>>> = None;
    let mut last_request = Instant::now();
    let mut client_done = false; // the client closed or vanished: read nothing more
    let mut finished = false; // the backend or relay closed the connection
    let mut close_rx_main = close_rx.clone();
    let subscriber = Subscriber { out: out_tx.clone(), close: close_tx.clone() };

    // Applies a response's events in order. Returns the close the backend asked for,
    // if any; sets `followup` when a `hold` needs the backend called again once the
    // subscription is effective.
    let apply = |events: Vec<Event>,
                 subscriptions: &mut HashSet<String>,
                 detached: &mut bool,
                 followup: &mut bool|
     -> Option<(u16, String)> {
        // Holds first, so no live item can slip out between a subscribe and its hold.
        if grip {
            for ev in &events {
                if let Event::Text(t) = ev {
                    if let Some(Ok(Control::Hold { channel })) = Control::parse(t) {
                        if out_tx.try_send(Outbound::Hold(channel)).is_err() {
                            return Some((CloseCode::SlowConsumer.code(), earshot_protocol::close::REASON_SLOW_CONSUMER.into()));
                        }
                        *followup = true;
                    }
                }
            }
        }
        for ev in events {
            match ev {
                Event::Text(t) => {
                    if grip {
                        if let Some(control) = Control::parse(&t) {
                            match control {
                                Ok(Control::Subscribe { channel }) => {
                                    if subscriptions.insert(channel.clone()) {
                                        shared.hub.subscribe(&channel, conn_seq, subscriber.clone());
                                    }
                                }
                                Ok(Control::Unsubscribe { channel }) => {
                                    if subscriptions.remove(&channel) {
                                        shared.hub.unsubscribe(&channel, conn_seq);
                                    }
                                }
                                Ok(Control::Detach) => *detached = true,
                                Ok(Control::Hold { .. }) => {}
                                Ok(Control::Release { channel, after }) => {
                                    if out_tx.try_send(Outbound::Release { channel, after }).is_err() {
                                        return Some((CloseCode::SlowConsumer.code(), earshot_protocol::close::REASON_SLOW_CONSUMER.into()));
                                    }
                                }
                                Ok(Control::KeepAlive { .. }) => {}
                                Err(e) => tracing::warn!(connection_id = %fields.connection_id, error = %e, "malformed GRIP control message"),
                            }
                            continue;
                        }
                    }
                    if out_tx.try_send(Outbound::Message(Message::text(t))).is_err() {
                        return Some((CloseCode::SlowConsumer.code(), earshot_protocol::close::REASON_SLOW_CONSUMER.into()));
                    }
                }
                Event::Binary(b) => {
                    if out_tx.try_send(Outbound::Message(Message::binary(b))).is_err() {
                        return Some((CloseCode::SlowConsumer.code(), earshot_protocol::close::REASON_SLOW_CONSUMER.into()));
                    }
                }
                Event::Close { code, reason } => return Some((code.unwrap_or(1000), reason)),
                Event::Disconnect => return Some((CloseCode::Normal.code(), String::new())),
                Event::Open | Event::Ping(_) | Event::Pong(_) => {}
            }
        }
        None
    };

    let mut followup = false;
    let mut close_with: Option<(u16, String)> = apply(accepted.events, &mut subscriptions, &mut detached, &mut followup);
    // Whether the backend ended the connection or was told it ended.
    let mut backend_knows = close_with.is_some();
    let mut backend_failed = false;
    if close_with.is_some() {
        finished = true;
    }

    while !finished {
        // Start the next request: queued events, or an empty keep-alive call.
        let keep_alive_due = keep_alive.is_some_and(|k| last_request.elapsed() >= k);
        if inflight.is_none() && followup {
            // A hold asked for a follow-up call once the subscription is effective.
            shared.hub.sync().await;
            followup = false;
            let req = build_request(&shared, &template, &fields.connection_id, &meta, &std::mem::take(&mut pending));
            let backend = shared.backend.clone();
            inflight = Some(tokio::spawn(async move { backend.call(req).await }));
            last_request = Instant::now();
        }
        if inflight.is_none() && (!pending.is_empty() || keep_alive_due) {
            let events = std::mem::take(&mut pending);
            backend_knows |= events.iter().any(|e| matches!(e, Event::Close { .. } | Event::Disconnect));
            let req = build_request(&shared, &template, &fields.connection_id, &meta, &events);
            let backend = shared.backend.clone();
            inflight = Some(tokio::spawn(async move { backend.call(req).await }));
            last_request = Instant::now();
        }
        if client_done && inflight.is_none() && pending.is_empty() {
            break;
        }
        let ka_sleep = keep_alive.map(|k| last_request + k);
        tokio::select! {
            msg = stream.next(), if !client_done => match msg {
                Some(Ok(Message::Text(t))) => if !detached { pending.push(Event::Text(t.to_string())) },
                Some(Ok(Message::Binary(b))) => if !detached { pending.push(Event::Binary(b.to_vec())) },
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map(|f| (Some(u16::from(f.code)), f.reason.to_string())).unwrap_or((None, String::new()));
                    pending.push(Event::Close { code, reason });
                    client_done = true;
                }
                Some(Err(e)) => {
                    // The client broke the WebSocket layer itself: the socket still carries
                    // a close frame, so it learns why instead of seeing a dropped connection.
                    if let Some((code, reason)) = close_for_read_error(&e) {
                        // Not `e` itself for UTF-8 errors: its text quotes the client's bytes.
                        let detail = if matches!(e, WsError::Utf8(_)) { reason.to_owned() } else { e.to_string() };
                        tracing::info!(
                            connection_id = %fields.connection_id,
                            meeting_id = %fields.meeting_id,
                            source = %fields.source,
                            close_code = code.code(),
                            detail = %detail,
                            "client broke the WebSocket protocol"
                        );
                        close_with = Some((code.code(), reason.into()));
                    } else {
                        tracing::debug!(connection_id = %fields.connection_id, error = %e, "client connection error");
                    }
                    pending.push(Event::Disconnect);
                    client_done = true;
                }
                None => {
                    pending.push(Event::Disconnect);
                    client_done = true;
                }
            },
            res = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                match res {
                    Ok(Ok(resp)) if resp.status() == http::StatusCode::OK => {
                        apply_set_meta(resp.headers(), &mut meta);
                        match decode_events(resp.body()) {
                            Ok(events) => {
                                if let Some(c) = apply(events, &mut subscriptions, &mut detached, &mut followup) {
                                    if close_with.is_none() { close_with = Some(c); }
                                    backend_knows = true;
                                    finished = true;
                                }
                            }
                            Err(e) => {
                                tracing::error!(connection_id = %fields.connection_id, error = %e, "backend sent malformed events");
                                close_with = Some((CloseCode::InternalError.code(), "backend failure".into()));
                                backend_failed = true;
                                finished = true;
                            }
                        }
                    }
                    Ok(Ok(resp)) => {
                        tracing::error!(connection_id = %fields.connection_id, status = resp.status().as_u16(), "backend refused a request");
                        close_with = Some((CloseCode::InternalError.code(), "backend failure".into()));
                        backend_failed = true;
                        finished = true;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(connection_id = %fields.connection_id, error = %e, "backend call failed");
                        close_with = Some((CloseCode::InternalError.code(), "backend unavailable".into()));
                        backend_failed = true;
                        finished = true;
                    }
                    Err(e) => {
                        tracing::error!(connection_id = %fields.connection_id, error = %e, "backend task failed");
                        close_with = Some((CloseCode::InternalError.code(), "backend failure".into()));
                        backend_failed = true;
                        finished = true;
                    }
                }
            },
            _ = async { tokio::time::sleep_until(ka_sleep.expect("guarded")).await }, if ka_sleep.is_some() && inflight.is_none() && !client_done => {}
            _ = close_rx_main.changed() => {
                if let Some(c) = close_rx_main.borrow().clone() {
                    close_with = Some(c);
                    finished = true;
                }
            }
            _ = shutdown.wait_for(|s| *s) => {
                close_with = Some((CloseCode::GoingAway.code(), REASON_SHUTTING_DOWN.into()));
                finished = true;
            }
        }
    }

    for ch in &subscriptions {
        shared.hub.unsubscribe(ch, conn_seq);
    }
    // Tell the writer to close the socket (unless the client already closed it).
    if let Some((code, reason)) = close_with.clone() {
        close_tx.send_if_modified(|c| {
            if c.is_none() {
                *c = Some((code, reason));
                true
            } else {
                false
            }
        });
    }
    drop(out_tx);
    drop(subscriber);
    // One outstanding request at a time: let the current one finish, then, if the
    // backend has not learnt that the connection ended, tell it (presence, counters).
    if let Some(h) = inflight.take() {
        if let Ok(Ok(resp)) = h.await {
            if resp.status() == http::StatusCode::OK {
                if let Ok(events) = decode_events(resp.body()) {
                    backend_knows |= events.iter().any(|e| matches!(e, Event::Close { .. } | Event::Disconnect));
                }
            }
        }
    }
    if !backend_knows && !backend_failed {
        let req = build_request(&shared, &template, &fields.connection_id, &meta, &[Event::Disconnect]);
        let _ = shared.backend.call(req).await;
    }
    // Linger on the read half while the close frame goes out: closing a socket with
    // unread client data (say the rest of an oversized message) makes the kernel send
    // RST, and the client would see a dropped connection instead of our close code.
    // Reading stops at the client's own close, at its end of stream, or after the bound.
    let drain = async {
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            loop {
                match stream.next().await {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                    // After a protocol error the parser may not advance; don't spin.
                    Some(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await;
    };
    if client_done && close_with.is_none() {
        let _ = writer.await;
    } else {
        let (_, _) = tokio::join!(writer, drain);
    }
    OPEN_SESSIONS.fetch_sub(1, Ordering::Relaxed);
    let (code, reason) = close_with.unwrap_or((1000, String::new()));
    tracing::info!(
        connection_id = %fields.connection_id,
        meeting_id = %fields.meeting_id,
        source = %fields.source,
        path = %fields.path,
        close_code = code,
        close_reason = %reason,
        state = "closed",
        "websocket closed"
    );
}

/// The close a client's read error earns while the socket can still carry one: 1009 for a
/// message over the relay's cap, 1007 for text that is not UTF-8 (RFC 6455 §8.1), 1002 for
/// broken framing (unmasked, reserved bits or opcodes, bad control or continuation frames).
/// `None` when the client is simply gone (reset, end of stream, I/O error): nobody to tell.
fn close_for_read_error(e: &WsError) -> Option<(CloseCode, &'static str)> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        WsError::Capacity(_) => Some((CloseCode::TooBig, REASON_TOO_BIG)),
        WsError::Utf8(_) => Some((CloseCode::InvalidPayload, REASON_INVALID_UTF8)),
        WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::ReceivedAfterClosing | ProtocolError::SendAfterClosing,
        ) => None,
        WsError::Protocol(_) => Some((CloseCode::ProtocolError, REASON_PROTOCOL_ERROR)),
        _ => None,
    }
}

/// Per-connection hold buffers (see `Control::Hold`/`Release`).
#[derive(Default)]
struct Holds {
    held: std::collections::HashMap<String, Vec<(Option<Arc<str>>, Message)>>,
    floor: std::collections::HashMap<String, String>,
    buffered: usize,
}

impl Holds {
    /// What to send now for an item: nothing (held or a duplicate) or the message.
    fn admit(&mut self, channel: &str, id: Option<Arc<str>>, msg: Message, limit: usize) -> Result<Option<Message>, ()> {
        if let Some(buf) = self.held.get_mut(channel) {
            if self.buffered >= limit {
                return Err(());
            }
            self.buffered += 1;
            buf.push((id, msg));
            return Ok(None);
        }
        Ok(self.passes(channel, id.as_deref()).then_some(msg))
    }

    fn passes(&self, channel: &str, id: Option<&str>) -> bool {
        match (self.floor.get(channel), id) {
            (Some(after), Some(id)) => earshot_protocol::grip::id_after(id, after),
            _ => true,
        }
    }

    fn release(&mut self, channel: &str, after: Option<String>) -> Vec<Message> {
        if let Some(a) = after {
            self.floor.insert(channel.to_owned(), a);
        }
        let held = self.held.remove(channel).unwrap_or_default();
        self.buffered -= held.len();
        held.into_iter().filter(|(id, _)| self.passes(channel, id.as_deref())).map(|(_, m)| m).collect()
    }
}

/// Writes queued messages to the client; on a close request, drops what is queued
/// (a slow consumer's backlog) and sends the close frame.
async fn write_loop(
    mut sink: futures::stream::SplitSink<Ws, Message>,
    mut out_rx: mpsc::Receiver<Outbound>,
    mut close_rx: watch::Receiver<CloseRequest>,
    close_tx: Arc<watch::Sender<CloseRequest>>,
    hold_limit: usize,
) {
    let mut holds = Holds::default();
    let mut to_send: Vec<Message> = Vec::new();
    'outer: loop {
        tokio::select! {
            biased;
            _ = close_rx.changed() => break,
            out = out_rx.recv() => {
                let Some(out) = out else { break };
                match out {
                    Outbound::Message(m) => to_send.push(m),
                    Outbound::Item { channel, id, msg } => match holds.admit(&channel, id, msg, hold_limit) {
                        Ok(Some(m)) => to_send.push(m),
                        Ok(None) => {}
                        Err(()) => {
                            let _ = close_tx.send((CloseCode::SlowConsumer.code(), earshot_protocol::close::REASON_SLOW_CONSUMER.to_owned()).into());
                            break;
                        }
                    },
                    Outbound::Hold(channel) => {
                        holds.held.entry(channel).or_default();
                    }
                    Outbound::Release { channel, after } => to_send.extend(holds.release(&channel, after)),
                }
                for m in to_send.drain(..) {
                    if sink.send(m).await.is_err() {
                        break 'outer;
                    }
                }
            }
        }
    }
    let close = close_rx.borrow().clone();
    if let Some((code, reason)) = close {
        // Flush what the backend said before its close (e.g. `closed` totals), unless
        // this is a slow consumer whose backlog is exactly the problem.
        if code != CloseCode::SlowConsumer.code() {
            while let Ok(Outbound::Message(m)) = out_rx.try_recv() {
                if tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.send(m)).await.is_err() {
                    return;
                }
            }
        }
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.send(close_message(code, &reason))).await;
    }
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};

    #[test]
    fn client_mistakes_earn_a_close_and_vanished_clients_none() {
        let code = |e: WsError| close_for_read_error(&e).map(|(c, r)| (c.code(), r));
        assert_eq!(code(WsError::Utf8("bad".into())), Some((1007, "invalid UTF-8")));
        assert_eq!(code(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient)), Some((1002, "protocol error")));
        assert_eq!(code(WsError::Capacity(CapacityError::MessageTooLong { size: 2, max_size: 1 })), Some((1009, "frame too large")));
        assert_eq!(code(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)), None);
        assert_eq!(code(WsError::ConnectionClosed), None);
    }
}

//! The session loop driven over channels: a scripted socket on one side and a test
//! double of the backend on the other, which hands each request to the test and
//! answers when the test says so.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use earshot_protocol::events::{decode_events, encode_events, Event, CONTENT_TYPE};
use earshot_protocol::grip::{Control, Item};
use futures::channel::mpsc as fmpsc;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{close_for_read_error, run, Accepted, Fields};
use crate::backend::{Backend, BackendError, BackendFuture};
use crate::request::Template;
use crate::{Hub, RelayConfig, RelayShared};

/// Longest a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test watches for something that should not happen.
const QUIET: Duration = Duration::from_millis(100);

/// A backend for tests that never expect a call.
pub(crate) struct UnusedBackend;

impl Backend for UnusedBackend {
    fn call(&self, _req: http::Request<Bytes>) -> BackendFuture<'_> {
        panic!("this test makes no backend call")
    }
}

/// One request the session made, waiting for the test's answer.
struct Call {
    events: Vec<Event>,
    headers: http::HeaderMap,
    reply: oneshot::Sender<Result<http::Response<Bytes>, BackendError>>,
}

impl Call {
    fn answer(self, resp: Result<http::Response<Bytes>, BackendError>) {
        let _ = self.reply.send(resp);
    }

    /// Answers 200 with `events` and extra `headers`.
    fn events_with(self, events: &[Event], headers: &[(&'static str, &'static str)]) {
        let mut resp = http::Response::new(Bytes::from(encode_events(events)));
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(CONTENT_TYPE));
        for (k, v) in headers {
            resp.headers_mut().insert(*k, http::HeaderValue::from_static(v));
        }
        self.answer(Ok(resp));
    }

    fn events(self, events: &[Event]) {
        self.events_with(events, &[]);
    }
}

/// Test double of the backend: every call goes to the test as a [`Call`].
struct ScriptedBackend(mpsc::UnboundedSender<Call>);

impl Backend for ScriptedBackend {
    fn call(&self, req: http::Request<Bytes>) -> BackendFuture<'_> {
        let (reply, answer) = oneshot::channel();
        let (parts, body) = req.into_parts();
        let events = decode_events(&body).expect("the session encodes valid events");
        let _ = self.0.send(Call { events, headers: parts.headers, reply });
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| Err(BackendError::Unreachable("the test dropped the call".into())))
        })
    }
}

/// A running session and the test's ends of its socket and backend.
struct Harness {
    client: fmpsc::UnboundedSender<Result<Message, WsError>>,
    socket: fmpsc::Receiver<Message>,
    calls: mpsc::UnboundedReceiver<Call>,
    shared: Arc<RelayShared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn accepted() -> Accepted {
    Accepted { meta: BTreeMap::new(), keep_alive: None, grip: true, events: Vec::new() }
}

fn control(c: Control) -> Event {
    Event::Text(c.to_text())
}

fn subscribe(channel: &str) -> Event {
    control(Control::Subscribe { channel: channel.into() })
}

/// Starts a session; the socket buffers `socket_buffer` messages beyond one per
/// sender before the writer blocks, as a client that stops reading makes it.
fn start_with(config: RelayConfig, accepted: Accepted, socket_buffer: usize) -> Harness {
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let shared = Arc::new(RelayShared::new(Arc::new(ScriptedBackend(calls_tx)), Hub::local(), config));
    let (client, stream) = fmpsc::unbounded();
    let (sink, socket) = fmpsc::channel(socket_buffer);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let template = Template { uri: "/api/v1/ws/meetings/m1".parse().unwrap(), headers: http::HeaderMap::new() };
    let fields = Fields { connection_id: "c1".into(), meeting_id: "m1".into(), source: String::new(), path: "/".into() };
    let task = tokio::spawn(run(shared.clone(), sink, stream, template, fields, accepted, shutdown_rx));
    Harness { client, socket, calls, shared, shutdown, task }
}

fn start(accepted: Accepted) -> Harness {
    start_with(RelayConfig::default(), accepted, 64)
}

impl Harness {
    fn send(&self, msg: Message) {
        self.client.unbounded_send(Ok(msg)).expect("session reads");
    }

    fn text(&self, t: &str) {
        self.send(Message::text(t));
    }

    async fn call(&mut self) -> Call {
        tokio::time::timeout(PATIENCE, self.calls.recv()).await.expect("a backend call in time").expect("backend alive")
    }

    async fn no_call(&mut self) {
        if let Ok(Some(call)) = tokio::time::timeout(QUIET, self.calls.recv()).await {
            panic!("unexpected backend call with {:?}", call.events);
        }
    }

    async fn sent(&mut self) -> Message {
        tokio::time::timeout(PATIENCE, self.socket.next()).await.expect("a message in time").expect("socket open")
    }

    async fn sent_text(&mut self) -> String {
        self.sent().await.into_text().expect("a text message").to_string()
    }

    /// Reads past any backlog to the close frame: (backlog length, code, reason).
    async fn close_frame(&mut self) -> (usize, u16, String) {
        let mut backlog = 0;
        loop {
            match self.sent().await {
                Message::Close(Some(f)) => return (backlog, u16::from(f.code), f.reason.to_string()),
                Message::Close(None) => panic!("close frame without a code"),
                _ => backlog += 1,
            }
        }
    }

    /// Waits for the session to end, the client having gone away.
    async fn finished(mut self) -> Self {
        self.client.close_channel();
        tokio::time::timeout(PATIENCE, &mut self.task).await.expect("session ended in time").expect("no panic");
        self
    }

    /// Waits until the session has applied its subscriptions (it runs in its own task).
    async fn subscribed(&self, channels: usize) {
        tokio::time::timeout(PATIENCE, async {
            while self.shared.hub.channel_count() < channels {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("subscribed in time");
    }

    fn publish(&self, channel: &str, id: Option<&str>, text: &str) {
        let mut item = Item::text(channel, text);
        item.id = id.map(str::to_owned);
        futures::executor::block_on(self.shared.hub.publish(&item)).expect("local publish");
    }
}

#[tokio::test]
async fn frames_queued_during_a_request_go_in_the_next_one() {
    let mut h = start(accepted());
    h.text("a");
    let first = h.call().await;
    assert_eq!(first.events, [Event::Text("a".into())]);
    assert_eq!(first.headers["connection-id"], "c1");
    // One outstanding request per connection: these wait.
    h.text("b");
    h.send(Message::binary(vec![1, 2]));
    h.text("c");
    h.no_call().await;
    first.events(&[]);
    let second = h.call().await;
    assert_eq!(second.events, [Event::Text("b".into()), Event::Binary(vec![1, 2]), Event::Text("c".into())]);
    second.events(&[]);
    h.no_call().await;
}

#[tokio::test]
async fn backend_events_reach_the_client_in_order() {
    let mut h = start(accepted());
    h.text("hi");
    h.call().await.events(&[Event::Text("one".into()), Event::Binary(b"two".to_vec()), Event::Text("three".into())]);
    assert_eq!(h.sent_text().await, "one");
    assert_eq!(h.sent().await, Message::binary(b"two".to_vec()));
    assert_eq!(h.sent_text().await, "three");
}

#[tokio::test]
async fn set_meta_round_trips_on_later_requests() {
    let mut h = start(Accepted { meta: BTreeMap::from([("user".into(), "alice".into())]), ..accepted() });
    h.text("a");
    let call = h.call().await;
    assert_eq!(call.headers["meta-user"], "alice");
    call.events_with(&[], &[("set-meta-room", "r1"), ("set-meta-user", "bob")]);
    h.text("b");
    let call = h.call().await;
    assert_eq!(call.headers["meta-room"], "r1");
    assert_eq!(call.headers["meta-user"], "bob");
}

#[tokio::test]
async fn held_live_items_follow_the_release_in_order() {
    let hold = control(Control::Hold { channel: "t".into() });
    let mut h = start(Accepted { events: vec![subscribe("t"), hold], ..accepted() });
    // The hold asks for a follow-up call once the subscription is effective.
    let followup = h.call().await;
    assert!(followup.events.is_empty(), "{:?}", followup.events);
    // Live items while the backend replays history are held...
    h.publish("t", Some("1-0"), "live 1");
    h.publish("t", Some("2-0"), "live 2");
    h.publish("t", Some("3-0"), "live 3");
    // ...and come out after the replay, minus what the replay already covered.
    followup.events(&[
        Event::Text("replay 1".into()),
        Event::Text("replay 2".into()),
        control(Control::Release { channel: "t".into(), after: Some("1-0".into()) }),
    ]);
    assert_eq!(h.sent_text().await, "replay 1");
    assert_eq!(h.sent_text().await, "replay 2");
    assert_eq!(h.sent_text().await, "live 2");
    assert_eq!(h.sent_text().await, "live 3");
    // After the release, live items pass straight through; a replayed id is a duplicate.
    h.publish("t", Some("1-0"), "duplicate");
    h.publish("t", Some("4-0"), "live 4");
    assert_eq!(h.sent_text().await, "live 4");
}

#[tokio::test]
async fn subscribe_and_unsubscribe_follow_the_backend() {
    let mut h = start(Accepted { events: vec![subscribe("m")], ..accepted() });
    h.subscribed(1).await;
    h.publish("m", None, "live");
    assert_eq!(h.sent_text().await, "live");
    h.text("leave");
    h.call().await.events(&[control(Control::Unsubscribe { channel: "m".into() }), Event::Text("left".into())]);
    assert_eq!(h.sent_text().await, "left");
    h.publish("m", None, "not for us");
    assert_eq!(h.shared.hub.channel_count(), 0);
}

#[tokio::test]
async fn control_messages_are_content_without_grip() {
    let mut h = start(Accepted { events: vec![subscribe("m")], grip: false, ..accepted() });
    assert_eq!(h.sent_text().await, subscribe("m").text_content());
    assert_eq!(h.shared.hub.channel_count(), 0);
}

trait TextContent {
    fn text_content(&self) -> String;
}

impl TextContent for Event {
    fn text_content(&self) -> String {
        match self {
            Event::Text(t) => t.clone(),
            other => panic!("not text: {other:?}"),
        }
    }
}

#[tokio::test]
async fn detach_stops_forwarding_client_messages() {
    let mut h = start(Accepted { events: vec![control(Control::Detach)], ..accepted() });
    h.text("ignored");
    h.no_call().await;
}

/// Floods a subscriber whose client reads nothing; returns its close.
async fn flood_stalled(config: RelayConfig, items: usize, pad: usize) -> (Harness, usize, u16, String) {
    let mut h = start_with(config, Accepted { events: vec![subscribe("m")], ..accepted() }, 0);
    h.subscribed(1).await;
    for i in 0..items {
        h.publish("m", None, &format!("{i:04}{}", "x".repeat(pad)));
        // Let the writer take what it can, as a real socket would.
        tokio::task::yield_now().await;
    }
    // The session tells the backend the connection ended.
    let call = h.call().await;
    assert_eq!(call.events, [Event::Disconnect]);
    call.events(&[]);
    let (backlog, code, reason) = h.close_frame().await;
    (h, backlog, code, reason)
}

#[tokio::test]
async fn a_full_queue_by_messages_closes_4008() {
    let config = RelayConfig { send_queue_messages: 4, ..RelayConfig::default() };
    let (h, backlog, code, reason) = flood_stalled(config, 50, 0).await;
    assert_eq!((code, reason.as_str()), (4008, "slow consumer"));
    assert!(backlog < 50, "the backlog was dropped, not flushed: {backlog}");
    assert!(h.shared.hub.stats.slow_consumers.load(Ordering::Relaxed) >= 1);
    let h = h.finished().await;
    assert_eq!(h.shared.hub.channel_count(), 0);
}

#[tokio::test]
async fn a_full_queue_by_bytes_closes_4008() {
    // 1024 messages would fit; 4 KiB of 1 KiB messages do not.
    let config = RelayConfig { send_queue_bytes: 4096, ..RelayConfig::default() };
    let (h, backlog, code, reason) = flood_stalled(config, 50, 1020).await;
    assert_eq!((code, reason.as_str()), (4008, "slow consumer"));
    assert!(backlog < 50, "{backlog}");
    h.finished().await;
}

#[tokio::test]
async fn a_backend_response_over_the_queue_bound_closes_4008() {
    let config = RelayConfig { send_queue_messages: 2, ..RelayConfig::default() };
    let mut h = start_with(config, accepted(), 0);
    h.text("history please");
    let events: Vec<Event> = (0..10).map(|i| Event::Text(format!("h{i}"))).collect();
    h.call().await.events(&events);
    // Overflowing its own queue is not the backend closing: it still hears DISCONNECT.
    let call = h.call().await;
    assert_eq!(call.events, [Event::Disconnect]);
    call.events(&[]);
    let (_, code, _) = h.close_frame().await;
    assert_eq!(code, 4008);
}

#[tokio::test]
async fn an_unreachable_backend_closes_1011_and_is_not_called_again() {
    let mut h = start(accepted());
    h.text("a");
    h.call().await.answer(Err(BackendError::Unreachable("connection refused".into())));
    let (_, code, reason) = h.close_frame().await;
    assert_eq!((code, reason.as_str()), (1011, "backend unavailable"));
    let mut h = h.finished().await;
    h.no_call().await;
}

#[tokio::test]
async fn a_backend_error_status_or_bad_body_closes_1011() {
    for bad in [
        http::Response::builder().status(500).body(Bytes::new()).unwrap(),
        http::Response::new(Bytes::from_static(b"NOT-AN-EVENT\r\n")),
    ] {
        let mut h = start(accepted());
        h.text("a");
        h.call().await.answer(Ok(bad));
        let (_, code, reason) = h.close_frame().await;
        assert_eq!((code, reason.as_str()), (1011, "backend failure"));
        let mut h = h.finished().await;
        h.no_call().await;
    }
}

#[tokio::test]
async fn a_busy_backend_closes_1011_saying_the_queue_deadline_passed() {
    let mut h = start(accepted());
    h.text("a");
    h.call().await.answer(Ok(http::Response::builder().status(503).body(Bytes::new()).unwrap()));
    let (_, code, reason) = h.close_frame().await;
    assert_eq!((code, reason.as_str()), (1011, "backend busy: instance queue deadline passed"));
    let mut h = h.finished().await;
    h.no_call().await;
}

#[tokio::test]
async fn shutdown_closes_1001_and_tells_the_backend() {
    let mut h = start(accepted());
    h.shutdown.send(true).unwrap();
    let call = h.call().await;
    assert_eq!(call.events, [Event::Disconnect]);
    call.events(&[]);
    let (_, code, reason) = h.close_frame().await;
    assert_eq!((code, reason.as_str()), (1001, "relay shutting down"));
    h.finished().await;
}

#[tokio::test]
async fn shutdown_waits_for_the_outstanding_request() {
    let mut h = start(accepted());
    h.text("a");
    let first = h.call().await;
    h.shutdown.send(true).unwrap();
    h.no_call().await;
    // The backend closes in its answer: no DISCONNECT after that.
    first.events(&[Event::close(1000, "bye")]);
    let (_, code, _) = h.close_frame().await;
    assert_eq!(code, 1001);
    let mut h = h.finished().await;
    h.no_call().await;
}

#[tokio::test]
async fn a_backend_close_flushes_its_messages_then_closes() {
    let mut h = start(accepted());
    h.text("close_stream");
    h.call().await.events(&[Event::Text("closed".into()), Event::close(1000, "stream closed")]);
    let (backlog, code, reason) = h.close_frame().await;
    assert_eq!((backlog, code, reason.as_str()), (1, 1000, "stream closed"));
    let mut h = h.finished().await;
    h.no_call().await;
}

#[tokio::test]
async fn a_close_in_the_answer_to_open_ends_at_once() {
    let mut h = start(Accepted { events: vec![Event::close(1008, "auth failed: expired")], ..accepted() });
    let (_, code, reason) = h.close_frame().await;
    assert_eq!((code, reason.as_str()), (1008, "auth failed: expired"));
    let mut h = h.finished().await;
    h.no_call().await;
}

#[tokio::test]
async fn a_client_close_reaches_the_backend_as_close() {
    let mut h = start(accepted());
    h.text("hello");
    h.call().await.events(&[]);
    assert_eq!(h.shared.open_sessions.load(Ordering::Relaxed), 1);
    h.send(Message::Close(Some(CloseFrame { code: WsCloseCode::Normal, reason: "bye".into() })));
    let call = h.call().await;
    assert_eq!(call.events, [Event::close(1000, "bye")]);
    call.events(&[]);
    let mut h = h.finished().await;
    h.no_call().await;
    // The WebSocket layer answered the client's close; the relay adds no second one.
    assert_eq!(h.socket.next().await, None);
    assert_eq!(h.shared.open_sessions.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_vanished_client_reaches_the_backend_as_disconnect() {
    let mut h = start(accepted());
    h.client.close_channel();
    let call = h.call().await;
    assert_eq!(call.events, [Event::Disconnect]);
    call.events(&[]);
    h.finished().await;
}

#[tokio::test]
async fn a_client_protocol_error_earns_its_close() {
    let mut h = start(accepted());
    h.client.unbounded_send(Err(WsError::Capacity(CapacityError::MessageTooLong { size: 2, max_size: 1 }))).unwrap();
    let call = h.call().await;
    assert_eq!(call.events, [Event::Disconnect]);
    // Even if the backend closes too, the client learns what it did wrong.
    call.events(&[Event::close(1000, "bye")]);
    let (_, code, reason) = h.close_frame().await;
    assert_eq!((code, reason.as_str()), (1009, "frame too large"));
    h.finished().await;
}

#[tokio::test]
async fn keep_alive_calls_the_backend_every_interval_while_idle() {
    let interval = Duration::from_millis(150);
    let mut h = start(Accepted { keep_alive: Some(interval), ..accepted() });
    let begin = tokio::time::Instant::now();
    for n in 1..=2u32 {
        let call = h.call().await;
        assert!(call.events.is_empty(), "{:?}", call.events);
        let elapsed = begin.elapsed();
        assert!(elapsed >= interval * n, "call {n} after {elapsed:?}");
        call.events(&[]);
    }
    // Traffic resets the interval: the next call carries the frame, not a keep-alive.
    h.text("a");
    assert_eq!(h.call().await.events, [Event::Text("a".into())]);
}

#[test]
fn client_mistakes_earn_a_close_and_vanished_clients_none() {
    let code = |e: WsError| close_for_read_error(&e).map(|c| (c.code(), c.reason().to_owned()));
    assert_eq!(code(WsError::Utf8("bad".into())), Some((1007, "invalid UTF-8".into())));
    assert_eq!(code(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient)), Some((1002, "protocol error".into())));
    assert_eq!(code(WsError::Capacity(CapacityError::MessageTooLong { size: 2, max_size: 1 })), Some((1009, "frame too large".into())));
    assert_eq!(code(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)), None);
    assert_eq!(code(WsError::ConnectionClosed), None);
}

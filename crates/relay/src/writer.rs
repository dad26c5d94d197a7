//! A connection's writer: sends its queue to the client, holds live items of a channel
//! while the backend replays history (GRIP `c:hold` / `c:release`), and sends the close
//! frame when one is requested.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, SinkExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::close::Close;
use crate::hub::CloseRequest;
use crate::queue::{Outbound, QueueBound, QueueReceiver};

/// How long the relay waits for a client to answer its close frame before dropping
/// the TCP connection: enough for any live client, short enough for shutdown.
pub(crate) const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most queued entries written per flush: enough to batch a fan-out burst into few
/// syscalls, few enough that a close request is noticed between batches.
const WRITE_BATCH_MAX: usize = 64;

/// Batch slots the writer keeps between batches; a larger batch's storage is freed
/// after its flush, so a subscriber that once took a burst does not keep it while idle.
const IDLE_BATCH_SLOTS_KEPT: usize = 8;

/// The hold buffer grew past the connection's bound.
#[derive(Debug, PartialEq, Eq)]
struct HoldOverflow;

/// A held live item: its GRIP id (if any) and the message.
type HeldItem = (Option<Arc<str>>, Message);

/// Per-connection hold buffers (see `Control::Hold`/`Release`).
#[derive(Default)]
struct Holds {
    held: HashMap<String, Vec<HeldItem>>,
    /// Per channel, the id live items must come after (the last id the replay sent).
    floor: HashMap<String, String>,
    buffered_messages: usize,
    buffered_bytes: usize,
}

impl Holds {
    fn hold(&mut self, channel: String) {
        self.held.entry(channel).or_default();
    }

    /// What to send now for an item: nothing (held, or a duplicate of the replay) or
    /// the message.
    fn admit(&mut self, channel: &str, id: Option<Arc<str>>, msg: Message, bound: QueueBound) -> Result<Option<Message>, HoldOverflow> {
        if let Some(buf) = self.held.get_mut(channel) {
            if self.buffered_messages >= bound.messages || self.buffered_bytes + msg.len() > bound.bytes {
                return Err(HoldOverflow);
            }
            self.buffered_messages += 1;
            self.buffered_bytes += msg.len();
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

    /// Ends the hold of `channel`: its held items, in order, minus those at or before `after`.
    fn release(&mut self, channel: &str, after: Option<String>) -> Vec<Message> {
        if let Some(a) = after {
            self.floor.insert(channel.to_owned(), a);
        }
        let held = self.held.remove(channel).unwrap_or_default();
        self.buffered_messages -= held.len();
        self.buffered_bytes -= held.iter().map(|(_, m)| m.len()).sum::<usize>();
        held.into_iter().filter(|(id, _)| self.passes(channel, id.as_deref())).map(|(_, m)| m).collect()
    }
}

/// Writes queued messages to the client; on a close request, drops what is queued if
/// it is a slow consumer's backlog (else flushes the backend's last words) and sends
/// the close frame.
pub(crate) async fn write_loop<S>(
    mut sink: S,
    mut queue: QueueReceiver,
    mut close_rx: watch::Receiver<CloseRequest>,
    close_tx: Arc<watch::Sender<CloseRequest>>,
    bound: QueueBound,
) where
    S: Sink<Message> + Unpin,
{
    let mut holds = Holds::default();
    let mut to_send: Vec<Message> = Vec::new();
    'outer: loop {
        tokio::select! {
            biased;
            _ = close_rx.changed() => break,
            out = queue.recv() => {
                let Some(mut out) = out else { break };
                // Everything already queued goes out in one flush: under fan-out load a
                // socket gets one write syscall per batch instead of one per message.
                let mut batched = 0;
                loop {
                    batched += 1;
                    match out {
                        Outbound::Message(m) => to_send.push(m),
                        Outbound::Item { channel, id, msg } => match holds.admit(&channel, id, msg, bound) {
                            Ok(Some(m)) => to_send.push(m),
                            Ok(None) => {}
                            Err(HoldOverflow) => {
                                let _ = close_tx.send(Some(Close::slow_consumer()));
                                break 'outer;
                            }
                        },
                        Outbound::Hold(channel) => holds.hold(channel),
                        Outbound::Release { channel, after } => to_send.extend(holds.release(&channel, after)),
                    }
                    if batched == WRITE_BATCH_MAX {
                        break;
                    }
                    match queue.try_recv() {
                        Some(next) => out = next,
                        None => break,
                    }
                }
                for m in to_send.drain(..) {
                    if sink.feed(m).await.is_err() {
                        break 'outer;
                    }
                }
                if sink.flush().await.is_err() {
                    break 'outer;
                }
                // A burst's batch storage is not kept for an idle socket.
                if to_send.capacity() > IDLE_BATCH_SLOTS_KEPT {
                    to_send = Vec::new();
                }
            }
        }
    }
    let close = close_rx.borrow().clone();
    if let Some(close) = close {
        // Flush what the backend said before its close (e.g. `closed` totals), unless
        // this is a slow consumer whose backlog is exactly the problem.
        if !close.is_slow_consumer() {
            while let Some(Outbound::Message(m)) = queue.try_recv() {
                if tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.send(m)).await.is_err() {
                    return;
                }
            }
        }
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.send(close.to_message())).await;
    }
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::send_queue;
    use futures::StreamExt;

    const BOUND: QueueBound = QueueBound { messages: 3, bytes: 1024 };

    fn item(channel: &str, id: &str, text: &str) -> Outbound {
        Outbound::Item { channel: channel.into(), id: Some(id.into()), msg: Message::text(text) }
    }

    fn texts(msgs: &[Message]) -> Vec<String> {
        msgs.iter().map(|m| m.to_text().unwrap().to_owned()).collect()
    }

    #[test]
    fn held_items_come_out_in_order_after_the_floor() {
        let mut holds = Holds::default();
        holds.hold("c".into());
        for (id, t) in [("1", "a"), ("2", "b"), ("3", "c")] {
            assert_eq!(holds.admit("c", Some(id.into()), Message::text(t), BOUND), Ok(None));
        }
        // Another channel is not held.
        assert!(holds.admit("d", None, Message::text("x"), BOUND).unwrap().is_some());
        // The replay already sent up to id 1.
        assert_eq!(texts(&holds.release("c", Some("1".into()))), ["b", "c"]);
        assert_eq!((holds.buffered_messages, holds.buffered_bytes), (0, 0));
        // After the release, a live duplicate of the replay is dropped, a new item passes.
        assert_eq!(holds.admit("c", Some("1".into()), Message::text("a"), BOUND), Ok(None));
        assert!(holds.admit("c", Some("4".into()), Message::text("d"), BOUND).unwrap().is_some());
    }

    #[test]
    fn the_hold_buffer_is_bounded_by_messages_and_bytes() {
        let mut holds = Holds::default();
        holds.hold("c".into());
        for _ in 0..BOUND.messages {
            holds.admit("c", None, Message::text("x"), BOUND).unwrap();
        }
        assert_eq!(holds.admit("c", None, Message::text("x"), BOUND), Err(HoldOverflow));

        let mut holds = Holds::default();
        holds.hold("c".into());
        holds.admit("c", None, Message::text("x".repeat(1000)), BOUND).unwrap();
        assert_eq!(holds.admit("c", None, Message::text("x".repeat(25)), BOUND), Err(HoldOverflow));
    }

    #[tokio::test]
    async fn writes_in_order_then_the_close_frame() {
        let (tx, rx) = send_queue(BOUND);
        let (close_tx, close_rx) = watch::channel::<CloseRequest>(None);
        let close_tx = Arc::new(close_tx);
        let (sink, mut client) = futures::channel::mpsc::unbounded::<Message>();
        let writer = tokio::spawn(write_loop(sink, rx, close_rx, close_tx.clone(), BOUND));
        tx.try_send(Outbound::Hold("c".into())).unwrap();
        tx.try_send(item("c", "1", "held")).unwrap();
        tx.try_send(Outbound::Message(Message::text("replay"))).unwrap();
        assert_eq!(client.next().await.unwrap().to_text().unwrap(), "replay");
        tx.try_send(Outbound::Release { channel: "c".into(), after: None }).unwrap();
        assert_eq!(client.next().await.unwrap().to_text().unwrap(), "held");
        close_tx.send(Some(Close::backend_failure())).unwrap();
        writer.await.unwrap();
        let Some(Message::Close(Some(frame))) = client.next().await else { panic!("no close frame") };
        assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1011, "backend failure"));
        assert!(client.next().await.is_none(), "the sink is closed after the close frame");
    }

    #[tokio::test]
    async fn a_hold_overflow_closes_with_4008() {
        let (tx, rx) = send_queue(QueueBound { messages: 8, bytes: 1024 });
        let (close_tx, close_rx) = watch::channel::<CloseRequest>(None);
        let close_tx = Arc::new(close_tx);
        let (sink, client) = futures::channel::mpsc::unbounded::<Message>();
        let writer = tokio::spawn(write_loop(sink, rx, close_rx.clone(), close_tx, QueueBound { messages: 1, bytes: 1024 }));
        tx.try_send(Outbound::Hold("c".into())).unwrap();
        tx.try_send(item("c", "1", "a")).unwrap();
        tx.try_send(item("c", "2", "b")).unwrap();
        writer.await.unwrap();
        assert_eq!(*close_rx.borrow(), Some(Close::slow_consumer()));
        let sent: Vec<Message> = client.collect().await;
        assert_eq!(sent.len(), 1, "only the close frame: {sent:?}");
    }
}

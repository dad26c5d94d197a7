//! A connection's send queue: what its writer sends to the client, in order, bounded
//! in messages and in bytes so a stalled reader costs the relay a known amount of
//! memory before it is closed as a slow consumer (4008).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Message;

/// What a connection's writer sends to its client, in order.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// A message from the backend's response.
    Message(Message),
    /// A live item published to `channel` (with its GRIP id, if any).
    Item { channel: Arc<str>, id: Option<Arc<str>>, msg: Message },
    /// Start holding `channel`'s live items (see `Control::Hold`).
    Hold(String),
    /// Release `channel`'s held items after `after` (see `Control::Release`).
    Release { channel: String, after: Option<String> },
}

impl Outbound {
    /// Payload bytes this entry holds. A published payload is shared between its
    /// subscribers, but each connection is charged for it: the bound is about one
    /// connection's backlog, which outlives the publish.
    fn bytes(&self) -> usize {
        match self {
            Outbound::Message(m) | Outbound::Item { msg: m, .. } => m.len(),
            Outbound::Hold(_) | Outbound::Release { .. } => 0,
        }
    }
}

/// How much one connection may have queued or held: past either bound it is a slow
/// consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueBound {
    /// Most entries, in messages.
    pub(crate) messages: usize,
    /// Most payload, in bytes.
    pub(crate) bytes: usize,
}

/// The sending half; cheap to clone (the session and each hub subscription hold one).
#[derive(Clone)]
pub(crate) struct QueueSender {
    tx: mpsc::Sender<Outbound>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving half, owned by the writer.
pub(crate) struct QueueReceiver {
    rx: mpsc::Receiver<Outbound>,
    bytes: Arc<AtomicUsize>,
}

/// A queue holding at most `bound`.
pub(crate) fn send_queue(bound: QueueBound) -> (QueueSender, QueueReceiver) {
    // A zero bound would make tokio panic; one message is the smallest queue that works.
    let (tx, rx) = mpsc::channel(bound.messages.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    (QueueSender { tx, bytes: bytes.clone(), max_bytes: bound.bytes }, QueueReceiver { rx, bytes })
}

impl QueueSender {
    /// Queues `out` without waiting: `Full` when either bound would be exceeded,
    /// `Closed` when the writer is gone.
    pub(crate) fn try_send(&self, out: Outbound) -> Result<(), TrySendError<Outbound>> {
        let n = out.bytes();
        // Reserve first, so concurrent senders (the session, several hub publishes)
        // cannot together overshoot the byte bound.
        let before = self.bytes.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max_bytes {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(TrySendError::Full(out));
        }
        self.tx.try_send(out).inspect_err(|_| {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
        })
    }
}

impl QueueReceiver {
    /// The next entry; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        let out = self.rx.recv().await?;
        self.bytes.fetch_sub(out.bytes(), Ordering::AcqRel);
        Some(out)
    }

    /// The next entry if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        let out = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(out.bytes(), Ordering::AcqRel);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Outbound {
        Outbound::Message(Message::text("x".repeat(n)))
    }

    #[tokio::test]
    async fn bounded_by_messages() {
        let (tx, mut rx) = send_queue(QueueBound { messages: 2, bytes: 1 << 20 });
        tx.try_send(text(1)).unwrap();
        tx.try_send(text(1)).unwrap();
        assert!(matches!(tx.try_send(text(1)), Err(TrySendError::Full(_))));
        rx.recv().await.unwrap();
        tx.try_send(text(1)).unwrap();
    }

    #[tokio::test]
    async fn bounded_by_bytes_and_released_on_receive() {
        let (tx, mut rx) = send_queue(QueueBound { messages: 100, bytes: 10 });
        tx.try_send(text(6)).unwrap();
        assert!(matches!(tx.try_send(text(5)), Err(TrySendError::Full(_))), "6 + 5 bytes > 10");
        tx.try_send(text(4)).unwrap();
        // Control entries carry no payload and still fit.
        tx.try_send(Outbound::Hold("c".into())).unwrap();
        rx.recv().await.unwrap();
        tx.try_send(text(5)).unwrap();
        assert!(rx.try_recv().is_some());
    }

    #[tokio::test]
    async fn a_closed_writer_is_not_a_full_queue() {
        let (tx, rx) = send_queue(QueueBound { messages: 1, bytes: 10 });
        drop(rx);
        assert!(matches!(tx.try_send(text(1)), Err(TrySendError::Closed(_))));
        assert_eq!(tx.bytes.load(Ordering::Relaxed), 0, "a refused entry gives its bytes back");
    }
}

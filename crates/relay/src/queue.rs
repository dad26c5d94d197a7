//! A connection's send queue: what its writer sends to the client, in order, bounded
//! in messages and in bytes so a stalled reader costs the relay a known amount of
//! memory before it is closed as a slow consumer (4008).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

/// Slots an emptied queue keeps allocated; past it the storage is freed, so a socket
/// that once took a burst goes back to costing nothing while idle. Eight covers the
/// few messages an active connection usually has queued.
const IDLE_SLOTS_KEPT: usize = 8;

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

/// The queue itself. Storage grows on demand and is given back when the queue drains
/// (tokio's bounded channel allocates a 32-slot block up front, ~2.5 KiB per idle
/// socket here); one lock, held for a push or a pop, never across an await.
struct Shared {
    entries: Mutex<Entries>,
    /// Wakes the receiver: an entry arrived or the last sender left.
    ready: Notify,
    bound: QueueBound,
}

struct Entries {
    queue: VecDeque<Outbound>,
    /// Payload bytes queued (see [`Outbound::bytes`]).
    bytes: usize,
    senders: usize,
    receiver_alive: bool,
}

impl Entries {
    /// The oldest entry; an emptied queue gives a burst's storage back.
    fn pop(&mut self) -> Option<Outbound> {
        let out = self.queue.pop_front()?;
        self.bytes -= out.bytes();
        if self.queue.is_empty() && self.queue.capacity() > IDLE_SLOTS_KEPT {
            self.queue = VecDeque::new();
        }
        Some(out)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding it leaves a VecDeque that is still consistent.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The sending half; cheap to clone (the session and each hub subscription hold one).
pub(crate) struct QueueSender {
    shared: Arc<Shared>,
}

/// The receiving half, owned by the writer.
pub(crate) struct QueueReceiver {
    shared: Arc<Shared>,
}

/// A queue holding at most `bound`.
pub(crate) fn send_queue(bound: QueueBound) -> (QueueSender, QueueReceiver) {
    // A zero bound would refuse everything; one message is the smallest queue that works.
    let bound = QueueBound { messages: bound.messages.max(1), bytes: bound.bytes };
    let shared = Arc::new(Shared {
        entries: Mutex::new(Entries { queue: VecDeque::new(), bytes: 0, senders: 1, receiver_alive: true }),
        ready: Notify::new(),
        bound,
    });
    (QueueSender { shared: shared.clone() }, QueueReceiver { shared })
}

impl Clone for QueueSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        QueueSender { shared: self.shared.clone() }
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        let last = {
            let mut e = self.shared.lock();
            e.senders -= 1;
            e.senders == 0
        };
        if last {
            self.shared.ready.notify_one();
        }
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut e = self.shared.lock();
        e.receiver_alive = false;
        e.queue = VecDeque::new();
    }
}

impl QueueSender {
    /// Queues `out` without waiting: `Full` when either bound would be exceeded,
    /// `Closed` when the writer is gone.
    pub(crate) fn try_send(&self, out: Outbound) -> Result<(), TrySendError<Outbound>> {
        let n = out.bytes();
        let shared = &*self.shared;
        {
            let mut e = shared.lock();
            if !e.receiver_alive {
                return Err(TrySendError::Closed(out));
            }
            if e.queue.len() >= shared.bound.messages || e.bytes + n > shared.bound.bytes {
                return Err(TrySendError::Full(out));
            }
            e.bytes += n;
            e.queue.push_back(out);
        }
        shared.ready.notify_one();
        Ok(())
    }
}

impl QueueReceiver {
    /// The next entry; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        loop {
            {
                let mut e = self.shared.lock();
                if let Some(out) = e.pop() {
                    return Some(out);
                }
                if e.senders == 0 {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a push between the
            // check above and this wait is not missed.
            self.shared.ready.notified().await;
        }
    }

    /// The next entry if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.shared.lock().pop()
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
        assert_eq!(tx.shared.lock().bytes, 0, "a refused entry gives its bytes back");
    }

    #[tokio::test]
    async fn the_receiver_sees_the_end_once_every_sender_is_gone_and_the_queue_is_drained() {
        let (tx, mut rx) = send_queue(QueueBound { messages: 4, bytes: 100 });
        let tx2 = tx.clone();
        tx.try_send(text(1)).unwrap();
        drop(tx);
        let waiting = tokio::spawn(async move {
            let mut got = 0;
            while rx.recv().await.is_some() {
                got += 1;
            }
            got
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a clone still holds the queue open");
        tx2.try_send(text(1)).unwrap();
        drop(tx2);
        assert_eq!(waiting.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_drained_queue_gives_its_storage_back() {
        let (tx, mut rx) = send_queue(QueueBound { messages: 1000, bytes: 1 << 20 });
        assert_eq!(tx.shared.lock().queue.capacity(), 0, "nothing allocated before the first entry");
        for _ in 0..100 {
            tx.try_send(text(1)).unwrap();
        }
        assert!(tx.shared.lock().queue.capacity() >= 100);
        while rx.try_recv().is_some() {}
        assert_eq!(tx.shared.lock().queue.capacity(), 0, "a burst's storage outlived it");
    }
}

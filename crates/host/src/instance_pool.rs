//! Backpressure at the instance cap: a request that finds every instance slot busy
//! waits in a bounded FIFO queue for one to free up, and fails only when it has waited
//! past the deadline (or the queue is full). Without it the pooling allocator refuses
//! the instance past its cap outright, which dropped streams on every burst.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default number of component instances alive at once (the pool's slots). Each
/// request or Redis message holds one for microseconds to a few milliseconds (longer
/// while parked on a Redis round trip); 256 keeps both cores busy through Redis waits,
/// and bounds the pooling allocator's up-front address-space reservation (two 64 MiB
/// memories per slot: 32 GiB of address space, none of it resident until used).
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// Default longest a request waits for a slot. 5 s: far longer than any burst takes to
/// drain (thousands of requests of a few ms each on two cores), and shorter than the
/// relay's 10 s backend timeout, so a client hears the "busy" close rather than a
/// timeout.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default most requests waiting at once. At the ~3,000 component calls/s one core
/// manages (BENCHMARKS.md), 16,384 waiting requests are ~3 s of work on two cores:
/// a longer queue could not drain inside [`DEFAULT_QUEUE_TIMEOUT`] anyway, and each
/// waiting request holds its body in memory.
pub const DEFAULT_MAX_QUEUED: usize = 16_384;

/// Size and patience of the instance pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstancePoolConfig {
    /// Component instances alive at once (the pooling allocator is sized to it).
    pub max_instances: u32,
    /// Longest a request waits for a free instance before it fails.
    pub queue_timeout: Duration,
    /// Most requests waiting at once; one more fails at once.
    pub max_queued: usize,
}

impl Default for InstancePoolConfig {
    fn default() -> Self {
        InstancePoolConfig {
            max_instances: DEFAULT_MAX_INSTANCES,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

/// Why no instance slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InstanceBusy {
    /// The request waited its whole deadline in the queue.
    #[error("every component instance was busy for {waited_ms} ms (instance queue deadline passed)")]
    Deadline {
        /// How long it waited, in milliseconds.
        waited_ms: u64,
    },
    /// The queue already held its maximum of waiting requests.
    #[error("every component instance is busy and {queued} requests are already waiting (instance queue full)")]
    QueueFull {
        /// The queue's bound.
        queued: usize,
    },
}

/// The slots: a fair (FIFO) semaphore with one permit per instance.
pub(crate) struct InstancePool {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    config: InstancePoolConfig,
}

impl InstancePool {
    /// A pool of `config.max_instances` free slots.
    pub(crate) fn new(config: InstancePoolConfig) -> Self {
        InstancePool { slots: Arc::new(Semaphore::new(config.max_instances as usize)), waiting: AtomicUsize::new(0), config }
    }

    /// A slot, at once when one is free, else after the requests queued before this
    /// one (tokio's semaphore hands released permits to waiters in order).
    pub(crate) async fn acquire(&self) -> Result<OwnedSemaphorePermit, InstanceBusy> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(InstanceBusy::QueueFull { queued: self.config.max_queued });
        }
        let waited = tokio::time::timeout(self.config.queue_timeout, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a deadline all the same.
            Ok(Err(_)) | Err(_) => {
                Err(InstanceBusy::Deadline { waited_ms: self.config.queue_timeout.as_millis() as u64 })
            }
        }
    }

    /// Requests waiting for a slot now.
    pub(crate) fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_instances: u32, queue_timeout_ms: u64, max_queued: usize) -> Arc<InstancePool> {
        Arc::new(InstancePool::new(InstancePoolConfig {
            max_instances,
            queue_timeout: Duration::from_millis(queue_timeout_ms),
            max_queued,
        }))
    }

    #[tokio::test]
    async fn waiters_are_served_in_arrival_order_when_slots_free_up() {
        let pool = pool(1, 5_000, 100);
        let held = pool.acquire().await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (waiter, tx) = (pool.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let permit = waiter.acquire().await.unwrap();
                tx.send(i).unwrap();
                drop(permit);
            }));
            // Let each one reach the queue before the next arrives.
            while pool.queued() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some(i) = rx.recv().await {
            order.push(i);
        }
        assert_eq!(order, (0..8).collect::<Vec<_>>());
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn a_request_past_the_deadline_fails_and_says_so() {
        let pool = pool(1, 20, 100);
        let _held = pool.acquire().await.unwrap();
        let err = pool.acquire().await.unwrap_err();
        assert_eq!(err, InstanceBusy::Deadline { waited_ms: 20 });
        assert!(err.to_string().contains("instance queue deadline passed"), "{err}");
        assert_eq!(pool.queued(), 0, "the failed waiter left the queue");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = pool(1, 5_000, 1);
        let held = pool.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire().await.map(drop) }
        });
        while pool.queued() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.acquire().await.unwrap_err(), InstanceBusy::QueueFull { queued: 1 });
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()), "the queued request still gets its slot");
    }
}

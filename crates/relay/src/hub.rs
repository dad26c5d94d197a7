//! Channel fan-out: which connections subscribe to which GRIP channel, a message
//! encoded once and handed to N sockets, and a bounded queue per connection so one
//! slow reader is closed (4008) instead of slowing anyone else down.
//!
//! With Redis, every relay subscribes once per channel that has local subscribers and
//! delivers what arrives on `earshot:grip:<channel>`; publishing goes through Redis so
//! any relay's subscribers receive it. Without Redis, publishing is local.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use earshot_protocol::grip::{Item, WsPayload};
use earshot_protocol::ids::GRIP_REDIS_PREFIX;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::close::Close;
use crate::queue::{Outbound, QueueSender};

/// Backoff bounds for reconnecting the Redis subscription.
const REDIS_BACKOFF_MIN: Duration = Duration::from_millis(100);
const REDIS_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A request to close a connection; the first one set wins.
pub(crate) type CloseRequest = Option<Close>;

/// A subscribed connection as the hub sees it.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) out: QueueSender,
    pub(crate) close: Arc<watch::Sender<CloseRequest>>,
}

/// Counters for the metrics endpoint and the benchmarks.
#[derive(Default)]
pub struct HubStats {
    /// Messages handed to subscriber queues.
    pub delivered: AtomicU64,
    /// Subscribers closed for falling behind.
    pub slow_consumers: AtomicU64,
    /// Messages published (locally or via Redis).
    pub published: AtomicU64,
}

/// The fan-out hub of one relay.
pub struct Hub {
    channels: Mutex<HashMap<String, HashMap<u64, Subscriber>>>,
    bus: Option<mpsc::UnboundedSender<BusCommand>>,
    publisher: Option<redis::aio::ConnectionManager>,
    /// Delivery counters.
    pub stats: HubStats,
}

enum BusCommand {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once every earlier command has been applied to Redis.
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// Longest a session waits for its Redis subscription to become effective before
/// replaying history anyway (Redis down: nothing live arrives meanwhile either).
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Redis refused or is unreachable.
    #[error("redis publish failed")]
    Redis(#[from] redis::RedisError),
}

impl Hub {
    /// A hub without Redis: publishing reaches this relay's subscribers only.
    pub fn local() -> Arc<Self> {
        Arc::new(Hub { channels: Mutex::default(), bus: None, publisher: None, stats: HubStats::default() })
    }

    /// A hub sharing channels with every relay on the Redis at `url`.
    pub async fn with_redis(url: &str) -> redis::RedisResult<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let publisher = redis::aio::ConnectionManager::new_with_config(client.clone(), config).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub { channels: Mutex::default(), bus: Some(tx), publisher: Some(publisher), stats: HubStats::default() });
        tokio::spawn(run_bus(client, Arc::downgrade(&hub), rx));
        Ok(hub)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Subscriber>>> {
        // Critical sections only insert/remove/clone handles; a panic cannot leave the
        // map half-updated, so a poisoned lock is safe to keep using.
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes connection `id` to `channel`.
    pub(crate) fn subscribe(&self, channel: &str, id: u64, sub: Subscriber) {
        let first = {
            let mut channels = self.lock();
            let subs = channels.entry(channel.to_owned()).or_default();
            subs.insert(id, sub);
            subs.len() == 1
        };
        if first {
            if let Some(bus) = &self.bus {
                let _ = bus.send(BusCommand::Subscribe(channel.to_owned()));
            }
        }
    }

    /// Removes connection `id` from `channel`.
    pub(crate) fn unsubscribe(&self, channel: &str, id: u64) {
        let last = {
            let mut channels = self.lock();
            match channels.get_mut(channel) {
                Some(subs) => {
                    subs.remove(&id);
                    if subs.is_empty() {
                        channels.remove(channel);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if last {
            if let Some(bus) = &self.bus {
                let _ = bus.send(BusCommand::Unsubscribe(channel.to_owned()));
            }
        }
    }

    /// Resolves once every subscription requested so far is effective in Redis (at
    /// once without Redis, where subscribing is immediate).
    pub(crate) async fn sync(&self) {
        let Some(bus) = &self.bus else { return };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if bus.send(BusCommand::Sync(tx)).is_ok() {
            let _ = tokio::time::timeout(SYNC_TIMEOUT, rx).await;
        }
    }

    fn has_subscribers(&self, channel: &str) -> bool {
        self.lock().contains_key(channel)
    }

    /// Number of channels with at least one local subscriber, not counting the relay's own
    /// revocation listener (`crate::lifetime`), which every relay has.
    pub fn channel_count(&self) -> usize {
        let channels = self.lock();
        channels.len() - usize::from(channels.contains_key(earshot_protocol::lifetime::REVOCATION_CHANNEL))
    }

    /// Publishes an item: through Redis when configured (every relay delivers it),
    /// else to this relay's subscribers.
    pub async fn publish(&self, item: &Item) -> Result<(), PublishError> {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        match &self.publisher {
            Some(conn) => {
                let payload = serde_json::to_string(item).expect("items serialize");
                let mut conn = conn.clone();
                redis::cmd("PUBLISH")
                    .arg(format!("{GRIP_REDIS_PREFIX}{}", item.channel))
                    .arg(payload)
                    .query_async::<i64>(&mut conn)
                    .await?;
                Ok(())
            }
            None => {
                self.deliver_item(item);
                Ok(())
            }
        }
    }

    fn deliver_item(&self, item: &Item) {
        let id = item.id.as_deref();
        match item.ws_payload() {
            Ok(WsPayload::Text(t)) => self.deliver(&item.channel, id, Message::text(t)),
            Ok(WsPayload::Binary(b)) => self.deliver(&item.channel, id, Message::binary(b)),
            Err(e) => tracing::warn!(channel = %item.channel, error = %e, "publish item without a WebSocket payload"),
        }
    }

    /// Hands `msg` to every local subscriber of `channel`; the payload is shared, not
    /// copied. A subscriber whose queue is full is asked to close with 4008.
    pub(crate) fn deliver(&self, channel: &str, id: Option<&str>, msg: Message) {
        let subs: Vec<Subscriber> = match self.lock().get(channel) {
            Some(s) => s.values().cloned().collect(),
            None => return,
        };
        let channel: Arc<str> = Arc::from(channel);
        let id: Option<Arc<str>> = id.map(Arc::from);
        for sub in subs {
            let out = Outbound::Item { channel: channel.clone(), id: id.clone(), msg: msg.clone() };
            match sub.out.try_send(out) {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    request_close(&sub.close, Close::slow_consumer());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// Asks a connection to close with `close`, unless a close was already asked for.
pub(crate) fn request_close(tx: &watch::Sender<CloseRequest>, close: Close) {
    tx.send_if_modified(|c| {
        if c.is_none() {
            *c = Some(close);
            true
        } else {
            false
        }
    });
}

/// Keeps this relay's Redis subscriptions equal to the channels with local
/// subscribers, across reconnects. Subscribe/unsubscribe commands are applied in
/// order and re-checked against the hub, so racing joins and leaves settle right.
async fn run_bus(client: redis::Client, hub: Weak<Hub>, mut commands: mpsc::UnboundedReceiver<BusCommand>) {
    let mut backoff = REDIS_BACKOFF_MIN;
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot reach Redis for fan-out; retrying");
                if hub.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(REDIS_BACKOFF_MAX);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Resubscribe everything that has local subscribers now.
        let current: Vec<String> = match hub.upgrade() {
            Some(h) => h.lock().keys().cloned().collect(),
            None => return,
        };
        let mut ok = true;
        for ch in current {
            if sink.subscribe(format!("{GRIP_REDIS_PREFIX}{ch}")).await.is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            backoff = REDIS_BACKOFF_MIN;
            tracing::info!("relay fan-out subscribed to Redis");
            loop {
                tokio::select! {
                    cmd = commands.recv() => {
                        let Some(cmd) = cmd else { return };
                        let Some(h) = hub.upgrade() else { return };
                        let result = match cmd {
                            BusCommand::Subscribe(ch) if h.has_subscribers(&ch) => sink.subscribe(format!("{GRIP_REDIS_PREFIX}{ch}")).await,
                            BusCommand::Unsubscribe(ch) if !h.has_subscribers(&ch) => sink.unsubscribe(format!("{GRIP_REDIS_PREFIX}{ch}")).await,
                            BusCommand::Sync(done) => {
                                let _ = done.send(());
                                Ok(())
                            }
                            _ => Ok(()),
                        };
                        if result.is_err() {
                            break;
                        }
                    }
                    msg = stream.next() => {
                        let Some(msg) = msg else { break };
                        let Some(h) = hub.upgrade() else { return };
                        let channel = msg.get_channel_name();
                        let Some(channel) = channel.strip_prefix(GRIP_REDIS_PREFIX) else { continue };
                        match serde_json::from_slice::<Item>(msg.get_payload_bytes()) {
                            Ok(mut item) => {
                                // The Redis channel names the GRIP channel; trust it over the body.
                                item.channel = channel.to_owned();
                                h.deliver_item(&item);
                            }
                            Err(e) => tracing::warn!(channel, error = %e, "ignoring a malformed item from Redis"),
                        }
                    }
                }
            }
        }
        tracing::warn!("relay fan-out lost Redis; reconnecting");
        if hub.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(REDIS_BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::queue::{send_queue, QueueBound, QueueReceiver};

    fn subscriber(capacity: usize) -> (Subscriber, QueueReceiver, watch::Receiver<CloseRequest>) {
        let (tx, rx) = send_queue(QueueBound { messages: capacity, bytes: 1 << 20 });
        let (ctx, crx) = watch::channel(None);
        (Subscriber { out: tx, close: Arc::new(ctx) }, rx, crx)
    }

    #[tokio::test]
    async fn delivers_to_every_subscriber_and_closes_the_slow_one() {
        let hub = Hub::local();
        let (fast, mut fast_rx, _) = subscriber(8);
        let (slow, _slow_rx, slow_close) = subscriber(1);
        hub.subscribe("c", 1, fast);
        hub.subscribe("c", 2, slow);
        for i in 0..3 {
            hub.publish(&Item::text("c", format!("m{i}"))).await.unwrap();
        }
        for i in 0..3 {
            let Some(Outbound::Item { msg: m, .. }) = fast_rx.recv().await else { panic!() };
            assert_eq!(m.to_text().unwrap(), format!("m{i}"));
        }
        assert_eq!(*slow_close.borrow(), Some(Close::slow_consumer()));
        assert_eq!(hub.stats.slow_consumers.load(Ordering::Relaxed), 2);
        hub.unsubscribe("c", 1);
        hub.unsubscribe("c", 2);
        assert_eq!(hub.channel_count(), 0);
    }
}

//! Token lifetime on live sockets: the relay closes a connection 1008 at its token's `exp`
//! (`auth failed: token expired`) and whenever its `jti` is revoked (`auth failed: token
//! revoked`). The components check tokens and say what the connection holds through
//! `Set-Meta-Token-Exp` and `Set-Meta-Jti` (at OPEN and on each `refresh`); the relay only
//! keeps the deadlines and the `jti` index.
//!
//! One [`Registry`] per relay, not a timer per connection: a sorted set of deadlines and
//! two maps, a few dozen bytes per connection, driven by one task that sleeps until the
//! earliest deadline (woken early when an earlier one is armed). Revocations arrive as GRIP
//! items on [`REVOCATION_CHANNEL`], through the hub like any channel — over Redis when the
//! hub has it (so every relay on that Redis hears each revocation), else from this relay's
//! own `/publish/` — read by one listener task subscribed once per relay.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use earshot_protocol::lifetime::{Revocation, META_JTI, META_TOKEN_EXP, REVOCATION_CHANNEL};
use tokio::sync::{watch, Notify};

use crate::close::Close;
use crate::hub::{request_close, CloseRequest, Hub, Subscriber};
use crate::queue::{send_queue, Outbound, QueueBound};

/// Longest the expiry task sleeps without looking at the wall clock, in milliseconds.
/// Token `exp` is wall-clock time while sleeps run on the monotonic clock; waking at least
/// once a minute bounds how late an expiry fires after the wall clock is stepped forward.
pub(crate) const MAX_TIMER_SLEEP_MS: u64 = 60_000;

/// Revocation notices queued for the listener before the hub drops them. A revocation is
/// handled in microseconds; only a flood far beyond any real revoke rate fills this.
pub(crate) const REVOCATION_QUEUE_MESSAGES: usize = 4096;

/// Bytes of queued revocation notices (each is `{"jti":"…"}`, well under 200 bytes).
pub(crate) const REVOCATION_QUEUE_BYTES: usize = 1024 * 1024;

/// Revoked `jti`s a relay remembers at most. A notice costs about 100 bytes, so the bound
/// is ~10 MB, far above any real revoke rate over a token's lifetime; past it the entries
/// closest to their end are forgotten first.
pub(crate) const MAX_REMEMBERED_REVOCATIONS: usize = 100_000;

/// How long a revocation whose notice carries no `exp` is remembered, in milliseconds: a
/// day, the longest token lifetime by default (`max_token_ttl_s`).
pub(crate) const REMEMBER_REVOCATION_MS: u64 = 24 * 60 * 60 * 1000;

/// The hub key of the revocation listener: session keys count up from 1, so the top of
/// the range is never a connection's.
const LISTENER_KEY: u64 = u64::MAX;

/// What the registry knows of one connection.
#[derive(Debug)]
struct Held<H> {
    /// When its token expires, unix milliseconds.
    exp_ms: Option<u64>,
    jti: Option<Arc<str>>,
    handle: H,
}

/// What [`Registry::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Armed {
    /// Tracked (or forgotten); the earliest deadline did not move earlier.
    Quiet,
    /// Tracked, with the new earliest deadline: the timer must wake.
    Earlier,
    /// Not tracked: the `jti` was revoked; close the connection now.
    Revoked,
}

/// Deadlines and the `jti` index of every tracked connection (`H`: how to reach it), and
/// the `jti`s revoked lately. Pure, so the structure is unit-tested without a runtime.
#[derive(Debug)]
pub(crate) struct Registry<H> {
    /// `(deadline in unix ms, connection)`, earliest first.
    deadlines: BTreeSet<(u64, u64)>,
    held: HashMap<u64, Held<H>>,
    by_jti: HashMap<Arc<str>, Vec<u64>>,
    /// Revoked `jti` → until when it matters (unix ms); with `revoked_order` to forget them.
    revoked: HashMap<Arc<str>, u64>,
    revoked_order: BTreeSet<(u64, Arc<str>)>,
}

impl<H: Clone> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            deadlines: BTreeSet::new(),
            held: HashMap::new(),
            by_jti: HashMap::new(),
            revoked: HashMap::new(),
            revoked_order: BTreeSet::new(),
        }
    }
}

impl<H: Clone> Registry<H> {
    /// Tracks connection `conn` with a token expiring at `exp_ms` holding `jti` (both
    /// replace what was tracked before; neither: forgets it). A `jti` revoked lately is not
    /// tracked but reported, so a revoked token cannot come back by OPEN or refresh on a
    /// component whose revocation list has not heard of it.
    pub(crate) fn set(&mut self, conn: u64, exp_ms: Option<u64>, jti: Option<&str>, handle: H) -> Armed {
        let earliest = self.next_deadline();
        self.remove(conn);
        if jti.is_some_and(|j| self.revoked.contains_key(j)) {
            return Armed::Revoked;
        }
        if exp_ms.is_none() && jti.is_none() {
            return Armed::Quiet;
        }
        let jti: Option<Arc<str>> = jti.map(Arc::from);
        if let Some(jti) = &jti {
            self.by_jti.entry(jti.clone()).or_default().push(conn);
        }
        if let Some(exp) = exp_ms {
            self.deadlines.insert((exp, conn));
        }
        self.held.insert(conn, Held { exp_ms, jti, handle });
        match (exp_ms, earliest) {
            (Some(exp), Some(earliest)) if exp < earliest => Armed::Earlier,
            (Some(_), None) => Armed::Earlier,
            _ => Armed::Quiet,
        }
    }

    /// Forgets connection `conn`.
    pub(crate) fn remove(&mut self, conn: u64) {
        let Some(held) = self.held.remove(&conn) else { return };
        if let Some(exp) = held.exp_ms {
            self.deadlines.remove(&(exp, conn));
        }
        if let Some(jti) = held.jti {
            if let Some(conns) = self.by_jti.get_mut(&jti) {
                conns.retain(|c| *c != conn);
                if conns.is_empty() {
                    self.by_jti.remove(&jti);
                }
            }
        }
    }

    /// The earliest deadline, unix milliseconds.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Removes and returns every connection whose deadline is at or before `now_ms` (and
    /// forgets the revocations that ended by then).
    pub(crate) fn expire(&mut self, now_ms: u64) -> Vec<H> {
        while let Some((until, jti)) = self.revoked_order.first().cloned() {
            if until > now_ms {
                break;
            }
            self.revoked_order.remove(&(until, jti.clone()));
            self.revoked.remove(&jti);
        }
        let mut due = Vec::new();
        while let Some(&(t, conn)) = self.deadlines.first() {
            if t > now_ms {
                break;
            }
            if let Some(h) = self.held.get(&conn) {
                due.push(h.handle.clone());
            }
            self.remove(conn);
        }
        due
    }

    /// Removes and returns every connection holding `jti`, and remembers the revocation
    /// until `until_ms` (unix ms).
    pub(crate) fn revoke(&mut self, jti: &str, until_ms: u64) -> Vec<H> {
        let jti_rc: Arc<str> = Arc::from(jti);
        if let Some(old) = self.revoked.insert(jti_rc.clone(), until_ms) {
            self.revoked_order.remove(&(old, jti_rc.clone()));
        }
        self.revoked_order.insert((until_ms, jti_rc));
        while self.revoked.len() > MAX_REMEMBERED_REVOCATIONS {
            let Some((_, oldest)) = self.revoked_order.pop_first() else { break };
            self.revoked.remove(&oldest);
        }
        let conns = self.by_jti.get(jti).cloned().unwrap_or_default();
        let mut hit = Vec::with_capacity(conns.len());
        for conn in conns {
            if let Some(h) = self.held.get(&conn) {
                hit.push(h.handle.clone());
            }
            self.remove(conn);
        }
        hit
    }

    /// Connections tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

/// How the relay reaches a connection: the close request its session watches.
type Handle = Arc<watch::Sender<CloseRequest>>;

/// The relay's token-lifetime state: the registry, the wake-up of its expiry task, and
/// whether the two tasks run.
#[derive(Default)]
pub(crate) struct Lifetimes {
    registry: Mutex<Registry<Handle>>,
    wake: Notify,
    started: AtomicBool,
}

impl Lifetimes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry<Handle>> {
        // Critical sections only move entries between maps; a panic cannot leave them
        // half-updated in a way that matters, so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the expiry task and the revocation listener once; later calls do nothing.
    /// Must run inside a tokio runtime.
    pub(crate) fn start(self: &Arc<Self>, hub: &Arc<Hub>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(expire_loop(self.clone()));
        let (out, mut rx) = send_queue(QueueBound { messages: REVOCATION_QUEUE_MESSAGES, bytes: REVOCATION_QUEUE_BYTES });
        // Nothing closes the listener: a full queue only drops notices (logged below).
        let (close, mut closed) = watch::channel::<CloseRequest>(None);
        let close = Arc::new(close);
        hub.subscribe(REVOCATION_CHANNEL, LISTENER_KEY, Subscriber { out, close: close.clone() });
        let lifetimes = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(Outbound::Item { msg, .. }) => match msg.to_text().ok().and_then(Revocation::parse) {
                            Some(r) => lifetimes.revoke(&r.jti, r.exp),
                            None => tracing::warn!(channel = REVOCATION_CHANNEL, "ignoring a malformed revocation notice"),
                        },
                        Some(_) => {}
                        None => return,
                    },
                    Ok(()) = closed.changed() => {
                        tracing::error!(channel = REVOCATION_CHANNEL, "revocation notices dropped: the listener's queue was full");
                        close.send_replace(None);
                    }
                }
            }
        });
    }

    /// Tracks connection `conn` from its `Meta-*` (`token-exp`, `jti`), re-arming its timer.
    pub(crate) fn track(&self, conn: u64, meta: &std::collections::BTreeMap<String, String>, close: &Handle) {
        let exp_ms = meta.get(META_TOKEN_EXP).and_then(|v| v.parse::<u64>().ok()).map(|s| s.saturating_mul(1000));
        let jti = meta.get(META_JTI).map(String::as_str).filter(|j| !j.is_empty());
        match self.lock().set(conn, exp_ms, jti, close.clone()) {
            Armed::Quiet => {}
            Armed::Earlier => self.wake.notify_one(),
            Armed::Revoked => request_close(close, Close::token_revoked()),
        }
    }

    /// Forgets connection `conn` (its session ended).
    pub(crate) fn forget(&self, conn: u64) {
        self.lock().remove(conn);
    }

    /// Closes every connection holding `jti` with 1008 `auth failed: token revoked`, and
    /// refuses it to later connections until `exp` (unix seconds; absent: for a day).
    pub(crate) fn revoke(&self, jti: &str, exp: Option<u64>) {
        let until_ms = exp.map_or_else(|| now_unix_ms().saturating_add(REMEMBER_REVOCATION_MS), |s| s.saturating_mul(1000));
        let hit = self.lock().revoke(jti, until_ms);
        if !hit.is_empty() {
            tracing::info!(connections = hit.len(), "closing the connections of a revoked token");
        }
        for close in hit {
            request_close(&close, Close::token_revoked());
        }
    }

    /// Closes every connection whose token expired by `now_ms`; returns the next deadline.
    fn expire(&self, now_ms: u64) -> Option<u64> {
        let (due, next) = {
            let mut registry = self.lock();
            let due = registry.expire(now_ms);
            (due, registry.next_deadline())
        };
        for close in due {
            request_close(&close, Close::token_expired());
        }
        next
    }

    /// Connections tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// Whether a backend response sets the connection's `token-exp` or `jti` to something
/// else than `meta` holds (the components send every field on every reply, so most
/// replies change nothing and cost no lock).
pub(crate) fn renews(headers: &http::HeaderMap, meta: &std::collections::BTreeMap<String, String>) -> bool {
    [META_TOKEN_EXP, META_JTI].iter().any(|field| {
        let set = headers.get(format!("set-meta-{field}").as_str()).and_then(|v| v.to_str().ok());
        set.is_some_and(|v| meta.get(*field).map(String::as_str) != Some(v))
    })
}

/// Wall-clock unix milliseconds (token `exp` is wall-clock time).
fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Sleeps until the earliest deadline (or a wake-up), closes what expired, repeats.
async fn expire_loop(lifetimes: Arc<Lifetimes>) {
    loop {
        let woken = lifetimes.wake.notified();
        tokio::pin!(woken);
        // Registered before reading the deadline, so an earlier one armed meanwhile wakes us.
        woken.as_mut().enable();
        let now = now_unix_ms();
        let next = lifetimes.expire(now);
        let sleep_ms = next.map_or(MAX_TIMER_SLEEP_MS, |t| t.saturating_sub(now)).min(MAX_TIMER_SLEEP_MS);
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_out_in_order_and_only_when_due() {
        let mut r = Registry::default();
        assert_eq!(r.set(1, Some(3_000), None, "a"), Armed::Earlier, "the first deadline wakes the timer");
        assert_eq!(r.set(2, Some(1_000), None, "b"), Armed::Earlier, "an earlier one wakes it");
        assert_eq!(r.set(3, Some(2_000), None, "c"), Armed::Quiet, "a later one does not");
        assert_eq!(r.next_deadline(), Some(1_000));
        assert!(r.expire(999).is_empty());
        assert_eq!(r.expire(2_000), ["b", "c"]);
        assert_eq!(r.next_deadline(), Some(3_000));
        assert_eq!(r.len(), 1);
        assert_eq!(r.expire(u64::MAX), ["a"]);
        assert_eq!((r.len(), r.next_deadline()), (0, None));
    }

    #[test]
    fn re_arming_replaces_the_old_deadline() {
        let mut r = Registry::default();
        r.set(1, Some(1_000), Some("j1"), "a");
        assert_eq!(r.set(1, Some(60_000), Some("j2"), "a"), Armed::Quiet, "a refresh moves the deadline later");
        assert!(r.expire(30_000).is_empty(), "the old deadline is gone");
        assert!(r.revoke("j1", 90_000).is_empty(), "so is the old jti");
        assert_eq!(r.next_deadline(), Some(60_000));
        assert_eq!(r.revoke("j2", 90_000), ["a"]);
        assert_eq!((r.len(), r.next_deadline()), (0, None), "revoked connections leave the timer too");
    }

    #[test]
    fn revoking_a_jti_hits_every_connection_holding_it_and_no_other() {
        let mut r = Registry::default();
        r.set(1, Some(5_000), Some("shared"), "mic");
        r.set(2, Some(5_000), Some("shared"), "sys");
        r.set(3, Some(5_000), Some("other"), "page");
        r.set(4, None, Some("shared"), "no-exp");
        let mut hit = r.revoke("shared", 9_000);
        hit.sort_unstable();
        assert_eq!(hit, ["mic", "no-exp", "sys"]);
        assert!(r.revoke("shared", 9_000).is_empty(), "a second notice finds nothing");
        assert!(r.revoke("unknown", 9_000).is_empty());
        assert_eq!(r.len(), 1);
        assert_eq!(r.expire(5_000), ["page"]);
    }

    #[test]
    fn removing_and_untracked_connections_leave_nothing_behind() {
        let mut r = Registry::default();
        assert_eq!(r.set(1, None, None, "x"), Armed::Quiet, "nothing to track");
        assert_eq!(r.len(), 0);
        r.set(2, Some(10), Some("j"), "y");
        r.set(3, Some(10), Some("j"), "z");
        r.remove(2);
        r.remove(2);
        assert_eq!(r.expire(10), ["z"]);
        assert!(r.by_jti.is_empty() && r.deadlines.is_empty() && r.held.is_empty());
    }

    #[test]
    fn a_revoked_jti_is_refused_until_its_token_would_have_expired() {
        let mut r = Registry::default();
        r.revoke("gone", 5_000);
        assert_eq!(r.set(1, Some(4_000), Some("gone"), "late open"), Armed::Revoked);
        assert_eq!(r.len(), 0, "a refused connection is not tracked");
        assert_eq!(r.set(2, Some(4_000), Some("fine"), "other"), Armed::Earlier);
        assert_eq!(r.expire(4_000), ["other"]);
        assert!(r.expire(5_000).is_empty());
        assert_eq!(r.set(3, Some(9_000), Some("gone"), "much later"), Armed::Earlier, "forgotten once it no longer matters");
    }

    #[test]
    fn remembered_revocations_are_bounded() {
        let mut r: Registry<&str> = Registry::default();
        for i in 0..=MAX_REMEMBERED_REVOCATIONS as u64 {
            r.revoke(&format!("j{i}"), 1_000 + i);
        }
        assert_eq!(r.revoked.len(), MAX_REMEMBERED_REVOCATIONS);
        assert!(!r.revoked.contains_key("j0"), "the one closest to its end goes first");
        assert_eq!(r.set(1, Some(10), Some("j0"), "x"), Armed::Earlier);
        assert_eq!(r.set(2, Some(10), Some("j1"), "y"), Armed::Revoked);
    }

    #[test]
    fn only_a_changed_lifetime_counts_as_a_renewal() {
        let meta = std::collections::BTreeMap::from([("token-exp".to_owned(), "100".to_owned()), ("jti".to_owned(), "j".to_owned())]);
        let mut headers = http::HeaderMap::new();
        assert!(!renews(&headers, &meta), "a reply without the fields");
        headers.insert("set-meta-token-exp", http::HeaderValue::from_static("100"));
        headers.insert("set-meta-jti", http::HeaderValue::from_static("j"));
        assert!(!renews(&headers, &meta), "the same values again");
        headers.insert("set-meta-token-exp", http::HeaderValue::from_static("160"));
        assert!(renews(&headers, &meta));
        headers.insert("set-meta-token-exp", http::HeaderValue::from_static("100"));
        headers.insert("set-meta-jti", http::HeaderValue::from_static(""));
        assert!(renews(&headers, &meta), "a cleared jti");
    }

    #[tokio::test]
    async fn the_expiry_task_closes_at_exp_and_a_revocation_closes_at_once() {
        let hub = Hub::local();
        let lifetimes = Arc::new(Lifetimes::default());
        lifetimes.start(&hub);
        let now_s = now_unix_ms() / 1000;
        let (expiring, mut expiring_rx) = watch::channel::<CloseRequest>(None);
        let (revoked, mut revoked_rx) = watch::channel::<CloseRequest>(None);
        let meta = |exp: u64, jti: &str| {
            std::collections::BTreeMap::from([("token-exp".to_owned(), exp.to_string()), ("jti".to_owned(), jti.to_owned())])
        };
        lifetimes.track(1, &meta(now_s + 1, "j1"), &Arc::new(expiring));
        lifetimes.track(2, &meta(now_s + 3600, "j2"), &Arc::new(revoked));
        assert_eq!(lifetimes.tracked(), 2);

        let item = earshot_protocol::grip::Item::text(REVOCATION_CHANNEL, Revocation { jti: "j2".into(), exp: None }.to_json());
        hub.publish(&item).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), revoked_rx.wait_for(Option::is_some)).await.unwrap().unwrap();
        let close = revoked_rx.borrow().clone().unwrap();
        assert_eq!((close.code(), close.reason()), (1008, "auth failed: token revoked"));
        assert!(expiring_rx.borrow().is_none(), "the other connection is untouched");
        let (late, late_rx) = watch::channel::<CloseRequest>(None);
        lifetimes.track(3, &meta(now_s + 3600, "j2"), &Arc::new(late));
        assert_eq!(late_rx.borrow().clone(), Some(Close::token_revoked()), "a revoked jti cannot come back");

        tokio::time::timeout(Duration::from_secs(3), expiring_rx.wait_for(Option::is_some)).await.unwrap().unwrap();
        let at = now_unix_ms();
        assert!(at >= (now_s + 1) * 1000, "not before exp");
        let close = expiring_rx.borrow().clone().unwrap();
        assert_eq!((close.code(), close.reason()), (1008, "auth failed: token expired"));
        assert_eq!(lifetimes.tracked(), 0);
    }
}

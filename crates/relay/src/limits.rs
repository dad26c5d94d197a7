//! Connection limits answered before the upgrade: a per-IP cap and a total cap, so one
//! client (or a flood) cannot exhaust the relay's sockets and memory for everyone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Default most WebSockets from one IP address. A capture agent holds two (mic, sys)
/// and a browser a few more; 64 covers an office behind one NAT while stopping a
/// single client from opening thousands.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;

/// Default most WebSockets in total. An idle connection costs the relay a few KiB;
/// 50,000 stays far inside this machine's memory and a raised file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS_TOTAL: usize = 50_000;

/// Seconds a refused client is told to wait (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 5;

/// Why a connection was refused before upgrading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// This IP already holds its share (HTTP 429).
    #[error("too many connections from this address")]
    PerIp,
    /// The relay is full (HTTP 503).
    #[error("relay at capacity")]
    Total,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Shared counters of open WebSockets.
pub(crate) struct ConnectionLimits {
    per_ip_max: usize,
    total_max: usize,
    counts: Arc<Mutex<Counts>>,
}

/// Holds one connection's place; releasing it on drop.
pub(crate) struct Slot {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimits {
    pub(crate) fn new(per_ip_max: usize, total_max: usize) -> Self {
        ConnectionLimits { per_ip_max, total_max, counts: Arc::default() }
    }

    /// Takes a place for a connection from `ip`, or says why not.
    pub(crate) fn acquire(&self, ip: IpAddr) -> Result<Slot, LimitError> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.total_max {
            return Err(LimitError::Total);
        }
        let n = c.per_ip.entry(ip).or_default();
        if *n >= self.per_ip_max {
            return Err(LimitError::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot { ip, counts: self.counts.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Whether a browser `Origin` may open a WebSocket: no Origin (non-browser clients),
/// the same origin as the request's `Host`, or one of `allowed` (`*` allows all).
pub(crate) fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_ip_and_total_and_release_on_drop() {
        let limits = ConnectionLimits::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limits.acquire(a).unwrap();
        let _s2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).err(), Some(LimitError::PerIp));
        let _s3 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).err(), Some(LimitError::Total));
        drop(s1);
        assert!(limits.acquire(a).is_ok());
    }

    #[test]
    fn origins_same_origin_listed_or_absent() {
        assert!(origin_allowed(None, Some("x:1"), &[]));
        assert!(origin_allowed(Some("http://127.0.0.1:3000"), Some("127.0.0.1:3000"), &[]));
        assert!(!origin_allowed(Some("http://evil.example"), Some("127.0.0.1:3000"), &[]));
        assert!(origin_allowed(Some("https://app.example"), Some("api"), &["https://app.example".into()]));
        assert!(origin_allowed(Some("https://any"), None, &["*".into()]));
    }
}

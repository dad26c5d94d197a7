//! The sweeper's figures on `/metrics` (Prometheus text), per process.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one sweeper.
#[derive(Debug, Default)]
pub struct SweeperStats {
    /// Meeting ends this sweeper announced (it won the claim).
    pub meetings_ended: AtomicU64,
    /// Webhook deliveries a receiver accepted (2xx).
    pub webhooks_delivered: AtomicU64,
    /// Webhook attempts that failed (non-2xx, timeout, connection refused).
    pub webhook_attempts_failed: AtomicU64,
    /// Deliveries dropped after their last attempt failed.
    pub webhooks_abandoned: AtomicU64,
    /// Sweep steps that failed (Redis unreachable…).
    pub sweep_errors: AtomicU64,
}

impl SweeperStats {
    /// Prometheus text exposition of the counters.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let rows = [
            ("earshot_meetings_ended_total", "Meeting ends this process announced.", &self.meetings_ended),
            ("earshot_webhook_deliveries_total", "meeting.ended webhooks a receiver accepted.", &self.webhooks_delivered),
            ("earshot_webhook_attempt_failures_total", "meeting.ended webhook attempts that failed.", &self.webhook_attempts_failed),
            ("earshot_webhook_abandoned_total", "meeting.ended webhooks dropped after their last attempt.", &self.webhooks_abandoned),
            ("earshot_meeting_sweep_errors_total", "Meeting sweeps that failed (Redis).", &self.sweep_errors),
        ];
        for (name, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

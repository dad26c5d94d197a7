//! `GET /metrics`: Prometheus text exposition of the relay's live counters, so soak
//! tests and operators can see connections, tasks and memory return to baseline.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use earshot_relay::Relay;

/// Resident memory of this process in bytes (Linux `/proc/self/status` VmRSS).
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Renders the metrics page.
pub(crate) fn render(
    relay: &Relay,
    asr: Option<&earshot_transcriber::WorkerStats>,
    meetings: Option<&earshot_meetings::SweeperStats>,
) -> String {
    let hub = relay.hub();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    gauge("earshot_ws_sessions_open", "WebSocket sessions open now.", "gauge", relay.open_sessions());
    gauge("earshot_hub_channels", "Channels with at least one local subscriber.", "gauge", hub.channel_count() as u64);
    gauge("earshot_hub_published_total", "Items published.", "counter", hub.stats.published.load(Ordering::Relaxed));
    gauge("earshot_hub_delivered_total", "Messages handed to subscriber queues.", "counter", hub.stats.delivered.load(Ordering::Relaxed));
    gauge("earshot_hub_slow_consumers_total", "Subscribers closed with 4008.", "counter", hub.stats.slow_consumers.load(Ordering::Relaxed));
    gauge(
        "earshot_tokio_alive_tasks",
        "Tasks alive on the runtime (a leak shows as growth).",
        "gauge",
        tokio::runtime::Handle::current().metrics().num_alive_tasks() as u64,
    );
    if let Some(rss) = rss_bytes() {
        gauge("earshot_process_resident_memory_bytes", "Resident memory.", "gauge", rss);
    }
    if let Some(asr) = asr {
        out.push_str(&asr.render_prometheus());
    }
    if let Some(meetings) = meetings {
        out.push_str(&meetings.render_prometheus());
    }
    out
}

//! Scenario 2, idle connections: N subscriber WebSockets (`/api/v1/ws/meetings/{id}`,
//! 100 per meeting) opened and held. Measured: the relay's resident memory per
//! connection ((RSS with N − RSS before) / N), how fast they open, the servers' CPU
//! while nothing happens, and the CPU each client keep-alive (`{"type":"keepalive"}`,
//! which the relay forwards to the component as a TEXT event) costs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{SplitSink, StreamExt};
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Dialer, Ws};
use crate::config::Sizes;
use crate::procfs::{self, CpuMeter};
use crate::report::Runs;
use crate::systems::{settle, System};

/// Memory left on the machine below which no more connections are opened: 100k idle
/// connections must never push the machine (shared with other work) into the OOM killer.
const MEMORY_FLOOR_BYTES: u64 = 4 << 30;
/// Connections opened between two looks at the free memory.
const MEMORY_CHECK_EVERY: usize = 1000;

/// Time after the last connection opened before memory is read, so subscriptions and
/// allocator caches are in place.
const SETTLE_AFTER_OPEN: Duration = Duration::from_secs(1);

/// One system's numbers over the runs.
#[derive(Default)]
pub(crate) struct IdleRuns {
    /// Connections held.
    pub(crate) connections: usize,
    /// Relay resident memory per connection, bytes.
    pub(crate) rss_per_conn: Runs,
    /// Resident memory per connection of the component host behind a separate relay.
    pub(crate) backend_rss_per_conn: Runs,
    /// Connections opened per second.
    pub(crate) opened_per_s: Runs,
    /// Server CPU with every connection idle, percent of one core.
    pub(crate) idle_cpu: Runs,
    /// Server CPU with the keep-alive load, percent of one core.
    pub(crate) keepalive_cpu: Runs,
    /// Server CPU per keep-alive, µs.
    pub(crate) keepalive_cpu_us: Runs,
    /// Connections the server closed while they were held, over all runs.
    pub(crate) closed_by_server: usize,
    /// Upgrades retried after a 5xx answer.
    pub(crate) upgrade_retries: usize,
}

type Sink = SplitSink<Ws, Message>;

/// Runs the scenario: `n` connections opened once (opening 100k takes a minute or
/// more per system), then the CPU windows repeated `sizes.reps` times.
pub(crate) async fn run(
    sys: &System,
    sizes: &Sizes,
    n: usize,
    runs: &mut IdleRuns,
) -> anyhow::Result<()> {
    let dialer = Arc::new(Dialer::new(&sys.ws_base)?);
    // Warm-up: first instances and channel subscriptions are not counted.
    let (warm, _) = open(&dialer, sys, "idlew", 64, sizes.idle_per_meeting).await?;
    drop(warm);
    settle(sys, Duration::from_secs(20)).await;
    eprintln!("  idle {}: opening {n} connections", sys.name);
    let relay0 = procfs::rss_sum(&sys.relay_pids());
    let backend0 = procfs::rss_sum(&sys.backend_pids());
    let t0 = Instant::now();
    let (mut held, closed) = open(
        &dialer,
        sys,
        &format!("idle-{}", client::now_ns()),
        n,
        sizes.idle_per_meeting,
    )
    .await?;
    let n = held.sinks.len();
    runs.connections = n;
    runs.opened_per_s
        .push(n as f64 / t0.elapsed().as_secs_f64());
    tokio::time::sleep(SETTLE_AFTER_OPEN).await;
    if sys.observed() {
        let relay1 = procfs::rss_sum(&sys.relay_pids());
        runs.rss_per_conn
            .push(relay1.saturating_sub(relay0) as f64 / n as f64);
        if !sys.backend_pids().is_empty() {
            let backend1 = procfs::rss_sum(&sys.backend_pids());
            runs.backend_rss_per_conn
                .push(backend1.saturating_sub(backend0) as f64 / n as f64);
        }
    }
    for rep in 0..sizes.reps {
        eprintln!(
            "  idle {}: CPU windows {}/{}",
            sys.name,
            rep + 1,
            sizes.reps
        );
        settle(sys, Duration::from_secs(10)).await;
        if sys.observed() {
            let meter = CpuMeter::start(&sys.server_pids());
            tokio::time::sleep(sizes.idle_window).await;
            runs.idle_cpu.push(meter.percent());
        }
        // Keep-alives: each client every `keepalive_period`, spread evenly.
        let rate = n as f64 / sizes.keepalive_period.as_secs_f64();
        let meter = CpuMeter::start(&sys.server_pids());
        let sent = keepalives(&mut held, rate, sizes.keepalive_window).await;
        // Let the last ones be processed before reading the CPU.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if sys.observed() {
            let (cpu, wall) = meter.read();
            runs.keepalive_cpu
                .push(100.0 * cpu.as_secs_f64() / wall.as_secs_f64());
            runs.keepalive_cpu_us
                .push(cpu.as_secs_f64() * 1e6 / sent.max(1) as f64);
        }
        sys.check_alive()?;
    }
    runs.closed_by_server = closed.load(Ordering::Relaxed);
    runs.upgrade_retries = dialer.retried();
    drop(held);
    Ok(())
}

/// Held connections: their write halves, and reader tasks that answer pings and count
/// closes from the server (aborted on drop).
struct Held {
    sinks: Vec<Sink>,
    readers: tokio::task::JoinSet<()>,
}

async fn open(
    dialer: &Arc<Dialer>,
    sys: &System,
    tag: &str,
    n: usize,
    per_meeting: usize,
) -> anyhow::Result<(Held, Arc<AtomicUsize>)> {
    let meetings = n.div_ceil(per_meeting);
    let tokens: Vec<(String, String)> = (0..meetings)
        .map(|m| {
            let id = format!("{tag}-{m}");
            let t = client::token(&sys.secret, "subscribe", &[&id]);
            (id, t)
        })
        .collect();
    let tokens = Arc::new(tokens);
    let closed = Arc::new(AtomicUsize::new(0));
    let mut held = Held {
        sinks: Vec::with_capacity(n),
        readers: tokio::task::JoinSet::new(),
    };
    let mut stream = futures::stream::iter(0..n)
        .map(|i| {
            let dialer = dialer.clone();
            let tokens = tokens.clone();
            async move {
                let (id, t) = &tokens[i % tokens.len()];
                dialer
                    .connect(&format!("/api/v1/ws/meetings/{id}?token={t}"))
                    .await
            }
        })
        .buffer_unordered(client::CONNECT_CONCURRENCY);
    let mut opened = 0usize;
    while let Some(ws) = stream.next().await {
        let (sink, mut rx) = ws?.split();
        opened += 1;
        if opened.is_multiple_of(MEMORY_CHECK_EVERY) && procfs::mem_available() < MEMORY_FLOOR_BYTES
        {
            eprintln!(
                "  idle {}: stopping at {opened} connections: less than {} GiB of memory left",
                sys.name,
                MEMORY_FLOOR_BYTES >> 30
            );
            held.sinks.push(sink);
            break;
        }
        held.sinks.push(sink);
        let closed = closed.clone();
        held.readers.spawn(async move {
            while let Some(m) = rx.next().await {
                if matches!(m, Ok(Message::Close(_)) | Err(_)) {
                    closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        });
    }
    Ok((held, closed))
}

/// Sends `{"type":"keepalive"}` round-robin over the connections at `rate`/s for
/// `window`; returns how many were sent (a connection the server closed is skipped).
async fn keepalives(held: &mut Held, rate: f64, window: Duration) -> u64 {
    let msg = Message::text(r#"{"type":"keepalive"}"#);
    let n = held.sinks.len();
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut next = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while start.elapsed() < window {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let sink = &mut held.sinks[next % n];
            next += 1;
            if sink.send(msg.clone()).await.is_ok() {
                sent += 1;
            } else if next > 2 * n + due as usize {
                return sent;
            }
        }
    }
    sent
}

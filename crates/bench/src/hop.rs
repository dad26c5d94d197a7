//! Scenario 1, component hop: one WebSocket event through the relay into the ingest
//! component and its reply back out — the ingest handshake (`handshake` text →
//! `handshake_ack`). The relay reads the frame, builds the WebSocket-over-HTTP request
//! (handshake headers replayed, `Meta-*` state), the host runs a fresh instance of
//! ingest.wasm (decode events and state, validate the format, draw a session id, log,
//! answer with `Set-Meta-*`), the relay decodes the answer and writes the reply frame.
//! One Redis round trip on this path since issue 10 (the session announcement to the
//! transcription workers). Each connection handshakes once, so connections are opened in
//! batches (untimed; OPEN authenticates, rate-limits in Redis, announces presence), then
//! only the handshakes are timed, then the batch is closed before the next one.

use std::time::Instant;

use futures::future::join_all;

use crate::client::{self, Agent, Dialer, Ws};
use crate::config::Sizes;
use crate::report::{latency_us, Runs};
use crate::procfs;
use crate::systems::{settle, System};

/// One run's numbers.
#[derive(Default)]
pub(crate) struct HopRuns {
    /// Handshake round trip at concurrency 1, p50 and p99 in µs.
    pub(crate) p50_us: Runs,
    pub(crate) p99_us: Runs,
    /// Handshakes completed per second with a batch in flight at once.
    pub(crate) events_per_s: Runs,
    /// Server CPU time per handshake in the throughput windows, µs (NaN: not observed).
    pub(crate) cpu_us_per_event: Runs,
    /// Connection open (TCP + upgrade, incl. the OPEN event) p50 in µs, one at a time.
    pub(crate) open_p50_us: Runs,
}

struct Batch {
    conns: Vec<Ws>,
    open_ns: Vec<u64>,
}

/// Opens `n` connections, all at once, or one after the other when `sequential` (then
/// each open is timed unloaded).
async fn open_batch(
    dialer: &Dialer,
    sys: &System,
    tag: &str,
    n: usize,
    sequential: bool,
) -> anyhow::Result<Batch> {
    let opens = (0..n).map(|i| {
        let meeting = format!("{tag}-{i}");
        let token = client::token(&sys.secret, "ingest", &[&meeting]);
        async move {
            let path = format!("/api/v1/ws/ingest/meetings/{meeting}?source=mic&token={token}");
            let t0 = Instant::now();
            let ws = dialer.connect(&path).await?;
            Ok::<_, anyhow::Error>((ws, t0.elapsed().as_nanos() as u64))
        }
    });
    let mut batch = Batch {
        conns: Vec::with_capacity(n),
        open_ns: Vec::with_capacity(n),
    };
    let results = if sequential {
        let mut v = Vec::with_capacity(n);
        for o in opens {
            v.push(o.await);
        }
        v
    } else {
        join_all(opens).await
    };
    for r in results {
        let (ws, ns) = r?;
        batch.conns.push(ws);
        batch.open_ns.push(ns);
    }
    Ok(batch)
}

/// Ends a batch cleanly (`close_stream` → `closed` → close) so nothing of it is still
/// being processed when the next batch is timed.
async fn close_batch(agents: Vec<Agent>) -> anyhow::Result<()> {
    for r in join_all(agents.into_iter().map(Agent::close_stream)).await {
        r?;
    }
    Ok(())
}

/// Longest wait for the server to go quiet before a timed section: a batch's opens and
/// the previous batch's closes (DISCONNECT calls: presence, talk stats, the session's end)
/// run on after the client is done with them, and without the wait they were timed as
/// part of the next batch's handshakes.
const HOP_SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(3);

/// With `EARSHOT_BENCH_PERF_CTL` naming the control FIFO of a `perf record
/// --control=fifo:<path> -D -1` attached to the server, sampling runs only inside the
/// timed throughput windows: a profile of handshakes alone, without the untimed opens
/// and closes around them (how BENCHMARKS.md's hop profile is taken).
fn perf_control(command: &str) {
    if let Some(path) = std::env::var_os("EARSHOT_BENCH_PERF_CTL") {
        // Non-blocking: once perf has exited (its server stopped), opening the FIFO would
        // otherwise wait for a reader forever; then the open fails and the run goes on.
        use std::os::unix::fs::OpenOptionsExt;
        if let Err(e) = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&path).and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("{command}\n").as_bytes())
        }) {
            eprintln!("  perf control {command}: {e}");
        }
    }
}

/// Runs the scenario `sizes.reps` times against `sys`.
pub(crate) async fn run(sys: &System, sizes: &Sizes, runs: &mut HopRuns) -> anyhow::Result<()> {
    let dialer = Dialer::new(&sys.ws_base)?;
    // Warm-up: the first instances, Redis scripts and allocator pools are not timed.
    let warm = open_batch(
        &dialer,
        sys,
        &format!("hopw-{}", client::now_ns()),
        32,
        false,
    )
    .await?;
    let mut agents = Vec::with_capacity(warm.conns.len());
    for ws in warm.conns {
        agents.push(client::handshake(ws).await?);
    }
    close_batch(agents).await?;

    for rep in 0..sizes.reps {
        eprintln!("  hop {}: run {}/{}", sys.name, rep + 1, sizes.reps);
        let stamp = client::now_ns();
        // Latency: one open, then one handshake at a time.
        let mut lat = Vec::new();
        let mut open = Vec::new();
        for b in 0..sizes.hop_latency_samples.div_ceil(sizes.hop_batch) {
            let batch = open_batch(
                &dialer,
                sys,
                &format!("hopl-{stamp}-{b}"),
                sizes.hop_batch,
                true,
            )
            .await?;
            open.extend_from_slice(&batch.open_ns);
            settle(sys, HOP_SETTLE_MAX).await;
            let mut agents = Vec::with_capacity(batch.conns.len());
            for ws in batch.conns {
                let t0 = Instant::now();
                agents.push(client::handshake(ws).await?);
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            close_batch(agents).await?;
            settle(sys, HOP_SETTLE_MAX).await;
        }
        // Throughput: a whole batch in flight at once; only the handshakes are timed.
        let mut timed = 0.0;
        let mut done = 0usize;
        let mut cpu = std::time::Duration::ZERO;
        for b in 0..sizes.hop_throughput_events.div_ceil(sizes.hop_batch) {
            let batch = open_batch(
                &dialer,
                sys,
                &format!("hopt-{stamp}-{b}"),
                sizes.hop_batch,
                false,
            )
            .await?;
            settle(sys, HOP_SETTLE_MAX).await;
            let meter = procfs::CpuMeter::start(&sys.server_pids());
            perf_control("enable");
            let t0 = Instant::now();
            let handshaken = join_all(batch.conns.into_iter().map(client::handshake)).await;
            timed += t0.elapsed().as_secs_f64();
            perf_control("disable");
            cpu += meter.read().0;
            let agents = handshaken.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
            done += agents.len();
            close_batch(agents).await?;
            settle(sys, HOP_SETTLE_MAX).await;
        }
        sys.check_alive()?;
        let (p50, p99, _) = latency_us(&mut lat).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        runs.p50_us.push(p50);
        runs.p99_us.push(p99);
        runs.events_per_s.push(done as f64 / timed);
        runs.cpu_us_per_event.push(if sys.observed() { cpu.as_secs_f64() * 1e6 / done.max(1) as f64 } else { f64::NAN });
        runs.open_p50_us
            .push(latency_us(&mut open).map_or(f64::NAN, |l| l.0));
    }
    Ok(())
}

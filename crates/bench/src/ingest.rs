//! Scenario 4, ingest: K concurrent capture agents, each on its own meeting
//! (`/api/v1/ws/ingest/meetings/{id}?source=mic`), handshake, then real-time PCM —
//! 16 kHz s16le mono, one 640-byte frame every 20 ms, the K streams' phases spread over
//! the 20 ms — then `close_stream`. A trial passes when every stream's `closed` totals
//! equal what it sent (every frame stored, none lost), no stream was closed otherwise,
//! and the ack latency p99 (a frame's send → the first ack whose count covers it) stays
//! within one second, the contract's "ack at least every second". The bench doubles K
//! from a start value while trials pass, bisects between the last pass and the first
//! failure, and repeats the largest passing K for the remaining runs.

use std::sync::Arc;
use std::time::Duration;

use earshot_agent::{AgentError, Event};
use futures::StreamExt;
use tokio::time::Instant;

use crate::client::{self, Agent, Dialer};
use crate::config::Sizes;
use crate::procfs::CpuMeter;
use crate::report::{latency_us, percentile, Runs};
use crate::systems::{settle, System};

/// One frame: 20 ms of 16 kHz, 16-bit, mono PCM.
const FRAME_BYTES: usize = 640;
/// Frame period.
const FRAME_PERIOD: Duration = Duration::from_millis(20);
/// Ack latency p99 a passing trial stays within (DESIGN.md: acks at least every second).
const ACK_P99_LIMIT: Duration = Duration::from_secs(1);
/// Time between the end of the ramp and the first frame.
const START_DELAY: Duration = Duration::from_millis(300);
/// How long after its last frame a stream waits for its `closed` totals.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Client send lateness p99 above which the load side, not the server, is the limit.
const LOAD_SIDE_LATE: Duration = Duration::from_millis(20);

/// One system's numbers.
#[derive(Default)]
pub(crate) struct IngestRuns {
    /// Largest K that passed.
    pub(crate) max_streams: Runs,
    /// At that K, per run: ack latency in ms.
    pub(crate) ack_p50_ms: Runs,
    pub(crate) ack_p99_ms: Runs,
    pub(crate) ack_max_ms: Runs,
    /// Frames stored per second at that K.
    pub(crate) frames_per_s: Runs,
    /// Server CPU at that K, percent of one core.
    pub(crate) server_cpu: Runs,
    /// One line per trial: K and its outcome.
    pub(crate) trials: Vec<String>,
    /// Upgrades retried after a 5xx answer.
    pub(crate) upgrade_retries: usize,
}

struct Trial {
    pass: bool,
    why: String,
    ack_ns: Vec<u64>,
    frames_per_s: f64,
    server_cpu: f64,
}

/// A sine tone, so the frames look like audio to anything that inspects them.
fn pcm_frame() -> Vec<u8> {
    (0..FRAME_BYTES / 2)
        .flat_map(|i| {
            let s = (f64::from(i as u32) * 2.0 * std::f64::consts::PI * 440.0 / 16_000.0).sin()
                * 3000.0;
            (s as i16).to_le_bytes()
        })
        .collect()
}

struct Outcome {
    ok: Result<(), String>,
    ack_ns: Vec<u64>,
    late_ns: Vec<u64>,
}

async fn open_stream(dialer: &Dialer, secret: &str, meeting: &str) -> anyhow::Result<Agent> {
    let token = client::token(secret, "ingest", &[meeting]);
    let ws = dialer
        .connect(&format!(
            "/api/v1/ws/ingest/meetings/{meeting}?source=mic&token={token}"
        ))
        .await?;
    client::handshake(ws).await
}

async fn stream(mut agent: Agent, frame: Arc<Vec<u8>>, frames: usize, start: Instant) -> Outcome {
    let mut sent_at: Vec<u64> = Vec::with_capacity(frames);
    let mut ack_ns = Vec::with_capacity(frames);
    let mut late_ns = Vec::with_capacity(frames);
    let mut acked = 0usize;
    let mut tick = tokio::time::interval_at(start, FRAME_PERIOD);
    // A capture agent buffers audio: a late tick sends what is due at once.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = start + FRAME_PERIOD * frames as u32 + CLOSE_TIMEOUT;
    let fail = |why: String, ack_ns: Vec<u64>, late_ns: Vec<u64>| Outcome {
        ok: Err(why),
        ack_ns,
        late_ns,
    };
    loop {
        tokio::select! {
            at = tick.tick(), if sent_at.len() < frames => {
                let now = client::now_ns();
                late_ns.push(at.elapsed().as_nanos() as u64);
                if let Err(e) = agent.send_frame(frame.to_vec()).await {
                    return fail(format!("send failed: {e}"), ack_ns, late_ns);
                }
                sent_at.push(now);
                if sent_at.len() == frames {
                    if let Err(e) = agent.request_close().await {
                        return fail(format!("close_stream failed: {e}"), ack_ns, late_ns);
                    }
                }
            }
            event = agent.next_event() => {
                let now = client::now_ns();
                match event {
                    Ok(Event::Ack(t)) => {
                        let n = (t.frames as usize).min(sent_at.len());
                        ack_ns.extend(sent_at[acked.min(n)..n].iter().map(|s| now.saturating_sub(*s)));
                        acked = acked.max(n);
                    }
                    Ok(Event::Closed(t)) => {
                        let (n, bytes) = (t.frames as usize, t.bytes);
                        ack_ns.extend(sent_at[acked.min(n).min(sent_at.len())..n.min(sent_at.len())].iter().map(|s| now.saturating_sub(*s)));
                        // The totals are the verdict; how the close frame comes is not timed.
                        let _ = agent.wait_close_frame(t).await;
                        let want = (frames, (frames * FRAME_BYTES) as u64);
                        return if (n, bytes) == want {
                            Outcome { ok: Ok(()), ack_ns, late_ns }
                        } else {
                            fail(format!("closed totals {n} frames / {bytes} bytes, sent {} / {}", want.0, want.1), ack_ns, late_ns)
                        };
                    }
                    Err(AgentError::Closed { code, reason, .. }) => return fail(format!("closed early: {code} {reason}"), ack_ns, late_ns),
                    Err(e) => return fail(format!("connection error: {e}"), ack_ns, late_ns),
                }
            }
            _ = tokio::time::sleep_until(deadline) => return fail("no closed totals in time".into(), ack_ns, late_ns),
        }
    }
}

async fn trial(
    sys: &System,
    dialer: &Arc<Dialer>,
    k: usize,
    audio: Duration,
) -> anyhow::Result<Trial> {
    sys.flush_redis()?;
    settle(sys, Duration::from_secs(10)).await;
    let tag = format!("in-{}", client::now_ns());
    let secret: Arc<str> = Arc::from(sys.secret.as_str());
    let mut opened = futures::stream::iter(0..k)
        .map(|i| {
            let (dialer, secret, meeting) = (dialer.clone(), secret.clone(), format!("{tag}-{i}"));
            async move { open_stream(&dialer, &secret, &meeting).await }
        })
        .buffer_unordered(client::CONNECT_CONCURRENCY);
    let mut conns = Vec::with_capacity(k);
    let mut open_errors = 0;
    let mut first_error = None;
    while let Some(r) = opened.next().await {
        match r {
            Ok(ws) => conns.push(ws),
            Err(e) => {
                open_errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    drop(opened);
    let frames = (audio.as_nanos() / FRAME_PERIOD.as_nanos()) as usize;
    let frame = Arc::new(pcm_frame());
    let start = Instant::now() + START_DELAY;
    let meter = CpuMeter::start(&sys.server_pids());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ws) in conns.into_iter().enumerate() {
        // Spread the streams' frame phases over the period, as independent agents are.
        let phase = FRAME_PERIOD * (i as u32) / (k as u32);
        tasks.spawn(stream(ws, frame.clone(), frames, start + phase));
    }
    let mut ack_ns = Vec::new();
    let mut late = Vec::new();
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        let o = r?;
        ack_ns.extend(o.ack_ns);
        late.extend(o.late_ns);
        if let Err(why) = o.ok {
            failures += 1;
            first_error.get_or_insert(why);
        }
    }
    let (cpu, wall) = meter.read();
    sys.check_alive()?;
    let frames_per_s = (k - open_errors) as f64 * frames as f64
        / (wall.as_secs_f64() - START_DELAY.as_secs_f64()).max(1e-9);
    ack_ns.sort_unstable();
    late.sort_unstable();
    let p99 = percentile(&ack_ns, 99.0).unwrap_or(u64::MAX);
    let late_p99 = percentile(&late, 99.0).unwrap_or(0);
    let mut why = Vec::new();
    if open_errors > 0 {
        why.push(format!("{open_errors} streams failed to open"));
    }
    if failures > 0 {
        why.push(format!("{failures} streams failed"));
    }
    if let Some(e) = &first_error {
        why.push(format!("first: {e}"));
    }
    if p99 > ACK_P99_LIMIT.as_nanos() as u64 {
        why.push(format!(
            "ack p99 {:.0} ms > {} ms",
            p99 as f64 / 1e6,
            ACK_P99_LIMIT.as_millis()
        ));
    }
    let pass = open_errors == 0 && failures == 0 && p99 <= ACK_P99_LIMIT.as_nanos() as u64;
    if late_p99 > LOAD_SIDE_LATE.as_nanos() as u64 {
        why.push(format!(
            "load side late: send lateness p99 {:.0} ms",
            late_p99 as f64 / 1e6
        ));
    }
    Ok(Trial {
        pass,
        why: if why.is_empty() {
            "ok".into()
        } else {
            why.join("; ")
        },
        ack_ns,
        frames_per_s,
        server_cpu: 100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
    })
}

/// Searches the largest K that passes, then repeats it for the remaining runs.
pub(crate) async fn run(sys: &System, sizes: &Sizes, runs: &mut IngestRuns) -> anyhow::Result<()> {
    let dialer = Arc::new(Dialer::new(&sys.ws_base)?);
    let try_k = |k: usize| {
        let dialer = dialer.clone();
        async move {
            eprintln!("  ingest {}: {k} streams", sys.name);
            let t = trial(sys, &dialer, k, sizes.ingest_audio).await?;
            eprintln!("    {}: {}", if t.pass { "pass" } else { "fail" }, t.why);
            Ok::<_, anyhow::Error>(t)
        }
    };
    let mut best: Option<(usize, Trial)> = None;
    let mut first_fail: Option<usize> = None;
    let mut k = sizes.ingest_start;
    let mut log = Vec::new();
    loop {
        let t = try_k(k).await?;
        log.push(format!(
            "{k} streams: {} ({})",
            if t.pass { "pass" } else { "fail" },
            t.why
        ));
        if t.pass {
            best = Some((k, t));
            if first_fail.is_some() || k >= sizes.ingest_max {
                break;
            }
            k = (k * 2).min(sizes.ingest_max);
        } else {
            first_fail = Some(k);
            if best.is_some() || k <= 1 {
                break;
            }
            // Even the start failed: halve down until something passes.
            k /= 2;
        }
    }
    if let (Some((lo, _)), Some(hi)) = (&best, first_fail) {
        let (mut lo, mut hi) = (*lo, hi);
        for _ in 0..sizes.ingest_bisect {
            let mid = (lo + hi) / 2;
            if mid == lo || mid == hi {
                break;
            }
            let t = try_k(mid).await?;
            log.push(format!(
                "{mid} streams: {} ({})",
                if t.pass { "pass" } else { "fail" },
                t.why
            ));
            if t.pass {
                lo = mid;
                best = Some((mid, t));
            } else {
                hi = mid;
            }
        }
    }
    runs.trials = log;
    let Some((k, t)) = best else {
        anyhow::bail!(
            "{}: no ingest trial passed, not even 1 stream: {}",
            sys.name,
            runs.trials.join(" | ")
        );
    };
    runs.max_streams.push(k as f64);
    let mut record = |mut t: Trial| {
        if let Some((p50, p99, max)) = latency_us(&mut t.ack_ns) {
            runs.ack_p50_ms.push(p50 / 1000.0);
            runs.ack_p99_ms.push(p99 / 1000.0);
            runs.ack_max_ms.push(max / 1000.0);
        }
        runs.frames_per_s.push(t.frames_per_s);
        if sys.observed() {
            runs.server_cpu.push(t.server_cpu);
        }
    };
    record(t);
    for _ in 1..sizes.reps {
        let t = try_k(k).await?;
        runs.trials.push(format!(
            "{k} streams (repeat): {} ({})",
            if t.pass { "pass" } else { "fail" },
            t.why
        ));
        record(t);
    }
    runs.upgrade_retries = dialer.retried();
    Ok(())
}

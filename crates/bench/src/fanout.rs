//! Scenario 3, fan-out: S subscribers (`/api/v1/ws/meetings/{id}`) spread evenly over M
//! meetings; the bench publishes to the meetings' channels at a fixed offered rate
//! (open loop, paced every millisecond) and every subscriber timestamps what it
//! receives. Earshot is published to through Redis (`PUBLISH earshot:grip:<channel>`,
//! the path the components use); Pushpin and `--target` through `POST /publish/` (GRIP).
//! Measured: delivered messages/s (received ÷ first publish → last receipt),
//! publish-to-receive latency p50/p99/max on one monotonic clock, messages lost.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use earshot_protocol::grip::{Item, PublishRequest};
use earshot_protocol::ids::GRIP_REDIS_PREFIX;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, now_ns, Dialer};
use crate::config::Sizes;
use crate::procfs::CpuMeter;
use crate::report::{latency_us, Runs};
use crate::systems::{settle, Publish, System};

/// Longest the warm-up waits for every subscriber to receive its first message (the
/// subscription is effective asynchronously in both relays).
const WARMUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Time between two warm-up rounds (one message to every channel).
const WARMUP_ROUND: Duration = Duration::from_secs(1);

/// Longest the bench waits after a window for messages still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One message size's numbers over the runs.
#[derive(Default)]
pub(crate) struct SizeRuns {
    pub(crate) delivered_per_s: Runs,
    pub(crate) p50_ms: Runs,
    pub(crate) p99_ms: Runs,
    pub(crate) max_ms: Runs,
    /// Messages not received, percent of those expected.
    pub(crate) lost_pct: Runs,
    /// Server CPU during the window, percent of one core.
    pub(crate) server_cpu: Runs,
    /// The bench's own CPU during the window (is the load side the limit?).
    pub(crate) bench_cpu: Runs,
    /// Open-loop windows at [`LOAD_FRACTIONS`] of the median delivered rate above: the
    /// rate offered, and the latency p50/p99 there.
    pub(crate) at_load: [LoadPoint; LOAD_FRACTIONS.len()],
    /// The highest rate delivered (everything, in time) with p99 ≤ [`P99_BOUND_MS`],
    /// found by bisection between the load points.
    pub(crate) sustained_per_s: Runs,
    /// The p99 at that rate.
    pub(crate) sustained_p99_ms: Runs,
}

/// One open-loop window below the maximum.
#[derive(Default, Clone)]
pub(crate) struct LoadPoint {
    pub(crate) offered_per_s: Runs,
    pub(crate) p50_ms: Runs,
    pub(crate) p99_ms: Runs,
}

/// Loads, as fractions of the measured maximum, at which the latency is reported: the
/// issue asks for 25, 50 and 90 %.
pub(crate) const LOAD_FRACTIONS: [f64; 3] = [0.25, 0.5, 0.9];

/// The latency bound of the sustained-rate search, ms (the issue's p99 target).
pub(crate) const P99_BOUND_MS: f64 = 10.0;

/// A window counts as delivered when at least this share of its messages arrived.
const DELIVERED_SHARE: f64 = 0.999;

/// What one measured window gave.
struct Window {
    offered_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    lost_pct: f64,
    server_cpu: f64,
    bench_cpu: f64,
}

impl Window {
    /// Everything arrived and p99 is within the bound.
    fn sustained(&self) -> bool {
        self.lost_pct <= 100.0 * (1.0 - DELIVERED_SHARE) && self.p99_ms <= P99_BOUND_MS
    }
}

/// One system's numbers: one entry per message size.
#[derive(Default)]
pub(crate) struct FanoutRuns {
    pub(crate) sizes: Vec<(usize, SizeRuns)>,
    /// Subscribers closed by the server (slow consumer or error) over the scenario.
    pub(crate) closed_subscribers: usize,
    /// Upgrades retried after a 5xx answer.
    pub(crate) upgrade_retries: usize,
    /// What happened that the numbers alone do not say.
    pub(crate) notes: Vec<String>,
}

/// What the subscriber tasks share with the controller.
struct Shared {
    /// Run whose messages are counted now (0 = warm-up).
    current: AtomicU32,
    received: AtomicU64,
    last_receive_ns: AtomicU64,
    warmed: AtomicUsize,
    closed: AtomicUsize,
    /// One latency buffer per subscriber (uncontended lock; drained between runs).
    latencies: Vec<Mutex<Vec<u64>>>,
}

/// Parses `{"r":<run>,"t":<ns>,...`.
fn parse(text: &str) -> Option<(u32, u64)> {
    let rest = text.strip_prefix("{\"r\":")?;
    let (r, rest) = rest.split_once(",\"t\":")?;
    let t = rest.get(..20)?;
    Some((r.parse().ok()?, t.parse().ok()?))
}

/// A message of exactly `len` bytes carrying the run and the send time.
fn content(run: u32, len: usize) -> String {
    let head = format!("{{\"r\":{run},\"t\":{:020},\"p\":\"", now_ns());
    let pad = len.saturating_sub(head.len() + 2);
    let mut s = String::with_capacity(len);
    s.push_str(&head);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

enum Publisher {
    Redis(redis::aio::MultiplexedConnection),
    Http(reqwest::Client, String),
}

impl Publisher {
    async fn new(p: &Publish) -> anyhow::Result<Self> {
        Ok(match p {
            Publish::Redis(url) => {
                let client = redis::Client::open(url.as_str())?;
                Publisher::Redis(
                    client
                        .get_multiplexed_async_connection()
                        .await
                        .context("connecting the publisher to Redis")?,
                )
            }
            Publish::Http(url) => Publisher::Http(reqwest::Client::new(), url.clone()),
        })
    }

    async fn publish(&mut self, items: Vec<Item>) -> anyhow::Result<()> {
        match self {
            Publisher::Redis(con) => {
                let mut pipe = redis::pipe();
                for item in &items {
                    pipe.cmd("PUBLISH")
                        .arg(format!("{GRIP_REDIS_PREFIX}{}", item.channel))
                        .arg(serde_json::to_string(item)?)
                        .ignore();
                }
                pipe.query_async::<()>(con).await.context("PUBLISH")?;
            }
            Publisher::Http(client, url) => {
                let resp = client
                    .post(url.as_str())
                    .json(&PublishRequest { items })
                    .send()
                    .await
                    .context("POST /publish/")?;
                if !resp.status().is_success() {
                    bail!("POST {url}: {}", resp.status());
                }
            }
        }
        Ok(())
    }
}

/// Runs the scenario for messages of `size` bytes against `sys` (a fresh system per
/// size: a system that fell behind keeps delivering its backlog long after a run).
pub(crate) async fn run(
    sys: &System,
    sizes: &Sizes,
    size: usize,
    runs: &mut FanoutRuns,
) -> anyhow::Result<()> {
    let s = sizes.fanout_subscribers;
    let m = sizes.fanout_meetings;
    let per_channel = s / m;
    let dialer = Arc::new(Dialer::new(&sys.ws_base)?);
    let stamp = now_ns();
    let meetings: Vec<String> = (0..m).map(|i| format!("fo-{stamp}-{i}")).collect();
    let channels: Vec<String> = meetings.iter().map(|id| format!("meeting:{id}")).collect();
    let shared = Arc::new(Shared {
        current: AtomicU32::new(0),
        received: AtomicU64::new(0),
        last_receive_ns: AtomicU64::new(0),
        warmed: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        latencies: (0..per_channel * m)
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
    });

    eprintln!(
        "  fan-out {}: subscribing {} clients on {m} meetings",
        sys.name,
        per_channel * m
    );
    let tokens: Arc<Vec<String>> = Arc::new(
        meetings
            .iter()
            .map(|id| client::token(&sys.secret, "subscribe", &[id]))
            .collect(),
    );
    let meetings = Arc::new(meetings);
    let mut subs = futures::stream::iter(0..per_channel * m)
        .map(|i| {
            let dialer = dialer.clone();
            let (meetings, tokens) = (meetings.clone(), tokens.clone());
            async move {
                let k = i % meetings.len();
                let ws = dialer
                    .connect(&format!(
                        "/api/v1/ws/meetings/{}?token={}",
                        meetings[k], tokens[k]
                    ))
                    .await?;
                Ok::<_, anyhow::Error>((i, ws))
            }
        })
        .buffer_unordered(client::CONNECT_CONCURRENCY);
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(r) = subs.next().await {
        let (i, mut ws) = r?;
        let shared = shared.clone();
        tasks.spawn(async move {
            let mut warmed = false;
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        let now = now_ns();
                        let Some((run, sent)) = parse(&t) else {
                            continue;
                        };
                        if run == 0 {
                            if !warmed {
                                warmed = true;
                                shared.warmed.fetch_add(1, Ordering::Relaxed);
                            }
                        } else if run == shared.current.load(Ordering::Relaxed) {
                            shared.latencies[i]
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(now.saturating_sub(sent));
                            shared.received.fetch_add(1, Ordering::Relaxed);
                            shared.last_receive_ns.fetch_max(now, Ordering::Relaxed);
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => {
                        shared.closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(_) => {}
                }
            }
        });
    }
    drop(subs);

    let mut publisher = Publisher::new(&sys.publish).await?;
    // Warm-up: publish run 0 to every channel until every subscriber has seen one; a
    // round every WARMUP_ROUND, so a slow system is not buried in warm-up messages.
    let deadline = Instant::now() + WARMUP_TIMEOUT;
    while shared.warmed.load(Ordering::Relaxed) < per_channel * m {
        if Instant::now() > deadline {
            if shared.warmed.load(Ordering::Relaxed) * 2 >= per_channel * m {
                runs.notes.push(format!(
                    "{}: only {} of {} subscribers had received a warm-up message after {WARMUP_TIMEOUT:?}; measured anyway",
                    sys.name,
                    shared.warmed.load(Ordering::Relaxed),
                    per_channel * m
                ));
                break;
            }
            bail!(
                "{}: only {} of {} subscribers received a message within {WARMUP_TIMEOUT:?}",
                sys.name,
                shared.warmed.load(Ordering::Relaxed),
                per_channel * m
            );
        }
        publisher
            .publish(
                channels
                    .iter()
                    .map(|c| Item::text(c.clone(), content(0, 100)))
                    .collect(),
            )
            .await?;
        tokio::time::sleep(WARMUP_ROUND).await;
    }

    let ctx = Ctx {
        sys,
        shared: &shared,
        channels: &channels,
        per_channel,
        window: sizes.fanout_window,
        settle: sizes.fanout_settle,
        size,
    };
    let mut run_id = 0u32;
    let mut out = SizeRuns::default();
    for rep in 0..sizes.reps {
        eprintln!("  fan-out {}: {size} B, run {}/{}", sys.name, rep + 1, sizes.reps);
        run_id += 1;
        let w = ctx.measure(&mut publisher, run_id, sizes.fanout_rate as f64).await?;
        out.p50_ms.push(w.p50_ms);
        out.p99_ms.push(w.p99_ms);
        out.max_ms.push(w.max_ms);
        out.delivered_per_s.push(w.delivered_per_s);
        out.lost_pct.push(w.lost_pct);
        if sys.observed() {
            out.server_cpu.push(w.server_cpu);
        }
        out.bench_cpu.push(w.bench_cpu);
        if w.lost_pct > 1.0 && rep + 1 < sizes.reps {
            runs.notes.push(format!(
                "{}, {size} B: fell behind the offered rate ({:.0}% not received within {DRAIN_TIMEOUT:?} of the window); its remaining runs were skipped",
                sys.name, w.lost_pct
            ));
            break;
        }
    }
    // Below the maximum, open loop: the latency at fractions of what was delivered at
    // most, then the highest rate that keeps p99 within the bound.
    let max = out.delivered_per_s.median().unwrap_or(0.0).min(sizes.fanout_rate as f64);
    let (mut lo, mut hi): (Option<(f64, Window)>, f64) = (None, max);
    for (k, fraction) in LOAD_FRACTIONS.iter().enumerate() {
        let rate = max * fraction;
        if rate < per_channel as f64 {
            continue;
        }
        eprintln!("  fan-out {}: {size} B at {:.0} % of the maximum ({rate:.0} msgs/s)", sys.name, fraction * 100.0);
        run_id += 1;
        let w = ctx.measure(&mut publisher, run_id, rate).await?;
        out.at_load[k].offered_per_s.push(rate);
        out.at_load[k].p50_ms.push(w.p50_ms);
        out.at_load[k].p99_ms.push(w.p99_ms);
        if w.sustained() {
            if lo.as_ref().is_none_or(|(r, _)| rate > *r) {
                lo = Some((rate, w));
            }
        } else {
            hi = hi.min(rate);
        }
    }
    for _ in 0..sizes.fanout_search_steps {
        let floor = lo.as_ref().map_or(0.0, |(r, _)| *r);
        let rate = (floor + hi) / 2.0;
        if rate < per_channel as f64 || hi - floor < hi * 0.02 {
            break;
        }
        eprintln!("  fan-out {}: {size} B, searching p99 ≤ {P99_BOUND_MS} ms at {rate:.0} msgs/s", sys.name);
        run_id += 1;
        let w = ctx.measure(&mut publisher, run_id, rate).await?;
        if w.sustained() {
            lo = Some((rate, w));
        } else {
            hi = rate;
        }
    }
    if let Some((_, w)) = lo {
        out.sustained_per_s.push(w.delivered_per_s.min(w.offered_per_s));
        out.sustained_p99_ms.push(w.p99_ms);
    } else {
        runs.notes.push(format!("{}, {size} B: no rate measured kept p99 ≤ {P99_BOUND_MS} ms", sys.name));
    }
    runs.sizes.push((size, out));
    runs.closed_subscribers += shared.closed.load(Ordering::Relaxed);
    runs.upgrade_retries += dialer.retried();
    tasks.abort_all();
    Ok(())
}

/// What every measured window of one size shares.
struct Ctx<'a> {
    sys: &'a System,
    shared: &'a Shared,
    channels: &'a [String],
    per_channel: usize,
    window: Duration,
    /// Longest wait for the server to go quiet before a window.
    settle: Duration,
    size: usize,
}

impl Ctx<'_> {
    /// One open-loop window offering `rate` deliveries/s, counted as run `run_id`.
    async fn measure(&self, publisher: &mut Publisher, run_id: u32, rate: f64) -> anyhow::Result<Window> {
        let (sys, shared) = (self.sys, self.shared);
        settle(sys, self.settle).await;
        shared.received.store(0, Ordering::Relaxed);
        shared.last_receive_ns.store(0, Ordering::Relaxed);
        shared.current.store(run_id, Ordering::Relaxed);
        let server = CpuMeter::start(&sys.server_pids());
        let bench = CpuMeter::start(&[std::process::id()]);
        let first_ns = now_ns();
        let pubs_per_s = rate / self.per_channel as f64;
        let published = publish_window(publisher, self.channels, pubs_per_s, self.window, run_id, self.size).await?;
        let server_cpu = server.percent();
        let bench_cpu = bench.percent();
        let expected = published * self.per_channel as u64;
        let drain = Instant::now() + DRAIN_TIMEOUT;
        while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < drain {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shared.current.store(u32::MAX, Ordering::Relaxed);
        let received = shared.received.load(Ordering::Relaxed);
        let span = shared.last_receive_ns.load(Ordering::Relaxed).saturating_sub(first_ns).max(1);
        let mut lat: Vec<u64> = Vec::with_capacity(received as usize);
        for l in &shared.latencies {
            lat.append(&mut l.lock().unwrap_or_else(|p| p.into_inner()));
        }
        let (p50, p99, max) = latency_us(&mut lat).unwrap_or((f64::INFINITY, f64::INFINITY, f64::INFINITY));
        sys.check_alive()?;
        Ok(Window {
            offered_per_s: rate,
            delivered_per_s: received as f64 * 1e9 / span as f64,
            p50_ms: p50 / 1000.0,
            p99_ms: p99 / 1000.0,
            max_ms: max / 1000.0,
            lost_pct: 100.0 * expected.saturating_sub(received) as f64 / expected.max(1) as f64,
            server_cpu,
            bench_cpu,
        })
    }
}

/// Publishes round-robin over `channels` at `per_s` for `window`, each millisecond's due
/// items in one request (one Redis pipeline or one POST); returns how many.
async fn publish_window(
    publisher: &mut Publisher,
    channels: &[String],
    per_s: f64,
    window: Duration,
    run: u32,
    size: usize,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < window {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * per_s) as u64;
        if due > sent {
            let items: Vec<Item> = (sent..due)
                .map(|k| {
                    Item::text(
                        channels[(k as usize) % channels.len()].clone(),
                        content(run, size),
                    )
                })
                .collect();
            sent = due;
            publisher.publish(items).await?;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_has_the_exact_size_and_parses_back() {
        for len in [100, 4096] {
            let c = content(7, len);
            assert_eq!(c.len(), len);
            let (run, t) = parse(&c).unwrap();
            assert_eq!(run, 7);
            assert!(t <= now_ns());
        }
    }
}

//! `earshot-bench`: starts what each scenario needs (Earshot in release, Redis, Pushpin)
//! through the shared test harness, drives the load from this process over loopback,
//! and prints one Markdown table per scenario with min / median / max over repeated
//! runs, the ratio to Pushpin (or to the HTTP backend), and the issue's targets.
//!
//! ```sh
//! cargo run --release -p earshot-bench                 # every scenario, full sizes
//! cargo run --release -p earshot-bench -- --quick      # smoke run (CI)
//! cargo run --release -p earshot-bench -- fanout idle  # some scenarios
//! cargo run --release -p earshot-bench -- --target http://127.0.0.1:3000 --secret "$JWT_SECRET"
//! ```

mod asr;
mod client;
mod cold_start;
mod config;
mod fanout;
mod hop;
mod idle;
mod ingest;
mod machine;
mod procfs;
mod report;
mod systems;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::config::Sizes;
use crate::report::{Better, Runs, Table, Target};
use crate::systems::{Launcher, System};

/// Open files kept free for everything but the held connections (logs, pipes,
/// Redis, the HTTP clients, wasmtime's files).
const FD_RESERVE: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    /// 1. WebSocket event → component → reply, embedded vs `--backend` HTTP.
    Hop,
    /// 2. Idle subscriber connections: memory and CPU per connection.
    Idle,
    /// 3. Fan-out to subscribers: delivered messages/s and latency.
    Fanout,
    /// 4. Real-time PCM ingest: the most streams with zero loss.
    Ingest,
    /// 5. `earshot up` to the first healthy answer.
    ColdStart,
    /// 6. Speech to text: WER, real-time factor, final latency, concurrent streams,
    /// beside faster-whisper.
    Asr,
}

#[derive(Parser)]
#[command(
    name = "earshot-bench",
    about = "Earshot's benchmarks: one table per scenario."
)]
struct Args {
    /// Scenarios to run (default: all, in order).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Smoke sizes: every scenario's code path in under a minute.
    #[arg(long)]
    quick: bool,
    /// Repeated runs per measurement (default: 3, or 1 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Idle connections to hold (default: 100,000, or 1,000 with --quick).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Offered fan-out rate, delivered messages/s (default: 200,000, or 10,000 with --quick).
    #[arg(long)]
    fanout_rate: Option<u64>,
    /// Measure a running server instead (loopback only): any implementation of the
    /// contracts in DESIGN.md, loaded exactly the same way.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// JWT secret (HS256) the target verifies tokens with.
    #[arg(long, env = "EARSHOT_BENCH_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// GRIP publish endpoint of the target (default: <target>/publish/).
    #[arg(long, value_name = "URL")]
    publish_url: Option<String>,
    /// Process ids of the target's server, for memory and CPU (repeatable).
    #[arg(long = "target-pid", value_name = "PID")]
    target_pids: Vec<u32>,
    /// Skip the Pushpin comparison.
    #[arg(long)]
    no_pushpin: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("earshot-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("earshot-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn pushpin_installed() -> bool {
    std::process::Command::new("pushpin")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && std::process::Command::new("zurl")
            .arg("--version")
            .output()
            .is_ok()
}

/// Runs the chosen scenarios; `Ok(false)` when any of them failed (after printing the rest).
async fn run(args: Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    client::now_ns();
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(r) = args.reps {
        sizes.reps = r.max(1);
    }
    if let Some(r) = args.fanout_rate {
        sizes.fanout_rate = r.max(1);
    }
    if let Some(n) = args.idle_connections {
        sizes.idle_connections = n;
    }
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        let mut s = args.scenarios.clone();
        s.sort();
        s.dedup();
        s
    };
    // Every held connection is a descriptor in the bench and one in the relay (which
    // inherits this limit).
    let nofile = procfs::raise_nofile(sizes.idle_connections as u64 + 2 * FD_RESERVE);

    let target = match &args.target {
        Some(url) => {
            let secret = args
                .secret
                .as_deref()
                .context("--target needs --secret (the JWT secret the target verifies with)")?;
            Some(System::target(
                url,
                secret,
                args.publish_url.as_deref(),
                &args.target_pids,
            )?)
        }
        None => None,
    };
    let bin: Option<PathBuf> = match &target {
        Some(_) => None,
        None => {
            eprintln!("building earshot (release) and the components…");
            Some(systems::build_release()?)
        }
    };
    let with_pushpin = target.is_none() && !args.no_pushpin && pushpin_installed();
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    print(&format!(
        "## Earshot benchmarks{}\n",
        if args.quick {
            " (--quick smoke run)"
        } else {
            ""
        }
    ));
    print(&format!(
        "`cargo run --release -p earshot-bench --{}{command}`\n",
        if command.is_empty() { "" } else { " " }
    ));
    print(&machine::describe(bin.as_deref(), nofile));
    if target.is_none() && !with_pushpin && !args.no_pushpin {
        print("Pushpin is not installed (`apt-get install -y pushpin`): the comparison columns are skipped.\n");
    }
    let launcher = bin.map(|bin| Launcher { bin });
    let mut ok = true;
    let (mut passed, mut failed) = (0, 0);
    for scenario in scenarios {
        let t0 = Instant::now();
        eprintln!("{scenario:?}…");
        let result = match scenario {
            Scenario::Hop => hop_table(&launcher, target.as_ref(), &sizes).await,
            Scenario::Idle => {
                idle_table(&launcher, target.as_ref(), &sizes, nofile, with_pushpin).await
            }
            Scenario::Fanout => {
                fanout_table(&launcher, target.as_ref(), &sizes, with_pushpin).await
            }
            Scenario::Ingest => {
                ingest_table(&launcher, target.as_ref(), &sizes, with_pushpin).await
            }
            Scenario::ColdStart => cold_table(&launcher, &sizes).await,
            Scenario::Asr => asr::table(&launcher, args.quick, sizes.reps).await,
        };
        // Leave the bench unpinned whatever the scenario did.
        let _ = procfs::pin(
            std::process::id(),
            &(0..procfs::cpu_count()).collect::<Vec<_>>(),
        );
        match result {
            Ok(mut table) => {
                passed += 1;
                table.notes.push(format!(
                    "scenario time: {:.0} s",
                    t0.elapsed().as_secs_f64()
                ));
                print(&table.render());
            }
            Err(e) => {
                ok = false;
                failed += 1;
                print(&format!("### {scenario:?}: FAILED\n\n{e:#}\n"));
            }
        }
    }
    print(&format!(
        "Total time: {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    // A closing line CI logs can be read by: scenarios that ran, scenarios that failed.
    print(&format!("earshot-bench: {passed} passed, {failed} failed"));
    Ok(ok)
}

/// The system list of scenarios 2–4: Earshot and Pushpin, or the target alone.
fn systems_for(
    launcher: &Option<Launcher>,
    target: Option<&System>,
    with_pushpin: bool,
) -> Vec<&'static str> {
    match (launcher, target) {
        (_, Some(_)) => vec!["target"],
        (Some(_), None) if with_pushpin => vec!["Earshot", "Pushpin"],
        _ => vec!["Earshot"],
    }
}

/// An error with the system's own account of it (Pushpin's log).
fn explain(e: anyhow::Error, sys: &System) -> anyhow::Error {
    let d = sys.diagnostics();
    if d.is_empty() {
        e
    } else {
        anyhow::anyhow!("{}: {e:#}\n{d}", sys.name)
    }
}

/// One system's part of a scenario failed: for the comparison system (Pushpin) that is
/// a finding, written under the table with its column left empty; for Earshot or a
/// target it fails the scenario (and the run's exit code).
fn tolerate(name: &str, result: anyhow::Result<()>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    match result {
        Err(e) if name == "Pushpin" => {
            let first = format!("{e:#}");
            let first = first.lines().next().unwrap_or_default().to_owned();
            eprintln!("  {name} failed: {e:#}");
            notes.push(format!("{name} could not complete this scenario: {first}"));
            Ok(())
        }
        other => other,
    }
}

/// A note when a system answered upgrades with 5xx and the bench retried them.
fn retry_note(t: &mut Table, name: &str, retries: usize) {
    if retries > 0 {
        t.notes.push(format!(
            "{name}: {retries} upgrades were answered 5xx and retried"
        ));
    }
}

fn start(launcher: &Option<Launcher>, name: &str) -> anyhow::Result<System> {
    let l = launcher.as_ref().context("no earshot binary")?;
    eprintln!("  starting {name}…");
    match name {
        "Earshot" => l.earshot(),
        "--backend HTTP" => l.earshot_http_backend(),
        "Pushpin" => l.pushpin(),
        other => anyhow::bail!("unknown system {other}"),
    }
}

async fn hop_table(
    launcher: &Option<Launcher>,
    target: Option<&System>,
    sizes: &Sizes,
) -> anyhow::Result<Table> {
    let names: Vec<&str> = if target.is_some() {
        vec!["target"]
    } else {
        vec!["embedded", "--backend HTTP"]
    };
    let mut all = Vec::new();
    for name in &names {
        let mut runs = hop::HopRuns::default();
        match target {
            Some(t) => hop::run(t, sizes, &mut runs).await?,
            None => {
                let sys = start(
                    launcher,
                    if *name == "embedded" {
                        "Earshot"
                    } else {
                        "--backend HTTP"
                    },
                )?;
                // One core for the servers, the other for the load and Redis.
                if procfs::cpu_count() >= 2 {
                    for pid in sys.server_pids() {
                        procfs::pin(pid, &[0])?;
                    }
                    procfs::pin(std::process::id(), &[1])?;
                    if let Some(r) = sys.redis_pid {
                        procfs::pin(r, &[1])?;
                    }
                }
                hop::run(&sys, sizes, &mut runs)
                    .await
                    .map_err(|e| explain(e, &sys))?;
            }
        }
        all.push(runs);
    }
    let mut t = Table::new(
        "1. Component hop: WebSocket event → component → reply",
        &names,
    );
    t.setup.push(
        "Probe: the ingest handshake on a fresh connection (`handshake` text → `handshake_ack`): the relay builds the WebSocket-over-HTTP request, a fresh ingest.wasm instance validates it, draws a session id, logs, answers with `Set-Meta-*`; the relay writes the reply. Since issue 10 the handshake also announces the session to the transcription workers: one Redis round trip on this path.".into(),
    );
    t.setup.push(format!(
        "Latency: {} connections per run opened one at a time, then handshaken one at a time. Throughput: {} handshakes per run in batches of {} in flight; connections are opened before and closed after each batch, untimed, and the server is let go quiet (< 5 % CPU, at most 3 s) before each timed section, so the previous batch's DISCONNECT work is not timed. Server CPU per event = the server processes' CPU time during the timed throughput windows ÷ handshakes.",
        sizes.hop_latency_samples, sizes.hop_throughput_events, sizes.hop_batch
    ));
    if target.is_none() {
        t.setup.push("Servers pinned to CPU 0 (for `--backend HTTP` both processes: relay and component host), the bench and Redis to CPU 1: events/s are on one core. `--backend HTTP` = `earshot up --backend http://<second earshot>`, the same relay code with an HTTP hop on loopback.".into());
    }
    let col = |f: fn(&hop::HopRuns) -> &Runs| all.iter().map(|r| f(r).clone()).collect::<Vec<_>>();
    t.row(
        "hop latency p50, µs",
        Better::Lower,
        col(|r| &r.p50_us),
        Target::at_most(100.0),
    );
    t.row(
        "hop latency p99, µs",
        Better::Lower,
        col(|r| &r.p99_us),
        None,
    );
    t.row(
        "events/s (one core, a batch in flight)",
        Better::Higher,
        col(|r| &r.events_per_s),
        Target::at_least(10_000.0),
    );
    t.row(
        "server CPU per event, µs (throughput windows)",
        Better::Lower,
        col(|r| &r.cpu_us_per_event),
        None,
    );
    t.row(
        "connection open p50, µs, one at a time (TCP + upgrade + OPEN: JWT, Redis rate limit, presence)",
        Better::Lower,
        col(|r| &r.open_p50_us),
        None,
    );
    Ok(t)
}

async fn idle_table(
    launcher: &Option<Launcher>,
    target: Option<&System>,
    sizes: &Sizes,
    nofile: u64,
    with_pushpin: bool,
) -> anyhow::Result<Table> {
    let names = systems_for(launcher, target, with_pushpin);
    let n = sizes
        .idle_connections
        .min(nofile.saturating_sub(FD_RESERVE) as usize);
    let mut all = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        let mut runs = idle::IdleRuns::default();
        let result = match target {
            Some(t) => idle::run(t, sizes, n, &mut runs).await,
            None => match start(launcher, name) {
                Ok(sys) => idle::run(&sys, sizes, n, &mut runs)
                    .await
                    .map_err(|e| explain(e, &sys)),
                Err(e) => Err(e),
            },
        };
        tolerate(name, result, &mut failures)?;
        all.push(runs);
    }
    let mut t = Table::new(
        format!(
            "2. Idle connections: {} subscriber WebSockets",
            report::num(n as f64)
        ),
        &names,
    );
    t.setup.push(format!(
        "{} subscribers on `/api/v1/ws/meetings/{{id}}`, {} per meeting, opened 64 at a time from 16 loopback source addresses, once per system; relay RSS = VmRSS of the relay process(es) (Pushpin: pushpin, condure, pushpin-proxy, pushpin-handler, zurl), per connection = (RSS holding them − RSS before) ÷ N, read 1 s after the last one opened. The CPU windows are the repeated runs.",
        report::num(n as f64),
        sizes.idle_per_meeting,
    ));
    t.setup.push(format!(
        "Server CPU = all serving processes (for Pushpin also the Earshot behind it, which runs the components). Idle: {} s with no traffic. Keep-alives: each client sends `{{\"type\":\"keepalive\"}}` every {} s ({}/s in all) for {} s; the relay forwards each to the component as a TEXT event.",
        sizes.idle_window.as_secs(),
        sizes.keepalive_period.as_secs(),
        report::num(n as f64 / sizes.keepalive_period.as_secs_f64()),
        sizes.keepalive_window.as_secs()
    ));
    if n < sizes.idle_connections {
        t.notes.push(format!(
            "capped at {n} connections by the open-file limit ({nofile})"
        ));
    }
    let kib = |r: &Runs| Runs(r.0.iter().map(|b| b / 1024.0).collect());
    t.row(
        "relay RSS per connection, KiB",
        Better::Lower,
        all.iter().map(|r| kib(&r.rss_per_conn)).collect(),
        Target::at_most(15.0),
    );
    if all.iter().any(|r| !r.backend_rss_per_conn.0.is_empty()) {
        t.row(
            "component host behind the relay, RSS per connection, KiB",
            Better::Lower,
            all.iter().map(|r| kib(&r.backend_rss_per_conn)).collect(),
            None,
        );
    }
    t.row(
        "connections opened/s",
        Better::Higher,
        all.iter().map(|r| r.opened_per_s.clone()).collect(),
        None,
    );
    t.row(
        "server CPU while idle, % of one core",
        Better::Lower,
        all.iter().map(|r| r.idle_cpu.clone()).collect(),
        None,
    );
    t.row(
        "server CPU with keep-alives, % of one core",
        Better::Lower,
        all.iter().map(|r| r.keepalive_cpu.clone()).collect(),
        None,
    );
    t.row(
        "server CPU per keep-alive, µs",
        Better::Lower,
        all.iter().map(|r| r.keepalive_cpu_us.clone()).collect(),
        None,
    );
    for (name, r) in names.iter().zip(&all) {
        if r.connections < n {
            t.notes.push(format!(
                "{name}: held {} connections (stopped early to keep 4 GiB of memory free)",
                r.connections
            ));
        }
        retry_note(&mut t, name, r.upgrade_retries);
        if r.closed_by_server > 0 {
            t.notes.push(format!(
                "{name}: the server closed {} held connections",
                r.closed_by_server
            ));
        }
    }
    t.notes.extend(failures);
    Ok(t)
}

async fn fanout_table(
    launcher: &Option<Launcher>,
    target: Option<&System>,
    sizes: &Sizes,
    with_pushpin: bool,
) -> anyhow::Result<Table> {
    let names = systems_for(launcher, target, with_pushpin);
    let mut all = Vec::new();
    let mut failures = Vec::new();
    let mut publish_paths = Vec::new();
    for name in &names {
        let mut runs = fanout::FanoutRuns::default();
        for &size in &sizes.fanout_sizes {
            let result = match target {
                Some(t) => fanout::run(t, sizes, size, &mut runs).await,
                // A fresh system per size: one that fell behind is still draining.
                None => match start(launcher, name) {
                    Ok(sys) => fanout::run(&sys, sizes, size, &mut runs)
                        .await
                        .map_err(|e| explain(e, &sys)),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                // Keep the columns aligned: this size has no numbers for this system.
                runs.sizes.push((size, fanout::SizeRuns::default()));
                tolerate(name, Err(e.context(format!("{size} B"))), &mut failures)?;
            }
        }
        publish_paths.push(match (target, *name) {
            (Some(_), _) => format!("{name}: POST GRIP items to the publish URL"),
            (None, "Pushpin") => {
                format!("{name}: `POST /publish/` on Pushpin's publish port (one request per ms)")
            }
            (None, _) => {
                format!("{name}: Redis `PUBLISH earshot:grip:<channel>` (one pipeline per ms)")
            }
        });
        all.push(runs);
    }
    let per = sizes.fanout_subscribers / sizes.fanout_meetings;
    let mut t = Table::new(
        format!(
            "3. Fan-out: {} subscribers on {} meetings",
            report::num((per * sizes.fanout_meetings) as f64),
            sizes.fanout_meetings
        ),
        &names,
    );
    t.setup.push(format!(
        "Offered: {} msgs/s delivered ({} publishes/s × {per} subscribers per meeting), round-robin over the meetings, for {} s per run; latency = publish (timestamp in the message) → received by the subscriber, one monotonic clock. Publishing: {}.",
        report::num(sizes.fanout_rate as f64),
        report::num(sizes.fanout_rate as f64 / per as f64),
        sizes.fanout_window.as_secs(),
        publish_paths.join("; ")
    ));
    t.setup.push("Delivered msgs/s = messages received ÷ (last receipt − first publish); below the offered rate means the system fell behind. Server CPU excludes Redis; bench CPU is the load side (2 cores in all).".into());
    t.setup.push(format!("Below the maximum (open loop, one window each): the latency at 25 / 50 / 90 % of the median delivered rate of the runs above, then the highest rate whose window delivered everything with p99 ≤ {} ms, bisected from those points.", fanout::P99_BOUND_MS));
    for (i, &size) in sizes.fanout_sizes.iter().enumerate() {
        let col = |f: fn(&fanout::SizeRuns) -> &Runs| {
            all.iter()
                .map(|r| r.sizes.get(i).map(|s| f(&s.1).clone()).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        let label = if size >= 1024 {
            format!("{} KiB", size / 1024)
        } else {
            format!("{size} B")
        };
        t.row(
            &format!("{label}: delivered msgs/s"),
            Better::Higher,
            col(|s| &s.delivered_per_s),
            Target::at_least(200_000.0).filter(|_| per * sizes.fanout_meetings >= 10_000),
        );
        t.row(
            &format!("{label}: latency p50, ms"),
            Better::Lower,
            col(|s| &s.p50_ms),
            None,
        );
        t.row(
            &format!("{label}: latency p99, ms"),
            Better::Lower,
            col(|s| &s.p99_ms),
            Target::at_most(10.0).filter(|_| per * sizes.fanout_meetings >= 10_000),
        );
        t.row(
            &format!("{label}: latency max, ms"),
            Better::Lower,
            col(|s| &s.max_ms),
            None,
        );
        t.row(
            &format!("{label}: highest rate with p99 ≤ {} ms (open loop, bisected), msgs/s", fanout::P99_BOUND_MS),
            Better::Higher,
            col(|s| &s.sustained_per_s),
            None,
        );
        t.row(&format!("{label}: p99 at that rate, ms"), Better::Lower, col(|s| &s.sustained_p99_ms), None);
        for (k, fraction) in fanout::LOAD_FRACTIONS.iter().enumerate() {
            let pct = fraction * 100.0;
            let at = |f: fn(&fanout::LoadPoint) -> &Runs| {
                all.iter()
                    .map(|r| r.sizes.get(i).map(|s| f(&s.1.at_load[k]).clone()).unwrap_or_default())
                    .collect::<Vec<_>>()
            };
            t.row(&format!("{label}: at {pct:.0} % of the maximum: offered msgs/s"), Better::Higher, at(|p| &p.offered_per_s), None);
            t.row(&format!("{label}: at {pct:.0} % of the maximum: latency p50, ms"), Better::Lower, at(|p| &p.p50_ms), None);
            t.row(&format!("{label}: at {pct:.0} % of the maximum: latency p99, ms"), Better::Lower, at(|p| &p.p99_ms), None);
        }
        t.row(
            &format!("{label}: lost, %"),
            Better::Lower,
            col(|s| &s.lost_pct),
            None,
        );
        t.row(
            &format!("{label}: server CPU, % of one core"),
            Better::Lower,
            col(|s| &s.server_cpu),
            None,
        );
        t.row(
            &format!("{label}: bench CPU, % of one core"),
            Better::Lower,
            col(|s| &s.bench_cpu),
            None,
        );
    }
    for (name, r) in names.iter().zip(&all) {
        retry_note(&mut t, name, r.upgrade_retries);
        t.notes.extend(r.notes.iter().cloned());
        if r.closed_subscribers > 0 {
            t.notes.push(format!(
                "{name}: {} subscribers were closed by the server (slow consumer or error)",
                r.closed_subscribers
            ));
        }
    }
    t.notes.extend(failures);
    Ok(t)
}

async fn ingest_table(
    launcher: &Option<Launcher>,
    target: Option<&System>,
    sizes: &Sizes,
    with_pushpin: bool,
) -> anyhow::Result<Table> {
    let names = systems_for(launcher, target, with_pushpin);
    let mut all = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        let mut runs = ingest::IngestRuns::default();
        let result = match target {
            Some(t) => ingest::run(t, sizes, &mut runs).await,
            None => match start(launcher, name) {
                Ok(sys) => ingest::run(&sys, sizes, &mut runs)
                    .await
                    .map_err(|e| explain(e, &sys)),
                Err(e) => Err(e),
            },
        };
        tolerate(name, result, &mut failures)?;
        all.push(runs);
    }
    let mut t = Table::new(
        "4. Ingest: concurrent real-time PCM streams (16 kHz s16le mono, 20 ms frames)",
        &names,
    );
    t.setup.push(format!(
        "Each stream: own meeting, handshake, {} s of audio (640-byte frame every 20 ms, phases spread), `close_stream`. Pass = every stream's `closed` totals equal what it sent, no other close, ack latency p99 ≤ 1 s (a frame's send → first ack covering it; the component acks at most every 250 ms by design). K doubles from {} (max {}) while passing, then {} bisection steps; the largest passing K is repeated for the other runs.",
        sizes.ingest_audio.as_secs(),
        sizes.ingest_start,
        sizes.ingest_max,
        sizes.ingest_bisect
    ));
    let col =
        |f: fn(&ingest::IngestRuns) -> &Runs| all.iter().map(|r| f(r).clone()).collect::<Vec<_>>();
    t.row(
        "largest K: every frame acked, none lost",
        Better::Higher,
        col(|r| &r.max_streams),
        Target::at_least(1000.0),
    );
    t.row(
        "ack latency p50 at that K, ms",
        Better::Lower,
        col(|r| &r.ack_p50_ms),
        None,
    );
    t.row(
        "ack latency p99 at that K, ms",
        Better::Lower,
        col(|r| &r.ack_p99_ms),
        None,
    );
    t.row(
        "ack latency max at that K, ms",
        Better::Lower,
        col(|r| &r.ack_max_ms),
        None,
    );
    t.row(
        "frames stored/s at that K",
        Better::Higher,
        col(|r| &r.frames_per_s),
        None,
    );
    t.row(
        "server CPU at that K, % of one core",
        Better::Lower,
        col(|r| &r.server_cpu),
        None,
    );
    for (name, r) in names.iter().zip(&all) {
        t.notes
            .push(format!("{name} trials: {}", r.trials.join("; ")));
        retry_note(&mut t, name, r.upgrade_retries);
    }
    t.notes.extend(failures);
    Ok(t)
}

async fn cold_table(launcher: &Option<Launcher>, sizes: &Sizes) -> anyhow::Result<Table> {
    let Some(l) = launcher else {
        anyhow::bail!("cold start needs the earshot binary: not available with --target");
    };
    let runs = cold_start::run(&l.bin, sizes).await?;
    let mut t = Table::new(
        "5. Cold start: `earshot up` → first healthy answer",
        &["earshot up"],
    );
    t.setup.push(format!(
        "Spawn → first HTTP 200 from `GET /api/v1/health` (polled every 1 ms), with `--redis` and a fresh state folder. The application has {} components; larger counts add copies of the largest one under their own routes. Warm = components precompiled in the cache; empty cache = Cranelift compiles each distinct .wasm first.",
        runs.app_components
    ));
    for (label, r) in runs.rows {
        let target = if label.contains("warm") {
            Target::at_most(300.0)
        } else {
            None
        };
        t.row(&format!("{label}, ms"), Better::Lower, vec![r], target);
    }
    Ok(t)
}

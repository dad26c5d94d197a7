//! Scenario 6, speech to text (issue 10): the local Whisper engine against faster-whisper
//! on the same espeak-ng sentences, then the whole system (`earshot up` with its
//! in-process worker) with real subscribers.
//!
//! - **Accuracy and speed, one pass per clip**: each clip (one sentence, one voice, 16 kHz
//!   via sox) is transcribed once as a final is, by the engine in this process and by
//!   faster-whisper (scripts/faster-whisper-peer.sh, float32 and int8), at 1 and 2
//!   threads, greedy, no timestamps. WER over the set; real-time factor = decode time ÷
//!   audio time.
//! - **Streaming cost**: the clips one after another through a session (VAD, interims,
//!   finals) in 100 ms pushes: wall time ÷ audio time.
//! - **Final latency**: sentences with pauses streamed in real time by the agent crate to
//!   the ingest route; a subscriber on `/api/v1/ws/transcript/{id}` timestamps each final;
//!   latency = its arrival − the moment the sentence's last audible sample was due.
//! - **Concurrent streams**: K meetings each streaming continuous speech (sentences with
//!   short pauses) in real time, one subscriber each; a trial passes when every sentence's
//!   final arrives and none is more than [`MAX_LAG`] behind the audio it ends at. K doubles
//!   while trials pass, then bisects.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use earshot_agent::{Input, Pacing, PcmFormat};
use earshot_asr::wer::corpus_wer;
use earshot_asr::{pcm_to_f32, SessionSpec, WhisperConfig, WhisperEngine};
use earshot_protocol::ids::{MeetingId, Source};
use earshot_testkit::speech::{self, BYTES_PER_MS};
use earshot_testkit::{Earshot, EarshotBuilder, RedisServer};
use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::client;
use crate::report::{Better, Runs, Table, Target};
use crate::systems::Launcher;

/// Sentences the clips are made of: meeting talk, 6–12 words each.
const SENTENCES: [&str; 12] = [
    "The quick brown fox jumps over the lazy dog.",
    "Please send the quarterly report to the finance team by Friday.",
    "We should schedule a meeting with the design group next week.",
    "The weather today is sunny with a light breeze from the west.",
    "Can you share your screen so everyone can see the slides?",
    "Our new product launch is planned for the beginning of March.",
    "The meeting starts at nine in the morning.",
    "We will review the budget next week.",
    "Thank you all for joining the call today.",
    "Let us move the deadline to the end of the month.",
    "I will write a summary and email it after lunch.",
    "The customer asked for a demo of the new dashboard.",
];

/// espeak-ng voices, taken in turn: two accents, male and female variants.
const VOICES: [&str; 4] = ["en-us", "en-gb", "en-us+f3", "en-gb+m3"];

/// Thread counts the one-pass real-time factor is measured at (the machine has 2 cores).
const THREADS: [usize; 2] = [1, 2];

/// Threads the in-process worker runs the model on in the end-to-end parts: every core.
const WORKER_THREADS: usize = 2;

/// Bytes per push in the streaming-cost run: 100 ms, about what one ingest append holds.
const PUSH_BYTES: usize = 3_200;

/// Pause after each sentence of the latency run, in milliseconds: longer than the VAD's
/// 300 ms hangover and the 200 ms post-roll, so each sentence ends its own utterance.
const LATENCY_GAP_MS: u64 = 1_500;

/// Pause after each sentence of the continuous-speech streams, in milliseconds: a
/// speaker's breath between sentences, just long enough for the VAD to end the utterance.
const CONTINUOUS_GAP_MS: u64 = 500;

/// How far behind the audio a final may arrive for a concurrency trial to pass (issue 10).
const MAX_LAG: Duration = Duration::from_secs(2);

/// Audio frames the agent sends, in milliseconds (what `earshot stream` sends).
const FRAME_MS: u32 = 20;

/// How long the latency run waits for the last final after its audio ended.
const LATENCY_FINAL_WAIT: Duration = Duration::from_secs(15);

/// How long `earshot up` may take to load the model and say `asr_ready`.
const ASR_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// faster-whisper's compute types compared (the model ships float16 weights).
const PEER_COMPUTE: [&str; 2] = ["float32", "int8"];

/// Sizes of the scenario, full or `--quick`.
struct AsrSizes {
    /// Clips in the accuracy and one-pass speed part.
    clips: usize,
    /// Repeated timings of the one-pass part.
    reps: usize,
    /// Sentences in the latency run.
    latency_sentences: usize,
    /// Sentences per stream in a concurrency trial.
    stream_sentences: usize,
    /// First K tried.
    streams_start: usize,
    /// Largest K tried.
    streams_max: usize,
    /// Bisection steps between the last passing and the first failing K.
    bisect: usize,
    /// Install faster-whisper when missing (never with `--quick`: CI must not need it).
    install_peer: bool,
}

impl AsrSizes {
    fn new(quick: bool, reps: usize) -> Self {
        if quick {
            AsrSizes {
                clips: 3,
                reps: 1,
                latency_sentences: 2,
                stream_sentences: 2,
                streams_start: 1,
                streams_max: 1,
                bisect: 0,
                install_peer: false,
            }
        } else {
            AsrSizes {
                clips: SENTENCES.len(),
                reps,
                latency_sentences: 8,
                stream_sentences: 6,
                streams_start: 1,
                streams_max: 16,
                bisect: 2,
                install_peer: true,
            }
        }
    }
}

/// One spoken sentence.
struct Clip {
    text: &'static str,
    pcm: Vec<u8>,
    /// First and last audible millisecond within `pcm`.
    extent: (u64, u64),
}

fn audio_ms(pcm: &[u8]) -> u64 {
    (pcm.len() / BYTES_PER_MS) as u64
}

/// First and last millisecond louder than −40 dBFS.
fn audible_extent(pcm: &[u8]) -> Option<(u64, u64)> {
    const LOUD: i32 = 328;
    let loud = |(i, s): (usize, &[u8])| {
        (i32::from(i16::from_le_bytes([s[0], s[1]])).abs() > LOUD).then_some(i as u64 / 16)
    };
    let first = pcm.chunks_exact(2).enumerate().find_map(loud)?;
    let last = pcm.chunks_exact(2).enumerate().filter_map(loud).last()?;
    Some((first, last))
}

fn make_clips(n: usize) -> anyhow::Result<Vec<Clip>> {
    (0..n)
        .map(|i| {
            let text = SENTENCES[i % SENTENCES.len()];
            let pcm = speech::speak(VOICES[i % VOICES.len()], text)?;
            let extent = audible_extent(&pcm).context("espeak-ng produced no sound")?;
            Ok(Clip { text, pcm, extent })
        })
        .collect()
}

/// A stream of clips `order` with `gap_ms` of silence before each: the PCM and each
/// sentence's audible extent in stream milliseconds.
fn compose(clips: &[Clip], order: impl Iterator<Item = usize>, gap_ms: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut pcm = Vec::new();
    let mut extents = Vec::new();
    for i in order {
        pcm.extend(speech::silence(gap_ms));
        let at = audio_ms(&pcm);
        let clip = &clips[i];
        extents.push((at + clip.extent.0, at + clip.extent.1));
        pcm.extend_from_slice(&clip.pcm);
    }
    // Trailing quiet so the VAD ends the last utterance before the stream closes.
    pcm.extend(speech::silence(gap_ms.max(1_000)));
    (pcm, extents)
}

/// One engine's figures on the one-pass and streaming parts.
#[derive(Default)]
struct EngineRuns {
    wer_pct: Runs,
    /// Per thread count (index into [`THREADS`]): one-pass RTF per rep.
    rtf: Vec<Runs>,
    /// Per thread count: streaming RTF (Earshot only).
    stream_rtf: Vec<Runs>,
    /// At the largest thread count: mean encoder ms per pass and decoder ms per token.
    encode_ms: Runs,
    ms_per_token: Runs,
    /// Sentences whose hypothesis differed, as `reference → hypothesis`.
    misses: Vec<String>,
}

fn wer_pct(clips: &[Clip], texts: &[String]) -> f64 {
    100.0 * corpus_wer(clips.iter().map(|c| c.text).zip(texts.iter().map(String::as_str)))
}

fn misses(clips: &[Clip], texts: &[String]) -> Vec<String> {
    clips
        .iter()
        .zip(texts)
        .filter(|(c, t)| earshot_asr::wer::word_errors(c.text, t) > 0)
        .map(|(c, t)| format!("\"{}\" → \"{t}\"", c.text))
        .collect()
}

/// The local engine, in this process, at each thread count.
fn earshot_offline(model: &Path, clips: &[Clip], reps: usize) -> anyhow::Result<EngineRuns> {
    let mut runs = EngineRuns::default();
    let audio_s: f64 = clips.iter().map(|c| audio_ms(&c.pcm) as f64 / 1000.0).sum();
    let (stream_pcm, _) = compose(clips, 0..clips.len(), LATENCY_GAP_MS);
    for (ti, &threads) in THREADS.iter().enumerate() {
        let config = WhisperConfig {
            threads,
            ..WhisperConfig::default()
        };
        let engine = WhisperEngine::load(model, config)
            .with_context(|| format!("loading {} (scripts/fetch-model.sh)", model.display()))?;
        // Untimed warm-up: allocations and page faults.
        engine.transcribe(&pcm_to_f32(&clips[0].pcm))?;
        let mut rtf = Runs::default();
        let (mut encode, mut passes, mut decode, mut tokens) = (0.0, 0usize, 0.0, 0usize);
        for rep in 0..reps {
            let t = std::time::Instant::now();
            let mut texts = Vec::new();
            for clip in clips {
                let pass = engine.transcribe(&pcm_to_f32(&clip.pcm))?;
                encode += pass.timings.encode_ms;
                decode += pass.timings.decode_ms;
                tokens += pass.timings.tokens;
                passes += 1;
                texts.push(pass.text);
            }
            rtf.push(t.elapsed().as_secs_f64() / audio_s);
            if rep == 0 && ti == 0 {
                runs.wer_pct.push(wer_pct(clips, &texts));
                runs.misses = misses(clips, &texts);
            }
        }
        runs.rtf.push(rtf);
        if ti == THREADS.len() - 1 {
            runs.encode_ms.push(encode / passes.max(1) as f64);
            runs.ms_per_token.push(decode / tokens.max(1) as f64);
        }
        let mut stream = Runs::default();
        for _ in 0..reps {
            let mut session = engine.open_session(&SessionSpec::new("bench", "mic"));
            let t = std::time::Instant::now();
            for chunk in stream_pcm.chunks(PUSH_BYTES) {
                earshot_asr::Session::push(&mut session, chunk)?;
            }
            earshot_asr::Session::flush(&mut session)?;
            stream.push(t.elapsed().as_secs_f64() / (audio_ms(&stream_pcm) as f64 / 1000.0));
        }
        runs.stream_rtf.push(stream);
    }
    Ok(runs)
}

fn peer_script() -> PathBuf {
    earshot_testkit::repo_root().join("scripts/faster-whisper-peer.sh")
}

/// Whether faster-whisper is installed where the peer script puts it.
fn peer_installed() -> bool {
    let venv = std::env::var_os("EARSHOT_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/earshot/venv")));
    venv.is_some_and(|v| {
        Command::new(v.join("bin/python"))
            .args(["-c", "import faster_whisper"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// faster-whisper at `compute` on the clips (written as WAV files in `dir`).
fn peer_offline(model: &Path, clips: &[Clip], dir: &Path, compute: &str, reps: usize) -> anyhow::Result<EngineRuns> {
    let mut files = Vec::new();
    for (i, clip) in clips.iter().enumerate() {
        let path = dir.join(format!("clip-{i:02}.wav"));
        speech::write_wav(&path, &clip.pcm)?;
        files.push(path);
    }
    let audio_s: f64 = clips.iter().map(|c| audio_ms(&c.pcm) as f64 / 1000.0).sum();
    let mut runs = EngineRuns::default();
    for (ti, threads) in THREADS.iter().enumerate() {
        let mut cmd = Command::new("bash");
        cmd.arg(peer_script())
            .arg("--model")
            .arg(model)
            .args(["--compute-type", compute, "--threads", &threads.to_string(), "--beam-size", "1"]);
        for _ in 0..reps {
            cmd.args(&files);
        }
        let out = cmd.output().context("running scripts/faster-whisper-peer.sh")?;
        if !out.status.success() {
            bail!("faster-whisper peer failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .context("reading the peer's JSON lines")?;
        if lines.len() != clips.len() * reps {
            bail!("faster-whisper peer answered {} lines for {} files", lines.len(), clips.len() * reps);
        }
        let mut rtf = Runs::default();
        for (rep, chunk) in lines.chunks(clips.len()).enumerate() {
            let busy: f64 = chunk.iter().filter_map(|l| l["decode_s"].as_f64()).sum();
            rtf.push(busy / audio_s);
            if rep == 0 && ti == 0 {
                let texts: Vec<String> = chunk.iter().map(|l| l["text"].as_str().unwrap_or_default().to_owned()).collect();
                runs.wer_pct.push(wer_pct(clips, &texts));
                runs.misses = misses(clips, &texts);
            }
        }
        runs.rtf.push(rtf);
    }
    Ok(runs)
}

/// `earshot up` with its in-process worker on a fresh Redis, once the model is loaded.
struct AsrSystem {
    server: Earshot,
    secret: String,
    _redis: RedisServer,
}

async fn start_system(launcher: &Launcher, model: &Path) -> anyhow::Result<AsrSystem> {
    let redis = RedisServer::start()?;
    let server = EarshotBuilder::new(&launcher.bin)
        .redis(redis.url())
        .speech_to_text()
        .env("EARSHOT_ASR_MODEL", &model.display().to_string())
        .env("EARSHOT_ASR_THREADS", &WORKER_THREADS.to_string())
        .start()?;
    let deadline = Instant::now() + ASR_READY_TIMEOUT;
    while !server.logs().iter().any(|l| l.contains("\"asr_ready\"")) {
        if Instant::now() > deadline {
            bail!("earshot did not load the model within {ASR_READY_TIMEOUT:?}:\n{}", server.logs().join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, secret) = server.dev_secrets()?;
    Ok(AsrSystem { server, secret, _redis: redis })
}

/// A final as the subscriber got it.
struct Final {
    at: Instant,
    start_ms: u64,
    end_ms: u64,
    text: String,
}

/// Streams `pcm` in real time through the agent crate as `mic` of `meeting` while a
/// subscriber collects that meeting's finals until every sentence in `extents` has one,
/// or `wait` after the audio ends. Returns the moment the first sample was due and the
/// finals.
async fn stream_and_listen(sys: &AsrSystem, meeting: &str, pcm: Vec<u8>, extents: &[(u64, u64)], wait: Duration) -> anyhow::Result<(Instant, Vec<Final>)> {
    let sub = client::token(&sys.secret, "subscribe", &[meeting]);
    let url = sys.server.ws_url(&format!("/api/v1/ws/transcript/{meeting}?token={sub}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.context("subscribing to transcripts")?;
    let audio = Duration::from_millis(audio_ms(&pcm));
    let ingest = client::token(&sys.secret, "ingest", &[meeting]);
    let url = earshot_agent::ingest_url(&sys.server.ws_url(""), &MeetingId::parse(meeting)?, Source::Mic)?;
    let agent = earshot_agent::connect(&url, Some(&ingest)).await?;
    let session = earshot_agent::Session::handshake(agent, PcmFormat::MONO_16K).await?;
    let input = Input {
        format: PcmFormat::MONO_16K,
        data_len: Some(pcm.len() as u64),
        reader: Box::new(Cursor::new(pcm)),
    };
    let pacing = Pacing::new(1.0, FRAME_MS)?;
    let t0 = Instant::now();
    let sender = tokio::spawn(async move {
        earshot_agent::stream_input(session, input, pacing, &mut (), std::future::pending()).await
    });
    let until = t0 + audio + wait;
    let mut finals = Vec::new();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(until) => break,
        };
        let Some(msg) = msg else { break };
        let msg = msg.context("transcript socket")?;
        let Ok(text) = msg.to_text() else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
        if v["type"] == "transcript" && v["is_final"] == true {
            finals.push(Final {
                at: Instant::now(),
                start_ms: v["start_ms"].as_u64().unwrap_or(0),
                end_ms: v["end_ms"].as_u64().unwrap_or(0),
                text: v["text"].as_str().unwrap_or_default().to_owned(),
            });
            if finals_per_sentence(extents, &finals).iter().all(Option::is_some) {
                break;
            }
        }
    }
    let outcome = sender.await.context("streaming task")??;
    if !outcome.matches() {
        bail!("ingest stored {:?} of {:?} sent", outcome.stored, outcome.sent);
    }
    Ok((t0, finals))
}

/// The last final overlapping each sentence's extent, if any arrived.
fn finals_per_sentence<'a>(extents: &[(u64, u64)], finals: &'a [Final]) -> Vec<Option<&'a Final>> {
    extents
        .iter()
        .map(|&(a, b)| finals.iter().filter(|f| !f.text.is_empty() && f.end_ms >= a && f.start_ms <= b).last())
        .collect()
}

fn ms_after(t: Instant, base: Instant) -> f64 {
    t.checked_duration_since(base).map_or_else(|| -(base.duration_since(t).as_secs_f64() * 1000.0), |d| d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// End-to-end figures.
#[derive(Default)]
struct Live {
    latency_p50_ms: Runs,
    latency_p95_ms: Runs,
    wer_pct: Runs,
    max_streams: Runs,
    lag_p95_ms: Runs,
    lag_max_ms: Runs,
    trials: Vec<String>,
}

async fn latency_run(launcher: &Launcher, model: &Path, clips: &[Clip], sizes: &AsrSizes, live: &mut Live) -> anyhow::Result<()> {
    let sys = start_system(launcher, model).await?;
    let order: Vec<usize> = (0..sizes.latency_sentences).map(|i| i % clips.len()).collect();
    let (pcm, extents) = compose(clips, order.iter().copied(), LATENCY_GAP_MS);
    let (t0, finals) = stream_and_listen(&sys, "asr-latency", pcm, &extents, LATENCY_FINAL_WAIT).await?;
    let per = finals_per_sentence(&extents, &finals);
    let mut lat: Vec<f64> = per
        .iter()
        .zip(&extents)
        .filter_map(|(f, &(_, end))| f.map(|f| ms_after(f.at, t0 + Duration::from_millis(end))))
        .collect();
    lat.sort_by(f64::total_cmp);
    let missing = per.iter().filter(|f| f.is_none()).count();
    if missing > 0 {
        live.trials.push(format!("latency run: {missing} of {} sentences got no final", per.len()));
    }
    live.latency_p50_ms.push(percentile(&lat, 0.5));
    live.latency_p95_ms.push(percentile(&lat, 0.95));
    let texts: Vec<String> = finals.iter().map(|f| f.text.clone()).collect();
    let reference: Vec<&str> = order.iter().map(|&i| clips[i].text).collect();
    live.wer_pct.push(100.0 * corpus_wer([(reference.join(" ").as_str(), texts.join(" ").as_str())]));
    Ok(())
}

/// One concurrency trial: K streams of continuous speech at once.
struct Trial {
    pass: bool,
    why: String,
    lags_ms: Vec<f64>,
}

async fn trial(launcher: &Launcher, model: &Path, clips: &[Clip], sizes: &AsrSizes, k: usize) -> anyhow::Result<Trial> {
    let sys = std::sync::Arc::new(start_system(launcher, model).await?);
    let mut tasks = Vec::new();
    for s in 0..k {
        // Each stream speaks a different rotation of the clips, so passes do not line up.
        let order: Vec<usize> = (0..sizes.stream_sentences).map(|i| (i + s) % clips.len()).collect();
        let (pcm, extents) = compose(clips, order.into_iter(), CONTINUOUS_GAP_MS);
        let sys = sys.clone();
        // Spread the starts over a second, as meetings do not start on the same frame.
        let offset = Duration::from_millis((s as u64 * 1000) / k as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let r = stream_and_listen(&sys, &format!("asr-stream-{s}"), pcm, &extents, MAX_LAG + Duration::from_secs(1)).await;
            r.map(|(t0, finals)| (t0, finals, extents))
        }));
    }
    let mut lags = Vec::new();
    let mut missing = 0;
    let mut sentences = 0;
    for t in tasks {
        let (t0, finals, extents) = t.await.context("stream task")??;
        sentences += extents.len();
        let per = finals_per_sentence(&extents, &finals);
        missing += per.iter().filter(|f| f.is_none()).count();
        // How far behind the audio each final is: arrival − when its last sample was due.
        lags.extend(finals.iter().filter(|f| !f.text.is_empty()).map(|f| ms_after(f.at, t0 + Duration::from_millis(f.end_ms))));
    }
    lags.sort_by(f64::total_cmp);
    let max = lags.last().copied().unwrap_or(f64::NAN);
    let limit = MAX_LAG.as_secs_f64() * 1000.0;
    let (pass, why) = if missing > 0 {
        (false, format!("{missing} of {sentences} sentences without a final within {} s", MAX_LAG.as_secs()))
    } else if max > limit {
        (false, format!("lag max {max:.0} ms"))
    } else {
        (true, format!("lag p95 {:.0} ms, max {max:.0} ms", percentile(&lags, 0.95)))
    };
    Ok(Trial { pass, why, lags_ms: lags })
}

async fn concurrency(launcher: &Launcher, model: &Path, clips: &[Clip], sizes: &AsrSizes, live: &mut Live) -> anyhow::Result<()> {
    let record = |k: usize, t: &Trial, live: &mut Live| {
        live.trials.push(format!("K={k}: {} ({})", if t.pass { "pass" } else { "fail" }, t.why));
        eprintln!("  asr streams K={k}: {}", t.why);
    };
    let mut best: Option<(usize, Trial)> = None;
    let mut fail_at = None;
    let mut k = sizes.streams_start;
    loop {
        let t = trial(launcher, model, clips, sizes, k).await?;
        record(k, &t, live);
        if !t.pass {
            fail_at = Some(k);
            break;
        }
        best = Some((k, t));
        if k >= sizes.streams_max {
            break;
        }
        k = (k * 2).min(sizes.streams_max);
    }
    if let Some(mut hi) = fail_at {
        let mut lo = best.as_ref().map_or(0, |b| b.0);
        for _ in 0..sizes.bisect {
            if hi - lo <= 1 {
                break;
            }
            let mid = (lo + hi) / 2;
            let t = trial(launcher, model, clips, sizes, mid).await?;
            record(mid, &t, live);
            if t.pass {
                lo = mid;
                best = Some((mid, t));
            } else {
                hi = mid;
            }
        }
    }
    match best {
        Some((k, t)) => {
            live.max_streams.push(k as f64);
            live.lag_p95_ms.push(percentile(&t.lags_ms, 0.95));
            live.lag_max_ms.push(t.lags_ms.last().copied().unwrap_or(f64::NAN));
        }
        None => live.max_streams.push(0.0),
    }
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs the scenario and builds its table.
pub(crate) async fn table(launcher: &Option<Launcher>, quick: bool, reps: usize) -> anyhow::Result<Table> {
    let launcher = launcher.as_ref().context("the speech-to-text scenario needs the earshot binary: not available with --target")?;
    let sizes = AsrSizes::new(quick, reps);
    let model = speech::model_dir()?;
    let load_before = load_average();
    eprintln!("  speaking {} clips…", sizes.clips);
    let clips = make_clips(sizes.clips)?;
    let audio_s: f64 = clips.iter().map(|c| audio_ms(&c.pcm) as f64 / 1000.0).sum();

    eprintln!("  earshot engine, one pass per clip…");
    // The engine runs on its own threads, off the runtime the servers' clients use.
    let clips = std::sync::Arc::new(clips);
    let earshot = {
        let (model, clips, reps) = (model.clone(), clips.clone(), sizes.reps);
        tokio::task::spawn_blocking(move || earshot_offline(&model, &clips, reps)).await??
    };

    let mut columns = vec!["Earshot (candle, f32)".to_owned()];
    let mut peers = Vec::new();
    let mut notes = Vec::new();
    let peer_ok = peer_installed() || sizes.install_peer;
    let dir = tempfile::tempdir()?;
    for compute in PEER_COMPUTE {
        if !peer_ok {
            columns.push(format!("faster-whisper {compute} (not installed)"));
            peers.push(EngineRuns::default());
            continue;
        }
        eprintln!("  faster-whisper {compute}…");
        match peer_offline(&model, &clips, dir.path(), compute, sizes.reps) {
            Ok(r) => {
                columns.push(format!("faster-whisper {compute}"));
                peers.push(r);
            }
            Err(e) => {
                columns.push(format!("faster-whisper {compute} (failed)"));
                notes.push(format!("faster-whisper {compute}: {e:#}"));
                peers.push(EngineRuns::default());
            }
        }
    }

    let mut live = Live::default();
    eprintln!("  end to end: final latency…");
    latency_run(launcher, &model, &clips, &sizes, &mut live).await?;
    eprintln!("  end to end: concurrent streams…");
    concurrency(launcher, &model, &clips, &sizes, &mut live).await?;

    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut t = Table::new("6. Speech to text: local Whisper tiny.en beside faster-whisper", &names);
    t.setup.push(format!(
        "Clips: {} espeak-ng sentences ({} s of audio), voices {} in turn, 16 kHz s16le via sox. Model: {} (tiny.en, CTranslate2 layout, float16 weights), the same folder for both engines. Settings for both: greedy (beam size 1), no timestamps, no temperature fallback, no previous-text conditioning, English. Earshot pads a final's features to {} ms of audio; faster-whisper always to 30 s.",
        clips.len(),
        crate::report::num(audio_s),
        VOICES.join(", "),
        model.display(),
        earshot_asr::DEFAULT_FINAL_PAD_MS
    ));
    t.setup.push("One pass: each clip transcribed once as a final (Earshot: `WhisperEngine::transcribe` in this process; faster-whisper: `scripts/faster-whisper-peer.sh`, one process per setting, one untimed warm-up pass); RTF = summed wall time ÷ audio time. Streaming: the clips one after another with 1.5 s pauses through one session (VAD, interims every second, finals) in 100 ms pushes; RTF = wall time ÷ audio time.".into());
    t.setup.push(format!(
        "End to end: `earshot up` (release) with its in-process worker on {WORKER_THREADS} threads and a fresh Redis; the agent crate streams 20 ms frames in real time to the ingest route; a subscriber on `/api/v1/ws/transcript/{{id}}`. Final latency: {} sentences with 1.5 s pauses; arrival of a sentence's final − the moment its last audible sample (−40 dBFS) was due. Concurrent streams: K meetings, each {} sentences with {CONTINUOUS_GAP_MS} ms pauses (continuous speech), starts spread over 1 s; pass = every sentence gets a final and every final arrives ≤ {} s after the audio it ends at. K doubles from {} (max {}), then {} bisection steps; a fresh server per trial.",
        sizes.latency_sentences,
        sizes.stream_sentences,
        MAX_LAG.as_secs(),
        sizes.streams_start,
        sizes.streams_max,
        sizes.bisect
    ));
    let engines: Vec<&EngineRuns> = std::iter::once(&earshot).chain(peers.iter()).collect();
    let only_earshot = |r: Runs| {
        let mut v = vec![r];
        v.extend(peers.iter().map(|_| Runs::default()));
        v
    };
    t.row("WER over the clips, %", Better::Lower, engines.iter().map(|e| e.wer_pct.clone()).collect(), None);
    for (ti, threads) in THREADS.iter().enumerate() {
        let target = (*threads == 2).then(|| Target::at_most(0.113)).flatten();
        t.row(
            &format!("real-time factor, one pass per clip, {threads} thread{}", if *threads == 1 { "" } else { "s" }),
            Better::Lower,
            engines.iter().map(|e| e.rtf.get(ti).cloned().unwrap_or_default()).collect(),
            target,
        );
    }
    for (ti, threads) in THREADS.iter().enumerate() {
        t.row(
            &format!("real-time factor, streaming with interims, {threads} thread{}", if *threads == 1 { "" } else { "s" }),
            Better::Lower,
            only_earshot(earshot.stream_rtf.get(ti).cloned().unwrap_or_default()),
            None,
        );
    }
    t.row("encoder per pass (mean), ms, 2 threads", Better::Lower, only_earshot(earshot.encode_ms.clone()), None);
    t.row("decoder per token (mean), ms, 2 threads", Better::Lower, only_earshot(earshot.ms_per_token.clone()), None);
    t.row("final latency after end of speech p50, ms", Better::Lower, only_earshot(live.latency_p50_ms.clone()), Target::at_most(1000.0));
    t.row("final latency after end of speech p95, ms", Better::Lower, only_earshot(live.latency_p95_ms.clone()), None);
    t.row("WER end to end (latency run), %", Better::Lower, only_earshot(live.wer_pct.clone()), None);
    t.row(
        &format!("largest K: concurrent real-time streams, finals ≤ {} s behind", MAX_LAG.as_secs()),
        Better::Higher,
        only_earshot(live.max_streams.clone()),
        Target::at_least(8.0),
    );
    t.row("lag of finals p95 at that K, ms", Better::Lower, only_earshot(live.lag_p95_ms.clone()), None);
    t.row("lag of finals max at that K, ms", Better::Lower, only_earshot(live.lag_max_ms.clone()), None);
    t.notes.push("faster-whisper has no row beyond one pass: it is not behind Earshot's worker, so its streaming, latency and concurrency figures would measure a different system.".into());
    t.notes.push(format!("WER goal: at or below faster-whisper's on the same clips. Load average (1, 5, 15 min): {load_before} at the start, {} at the end (other builds share the 2 cores).", load_average()));
    for (name, e) in names.iter().zip(&engines) {
        if !e.misses.is_empty() {
            t.notes.push(format!("{name} misheard: {}", e.misses.join("; ")));
        }
    }
    t.notes.push(format!("trials: {}", live.trials.join("; ")));
    t.notes.extend(notes);
    Ok(t)
}

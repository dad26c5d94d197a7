//! The client commands as a newcomer runs them: the real `earshot` binary as a subprocess
//! (`demo-wav`, `token`, `stream`) against a real server and a real Redis.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use earshot_testkit::{earshot, Earshot, RedisServer};
use serde_json::{json, Value};

/// Longest a CLI subprocess may run: `stream --speed 0` of a few seconds of audio takes
/// well under a second; the margin covers a loaded CI machine.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of the canonical WAV header `demo-wav` writes.
const WAV_HEADER_BYTES: usize = 44;

fn earshot_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_earshot"));
    cmd.args(args)
        // The developer's own settings must not leak into the test.
        .env_remove("SPIN_VARIABLE_JWT_SECRET")
        .env_remove("SPIN_VARIABLE_JWT_AUDIENCE")
        .env_remove("SPIN_VARIABLE_JWT_ALGORITHM")
        .env_remove("SPIN_VARIABLE_MAX_TOKEN_TTL_S")
        .env_remove("EARSHOT_TOKEN")
        .env_remove("EARSHOT_URL")
        .env_remove("EARSHOT_KV_PATH")
        .stdin(Stdio::null());
    cmd
}

/// Runs the binary with a bounded wait; returns its output.
fn run(args: &[&str]) -> Output {
    run_with_stdin(args, None)
}

/// Runs the binary with `input` on its stdin.
fn run_with_stdin(args: &[&str], input: Option<Vec<u8>>) -> Output {
    let mut cmd = earshot_cmd(args);
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning earshot");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let deadline = Instant::now() + CLI_TIMEOUT;
    while child.try_wait().expect("waiting for earshot").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("earshot {args:?} did not finish within {CLI_TIMEOUT:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collecting earshot's output")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn explain(out: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", out.status.code(), stdout(out), String::from_utf8_lossy(&out.stderr))
}

/// The format fields and the samples of a canonical 44-byte-header WAV.
struct Wav {
    format_tag: u16,
    channels: u16,
    sample_rate: u32,
    bits: u16,
    data: Vec<u8>,
}

fn parse_canonical_wav(bytes: &[u8]) -> Wav {
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    assert!(bytes.len() >= WAV_HEADER_BYTES, "shorter than a WAV header");
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(u32_at(4) as usize, bytes.len() - 8, "RIFF size");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(u32_at(16), 16, "fmt chunk size");
    assert_eq!(u32_at(28), u32_at(24) * u32::from(u16_at(32)), "byte rate = rate × block align");
    assert_eq!(&bytes[36..40], b"data");
    let data_len = u32_at(40) as usize;
    assert_eq!(data_len, bytes.len() - WAV_HEADER_BYTES, "data size");
    Wav {
        format_tag: u16_at(20),
        channels: u16_at(22),
        sample_rate: u32_at(24),
        bits: u16_at(34),
        data: bytes[WAV_HEADER_BYTES..].to_vec(),
    }
}

fn demo_wav(dir: &Path, args: &[&str]) -> Wav {
    let path = dir.join("demo.wav");
    let path_arg = path.to_str().unwrap();
    let mut all = vec!["demo-wav", path_arg];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "{}", explain(&out));
    parse_canonical_wav(&std::fs::read(&path).unwrap())
}

#[test]
fn demo_wav_is_tone_silence_tone_at_16k_mono() {
    let dir = tempfile::tempdir().unwrap();
    let wav = demo_wav(dir.path(), &[]);
    assert_eq!((wav.format_tag, wav.channels, wav.sample_rate, wav.bits), (1, 1, 16_000, 16));
    assert_eq!(wav.data.len(), 3 * 16_000 * 2, "three 1 s segments of 16-bit mono");
    let samples: Vec<i16> = wav.data.chunks(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let peak = |s: &[i16]| s.iter().map(|v| v.unsigned_abs()).max().unwrap();
    assert!((5_000..20_000).contains(&peak(&samples[..16_000])), "a moderate tone");
    assert_eq!(peak(&samples[16_000..32_000]), 0, "digital silence");
    assert!((5_000..20_000).contains(&peak(&samples[32_000..])), "a moderate tone");

    let short = demo_wav(dir.path(), &["--seconds-each", "0.25"]);
    assert_eq!(short.data.len(), 3 * 4_000 * 2);

    let out = run(&["demo-wav", dir.path().join("x.wav").to_str().unwrap(), "--seconds-each", "0"]);
    assert!(!out.status.success(), "zero-length segments are refused");
}

fn post_json(server: &Earshot, path: &str, body: Value) -> Value {
    let resp = reqwest::blocking::Client::new().post(server.url(path)).json(&body).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().unwrap()
}

fn mint(args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "{}", explain(&out));
    let text = stdout(&out);
    let token = text.trim_end_matches('\n');
    assert_eq!(token.lines().count(), 1, "stdout holds the token alone: {text:?}");
    assert_eq!(token.split('.').count(), 3, "a compact JWT: {token:?}");
    token.to_owned()
}

#[test]
fn token_minted_before_and_after_up_is_active_on_the_server() {
    // Before the first `earshot up`: `earshot token` creates the dev secrets that `up` then uses.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let early = mint(&["--scope", "ingest subscribe", "--meeting", "m1", "--meeting", "m2", "--state-dir", state]);
    assert!(dir.path().join("dev-secrets.json").exists());

    let server = earshot!().state_dir(dir.path()).start().unwrap();
    let info = post_json(&server, "/api/v1/auth/introspect", json!({"token": early}));
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["scope"], "ingest subscribe");
    assert_eq!(info["meetings"], json!(["m1", "m2"]));
    assert_eq!(info["sub"], "dev");
    assert_eq!(info["aud"], "earshot");

    let late = mint(&["--scope", "subscribe", "--meeting", "*", "--sub", "alice", "--ttl", "120", "--state-dir", state]);
    let info = post_json(&server, "/api/v1/auth/introspect", json!({"token": late}));
    assert_eq!(info["active"], true, "{info}");
    assert_eq!((info["scope"].as_str(), info["sub"].as_str()), (Some("subscribe"), Some("alice")));
    assert_eq!(info["meetings"], json!(["*"]));
    let lifetime = info["exp"].as_u64().unwrap() - info["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 120);

    // Bad requests fail with a message, not a token.
    let out = run(&["token", "--scope", "root", "--state-dir", state]);
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--scope"), "{}", explain(&out));
}

#[test]
fn stream_stores_exactly_the_wavs_pcm_and_reports_auth_failures() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wav = demo_wav(dir.path(), &[]);
    let wav_path = dir.path().join("demo.wav");
    let url = format!("ws://{}", server.addr());
    let state = server.state_dir().to_str().unwrap();

    // No --token: `stream` mints one from the server's state dir.
    let out = run(&["stream", wav_path.to_str().unwrap(), "--meeting", "cli-1", "--url", &url, "--speed", "0", "--state-dir", state]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let expected_frames = wav.data.len() / 640;
    let expected = format!(
        "sent {expected_frames} frames / {n} bytes; server stored {expected_frames} frames / {n} bytes: match",
        n = wav.data.len()
    );
    assert_eq!(stdout(&out).trim_end(), expected, "{}", explain(&out));
    assert!(redis.stored_pcm("audio:cli-1:mic").unwrap() == wav.data, "Redis holds exactly the WAV's samples");

    // An explicit token, the other source, real-time pacing at 8× speed.
    let token = mint(&["--scope", "ingest", "--meeting", "cli-2", "--state-dir", state]);
    let started = Instant::now();
    let out = run(&["stream", wav_path.to_str().unwrap(), "--meeting", "cli-2", "--source", "system", "--url", &url, "--token", &token, "--speed", "8"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(started.elapsed() >= Duration::from_millis(300), "3 s of audio at 8× takes at least 0.375 s");
    assert!(stdout(&out).contains(": match"), "{}", explain(&out));
    assert!(redis.stored_pcm("audio:cli-2:sys").unwrap() == wav.data);

    // Stdin: a WAV is recognised by its header; anything else is raw PCM.
    let wav_bytes = std::fs::read(&wav_path).unwrap();
    let stdin_args = ["stream", "-", "--meeting", "cli-4", "--url", &url, "--speed", "0", "--state-dir", state];
    let out = run_with_stdin(&stdin_args, Some(wav_bytes));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(redis.stored_pcm("audio:cli-4:mic").unwrap() == wav.data);
    let raw_args = ["stream", "-", "--meeting", "cli-5", "--url", &url, "--speed", "0", "--state-dir", state, "--sample-rate", "48000", "--channels", "2", "--frame-ms", "10"];
    let raw: Vec<u8> = (0..48_000u32 * 4 / 2).map(|i| (i % 253) as u8).collect();
    let out = run_with_stdin(&raw_args, Some(raw.clone()));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(stdout(&out).starts_with("sent 50 frames / 96000 bytes; server stored 50 frames / 96000 bytes: match"), "{}", explain(&out));
    assert!(redis.stored_pcm("audio:cli-5:mic").unwrap() == raw);

    // A bad token: the server's 1008 is reported, and the exit code says "closed by server".
    let out = run(&["stream", wav_path.to_str().unwrap(), "--meeting", "cli-3", "--url", &url, "--token", "not-a-jwt", "--speed", "0"]);
    assert_eq!(out.status.code(), Some(5), "{}", explain(&out));
    assert!(stdout(&out).starts_with("closed by server: 1008 auth failed"), "{}", explain(&out));
    // A token for another meeting is refused the same way.
    let out = run(&["stream", wav_path.to_str().unwrap(), "--meeting", "cli-3", "--url", &url, "--token", &token, "--speed", "0"]);
    assert!(stdout(&out).starts_with("closed by server: 1008"), "{}", explain(&out));
    assert!(redis.stored_pcm("audio:cli-3:mic").unwrap().is_empty());

    // Tokens never reach the server's logs.
    assert!(!server.logs().join("\n").contains(&token));
}

#[test]
fn stream_refuses_bad_input_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wav");
    std::fs::write(&bad, b"definitely not a wav file").unwrap();
    // Port 9 (discard) is never an Earshot: the input is refused before any connection.
    let out = run(&["stream", bad.to_str().unwrap(), "--meeting", "m1", "--url", "ws://127.0.0.1:9", "--token", "t"]);
    assert_eq!(out.status.code(), Some(3), "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a RIFF/WAVE file"), "{}", explain(&out));

    let out = run(&["stream", "-", "--meeting", "bad id", "--token", "t"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
}

#[test]
fn a_slow_stream_is_kept_alive_past_the_idle_timeout() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wav = demo_wav(dir.path(), &["--pattern", "tone", "--seconds-each", "0.25"]);
    let wav_path = dir.path().join("demo.wav");
    let url = format!("ws://{}", server.addr());
    // Two 125 ms frames at 1/100 speed: 12.5 s between them, past the 10 s idle timeout,
    // so only keepalives hold the stream open.
    let args = ["stream", wav_path.to_str().unwrap(), "--meeting", "slow", "--url", &url, "--speed", "0.01", "--frame-ms", "125"];
    let out = run(&[&args[..], &["--state-dir", server.state_dir().to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert_eq!(stdout(&out).trim_end(), "sent 2 frames / 8000 bytes; server stored 2 frames / 8000 bytes: match");
    assert!(redis.stored_pcm("audio:slow:mic").unwrap() == wav.data);
}

/// Issue 4's walk-through as a test: `earshot stream` of the tone–silence–tone demo WAV
/// yields speech events at the right stream times and stats whose talk time matches.
#[test]
fn streaming_the_demo_wav_yields_speech_events_and_matching_talk_time() {
    // Tolerance: one 10 ms analysis window plus one 20 ms frame.
    const TOLERANCE_MS: i64 = 30;
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    demo_wav(dir.path(), &[]);
    let wav_path = dir.path().join("demo.wav");
    let url = format!("ws://{}", server.addr());
    let state = server.state_dir().to_str().unwrap().to_owned();
    let (_, secret) = server.dev_secrets().unwrap();
    let sub = earshot_testkit::ws::token(&secret, "subscribe", &["walk"]);
    let watch_url = server.ws_url(&format!("/api/v1/ws/meetings/walk?token={sub}"));

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let events = rt.block_on(async {
        let mut watcher = earshot_testkit::ws::connect(&watch_url, &[]).await.unwrap();
        assert_eq!(earshot_testkit::ws::next_json(&mut watcher).await.unwrap()["type"], "snapshot");
        let wav = wav_path.to_str().unwrap().to_owned();
        let streamer = tokio::task::spawn_blocking(move || {
            run(&["stream", &wav, "--meeting", "walk", "--url", &url, "--speed", "4", "--state-dir", &state])
        });
        let mut events = Vec::new();
        loop {
            let v = earshot_testkit::ws::next_json(&mut watcher).await.unwrap();
            let done = v["type"] == "source_disconnected";
            events.push(v);
            if done {
                break;
            }
        }
        let out = streamer.await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
        assert!(stdout(&out).contains(": match"), "{}", explain(&out));
        events
    });
    let speech: Vec<(String, i64)> = events
        .iter()
        .filter(|e| e["type"] == "speech_started" || e["type"] == "speech_ended")
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["at_ms"].as_i64().unwrap()))
        .collect();
    let expected = [("speech_started", 0), ("speech_ended", 1000), ("speech_started", 2000), ("speech_ended", 3000)];
    assert_eq!(speech.len(), expected.len(), "speech events: {speech:?}");
    for ((kind, at), (want_kind, want_at)) in speech.iter().zip(expected) {
        assert_eq!(kind, want_kind);
        assert!((at - want_at).abs() <= TOLERANCE_MS, "{kind} at {at} ms, expected {want_at} ± {TOLERANCE_MS}");
    }
    let stats = events.iter().rev().find(|e| e["type"] == "stats").expect("a final stats event");
    let talk = stats["talk_ms"]["mic"].as_i64().unwrap();
    assert!((talk - 2000).abs() <= 2 * TOLERANCE_MS, "talk_ms {talk}, the file has 2000 ms of tone");
}

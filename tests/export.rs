//! Transcript export end to end: segments handed in through the real intake route
//! (`POST /api/v1/meetings/{id}/transcript`) come back from
//! `GET /api/v1/meetings/{id}/transcript?format=…` as SRT, WebVTT and text byte for byte as
//! the fixtures under tests/fixtures/export/ say, parse with real subtitle parsers (PyPI
//! `srt` and `webvtt-py`, run by tests/fixtures/export/parse_subtitles.py), and as JSON in
//! start order with `since`/`until` ranges; a meeting larger than many pages streams whole;
//! scopes are enforced. Real Redis, the real server, the real .wasm components.

use std::path::PathBuf;
use std::process::Command;

use earshot_testkit::ws::{self, ingest, token};
use earshot_testkit::{earshot, repo_root, Earshot, RedisServer};
use serde_json::{json, Value};

struct Setup {
    redis: RedisServer,
    server: Earshot,
    secret: String,
}

fn setup() -> Setup {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    Setup { redis, server, secret }
}

impl Setup {
    /// Makes `meeting` known the way production does: a capture agent connects to it.
    async fn known_meeting(&self, meeting: &str) -> ws::Agent {
        ingest(&self.server, &self.secret, meeting, "mic").await.unwrap()
    }

    /// POSTs one segment with a `publish` token; its offset.
    async fn post(&self, meeting: &str, segment: &Value) -> Option<String> {
        let t = token(&self.secret, "publish", &[meeting]);
        let resp = reqwest::Client::new()
            .post(self.server.url(&format!("/api/v1/meetings/{meeting}/transcript")))
            .bearer_auth(t)
            .body(segment.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{segment}");
        let reply: Value = resp.json().await.unwrap();
        reply["offset"].as_str().map(str::to_owned)
    }

    /// GETs the export with `token` (`None`: no Authorization header).
    async fn export(&self, meeting: &str, query: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = reqwest::Client::new().get(self.server.url(&format!("/api/v1/meetings/{meeting}/transcript{query}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// The export's body with a `subscribe` token, after checking it is a 200 of `content_type`.
    async fn export_text(&self, meeting: &str, query: &str, content_type: &str) -> String {
        let t = token(&self.secret, "subscribe", &[meeting]);
        let resp = self.export(meeting, query, Some(&t)).await;
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(resp.headers()["content-type"], content_type, "{query}");
        resp.text().await.unwrap()
    }
}

fn segment(meeting: &str, source: &str, text: &str, start_ms: u64, end_ms: u64, speaker: Option<&str>) -> Value {
    let mut s = json!({"meeting_id": meeting, "source": source, "text": text, "is_final": true, "start_ms": start_ms, "end_ms": end_ms});
    if let Some(speaker) = speaker {
        s["speaker"] = json!(speaker);
    }
    s
}

/// The fixture meeting, in arrival order: a system-audio segment arriving after a later
/// microphone one, a line break in a text, a segment long enough for two cues, Unicode and
/// markup characters, a blank segment and a zero-length one, plus an interim (never stored).
fn fixture_segments(meeting: &str) -> Vec<Value> {
    let mut interim = segment(meeting, "mic", "Let's st", 2_000, 2_600, None);
    interim["is_final"] = json!(false);
    vec![
        segment(meeting, "mic", "Good morning,\neveryone.", 0, 1_800, None),
        interim,
        segment(
            meeting,
            "mic",
            "Let's start with the quarterly numbers, which look better than we expected after the difficult spring.",
            2_000,
            9_000,
            None,
        ),
        segment(meeting, "sys", "Morning! Can you hear me?", 1_500, 3_200, Some("Dana")),
        segment(meeting, "sys", "Grüße aus Köln — 会議を始めます & <welcome>", 9_500, 12_000, None),
        segment(meeting, "mic", "  ", 12_000, 12_100, None),
        segment(meeting, "mic", "Thanks.", 13_000, 13_000, None),
    ]
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(name)).unwrap()
}

fn fixture_dir() -> PathBuf {
    repo_root().join("tests/fixtures/export")
}

/// The Python with `srt` and `webvtt-py` (.ci/run installs them into this venv).
fn subtitle_python() -> PathBuf {
    let venv = std::env::var_os("EARSHOT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/earshot/venv"));
    venv.join("bin/python")
}

/// Cues of `srt` and `vtt` as the real parsers read them.
fn parse_subtitles(srt: &str, vtt: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (srt_path, vtt_path) = (dir.path().join("m.srt"), dir.path().join("m.vtt"));
    std::fs::write(&srt_path, srt).unwrap();
    std::fs::write(&vtt_path, vtt).unwrap();
    let python = subtitle_python();
    let out = Command::new(&python)
        .arg(fixture_dir().join("parse_subtitles.py"))
        .args([&srt_path, &vtt_path])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (.ci/run installs srt and webvtt-py into this venv)", python.display()));
    assert!(out.status.success(), "subtitle parsers refused the export: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn srt_vtt_and_text_exports_match_the_fixtures_and_parse_with_real_subtitle_parsers() {
    let s = setup();
    let _agent = s.known_meeting("ex1").await;
    for seg in fixture_segments("ex1") {
        s.post("ex1", &seg).await;
    }

    let srt = s.export_text("ex1", "?format=srt", "application/x-subrip; charset=utf-8").await;
    let vtt = s.export_text("ex1", "?format=vtt", "text/vtt; charset=utf-8").await;
    let txt = s.export_text("ex1", "?format=txt", "text/plain; charset=utf-8").await;
    assert_eq!(srt, fixture("meeting.srt"));
    assert_eq!(vtt, fixture("meeting.vtt"));
    assert_eq!(txt, fixture("meeting.txt"));

    let parsed = parse_subtitles(&srt, &vtt);
    let times = |cues: &Value| -> Vec<(u64, u64)> {
        cues.as_array().unwrap().iter().map(|c| (c["start_ms"].as_u64().unwrap(), c["end_ms"].as_u64().unwrap())).collect()
    };
    // Six cues: five non-blank finals, the long one split in two; the interim is not stored.
    assert_eq!(times(&parsed["srt"]), [(0, 1_800), (1_500, 3_200), (2_000, 6_480), (6_480, 9_000), (9_500, 12_000), (13_000, 13_001)]);
    assert_eq!(times(&parsed["vtt"]), [(0, 1_800), (1_500, 3_200), (2_000, 7_530), (7_530, 9_000), (9_500, 12_000), (13_000, 13_001)]);
    let voices: Vec<&str> = parsed["vtt"].as_array().unwrap().iter().map(|c| c["voice"].as_str().unwrap()).collect();
    assert_eq!(voices, ["user", "Dana", "user", "user", "others", "user"]);
    for cue in parsed["srt"].as_array().unwrap().iter().chain(parsed["vtt"].as_array().unwrap()) {
        let text = cue["text"].as_str().unwrap();
        assert!(!text.trim().is_empty() && text.lines().count() <= 2, "{cue}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_export_lists_every_final_in_start_order_and_since_until_select_a_range() {
    let s = setup();
    let _agent = s.known_meeting("ex2").await;
    let mut offsets = Vec::new();
    for seg in fixture_segments("ex2") {
        if let Some(offset) = s.post("ex2", &seg).await {
            offsets.push(offset);
        }
    }
    assert_eq!(offsets.len(), 6, "six finals stored");

    let body = s.export_text("ex2", "", "application/json").await;
    let all: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(all["meeting_id"], "ex2");
    let segs = all["segments"].as_array().unwrap();
    let starts: Vec<u64> = segs.iter().map(|x| x["start_ms"].as_u64().unwrap()).collect();
    assert_eq!(starts, [0, 1_500, 2_000, 9_500, 12_000, 13_000], "start order, blank segment kept");
    assert_eq!(segs[0]["offset"], offsets[0].as_str());
    assert_eq!(segs[1]["speaker"], "Dana");
    assert_eq!(segs[3]["speaker"], "others");
    assert_eq!(segs[0]["text"], "Good morning,\neveryone.", "JSON keeps the text as stored");

    // since is exclusive, until inclusive: offsets[1] (the long mic one) through offsets[3].
    let range = format!("?format=json&since={}&until={}", offsets[0], offsets[3]);
    let part: Value = serde_json::from_str(&s.export_text("ex2", &range, "application/json").await).unwrap();
    let got: Vec<&str> = part["segments"].as_array().unwrap().iter().map(|x| x["offset"].as_str().unwrap()).collect();
    // offsets[2] (sys, 1.5 s) starts before offsets[1] (mic, 2 s): start order within the range.
    assert_eq!(got, [offsets[2].as_str(), offsets[1].as_str(), offsets[3].as_str()]);
    let after_last = format!("?format=srt&since={}", offsets[5]);
    assert_eq!(s.export_text("ex2", &after_last, "application/x-subrip; charset=utf-8").await, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_meeting_of_many_pages_streams_whole_and_in_order() {
    let s = setup();
    let _agent = s.known_meeting("ex3").await;
    // Written straight into the stream in the stored shape (posting 1,234 segments one by one
    // would test the intake, not the export): more than six pages of 200, the two sources
    // arriving interleaved and out of start order by up to a second.
    const N: u64 = 1_234;
    let client = redis::Client::open(s.redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut pipe = redis::pipe();
    for i in 0..N {
        let (source, start) = if i % 2 == 0 { ("mic", i * 500 + 1_000) } else { ("sys", i * 500 + 100) };
        let seg = segment("ex3", source, &format!("segment number {i}"), start, start + 400, None);
        pipe.cmd("XADD").arg("transcript:ex3").arg("*").arg("segment").arg(seg.to_string()).ignore();
    }
    let () = pipe.query(&mut con).unwrap();

    let t = token(&s.secret, "subscribe", &["ex3"]);
    let resp = s.export("ex3", "?format=json", Some(&t)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none(), "streamed, not sized up front: {:?}", resp.headers());
    let v: Value = resp.json().await.unwrap();
    let segs = v["segments"].as_array().unwrap();
    assert_eq!(segs.len() as u64, N);
    let starts: Vec<u64> = segs.iter().map(|x| x["start_ms"].as_u64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "start order across pages");
    let srt = s.export_text("ex3", "?format=srt", "application/x-subrip; charset=utf-8").await;
    assert_eq!(srt.matches(" --> ").count() as u64, N);
    assert!(srt.contains(&format!("\n{N}\n")), "cues numbered through to {N}");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_answers_401_403_404_400_and_405_as_documented() {
    let s = setup();
    let _agent = s.known_meeting("ex4").await;
    s.post("ex4", &segment("ex4", "mic", "hello", 0, 500, None)).await;
    let status = |r: reqwest::Response| r.status().as_u16();

    assert_eq!(status(s.export("ex4", "?format=srt", None).await), 401);
    assert_eq!(status(s.export("ex4", "?format=srt", Some("not-a-token")).await), 401);
    let other = token(&s.secret, "subscribe", &["someone-else"]);
    assert_eq!(status(s.export("ex4", "?format=srt", Some(&other)).await), 403);
    let publish = token(&s.secret, "publish ingest admin", &["ex4"]);
    assert_eq!(status(s.export("ex4", "?format=srt", Some(&publish)).await), 403, "scopes do not imply subscribe");

    let sub = token(&s.secret, "subscribe", &["*"]);
    assert_eq!(status(s.export("never-seen", "?format=srt", Some(&sub)).await), 404);
    let bad = s.export("ex4", "?format=pdf", Some(&sub)).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "unknown format (json, srt, vtt or txt)");
    assert_eq!(status(s.export("ex4", "?since=yesterday", Some(&sub)).await), 400);
    assert_eq!(status(s.export("ex4", "?format=srt&format=vtt", Some(&sub)).await), 400);

    let put = reqwest::Client::new().put(s.server.url("/api/v1/meetings/ex4/transcript")).bearer_auth(&sub).send().await.unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(put.headers()["allow"], "GET, POST");
    let unknown_route = reqwest::Client::new().get(s.server.url("/api/v1/meetings/ex4/nothing")).bearer_auth(&sub).send().await.unwrap();
    assert_eq!(unknown_route.status(), 404);
    assert_eq!(status(s.export("ex4", "?format=vtt", Some(&sub)).await), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_failure_mid_export_aborts_the_body_instead_of_ending_it() {
    let mut s = setup();
    let _agent = s.known_meeting("ex5").await;
    // ~10 MB of history: far more than the connection buffers, so the component is still
    // paging through it, blocked on a client that does not read yet, when Redis goes away.
    let client = redis::Client::open(s.redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let text = "x".repeat(1_000);
    let mut pipe = redis::pipe();
    for i in 0..10_000u64 {
        let seg = segment("ex5", "mic", &text, i * 1_000, i * 1_000 + 900, None);
        pipe.cmd("XADD").arg("transcript:ex5").arg("*").arg("segment").arg(seg.to_string()).ignore();
    }
    let () = pipe.query(&mut con).unwrap();

    let t = token(&s.secret, "subscribe", &["ex5"]);
    let resp = s.export("ex5", "?format=srt", Some(&t)).await;
    assert_eq!(resp.status(), 200, "the first page was read before the head");
    s.redis.kill();
    let body = resp.bytes().await;
    assert!(body.is_err(), "a truncated export must not end like a whole one (got {} bytes)", body.map(|b| b.len()).unwrap_or(0));
    // And the component says why: its request line records the abort and the Redis failure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.server.logs().iter().any(|l| l.contains("export aborted") && l.contains("redis")) {
        assert!(std::time::Instant::now() < deadline, "no abort line:\n{}", s.server.logs().join("\n"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

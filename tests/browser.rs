//! The browser page end to end: the `web` component serves it at `/`, Debian's headless
//! Chromium runs it (driven by playwright-core from `tests/browser/drive.mjs`), real
//! sockets carry meeting events and the transcript, a real Redis holds the history.
//!
//! The page connects (typed-in meeting and token), shows an interim line per source at
//! once (mic and sys talking over each other), replaces each in place by its source's final
//! without touching the other's, reloads and resumes, comes back after missing a segment (history replay after
//! `?since=`), survives a segment delivered twice, shows talk time and a speaking source
//! (events published as the ingest analytics would), and a fresh browser opened from a
//! `#meeting=…&token=…` link gets the whole history: every segment exactly once, in order.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use earshot_protocol::asr::speaker_label;
use earshot_protocol::grip::Item;
use earshot_protocol::ids::{meeting_channel, transcript_channel, GRIP_REDIS_PREFIX};
use earshot_protocol::meeting::{MeetingEvent, TalkSummary};
use earshot_protocol::transcript::{live_item, transcript_stream_key, Segment, INTAKE_CHANNEL, SEGMENT_FIELD};
use earshot_protocol::{MeetingId, Source};
use earshot_testkit::ws::{self, connect, next_of_type, send_text, token, HANDSHAKE};
use earshot_testkit::{earshot, repo_root, Earshot, RedisServer};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Debian's Chromium (`apt-get install -y chromium`); `EARSHOT_CHROMIUM` overrides it.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Where the driver leaves its screenshot of the finished page.
const SCREENSHOT: &str = "/tmp/earshot-page.png";

/// The whole browser run: a cold Chromium start, three page loads, two reloads and a
/// screenshot take 10-20 s on this 2-core machine; the bound only stops a hang.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(150);

/// Longest the test waits for a Redis-side condition (a subscription, a stored segment).
const REDIS_WAIT: Duration = Duration::from_secs(10);

/// How to get what this test needs, for its failure messages.
const INSTALL_HINT: &str = "needs Debian's Chromium (`apt-get install -y chromium`), Node.js 20+ with npm, \
     and `npm ci --prefix tests/browser` (.ci/run installs Chromium and runs npm ci)";

/// What is missing to run a browser, if anything.
fn browser_prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("EARSHOT_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| CHROMIUM.into());
    if !chromium.is_file() {
        return Err(format!("Chromium is not installed at {}: {INSTALL_HINT}", chromium.display()));
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err(format!("node is not on the PATH: {INSTALL_HINT}")),
    }
    let driver_dir = repo_root().join("tests/browser");
    if !driver_dir.join("node_modules/playwright-core/package.json").is_file() {
        return Err(format!("playwright-core is not installed in {}/node_modules: {INSTALL_HINT}", driver_dir.display()));
    }
    Ok((chromium, driver_dir))
}

/// The final segments the test publishes, in order.
const LINES: [&str; 6] = [
    "Good morning everyone, let's start with the roadmap.",
    "Morning! The ingest path is done; transcripts land in Redis.",
    "Great — next up is the browser page.",
    "It resumes after a reload without losing a line.",
    "Each speaker keeps a greyed line while talking.",
    "Let me share my screen.",
];

/// A segment as the transcription worker publishes it: `speaker` is the source's label.
fn segment(meeting: &str, source: Source, text: &str, is_final: bool, start_ms: u64) -> Segment {
    Segment {
        meeting_id: meeting.into(),
        source,
        text: text.into(),
        is_final,
        start_ms,
        end_ms: start_ms + 2_400,
        speaker: Some(speaker_label(source).into()),
        confidence: Some(0.93),
    }
}

/// What the driver should see for an interim segment of `source`.
fn interim_reply(source: Source, text: &str) -> serde_json::Value {
    json!({ "source": source.as_str(), "speaker": speaker_label(source), "text": text })
}

/// The test's side of Redis: what speech-to-text workers and the analytics publish.
struct Bus {
    con: redis::aio::MultiplexedConnection,
    meeting: MeetingId,
}

impl Bus {
    async fn cmd<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        cmd.query_async(&mut self.con).await.context("redis")
    }

    /// Publishes a segment as a speech-to-text worker does: on the transcripts
    /// component's intake channel (it stores final ones and fans every one out).
    async fn segment(&mut self, seg: Segment) -> anyhow::Result<()> {
        self.cmd(redis::cmd("PUBLISH").arg(INTAKE_CHANNEL).arg(seg.to_json())).await
    }

    /// Delivers the newest stored segment live once more, with its offset: what a client
    /// must survive if any hop ever repeats a message.
    async fn redeliver_newest(&mut self) -> anyhow::Result<()> {
        let key = transcript_stream_key(&self.meeting);
        let newest: Vec<(String, Vec<(String, String)>)> = self.cmd(redis::cmd("XREVRANGE").arg(&key).arg("+").arg("-").arg("COUNT").arg(1)).await?;
        let (offset, fields) = newest.into_iter().next().ok_or_else(|| anyhow!("{key} is empty"))?;
        let json = fields.into_iter().find(|(k, _)| k == SEGMENT_FIELD).map(|(_, v)| v).ok_or_else(|| anyhow!("no {SEGMENT_FIELD} field"))?;
        let (seg, _) = Segment::parse(json.as_bytes()).map_err(|e| anyhow!("stored segment: {e}"))?;
        self.grip(&live_item(&self.meeting, Some(offset), seg)).await
    }

    async fn grip(&mut self, item: &Item) -> anyhow::Result<()> {
        let channel = format!("{GRIP_REDIS_PREFIX}{}", item.channel);
        self.cmd(redis::cmd("PUBLISH").arg(channel).arg(serde_json::to_string(item)?)).await
    }

    async fn meeting_event(&mut self, event: &MeetingEvent) -> anyhow::Result<()> {
        self.grip(&Item::text(meeting_channel(&self.meeting), event.to_json())).await
    }

    /// Waits until the relay's Redis subscription to `channel` is in place, so a live
    /// publish reaches the page rather than racing its subscribe.
    async fn wait_subscribed(&mut self, channel: &str) -> anyhow::Result<()> {
        let name = format!("{GRIP_REDIS_PREFIX}{channel}");
        let deadline = Instant::now() + REDIS_WAIT;
        loop {
            let (_, n): (String, u64) = self.cmd(redis::cmd("PUBSUB").arg("NUMSUB").arg(&name)).await?;
            if n > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the relay never subscribed to {name}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_subscribers(&mut self) -> anyhow::Result<()> {
        self.wait_subscribed(&meeting_channel(&self.meeting)).await?;
        self.wait_subscribed(&transcript_channel(&self.meeting)).await
    }

    /// Waits until the meeting's stream holds `n` segments.
    async fn wait_stored(&mut self, n: u64) -> anyhow::Result<()> {
        let key = transcript_stream_key(&self.meeting);
        let deadline = Instant::now() + REDIS_WAIT;
        loop {
            let len: u64 = self.cmd(redis::cmd("XLEN").arg(&key)).await?;
            if len >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{key} holds {len} segments, never {n}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Opens an ingest connection for `source` and completes the handshake (the meeting
/// becomes known and its presence shows the source).
async fn capture_agent(server: &Earshot, secret: &str, meeting: &str, source: &str) -> anyhow::Result<ws::Ws> {
    let url = server.ws_url(&format!("/api/v1/ws/ingest/meetings/{meeting}?source={source}"));
    let bearer = format!("Bearer {}", token(secret, "ingest", &[meeting]));
    let mut c = connect(&url, &[("authorization", &bearer)]).await?;
    send_text(&mut c, HANDSHAKE).await?;
    next_of_type(&mut c, "handshake_ack").await?;
    Ok(c)
}

/// Runs the driver: answers each `@step` it prints by acting on the server side.
async fn run_driver(
    driver_dir: &Path,
    chromium: &Path,
    server: &Earshot,
    secret: &str,
    bus: &mut Bus,
) -> anyhow::Result<()> {
    let meeting = bus.meeting.to_string();
    let mut child = tokio::process::Command::new("node")
        .arg(driver_dir.join("drive.mjs"))
        .arg(server.url("/"))
        .arg(&meeting)
        .arg(token(secret, "subscribe", &[&meeting]))
        .current_dir(driver_dir)
        .env("EARSHOT_CHROMIUM", chromium)
        .env("EARSHOT_SCREENSHOT", SCREENSHOT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting node")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });

    let mut log = Vec::new();
    let mut agents = Vec::new();
    let steps = async {
        while let Some(line) = stdout.next_line().await? {
            let Some(step) = line.strip_prefix('@') else {
                log.push(line);
                continue;
            };
            let reply = match step {
                "connected" => {
                    bus.wait_subscribers().await?;
                    // A second source joins while the page watches.
                    agents.push(capture_agent(server, secret, &meeting, "sys").await?);
                    // Both talk at once: an interim of each, mic first (the trigger keeps order).
                    bus.segment(segment(&meeting, Source::Mic, "Good morning every", false, 0)).await?;
                    bus.segment(segment(&meeting, Source::Sys, "Morning! The ingest", false, 300)).await?;
                    json!({ "interims": [interim_reply(Source::Mic, "Good morning every"), interim_reply(Source::Sys, "Morning! The ingest")] })
                }
                "interims" => {
                    bus.segment(segment(&meeting, Source::Mic, LINES[0], true, 0)).await?;
                    json!({ "final": "mic", "expect": &LINES[..1] })
                }
                "mic-final" => {
                    bus.segment(segment(&meeting, Source::Sys, LINES[1], true, 300)).await?;
                    json!({ "final": "sys", "expect": &LINES[..2] })
                }
                "reloaded" => {
                    bus.wait_subscribers().await?;
                    bus.segment(segment(&meeting, Source::Sys, LINES[2], true, 2_600)).await?;
                    json!({ "expect": &LINES[..3] })
                }
                "away" => {
                    // No page is open: only history replay can bring this one back.
                    bus.segment(segment(&meeting, Source::Mic, LINES[3], true, 5_200)).await?;
                    bus.wait_stored(4).await?;
                    json!({ "expect": &LINES[..4] })
                }
                "resumed" => {
                    bus.wait_subscribers().await?;
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
                    let talk = TalkSummary {
                        window_ms: 60_000,
                        talk_ms: [(Source::Mic, 31_000), (Source::Sys, 17_500)].into(),
                        overlap_ms: 2_500,
                        silence_ms: 14_000,
                        wall_ms: now,
                    };
                    bus.meeting_event(&MeetingEvent::Stats { meeting_id: meeting.clone(), talk }).await?;
                    let started = MeetingEvent::SpeechStarted { meeting_id: meeting.clone(), source: Source::Mic, at_ms: 58_000, wall_ms: now };
                    bus.meeting_event(&started).await?;
                    // A new segment, delivered twice with the same offset (the relay only
                    // drops repeats at or below the resume point; later ones are the page's job).
                    bus.segment(segment(&meeting, Source::Mic, LINES[4], true, 7_000)).await?;
                    bus.wait_stored(5).await?;
                    bus.redeliver_newest().await?;
                    // Talking over each other again, sys first this time: the mic final
                    // that follows must land below the sys line, where its interim was.
                    bus.segment(segment(&meeting, Source::Sys, "Sounds good, go", false, 9_000)).await?;
                    bus.segment(segment(&meeting, Source::Mic, "Let me share my scr", false, 9_600)).await?;
                    json!({
                        "interims": [interim_reply(Source::Sys, "Sounds good, go"), interim_reply(Source::Mic, "Let me share my scr")],
                        "expect": &LINES[..5],
                    })
                }
                "overlap" => {
                    bus.segment(segment(&meeting, Source::Mic, LINES[5], true, 9_600)).await?;
                    json!({ "final": "mic", "expect": &LINES[..] })
                }
                "fresh" => json!({ "expect": &LINES[..] }),
                "done" => json!({}),
                other => bail!("the driver announced an unknown step @{other}"),
            };
            stdin.write_all(format!("{reply}\n").as_bytes()).await?;
            stdin.flush().await?;
        }
        anyhow::Ok(())
    };
    let outcome = tokio::time::timeout(DRIVER_TIMEOUT, async {
        steps.await?;
        Ok::<_, anyhow::Error>(child.wait().await?)
    })
    .await;
    let _ = child.start_kill();
    let stderr = tokio::time::timeout(Duration::from_secs(5), stderr_task).await.ok().and_then(Result::ok).unwrap_or_default();
    let report = |what: String| anyhow!("{what}\n--- driver stdout ---\n{}\n--- driver stderr ---\n{stderr}", log.join("\n"));
    match outcome {
        Err(_) => Err(report(format!("the browser driver did not finish within {DRIVER_TIMEOUT:?}"))),
        Ok(Err(e)) => Err(report(format!("{e:#}"))),
        Ok(Ok(status)) if !status.success() => Err(report(format!("the browser driver failed ({status})"))),
        Ok(Ok(_)) => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn page_connects_shows_segments_and_resumes_after_reload_without_duplicates() {
    let (chromium, driver_dir) = browser_prerequisites().unwrap_or_else(|e| panic!("headless-browser test: {e}"));
    let redis = RedisServer::start().unwrap();
    // The capture agents stay connected for the whole run without sending audio.
    let server = earshot!().redis(redis.url()).env("SPIN_VARIABLE_IDLE_TIMEOUT_MS", "600000").start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let meeting = "standup-42";
    let _mic = capture_agent(&server, &secret, meeting, "mic").await.unwrap();

    let client = redis::Client::open(redis.url()).unwrap();
    let con = client.get_multiplexed_async_connection().await.unwrap();
    let mut bus = Bus { con, meeting: MeetingId::parse(meeting).unwrap() };

    let _ = std::fs::remove_file(SCREENSHOT);
    let started = Instant::now();
    if let Err(e) = run_driver(&driver_dir, &chromium, &server, &secret, &mut bus).await {
        let logs = server.logs();
        let tail = logs[logs.len().saturating_sub(40)..].join("\n");
        panic!("{e:#}\n--- earshot (last 40 lines) ---\n{tail}");
    }
    assert!(Path::new(SCREENSHOT).is_file(), "the driver left a screenshot at {SCREENSHOT}");
    eprintln!("browser run: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn page_files_have_their_types_and_cache_headers_and_the_api_still_wins() {
    let server = earshot!().start().unwrap();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(server.url(path)).send();

    let index = get("/").await.unwrap();
    assert_eq!(index.status().as_u16(), 200);
    let header = |r: &reqwest::Response, name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header(&index, "content-type").as_deref(), Some("text/html; charset=utf-8"));
    assert_eq!(header(&index, "cache-control").as_deref(), Some("no-cache"));
    assert!(header(&index, "content-security-policy").is_some_and(|c| c.contains("connect-src 'self'")));
    let etag = header(&index, "etag").expect("an ETag");
    assert!(index.text().await.unwrap().contains(r#"<script type="module" src="app.js">"#));

    for (path, ty) in [("/app.js", "text/javascript; charset=utf-8"), ("/style.css", "text/css; charset=utf-8"), ("/favicon.svg", "image/svg+xml")] {
        let r = get(path).await.unwrap();
        assert_eq!((r.status().as_u16(), header(&r, "content-type").as_deref()), (200, Some(ty)), "{path}");
        let head = http.head(server.url(path)).send().await.unwrap();
        assert_eq!((head.status().as_u16(), header(&head, "content-type").as_deref()), (200, Some(ty)), "HEAD {path}");
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path} has no body");
    }
    let revalidated = http.get(server.url("/")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(revalidated.status().as_u16(), 304, "a matching ETag revalidates");

    assert_eq!(get("/nope.js").await.unwrap().status().as_u16(), 404);
    let post = http.post(server.url("/")).body("x").send().await.unwrap();
    assert_eq!((post.status().as_u16(), header(&post, "allow").as_deref()), (405, Some("GET, HEAD")));
    // More specific routes still win over `/...`.
    let health = get("/api/v1/ping").await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.unwrap()["status"], "ok");
}

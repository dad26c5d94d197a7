//! The transcription worker (`earshot-transcriber`) with real parts around it: the real
//! ingest component announcing a capture agent's session and storing its audio, the real
//! intake storing and fanning out the worker's segments to a `/api/v1/ws/transcript/{id}`
//! subscriber; and a worker in a child process killed with SIGKILL mid-utterance, whose
//! stream another worker resumes with every utterance getting exactly one final. The engine
//! is the worker crate's deterministic test double (`ScriptedEngine`): the real model's
//! tests are the engine crate's.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_protocol::transcript::{Segment, INTAKE_CHANNEL};
use earshot_protocol::Source;
use earshot_testkit::ws::{connect, ingest, next_json, token};
use earshot_testkit::{earshot, RedisServer};
use earshot_transcriber::scripted::{tone, IngestStandIn, ScriptedConfig, ScriptedEngine};
use earshot_transcriber::{TranscriberError, Worker, WorkerConfig, WorkerStats};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One 20 ms frame of 16 kHz s16le mono.
const FRAME: usize = 640;

/// Longest a test waits for segments.
const WAIT: Duration = Duration::from_secs(30);

/// Set (to a Redis URL) in the child process that runs a worker until it is killed.
const CHILD_REDIS_ENV: &str = "EARSHOT_TEST_TRANSCRIBER_CHILD_REDIS";

/// Settings scaled down so leases lapse and streams end within a test's patience.
fn config(url: &str, id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: Some(id.to_owned()),
        lease_ttl: Duration::from_millis(1_000),
        renew_interval: Duration::from_millis(300),
        block_timeout: Duration::from_millis(100),
        idle_flush: Duration::from_secs(3),
        ..WorkerConfig::new(url)
    }
}

/// A worker running in this process.
struct Running {
    task: JoinHandle<Result<(), TranscriberError>>,
    stop: oneshot::Sender<()>,
    stats: Arc<WorkerStats>,
}

fn spawn(config: WorkerConfig) -> Running {
    let engine = Arc::new(ScriptedEngine::new(ScriptedConfig::default()));
    let worker = Worker::new(config, engine).unwrap();
    let stats = worker.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    Running { task, stop, stats }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// `lead` ms of silence, then each `(value, ms)` utterance followed by 300 ms of silence.
fn script(lead: u64, utterances: &[(i16, u64)]) -> Vec<u8> {
    let mut pcm = tone(0, lead);
    for &(value, ms) in utterances {
        pcm.extend(tone(value, ms));
        pcm.extend(tone(0, 300));
    }
    pcm
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_agents_speech_reaches_a_transcript_subscriber_through_the_worker() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let worker = spawn(config(&redis.url(), "w1"));

    let t = token(&secret, "subscribe", &["m1"]);
    let mut subscriber = connect(&server.ws_url(&format!("/api/v1/ws/transcript/m1?token={t}")), &[]).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while redis.cli(&["PUBSUB", "NUMSUB", "earshot:grip:transcript:m1"]).unwrap().lines().last() != Some("1") {
        assert!(Instant::now() < deadline, "the subscriber never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The real ingest component: handshake (announced `open`), frames, close_stream
    // (announced `close`).
    let mut agent = ingest(&server, &secret, "m1", "mic").await.unwrap();
    for frame in script(100, &[(7, 500), (9, 400)]).chunks(FRAME) {
        agent.send_frame(frame.to_vec()).await.unwrap();
    }
    agent.request_close().await.unwrap();
    agent.wait_closed().await.unwrap();

    let mut finals = Vec::new();
    let mut interims = 0;
    while finals.len() < 2 {
        let msg = tokio::time::timeout(WAIT, next_json(&mut subscriber)).await.expect("a transcript message").unwrap();
        assert_eq!(msg["type"], "transcript", "{msg}");
        assert_eq!((msg["source"].as_str(), msg["speaker"].as_str()), (Some("mic"), Some("user")), "{msg}");
        if msg["is_final"] == true {
            assert!(msg["offset"].is_string(), "finals are stored: {msg}");
            finals.push((msg["text"].as_str().unwrap().to_owned(), msg["start_ms"].as_u64().unwrap(), msg["end_ms"].as_u64().unwrap()));
        } else {
            interims += 1;
        }
    }
    assert_eq!(finals, [("utt7".to_owned(), 100, 600), ("utt9".to_owned(), 900, 1300)]);
    assert!(interims > 0, "interims before the finals");
    eventually("the stream to end", || worker.stats.streams_ended() == 1).await;
    assert_eq!(redis.cli(&["SMEMBERS", "earshot:asr:active"]).unwrap().trim(), "");
    assert_eq!(redis.cli(&["EXISTS", "earshot:asr:open:m1:mic"]).unwrap().trim(), "0", "the session was announced closed");
    assert_eq!(redis.xrange("transcript:m1").unwrap().len(), 2, "each final stored once");
    worker.stop().await;
}

/// Entry point of the child process of the SIGKILL test: runs a worker until killed. In a
/// normal test run (no [`CHILD_REDIS_ENV`]) it returns at once.
#[test]
fn worker_child_process_entry_point() {
    let Ok(url) = std::env::var(CHILD_REDIS_ENV) else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = Arc::new(ScriptedEngine::new(ScriptedConfig::default()));
        let worker = Worker::new(config(&url, "child"), engine).unwrap();
        worker.run(std::future::pending()).await.unwrap();
    });
}

/// Kills the child on drop, so a failed assertion leaves no worker behind.
struct ChildWorker(Child);

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every segment published on the intake channel.
async fn subscribe(url: &str) -> mpsc::UnboundedReceiver<Segment> {
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(INTAKE_CHANNEL).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let (segment, _) = Segment::parse(msg.get_payload_bytes()).expect("a valid segment");
            if tx.send(segment).is_err() {
                return;
            }
        }
    });
    rx
}

async fn next_segment(rx: &mut mpsc::UnboundedReceiver<Segment>) -> Segment {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("a segment in time").expect("subscribed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_mid_utterance_loses_nothing_and_duplicates_nothing() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut rx = subscribe(&url).await;
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker_child_process_entry_point", "--nocapture", "--test-threads", "1"])
        .env(CHILD_REDIS_ENV, &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildWorker(child);

    let mut mic = IngestStandIn::open(&url, "m1", "mic", "s1").unwrap();
    mic.audio(&script(100, &[(1, 400)]), FRAME).unwrap();
    mic.audio(&tone(2, 400), FRAME).unwrap();
    let mut segments = Vec::new();
    // Wait for utt1's final and an interim of utt2: the child is mid-utterance.
    while !segments.iter().any(|s: &Segment| s.text == "utt2") {
        segments.push(next_segment(&mut rx).await);
    }
    assert_eq!(redis.cli(&["GET", "asr:lease:m1:mic"]).unwrap().trim(), "child");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(redis.cli(&["GET", "asr:lease:m1:mic"]).unwrap().trim(), "child", "SIGKILL releases nothing");

    mic.audio(&tone(2, 300), FRAME).unwrap();
    mic.audio(&script(300, &[(3, 200)]), FRAME).unwrap();
    mic.close().unwrap();
    let survivor = spawn(config(&url, "survivor"));
    while !segments.iter().any(|s| s.is_final && s.text == "utt3") {
        segments.push(next_segment(&mut rx).await);
    }
    eventually("the stream to end", || survivor.stats.streams_ended() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(s) = rx.try_recv() {
        segments.push(s);
    }
    let finals: Vec<(String, u64, u64)> = segments
        .iter()
        .filter(|s| s.is_final && s.source == Source::Mic)
        .map(|s| (s.text.clone(), s.start_ms, s.end_ms))
        .collect();
    assert_eq!(
        finals,
        [("utt1".to_owned(), 100, 500), ("utt2".to_owned(), 800, 1500), ("utt3".to_owned(), 1800, 2000)],
        "every utterance exactly one final"
    );
    assert_eq!(survivor.stats.finals_published(), 2, "the survivor published utt2 and utt3 only");
    survivor.stop().await;
}

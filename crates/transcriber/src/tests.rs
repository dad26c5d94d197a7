//! The worker against a real `redis-server` (the testkit's), with the engine's test double
//! (`ScriptedEngine`): segments on `earshot:transcripts`, leases, resumption, lag.

use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_protocol::asr::{lease_key, position_key, ACTIVE_STREAMS_KEY};
use earshot_protocol::transcript::{Segment, INTAKE_CHANNEL};
use earshot_protocol::{MeetingId, Source};
use earshot_testkit::RedisServer;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::scripted::{tone, IngestStandIn, ScriptedConfig, ScriptedEngine, INVENTED};
use crate::store::{self, CommitKind, Committed, Resume, StreamKeys};
use crate::{TranscriberError, Worker, WorkerConfig, WorkerStats};

/// One 20 ms frame of 16 kHz s16le mono, as capture agents send them.
const FRAME: usize = 640;

/// Settings scaled down so leases lapse and streams end within a test's patience.
fn config(url: &str, id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: Some(id.to_owned()),
        lease_ttl: Duration::from_millis(1_000),
        renew_interval: Duration::from_millis(300),
        block_timeout: Duration::from_millis(100),
        idle_flush: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(2),
        ..WorkerConfig::new(url)
    }
}

/// A running worker: its task, its shutdown switch, its figures and engine.
struct Running {
    task: JoinHandle<Result<(), TranscriberError>>,
    stop: oneshot::Sender<()>,
    stats: Arc<WorkerStats>,
    engine: Arc<ScriptedEngine>,
}

fn spawn(config: WorkerConfig, engine: ScriptedConfig) -> Running {
    let engine = Arc::new(ScriptedEngine::new(engine));
    let worker = Worker::new(config, engine.clone()).unwrap();
    let stats = worker.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    Running {
        task,
        stop,
        stats,
        engine,
    }
}

/// Every segment published on the intake channel, parsed and validated as the intake does.
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

/// Collects segments until `done` holds of the finals (or fails after `within`).
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Segment>,
    within: Duration,
    done: impl Fn(&[Segment]) -> bool,
) -> Vec<Segment> {
    let mut all: Vec<Segment> = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let finals: Vec<Segment> = all.iter().filter(|s| s.is_final).cloned().collect();
        if done(&finals) {
            return all;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(segment)) => all.push(segment),
            _ => panic!("timed out; segments so far: {all:#?}"),
        }
    }
}

/// `(text, start_ms, end_ms)` of the finals of `(meeting, source)`.
fn finals_of(segments: &[Segment], meeting: &str, source: Source) -> Vec<(String, u64, u64)> {
    segments
        .iter()
        .filter(|s| s.is_final && s.meeting_id == meeting && s.source == source)
        .map(|s| (s.text.clone(), s.start_ms, s.end_ms))
        .collect()
}

fn f(text: &str, start: u64, end: u64) -> (String, u64, u64) {
    (text.to_owned(), start, end)
}

/// Audio: `lead` ms of silence, then for each `(value, ms)` that utterance and 300 ms of
/// silence.
fn script(lead: u64, utterances: &[(i16, u64)]) -> Vec<u8> {
    let mut pcm = tone(0, lead);
    for &(value, ms) in utterances {
        pcm.extend(tone(value, ms));
        pcm.extend(tone(0, 300));
    }
    pcm
}

/// Waits until `check` holds (polling), or fails with `what`.
async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `redis-cli` output without its trailing newline.
fn cli(redis: &RedisServer, args: &[&str]) -> String {
    redis.cli(args).unwrap().trim_end().to_owned()
}

fn active(redis: &RedisServer) -> String {
    cli(redis, &["SMEMBERS", ACTIVE_STREAMS_KEY])
}

fn keys(meeting: &str, source: Source) -> StreamKeys {
    StreamKeys::new(MeetingId::parse(meeting).unwrap(), source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_reach_the_intake_with_exact_times_and_the_sources_speaker() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut rx = subscribe(&url).await;
    let worker = spawn(config(&url, "w1"), ScriptedConfig::default());

    let mut mic = IngestStandIn::open(&url, "m1", "mic", "s-mic").unwrap();
    let mut sys = IngestStandIn::open(&url, "m1", "sys", "s-sys").unwrap();
    mic.audio(&script(100, &[(7, 500), (9, 400)]), FRAME)
        .unwrap();
    sys.audio(&script(0, &[(5, 200)]), FRAME).unwrap();
    mic.close().unwrap();
    sys.close().unwrap();

    let segments = collect(&mut rx, Duration::from_secs(20), |f| f.len() == 3).await;
    assert_eq!(
        finals_of(&segments, "m1", Source::Mic),
        [f("utt7", 100, 600), f("utt9", 900, 1300)]
    );
    assert_eq!(finals_of(&segments, "m1", Source::Sys), [f("utt5", 0, 200)]);
    for s in &segments {
        let speaker = if s.source == Source::Mic {
            "user"
        } else {
            "others"
        };
        assert_eq!(s.speaker.as_deref(), Some(speaker), "{s:?}");
        assert_eq!(s.confidence, Some(f64::from(0.9f32)));
    }
    // Interims come first and are replaced by their final: same start, growing end.
    let mic_segments: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.source == Source::Mic)
        .collect();
    let first_final = mic_segments.iter().position(|s| s.is_final).unwrap();
    assert!(
        first_final >= 2,
        "interims before the final: {mic_segments:#?}"
    );
    assert!(mic_segments[..first_final]
        .iter()
        .all(|s| !s.is_final && s.text == "utt7" && s.start_ms == 100 && s.end_ms <= 600));

    // Both streams end: sessions closed, audio read to its end.
    eventually("both streams to end", Duration::from_secs(10), || {
        worker.stats.streams_ended() == 2
    })
    .await;
    assert_eq!(active(&redis), "", "ended streams leave the active set");
    assert_eq!(cli(&redis, &["EXISTS", "asr:lease:m1:mic"]), "0");
    let position = cli(&redis, &["HGETALL", "asr:position:m1:mic"]);
    assert!(
        position.contains("ms\n1600") && position.contains("final_end_ms\n1300"),
        "{position}"
    );
    assert_eq!(worker.stats.finals_published(), 3);
    assert_eq!(worker.stats.duplicates_suppressed(), 0);
    assert!(
        worker.stats.streams().is_empty(),
        "ended streams leave the figures"
    );
    let _ = worker.stop.send(());
    worker.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_utterance_the_engine_drops_is_retracted_by_an_empty_interim_and_never_stored() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut rx = subscribe(&url).await;
    let worker = spawn(config(&url, "w1"), ScriptedConfig::default());

    let mut mic = IngestStandIn::open(&url, "m2", "mic", "s-mic").unwrap();
    mic.audio(&script(100, &[(INVENTED, 500), (9, 400)]), FRAME)
        .unwrap();
    mic.close().unwrap();

    let segments = collect(&mut rx, Duration::from_secs(20), |f| f.len() == 1).await;
    assert_eq!(finals_of(&segments, "m2", Source::Mic), [f("utt9", 900, 1300)]);
    let retraction = segments
        .iter()
        .position(|s| s.text.is_empty())
        .unwrap_or_else(|| panic!("no retraction: {segments:#?}"));
    let r = &segments[retraction];
    assert!(!r.is_final, "a retraction is never stored: {r:?}");
    assert_eq!((r.source, r.start_ms), (Source::Mic, 100), "{r:?}");
    assert!(
        segments[..retraction]
            .iter()
            .any(|s| !s.is_final && s.text == format!("utt{INVENTED}")),
        "the interims it takes back came first: {segments:#?}"
    );
    eventually("the stream to end", Duration::from_secs(10), || {
        worker.stats.streams_ended() == 1
    })
    .await;
    assert_eq!(worker.stats.finals_published(), 1);
    let _ = worker.stop.send(());
    worker.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_streams_and_each_stream_is_transcribed_once() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut rx = subscribe(&url).await;
    // Two streams each at most: four streams need both workers.
    let a = spawn(
        WorkerConfig {
            max_streams: 2,
            ..config(&url, "wa")
        },
        ScriptedConfig::default(),
    );
    let b = spawn(
        WorkerConfig {
            max_streams: 2,
            ..config(&url, "wb")
        },
        ScriptedConfig::default(),
    );
    let streams = [("m1", "mic"), ("m1", "sys"), ("m2", "mic"), ("m2", "sys")];
    let mut ingest: Vec<IngestStandIn> = streams
        .iter()
        .map(|(m, s)| IngestStandIn::open(&url, m, s, &format!("{m}-{s}")).unwrap())
        .collect();
    for (i, stand_in) in ingest.iter_mut().enumerate() {
        let v = 10 * (i as i16 + 1);
        stand_in
            .audio(&script(40, &[(v, 300), (v + 1, 200)]), FRAME)
            .unwrap();
    }
    for stand_in in ingest {
        stand_in.close().unwrap();
    }
    let segments = collect(&mut rx, Duration::from_secs(30), |f| f.len() >= 8).await;
    for (i, (m, s)) in streams.iter().enumerate() {
        let v = 10 * (i + 1);
        assert_eq!(
            finals_of(&segments, m, Source::parse(s).unwrap()),
            [
                f(&format!("utt{v}"), 40, 340),
                f(&format!("utt{}", v + 1), 640, 840)
            ],
            "{m}:{s}"
        );
    }
    eventually("all four streams to end", Duration::from_secs(10), || {
        a.stats.streams_ended() + b.stats.streams_ended() == 4
    })
    .await;
    // Each stream was opened by exactly one worker's engine, and each worker had two.
    let opened = |r: &Running| -> Vec<(String, String)> {
        r.engine
            .opened()
            .into_iter()
            .map(|s| (s.meeting_id, s.source))
            .collect()
    };
    let (in_a, in_b) = (opened(&a), opened(&b));
    assert_eq!((in_a.len(), in_b.len()), (2, 2), "a: {in_a:?}, b: {in_b:?}");
    assert!(
        in_a.iter().all(|s| !in_b.contains(s)),
        "a: {in_a:?}, b: {in_b:?}"
    );
    assert_eq!(a.stats.finals_published() + b.stats.finals_published(), 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "nothing published twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_utterance_is_resumed_from_the_committed_position() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut rx = subscribe(&url).await;
    let a = spawn(config(&url, "wa"), ScriptedConfig::default());
    let mut mic = IngestStandIn::open(&url, "m1", "mic", "s1").unwrap();
    // utt1 at 100-500, then utt2 from 800 on: half of it before the kill.
    mic.audio(&script(100, &[(1, 400)]), FRAME).unwrap();
    mic.audio(&tone(2, 400), FRAME).unwrap();
    let before = collect(&mut rx, Duration::from_secs(10), |f| f.len() == 1).await;
    assert_eq!(finals_of(&before, "m1", Source::Mic), [f("utt1", 100, 500)]);
    let mut seen = before;
    while !seen.iter().any(|s| s.text == "utt2") {
        seen.push(
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // Killed mid-utterance: its tasks dropped, its lease left to lapse.
    a.task.abort();
    let _ = a.task.await;
    let lease = cli(
        &redis,
        &[
            "GET",
            &lease_key(&MeetingId::parse("m1").unwrap(), Source::Mic),
        ],
    );
    assert_eq!(lease, "wa", "the dead worker's lease is still there");
    let committed = store::load_position(&mut redis_con(&url).await, &keys("m1", Source::Mic))
        .await
        .unwrap();
    assert!(
        (500..=800).contains(&committed.ms),
        "committed between the utterances: {committed:?}"
    );
    assert_eq!(committed.final_end_ms, Some(500));

    mic.audio(&tone(2, 300), FRAME).unwrap();
    mic.audio(&script(300, &[(3, 200)]), FRAME).unwrap();
    mic.close().unwrap();
    let b = spawn(config(&url, "wb"), ScriptedConfig::default());
    let after = collect(&mut rx, Duration::from_secs(20), |f| {
        f.iter().any(|s| s.text == "utt3")
    })
    .await;
    assert_eq!(
        finals_of(&after, "m1", Source::Mic),
        [f("utt2", 800, 1500), f("utt3", 1800, 2000)],
        "utt2 whole, utt1 not again"
    );
    let resumed = b.engine.opened();
    assert_eq!(
        resumed[0].start_ms, committed.ms,
        "resumed at the committed position"
    );
    eventually("the stream to end", Duration::from_secs(10), || {
        b.stats.streams_ended() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "no final twice");
    let _ = b.stop.send(());
    b.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_measured_while_a_backlog_is_read_in_bounded_batches() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut mic = IngestStandIn::open(&url, "m1", "mic", "s1").unwrap();
    // Three seconds already waiting; 5 frames (100 ms) a read, 40 ms of "model" per read.
    mic.audio(&script(0, &[(4, 2_700)]), FRAME).unwrap();
    let slow = ScriptedConfig {
        push_delay: Duration::from_millis(40),
        ..ScriptedConfig::default()
    };
    let worker = spawn(
        WorkerConfig {
            batch_entries: 5,
            lag_warn: Duration::from_millis(500),
            ..config(&url, "w1")
        },
        slow,
    );
    let mut max_lag = 0;
    let mut metrics = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = worker.stats.stream("m1", Source::Mic) {
            if s.lag_ms > max_lag {
                max_lag = s.lag_ms;
                metrics = worker.stats.render_prometheus();
            }
            if s.read_ms == 3_000 && s.lag_ms == 0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never caught up; max lag {max_lag}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(max_lag > 0, "a backlog shows as lag");
    assert!(
        metrics.contains(&format!(
            "earshot_asr_lag_ms{{meeting_id=\"m1\",source=\"mic\"}} {max_lag}\n"
        )),
        "{metrics}"
    );
    mic.close().unwrap();
    eventually("the stream to end", Duration::from_secs(10), || {
        worker.stats.streams_ended() == 1
    })
    .await;
    let _ = worker.stop.send(());
    worker.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_lease_and_keeps_the_position() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let worker = spawn(config(&url, "w1"), ScriptedConfig::default());
    let mut mic = IngestStandIn::open(&url, "m1", "mic", "s1").unwrap();
    mic.audio(&script(0, &[(6, 200)]), FRAME).unwrap();
    eventually("the final", Duration::from_secs(10), || {
        worker.stats.finals_published() == 1
    })
    .await;
    assert_eq!(cli(&redis, &["GET", "asr:lease:m1:mic"]), "w1");
    let _ = worker.stop.send(());
    worker.task.await.unwrap().unwrap();
    assert_eq!(
        cli(&redis, &["EXISTS", "asr:lease:m1:mic"]),
        "0",
        "released, not left to lapse"
    );
    assert_eq!(
        active(&redis),
        "m1:mic",
        "the open stream stays active for the next worker"
    );
    let pos = cli(
        &redis,
        &[
            "HGET",
            &position_key(&MeetingId::parse("m1").unwrap(), Source::Mic),
            "final_end_ms",
        ],
    );
    assert_eq!(pos, "200");
}

async fn redis_con(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_script_fences_on_the_lease_and_suppresses_duplicate_finals() {
    let redis = RedisServer::start().unwrap();
    let mut con = redis_con(&redis.url()).await;
    let k = keys("m1", Source::Mic);
    let ttl = Duration::from_secs(5);
    assert!(store::acquire(&mut con, &k, "w1", ttl).await.unwrap());
    assert!(
        !store::acquire(&mut con, &k, "w2", ttl).await.unwrap(),
        "one holder"
    );
    let at = |id: &str, bytes: u64| Resume {
        entry_id: id.into(),
        bytes,
        ms: bytes / 32,
    };
    let commit = |con: &mut redis::aio::MultiplexedConnection,
                  worker: &'static str,
                  kind,
                  end,
                  resume: Resume| {
        let k = k.clone();
        let mut con = con.clone();
        async move { store::commit(&mut con, &k, worker, "ch", b"{}", kind, end, &resume).await }
    };
    assert_eq!(
        commit(&mut con, "w1", CommitKind::Final, 600, at("5-0", 22_400))
            .await
            .unwrap(),
        Committed::Done
    );
    assert_eq!(
        commit(&mut con, "w1", CommitKind::Final, 600, at("4-0", 19_200))
            .await
            .unwrap(),
        Committed::Duplicate
    );
    assert_eq!(
        commit(&mut con, "w1", CommitKind::Interim, 550, at("0-0", 0))
            .await
            .unwrap(),
        Committed::Duplicate
    );
    assert_eq!(
        commit(&mut con, "w1", CommitKind::Interim, 900, at("0-0", 0))
            .await
            .unwrap(),
        Committed::Done
    );
    assert!(matches!(
        commit(&mut con, "w2", CommitKind::Final, 2_000, at("9-0", 64_000)).await,
        Err(TranscriberError::LeaseLost)
    ));
    let position = store::load_position(&mut con, &k).await.unwrap();
    assert_eq!(
        (
            position.entry_id.as_str(),
            position.ms,
            position.final_end_ms
        ),
        ("5-0", 700, Some(600)),
        "never backwards"
    );
    assert!(!store::renew(&mut con, &k, "w2", ttl).await.unwrap());
    assert!(store::renew(&mut con, &k, "w1", ttl).await.unwrap());
    assert!(!store::release(&mut con, &k, "w2").await.unwrap());
    assert!(store::release(&mut con, &k, "w1").await.unwrap());
    assert!(
        matches!(
            commit(&mut con, "w1", CommitKind::Final, 2_000, at("9-0", 64_000)).await,
            Err(TranscriberError::LeaseLost)
        ),
        "released: fenced too"
    );
}

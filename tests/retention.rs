//! Meeting deletion and transcript retention end to end. A real meeting (a capture agent
//! streaming into the real ingest component, a transcription worker with the scripted test
//! engine turning its audio into finals through the real intake) is deleted with
//! `DELETE /api/v1/meetings/{id}`: afterwards no Redis key and no key-value entry of it is
//! left, another meeting is untouched, every route answers 404 for it, and an audit line
//! names who deleted it. Transcript streams carry the `transcript_retention_s` expiry and
//! vanish when it passes. Real Redis, the real server, the real .wasm components.

use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_host::kv::{KeyValueBackend, SqliteKv};
use earshot_testkit::ws::{ingest, token};
use earshot_testkit::{earshot, Earshot, RedisServer};
use earshot_transcriber::scripted::{tone, ScriptedConfig, ScriptedEngine};
use earshot_transcriber::{Worker, WorkerConfig};
use serde_json::{json, Value};

/// Longest a test waits for the worker or an expiry.
const WAIT: Duration = Duration::from_secs(30);

/// PCM bytes per frame sent (20 ms at 16 kHz mono).
const FRAME: usize = 640;

/// Waits until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every Redis key whose name contains `needle`.
fn redis_keys_with(redis: &RedisServer, needle: &str) -> Vec<String> {
    let out = redis.cli(&["--scan", "--pattern", &format!("*{needle}*")]).unwrap();
    let mut keys: Vec<String> = out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    keys.sort();
    keys
}

/// How many of the workers' session events name `meeting`.
fn session_events_of(redis: &RedisServer, meeting: &str) -> usize {
    redis.xrange("earshot:asr:sessions").unwrap().iter().filter(|e| e.text("meeting").ok().as_deref() == Some(meeting)).count()
}

/// Every key of the server's `default` key-value store (its SQLite file) containing `needle`.
fn kv_keys_with(server: &Earshot, needle: &str) -> Vec<String> {
    let kv = SqliteKv::open(&server.state_dir().join("kv.db")).unwrap();
    let mut keys: Vec<String> = kv.keys("default").unwrap().into_iter().filter(|k| k.contains(needle)).collect();
    keys.sort();
    keys
}

/// Every log line as JSON, the guest line's own fields lifted under `guest.`.
fn log_events(server: &Earshot) -> Vec<Value> {
    server
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|mut v| {
            if let Some(Value::Object(extra)) = v["fields"].as_str().and_then(|f| serde_json::from_str(f).ok()) {
                for (k, x) in extra {
                    v[format!("guest.{k}")] = x;
                }
            }
            v
        })
        .collect()
}

async fn delete(server: &Earshot, meeting: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().delete(server.url(&format!("/api/v1/meetings/{meeting}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn export_status(server: &Earshot, secret: &str, meeting: &str) -> u16 {
    let t = token(secret, "subscribe", &[meeting]);
    let resp = reqwest::Client::new()
        .get(server.url(&format!("/api/v1/meetings/{meeting}/transcript?format=srt")))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

async fn post_segment(server: &Earshot, secret: &str, meeting: &str, text: &str) -> u16 {
    let t = token(secret, "publish", &[meeting]);
    let seg = json!({"meeting_id": meeting, "source": "mic", "text": text, "is_final": true, "start_ms": 0, "end_ms": 400});
    let resp = reqwest::Client::new()
        .post(server.url(&format!("/api/v1/meetings/{meeting}/transcript")))
        .bearer_auth(t)
        .body(seg.to_string())
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// A worker with the scripted engine on `url`, stopped by sending on the returned channel.
fn spawn_worker(url: &str) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let config = WorkerConfig {
        worker_id: Some("retention-w1".into()),
        lease_ttl: Duration::from_millis(1_000),
        renew_interval: Duration::from_millis(300),
        block_timeout: Duration::from_millis(100),
        idle_flush: Duration::from_secs(3),
        ..WorkerConfig::new(url)
    };
    let worker = Worker::new(config, Arc::new(ScriptedEngine::new(ScriptedConfig::default()))).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

/// A meeting as a capture agent leaves it: both sources streamed speech (the worker
/// transcribed it), then closed.
async fn hold_a_meeting(server: &Earshot, redis: &RedisServer, secret: &str, meeting: &str) {
    for (source, value) in [("mic", 7i16), ("sys", 9)] {
        let mut agent = ingest(server, secret, meeting, source).await.unwrap();
        let mut pcm = tone(0, 100);
        pcm.extend(tone(value, 500));
        pcm.extend(tone(0, 400));
        for frame in pcm.chunks(FRAME) {
            agent.send_frame(frame.to_vec()).await.unwrap();
        }
        agent.request_close().await.unwrap();
        agent.wait_closed().await.unwrap();
    }
    let key = format!("transcript:{meeting}");
    eventually("both finals stored", || redis.xrange(&key).map(|e| e.len()).unwrap_or(0) >= 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_every_trace_of_the_meeting_and_later_requests_answer_404() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let (stop, worker) = spawn_worker(&redis.url());
    hold_a_meeting(&server, &redis, &secret, "doomed.1").await;
    hold_a_meeting(&server, &redis, &secret, "kept-1").await;
    // The meeting ended: its worker lets go of it (deleting a meeting a worker still leases
    // would race the worker's own writes).
    let _ = stop.send(());
    worker.await.unwrap();

    let before_redis = redis_keys_with(&redis, "doomed.1");
    for key in ["audio:doomed.1:mic", "audio:doomed.1:sys", "transcript:doomed.1", "asr:position:doomed.1:mic", "ratelimit:ingest:doomed.1:sys"] {
        assert!(before_redis.contains(&key.to_owned()), "{key} in {before_redis:?}");
    }
    let ttl: i64 = redis.cli(&["TTL", "transcript:doomed.1"]).unwrap().trim().parse().unwrap();
    assert!((2_591_000..=2_592_000).contains(&ttl), "30-day default retention, got {ttl}");
    let before_kv = kv_keys_with(&server, "doomed.1");
    for key in ["meeting:doomed.1:presence", "meeting:doomed.1:state", "meeting:doomed.1:talk"] {
        assert!(before_kv.contains(&key.to_owned()), "{key} in {before_kv:?}");
    }
    assert_eq!(session_events_of(&redis, "doomed.1"), 4, "open and close of each source");
    let kept_redis = redis_keys_with(&redis, "kept-1");
    let kept_kv = kv_keys_with(&server, "kept-1");

    // Scopes: nobody, a subscriber, an admin of another meeting.
    assert_eq!(delete(&server, "doomed.1", None).await.0, 401);
    assert_eq!(delete(&server, "doomed.1", Some(&token(&secret, "subscribe ingest publish", &["doomed.1"]))).await.0, 403);
    assert_eq!(delete(&server, "doomed.1", Some(&token(&secret, "admin", &["kept-1"]))).await.0, 403);
    assert_eq!(redis_keys_with(&redis, "doomed.1"), before_redis, "a refused DELETE deletes nothing");

    let admin = token(&secret, "admin", &["doomed.1"]);
    let (status, body) = delete(&server, "doomed.1", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["meeting_id"], "doomed.1");
    assert!(body["deleted"]["redis_keys"].as_u64().unwrap() >= before_redis.len() as u64, "{body} {before_redis:?}");
    assert_eq!(body["deleted"]["kv_keys"].as_u64().unwrap(), before_kv.len() as u64, "{body}");

    assert_eq!(redis_keys_with(&redis, "doomed.1"), Vec::<String>::new());
    assert_eq!(kv_keys_with(&server, "doomed.1"), Vec::<String>::new());
    let members = redis.cli(&["SMEMBERS", "earshot:asr:active"]).unwrap();
    assert!(!members.contains("doomed.1"), "{members}");
    assert_eq!(session_events_of(&redis, "doomed.1"), 0, "its session events are gone too");
    assert_eq!(session_events_of(&redis, "kept-1"), 4);
    assert_eq!(redis_keys_with(&redis, "kept-1"), kept_redis, "the other meeting keeps its keys");
    assert_eq!(kv_keys_with(&server, "kept-1"), kept_kv);

    assert_eq!(export_status(&server, &secret, "doomed.1").await, 404);
    assert_eq!(post_segment(&server, &secret, "doomed.1", "too late").await, 404);
    assert_eq!(delete(&server, "doomed.1", Some(&admin)).await.0, 404);
    assert_eq!(export_status(&server, &secret, "kept-1").await, 200);

    let audit: Vec<Value> = log_events(&server).into_iter().filter(|v| v["guest.audit"] == "meeting.delete").collect();
    // The host lifts `msg` and `meeting_id` into its own fields.
    let deleted = audit.iter().find(|v| v["message"] == "meeting deleted").unwrap_or_else(|| panic!("no audit line: {audit:?}"));
    assert_eq!(deleted["meeting_id"], "doomed.1");
    assert_eq!(deleted["guest.redis_keys_deleted"], body["deleted"]["redis_keys"]);
    assert_eq!(deleted["guest.session_events_deleted"], 4);
    assert_eq!(deleted["guest.sub"], "test");
    assert!(deleted["guest.jti"].as_str().is_some_and(|j| j.starts_with("t-")), "{deleted}");
    assert!(!server.logs().join("\n").contains(&admin), "the token never reaches a log");
}

#[tokio::test(flavor = "multi_thread")]
async fn transcripts_expire_after_the_configured_retention() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).env("SPIN_VARIABLE_TRANSCRIPT_RETENTION_S", "2").start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let mut agent = ingest(&server, &secret, "short-lived", "mic").await.unwrap();
    assert_eq!(post_segment(&server, &secret, "short-lived", "soon gone").await, 200);
    let ttl: i64 = redis.cli(&["TTL", "transcript:short-lived"]).unwrap().trim().parse().unwrap();
    assert!((1..=2).contains(&ttl), "retention 2 s, got TTL {ttl}");

    eventually("the transcript to expire", || redis.cli(&["EXISTS", "transcript:short-lived"]).unwrap().trim() == "0").await;
    // The meeting itself is still known (its records are the key-value store's): its
    // export is empty rather than 404.
    let t = token(&secret, "subscribe", &["short-lived"]);
    let resp = reqwest::Client::new()
        .get(server.url("/api/v1/meetings/short-lived/transcript?format=vtt"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "WEBVTT\n");
    agent.request_close().await.unwrap();
}

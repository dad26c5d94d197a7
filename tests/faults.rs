//! Redis faults: Redis killed mid-stream and restarted. Health follows within 2 s,
//! ingest clients get 1011, no ack ever covers a frame that is not in Redis, and
//! Earshot recovers by itself (health, ingest, fan-out) with the audio byte-exact.

use std::time::{Duration, Instant};

use earshot_agent::AgentError;
use earshot_testkit::ws::{connect, ingest, next_event, next_json, next_of_type, token};
use earshot_testkit::{earshot, RedisServer};
use serde_json::Value;

/// How long recovery may take: the relay's and host's reconnect backoff tops out at 5 s.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

async fn health(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn frame(i: usize) -> Vec<u8> {
    (0..640).map(|j| ((i * 7 + j) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_stream_then_restarted() {
    let mut redis = RedisServer::start_persistent().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let health_url = server.url("/api/v1/health");
    assert_eq!(health(&health_url).await["redis"], "ok");

    let sub = token(&secret, "subscribe", &["fault"]);
    let mut watcher = connect(&server.ws_url(&format!("/api/v1/ws/meetings/fault?token={sub}")), &[]).await.unwrap();
    assert_eq!(next_json(&mut watcher).await.unwrap()["type"], "snapshot");

    let mut c = ingest(&server, &secret, "fault", "mic").await.unwrap();
    for i in 0..20 {
        c.send_frame(frame(i)).await.unwrap();
    }
    // Wait until all 20 are acknowledged.
    while c.acked().frames < 20 {
        next_event(&mut c).await.unwrap();
    }

    redis.kill();
    let killed = Instant::now();
    loop {
        if health(&health_url).await["redis"] == "down" {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(2), "health still says ok 2 s after Redis died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let noticed = killed.elapsed();

    // Audio sent while Redis is down: the stream ends with 1011, and no ack counts a
    // frame Redis did not take.
    let mut end = None;
    for i in 20..25 {
        if let Err(e) = c.send_frame(frame(i)).await {
            end = Some(anyhow::Error::from(e));
            break;
        }
    }
    let end = match end {
        Some(e) => e,
        None => loop {
            if let Err(e) = next_event(&mut c).await {
                break e;
            }
        },
    };
    assert!(
        matches!(end.downcast_ref(), Some(AgentError::Closed { code: 1011, reason, .. }) if reason == "audio store unavailable"),
        "{end:#}"
    );
    assert_eq!(c.acked().frames, 20, "no ack may cover a frame Redis never stored");

    redis.restart().unwrap();
    let restarted = Instant::now();
    loop {
        if health(&health_url).await["redis"] == "ok" {
            break;
        }
        assert!(restarted.elapsed() < RECOVERY_BOUND, "health never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A new session streams again without restarting Earshot.
    let mut c = ingest(&server, &secret, "fault", "mic").await.unwrap();
    for i in 100..110 {
        c.send_frame(frame(i)).await.unwrap();
    }
    assert_eq!(c.close_stream().await.unwrap().frames, 10, "`closed` counts the new session's frames");

    // Byte-exact: the 20 acknowledged frames survived the crash, then the new session.
    let stored: Vec<Vec<u8>> = redis.audio_frames("audio:fault:mic").unwrap().into_iter().map(|f| f.pcm).collect();
    let expected: Vec<Vec<u8>> = (0..20).chain(100..110).map(frame).collect();
    assert_eq!(stored.len(), expected.len(), "exactly the acknowledged frames are in Redis");
    assert!(stored == expected, "audio is byte-exact after recovery");

    // The subscriber that lived through the outage receives publishes again.
    let body = serde_json::json!({"items": [{"channel": "meeting:fault", "formats": {"ws-message": {"content": "{\"type\":\"after-outage\"}"}}}]});
    let client = reqwest::Client::new();
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        let _ = client.post(server.internal_url("/publish/")).json(&body).send().await;
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(300), next_of_type(&mut watcher, "after-outage")).await {
            assert_eq!(v["type"], "after-outage");
            break;
        }
        assert!(Instant::now() < deadline, "subscriber never resumed");
    }
    eprintln!("faults: health noticed Redis down after {noticed:?}; recovered {:?} after restart", restarted.elapsed());
}

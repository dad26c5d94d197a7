//! Redis faults: Redis killed mid-stream and restarted. Health follows within 2 s,
//! ingest clients get 1011, no ack ever covers a frame that is not in Redis, and
//! Earshot recovers by itself (health, ingest, fan-out) with the audio byte-exact.

use std::time::{Duration, Instant};

use earshot_testkit::ws::{connect, expect_close, next_json, next_of_type, send_binary, send_text, token, HANDSHAKE};
use earshot_testkit::{earshot, RedisServer};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// How long recovery may take: the relay's and host's reconnect backoff tops out at 5 s.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

async fn health(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn stored_frames(redis: &RedisServer, key: &str) -> Vec<Vec<u8>> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let v: redis::Value = redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(&mut con).unwrap();
    let redis::Value::Array(entries) = v else { panic!("{v:?}") };
    entries
        .into_iter()
        .map(|e| {
            let redis::Value::Array(parts) = e else { panic!() };
            let redis::Value::Array(fields) = &parts[1] else { panic!() };
            fields
                .chunks(2)
                .find_map(|p| match (&p[0], &p[1]) {
                    (redis::Value::BulkString(k), redis::Value::BulkString(v)) if k == b"pcm" => Some(v.clone()),
                    _ => None,
                })
                .unwrap()
        })
        .collect()
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

    let ingest = token(&secret, "ingest", &["fault"]);
    let url = server.ws_url(&format!("/api/v1/ws/ingest/meetings/fault?source=mic&token={ingest}"));
    let mut c = connect(&url, &[]).await.unwrap();
    send_text(&mut c, HANDSHAKE).await.unwrap();
    next_of_type(&mut c, "handshake_ack").await.unwrap();
    for i in 0..20 {
        send_binary(&mut c, frame(i)).await.unwrap();
    }
    // Wait until all 20 are acknowledged.
    loop {
        let ack = next_of_type(&mut c, "ack").await.unwrap();
        if ack["frames"] == 20 {
            break;
        }
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
    let mut highest_ack = 20u64;
    for i in 20..25 {
        if send_binary(&mut c, frame(i)).await.is_err() {
            break;
        }
    }
    let (code, reason, before) = expect_close(&mut c).await.unwrap();
    assert_eq!((code, reason.as_str()), (1011, "audio store unavailable"));
    for m in before {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "ack" {
                highest_ack = highest_ack.max(v["frames"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(highest_ack, 20, "no ack may cover a frame Redis never stored");

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
    let mut c = connect(&url, &[]).await.unwrap();
    send_text(&mut c, HANDSHAKE).await.unwrap();
    next_of_type(&mut c, "handshake_ack").await.unwrap();
    for i in 100..110 {
        send_binary(&mut c, frame(i)).await.unwrap();
    }
    send_text(&mut c, r#"{"type":"close_stream"}"#).await.unwrap();
    let closed = next_of_type(&mut c, "closed").await.unwrap();
    assert_eq!(closed["frames"], 10);
    assert_eq!(expect_close(&mut c).await.unwrap().0, 1000);

    // Byte-exact: the 20 acknowledged frames survived the crash, then the new session.
    let stored = stored_frames(&redis, "audio:fault:mic");
    let expected: Vec<Vec<u8>> = (0..20).chain(100..110).map(frame).collect();
    assert_eq!(stored.len(), expected.len(), "exactly the acknowledged frames are in Redis");
    assert!(stored == expected, "audio is byte-exact after recovery");

    // The subscriber that lived through the outage receives publishes again.
    let body = serde_json::json!({"items": [{"channel": "meeting:fault", "formats": {"ws-message": {"content": "{\"type\":\"after-outage\"}"}}}]});
    let client = reqwest::Client::new();
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        let _ = client.post(server.url("/publish/")).json(&body).send().await;
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(300), next_of_type(&mut watcher, "after-outage")).await {
            assert_eq!(v["type"], "after-outage");
            break;
        }
        assert!(Instant::now() < deadline, "subscriber never resumed");
    }
    eprintln!("faults: health noticed Redis down after {noticed:?}; recovered {:?} after restart", restarted.elapsed());
}

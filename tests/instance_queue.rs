//! Backpressure at the instance cap: with every component instance busy, requests wait
//! in the host's FIFO queue and succeed once slots free up; only a request that waits
//! past the queue deadline fails — HTTP 503 with `Retry-After`, and a WebSocket whose
//! request it was closes 1011 `backend busy: instance queue deadline passed`.
//!
//! The instances are held busy by requests whose bodies the test trickles: the auth
//! component reads its whole body before answering, so it keeps its instance until the
//! test sends the rest.

use std::time::Duration;

use earshot_agent::AgentError;
use earshot_testkit::ws::{handshaken, ingest, ingest_path, token};
use earshot_testkit::{earshot, Earshot, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Body the holding requests announce; they send one byte of it until released.
const HOLD_BODY: &[u8] = br#"{"token":"not-a-token"}"#;

/// Time for a held request to reach its guest (the debug-built host instantiates in
/// milliseconds; this leaves a wide margin on a loaded machine).
const HOLD_SETTLE: Duration = Duration::from_secs(1);

/// A request that keeps one instance busy until [`Hold::release`].
struct Hold(TcpStream);

impl Hold {
    /// Posts to the auth component with only the first byte of the body sent.
    async fn start(server: &Earshot) -> Hold {
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        let head = format!(
            "POST /api/v1/auth/introspect HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            server.addr(),
            HOLD_BODY.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&HOLD_BODY[..1]).await.unwrap();
        Hold(tcp)
    }

    /// Sends the rest of the body and reads the answer's status line.
    async fn release(mut self) -> String {
        self.0.write_all(&HOLD_BODY[1..]).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut buf)).await.unwrap().unwrap();
        String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
    }
}

fn frame(i: usize) -> Vec<u8> {
    (0..640).map(|j| ((i * 13 + j) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_instance_cap_wait_and_succeed() {
    const SLOTS: usize = 2;
    const HTTP_REQUESTS: usize = 100;
    const STREAMS: usize = 40;
    const FRAMES: usize = 10;
    let redis = RedisServer::start().unwrap();
    let server = earshot!()
        .redis(redis.url())
        .env("EARSHOT_MAX_INSTANCES", &SLOTS.to_string())
        .env("EARSHOT_MAX_CONNECTIONS_PER_IP", "1000")
        .start()
        .unwrap();
    let (_, secret) = server.dev_secrets().unwrap();

    // Every slot busy, then a burst far larger than the pool.
    let mut holds = Vec::new();
    for _ in 0..SLOTS {
        holds.push(Hold::start(&server).await);
    }
    tokio::time::sleep(HOLD_SETTLE).await;
    let client = reqwest::Client::new();
    let health = server.url("/api/v1/health");
    let gets: Vec<_> = (0..HTTP_REQUESTS)
        .map(|_| {
            let (client, url) = (client.clone(), health.clone());
            tokio::spawn(async move { client.get(&url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| {
            let server_url = server.ws_url(&ingest_path(&format!("queue-{i}"), "mic", &token(&secret, "ingest", &[&format!("queue-{i}")])));
            tokio::spawn(async move {
                let mut agent = handshaken(&server_url).await?;
                for f in 0..FRAMES {
                    agent.send_frame(frame(f)).await?;
                }
                let sent = agent.sent();
                let stored = agent.close_stream().await?;
                anyhow::Ok((sent, stored))
            })
        })
        .collect();

    // Queued, not refused: nothing is answered while every instance is held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gets.iter().all(|g| !g.is_finished()), "a request was answered while every instance was busy");
    assert!(streams.iter().all(|s| !s.is_finished()), "a stream got through while every instance was busy");

    for hold in holds {
        let status = hold.release().await;
        assert!(status.starts_with("HTTP/1.1 "), "{status}");
        assert!(!status.contains(" 503 "), "the held request itself failed: {status}");
    }
    for g in gets {
        assert_eq!(g.await.unwrap().unwrap(), 200);
    }
    for (i, s) in streams.into_iter().enumerate() {
        let (sent, stored) = s.await.unwrap().unwrap_or_else(|e| panic!("stream {i}: {e:#}"));
        assert_eq!(sent.frames, FRAMES as u64);
        assert_eq!(stored, sent, "stream {i}: stored totals differ from what it sent");
    }
    let logs = server.logs().join("\n");
    assert!(!logs.contains("maximum concurrent limit"), "the pool refused an instance");
    assert!(!logs.contains("no free instance"), "a request failed in the queue");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_the_queue_deadline_fails_with_the_documented_reason() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!()
        .redis(redis.url())
        .env("EARSHOT_MAX_INSTANCES", "1")
        .env("EARSHOT_INSTANCE_QUEUE_TIMEOUT_MS", "100")
        .start()
        .unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    // A stream already open before the slot is taken.
    let mut agent = ingest(&server, &secret, "deadline", "mic").await.unwrap();

    let hold = Hold::start(&server).await;
    tokio::time::sleep(HOLD_SETTLE).await;

    // An HTTP route: 503, the host's reason, when to retry.
    let resp = reqwest::get(server.url("/api/v1/health")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    assert_eq!(resp.text().await.unwrap(), earshot_host::BUSY_BODY);

    // A WebSocket upgrade: the relay passes the 503 through before the upgrade.
    let t = token(&secret, "ingest", &["deadline-2"]);
    let err = earshot_agent::connect(&server.ws_url(&ingest_path("deadline-2", "mic", &t)), None).await.unwrap_err();
    assert!(matches!(err, AgentError::UpgradeRefused { status } if status.as_u16() == 503), "{err}");

    // An open stream whose next request waits past the deadline: 1011 with the reason.
    agent.send_frame(frame(0)).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), agent.next_event()).await.unwrap();
    match closed {
        Err(AgentError::Closed { code, reason, .. }) => {
            assert_eq!((code, reason.as_str()), (1011, "backend busy: instance queue deadline passed"));
        }
        other => panic!("expected close 1011, got {other:?}"),
    }

    // The held request itself was never refused, and the host serves again once free.
    assert!(!hold.release().await.contains(" 503 "));
    assert_eq!(reqwest::get(server.url("/api/v1/health")).await.unwrap().status().as_u16(), 200);
}

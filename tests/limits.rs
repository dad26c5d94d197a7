//! Isolation: connection caps answered before the upgrade, the Origin allow-list, and
//! a subscriber that stops reading closed with 4008 while others keep receiving.

use std::time::{Duration, Instant};

use earshot_testkit::ws::{connect, expect_close, next_json, token};
use earshot_testkit::{earshot, RedisServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn http_status_of_refused_upgrade(url: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("upgrade unexpectedly accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned),
        ),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn per_ip_cap_and_origin_are_answered_before_upgrade() {
    let server = earshot!().env("EARSHOT_MAX_CONNECTIONS_PER_IP", "2").start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let url = server.ws_url(&format!("/api/v1/ws/meetings/cap?token={}", token(&secret, "subscribe", &["cap"])));
    let _a = connect(&url, &[]).await.unwrap();
    let b = connect(&url, &[]).await.unwrap();
    let (status, retry) = http_status_of_refused_upgrade(&url, &[]).await;
    assert_eq!((status, retry.as_deref()), (429, Some("5")));
    drop(b);
    // The slot is released once the session ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if connect(&url, &[]).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "slot never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let server = earshot!().start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let url = server.ws_url(&format!("/api/v1/ws/meetings/o?token={}", token(&secret, "subscribe", &["o"])));
    let (status, _) = http_status_of_refused_upgrade(&url, &[("origin", "http://evil.example")]).await;
    assert_eq!(status, 403, "foreign origin refused");
    let same = format!("http://{}", server.addr());
    connect(&url, &[("origin", &same)]).await.expect("same origin accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_stops_reading_gets_4008_and_others_are_unaffected() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let url = server.ws_url(&format!("/api/v1/ws/meetings/slow?token={}", token(&secret, "subscribe", &["slow"])));
    let mut stalled = connect(&url, &[]).await.unwrap();
    let mut healthy = connect(&url, &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The healthy reader drains concurrently and counts what it gets.
    const BATCHES: usize = 60;
    const PER_BATCH: usize = 100;
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        while got < BATCHES * PER_BATCH {
            match next_json(&mut healthy).await {
                Ok(v) if v["type"] == "bulk" => got += 1,
                Ok(_) => {}
                Err(e) => panic!("healthy subscriber failed after {got}: {e}"),
            }
        }
        got
    });
    let payload = "x".repeat(4096);
    let client = reqwest::Client::new();
    for b in 0..BATCHES {
        let items: Vec<_> = (0..PER_BATCH)
            .map(|i| {
                let content = serde_json::json!({"type": "bulk", "n": b * PER_BATCH + i, "pad": payload}).to_string();
                serde_json::json!({"channel": "meeting:slow", "formats": {"ws-message": {"content": content}}})
            })
            .collect();
        let resp = client.post(server.url("/publish/")).json(&serde_json::json!({"items": items})).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let got = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("healthy reader finished").unwrap();
    assert_eq!(got, BATCHES * PER_BATCH, "the healthy subscriber received everything");
    // The stalled one now reads: after its backlog it finds the 4008 close.
    let (code, reason, _) = expect_close_draining(&mut stalled).await;
    assert_eq!((code, reason.as_str()), (4008, "slow consumer"));
}

/// Reads past any backlog to the close frame.
async fn expect_close_draining(ws: &mut earshot_testkit::ws::Ws) -> (u16, String, ()) {
    loop {
        match expect_close(ws).await {
            Ok((code, reason, _)) => return (code, reason, ()),
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

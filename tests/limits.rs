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

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

/// Publishes `BATCHES × PER_BATCH` 4 KiB messages on `channel` (each stamped with its
/// publish time) while `healthy` reads; returns the healthy reader's latencies, sorted.
async fn flood(server: &earshot_testkit::Earshot, channel: &str, mut healthy: earshot_testkit::ws::Ws) -> Vec<u64> {
    const BATCHES: usize = 60;
    const PER_BATCH: usize = 100;
    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(BATCHES * PER_BATCH);
        while lat.len() < BATCHES * PER_BATCH {
            match next_json(&mut healthy).await {
                Ok(v) if v["type"] == "bulk" => lat.push(now_us().saturating_sub(v["t"].as_u64().unwrap())),
                Ok(_) => {}
                Err(e) => panic!("healthy subscriber failed after {}: {e}", lat.len()),
            }
        }
        lat
    });
    let payload = "x".repeat(4096);
    let client = reqwest::Client::new();
    for b in 0..BATCHES {
        let t = now_us();
        let items: Vec<_> = (0..PER_BATCH)
            .map(|i| {
                let content = serde_json::json!({"type": "bulk", "n": b * PER_BATCH + i, "t": t, "pad": payload}).to_string();
                serde_json::json!({"channel": channel, "formats": {"ws-message": {"content": content}}})
            })
            .collect();
        let resp = client.post(server.internal_url("/publish/")).json(&serde_json::json!({"items": items})).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let mut lat = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("healthy reader finished").unwrap();
    lat.sort_unstable();
    lat
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_stops_reading_gets_4008_and_others_are_unaffected() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let url = |m: &str| server.ws_url(&format!("/api/v1/ws/meetings/{m}?token={}", token(&secret, "subscribe", &[m])));

    // Baseline: the same load with two readers that both keep up.
    let healthy = connect(&url("calm"), &[]).await.unwrap();
    let mut other = connect(&url("calm"), &[]).await.unwrap();
    let drain = tokio::spawn(async move { while futures::StreamExt::next(&mut other).await.is_some() {} });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calm = flood(&server, "meeting:calm", healthy).await;
    drain.abort();

    // Now one subscriber never reads.
    let mut stalled = connect(&url("slow"), &[]).await.unwrap();
    let healthy = connect(&url("slow"), &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slow = flood(&server, "meeting:slow", healthy).await;

    let pct = |v: &[u64], p: f64| v[((v.len() as f64 - 1.0) * p) as usize];
    let (calm50, calm99, slow50, slow99) = (pct(&calm, 0.5), pct(&calm, 0.99), pct(&slow, 0.5), pct(&slow, 0.99));
    eprintln!("slow consumer: healthy reader p50/p99 {calm50}/{calm99} µs without, {slow50}/{slow99} µs with a stalled peer");
    // Generous bound (2× plus 20 ms of scheduler noise on a shared 2-core machine).
    assert!(slow50 <= 2 * calm50 + 20_000, "p50 {slow50} µs vs {calm50} µs without the slow client");

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

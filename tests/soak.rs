//! Soak: bounded connection churn and streaming, then the relay's sessions, tasks and
//! memory must return to their baseline (read from `/metrics`). 20 s by default so CI
//! stays fast; `EARSHOT_SOAK_SECS=600 cargo test --test soak` soaks longer.

use std::time::{Duration, Instant};

use earshot_testkit::ws::{connect, handshaken, ingest_path, next_of_type, token};
use earshot_testkit::{earshot, RedisServer};

/// Default soak duration, seconds: long enough for hundreds of sessions, short for CI.
const DEFAULT_SOAK_SECS: u64 = 20;
/// Concurrent capture agents per round.
const AGENTS: usize = 8;
/// Concurrent subscribers per round.
const WATCHERS: usize = 16;
/// Memory the relay may keep above its warmed-up baseline, in bytes: allocator
/// caches and the precompiled-instance pool grow a little; a leak grows without bound.
const RSS_SLACK_BYTES: u64 = 48 << 20;
/// Tasks that may outlive the churn (timers, Redis reconnect loops).
const TASK_SLACK: u64 = 8;

async fn metrics(url: &str) -> std::collections::HashMap<String, u64> {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
        .collect()
}

async fn round(server_ws: &dyn Fn(&str) -> String, secret: &str, r: usize) -> usize {
    let mut tasks = Vec::new();
    for a in 0..AGENTS {
        let meeting = format!("soak-{r}-{a}");
        let url = server_ws(&ingest_path(&meeting, "mic", &token(secret, "ingest", &[&meeting])));
        tasks.push(tokio::spawn(async move {
            let mut c = handshaken(&url).await.unwrap();
            for i in 0..25u8 {
                c.send_frame(vec![i; 640]).await.unwrap();
            }
            assert_eq!(c.close_stream().await.unwrap().frames, 25);
        }));
    }
    for w in 0..WATCHERS {
        let meeting = format!("soak-{r}-{}", w % AGENTS);
        let url = server_ws(&format!("/api/v1/ws/meetings/{meeting}?token={}", token(secret, "subscribe", &[&meeting])));
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&url, &[]).await.unwrap();
            next_of_type(&mut c, "snapshot").await.unwrap();
            // Some leave cleanly, some just vanish.
            if w % 2 == 0 {
                let _ = futures::SinkExt::close(&mut c).await;
            }
        }));
    }
    let n = tasks.len();
    for t in tasks {
        t.await.unwrap();
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn churn_returns_to_baseline() {
    let secs = std::env::var("EARSHOT_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SOAK_SECS);
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let ws = |p: &str| server.ws_url(p);
    let metrics_url = server.internal_url("/metrics");

    // Warm up (instance pool, allocator, Redis connections), then take the baseline.
    round(&ws, &secret, 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = metrics(&metrics_url).await;

    let started = Instant::now();
    let mut sessions = 0;
    let mut r = 1;
    while started.elapsed() < Duration::from_secs(secs) {
        sessions += round(&ws, &secret, r).await;
        r += 1;
    }

    // Sessions drain to zero, tasks and memory return near the baseline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let m = metrics(&metrics_url).await;
        if m["earshot_ws_sessions_open"] == 0 && m["earshot_tokio_alive_tasks"] <= base["earshot_tokio_alive_tasks"] + TASK_SLACK {
            break m;
        }
        assert!(Instant::now() < deadline, "did not return to baseline: {m:?} (baseline {base:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rss_base = base["earshot_process_resident_memory_bytes"];
    let rss_after = after["earshot_process_resident_memory_bytes"];
    eprintln!(
        "soak: {sessions} sessions in {r} rounds over {:?}; tasks {} -> {}; RSS {} MiB -> {} MiB",
        started.elapsed(),
        base["earshot_tokio_alive_tasks"],
        after["earshot_tokio_alive_tasks"],
        rss_base >> 20,
        rss_after >> 20
    );
    assert!(rss_after <= rss_base + RSS_SLACK_BYTES, "RSS grew from {rss_base} to {rss_after}");
    assert_eq!(after["earshot_hub_channels"], 0, "no channel outlives its subscribers");
}

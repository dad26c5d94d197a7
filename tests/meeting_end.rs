//! Meeting end (issue 12): two Earshot servers on one real Redis, the real .wasm components,
//! real WebSocket agents and subscribers. A meeting ends once its last source left and none
//! came back within the grace period — announced exactly once whichever server's sweeper
//! claims it — or at once on `POST /api/v1/meetings/{id}/end`; a reconnect within the
//! grace period cancels the end; audio streams carry their retention.

use std::time::{Duration, Instant};

use earshot_testkit::ws::{connect, ingest, next_json, next_of_type, token, Ws};
use earshot_testkit::{earshot, Earshot, RedisServer};
use serde_json::Value;

/// Grace period of these tests, seconds: short, yet far longer than a reconnect takes.
const GRACE_S: u64 = 2;

/// 100 ms of a 440 Hz tone at 16 kHz mono: speech to the voice-activity detector.
fn tone_100ms() -> Vec<u8> {
    (0..1_600u32)
        .flat_map(|i| ((8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 16_000.0).sin()) as i16).to_le_bytes())
        .collect()
}

fn server(redis: &RedisServer, state_of: Option<&Earshot>, grace_s: u64) -> Earshot {
    let mut b = earshot!()
        .redis(redis.url())
        .env("SPIN_VARIABLE_MEETING_END_GRACE_S", &grace_s.to_string())
        .env("SPIN_VARIABLE_AUDIO_RETENTION_S", "3600");
    if let Some(a) = state_of {
        // Same state dir: the same key-value file and development secrets, as two relays
        // of one deployment share their stores and keys.
        b = b.state_dir(a.state_dir());
    }
    b.start_in_process().unwrap()
}

async fn subscriber(server: &Earshot, secret: &str, meeting: &str) -> Ws {
    let t = token(secret, "subscribe", &[meeting]);
    let mut ws = connect(&server.ws_url(&format!("/api/v1/ws/meetings/{meeting}?token={t}")), &[]).await.unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["type"], "snapshot");
    ws
}

/// The `type`s of every message `ws` receives within `window`.
async fn types_within(ws: &mut Ws, window: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + window;
    let mut types = Vec::new();
    while let Ok(Ok(v)) = tokio::time::timeout_at(deadline, next_json(ws)).await {
        types.push(v["type"].as_str().unwrap_or_default().to_owned());
    }
    types
}

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

/// The value of Prometheus counter `name` on `server`'s `/metrics`.
async fn metric(server: &Earshot, name: &str) -> u64 {
    let text = reqwest::get(server.internal_url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// A second of tone then half a second of silence (which ends the speech segment, so it
/// counts as talk time), in real time: the meeting's duration is wall-clock time.
async fn speak(agent: &mut earshot_testkit::ws::Agent) {
    let frames = std::iter::repeat_with(tone_100ms).take(10).chain(std::iter::repeat_n(vec![0; 3_200], 5));
    for frame in frames {
        agent.send_frame(frame).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stream_and_close(server: &Earshot, secret: &str, meeting: &str, source: &str) {
    let mut agent = ingest(server, secret, meeting, source).await.unwrap();
    speak(&mut agent).await;
    agent.close_stream().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_meeting_ends_once_across_two_relays_after_the_grace_period() {
    let redis = RedisServer::start().unwrap();
    let a = server(&redis, None, GRACE_S);
    let b = server(&redis, Some(&a), GRACE_S);
    let (_, secret) = a.dev_secrets().unwrap();
    let mut on_a = subscriber(&a, &secret, "two").await;
    let mut on_b = subscriber(&b, &secret, "two").await;

    // One source on each relay; the meeting lives while either streams.
    let mut mic = ingest(&a, &secret, "two", "mic").await.unwrap();
    mic.send_frame(tone_100ms()).await.unwrap();
    stream_and_close(&b, &secret, "two", "sys").await;
    assert_eq!(redis.cli(&["ZCARD", "earshot:meetings:pending-end"]).unwrap().trim(), "0", "mic still streams: no end pending");
    speak(&mut mic).await;
    mic.close_stream().await.unwrap();
    let left = Instant::now();

    let ended_a = next_of_type(&mut on_a, "meeting_ended").await.unwrap();
    let waited = left.elapsed();
    assert!(waited >= Duration::from_millis(GRACE_S * 1_000 - 300), "ended {waited:?} after the last leave: before the grace period");
    let ended_b = next_of_type(&mut on_b, "meeting_ended").await.unwrap();
    assert_eq!(ended_a, ended_b, "one end, seen on both relays");
    assert_eq!(ended_a["meeting_id"], "two");
    assert_eq!(ended_a["reason"], "grace_expired");
    let duration = ended_a["duration_ms"].as_u64().unwrap();
    assert!((3_000..30_000).contains(&duration), "two sources speaking 1.5 s one after the other: duration {duration} ms");
    assert_eq!(ended_a["ended_ms"].as_u64().unwrap() - ended_a["started_ms"].as_u64().unwrap(), duration);
    for source in ["mic", "sys"] {
        let talk = ended_a["talk_ms"][source].as_u64().unwrap();
        assert!((700..=1_400).contains(&talk), "{source} spoke a second, counted {talk} ms");
    }
    assert_eq!(ended_a["segment_count"], 0, "no transcription worker runs here");

    // Exactly once: nothing more on either relay, one claim in all, the marker set.
    let later_a = types_within(&mut on_a, Duration::from_secs(GRACE_S + 1)).await;
    let later_b = types_within(&mut on_b, Duration::from_millis(200)).await;
    assert_eq!(count(&later_a, "meeting_ended") + count(&later_b, "meeting_ended"), 0, "{later_a:?} {later_b:?}");
    assert_eq!(metric(&a, "earshot_meetings_ended_total").await + metric(&b, "earshot_meetings_ended_total").await, 1);
    assert_eq!(redis.cli(&["EXISTS", "earshot:meeting:two:ended"]).unwrap().trim(), "1");
    assert_eq!(redis.cli(&["ZCARD", "earshot:meetings:pending-end"]).unwrap().trim(), "0");

    // Audio retention: each stream expires within the configured hour.
    for source in ["mic", "sys"] {
        let ttl: i64 = redis.cli(&["PTTL", &format!("audio:two:{source}")]).unwrap().trim().parse().unwrap();
        assert!(ttl > 3_500_000 && ttl <= 3_600_000, "audio:two:{source} PTTL {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_within_the_grace_period_cancels_the_end() {
    let redis = RedisServer::start().unwrap();
    let a = server(&redis, None, GRACE_S);
    let b = server(&redis, Some(&a), GRACE_S);
    let (_, secret) = a.dev_secrets().unwrap();
    let mut watcher = subscriber(&a, &secret, "back").await;

    stream_and_close(&a, &secret, "back", "mic").await;
    assert_eq!(redis.cli(&["ZCARD", "earshot:meetings:pending-end"]).unwrap().trim(), "1", "the last leave schedules the end");
    // The agent comes back through the other relay well inside the grace period.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = ingest(&b, &secret, "back", "mic").await.unwrap();
    assert_eq!(redis.cli(&["ZCARD", "earshot:meetings:pending-end"]).unwrap().trim(), "0", "the join cancels it");
    let quiet = Duration::from_secs(GRACE_S + 1);
    let heard = types_within(&mut watcher, quiet).await;
    assert_eq!(count(&heard, "meeting_ended"), 0, "reconnected within the grace period: {heard:?}");

    // Leaving for good ends it after all: the meeting was alive, not lost.
    again.send_frame(tone_100ms()).await.unwrap();
    again.close_stream().await.unwrap();
    let ended = next_of_type(&mut watcher, "meeting_ended").await.unwrap();
    assert_eq!(ended["reason"], "grace_expired");
    assert_eq!(metric(&a, "earshot_meetings_ended_total").await + metric(&b, "earshot_meetings_ended_total").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_end_ends_the_meeting_now_and_only_once() {
    let redis = RedisServer::start().unwrap();
    let a = server(&redis, None, 1);
    let b = server(&redis, Some(&a), 1);
    let (_, secret) = a.dev_secrets().unwrap();
    let mut on_b = subscriber(&b, &secret, "now").await;
    let mut agent = ingest(&a, &secret, "now", "sys").await.unwrap();
    agent.send_frame(tone_100ms()).await.unwrap();

    let http = reqwest::Client::new();
    let end = |server: &Earshot, meeting: &str, token: Option<String>| {
        let mut req = http.post(server.url(&format!("/api/v1/meetings/{meeting}/end")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // Refusals first: each leaves the meeting running.
    let r = end(&a, "now", None).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = end(&a, "now", Some(token(&secret, "subscribe", &["now"]))).await.unwrap();
    assert_eq!(r.status(), 403, "subscribers may not end a meeting");
    let r = end(&a, "now", Some(token(&secret, "ingest", &["other"]))).await.unwrap();
    assert_eq!(r.status(), 403, "nor agents of another meeting");
    let r = end(&a, "never", Some(token(&secret, "ingest", &["never"]))).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unknown meeting");
    let r = end(&a, "bad%20id", Some(token(&secret, "ingest", &["*"]))).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.get(a.url("/api/v1/meetings/now/end")).bearer_auth(token(&secret, "ingest", &["now"])).send().await.unwrap();
    assert_eq!(r.status(), 405);

    let r = end(&a, "now", Some(token(&secret, "ingest", &["now"]))).await.unwrap();
    assert_eq!(r.status(), 200);
    let reply: Value = r.json().await.unwrap();
    assert_eq!(reply["ended"], true);
    let event = next_of_type(&mut on_b, "meeting_ended").await.unwrap();
    assert_eq!(event["reason"], "requested");
    assert_eq!(event["duration_ms"], reply["totals"]["duration_ms"]);
    assert_eq!(event["talk_ms"], reply["totals"]["talk_ms"]);

    // Again, on the other relay: already ended, harmless.
    let r = end(&b, "now", Some(token(&secret, "ingest", &["now"]))).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({"ended": false}));
    // The agent leaving afterwards, past the grace period, does not end it a second time.
    agent.close_stream().await.unwrap();
    let later = types_within(&mut on_b, Duration::from_secs(2)).await;
    assert_eq!(count(&later, "meeting_ended"), 0, "{later:?}");
    assert_eq!(redis.cli(&["ZCARD", "earshot:meetings:pending-end"]).unwrap().trim(), "0");
}

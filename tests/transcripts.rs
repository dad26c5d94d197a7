//! Transcript intake end to end: segments PUBLISHed on `earshot:transcripts` by the real
//! `redis-cli` (the `transcripts` Redis trigger) or POSTed to
//! `/api/v1/meetings/{id}/transcript` (`transcripts-http`) land in the Redis Stream
//! `transcript:{id}` and reach `/api/v1/ws/transcript/{id}` subscribers; malformed ones are
//! refused without harm. Real Redis, the real server, the real .wasm components.

use std::time::{Duration, Instant};

use earshot_protocol::transcript::{INTAKE_CHANNEL, MAX_SEGMENT_BYTES, MAX_TEXT_BYTES};
use earshot_testkit::ws::{self, connect, ingest, next_json, token};
use earshot_testkit::{earshot, Earshot, RedisServer};
use serde_json::{json, Value};

/// Longest a test waits for a Redis subscription or a log line.
const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    redis: RedisServer,
    server: Earshot,
    secret: String,
}

fn setup() -> Setup {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    Setup { redis, server, secret }
}

impl Setup {
    /// Makes `meeting` known the way production does: a capture agent connects to it.
    async fn known_meeting(&self, meeting: &str) -> ws::Agent {
        ingest(&self.server, &self.secret, meeting, "mic").await.unwrap()
    }

    /// A `/ws/transcript/{meeting}` subscriber (no `since`), returned once its channel is
    /// subscribed on Redis, so nothing published afterwards can miss it.
    async fn subscriber(&self, meeting: &str) -> ws::Ws {
        let t = token(&self.secret, "subscribe", &[meeting]);
        let c = connect(&self.server.ws_url(&format!("/api/v1/ws/transcript/{meeting}?token={t}")), &[]).await.unwrap();
        self.wait_subscribed(&format!("earshot:grip:transcript:{meeting}"));
        c
    }

    /// Waits until something (the relay, the Redis trigger) subscribes to `channel`.
    fn wait_subscribed(&self, channel: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = self.redis.cli(&["PUBSUB", "NUMSUB", channel]).unwrap();
            if out.lines().last().and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0) > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "nobody subscribed to {channel}:\n{}", self.server.logs().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `PUBLISH earshot:transcripts <payload>` through the real redis-cli, once the trigger
    /// listens; the number of receivers Redis reports.
    fn publish(&self, payload: &str) -> u64 {
        self.wait_subscribed(INTAKE_CHANNEL);
        let out = self.redis.cli(&["PUBLISH", INTAKE_CHANNEL, payload]).unwrap();
        out.trim().parse().unwrap_or_else(|_| panic!("redis-cli PUBLISH answered {out:?}"))
    }

    /// `(offset, segment JSON)` of every entry of `transcript:{meeting}`.
    fn history(&self, meeting: &str) -> Vec<(String, Value)> {
        self.redis
            .xrange(&format!("transcript:{meeting}"))
            .unwrap()
            .into_iter()
            .map(|e| {
                assert_eq!(e.fields.len(), 1, "one field per entry: {e:?}");
                let segment = e.text("segment").unwrap();
                (e.id, serde_json::from_str(&segment).unwrap())
            })
            .collect()
    }

    /// Every log line as one JSON object: the host's event fields plus the guest line's own
    /// fields, which the host carries as a JSON string under `fields`.
    fn log_events(&self) -> Vec<Value> {
        self.server
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

    /// Waits for a log event matching `pred`.
    fn wait_log(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self.log_events().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "no log line {what}:\n{}", self.server.logs().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn post(&self, meeting: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = reqwest::Client::new().post(self.server.url(&format!("/api/v1/meetings/{meeting}/transcript"))).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.json().await.unwrap(), headers)
    }
}

fn segment(meeting: &str, text: &str, is_final: bool) -> Value {
    json!({"meeting_id": meeting, "source": "mic", "text": text, "is_final": is_final, "start_ms": 1000, "end_ms": 2500, "speaker": "A", "confidence": 0.93})
}

/// The subscriber's next message, which must be a transcript message.
async fn next_transcript(c: &mut ws::Ws) -> Value {
    let v = next_json(c).await.unwrap();
    assert_eq!(v["type"], "transcript", "{v}");
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_published_with_redis_cli_reaches_subscribers_and_history() {
    let s = setup();
    let _agent = s.known_meeting("tm1").await;
    let mut sub = s.subscriber("tm1").await;

    let published = Instant::now();
    assert_eq!(s.publish(&segment("tm1", "hello world", true).to_string()), 1, "the Redis trigger is the one receiver");
    let live = next_transcript(&mut sub).await;
    let latency = published.elapsed();
    // Read right away: the segment was appended before it was published.
    let history = s.history("tm1");
    let offset = live["offset"].as_str().expect("a final segment has an offset").to_owned();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].0, offset, "the live offset is the stream id");
    assert_eq!(
        (live["text"].as_str(), live["meeting_id"].as_str(), live["source"].as_str(), live["is_final"].as_bool()),
        (Some("hello world"), Some("tm1"), Some("mic"), Some(true))
    );
    assert_eq!((live["start_ms"].as_u64(), live["end_ms"].as_u64(), live["speaker"].as_str()), (Some(1000), Some(2500), Some("A")));
    let stored = &history[0].1;
    assert_eq!(stored["text"], "hello world");
    assert!(stored.get("offset").is_none() && stored.get("type").is_none(), "the stream holds the bare segment: {stored}");
    println!("redis-cli PUBLISH → subscriber: {latency:?}");

    // Interim: live, without offset, and not kept.
    s.publish(&segment("tm1", "second seg", false).to_string());
    let live = next_transcript(&mut sub).await;
    assert_eq!((live["text"].as_str(), live["is_final"].as_bool()), (Some("second seg"), Some(false)));
    assert!(live.get("offset").is_none(), "interim segments have no offset: {live}");
    // `system` is accepted and stored as `sys`; offsets grow.
    let mut sys = segment("tm1", "from the room", true);
    sys["source"] = json!("system");
    s.publish(&sys.to_string());
    let live = next_transcript(&mut sub).await;
    assert_eq!(live["source"], "sys");
    let history = s.history("tm1");
    assert_eq!(history.iter().map(|(_, v)| v["text"].as_str().unwrap()).collect::<Vec<_>>(), ["hello world", "from the room"]);
    assert_eq!(history[1].0, live["offset"].as_str().unwrap());
    assert!(earshot_protocol::grip::id_after(&history[1].0, &history[0].0));

    // The structured log of a stored segment: level, msg, meeting_id, source, offset.
    let v = s.wait_log("segment accepted", |v| v["message"] == "segment accepted" && v["guest.offset"] == offset.as_str());
    assert_eq!(
        (v["level"].as_str(), v["component"].as_str(), v["meeting_id"].as_str(), v["source"].as_str(), v["guest.via"].as_str()),
        (Some("INFO"), Some("transcripts"), Some("tm1"), Some("mic"), Some("redis")),
        "{v}"
    );
    assert!(!s.server.logs().iter().any(|l| l.contains("hello world")), "segment text stays out of the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_segments_are_refused_without_harm() {
    let s = setup();
    let _agent = s.known_meeting("tm2").await;
    let mut sub = s.subscriber("tm2").await;

    let good = segment("tm2", "ok", true);
    let with = |key: &str, value: Value| {
        let mut v = good.clone();
        v[key] = value;
        v.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "{this is not json".into(), "malformed segment"),
        ("wrong shape", json!({"meeting_id": "tm2", "text": "x"}).to_string(), "malformed segment"),
        ("unknown field", with("extra", json!(1)), "malformed segment"),
        ("bad source", with("source", json!("speaker")), "malformed segment"),
        ("unknown meeting", with("meeting_id", json!("nobody-here")), "unknown meeting"),
        ("bad meeting id", with("meeting_id", json!("../tm2")), "invalid meeting id"),
        ("text too long", with("text", json!("x".repeat(MAX_TEXT_BYTES + 1))), "text too long"),
        ("segment too large", format!("{}{}", good, " ".repeat(MAX_SEGMENT_BYTES)), "segment too large"),
        ("end before start", with("end_ms", json!(10)), "end_ms before start_ms"),
        ("confidence > 1", with("confidence", json!(1.5)), "confidence out of range"),
    ];
    let rejected = |v: &Value, reason: &str| {
        v["message"] == "segment rejected" && v["guest.reason"].as_str().is_some_and(|r| r.starts_with(reason))
    };
    for (name, payload, reason) in &cases {
        assert_eq!(s.publish(payload), 1, "{name}");
        let v = s.wait_log(reason, |v| rejected(v, reason));
        assert_eq!((v["level"].as_str(), v["component"].as_str()), (Some("WARN"), Some("transcripts")), "{name}: {v}");
    }
    // Not UTF-8 at all (redis-cli cannot send this; the redis crate can).
    let client = redis::Client::open(s.redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: i64 = redis::cmd("PUBLISH").arg(INTAKE_CHANNEL).arg(&[0xff_u8, 0xfe, 0x00, 0x01][..]).query(&mut con).unwrap();

    // The pipeline is unharmed: the next good segment is the first thing subscribers see.
    s.publish(&good.to_string());
    let live = next_transcript(&mut sub).await;
    assert_eq!(live["text"], "ok", "nothing refused was published: {live}");
    assert_eq!(s.history("tm2").len(), 1, "nothing refused was stored");
    for key in ["transcript:nobody-here", "transcript:../tm2"] {
        assert_eq!(s.redis.cli(&["EXISTS", key]).unwrap().trim(), "0", "{key}");
    }
    let count = s.wait_log("for the non-UTF-8 payload", |v| rejected(v, "malformed segment") && v["guest.bytes"] == 4);
    assert_eq!(count["meeting_id"], Value::Null);
    let refusals = s.log_events().iter().filter(|v| v["message"] == "segment rejected").count();
    assert_eq!(refusals, cases.len() + 1, "one warning per refused segment");
    let unknown = s.wait_log("unknown meeting", |v| rejected(v, "unknown meeting"));
    assert_eq!(unknown["meeting_id"], "nobody-here", "the claimed meeting is logged: {unknown}");
    assert!(!s.server.logs().iter().any(|l| l.contains("redis message not handled")), "refusals are not failures");
    let health = reqwest::get(s.server.url("/api/v1/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_route_takes_segments_with_a_publish_token() {
    let s = setup();
    let _agent = s.known_meeting("th").await;
    let mut sub = s.subscriber("th").await;
    let publish = token(&s.secret, "publish", &["th"]);

    let (status, body, _) = s.post("th", Some(&publish), segment("th", "over http", true).to_string()).await;
    assert_eq!(status, 200, "{body}");
    let offset = body["offset"].as_str().expect("an offset").to_owned();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let live = next_transcript(&mut sub).await;
    assert_eq!((live["offset"].as_str(), live["text"].as_str()), (Some(offset.as_str()), Some("over http")));
    assert_eq!(s.history("th")[0].0, offset);

    let (status, body, _) = s.post("th", Some(&publish), segment("th", "interim", false).to_string()).await;
    assert_eq!((status, body.clone()), (200, json!({"offset": null})));
    assert_eq!(next_transcript(&mut sub).await["text"], "interim");

    // Both surfaces feed one stream, in order.
    s.publish(&segment("th", "over redis", true).to_string());
    let live = next_transcript(&mut sub).await;
    let history = s.history("th");
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].0, live["offset"].as_str().unwrap());

    let subscribe = token(&s.secret, "subscribe", &["th"]);
    let other_meeting = token(&s.secret, "publish", &["elsewhere"]);
    let wildcard = token(&s.secret, "publish", &["*"]);
    let seg = segment("th", "x", true).to_string();
    // (name, path meeting, token, body, status, error prefix)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, String, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("no token", "th", None, seg.clone(), 401, "missing token"),
        ("bad token", "th", Some("not.a.jwt"), seg.clone(), 401, "malformed token"),
        ("subscribe scope", "th", Some(&subscribe), seg.clone(), 403, "scope not granted: publish"),
        ("other meeting's token", "th", Some(&other_meeting), seg.clone(), 403, "meeting not granted"),
        ("mismatched meeting", "th", Some(&wildcard), segment("tm-other", "x", true).to_string(), 400, "meeting_id does not match the path"),
        ("unknown meeting", "ghost", Some(&wildcard), segment("ghost", "x", true).to_string(), 404, "unknown meeting"),
        ("malformed", "th", Some(&publish), "{nope".into(), 400, "malformed segment"),
        ("text too long", "th", Some(&publish), segment("th", &"x".repeat(MAX_TEXT_BYTES + 1), true).to_string(), 413, "text too long"),
        ("body too large", "th", Some(&publish), "x".repeat(MAX_SEGMENT_BYTES + 1), 413, "request body too large"),
        ("invalid meeting id", "a%20b", Some(&wildcard), seg.clone(), 400, "invalid meeting id"),
    ];
    for (name, meeting, tok, body, want_status, want_error) in cases {
        let (status, reply, headers) = s.post(meeting, tok, body).await;
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(status == want_status && error.starts_with(want_error), "{name}: {status} {reply}");
        if status == 401 {
            assert_eq!(headers.get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"), "{name}");
        }
    }
    assert_eq!(s.history("th").len(), 2, "no refused request stored anything");

    let resp = reqwest::Client::new().put(s.server.url("/api/v1/meetings/th/transcript")).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.headers()["allow"].to_str().unwrap()), (405, "GET, POST"));
    let resp = reqwest::Client::new().post(s.server.url("/api/v1/meetings/th/other")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    // One request line each; never the token.
    let v = s.wait_log("request 403", |v| v["component"] == "transcripts-http" && v["guest.status"] == 403);
    assert_eq!((v["level"].as_str(), v["meeting_id"].as_str()), (Some("WARN"), Some("th")), "{v}");
    s.wait_log("request 200", |v| v["component"] == "transcripts-http" && v["guest.status"] == 200 && v["guest.offset"] == offset.as_str());
    assert!(!s.server.logs().iter().any(|l| l.contains(&publish)), "a token reached the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_interim_segments_go_out_through_grip_publish_url() {
    // No Redis: the relay hands the components its own `/publish/` as grip_publish_url, so
    // this drives the HTTP publish path (POST with an explicit Content-Length).
    let server = earshot!().start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let _agent = ingest(&server, &secret, "nr", "mic").await.unwrap();
    let sub = token(&secret, "subscribe", &["nr"]);
    let mut watcher = connect(&server.ws_url(&format!("/api/v1/ws/transcript/nr?token={sub}")), &[]).await.unwrap();
    let publish = token(&secret, "publish", &["nr"]);
    let post = |body: String| {
        reqwest::Client::new().post(server.url("/api/v1/meetings/nr/transcript")).bearer_auth(&publish).body(body).send()
    };
    // The in-process hub subscribes once the component's reply reaches the relay: post
    // interim segments until one arrives rather than guess how long that takes.
    let deadline = Instant::now() + WAIT;
    let live = loop {
        let resp = post(segment("nr", "live only", false).to_string()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(200), futures::StreamExt::next(&mut watcher)).await
        {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
        assert!(Instant::now() < deadline, "no interim segment reached the subscriber");
    };
    assert_eq!((live["type"].as_str(), live["text"].as_str()), (Some("transcript"), Some("live only")));
    assert!(live.get("offset").is_none());
    // Drain probes that arrived late, so what follows sees only its own effects.
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut watcher)).await {
        assert!(m.to_text().unwrap().contains("live only"), "{m:?}");
    }

    // A final segment has no history to go to: refused as retryable, never published.
    let resp = post(segment("nr", "needs redis", true).to_string()).await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.headers()["retry-after"].to_str().unwrap()), (503, "1"));
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "storage unavailable");
    assert!(tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut watcher)).await.is_err(), "nothing published");
}

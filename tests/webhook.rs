//! The `meeting.ended` webhook (issue 12) against a real local HTTP receiver (hyper on a
//! free port), from two Earshot servers sharing one real Redis: the receiver checks the
//! `Earshot-Signature` with its own HMAC-SHA256 (RFC 2104 over sha2, not Earshot's code),
//! answers 500 once and sees the retry carry the same `Earshot-Delivery-Id`, and refuses
//! replays (an id it already accepted, a timestamp outside its tolerance, a changed body).
//! `/metrics` shows the failed attempt, the delivery, and a delivery given up.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use earshot_testkit::ws::{ingest, token};
use earshot_testkit::{earshot, Earshot, RedisServer};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sha2::{Digest, Sha256};

const SECRET: &str = "whsec-test-0123456789abcdef";

/// How old a signature the receiver accepts, seconds (the documented tolerance).
const TOLERANCE_S: i64 = 300;

/// HMAC-SHA256 (RFC 2104), written here so the test does not check Earshot with itself.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// One request the receiver saw, and its answer.
#[derive(Debug, Clone)]
struct Seen {
    delivery_id: String,
    signature: String,
    body: Bytes,
    status: u16,
    at: Instant,
}

#[derive(Default)]
struct ReceiverState {
    /// Answer 500 to this many valid deliveries first.
    fail_next: usize,
    /// Added to the receiver's clock, seconds (to replay "later").
    skew_s: i64,
    accepted: HashSet<String>,
    seen: Vec<Seen>,
}

/// A webhook receiver as its documentation tells one to be written.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(fail_next: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState { fail_next, ..Default::default() }));
        let receiver = Receiver { addr, state };
        let serving = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let r = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let r = r.clone();
                        async move { Ok::<_, Infallible>(r.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/earshot", self.addr)
    }

    async fn handle(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let (signature, delivery_id) = (header("earshot-signature"), header("earshot-delivery-id"));
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut state = self.state.lock().unwrap();
        let status = match verify(&signature, &body, unix_now() + state.skew_s) {
            Err(_) => 400,
            Ok(()) if state.accepted.contains(&delivery_id) => 409,
            Ok(()) if state.fail_next > 0 => {
                state.fail_next -= 1;
                500
            }
            Ok(()) => {
                state.accepted.insert(delivery_id.clone());
                200
            }
        };
        state.seen.push(Seen { delivery_id, signature, body, status, at: Instant::now() });
        http::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= n || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `t=<unix>,v1=<hex>`: the timestamp within the tolerance of `now`, the HMAC of
/// `"<t>.<body>"` matching.
fn verify(header: &str, body: &[u8], now: i64) -> Result<(), &'static str> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_owned()),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or("no t")?, v1.ok_or("no v1")?);
    if (now - t).abs() > TOLERANCE_S {
        return Err("stale");
    }
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    if hex(&hmac_sha256(SECRET.as_bytes(), &signed)) != v1 {
        return Err("mismatch");
    }
    Ok(())
}

fn server(redis: &RedisServer, state_of: Option<&Earshot>, receiver: &Receiver, max_attempts: u32) -> Earshot {
    let mut b = earshot!()
        .redis(redis.url())
        .env("SPIN_VARIABLE_MEETING_END_GRACE_S", "1")
        .env("SPIN_VARIABLE_WEBHOOK_URL", &receiver.url())
        .env("SPIN_VARIABLE_WEBHOOK_SECRET", SECRET)
        .env("SPIN_VARIABLE_WEBHOOK_MAX_ATTEMPTS", &max_attempts.to_string())
        .env("SPIN_VARIABLE_PUBLIC_URL", "https://earshot.example");
    if let Some(a) = state_of {
        b = b.state_dir(a.state_dir());
    }
    b.start_in_process().unwrap()
}

async fn metric(server: &Earshot, name: &str) -> u64 {
    let text = reqwest::get(server.internal_url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

async fn metric_sum(servers: &[&Earshot], name: &str) -> u64 {
    let mut sum = 0;
    for s in servers {
        sum += metric(s, name).await;
    }
    sum
}

/// Replays `seen` to the receiver, as someone who captured it would.
async fn replay(receiver: &Receiver, seen: &Seen, body: Bytes) -> u16 {
    reqwest::Client::new()
        .post(receiver.url())
        .header("earshot-signature", &seen.signature)
        .header("earshot-delivery-id", &seen.delivery_id)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_is_signed_retried_after_a_500_and_replays_are_refused() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(1).await;
    let a = server(&redis, None, &receiver, 8);
    let b = server(&redis, Some(&a), &receiver, 8);
    let (_, secret) = a.dev_secrets().unwrap();

    let mut agent = ingest(&b, &secret, "hooked", "mic").await.unwrap();
    agent.send_frame(vec![0; 3_200]).await.unwrap();
    agent.close_stream().await.unwrap();

    let seen = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(seen.iter().map(|s| s.status).collect::<Vec<_>>(), vec![500, 200], "a valid delivery, answered 500, then its retry");
    let (first, retry) = (&seen[0], &seen[1]);
    assert_eq!(first.delivery_id, retry.delivery_id, "the idempotency key is stable across retries");
    assert_eq!(first.body, retry.body, "the same event");
    let gap = retry.at - first.at;
    assert!(gap >= Duration::from_millis(900), "the retry waited the first backoff step: {gap:?}");

    let event: Value = serde_json::from_slice(&retry.body).unwrap();
    assert_eq!(event["type"], "meeting.ended");
    assert_eq!(event["meeting_id"], "hooked");
    assert_eq!(event["reason"], "grace_expired");
    assert_eq!(event["delivery_id"], retry.delivery_id.as_str());
    assert_eq!(event["export_url"], "https://earshot.example/api/v1/meetings/hooked/transcript?format=json");
    assert!(event["totals"]["duration_ms"].is_u64());
    assert_eq!(event["totals"]["talk_ms"], serde_json::json!({"mic": 0, "sys": 0}), "silence only");

    // Replays: the same request again (an id already accepted), the same request once the
    // receiver's clock is past the tolerance, and a changed body under a valid signature.
    assert_eq!(replay(&receiver, retry, retry.body.clone()).await, 409);
    receiver.state.lock().unwrap().skew_s = TOLERANCE_S + 1;
    assert_eq!(replay(&receiver, first, first.body.clone()).await, 400, "stale timestamp");
    receiver.state.lock().unwrap().skew_s = 0;
    let mut forged: Value = serde_json::from_slice(&first.body).unwrap();
    forged["delivery_id"] = "forged.1".into();
    let mut forged_seen = first.clone();
    forged_seen.delivery_id = "forged.1".into();
    assert_eq!(replay(&receiver, &forged_seen, Bytes::from(forged.to_string())).await, 400, "body changed");

    // Two sweepers, one attempt each time: nothing more arrives, and /metrics agrees.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.seen().iter().filter(|s| s.delivery_id == first.delivery_id).count(), 4, "2 deliveries + 2 replays");
    let servers = [&a, &b];
    assert_eq!(metric_sum(&servers, "earshot_webhook_attempt_failures_total").await, 1);
    assert_eq!(metric_sum(&servers, "earshot_webhook_deliveries_total").await, 1);
    assert_eq!(metric_sum(&servers, "earshot_webhook_abandoned_total").await, 0);
    assert_eq!(redis.cli(&["ZCARD", "earshot:webhooks:due"]).unwrap().trim(), "0");
    assert_eq!(redis.cli(&["EXISTS", &format!("earshot:webhook:{}", first.delivery_id)]).unwrap().trim(), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_keeps_failing_is_given_up_after_the_last_attempt() {
    let redis = RedisServer::start().unwrap();
    let receiver = Receiver::start(usize::MAX).await;
    let a = server(&redis, None, &receiver, 2);
    let (_, secret) = a.dev_secrets().unwrap();
    let mut agent = ingest(&a, &secret, "down", "sys").await.unwrap();
    agent.send_frame(vec![0; 3_200]).await.unwrap();

    // Ended by request this time: the route queues the same delivery the sweeper would.
    let r = reqwest::Client::new()
        .post(a.url("/api/v1/meetings/down/end"))
        .bearer_auth(token(&secret, "ingest", &["down"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let seen = receiver.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(seen.iter().map(|s| s.status).collect::<Vec<_>>(), vec![500, 500]);
    let event: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(event["reason"], "requested");
    // Given up: no third attempt, counted, logged, removed.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(receiver.seen().len(), 2, "webhook_max_attempts = 2");
    assert_eq!(metric(&a, "earshot_webhook_attempt_failures_total").await, 2);
    assert_eq!(metric(&a, "earshot_webhook_abandoned_total").await, 1);
    assert_eq!(metric(&a, "earshot_webhook_deliveries_total").await, 0);
    assert!(a.logs().iter().any(|l| l.contains("\"webhook_abandoned\"") && l.contains("HTTP 500")), "the give-up is logged");
    assert!(!a.logs().iter().any(|l| l.contains(SECRET)), "the signing secret never reaches a log");
    assert_eq!(redis.cli(&["ZCARD", "earshot:webhooks:due"]).unwrap().trim(), "0");
    agent.close_stream().await.unwrap();
}

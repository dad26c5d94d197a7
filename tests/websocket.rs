//! WebSockets end to end: real clients, the real relay, the real ingest.wasm, a real
//! Redis. Every close code and reason is the contract in DESIGN.md.

use std::time::{Duration, Instant};

use earshot_testkit::ws::{self, connect, expect_close, next_json, next_of_type, send_binary, send_text, token, HANDSHAKE};
use earshot_testkit::{earshot, Earshot, RedisServer};
use serde_json::Value;

struct Setup {
    redis: RedisServer,
    server: Earshot,
    secret: String,
}

fn setup_with(env: &[(&str, &str)]) -> Setup {
    let redis = RedisServer::start().unwrap();
    let mut b = earshot!().redis(redis.url());
    for (k, v) in env {
        b = b.env(k, v);
    }
    let server = b.start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    Setup { redis, server, secret }
}

fn setup() -> Setup {
    setup_with(&[])
}

impl Setup {
    fn ingest_url(&self, meeting: &str, source: &str, token: &str) -> String {
        self.server.ws_url(&format!("/api/v1/ws/ingest/meetings/{meeting}?source={source}&token={token}"))
    }

    fn ingest_token(&self, meeting: &str) -> String {
        token(&self.secret, "ingest", &[meeting])
    }
}

/// Opens an ingest connection and completes the handshake.
async fn handshaken(s: &Setup, meeting: &str, source: &str) -> (ws::Ws, Value) {
    let mut c = connect(&s.ingest_url(meeting, source, &s.ingest_token(meeting)), &[]).await.unwrap();
    send_text(&mut c, HANDSHAKE).await.unwrap();
    let ack = next_of_type(&mut c, "handshake_ack").await.unwrap();
    (c, ack)
}

fn xrange(redis: &RedisServer, key: &str) -> Vec<(u64, Vec<u8>)> {
    redis.audio_frames(key).unwrap().into_iter().map(|f| (f.seq, f.pcm)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_checks_all_pass() {
    let s = setup();
    // Health (7 checks in the seed report).
    let resp = reqwest::get(s.server.url("/api/v1/health")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "1. health status");
    let h: Value = resp.json().await.unwrap();
    assert_eq!(h["redis"], "ok", "2. redis field");
    assert_eq!(h["storage"], "ok", "3. storage field");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"), "4. version field");
    assert!(["ok", "down"].contains(&h["redis"].as_str().unwrap()), "5. redis format");
    assert!(["ok", "down"].contains(&h["storage"].as_str().unwrap()), "6. storage format");
    assert_eq!(h.as_object().unwrap().len(), 3, "7. exactly the contract's fields");

    // Ingest connection + handshake + PCM.
    let (mut c, ack) = handshaken(&s, "seed", "mic").await;
    assert_eq!(ack["type"], "handshake_ack", "8. normal connection: handshake");
    let connection_id = ack["connection_id"].as_str().unwrap().to_owned();
    send_binary(&mut c, vec![1u8; 640]).await.unwrap();
    send_text(&mut c, r#"{"type":"close_stream"}"#).await.unwrap();
    let closed = next_of_type(&mut c, "closed").await.unwrap();
    assert_eq!((closed["frames"].as_u64(), closed["bytes"].as_u64()), (Some(1), Some(640)));
    let (code, _, _) = expect_close(&mut c).await.unwrap();
    assert_eq!(code, 1000);

    // Structured logs for the connection and the PCM (checks 9 and 10).
    let deadline = Instant::now() + Duration::from_secs(5);
    let has_state = |state: &str| {
        s.server.logs().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|v| {
            v["state"] == state && v["meeting_id"] == "seed" && v["source"] == "mic" && v["connection_id"] == connection_id.as_str()
        })
    };
    while !(has_state("connected") && has_state("pcm_streaming") && has_state("cleanup_complete")) {
        assert!(Instant::now() < deadline, "9/10. structured logs with meeting_id, source, connection_id:\n{}", s.server.logs().join("\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both subscriber endpoints accept a valid token (11, 12: no 403).
    let sub = token(&s.secret, "subscribe", &["seed"]);
    for path in ["/api/v1/ws/meetings/seed", "/api/v1/ws/transcript/seed"] {
        let mut c = connect(&s.server.ws_url(&format!("{path}?token={sub}")), &[]).await.expect("subscriber accepted");
        if path.contains("/meetings/") {
            assert_eq!(next_json(&mut c).await.unwrap()["type"], "snapshot", "meeting subscribers get a snapshot first");
        }
        // Still open: a keepalive is accepted silently, and nothing closes us.
        send_text(&mut c, r#"{"type":"keepalive"}"#).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut c)).await.is_err(), "{path} stays open");
    }

    // Rate limiting (13): the 6th connection for (meeting, source) within 10 s → 1013,
    // while another source of the same meeting still connects.
    let mut open = Vec::new();
    for _ in 0..4 {
        // The first connection above already counted once.
        open.push(handshaken(&s, "seed", "mic").await.0);
    }
    let mut sixth = connect(&s.ingest_url("seed", "mic", &s.ingest_token("seed")), &[]).await.unwrap();
    let (code, reason, _) = expect_close(&mut sixth).await.unwrap();
    assert_eq!((code, reason.as_str()), (1013, "Try again later"), "13. rate limit");
    let (_other, ack) = handshaken(&s, "seed", "sys").await;
    assert_eq!(ack["type"], "handshake_ack", "another source still connects");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_window_reopens() {
    let s = setup_with(&[("SPIN_VARIABLE_RATE_LIMIT_WINDOW_MS", "1500")]);
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(handshaken(&s, "rl", "mic").await.0);
    }
    let mut c = connect(&s.ingest_url("rl", "mic", &s.ingest_token("rl")), &[]).await.unwrap();
    assert_eq!(expect_close(&mut c).await.unwrap().0, 1013);
    let started = Instant::now();
    loop {
        let mut c = connect(&s.ingest_url("rl", "mic", &s.ingest_token("rl")), &[]).await.unwrap();
        send_text(&mut c, HANDSHAKE).await.unwrap();
        match next_json(&mut c).await {
            Ok(v) if v["type"] == "handshake_ack" => break,
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no connection accepted after the window");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "accepted again only once the window passed");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_close_1008_before_any_handshake() {
    let s = setup();
    let m = "m-auth";
    let hs512 = {
        use jwt_simple::prelude::*;
        let key = HS512Key::from_bytes(s.secret.as_bytes());
        let claims = Claims::with_custom_claims(serde_json::json!({"scope": "ingest", "meetings": [m]}), Duration::from_secs(600))
            .with_subject("x")
            .with_audience("earshot");
        key.authenticate(claims).unwrap()
    };
    let alg_none = {
        use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let p = serde_json::json!({"sub": "x", "aud": "earshot", "exp": now + 600, "scope": "ingest", "meetings": [m]});
        format!(
            "{}.{}.",
            Base64UrlSafeNoPadding::encode_to_string(br#"{"alg":"none","typ":"JWT"}"#).unwrap(),
            Base64UrlSafeNoPadding::encode_to_string(p.to_string().as_bytes()).unwrap()
        )
    };
    let expired = {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let issuer = earshot_auth::Issuer::from_settings(&s.secret, "earshot").unwrap();
        let req = earshot_auth::IssueRequest { sub: "x".into(), scope: "ingest".into(), meetings: vec![m.into()], ttl_s: Some(60) };
        issuer.issue(&req, now - 3600, 86_400, "old".into()).unwrap().token
    };
    let wrong_aud = {
        let issuer = earshot_auth::Issuer::from_settings(&s.secret, "other").unwrap();
        let req = earshot_auth::IssueRequest { sub: "x".into(), scope: "ingest".into(), meetings: vec![m.into()], ttl_s: Some(60) };
        issuer.issue(&req, std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(), 86_400, "aud".into()).unwrap().token
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "auth failed: missing token"),
        ("expired", Some(expired), "auth failed: token expired"),
        ("wrong secret", Some(token(&"y".repeat(40), "ingest", &[m])), "auth failed: bad signature"),
        ("wrong audience", Some(wrong_aud), "auth failed: wrong audience"),
        ("wrong scope", Some(token(&s.secret, "subscribe", &[m])), "auth failed: scope not granted: ingest"),
        ("wrong meeting", Some(token(&s.secret, "ingest", &["other"])), "auth failed: meeting not granted"),
        ("alg none", Some(alg_none), "auth failed: algorithm not allowed"),
        ("HS512", Some(hs512), "auth failed: algorithm not allowed"),
    ];
    for (name, tok, reason) in cases {
        let url = match &tok {
            Some(t) => s.ingest_url(m, "mic", t),
            None => s.server.ws_url(&format!("/api/v1/ws/ingest/meetings/{m}?source=mic")),
        };
        let mut c = connect(&url, &[]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        // Try to handshake anyway: it must never be acknowledged.
        let _ = send_text(&mut c, HANDSHAKE).await;
        let (code, got, before) = expect_close(&mut c).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((code, got.as_str()), (1008, reason), "{name}");
        assert!(before.is_empty(), "{name}: got messages before the close: {before:?}");
    }
    let logs = s.server.logs().join("\n");
    assert!(!logs.contains(&s.ingest_token(m)[..40]), "no token in logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_carriers_header_subprotocol_and_ambiguity() {
    let s = setup();
    let t = s.ingest_token("carriers");
    let base = s.server.ws_url("/api/v1/ws/ingest/meetings/carriers?source=mic");
    let auth = format!("Bearer {t}");
    let mut c = connect(&base, &[("authorization", &auth)]).await.unwrap();
    send_text(&mut c, HANDSHAKE).await.unwrap();
    assert_eq!(next_json(&mut c).await.unwrap()["type"], "handshake_ack", "Authorization header");

    let proto = format!("earshot.v1, bearer.{t}");
    let mut c = connect(&base, &[("sec-websocket-protocol", &proto)]).await.unwrap();
    send_text(&mut c, HANDSHAKE).await.unwrap();
    assert_eq!(next_json(&mut c).await.unwrap()["type"], "handshake_ack", "subprotocol");

    let mut c = connect(&format!("{base}&token={t}"), &[("authorization", &auth)]).await.unwrap();
    let (code, reason, _) = expect_close(&mut c).await.unwrap();
    assert_eq!((code, reason.as_str()), (1008, "auth failed: ambiguous token"));
    let mut c = connect(&format!("{base}&token={t}&token={t}"), &[]).await.unwrap();
    assert_eq!(expect_close(&mut c).await.unwrap().0, 1008, "repeated token parameter");
}

#[tokio::test(flavor = "multi_thread")]
async fn pcm_is_byte_exact_in_the_redis_stream_and_totals_match() {
    let s = setup();
    let (mut c, _) = handshaken(&s, "exact", "sys").await;
    let frames: Vec<Vec<u8>> = (0..50u32).map(|i| (0..(320 + i * 7)).map(|j| (i * 31 + j) as u8).collect()).collect();
    for f in &frames {
        send_binary(&mut c, f.clone()).await.unwrap();
    }
    send_text(&mut c, r#"{"type":"close_stream"}"#).await.unwrap();
    let closed = next_of_type(&mut c, "closed").await.unwrap();
    let total: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(closed["frames"].as_u64(), Some(50));
    assert_eq!(closed["bytes"].as_u64(), Some(total as u64));
    let (code, _, _) = expect_close(&mut c).await.unwrap();
    assert_eq!(code, 1000);
    let stored = xrange(&s.redis, "audio:exact:sys");
    assert_eq!(stored.len(), 50);
    for (i, (seq, pcm)) in stored.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "sequence numbers in order");
        assert_eq!(pcm, &frames[i], "frame {i} byte-exact");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn meeting_subscriber_receives_source_connected() {
    let s = setup();
    let sub = token(&s.secret, "subscribe", &["pres"]);
    let mut watcher = connect(&s.server.ws_url(&format!("/api/v1/ws/meetings/pres?token={sub}")), &[]).await.unwrap();
    // Let the subscription settle on Redis before the ingest connects.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut c, ack) = handshaken(&s, "pres", "mic").await;
    let ev = next_of_type(&mut watcher, "source_connected").await.unwrap();
    assert_eq!(ev["meeting_id"], "pres");
    assert_eq!(ev["source"], "mic");
    assert_eq!(ev["connection_id"], ack["connection_id"]);
    assert!(ev["at_ms"].as_u64().unwrap() > 0);
    send_text(&mut c, r#"{"type":"close_stream"}"#).await.unwrap();
    let ev = next_of_type(&mut watcher, "source_disconnected").await.unwrap();
    assert_eq!(ev["source"], "mic");
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_violations_get_their_close_codes() {
    let s = setup_with(&[("SPIN_VARIABLE_HANDSHAKE_TIMEOUT_MS", "1000"), ("SPIN_VARIABLE_IDLE_TIMEOUT_MS", "1500")]);
    let t = s.ingest_token("pv");
    let url = s.ingest_url("pv", "mic", &t);

    let mut c = connect(&url, &[]).await.unwrap();
    send_binary(&mut c, vec![0; 10]).await.unwrap();
    assert_eq!(expect_close(&mut c).await.unwrap().0, 1002, "binary before handshake");

    let mut c = connect(&url, &[]).await.unwrap();
    send_text(&mut c, r#"{"type":"handshake","protocol":1,"encoding":"opus","sample_rate":16000,"channels":1}"#).await.unwrap();
    assert_eq!(expect_close(&mut c).await.unwrap().0, 1003, "unsupported encoding");

    let mut c = connect(&url, &[]).await.unwrap();
    let started = Instant::now();
    let (code, reason, _) = expect_close(&mut c).await.unwrap();
    assert_eq!((code, reason.as_str()), (1002, "handshake timeout"));
    assert!(started.elapsed() < Duration::from_secs(4), "handshake timeout fired late: {:?}", started.elapsed());

    let (mut c, ack) = handshaken(&s, "pv", "sys").await;
    let max = ack["max_frame_bytes"].as_u64().unwrap() as usize;
    send_binary(&mut c, vec![0; max + 1]).await.unwrap();
    assert_eq!(expect_close(&mut c).await.unwrap().0, 1009, "frame over max_frame_bytes");

    let (mut c, _) = handshaken(&s, "pv2", "mic").await;
    send_binary(&mut c, vec![0; 640]).await.unwrap();
    let (code, reason, _) = expect_close(&mut c).await.unwrap();
    assert_eq!((code, reason.as_str()), (1000, "idle"));

    let sub = token(&s.secret, "subscribe", &["pv"]);
    let mut c = connect(&s.server.ws_url(&format!("/api/v1/ws/meetings/pv?token={sub}")), &[]).await.unwrap();
    send_binary(&mut c, vec![1, 2, 3]).await.unwrap();
    assert_eq!(expect_close(&mut c).await.unwrap().0, 1003, "binary on a subscriber route");
}

#[tokio::test(flavor = "multi_thread")]
async fn grip_publish_reaches_subscribers_across_two_relays() {
    let redis = RedisServer::start().unwrap();
    let a = earshot!().redis(redis.url()).start().unwrap();
    // Relay B shares Redis and the signing secret (same state dir → same dev secrets).
    let b = earshot!().redis(redis.url()).state_dir(a.state_dir()).start().unwrap();
    let (_, secret) = a.dev_secrets().unwrap();
    let sub = token(&secret, "subscribe", &["fan"]);
    let mut on_b = connect(&b.ws_url(&format!("/api/v1/ws/meetings/fan?token={sub}")), &[]).await.unwrap();
    let mut on_a = connect(&a.ws_url(&format!("/api/v1/ws/meetings/fan?token={sub}")), &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = serde_json::json!({"items": [{"channel": "meeting:fan", "formats": {"ws-message": {"content": "{\"type\":\"hello\"}"}}}]});
    let resp = reqwest::Client::new().post(a.internal_url("/publish/")).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(next_of_type(&mut on_b, "hello").await.unwrap()["type"], "hello", "published on A, received on B");
    assert_eq!(next_of_type(&mut on_a, "hello").await.unwrap()["type"], "hello", "and on A");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_every_client_with_1001() {
    let mut s = setup();
    let (mut ingest, _) = handshaken(&s, "bye", "mic").await;
    let sub = token(&s.secret, "subscribe", &["bye"]);
    let mut watcher = connect(&s.server.ws_url(&format!("/api/v1/ws/meetings/bye?token={sub}")), &[]).await.unwrap();
    let status = tokio::task::block_in_place(|| s.server.sigterm(Duration::from_secs(15))).unwrap();
    assert!(status.success(), "exit {status}");
    for c in [&mut ingest, &mut watcher] {
        let (code, reason, _) = expect_close(c).await.unwrap();
        assert_eq!((code, reason.as_str()), (1001, "relay shutting down"));
    }
}

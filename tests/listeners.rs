//! Public and internal listeners (issue 9): `/publish/` and `/metrics` exist only on
//! the internal listener; the public port refuses WebSocket-over-HTTP event posts
//! unless a GRIP proxy is configured in front. Runs the server library in-process.

use earshot_testkit::ws::{connect, next_json, token};
use earshot_testkit::{earshot, RedisServer};

/// A WebSocket-over-HTTP OPEN, as Pushpin would post it.
fn ws_over_http_open(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("Content-Type", "application/websocket-events")
        .header("Connection-Id", "forged-1")
        .body("OPEN\r\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_endpoints_are_not_on_the_public_port() {
    let server = earshot!().start_in_process().unwrap();
    let client = reqwest::Client::new();
    assert_ne!(server.addr().port(), server.internal_addr().port());

    // Public: 404 for both, whatever the method.
    let publish = serde_json::json!({"items": [{"channel": "meeting:x", "formats": {"ws-message": {"content": "hi"}}}]});
    let resp = client.post(server.url("/publish/")).json(&publish).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404, "public /publish/");
    let resp = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404, "public /metrics");
    // A WebSocket-over-HTTP event post on the public port reaches no component.
    let resp = ws_over_http_open(&client, &server.url("/api/v1/ws/ingest/meetings/m1?source=mic")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404, "public WebSocket-over-HTTP");
    // The app's own routes are still public.
    let resp = client.get(server.url("/api/v1/ping")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Internal: both work, and the app's routes are not there.
    let resp = client.get(server.internal_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("earshot_ws_sessions_open"));
    let resp = client.post(server.internal_url("/publish/")).json(&publish).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "internal /publish/");
    let resp = client.get(server.internal_url("/api/v1/ping")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404, "the app is not on the internal listener");
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_on_the_internal_listener_reaches_a_subscriber() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start_in_process().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let meeting = "listeners-fanout";
    let sub = token(&secret, "subscribe", &[meeting]);
    let mut ws = connect(&server.ws_url(&format!("/api/v1/ws/meetings/{meeting}?token={sub}")), &[]).await.unwrap();
    // The snapshot comes first: the subscription is in place once it arrives.
    let first = next_json(&mut ws).await.unwrap();
    assert_eq!(first["type"], "snapshot", "{first}");
    let body = serde_json::json!({"items": [{"channel": format!("meeting:{meeting}"),
        "formats": {"ws-message": {"content": "{\"type\":\"note\",\"text\":\"via internal\"}"}}}]});
    let resp = reqwest::Client::new().post(server.internal_url("/publish/")).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let got = next_json(&mut ws).await.unwrap();
    assert_eq!(got["text"], "via internal", "{got}");
}

/// A `Grip-Sig` as Pushpin would make it, signed with a key the server does not use.
fn forged_grip_sig() -> String {
    use jwt_simple::prelude::*;
    let key = HS256Key::from_bytes(&[7u8; 32]);
    key.authenticate(Claims::create(Duration::from_secs(3600)).with_issuer("pushpin")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_over_http_on_the_public_port_only_when_asked() {
    // For Pushpin in front: the posts reach the components, whose Grip-Sig check refuses
    // anything the configured key did not sign — forged events and `Meta-*` state alike.
    let mut server = earshot!().env("EARSHOT_PUBLIC_WS_OVER_HTTP", "true").start().unwrap();
    let client = reqwest::Client::new();
    let url = server.url("/api/v1/ws/ingest/meetings/m1?source=mic");
    let error = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        (status, body["error"].as_str().unwrap_or_default().to_owned())
    };
    let unsigned = ws_over_http_open(&client, &url).send().await.unwrap();
    assert_eq!(error(unsigned).await, (401, "missing Grip-Sig".to_owned()));
    let forged_state = client
        .post(&url)
        .header("Content-Type", "application/websocket-events")
        .header("Connection-Id", "forged")
        .header("Meta-State", "pcm_streaming")
        .header("Meta-Meeting", "m1")
        .header("Meta-Source", "mic")
        .body("BINARY 4\r\nabcd\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(error(forged_state).await, (401, "missing Grip-Sig".to_owned()));
    let other_key = ws_over_http_open(&client, &url).header("Grip-Sig", forged_grip_sig()).send().await.unwrap();
    assert_eq!(other_key.status().as_u16(), 401, "a Grip-Sig signed by another key");
    let plain_get = client.get(&url).send().await.unwrap();
    assert_eq!(error(plain_get).await, (401, "missing Grip-Sig".to_owned()));
    server.sigterm(std::time::Duration::from_secs(15)).unwrap();
}

//! Pushpin interop: Debian's pushpin in front of Earshot's HTTP (`over_http` route)
//! drives the very same ingest component — so Pushpin or Fastly Fanout can replace
//! Earshot's relay with the components unchanged.

use std::time::Duration;

use earshot_testkit::pushpin::Pushpin;
use earshot_testkit::ws::{connect, expect_close, next_json, next_of_type, send_binary, send_text, token, HANDSHAKE};
use earshot_testkit::{earshot, RedisServer};

#[tokio::test(flavor = "multi_thread")]
async fn pushpin_in_front_of_earshot_runs_ingest_and_delivers_publishes() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let pushpin = Pushpin::start(server.addr()).unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let base = format!("ws://127.0.0.1:{}", pushpin.http_port());

    let ingest = token(&secret, "ingest", &["pp"]);
    let mut c = connect(&format!("{base}/api/v1/ws/ingest/meetings/pp?source=mic&token={ingest}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pushpin.log_text()));
    send_text(&mut c, HANDSHAKE).await.unwrap();
    let ack = next_of_type(&mut c, "handshake_ack").await.unwrap();
    assert!(ack["connection_id"].as_str().is_some_and(|s| !s.is_empty()));
    send_binary(&mut c, vec![7u8; 640]).await.unwrap();
    send_text(&mut c, r#"{"type":"close_stream"}"#).await.unwrap();
    let closed = next_of_type(&mut c, "closed").await.unwrap();
    assert_eq!((closed["frames"].as_u64(), closed["bytes"].as_u64()), (Some(1), Some(640)));
    assert_eq!(expect_close(&mut c).await.unwrap().0, 1000);

    // Auth is enforced through Pushpin too.
    let mut bad = connect(&format!("{base}/api/v1/ws/ingest/meetings/pp?source=mic"), &[]).await.unwrap();
    let (code, reason, _) = expect_close(&mut bad).await.unwrap();
    assert_eq!((code, reason.as_str()), (1008, "auth failed: missing token"));

    // A subscriber through Pushpin receives what is published to Pushpin.
    let sub = token(&secret, "subscribe", &["pp"]);
    let mut watcher = connect(&format!("{base}/api/v1/ws/meetings/pp?token={sub}"), &[]).await.unwrap();
    let body = serde_json::json!({"items": [{"channel": "meeting:pp", "formats": {"ws-message": {"content": "{\"type\":\"via-pushpin\"}"}}}]});
    let publish = format!("http://127.0.0.1:{}/publish/", pushpin.publish_port());
    // The subscription is registered asynchronously inside Pushpin: publish until seen.
    let mut got = None;
    for _ in 0..50 {
        reqwest::Client::new().post(&publish).json(&body).send().await.unwrap();
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(200), next_json(&mut watcher)).await {
            got = Some(v);
            break;
        }
    }
    assert_eq!(got.expect("a publish reached the subscriber through pushpin")["type"], "via-pushpin");
}

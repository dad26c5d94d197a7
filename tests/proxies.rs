//! Real client addresses behind proxies (issue 13): with loopback as a trusted proxy
//! (the test is the proxy), the per-IP cap counts each client named by
//! `X-Forwarded-For`, `Forwarded` or a PROXY protocol v1/v2 header, and the refusal log
//! names that client; from an untrusted peer the same headers change nothing.

use std::net::SocketAddr;
use std::time::Duration;

use earshot_testkit::raw_ws::upgrade_request;
use earshot_testkit::ws::{connect, token, Ws};
use earshot_testkit::{earshot, Earshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

/// A server allowing two WebSockets per client address, trusting `trusted`.
fn server(trusted: &str) -> Earshot {
    earshot!().env("EARSHOT_MAX_CONNECTIONS_PER_IP", "2").env("EARSHOT_TRUSTED_PROXIES", trusted).start().unwrap()
}

fn subscriber_url(server: &Earshot) -> String {
    let (_, secret) = server.dev_secrets().unwrap();
    server.ws_url(&format!("/api/v1/ws/meetings/px?token={}", token(&secret, "subscribe", &["px"])))
}

/// Opens a WebSocket with `headers`; Ok(socket) or Err(HTTP status of the refusal).
async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await.expect("upgrade answered in time") {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// A raw upgrade preceded by `prefix` (a PROXY header); returns the socket (kept open)
/// and the status line.
async fn raw_upgrade(addr: SocketAddr, prefix: &[u8], path: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(&upgrade_request(&addr.to_string(), path, "13"));
    s.write_all(&bytes).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte)).await.expect("status line in time").unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).trim_end().to_owned())
}

fn proxy_v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_the_cap_counts_each_forwarded_client() {
    let server = server("127.0.0.1/32,::1");
    let url = subscriber_url(&server);

    // Five clients through one proxy address: each its own place (the cap is two).
    let mut held = Vec::new();
    for i in 1..=5 {
        let xff = format!("198.51.100.{i}");
        held.push(open(&url, &[("x-forwarded-for", &xff)]).await.unwrap_or_else(|s| panic!("client {xff} refused {s}")));
    }
    // One client's third socket is refused, whichever header names it; a hop the
    // client forged on the left does not help it.
    held.push(open(&url, &[("x-forwarded-for", "198.51.100.9")]).await.unwrap());
    held.push(open(&url, &[("forwarded", "for=198.51.100.9;proto=http")]).await.unwrap());
    assert_eq!(open(&url, &[("x-forwarded-for", "203.0.113.66, 198.51.100.9")]).await.err(), Some(429));
    assert_eq!(open(&url, &[("forwarded", r#"for="198.51.100.9:4711""#)]).await.err(), Some(429));
    // The refusal is logged with the forwarded client, not the proxy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    assert!(
        logs.iter().any(|l| l.contains("websocket refused before upgrade") && l.contains("198.51.100.9")),
        "no refusal line naming the client:\n{}",
        logs.join("\n")
    );
    assert!(!logs.iter().any(|l| l.contains("websocket refused before upgrade") && l.contains("127.0.0.1")));

    // PROXY protocol from the trusted proxy: v1 twice, then v2 for the same client.
    let path = url.trim_start_matches(&format!("ws://{}", server.addr())).to_owned();
    let (_a, status) = raw_upgrade(server.addr(), b"PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n", &path).await;
    assert!(status.starts_with("HTTP/1.1 101"), "PROXY v1 #1: {status}");
    let (_b, status) = raw_upgrade(server.addr(), b"PROXY TCP4 203.0.113.5 127.0.0.1 5556 80\r\n", &path).await;
    assert!(status.starts_with("HTTP/1.1 101"), "PROXY v1 #2: {status}");
    let (_c, status) = raw_upgrade(server.addr(), &proxy_v2_tcp4([203, 0, 113, 5], 5557), &path).await;
    assert!(status.starts_with("HTTP/1.1 429"), "PROXY v2, same client, over the cap: {status}");
    let (_d, status) = raw_upgrade(server.addr(), &proxy_v2_tcp4([203, 0, 113, 6], 5558), &path).await;
    assert!(status.starts_with("HTTP/1.1 101"), "PROXY v2, another client: {status}");
    // A trusted proxy may also send no PROXY header at all.
    let _plain = connect(&url, &[("x-forwarded-for", "198.51.100.77")]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn from_an_untrusted_peer_forged_headers_change_nothing() {
    // Loopback is not among the trusted proxies.
    let server = server("192.0.2.0/24");
    let url = subscriber_url(&server);
    let _a = open(&url, &[("x-forwarded-for", "198.51.100.1")]).await.unwrap();
    let _b = open(&url, &[("forwarded", "for=198.51.100.2")]).await.unwrap();
    assert_eq!(open(&url, &[("x-forwarded-for", "198.51.100.3")]).await.err(), Some(429), "a forged X-Forwarded-For got past the cap");
    assert_eq!(open(&url, &[("forwarded", "for=198.51.100.4")]).await.err(), Some(429), "a forged Forwarded got past the cap");
    assert_eq!(open(&url, &[]).await.err(), Some(429));
    let logs = server.logs();
    assert!(logs.iter().any(|l| l.contains("websocket refused before upgrade") && l.contains("127.0.0.1")), "{}", logs.join("\n"));

    // A PROXY header from an untrusted peer is not read: it is a malformed request.
    let path = url.trim_start_matches(&format!("ws://{}", server.addr())).to_owned();
    let (_s, status) = raw_upgrade(server.addr(), b"PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n", &path).await;
    assert!(status.is_empty() || status.starts_with("HTTP/1.1 400"), "untrusted PROXY header answered {status:?}");
}

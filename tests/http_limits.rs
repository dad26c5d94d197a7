//! HTTP hygiene on the public listener (issue 13), tried with raw sockets as a
//! slowloris or a careless client would: a half-sent header is closed at the deadline,
//! an idle keep-alive connection at its timeout, a 200 KB header gets 431, a declared
//! 100 MB body gets 413 before it is sent (embedded and with `--backend`), and
//! connections not yet upgraded are capped while upgraded WebSockets are not counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use earshot_testkit::earshot;
use earshot_testkit::ws::{connect, token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any exchange here may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(15);

/// Reads until the server closes (EOF or reset); returns what arrived and when it closed.
async fn read_until_closed(s: &mut TcpStream) -> (String, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {WAIT:?}; got {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response head (to the blank line) off a kept-alive connection.
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte)).await.expect("response in time").expect("read");
        assert!(n == 1, "closed mid-response: {:?}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    String::from_utf8(got).unwrap()
}

/// Reads the body of a response with `head` (a declared length, or chunked).
async fn read_body(s: &mut TcpStream, head: &str) {
    let lower = head.to_ascii_lowercase();
    if let Some(len) = lower.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())) {
        let mut body = vec![0u8; len];
        tokio::time::timeout(WAIT, s.read_exact(&mut body)).await.unwrap().unwrap();
        return;
    }
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"0\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte)).await.expect("body in time").expect("read");
        assert!(n == 1, "closed mid-body");
        got.push(byte[0]);
    }
}

fn ping(addr: SocketAddr) -> String {
    format!("GET /api/v1/ping HTTP/1.1\r\nHost: {addr}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_and_silent_requests_are_closed_at_the_header_deadline() {
    let server = earshot!().env("EARSHOT_HEADER_READ_TIMEOUT_MS", "1000").start().unwrap();
    let addr = server.addr();

    // Half a header, then nothing.
    let mut half = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    half.write_all(format!("GET /api/v1/ping HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes()).await.unwrap();
    // A silent one, and one dripping a byte every 300 ms (each byte inside any per-read timeout).
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut drip = TcpStream::connect(addr).await.unwrap();
    let dripper = tokio::spawn(async move {
        for b in b"GET /api/v1/ping HTTP/1.1\r\nHost: x\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if drip.write_all(&[*b]).await.is_err() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("the drip-fed header was never cut off");
    });

    let (got, closed) = read_until_closed(&mut half).await;
    let after = closed - opened;
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(5), "half-sent request closed after {after:?}");
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    let (_, closed) = read_until_closed(&mut silent).await;
    assert!(closed - opened < Duration::from_secs(5), "silent connection closed after {:?}", closed - opened);
    let cut = dripper.await.unwrap();
    assert!(cut - opened < Duration::from_secs(6), "drip-fed header cut after {:?}", cut - opened);

    // A whole request inside the deadline is answered, and the next one on the same
    // connection too.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        ok.write_all(ping(addr).as_bytes()).await.unwrap();
        let head = read_head(&mut ok).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        read_body(&mut ok, &head).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_at_its_timeout() {
    let server = earshot!().env("EARSHOT_KEEP_ALIVE_TIMEOUT_MS", "1500").start().unwrap();
    let addr = server.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(ping(addr).as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    read_body(&mut s, &head).await;
    let answered = Instant::now();
    // Still open well inside the timeout.
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.write_all(ping(addr).as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    read_body(&mut s, &head).await;
    let answered_again = Instant::now();
    let (_, closed) = read_until_closed(&mut s).await;
    let idle = closed - answered_again;
    assert!(idle >= Duration::from_millis(1400) && idle < Duration::from_secs(5), "idle connection closed after {idle:?}");
    assert!(closed - answered >= Duration::from_millis(2000), "the second request restarted the idle clock");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_kb_header_gets_431_and_a_16_kib_one_is_served() {
    let server = earshot!().start().unwrap();
    let addr = server.addr();

    let mut s = TcpStream::connect(addr).await.unwrap();
    let big = format!("GET /api/v1/ping HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let (mut r, mut w) = s.split();
    // The server may answer and close before it has read everything: write and read at once.
    let (_, (got, _)) = tokio::join!(async { let _ = w.write_all(big.as_bytes()).await; }, read_until_closed_half(&mut r));
    assert!(got.starts_with("HTTP/1.1 431"), "200 KB header answered {got:?}");

    // Just under the 16 KiB cap: served.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let fits = format!("GET /api/v1/ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Fits: {}\r\n\r\n", "a".repeat(15 * 1024));
    s.write_all(fits.as_bytes()).await.unwrap();
    let (got, _) = read_until_closed(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

async fn read_until_closed_half(r: &mut tokio::net::tcp::ReadHalf<'_>) -> (String, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, r.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Declares a 100 MB body and sends none of it: the answer must come anyway.
async fn declared_100_mb(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    read_head(&mut s).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_100_mb_body_gets_413_before_it_is_sent_embedded_and_through_a_backend() {
    let app = earshot!().start().unwrap();
    let head = declared_100_mb(app.addr(), "/api/v1/meetings/m1/transcript").await;
    assert!(head.starts_with("HTTP/1.1 413"), "embedded: {head}");
    let head = declared_100_mb(app.addr(), "/api/v1/auth/token").await;
    assert!(head.starts_with("HTTP/1.1 413"), "embedded auth: {head}");

    // A relay in front of a remote app (`--backend`): refused at the relay, not hung.
    let relay = earshot!().env("EARSHOT_BACKEND", &app.url("")).start().unwrap();
    let head = declared_100_mb(relay.addr(), "/api/v1/meetings/m1/transcript").await;
    assert!(head.starts_with("HTTP/1.1 413"), "through --backend: {head}");
    // The relay still forwards what fits.
    let mut s = TcpStream::connect(relay.addr()).await.unwrap();
    s.write_all(ping(relay.addr()).as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "through --backend: {head}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_not_yet_upgraded_are_capped_upgraded_ones_are_not() {
    let server = earshot!()
        .env("EARSHOT_MAX_PENDING_CONNECTIONS", "2")
        .env("EARSHOT_HEADER_READ_TIMEOUT_MS", "3000")
        .start()
        .unwrap();
    let addr = server.addr();
    let idle_a = TcpStream::connect(addr).await.unwrap();
    let _idle_b = TcpStream::connect(addr).await.unwrap();
    // Both places are taken (give the accept loop a moment to take them).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(ping(addr).as_bytes()).await.unwrap();
    let (got, _) = read_until_closed(&mut third).await;
    assert!(got.starts_with("HTTP/1.1 503") && got.contains("retry-after: 5"), "over the cap: {got:?}");

    // A place frees when a pending connection ends.
    drop(idle_a);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /api/v1/ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let (got, _) = read_until_closed(&mut s).await;
        if got.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the cap never freed a place: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(_idle_b);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Upgraded WebSockets leave the pending count: three of them under a cap of two.
    let (_, secret) = server.dev_secrets().unwrap();
    let url = server.ws_url(&format!("/api/v1/ws/meetings/pend?token={}", token(&secret, "subscribe", &["pend"])));
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(connect(&url, &[]).await.unwrap_or_else(|e| panic!("websocket {i}: {e:#}")));
    }
}

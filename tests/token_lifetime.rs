//! Token lifetime on live sockets, end to end: real relays, the real .wasm components, a real
//! Redis, real WebSocket clients. A connection is closed 1008 at its token's `exp` unless it
//! refreshed first; a bad refresh closes it with the reason; revoking a `jti` closes every
//! socket holding it within a second on every relay sharing the Redis (and on the one relay
//! without Redis).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use earshot_agent::{Input, Pacing, PcmFormat};
use earshot_auth::{IssueRequest, Issuer};
use earshot_testkit::ws::{self, connect, expect_close, ingest_path, next_of_type, send_text, Ws};
use earshot_testkit::{earshot, Earshot, RedisServer};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "token-lifetime-test-secret-0123456789abcdef";
const ADMIN_KEY: &str = "token-lifetime-test-admin-key";
const EXPIRED: &str = "auth failed: token expired";
const REVOKED: &str = "auth failed: token revoked";
/// How late after `exp` (or after a revocation) a close may arrive: the contract says "within
/// 1 s" for revocation; expiry fires on the relay's own timer, so the slack is the same.
const CLOSE_SLACK: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A token of `sub` for meeting `m1` with `scope`, `jti` and `ttl_s`; returns it and its `exp`.
fn mint(sub: &str, scope: &str, meetings: &[&str], jti: &str, ttl_s: u64) -> (String, u64) {
    let issuer = Issuer::from_settings(SECRET, "earshot").unwrap();
    let request = IssueRequest {
        sub: sub.into(),
        scope: scope.into(),
        meetings: meetings.iter().map(|m| m.to_string()).collect(),
        ttl_s: Some(ttl_s),
    };
    let issued = issuer.issue(&request, now_ms() / 1000, 86_400, jti.into()).unwrap();
    (issued.token, issued.exp)
}

/// An in-process `earshot up` with the test's secrets, on `redis` if given. Each keeps its
/// own key-value store, so relay b never sees the revocation record relay a's auth wrote:
/// only the revocation notice reaches it.
fn server(redis: Option<&RedisServer>) -> Earshot {
    let mut b = earshot!().env("SPIN_VARIABLE_JWT_SECRET", SECRET).env("SPIN_VARIABLE_ADMIN_KEY", ADMIN_KEY);
    if let Some(r) = redis {
        b = b.redis(r.url());
    }
    b.start_in_process().unwrap()
}

/// A subscriber on the meeting route, past its snapshot.
async fn open_viewer(server: &Earshot, token: &str) -> Ws {
    let mut ws = connect(&server.ws_url("/api/v1/ws/meetings/m1"), &[("authorization", &format!("Bearer {token}"))]).await.unwrap();
    next_of_type(&mut ws, "snapshot").await.unwrap();
    ws
}

/// A handshaken capture agent on `m1`'s mic.
async fn open_agent(server: &Earshot, token: &str, source: &str) -> ws::Agent {
    ws::handshaken(&server.ws_url(&ingest_path("m1", source, token))).await.unwrap()
}

/// The close a capture agent gets while it keeps streaming 20 ms frames.
async fn agent_close(agent: &mut ws::Agent) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + ws::WS_WAIT;
    loop {
        tokio::select! {
            event = agent.next_event() => match event {
                Err(earshot_agent::AgentError::Closed { code, reason, .. }) => return (code, reason),
                Err(e) => panic!("agent failed without a close: {e}"),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if let Err(earshot_agent::AgentError::Closed { code, reason, .. }) = agent.send_frame(vec![0; 640]).await {
                    return (code, reason);
                }
            }
            _ = tokio::time::sleep_until(deadline) => panic!("agent not closed within {:?}", ws::WS_WAIT),
        }
    }
}

/// Reads `ws` until `deadline`; fails on a close (or a dropped connection).
async fn stays_open_until(ws: &mut Ws, deadline: tokio::time::Instant) {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("connection ended: {other:?}"),
        }
    }
}

/// `POST /api/v1/auth/revoke {"jti"}` with the admin key, over a plain HTTP/1.0 socket (no chunked body to decode).
async fn revoke(server: &Earshot, jti: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({ "jti": jti }).to_string();
    let request = format!(
        "POST /api/v1/auth/revoke HTTP/1.0\r\nhost: {}\r\nauthorization: Bearer {ADMIN_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        server.addr(),
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(ws::WS_WAIT, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_and_an_agent_with_3_second_tokens_are_closed_1008_at_expiry() {
    let redis = RedisServer::start().unwrap();
    let server = server(Some(&redis));
    let (viewer_token, viewer_exp) = mint("viewer", "subscribe", &["m1"], "jti-viewer", 3);
    let (agent_token, agent_exp) = mint("agent", "ingest", &["m1"], "jti-agent", 3);
    let mut viewer = open_viewer(&server, &viewer_token).await;
    let mut agent = open_agent(&server, &agent_token, "mic").await;

    let (agent_closed, viewer_closed) = tokio::join!(
        async {
            let close = agent_close(&mut agent).await;
            (close, now_ms())
        },
        async {
            let (code, reason, _) = expect_close(&mut viewer).await.unwrap();
            ((code, reason), now_ms())
        }
    );
    for ((close, at), exp) in [(agent_closed, agent_exp), (viewer_closed, viewer_exp)] {
        assert_eq!(close, (1008, EXPIRED.to_owned()));
        assert!(at >= exp * 1000, "closed {} ms before exp", exp * 1000 - at);
        assert!(at <= exp * 1000 + CLOSE_SLACK.as_millis() as u64, "closed {} ms after exp", at - exp * 1000);
    }
}

/// Counts the refreshes `stream_input` reports.
#[derive(Default)]
struct Refreshes(Vec<u64>);

impl earshot_agent::Progress for Refreshes {
    fn refreshed(&mut self, exp: u64) {
        self.0.push(exp);
    }
    fn refresh_failed(&mut self, why: &str) {
        panic!("refresh failed: {why}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_refresh_a_subscriber_and_an_agent_stay_open_past_exp() {
    let redis = RedisServer::start().unwrap();
    let server = server(Some(&redis));

    // The subscriber refreshes by hand.
    let (viewer_token, viewer_exp) = mint("viewer", "subscribe", &["m1"], "jti-v1", 3);
    let mut viewer = open_viewer(&server, &viewer_token).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (fresh, fresh_exp) = mint("viewer", "subscribe", &["m1"], "jti-v2", 60);
    send_text(&mut viewer, &json!({"type": "refresh", "token": fresh}).to_string()).await.unwrap();
    let refreshed = next_of_type(&mut viewer, "refreshed").await.unwrap();
    assert_eq!(refreshed, json!({"type": "refreshed", "exp": fresh_exp}));

    // The agent refreshes from a token source, on its own schedule (after about 2 s).
    let (agent_token, agent_exp) = mint("agent", "ingest", &["m1"], "jti-a1", 3);
    let mut agent = open_agent(&server, &agent_token, "mic").await;
    let mut n = 0;
    let source = move || {
        n += 1;
        Ok(mint("agent", "ingest", &["m1"], &format!("jti-a-fresh-{n}"), 60).0)
    };
    assert!(agent.set_token_source(&agent_token, Box::new(source)));
    let seconds = 5;
    let pcm = vec![0u8; 32_000 * seconds];
    let input = Input { format: PcmFormat::MONO_16K, data_len: Some(pcm.len() as u64), reader: Box::new(std::io::Cursor::new(pcm)) };
    let mut refreshes = Refreshes::default();
    let viewer_deadline = tokio::time::Instant::now() + Duration::from_millis((viewer_exp * 1000 + 2_000).saturating_sub(now_ms()));
    let (outcome, ()) = tokio::join!(
        earshot_agent::stream_input(agent, input, Pacing::new(1.0, 20).unwrap(), &mut refreshes, std::future::pending()),
        stays_open_until(&mut viewer, viewer_deadline),
    );
    let outcome = outcome.unwrap();
    assert!(now_ms() > agent_exp * 1000 + 1_000, "the stream outlived its first token");
    assert!(outcome.matches(), "{outcome}");
    assert_eq!(refreshes.0.len(), 1, "one refresh for a 3 s token: {:?}", refreshes.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_refresh_closes_1008_with_the_reason() {
    let redis = RedisServer::start().unwrap();
    let server = server(Some(&redis));

    let (token, _) = mint("viewer", "subscribe", &["m1"], "jti-b1", 60);
    let mut viewer = open_viewer(&server, &token).await;
    let (other, _) = mint("mallory", "subscribe", &["m1"], "jti-b2", 60);
    send_text(&mut viewer, &json!({"type": "refresh", "token": other}).to_string()).await.unwrap();
    let (code, reason, _) = expect_close(&mut viewer).await.unwrap();
    assert_eq!((code, reason.as_str()), (1008, "auth failed: refresh for another subject"));

    let (token, _) = mint("agent", "ingest", &["m1"], "jti-b3", 60);
    let mut agent = open_agent(&server, &token, "mic").await;
    let (elsewhere, _) = mint("agent", "ingest", &["m2"], "jti-b4", 60);
    agent.refresh(&elsewhere).await.unwrap();
    assert_eq!(agent_close(&mut agent).await, (1008, "auth failed: meeting not granted".to_owned()));

    let (token, _) = mint("agent", "ingest", &["m1"], "jti-b5", 60);
    let mut agent = open_agent(&server, &token, "sys").await;
    agent.refresh("not-a-token").await.unwrap();
    assert_eq!(agent_close(&mut agent).await, (1008, "auth failed: malformed token".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_tokens_sockets_close_within_1s_on_both_relays() {
    let redis = RedisServer::start().unwrap();
    let a = server(Some(&redis));
    let b = server(Some(&redis));
    let (shared, _) = mint("shared", "ingest subscribe", &["m1"], "jti-revoke-me", 600);
    let (kept, _) = mint("shared", "ingest subscribe", &["m1"], "jti-keep", 600);

    let mut on_a = open_viewer(&a, &shared).await;
    let mut on_b = connect(&b.ws_url("/api/v1/ws/transcript/m1"), &[("authorization", &format!("Bearer {shared}"))]).await.unwrap();
    let mut agent_on_b = open_agent(&b, &shared, "mic").await;
    let mut keeper_on_a = open_viewer(&a, &kept).await;
    let mut refresher_on_b = open_viewer(&b, &kept).await;

    let revoked_at = Instant::now();
    let reply = revoke(&a, "jti-revoke-me").await;
    assert_eq!(reply["broadcast"], true, "{reply}");
    let (agent_close, a_close, b_close) = tokio::join!(agent_close(&mut agent_on_b), expect_close(&mut on_a), expect_close(&mut on_b));
    let took = revoked_at.elapsed();
    assert_eq!(agent_close, (1008, REVOKED.to_owned()), "the agent on relay b");
    let (a_close, b_close) = (a_close.unwrap(), b_close.unwrap());
    assert_eq!((a_close.0, a_close.1.as_str()), (1008, REVOKED), "the subscriber on relay a");
    assert_eq!((b_close.0, b_close.1.as_str()), (1008, REVOKED), "the subscriber on relay b");
    assert!(took <= CLOSE_SLACK, "closed {took:?} after the revocation");

    // Another token of the same subject is untouched; a revoked one is no refresh, even on
    // relay b, whose component has no revocation record of it (the relay remembers the
    // notice); nor can it open a connection again there.
    send_text(&mut refresher_on_b, &json!({"type": "refresh", "token": shared}).to_string()).await.unwrap();
    let (code, reason, _) = expect_close(&mut refresher_on_b).await.unwrap();
    assert_eq!((code, reason.as_str()), (1008, REVOKED));
    let mut again = connect(&b.ws_url("/api/v1/ws/meetings/m1"), &[("authorization", &format!("Bearer {shared}"))]).await.unwrap();
    let (code, reason, _) = expect_close(&mut again).await.unwrap();
    assert_eq!((code, reason.as_str()), (1008, REVOKED));
    stays_open_until(&mut keeper_on_a, tokio::time::Instant::now() + Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_the_local_relay_closes_a_revoked_tokens_socket() {
    let server = server(None);
    let (token, _) = mint("viewer", "subscribe", &["m1"], "jti-local", 600);
    let mut ws = open_viewer(&server, &token).await;
    let revoked_at = Instant::now();
    let reply = revoke(&server, "jti-local").await;
    assert_eq!(reply["broadcast"], true, "{reply}");
    let (code, reason, _) = expect_close(&mut ws).await.unwrap();
    assert_eq!((code, reason.as_str()), (1008, REVOKED));
    assert!(revoked_at.elapsed() <= CLOSE_SLACK, "closed {:?} after the revocation", revoked_at.elapsed());
}

/// Longest `earshot stream` of a few seconds of real-time audio may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// `earshot stream` of `seconds` of silence at real time into `m1` on `server` with `flags`;
/// returns (exit code, stdout, stderr).
fn stream_cli(server: &Earshot, seconds: usize, flags: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("silence.wav");
    earshot_testkit::speech::write_wav(&wav, &vec![0u8; 32_000 * seconds]).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_earshot"))
        .arg("stream")
        .arg(&wav)
        .args(["--meeting", "m1", "--url", &server.ws_url("")])
        .args(flags)
        .env_remove("EARSHOT_TOKEN")
        .env_remove("EARSHOT_TOKEN_COMMAND")
        .env_remove("SPIN_VARIABLE_JWT_SECRET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + CLI_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("earshot stream did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn earshot_stream_refreshes_its_3_second_tokens_and_outlives_them() {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let state = server.state_dir().to_str().unwrap().to_owned();

    // Minted with the local secret, refreshed by minting again.
    let (code, stdout, stderr) = stream_cli(&server, 5, &["--token-ttl", "3", "--state-dir", &state]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("token refreshed"), "{stderr}");
    assert!(stdout.contains(": match"), "{stdout}");

    // From a token command (here `earshot token` itself).
    let command = format!("{} token --scope ingest --meeting m1 --ttl 3 --state-dir {state}", env!("CARGO_BIN_EXE_earshot"));
    let (code, stdout, stderr) = stream_cli(&server, 5, &["--token-command", &command]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("token refreshed"), "{stderr}");

    // A given token without a command is not refreshed: closed at its exp, and told so.
    let (_, secret) = server.dev_secrets().unwrap();
    let token = earshot_testkit::ws::token_with_ttl(&secret, "ingest", &["m1"], 3);
    let (code, stdout, stderr) = stream_cli(&server, 5, &["--token", &token]);
    assert_eq!(code, 5, "closed by the server: {stdout}\n{stderr}");
    assert!(stdout.contains("closed by server: 1008 auth failed: token expired"), "{stdout}");
    assert!(stderr.contains("pass --token-command"), "{stderr}");
}

/// Serves `GET /token` with a fresh 60 s `subscribe` token of `viewer` for `m1` (CORS for
/// `origin`, credentials allowed); returns its URL and how many tokens it gave out.
async fn token_server(origin: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let cors = format!(
                "access-control-allow-origin: {origin}\r\naccess-control-allow-credentials: true\r\naccess-control-allow-headers: cache-control, pragma\r\n"
            );
            let response = if request.starts_with(b"OPTIONS") {
                format!("HTTP/1.1 204 No Content\r\n{cors}access-control-allow-methods: GET\r\nconnection: close\r\n\r\n")
            } else {
                count.fetch_add(1, Ordering::Relaxed);
                let n = count.load(Ordering::Relaxed);
                let body = json!({ "token": mint("viewer", "subscribe", &["m1"], &format!("jti-page-{n}"), 60).0 }).to_string();
                format!("HTTP/1.1 200 OK\r\n{cors}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
            };
            let _ = tcp.write_all(response.as_bytes()).await;
        }
    });
    (url, served)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_renews_its_token_on_both_sockets_before_exp() {
    let driver_dir = earshot_testkit::repo_root().join("tests/browser");
    assert!(
        driver_dir.join("node_modules/playwright-core/package.json").is_file(),
        "needs Chromium, Node.js and `npm ci --prefix tests/browser` (see tests/browser.rs)"
    );
    let redis = RedisServer::start().unwrap();
    let server = server(Some(&redis));
    let origin = server.url("");
    let (token_url, served) = token_server(origin.clone()).await;
    let mut driver = tokio::process::Command::new("node");
    driver
        .arg(driver_dir.join("token_refresh.mjs"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = driver.spawn().unwrap();
    let mut stdin = child.stdin.take();
    let mut stdout_lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let run = async {
        use tokio::io::AsyncWriteExt;
        let mut seen = Vec::new();
        while let Some(line) = stdout_lines.next_line().await.unwrap() {
            if line == "@ready" {
                // Minted only now: a cold browser start can outlast a 3 s token.
                let (token, exp) = mint("viewer", "subscribe", &["m1"], "jti-page-0", 3);
                let fragment = format!("meeting=m1&token={token}&token_url={}", token_url.replace(':', "%3A").replace('/', "%2F"));
                let go = json!({ "url": format!("{origin}/#{fragment}"), "exp_ms": exp * 1000 });
                let mut pipe = stdin.take().expect("one @ready");
                pipe.write_all(format!("{go}\n").as_bytes()).await.unwrap();
                pipe.flush().await.unwrap();
            }
            seen.push(line);
        }
        seen.join("\n")
    };
    let stdout = tokio::time::timeout(Duration::from_secs(150), run).await.expect("the browser driver finished");
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "driver failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("renewed") && stdout.contains("ok"), "{stdout}");
    assert!(served.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the page asked the token URL");
    let refreshed = server.logs().iter().filter(|l| l.contains("token refreshed")).count();
    assert!(refreshed >= 2, "both sockets refreshed on the server ({refreshed} log lines)");
}

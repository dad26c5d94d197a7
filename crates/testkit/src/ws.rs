//! A real WebSocket client for tests, with bounded waits: every helper fails after
//! [`WS_WAIT`] instead of hanging the suite.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest a test waits for one message or close.
pub const WS_WAIT: Duration = Duration::from_secs(10);

/// A connected client.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url` with extra request headers.
pub async fn connect(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())?,
            v.parse()?,
        );
    }
    let (ws, _) = tokio::time::timeout(WS_WAIT, tokio_tungstenite::connect_async(req))
        .await
        .map_err(|_| anyhow!("connect timed out"))?
        .with_context(|| format!("connecting {url}"))?;
    Ok(ws)
}

/// The next text message, parsed as JSON (skipping pings).
pub async fn next_json(ws: &mut Ws) -> anyhow::Result<serde_json::Value> {
    loop {
        match next(ws).await? {
            Message::Text(t) => return serde_json::from_str(&t).with_context(|| format!("not JSON: {t}")),
            Message::Close(f) => bail!("closed while waiting for a message: {f:?}"),
            Message::Binary(_) => bail!("unexpected binary message"),
            _ => continue,
        }
    }
}

/// The next text message whose `type` is `kind` (skipping others).
pub async fn next_of_type(ws: &mut Ws, kind: &str) -> anyhow::Result<serde_json::Value> {
    loop {
        let v = next_json(ws).await?;
        if v["type"] == kind {
            return Ok(v);
        }
    }
}

async fn next(ws: &mut Ws) -> anyhow::Result<Message> {
    match tokio::time::timeout(WS_WAIT, ws.next()).await {
        Err(_) => bail!("no message within {WS_WAIT:?}"),
        Ok(None) => bail!("connection ended without a close frame"),
        Ok(Some(Err(e))) => bail!("connection error: {e}"),
        Ok(Some(Ok(m))) => Ok(m),
    }
}

/// Reads until the server's close frame; returns its code and reason. Messages before
/// it are returned too. A connection dropped without a close frame (1006) is an error.
pub async fn expect_close(ws: &mut Ws) -> anyhow::Result<(u16, String, Vec<Message>)> {
    let mut before = Vec::new();
    loop {
        match next(ws).await? {
            Message::Close(Some(CloseFrame { code, reason })) => return Ok((u16::from(code), reason.to_string(), before)),
            Message::Close(None) => return Ok((1005, String::new(), before)),
            m => before.push(m),
        }
    }
}

/// Sends a text message.
pub async fn send_text(ws: &mut Ws, text: &str) -> anyhow::Result<()> {
    ws.send(Message::text(text)).await.context("sending text")
}

/// Sends a binary message.
pub async fn send_binary(ws: &mut Ws, data: Vec<u8>) -> anyhow::Result<()> {
    ws.send(Message::binary(data)).await.context("sending binary")
}

/// The design's handshake for 16 kHz mono PCM, as text (for tests that send it raw; the
/// [`ingest`] helpers send the agent's own).
pub const HANDSHAKE: &str = r#"{"type":"handshake","protocol":1,"encoding":"pcm_s16le","sample_rate":16000,"channels":1}"#;

/// A capture agent's stream as the tests drive it: `earshot_agent`'s one ingest client.
pub type Agent = earshot_agent::Session<MaybeTlsStream<TcpStream>>;

/// `/api/v1/ws/ingest/meetings/{meeting}?source={source}&token={token}`.
pub fn ingest_path(meeting: &str, source: &str, token: &str) -> String {
    format!("/api/v1/ws/ingest/meetings/{meeting}?source={source}&token={token}")
}

/// Connects to the ingest `url` (token in its query) and completes the 16 kHz mono
/// handshake.
pub async fn handshaken(url: &str) -> anyhow::Result<Agent> {
    let ws = connect(url, &[]).await?;
    earshot_agent::Session::handshake(ws, earshot_agent::PcmFormat::MONO_16K)
        .await
        .with_context(|| format!("handshake on {}", redact(url)))
}

/// A handshaken ingest stream on `server` for `meeting`/`source`, with an `ingest`
/// token signed with `secret`.
pub async fn ingest(server: &crate::Earshot, secret: &str, meeting: &str, source: &str) -> anyhow::Result<Agent> {
    let t = token(secret, "ingest", &[meeting]);
    handshaken(&server.ws_url(&ingest_path(meeting, source, &t))).await
}

/// The agent's next ack or `closed` within [`WS_WAIT`]; a close is an error
/// (`earshot_agent::AgentError::Closed`, downcast it for the code).
pub async fn next_event(agent: &mut Agent) -> anyhow::Result<earshot_agent::Event> {
    match tokio::time::timeout(WS_WAIT, agent.next_event()).await {
        Err(_) => bail!("no ack or closed within {WS_WAIT:?}"),
        Ok(r) => Ok(r?),
    }
}

/// A URL with its token removed, for error messages.
fn redact(url: &str) -> String {
    match url.split_once("token=") {
        Some((head, _)) => format!("{head}token=…"),
        None => url.to_owned(),
    }
}

/// Mints a token signed with `secret` (as the server's issuer would).
pub fn token(secret: &str, scope: &str, meetings: &[&str]) -> String {
    token_with_ttl(secret, scope, meetings, 600)
}

/// Mints a token with a lifetime in seconds.
pub fn token_with_ttl(secret: &str, scope: &str, meetings: &[&str], ttl_s: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let issuer = earshot_auth::Issuer::from_settings(secret, "earshot").expect("valid secret");
    let req = earshot_auth::IssueRequest {
        sub: "test".into(),
        scope: scope.into(),
        meetings: meetings.iter().map(|m| m.to_string()).collect(),
        ttl_s: Some(ttl_s),
    };
    issuer.issue(&req, now, 86_400, format!("t-{now}-{}", rand_suffix())).expect("issue").token
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use earshot_protocol::ingest::{ClientMessage, Handshake, ENCODING_PCM_S16LE, PROTOCOL_VERSION};

    use super::*;

    #[test]
    fn the_raw_handshake_is_the_one_the_agent_sends() {
        let agents = ClientMessage::Handshake(Handshake {
            protocol: PROTOCOL_VERSION,
            encoding: ENCODING_PCM_S16LE.into(),
            sample_rate: 16_000,
            channels: 1,
        });
        assert_eq!(ClientMessage::parse(HANDSHAKE).unwrap(), agents);
    }

    #[test]
    fn tokens_stay_out_of_error_messages() {
        assert_eq!(redact("ws://h/x?source=mic&token=abc.def"), "ws://h/x?source=mic&token=…");
        assert_eq!(ingest_path("m", "mic", "t"), "/api/v1/ws/ingest/meetings/m?source=mic&token=t");
    }
}

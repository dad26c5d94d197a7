//! The WebSocket handshake: the backend sees OPEN first and decides; only then does
//! the client get its 101 and the session start.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use earshot_protocol::events::{decode_events, Event};
use earshot_protocol::WsRoute;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::close::Close;
use crate::request::{apply_set_meta, build_request, Template};
use crate::session::{self, Accepted, Fields};
use crate::Relay;

/// Headers of the client's handshake that are about this hop, not the request, and
/// are therefore not replayed to the backend.
const HOP_HEADERS: [&str; 9] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "te",
];

/// Initial read buffer per WebSocket, in bytes (see the config below).
const READ_BUFFER_BYTES: usize = 4096;

/// Bytes the writer batches before a socket write. The writer flushes after each batch
/// anyway; this caps what a burst leaves allocated per socket (tungstenite's default,
/// 128 KiB, would stay resident on every subscriber that once received a burst).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The client's handshake headers the backend sees on every request: all but the hop
/// headers and any `Meta-*` (the relay's to set: a client must not forge connection
/// state). Each value is copied: hyper's parsed values are slices of its connection read
/// buffer (8 KiB and up), and a clone held for the connection's life would keep that
/// whole buffer resident on every idle socket.
fn replayed_headers(from: &http::HeaderMap) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if HOP_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("meta-") {
            continue;
        }
        let Ok(mut owned) = http::HeaderValue::from_bytes(value.as_bytes()) else { continue };
        owned.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), owned);
    }
    headers
}

/// Whether `req` asks to become a WebSocket.
pub fn is_websocket_upgrade<B>(req: &http::Request<B>) -> bool {
    let has = |name: http::header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == http::Method::GET && has(http::header::UPGRADE, "websocket") && has(http::header::CONNECTION, "upgrade")
}

fn text(status: http::StatusCode, body: &'static str) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response")
}

/// The CLOSE event that makes a session close with `close` as soon as it starts.
fn close_event(close: &Close) -> Event {
    Event::close(close.code(), close.reason())
}

/// Redacts tokens from a path and query for logs.
pub(crate) fn redact(uri: &http::Uri) -> String {
    let path = uri.path();
    match uri.query() {
        None => path.to_owned(),
        Some(q) => {
            let redacted: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form_urlencoded::parse(q.as_bytes()).map(|(k, v)| {
                    let v = if k == "token" { "REDACTED".into() } else { v };
                    (k, v)
                }))
                .finish();
            format!("{path}?{redacted}")
        }
    }
}

impl Relay {
    /// Handles a WebSocket upgrade request: asks the backend with OPEN, answers 101
    /// (or the backend's refusal), then runs the session in its own task.
    pub async fn upgrade<B: Send + 'static>(
        &self,
        mut req: http::Request<B>,
        peer: std::net::SocketAddr,
    ) -> http::Response<Full<Bytes>> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if !crate::limits::origin_allowed(header("origin"), header("host"), &self.shared.config.allowed_origins) {
            return text(http::StatusCode::FORBIDDEN, "origin not allowed\n");
        }
        let slot = match self.shared.limits.acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(e) => {
                let status = match e {
                    crate::limits::LimitError::PerIp => http::StatusCode::TOO_MANY_REQUESTS,
                    crate::limits::LimitError::Total => http::StatusCode::SERVICE_UNAVAILABLE,
                };
                tracing::warn!(peer = %peer.ip(), error = %e, "websocket refused before upgrade");
                return http::Response::builder()
                    .status(status)
                    .header("retry-after", crate::limits::RETRY_AFTER_S.to_string())
                    .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(Full::new(Bytes::from(format!("{e}\n"))))
                    .expect("valid response");
            }
        };
        let Some(key) = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec()) else {
            return text(http::StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        };
        if req.headers().get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
            return http::Response::builder()
                .status(http::StatusCode::UPGRADE_REQUIRED)
                .header("sec-websocket-version", "13")
                .body(Full::new(Bytes::from_static(b"unsupported WebSocket version\n")))
                .expect("static response");
        }
        let connection_id = uuid::Uuid::new_v4().simple().to_string();
        let uri: http::Uri = req.uri().path_and_query().map_or("/", |p| p.as_str()).parse().unwrap_or_default();
        let headers = replayed_headers(req.headers());
        let offered_protocols: Vec<String> = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
            .collect();
        let template = Template { uri: uri.clone(), headers };
        let (meeting_id, source) = match WsRoute::parse(uri.path(), uri.query()) {
            Ok(WsRoute::Ingest { meeting, source }) => (meeting.to_string(), source.to_string()),
            Ok(route) => (route.meeting().to_string(), String::new()),
            Err(_) => (String::new(), String::new()),
        };
        let fields = Fields { connection_id: connection_id.clone(), meeting_id, source, path: redact(&uri) };

        let mut meta = BTreeMap::new();
        let open = build_request(&self.shared, &template, &connection_id, &meta, &[Event::Open]);
        let accepted = match self.shared.backend.call(open).await {
            Ok(resp) if resp.status() == http::StatusCode::OK => {
                apply_set_meta(resp.headers(), &mut meta);
                let keep_alive = resp
                    .headers()
                    .get("keep-alive-interval")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs);
                let grip = resp
                    .headers()
                    .get_all("sec-websocket-extensions")
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|s| s.trim_start().starts_with("grip")));
                let protocol = resp.headers().get("sec-websocket-protocol").cloned();
                match decode_events(resp.body()) {
                    Ok(events) if events.first() == Some(&Event::Open) => {
                        (Accepted { meta, keep_alive, grip, events: events[1..].to_vec() }, protocol)
                    }
                    Ok(_) | Err(_) => {
                        tracing::error!(connection_id = %fields.connection_id, path = %fields.path, "backend did not accept OPEN with OPEN");
                        return text(http::StatusCode::BAD_GATEWAY, "backend did not accept the connection\n");
                    }
                }
            }
            Ok(resp) => {
                // The backend refused the handshake: pass its answer through, as Pushpin does.
                let (parts, body) = resp.into_parts();
                let mut out = http::Response::new(Full::new(body));
                *out.status_mut() = parts.status;
                // Retry-After too: a busy host (503) says when to come back.
                for name in [http::header::CONTENT_TYPE, http::header::RETRY_AFTER] {
                    if let Some(v) = parts.headers.get(&name) {
                        out.headers_mut().insert(name, v.clone());
                    }
                }
                return out;
            }
            Err(e) => {
                // Accept, then close 1011: the contract's answer to a backend failure.
                tracing::error!(connection_id = %fields.connection_id, error = %crate::ErrorChain(&e), "backend unavailable at OPEN");
                (
                    Accepted {
                        meta,
                        keep_alive: None,
                        grip: false,
                        events: vec![close_event(&Close::backend_unavailable())],
                    },
                    None,
                )
            }
        };
        let (accepted, protocol) = accepted;
        let mut resp = http::Response::builder()
            .status(http::StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::CONNECTION, "Upgrade")
            .header("sec-websocket-accept", derive_accept_key(&key));
        if let Some(p) = protocol.filter(|p| p.to_str().is_ok_and(|p| offered_protocols.iter().any(|o| o == p))) {
            resp = resp.header("sec-websocket-protocol", p);
        }
        let resp = resp.body(Full::new(Bytes::new())).expect("valid 101");

        let on_upgrade = hyper::upgrade::on(&mut req);
        let shared = self.shared.clone();
        let shutdown = self.shutdown.clone();
        let max = self.shared.config.max_message_bytes;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(connection_id = %fields.connection_id, error = %e, "upgrade failed");
                    return;
                }
            };
            // tungstenite's default 128 KiB read buffer per socket dominated an idle
            // connection's memory (bench: 144 KiB each); 4 KiB holds a typical frame and
            // grows on demand for larger ones.
            let config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER_BYTES)
                .write_buffer_size(WRITE_BUFFER_BYTES)
                .max_message_size(Some(max))
                .max_frame_size(Some(max));
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
            tracing::info!(
                connection_id = %fields.connection_id,
                meeting_id = %fields.meeting_id,
                source = %fields.source,
                path = %fields.path,
                state = "connected",
                "websocket accepted"
            );
            let (sink, stream) = futures::StreamExt::split(ws);
            session::run(shared, sink, stream, template, fields, accepted, shutdown).await;
            drop(slot);
        });
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted_from_uris() {
        let uri: http::Uri = "/api/v1/ws/meetings/m1?token=secret.jwt.value&x=1".parse().unwrap();
        let r = redact(&uri);
        assert!(!r.contains("secret"), "{r}");
        assert!(r.contains("token=REDACTED") && r.contains("x=1"), "{r}");
    }

    #[test]
    fn replayed_headers_drop_hop_and_forged_meta_headers_and_own_their_values() {
        let mut h = http::HeaderMap::new();
        h.insert("connection", http::HeaderValue::from_static("Upgrade"));
        h.insert("sec-websocket-key", http::HeaderValue::from_static("k"));
        h.insert("meta-user", http::HeaderValue::from_static("forged"));
        h.append("x-forwarded-for", http::HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", http::HeaderValue::from_static("10.0.0.2"));
        let shared = Bytes::from(b"Bearer abc".to_vec());
        let mut auth = http::HeaderValue::from_maybe_shared(shared.clone()).unwrap();
        auth.set_sensitive(true);
        h.insert("authorization", auth);
        let r = replayed_headers(&h);
        assert!(!r.contains_key("connection") && !r.contains_key("sec-websocket-key") && !r.contains_key("meta-user"));
        let xff: Vec<_> = r.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(r["authorization"], "Bearer abc");
        assert!(r["authorization"].is_sensitive());
        assert_ne!(r["authorization"].as_bytes().as_ptr(), shared.as_ptr(), "the value is a copy, not a slice of the parse buffer");
    }

    #[test]
    fn recognises_upgrades() {
        let req = http::Request::get("/x").header("upgrade", "websocket").header("connection", "keep-alive, Upgrade").body(()).unwrap();
        assert!(is_websocket_upgrade(&req));
        let req = http::Request::get("/x").body(()).unwrap();
        assert!(!is_websocket_upgrade(&req));
    }
}

//! Where a capture agent connects (the ingest route) and how (a bounded WebSocket
//! upgrade, the token as a bearer header so it never sits in a URL).

use std::time::Duration;

use earshot_protocol::ids::{MeetingId, Source};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::AgentError;

/// Longest wait for the TCP connect and WebSocket upgrade.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket opened by [`connect`].
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `{base}/api/v1/ws/ingest/meetings/{id}?source=…`, taking http(s) bases as ws(s).
pub fn ingest_url(base: &str, meeting: &MeetingId, source: Source) -> Result<String, AgentError> {
    let base = base.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_owned()
    } else {
        return Err(AgentError::BadScheme { base: base.to_owned() });
    };
    Ok(format!("{base}/api/v1/ws/ingest/meetings/{meeting}?source={source}"))
}

/// Opens a WebSocket to `url` within [`CONNECT_TIMEOUT`], with `Authorization: Bearer
/// <token>` when a token is given (tests that put it in the query pass `None`).
pub async fn connect(url: &str, token: Option<&str>) -> Result<Ws, AgentError> {
    let mut request = url.into_client_request().map_err(|source| AgentError::BadUrl { url: url.to_owned(), source })?;
    if let Some(token) = token {
        let bearer = format!("Bearer {token}").parse().map_err(|_| AgentError::TokenNotHeaderSafe)?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => Err(AgentError::ConnectTimeout { url: url.to_owned(), after: CONNECT_TIMEOUT }),
        Ok(Err(tungstenite::Error::Http(response))) => Err(AgentError::UpgradeRefused { status: response.status() }),
        Ok(Err(source)) => Err(AgentError::Connect { url: url.to_owned(), source }),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_ingest_route() {
        let m = MeetingId::parse("m1").unwrap();
        assert_eq!(ingest_url("ws://h:1/", &m, Source::Sys).unwrap(), "ws://h:1/api/v1/ws/ingest/meetings/m1?source=sys");
        assert_eq!(ingest_url("http://h:1", &m, Source::Mic).unwrap(), "ws://h:1/api/v1/ws/ingest/meetings/m1?source=mic");
        assert_eq!(ingest_url("https://h", &m, Source::Mic).unwrap(), "wss://h/api/v1/ws/ingest/meetings/m1?source=mic");
        assert!(matches!(ingest_url("h:1", &m, Source::Mic), Err(AgentError::BadScheme { base }) if base == "h:1"));
    }

    #[tokio::test]
    async fn a_refused_port_is_a_connection_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = connect(&format!("ws://127.0.0.1:{port}/"), Some("t")).await.unwrap_err();
        assert!(err.is_connection() && !err.is_timeout(), "{err:?}");
    }

    #[tokio::test]
    async fn a_token_a_header_cannot_carry_is_refused_before_connecting() {
        let err = connect("ws://127.0.0.1:9/", Some("a\nb")).await.unwrap_err();
        assert!(matches!(err, AgentError::TokenNotHeaderSafe), "{err:?}");
    }
}

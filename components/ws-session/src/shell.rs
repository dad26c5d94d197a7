//! The Spin shell both socket components share: a WebSocket-over-HTTP request read into an
//! [`Input`] (signature, route, method, `Connection-Id`, media type, body, events), a
//! [`Reply`] written as the response, and the one error type whose variants map to status
//! codes here and nowhere else (request parts, the body reader and the JSON error reply are
//! `earshot_component_common`'s). Everything it decides is about HTTP; connection-level
//! failures are never HTTP errors: they are CLOSE events in a 200 reply.

use std::time::{SystemTime, UNIX_EPOCH};

use earshot_component_common::request::{read_body, BodyError, RequestParts};
use earshot_component_common::response::HttpFailure;
use earshot_protocol::events::{decode_events, encode_events, CONTENT_TYPE};
use earshot_protocol::ids::IdError;
use earshot_protocol::limits::RELAY_MAX_MESSAGE_BYTES;
use earshot_protocol::WsRoute;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::variables;

use crate::auth::Credentials;
use crate::gripsig;
use crate::meta::Meta;
use crate::session::{Component, Input, Reply};
use crate::settings::SettingsError;

/// Header naming the relay's connection.
const CONNECTION_ID_HEADER: &str = "connection-id";

/// Longest `Connection-Id` accepted, in bytes. Pushpin's ids are ~40 bytes; the id is echoed
/// to the client, stored in presence and logged, so an unbounded one is refused.
pub const MAX_CONNECTION_ID_BYTES: usize = 128;

/// Largest request body accepted, in bytes: sixteen relay-maximum messages. The relay keeps
/// one request per connection outstanding and batches what queued meanwhile; its queue is far
/// smaller than this, so only a broken or hostile caller reaches the limit, and it is refused
/// before a 64 MiB instance fills up.
pub const MAX_BODY_BYTES: usize = 16 * RELAY_MAX_MESSAGE_BYTES;

/// Every way a request can fail at the HTTP level.
#[derive(Debug)]
pub enum HttpError {
    /// 400: not a WebSocket-over-HTTP request (content type, events, Connection-Id).
    BadRequest(String),
    /// 401: `Grip-Sig` missing or invalid.
    Unauthorized(String),
    /// 404: not a WebSocket route.
    NotFound,
    /// 405: WebSocket-over-HTTP is POST only.
    MethodNotAllowed,
    /// 413: body larger than [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 500: the variables of component `.0` are unusable (`.1`: detail for the log).
    Misconfigured(&'static str, String),
    /// 500: anything else (detail for the log).
    Internal(String),
}

impl HttpFailure for HttpError {
    fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::Unauthorized(_) => 401,
            HttpError::NotFound => 404,
            HttpError::MethodNotAllowed => 405,
            HttpError::PayloadTooLarge => 413,
            HttpError::Misconfigured(..) | HttpError::Internal(_) => 500,
        }
    }

    fn reason(&self) -> String {
        match self {
            HttpError::BadRequest(r) | HttpError::Unauthorized(r) => r.clone(),
            HttpError::NotFound => "not found".into(),
            HttpError::MethodNotAllowed => "method not allowed".into(),
            HttpError::PayloadTooLarge => BodyError::TooLarge.reason().into(),
            HttpError::Misconfigured(component, _) => format!("{component} misconfigured"),
            HttpError::Internal(_) => "internal error".into(),
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            HttpError::Misconfigured(_, d) | HttpError::Internal(d) => Some(d),
            _ => None,
        }
    }

    fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            HttpError::MethodNotAllowed => Some(("allow", "POST")),
            HttpError::Unauthorized(_) => Some(("www-authenticate", "Grip-Sig")),
            _ => None,
        }
    }
}

impl From<BodyError> for HttpError {
    fn from(e: BodyError) -> HttpError {
        match e {
            BodyError::TooLarge => HttpError::PayloadTooLarge,
            BodyError::Unreadable => HttpError::BadRequest(e.reason().into()),
        }
    }
}

/// Reads one WebSocket-over-HTTP request of component `C` at `now_ms`. With `grip_sig_key`
/// set, its signature is checked before anything else, so an unsigned caller learns nothing,
/// not even which routes exist.
pub async fn read_input<C: Component>(
    req: IncomingRequest,
    parts: &RequestParts,
    grip_sig_key: &str,
    now_ms: u64,
) -> Result<Input<C::State>, HttpError> {
    if !grip_sig_key.is_empty() {
        let values: Vec<&str> = parts.header_values(gripsig::HEADER).collect();
        gripsig::verify(grip_sig_key, &values, now_ms / 1000)
            .map_err(|e| HttpError::Unauthorized(e.to_string()))?;
    }
    let route = match WsRoute::parse(&parts.path, parts.query()) {
        Err(IdError::UnknownRoute) => return Err(HttpError::NotFound),
        Ok(route) if !C::serves(&route) => return Err(HttpError::NotFound),
        route => route,
    };
    if parts.method != Method::Post {
        return Err(HttpError::MethodNotAllowed);
    }
    let connection_id = connection_id(parts)?;
    let body = read_body(req, parts, MAX_BODY_BYTES).await?;
    check_content_type(parts, body.is_empty())?;
    let events = decode_events(&body)
        .map_err(|e| HttpError::BadRequest(format!("malformed events: {e}")))?;
    Ok(Input {
        route,
        connection_id,
        credentials: Credentials {
            query: parts.query().map(str::to_owned),
            authorization: parts
                .header_values("authorization")
                .map(str::to_owned)
                .collect(),
            protocols: {
                let offered: Vec<&str> = parts.header_values("sec-websocket-protocol").collect();
                (!offered.is_empty()).then(|| offered.join(", "))
            },
        },
        path: parts.redacted_path(),
        meta: Meta::from_headers(|name| parts.header(name)),
        events,
        now_ms,
    })
}

/// The reply as the HTTP response: 200, `application/websocket-events`, its headers.
pub fn response(reply: Reply) -> Response {
    let mut response = Response::builder()
        .status(200)
        .header("content-type", CONTENT_TYPE)
        .header("cache-control", "no-store")
        .body(encode_events(&reply.events))
        .build();
    for (name, value) in reply.headers {
        response.set_header(name, value);
    }
    response
}

/// The error reply of a request refused at the HTTP level, logged as one line of `component`.
pub fn refused(component: &'static str, parts: &RequestParts, err: &HttpError) -> Response {
    let level = if err.status() >= 500 { "error" } else { "warn" };
    let mut line = json!({
        "level": level,
        "component": component,
        "msg": "request refused",
        "method": parts.method.to_string(),
        "path": parts.redacted_path(),
        "status": err.status(),
        "reason": err.reason(),
    });
    if let Some(detail) = err.detail() {
        line["detail"] = detail.into();
    }
    println!("{line}");
    err.response()
}

/// The relay's `Connection-Id`: exactly one, visible ASCII, bounded.
fn connection_id(parts: &RequestParts) -> Result<String, HttpError> {
    let ids: Vec<&str> = parts.header_values(CONNECTION_ID_HEADER).collect();
    match ids.as_slice() {
        [id] if !id.is_empty()
            && id.len() <= MAX_CONNECTION_ID_BYTES
            && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            Ok((*id).to_owned())
        }
        [] => Err(HttpError::BadRequest("missing Connection-Id".into())),
        _ => Err(HttpError::BadRequest("invalid Connection-Id".into())),
    }
}

/// The body must be `application/websocket-events` (parameters and case aside). An empty
/// body (the relay's keep-alive) may come without a type: there is nothing to interpret.
fn check_content_type(parts: &RequestParts, empty_body: bool) -> Result<(), HttpError> {
    let types: Vec<&str> = parts.header_values("content-type").collect();
    let ok = match types.as_slice() {
        [] => empty_body,
        [t] => t
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(HttpError::BadRequest(format!(
            "content type must be {CONTENT_TYPE}"
        )))
    }
}

/// Spin's variable lookup in the form the settings parsers take (`Ok(None)`: undefined).
pub fn variable(name: &'static str) -> Result<Option<String>, String> {
    match variables::get(name) {
        Ok(value) => Ok(Some(value)),
        Err(variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// A settings failure of `component` as the HTTP error it answers.
pub fn misconfigured(component: &'static str, e: &SettingsError) -> HttpError {
    HttpError::Misconfigured(component, e.to_string())
}

/// Wall-clock unix milliseconds (WASI `wall-clock`).
pub fn now_ms() -> Result<u64, HttpError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| HttpError::Internal("system clock before 1970".into()))
}
